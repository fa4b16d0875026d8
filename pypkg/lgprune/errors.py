"""The exceptions lgprune raises: one base class, one subclass per cause."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lgprune.facts import SWEEP_OPTIONS, THREAD_OPTIONS

if TYPE_CHECKING:
    from lgprune.results import PruneResult, SweepResult

NO_FUNCTIONS = "this server has no Redis Functions (FCALL): lgprune needs Redis 7 or newer"


class LgpruneError(Exception):
    """Base class: something lgprune could not do.

    The server call that failed deleted nothing (an error reply of the library means
    that). An operation of several calls (a large thread, many threads, a sweep) may
    have deleted something in the calls before it: `partial` then says what they did,
    else it is None.
    """

    partial: PruneResult | SweepResult | None = None


class InvalidArgumentError(LgpruneError, ValueError):
    """A thread id, keep count or option that lgprune refuses."""


class IndexMissingError(LgpruneError):
    """The saver's RediSearch index does not exist: run its setup() first."""


class ModulesMissingError(LgpruneError):
    """The server lacks the search or JSON module, or Redis Functions (Redis < 7)."""


class LibraryVersionError(LgpruneError):
    """The server holds an lgprune library this package cannot use."""


class LibraryInstallError(LgpruneError):
    """FUNCTION LOAD was refused (ACL, read-only replica, ...)."""


class MixedStoreError(LgpruneError):
    """Both savers' indexes (Python's and LangGraph.js's) cover the same keys: lgprune cannot
    tell whose a subgraph checkpoint is, so it prunes neither."""


class NoProgressError(LgpruneError):
    """The library says there is more to do but its last call did nothing: the rest is
    left as it is (for a thread, one call's budget is too small for what comes next)."""


class ReadOnlyServerError(LgpruneError):
    """The server is a read-only replica: prune on the primary."""


class BadDataError(LgpruneError):
    """A thread holds data lgprune cannot read (a key of another type than the saver
    writes, a document it cannot parse): nothing of it was deleted; a sweep names such a
    thread in `SweepResult.failed` and prunes the others."""


class NoPermissionError(LgpruneError):
    """The Redis user may not run a command or touch a key lgprune needs: grant it the
    README's ACL. Nothing was deleted."""


# The library's error codes ("LGPRUNE <CODE> <message>", ERROR_CODES in lua/src/10-core.lua)
# that have a class of their own; the others raise the base class.
CODES: dict[str, type[LgpruneError]] = {
    "BADARG": InvalidArgumentError,
    "NOINDEX": IndexMissingError,
    "NOMODULE": ModulesMissingError,
    "MIXED": MixedStoreError,
    "BADDATA": BadDataError,
    "NOPERM": NoPermissionError,
}


# The library's option names as the Python API spells its arguments: `LAYOUT js` is `layout="js"`.
PYTHON_NAMES = {name: name.lower() for name in THREAD_OPTIONS | SWEEP_OPTIONS} | {
    "WRITE_PREFIX": "checkpoint_write_prefix"
}
OPTION = re.compile(
    r"\b(" + "|".join(sorted(PYTHON_NAMES, key=len, reverse=True)) + r")\b(?: (python|js)\b)?"
)


def python_spelling(text: str) -> str:
    """A message of the library with its option names as the Python API's arguments."""
    return OPTION.sub(
        lambda m: PYTHON_NAMES[m[1]] + (f'="{m[2]}"' if m[2] else ""),
        text,
    )


def from_server_message(message: str) -> LgpruneError:
    """Map an error reply of the Lua library, by its code, to the matching exception,
    its message naming the Python API's arguments."""
    code, _, text = message.removeprefix("LGPRUNE ").strip().partition(" ")
    return CODES.get(code, LgpruneError)(python_spelling(text))
