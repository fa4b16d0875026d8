"""The HTTP routes of `lgprune serve` (FastAPI): each authenticates, reads and checks its
input, and calls the service core (`lgprune.service.core`).

Status policy, one error shape `{"error": "<one line>"}` for every 4xx and 5xx:
400 the body is not JSON (or, from the connection, not HTTP); 401 no token or a wrong one
(each said apart); 403 a Host or Origin the service does not answer to; 404 no such path
or sweep; 405 wrong method; 409 a sweep is running; 413 the body is too large; 415 the
body is not `application/json`; 422 JSON or query parameters that break a rule (types,
ranges, unknown fields, a thread id the library refuses); 409 also for a thread holding
data lgprune cannot read; 503 Redis does not answer or cannot prune (modules, index), or
(from the connection) too many are open; 500 a bug. A refusal of a request that could
delete says that nothing was (or what its earlier calls did). Every GET route answers HEAD.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from lgprune.durations import parse_duration
from lgprune.errors import BadDataError, InvalidArgumentError, LgpruneError
from lgprune.metrics import CONTENT_TYPE_LATEST
from lgprune.protocol import FULL_EVERY_S
from lgprune.pruner import AsyncPruner
from lgprune.service.core import Service, Settings, iso, one_line, running
from lgprune.service.guard import BODY_METHODS_EXEMPT, CACHED_ONLY, BodyTooLarge, Guard
from lgprune.status_page import PAGE_CSP, render_status
from lgprune.sweep_plan import SweepPlan

MAX_THREAD_ID = 65536  # characters; the library refuses ids over 4,096 bytes with its own message
MAX_BODY = 8192  # bytes: a prune or sweep request is a few dozen


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    thread_id: str = Field(max_length=MAX_THREAD_ID)
    keep: int = Field(ge=0)
    dry_run: bool = False


class SweepRequest(BaseModel):
    """Durations as '30d', '12h', '90m', '45s', '2w' or a number of seconds."""

    model_config = ConfigDict(extra="forbid", strict=True)
    keep: int = Field(ge=0)
    idle_ttl: float | None = None
    max_age: float | None = None
    orphans: bool = False
    grace: float | None = None
    dry_run: bool = False
    full: bool = False
    margin: float | None = None
    full_every: float | None = FULL_EVERY_S

    @field_validator("idle_ttl", "max_age", "grace", "margin", "full_every", mode="before")
    @classmethod
    def _duration(cls, value: Any, info: Any) -> float | None:
        if value is None:
            return None
        least = 0.0 if info.field_name in ("grace", "margin") else 1.0
        return parse_duration(value, name=info.field_name, least=least)


class _Unauthorized(Exception):
    """The request lacks the token, or has another."""


class _BadQuery(Exception):
    """Query parameters the route does not take."""


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(Exception(message))}, status_code=status, headers=headers)


def validation_message(errors: Sequence[Any]) -> str:
    parts = []
    for item in list(errors)[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query"))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where and not message.startswith(f"{where}") else message)
    return "; ".join(parts) or "invalid input"


async def read_body(request: Request, model: type[BaseModel]) -> Any:
    """The body as `model`: read only now, after authentication, and within the limit."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise _NotJson(f"the body is not JSON ({str(error)[:80]}); nothing was deleted") from None
    except RecursionError:
        raise _NotJson("the body is JSON nested too deeply; nothing was deleted") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidArgumentError(validation_message(error.errors())) from None


class _NotJson(Exception):
    """The body does not parse as JSON."""


def takes(*names: str) -> Callable[[Request], None]:
    """A dependency refusing query parameters other than `names`."""

    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - set(names))
        if unknown:
            raise _BadQuery(
                f"unknown query parameter {unknown[0]!r}" + (f" (takes {', '.join(names)})" if names else "")
            )
        for name in names:
            if len(request.query_params.getlist(name)) > 1:
                raise _BadQuery(f"query parameter {name!r} is given more than once")

    return check


BEARER = HTTPBearer(auto_error=False)
BASIC = HTTPBasic(auto_error=False)  # so that a browser can open the page: the token is the password


async def authorized(
    request: Request,
    bearer_token: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    basic_login: Annotated[HTTPBasicCredentials | None, Depends(BASIC)],
) -> None:
    """The token, as `Authorization: Bearer` or as the password of HTTP Basic, compared in
    constant time; checked before any body is read."""
    token: str | None = request.app.state.token
    if token is None:
        return
    given = bearer_token.credentials if bearer_token else basic_login.password if basic_login else None
    if given is None:
        raise _Unauthorized(
            "this endpoint needs the token: Authorization: Bearer <token>, or HTTP Basic with the "
            "token as the password"
        )
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise _Unauthorized("the token is wrong (it is $LGPRUNE_TOKEN or the --token-file of lgprune serve)")


