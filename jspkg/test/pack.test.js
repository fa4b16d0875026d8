// The package as npm packs it: the very lua/lgprune.lua inside, its types checked against the
// real clients' own, and the README's JS examples run from a scratch project that installed
// the tarball (as a user would, with the Redis client beside it).
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { IDS, ROOT, jsStore, needs, r, read, redis, restore, rootIds } from "./helpers.js";

const run = promisify(execFile);
const skip = spawnSync("npm", ["--version"]).error ? "no npm: the package cannot be packed here" : false;
const PKG = `${ROOT}jspkg`;
const dir = mkdtempSync(join(tmpdir(), "lgprune-npm-"));
const app = join(dir, "app");
let tarball;
let store;
let snap;

before(async () => {
  if (skip) return;
  rmSync(`${PKG}/lgprune.lua`, { force: true }); // (the tests' copy): only prepack can put it in the tarball
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: PKG });
  tarball = join(dir, JSON.parse(stdout)[0].filename);
  await run("tar", ["-xzf", tarball, "-C", dir]);
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], { cwd: app });
  // the clients a user installs beside it (here: the package's own dev copies, no download)
  symlinkSync(`${PKG}/node_modules/redis6`, join(app, "node_modules", "redis")); // what `npm install redis` gives
  symlinkSync(`${PKG}/node_modules/ioredis`, join(app, "node_modules", "ioredis"));
  if (!needs.skip) ({ store, snap } = await jsStore());
});
after(() => {
  r?.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

test(
  "the packed library is lua/lgprune.lua, byte for byte, and the tarball holds only the package",
  { skip },
  async () => {
    assert.ok(readFileSync(join(dir, "package", "lgprune.lua")).equals(readFileSync(`${ROOT}lua/lgprune.lua`)));
    const { version } = JSON.parse(readFileSync(join(dir, "package", "package.json"), "utf8"));
    assert.equal(version, /^local VERSION = '(.*)'$/m.exec(readFileSync(`${ROOT}lua/lgprune.lua`, "utf8"))[1]);
    const { stdout } = await run("tar", ["-tzf", tarball]);
    const files = stdout.trim().split("\n").sort();
    assert.deepEqual(
      files.filter((f) => !f.startsWith("package/src/")),
      ["package/LICENSE", "package/README.md", "package/index.d.ts", "package/lgprune.lua", "package/package.json"],
    );
  },
);

test("the types fit node-redis's and ioredis's clients and the README's calls", { skip }, async () => {
  writeFileSync(
    join(app, "check.ts"),
    `import { createClient } from "redis";
import { Redis } from "ioredis";
import { install, prune, pruneMany, sweep, withAutoPrune, IndexMissingError, type SweepResult } from "lgprune";
const client = await createClient().connect();
const io = new Redis();
const a: string = await install(client);
const p: number = (await prune(io, "t", 10, { dryRun: true, layout: "js" })).blobsDeleted;
const m: number = (await pruneMany(client, ["a", "b"], 2, { budget: 100 })).checkpointsDeleted;
const s: SweepResult = await sweep(client, 10, { idleTtl: 1000, full: true, onProgress: (x) => x.calls });
const f: string | undefined = s.failed[0]?.reason;
const saver = withAutoPrune({ put: async () => ({}), end: async () => {}, client }, { keepLast: 10, slack: 2 });
const n: number = saver.pendingPrunes();
const e: string | null = new IndexMissingError("x").code;
// @ts-expect-error keep is a number
await prune(client, "t", "10");
export { a, p, m, f, n, e };
`,
  );
  const tsc = `${PKG}/node_modules/typescript/bin/tsc`;
  const options = ["--noEmit", "--strict", "--module", "nodenext", "--target", "es2022", "--skipLibCheck", "check.ts"];
  await run(process.execPath, [tsc, ...options], { cwd: app }).catch((error) =>
    assert.fail(error.stdout || error.message),
  );
});

// the README's ```js blocks of its LangGraph.js section, by what they import
function readmeBlock(imports) {
  const section = readFileSync(`${ROOT}README.md`, "utf8").split("## LangGraph.js stores")[1].split("\n## ")[0];
  const blocks = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  const found = blocks.find((b) => b.includes(`import { ${imports} } from "lgprune"`));
  assert.ok(found, `the README shows a block importing ${imports}`);
  return found;
}

async function runInApp(name, code) {
  writeFileSync(join(app, name), code);
  return (await run(process.execPath, [name], { cwd: app, env: { ...process.env, REDIS_URL: redis.url } })).stdout;
}

test(
  "the README's prune and cron examples run from the tarball and prune exactly",
  { skip: skip || needs.skip },
  async () => {
    await restore(snap);
    const printed = await runInApp("prune.mjs", readmeBlock("prune"));
    const before = rootIds(store.wang1).length;
    assert.match(printed, new RegExp(`checkpointsDeleted: ${before - 10}\\b`));
    assert.deepEqual(rootIds((await read(["wang1"])).wang1), rootIds(store.wang1).slice(0, 10));
    const swept = await runInApp("sweep.mjs", readmeBlock("sweep"));
    assert.match(swept, /^full sweep: \d+ threads pruned, \d+ checkpoints deleted\n$/);
    const now = await read(IDS);
    for (const t of IDS) assert.deepEqual(rootIds(now[t]), rootIds(store[t]).slice(0, 10), t);
  },
);
