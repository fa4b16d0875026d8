"""`python -m benchmarks` as a user runs it: where results go, a line per suite, one-line failures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def benchmarks(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks ARGS` from the repository root, without $REDIS_URL unless given."""
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LGPRUNE_IMAGES")}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def temporary_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("lgprune-benchmarks-*"))


def test_an_image_without_a_docker_engine_is_one_line_and_leaves_nothing() -> None:
    before = temporary_folders()
    out = benchmarks(
        "--quick", "--images", "lgprune-redis:8.2", DOCKER_HOST="unix:///nonexistent/docker.sock"
    )
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert out.stderr == (
        "python -m benchmarks: container lgprune-redis:8.2 was asked for, but no Docker engine answers\n"
    )
    assert temporary_folders() == before


def test_quick_never_writes_the_committed_results() -> None:
    out = benchmarks("--quick", "--out", str(RESULTS), "--url", "redis://127.0.0.1:1")  # never a run
    assert out.returncode == 2 and "--quick results never replace the committed ones" in out.stderr
    assert "--out OUT" in benchmarks("--help").stdout


def test_quick_writes_to_a_temporary_folder_and_says_each_suite_as_it_goes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import __main__ as cli

    def table(name: str) -> object:  # a suite's work stands in: what is tested is the run around it
        return lambda target: (target.out / f"{name}.md").write_text(target.where)

    monkeypatch.setattr(cli, "SUITE_RUNS", {name: table(name) for name in cli.SUITES})
    committed = {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
    monkeypatch.setattr(
        sys, "argv", ["benchmarks", "--quick", "--url", redis_url, "--suites", "core", "hook"]
    )
    cli.main()
    lines = capsys.readouterr().out.splitlines()
    folder = Path(lines[0].rsplit("results to ", 1)[1])
    try:
        assert folder.parent == Path(tempfile.gettempdir())
        assert sorted(p.name for p in folder.iterdir()) == ["core.md", "hook.md"]
        suites = ["[1/2] core: started", "[1/2] core: done in 0 s", "[2/2] hook: started"]
        assert lines[1:5] == [*suites, "[2/2] hook: done in 0 s"]
        assert lines[5].endswith(f"results in {folder}")
        assert {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()} == committed
    finally:
        for written in folder.iterdir():
            written.unlink()
        folder.rmdir()
