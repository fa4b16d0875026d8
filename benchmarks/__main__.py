"""`python -m benchmarks`: measure, then write Markdown tables and PNG plots to benchmarks/results/."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
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
from lgprune.containers import any_server, requested_images

RESULTS = Path(__file__).parent / "results"
SUITES = ["engine", "core", "dimensions", "sweep", "hook", "shapes", "incremental", "js"]


def main() -> None:
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
    parser.add_argument("--out", type=Path, default=RESULTS, help="where tables and plots go")
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
    started = time.monotonic()
    targets: list[tuple[contextlib.AbstractContextManager[tuple[str, str]], Path]]
    if args.url:
        targets = [(contextlib.nullcontext((args.url, "--url")), args.out)]
    elif not os.environ.get("REDIS_URL") and (args.images or requested_images()):
        images = args.images or requested_images()
        targets = [
            (any_server(image), args.out / image.replace("/", "_").replace(":", "_")) for image in images
        ]
    else:
        targets = [(any_server(), args.out)]
    for server, out in targets:
        with server as (url, kind):
            run_suites(args, url, kind, out)
    print(f"done in {time.monotonic() - started:.0f} s; results in {args.out}")


def run_suites(args: argparse.Namespace, url: str, kind: str, out: Path) -> None:
    """Every chosen suite against one server, results written to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or (5 if args.quick else 11)
    # redis-py 8 gives up on a reply after 5 s; FLUSHALL of 2 million keys can take longer
    client = redis.Redis.from_url(url, socket_timeout=300)
    version = client.info("server")["redis_version"]
    where = f"{kind}, Redis {version}, {platform.machine()}, Python {platform.python_version()}"
    print(f"benchmarking against {where}")
    if "engine" in args.suites:
        engine_runs = args.runs or (3 if args.quick else 5)
        cases = engine.QUICK_CASES if args.quick else engine.CASES
        against = args.engine_against
        results = engine.measure(
            client, runs=engine_runs, cases=cases, against=against.read_text() if against else None
        )
        write_engine(out, results, where=where, runs=engine_runs, against=against.name if against else None)
    if "core" in args.suites:
        timings = core.measure(client, runs=runs, saver_runs=max(3, runs // 2))
        write_core(out, timings, where=where, runs=runs)
    if "dimensions" in args.suites:
        write_dimensions(out, dimensions.measure(client, quick=args.quick, runs=runs), where=where)
    if "sweep" in args.suites:
        sizes = args.threads or ([1_000] if args.quick else [1_000, 10_000, 100_000])
        sweeps = sweep.measure(client, sizes=sizes, runs=5, per_thread=10, keep=5)
        write_sweep(out, sweeps, where=where, per_thread=10, keep=5)
    if "hook" in args.suites:
        repeats = 1 if args.quick else 3
        hooks = hook.measure(url, turns=200, keep_last=10, repeats=repeats)
        write_hook(out, hooks, where=where, turns=200, keep_last=10, repeats=repeats)
    if "shapes" in args.suites:
        write_shapes(out, shapes.measure(client, huge=5_000 if args.quick else 20_000), where=where)
    if "incremental" in args.suites:
        incremental_runs = args.runs or (3 if args.quick else 5)
        against_text = args.engine_against.read_text() if args.engine_against else None
        found, notes = incremental.measure(
            client, runs=incremental_runs, quick=args.quick, against=against_text
        )
        write_incremental(out, found, where=where, runs=incremental_runs, notes=notes)
    if "js" in args.suites:
        sizes, turns, keep = ([20], 6, 3) if args.quick else ([100, 300, 1000], 10, 3)
        js_runs = args.runs or (3 if args.quick else 5)
        found_js = [
            run
            for n in sizes
            for run in js.measure(client, url, threads=n, turns=turns, keep=keep, runs=js_runs)
        ]
        write_js(out, found_js, where=where, turns=turns, keep=keep, repeats=js_runs)
    client.close()


if __name__ == "__main__":
    main()
