"""What a newcomer tripped on at the command line (issue 19), each as a real process."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from helpers import checkpoint_ids, lgprune, put_checkpoints, put_unreadable_thread
from langgraph.checkpoint.redis import RedisSaver

from lgprune import Pruner
from lgprune.durations import elapsed
from lgprune.errors import IndexMissingError, InvalidArgumentError


def test_help_keeps_the_extras_quoted_and_flags_carry_no_bool_metavar() -> None:
    for command in ("redis", "serve", "sweep"):  # (lgprune is installed from a checkout, not PyPI)
        page = " ".join(lgprune(command, "--help").stdout.split())
        assert "pip install `." not in page and "<bool>" not in page
        assert "pip install '.[embedded]'" in page or "pip install '.[serve]'" in page, page


def test_the_command_list_says_each_command_whole() -> None:
    listed = lgprune("--help").stdout.split("Commands:", 1)[1].strip().splitlines()
    assert len(listed) == 7 and not [line for line in listed if line.rstrip().endswith("...")], listed


@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_malformed_url_never_shows_its_password(source: str) -> None:
    url = "redis://:S3cr3tPassw0rd@127.0.0.1:notaport"
    args = ["prune", "t", "--keep", "1"] + (["--url", url] if source == "flag" else [])
    out = lgprune(*args, env={"REDIS_URL": url} if source == "env" else {})
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "S3cr3tPassw0rd" not in out.stderr + out.stdout and "***" in out.stderr
    assert ("$REDIS_URL" if source == "env" else "--url") in out.stderr


def test_an_unreachable_url_never_shows_its_password() -> None:
    out = lgprune("sweep", "--keep", "1", "--url", "redis://admin:S3cr3tPassw0rd@127.0.0.1:1/0")
    assert out.returncode == 1 and "S3cr3tPassw0rd" not in out.stderr + out.stdout


def test_a_database_other_than_0_is_refused_in_one_line(redis_url: str, saver: RedisSaver) -> None:
    """RediSearch indexes serve database 0 only (FT.CREATE is refused elsewhere, and an index
    of database 0 lists the keys of every database): lgprune would count and prune wrong."""
    put_checkpoints(saver, "t", 6)
    for args in (["prune", "t", "--keep", "2"], ["stats"], ["sweep", "--keep", "2"]):
        out = lgprune(*args, "--url", redis_url + "/3")
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert "database 3" in out.stderr and "database 0 only" in out.stderr
    assert len(checkpoint_ids(saver, "t")) == 6


def test_serve_on_a_busy_port_says_so_in_one_line(redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = lgprune("serve", "--url", redis_url, "--port", str(busy.getsockname()[1]))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "cannot listen on 127.0.0.1" in out.stderr and "in use" in out.stderr
    assert "INFO" not in out.stderr and "ERROR" not in out.stderr


def test_every_zero_is_too_short_and_grace_zero_is_taken(redis_url: str, saver: RedisSaver) -> None:
    out = lgprune("sweep", "--keep", "1", "--every", "0s", "--url", redis_url)
    assert out.returncode == 2 and "at least 1s" in out.stderr and "not a duration" not in out.stderr
    put_checkpoints(saver, "t", 3)
    out = lgprune("sweep", "--keep", "1", "--orphans", "--grace", "0", "--url", redis_url)
    assert out.returncode == 0, out.stderr
    assert len(checkpoint_ids(saver, "t")) == 1


def test_stats_totals_do_not_depend_on_top_and_text_matches_json(redis_url: str, saver: RedisSaver) -> None:
    for i in range(12):
        put_checkpoints(saver, f"s:{i}", 4 + i * 3, writes=1 + i % 3)
    runs = [
        json.loads(lgprune("stats", "--top", str(top), "--json", "--url", redis_url).stdout) for top in (1, 9)
    ]
    for key in ("threads", "checkpoints", "writes", "sweep_checkpoints", "sweep_keys", "sweep_bytes"):
        assert runs[0][key] == runs[1][key], key
    text = lgprune("stats", "--top", "3", "--url", redis_url).stdout
    found = re.search(r"would delete (\d+) checkpoints \((\d+) keys, about [\d.]+ MiB, (\d+) bytes\)", text)
    assert found, text
    assert [int(g) for g in found.groups()] == [
        runs[0]["sweep_checkpoints"],
        runs[0]["sweep_keys"],
        runs[0]["sweep_bytes"],
    ]


@pytest.mark.parametrize(("thread_id", "shown"), [("", "''"), (" lead", "' lead'")])
def test_ids_are_quoted_and_counts_agree_in_number(
    redis_url: str, r: redis.Redis, saver: RedisSaver, thread_id: str, shown: str
) -> None:
    out = lgprune("prune", thread_id, "--keep", "5", "--url", redis_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"thread {shown}: no checkpoints found"), out.stdout
    put_checkpoints(saver, "one", 2)
    out = lgprune("prune", "one", "--keep", "1", "--url", redis_url)
    assert "deleted 1 checkpoint, 2 writes" in out.stdout and "kept 1 checkpoint (" in out.stdout


def test_the_quick_starts_sample_result_is_what_keep_10_gives(r: redis.Redis, saver: RedisSaver) -> None:
    """The README's sample is the demo's chat thread (12 turns) pruned to 10, not the keep-5 numbers."""
    from langchain_core.messages import HumanMessage

    from lgprune import Pruner
    from lgprune.demo import chat_app

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    sample = re.search(
        r'prune\("user:42:chat", keep=10\).*?'
        r"checkpoints_deleted=(\d+), writes_deleted=(\d+), keys_deleted=(\d+)",
        readme,
        re.DOTALL,
    )
    assert sample, "the quick start shows a sample result"
    app = chat_app(saver)
    for turn in range(12):
        app.invoke(
            {"messages": [HumanMessage(content=f"turn {turn}")]},
            {"configurable": {"thread_id": "user:42:chat"}},
        )
    result = Pruner(r).prune("user:42:chat", keep=10)
    assert [int(n) for n in sample.groups()] == [
        result.checkpoints_deleted,
        result.writes_deleted,
        result.keys_deleted,
    ]


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("redis://:S3/cret@127.0.0.1:16399", ["S3", "cret"]),  # a "/" ends redis-py's host part
        ("redis://127.0.0.1:x?password=S3cret", ["S3cret"]),
        ("redis://user:pa ss/x@127.0.0.1:1", ["pa ss", "ss/x"]),
    ],
)
def test_a_url_redis_py_cannot_parse_never_shows_its_password(url: str, secrets: list[str]) -> None:
    for args in (["stats", "--url", url], ["serve", "--url", url, "--port", "1"]):
        out = lgprune(*args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert not any(secret in out.stderr + out.stdout for secret in secrets), out.stderr
        assert "***" in out.stderr and "127.0.0.1" in out.stderr


def test_a_protocol_redis_does_not_speak_is_a_usage_error(redis_url: str) -> None:
    out = lgprune("stats", "--url", f"{redis_url}?protocol=9")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "protocol 9" in out.stderr, out.stderr
    out = lgprune("prune", "t", "--keep", "1", "--url", f"{redis_url}?foo=bar")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "option 'foo'" in out.stderr, out.stderr


@pytest.mark.parametrize("given", ["\u0663\u0660d", "nan", "-inf", "1e999"])
def test_durations_are_ascii_numbers(redis_url: str, given: str) -> None:
    out = lgprune("sweep", "--keep", "3", "--idle-ttl", given, "--url", redis_url)
    assert out.returncode == 2 and "--idle-ttl" in out.stderr, out.stderr


def test_stats_on_a_server_the_saver_never_set_up_fails_in_one_line(redis_url: str, r: redis.Redis) -> None:
    out = lgprune("stats", "--url", redis_url)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert '"checkpoint" does not exist' in out.stderr and "setup()" in out.stderr, out.stderr
    assert "unexpected" not in out.stderr


def test_the_quick_start_reproduces_on_the_seeded_demo_threads(redis_url: str, r: redis.Redis) -> None:
    """The quick start's commands, run as written: seed with the demo, prune keep 10, read the
    README's numbers."""
    import subprocess
    import sys

    from lgprune import Pruner

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") : readme.index("### Command line")]
    assert "python -m lgprune.demo --seed redis://localhost:6379" in quick_start
    seeded = subprocess.run(
        [sys.executable, "-m", "lgprune.demo", "--seed", redis_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr
    sample = re.search(r"checkpoints_deleted=(\d+), writes_deleted=(\d+), keys_deleted=(\d+)", quick_start)
    assert sample
    result = Pruner(r).prune("user:42:chat", keep=10)
    assert [int(n) for n in sample.groups()] == [
        result.checkpoints_deleted,
        result.writes_deleted,
        result.keys_deleted,
    ]


def test_a_thread_id_that_is_not_utf8_is_a_usage_error(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 3)
    out = lgprune("prune", os.fsdecode(b"\xff\xfe"), "--keep", "1", "--url", redis_url)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "not valid UTF-8" in out.stderr and "unexpected" not in out.stderr
    assert len(checkpoint_ids(saver, "t")) == 3


@pytest.mark.parametrize("command", [["prune", "t", "--keep", "1"], ["sweep", "--keep", "1"], ["stats"]])
def test_a_layout_the_store_has_no_index_for_is_a_usage_error(
    redis_url: str, saver: RedisSaver, command: list[str]
) -> None:
    put_checkpoints(saver, "t", 3)
    out = lgprune(*command, "--layout", "js", "--url", redis_url)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "pass --layout python" in out.stderr and "LAYOUT" not in out.stderr
    assert len(checkpoint_ids(saver, "t")) == 3


def test_the_python_api_names_its_own_arguments(r: redis.Redis, saver: RedisSaver) -> None:
    with pytest.raises(IndexMissingError) as wrong:
        Pruner(r, layout="js").prune("t", 1)
    assert 'pass layout="python"' in str(wrong.value) and "LAYOUT" not in str(wrong.value)
    with pytest.raises(InvalidArgumentError) as js_prefix:
        Pruner(r, layout="js", checkpoint_write_prefix="w").prune("t", 1)
    assert "checkpoint_write_prefix" in str(js_prefix.value) and "WRITE_PREFIX" not in str(js_prefix.value)


def test_times_below_a_second_print_in_ms_and_a_dry_run_says_would_prune(
    redis_url: str, saver: RedisSaver
) -> None:
    assert (elapsed(0.028), elapsed(0.9994), elapsed(1.44)) == ("28 ms", "999 ms", "1.4 s")
    for i in range(3):
        put_checkpoints(saver, f"t{i}", 4)
    dry = lgprune("sweep", "--keep", "1", "--dry-run", "--url", redis_url).stdout
    assert "would prune 3," in dry and "pruned" not in dry, dry
    assert re.search(r" in 1 call, \d+ ms\n$", dry), dry
    done = lgprune("sweep", "--keep", "1", "--url", redis_url).stdout
    assert "3 pruned," in done and "would" not in done, done


def test_the_progress_line_shows_counts_and_no_percentage_it_cannot_know(
    redis_url: str, saver: RedisSaver
) -> None:
    if shutil.which("script") is None:
        pytest.skip("needs script(1) for a terminal")
    for i in range(77):
        put_checkpoints(saver, f"user:{i}", 3, writes=0)
    command = f"{sys.executable} -m lgprune sweep --keep 2 --budget 40 --url {redis_url}"
    shown = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "77 threads, " in shown and "%" not in shown, shown


def test_a_thread_a_sweep_cannot_prune_is_named_in_its_summary(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    put_unreadable_thread(r, saver, "bad")
    put_checkpoints(saver, "good", 4, writes=1)
    out = lgprune("sweep", "--keep", "1", "--url", redis_url)
    assert out.returncode == 0, out.stderr
    assert "could not prune 1 thread, left as stored: 'bad': BADDATA" in out.stdout, out.stdout


def test_the_default_url_unreachable_hints_at_url_and_redis_url() -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("localhost", 6379)) == 0:
            pytest.skip("a server answers on localhost:6379")
    out = lgprune("prune", "t", "--keep", "1", env={"REDIS_URL": ""})
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "--url" in out.stderr and "$REDIS_URL" in out.stderr
    given = lgprune("prune", "t", "--keep", "1", "--url", "redis://127.0.0.1:1")
    assert given.returncode == 1 and "$REDIS_URL" not in given.stderr
    check = lgprune("check", env={"REDIS_URL": ""})
    assert check.returncode == 1 and "--url" in check.stdout and "$REDIS_URL" in check.stdout, check.stdout
