"""Markdown tables and matplotlib plots of benchmark timings."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from benchmarks.core import Timing
from benchmarks.dimensions import Point
from benchmarks.engine import Result
from benchmarks.hook import HookRun
from benchmarks.incremental import AGAINST as INCREMENTAL_AGAINST
from benchmarks.incremental import SCALING_LIMIT
from benchmarks.incremental import Result as IncrementalResult
from benchmarks.incremental import scaling as incremental_scaling
from benchmarks.js import JsRun
from benchmarks.shapes import TARGET_MS, Shape
from benchmarks.sweep import SweepRun

FOOTER = "Produced by `python -m benchmarks` (the docs' Benchmarks page: Run them)."


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
    lines += ["", FOOTER, ""]
    (out / "core.md").write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(timings) + 1.2))
    names = [t.name for t in timings]
    colours = {"lgprune Pruner.prune": "#2a7", "RedisSaver.prune": "#c44"}
    ax.barh(names, [t.median for t in timings], color=[colours.get(name, "#999") for name in names])
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


def write_engine(
    out: Path, results: list[Result], *, where: str, runs: int, against: str | None = None
) -> None:
    """engine.md: lgprune's Redis server time against the floor's and bare's, per case, with the
    targets; with `against` (a file name), also that build of the library's."""
    lines = [
        "# The engine against the floor: Redis server time",
        "",
        f"Server: {where}. Server time is the sum of SLOWLOG durations (`slowlog-log-slower-than 0`)",
        "of the contender's FCALLs; the floor is a script that does nothing but UNLINK exactly the",
        "doomed keys, known in advance (one script; 2,000 keys per script in the sweeps), index",
        "maintenance included. Bare is the floor plus the reads a prune must make to find those keys",
        "through the saver's own registry and indexes (threads by SCAN over the latest pointers,",
        "checkpoints and writes through the indexes, the kept checkpoints' metadata), with no planning.",
        "Target: the ratio to the floor lgprune aims for; one below bare's ratio is out of reach of any",
        "design that finds its keys this way. Every run rebuilds the data (threads the saver wrote,",
        f"cloned) and checks that exactly the doomed keys went. Medians of {runs} runs per contender,",
        "in rotating order; the longest call is lgprune's longest of all runs.",
    ]
    if against:
        lines += [f"Against: the library in `{against}`, pruning as lgprune does, in the same rotation."]
    lines += [
        "",
        "| case | lgprune ms | floor ms | bare ms | x floor | bare x floor | target | longest call ms "
        "| calls | within target | target above bare |" + (" against ms |" if against else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|" + ("---:|" if against else ""),
    ]
    for r in results:
        c = r.case
        goal = f"<= {c.goal:g}x" + (f", calls <= {c.call_limit_ms:g} ms" if c.call_limit_ms else "")
        calls = r.median(r.lgprune, lambda s: s.calls)
        lines.append(
            f"| {c.name}: {c.what} | {r.server_ms('lgprune'):.1f} | {r.server_ms('floor'):.1f} "
            f"| {r.server_ms('bare'):.1f} | {r.ratio:.2f} | {r.bare_ratio:.2f} | {goal} "
            f"| {r.longest_ms:.1f} | {calls:g} | {'yes' if r.within_goal else '**no**'} "
            f"| {'yes' if r.reachable else '**no**'} |"
            + (f" {r.server_ms('against'):.1f} |" if against else "")
        )
    lines += ["", FOOTER, ""]
    (out / "engine.md").write_text("\n".join(lines))


def write_sweep(out: Path, runs: list[SweepRun], *, where: str, per_thread: int, keep: int) -> None:
    """sweep.md and sweep.png: every thread pruned to `keep` by each contender, at each size."""
    count = len(runs[0].samples)
    lines = [
        f"# Sweeping every thread ({per_thread} checkpoints, 1 write each) to the newest {keep}",
        "",
        f"Server: {where}. Threads `user:N:chat` are copies of one thread the saver wrote, each",
        "with its own checkpoint ids, made by a server-side script; threads `Wang1`, `wang1`,",
        "`wang1:2025` and `a b|c` are written by RedisSaver.put/put_writes. Each run of each",
        "contender gets a fresh build; afterwards exactly the keys of every thread's newest",
        f"{keep} checkpoints must remain, and a sample of them unchanged. Seconds: median of {count}",
        "runs, min and max. Largest call: the longest FCALL in SLOWLOG over all runs. PING p99: a",
        "probe in another process, every millisecond, while the contender ran (median over runs).",
        "Freed: INFO used_memory before minus after (median). GC forks: the most forks in one run",
        "(RediSearch forks to collect the garbage of deleted documents; a fork holds Redis while it",
        "copies the page tables) and the longest such hold. The saver loop is given the thread",
        "ids; lgprune finds them itself.",
        "",
        "| threads | contender | median s | min s | max s | x lgprune | largest call ms "
        "| PING p99 ms | GC forks (hold ms) | freed MiB | correct |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    fastest = {run.threads: run.median for run in runs if run.name.startswith("lgprune")}
    for run in runs:
        verdict = "yes" if not run.problem else f"**no**: {run.problem}"
        largest = f"{run.largest_call_ms:.1f}" if run.largest_call_ms else "-"
        lines.append(
            f"| {run.threads:,} | {run.name} | {run.median:.2f} "
            f"| {min(run.seconds):.2f} | {max(run.seconds):.2f} "
            f"| {run.median / fastest[run.threads]:.1f} | {largest} | {run.ping_p99_ms:.2f} "
            f"| {run.forks} ({run.fork_ms:.0f}) | {run.freed_mb:.1f} | {verdict} |"
        )
    lines += ["", FOOTER, ""]
    (out / "sweep.md").write_text("\n".join(lines))

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(run.name for run in runs):
        mine = [run for run in runs if run.name == name]
        sizes = [run.threads for run in mine]
        medians = [run.median for run in mine]
        errors = [
            [m - min(run.seconds) for m, run in zip(medians, mine, strict=True)],
            [max(run.seconds) - m for m, run in zip(medians, mine, strict=True)],
        ]
        colour = "#2a7" if name.startswith("lgprune") else "#c44"
        left.errorbar(sizes, medians, yerr=errors, marker="o", capsize=3, label=name, color=colour)
        right.plot(
            sizes, [run.ping_p99_ms for run in mine], marker="o", label=f"{name}: PING p99", color=colour
        )
        if name.startswith("lgprune"):
            right.plot(
                sizes,
                [run.largest_call_ms for run in mine],
                marker="s",
                linestyle="--",
                label=f"{name}: largest call",
                color="#275",
            )
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("threads")
        ax.legend(fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("seconds for the whole sweep")
    right.set_ylabel("milliseconds")
    left.set_title("Sweep time")
    right.set_title("Is Redis blocked? (lower is better)")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)


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
    lines += ["", FOOTER, ""]
    (out / "hook.md").write_text("\n".join(lines))


def write_shapes(out: Path, shapes: list[Shape], *, where: str) -> None:
    """shapes.md: the longest single call per data shape, against the 20 ms target."""
    lines = [
        "# The longest single call at extreme data shapes (default budget 2,000)",
        "",
        f"Server: {where}. One `Pruner.prune` per shape; the longest FCALL in SLOWLOG.",
        f"Target: well under {TARGET_MS:.0f} ms, and never over {2 * TARGET_MS:.0f} ms.",
        "",
        f"| shape | calls | keys deleted | longest call ms | under {2 * TARGET_MS:.0f} ms |",
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
        "A thread larger than one call's view is looked at up to budget + keep + 1 entries",
        "(DIALECT 4 stops there); its root namespace is listed by a window of its newest",
        "checkpoints by checkpoint_ts and a page of others, so a call's cost does not grow with",
        "the thread. Non-root namespaces larger than a call are listed sorted.",
        "",
        FOOTER,
        "",
    ]
    (out / "shapes.md").write_text("\n".join(lines))


def write_dimensions(out: Path, points: list[Point], *, where: str) -> None:
    """dimensions.md and dimensions.png: prune time against thread size, writes, unrelated data."""
    lines = [
        "# Prune time across dimensions (keep 10)",
        "",
        f"Server: {where}. One thread pruned to its newest 10 by one `Pruner.prune`, against the",
        "floor (one script that UNLINKs exactly the doomed keys, known in advance). Default: 1,000",
        "checkpoints, 2 writes each, nothing else in the database; each row varies one of them.",
        "Unrelated keys are plain strings written before the thread. Median, min and max of the runs",
        "(10,000 checkpoints: 5 runs). RedisSaver.prune is not run with unrelated data (the builds",
        "would take minutes). Freed: INFO used_memory before minus after lgprune's prune (median).",
        "Correct: every run deleted exactly the doomed keys and kept every other.",
        "",
        "| dimension | value | lgprune ms | lgprune min-max | floor ms | x floor "
        "| RedisSaver.prune ms | x RedisSaver.prune | freed MiB | correct |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    by_key = {(p.dimension, p.value, p.contender): p for p in points}
    for dimension in ("checkpoints", "writes", "unrelated keys"):
        for value in sorted({p.value for p in points if p.dimension == dimension}):
            ours, floor = by_key[(dimension, value, "lgprune")], by_key[(dimension, value, "floor")]
            saver = by_key.get((dimension, value, "RedisSaver.prune"))
            wrong = [f"{p.contender}: {p.problem}" for p in (ours, floor, saver) if p and p.problem]
            lines.append(
                f"| {dimension} | {value:,} | {ours.median_ms:.1f} | {ours.min_ms:.1f}-{ours.max_ms:.1f} "
                f"| {floor.median_ms:.1f} | {ours.median_ms / floor.median_ms:.2f} "
                + (
                    f"| {saver.median_ms:.1f} | {ours.median_ms / saver.median_ms:.3f} "
                    if saver
                    else "| - | - "
                )
                + f"| {ours.freed_mb:.1f} | {'; '.join(wrong) or 'yes'} |"
            )
    lines += ["", FOOTER, ""]
    (out / "dimensions.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, dimension, label in (
        (axes[0], "checkpoints", "checkpoints in the thread"),
        (axes[1], "unrelated keys", "unrelated keys in the database"),
    ):
        for contender, colour in (("lgprune", "#2a7"), ("floor", "#999"), ("RedisSaver.prune", "#c44")):
            series = sorted(
                (p.value, p) for p in points if p.dimension == dimension and p.contender == contender
            )
            xs = [max(v, 1) for v, _ in series]
            ax.errorbar(
                xs,
                [p.median_ms for _, p in series],
                yerr=[
                    [p.median_ms - p.min_ms for _, p in series],
                    [p.max_ms - p.median_ms for _, p in series],
                ],
                marker="o",
                capsize=3,
                color=colour,
                label=contender,
            )
        ax.set_xscale("log")
        ax.set_xlabel(label + (" (0 drawn at 1)" if dimension == "unrelated keys" else ""))
        ax.set_ylabel("ms (median, min-max)")
        ax.legend()
    axes[0].set_yscale("log")
    axes[0].set_title("Prune to 10: time grows with what is deleted")
    axes[1].set_title("1,000 checkpoints: unrelated data")
    fig.tight_layout()
    fig.savefig(out / "dimensions.png", dpi=120)
    plt.close(fig)


def write_incremental(
    out: Path, results: list[IncrementalResult], *, where: str, runs: int, notes: list[str]
) -> None:
    """incremental.md and incremental.png: incremental sweeps against the floor, bare and a full
    sweep, per case; and the cost of both kinds of sweep against idle threads."""
    lines = [
        "# Incremental sweeps against the floor: Redis server time",
        "",
        f"Server: {where}. Keep 5. Idle threads hold 4 checkpoints (x 1 write) stamped 6 to 30 hours",
        "ago; a watermark says a complete pass of the rule began an hour ago; active threads received",
        "10 checkpoints (x 1 write) since, each then holding 14, of which 9 go. Incremental:",
        "`Pruner.sweep(5)` (kind incremental: the threads found by checkpoint_ts through the index);",
        "full: `sweep(5, full=True)` (every checkpoint_ts through the index). The floor UNLINKs exactly",
        "the doomed keys, known in advance (2,000 per script); bare is the floor plus the reads an",
        "index-discovery design cannot avoid (one count and one GROUPBY @thread_id over the window the",
        "incremental pass reads, in one call; then each active thread's checkpoints, writes and kept",
        "metadata, 200 threads per call), with no planning. Server time: the sum of SLOWLOG durations of",
        "the contender's FCALLs. The idle threads are built once per case; before every run the active",
        "threads are cloned afresh, the watermark is set and RediSearch's GC is run; every run checks that",
        f"exactly the doomed keys went. Medians of {runs} runs per contender, in rotating order; the",
        "longest call is incremental's longest over all runs.",
        "",
        "| case | incremental ms | floor ms | bare ms | x floor | bare x floor | full ms | full x floor "
        "| bare's discovery ms | longest call ms | calls | target | within target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        c = r.case
        goal = "-"
        if c.goal is not None:
            goal = f"<= {c.goal:g}x" + (f", calls <= {c.call_limit_ms:g} ms" if c.call_limit_ms else "")
        met = {None: "-", True: "yes", False: "**no**"}[r.within_goal]
        what = f"{r.threads:,} threads, {c.active:,} active ({c.active / r.threads:.0%})"
        lines.append(
            f"| {what} | {r.server_ms('incremental'):.1f} | {r.server_ms('floor'):.1f} "
            f"| {r.server_ms('bare'):.1f} | {r.ratio('incremental'):.2f} | {r.ratio('bare'):.2f} "
            f"| {r.server_ms('full'):.1f} | {r.ratio('full'):.2f} "
            f"| {statistics.median(r.discovery_ms):.1f} | {r.longest_ms():.1f} | {r.calls():g} "
            f"| {goal} | {met} |"
        )
    for r, base, factor in incremental_scaling(results):
        verdict = "yes" if factor <= SCALING_LIMIT else "**no**"
        lines += [
            "",
            f"Same activity, more idle threads: incremental at {r.threads:,} threads costs {factor:.2f}x its "
            f"cost at {base.threads:,} ({r.server_ms('incremental'):.1f} against "
            f"{base.server_ms('incremental'):.1f} ms); target <= {SCALING_LIMIT:g}x: {verdict}.",
        ]
    compared = [r for r in results if all(r.samples[c] for c in INCREMENTAL_AGAINST)]
    if compared:
        lines += [
            "",
            "The same sweeps with the other build of the library (`--engine-against`), in the same rotation:",
            "",
            "| case | incremental ms | against ms | x against | full ms | against ms | x against |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in compared:
            inc, inc_a = r.server_ms("incremental"), r.server_ms("incremental-against")
            full, full_a = r.server_ms("full"), r.server_ms("full-against")
            lines.append(
                f"| {r.threads:,} threads, {r.case.active:,} active "
                f"| {inc:.1f} | {inc_a:.1f} | {inc / inc_a:.2f} "
                f"| {full:.1f} | {full_a:.1f} | {full / full_a:.2f} |"
            )
    lines += [f"\nNote: {note}." for note in notes]
    lines += ["", FOOTER, ""]
    (out / "incremental.md").write_text("\n".join(lines))

    active = max(r.case.active for r in results)
    plotted = sorted((r for r in results if r.case.active == active), key=lambda r: r.threads)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sizes = [r.threads for r in plotted]
    for contender, colour, style in (
        ("full", "#c44", "-"),
        ("incremental", "#2a7", "-"),
        ("bare", "#999", "--"),
        ("floor", "#555", ":"),
    ):
        ms = [r.server_ms(contender) for r in plotted]
        ax.plot(sizes, ms, marker="o", color=colour, linestyle=style, label=contender)
        if contender in ("full", "incremental"):
            for x, y in zip(sizes, ms, strict=True):
                ax.annotate(f"{y:.0f} ms", (x, y), xytext=(4, 6), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks(sizes)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel(f"threads ({active:,} of them active), log scale")
    ax.set_ylabel("server ms for the whole sweep (median), log scale")
    ax.set_title("Sweep cost against idle threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "incremental.png", dpi=120)
    plt.close(fig)


def write_js(out: Path, runs: list[JsRun], *, where: str, turns: int, keep: int, repeats: int) -> None:
    """js.md: keeping the newest `keep` checkpoints of every thread of a LangGraph.js store."""
    lines = [
        f"# LangGraph.js stores: keep the newest {keep} checkpoints of every chat thread ({turns} turns)",
        "",
        f"Server: {where}. The store is written by @langchain/langgraph-checkpoint-redis 1.0.11",
        "(tests/js/saver.mjs) and restored before every run; contenders interleaved in rotating",
        f"order, medians of {repeats}. Server ms: the Redis main thread's CPU time over the run",
        "(INFO cpu), every command counted wherever it came from; longest: the longest single",
        'command (SLOWLOG; for lgprune an FCALL). The JS saver has no "keep N": its rewrite',
        "reads the newest N, deletes the thread (deleteThread: four KEYS patterns over the whole",
        "keyspace) and puts them back. Its TTL deletes by age, the newest too.",
        "",
        "| threads | contender | server ms | vs lgprune sweep | wall ms | longest ms | checkpoints after "
        "| blobs after | keys after | MiB after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        base = next(r for r in runs if r.name == "lgprune sweep" and r.threads == run.threads)
        ratio = f"{run.server_ms / base.server_ms:.1f}x" if run.server_ms else "—"
        lines.append(
            f"| {run.threads:,} | {run.name} | {run.server_ms:,.0f} | {ratio} | {run.wall_ms:,.0f} "
            f"| {run.longest_ms:.1f} | {run.checkpoints_after:,} | {run.blobs_after:,} | {run.keys_after:,} "
            f"| {run.memory_after / 2**20:.1f} |"
        )
    lines += ["", FOOTER, ""]
    (out / "js.md").write_text("\n".join(lines))
