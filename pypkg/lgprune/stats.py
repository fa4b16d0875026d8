"""`lgprune stats`: what the checkpoint store holds, and what a sweep would free."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from lgprune.driver import Steps
from lgprune.errors import IndexMissingError, ModulesMissingError
from lgprune.facts import option
from lgprune.protocol import Options, fcall_steps
from lgprune.results import as_text, reply_pairs
from lgprune.tags import tag_param

BUCKETS = (1, 5, 10, 50, 100, 1000, 10000)  # upper bounds of the histogram's bins


@dataclass(frozen=True)
class ThreadStats:
    thread_id: str
    checkpoints: int  # its own, confirmed as the library confirms them
    bytes: int  # estimated from a sample of its own keys (0 when not sampled)
    exact: bool = True  # False: too large for one call's listing, `checkpoints` is an upper bound


@dataclass(frozen=True)
class Stats:
    """Counts, a histogram of checkpoints per thread, the biggest threads, what a sweep frees."""

    threads: int
    checkpoints: int
    writes: int
    keys: int
    histogram: dict[str, int]
    top: list[ThreadStats]
    keep: int
    sweep_checkpoints: int
    sweep_keys: int
    sweep_bytes: int  # estimated
    used_memory: int
    calls: int = 0
    notes: list[str] = field(default_factory=list)
    layout: str = "python"  # whose keys: "python" or "js" (LangGraph.js's saver)


def bucket_label(n: int) -> str:
    low = 1
    for high in BUCKETS:
        if n <= high:
            return str(high) if low == high else f"{low}-{high}"
        low = high + 1
    return f">{BUCKETS[-1]}"


ESTIMATE_THREADS = 20  # the biggest threads whose memory estimates what a sweep frees, whatever `top`
SAMPLE_PAGE = 100  # index entries read per page while sampling a thread's keys
SAMPLE_READS = 1000  # ... and at most this many per index and thread


def _average_bytes(keys: list[Any]) -> Steps[float]:
    sizes = []
    for key in keys:
        size = yield ("MEMORY", "USAGE", key, "SAMPLES", "0")
        if isinstance(size, int):
            sizes.append(size)
    return sum(sizes) / len(sizes) if sizes else 0.0


def search_docs(reply: Any) -> tuple[int, list[tuple[Any, dict[str, str]]]]:
    """Total and (key, returned fields) of an FT.SEARCH ... RETURN reply, RESP2 list or RESP3 map."""
    if isinstance(reply, dict):
        fields = {as_text(k): v for k, v in reply.items()}
        docs = []
        for result in fields["results"]:
            entry = reply_pairs(result)
            attributes = reply_pairs(entry.get("extra_attributes", {}))
            docs.append((entry["id"], {k: as_text(v) for k, v in attributes.items()}))
        return int(fields["total_results"]), docs
    if not isinstance(reply, list) or not reply:
        return 0, []
    return int(reply[0]), [
        (reply[i], {k: as_text(v) for k, v in reply_pairs(reply[i + 1]).items()})
        for i in range(1, len(reply) - 1, 2)
    ]


def search_keys(reply: Any) -> tuple[int, list[Any]]:
    """Total and keys of an FT.SEARCH ... NOCONTENT reply, RESP2 list or RESP3 map."""
    if isinstance(reply, dict):
        fields = {as_text(k): v for k, v in reply.items()}
        return int(fields["total_results"]), [reply_pairs(r)["id"] for r in fields["results"]]
    if isinstance(reply, list) and reply:
        return int(reply[0]), list(reply[1:])
    return 0, []


def _own_keys(index: str, thread_id: str, sample: int, layout: str) -> Steps[tuple[list[Any], float]]:
    """Up to `sample` keys of documents whose own thread_id is `thread_id` (the tag
    query also finds case variants and comma-joined ids), and the share of the
    tagged entries that are the thread's own."""
    own: list[Any] = []
    read = hits = 0
    while len(own) < sample and read < SAMPLE_READS:
        reply = yield (
            "FT.SEARCH",
            index,
            "@thread_id:{$t}",
            "PARAMS",
            "2",
            "t",
            tag_param(thread_id, commas=layout == "python"),
            "RETURN",
            "1",
            "thread_id",
            "LIMIT",
            str(read),
            str(SAMPLE_PAGE),
            "DIALECT",
            "2",
        )
        hits, docs = search_docs(reply)
        own += [key for key, fields in docs if fields.get("thread_id") == thread_id]
        read += len(docs)
        if not docs or read >= hits:
            break
    return own[:sample], (len(own) / read if read else 0.0) * hits


