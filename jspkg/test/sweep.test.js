// Sweeps of a LangGraph.js store: full over every thread, then incremental, looping on the
// cursor with the counts summed; a thread that cannot be pruned is named and the rest pruned.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { IndexMissingError, InvalidArgumentError, sweep } from "../src/index.js";
import {
  CLIENTS,
  IDS,
  close,
  flush,
  jsStore,
  needs,
  r,
  read,
  restore,
  rootIds,
  unreferencedBlobs,
  write,
} from "./helpers.js";

let store;
let snap;

before(async () => {
  if (!needs.skip) ({ store, snap } = await jsStore());
});
after(() => r?.disconnect());

test("a sweep loops on the cursor, sums its calls' counts and keeps the newest of every thread", needs, async () => {
  await restore(snap);
  const client = await CLIENTS["node-redis 5"]();
  try {
    const keys = (await r.keys("*")).length;
    const dry = await sweep(client, 2, { dryRun: true });
    assert.equal((await r.keys("*")).length, keys);
    assert.equal(dry.threadsPruned, IDS.length);
    const seen = [];
    const first = await sweep(client, 2, { budget: 100, onProgress: (p) => seen.push(p) });
    assert.ok(first.calls > 1, `${first.calls} calls`);
    assert.deepEqual(
      seen.map((p) => p.calls),
      Array.from({ length: first.calls }, (_, i) => i + 1),
    );
    assert.equal(seen.at(-1), first);
    assert.ok(seen.slice(0, -1).every((p) => p.cursor !== "0"));
    assert.deepEqual([first.kind, first.layout, first.threadsPruned, first.cursor], ["full", "js", IDS.length, "0"]);
    for (const field of ["checkpointsDeleted", "writesDeleted", "threadsPruned"])
      assert.equal(first[field], dry[field], field);
    const now = await read(IDS);
    for (const t of IDS) assert.deepEqual(rootIds(now[t]), rootIds(store[t]).slice(0, 2), t);
  } finally {
    await close(client);
  }
});

test(
  "a full sweep leaves no blob that nothing reads; the next is incremental, and full when asked",
  needs,
  async () => {
    await restore(snap);
    const client = await CLIENTS.ioredis();
    try {
      const first = await sweep(client, 2);
      assert.deepEqual([first.kind, first.threadsPruned, first.since], ["full", IDS.length, null]);
      for (const t of IDS) assert.deepEqual(await unreferencedBlobs(t), [], t);
      await write([["a,b", 2, "chat"]]);
      const second = await sweep(client, 2);
      assert.deepEqual([second.kind, second.threadsPruned], ["incremental", 1]);
      assert.ok(second.since > 0);
      assert.equal(rootIds((await read(["a,b"]))["a,b"]).length, 2);
      // the rule's last full pass began 8 days ago: past the default backstop (7 days), unless it is off
      for (const [field] of Object.entries(await r.hgetall("lgprune:watermarks"))) {
        if (field.startsWith("full ")) await r.hset("lgprune:watermarks", field, Date.now() - 8 * 24 * 3600 * 1000);
      }
      assert.equal((await sweep(client, 2, { fullEvery: null })).kind, "incremental");
      assert.equal((await sweep(client, 2)).kind, "full");
      const full = await sweep(client, 2, { full: true });
      assert.deepEqual([full.kind, full.threadsPruned, full.since], ["full", 0, null]);
    } finally {
      await close(client);
    }
  },
);

for (const [name, connect] of Object.entries(CLIENTS)) {
  test(`a thread that cannot be pruned is named, and the others are pruned (${name})`, needs, async () => {
    await restore(snap);
    const [oldest] = (await r.keys("write_keys_zset:wang1::*")).sort();
    await r.unlink(oldest);
    await r.set(oldest, "not a registry"); // a key of another type
    const client = await connect();
    try {
      const result = await sweep(client, 1, { full: true });
      assert.equal(result.threadsFailed, 1);
      assert.equal(result.failed.length, 1);
      assert.equal(result.failed[0].threadId, "wang1");
      assert.match(result.failed[0].reason, /^BADDATA /);
      assert.equal(result.threadsPruned, IDS.length - 1);
      assert.equal(rootIds((await read(["wang1"])).wang1).length, store.wang1.namespaces[""].length);
    } finally {
      await close(client);
    }
  });
}

test("bad sweep arguments and stores are one clear error and delete nothing", needs, async () => {
  await restore(snap);
  const client = await CLIENTS.ioredis();
  try {
    const keys = await r.keys("*");
    await assert.rejects(sweep(client, 1, { margin: -1 }), InvalidArgumentError);
    await assert.rejects(sweep(client, 1, { maxAge: 1.5 }), /whole number of milliseconds/);
    await assert.rejects(sweep(client, 1, { onProgress: "yes" }), /onProgress must be a function/);
    await assert.rejects(sweep(client, 1, { dry_run: true }), /unknown option dry_run/);
    await assert.rejects(sweep(client, 1, { layout: "python" }), IndexMissingError);
    assert.equal((await r.keys("*")).length, keys.length);
    await flush();
    await assert.rejects(sweep(client, 1), IndexMissingError);
  } finally {
    await close(client);
  }
});
