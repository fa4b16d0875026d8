"""`lgprune sweep --metrics-file PATH`: the sweep metrics of `lgprune serve` in the Prometheus
textfile format (node_exporter's textfile collector), so a cron sweep can be alerted on.

Counters and the last success time carry over from the file's previous contents, so a
failed run keeps the time of the last good one. The file is replaced atomically.
Needs prometheus-client (`pip install lgprune[serve]`).
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from lgprune.results import SweepResult


def previous_values(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of an earlier file, by (name, labels); empty when there is none."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def write_sweep_metrics(path: Path, result: SweepResult | None, *, started: float, error: bool) -> None:
    """Record one sweep (`result` None when it failed before a first reply) in `path`."""
    before = previous_values(path)
    registry = CollectorRegistry()
    sweeps = Counter("lgprune_sweeps", "Sweeps run", ["outcome"], registry=registry)
    for outcome in ("success", "failure"):
        sweeps.labels(outcome).inc(before.get(("lgprune_sweeps_total", (("outcome", outcome),)), 0.0))
    sweeps.labels("failure" if error else "success").inc()
    for name, field, help_text in (
        ("lgprune_checkpoints_deleted", "checkpoints_deleted", "Checkpoints deleted by sweeps"),
        ("lgprune_writes_deleted", "writes_deleted", "Writes deleted by sweeps"),
        ("lgprune_keys_deleted", "keys_deleted", "Keys deleted by sweeps"),
    ):
        counter = Counter(name, help_text, registry=registry)
        done = 0 if result is None or result.dry_run else getattr(result, field)
        counter.inc(before.get((name + "_total", ()), 0.0) + done)
    now = time.time()
    last_success = Gauge(
        "lgprune_last_sweep_success_timestamp_seconds",
        "When the last successful sweep ended",
        registry=registry,
    )
    last_success.set(
        now if not error else before.get(("lgprune_last_sweep_success_timestamp_seconds", ()), 0.0)
    )
    Gauge("lgprune_last_sweep_timestamp_seconds", "When the last sweep ended", registry=registry).set(now)
    Gauge("lgprune_last_sweep_duration_seconds", "How long the last sweep took", registry=registry).set(
        now - started
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
