"""Turn latency of a 200-turn conversation with and without auto-prune."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import redis
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.redis import AsyncRedisSaver

from benchmarks.data import MESSAGE, fresh, root_checkpoints
from lgprune.demo import chat_app
from lgprune.langgraph import AsyncPruningRedisSaver


@dataclass(frozen=True)
class HookRun:
    name: str
    p50_ms: float
    p99_ms: float
    checkpoints_at_end: int
    most_checkpoints: int


async def conversation(url: str, turns: int, keep_last: int) -> list[HookRun]:
    client = redis.Redis.from_url(url)
    fresh(client)
    latencies: dict[str, list[float]] = {"with auto-prune": [], "without": []}
    most = {"with auto-prune": 0, "without": 0}
    threads = {"with auto-prune": "pruned", "without": "plain"}
    async with (
        AsyncPruningRedisSaver.from_conn_string(url, keep_last=keep_last) as pruning,
        AsyncRedisSaver.from_conn_string(url) as plain,
    ):
        apps = {"with auto-prune": chat_app(pruning), "without": chat_app(plain)}
        for turn in range(turns):
            for name, app in apps.items():  # interleaved: drift hits both alike
                config = {"configurable": {"thread_id": threads[name]}}
                started = time.perf_counter()
                await app.ainvoke({"messages": [HumanMessage(content=f"{turn} {MESSAGE}")]}, config)
                latencies[name].append((time.perf_counter() - started) * 1000)
                most[name] = max(most[name], root_checkpoints(client, threads[name]))
        await pruning.wait_for_pruning()
    runs = []
    for name, values in latencies.items():
        values.sort()
        runs.append(
            HookRun(
                name,
                statistics.median(values),
                values[int(len(values) * 0.99) - 1],
                root_checkpoints(client, threads[name]),
                most[name],
            )
        )
    client.close()
    return runs


def measure(url: str, *, turns: int = 200, keep_last: int = 10, repeats: int = 3) -> list[HookRun]:
    """Medians over `repeats` conversations of p50 and p99."""
    results = [asyncio.run(conversation(url, turns, keep_last)) for _ in range(repeats)]
    merged = []
    for i, first in enumerate(results[0]):
        merged.append(
            HookRun(
                first.name,
                statistics.median(r[i].p50_ms for r in results),
                statistics.median(r[i].p99_ms for r in results),
                max(r[i].checkpoints_at_end for r in results),
                max(r[i].most_checkpoints for r in results),
            )
        )
    return merged
