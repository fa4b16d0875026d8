"""lgprune: keep the newest N LangGraph checkpoints per thread in Redis, pruned inside Redis."""

from lgprune.errors import (
    IndexMissingError,
    InvalidArgumentError,
    LgpruneError,
    LibraryInstallError,
    LibraryVersionError,
    ModulesMissingError,
    ReadOnlyServerError,
)
from lgprune.pruner import AsyncPruner, Pruner
from lgprune.results import PruneResult, SweepResult
from lgprune.stats import Stats, ThreadStats

__version__ = "0.1.0"

__all__ = [
    "AsyncPruner",
    "IndexMissingError",
    "InvalidArgumentError",
    "LgpruneError",
    "LibraryInstallError",
    "LibraryVersionError",
    "ModulesMissingError",
    "PruneResult",
    "Pruner",
    "ReadOnlyServerError",
    "Stats",
    "SweepResult",
    "ThreadStats",
    "__version__",
]
