// withAutoPrune over the real RedisSaver of LangGraph.js, in this process: a thread is pruned
// in the background as the graph runs; the graph's calls neither wait for a prune nor fail with one.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";
import { IndexMissingError, InvalidArgumentError, withAutoPrune } from "../src/index.js";
import { CLIENTS, JS_DIR, close, dumps, flush, needs, r, read, redis, rootIds, write } from "./helpers.js";

let RedisSaver;
let langgraph;

before(async () => {
  if (needs.skip) return;
  const require = createRequire(`${JS_DIR}/package.json`); // the saver and LangGraph that tests/js installs
  ({ RedisSaver } = require("@langchain/langgraph-checkpoint-redis"));
  langgraph = require("@langchain/langgraph");
});
after(() => r?.disconnect());

// the echo bot of tests/js/saver.mjs
function chat(checkpointer) {
  const { Annotation, END, START, StateGraph } = langgraph;
  const State = Annotation.Root({
    messages: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
    turns: Annotation({ reducer: (_, b) => b, default: () => 0 }),
  });
  return new StateGraph(State)
    .addNode("bot", (s) => ({ messages: [`echo: ${s.messages.at(-1)}`], turns: s.turns + 1 }))
    .addEdge(START, "bot")
    .addEdge("bot", END)
    .compile({ checkpointer });
}

const turn = (graph, thread, n) => graph.invoke({ messages: [`turn ${n}`] }, { configurable: { thread_id: thread } });

test("a thread stays within keepLast + slack as the graph runs, and its neighbours are untouched", needs, async () => {
  await flush();
  await write([
    ["Auto", 4, "chat"],
    ["auto:1", 4, "chat"],
  ]);
  const keys = await dumps();
  const saver = withAutoPrune(await RedisSaver.fromUrl(redis.url), {
    keepLast: 2,
    slack: 2,
  });
  assert.ok(saver instanceof RedisSaver);
  const graph = chat(saver);
  for (let n = 0; n < 8; n++) await turn(graph, "auto", n);
  await saver.end();
  const state = (await read(["auto"])).auto;
  const kept = rootIds(state).length;
  assert.ok(kept >= 2 && kept <= 3, `${kept} checkpoints kept`); // keepLast, and at most slack - 1 puts since
  const latest = state.states[state.latest].values;
  assert.equal(latest.turns, 8);
  assert.equal(latest.messages.length, 16);
  const left = await dumps();
  for (const [key, [who, dump]] of keys) assert.deepEqual(left.get(key), [who, dump], key);
});

test("a put returns while its prune is in flight, and end() awaits it", needs, async () => {
  await flush();
  const client = await CLIENTS.ioredis();
  let open;
  const gate = new Promise((resolve) => (open = resolve));
  const gated = { call: async (...args) => (await gate, client.call(...args)) }; // the same client, held back
  const saver = withAutoPrune(await RedisSaver.fromUrl(redis.url), {
    keepLast: 1,
    slack: 1,
    client: gated,
  });
  try {
    const graph = chat(saver);
    for (let n = 0; n < 3; n++) await turn(graph, "held", n);
    assert.equal(saver.pendingPrunes(), 1); // one prune per thread in flight; the graph went on
    open();
    await saver.end();
    assert.equal(saver.pendingPrunes(), 0);
    assert.equal(rootIds((await read(["held"])).held).length, 1);
  } finally {
    await close(client);
  }
});

test("puts made while a thread's prune runs are pruned after it", needs, async () => {
  await flush();
  const client = await CLIENTS.ioredis();
  let open;
  const gate = new Promise((resolve) => (open = resolve));
  const fcalls = [];
  const held = {
    // the same client; a prune's FCALL runs in Redis, then its answer is held back
    call: async (...args) => {
      const answer = await client.call(...args);
      if (String(args[0]).toUpperCase() === "FCALL") {
        fcalls.push(args[1]);
        await gate;
      }
      return answer;
    },
  };
  const saver = withAutoPrune(await RedisSaver.fromUrl(redis.url), { keepLast: 1, slack: 1, client: held });
  try {
    const graph = chat(saver);
    for (let n = 0; n < 3; n++) await turn(graph, "late", n);
    assert.equal(fcalls.length, 1); // one prune ran; every later put was due while it was held
    open();
    await saver.end();
    assert.ok(rootIds((await read(["late"])).late).length <= 1 + 1); // keepLast + slack
  } finally {
    await close(client);
  }
});

test("a prune that fails goes to onError and never fails the graph", needs, async () => {
  await flush();
  const failures = [];
  const saver = withAutoPrune(await RedisSaver.fromUrl(redis.url), {
    keepLast: 1,
    slack: 1,
    layout: "python", // no such index: every prune fails
    onError: (error, thread) => failures.push([error, thread]),
  });
  const graph = chat(saver);
  for (let n = 0; n < 3; n++) await turn(graph, "t", n);
  await saver.end();
  assert.ok(failures.length >= 1);
  assert.ok(failures.every(([error, thread]) => error instanceof IndexMissingError && thread === "t"));
  assert.equal(rootIds((await read(["t"])).t).length, 9); // three checkpoints a turn, none pruned
});

test("withAutoPrune refuses what is not a saver, and bad counts", () => {
  assert.throws(() => withAutoPrune({}, { keepLast: 1 }), InvalidArgumentError);
  const saver = { put: async () => {}, end: async () => {}, client: {} };
  assert.throws(() => withAutoPrune(saver, { keepLast: -1 }), /keepLast/);
  assert.throws(() => withAutoPrune(saver, { keepLast: 0 }), /keepLast must be an integer of at least 1/);
  assert.throws(() => withAutoPrune(saver, { keepLast: 2, slack: 0 }), /slack/);
  assert.throws(() => withAutoPrune(saver, { keepLast: 2, budget: 5 }), /budget must be an integer of at least 10/);
  assert.throws(() => withAutoPrune(saver, { keepLast: 2, keep_last: 5 }), /unknown option keep_last/);
});
