"""LangGraph.js's real saver (@langchain/langgraph-checkpoint-redis), driven through Node.js:
tests/js/saver.mjs runs the graphs and reads everything back (see its head)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

JS_DIR = Path(__file__).parent / "js"
SAVER_PACKAGE = JS_DIR / "node_modules" / "@langchain" / "langgraph-checkpoint-redis"


def js_ready() -> str | None:
    """None when the JS saver can run here, else why not. Installs tests/js's locked
    packages (npm ci) when Node.js and npm are here and they are not."""
    if shutil.which("node") is None:
        return "no Node.js (CI installs Debian's nodejs and npm)"
    if not SAVER_PACKAGE.exists():
        if shutil.which("npm") is None:
            return "no npm to install tests/js's packages"
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            return f"npm ci failed in tests/js: {done.stderr.strip()[-300:]}"
    return None


def js(op: str, url: str, **request: Any) -> Any:
    """One request to tests/js/saver.mjs: its JSON answer."""
    done = subprocess.run(
        ["node", "saver.mjs"],
        cwd=JS_DIR,
        input=json.dumps({"op": op, "url": url, **request}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"saver.mjs {op} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def write(url: str, threads: list[tuple[str, int, str]]) -> None:
    """Run (thread id, turns, graph "chat" or "subgraph") through the JS saver."""
    js("write", url, threads=[{"id": t, "turns": n, "graph": g} for t, n, g in threads])


def read(url: str, threads: list[str]) -> dict[str, Any]:
    """Per thread, what the JS saver reads back (see saver.mjs)."""
    return dict(js("read", url, threads=threads)["threads"])


def owner(r: redis.Redis, key: bytes) -> str | None:
    """The thread a key of the JS saver belongs to by its content: a JSON document's
    thread_id, a writes registry's first write's."""
    kind = r.type(key)
    if kind == b"ReJSON-RL":
        found = r.json().get(key.decode(), "$.thread_id")
        return found[0] if found else None
    if kind == b"zset":
        first = r.zrange(key, 0, 0)
        return owner(r, first[0]) if first else None
    return None


def dumps(r: redis.Redis) -> dict[bytes, tuple[str | None, bytes | None]]:
    """Every key: its owner thread (see owner) and its DUMP."""
    return {key: (owner(r, key), r.dump(key)) for key in r.scan_iter(count=1000)}


def version_text(version: Any) -> str:
    """A channel version as the JS saver spells it in a blob key."""
    return str(int(version)) if isinstance(version, (int, float)) else str(version)


def thread_docs(r: redis.Redis, thread: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The JSON documents under `prefix` whose own thread_id is `thread`, by key."""
    docs = {}
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        if r.type(key) == b"ReJSON-RL":
            doc = r.json().get(key.decode())
            if isinstance(doc, dict) and doc.get("thread_id") == thread:
                docs[key.decode()] = doc
    return docs


def blobs_read_back(r: redis.Redis, thread: str) -> set[str]:
    """The blob keys the thread's stored checkpoints read back (by their channel_versions)."""
    wanted = set()
    for doc in thread_docs(r, thread, "checkpoint").values():
        ns = "" if doc["checkpoint_ns"] == "__empty__" else doc["checkpoint_ns"]
        for channel, version in doc["checkpoint"].get("channel_versions", {}).items():
            wanted.add(f"checkpoint_blob:{thread}:{ns}:{channel}:{version_text(version)}")
    return wanted


def unreferenced_blobs(r: redis.Redis, thread: str) -> list[str]:
    """The thread's blobs that no checkpoint of its namespace names in channel_versions."""
    return sorted(set(thread_docs(r, thread, "checkpoint_blob")) - blobs_read_back(r, thread))


@pytest.fixture(scope="session")
def js_saver() -> None:
    """Skips a test when the JS saver cannot run here."""
    why = js_ready()
    if why:
        pytest.skip(why)
