// One adapter per client, chosen once: node-redis (sendCommand) or ioredis (call). Everything
// else sends through it. Each client also holds its install state: the first call installs
// the library, once for every call in flight on that client.
import {
  InvalidArgumentError,
  LgpruneError,
  ModulesMissingError,
  NO_FUNCTIONS,
  ReadOnlyServerError,
  fromServerMessage,
} from "./errors.js";
import { installLibrary } from "./library.js";
import { serverMessage } from "./replies.js";

const connections = new WeakMap();

// How a client sends a command (an array of strings) and which database it selected.
function adapter(client) {
  if (typeof client?.call === "function") {
    return { send: (args) => client.call(...args), database: client.options?.db }; // ioredis
  }
  if (typeof client?.sendCommand === "function") {
    return { send: (args) => client.sendCommand(args), database: client.options?.database }; // node-redis 4, 5
  }
  throw new InvalidArgumentError(`client must be a node-redis or ioredis client, got ${describe(client)}`);
}

const describe = (value) => (value === null || typeof value !== "object" ? String(value) : value.constructor.name);

/** The connection of `client`: its adapter and install state, made on first use. */
export function connection(client) {
  let conn = connections.get(client);
  if (conn === undefined) {
    const { send, database } = adapter(client);
    if (database !== undefined && Number(database) !== 0) {
      throw new InvalidArgumentError(
        `the client selects database ${database}: lgprune works on database 0 only, where the saver's ` +
          "RediSearch index lives (an index answers for database 0, not for the keys of others)",
      );
    }
    conn = { send, version: null, installs: 0, pending: null };
    connections.set(client, conn);
  }
  return conn;
}

/**
 * Install the library unless another call did since this one saw `seen` installs: calls in
 * flight share one probe (and at most one FUNCTION LOAD) instead of each sending their own.
 */
export function install(conn, seen = conn.installs, force = false) {
  if (conn.pending === null) {
    if (conn.installs !== seen && !force) return Promise.resolve(conn.version);
    conn.pending = installLibrary(conn.send, force)
      .then((version) => {
        conn.version = version;
        conn.installs += 1;
        return version;
      })
      .finally(() => {
        conn.pending = null;
      });
  }
  return conn.pending;
}

/**
 * FCALL `fn` with `args`, after this client's first install; when the server lost the
 * library, install it once and call again. An error of the library is thrown as its class,
 * with `partial` set to `doneBefore` (what the operation's earlier calls did) when there were any.
 */
export async function fcall(conn, fn, args, doneBefore) {
  for (let attempt = 1; ; attempt++) {
    const seen = conn.installs;
    if (conn.version === null) await install(conn, seen);
    try {
      return await conn.send(["FCALL", fn, "0", ...args]);
    } catch (error) {
      const message = serverMessage(error);
      if (message === null) throw error;
      const lost = message.toLowerCase().includes("function not found");
      if (lost && attempt === 1) {
        await install(conn, seen);
        continue;
      }
      const thrown = asError(message) ?? error;
      if (thrown instanceof LgpruneError && doneBefore?.calls) thrown.partial = doneBefore;
      throw thrown;
    }
  }
}

function asError(message) {
  if (message.startsWith("LGPRUNE")) return fromServerMessage(message);
  if (message.startsWith("READONLY")) {
    return new ReadOnlyServerError("this server is a read-only replica: prune on the primary (the replica follows)");
  }
  if (message.toLowerCase().includes("unknown command")) return new ModulesMissingError(NO_FUNCTIONS);
  return null;
}
