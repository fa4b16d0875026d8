"""Result values, and the parsing of the Lua library's name/value replies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lgprune.facts import SWEEP_FIELDS


def as_text(value: object) -> str:
    """A reply element as text, whatever decode_responses is."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def reply_pairs(reply: Any) -> dict[str, Any]:
    """A name/value reply (RESP2 flat list or RESP3 map) as a dict with text names; {} for
    none (RediSearch returns no fields for a document it cannot, such as one with a NUL)."""
    if reply is None:
        return {}
    if isinstance(reply, dict):
        return {as_text(k): v for k, v in reply.items()}
    items = list(reply)
    return {as_text(items[i]): items[i + 1] for i in range(0, len(items), 2)}


def reply_fields(reply: Sequence[object]) -> dict[str, int]:
    """Turn a flat name/value reply of counts (the library's COUNT_FIELDS, then `more` or
    `next`) into a dict of integers."""
    return {name: int(as_text(value)) for name, value in reply_pairs(reply).items()}


@dataclass(frozen=True)
class PruneResult:
    """What pruning one thread did (or, in a dry run, would do)."""

    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    keys_deleted: int = 0
    checkpoints_kept: int = 0
    delta_ancestors_kept: int = 0
    blobs_deleted: int = 0  # LangGraph.js: channel-value blobs no kept checkpoint reads (in keys_deleted)
    calls: int = 0
    dry_run: bool = False  # True: nothing was deleted, the counts say what would go

    def plus_call(self, fields: dict[str, int], *, other_threads: bool = False) -> PruneResult:
        """This result followed by one more call's reply. The kept counts are the
        newest for the same thread; with `other_threads` (lgprune_many) they add up."""
        kept, delta = fields["checkpoints_kept"], fields["delta_ancestors_kept"]
        if other_threads:
            kept, delta = self.checkpoints_kept + kept, self.delta_ancestors_kept + delta
        return PruneResult(
            checkpoints_deleted=self.checkpoints_deleted + fields["checkpoints_deleted"],
            writes_deleted=self.writes_deleted + fields["writes_deleted"],
            keys_deleted=self.keys_deleted + fields["keys_deleted"],
            checkpoints_kept=kept,
            delta_ancestors_kept=delta,
            blobs_deleted=self.blobs_deleted + fields.get("blobs_deleted", 0),
            calls=self.calls + 1,
            dry_run=self.dry_run,
        )


SWEEP_STATE = ("cursor", "kind", "since", "unfinished", "layout")  # the pass's state, from its last call
SWEEP_COUNTS = tuple(name for name in SWEEP_FIELDS if name not in SWEEP_STATE)  # summed over calls


@dataclass(frozen=True)
class ThreadFailure:
    """A thread a sweep could not prune, and why ("<CODE> <message>", the library's words).
    Nothing of it was deleted; the sweep pruned the others."""

    thread_id: str
    reason: str


@dataclass(frozen=True)
class SweepResult:
    """What a sweep over every thread did (or, in a dry run, would do)."""

    threads_visited: int = 0
    threads_pruned: int = 0
    threads_deleted: int = 0
    threads_skipped: int = 0
    threads_failed: int = 0  # threads that could not be pruned (see `failed`); the sweep went on
    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    keys_deleted: int = 0
    orphans_deleted: int = 0
    blobs_deleted: int = 0  # LangGraph.js: channel-value blobs no kept checkpoint reads (in keys_deleted)
    calls: int = 0
    elapsed: float = 0.0
    cursor: str = "0"
    dry_run: bool = False  # True: nothing was deleted, the counts say what would go
    kind: str = "full"  # "incremental": only threads with checkpoints since `since` were visited
    since: float | None = None  # an incremental pass: the checkpoint_ts it read from (watermark - margin, s)
    unfinished: bool = False  # it passed over something it could not finish: no watermark recorded
    layout: str = "python"  # whose keys it pruned: "python" (langgraph-checkpoint-redis) or "js"
    failed: tuple[ThreadFailure, ...] = ()  # the threads that could not be pruned, and why (up to 100 a call)

    def failures_text(self, most: int = 5) -> str:
        """The first `most` threads it could not prune, with their reasons, on one line."""
        shown = "; ".join(f"{f.thread_id!r}: {f.reason}" for f in self.failed[:most])
        more = self.threads_failed - min(most, len(self.failed))
        return shown + (f"; and {more} more" if more > 0 else "")

    def plus_call(self, fields: dict[str, Any], elapsed: float) -> SweepResult:
        """This result followed by one more lgprune_sweep reply (its reply_pairs). The
        cursor stays text: "00" (stopped inside the first SCAN step) is not "0" (done)."""
        counts = {name: getattr(self, name) + int(as_text(fields.get(name, b"0"))) for name in SWEEP_COUNTS}
        # an older library (a benchmark's "against" build) replies without the pass's state
        since = int(as_text(fields.get("since", b"0")))
        return SweepResult(
            **counts,
            calls=self.calls + 1,
            elapsed=elapsed,
            cursor=as_text(fields["cursor"]),
            dry_run=self.dry_run,
            kind=as_text(fields.get("kind", b"full")),
            since=since / 1000 if since else None,
            unfinished=as_text(fields.get("unfinished", b"0")) == "1",
            layout=as_text(fields.get("layout", b"python")),
            failed=self.failed
            + tuple(ThreadFailure(as_text(tid), as_text(why)) for tid, why in fields.get("failed", ())),
        )
