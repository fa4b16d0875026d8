"""A griffe extension for the API reference: a method written once as the steps it sends
(`Steps[T]`, see lgprune/driver.py) shows what callers get. On `Pruner` and the sync saver it
returns `T`; on `AsyncPruner` and the async saver it is a coroutine returning `T`. A listing
(`Steps[list[T]]`: `list`, `alist`) is an iterator, or an async iterator for `alist`."""

from __future__ import annotations

import re
from typing import Any

import griffe


class CallerReturns(griffe.Extension):
    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        returns = str(func.returns) if func.returns is not None else ""
        if returns == "S":  # from_url: an instance of the class it is called on
            func.returns = "Self"
            return
        found = re.fullmatch(r"Steps\[(.*)\]", returns)
        if found is None:
            return
        inner = found.group(1)
        listed = re.fullmatch(r"list\[(.*)\]", inner)
        if listed and func.name in ("list", "alist", "_list"):
            inner = f"{'AsyncIterator' if func.name == 'alist' else 'Iterator'}[{listed.group(1)}]"
        func.returns = inner
