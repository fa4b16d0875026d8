"""The exceptions lgprune raises: one base class, one subclass per cause."""

from __future__ import annotations

NO_FUNCTIONS = "this server has no Redis Functions (FCALL): lgprune needs Redis 7 or newer"


class LgpruneError(Exception):
    """Base class: something lgprune could not do. Nothing was deleted."""


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


class ReadOnlyServerError(LgpruneError):
    """The server is a read-only replica: prune on the primary."""


def from_server_message(message: str) -> LgpruneError:
    """Map an error reply of the Lua library to the matching exception."""
    text = message.removeprefix("LGPRUNE ").strip()
    if "does not exist" in text and "index" in text:
        return IndexMissingError(text)
    if "module" in text:
        return ModulesMissingError(text)
    return InvalidArgumentError(text)
