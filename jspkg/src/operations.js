// The operations: arguments checked before anything is sent, then the library called until
// it is done (`more`, `next`, the cursor), the counts summed as the Python package's results are.
import { fcall, connection, install as installOn } from "./connection.js";
import { InvalidArgumentError, NoProgressError } from "./errors.js";
import { library, option } from "./facts.js";
import { pairs, text } from "./replies.js";

const LAYOUTS = ["python", "js"];
const camel = (name) => name.replace(/_(\w)/g, (_, c) => c.toUpperCase());
const KEPT = new Set(["checkpoints_kept", "delta_ancestors_kept"]); // the thread's newest, not summed
const FULL_EVERY = 7 * 24 * 3600 * 1000; // a sweep's default backstop: a full pass at least this often (ms)
const SWEEP_STATE = new Set(["cursor", "kind", "since", "unfinished", "layout"]); // the pass's, from its last call

function count(name, value, minimum = 0) {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidArgumentError(`${name} must be an integer of at least ${minimum}, got ${show(value)}`);
  }
  return String(value);
}

function ms(name, value, minimum) {
  if (value === undefined || value === null) return null;
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidArgumentError(
      `${name} must be a whole number of milliseconds of at least ${minimum}, got ${show(value)}`,
    );
  }
  return String(value);
}

const THREAD_OPTIONS = ["dryRun", "budget", "layout", "maxAge", "idleTtl", "checkpointPrefix", "checkpointWritePrefix"];
const SWEEP_OPTIONS = [...THREAD_OPTIONS, "full", "margin", "fullEvery", "onProgress"];

// `options`, when it is an object naming only `names` (a misspelt dryRun must not prune)
function known(options, names) {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError(`options must be an object, got ${show(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!names.includes(key))
      throw new InvalidArgumentError(`unknown option ${key}: the options are ${names.join(", ")}`);
  }
  return options;
}

const show = (value) => (typeof value === "string" ? JSON.stringify(value) : String(value));

function threadId(value) {
  if (typeof value !== "string") throw new InvalidArgumentError(`a thread id must be a string, got ${show(value)}`);
  return value;
}

// The options every call takes (budget, layout, prefixes) as FCALL arguments.
function common(options) {
  const { budget, layout, checkpointPrefix, checkpointWritePrefix } = options;
  const args = [];
  for (const [name, flag, value] of [
    ["checkpointPrefix", "CHECKPOINT_PREFIX", checkpointPrefix],
    ["checkpointWritePrefix", "WRITE_PREFIX", checkpointWritePrefix],
  ]) {
    if (value === undefined) continue;
    if (typeof value !== "string" || value === "") {
      throw new InvalidArgumentError(`${name} must be a non-empty string, got ${show(value)}`);
    }
    args.push(option(flag), value);
  }
  if (budget !== undefined) args.push(option("BUDGET"), count("budget", budget, library().minBudget));
  if (layout !== undefined) {
    if (!LAYOUTS.includes(layout))
      throw new InvalidArgumentError(`layout must be "python" or "js", got ${show(layout)}`);
    args.push(option("LAYOUT"), layout);
  }
  return args;
}

// lgprune_thread and lgprune_many options: the common ones, MAX_AGE, IDLE_TTL, DRY_RUN.
export function threadOptions(options, names = THREAD_OPTIONS) {
  known(options, names);
  const args = common(options);
  for (const [name, flag] of [
    ["maxAge", "MAX_AGE"],
    ["idleTtl", "IDLE_TTL"],
  ]) {
    const value = ms(name, options[name], 1);
    if (value !== null) args.push(option(flag), value);
  }
  if (options.dryRun) args.push(option("DRY_RUN"));
  return args;
}

function emptyPrune(dryRun) {
  const result = { calls: 0, dryRun };
  for (const name of library().countFields) result[camel(name)] = 0;
  return result;
}

// `result` followed by one more call's counts; the kept counts are the thread's newest, or
// (lgprune_many, `otherThreads`) they add up.
function plusCall(result, fields, otherThreads = false) {
  const next = { ...result, calls: result.calls + 1 };
  for (const name of library().countFields) {
    const value = Number(fields.get(name) ?? 0);
    next[camel(name)] = KEPT.has(name) && !otherThreads ? value : result[camel(name)] + value;
  }
  return next;
}

const counts = (reply) => new Map([...pairs(reply)].map(([k, v]) => [k, Number(text(v))]));

/** Make the server run this package's library (load it when missing or older); the version in use. */
export async function install(client, { force = false } = {}) {
  const conn = connection(client);
  return installOn(conn, conn.installs, force);
}

/** Keep the newest `keep` checkpoints per namespace of one thread; delete the rest. */
export async function prune(client, thread, keep, options = {}) {
  const args = [threadId(thread), count("keep", keep), ...threadOptions(options)];
  const conn = connection(client);
  const dryRun = Boolean(options.dryRun);
  let result = emptyPrune(dryRun);
  for (;;) {
    const fields = counts(await fcall(conn, "lgprune_thread", args, result));
    result = plusCall(result, fields);
    if (dryRun || !fields.get("more")) return Object.freeze(result); // a dry run is one call
    if (!fields.get("keys_deleted")) {
      const error = new NoProgressError(
        `thread ${show(thread)} has more to prune, but the last call could delete nothing of it: one call's ` +
          "budget is too small for what comes next; the rest of the thread is left as it is: prune it with a larger budget",
      );
      error.partial = result.keysDeleted ? Object.freeze(result) : null;
      throw error;
    }
  }
}

