"""The Prometheus metrics of lgprune, defined once: `lgprune serve` serves them at /metrics,
`lgprune sweep --metrics-file` writes the sweep families to a textfile for node_exporter.

The numbers are plain values held here; `collect` renders them (prometheus-client's
collector protocol), so a scrape costs no work in Redis, and a textfile run can carry its
counters over from the previous file. Needs prometheus-client (`pip install 'lgprune[serve]'`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from lgprune.results import PruneResult, SweepResult

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# A dry run deletes nothing: it is counted as one, never as a success.
SWEEP_OUTCOMES = ("success", "failure", "stopped", "dry_run")
PRUNE_OUTCOMES = ("success", "failure", "dry_run")
SWEEP_KINDS = ("full", "incremental")  # a full pass visits every thread; see SweepResult.kind
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
DELETED = ("checkpoints", "writes", "keys")


@dataclass(eq=False)  # a collector: registered by identity
class Metrics:
    """Every lgprune metric. `service` adds the families only a long-lived service has
    (prunes over HTTP, Redis up, the store as last refreshed)."""

    service: bool = True
    deleted: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DELETED, 0.0))
    sweeps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SWEEP_OUTCOMES, 0.0))
    prunes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PRUNE_OUTCOMES, 0.0))
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    passes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SWEEP_KINDS, 0.0))
    last_success: float | None = None  # when the last successful (not dry) sweep ended
    last_full: float | None = None  # ... and the last successful full one
    last_sweep: float | None = None  # when the last sweep of any outcome ended
    last_duration: float | None = None
    redis_up: float | None = None  # 1/0 from the last check, None before the first
    store: dict[str, float] | None = None  # threads, checkpoints, keys: the last refresh
    store_refreshed: float | None = None  # when that refresh ended

    # --- recording ----------------------------------------------------------------

    def count_deleted(self, checkpoints: int, writes: int, keys: int) -> None:
        for name, n in zip(DELETED, (checkpoints, writes, keys), strict=True):
            self.deleted[name] += n

    def prune(self, result: PruneResult | None) -> None:
        """One prune: None when it failed."""
        if result is None:
            self.prunes["failure"] += 1
        elif result.dry_run:
            self.prunes["dry_run"] += 1
        else:
            self.prunes["success"] += 1
            self.count_deleted(result.checkpoints_deleted, result.writes_deleted, result.keys_deleted)

    def sweep(self, outcome: str, *, started: float, finished: float, kind: str = "full") -> None:
        """One sweep (a `kind` of pass) ended with `outcome` (what it deleted was counted as it went)."""
        if outcome not in SWEEP_OUTCOMES:
            raise ValueError(f"unknown sweep outcome {outcome!r}")
        self.sweeps[outcome] += 1
        self.last_sweep, self.last_duration = finished, max(0.0, finished - started)
        if outcome in ("success", "failure"):
            index = next((i for i, b in enumerate(DURATION_BUCKETS) if self.last_duration <= b), -1)
            self.buckets[index] += 1
            self.duration_sum += self.last_duration
        if outcome == "success":
            self.last_success = finished
            self.passes[kind] += 1
            if kind == "full":
                self.last_full = finished

    def sweep_result(self, result: SweepResult | None, *, started: float, outcome: str) -> None:
        """A whole sweep at once (the command line): its deletes, then its outcome."""
        if result is not None and not result.dry_run:
            self.count_deleted(result.checkpoints_deleted, result.writes_deleted, result.keys_deleted)
        kind = "full" if result is None else result.kind
        self.sweep(outcome, started=started, finished=time.time(), kind=kind)

    def refreshed(self, threads: int, checkpoints: int, keys: int) -> None:
        self.store = {"threads": threads, "checkpoints": checkpoints, "keys": keys}
        self.store_refreshed = time.time()

    # --- rendering --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        for name in DELETED:
            yield CounterMetricFamily(
                f"lgprune_{name}_deleted",
                f"{name.capitalize()} deleted (by this process, or by the cron runs of this file)",
                value=self.deleted[name],
            )
        sweeps = CounterMetricFamily(
            "lgprune_sweeps", "Sweeps run, by outcome (dry_run: deleted nothing)", labels=["outcome"]
        )
        for outcome, n in self.sweeps.items():
            sweeps.add_metric([outcome], n)
        yield sweeps
        passes = CounterMetricFamily(
            "lgprune_sweep_passes",
            "Successful sweeps by kind: full (every thread) or incremental (threads changed since)",
            labels=["kind"],
        )
        for kind, n in self.passes.items():
            passes.add_metric([kind], n)
        yield passes
        cumulative, buckets = 0.0, []
        for bound, n in zip((*map(str, map(float, DURATION_BUCKETS)), "+Inf"), self.buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "lgprune_sweep_duration_seconds",
            "How long sweeps took (success and failure; not dry runs)",
            buckets=buckets,
            sum_value=self.duration_sum,
        )
        for name, value, help_text in (
            (
                "lgprune_last_sweep_success_timestamp_seconds",
                self.last_success,
                "When the last successful sweep ended (dry runs never move it)",
            ),
            (
                "lgprune_last_full_sweep_success_timestamp_seconds",
                self.last_full,
                "When the last successful full sweep ended (the backstop for incremental ones)",
            ),
            ("lgprune_last_sweep_timestamp_seconds", self.last_sweep, "When the last sweep ended"),
            ("lgprune_last_sweep_duration_seconds", self.last_duration, "How long the last sweep took"),
        ):
            yield GaugeMetricFamily(name, help_text, value=value or 0.0)
        if not self.service:
            return
        prunes = CounterMetricFamily(
            "lgprune_prunes", "POST /prune calls, by outcome (dry_run: deleted nothing)", labels=["outcome"]
        )
        for outcome, n in self.prunes.items():
            prunes.add_metric([outcome], n)
        yield prunes
        yield GaugeMetricFamily(
            "lgprune_redis_up", "1 when Redis answered the last check", value=self.redis_up or 0.0
        )
        for name in ("threads", "checkpoints", "keys"):
            value = math.nan if self.store is None else self.store[name]
            yield GaugeMetricFamily(
                f"lgprune_store_{name}", f"{name.capitalize()} in the store at the last refresh", value=value
            )
        yield GaugeMetricFamily(
            "lgprune_store_refresh_timestamp_seconds",
            "When the store figures were last refreshed (0: never)",
            value=self.store_refreshed or 0.0,
        )

    def text(self) -> bytes:
        """The Prometheus text format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)

    # --- a textfile's previous run --------------------------------------------------

    def restore(self, text: str) -> None:
        """Carry counters, the histogram and the last success over from an earlier file."""
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        for name in DELETED:
            self.deleted[name] = values.get((f"lgprune_{name}_deleted_total", ()), 0.0)
        for outcome in SWEEP_OUTCOMES:
            self.sweeps[outcome] = values.get(("lgprune_sweeps_total", (("outcome", outcome),)), 0.0)
        for kind in SWEEP_KINDS:
            self.passes[kind] = values.get(("lgprune_sweep_passes_total", (("kind", kind),)), 0.0)
        self.last_full = values.get(("lgprune_last_full_sweep_success_timestamp_seconds", ())) or None
        previous = 0.0
        for i, bound in enumerate((*map(str, map(float, DURATION_BUCKETS)), "+Inf")):
            cumulative = values.get(("lgprune_sweep_duration_seconds_bucket", (("le", bound),)), previous)
            self.buckets[i], previous = cumulative - previous, cumulative
        self.duration_sum = values.get(("lgprune_sweep_duration_seconds_sum", ()), 0.0)
        self.last_success = values.get(("lgprune_last_sweep_success_timestamp_seconds", ())) or None
