"""`lgprune sweep --metrics-file PATH`: the sweep metrics of `lgprune serve` (one definition,
`lgprune.metrics`) in the Prometheus textfile format, for node_exporter's textfile collector.

Counters and the last success times carry over from the file's previous contents, so a
failed run keeps the time of the last good one, and a dry run never moves it. The file is
replaced atomically (prometheus-client's `write_to_textfile`). Needs prometheus-client
(the serve extra: `pip install '.[serve]'`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prometheus_client import disable_created_metrics, write_to_textfile

from lgprune.metrics import Metrics
from lgprune.results import SweepResult


def write_sweep_metrics(path: Path, result: SweepResult | None, *, started: float, outcome: str) -> None:
    """Record one sweep (`result` None when it failed before a first reply) in `path`."""
    # a counter carried over was not created by this run: no `_created` series that says so
    # (a process-wide switch: this runs in the command line's process, never in a service's)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics(service=False)
    with contextlib.suppress(OSError, ValueError):  # none on the first run, or not a textfile
        metrics.carry_over(path.read_text())
    metrics.sweep_result(result, started=started, outcome=outcome)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), metrics.registry)
