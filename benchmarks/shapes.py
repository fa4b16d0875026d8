"""The longest single server call at extreme data shapes, with the default budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.redis import RedisSaver

from benchmarks.data import build_thread, fresh
from lgprune import Pruner

TARGET_MS = 20.0  # what one call should stay well under


@dataclass(frozen=True)
class Shape:
    name: str
    calls: int
    largest_call_ms: float
    keys_deleted: int


def _longest(client: redis.Redis) -> float:
    entries = client.slowlog_get(1_000_000)
    return max((e["duration"] for e in entries if e["command"].startswith(b"FCALL")), default=0) / 1000


def _wide(saver: RedisSaver, checkpoints: int, writes: int) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "wide", "checkpoint_ns": ""}}
    for step in range(checkpoints):
        config = saver.put(config, empty_checkpoint(), {"source": "loop", "step": step, "parents": {}}, {})
        saver.put_writes(config, [("c", i) for i in range(writes)], task_id=f"t{step}")


def measure(client: redis.Redis, *, huge: int = 20_000) -> list[Shape]:
    def huge_thread(saver: RedisSaver) -> str:
        build_thread(saver, "huge", huge, writes=1, messages=1)
        return "huge"

    def many_writes(saver: RedisSaver) -> str:
        _wide(saver, 12, 5_000)
        return "wide"

    def many_namespaces(saver: RedisSaver) -> str:
        build_thread(saver, "ns", 20, writes=1, messages=1)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: _namespace(saver, i), range(1_000)))
        return "ns"

    shapes = []
    for name, build in (
        (f"one thread of {huge:,} checkpoints, keep 10", huge_thread),
        ("12 checkpoints with 5,000 writes each, keep 2", many_writes),
        ("20 root checkpoints and 1,000 subgraph runs of 3, keep 5", many_namespaces),
    ):
        saver = fresh(client)
        thread_id = build(saver)
        pruner = Pruner(client)
        pruner.install()
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 1_000_000)
        client.slowlog_reset()
        result = pruner.prune(thread_id, 2 if thread_id == "wide" else (10 if thread_id == "huge" else 5))
        shapes.append(Shape(name, result.calls, _longest(client), result.keys_deleted))
        client.config_set("slowlog-log-slower-than", 10_000)
    return shapes


def _namespace(saver: RedisSaver, i: int) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "ns", "checkpoint_ns": f"child:{i:05d}"}}
    for step in range(3):
        config = saver.put(config, empty_checkpoint(), {"source": "loop", "step": step, "parents": {}}, {})
