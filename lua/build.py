"""Join lua/src/*.lua, in name order, into lua/lgprune.lua: the one file Redis loads.

    python lua/build.py          write lua/lgprune.lua
    python lua/build.py --check  fail unless lua/lgprune.lua is the join of its parts (CI)

Either way every top-level function is held to the engine's size rule: at
most MAX_LINES lines and MAX_PARAMS parameters; and the file to Lua's own limit
of MAX_LOCALS locals in its main chunk (past it, Redis refuses to load it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = HERE / "src"
TARGET = HERE / "lgprune.lua"
MAX_LINES = 60
MAX_PARAMS = 5
MAX_LOCALS = 200  # LUAI_MAXVARS: "main function has more than 200 local variables"
FUNCTION = re.compile(r"^(?:local )?function ([\w.:]+)\(([^)]*)\)")
TOP_LOCAL = re.compile(r"^local (?:function )?([\w, ]+?)(?: =|\(|$)")


def top_level_locals(text: str) -> int:
    """How many names the file's top-level `local` statements declare."""
    return sum(
        len([n for n in m.group(1).split(",") if n.strip()])
        for m in map(TOP_LOCAL.match, text.splitlines())
        if m
    )


def join() -> str:
    """The parts, in name order, as one text."""
    return "".join(part.read_text(encoding="utf-8") for part in sorted(PARTS.glob("*.lua")))


def oversized(text: str) -> list[str]:
    """Top-level functions over MAX_LINES lines or MAX_PARAMS parameters."""
    found, start, name = [], 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FUNCTION.match(line)
        if match:
            start, name = number, match.group(1)
            params = [p for p in match.group(2).split(",") if p.strip()]
            if len(params) > MAX_PARAMS:
                found.append(f"{name} (line {number}) takes {len(params)} parameters")
        elif line == "end" and name:
            if number - start + 1 > MAX_LINES:
                found.append(f"{name} (line {start}) is {number - start + 1} lines")
            name = ""
    return found


def main(argv: list[str]) -> int:
    text = join()
    problems = oversized(text)
    for problem in problems:
        print(f"lua/build.py: {problem}; the limit is {MAX_LINES} lines, {MAX_PARAMS} parameters")
    if (n := top_level_locals(text)) > MAX_LOCALS:
        problems.append("locals")
        print(f"lua/build.py: the main chunk declares {n} locals; Lua allows {MAX_LOCALS}: group some")
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != text:
            print("lua/build.py: lua/lgprune.lua is not the join of lua/src/*.lua: run python lua/build.py")
            return 1
    else:
        TARGET.write_text(text, encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
