"""One thread of 1,000 checkpoints (2 writes each) pruned to 10, by each contender."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.redis import RedisSaver

from benchmarks.data import Thread, build_thread, fresh
from lgprune import Pruner
from lgprune.results import as_text
from lgprune.stats import search_keys

# Deletes exactly the keys it is given, in one script: the floor.
FLOOR_LIBRARY = """#!lua name=lgprune_bench_floor
redis.register_function('bench_unlink', function(keys)
  local n = 0
  for i = 1, #keys, 500 do
    n = n + redis.call('UNLINK', unpack(keys, i, math.min(i + 499, #keys)))
  end
  return n
end)
"""


@dataclass(frozen=True)
class Timing:
    name: str
    runs_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs_ms)


@dataclass(frozen=True)
class Outcome:
    ms: float  # wall time of the prune call
    freed_mb: float  # INFO used_memory before minus after
    problem: str  # '' when exactly the doomed keys went


def _run(
    client: redis.Redis,
    checkpoints: int,
    keep: int,
    prune: Callable[[RedisSaver, Thread], None],
    *,
    writes: int = 2,
    before_build: Callable[[], None] | None = None,
) -> Outcome:
    """Build the thread, prune it once, check the result."""
    saver = fresh(client)
    if before_build is not None:
        before_build()
    thread = build_thread(saver, "bench", checkpoints, writes=writes)
    before = {as_text(k) for k in client.keys("*bench*")}
    doomed = set(thread.doomed_keys(keep))
    memory = int(client.info("memory")["used_memory"])
    start = time.perf_counter()
    prune(saver, thread)
    elapsed = (time.perf_counter() - start) * 1000
    time.sleep(0.1)  # UNLINK frees large values in the background
    freed = (memory - int(client.info("memory")["used_memory"])) / 2**20
    after = {as_text(k) for k in client.keys("*bench*")}
    problem = ""
    if after != before - doomed:
        problem = (
            f"{len(after & doomed)} doomed keys left (e.g. {sorted(after & doomed)[:2]}), "
            f"{len(before - doomed - after)} kept keys lost (e.g. {sorted(before - doomed - after)[:2]})"
        )
    return Outcome(elapsed, freed, problem)


def measure(
    client: redis.Redis,
    *,
    checkpoints: int = 1000,
    keep: int = 10,
    runs: int = 5,
    saver_runs: int | None = None,
) -> list[Timing]:
    """Median timings of lgprune, the floor and RedisSaver.prune on identical data."""
    pruner = Pruner(client)

    def lgprune(saver: RedisSaver, thread: Thread) -> None:
        pruner.prune(thread.thread_id, keep)

    def floor(saver: RedisSaver, thread: Thread) -> None:
        keys = thread.doomed_keys(keep)
        client.fcall("bench_unlink", len(keys), *keys)

    def saver_prune(saver: RedisSaver, thread: Thread) -> None:
        saver.prune([thread.thread_id], keep_last=keep)

    def naive_loop(saver: RedisSaver, thread: Thread) -> None:
        """What people write first: list through the saver, delete key by key."""
        config: RunnableConfig = {"configurable": {"thread_id": thread.thread_id, "checkpoint_ns": ""}}
        ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(config)]
        for cid in sorted(ids, reverse=True)[keep:]:
            registry = f"write_keys_zset:{thread.thread_id}:__empty__:{cid}"
            writes: list[bytes] = client.zrange(registry, 0, -1)  # type: ignore[assignment]
            for write in writes:
                client.delete(write)
            client.delete(registry)
            client.delete(f"checkpoint:{thread.thread_id}:__empty__:{cid}")

    def pipelined(saver: RedisSaver, thread: Thread) -> None:
        """The same keys found through the index and registries, deleted in one pipeline."""
        query = ["@thread_id:{$t} @checkpoint_ns:{__empty__}", "PARAMS", "2", "t", thread.thread_id]
        found = client.execute_command(  # type: ignore[no-untyped-call]
            "FT.SEARCH", "checkpoint", *query, "NOCONTENT", "LIMIT", "0", "100000", "DIALECT", "2"
        )
        keys = sorted(
            (k.decode() if isinstance(k, bytes) else str(k) for k in search_keys(found)[1]), reverse=True
        )
        doomed = keys[keep:]
        with client.pipeline(transaction=False) as pipe:
            for key in doomed:
                pipe.zrange("write_keys_zset:" + key.split(":", 1)[1], 0, -1)
            registries = pipe.execute()
        with client.pipeline(transaction=False) as pipe:
            for key, writes in zip(doomed, registries, strict=True):
                pipe.unlink(key, "write_keys_zset:" + key.split(":", 1)[1], *writes)
            pipe.execute()

    fast = (
        ("lgprune Pruner.prune", lgprune, runs),
        ("floor: one UNLINK script, keys known", floor, runs),
        ("pipelined client-side delete", pipelined, runs),
    )
    slow = (
        ("naive client loop (saver.list, then key by key)", naive_loop, saver_runs or runs),
        ("RedisSaver.prune", saver_prune, saver_runs or runs),
    )
    contenders = fast + slow
    results: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    # the fast contenders in interleaved rounds, so that drift in the machine hits
    # them alike; the slow client-side ones after, so their load does not
    for group in (fast, slow):
        for round_ in range(max(n for _, _, n in group)):
            for name, fn, n in group:
                if round_ < n:
                    pruner.install()
                    client.function_load(FLOOR_LIBRARY, replace=True)
                    outcome = _run(client, checkpoints, keep, fn)
                    if outcome.problem:
                        raise AssertionError(f"{name}: {outcome.problem}")
                    results[name].append(outcome.ms)
    return [Timing(name, results[name]) for name, _, _ in contenders]
