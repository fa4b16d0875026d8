"""Facts of the Lua library, read from the packaged file, never copied here: its version,
error codes, reply fields, option names and limits, and how the saver stores thread ""."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources


@cache
def library_file() -> str:
    """The Lua file shipped inside the installed package, read once."""
    return (resources.files("lgprune") / "lua" / "lgprune.lua").read_text(encoding="utf-8")


def _value(name: str) -> str:
    """The text after `local NAME = ` at the start of a line: to the line's end, or a
    whole `{ ... }` table."""
    found = re.search(rf"^local {name} = (\{{.*?\}}|[^\n]*)", library_file(), re.MULTILINE | re.DOTALL)
    if found is None:
        raise LookupError(f"the packaged Lua library defines no {name}")
    return re.sub(r"--[^\n]*", "", found.group(1)).strip()


def lua_number(name: str) -> int:
    """`local NAME = 10`."""
    return int(_value(name))


def lua_string(name: str) -> str:
    """`local NAME = 'text'`."""
    return _value(name).strip("'")


def lua_list(name: str) -> tuple[str, ...]:
    """The strings of `local NAME = { 'a', 'b' }`, in order."""
    return tuple(re.findall(r"'([^']*)'", _value(name)))


def lua_keys(name: str) -> frozenset[str]:
    """The keys of `local NAME = { A = ..., B = ... }`."""
    return frozenset(re.findall(r"(\w+)\s*=", _value(name)))


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


def option(name: str) -> str:
    """An option name the library takes, checked against its option tables."""
    if name not in THREAD_OPTIONS | SWEEP_OPTIONS:
        raise LookupError(f"the packaged Lua library takes no option {name}")
    return name
