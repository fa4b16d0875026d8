"""`lgprune sweep` (once, or `--every` on the one scheduler) and `lgprune stats`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from lgprune.cli.common import (
    AsJson,
    Budget,
    CheckpointPrefix,
    DryRun,
    Full,
    FullEvery,
    Grace,
    IdleTtl,
    Keep,
    Layout,
    Margin,
    MaxAge,
    Orphans,
    Url,
    WritePrefix,
    cli_message,
    duration,
    errors,
    explained,
    fail,
    plural,
    pruner,
    wrong_layout,
)
from lgprune.durations import elapsed
from lgprune.errors import InvalidArgumentError, LgpruneError
from lgprune.protocol import FULL_EVERY_S
from lgprune.pruner import Pruner
from lgprune.results import SweepResult
from lgprune.schedule import every as run_every
from lgprune.sweep_plan import SweepPlan

Every = Annotated[
    float | None,
    duration("--every", "Sweep again this long after each sweep ends (e.g. 1h), until SIGTERM or SIGINT."),
]


class _Stop(Exception):
    """Raised from a progress callback once SIGTERM or SIGINT arrived."""


def summary(result: SweepResult) -> str:
    kind = "full"
    if result.kind == "incremental" and result.since is not None:
        kind = f"incremental since {datetime.fromtimestamp(result.since, timezone.utc):%Y-%m-%d %H:%M:%S}Z"
    idle = plural(result.threads_deleted, "idle thread")
    threads = f"{plural(result.threads_visited, 'thread visit')}, " + (
        f"would prune {result.threads_pruned}, would delete {idle}"
        if result.dry_run
        else f"{result.threads_pruned} pruned, {idle} deleted"
    )
    return (
        f"sweep ({kind}){' (dry run: nothing was deleted)' if result.dry_run else ''}: {threads}; "
        f"{'would delete' if result.dry_run else 'deleted'} "
        f"{plural(result.checkpoints_deleted, 'checkpoint')}, {plural(result.writes_deleted, 'write')}, "
        + (
            plural(result.blobs_deleted, "blob")
            if result.layout == "js"
            else plural(result.orphans_deleted, "orphan")
        )
        + f" ({plural(result.keys_deleted, 'key')}) "
        f"in {plural(result.calls, 'call')}, {elapsed(result.elapsed)}"
        + (
            "; unfinished: a thread or a too dense moment was passed over, the watermark stays"
            if result.unfinished
            else ""
        )
        + (
            f"; could not prune {plural(result.threads_failed, 'thread')}, left as stored: "
            f"{result.failures_text()}"
            if result.threads_failed
            else ""
        )
    )


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class SweepRun:
    """One `lgprune sweep` invocation: what to sweep and how to report each round."""

    pruner: Pruner
    plan: SweepPlan
    as_json: bool
    every: float | None
    record: Callable[..., None] | None
    metrics_file: Path | None
    stopping: threading.Event
    url: str | None  # --url and --layout as given (None: not given), for what errors say
    layout: str | None

    def round(self) -> bool:
        """One sweep and its line; False once a signal stopped it (or it failed, once)."""
        started = time.time()
        try:
            result = self.sweep_once()
        except _Stop:
            typer.echo("lgprune: stopped by signal after the current call", err=True)
            return False
        except (LgpruneError, redis.RedisError, OSError) as error:
            self.write_metrics(None, started, "failure")
            if self.every is None:
                fail(explained(error, self.url), usage=wrong_layout(error, self.layout))
            message = cli_message(explained(error, self.url))
            typer.echo(f"lgprune: {now()} {message} (retrying in {self.every:g} s)", err=True)
            return True
        self.write_metrics(result, started, "dry_run" if result.dry_run else "success")
        if self.as_json:
            stamp = {"time": now()} if self.every is not None else {}
            typer.echo(json.dumps({**stamp, **dataclasses.asdict(result)}))
        else:
            typer.echo(f"{now()} {summary(result)}" if self.every is not None else summary(result))
        return True

    def write_metrics(self, result: SweepResult | None, started: float, outcome: str) -> None:
        if self.record is not None and self.metrics_file is not None:
            self.record(self.metrics_file, result, started=started, outcome=outcome)

    def sweep_once(self) -> SweepResult:
        """One sweep, with a progress line on a terminal: a pulse and counts, no percentage (a
        pass reads the index by checkpoint_ts, so it knows how far it is in time, not in
        threads: most threads may lie in its last minutes)."""
        show = sys.stderr.isatty() and not self.as_json
        columns = (
            TextColumn("sweep"),
            BarColumn(),  # a pulse: total None until the pass is done
            TextColumn(
                "{task.fields[threads]} threads, {task.fields[deleted]} deleted, {task.fields[rate]}/s"
            ),
        )
        with Progress(*columns, disable=not show, transient=False) as progress:
            task = progress.add_task("sweep", total=None, threads=0, deleted=0, rate=0)

            def on_progress(result: SweepResult) -> None:
                done = result.cursor == "0"
                rate = int(result.keys_deleted / result.elapsed) if result.elapsed else 0
                progress.update(
                    task,
                    total=1.0 if done else None,
                    completed=1.0 if done else 0.0,
                    threads=result.threads_visited,
                    deleted=result.keys_deleted,
                    rate=rate,
                )
                if self.stopping.is_set():
                    raise _Stop

            return self.pruner.sweep(self.plan.keep, **self.plan.arguments(on_progress))

    async def rounds(self, period: float) -> None:
        """Every `period` after each round ends, on the scheduler `lgprune serve` uses."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            self.stopping.set()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)

        async def job() -> None:
            if not await asyncio.to_thread(self.round):
                stop.set()

        await run_every(period, job, stop)


