"""The engine against its floor: Redis server time of lgprune beside that of a script
doing nothing but UNLINK of exactly the doomed keys, known in advance.

Server time is the sum of SLOWLOG durations (`slowlog-log-slower-than 0`) of the
contender's FCALLs: steadier than wall time, and it includes index maintenance.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from benchmarks.core import FLOOR_LIBRARY
from benchmarks.data import Clones, clone_items, fresh, template_items
from lgprune import Pruner
from lgprune.results import as_text

Items = list[tuple[str, bytes, bytes, float]]


@dataclass(frozen=True)
class Group:
    """`threads` threads named `fmt % i`, of `checkpoints` checkpoints with `writes` writes each."""

    fmt: str
    threads: int
    checkpoints: int
    writes: int


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    keep: int
    groups: tuple[Group, ...]
    goal: float  # the most server time lgprune may take, as a multiple of the floor's
    call_limit_ms: float | None = None  # the longest any one lgprune call may take
    floor_batch: int | None = None  # keys per floor script (None: one script for all)

    @property
    def sweep(self) -> bool:
        return sum(g.threads for g in self.groups) > 1


CASES = (
    Case(
        "core", "one thread, 1,000 checkpoints x 2 writes, keep 10", 10, (Group("core:%d", 1, 1_000, 2),), 1.2
    ),
    Case("seed", "one thread, 36 checkpoints x 1 write, keep 5", 5, (Group("seed:%d", 1, 36, 1),), 2.0),
    Case(
        "large",
        "one thread, 10,000 checkpoints x 2 writes, keep 10",
        10,
        (Group("large:%d", 1, 10_000, 2),),
        1.5,
        call_limit_ms=20,
    ),
    Case(
        "sweep",
        "2,000 threads x 15 checkpoints x 1 write, keep 5",
        5,
        (Group("user:%d:chat", 2_000, 15, 1),),
        1.3,
        floor_batch=2000,
    ),
    Case(
        "realistic sweep",
        "20,000 threads, 2,000 of 15 checkpoints, 18,000 of 4 (x 1 write), keep 5",
        5,
        (Group("user:%d:chat", 2_000, 15, 1), Group("idle:%d:chat", 18_000, 4, 1)),
        2.0,
        call_limit_ms=20,
        floor_batch=2000,
    ),
)


QUICK_CASES = tuple(c for c in CASES if c.name in ("core", "seed", "sweep"))  # --quick: the fast builds


@dataclass(frozen=True)
class Sample:
    server_ms: float  # sum of the contender's FCALL durations
    wall_ms: float
    longest_ms: float  # its longest FCALL
    calls: int


@dataclass
class Result:
    case: Case
    lgprune: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)

    @staticmethod
    def median(samples: list[Sample], what: Callable[[Sample], float]) -> float:
        return statistics.median(what(s) for s in samples)

    @property
    def ratio(self) -> float:
        server = self.median(self.lgprune, lambda s: s.server_ms)
        return server / self.median(self.floor, lambda s: s.server_ms)

    @property
    def longest_ms(self) -> float:
        return max(s.longest_ms for s in self.lgprune)

    @property
    def within_goal(self) -> bool:
        limit = self.case.call_limit_ms
        return self.ratio <= self.case.goal and (limit is None or self.longest_ms <= limit)


def _doomed(clones: Clones, keep: int) -> list[str]:
    """The keys a keep-`keep` prune deletes from every clone."""
    keepers = clones.newest(keep)
    doomed: list[str] = []
    for i in range(clones.count):
        doomed += [as_text(k) for k in clones.keys(i).keys() - clones.keys(i, keepers).keys()]
    return doomed


def _timed(client: redis.Redis, fn: Callable[[], object]) -> Sample:
    """Run `fn` with every command in the SLOWLOG; its FCALLs' durations."""
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    started = time.perf_counter()
    fn()
    wall = (time.perf_counter() - started) * 1000
    entries = client.slowlog_get(1_000_000)
    client.config_set("slowlog-log-slower-than", 10_000)
    calls = [
        e["duration"] / 1000
        for e in entries
        if e["command"].startswith(b"FCALL") and not e["command"].startswith(b"FCALL lgprune_version")
    ]
    return Sample(sum(calls), wall, max(calls, default=0.0), len(calls))


def _once(client: redis.Redis, case: Case, items: dict[Group, Items], lgprune: bool) -> Sample:
    """Build the case's data afresh, prune it with one contender, check what is left."""
    fresh(client)
    doomed: list[str] = []
    for group in case.groups:
        doomed += _doomed(clone_items(client, items[group], group.threads, group.fmt), case.keep)
    before = {as_text(k) for k in client.scan_iter(count=10_000)}
    pruner = Pruner(client)
    pruner.install()
    client.function_load(FLOOR_LIBRARY, replace=True)

    def floor() -> None:
        batch = case.floor_batch or len(doomed)
        for first in range(0, len(doomed), batch):
            keys = doomed[first : first + batch]
            client.fcall("bench_unlink", len(keys), *keys)

    def prune() -> None:
        if case.sweep:
            pruner.sweep(case.keep)
        else:
            pruner.prune(case.groups[0].fmt % 0, case.keep)

    sample = _timed(client, prune if lgprune else floor)
    after = {as_text(k) for k in client.scan_iter(count=10_000)}
    if after != before - set(doomed):
        left, lost = after & set(doomed), before - set(doomed) - after
        raise AssertionError(
            f"{case.name}: {len(left)} doomed keys left (e.g. {sorted(left)[:2]}), "
            f"{len(lost)} kept keys lost (e.g. {sorted(lost)[:2]})"
        )
    return sample


def measure(client: redis.Redis, *, runs: int, cases: tuple[Case, ...] = CASES) -> list[Result]:
    """Each case `runs` times per contender, lgprune and the floor in alternating order."""
    templates: dict[tuple[int, int], Items] = {}
    results = []
    for case in cases:
        fresh(client)
        items = {}
        for g in case.groups:
            if (g.checkpoints, g.writes) not in templates:
                templates[g.checkpoints, g.writes] = template_items(client, g.checkpoints, writes=g.writes)
            items[g] = templates[g.checkpoints, g.writes]
        result = Result(case)
        for run in range(runs):
            for lgprune in (True, False) if run % 2 == 0 else (False, True):
                sample = _once(client, case, items, lgprune)
                (result.lgprune if lgprune else result.floor).append(sample)
        print(
            f"  engine {case.name}: lgprune {result.median(result.lgprune, lambda s: s.server_ms):.1f} ms, "
            f"floor {result.median(result.floor, lambda s: s.server_ms):.1f} ms ({result.ratio:.2f}x), "
            f"longest call {result.longest_ms:.1f} ms",
            flush=True,
        )
        results.append(result)
    client.flushall()
    return results
