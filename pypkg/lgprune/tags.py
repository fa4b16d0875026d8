"""How RediSearch indexes a thread id as a TAG, as the Lua library reads it.

A TAG value is a C string (it ends at a NUL byte), split on commas and trimmed
of white space, and matched case-insensitively. So a thread is looked up by the
longest piece of its id, and every hit must be confirmed against the id itself.
"""

from __future__ import annotations

from lgprune.facts import EMPTY_ID


def indexed_tag(thread_id: str, *, commas: bool = True) -> str:
    """The TAG value that finds a stored thread id: "" when the index holds none.
    `commas`: the index splits values at commas (the Python saver's; LangGraph.js's does not,
    and stores no empty thread id)."""
    stored = thread_id or (EMPTY_ID if commas else "")
    indexed = stored.split("\x00", 1)[0]
    if not commas:
        return indexed
    return max((piece.strip(" \t\n\r\x0b\x0c") for piece in indexed.split(",")), key=len)


def tag_param(thread_id: str, *, commas: bool = True) -> str:
    """`indexed_tag` as a query parameter: parameter values are unescaped, so
    backslashes are doubled."""
    return indexed_tag(thread_id, commas=commas).replace("\\", "\\\\")
