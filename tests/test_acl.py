"""Least privilege: the README's two users. The runtime user can prune, sweep and read stats,
and no more (no other key, no FUNCTION LOAD); the install user loads the library."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import checkpoint_ids, lgprune, put_checkpoints, snapshot, uuid6_at
from langgraph.checkpoint.redis import RedisSaver
from test_incremental import DENSE, dense_keys, dense_millisecond, rule_mark
from test_result_cap import result_cap

from lgprune import LibraryInstallError, LibraryVersionError, Pruner
from lgprune.errors import LgpruneError
from lgprune.library import library_code, library_version

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_acl(user: str) -> list[str]:
    """The ACL SETUSER rules the README documents for `user`, as arguments."""
    block = re.search(rf"```\n(ACL SETUSER {re.escape(user)} .*?)\n```", README.read_text(), re.DOTALL)
    assert block, f"the README documents the ACL of {user}"
    words = shlex.split(block.group(1).replace("\\\n", " "))  # as redis-cli reads it: '(...)' is one
    return words[3:]  # after ACL SETUSER <user>


def user_client(r: redis.Redis, user: str) -> redis.Redis:
    rules = [rule.replace("<password>", "s3cret") for rule in readme_acl(user)]
    r.execute_command("ACL", "SETUSER", user, "reset", *rules)
    kwargs = r.connection_pool.connection_kwargs
    return redis.Redis(host=kwargs["host"], port=kwargs["port"], username=user, password="s3cret")


def user_url(r: redis.Redis, user: str) -> str:
    kwargs = r.connection_pool.connection_kwargs
    return f"redis://{user}:s3cret@{kwargs['host']}:{kwargs['port']}"


@pytest.fixture
def pruning_user(r: redis.Redis) -> Iterator[redis.Redis]:
    client = user_client(r, "lgprune")
    yield client
    client.close()
    r.execute_command("ACL", "DELUSER", "lgprune")


@pytest.fixture
def install_user(r: redis.Redis) -> Iterator[redis.Redis]:
    client = user_client(r, "lgprune-install")
    yield client
    client.close()
    r.execute_command("ACL", "DELUSER", "lgprune-install")


def test_the_install_user_loads_and_the_pruning_user_prunes_and_sweeps(
    r: redis.Redis, saver: RedisSaver, pruning_user: redis.Redis, install_user: redis.Redis
) -> None:
    put_checkpoints(saver, "t:1", 8)
    put_checkpoints(saver, "t:2", 8)
    assert Pruner(install_user).install() == library_version()
    pruner = Pruner(pruning_user)
    assert pruner.install() == library_version()  # finds it: a probe, no load
    assert pruner.prune("t:1", 3).checkpoints_deleted == 5
    assert pruner.sweep(3, orphans=True).checkpoints_deleted == 5
    assert pruner.stats(3).threads == 2
    assert [len(checkpoint_ids(saver, t)) for t in ("t:1", "t:2")] == [3, 3]


def test_the_pruning_user_sweeps_a_millisecond_denser_than_one_aggregate_may_read(
    r: redis.Redis, saver: RedisSaver, pruning_user: redis.Redis
) -> None:
    mark = dense_millisecond(r, saver)  # its threads are collected in a key of lgprune's own
    with result_cap(r, 60):
        result = Pruner(pruning_user, budget=100).sweep(1, margin=0)
    assert not result.unfinished and rule_mark(r) > mark and dense_keys(r) == []
    assert all(len(checkpoint_ids(saver, t)) == 1 for t in DENSE)


def runtime_rules_without_on_dense(command: str) -> list[str]:
    """The README's runtime rules, its selector of lgprune's own keys split in two: the
    watermarks with every command it grants, the dense keys without `command` (the root's
    UNLINK covers the saver's keys only)."""
    rules = [rule.replace("<password>", "s3cret") for rule in readme_acl("lgprune")]
    (own,) = [rule for rule in rules if rule.startswith("(")]
    keys, commands = own.strip("()").split(" +", 1)
    assert keys == "~lgprune:watermarks ~lgprune:dense:*" and command in commands.split(" +")
    dense = " +".join(c for c in commands.split(" +") if c != command)
    split = [f"(~lgprune:watermarks +{commands})", f"(~lgprune:dense:* +{dense})"]
    return [rule for rule in rules if rule != own] + split


@pytest.mark.parametrize(("command", "verb"), [("unlink", "delete"), ("hset", "write to"), ("hget", "read")])
def test_a_user_who_may_not_delete_the_dense_key_is_refused_before_collecting(
    r: redis.Redis, saver: RedisSaver, command: str, verb: str
) -> None:
    dense_millisecond(r, saver, DENSE[:16])  # the neighbours pruned first: 64 entries, one millisecond
    Pruner(r).install()
    rules = runtime_rules_without_on_dense(command)
    r.execute_command("ACL", "SETUSER", "no-write", "reset", *rules)
    kwargs = r.connection_pool.connection_kwargs
    client = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="no-write", password="s3cret")
    try:
        with client, result_cap(r, 60), pytest.raises(LgpruneError, match=f'may not {verb} "lgprune:dense:'):
            Pruner(client, budget=100).sweep(1, margin=0)
    finally:
        r.execute_command("ACL", "DELUSER", "no-write")
    assert dense_keys(r) == [] and all(len(checkpoint_ids(saver, t)) == 4 for t in DENSE[:16])


