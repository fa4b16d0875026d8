"""The engine against its floor: Redis server time of lgprune beside that of a script
doing nothing but UNLINK of exactly the doomed keys, known in advance.

A third contender, `bare`, is the floor plus the reads that any prune finding its
keys as lgprune must (threads by SCAN over the latest pointers, checkpoints and
writes through the indexes, the kept checkpoints' metadata for DeltaChannel) make,
with no planning at all: what lgprune would cost if its Lua took no time. A goal
below bare's ratio cannot be met by such a design.

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
from benchmarks.data import Clones, Stamps, clone_items, fresh, lgprune_keys, stamped, template_items
from lgprune import Pruner
from lgprune.results import as_text

Items = list[tuple[str, bytes, bytes, float]]

# The reads of the bare contender. For thread ids without commas, NUL bytes or
# backslashes (the benchmark's own). Per thread: the listing of its checkpoints,
# the query of its writes and the metadata of `keep` of its checkpoints; in a
# sweep only for a thread over keep, by a count first. A sweep finds the threads
# by SCAN over the latest pointers, their checkpoints' thread_id read per step,
# in the cheapest shape: steps of 500 keys (lgprune's are 200) and one MGET of
# the pointers (lgprune GETs each: the README's ACL has no +mget).
BARE_LIBRARY = """#!lua name=lgprune_bench_bare
local PAGE = 10000 -- entries per search page (redis-stack caps LIMIT at 10,000)

local function search(index, tag, offset, limit)
  return redis.call('FT.SEARCH', index, '@thread_id:{$t}', 'PARAMS', '2', 't', tag, 'NOCONTENT',
    'LIMIT', tostring(offset), tostring(limit), 'DIALECT', '2')
end

local function every(index, tag)
  local first = search(index, tag, 0, PAGE)
  for offset = PAGE, first[1] - 1, PAGE do
    search(index, tag, offset, PAGE)
  end
  return first
end

