// Shared by the tests: a real Redis (the embedded server of the Python package, once per test
// file, or $REDIS_URL), the clients, LangGraph.js's real saver (tests/js, driven through
// tests/js/saver.mjs as the Python tests drive it), and what the store holds.
import { execFile, spawn } from "node:child_process";
import { copyFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import Redis from "ioredis";
import { createClient as createClient4 } from "redis4";
import { createClient as createClient5 } from "redis5";
import { createClient as createClient6 } from "redis6";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const JS_DIR = `${ROOT}tests/js`;
const run = promisify(execFile);

// the package reads its library from jspkg/lgprune.lua, which prepack copies: copy it as prepack does
copyFileSync(`${ROOT}lua/lgprune.lua`, `${ROOT}jspkg/lgprune.lua`);

/** The Python the embedded server and the comparison with the Python package run with, or null. */
export const PYTHON =
  process.env.LGPRUNE_PYTHON || (existsSync(`${ROOT}.venv/bin/python`) ? `${ROOT}.venv/bin/python` : null);

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// $REDIS_URL (flushed by the tests: a throwaway server), else the embedded server on a free port
async function startRedis() {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL };
  if (PYTHON === null) {
    return { skip: "no Redis: set $REDIS_URL, or LGPRUNE_PYTHON to a Python with lgprune[embedded] (CI: .venv)" };
  }
  const port = await freePort();
  const child = spawn(PYTHON, ["-m", "lgprune", "redis", "--port", String(port)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  process.on("exit", () => child.kill());
  let said = "";
  const ready = await new Promise((resolve) => {
    const hear = (chunk) => {
      said += chunk;
      if (said.includes("redis://")) resolve(true);
    };
    child.stdout.on("data", hear);
    child.stderr.on("data", hear);
    child.on("exit", () => resolve(false));
  });
  child.stdout.destroy();
  child.stderr.destroy();
  child.unref();
  if (!ready) return { skip: `the embedded Redis did not start: ${said.trim().slice(-300)}` };
  return { url: `redis://127.0.0.1:${port}` };
}

export const redis = await startRedis();

/** Why the JS saver cannot run here, or null. */
export const saverSkip = existsSync(`${JS_DIR}/node_modules/@langchain/langgraph-checkpoint-redis`)
  ? null
  : "the JS saver is not installed: npm ci in tests/js";

/** Skip a test needing Redis (and the JS saver) when either is missing: a `skip` option of node:test. */
export const needs = { skip: redis.skip ?? saverSkip ?? false };

/** The clients lgprune works with: connected, on the test server. */
export const CLIENTS = {
  "node-redis 4": async () => createClient4({ url: redis.url }).connect(),
  "node-redis 5": async () => createClient5({ url: redis.url }).connect(),
  "node-redis 6": async () => createClient6({ url: redis.url }).connect(),
  ioredis: async () => new Redis(redis.url, { lazyConnect: false }),
};

export async function close(client) {
  if (client instanceof Redis) client.disconnect();
  else await client.quit();
}

/** One connection for the tests' own reads and writes (ioredis: buffers where asked). */
export const r = redis.url ? new Redis(redis.url) : null;
export async function flush() {
  await r.call("FLUSHALL");
  await r.call("FUNCTION", "FLUSH");
}

/** Every key's DUMP: a store to go back to. */
export async function snapshot() {
  const keys = await r.keys("*");
  return new Map(await Promise.all(keys.map(async (key) => [key, await r.dumpBuffer(key)])));
}

/** The store as `snapshot()` saw it (the indexes stay and index the keys again as they come back). */
export async function restore(snap) {
  const keys = await r.keys("*");
  if (keys.length) await r.unlink(...keys);
  for (const [key, dump] of snap) await r.restore(key, 0, dump);
}

/** The THREADS written once by the JS saver, what it reads back of them, and a snapshot to restore. */
export async function jsStore() {
  await flush();
  await write(THREADS);
  return { store: await read(IDS), snap: await snapshot() };
}

/** One request to tests/js/saver.mjs (see its head): its JSON answer. */
export async function js(op, request) {
  const child = spawn("node", ["saver.mjs"], { cwd: JS_DIR, stdio: ["pipe", "pipe", "pipe"] });
  child.stdin.end(JSON.stringify({ op, url: redis.url, ...request }));
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  const code = await new Promise((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`saver.mjs ${op} failed: ${err.slice(-2000)}`);
  return JSON.parse(out);
}

/** Run [thread id, turns, graph "chat" or "subgraph"] through the JS saver. */
export const write = (threads) => js("write", { threads: threads.map(([id, turns, graph]) => ({ id, turns, graph })) });

/** Per thread, what the JS saver reads back (list(), getTuple, getState; see saver.mjs). */
export const read = async (threads) => (await js("read", { threads })).threads;

/** The root checkpoints the JS saver lists, newest id first. */
export const rootIds = (state) =>
  state.namespaces[""]
    .map((c) => c.id)
    .sort()
    .reverse();

// hostile neighbours: case variants, a comma-joined id, a thread whose id starts with another's and a colon
export const THREADS = [
  ["wang1", 5, "chat"],
  ["Wang1", 3, "chat"],
  ["a,b", 3, "chat"],
  ["user", 4, "chat"],
  ["user:42:chat", 3, "chat"],
  ["sg", 3, "subgraph"],
];
export const IDS = THREADS.map(([id]) => id);

// the thread a key belongs to by its content: a JSON document's thread_id, a registry's first member's
async function owner(key) {
  const type = await r.type(key);
  if (type === "ReJSON-RL") return JSON.parse((await r.call("JSON.GET", key, "$.thread_id")) ?? "[]")[0] ?? null;
  if (type === "zset") {
    const [first] = await r.zrange(key, 0, 0);
    return first === undefined ? null : owner(first);
  }
  return null;
}

/** Every key: [its owner thread, its DUMP in hex]. */
export async function dumps() {
  const out = new Map();
  for (const key of (await r.keys("*")).sort())
    out.set(key, [await owner(key), (await r.dumpBuffer(key)).toString("hex")]);
  return out;
}

/** The keys whose owner is not `thread`, with their dumps. */
export const others = (keys, thread) => [...keys].filter(([, [who]]) => who !== thread);

const spell = (v) => (typeof v === "number" ? String(Math.trunc(v)) : String(v));

/** The thread's blob keys that no checkpoint of its namespace names in channel_versions. */
export async function unreferencedBlobs(thread) {
  const wanted = new Set();
  const blobs = [];
  for (const key of await r.keys("checkpoint*")) {
    if ((await r.type(key)) !== "ReJSON-RL") continue;
    const doc = JSON.parse(await r.call("JSON.GET", key));
    if (doc.thread_id !== thread) continue;
    if (key.startsWith("checkpoint_blob:")) blobs.push(key);
    else if (key.startsWith("checkpoint:")) {
      const ns = doc.checkpoint_ns === "__empty__" ? "" : doc.checkpoint_ns;
      for (const [channel, version] of Object.entries(doc.checkpoint.channel_versions ?? {})) {
        wanted.add(`checkpoint_blob:${thread}:${ns}:${channel}:${spell(version)}`);
      }
    }
  }
  return blobs.filter((key) => !wanted.has(key)).sort();
}

/** Run a Python command of the lgprune package (the CLI) with args; its stdout. */
export async function python(...args) {
  const { stdout } = await run(PYTHON, ["-m", "lgprune", ...args], { env: { ...process.env, REDIS_URL: redis.url } });
  return stdout;
}
