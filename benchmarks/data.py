"""One builder for every contender: threads written by the saver itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.redis import RedisSaver

from lgprune.facts import DENSE, WATERMARKS

MESSAGE = "x" * 400  # one chat message worth of text


@dataclass(frozen=True)
class Thread:
    """What the builder wrote: keys per checkpoint, oldest first."""

    thread_id: str
    checkpoint_keys: list[str]
    write_keys: list[list[str]]

    def _keys(self, first: int, last: int) -> list[str]:
        """The keys of checkpoints first..last-1 (oldest first): each checkpoint,
        its writes and, when it has writes, its registry zset (root namespace only)."""
        keys: list[str] = []
        for ckpt, writes in zip(self.checkpoint_keys[first:last], self.write_keys[first:last], strict=True):
            keys += [ckpt, *writes]
            if writes:
                keys.append(f"write_keys_zset:{self.thread_id}:__empty__:{ckpt.rsplit(':', 1)[1]}")
        return keys

    def kept_keys(self, keep: int) -> list[str]:
        """The keys of the newest `keep` checkpoints."""
        return self._keys(len(self.checkpoint_keys) - keep, len(self.checkpoint_keys))

    def doomed_keys(self, keep: int) -> list[str]:
        """Exactly the keys a keep-N prune deletes."""
        return self._keys(0, len(self.checkpoint_keys) - keep)


def build_thread(
    saver: RedisSaver, thread_id: str, checkpoints: int, writes: int = 2, messages: int = 4
) -> Thread:
    """A thread of `checkpoints` checkpoints with `writes` writes each, made by the saver.

    Each checkpoint holds `messages` messages of 400 characters (its inline
    channel values); each write holds one message.
    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
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


# --- many threads, fast: clones of one thread the saver wrote ------------------------

TEMPLATE = "~template~"  # a thread id no generated key or value holds otherwise
RAW_JSON = "return redis.call('JSON.GET', KEYS[1])"  # the document's text, as stored

# KEYS: none. ARGV: first, count, thread id format (one %d), the stamps old0,
# old_step, new0, new_step, olds, gap, then items of four: kind ('json' |
# 'string' | 'zset'), key, value, score; in key and value \1 stands for the
# thread id and \2 for the 12 hex digits that end every checkpoint id, and in
# values \3<k> (see Stamps) for the checkpoint_ts of the template's k-th
# checkpoint (oldest first): thread t's checkpoint k < olds gets old0 + t *
# old_step + k * gap, a later one new0 + t * new_step + (k - olds) * gap.
# Writes threads first .. first+count-1; returns count.
CLONE = """
local first, count, fmt = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local old0, old_step = tonumber(ARGV[4]), tonumber(ARGV[5])
local new0, new_step = tonumber(ARGV[6]), tonumber(ARGV[7])
local olds, gap = tonumber(ARGV[8]), tonumber(ARGV[9])
for t = first, first + count - 1 do
  local thread = string.format(fmt, t):gsub('%%', '%%%%')
  local node = string.format('%012x', t)
  local function ts(k)
    k = tonumber(k)
    if k < olds then
      return string.format('%.3f', old0 + t * old_step + k * gap)
    end
    return string.format('%.3f', new0 + t * new_step + (k - olds) * gap)
  end
  for i = 10, #ARGV, 4 do
    local key = ARGV[i + 1]:gsub('\\1', thread):gsub('\\2', node)
    local value = ARGV[i + 2]:gsub('\\1', thread):gsub('\\2', node):gsub('\\3(%d+)', ts)
    if ARGV[i] == 'json' then
      redis.call('JSON.SET', key, '$', value)
    elseif ARGV[i] == 'string' then
      redis.call('SET', key, value)
    else
      redis.call('ZADD', key, ARGV[i + 3], value)
    end
  end
end
return count
"""


@dataclass(frozen=True)
class Clones:
    """Threads `fmt % i` for i < count, each a copy of one template thread with its
    own checkpoint ids (the template's, ending in i as 12 hex digits)."""

    fmt: str
    count: int
    items: list[tuple[str, bytes, bytes, float]]  # kind, key, value, score with \1 and \2

    def thread_ids(self) -> list[str]:
        return [self.fmt % i for i in range(self.count)]

    def newest(self, keep: int) -> set[bytes]:
        """The `keep` newest template checkpoint ids (their first 24 characters), for `keys`."""
        ids = {key.split(b"__empty__:", 1)[1][:24] for kind, key, _, _ in self.items if kind == "json"}
        return set(sorted(ids)[-keep:])

    def keys(self, i: int, keep_checkpoints: set[bytes] | None = None) -> dict[bytes, bytes]:
        """Thread i's keys and values (JSON text, string or zset member) as written.

        With keep_checkpoints (template ids' first 24 characters), only the keys
        that stay when those checkpoints stay, plus the latest pointer."""
        thread, node = (self.fmt % i).encode(), b"%012x" % i
        out = {}
        for kind, key, value, _ in self.items:
            if keep_checkpoints is not None and kind != "string":
                cid = key.split(b"__empty__:", 1)[1][:24]
                if cid not in keep_checkpoints:
                    continue
            out[key.replace(b"\1", thread).replace(b"\2", node)] = value.replace(b"\1", thread).replace(
                b"\2", node
            )
        return out


