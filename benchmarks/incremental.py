"""Incremental sweeps against the floor: Redis server time of `Pruner.sweep(keep)` once a
pass of its rule has completed, when few of many threads received checkpoints since.

The store: idle threads (4 checkpoints x 1 write, within keep 5) whose checkpoint_ts
lie hours back, a watermark as a complete pass an hour ago would have left, and active
threads that received 10 checkpoints (x 1 write) since it, so that each holds 14 and
9 of them go. Every thread is a clone of a template the saver wrote (see data.py),
its checkpoint_ts rewritten per thread so that the threads' checkpoints spread over
the hours (idle) or over the hour since the watermark (active).

Contenders, in one rotation per case: lgprune incremental (`sweep(5)`, which must
report kind "incremental"), lgprune full (`sweep(5, full=True)`), with `against` (another
build of the library) both again with that build, the floor (UNLINK of
exactly the doomed keys, known in advance, 2,000 per script) and bare: the floor plus
the reads an index-discovery design cannot avoid (one count and one GROUPBY
@thread_id over the window the incremental pass reads, then per active thread the
reads of engine.py's bare: its checkpoints, its writes, the metadata of `keep`
checkpoints), with no planning. Server time is the sum of SLOWLOG durations of the
contender's FCALLs (engine.py).

The idle threads are built once per case; before each run the active threads are
deleted and cloned afresh, the watermark is set again and RediSearch's garbage
collection is run, so every contender meets the same data. Every run ends with the
exact check: every doomed key gone, every other key there, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from benchmarks.core import FLOOR_LIBRARY
from benchmarks.data import Clones, Stamps, clone_items, fresh, lgprune_keys, stamped, template_items
from benchmarks.engine import BARE_LIBRARY, BARE_THREADS_PER_CALL, Sample, _doomed, _timed
from lgprune import Pruner
from lgprune.facts import WATERMARKS
from lgprune.results import as_text

Items = list[tuple[str, bytes, bytes, float]]

KEEP = 5
IDLE_CHECKPOINTS = 4  # an idle thread: within keep
OLD_CHECKPOINTS, NEW_CHECKPOINTS = 4, 10  # an active thread: as an idle one, then 10 more since
MARGIN_MS = 600_000  # lgprune's default margin: the incremental window opens this long before the watermark
HOUR_MS = 3_600_000
FLOOR_BATCH = 2_000  # doomed keys per floor script (as engine.py's sweeps)
MEMORY_LIMIT = 3 * 2**30  # used_memory a case's store may take (estimated from the cases before it)
SCALING_LIMIT = 1.25  # incremental at 100,000 threads against 20,000, same activity

# The bare contender's discovery and reads: engine.py's bare library, extended (it keeps
# its name, so it replaces that library; its functions stay).
BARE_INCREMENTAL_LIBRARY = (
    BARE_LIBRARY
    + """
