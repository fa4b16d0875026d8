"""One builder for every contender: threads written by the saver itself."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.redis import RedisSaver

MESSAGE = "x" * 400  # one chat message worth of text


@dataclass(frozen=True)
class Thread:
    """What the builder wrote: keys per checkpoint, oldest first."""

    thread_id: str
    checkpoint_keys: list[str]
    write_keys: list[list[str]]

    def doomed_keys(self, keep: int) -> list[str]:
        """Exactly the keys a keep-N prune deletes (root namespace only)."""
        keys: list[str] = []
        for ckpt, writes in zip(self.checkpoint_keys[:-keep], self.write_keys[:-keep], strict=True):
            cid = ckpt.rsplit(":", 1)[1]
            keys += [ckpt, *writes, f"write_keys_zset:{self.thread_id}:__empty__:{cid}"]
        return keys


def build_thread(
    saver: RedisSaver, thread_id: str, checkpoints: int, writes: int = 2, messages: int = 4
) -> Thread:
    """A thread of `checkpoints` checkpoints with `writes` writes each, made by the saver.

    Each checkpoint holds `messages` messages of 400 characters (its inline
    channel values); each write holds one message.
    """
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    ckpt_keys: list[str] = []
    write_keys: list[list[str]] = []
    for step in range(checkpoints):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": [MESSAGE] * messages, "step": step}
        checkpoint["channel_versions"] = {"messages": step + 1, "step": step + 1}
        config = saver.put(config, checkpoint, {"source": "loop", "step": step, "parents": {}}, {})
        cid = config["configurable"]["checkpoint_id"]
        ckpt_keys.append(f"checkpoint:{thread_id}:__empty__:{cid}")
        task = f"task-{step}"
        if writes:
            saver.put_writes(config, [("messages", MESSAGE)] * writes, task_id=task)
        write_keys.append([f"checkpoint_write:{thread_id}:__empty__:{cid}:{task}:{i}" for i in range(writes)])
    return Thread(thread_id, ckpt_keys, write_keys)


def fresh(client: redis.Redis) -> RedisSaver:
    """An empty database with the saver's indexes."""
    client.flushall()
    saver = RedisSaver(redis_client=client)
    saver.setup()
    return saver
