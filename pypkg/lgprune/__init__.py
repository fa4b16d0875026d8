"""lgprune: keep the newest N LangGraph checkpoints per thread in Redis, pruned inside Redis."""

from lgprune.errors import (
    BadDataError,
    IndexMissingError,
    InvalidArgumentError,
    LgpruneError,
    LibraryInstallError,
    LibraryVersionError,
    ModulesMissingError,
    NoPermissionError,
    NoProgressError,
    ReadOnlyServerError,
)
from lgprune.library import library_version
from lgprune.pruner import AsyncPruner, Pruner
from lgprune.results import PruneResult, SweepResult, ThreadFailure
from lgprune.stats import Stats, ThreadStats

__version__ = library_version()  # one source: VERSION in lua/lgprune.lua

__all__ = [
    "AsyncPruner",
    "BadDataError",
    "IndexMissingError",
    "InvalidArgumentError",
    "LgpruneError",
    "LibraryInstallError",
    "LibraryVersionError",
    "ModulesMissingError",
    "NoPermissionError",
    "NoProgressError",
    "PruneResult",
    "Pruner",
    "ReadOnlyServerError",
    "Stats",
    "SweepResult",
    "ThreadFailure",
    "ThreadStats",
    "__version__",
]
