// Auto-prune for LangGraph.js's RedisSaver: after a thread's first put seen here, then every
// `slack` puts, prune it to `keepLast` in the background. The graph's call never waits for a
// prune and never fails because of one.
import { InvalidArgumentError } from "./errors.js";
import { prune, threadOptions } from "./operations.js";

const TRACKED_THREADS = 100_000; // put counters kept in memory (least recently used go first)

const warn = (error, threadId) =>
  console.warn(`lgprune: the auto-prune of thread ${JSON.stringify(threadId)} failed: ${error.message}`);

/**
 * `saver` (a RedisSaver of @langchain/langgraph-checkpoint-redis), wrapped: its puts are
 * counted per thread and the thread is pruned to `keepLast` checkpoints per namespace on its
 * first put seen here and then every `slack` puts (default keepLast / 2), so it stays within
 * keepLast + slack. Prunes run over `client` (default: the saver's own), one at a time per
 * thread (a thread due while its prune runs is pruned once more after it); a failure goes to `onError(error, threadId)` (default: one console.warn line).
 * `end()` awaits the prunes in flight, then ends the saver.
 */
export function withAutoPrune(saver, { keepLast, slack, client = saver?.client, onError = warn, ...options } = {}) {
  if (typeof saver?.put !== "function" || typeof saver?.end !== "function") {
    throw new InvalidArgumentError("withAutoPrune wraps a RedisSaver of @langchain/langgraph-checkpoint-redis");
  }
  if (!Number.isSafeInteger(keepLast) || keepLast < 1) {
    // (0 would delete the conversation at every put: to delete a thread, prune(client, id, 0))
    throw new InvalidArgumentError(`keepLast must be an integer of at least 1, got ${keepLast}`);
  }
  slack ??= Math.max(1, Math.floor(keepLast / 2));
  if (!Number.isSafeInteger(slack) || slack < 1) {
    throw new InvalidArgumentError(`slack must be an integer of at least 1, got ${slack}`);
  }
  threadOptions({ layout: "js", ...options }); // checked now, not at the first prune
  const sincePrune = new Map(); // thread id -> puts since its last prune, least recently put first
  const running = new Map(); // thread id -> its prune in flight
  const again = new Set(); // threads due while their prune ran (it may have listed before): once more

  function due(threadId) {
    const count = (sincePrune.get(threadId) ?? slack - 1) + 1;
    sincePrune.delete(threadId);
    sincePrune.set(threadId, count >= slack ? 0 : count);
    if (sincePrune.size > TRACKED_THREADS) sincePrune.delete(sincePrune.keys().next().value);
    return count >= slack;
  }

  async function pruneUntilCaughtUp(threadId) {
    do {
      again.delete(threadId);
      try {
        await prune(client, threadId, keepLast, { layout: "js", ...options });
      } catch (error) {
        onError(error, threadId);
      }
    } while (again.has(threadId));
  }

  function start(threadId) {
    if (running.has(threadId)) {
      again.add(threadId);
      return;
    }
    const done = pruneUntilCaughtUp(threadId).finally(() => running.delete(threadId));
    running.set(threadId, done);
  }

  async function put(config, ...rest) {
    const saved = await saver.put(config, ...rest);
    const threadId = config?.configurable?.thread_id;
    if (threadId !== undefined && due(String(threadId))) start(String(threadId));
    return saved;
  }

  async function end() {
    while (running.size) await Promise.all(running.values());
    return saver.end();
  }

  const own = { put, end, pendingPrunes: () => running.size };
  return new Proxy(saver, {
    get(target, name) {
      if (Object.hasOwn(own, name)) return own[name];
      const value = Reflect.get(target, name, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
