"""Result values, and the parsing of the Lua library's name/value replies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def as_text(value: object) -> str:
    """A reply element as text, whatever decode_responses is."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def reply_fields(reply: Sequence[object]) -> dict[str, int]:
    """Turn a flat name/value reply into a dict of integer counts."""
    items = list(reply)
    return {as_text(items[i]): int(as_text(items[i + 1])) for i in range(0, len(items), 2)}


@dataclass(frozen=True)
class PruneResult:
    """What pruning one thread did (or, in a dry run, would do)."""

    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    keys_deleted: int = 0
    checkpoints_kept: int = 0
    delta_ancestors_kept: int = 0
    calls: int = 0

    def plus_call(self, fields: dict[str, int]) -> PruneResult:
        """This result followed by one more call's reply (kept counts are the newest)."""
        return PruneResult(
            checkpoints_deleted=self.checkpoints_deleted + fields["checkpoints_deleted"],
            writes_deleted=self.writes_deleted + fields["writes_deleted"],
            keys_deleted=self.keys_deleted + fields["keys_deleted"],
            checkpoints_kept=fields["checkpoints_kept"],
            delta_ancestors_kept=fields["delta_ancestors_kept"],
            calls=self.calls + 1,
        )


@dataclass(frozen=True)
class SweepResult:
    """What a sweep over every thread did (or, in a dry run, would do)."""

    threads_visited: int = 0
    threads_pruned: int = 0
    threads_deleted: int = 0
    threads_skipped: int = 0
    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    keys_deleted: int = 0
    orphans_deleted: int = 0
    calls: int = 0
    elapsed: float = 0.0
    cursor: str = "0"

    def plus_call(self, fields: dict[str, int], elapsed: float) -> SweepResult:
        """This result followed by one more lgprune_sweep reply."""
        counts = {
            name: getattr(self, name) + fields[name]
            for name in (
                "threads_visited",
                "threads_pruned",
                "threads_deleted",
                "threads_skipped",
                "checkpoints_deleted",
                "writes_deleted",
                "keys_deleted",
                "orphans_deleted",
            )
        }
        return SweepResult(**counts, calls=self.calls + 1, elapsed=elapsed, cursor=str(fields["cursor"]))
