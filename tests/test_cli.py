"""The command line, run as a real process; and redis-cli alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import redis
from helpers import checkpoint_ids, put_checkpoints
from langgraph.checkpoint.redis import RedisSaver


def lgprune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lgprune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_prune_prints_json_and_exits_0(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "cli:1", 7)
    out = lgprune("prune", "cli:1", "--keep", "2", "--url", redis_url, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["thread_id"], result["checkpoints_deleted"], result["checkpoints_kept"]) == ("cli:1", 5, 2)
    assert len(checkpoint_ids(saver, "cli:1")) == 2


def test_dry_run_and_the_url_from_the_environment(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "env", 4)
    out = lgprune("prune", "env", "--keep", "1", "--dry-run", env={"REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("env: would delete 3 checkpoints, 6 writes")
    assert len(checkpoint_ids(saver, "env")) == 4


@pytest.mark.parametrize(
    "args",
    [
        ["prune", "t", "--keep", "-1"],
        ["prune", "t"],
        ["prune", "--keep", "1"],
        ["prune", "t", "--keep", "x"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(redis_url: str, saver: RedisSaver, args: list[str]) -> None:
    put_checkpoints(saver, "t", 3)
    out = lgprune(*args, "--url", redis_url)
    assert out.returncode == 2
    assert len(checkpoint_ids(saver, "t")) == 3


def test_a_thread_id_the_library_refuses_exits_2(redis_url: str, saver: RedisSaver) -> None:
    out = lgprune("prune", "   ", "--keep", "1", "--url", redis_url)
    assert out.returncode == 2
    assert out.stderr.startswith("lgprune: thread id")


def test_redis_errors_exit_1_with_one_line(redis_url: str, r: redis.Redis) -> None:
    out = lgprune("prune", "t", "--keep", "1", "--url", redis_url)  # the saver was never set up
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "setup()" in out.stderr
    out = lgprune("prune", "t", "--keep", "1", "--url", "redis://127.0.0.1:1")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("lgprune: ")


def test_install(redis_url: str, r: redis.Redis) -> None:
    out = lgprune("install", "--url", redis_url)
    assert out.returncode == 0 and "is loaded" in out.stdout
    assert r.fcall("lgprune_version", 0)


def test_redis_cli_alone_prunes_one_thread(redis_url: str, r: redis.Redis, saver: RedisSaver) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (Debian: apt-get install redis-tools)")
    for tid in ("wang1", "wang1:20250729235038043", "Wang1:20250729235038043"):
        put_checkpoints(saver, tid, 8)
    assert lgprune("install", "--url", redis_url).returncode == 0
    out = subprocess.run(
        [cli, "-u", redis_url, "FCALL", "lgprune_thread", "0", "wang1:20250729235038043", "5"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [
        "checkpoints_deleted",
        "3",
        "writes_deleted",
        "6",
        "keys_deleted",
        "12",
        "checkpoints_kept",
        "5",
        "delta_ancestors_kept",
        "0",
        "more",
        "0",
    ]
    assert [
        len(checkpoint_ids(saver, t)) for t in ("wang1", "wang1:20250729235038043", "Wang1:20250729235038043")
    ] == [8, 5, 8]


def test_sweep_and_stats_from_the_command_line(redis_url: str, saver: RedisSaver) -> None:
    for i in range(12):
        put_checkpoints(saver, f"s:{i}", 4 + i)
    stats = lgprune("stats", "--keep", "3", "--top", "2", "--json", "--url", redis_url)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert (figures["threads"], figures["checkpoints"]) == (12, sum(4 + i for i in range(12)))
    assert [t["thread_id"] for t in figures["top"]] == ["s:11", "s:10"]
    assert figures["top"][0]["bytes"] > 0
    assert sum(figures["histogram"].values()) == 12
    out = lgprune("sweep", "--keep", "3", "--json", "--url", redis_url)
    assert out.returncode == 0, out.stderr
    assert (
        json.loads(out.stdout)["checkpoints_deleted"]
        == figures["sweep_checkpoints"]
        == sum(1 + i for i in range(12))
    )
    assert all(len(checkpoint_ids(saver, f"s:{i}")) == 3 for i in range(12))
    summary = lgprune("sweep", "--keep", "3", "--url", redis_url)
    assert (
        summary.returncode == 0 and summary.stdout.startswith("sweep: ") and summary.stdout.count("\n") == 1
    )


@pytest.mark.parametrize("duration", ["bogus", "0d", "-1h", "5 parsecs"])
def test_bad_durations_exit_2(redis_url: str, duration: str) -> None:
    assert lgprune("sweep", "--keep", "3", "--idle-ttl", duration, "--url", redis_url).returncode == 2


def test_every_runs_until_sigterm_then_exits_cleanly(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "cron", 9)
    process = subprocess.Popen(
        [sys.executable, "-m", "lgprune", "sweep", "--keep", "2", "--every", "1s", "--url", redis_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        second = process.stdout.readline()  # a second sweep a second later
        assert first.startswith("sweep: ") and "deleted 7 checkpoints" in first
        assert second.startswith("sweep: ") and "deleted 0 checkpoints" in second
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    assert len(checkpoint_ids(saver, "cron")) == 2
