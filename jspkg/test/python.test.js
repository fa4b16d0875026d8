// The npm package and the Python package on the same store: the same counts, and each
// recognises the other's install of the library (the same version and build).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { install, prune, sweep } from "../src/index.js";
import { CLIENTS, IDS, PYTHON, close, jsStore, needs, python, r, restore } from "./helpers.js";

const skip = needs.skip || (PYTHON === null && "no Python with the lgprune package: set LGPRUNE_PYTHON (CI: .venv)");
const camel = (name) => name.replace(/_(\w)/g, (_, c) => c.toUpperCase());
let snap;

before(async () => {
  if (!skip) ({ snap } = await jsStore());
});
after(() => r?.disconnect());

// the Python result's fields, spelt as the npm package spells them, with the same values
function assertSameCounts(py, js) {
  for (const [name, value] of Object.entries(py)) {
    if (["elapsed", "thread_id", "since"].includes(name)) continue;
    assert.deepEqual(js[camel(name)], value, name);
  }
}

test("prune and sweep count what the Python package counts on the same store", { skip }, async () => {
  await restore(snap);
  const client = await CLIENTS["node-redis 4"]();
  try {
    for (const thread of IDS) {
      const py = JSON.parse(await python("prune", thread, "--keep", "1", "--dry-run", "--json"));
      assertSameCounts(py, await prune(client, thread, 1, { dryRun: true }));
    }
    const py = JSON.parse(await python("sweep", "--keep", "2", "--dry-run", "--json"));
    assert.ok(py.checkpoints_deleted > 0 && py.blobs_deleted > 0);
    assertSameCounts(py, await sweep(client, 2, { dryRun: true }));
    const done = await sweep(client, 2); // and what the Python package said would go, went
    for (const name of ["checkpoints_deleted", "writes_deleted", "keys_deleted", "blobs_deleted", "threads_pruned"]) {
      assert.equal(done[camel(name)], py[name], name);
    }
  } finally {
    await close(client);
  }
});

test("each package uses the library the other installed, loading nothing", { skip }, async () => {
  const client = await CLIENTS.ioredis();
  const loads = async () =>
    Number(/cmdstat_function\|load:calls=(\d+)/.exec(await r.call("INFO", "commandstats"))?.[1] ?? 0);
  try {
    await r.call("FUNCTION", "FLUSH");
    await python("install");
    await r.call("CONFIG", "RESETSTAT");
    await install(client);
    assert.equal(await loads(), 0);
    await r.call("FUNCTION", "FLUSH");
    await install(client);
    assert.equal(await loads(), 1);
    await python("install");
    assert.equal(await loads(), 1);
  } finally {
    await close(client);
  }
});
