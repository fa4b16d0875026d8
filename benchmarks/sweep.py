"""A sweep over many threads: lgprune's server-side sweep against looping RedisSaver.prune."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from langgraph.checkpoint.redis import RedisSaver

from benchmarks.data import RAW_JSON, Clones, Thread, build_thread, clone_threads, fresh, lgprune_keys
from lgprune import Pruner

ODD_THREADS = ["Wang1", "wang1", "wang1:2025", "a b|c"]


def _ping_loop(url: str, stop: Any, out: Any) -> None:
    """PING until `stop` is set (at most 10 minutes), then send the latencies (ms)."""
    client = redis.Redis.from_url(url)
    latencies = []
    deadline = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.perf_counter()
        client.ping()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.001)
    out.send(latencies)


class PingProbe:
    """PINGs Redis from another process (at most every millisecond, for at most
    10 minutes) while a contender runs; the latencies tell whether Redis stalled.
    They stay in the probe until it stops, so probing costs one core's share only."""

    def __init__(self, url: str) -> None:
        self.stop = multiprocessing.Event()
        self.receive, send = multiprocessing.Pipe(duplex=False)
        self.process = multiprocessing.Process(target=_ping_loop, args=(url, self.stop, send))
        self.latencies: list[float] = []

    def __enter__(self) -> PingProbe:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.latencies = self.receive.recv()
        self.process.join()

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0


@dataclass(frozen=True)
class Built:
    """What one build wrote: clones plus odd threads, and every key that must stay."""

    clones: Clones
    odd: list[Thread]

    def thread_ids(self) -> list[str]:
        return self.clones.thread_ids() + [t.thread_id for t in self.odd]


def build(client: redis.Redis, threads: int, per_thread: int) -> Built:
    """`threads` threads of `per_thread` checkpoints with one write each, cloned from
    one the saver wrote, and the odd ids, written by the saver itself."""
    saver = fresh(client)
    odd = [build_thread(saver, thread_id, per_thread, writes=1, messages=1) for thread_id in ODD_THREADS]
    return Built(clone_threads(client, threads, per_thread, writes=1), odd)


def check(client: redis.Redis, built: Built, keep: int) -> str:
    """'' when exactly the keys of each thread's newest `keep` checkpoints remain,
    and a sample of threads' values are as written; else what is wrong."""
    keepers = built.clones.newest(keep)
    want: set[bytes] = set()
    for i in range(built.clones.count):
        want.update(built.clones.keys(i, keepers))  # in place: `|=` with dict keys copies `want`
    for thread in built.odd:
        latest = f"checkpoint_latest:{thread.thread_id}:__empty__"
        want.update(k.encode() for k in [*thread.kept_keys(keep), latest])
    have = set(client.scan_iter(count=10_000)) - lgprune_keys(client)
    missing, left = want - have, have - want
    if missing or left:
        example = sorted(missing or left)[:2]
        return f"{len(missing)} kept keys missing, {len(left)} doomed keys left, e.g. {example}"
    for i in range(0, built.clones.count, max(1, built.clones.count // 50)):
        for key, value in built.clones.keys(i, keepers).items():
            kind = client.type(key)
            if kind == b"ReJSON-RL":
                same = client.eval(RAW_JSON, 1, key) == value
            elif kind == b"string":
                same = client.get(key) == value
            else:
                same = client.zscore(key, value) is not None
            if not same:
                return f"{key!r} changed"
    return ""


@dataclass(frozen=True)
class Sample:
    seconds: float
    largest_call_ms: float
    ping_p99_ms: float
    freed_mb: float
    forks: int  # forks during the run: RediSearch's garbage collector forks to clean up
    fork_ms: float  # how long the last of them held Redis
    problem: str


def run_once(client: redis.Redis, fn: Callable[[list[str]], None], built: Built, keep: int) -> Sample:
    """One contender over freshly built data, timed, probed, and checked."""
    Pruner(client).install()
    client.config_set("slowlog-log-slower-than", 100)  # microseconds: every FCALL, no PING
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    memory_before = int(client.info("memory")["used_memory"])
    forks_before = int(client.info("stats")["total_forks"])
    url = "redis://{host}:{port}".format(**client.connection_pool.connection_kwargs)
    ids = built.thread_ids()
    with PingProbe(url) as probe:
        started = time.perf_counter()
        fn(ids)
        seconds = time.perf_counter() - started
    time.sleep(0.5)  # UNLINK frees large values in the background
    freed = (memory_before - int(client.info("memory")["used_memory"])) / 2**20
    calls = [e["duration"] for e in client.slowlog_get(1_000_000) if e["command"].startswith(b"FCALL")]
    client.config_set("slowlog-log-slower-than", 10_000)
    stats = client.info("stats")
    forks = int(stats["total_forks"]) - forks_before
    fork_ms = int(stats["latest_fork_usec"]) / 1000 if forks else 0.0
    problem = check(client, built, keep)
    return Sample(seconds, max(calls, default=0) / 1000, probe.p99, freed, forks, fork_ms, problem)


@dataclass(frozen=True)
class SweepRun:
    """One contender at one size: medians (seconds also min and max) over runs."""

    name: str
    threads: int
    samples: list[Sample]

    @property
    def seconds(self) -> list[float]:
        return [s.seconds for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def largest_call_ms(self) -> float:
        return max(s.largest_call_ms for s in self.samples)

    @property
    def ping_p99_ms(self) -> float:
        return statistics.median(s.ping_p99_ms for s in self.samples)

    @property
    def freed_mb(self) -> float:
        return statistics.median(s.freed_mb for s in self.samples)

    @property
    def forks(self) -> int:
        return max(s.forks for s in self.samples)

    @property
    def fork_ms(self) -> float:
        return max(s.fork_ms for s in self.samples)

    @property
    def problem(self) -> str:
        return next((s.problem for s in self.samples if s.problem), "")


def measure(
    client: redis.Redis,
    *,
    sizes: list[int],
    runs: int,
    per_thread: int = 10,
    keep: int = 5,
    saver_up_to: int = 10_000,
) -> list[SweepRun]:
    """Each size, each run: both contenders in alternating order, each on a fresh build.
    The saver loop runs up to `saver_up_to` threads (beyond, it takes minutes a run)."""

    def lgprune_sweep(ids: list[str]) -> None:
        Pruner(client).sweep(keep)

    def saver_loop(ids: list[str]) -> None:
        saver = RedisSaver(redis_client=client)
        saver.setup()
        for thread_id in ids:
            saver.prune([thread_id], keep_last=keep)

    contenders: list[tuple[str, Callable[[list[str]], None]]] = [
        ("lgprune Pruner.sweep", lgprune_sweep),
        ("loop of RedisSaver.prune([t], keep_last)", saver_loop),
    ]
    results = []
    for size in sizes:
        chosen = [c for c in contenders if c[1] is lgprune_sweep or size <= saver_up_to]
        samples: dict[str, list[Sample]] = {name: [] for name, _ in chosen}
        for run in range(runs):
            for name, fn in chosen if run % 2 == 0 else chosen[::-1]:
                samples[name].append(run_once(client, fn, build(client, size, per_thread), keep))
                print(f"  sweep {size:,} threads, {name}: {samples[name][-1].seconds:.2f} s", flush=True)
        results += [SweepRun(name, size, samples[name]) for name, _ in chosen]
    client.flushall()
    return results
