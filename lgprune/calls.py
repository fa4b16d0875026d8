"""Argument checking, FCALL arguments and reply handling for the Lua functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ReadOnlyError, ResponseError

from lgprune.commands import Steps
from lgprune.errors import (
    InvalidArgumentError,
    ModulesMissingError,
    ReadOnlyServerError,
    from_server_message,
)
from lgprune.library import install_steps
from lgprune.results import PruneResult, reply_fields

ThreadId = str | bytes


@dataclass(frozen=True)
class Options:
    """Where the saver keeps its data, and how much one call may do."""

    checkpoint_prefix: str = "checkpoint"
    checkpoint_write_prefix: str = "checkpoint_write"
    budget: int | None = None

    def __post_init__(self) -> None:
        for name in ("checkpoint_prefix", "checkpoint_write_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
        if self.budget is not None:
            check_count("budget", self.budget, minimum=1)

    def arguments(self) -> list[str]:
        """The options as FCALL arguments (defaults left out)."""
        args: list[str] = []
        if self.checkpoint_prefix != "checkpoint":
            args += ["CHECKPOINT_PREFIX", self.checkpoint_prefix]
        if self.checkpoint_write_prefix != "checkpoint_write":
            args += ["WRITE_PREFIX", self.checkpoint_write_prefix]
        if self.budget is not None:
            args += ["BUDGET", str(self.budget)]
        return args


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """An int (not a bool, not a str) of at least `minimum`, or InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_thread_id(thread_id: object) -> ThreadId:
    """A str or bytes thread id; its content is checked by the library."""
    if not isinstance(thread_id, (str, bytes)):
        raise InvalidArgumentError(f"thread id must be a string, got {thread_id!r}")
    return thread_id


def fcall_steps(function: str, args: list[Any]) -> Steps[Any]:
    """FCALL `function`, installing the library once if the server lost it."""
    for attempt in (1, 2):
        reply = yield ("FCALL", function, 0, *args)
        if not isinstance(reply, ResponseError):
            return reply
        message = str(reply)
        if message.startswith("LGPRUNE"):
            raise from_server_message(message) from None
        if isinstance(reply, ReadOnlyError):
            raise ReadOnlyServerError(
                "this server is a read-only replica: prune on the primary (the replica follows)"
            ) from None
        if "unknown command" in message.lower():
            raise ModulesMissingError(
                "this server has no Redis Functions (FCALL): lgprune needs Redis 7 or newer"
            ) from None
        if "function not found" not in message.lower() or attempt == 2:
            raise reply
        yield from install_steps()
    raise AssertionError("unreachable")


def prune_steps(thread_id: object, keep: object, *, dry_run: bool, options: Options) -> Steps[PruneResult]:
    """Prune one thread, repeating lgprune_thread while it reports more to do.

    The arguments are checked here, before any command is sent.
    """
    args: list[Any] = [check_thread_id(thread_id), str(check_count("keep", keep))]
    args += options.arguments()
    if dry_run:
        args.append("DRY_RUN")
    return _prune_loop(args, dry_run)


def _prune_loop(args: list[Any], dry_run: bool) -> Steps[PruneResult]:
    result = PruneResult()
    while True:
        fields = reply_fields((yield from fcall_steps("lgprune_thread", args)))
        result = result.plus_call(fields)
        if dry_run or not fields["more"] or not fields["keys_deleted"]:
            return result
