"""`lgprune serve`: prune and sweep over HTTP, Prometheus metrics, a status page.

    app = create_app(AsyncPruner(redis.asyncio.Redis.from_url(url)), token="...")

returns an ASGI app (FastAPI): run it with uvicorn, or mount it in another
Starlette/FastAPI app (`app.mount("/lgprune", create_app(...))`). Needs
`pip install lgprune[serve]`.

Security: every endpoint but /healthz and /metrics (which hold no thread ids)
needs the token when one is set, as `Authorization: Bearer <token>` or as the
password of HTTP Basic (so a browser can open the status page); it is compared
in constant time. Bad input is a 4xx with one clear message and deletes
nothing; a Redis that does not answer is a 503 with one line; no response
ever holds a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field

from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.protocol import parse_duration
from lgprune.pruner import AsyncPruner
from lgprune.results import PruneResult, SweepResult
from lgprune.stats import Stats
from lgprune.status_page import render_status

MAX_THREAD_ID = 65536  # characters; the library refuses ids over 4,096 bytes with its own message
RECENT_SWEEPS = 50  # sweeps kept for GET /sweeps
HEALTH_PROBE_ID = "lgprune-healthz-probe"  # a dry run on it proves the modules and index answer


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    thread_id: str = Field(max_length=MAX_THREAD_ID)
    keep: int = Field(ge=0)
    dry_run: bool = False


class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep: int = Field(ge=0, strict=True)
    idle_ttl: str | None = None
    max_age: str | None = None
    orphans: bool = Field(default=False, strict=True)
    grace: str | None = None
    dry_run: bool = Field(default=False, strict=True)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep does: the arguments of `AsyncPruner.sweep`, durations in seconds."""

    keep: int
    idle_ttl: float | None = None
    max_age: float | None = None
    orphans: bool = False
    grace: float | None = None
    dry_run: bool = False


@dataclass
class SweepRecord:
    """One sweep run by this service: its running totals until it is done."""

    id: str
    plan: SweepPlan
    trigger: str  # "api" or "schedule"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    outcome: str = "running"  # then "success", "failure" or "stopped"
    error: str | None = None
    result: SweepResult = field(default_factory=SweepResult)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "done": self.finished is not None,
            "outcome": self.outcome,
            "error": self.error,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "duration": (self.finished or time.time()) - self.started,
            "plan": dataclasses.asdict(self.plan),
            **dataclasses.asdict(self.result),
        }


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.checkpoints = Counter(
            "lgprune_checkpoints_deleted", "Checkpoints deleted by this process", registry=r
        )
        self.writes = Counter("lgprune_writes_deleted", "Writes deleted by this process", registry=r)
        self.keys = Counter("lgprune_keys_deleted", "Keys deleted by this process", registry=r)
        self.prunes = Counter("lgprune_prunes", "POST /prune calls", ["outcome"], registry=r)
        self.sweeps = Counter("lgprune_sweeps", "Sweeps run", ["outcome"], registry=r)
        self.duration = Histogram(
            "lgprune_sweep_duration_seconds",
            "How long sweeps took",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
            registry=r,
        )
        self.last_success = Gauge(
            "lgprune_last_sweep_success_timestamp_seconds", "When the last successful sweep ended", registry=r
        )
        self.threads = Gauge("lgprune_store_threads", "Threads in the store (cached stats)", registry=r)
        self.store_checkpoints = Gauge(
            "lgprune_store_checkpoints", "Checkpoints in the store (cached stats)", registry=r
        )
        self.store_keys = Gauge("lgprune_store_keys", "Keys in the database (cached stats)", registry=r)
        self.redis_up = Gauge("lgprune_redis_up", "1 when Redis answered the last check", registry=r)
        for outcome in ("success", "failure"):
            self.prunes.labels(outcome)
            self.sweeps.labels(outcome)

    def deleted(self, checkpoints: int, writes: int, keys: int) -> None:
        self.checkpoints.inc(checkpoints)
        self.writes.inc(writes)
        self.keys.inc(keys)

    def store(self, stats: Stats) -> None:
        self.threads.set(stats.threads)
        self.store_checkpoints.set(stats.checkpoints)
        self.store_keys.set(stats.keys)


