"""`python -m benchmarks`: measure, then write Markdown tables and PNG plots.

A full run writes to benchmarks/results/, replacing the committed results; --quick writes
to a new temporary folder; --out chooses the folder either way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks import core, dimensions, engine, hook, incremental, js, shapes, sweep
from benchmarks.report import (
    write_core,
    write_dimensions,
    write_engine,
    write_hook,
    write_incremental,
    write_js,
    write_shapes,
    write_sweep,
)
from lgprune.containers import ContainerError, any_server, requested_images

RESULTS = Path(__file__).parent / "results"
SUITES = ["engine", "core", "dimensions", "sweep", "hook", "shapes", "incremental", "js"]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and sizes, for a first look")
    parser.add_argument("--url", help="benchmark this server (default: containers, else embedded)")
    parser.add_argument(
        "--images",
        nargs="+",
        help="run against these container images, each of which must start (results in OUT/<image>/; "
        "default: $LGPRUNE_IMAGES, else redis:8 where a Docker engine answers, else the embedded server)",
    )
    parser.add_argument("--runs", type=int, help="runs per contender (default 5 quick, 11 full)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where tables and plots go (default: benchmarks/results/ for a full run, replacing the "
        "committed results; a new temporary folder for --quick)",
    )
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=SUITES)
    parser.add_argument(
        "--engine-against",
        type=Path,
        metavar="LUA_FILE",
        help="the engine and incremental suites also prune with this build of the library, in the same "
        "rotation "
        "(e.g. the output of `git show REV:lua/lgprune.lua`)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        help="thread counts for the sweep suite (1000 quick; 1000 10000 100000 full)",
    )
    args = parser.parse_args()
    if args.quick and args.out is not None and args.out.resolve() == RESULTS.resolve():
        parser.error(
            "--quick results never replace the committed ones in benchmarks/results/: pick another --out"
        )
    return args


def output_folder(args: argparse.Namespace) -> Path:
    """--out; else a new temporary folder for --quick, else the committed results."""
    if args.out is not None:
        return Path(args.out)
    return Path(tempfile.mkdtemp(prefix="lgprune-benchmarks-")) if args.quick else RESULTS


def main() -> None:
    args = arguments()
    started = time.monotonic()
    out = output_folder(args)
    targets: list[tuple[contextlib.AbstractContextManager[tuple[str, str]], Path]]
    if args.url:
        targets = [(contextlib.nullcontext((args.url, "--url")), out)]
    elif not os.environ.get("REDIS_URL") and (args.images or requested_images()):
        images = args.images or requested_images()
        targets = [(any_server(image), out / image.replace("/", "_").replace(":", "_")) for image in images]
    else:
        targets = [(any_server(), out)]
    try:
        for server, folder in targets:
            with server as (url, kind):
                run_suites(args, url, kind, folder)
    except (ContainerError, redis.ConnectionError) as error:
        if args.quick and args.out is None:
            with contextlib.suppress(OSError):
                out.rmdir()  # the temporary folder, when nothing was written to it
        sys.exit(f"python -m benchmarks: {error}")
    print(f"done in {time.monotonic() - started:.0f} s; results in {out}")


@dataclass(frozen=True)
class Target:
    """One server being benchmarked, and where its results go."""

    args: argparse.Namespace
    client: redis.Redis
    url: str
    out: Path
    where: str
    runs: int


def engine_suite(t: Target) -> None:
    runs = t.args.runs or (3 if t.args.quick else 5)
    cases = engine.QUICK_CASES if t.args.quick else engine.CASES
    against = t.args.engine_against
    results = engine.measure(
        t.client, runs=runs, cases=cases, against=against.read_text() if against else None
    )
    write_engine(t.out, results, where=t.where, runs=runs, against=against.name if against else None)


def core_suite(t: Target) -> None:
    timings = core.measure(t.client, runs=t.runs, saver_runs=max(3, t.runs // 2))
    write_core(t.out, timings, where=t.where, runs=t.runs)


def dimensions_suite(t: Target) -> None:
    write_dimensions(t.out, dimensions.measure(t.client, quick=t.args.quick, runs=t.runs), where=t.where)


def sweep_suite(t: Target) -> None:
    sizes = t.args.threads or ([1_000] if t.args.quick else [1_000, 10_000, 100_000])
    sweeps = sweep.measure(t.client, sizes=sizes, runs=5, per_thread=10, keep=5)
    write_sweep(t.out, sweeps, where=t.where, per_thread=10, keep=5)


def hook_suite(t: Target) -> None:
    repeats = 1 if t.args.quick else 3
    hooks = hook.measure(t.url, turns=200, keep_last=10, repeats=repeats)
    write_hook(t.out, hooks, where=t.where, turns=200, keep_last=10, repeats=repeats)


def shapes_suite(t: Target) -> None:
    write_shapes(t.out, shapes.measure(t.client, huge=5_000 if t.args.quick else 20_000), where=t.where)


def incremental_suite(t: Target) -> None:
    runs = t.args.runs or (3 if t.args.quick else 5)
    against = t.args.engine_against.read_text() if t.args.engine_against else None
    found, notes = incremental.measure(t.client, runs=runs, quick=t.args.quick, against=against)
    write_incremental(t.out, found, where=t.where, runs=runs, notes=notes)


def js_suite(t: Target) -> None:
    sizes, turns, keep = ([20], 6, 3) if t.args.quick else ([100, 300, 1000], 10, 3)
    runs = t.args.runs or (3 if t.args.quick else 5)
    found = [
        run
        for n in sizes
        for run in js.measure(t.client, t.url, threads=n, turns=turns, keep=keep, runs=runs)
    ]
    write_js(t.out, found, where=t.where, turns=turns, keep=keep, repeats=runs)


SUITE_RUNS: dict[str, Callable[[Target], None]] = {
    "engine": engine_suite,
    "core": core_suite,
    "dimensions": dimensions_suite,
    "sweep": sweep_suite,
    "hook": hook_suite,
    "shapes": shapes_suite,
    "incremental": incremental_suite,
    "js": js_suite,
}


def run_suites(args: argparse.Namespace, url: str, kind: str, out: Path) -> None:
    """Every chosen suite against one server, results written to `out`, a line as each
    starts and ends."""
    out.mkdir(parents=True, exist_ok=True)
    # redis-py 8 gives up on a reply after 5 s; FLUSHALL of 2 million keys can take longer
    client = redis.Redis.from_url(url, socket_timeout=300)
    version = client.info("server")["redis_version"]
    where = f"{kind}, Redis {version}, {platform.machine()}, Python {platform.python_version()}"
    said = " (a full run: replacing the committed results)" if out.is_relative_to(RESULTS) else ""
    print(f"benchmarking against {where}; results to {out}{said}", flush=True)
    target = Target(args, client, url, out, where, args.runs or (5 if args.quick else 11))
    chosen = [name for name in SUITES if name in args.suites]
    for number, name in enumerate(chosen, 1):
        print(f"[{number}/{len(chosen)}] {name}: started", flush=True)
        started = time.monotonic()
        SUITE_RUNS[name](target)
        print(f"[{number}/{len(chosen)}] {name}: done in {time.monotonic() - started:.0f} s", flush=True)
    client.close()


if __name__ == "__main__":
    main()
