"""The service behind `lgprune serve`, without any web framework: sweeps and their records,
the scheduled sweep, the background refresh of the store's figures, the health check, and
the metrics. The routes (`lgprune.service.routes`) only translate HTTP to these calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import redis

from lgprune.durations import parse_duration, show
from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.metrics import Metrics
from lgprune.pruner import AsyncPruner
from lgprune.results import SweepResult
from lgprune.schedule import every
from lgprune.stats import Stats
from lgprune.sweep_plan import SweepPlan
from lgprune.urls import redact

RECENT_SWEEPS = 50  # sweeps kept for GET /sweeps
HEALTH_PROBE_ID = "lgprune-healthz-probe"  # a dry run on it proves the modules and index answer
HEALTH_TTL = 1.0  # seconds a health answer is shared by the probes that ask for it
STATS_TTL = 5.0  # seconds computed stats answer every request for the same keep and top
RECENT_STATS = 16  # (keep, top) pairs whose stats are kept that long
log = logging.getLogger("lgprune")


def one_line(error: BaseException) -> str:
    """An error as one line, without the password of any URL in it."""
    return redact(" ".join(str(error).split()) or type(error).__name__)


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@dataclass
class SweepRecord:
    """One sweep run by this service: its running totals until it is done."""

    id: str
    plan: SweepPlan
    trigger: str  # "api" or "schedule"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    outcome: str = "running"  # then "success", "dry_run", "failure" or "stopped"
    error: str | None = None
    result: SweepResult = field(default_factory=SweepResult)

    def view(self) -> dict[str, Any]:
        """Only text, integers, booleans and None: every record can be shown."""
        counts = {
            name: int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            for name, value in dataclasses.asdict(self.result).items()
            if name not in ("elapsed", "cursor", "dry_run")
        }
        return {
            "id": self.id,
            "trigger": self.trigger,
            "dry_run": self.plan.dry_run,
            "done": self.finished is not None,
            "outcome": self.outcome,
            "error": self.error,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "duration": round((self.finished or time.time()) - self.started, 3),
            "plan": self.plan.view(),
            **counts,
        }


class _Stopped(Exception):
    """The service is stopping: the sweep ends after its current call."""


@dataclass(frozen=True)
class Settings:
    """How the service runs: the scheduled sweep, and the refresh of the store's figures."""

    schedule: SweepPlan | None = None
    sweep_every: float | None = None
    stats_keep: int | None = None  # default: the scheduled sweep's keep, else 10
    refresh_every: float | None = 300.0  # None: no background refresh

    def __post_init__(self) -> None:
        if (self.schedule is None) != (self.sweep_every is None):
            raise InvalidArgumentError("a scheduled sweep needs both its plan and sweep_every")
        if self.sweep_every is not None:
            parse_duration(self.sweep_every, name="sweep_every")
        if self.refresh_every is not None:
            parse_duration(self.refresh_every, name="refresh_every", least=1.0)

    @property
    def keep(self) -> int:
        if self.stats_keep is not None:
            return self.stats_keep
        return self.schedule.keep if self.schedule is not None else 10


@dataclass(frozen=True)
class Health:
    """The last check: whether Redis answers PING, whether the store can be pruned (the
    modules, the saver's index and layout, the library), and the library version or why not."""

    redis_up: bool
    ready: bool
    detail: str

    @property
    def problem(self) -> str | None:
        if not self.redis_up:
            return f"Redis does not answer: {self.detail}"
        return None if self.ready else f"the store is not ready: {self.detail}"


