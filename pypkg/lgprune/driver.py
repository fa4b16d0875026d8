"""The drivers: run command sequences (the protocol's generators) over sync and async clients.

Each operation is a generator that yields Redis commands (tuples) and is sent
back each reply, or the `ResponseError` the command raised. `run` and `arun`
drive one over a `redis.Redis` or a `redis.asyncio.Redis`.

Two yielded values are not Redis commands: `INSTALL` asks the driver to load
the library (the server lost it, or this is a first call), `FORCE_INSTALL` to
load it whatever the server holds. The driver does that once for all the calls
in flight on its client, then sends back None.

The shells (`Pruner` and `AsyncPruner`, the two drop-in savers) write each of
their methods once, as an `operation`: a function returning the method's
steps. A `SyncRunner` runs them and returns the result; an `AsyncRunner` returns
a coroutine of it. Only `_run`, which sends and loops, is written twice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from redis.exceptions import ResponseError

T = TypeVar("T")
P = ParamSpec("P")
D = TypeVar("D", bound="_Twin[Any, Any]")
Command = tuple[Any, ...]
Steps = Generator[Command, Any, T]

INSTALL: Command = ("lgprune: install the library",)
FORCE_INSTALL: Command = ("lgprune: install the library", "FORCE")


def run(steps: Steps[T], execute: Callable[..., Any], install: Callable[[bool], object] | None = None) -> T:
    """Drive `steps` with a synchronous `execute(*command)` and `install(force)`."""
    try:
        command = next(steps)
        while True:
            reply: Any = None
            if command is INSTALL or command is FORCE_INSTALL:
                if install is None:
                    raise RuntimeError("these steps need a driver that can install the library")
                install(command is FORCE_INSTALL)
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
    install: Callable[[bool], Awaitable[object]] | None = None,
) -> T:
    """Drive `steps` with an asynchronous `execute(*command)` and `install(force)`."""
    try:
        command = next(steps)
        while True:
            reply: Any = None
            if command is INSTALL or command is FORCE_INSTALL:
                if install is None:
                    raise RuntimeError("these steps need a driver that can install the library")
                await install(command is FORCE_INSTALL)
            else:
                try:
                    reply = await execute(*command)
                except ResponseError as error:
                    reply = error
            command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class SyncRunner:
    """A shell whose operations return their results."""

    def _run(self, make: Callable[[], Steps[T]]) -> T:
        """Run the steps `make()` returns (arguments are checked as it is called)."""
        raise NotImplementedError


class AsyncRunner:
    """A shell whose operations return coroutines of their results."""

    async def _run(self, make: Callable[[], Steps[T]]) -> T:
        """Run the steps `make()` returns (arguments are checked as it is called, on await)."""
        raise NotImplementedError


class _Twin(Generic[P, T]):
    """A method written once, as a function of the shell returning its steps."""

    def __init__(self, steps: Callable[Concatenate[Any, P], Steps[T]]) -> None:
        self.steps = steps
        functools.update_wrapper(cast(Any, self), steps)  # its name and docstring

    def _signature(self, instance: Any) -> inspect.Signature:
        """The bound method's signature: the steps' without `self`, returning what the
        method returns (as text: the annotations are)."""
        signature = inspect.signature(self.steps)
        result = str(signature.return_annotation).removeprefix("Steps[").removesuffix("]")
        return signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=self._returns(result, isinstance(instance, AsyncRunner)),
        )

    def _returns(self, result: str, asynchronous: bool) -> str:
        """What the method returns (when awaited), given what its steps return."""
        return result

    def _bind(self, instance: Any, call: Callable[..., Any]) -> Callable[..., Any]:
        functools.update_wrapper(call, self.steps)
        call.__signature__ = self._signature(instance)  # type: ignore[attr-defined]
        return call

    def _make(self, instance: Any, args: Any, kwargs: Any) -> Callable[[], Steps[T]]:
        return lambda: self.steps(instance, *args, **kwargs)


class operation(_Twin[P, T]):
    """On a `SyncRunner`, a method returning what the steps return; on an
    `AsyncRunner`, a coroutine method."""

    @overload
    def __get__(self: D, instance: None, owner: type[Any]) -> D: ...
    @overload
    def __get__(self, instance: SyncRunner, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, instance: AsyncRunner, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is None:
            return self

        def call(*args: Any, **kwargs: Any) -> Any:
            return instance._run(self._make(instance, args, kwargs))

        async def acall(*args: Any, **kwargs: Any) -> Any:  # (a coroutine function, as it says)
            return await instance._run(self._make(instance, args, kwargs))

        return self._bind(instance, acall if isinstance(instance, AsyncRunner) else call)


class listing(_Twin[P, list[T]]):
    """An `operation` whose steps return a list: on a `SyncRunner`, a method returning
    an iterator over it; on an `AsyncRunner`, an async iterator. Nothing runs until the
    first item is asked for."""

    def _returns(self, result: str, asynchronous: bool) -> str:
        item = result.removeprefix("list[").removesuffix("]")
        return f"AsyncIterator[{item}]" if asynchronous else f"Iterator[{item}]"

    @overload
    def __get__(self: D, instance: None, owner: type[Any]) -> D: ...
    @overload
    def __get__(self, instance: SyncRunner, owner: type[Any]) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, instance: AsyncRunner, owner: type[Any]) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is None:
            return self

        def items(*args: Any, **kwargs: Any) -> Iterator[T]:
            yield from instance._run(self._make(instance, args, kwargs))

        async def aitems(*args: Any, **kwargs: Any) -> AsyncIterator[T]:
            for item in await instance._run(self._make(instance, args, kwargs)):
                yield item

        return self._bind(instance, aitems if isinstance(instance, AsyncRunner) else items)