local function thread_reads(id, keep, count_first)
  if count_first and search('checkpoint', id, 0, 0)[1] <= keep then
    return 0
  end
  local listed = every('checkpoint', id)
  every('checkpoint_write', id)
  local keys = {}
  for i = 2, math.min(#listed, keep + 1) do
    keys[#keys + 1] = listed[i]
  end
  keys[#keys + 1] = '$.metadata'
  redis.call('JSON.MGET', unpack(keys))
  return 1
end

redis.register_function('bench_reads_thread', function(_, args)
  return thread_reads(args[1], tonumber(args[2]), false)
end)

-- ARGV: cursor, keep, threads per call. Returns the next cursor.
redis.register_function('bench_reads_sweep', function(_, args)
  local cursor, keep, most, seen = args[1], tonumber(args[2]), tonumber(args[3]), 0
  repeat
    local res = redis.call('SCAN', cursor, 'MATCH', 'checkpoint_latest:*', 'COUNT', 500)
    cursor = res[1]
    if #res[2] > 0 then
      local docs = redis.call('MGET', unpack(res[2]))
      docs[#docs + 1] = '$.thread_id'
      for _, raw in ipairs(redis.call('JSON.MGET', unpack(docs))) do
        thread_reads(cjson.decode(raw)[1], keep, true)
        seen = seen + 1
      end
    end
  until cursor == '0' or seen >= most
  return cursor
end)
"""
BARE_THREADS_PER_CALL = 200  # threads a bare sweep call reads (its calls stay short)
OWN_STAMPS_FROM = 1.7e12  # ms: where the checkpoint_ts of clones with stamps of their own begin


@dataclass(frozen=True)
class Group:
    """`threads` threads named `fmt % i`, of `checkpoints` checkpoints with `writes` writes each.

    The clones share the template's checkpoint_ts (every thread's k-th checkpoint in
    the same millisecond: a sweep's worst case), or with `own_stamps` each checkpoint
    has a millisecond of its own."""

    fmt: str
    threads: int
    checkpoints: int
    writes: int
    own_stamps: bool = False

    @property
    def stamps(self) -> Stamps:
        """Thread i's k-th checkpoint at OWN_STAMPS_FROM + i s + k ms, or the template's."""
        return Stamps(new0=OWN_STAMPS_FROM, new_step=1_000, gap=1) if self.own_stamps else Stamps()


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
        "core", "one thread, 1,000 checkpoints x 2 writes, keep 10", 10, (Group("core:%d", 1, 1_000, 2),), 1.3
    ),
    Case("seed", "one thread, 36 checkpoints x 1 write, keep 5", 5, (Group("seed:%d", 1, 36, 1),), 2.0),
    Case(
        "large",
        "one thread, 10,000 checkpoints x 2 writes, keep 10",
        10,
        (Group("large:%d", 1, 10_000, 2),),
        1.8,
        call_limit_ms=20,
    ),
    Case(
        "sweep",
        "2,000 threads x 15 checkpoints x 1 write, keep 5",
        5,
        (Group("user:%d:chat", 2_000, 15, 1),),
        1.8,
        floor_batch=2000,
    ),
    Case(
        "sweep, own stamps",
        "2,000 threads x 15 checkpoints x 1 write, keep 5, each checkpoint in a millisecond of its own",
        5,
        (Group("user:%d:chat", 2_000, 15, 1, own_stamps=True),),
        1.8,
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
    bare: list[Sample] = field(default_factory=list)
    against: list[Sample] = field(default_factory=list)  # another build of the library, when given

    @staticmethod
    def median(samples: list[Sample], what: Callable[[Sample], float]) -> float:
        return statistics.median(what(s) for s in samples)

    def server_ms(self, contender: str) -> float:
        """The median server time of one contender ("lgprune", "floor", "bare", "against")."""
        samples: list[Sample] = getattr(self, contender)
        return self.median(samples, lambda s: s.server_ms)

    @property
    def ratio(self) -> float:
        return self.server_ms("lgprune") / self.server_ms("floor")

    @property
    def bare_ratio(self) -> float:
        """The bare contender's server time as a multiple of the floor's."""
        return self.server_ms("bare") / self.server_ms("floor")

    @property
    def reachable(self) -> bool:
        """Whether the ratio goal lies above what the reads alone cost."""
        return self.bare_ratio <= self.case.goal

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
    """Run `fn` with every command in the SLOWLOG; its FCALLs' durations (the bare
    contender's reads and UNLINKs both count)."""
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


CONTENDERS = ("lgprune", "floor", "bare")


def _once(
    client: redis.Redis, case: Case, items: dict[Group, Items], contender: str, against: str | None = None
) -> Sample:
    """Build the case's data afresh, prune it with one contender, check what is left.

    Contender "against" prunes as lgprune does, with the library code `against`."""
    fresh(client)
    doomed: list[str] = []
    for group in case.groups:
        clones = clone_items(client, items[group], group.threads, group.fmt, group.stamps)
        doomed += _doomed(clones, case.keep)
    before = {as_text(k) for k in client.scan_iter(count=10_000)}
    pruner = Pruner(client)
    pruner.install()
    client.function_load(FLOOR_LIBRARY, replace=True)
    client.function_load(BARE_LIBRARY, replace=True)
    if contender == "against":
        assert against is not None
        client.function_load(against, replace=True)  # the pruner, installed already, calls it

    def floor() -> None:
        batch = case.floor_batch or len(doomed)
        for first in range(0, len(doomed), batch):
            keys = doomed[first : first + batch]
            client.fcall("bench_unlink", len(keys), *keys)

    def prune() -> None:
        if case.sweep:
            pruner.sweep(case.keep, full_every=None)  # options the "against" build knows too
        else:
            pruner.prune(case.groups[0].fmt % 0, case.keep)

    def bare() -> None:
        if case.sweep:
            cursor = "0"
            while True:
                reply = client.fcall("bench_reads_sweep", 0, cursor, case.keep, BARE_THREADS_PER_CALL)
                cursor = as_text(reply)
                if cursor == "0":
                    break
        else:
            client.fcall("bench_reads_thread", 0, case.groups[0].fmt % 0, case.keep)
        floor()

    sample = _timed(client, {"lgprune": prune, "against": prune, "floor": floor, "bare": bare}[contender])
    after = {as_text(k) for k in set(client.scan_iter(count=10_000)) - lgprune_keys(client)}
    if after != before - set(doomed):
        left, lost = after & set(doomed), before - set(doomed) - after
        raise AssertionError(
            f"{case.name}: {len(left)} doomed keys left (e.g. {sorted(left)[:2]}), "
            f"{len(lost)} kept keys lost (e.g. {sorted(lost)[:2]})"
        )
    return sample


def measure(
    client: redis.Redis, *, runs: int, cases: tuple[Case, ...] = CASES, against: str | None = None
) -> list[Result]:
    """Each case `runs` times per contender, the contenders' order rotating from run to run;
    with `against` (the text of a Lua library file), that build too."""
    contenders = CONTENDERS + (("against",) if against else ())
    templates: dict[tuple[int, int], Items] = {}
    results = []
    for case in cases:
        fresh(client)
        items = {}
        for g in case.groups:
            if (g.checkpoints, g.writes) not in templates:
                templates[g.checkpoints, g.writes] = template_items(client, g.checkpoints, writes=g.writes)
            template = templates[g.checkpoints, g.writes]
            items[g] = stamped(template) if g.own_stamps else template
        result = Result(case)
        for run in range(runs):
            shift = run % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                sample = _once(client, case, items, contender, against)
                getattr(result, contender).append(sample)
        print(
            f"  engine {case.name}: lgprune {result.server_ms('lgprune'):.1f} ms, "
            f"floor {result.server_ms('floor'):.1f} ms ({result.ratio:.2f}x), "
            f"bare {result.server_ms('bare'):.1f} ms ({result.bare_ratio:.2f}x), "
            f"longest call {result.longest_ms:.1f} ms"
            + (f", against {result.server_ms('against'):.1f} ms" if against else ""),
            flush=True,
        )
        results.append(result)
    client.flushall()
    return results
