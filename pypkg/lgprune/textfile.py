"""`lgprune sweep --metrics-file PATH`: the sweep metrics of `lgprune serve` (one definition,
`lgprune.metrics`) in the Prometheus textfile format, for node_exporter's textfile collector.

Counters, the duration histogram and the last success time carry over from the file's
previous contents, so a failed run keeps the time of the last good one, and a dry run
never moves it. The file is replaced atomically. Needs prometheus-client
(`pip install 'lgprune[serve]'`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from lgprune.metrics import Metrics
from lgprune.results import SweepResult


def write_sweep_metrics(path: Path, result: SweepResult | None, *, started: float, outcome: str) -> None:
    """Record one sweep (`result` None when it failed before a first reply) in `path`."""
    metrics = Metrics(service=False)
    with contextlib.suppress(OSError):  # none on the first run
        metrics.restore(path.read_text())
    metrics.sweep_result(result, started=started, outcome=outcome)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(metrics.text())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
