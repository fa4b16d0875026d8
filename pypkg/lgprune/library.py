"""The packaged Lua library: its text, its version, and how it gets installed."""

from __future__ import annotations

import hashlib
from functools import cache

from redis.exceptions import ResponseError

from lgprune.driver import Steps
from lgprune.errors import NO_FUNCTIONS, LibraryInstallError, LibraryVersionError, ModulesMissingError
from lgprune.facts import VERSION, library_file
from lgprune.results import as_text

LIBRARY_NAME = "lgprune"
BUILD_LINE = "local BUILD = 'dev'"


@cache
def library_build() -> str:
    """A short hash of the shipped file: what `FCALL lgprune_version 0 BUILD` answers for our code."""
    return hashlib.sha256(library_file().encode()).hexdigest()[:16]


@cache
def library_code() -> str:
    """The code this package loads: the shipped file with its BUILD set to `library_build()`."""
    if BUILD_LINE not in library_file():
        raise LibraryVersionError(f"the packaged Lua library has no line {BUILD_LINE!r}")
    return library_file().replace(BUILD_LINE, f"local BUILD = '{library_build()}'", 1)


def library_version() -> str:
    """The version the packaged library declares (`local VERSION = '...'`)."""
    return VERSION


def version_key(version: str) -> tuple[int, ...]:
    """A comparable form of a dotted version."""
    return tuple(int(part) for part in version.split("."))


def probe_steps() -> Steps[tuple[str, str | None] | None]:
    """The server's library as (version, build), build None for a library older than
    the BUILD probe; None when no lgprune library is loaded. A few bytes, never the code."""
    reply = yield ("FCALL", "lgprune_version", 0, "BUILD")
    if isinstance(reply, ResponseError):
        message = str(reply).lower()
        if "unknown command" in message:
            raise ModulesMissingError(NO_FUNCTIONS)
        if "function not found" in message:
            return None
        raise reply
    if isinstance(reply, list):
        return as_text(reply[0]), as_text(reply[1])
    return as_text(reply), None


def install_steps(*, force: bool = False) -> Steps[str]:
    """Make the server run this package's library; returns the version in use.

    Loads it when absent or older, or when the same version holds other code;
    never replaces a newer library (its major version must match ours).
    """
    ours = library_version()
    found = None if force else (yield from probe_steps())
    if found is not None:
        installed, build = found
        if version_key(installed) > version_key(ours):
            if version_key(installed)[0] != version_key(ours)[0]:
                raise LibraryVersionError(
                    f"the server runs lgprune library {installed}, which this package "
                    f"({ours}) cannot use: upgrade the lgprune package"
                )
            return installed
        if installed == ours and build == library_build():
            return ours
    loaded = yield ("FUNCTION", "LOAD", "REPLACE", library_code())
    if isinstance(loaded, ResponseError):
        if found is not None and found[0] == ours:
            return ours  # the same version with other code, and no right to replace it: use it
        raise LibraryInstallError(
            f"could not load the lgprune library ({loaded}); an administrator can load "
            "it with `lgprune install`, or give this user the FUNCTION command"
        )
    return ours
