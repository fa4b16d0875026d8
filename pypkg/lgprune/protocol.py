"""The protocol of the Lua functions, sans I/O: argument checking, FCALL arguments, replies."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis.exceptions import ReadOnlyError, ResponseError

from lgprune.driver import INSTALL, Steps
from lgprune.errors import (
    NO_FUNCTIONS,
    InvalidArgumentError,
    LgpruneError,
    ModulesMissingError,
    NoProgressError,
    ReadOnlyServerError,
    from_server_message,
)
from lgprune.facts import MAX_MANY, MIN_BUDGET, option
from lgprune.results import PruneResult, SweepResult, reply_fields, reply_pairs

ThreadId = str | bytes
Duration = timedelta | float
Result = PruneResult | SweepResult


LAYOUTS = ("python", "js")  # whose keys: langgraph-checkpoint-redis, or LangGraph.js's saver


@dataclass(frozen=True)
class Options:
    """Where the saver keeps its data, and how much one call may do. `layout`: "python",
    "js" (LangGraph.js's saver), or None: the one whose index exists."""

    checkpoint_prefix: str = "checkpoint"
    checkpoint_write_prefix: str = "checkpoint_write"
    budget: int | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in LAYOUTS:
            raise InvalidArgumentError(f"layout must be python, js or None, got {self.layout!r}")
        for name in ("checkpoint_prefix", "checkpoint_write_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
        if self.budget is not None:
            check_count("budget", self.budget, minimum=MIN_BUDGET)

    def arguments(self) -> list[str]:
        """The options as FCALL arguments (defaults left out)."""
        args: list[str] = []
        if self.checkpoint_prefix != "checkpoint":
            args += [option("CHECKPOINT_PREFIX"), self.checkpoint_prefix]
        if self.checkpoint_write_prefix != "checkpoint_write":
            args += [option("WRITE_PREFIX"), self.checkpoint_write_prefix]
        if self.budget is not None:
            args += [option("BUDGET"), str(self.budget)]
        if self.layout is not None:
            args += [option("LAYOUT"), self.layout]
        return args

    def indexes(self, layout: str) -> tuple[str, str]:
        """The checkpoint and write index names under `layout` (as a sweep reply names it)."""
        if layout == "js":
            return "checkpoints", "checkpoint_writes"
        return self.checkpoint_prefix, self.checkpoint_write_prefix


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """An int (not a bool, not a str) of at least `minimum`, or InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_thread_id(thread_id: object) -> ThreadId:
    """A str or bytes thread id; its content is checked by the library (a str must be
    encodable: one with lone surrogates names no thread the saver can have stored)."""
    if not isinstance(thread_id, (str, bytes)):
        raise InvalidArgumentError(f"thread id must be a string, got {thread_id!r}")
    if isinstance(thread_id, str):
        try:
            thread_id.encode()
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"thread id {thread_id!r} is not valid UTF-8; the saver cannot have stored it"
            ) from None
    return thread_id


def fcall_steps(function: str, args: list[Any]) -> Steps[Any]:
    """FCALL `function`; when the server lost the library, have the driver install it once
    and call again."""
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
            raise ModulesMissingError(NO_FUNCTIONS) from None
        if "function not found" not in message.lower() or attempt == 2:
            raise reply
        yield INSTALL
    raise AssertionError("unreachable")


def prune_steps(thread_id: object, keep: object, *, dry_run: bool, options: Options) -> Steps[PruneResult]:
    """Prune one thread, repeating lgprune_thread while it reports more to do.

    The arguments are checked here, before any command is sent.
    """
    args: list[Any] = [check_thread_id(thread_id), str(check_count("keep", keep))]
    args += options.arguments()
    if dry_run:
        args.append(option("DRY_RUN"))
    return _prune_loop(args, dry_run)


def calls_steps(function: str, args: list[Any], done_before: Result) -> Steps[Any]:
    """fcall_steps, with what the operation's earlier calls did (`done_before`) attached
    to an error as its `partial` when they did anything."""
    try:
        return (yield from fcall_steps(function, args))
    except LgpruneError as error:
        if done_before.calls:
            error.partial = done_before
        raise


def _prune_loop(args: list[Any], dry_run: bool) -> Steps[PruneResult]:
    result = PruneResult(dry_run=dry_run)
    while True:
        fields = reply_fields((yield from calls_steps("lgprune_thread", args, result)))
        result = result.plus_call(fields)
        if dry_run or not fields["more"]:  # (a dry run is one call: it deletes nothing to resume from)
            return result
        if not fields["keys_deleted"]:  # calling again would do the same
            error = NoProgressError(
                f"thread {args[0]!r} has more to prune, but the last call could delete nothing of it: "
                "one call's budget is too small for what comes next; the rest of the thread is left "
                "as it is: prune it with a larger budget"
            )
            error.partial = result if result.keys_deleted else None
            raise error


def many_steps(
    thread_ids: Iterable[object], keep: object, *, dry_run: bool, options: Options
) -> Steps[PruneResult]:
    """Prune several threads, up to 1,000 per call, resuming where a call stopped."""
    if isinstance(thread_ids, (str, bytes)):  # (a str is an Iterable of one-letter thread ids)
        raise InvalidArgumentError(f"thread_ids must be a list of thread ids, not one: [{thread_ids!r}]")
    ids = [check_thread_id(t) for t in thread_ids]
    tail = [str(check_count("keep", keep)), *options.arguments()]
    if dry_run:
        tail.append(option("DRY_RUN"))
    return _many_loop(ids, tail, dry_run)


def _many_loop(ids: list[ThreadId], tail: list[str], dry_run: bool) -> Steps[PruneResult]:
    result, start = PruneResult(dry_run=dry_run), 0
    while start < len(ids):
        batch = ids[start : start + MAX_MANY]
        reply = yield from calls_steps("lgprune_many", [tail[0], str(len(batch)), *batch, *tail[1:]], result)
        fields = reply_fields(reply)
        stop = fields["next"]  # 0, or the 1-based position of the thread the call stopped at
        # that thread goes on in the next call when this one deleted something; else (a dry
        # run, which counts a thread once, as far as one call can, or no progress) it is
        # left as it is and the calls go on after it
        resume = bool(stop and fields["keys_deleted"] and not dry_run)
        result = result.plus_call(fields, other_threads=True)
        start += (stop - 1 if resume else stop) if stop else len(batch)
    return result


def to_ms(name: str, value: Duration | None, *, zero: bool = False) -> int | None:
    """A positive duration (seconds or timedelta; with `zero`, 0 too) in whole milliseconds."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise InvalidArgumentError(
            f"{name} must be a timedelta or a number of seconds, got {value!r}"
            + (
                " (text such as '7d' is for the command line and the HTTP service)"
                if isinstance(value, str)
                else ""
            )
        )
    if seconds < 0 or (seconds == 0 and not zero):
        raise InvalidArgumentError(f"{name} must be a positive duration, got {value!r}")
    return int(seconds * 1000)


FULL_EVERY = timedelta(days=7)  # sweeps' default backstop: a full pass at least this often
FULL_EVERY_S = FULL_EVERY.total_seconds()


def sweep_steps(
    keep: object,
    *,
    dry_run: bool,
    options: Options,
    max_age: Duration | None = None,
    idle_ttl: Duration | None = None,
    orphans: bool = False,
    grace: Duration | None = None,
    full: bool = False,
    margin: Duration | None = None,
    full_every: Duration | None = None,
    on_progress: Callable[[SweepResult], object] | None = None,
) -> Steps[SweepResult]:
    """Sweep from cursor 0 until the server reports the pass done: incremental when
    a pass of the same rule completed before (and not `full` or `orphans`)."""
    if grace is not None and not orphans:
        raise InvalidArgumentError("grace applies to orphans only: pass orphans=True with it")
    args = [str(check_count("keep", keep)), *options.arguments()]
    durations = (
        ("MAX_AGE", max_age),
        ("IDLE_TTL", idle_ttl),
        ("GRACE", grace),
        ("MARGIN", margin),
        ("FULL_EVERY", full_every),
    )
    for flag, value in durations:
        ms = to_ms(flag.lower(), value, zero=flag in ("GRACE", "MARGIN"))  # grace 0: orphans of any age
        if ms is not None:
            args += [option(flag), str(ms)]
    if orphans:
        args.append(option("ORPHANS"))
    if full:
        args.append(option("FULL"))
    if dry_run:
        args.append(option("DRY_RUN"))
    return _sweep_loop(args, dry_run, on_progress)


def _sweep_loop(
    args: list[str], dry_run: bool, on_progress: Callable[[SweepResult], object] | None
) -> Steps[SweepResult]:
    started = time.monotonic()
    result, cursor, stalled = SweepResult(dry_run=dry_run), "0", 0
    while True:
        reply = yield from calls_steps("lgprune_sweep", [cursor, *args], result)
        before = result
        result = result.plus_call(reply_pairs(reply), time.monotonic() - started)
        stalled = stalled + 1 if result.cursor == cursor and result.keys_deleted == before.keys_deleted else 0
        if stalled >= 3:
            raise NoProgressError(f"the sweep made no progress at cursor {cursor}; nothing more was deleted")
        cursor = result.cursor
        if on_progress is not None:
            on_progress(result)
        if cursor == "0":
            return result