def template_items(
    client: redis.Redis, per_thread: int, *, writes: int = 1
) -> list[tuple[str, bytes, bytes, float]]:
    """What the saver writes for one thread of `per_thread` checkpoints with `writes`
    writes each, as items for `clone_items` (the template's keys are deleted)."""
    saver = RedisSaver(redis_client=client)
    saver.setup()  # also starts the saver's write registry (write_keys_zset)
    template = build_thread(saver, TEMPLATE, per_thread, writes=writes, messages=1)
    ids = [key.rsplit(":", 1)[1] for key in template.checkpoint_keys]

    def placeholders(raw: object) -> bytes:
        assert isinstance(raw, bytes)
        text = raw.replace(TEMPLATE.encode(), b"\1")
        for cid in ids:
            text = text.replace(cid.encode(), cid[:24].encode() + b"\2")
        return text

    items: list[tuple[str, bytes, bytes, float]] = []
    template_keys = list(client.scan_iter(match=f"*{TEMPLATE}*", count=1000))
    for key in template_keys:
        kind = client.type(key)
        if kind == b"ReJSON-RL":
            items.append(("json", placeholders(key), placeholders(client.eval(RAW_JSON, 1, key)), 0))
        elif kind == b"string":
            items.append(("string", placeholders(key), placeholders(client.get(key)), 0))
        else:
            members: list[tuple[bytes, float]] = client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
            for member, score in members:
                items.append(("zset", placeholders(key), placeholders(member), score))
    client.delete(*template_keys)
    return items


CHECKPOINT_TS = re.compile(rb'"checkpoint_ts":-?[0-9.eE+-]+')


@dataclass(frozen=True)
class Stamps:
    """The checkpoint_ts CLONE gives items whose values hold \\3<k> placeholders:
    thread t's checkpoint k < olds gets old0 + t * old_step + k * gap, a later one
    new0 + t * new_step + (k - olds) * gap. Items without placeholders keep theirs."""

    old0: float = 0.0
    old_step: float = 0.0
    new0: float = 0.0
    new_step: float = 0.0
    olds: int = 0
    gap: float = 60_000.0


def stamped(items: list[tuple[str, bytes, bytes, float]]) -> list[tuple[str, bytes, bytes, float]]:
    """Template items whose checkpoint_ts are placeholders \\3<k> (k: the checkpoint's
    rank, oldest first), for `clone_items` with its Stamps."""
    ids = sorted({key.split(b"__empty__:", 1)[1][:24] for kind, key, _, _ in items if kind == "json"})
    out: list[tuple[str, bytes, bytes, float]] = []
    for kind, key, value, score in items:
        if kind == "json" and CHECKPOINT_TS.search(value):
            k = ids.index(key.split(b"__empty__:", 1)[1][:24])
            value = CHECKPOINT_TS.sub(b'"checkpoint_ts":\x03' + str(k).encode(), value, count=1)
        out.append((kind, key, value, score))
    return out


def clone_items(
    client: redis.Redis,
    items: list[tuple[str, bytes, bytes, float]],
    count: int,
    fmt: str,
    stamps: Stamps = Stamps(),
) -> Clones:
    """Threads `fmt % i` for i < count, each a copy of the template `items` (stamped)."""
    per_call = max(1, 4000 // len(items))
    args = [part for item in items for part in item]
    stamp_args = (stamps.old0, stamps.old_step, stamps.new0, stamps.new_step, stamps.olds, stamps.gap)
    for first in range(0, count, per_call):
        client.eval(CLONE, 0, first, min(per_call, count - first), fmt, *stamp_args, *args)
    return Clones(fmt, count, items)


def clone_threads(
    client: redis.Redis, count: int, per_thread: int, *, writes: int = 1, fmt: str = "user:%d:chat"
) -> Clones:
    """`count` threads of `per_thread` checkpoints with `writes` writes each, fast:
    the saver writes one template thread, a server-side script copies it per thread."""
    return clone_items(client, template_items(client, per_thread, writes=writes), count, fmt)


def root_checkpoints(client: redis.Redis, thread_id: str) -> int:
    """How many root checkpoints the thread holds, counted key by key."""
    prefix = f"checkpoint:{thread_id}:__empty__:".encode()
    glob = "".join("\\" + c if c in "*?[]\\" else c for c in prefix.decode()) + "*"
    return sum(1 for k in client.scan_iter(match=glob, count=1000) if b":" not in k[len(prefix) :])


def lgprune_keys(client: redis.Redis) -> set[bytes]:
    """The keys of lgprune's own a completed sweep may leave: its watermarks, and the notes
    of where a pass's threads are (see How it works), which expire."""
    own = {WATERMARKS.encode()} if client.exists(WATERMARKS) else set()
    notes = client.scan_iter(match=f"{DENSE}:*:placed", count=10_000)
    return own | {k for k in notes if int(client.ttl(k)) > 0}