def sweep(
    keep: Keep,
    url: Url = None,
    idle_ttl: IdleTtl = None,
    max_age: MaxAge = None,
    dry_run: DryRun = False,
    orphans: Orphans = False,
    grace: Grace = None,
    full: Full = False,
    margin: Margin = None,
    full_every: FullEvery = FULL_EVERY_S,
    budget: Budget = None,
    as_json: AsJson = False,
    every: Every = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="After each sweep, write its metrics here in the Prometheus textfile format "
            "(node_exporter), atomically. Needs the serve extra (`pip install '.[serve]'` in a "
            "checkout of lgprune).",
            show_default=False,
        ),
    ] = None,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    layout: Layout = None,
) -> None:
    """Prune every thread in bounded server calls. --idle-ttl 30d deletes threads idle that long;
    --max-age 7d drops checkpoints older than that but keeps the newest --keep; --every 1h repeats
    until SIGTERM/SIGINT, finishing the current call first (each line then starts with the time)."""
    if grace is not None and not orphans:
        fail(InvalidArgumentError("--grace applies to --orphans only"))
    with errors(url, layout):
        plan = SweepPlan(keep, idle_ttl, max_age, orphans, grace, dry_run, full, margin, full_every)
        run = SweepRun(
            pruner(url, checkpoint_prefix, write_prefix, budget, layout),
            plan,
            as_json,
            every,
            None,
            metrics_file,
            threading.Event(),
            url,
            layout,
        )
    if metrics_file is not None:
        try:
            from lgprune.textfile import write_sweep_metrics

            run.record = write_sweep_metrics
        except ImportError:
            fail(
                RuntimeError(
                    "--metrics-file needs prometheus-client: pip install '.[serve]' in a checkout of lgprune"
                )
            )
    if every is None:
        run.round()
    else:
        asyncio.run(run.rounds(every))


def stats(
    url: Url = None,
    keep: Annotated[
        int, typer.Option("--keep", min=0, help="What would a sweep with this --keep free?")
    ] = 10,
    top: Annotated[int, typer.Option("--top", min=0, help="How many of the biggest threads to list.")] = 20,
    as_json: AsJson = False,
    checkpoint_prefix: CheckpointPrefix = "checkpoint",
    write_prefix: WritePrefix = "checkpoint_write",
    layout: Layout = None,
) -> None:
    """Threads, checkpoints, writes and keys; checkpoints per thread; the biggest threads; what a
    sweep with --keep would free (read-only). The totals do not depend on --top."""
    with errors(url, layout):
        result = pruner(url, checkpoint_prefix, write_prefix, None, layout).stats(keep, top=top)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result)))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"{result.threads} threads, {result.checkpoints} checkpoints, {result.writes} writes, "
        f"{result.keys} keys, {result.used_memory / 2**20:.1f} MiB allocated"
        + (" (LangGraph.js's saver: --layout js)" if result.layout == "js" else "")
    )
    histogram = Table("checkpoints per thread", "threads", title="Histogram")
    for label, count in result.histogram.items():
        histogram.add_row(label, str(count))
    console.print(histogram)
    biggest = Table("thread", "checkpoints", "memory (est.)", title=f"Biggest {len(result.top)} threads")
    for thread in result.top:
        shown = f"{'<= ' if not thread.exact else ''}{thread.checkpoints}"
        biggest.add_row(escape(repr(thread.thread_id)), shown, f"{thread.bytes / 2**20:.2f} MiB")
    console.print(biggest)
    for note in result.notes:
        console.print(f"note: {escape(note)}")
    console.print(
        f"lgprune sweep --keep {result.keep} would delete {result.sweep_checkpoints} checkpoints "
        f"({result.sweep_keys} keys, about {result.sweep_bytes / 2**20:.1f} MiB, "
        f"{result.sweep_bytes} bytes)"
    )
