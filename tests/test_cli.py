"""The command line, run as a real process; and redis-cli alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
import redis
from helpers import checkpoint_ids, lgprune, put_checkpoints
from langgraph.checkpoint.redis import RedisSaver

from lgprune import __version__ as lgprune_version
from lgprune import embedded
from lgprune.embedded import EmbeddedRedis, free_port


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
    assert out.stdout.startswith("thread 'env': would delete 3 checkpoints, 6 writes")
    assert out.stdout.rstrip().endswith("(dry run: nothing was deleted)")
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
        "blobs_deleted",
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
        summary.returncode == 0 and summary.stdout.startswith("sweep (") and summary.stdout.count("\n") == 1
    )


@pytest.mark.parametrize("duration", ["bogus", "0d", "-1h", "5 parsecs", "30"])
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
        for line in (first, second):  # each round's line starts with its time
            stamp, rest = line.split(" ", 1)
            assert datetime.fromisoformat(stamp).tzinfo is not None and rest.startswith("sweep (")
        assert "deleted 7 checkpoints" in first and "deleted 0 checkpoints" in second
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    assert len(checkpoint_ids(saver, "cron")) == 2


def test_every_with_json_prints_one_object_per_round(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "cron", 5)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lgprune",
            "sweep",
            "--keep",
            "2",
            "--every",
            "1s",
            "--json",
            "--url",
            redis_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        rounds = [json.loads(process.stdout.readline()) for _ in range(2)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    assert [r["checkpoints_deleted"] for r in rounds] == [3, 0]
    assert all(datetime.fromisoformat(r["time"]).tzinfo is not None for r in rounds)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["prune", "t", "--keep", "1", "--url", "http://x"], 2, "--url"),
        (["prune", "t", "--keep", "1", "--url", "not a url"], 2, "--url"),
        (["sweep", "--keep", "1", "--checkpoint-prefix", ""], 2, "--checkpoint-prefix"),
        (["prune", "t", "--keep", "1", "--write-prefix", ""], 2, "--write-prefix"),
        (["sweep", "--keep", "1", "--budget", "5"], 2, "--budget"),
        (["sweep", "--keep", "1", "--grace", "5m"], 2, "--grace"),
        (["prune", "t", "--keep", "-1"], 2, "--keep"),
        (["sweep", "--keep", "1", "--idle-ttl", "soon"], 2, "--idle-ttl"),
        (["nonsense"], 2, "nonsense"),
        (["prune", "t", "--keep", "1", "--url", "redis://127.0.0.1:1"], 1, "connect"),
        (["stats", "--url", "redis://127.0.0.1:1"], 1, "connect"),
        (["sweep", "--keep", "1", "--url", "redis://127.0.0.1:1"], 1, "connect"),
        (["install", "--url", "redis://127.0.0.1:1"], 1, "connect"),
    ],
)
def test_every_error_is_one_line_naming_the_flag(args: list[str], code: int, says: str) -> None:
    out = lgprune(*args)
    assert out.returncode == code, out.stderr
    assert out.stderr.startswith("lgprune: ") and out.stderr.count("\n") == 1, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_library_errors_name_the_cli_flags(redis_url: str, r: redis.Redis) -> None:
    out = lgprune("prune", "t", "--keep", "1", "--url", redis_url)  # the saver was never set up
    assert out.returncode == 1 and "(--checkpoint-prefix, --write-prefix)" in out.stderr


def test_version_and_help_for_every_option() -> None:
    out = lgprune("--version")
    assert (out.returncode, out.stdout) == (0, f"lgprune {lgprune_version}\n")
    for command in ("prune", "sweep", "stats", "install", "redis", "serve"):
        page = lgprune(command, "--help", env={"COLUMNS": "200"})
        assert page.returncode == 0, page.stderr
        options = [line for line in page.stdout.splitlines() if line.lstrip("│ *").startswith("--")]
        assert options, page.stdout
        for line in options:  # a flag, its type, then words that explain it
            assert len(line.strip("│ ").split()) > 2, line


def test_a_thread_with_no_checkpoints_says_so(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "Wang1", 3)
    out = lgprune("prune", "wang1", "--keep", "1", "--url", redis_url)
    assert out.returncode == 0
    assert out.stdout == "thread 'wang1': no checkpoints found for this thread; nothing to do\n"
    assert len(checkpoint_ids(saver, "Wang1")) == 3


def test_a_dry_run_says_it_is_one(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 3)
    out = json.loads(lgprune("prune", "t", "--keep", "1", "--dry-run", "--json", "--url", redis_url).stdout)
    assert (out["dry_run"], out["checkpoints_deleted"], out["calls"]) == (True, 2, 1)
    line = lgprune("prune", "t", "--keep", "1", "--url", redis_url).stdout
    assert "deleted 2 checkpoints" in line and line.endswith("in 1 call\n")
    assert len(checkpoint_ids(saver, "t")) == 1


def test_lgprune_redis_runs_a_server_until_sigterm_and_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lgprune", "redis", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = f"redis://127.0.0.1:{port}"
        assert url in line, line
        client = redis.Redis.from_url(url)
        assert client.execute_command("MODULE", "LIST")  # search and JSON
        out = lgprune("install", "--url", url)
        assert out.returncode == 0, out.stderr
        assert [p.name for p in tmp_path.iterdir()] != []  # its data directory, while it runs
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert list(tmp_path.iterdir()) == []


def test_lgprune_redis_keeps_data_in_dir_across_restarts(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    for round_ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-m", "lgprune", "redis", "--port", str(port), "--dir", str(data)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None and str(port) in process.stdout.readline()
            client = redis.Redis(port=port)
            if round_ == 0:
                client.set("kept", "yes")
            else:
                assert client.get("kept") == b"yes"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0
        finally:
            process.kill()
    assert data.is_dir()


def test_lgprune_redis_on_a_busy_port_says_so_and_never_the_banner() -> None:
    with EmbeddedRedis() as server:
        out = lgprune("redis", "--port", str(server.port))
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f"port {server.port} of 127.0.0.1 is already in use" in out.stderr and out.stdout == ""


def test_the_start_up_probe_never_takes_another_servers_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the busy-port check (a server that binds in between): the probe asks the
    answering server its process id, and the other server's is not ours."""
    monkeypatch.setattr(embedded, "port_is_free", lambda port: True)
    with EmbeddedRedis() as other:
        late = EmbeddedRedis(port=other.port)
        with pytest.raises(RuntimeError, match="exited"):
            late.start()
        assert not late.running() and other.running()


def test_an_embedded_server_never_started_leaves_no_directory(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("lgprune-redis-*"))
    server = EmbeddedRedis()
    server.stop()
    del server
    assert set(Path(tempfile.gettempdir()).glob("lgprune-redis-*")) == before


def test_the_readmes_redis_cli_sample_is_laid_out_as_redis_cli_prints(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    """redis-cli prints one element a line: the README's sample shows the same lines."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (Debian: apt-get install redis-tools)")
    put_checkpoints(saver, "t", 8)
    assert lgprune("install", "--url", redis_url).returncode == 0
    out = subprocess.run(
        [cli, "-u", redis_url, "--no-raw", "FCALL", "lgprune_thread", "0", "t", "5"],
        capture_output=True,
        text=True,
        check=True,
    )
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    sample = readme.split("$ redis-cli FCALL lgprune_thread 0 'user:42:chat:2025' 5\n", 1)[1]
    sample = sample.split("```", 1)[0]

    def shape(text: str) -> list[str]:
        return [re.sub(r"\(integer\) \d+", "(integer) N", line) for line in text.strip("\n").splitlines()]

    assert shape(sample) == shape(out.stdout)