def schedules(app: FastAPI) -> contextlib.AbstractAsyncContextManager[None]:
    """The schedules of an app `create_app` made (its refresh and scheduled sweep), for the
    lifespan of a host app it is mounted in: Starlette does not run a mounted app's own
    lifespan. `FastAPI(lifespan=lambda _: schedules(lgprune_app))`, or `async with
    schedules(lgprune_app):` inside the host's own lifespan."""
    service = getattr(app.state, "service", None)
    if not isinstance(service, Service):
        raise TypeError("schedules() takes an app that lgprune.http.create_app made")
    return running(service)


def create_app(
    pruner: AsyncPruner,
    token: str | None = None,
    *,
    sweep: SweepPlan | None = None,
    sweep_every: float | None = None,
    stats_keep: int | None = None,
    refresh_every: float | None = 300.0,
    allowed_hosts: Sequence[str] | None = None,
    any_ip: bool = False,
    max_body: int = MAX_BODY,
    error_text: Callable[[BaseException], str] = one_line,
) -> FastAPI:
    """The lgprune HTTP service over `pruner`.

    With `sweep` and `sweep_every` (seconds) it also sweeps on that schedule; it refreshes
    the store's figures (for /metrics and the page) every `refresh_every` seconds (None:
    never). `allowed_hosts` ("name" or "name:port") are the Host headers it answers to
    (default: localhost, 127.0.0.1 and [::1] on any port); `any_ip` also accepts any IP
    address (a wildcard bind). Give the pruner a client over a blocking pool
    (`redis.asyncio.BlockingConnectionPool`) so that requests wait for a connection.
    Run as an app of its own, its lifespan runs the schedules; mounted in another app, pass
    `schedules(app)` to the host's lifespan (Starlette runs no mounted app's lifespan).
    `error_text` words an error in one line (default: its text, any URL's password masked).
    """
    service = Service(
        pruner,
        Settings(schedule=sweep, sweep_every=sweep_every, stats_keep=stats_keep, refresh_every=refresh_every),
        error_text,
    )
    token = token or None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with running(service):
            yield

    app = FastAPI(title="lgprune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(Guard, allowed_hosts=allowed_hosts, any_ip=any_ip, max_body=max_body)
    app.state.token = token

    def guarded(*query: str) -> list[Any]:
        return [Depends(authorized), Depends(takes(*query))]

    add_error_handlers(app, service)

    def read(path: str, *dependencies: Any) -> Callable[[Any], Any]:
        """A read-only route: GET, and HEAD wherever GET is."""
        return app.api_route(path, methods=["GET", "HEAD"], dependencies=list(dependencies))

    @read("/healthz", Depends(takes()))
    async def healthz() -> Response:
        health = await service.health()
        if health.problem is not None:
            return problem(503, health.problem)
        return JSONResponse({"redis": "ok", "library": health.detail})

    @read("/metrics", Depends(takes()))
    async def metrics() -> Response:
        """The service's own counters and its last refresh: a scrape sends nothing to Redis."""
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/prune", dependencies=guarded())
    async def prune(request: Request) -> Response:
        body = await read_body(request, PruneRequest)
        try:
            result = await service.pruner.prune(body.thread_id, body.keep, dry_run=body.dry_run)
        except Exception:
            service.metrics.prune(None)
            raise
        service.metrics.prune(result)
        return JSONResponse({"thread_id": body.thread_id, **dataclasses.asdict(result)})

    @app.post("/sweep", dependencies=guarded())
    async def start_sweep(request: Request) -> Response:
        body = await read_body(request, SweepRequest)
        plan = SweepPlan(**body.model_dump())
        record = service.start_sweep(plan, "api")
        if record is None:
            return problem(409, "a sweep is running: wait for it (GET /sweeps)")
        return JSONResponse({"sweep": record.id, "dry_run": plan.dry_run}, status_code=202)

    @read("/sweeps", *guarded())
    async def sweeps() -> Response:
        return JSONResponse({"sweeps": [r.view() for r in reversed(service.sweeps.values())]})

    @read("/sweeps/{sweep_id}", *guarded())
    async def one_sweep(sweep_id: str) -> Response:
        record = service.sweeps.get(sweep_id)
        if record is None:
            return problem(404, f"no sweep {sweep_id[:40]!r} among the last {len(service.sweeps)}")
        return JSONResponse(record.view())

    @read("/stats", *guarded("keep", "top"))
    async def stats(
        keep: Annotated[int | None, Query(ge=0)] = None,
        top: Annotated[int, Query(ge=0, le=1000)] = 20,
    ) -> Response:
        found = await service.stats(service.settings.keep if keep is None else keep, top)
        return JSONResponse(dataclasses.asdict(found))

    @read("/", *guarded("keep"))
    async def status(request: Request, keep: Annotated[int | None, Query(ge=0)] = None) -> Response:
        """The page shows the last background refresh (for another keep, or before the first
        refresh, stats computed as /stats computes them, shared for STATS_TTL); opened from
        another site's page, it reads nothing."""
        keep = service.settings.keep if keep is None else keep
        cached_only = bool(request.scope.get("state", {}).get(CACHED_ONLY))
        health = service.last_health if cached_only else await service.health()
        trouble = None if health is None else health.problem
        found = service.stats_cache if keep == service.settings.keep else service.recent_stats(keep, 20)
        if trouble is None and found is None and not cached_only:  # another keep, or before the first refresh
            try:
                found = await service.stats(keep, 20)
            except (redis.RedisError, LgpruneError, OSError) as error:
                trouble = f"the store's figures could not be read: {service.error_text(error)}"
        page = render_status(
            stats=found,
            keep=keep,
            trouble=trouble,
            sweeps=[r.view() for r in reversed(service.sweeps.values())],
            next_sweep=iso(service.next_sweep),
            schedule=service.schedule_text(),
            refreshed=iso(service.refreshed_at) if found is service.stats_cache else None,
        )
        return HTMLResponse(page, headers={"content-security-policy": PAGE_CSP})

    return app


def add_error_handlers(app: FastAPI, service: Service) -> None:
    """Every 4xx and 5xx as `{"error": "<one line>"}` (see the status policy above). A refused
    input names what the request sent (`idle_ttl`); what the service's own set-up must change
    is worded by `service.error_text` (`lgprune serve` names its flags)."""

    def told(request: Request, message: str) -> str:
        """A refusal of a request that could delete says that nothing was."""
        return message if request.method in BODY_METHODS_EXEMPT else f"{message}; nothing was deleted"

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, error: Exception) -> Response:
        return problem(
            401,
            str(error) or "this endpoint needs the token",
            headers={"WWW-Authenticate": 'Basic realm="lgprune", charset="UTF-8"'},
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 401:
            return await unauthorized(request, _Unauthorized())
        return problem(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return problem(422, told(request, validation_message(error.errors())))

    @app.exception_handler(_BadQuery)
    async def unknown_query(request: Request, error: Exception) -> Response:
        return problem(422, told(request, str(error)))

    @app.exception_handler(_NotJson)
    async def not_json(_: Request, error: Exception) -> Response:
        return problem(400, str(error))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, __: Exception) -> Response:
        """The client left before its body arrived: nobody reads the answer, nothing to log."""
        return Response(status_code=400)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, error: Exception) -> Response:
        return problem(413, f"{error}; nothing was deleted")

    @app.exception_handler(InvalidArgumentError)
    async def invalid(request: Request, error: Exception) -> Response:
        return problem(422, told(request, one_line(error)))  # the request's input: its own names

    def after(request: Request, error: Exception, message: str) -> str:
        """What a failed request that could delete did: nothing, or what its earlier calls did."""
        partial = getattr(error, "partial", None)
        if request.method in BODY_METHODS_EXEMPT or partial is None or not partial.keys_deleted:
            return told(request, message)
        return f"{message}; its earlier calls deleted {partial.keys_deleted} keys, the last one nothing"

    @app.exception_handler(BadDataError)
    async def stored_data(request: Request, error: Exception) -> Response:
        return problem(409, after(request, error, service.error_text(error)))

    @app.exception_handler(LgpruneError)
    async def lgprune_error(request: Request, error: Exception) -> Response:
        return problem(503, after(request, error, service.error_text(error)))

    @app.exception_handler(redis.RedisError)
    async def redis_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, redis.RedisError)
        service.redis_failed(error)
        return problem(503, after(request, error, f"Redis: {service.error_text(error)}"))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> Response:
        return problem(500, f"unexpected {type(error).__name__}: {service.error_text(error)}")