def _thread_bytes(
    indexes: tuple[str, str], layout: str, thread_id: str, checkpoints: int, sample: int
) -> Steps[int]:
    """Estimated memory of one thread: samples of its own checkpoints and writes, extrapolated."""
    keys, _ = yield from _own_keys(indexes[0], thread_id, sample, layout)
    total = (yield from _average_bytes(keys)) * checkpoints
    keys, writes = yield from _own_keys(indexes[1], thread_id, sample, layout)
    total += (yield from _average_bytes(keys)) * writes
    return int(total)


def _answer(reply: Any) -> Any:
    """A reply, or the error the server sent back for it raised."""
    if isinstance(reply, ResponseError):
        raise reply
    return reply


def _index_info(reply: Any, index: str) -> Any:
    """An FT.INFO reply; a missing index is IndexMissingError (the server started before the saver
    created it), a server without the search module ModulesMissingError."""
    if isinstance(reply, ResponseError):
        message = str(reply).lower()
        if "no such index" in message or "unknown index" in message:
            raise IndexMissingError(
                f"index {index!r} does not exist: run the saver's setup() first, or pass the "
                "prefixes the saver uses (checkpoint_prefix, checkpoint_write_prefix)"
            ) from None
        if "unknown command" in message:
            raise ModulesMissingError(
                "this server has no RediSearch module: lgprune needs Redis 8 or Redis Stack"
            ) from None
        raise reply
    return reply


def stats_steps(keep: int, *, options: Options, top: int = 20, sample: int = 20) -> Steps[Stats]:
    """Read-only: a dry-run sweep with per-thread details, index sizes and memory samples."""
    args = [str(keep), *options.arguments(), option("DRY_RUN"), option("DETAILS"), option("FULL")]
    per_thread: dict[str, tuple[int, int, int]] = {}
    inexact: set[str] = set()
    failed: dict[str, str] = {}  # threads the sweep could not read, and why
    cursor, calls, layout = "0", 0, "python"
    while True:
        reply = reply_pairs((yield from fcall_steps("lgprune_sweep", [cursor, *args])))
        calls += 1
        for entry in reply["threads"]:
            thread_id = as_text(entry[0])
            per_thread[thread_id] = (int(entry[1]), int(entry[2]), int(entry[3]))
            if len(entry) > 4 and int(entry[4]) == 0:
                inexact.add(thread_id)
        failed.update((as_text(tid), as_text(why)) for tid, why in reply.get("failed", ()))
        cursor, layout = as_text(reply["cursor"]), as_text(reply.get("layout", b"python"))
        if cursor == "0":
            break
    indexes = options.indexes(layout)
    counts = {}
    for index in indexes:
        info = reply_pairs(_index_info((yield ("FT.INFO", index)), index))
        counts[index] = int(float(as_text(info["num_docs"])))
    keys = int(_answer((yield ("DBSIZE",))))
    used = _answer((yield ("MEMORY", "STATS")))
    used_memory = int(reply_pairs(used).get("total.allocated", 0))
    histogram: dict[str, int] = {}
    for n, _, _ in per_thread.values():
        label = bucket_label(n)
        histogram[label] = histogram.get(label, 0) + 1
    ordered = [bucket_label(b) for b in BUCKETS] + [f">{BUCKETS[-1]}"]
    histogram = {label: histogram[label] for label in ordered if label in histogram}
    biggest = sorted(per_thread.items(), key=lambda item: (-item[1][0], item[0]))
    top_stats = []
    per_checkpoint = []
    for rank, (thread_id, (n, _, _)) in enumerate(biggest[: max(top, ESTIMATE_THREADS)]):
        size = yield from _thread_bytes(indexes, layout, thread_id, n, sample)
        if rank < top:
            top_stats.append(ThreadStats(thread_id, n, size, exact=thread_id not in inexact))
        if n and rank < ESTIMATE_THREADS:  # the same sample for any `top`
            per_checkpoint.append(size / n)
    doomed = sum(d for _, d, _ in per_thread.values())
    average = sum(per_checkpoint) / len(per_checkpoint) if per_checkpoint else 0.0
    return Stats(
        threads=len(per_thread),
        checkpoints=counts[indexes[0]],
        writes=counts[indexes[1]],
        keys=keys,
        histogram=histogram,
        top=top_stats,
        keep=keep,
        sweep_checkpoints=doomed,
        sweep_keys=sum(k for _, _, k in per_thread.values()),
        sweep_bytes=int(doomed * average),
        used_memory=used_memory,
        calls=calls,
        layout=layout,
        notes=(
            [
                f"{len(inexact)} threads are larger than one call lists; their checkpoint counts are "
                "upper bounds (case variants or comma-joined ids may be counted in)"
            ]
            if inexact
            else []
        )
        + [
            f"thread {tid!r} could not be read and is counted in no figure but the index's: {why}"
            for tid, why in sorted(failed.items())[:5]
        ]
        + ([f"and {len(failed) - 5} more threads could not be read"] if len(failed) > 5 else []),
    )
