// The errors lgprune throws: one base class, one subclass per cause. The library's own errors
// ("LGPRUNE <CODE> message") map to a class by their code, never by their wording.

export const NO_FUNCTIONS = "this server has no Redis Functions (FCALL): lgprune needs Redis 7 or newer";

/**
 * Something lgprune could not do. The server call that failed deleted nothing. An operation
 * of several calls (a large thread, many threads, a sweep) may have done something in the
 * calls before it: `partial` then says what they did, else it is null. `code` is the
 * library's code ("BADARG", "NOINDEX", ...) when the library refused the call.
 */
export class LgpruneError extends Error {
  constructor(message, code = null) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.partial = null;
  }
}

/** A thread id, keep count or option that lgprune refuses (BADARG). */
export class InvalidArgumentError extends LgpruneError {
  /** A bad argument, refused here or by the library: `code` is "BADARG" either way. */
  constructor(message, code = "BADARG") {
    super(message, code);
  }
}
/** The saver's RediSearch index does not exist (NOINDEX): start the saver once first. */
export class IndexMissingError extends LgpruneError {}
/** The server lacks the search or JSON module (NOMODULE), or Redis Functions (Redis < 7). */
export class ModulesMissingError extends LgpruneError {}
/** A stored document lgprune cannot read (BADDATA). */
export class BadDataError extends LgpruneError {}
/** A search answered partially, a timeout perhaps (PARTIAL): try again. */
export class PartialSearchError extends LgpruneError {}
/** Both savers' indexes (Python's and LangGraph.js's) cover the same keys (MIXED): nothing is pruned. */
export class MixedStoreError extends LgpruneError {}
/** The ACL lets this user read a key the prune must delete, but not delete it (NOPERM). */
export class NoPermissionError extends LgpruneError {}
/** The library says there is more to do, but its last call could delete nothing. */
export class NoProgressError extends LgpruneError {}
/** The server holds an lgprune library this package cannot use. */
export class LibraryVersionError extends LgpruneError {}
/** FUNCTION LOAD was refused (ACL, read-only replica, ...). */
export class LibraryInstallError extends LgpruneError {}
/** The server is a read-only replica: prune on the primary. */
export class ReadOnlyServerError extends LgpruneError {}

/** The class of each of the library's error codes (ERROR_CODES in the Lua; a test checks they match). */
export const ERROR_CLASSES = Object.freeze({
  BADARG: InvalidArgumentError,
  NOINDEX: IndexMissingError,
  NOMODULE: ModulesMissingError,
  BADDATA: BadDataError,
  PARTIAL: PartialSearchError,
  MIXED: MixedStoreError,
  NOPERM: NoPermissionError,
});

/** The error for a reply "LGPRUNE <CODE> message" of the library, by its code. */
export function fromServerMessage(message) {
  const rest = message.replace(/^LGPRUNE /, "").trim();
  const space = rest.indexOf(" ");
  const code = space < 0 ? rest : rest.slice(0, space);
  const text = space < 0 ? "" : rest.slice(space + 1);
  const Class = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code] : LgpruneError;
  return new Class(jsSpelling(text), code);
}

// The library's option names as this package's options: "pass LAYOUT js" is `layout: "js"`.
const JS_NAMES = {
  CHECKPOINT_PREFIX: "checkpointPrefix",
  WRITE_PREFIX: "checkpointWritePrefix",
  DRY_RUN: "dryRun",
  MAX_AGE: "maxAge",
  IDLE_TTL: "idleTtl",
  FULL_EVERY: "fullEvery",
  LAYOUT: "layout",
  BUDGET: "budget",
  MARGIN: "margin",
};
const OPTION = new RegExp(`\\b(${Object.keys(JS_NAMES).join("|")})\\b(?: (python|js)\\b)?`, "g");

function jsSpelling(text) {
  return text.replace(OPTION, (_, name, value) => JS_NAMES[name] + (value ? `: "${value}"` : ""));
}
