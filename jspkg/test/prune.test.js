// Prunes of a LangGraph.js store written by the real JS saver, through each client: exact
// (the saver reads every kept checkpoint back as before), blobs by reference, hostile
// neighbours untouched, errors before any delete.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  IndexMissingError,
  InvalidArgumentError,
  LgpruneError,
  MixedStoreError,
  install,
  prune,
  pruneMany,
} from "../src/index.js";
import {
  CLIENTS,
  IDS,
  close,
  dumps,
  jsStore,
  needs,
  others,
  r,
  read,
  restore,
  rootIds,
  unreferencedBlobs,
} from "./helpers.js";

let store; // what the JS saver reads back of THREADS, as written
let snap; // and the keys, restored before each test

before(async () => {
  if (!needs.skip) ({ store, snap } = await jsStore());
});
after(() => r?.disconnect());

// the root lists the newest `keep` checkpoints it listed before; every checkpoint still listed
// (any namespace) reads back as before, and so does the graph's state of each
function assertKeptExactly(before, now, keep) {
  assert.deepEqual(rootIds(now), rootIds(before).slice(0, keep));
  for (const [ns, listed] of Object.entries(now.namespaces)) {
    assert.ok(listed.length, `namespace ${ns} lists nothing`);
    const old = new Map(before.namespaces[ns].map((c) => [c.id, c]));
    for (const c of listed) assert.deepEqual(c, old.get(c.id));
  }
  for (const [id, state] of Object.entries(now.states)) assert.deepEqual(state, before.states[id]);
  assert.equal(now.latest, before.latest);
}

