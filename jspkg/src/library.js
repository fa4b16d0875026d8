// The shipped Lua library: its build, and how it gets installed. The same version and build
// probe as the Python package's (library.py): each recognises the other's install.
import { createHash } from "node:crypto";
import { LibraryInstallError, LibraryVersionError, ModulesMissingError, NO_FUNCTIONS } from "./errors.js";
import { library, libraryFile } from "./facts.js";
import { pairs, serverMessage, text } from "./replies.js";

const LIBRARY_NAME = "lgprune";
const BUILD_LINE = "local BUILD = 'dev'";

const hash = (code) => createHash("sha256").update(code, "utf8").digest("hex").slice(0, 16);

let build;

/** A short hash of the shipped file: what `FCALL lgprune_version 0 BUILD` answers for this code. */
export function libraryBuild() {
  build ??= hash(libraryFile());
  return build;
}

/** The code this package loads: the shipped file with its BUILD set to libraryBuild(). */
export function libraryCode() {
  if (!libraryFile().includes(BUILD_LINE)) {
    throw new LibraryVersionError(`the shipped Lua library has no line ${BUILD_LINE}`);
  }
  return libraryFile().replace(BUILD_LINE, `local BUILD = '${libraryBuild()}'`);
}

/** A comparable form of a dotted version; [0] for one that is not dotted numbers. */
function versionKey(version) {
  const parts = version.split(".");
  return parts.every((p) => /^\d+$/.test(p)) ? parts.map(Number) : [0];
}

function compare(a, b) {
  const [x, y] = [versionKey(a), versionKey(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? -1) !== (y[i] ?? -1)) return (x[i] ?? -1) - (y[i] ?? -1);
  }
  return 0;
}

/** Whether `code` is exactly what an lgprune package loads: its BUILD is the hash of the code with BUILD 'dev'. */
function isABuild(code, found) {
  if (found === null || !/^[0-9a-f]{16}$/.test(found)) return false;
  const original = code.replace(`local BUILD = '${found}'`, BUILD_LINE);
  return original !== code && hash(original) === found;
}

/** The server's library as [version, build] (build null for a library older than the probe); null when absent. */
async function probe(send) {
  let reply;
  try {
    reply = await send(["FCALL", "lgprune_version", "0", "BUILD"]);
  } catch (error) {
    const message = serverMessage(error)?.toLowerCase() ?? "";
    if (message.includes("unknown command")) throw new ModulesMissingError(NO_FUNCTIONS);
    if (message.includes("function not found")) return null;
    throw error;
  }
  return Array.isArray(reply) ? [text(reply[0]), text(reply[1])] : [text(reply), null];
}

/** The code of the server's lgprune library, null if absent. */
async function serverCode(send) {
  const reply = await send(["FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME, "WITHCODE"]);
  for (const entry of reply ?? []) {
    const fields = pairs(entry);
    if (text(fields.get("library_name") ?? "") === LIBRARY_NAME) return text(fields.get("library_code") ?? "");
  }
  return null;
}

/**
 * Make the server run this package's library; returns the version in use. Loads it when
 * absent or older, or when the same version holds other code. A newer library of the same
 * major version that an lgprune package built is used as it is (a rolling upgrade must not
 * flip back and forth); one that no package built is refused. `force` loads ours whatever
 * the server holds.
 */
export async function installLibrary(send, force = false) {
  const ours = library().version;
  const found = force ? null : await probe(send);
  if (found !== null) {
    const [installed, foundBuild] = found;
    if (compare(installed, ours) > 0) {
      if (versionKey(installed)[0] !== versionKey(ours)[0]) {
        throw new LibraryVersionError(
          `the server runs lgprune library ${installed}, which this package (${ours}) cannot use: upgrade the lgprune package`,
        );
      }
      if (isABuild((await serverCode(send)) ?? "", foundBuild)) return installed;
      throw new LibraryVersionError(
        `the server runs a library that claims to be lgprune ${installed} (newer than this package's ${ours}) ` +
          `but no lgprune package built it (build ${foundBuild ?? "none"} does not match its code); it is not run: ` +
          "an administrator should replace it with install(client, { force: true })",
      );
    }
    if (installed === ours && foundBuild === libraryBuild()) return ours;
  }
  try {
    await send(["FUNCTION", "LOAD", "REPLACE", libraryCode()]);
  } catch (error) {
    const message = serverMessage(error);
    if (message === null) throw error;
    if (found !== null && found[0] === ours) return ours; // the same version with other code, and no right to replace it
    const what = found === null ? "is not loaded" : `is version ${found[0]}, older than ${ours},`;
    throw new LibraryInstallError(
      `the lgprune library ${what} on this server and this user may not load it ` +
        `(${message.split(/\s+/).join(" ").slice(0, 120)}): an administrator must run install(client)`,
    );
  }
  return ours;
}
