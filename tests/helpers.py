"""Graphs and data for the tests: real LangGraph graphs, data written by the saver itself."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import redis
from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.redis import RedisSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot, interrupt

from lgprune.demo import chat_app
from lgprune.facts import WATERMARKS

chat_graph = chat_app  # the demo's echo bot: one chat graph for the demo, tests and benchmarks


def saver_reads_delta_channels() -> bool:
    """Whether the installed saver restores DeltaChannel state at all (0.3.x does not:
    without any pruning, `get_state` of a DeltaChannel graph is wrong there)."""
    import langgraph.checkpoint.redis.base as base

    return "__delta_snapshot__" in Path(base.__file__).read_text()


needs_delta_saver = pytest.mark.skipif(
    not saver_reads_delta_channels(),
    reason=f"langgraph-checkpoint-redis {version('langgraph-checkpoint-redis')} cannot read DeltaChannel",
)


def config_of(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


# --- graphs -------------------------------------------------------------------


def chat(app: CompiledStateGraph[Any], thread_id: str, turns: int) -> None:
    for turn in range(turns):
        app.invoke({"messages": [HumanMessage(content=f"turn {turn}")]}, config_of(thread_id))


class LogState(TypedDict):
    log: Annotated[list[str], operator.add]


def subgraph_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any]:
    """A parent whose node `child` is a subgraph that asks a human before it ends."""

    def ask(state: LogState) -> dict[str, Any]:
        return {"log": [f"approved:{interrupt('approve?')}"]}

    sub = StateGraph(LogState)
    sub.add_node("draft", lambda state: {"log": ["draft"]})
    sub.add_node("ask", ask)
    sub.add_edge(START, "draft")
    sub.add_edge("draft", "ask")
    sub.add_edge("ask", END)
    graph = StateGraph(LogState)
    graph.add_node("child", sub.compile())
    graph.add_node("post", lambda state: {"log": ["post"]})
    graph.add_edge(START, "child")
    graph.add_edge("child", "post")
    graph.add_edge("post", END)
    return graph.compile(checkpointer=checkpointer)


def approve_turns(app: CompiledStateGraph[Any], thread_id: str, turns: int, *, leave_open: bool) -> None:
    """Run `turns` approved turns; with `leave_open`, one more that waits for approval."""
    config = config_of(thread_id)
    for turn in range(turns):
        app.invoke({"log": [f"in{turn}"]}, config)
        app.invoke(Command(resume=f"ok{turn}"), config)
    if leave_open:
        app.invoke({"log": ["waiting"]}, config)


def extend(state: list[str], writes: list[list[str]]) -> list[str]:
    """A batching-invariant reducer for DeltaChannel."""
    out = list(state)
    for batch in writes:
        out.extend(batch)
    return out


class DeltaState(TypedDict):
    msgs: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=4)]
    turns: int


class LongDeltaState(TypedDict):
    """DeltaState without snapshots: every kept checkpoint's history reaches back to the
    thread's first (a thread of N turns has 3N checkpoints and a history of 3N - 1)."""

    msgs: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=1_000_000)]
    turns: int


def delta_graph(
    checkpointer: BaseCheckpointSaver[Any], state: type[DeltaState] | type[LongDeltaState] = DeltaState
) -> CompiledStateGraph[Any]:
    """A graph whose `msgs` channel is a DeltaChannel (by default a snapshot every 4 updates)."""

    def reply(values: dict[str, Any]) -> dict[str, Any]:
        turns = values.get("turns", 0) + 1
        return {"msgs": [f"reply {turns}"], "turns": turns}

    graph = StateGraph(state)
    graph.add_node("reply", reply)
    graph.add_edge(START, "reply")
    graph.add_edge("reply", END)
    return graph.compile(checkpointer=checkpointer)


def delta_turns(app: CompiledStateGraph[Any], thread_id: str, turns: int) -> None:
    """`turns` turns, each stored before the next (with the default async durability, a turn's
    `put` can land after its `put_writes` and clear the checkpoint's `has_writes`, and the saver
    then rebuilds DeltaChannel state without those writes)."""
    for turn in range(turns):
        app.invoke({"msgs": [f"user {turn}"]}, config_of(thread_id), durability="sync")


# --- reading state --------------------------------------------------------------


def fingerprint(snapshot: StateSnapshot) -> Any:
    """What a user sees of a state, with subgraph states, as comparable values."""
    return (
        repr(snapshot.values),
        snapshot.next,
        snapshot.config,
        snapshot.parent_config,
        repr(snapshot.metadata),
        tuple(
            (
                task.id,
                task.name,
                repr(task.interrupts),
                fingerprint(task.state) if isinstance(task.state, StateSnapshot) else None,
            )
            for task in snapshot.tasks
        ),
    )