class Service:
    """The state behind the app: the pruner, sweeps, the last refresh, metrics.
    `error_text` words an error in one line for answers, logs and the page (`lgprune serve`
    names its flags), except a request's refused input, which keeps the names it was sent by."""

    def __init__(
        self, pruner: AsyncPruner, settings: Settings, error_text: Callable[[BaseException], str] = one_line
    ) -> None:
        self.pruner, self.settings, self.error_text = pruner, settings, error_text
        self.metrics = Metrics(service=True)
        self.last_health: Health | None = None
        self.refreshed_at: float | None = None
        self.sweeps: OrderedDict[str, SweepRecord] = OrderedDict()
        self.running: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.next_sweep: float | None = None
        self.stats_cache: Stats | None = None  # the last background refresh
        self.stats_error: str | None = None
        self._stats_lock = asyncio.Lock()
        self._recent: OrderedDict[tuple[int, int], tuple[float, Stats]] = OrderedDict()
        self._health: tuple[float, Health] | None = None
        self._health_lock = asyncio.Lock()
        self._jobs: list[asyncio.Task[None]] = []

    # --- lifetime --------------------------------------------------------------------

    def start(self) -> None:
        """Start the schedules: the sweep (if any) and the refresh of the store's figures
        (once: a second start while they run does nothing)."""
        if self._jobs:
            return
        loop = asyncio.get_running_loop()
        s = self.settings
        if s.schedule is not None and s.sweep_every is not None:
            self._jobs.append(
                loop.create_task(every(s.sweep_every, self._scheduled, self.stopping, self._due))
            )
        if s.refresh_every is not None:
            self._jobs.append(loop.create_task(every(s.refresh_every, self.refresh, self.stopping)))

    async def stop(self) -> None:
        """Let the current call finish, end a running sweep there, and stop the schedules."""
        self.stopping.set()
        jobs = [*self._jobs, *([self.running] if self.running is not None else [])]
        self._jobs = []
        await asyncio.gather(*jobs, return_exceptions=True)  # each job logged its own failures

    def _due(self, when: float | None) -> None:
        self.next_sweep = when

    # --- sweeps ---------------------------------------------------------------------

    def start_sweep(self, plan: SweepPlan, trigger: str) -> SweepRecord | None:
        """Start a sweep in the background; None while another runs."""
        if self.running is not None and not self.running.done():
            return None
        record = SweepRecord(uuid.uuid4().hex[:12], plan, trigger)
        self.sweeps[record.id] = record
        while len(self.sweeps) > RECENT_SWEEPS:
            self.sweeps.popitem(last=False)
        self.running = asyncio.get_running_loop().create_task(self._sweep(record))
        return record

    async def _scheduled(self) -> None:
        assert self.settings.schedule is not None
        while self.start_sweep(self.settings.schedule, "schedule") is None:
            assert self.running is not None
            await self.running  # a sweep started over the API: ours follows it
            if self.stopping.is_set():
                return
        assert self.running is not None
        await self.running

    async def _sweep(self, record: SweepRecord) -> None:
        plan = record.plan
        counted = SweepResult()

        def on_progress(result: SweepResult) -> None:
            nonlocal counted
            if not plan.dry_run:
                self.metrics.count_deleted(
                    result.checkpoints_deleted - counted.checkpoints_deleted,
                    result.writes_deleted - counted.writes_deleted,
                    result.keys_deleted - counted.keys_deleted,
                )
            counted = record.result = result
            if self.stopping.is_set() and result.cursor != "0":
                raise _Stopped

        try:
            await self.pruner.sweep(plan.keep, **plan.arguments(on_progress))
            record.outcome = "dry_run" if plan.dry_run else "success"
        except _Stopped:
            record.outcome = "stopped"
        except Exception as error:  # recorded, shown, counted, logged; never raised into the loop
            record.outcome, record.error = "failure", self.error_text(error)
        record.finished = time.time()
        self.metrics.sweep(
            record.outcome,
            started=record.started,
            finished=record.finished,
            kind=record.result.kind,
            threads_failed=record.result.threads_failed,
        )
        log_sweep(record)

    # --- the store's figures -----------------------------------------------------------

    async def refresh(self) -> None:
        """Read the store's figures (a read-only dry-run sweep of the whole keyspace, as
        `lgprune stats` does): on the service's schedule, never for a scrape."""
        try:
            await self.stats(self.settings.keep, 20, shared=False)
            self.stats_error = None
        except Exception as error:  # the next refresh tries again; /metrics says what is wrong
            text = self.error_text(error)
            if text != self.stats_error:
                log.warning("lgprune: the refresh of the store's figures failed: %s", text)
            self.stats_error = text
        await self.health(fresh=True)  # the gauges and the page's banner, checked as /healthz does

    def recent_stats(self, keep: int, top: int) -> Stats | None:
        """Stats for `keep` and `top` computed within STATS_TTL, else None; reads nothing."""
        shared = self._recent.get((keep, top))
        return shared[1] if shared is not None and time.monotonic() - shared[0] < STATS_TTL else None

    async def stats(self, keep: int, top: int, *, shared: bool = True) -> Stats:
        """Stats computed one at a time; with `shared` (a request) those computed within
        STATS_TTL for the same keep and top answer it, so a burst of requests reads the store
        once. The background refresh (`shared=False`) computes its own. Those of the
        service's keep are kept as the last refresh."""
        async with self._stats_lock:
            found = self.recent_stats(keep, top) if shared else None
            if found is not None:
                return found
            found = await self.pruner.stats(keep, top=top)
            if shared:
                self._recent[(keep, top)] = (time.monotonic(), found)
                self._recent.move_to_end((keep, top))
                while len(self._recent) > RECENT_STATS:
                    self._recent.popitem(last=False)
        if keep == self.settings.keep:
            self.stats_cache = found
            self.refreshed_at = time.time()
            self.metrics.refreshed(found.threads, found.checkpoints, found.keys)
        return found

    async def health(self, *, fresh: bool = False) -> Health:
        """Whether Redis answers PING, and whether it can prune (modules, library, the
        saver's index): a dry run on a probe id. Concurrent checks within a second share one
        probe (`fresh`: not one from before this call)."""
        async with self._health_lock:
            if not fresh and self._health is not None and time.monotonic() - self._health[0] < HEALTH_TTL:
                return self._health[1]
            try:
                await self.pruner.client.ping()
            except (redis.RedisError, OSError) as error:
                return self.checked(Health(False, False, self.error_text(error)))
            try:
                version = await self.pruner.install()
                await self.pruner.prune(HEALTH_PROBE_ID, 0, dry_run=True)
            except (redis.RedisError, LgpruneError, OSError) as error:
                return self.checked(Health(True, False, self.error_text(error)))
            return self.checked(Health(True, True, version))

    def checked(self, health: Health) -> Health:
        """Record a check (the gauges, the page's banner) and return it."""
        self.metrics.redis_up.set(health.redis_up)
        self.metrics.store_ready.set(health.ready)
        self.last_health = health
        self._health = (time.monotonic(), health)
        return health

    def redis_failed(self, error: redis.RedisError) -> None:
        """A request met a Redis error: a lost connection says Redis is not up (until the next check)."""
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
            self.checked(Health(False, False, self.error_text(error)))

    def schedule_text(self) -> str | None:
        s = self.settings
        if s.schedule is None or s.sweep_every is None:
            return None
        return f"{s.schedule.describe()}, every {show(s.sweep_every)}"