def test_the_pruning_user_cannot_load_or_delete_code(r: redis.Redis, pruning_user: redis.Redis) -> None:
    Pruner(r).install()
    for command in (
        ("FUNCTION", "LOAD", "REPLACE", library_code()),
        ("FUNCTION", "DELETE", "lgprune"),
        ("FUNCTION", "FLUSH"),
        ("FUNCTION", "RESTORE", b"x"),
        ("SCRIPT", "LOAD", "return 1"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            pruning_user.execute_command(*command)
    assert r.fcall("lgprune_version", 0) == library_version().encode()


def test_without_a_library_the_pruning_user_fails_in_one_line(
    r: redis.Redis, saver: RedisSaver, pruning_user: redis.Redis
) -> None:
    put_checkpoints(saver, "t", 4)
    with pytest.raises(LibraryInstallError, match=r"an administrator must run `lgprune install`") as raised:
        Pruner(pruning_user).prune("t", 1)
    assert "\n" not in str(raised.value)
    out = lgprune("prune", "t", "--keep", "1", "--url", user_url(r, "lgprune"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "an administrator must run `lgprune install`" in out.stderr and "s3cret" not in out.stderr
    assert len(checkpoint_ids(saver, "t")) == 4


def test_a_newer_library_no_lgprune_package_built_is_not_run(
    r: redis.Redis, saver: RedisSaver, install_user: redis.Redis
) -> None:
    """Someone who could load functions planted a fake 'lgprune 0.9.0': never downgraded
    before, it ran with the rights of the next caller (an administrator's prune)."""
    put_checkpoints(saver, "t", 4)
    fake = library_code().replace(f"local VERSION = '{library_version()}'", "local VERSION = '0.9.0'")
    r.function_load(fake, replace=True)
    with pytest.raises(LibraryVersionError, match=r"no lgprune package built it.*lgprune install --force"):
        Pruner(r).prune("t", 1)
    assert len(checkpoint_ids(saver, "t")) == 4
    out = lgprune("install", "--force", "--url", user_url(r, "lgprune-install"))
    assert out.returncode == 0, out.stderr
    assert r.fcall("lgprune_version", 0) == library_version().encode()
    assert Pruner(r).prune("t", 1).checkpoints_deleted == 3


def test_the_pruning_user_cannot_touch_other_keys(r: redis.Redis, pruning_user: redis.Redis) -> None:
    r.set("session:42", "secret")
    r.json().set("orders:1", "$", {"thread_id": "t"})
    for command in (
        ("GET", "session:42"),
        ("UNLINK", "session:42"),
        ("JSON.GET", "orders:1"),
        ("DEL", "orders:1"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("EVAL", "return 1", "0"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            pruning_user.execute_command(*command)
    Pruner(r).install()
    # nor through a function: scripts run with the caller's permissions
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission|noperm"):
        pruning_user.fcall(
            "lgprune_thread", 0, "t", 1, "CHECKPOINT_PREFIX", "session", "WRITE_PREFIX", "orders"
        )
    assert r.get("session:42") == b"secret" and r.exists("orders:1")


def test_the_pruning_user_writes_only_lgprunes_own_keys(r: redis.Redis, pruning_user: redis.Redis) -> None:
    # its HSET, ZADD and EXPIRE reach lgprune's keys only: on the saver's, the ACL refuses them
    before = {k: r.dump(k) for k in r.scan_iter()}
    for command in (
        ("HSET", "checkpoint:t:__empty__:1", "f", "v"),
        ("ZADD", "write_keys_zset:t:__empty__:1", "0", "x"),
        ("EXPIRE", "checkpoint_latest:t:__empty__", "1"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            pruning_user.execute_command(*command)
    assert {k: r.dump(k) for k in r.scan_iter()} == before
    pruning_user.execute_command("ZADD", "lgprune:dense:acl-test", "0", "x")  # its own: allowed
    assert pruning_user.execute_command("UNLINK", "lgprune:dense:acl-test") == 1


def test_a_sweep_never_reads_what_a_foreign_latest_pointer_names(
    r: redis.Redis, saver: RedisSaver, pruning_user: redis.Redis
) -> None:
    # keys under the pointers' prefix whose values name keys the user may not read
    for i in range(200):
        put_checkpoints(saver, f"t{i}", 3, writes=1)
    for i in range(40):
        r.set(f"checkpoint_latest:junk{i}", f"session:{i}")
        r.json().set(f"session:{i}", "$", {"thread_id": "secret"})
    Pruner(r).install()
    result = Pruner(pruning_user, budget=100).sweep(1)
    assert result.threads_visited == 200
    assert all(len(checkpoint_ids(saver, f"t{i}")) == 1 for i in range(200))
    assert all(r.exists(f"session:{i}") for i in range(40))


def test_an_orphan_the_user_may_not_delete_fails_the_sweep_before_any_delete(
    r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 3, writes=1)
    gone = uuid6_at(time.time() * 1000 - 3_600_000)
    r.set("checkpoint_latest:gone:__empty__", f"checkpoint:gone:__empty__:{gone}")  # its checkpoint is gone
    Pruner(r).install()
    rules = [
        "%R" + rule if rule == "~checkpoint_latest:*" else rule
        for rule in (rule.replace("<password>", "s3cret") for rule in readme_acl("lgprune"))
    ]
    r.execute_command("ACL", "SETUSER", "pointers-ro", "reset", *rules)
    kwargs = r.connection_pool.connection_kwargs
    client = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="pointers-ro", password="s3cret")
    try:
        before = snapshot(r)
        with client, pytest.raises(LgpruneError, match="may not delete"):
            Pruner(client).sweep(10, orphans=True, grace=0)
        assert snapshot(r) == before
    finally:
        r.execute_command("ACL", "DELUSER", "pointers-ro")