for (const [name, connect] of Object.entries(CLIENTS)) {
  describe(`with ${name}`, needs, () => {
    test("a prune keeps the newest of a chat and a subgraph thread and touches no neighbour", async () => {
      await restore(snap);
      const client = await connect();
      try {
        let [before, keys] = [store, await dumps()];
        for (const target of ["wang1", "sg"]) {
          const result = await prune(client, target, 2);
          assert.ok(result.checkpointsDeleted > 0 && result.blobsDeleted > 0, JSON.stringify(result));
          assert.equal(result.calls, 1);
          const now = await read(IDS);
          assertKeptExactly(store[target], now[target], 2);
          // Wang1, a,b, user:42:chat...: every other thread's keys byte for byte
          const left = await dumps();
          for (const [key, [, dump]] of others(keys, target)) assert.equal(left.get(key)?.[1], dump, key);
          for (const other of IDS) if (other !== target) assert.deepEqual(now[other], before[other]);
          assert.deepEqual(await unreferencedBlobs(target), []); // no blob left that nothing reads
          [before, keys] = [now, left];
        }
      } finally {
        await close(client);
      }
    });

    test("a dry run deletes nothing and counts what the prune deletes; a small budget loops to the same end", async () => {
      await restore(snap);
      const client = await connect();
      try {
        const keys = await dumps();
        const dry = await prune(client, "wang1", 1, { dryRun: true });
        assert.deepEqual(await dumps(), keys);
        const done = await prune(client, "wang1", 1, { budget: 10 });
        assert.ok(done.calls > 1, `${done.calls} calls`);
        for (const field of ["checkpointsDeleted", "writesDeleted", "blobsDeleted", "keysDeleted", "checkpointsKept"]) {
          assert.equal(done[field], dry[field], field);
        }
        assert.equal(done.dryRun, false);
        assert.equal(dry.dryRun, true);
        assert.equal(rootIds((await read(["wang1"])).wang1).length, 1);
      } finally {
        await close(client);
      }
    });

    test("keep 0 deletes the thread and only it (not user:42:chat)", async () => {
      await restore(snap);
      const client = await connect();
      try {
        const keys = await dumps();
        await prune(client, "user", 0, { layout: "js" });
        const left = await dumps();
        assert.deepEqual(
          [...left].filter(([, [who]]) => who === "user"),
          [],
        );
        for (const [key, [, dump]] of others(keys, "user")) assert.equal(left.get(key)?.[1], dump, key);
        const now = await read(["user", "user:42:chat"]);
        assert.deepEqual(now.user.namespaces, { "": [] });
        assert.deepEqual(now["user:42:chat"], store["user:42:chat"]);
      } finally {
        await close(client);
      }
    });

    test("pruneMany prunes each thread as prune does, over batches of 1,000 ids", async () => {
      await restore(snap);
      const client = await connect();
      try {
        const each = await Promise.all(IDS.map((t) => prune(client, t, 2, { dryRun: true })));
        const many = [...IDS, ...Array.from({ length: 1200 }, (_, i) => `absent-${i}`)];
        const result = await pruneMany(client, many, 2);
        assert.equal(result.calls, 2);
        const now = await read(IDS);
        for (const t of IDS) assertKeptExactly(store[t], now[t], 2);
        for (const field of ["checkpointsDeleted", "writesDeleted", "blobsDeleted", "keysDeleted", "checkpointsKept"]) {
          assert.equal(
            result[field],
            each.reduce((n, x) => n + x[field], 0),
            field,
          );
        }
      } finally {
        await close(client);
      }
    });

    test("bad arguments and stores are one clear error and delete nothing", async () => {
      await restore(snap);
      const client = await connect();
      try {
        const keys = await dumps();
        await assert.rejects(prune(client, "", 1), (e) => e instanceof InvalidArgumentError && e.code === "BADARG");
        await assert.rejects(
          prune(client, "wang1", -1),
          (e) => e instanceof InvalidArgumentError && e.code === "BADARG",
        );
        await assert.rejects(prune(client, "wang1", 1, { layout: "ts" }), /layout must be/);
        await assert.rejects(prune(client, "wang1", 1, { budget: 9 }), /budget must be an integer of at least 10/);
        await assert.rejects(prune(client, "wang1", 1, { layout: "python" }), IndexMissingError); // no such index
        await assert.rejects(prune(client, "wang1", 1, { layout: "python" }), /only the js saver's index/);
        await assert.rejects(
          prune(client, "wang1", 1, { layout: "python" }),
          /pass layout: "js" \(or leave layout out\)/,
        );
        await assert.rejects(pruneMany(client, "wang1", 1), /array of strings/);
        await assert.rejects(
          prune(client, "wang1", 1, { dryrun: true }),
          /unknown option dryrun: the options are dryRun,/,
        );
        await assert.rejects(prune(client, "wang1", 1, null), /options must be an object/);
        await r.call(
          "FT.CREATE",
          "checkpoint",
          "ON",
          "JSON",
          "PREFIX",
          "1",
          "checkpoint:",
          "SCHEMA",
          "$.thread_id",
          "AS",
          "thread_id",
          "TAG",
        );
        await assert.rejects(prune(client, "sg", 0), MixedStoreError);
        await r.call("FT.DROPINDEX", "checkpoint");
        assert.deepEqual(await dumps(), keys);
        // an error after earlier calls deleted something carries what they did
        const ids = ["wang1", ...Array.from({ length: 999 }, (_, i) => `absent-${i}`), ""];
        const error = await pruneMany(client, ids, 1).catch((e) => e);
        assert.ok(error instanceof InvalidArgumentError, String(error));
        assert.ok(error.partial.checkpointsDeleted > 0 && error.partial.calls === 1, JSON.stringify(error.partial));
        assert.equal(rootIds((await read(["wang1"])).wang1).length, 1);
      } finally {
        await close(client);
      }
    });
  });
}

describe("install", needs, () => {
  test("the library lost by the server is installed again, once, by the next prune", async () => {
    await restore(snap);
    const client = await CLIENTS["node-redis 4"]();
    try {
      assert.equal(await install(client), (await r.call("FCALL", "lgprune_version", "0")).toString());
      const dry = await prune(client, "wang1", 2, { dryRun: true });
      assert.ok(dry.checkpointsDeleted > 0);
      await r.call("FUNCTION", "FLUSH");
      await r.call("CONFIG", "RESETSTAT");
      const results = await Promise.all(Array.from({ length: 200 }, () => prune(client, "wang1", 2)));
      assert.equal(
        results.reduce((n, x) => n + x.checkpointsDeleted, 0),
        dry.checkpointsDeleted,
      );
      const stats = await r.call("INFO", "commandstats");
      assert.match(stats, /cmdstat_function\|load:calls=1,/);
    } finally {
      await close(client);
    }
  });

  test("a client that is not a Redis client, or not on database 0, is refused", async () => {
    await assert.rejects(prune({}, "wang1", 1), /node-redis or ioredis client, got Object/);
    const client = await CLIENTS["node-redis 4"]();
    await close(client);
    const { createClient } = await import("redis4");
    await assert.rejects(prune(createClient({ url: "redis://127.0.0.1:1", database: 3 }), "w", 1), /database 3/);
  });
});

test("every error code of the library has its class", async () => {
  const { ERROR_CLASSES } = await import("../src/index.js");
  const { library } = await import("../src/facts.js");
  assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), [...library().errorCodes].sort());
  for (const [code, Class] of Object.entries(ERROR_CLASSES)) assert.ok(new Class("x", code) instanceof LgpruneError);
});
