"""Facts of the Lua library, read from the package, never copied here: its version, error
codes, reply fields, option names and limits, and how the saver stores thread "".

lua/build.py writes them to lua/facts.json from the library's own definitions, and
`lua/build.py --check` (CI) fails when that file no longer matches the library.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def library_file() -> str:
    """The Lua file shipped inside the installed package, read once."""
    return (resources.files("lgprune") / "lua" / "lgprune.lua").read_text(encoding="utf-8")


@cache
def _facts() -> dict[str, Any]:
    """lua/facts.json, shipped inside the installed package beside the library, read once."""
    facts: dict[str, Any] = json.loads(
        (resources.files("lgprune") / "lua" / "facts.json").read_text(encoding="utf-8")
    )
    return facts


def _value(name: str) -> Any:
    try:
        return _facts()[name]
    except KeyError:
        raise LookupError(f"the packaged Lua library states no {name} (lua/facts.json)") from None


def lua_number(name: str) -> int:
    """The library's `local NAME = 10`."""
    return int(_value(name))


def lua_string(name: str) -> str:
    """The library's `local NAME = 'text'`."""
    return str(_value(name))


def lua_list(name: str) -> tuple[str, ...]:
    """The strings of the library's `local NAME = { 'a', 'b' }`, in order."""
    return tuple(_value(name))


def lua_keys(name: str) -> frozenset[str]:
    """The keys of the library's `local NAME = { A = ..., B = ... }`."""
    return frozenset(_value(name))


VERSION = lua_string("VERSION")
EMPTY_ID = lua_string("EMPTY_ID")  # how the saver stores the thread id ""
MIN_BUDGET = lua_number("MIN_BUDGET")  # the least BUDGET: enough for any call to make progress
MAX_MANY = lua_number("MAX_MANY")  # thread ids per lgprune_many call
ERROR_CODES = lua_list("ERROR_CODES")  # "LGPRUNE <CODE> ..." error replies
COUNT_FIELDS = lua_list("COUNT_FIELDS")  # the counts of lgprune_thread and lgprune_many replies
SWEEP_FIELDS = lua_list("SWEEP_FIELDS")  # the fields of an lgprune_sweep reply
THREAD_OPTIONS = lua_keys("THREAD_OPTIONS")  # options of lgprune_thread and lgprune_many
SWEEP_OPTIONS = lua_keys("SWEEP_OPTIONS")  # options of lgprune_sweep
WATERMARKS = lua_string("WATERMARKS")  # lgprune's own key: when each sweep rule's last complete pass began
DENSE = lua_string("DENSE")  # the prefix of lgprune's keys holding the threads of a dense millisecond


def option(name: str) -> str:
    """An option name the library takes, checked against its option tables."""
    if name not in THREAD_OPTIONS | SWEEP_OPTIONS:
        raise LookupError(f"the packaged Lua library takes no option {name}")
    return name
