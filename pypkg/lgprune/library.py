"""The packaged Lua library: its text, its version, and how it gets installed."""

from __future__ import annotations

import hashlib
import re
from functools import cache

from redis.exceptions import ResponseError

from lgprune.driver import Steps
from lgprune.errors import NO_FUNCTIONS, LibraryInstallError, LibraryVersionError, ModulesMissingError
from lgprune.facts import VERSION, library_file
from lgprune.results import as_text, reply_pairs

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
    """A comparable form of a dotted version; (0,) for one that is not dotted numbers."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def is_a_build(code: str, build: str | None) -> bool:
    """Whether `code` is exactly what an lgprune package loads: its BUILD is the hash of the
    code with BUILD set back to 'dev'. A library loaded by hand ('dev'), edited after it was
    built, or claiming a build its code does not hash to is not one. (Anyone who may load
    functions can compute the hash too: the ACL, not this check, keeps them out.)"""
    if build is None or not re.fullmatch(r"[0-9a-f]{16}", build):
        return False
    original = code.replace(f"local BUILD = '{build}'", BUILD_LINE, 1)
    return original != code and hashlib.sha256(original.encode()).hexdigest()[:16] == build


def code_steps() -> Steps[str | None]:
    """The code of the server's lgprune library (FUNCTION LIST ... WITHCODE), None if absent."""
    reply = yield ("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME, "WITHCODE")
    if isinstance(reply, ResponseError):
        raise reply
    for entry in reply or []:
        fields = reply_pairs(entry)
        if as_text(fields.get("library_name", "")) == LIBRARY_NAME:
            return as_text(fields.get("library_code", ""))
    return None


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


Found = tuple[str, str | None]  # the server's library: (version, build), as probe_steps reads it


def usable_steps(*, force: bool = False) -> Steps[tuple[Found | None, str | None]]:
    """What the server holds (probe_steps; None with `force`) and the version to run as it
    is, None when this package's library must be loaded (see install_steps). Loads nothing."""
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
            if is_a_build((yield from code_steps()) or "", build):
                return found, installed
            raise LibraryVersionError(
                f"the server runs a library that claims to be lgprune {installed} (newer than this "
                f"package's {ours}) but no lgprune package built it (build {build or 'none'} does "
                "not match its code); it is not run: an administrator should replace it with "
                "`lgprune install --force`"
            )
        if installed == ours and build == library_build():
            return found, ours
    return found, None


def install_steps(*, force: bool = False) -> Steps[str]:
    """Make the server run this package's library; returns the version in use.

    Loads it when absent or older, or when the same version holds other code. A newer
    library of the same major version is never replaced (a rolling upgrade must not flip
    back and forth) when it is a build of an lgprune package (`is_a_build`); one that is
    not (loaded by hand, edited, or a fake claiming a newer version) is not run: a
    LibraryVersionError says to replace it with `lgprune install --force` (`force=True`
    loads ours whatever the server holds).
    """
    ours = library_version()
    found, usable = yield from usable_steps(force=force)
    if usable is not None:
        return usable
    loaded = yield ("FUNCTION", "LOAD", "REPLACE", library_code())
    if isinstance(loaded, ResponseError):
        if found is not None and found[0] == ours:
            return ours  # the same version with other code, and no right to replace it: use it
        what = "is not loaded" if found is None else f"is version {found[0]}, older than {ours},"
        raise LibraryInstallError(
            f"the lgprune library {what} on this server and this user may not load it "
            f"({' '.join(str(loaded).split())[:120]}): an administrator must run `lgprune install`"
        )
    return ours