-- ARGV: lo, hi (ms). The thread ids of the checkpoints with checkpoint_ts in [lo, hi):
-- a count (for GROUPBY's LIMIT), then one GROUPBY @thread_id over the whole window.
redis.register_function('bench_discover', function(_, args)
  local range = string.format('@checkpoint_ts:[%s (%s]', args[1], args[2])
  local n = redis.call('FT.SEARCH', 'checkpoint', range, 'NOCONTENT', 'LIMIT', '0', '0', 'DIALECT', '2')[1]
  local res = redis.call('FT.AGGREGATE', 'checkpoint', range, 'GROUPBY', '1', '@thread_id',
    'LIMIT', '0', tostring(math.max(n, 1)), 'DIALECT', '2')
  local ids = {}
  for i = 2, #res do
    ids[#ids + 1] = res[i][2]
  end
  return ids
end)

-- ARGV: keep, then thread ids: each thread's reads (listing, writes, kept metadata).
redis.register_function('bench_reads_threads', function(_, args)
  local keep = tonumber(args[1])
  for i = 2, #args do
    thread_reads(args[i], keep, false)
  end
  return #args - 1
end)
"""
)

# KEYS: none. ARGV: 'count' | 'unlink', first, count, fmt, then keys with \1 and \2 as
# CLONE's: how many of them exist over threads first .. first+count-1 (or unlink them).
TEMPLATE_KEYS = """
local op, first, count, fmt = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = 0
for t = first, first + count - 1 do
  local thread = string.format(fmt, t):gsub('%%', '%%%%')
  local node = string.format('%012x', t)
  local keys = {}
  for i = 5, #ARGV do
    keys[#keys + 1] = ARGV[i]:gsub('\\1', thread):gsub('\\2', node)
  end
  n = n + redis.call(op == 'count' and 'EXISTS' or 'UNLINK', unpack(keys))
end
return n
"""


@dataclass(frozen=True)
class Case:
    name: str
    threads: int  # all threads, idle and active
    active: int  # of which this many received checkpoints since the last pass
    goal: float | None = None  # the most server time incremental may take, as a multiple of the floor's
    call_limit_ms: float | None = None  # the longest any one incremental call may take
    scales_from: str | None = None  # the case of the same activity its cost may be at most 1.25x of

    @property
    def what(self) -> str:
        return f"{self.threads:,} threads, {self.active:,} active ({self.active / self.threads:.0%})"


CASES = (
    Case("20k-10%", 20_000, 2_000, goal=2.0, call_limit_ms=20),
    Case("20k-1%", 20_000, 200),
    Case("100k-2k", 100_000, 2_000, scales_from="20k-10%"),
    Case("100k-1%", 100_000, 1_000),
    Case("200k-2k", 200_000, 2_000),
)
PLOT_ACTIVE = 2_000  # the plot: cost against idle threads at this activity

QUICK_CASES = (
    Case("2k-10%", 2_000, 200, goal=2.0, call_limit_ms=20),
    Case("2k-1%", 2_000, 20),
    Case("10k-200", 10_000, 200, scales_from="2k-10%"),
    Case("10k-1%", 10_000, 100),
    Case("20k-200", 20_000, 200),
)
QUICK_PLOT_ACTIVE = 200

CONTENDERS = ("incremental", "full", "floor", "bare")
AGAINST = ("incremental-against", "full-against")  # the same sweeps with another build of the library


@dataclass
class Result:
    case: Case
    threads: int  # as built (a case too large for memory is scaled down)
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {c: [] for c in CONTENDERS + AGAINST})
    discovery_ms: list[float] = field(default_factory=list)  # bare's count and GROUPBY call

    def server_ms(self, contender: str) -> float:
        return statistics.median(s.server_ms for s in self.samples[contender])

    def ratio(self, contender: str) -> float:
        return self.server_ms(contender) / self.server_ms("floor")

    def longest_ms(self, contender: str = "incremental") -> float:
        return max(s.longest_ms for s in self.samples[contender])

    def calls(self, contender: str = "incremental") -> float:
        return statistics.median(s.calls for s in self.samples[contender])

    @property
    def within_goal(self) -> bool | None:
        """Whether incremental met the case's ratio and call goals (None: it has none)."""
        c = self.case
        if c.goal is None:
            return None
        limit = c.call_limit_ms
        return self.ratio("incremental") <= c.goal and (limit is None or self.longest_ms() <= limit)


def scaling(results: list[Result]) -> list[tuple[Result, Result, float]]:
    """Each case with `scales_from`, that case and incremental's cost at it over its cost there."""
    by_name = {r.case.name: r for r in results}
    return [
        (
            r,
            by_name[r.case.scales_from],
            r.server_ms("incremental") / by_name[r.case.scales_from].server_ms("incremental"),
        )
        for r in results
        if r.case.scales_from in by_name
    ]


def rule_field(keep: int) -> str:
    """The watermark field lgprune's rule_field makes for keep-only sweeps with the default prefixes."""
    rule = ["checkpoint", "checkpoint_write", f"keep {keep}", "max_age -", "idle_ttl -", "margin 600000"]
    return json.dumps(rule, separators=(",", ":"))


def watermark_fields(client: redis.Redis) -> list[str]:
    """The watermark fields one real full sweep (keep 5) leaves, on a tiny store; they
    must hold `rule_field`. The cases set these fields to make the next sweep incremental."""
    fresh(client)
    items = stamped(template_items(client, 2, writes=1))
    clone_items(client, items, 1, "probe:%d", Stamps(old0=time.time() * 1000 - HOUR_MS, olds=2))
    result = Pruner(client).sweep(KEEP, full=True)
    fields = sorted(as_text(k) for k in client.hkeys(WATERMARKS))
    if result.kind != "full" or rule_field(KEEP) not in fields:
        raise AssertionError(f"a full sweep left watermark fields {fields}, not {rule_field(KEEP)!r}")
    fresh(client)
    return fields


def template_keys(clones: Clones, checkpoints: set[bytes] | None = None) -> list[bytes]:
    """The distinct keys of the template (with \\1 and \\2); with `checkpoints` (ids'
    first 24 characters), only those of these checkpoints and the latest pointer."""
    keys: dict[bytes, None] = {}
    for kind, key, _, _ in clones.items:
        if checkpoints is None or kind == "string" or key.split(b"__empty__:", 1)[1][:24] in checkpoints:
            keys[key] = None
    return list(keys)


def over_threads(client: redis.Redis, op: str, clones: Clones, keys: list[bytes]) -> int:
    """`op` ('count' or 'unlink') `keys` of every clone thread: how many existed."""
    per_call = max(1, 8000 // len(keys))
    n = 0
    for first in range(0, clones.count, per_call):
        reply = client.eval(
            TEMPLATE_KEYS, 0, op, first, min(per_call, clones.count - first), clones.fmt, *keys
        )
        n += int(reply)
    return n


@dataclass
class Store:
    """A case's data: idle threads (built once) and active ones (built afresh per run)."""

    idle: Clones
    active_items: Items
    active_count: int
    stamps: Stamps  # the active threads' checkpoint_ts
    watermark: int  # server ms of the "last complete pass"
    fields: list[str]  # its watermark fields
    doomed: list[str] = field(default_factory=list)

    @property
    def active(self) -> Clones:
        return Clones("user:%d:chat", self.active_count, self.active_items)

    def window(self) -> tuple[int, int]:
        """[lo, hi): what an incremental pass starting now reads."""
        return self.watermark - MARGIN_MS, int(time.time() * 1000)

    def prepare(self, client: redis.Redis) -> None:
        """The active threads anew (their keys unlinked, cloned again), the watermark set,
        RediSearch's garbage collected."""
        over_threads(client, "unlink", self.active, template_keys(self.active))
        clone_items(client, self.active_items, self.active_count, "user:%d:chat", self.stamps)
        client.delete(WATERMARKS)
        client.hset(WATERMARKS, mapping={f: self.watermark for f in self.fields})
        for index in client.execute_command("FT._LIST"):  # type: ignore[no-untyped-call]
            # a server without FT.DEBUG collects in its own time
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("FT.DEBUG", "GC_FORCEINVOKE", index)  # type: ignore[no-untyped-call]

    def check(self, client: redis.Redis, name: str) -> None:
        """Exactly the doomed keys gone: every other key there, and nothing else but
        lgprune's watermarks."""
        active = self.active
        kept = template_keys(active, active.newest(KEEP))
        doomed = [k for k in template_keys(active) if k not in set(kept)]
        idle_keys = template_keys(self.idle)
        expected = self.idle.count * len(idle_keys) + active.count * len(kept)
        present = over_threads(client, "count", self.idle, idle_keys) + over_threads(
            client, "count", active, kept
        )
        left = over_threads(client, "count", active, doomed)
        size = int(client.dbsize()) - len(lgprune_keys(client))
        if left or present != expected or size != expected:
            raise AssertionError(
                f"{name}: {left} doomed keys left, {expected - present} kept keys lost, "
                f"{size - expected} other keys more than expected"
            )


def build(
    client: redis.Redis, case: Case, threads: int, templates: dict[int, Items], fields: list[str]
) -> Store:
    """The case's idle threads and what the runs need to build its active ones."""
    fresh(client)
    now = time.time() * 1000
    idle = threads - case.active
    # idle threads: checkpoints a minute apart, the threads' first ones spread over the 24 hours
    # from 30 to 6 hours ago
    idle_clones = clone_items(
        client,
        templates[IDLE_CHECKPOINTS],
        idle,
        "idle:%d:chat",
        Stamps(old0=now - 30 * HOUR_MS, old_step=24 * HOUR_MS / max(idle, 1), olds=IDLE_CHECKPOINTS),
    )
    watermark = int(now - HOUR_MS)
    # active threads: 4 checkpoints as an idle one's, then 10 since the watermark, 10 s apart,
    # the threads' first new ones spread over the 50 minutes after it
    stamps = Stamps(
        old0=now - 30 * HOUR_MS,
        old_step=24 * HOUR_MS / case.active,
        new0=watermark + 60_000.0,
        new_step=50 * 60_000 / case.active,
        olds=OLD_CHECKPOINTS,
        gap=10_000.0,
    )
    store = Store(
        idle_clones, templates[OLD_CHECKPOINTS + NEW_CHECKPOINTS], case.active, stamps, watermark, fields
    )
    store.doomed = _doomed(store.active, KEEP)
    return store


def _once(
    client: redis.Redis, store: Store, contender: str, against: str | None = None
) -> tuple[Sample, float]:
    """The active threads afresh, then one contender's prune, checked. Returns its
    sample and, for bare, its discovery call's ms (else 0). The -against contenders
    sweep with the library code `against`, then ours is loaded again."""
    store.prepare(client)
    pruner = Pruner(client)
    pruner.install()
    if contender.endswith("-against"):
        assert against is not None
        client.function_load(against, replace=True)  # the pruner, installed already, calls it
    kinds: list[str] = []
    ids: list[str] = []

    def sweep(full: bool) -> Callable[[], None]:
        return lambda: kinds.append(pruner.sweep(KEEP, full=full).kind)

    def floor() -> None:
        for first in range(0, len(store.doomed), FLOOR_BATCH):
            keys = store.doomed[first : first + FLOOR_BATCH]
            client.fcall("bench_unlink", len(keys), *keys)

    def bare() -> None:
        lo, hi = store.window()
        ids.extend(as_text(i) for i in client.fcall("bench_discover", 0, lo, hi))
        for first in range(0, len(ids), BARE_THREADS_PER_CALL):
            client.fcall("bench_reads_threads", 0, KEEP, *ids[first : first + BARE_THREADS_PER_CALL])
        floor()

    fn = {"incremental": sweep(False), "full": sweep(True), "floor": floor, "bare": bare}[
        contender.removesuffix("-against")
    ]
    client.slowlog_reset()
    sample = _timed(client, fn)
    discovery = 0.0
    if contender == "bare":
        if sorted(ids) != sorted(store.active.thread_ids()):
            raise AssertionError(f"bare found {len(ids)} threads, not the {store.active_count} active")
        discovery = _first_fcall_ms(client, "bench_discover")
    kind = contender.removesuffix("-against")
    if kind in ("incremental", "full") and kinds != [kind]:
        raise AssertionError(f"{contender}: sweep(full={kind == 'full'}) ran a {kinds} pass")
    if contender.endswith("-against"):
        pruner.install(force=True)
    store.check(client, contender)
    return sample, discovery


def _first_fcall_ms(client: redis.Redis, function: str) -> float:
    """The duration of the timed run's call of `function`, from the SLOWLOG _timed left."""
    prefix = f"FCALL {function}".encode()
    entries = client.slowlog_get(1_000_000)
    return float(sum(e["duration"] / 1000 for e in entries if e["command"].startswith(prefix)))


def measure(
    client: redis.Redis, *, runs: int, quick: bool = False, against: str | None = None
) -> tuple[list[Result], list[str]]:
    """Each case `runs` times per contender, the contenders' order rotating from run to
    run; with `against` (the text of a Lua library file), both sweeps with that build too.
    Returns the results and notes (cases scaled down to fit memory)."""
    contenders = CONTENDERS + (AGAINST if against else ())
    fields = watermark_fields(client)
    templates = {
        n: stamped(template_items(client, n, writes=1))
        for n in (IDLE_CHECKPOINTS, OLD_CHECKPOINTS + NEW_CHECKPOINTS)
    }
    results: list[Result] = []
    notes: list[str] = []
    per_thread = 0.0  # used_memory per thread of the largest store so far
    for case in QUICK_CASES if quick else CASES:
        threads = case.threads
        if per_thread and per_thread * threads > MEMORY_LIMIT:
            threads = int(MEMORY_LIMIT / per_thread) // 10_000 * 10_000
            notes.append(
                f"{case.threads:,} threads would take about {per_thread * case.threads / 2**30:.1f} GiB "
                f"of memory here; that case was built with {threads:,}"
            )
            print(f"  incremental: {notes[-1]}", flush=True)
        started = time.monotonic()
        store = build(client, case, threads, templates, fields)
        client.function_load(FLOOR_LIBRARY, replace=True)
        client.function_load(BARE_INCREMENTAL_LIBRARY, replace=True)
        Pruner(client).install()
        store.prepare(client)
        memory = int(client.info("memory")["used_memory"])
        per_thread = max(per_thread, memory / threads)
        print(
            f"  incremental {case.name}: built {threads:,} threads in {time.monotonic() - started:.0f} s, "
            f"used_memory {memory / 2**30:.2f} GiB",
            flush=True,
        )
        result = Result(case, threads)
        for run in range(runs):
            shift = run % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                sample, discovery = _once(client, store, contender, against)
                result.samples[contender].append(sample)
                if contender == "bare":
                    result.discovery_ms.append(discovery)
        print(
            f"  incremental {case.name} ({threads:,} threads, {case.active:,} active): "
            f"incremental {result.server_ms('incremental'):.1f} ms ({result.ratio('incremental'):.2f}x), "
            f"full {result.server_ms('full'):.1f} ms, floor {result.server_ms('floor'):.1f} ms, "
            f"bare {result.server_ms('bare'):.1f} ms ({result.ratio('bare'):.2f}x; discovery "
            f"{statistics.median(result.discovery_ms):.1f} ms), longest call {result.longest_ms():.1f} ms, "
            f"calls {result.calls():g}"
            + "".join(f", {c} {result.server_ms(c):.1f} ms" for c in contenders if c in AGAINST),
            flush=True,
        )
        results.append(result)
    client.flushall()
    return results, notes
