"""The packaged Lua library: its text, its version, and how it gets installed."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from redis.exceptions import ResponseError

from lgprune.commands import Steps
from lgprune.errors import NO_FUNCTIONS, LibraryInstallError, LibraryVersionError, ModulesMissingError
from lgprune.results import as_text, reply_pairs

LIBRARY_NAME = "lgprune"


@cache
def library_code() -> str:
    """The Lua library shipped inside the installed package, read once."""
    return (resources.files("lgprune") / "lua" / "lgprune.lua").read_text(encoding="utf-8")


@cache
def library_version() -> str:
    """The version the packaged library declares (`local VERSION = '...'`)."""
    found = re.search(r"^local VERSION = '([0-9.]+)'", library_code(), re.MULTILINE)
    if found is None:
        raise LibraryVersionError("the packaged Lua library declares no VERSION")
    return found.group(1)


def version_key(version: str) -> tuple[int, ...]:
    """A comparable form of a dotted version."""
    return tuple(int(part) for part in version.split("."))


def install_steps(*, force: bool = False) -> Steps[str]:
    """Make the server run this package's library; returns the version in use.

    Loads it when absent or older, or when the same version holds other code;
    never replaces a newer library (its major version must match ours).
    """
    ours = library_version()
    installed: str | None = None
    reply = yield ("FCALL", "lgprune_version", 0)
    if isinstance(reply, ResponseError):
        message = str(reply)
        if "unknown command" in message.lower():
            raise ModulesMissingError(NO_FUNCTIONS)
        if "function not found" not in message.lower():
            raise reply
    else:
        installed = as_text(reply)
    if installed is not None and not force:
        if version_key(installed) > version_key(ours):
            if version_key(installed)[0] != version_key(ours)[0]:
                raise LibraryVersionError(
                    f"the server runs lgprune library {installed}, which this package "
                    f"({ours}) cannot use: upgrade the lgprune package"
                )
            return installed
        if installed == ours:
            listing = yield ("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME, "WITHCODE")
            if isinstance(listing, ResponseError):
                return ours  # a user without FUNCTION rights trusts the version
            code = reply_pairs(listing[0]).get("library_code") if listing else None
            if code is not None and as_text(code) == library_code():
                return ours
    loaded = yield ("FUNCTION", "LOAD", "REPLACE", library_code())
    if isinstance(loaded, ResponseError):
        raise LibraryInstallError(
            f"could not load the lgprune library ({loaded}); an administrator can load "
            "it with `lgprune install`, or give this user the FUNCTION command"
        )
    return ours