class Service:
    """The state behind the app: the pruner, sweeps, cached stats, metrics."""

    def __init__(
        self,
        pruner: AsyncPruner,
        *,
        token: str | None,
        schedule: SweepPlan | None,
        every: float | None,
        stats_keep: int,
        stats_ttl: float,
    ) -> None:
        self.pruner, self.token = pruner, token
        self.schedule, self.every = schedule, every
        self.stats_keep, self.stats_ttl = stats_keep, stats_ttl
        self.metrics = Metrics()
        self.sweeps: OrderedDict[str, SweepRecord] = OrderedDict()
        self.running: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.next_sweep: float | None = None
        self._stats: tuple[float, int, int, Stats] | None = None  # when, keep, top, stats
        self._stats_lock = asyncio.Lock()

    # --- sweeps ---------------------------------------------------------------

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

    async def _sweep(self, record: SweepRecord) -> None:
        plan = record.plan
        counted = SweepResult()

        def on_progress(result: SweepResult) -> None:
            nonlocal counted
            if not plan.dry_run:
                self.metrics.deleted(
                    result.checkpoints_deleted - counted.checkpoints_deleted,
                    result.writes_deleted - counted.writes_deleted,
                    result.keys_deleted - counted.keys_deleted,
                )
            counted = record.result = result
            if self.stopping.is_set() and result.cursor != "0":
                raise _Stopped

        try:
            await self.pruner.sweep(
                plan.keep,
                dry_run=plan.dry_run,
                max_age=plan.max_age,
                idle_ttl=plan.idle_ttl,
                orphans=plan.orphans,
                grace=plan.grace,
                on_progress=on_progress,
            )
            record.outcome = "success"
        except _Stopped:
            record.outcome = "stopped"
        except Exception as error:  # recorded, shown, counted; never raised into the loop
            record.outcome, record.error = "failure", one_line(error)
        record.finished = time.time()
        if record.outcome in ("success", "failure"):
            self.metrics.sweeps.labels(record.outcome).inc()
            self.metrics.duration.observe(record.finished - record.started)
        if record.outcome == "success":
            self.metrics.last_success.set(record.finished)
            self._stats = None  # the store changed

    async def scheduler(self) -> None:
        """Sweep on the schedule, one at a time: a slow sweep delays the next."""
        assert self.schedule is not None and self.every is not None
        while not self.stopping.is_set():
            while self.start_sweep(self.schedule, "schedule") is None:
                assert self.running is not None
                await self.running  # a sweep started over the API: ours follows it
                if self.stopping.is_set():
                    return
            assert self.running is not None
            await self.running
            self.next_sweep = time.time() + self.every
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.every)
        self.next_sweep = None

    # --- stats ------------------------------------------------------------------

    async def stats(self, keep: int, top: int, *, max_age: float | None = None) -> Stats:
        """Stats, cached for `stats_ttl` seconds; never more than one refresh in flight."""
        limit = self.stats_ttl if max_age is None else max_age
        async with self._stats_lock:
            cached = self._stats
            if cached is not None and cached[1:3] == (keep, top) and time.monotonic() - cached[0] < limit:
                return cached[3]
            stats = await self.pruner.stats(keep, top=top)
            self._stats = (time.monotonic(), keep, top, stats)
            self.metrics.store(stats)
            return stats

    async def redis_up(self) -> tuple[bool, str]:
        """Whether Redis answers and can prune (modules, library, the saver's index), and
        the library version or why not. A dry run on an id no thread has reads one count."""
        try:
            await self.pruner.client.ping()
            version = await self.pruner.install()
            await self.pruner.prune(HEALTH_PROBE_ID, 0, dry_run=True)
        except (redis.RedisError, LgpruneError, OSError) as error:
            self.metrics.redis_up.set(0)
            return False, one_line(error)
        self.metrics.redis_up.set(1)
        return True, version