def log_sweep(record: SweepRecord) -> None:
    """One log line for a sweep that ended: who started it, its kind, what it deleted (or
    would), how long it took, and whether it finished; or why it failed."""
    r, took = record.result, round(((record.finished or time.time()) - record.started) * 1000)
    what = f"lgprune: sweep {record.id} ({record.trigger}, {r.kind}"
    if record.outcome == "failure":
        log.error(
            "%s) failed after %d ms: %s (before it: %d checkpoints and %d keys deleted)",
            what,
            took,
            record.error,
            r.checkpoints_deleted,
            r.keys_deleted,
        )
        return
    log.info(
        "%s%s): %d threads visited, %d checkpoints and %d keys %s in %d ms%s",
        what,
        ", dry run" if record.plan.dry_run else ", stopped" if record.outcome == "stopped" else "",
        r.threads_visited,
        r.checkpoints_deleted,
        r.keys_deleted,
        "would be deleted" if record.plan.dry_run else "deleted",
        took,
        "; unfinished: a thread was passed over (no watermark recorded)" if r.unfinished else "",
    )
    if r.threads_failed:
        log.warning(
            "%s): %d threads could not be pruned and were left as they are: %s",
            what,
            r.threads_failed,
            r.failures_text(),
        )


@contextlib.asynccontextmanager
async def running(service: Service) -> Any:
    """The service's schedules for the duration of a block (an app's lifespan)."""
    service.start()
    try:
        yield
    finally:
        await service.stop()
