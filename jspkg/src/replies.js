// Replies of the Lua library and of Redis, whatever the client: text, name/value pairs, and
// which error a thrown reply is.

/** A reply element as text (a string, a Buffer or a number). */
export const text = (value) => (Buffer.isBuffer(value) ? value.toString("utf8") : String(value));

/** A name/value reply (a RESP2 flat list, or a RESP3 map as a Map or an object) as a Map with text names. */
export function pairs(reply) {
  if (reply == null) return new Map();
  if (reply instanceof Map) return new Map([...reply].map(([k, v]) => [text(k), v]));
  if (!Array.isArray(reply)) return new Map(Object.entries(reply));
  const out = new Map();
  for (let i = 0; i + 1 < reply.length; i += 2) out.set(text(reply[i]), reply[i + 1]);
  return out;
}

const REPLY_ERRORS = new Set(["ErrorReply", "ReplyError"]); // node-redis's, ioredis's

/** The server's error message when `error` is an error reply (node-redis and ioredis alike), else null. */
export function serverMessage(error) {
  for (let c = error?.constructor; c && c !== Error; c = Object.getPrototypeOf(c)) {
    if (REPLY_ERRORS.has(c.name)) return String(error.message);
  }
  return null;
}
