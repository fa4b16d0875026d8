"""Least privilege: the ACL in the README is enough to install, prune and sweep, and no more."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import checkpoint_ids, put_checkpoints
from langgraph.checkpoint.redis import RedisSaver

from lgprune import Pruner

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_acl() -> list[str]:
    """The ACL SETUSER rules the README documents, as arguments."""
    block = re.search(r"```\n(ACL SETUSER lgprune .*?)\n```", README.read_text(), re.DOTALL)
    assert block, "the README documents the pruning user's ACL"
    words = block.group(1).replace("\\\n", " ").split()
    return words[3:]  # after ACL SETUSER lgprune


@pytest.fixture
def pruning_user(r: redis.Redis) -> Iterator[redis.Redis]:
    rules = [rule.replace("<password>", "s3cret") for rule in readme_acl()]
    r.execute_command("ACL", "SETUSER", "lgprune", *rules)
    kwargs = r.connection_pool.connection_kwargs
    client = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="lgprune", password="s3cret")
    yield client
    client.close()
    r.execute_command("ACL", "DELUSER", "lgprune")


def test_the_pruning_user_can_install_prune_and_sweep(
    r: redis.Redis, saver: RedisSaver, pruning_user: redis.Redis
) -> None:
    put_checkpoints(saver, "t:1", 8)
    put_checkpoints(saver, "t:2", 8)
    pruner = Pruner(pruning_user)
    assert pruner.install()
    assert pruner.prune("t:1", 3).checkpoints_deleted == 5
    assert pruner.sweep(3, orphans=True).checkpoints_deleted == 5
    assert pruner.stats(3).threads == 2
    assert [len(checkpoint_ids(saver, t)) for t in ("t:1", "t:2")] == [3, 3]


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
    Pruner(pruning_user).install()
    # nor through a function: scripts run with the caller's permissions
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission|noperm"):
        pruning_user.fcall(
            "lgprune_thread", 0, "t", 1, "CHECKPOINT_PREFIX", "session", "WRITE_PREFIX", "orders"
        )
    assert r.get("session:42") == b"secret" and r.exists("orders:1")
