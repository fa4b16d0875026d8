"""The drivers: run command sequences (the protocol's generators) over sync and async clients.

Each operation is a generator that yields Redis commands (tuples) and is sent
back each reply, or the `ResponseError` the command raised. `run` and `arun`
drive one over a `redis.Redis` or a `redis.asyncio.Redis`; `Pruner` and
`AsyncPruner` only call them.

One yielded value is not a Redis command: `INSTALL` asks the driver to load
the library again (the server lost it). The driver does that once for all
the calls in flight on its client, then sends back None.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from redis.exceptions import ResponseError

T = TypeVar("T")
Command = tuple[Any, ...]
Steps = Generator[Command, Any, T]

INSTALL: Command = ("lgprune: install the library",)


def run(steps: Steps[T], execute: Callable[..., Any], install: Callable[[], object] | None = None) -> T:
    """Drive `steps` with a synchronous `execute(*command)` and `install()`."""
    try:
        command = next(steps)
        while True:
            reply: Any = None
            if command is INSTALL:
                if install is None:
                    raise RuntimeError("these steps need a driver that can install the library")
                install()
            else:
                try:
                    reply = execute(*command)
                except ResponseError as error:
                    reply = error
            command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun(
    steps: Steps[T],
    execute: Callable[..., Awaitable[Any]],
    install: Callable[[], Awaitable[object]] | None = None,
) -> T:
    """Drive `steps` with an asynchronous `execute(*command)` and `install()`."""
    try:
        command = next(steps)
        while True:
            reply: Any = None
            if command is INSTALL:
                if install is None:
                    raise RuntimeError("these steps need a driver that can install the library")
                await install()
            else:
                try:
                    reply = await execute(*command)
                except ResponseError as error:
                    reply = error
            command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
