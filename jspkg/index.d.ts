// Types of lgprune for Node.js (ESM). The client is a node-redis client (createClient, 4 or
// later) or an ioredis client, on database 0.

/** A node-redis client (`sendCommand`) or an ioredis client (`call`). */
export type RedisClient =
  | { sendCommand(args: string[], ...rest: any[]): Promise<unknown> }
  | { call(command: string, ...args: (string | number)[]): Promise<unknown> };

/** Where the saver keeps its data, and how much one server call may do. */
export interface CallOptions {
  /** Whose keys: "js" (LangGraph.js's saver) or "python" (langgraph-checkpoint-redis); default: the one whose index exists. */
  layout?: "js" | "python";
  /** Keys deleted per server call (default 2000, at least 10); the operation calls again until done. */
  budget?: number;
  /** The Python saver's checkpoint_prefix (default "checkpoint"). */
  checkpointPrefix?: string;
  /** The Python saver's checkpoint_write_prefix (default "checkpoint_write"). */
  checkpointWritePrefix?: string;
  /** Count what would go; delete nothing. */
  dryRun?: boolean;
  /** Also keep every checkpoint younger than this many milliseconds. */
  maxAge?: number;
  /** Delete a whole thread whose newest checkpoint is older than this many milliseconds. */
  idleTtl?: number;
}

/** What a prune did (or, in a dry run, would do). */
export interface PruneResult {
  readonly checkpointsDeleted: number;
  readonly writesDeleted: number;
  /** Every key deleted: checkpoints, writes, blobs, registries. */
  readonly keysDeleted: number;
  /** Checkpoints left (summed over the threads of pruneMany). */
  readonly checkpointsKept: number;
  /** Checkpoints beyond keep kept for DeltaChannel history. */
  readonly deltaAncestorsKept: number;
  /** LangGraph.js: channel-value blobs no kept checkpoint reads (also in keysDeleted). */
  readonly blobsDeleted: number;
  /** Server calls made. */
  readonly calls: number;
  readonly dryRun: boolean;
}

/** A thread a sweep could not prune, and why ("<CODE> <message>"); nothing of it was deleted. */
export interface ThreadFailure {
  readonly threadId: string;
  readonly reason: string;
}

/** What a sweep did (or, in a dry run, would do). */
export interface SweepResult {
  readonly threadsVisited: number;
  readonly threadsPruned: number;
  /** Threads deleted whole as idle (idleTtl). */
  readonly threadsDeleted: number;
  /** Threads whose id the index cannot match. */
  readonly threadsSkipped: number;
  /** Threads that could not be pruned (see `failed`); the sweep went on. */
  readonly threadsFailed: number;
  readonly checkpointsDeleted: number;
  readonly writesDeleted: number;
  readonly keysDeleted: number;
  readonly orphansDeleted: number;
  readonly blobsDeleted: number;
  readonly calls: number;
  readonly elapsedMs: number;
  /** "0": the pass is complete. */
  readonly cursor: string;
  readonly dryRun: boolean;
  /** "incremental": only threads with checkpoints since `since` were visited. */
  readonly kind: "full" | "incremental";
  /** An incremental pass: the checkpoint_ts it read from (ms since the epoch), else null. */
  readonly since: number | null;
  /** It passed over something it could not finish: the next pass is full. */
  readonly unfinished: boolean;
  readonly layout: "js" | "python";
  /** The threads it could not prune (up to 100 per server call). */
  readonly failed: readonly ThreadFailure[];
}

export interface SweepOptions extends CallOptions {
  /** A full pass over every thread, not only those changed since the last pass. */
  full?: boolean;
  /** How far before the last pass an incremental pass reads, in ms (default 600000), for writers' clock skew. */
  margin?: number;
  /** A full pass when the last one is older than this many ms (default 7 days; null: never by age). */
  fullEvery?: number | null;
  /** Called with the summed result after each server call. */
  onProgress?: (result: SweepResult) => void;
}

/** Load the library when it is missing or older (one probe and at most one load per client); the version in use. */
export function install(client: RedisClient, options?: { force?: boolean }): Promise<string>;

/** Keep the newest `keep` checkpoints per namespace of one thread, with their writes and blobs; delete the rest. */
export function prune(client: RedisClient, threadId: string, keep: number, options?: CallOptions): Promise<PruneResult>;

/** `prune` for many threads, up to 1,000 per server call; the counts are summed. */
export function pruneMany(
  client: RedisClient,
  threadIds: Iterable<string>,
  keep: number,
  options?: CallOptions,
): Promise<PruneResult>;

/** Prune every thread (incremental after the first complete pass of the same rule); the counts are summed. */
export function sweep(client: RedisClient, keep: number, options?: SweepOptions): Promise<SweepResult>;

export interface AutoPruneOptions extends Omit<CallOptions, "dryRun" | "layout"> {
  /** Checkpoints per namespace a thread keeps (at least 1). */
  keepLast: number;
  /** Puts of a thread between two prunes (default keepLast / 2, at least 1). */
  slack?: number;
  /** The client prunes run over (default: the saver's own). */
  client?: RedisClient;
  /** Called when a background prune fails (default: one console.warn line). */
  onError?: (error: Error, threadId: string) => void;
}

/** The saver, whose puts prune their thread in the background; `end()` awaits the prunes in flight. */
export function withAutoPrune<S extends { put(...args: any[]): Promise<any>; end(): Promise<void> }>(
  saver: S,
  options: AutoPruneOptions,
): S & { pendingPrunes(): number };

/** Something lgprune could not do; the server call that failed deleted nothing. */
export class LgpruneError extends Error {
  /** The library's code ("BADARG", "NOINDEX", ...) when it refused the call, else null. */
  readonly code: string | null;
  /** What the operation's earlier calls did, when there were any. */
  partial: PruneResult | SweepResult | null;
  constructor(message: string, code?: string | null);
}
/** BADARG: a thread id, keep count or option that lgprune refuses. */
export class InvalidArgumentError extends LgpruneError {}
/** NOINDEX: the saver's index does not exist. */
export class IndexMissingError extends LgpruneError {}
/** NOMODULE: no search or JSON module, or no Redis Functions. */
export class ModulesMissingError extends LgpruneError {}
/** BADDATA: a stored document lgprune cannot read. */
export class BadDataError extends LgpruneError {}
/** PARTIAL: a search answered partially: try again. */
export class PartialSearchError extends LgpruneError {}
/** MIXED: both savers' indexes cover the same keys. */
export class MixedStoreError extends LgpruneError {}
/** NOPERM: the ACL lets this user read a key the prune must delete, but not delete it. */
export class NoPermissionError extends LgpruneError {}
/** There is more to do, but the last call could delete nothing. */
export class NoProgressError extends LgpruneError {}
export class LibraryVersionError extends LgpruneError {}
export class LibraryInstallError extends LgpruneError {}
export class ReadOnlyServerError extends LgpruneError {}
/** The class of each of the library's error codes. */
export const ERROR_CLASSES: Readonly<Record<string, typeof LgpruneError>>;
