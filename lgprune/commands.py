"""Command sequences, written once for the sync and async clients.

Each operation is a generator that yields Redis commands (tuples) and is sent
back each reply, or the `ResponseError` the command raised. `run` and `arun`
drive one over a `redis.Redis` or a `redis.asyncio.Redis`; `Pruner` and
`AsyncPruner` only call them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from redis.exceptions import ResponseError

T = TypeVar("T")
Command = tuple[Any, ...]
Steps = Generator[Command, Any, T]


def run(steps: Steps[T], execute: Callable[..., Any]) -> T:
    """Drive `steps` with a synchronous `execute(*command)`."""
    try:
        command = next(steps)
        while True:
            try:
                reply: Any = execute(*command)
            except ResponseError as error:
                reply = error
            command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun(steps: Steps[T], execute: Callable[..., Awaitable[Any]]) -> T:
    """Drive `steps` with an asynchronous `execute(*command)`."""
    try:
        command = next(steps)
        while True:
            try:
                reply: Any = await execute(*command)
            except ResponseError as error:
                reply = error
            command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
