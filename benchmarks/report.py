"""Markdown tables and matplotlib plots of benchmark timings."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from benchmarks.core import Timing
from benchmarks.hook import HookRun
from benchmarks.shapes import TARGET_MS, Shape
from benchmarks.sweep import SweepRun


def write_core(out: Path, timings: list[Timing], *, where: str, runs: int) -> None:
    """core.md and core.png: one 1,000-checkpoint thread pruned to 10."""
    by_name = {t.name: t for t in timings}
    floor = by_name["floor: one UNLINK script, keys known"].median
    saver = by_name["RedisSaver.prune"].median
    lines = [
        "# Pruning one thread: 1,000 checkpoints (2 writes each) to the newest 10",
        "",
        f"Server: {where}. Each checkpoint holds 4 messages of 400 characters, each write one;",
        "every run rebuilds the same thread with RedisSaver.put/put_writes and checks afterwards",
        "that exactly the 3,960 doomed keys are gone and every other key is intact.",
        f"Wall time of one call from Python, median of {runs} runs (RedisSaver.prune: fewer), min and max.",
        "",
        "| contender | median ms | min ms | max ms | x floor | x RedisSaver.prune |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t.name} | {t.median:.1f} | {min(t.runs_ms):.1f} | {max(t.runs_ms):.1f} "
            f"| {t.median / floor:.2f} | {t.median / saver:.3f} |"
        )
    lines += ["", "Produced by `python -m benchmarks` (README: Benchmarks).", ""]
    (out / "core.md").write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(7, 2.8))
    names = [t.name for t in timings]
    ax.barh(names, [t.median for t in timings], color=["#2a7", "#999", "#c44"])
    ax.errorbar(
        [t.median for t in timings],
        names,
        xerr=[[t.median - min(t.runs_ms) for t in timings], [max(t.runs_ms) - t.median for t in timings]],
        fmt="none",
        color="black",
        capsize=3,
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    for t in timings:
        ax.annotate(f"{t.median:.1f} ms", (t.median, t.name), xytext=(6, 6), textcoords="offset points")
    ax.set_xlabel("ms, log scale (median, min-max)")
    ax.set_title("Prune a 1,000-checkpoint thread to 10")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "core.png", dpi=120)
    plt.close(fig)


def write_sweep(out: Path, runs: list[SweepRun], *, where: str, threads: int, per_thread: int) -> None:
    """sweep.md: every thread pruned to 5 by each contender, with correctness."""
    fastest = runs[0].seconds
    lines = [
        f"# Sweeping {threads:,} threads x {per_thread} checkpoints (2 writes each) to the newest 5",
        "",
        f"Server: {where}. Plus threads `Wang1`, `wang1`, `wang1:2025` and `a b|c`. Each contender gets the",
        "same data, rebuilt with RedisSaver.put/put_writes; afterwards every thread must hold exactly 5",
        "checkpoints and every remaining write its checkpoint. Largest call: the longest lgprune FCALL",
        "in SLOWLOG.",
        "",
        "| contender | seconds | x lgprune | largest call ms | correct |",
        "|---|---:|---:|---:|---|",
    ]
    for run in runs:
        verdict = "yes" if run.correct else f"**no**: {run.problem}"
        largest = f"{run.largest_call_ms:.1f}" if run.largest_call_ms else "-"
        lines.append(
            f"| {run.name} | {run.seconds:.2f} | {run.seconds / fastest:.1f} | {largest} | {verdict} |"
        )
    lines += ["", "Produced by `python -m benchmarks` (README: Benchmarks).", ""]
    (out / "sweep.md").write_text("\n".join(lines))


def write_hook(
    out: Path, runs: list[HookRun], *, where: str, turns: int, keep_last: int, repeats: int
) -> None:
    """hook.md: turn latency of one conversation with and without auto-prune."""
    base = next(r for r in runs if r.name == "without")
    lines = [
        f"# Auto-prune: a {turns}-turn conversation, "
        f"AsyncPruningRedisSaver(keep_last={keep_last}) vs AsyncRedisSaver",
        "",
        f"Server: {where}. A compiled chat graph (MessagesState, an echo bot, 400-character",
        "messages); the two conversations run turn by turn in alternation on the same server.",
        f"Latency of `ainvoke` per turn; median over {repeats} conversations of each percentile.",
        "Checkpoints: root checkpoints of the thread (most at any turn, and at the end).",
        "",
        "| saver | p50 ms | p99 ms | p50 vs without | p99 vs without | most checkpoints | at the end |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.name} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | {run.p50_ms / base.p50_ms - 1:+.1%} "
            f"| {run.p99_ms / base.p99_ms - 1:+.1%} | {run.most_checkpoints} | {run.checkpoints_at_end} |"
        )
    lines += ["", "Produced by `python -m benchmarks` (README: Benchmarks).", ""]
    (out / "hook.md").write_text("\n".join(lines))


def write_shapes(out: Path, shapes: list[Shape], *, where: str) -> None:
    """shapes.md: the longest single call per data shape, against the 20 ms target."""
    lines = [
        "# The longest single call at extreme data shapes (default budget 2,000)",
        "",
        f"Server: {where}. One `Pruner.prune` per shape; the longest FCALL in SLOWLOG.",
        f"Target: well under {TARGET_MS:.0f} ms; issue 6 allows at most 2x.",
        "",
        "| shape | calls | keys deleted | longest call ms | within 2x of the target |",
        "|---|---:|---:|---:|---|",
    ]
    for shape in shapes:
        verdict = "yes" if shape.largest_call_ms <= 2 * TARGET_MS else "**no**"
        lines.append(
            f"| {shape.name} | {shape.calls} | {shape.keys_deleted:,} "
            f"| {shape.largest_call_ms:.1f} | {verdict} |"
        )
    lines += [
        "",
        "A thread larger than one call's view is listed newest first with RediSearch SORTBY,",
        "which reads the sort key of every checkpoint of the thread: the cost per call grows",
        "with the thread (see README: Known limits).",
        "",
        "Produced by `python -m benchmarks --suites shapes`.",
        "",
    ]
    (out / "shapes.md").write_text("\n".join(lines))