class _Stopped(Exception):
    """The service is stopping: the sweep ends after its current call."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def check_token(expected: str | None, header: str | None) -> bool:
    """Whether an Authorization header carries the token (Bearer, or Basic password)."""
    if expected is None:
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    return hmac.compare_digest(given.encode(), expected.encode())


def create_app(
    pruner: AsyncPruner,
    token: str | None = None,
    *,
    sweep: SweepPlan | None = None,
    sweep_every: float | None = None,
    stats_keep: int = 10,
    stats_ttl: float = 300.0,
) -> FastAPI:
    """The lgprune HTTP service over `pruner`; with `sweep` and `sweep_every` (seconds) it
    also sweeps on that schedule."""
    if (sweep is None) != (sweep_every is None):
        raise InvalidArgumentError("a scheduled sweep needs both its plan and sweep_every")
    service = Service(
        pruner,
        token=token or None,
        schedule=sweep,
        every=sweep_every,
        stats_keep=stats_keep,
        stats_ttl=stats_ttl,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scheduler = None
        if service.schedule is not None:
            scheduler = asyncio.get_running_loop().create_task(service.scheduler())
        yield
        service.stopping.set()  # a running sweep ends after its current call
        if scheduler is not None:
            await scheduler
        if service.running is not None:
            await service.running

    app = FastAPI(title="lgprune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    async def authorized(request: Request) -> None:
        if not check_token(service.token, request.headers.get("authorization")):
            raise _Unauthorized

    auth = [Depends(authorized)]

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: Exception) -> Response:
        return JSONResponse(
            {"error": "this endpoint needs the token: Authorization: Bearer <token>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="lgprune", charset="UTF-8"'},
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> Response:
        parts = []
        for item in error.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg")))
        return problem(422, "; ".join(parts) + "; nothing was deleted")

    @app.exception_handler(InvalidArgumentError)
    async def invalid(_: Request, error: Exception) -> Response:
        return problem(400, f"{one_line(error)}; nothing was deleted")

    @app.exception_handler(LgpruneError)
    async def lgprune_error(_: Request, error: Exception) -> Response:
        return problem(503, one_line(error))

    @app.exception_handler(redis.RedisError)
    async def redis_error(_: Request, error: Exception) -> Response:
        service.metrics.redis_up.set(0)
        return problem(503, f"Redis: {one_line(error)}")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> Response:
        return problem(500, f"unexpected {type(error).__name__}: {one_line(error)}")

    @app.get("/healthz")
    async def healthz() -> Response:
        up, detail = await service.redis_up()
        if not up:
            return problem(503, detail)
        return JSONResponse({"redis": "ok", "library": detail})

    @app.get("/metrics")
    async def metrics() -> Response:
        up, _ = await service.redis_up()
        if up:
            with contextlib.suppress(redis.RedisError, LgpruneError, OSError):
                await service.stats(service.stats_keep, 20)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/prune", dependencies=auth)
    async def prune(body: PruneRequest) -> Response:
        try:
            result: PruneResult = await service.pruner.prune(body.thread_id, body.keep, dry_run=body.dry_run)
        except Exception:
            service.metrics.prunes.labels("failure").inc()
            raise
        service.metrics.prunes.labels("success").inc()
        if not body.dry_run:
            service.metrics.deleted(result.checkpoints_deleted, result.writes_deleted, result.keys_deleted)
        return JSONResponse({"thread_id": body.thread_id, **dataclasses.asdict(result)})

    @app.post("/sweep", dependencies=auth)
    async def start_sweep(body: SweepRequest) -> Response:
        plan = SweepPlan(
            keep=body.keep,
            idle_ttl=None if body.idle_ttl is None else parse_duration(body.idle_ttl),
            max_age=None if body.max_age is None else parse_duration(body.max_age),
            orphans=body.orphans,
            grace=None if body.grace is None else parse_duration(body.grace),
            dry_run=body.dry_run,
        )
        if plan.grace is not None and not plan.orphans:
            raise InvalidArgumentError("grace applies to orphans only")
        record = service.start_sweep(plan, "api")
        if record is None:
            return problem(409, "a sweep is running: wait for it (GET /sweeps)")
        return JSONResponse({"sweep": record.id}, status_code=202)

    @app.get("/sweeps", dependencies=auth)
    async def sweeps() -> Response:
        return JSONResponse({"sweeps": [r.view() for r in reversed(service.sweeps.values())]})

    @app.get("/sweeps/{sweep_id}", dependencies=auth)
    async def one_sweep(sweep_id: str) -> Response:
        record = service.sweeps.get(sweep_id)
        if record is None:
            return problem(404, f"no sweep {sweep_id!r} among the last {RECENT_SWEEPS}")
        return JSONResponse(record.view())

    @app.get("/stats", dependencies=auth)
    async def stats(
        keep: Annotated[int, Query(ge=0)] = 10,
        top: Annotated[int, Query(ge=0, le=1000)] = 20,
    ) -> Response:
        return JSONResponse(dataclasses.asdict(await service.stats(keep, top, max_age=0)))

    @app.get("/", response_class=HTMLResponse, dependencies=auth)
    async def status() -> Response:
        up, detail = await service.redis_up()
        found = None
        if up:
            try:
                found = await service.stats(service.stats_keep, 20)
            except (redis.RedisError, LgpruneError, OSError) as error:
                up, detail = False, one_line(error)
        page = render_status(
            stats=found,
            redis_detail=detail if not up else None,
            sweeps=[r.view() for r in reversed(service.sweeps.values())],
            next_sweep=iso(service.next_sweep),
            schedule=None
            if service.schedule is None or service.every is None
            else f"keep {service.schedule.keep} every {timedelta(seconds=service.every)}",
        )
        return HTMLResponse(page)

    return app


class _Unauthorized(Exception):
    """The request lacks the token."""


__all__ = ["SweepPlan", "create_app"]
