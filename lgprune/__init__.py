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
    "SweepResult",
    "__version__",
]