/** `prune` for many threads, up to 1,000 per call; the counts are summed. */
export async function pruneMany(client, threads, keep, options = {}) {
  if (threads === null || typeof threads !== "object" || !(Symbol.iterator in threads) || typeof threads === "string") {
    throw new InvalidArgumentError(`thread ids must be an array of strings, got ${show(threads)}`);
  }
  const ids = [...threads].map(threadId);
  const tail = threadOptions(options);
  const kept = count("keep", keep);
  const conn = connection(client);
  const dryRun = Boolean(options.dryRun);
  let result = emptyPrune(dryRun);
  for (let start = 0; start < ids.length;) {
    const batch = ids.slice(start, start + library().maxMany);
    const fields = counts(await fcall(conn, "lgprune_many", [kept, String(batch.length), ...batch, ...tail], result));
    const stop = fields.get("next"); // 0, or the 1-based position of the thread the call stopped at
    // that thread goes on in the next call when this one deleted something; else (a dry run,
    // which counts a thread once, or no progress) it is left as it is and the calls go on after it
    const resume = Boolean(stop && fields.get("keys_deleted") && !dryRun);
    result = plusCall(result, fields, true);
    start += stop ? (resume ? stop - 1 : stop) : batch.length;
  }
  return Object.freeze(result);
}

function emptySweep(dryRun) {
  const result = { calls: 0, elapsedMs: 0, cursor: "0", dryRun, kind: "full", since: null, unfinished: false };
  result.layout = "python";
  for (const name of library().sweepFields) if (!SWEEP_STATE.has(name)) result[camel(name)] = 0;
  result.failed = [];
  return result;
}

function plusSweep(result, fields, elapsedMs) {
  const next = { ...result, calls: result.calls + 1, elapsedMs };
  for (const name of library().sweepFields) {
    if (!SWEEP_STATE.has(name)) next[camel(name)] = result[camel(name)] + Number(text(fields.get(name) ?? 0));
  }
  const since = Number(text(fields.get("since") ?? 0));
  next.cursor = text(fields.get("cursor")); // text: "00" (inside the first SCAN step) is not "0" (done)
  next.kind = text(fields.get("kind") ?? "full");
  next.since = since ? since : null;
  next.unfinished = text(fields.get("unfinished") ?? 0) === "1";
  next.layout = text(fields.get("layout") ?? "python");
  next.failed = [
    ...result.failed,
    ...(fields.get("failed") ?? []).map(([id, why]) => ({ threadId: text(id), reason: text(why) })),
  ];
  return next;
}

/**
 * Prune every thread a pass finds: incremental (the threads with checkpoints since the last
 * complete pass of the same rule) unless `full`, or no such pass yet, or the last full one is
 * older than `fullEvery` (default 7 days, as the Python package's; null: never by age). Calls
 * the library until the pass is done; `onProgress` sees the summed result after each call.
 */
export async function sweep(client, keep, options = {}) {
  const args = [count("keep", keep), ...threadOptions(options, SWEEP_OPTIONS)];
  const { margin, fullEvery = FULL_EVERY } = options;
  for (const [name, flag, given, minimum] of [
    ["margin", "MARGIN", margin, 0],
    ["fullEvery", "FULL_EVERY", fullEvery, 1],
  ]) {
    const value = ms(name, given, minimum);
    if (value !== null) args.push(option(flag), value);
  }
  if (options.full) args.push(option("FULL"));
  const { onProgress } = options;
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new InvalidArgumentError(`onProgress must be a function, got ${show(onProgress)}`);
  }
  const conn = connection(client);
  const started = performance.now();
  let result = emptySweep(Boolean(options.dryRun));
  for (let cursor = "0", stalled = 0; ;) {
    const before = result;
    result = Object.freeze(
      plusSweep(
        before,
        pairs(await fcall(conn, "lgprune_sweep", [cursor, ...args], before)),
        performance.now() - started,
      ),
    );
    stalled = result.cursor === cursor && result.keysDeleted === before.keysDeleted ? stalled + 1 : 0;
    if (stalled >= 3) {
      const error = new NoProgressError(`the sweep made no progress at cursor ${cursor}; nothing more was deleted`);
      error.partial = result;
      throw error;
    }
    cursor = result.cursor;
    onProgress?.(result);
    if (cursor === "0") return result;
  }
}
