// LangGraph.js graphs on the real JS saver (@langchain/langgraph-checkpoint-redis), for
// lgprune's tests and benchmarks. Reads one JSON request on stdin, writes one JSON answer:
//   {"op": "write", "url": ..., "threads": [{"id": ..., "turns": n, "graph": "chat"|"subgraph"}]}
//       run each thread's turns (a turn: one invoke with a user message)
//   {"op": "read", "url": ..., "threads": [ids]}
//       per thread, everything the saver reads back: list() of every namespace it shows, and
//       getTuple and the graph's getState of every checkpoint listed
//   {"op": "delete", "url": ..., "threads": [ids]}   the saver's own deleteThread
//   {"op": "rewrite", "url": ..., "threads": [ids], "keep": n}
//       a JS user's own "keep the newest n" with the saver's API (see rewrite)
import { RedisSaver } from "@langchain/langgraph-checkpoint-redis";
import { Annotation, END, START, StateGraph } from "@langchain/langgraph";

const State = Annotation.Root({
  messages: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
  turns: Annotation({ reducer: (_, b) => b, default: () => 0 }),
  notes: Annotation({ reducer: (a, b) => a.concat(b), default: () => [] }),
});

// the echo bot: one node answers each user message
function chatGraph(saver) {
  return new StateGraph(State)
    .addNode("bot", (s) => ({
      messages: [`echo: ${s.messages[s.messages.length - 1]}`],
      turns: s.turns + 1,
    }))
    .addEdge(START, "bot")
    .addEdge("bot", END)
    .compile({ checkpointer: saver });
}

// a parent whose node runs a subgraph (checkpointed under its own namespace), then a note
function subgraphGraph(saver) {
  const inner = new StateGraph(State)
    .addNode("think", (s) => ({ notes: [`thought ${s.turns}`] }))
    .addNode("answer", (s) => ({ messages: [`answer after ${s.notes.length} notes`] }))
    .addEdge(START, "think")
    .addEdge("think", "answer")
    .addEdge("answer", END)
    .compile();
  return new StateGraph(State)
    .addNode("agent", inner)
    .addNode("count", (s) => ({ turns: s.turns + 1 }))
    .addEdge(START, "agent")
    .addEdge("agent", "count")
    .addEdge("count", END)
    .compile({ checkpointer: saver });
}

const GRAPHS = { chat: chatGraph, subgraph: subgraphGraph };

function config(thread, ns, id) {
  const c = { thread_id: thread, checkpoint_ns: ns ?? "" };
  if (id) c.checkpoint_id = id;
  return { configurable: c };
}

async function write(saver, req) {
  for (const t of req.threads) {
    const graph = GRAPHS[t.graph ?? "chat"](saver);
    for (let turn = 0; turn < t.turns; turn++) {
      await graph.invoke({ messages: [`${t.id} turn ${turn}`] }, config(t.id));
    }
  }
  return { ok: true };
}

// everything the saver reads back for one thread: every namespace's list() (newest first),
// and getTuple of each checkpoint listed; getState of each root checkpoint. (list() queries
// the TAG index and returns case variants' checkpoints too: only the thread's own are kept.)
async function readThread(saver, thread) {
  const graph = chatGraph(saver); // getState reads the checkpoint; the graph's shape is State's
  const namespaces = new Set([""]);
  const out = { namespaces: {}, states: {} };
  // the namespaces the thread's checkpoints show (list() without checkpoint_ns lists them all)
  for await (const tuple of saver.list({ configurable: { thread_id: thread } }, { limit: 100000 })) {
    if (tuple.config.configurable.thread_id === thread) namespaces.add(tuple.config.configurable.checkpoint_ns);
  }
  for (const ns of [...namespaces].sort()) {
    const listed = [];
    for await (const tuple of saver.list(config(thread, ns), { limit: 100000 })) {
      const c = tuple.config.configurable;
      if (c.thread_id !== thread || c.checkpoint_ns !== ns) continue;
      const again = await saver.getTuple(tuple.config);
      listed.push({
        id: tuple.config.configurable.checkpoint_id,
        parent: tuple.parentConfig?.configurable?.checkpoint_id ?? null,
        checkpoint: again.checkpoint,
        metadata: again.metadata,
        pendingWrites: again.pendingWrites ?? [],
      });
    }
    out.namespaces[ns] = listed;
  }
  for (const c of out.namespaces[""] ?? []) {
    const state = await graph.getState(config(thread, "", c.id));
    out.states[c.id] = { values: state.values, next: state.next };
  }
  out.latest = (await saver.getTuple(config(thread)))?.config.configurable.checkpoint_id ?? null;
  return out;
}

async function read(saver, req) {
  const threads = {};
  for (const id of req.threads) threads[id] = await readThread(saver, id);
  return { threads };
}

async function remove(saver, req) {
  for (const id of req.threads) await saver.deleteThread(id);
  return { ok: true };
}

// What a JS user can do without lgprune to keep a thread's newest `keep` root checkpoints:
// read them (list, newest first), deleteThread, and put them back oldest first, every
// channel value with them, and their pending writes.
async function rewrite(saver, req) {
  for (const t of req.threads) {
    const kept = [];
    for await (const tuple of saver.list(config(t), { limit: req.keep })) {
      if (tuple.config.configurable.thread_id === t) kept.push(tuple);
    }
    await saver.deleteThread(t);
    for (const tuple of kept.reverse()) {
      const parent = tuple.parentConfig?.configurable.checkpoint_id;
      const versions = tuple.checkpoint.channel_versions;
      const saved = await saver.put(config(t, "", parent), tuple.checkpoint, tuple.metadata, versions);
      const byTask = new Map();
      for (const [task, channel, value] of tuple.pendingWrites ?? []) {
        if (!byTask.has(task)) byTask.set(task, []);
        byTask.get(task).push([channel, value]);
      }
      for (const [task, writes] of byTask) await saver.putWrites(saved, writes, task);
    }
  }
  return { ok: true };
}

const OPS = { write, read, delete: remove, rewrite };

let input = "";
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const saver = await RedisSaver.fromUrl(req.url);
try {
  process.stdout.write(JSON.stringify(await OPS[req.op](saver, req)));
} finally {
  await saver.end();
}
