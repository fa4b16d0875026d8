"""The `lgprune` command line: exit 0 on success, 2 on a usage error, 1 on a Redis error."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import threading
from typing import Annotated, NoReturn

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.pruner import Pruner
from lgprune.results import SweepResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Prune LangGraph checkpoints stored in Redis, inside Redis.",
)

DEFAULT_URL = "redis://localhost:6379"

Url = Annotated[
    str | None,
    typer.Option(
        "--url", help="Redis URL (default: $REDIS_URL, then redis://localhost:6379).", show_default=False
    ),
]
CheckpointPrefix = Annotated[str, typer.Option(help="The saver's checkpoint_prefix.")]
WritePrefix = Annotated[str, typer.Option(help="The saver's checkpoint_write_prefix.")]
Budget = Annotated[int | None, typer.Option(min=1, help="Keys deleted per server call (default 2000).")]


def _pruner(url: str | None, checkpoint_prefix: str, write_prefix: str, budget: int | None) -> Pruner:
    client = redis.Redis.from_url(url or os.environ.get("REDIS_URL") or DEFAULT_URL)
    return Pruner(
        client, checkpoint_prefix=checkpoint_prefix, checkpoint_write_prefix=write_prefix, budget=budget
    )


def _fail(error: Exception) -> NoReturn:
    """One clear line on stderr; exit 2 for bad input, 1 for anything from Redis."""
    typer.echo(f"lgprune: {error}", err=True)
    raise typer.Exit(2 if isinstance(error, InvalidArgumentError) else 1)


@app.command()
def prune(
    thread_id: Annotated[str, typer.Argument(help="The thread id, exactly (case-sensitive).")],
    keep: Annotated[int, typer.Option("--keep", min=0, help="Checkpoints to keep per namespace.")],
    url: Url = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    budget: Budget = None,
) -> None:
    """Keep the newest KEEP checkpoints per namespace of one thread; delete the rest."""
    try:
        result = _pruner(url, checkpoint_prefix, write_prefix, budget).prune(thread_id, keep, dry_run=dry_run)
    except (LgpruneError, redis.RedisError) as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps({"thread_id": thread_id, "dry_run": dry_run, **dataclasses.asdict(result)}))
    else:
        verb = "would delete" if dry_run else "deleted"
        typer.echo(
            f"{thread_id}: {verb} {result.checkpoints_deleted} checkpoints, "
            f"{result.writes_deleted} writes ({result.keys_deleted} keys); kept "
            f"{result.checkpoints_kept} checkpoints ({result.delta_ancestors_kept} for "
            f"DeltaChannel history) in {result.calls} calls"
        )


def parse_duration(text: str) -> float:
    """Seconds in '30d', '12h', '90m', '45s', '2w' or a plain number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m or 45s")
    return float(match.group(1)) * units[match.group(2) or "s"]


DurationOption = Annotated[
    float | None, typer.Option(parser=parse_duration, metavar="DURATION", show_default=False)
]


def scan_fraction(cursor: str, keys: int) -> float:
    """How far a SCAN cursor is through a keyspace of `keys` keys (Redis walks its
    hash table in reverse-binary order of the bucket index)."""
    bits = max(2, (max(keys, 1) - 1).bit_length())
    index = int(cursor) & ((1 << bits) - 1)
    return int(f"{index:0{bits}b}"[::-1], 2) / (1 << bits)


class _Stop(Exception):
    """Raised from a progress callback once SIGTERM or SIGINT arrived."""


def _summary(result: SweepResult, dry_run: bool) -> str:
    verb = "would delete" if dry_run else "deleted"
    return (
        f"sweep: {result.threads_visited} thread visits, {result.threads_pruned} pruned, "
        f"{result.threads_deleted} idle threads deleted; {verb} {result.checkpoints_deleted} checkpoints, "
        f"{result.writes_deleted} writes, {result.orphans_deleted} orphans ({result.keys_deleted} keys) "
        f"in {result.calls} calls, {result.elapsed:.1f} s"
    )


@app.command()
def sweep(
    keep: Annotated[int, typer.Option("--keep", min=0, help="Checkpoints to keep per namespace.")],
    url: Url = None,
    idle_ttl: DurationOption = None,
    max_age: DurationOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    orphans: Annotated[
        bool, typer.Option("--orphans", help="Also delete orphaned writes, registries, pointers.")
    ] = False,
    budget: Budget = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    every: DurationOption = None,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
) -> None:
    """Prune every thread in bounded server calls. --idle-ttl 30d deletes threads idle that long;
    --max-age 7d drops checkpoints older than that but keeps the newest --keep; --every 1h repeats
    until SIGTERM/SIGINT, finishing the current call first."""
    pruner = _pruner(url, checkpoint_prefix, write_prefix, budget)
    stopping = threading.Event()
    if every is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
    while True:
        try:
            result = _one_sweep(pruner, keep, dry_run, orphans, idle_ttl, max_age, as_json, stopping)
        except _Stop:
            typer.echo("lgprune: stopped by signal after the current call", err=True)
            return
        except (LgpruneError, redis.RedisError) as error:
            if every is None:
                _fail(error)
            typer.echo(f"lgprune: {error} (retrying in {every:g} s)", err=True)
            result = None
        if result is not None:
            typer.echo(json.dumps(dataclasses.asdict(result)) if as_json else _summary(result, dry_run))
        if every is None or stopping.wait(every):
            return


def _one_sweep(
    pruner: Pruner,
    keep: int,
    dry_run: bool,
    orphans: bool,
    idle_ttl: float | None,
    max_age: float | None,
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
            on_progress=on_progress,
        )


@app.command()
def stats(
    url: Url = None,
    keep: Annotated[
        int, typer.Option("--keep", min=0, help="What would a sweep with this --keep free?")
    ] = 10,
    top: Annotated[int, typer.Option("--top", min=0, help="How many of the biggest threads to list.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
) -> None:
    """Threads, checkpoints, writes and keys; checkpoints per thread; the biggest threads; what a
    sweep with --keep would free (read-only)."""
    try:
        result = _pruner(url, checkpoint_prefix, write_prefix, None).stats(keep, top=top)
    except (LgpruneError, redis.RedisError) as error:
        _fail(error)
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
    console.print(
        f"lgprune sweep --keep {keep} would delete {result.sweep_checkpoints} checkpoints "
        f"({result.sweep_keys} keys, about {result.sweep_bytes / 2**20:.1f} MiB)"
    )


@app.command()
def install(
    url: Url = None, force: Annotated[bool, typer.Option(help="Load even if present.")] = False
) -> None:
    """Load the lgprune function library into the server (done on first use anyway)."""
    try:
        version = _pruner(url, "checkpoint", "checkpoint_write", None).install(force=force)
    except (LgpruneError, redis.RedisError) as error:
        _fail(error)
    typer.echo(f"lgprune library {version} is loaded")


def main() -> None:
    """Entry point of the `lgprune` script."""
    app(prog_name="lgprune")


if __name__ == "__main__":
    main()
