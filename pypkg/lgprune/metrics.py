"""The Prometheus metrics of lgprune, defined once: `lgprune serve` serves them at /metrics,
`lgprune sweep --metrics-file` writes the sweep families to a textfile for node_exporter.

prometheus-client's own Counter, Gauge and Histogram, in a registry of each `Metrics`
(not the process-wide one, so an app that mounts the service keeps its own). A scrape
renders what they hold and costs no work in Redis; a textfile run carries its counters
over from the previous file. Needs prometheus-client (the serve extra: `pip install '.[serve]'`).
"""

from __future__ import annotations

import math
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from lgprune.results import PruneResult, SweepResult

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# A dry run deletes nothing: it is counted as one, never as a success.
SWEEP_OUTCOMES = ("success", "failure", "stopped", "dry_run")
PRUNE_OUTCOMES = ("success", "failure", "dry_run")
SWEEP_KINDS = ("full", "incremental")  # a full pass visits every thread; see SweepResult.kind
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
DELETED = ("checkpoints", "writes", "keys")
STORE = ("threads", "checkpoints", "keys")


class Metrics:
    """Every lgprune metric. `service` adds the families only a long-lived service has
    (prunes over HTTP, the duration histogram, Redis up, the store ready, the store as last
    refreshed); a textfile, one cron run per file, has the last sweep's duration instead."""

    def __init__(self, *, service: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deleted = {
            name: Counter(
                f"lgprune_{name}_deleted",
                f"{name.capitalize()} deleted (by this process, or by the cron runs of this file)",
                registry=r,
            )
            for name in DELETED
        }
        self.sweeps = Counter(
            "lgprune_sweeps", "Sweeps run, by outcome (dry_run: deleted nothing)", ["outcome"], registry=r
        )
        self.passes = Counter(
            "lgprune_sweep_passes",
            "Successful sweeps by kind: full (every thread) or incremental (threads changed since)",
            ["kind"],
            registry=r,
        )
        for outcome in SWEEP_OUTCOMES:
            self.sweeps.labels(outcome)
        for kind in SWEEP_KINDS:
            self.passes.labels(kind)
        self.last_success = Gauge(
            "lgprune_last_sweep_success_timestamp_seconds",
            "When the last successful sweep ended (dry runs never move it)",
            registry=r,
        )
        self.last_full = Gauge(
            "lgprune_last_full_sweep_success_timestamp_seconds",
            "When the last successful full sweep ended (the backstop for incremental ones)",
            registry=r,
        )
        self.last_sweep = Gauge(
            "lgprune_last_sweep_timestamp_seconds", "When the last sweep ended", registry=r
        )
        self.last_duration = Gauge(
            "lgprune_last_sweep_duration_seconds", "How long the last sweep took", registry=r
        )
        self.last_failed = Gauge(
            "lgprune_last_sweep_threads_failed",
            "Threads the last sweep could not prune and left as they are (named in its log line)",
            registry=r,
        )
        self.service = service
        if not service:
            return
        self.duration = Histogram(
            "lgprune_sweep_duration_seconds",
            "How long sweeps took (success and failure; not dry runs)",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.prunes = Counter(
            "lgprune_prunes",
            "POST /prune calls, by outcome (dry_run: deleted nothing)",
            ["outcome"],
            registry=r,
        )
        for outcome in PRUNE_OUTCOMES:
            self.prunes.labels(outcome)
        self.redis_up = Gauge("lgprune_redis_up", "1 when Redis answered PING at the last check", registry=r)
        self.store_ready = Gauge(
            "lgprune_store_ready",
            "1 when the store could be pruned at the last check (modules, the saver's index, the library)",
            registry=r,
        )
        self.store = {
            name: Gauge(
                f"lgprune_store_{name}", f"{name.capitalize()} in the store at the last refresh", registry=r
            )
            for name in STORE
        }
        for gauge in self.store.values():
            gauge.set(math.nan)  # not known before the first refresh
        self.store_refreshed = Gauge(
            "lgprune_store_refresh_timestamp_seconds",
            "When the store figures were last refreshed (0: never)",
            registry=r,
        )

    # --- recording ----------------------------------------------------------------

    def count_deleted(self, checkpoints: int, writes: int, keys: int) -> None:
        for name, n in zip(DELETED, (checkpoints, writes, keys), strict=True):
            self.deleted[name].inc(n)

    def prune(self, result: PruneResult | None) -> None:
        """One prune: None when it failed."""
        if result is None:
            self.prunes.labels("failure").inc()
        elif result.dry_run:
            self.prunes.labels("dry_run").inc()
        else:
            self.prunes.labels("success").inc()
            self.count_deleted(result.checkpoints_deleted, result.writes_deleted, result.keys_deleted)

    def sweep(
        self, outcome: str, *, started: float, finished: float, kind: str = "full", threads_failed: int = 0
    ) -> None:
        """One sweep (a `kind` of pass) ended with `outcome` (what it deleted was counted as it
        went), leaving `threads_failed` threads it could not prune."""
        if outcome not in SWEEP_OUTCOMES:
            raise ValueError(f"unknown sweep outcome {outcome!r}")
        took = max(0.0, finished - started)
        self.last_failed.set(threads_failed)
        self.sweeps.labels(outcome).inc()
        self.last_sweep.set(finished)
        self.last_duration.set(took)
        if self.service and outcome in ("success", "failure"):
            self.duration.observe(took)
        if outcome == "success":
            self.last_success.set(finished)
            self.passes.labels(kind).inc()
            if kind == "full":
                self.last_full.set(finished)

    def sweep_result(self, result: SweepResult | None, *, started: float, outcome: str) -> None:
        """A whole sweep at once (the command line): its deletes, then its outcome."""
        if result is not None and not result.dry_run:
            self.count_deleted(result.checkpoints_deleted, result.writes_deleted, result.keys_deleted)
        kind = "full" if result is None else result.kind
        failed = 0 if result is None else result.threads_failed
        self.sweep(outcome, started=started, finished=time.time(), kind=kind, threads_failed=failed)

    def refreshed(self, threads: int, checkpoints: int, keys: int) -> None:
        for name, n in zip(STORE, (threads, checkpoints, keys), strict=True):
            self.store[name].set(n)
        self.store_refreshed.set_to_current_time()

    def text(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)

    # --- a textfile's previous run --------------------------------------------------

    def carry_over(self, text: str) -> None:
        """Continue an earlier textfile: its counters, and when the last successful (and
        full) sweep ended, so that a failed run keeps the time of the last good one."""
        previous = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

        def value(name: str, *labels: tuple[str, str]) -> float:
            return max(0.0, previous.get((name, labels), 0.0))  # max: NaN and negatives count as none

        for name, counter in self.deleted.items():
            counter.inc(value(f"lgprune_{name}_deleted_total"))
        for outcome in SWEEP_OUTCOMES:
            self.sweeps.labels(outcome).inc(value("lgprune_sweeps_total", ("outcome", outcome)))
        for kind in SWEEP_KINDS:
            self.passes.labels(kind).inc(value("lgprune_sweep_passes_total", ("kind", kind)))
        for gauge, name in (
            (self.last_success, "lgprune_last_sweep_success_timestamp_seconds"),
            (self.last_full, "lgprune_last_full_sweep_success_timestamp_seconds"),
        ):
            gauge.set(value(name))