def without_ids(value: Any) -> Any:
    """A state value with messages as (type, content): message ids are random per run."""
    if isinstance(value, BaseMessage):
        return (value.type, value.content)
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def checkpoint_ids(saver: RedisSaver, thread_id: str, ns: str = "") -> list[str]:
    """The thread's checkpoint ids in one namespace, newest first, read key by key.

    (`saver.list` matches thread ids case-insensitively, so it cannot count.)
    """
    client = saver._redis
    prefix = f"checkpoint:{thread_id or '00000000-0000-0000-0000-000000000000'}:{ns or '__empty__'}:"
    ids = []
    for key in client.scan_iter(match=escape_glob(prefix) + "*", count=1000):
        text = key.decode() if isinstance(key, bytes) else key
        rest = text[len(prefix) :]
        if ":" not in rest:
            ids.append(rest)
    return sorted(ids, reverse=True)


def states_by_checkpoint(app: CompiledStateGraph[Any], thread_id: str, ids: list[str]) -> dict[str, Any]:
    return {cid: fingerprint(app.get_state(config_of(thread_id, cid), subgraphs=True)) for cid in ids}


# --- the browser -------------------------------------------------------------------


def browser_dom(browser: str, url: str, tmp_path: Path) -> str:
    """The DOM headless Chromium (`browser`) shows for `url` once its scripts ran, with a
    fresh profile under `tmp_path`."""
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    ).stdout


# --- the command line ---------------------------------------------------------------


def lgprune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m lgprune ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "lgprune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


# --- raw data -------------------------------------------------------------------


def escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def snapshot(client: redis.Redis, *, skip_thread: str | None = None) -> dict[bytes, bytes | None]:
    """DUMP of every key of the saver (those of its thread `skip_thread` left out, and
    lgprune's own watermarks key)."""
    skip = None
    if skip_thread is not None:
        skip = tuple(
            f"{p}:{skip_thread}:".encode()
            for p in ("checkpoint", "checkpoint_write", "write_keys_zset", "checkpoint_latest")
        )
    out = {}
    for key in client.scan_iter(count=1000):
        key_bytes = key if isinstance(key, bytes) else key.encode()
        if (skip and key_bytes.startswith(skip)) or key_bytes == WATERMARKS.encode():
            continue
        out[key_bytes] = client.dump(key)
    return out


def every_write_has_its_checkpoint(r: redis.Redis) -> bool:
    """True when every write document's own checkpoint exists."""
    for key in r.scan_iter(match="checkpoint_write:*", count=1000):
        doc = r.json().get(key)
        if not r.exists(f"checkpoint:{doc['thread_id']}:{doc['checkpoint_ns']}:{doc['checkpoint_id']}"):
            return False
    return True


def uuid6_at(ms: float, seq: int = 0) -> str:
    """A uuid6 (as LangGraph makes checkpoint ids) for the time `ms` since the epoch."""
    ticks = int(ms * 10_000) + 122_192_928_000_000_000
    node = uuid.uuid4().hex[:12]
    high, mid, low = ticks >> 28, (ticks >> 12) & 0xFFFF, ticks & 0xFFF
    return f"{high:08x}-{mid:04x}-6{low:03x}-{0x8000 | (seq & 0x3FFF):04x}-{node}"


def put_checkpoints(
    saver: RedisSaver,
    thread_id: str,
    count: int,
    *,
    writes: int = 2,
    ns: str = "",
    age: float | None = None,
    ids_given: list[str] | None = None,
) -> list[str]:
    """`count` linear checkpoints made by saver.put, `writes` writes each; ids oldest first.

    With `age` (seconds), the newest is that old and each older one a second older.
    With `ids_given`, the checkpoints take those ids, in order.
    """
    config: dict[str, Any] = config_of(thread_id, ns=ns)
    ids = []
    for step in range(count):
        checkpoint = empty_checkpoint()
        if age is not None:
            checkpoint["id"] = uuid6_at((time.time() - age - (count - 1 - step)) * 1000, step)
        if ids_given is not None:
            checkpoint["id"] = ids_given[step]
        checkpoint["channel_values"] = {"step": step}
        checkpoint["channel_versions"] = {"step": step + 1}
        config = saver.put(config, checkpoint, {"source": "loop", "step": step, "parents": {}}, {})
        if writes:
            saver.put_writes(config, [("step", i) for i in range(writes)], task_id=f"task-{step}")
        ids.append(config["configurable"]["checkpoint_id"])
    return ids


def put_unreadable_thread(r: redis.Redis, saver: RedisSaver, thread_id: str) -> list[str]:
    """A thread lgprune cannot prune: 4 checkpoints, the oldest's write registry a string
    (a key of another type than the saver writes). Its checkpoint ids, oldest first."""
    ids = put_checkpoints(saver, thread_id, 4, writes=1)
    registry = f"write_keys_zset:{thread_id}:__empty__:{ids[0]}"
    r.delete(registry)
    r.set(registry, "not a registry")
    return ids
