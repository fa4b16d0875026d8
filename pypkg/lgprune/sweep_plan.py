"""What one sweep does, as one checked record: the command line's sweep arguments and the
service's sweep requests and schedule are the same `SweepPlan`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lgprune.durations import parse_duration, show
from lgprune.errors import InvalidArgumentError
from lgprune.protocol import FULL_EVERY_S, check_count
from lgprune.results import SweepResult

DURATIONS = ("idle_ttl", "max_age", "grace", "margin", "full_every")


@dataclass(frozen=True)
class SweepPlan:
    """The arguments of `Pruner.sweep`, durations in seconds, each checked here (a range
    that means something), so no plan holds a value a record or a page cannot show."""

    keep: int
    idle_ttl: float | None = None
    max_age: float | None = None
    orphans: bool = False
    grace: float | None = None
    dry_run: bool = False
    full: bool = False  # visit every thread, not only those changed since the last pass
    margin: float | None = None  # how far before the watermark an incremental pass reads
    full_every: float | None = FULL_EVERY_S  # None: never forced

    def __post_init__(self) -> None:
        check_count("keep", self.keep)
        for name in DURATIONS:
            value = getattr(self, name)
            if value is not None:
                parse_duration(value, name=name, least=0.0 if name in ("grace", "margin") else 1.0)
        if self.grace is not None and not self.orphans:
            raise InvalidArgumentError("grace applies to orphans only")

    def arguments(self, on_progress: Callable[[SweepResult], object] | None = None) -> dict[str, Any]:
        """Keyword arguments of `Pruner.sweep` / `AsyncPruner.sweep` (after `keep`)."""
        return {
            "dry_run": self.dry_run,
            "max_age": self.max_age,
            "idle_ttl": self.idle_ttl,
            "orphans": self.orphans,
            "grace": self.grace,
            "full": self.full,
            "margin": self.margin,
            "full_every": self.full_every,
            "on_progress": on_progress,
        }

    def view(self) -> dict[str, Any]:
        """Durations as text ('30d'): JSON-safe whatever they are."""
        durations = {
            name: None if getattr(self, name) is None else show(getattr(self, name)) for name in DURATIONS
        }
        return {
            "keep": self.keep,
            **durations,
            "orphans": self.orphans,
            "dry_run": self.dry_run,
            "full": self.full,
        }

    def describe(self) -> str:
        words = [f"keep {self.keep}"]
        for name in ("idle_ttl", "max_age", "grace"):
            if getattr(self, name) is not None:
                words.append(f"{name.replace('_', '-')} {show(getattr(self, name))}")
        if self.orphans:
            words.append("orphans")
        if self.full:
            words.append("full")
        if self.dry_run:
            words.append("dry run")
        return ", ".join(words)
