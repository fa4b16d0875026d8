"""Join lua/src/*.lua, in name order, into lua/lgprune.lua: the one file Redis loads;
and write what the Python package reads about it (version, error codes, reply fields,
option names, limits) to lua/facts.json.

    python lua/build.py          write lua/lgprune.lua and lua/facts.json
    python lua/build.py --check  fail unless both are what the parts make (CI)
    python lua/build.py --no-headers  write them without checking the headers and members
                                      (the mutation check: an edit may leave a header stale
                                      or a member unused)

Each part keeps its functions and constants in one table (`Keys.checkpoint_key`), so the
parts call each other by name, in any order, and the join declares few locals (its
tables, `rcall`, and the facts below). Either way every top-level function is held to
the engine's size rule: at most MAX_LINES lines and MAX_PARAMS parameters; and each
part's header to its code: `-- Provides:` names exactly what the part defines that
other parts use (its table's members by their own names), `-- Assumes:` exactly what it
uses of theirs (`Table.member`, or a local such as `rcall`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = HERE / "src"
TARGET = HERE / "lgprune.lua"
FACTS = HERE / "facts.json"
MAX_LINES = 60
MAX_PARAMS = 5
FUNCTION = re.compile(r"^(?:local )?function ([\w.:]+)\(([^)]*)\)")
DEFINITION = re.compile(r"^(?:local function (\w+)|local ([\w, ]+?)\s*=)", re.MULTILINE)
MEMBER = re.compile(r"^(?:function (\w+\.\w+)\(|(\w+\.\w+)\s*=(?!=))", re.MULTILINE)
TOKEN = re.compile(r"(?<![\w.:])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)")  # a name, or Table.member
HEADER = re.compile(r"^-- (Provides|Assumes):(.*(?:\n--   .*)*)", re.MULTILINE)


def code_of(text: str) -> str:
    """Lua text without comments, string contents and table-constructor keys."""
    text = re.sub(r"--\[\[.*?\]\]", "", text, flags=re.DOTALL)
    text = re.sub(r"--[^\n]*", "", text)
    text = re.sub(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", "''", text)
    return re.sub(r"(?<=[{,\n])\s*\w+\s*=(?!=)", " ", text)


def definitions(text: str) -> set[str]:
    """The names a part's top level defines: its locals, and the members of its table (`T.name`)."""
    code = code_of(text)
    found = {m.group(1) or m.group(2) for m in MEMBER.finditer(code)}
    for m in DEFINITION.finditer(code):
        found.update(n.strip() for n in (m.group(1) or m.group(2)).split(","))
    return found


def references(text: str, names: set[str]) -> set[str]:
    """Which of `names` (locals, or `T.name` members) a part's code refers to."""
    return names & set(TOKEN.findall(code_of(text)))


def header(text: str, label: str) -> set[str] | None:
    """The names a part's header lists after `-- Provides:` or `-- Assumes:`."""
    for m in HEADER.finditer(text):
        if m.group(1) == label:
            return set(re.findall(r"[\w.]+", m.group(2).replace("\n--   ", " "))) - {"nothing"}
    return None


def truths(parts: list[tuple[str, str]]) -> list[dict[str, set[str]]]:
    """Per part (but the head): what it defines that other parts use, and what it uses of theirs."""
    defined = [definitions(text) for _, text in parts]
    found = []
    for i, (_, text) in enumerate(parts[1:], 1):
        others = set().union(*(d for j, d in enumerate(defined) if j != i)) - defined[i]
        used = [references(t, defined[i]) for j, (_, t) in enumerate(parts) if j != i]
        provided = {name.split(".", 1)[-1] for name in set().union(*used)}  # its own table's members, bare
        found.append({"Provides": provided, "Assumes": references(text, others)})
    return found


def unknown_members(parts: list[tuple[str, str]]) -> list[str]:
    """`Table.name` references to a part's table that name no member of it (a misspelt
    call is otherwise a nil value on whatever path first runs it), and members no code uses."""
    defined = set().union(*(definitions(text) for _, text in parts))
    tables = {name.split(".")[0] for name in defined if re.match(r"[A-Z][a-z]\w*\.", name)}  # the parts' own
    used: dict[str, int] = {}
    problems = []
    for name, text in parts:
        for ref in TOKEN.findall(code_of(text)):
            if ref.split(".")[0] not in tables or "." not in ref:
                continue
            used[ref] = used.get(ref, 0) + 1
            if ref not in defined:
                problems.append(f"{name} uses {ref}, which no part defines")
    for member in sorted(n for n in defined if "." in n and n.split(".")[0] in tables and used.get(n, 0) < 2):
        problems.append(f"{member} is defined but never used")
    return sorted(set(problems))


def drifted(parts: list[tuple[str, str]]) -> list[str]:
    """Headers that do not say what their part provides to other parts or assumes of theirs."""
    problems = []
    for (name, text), truth in zip(parts[1:], truths(parts), strict=True):
        for label, names in truth.items():
            said = header(text, label)
            if said is None:
                problems.append(f"{name} has no `-- {label}:` line")
            elif said != names:
                wrong = ", ".join(sorted(said - names)) or "-"
                missing = ", ".join(sorted(names - said)) or "-"
                problems.append(f"{name}: `-- {label}:` lists {wrong} wrongly and misses {missing}")
    return problems


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


# The facts pypkg/lgprune/facts.py reads, each the value of a top-level `local NAME = ...`:
# a 'string', a number, a list of strings { 'a', 'b' }, or a table of { NAME = 'kind' }.
FACT_KINDS = {
    "VERSION": "string",
    "EMPTY_ID": "string",  # how the saver stores the thread id ""
    "WATERMARKS": "string",  # lgprune's own key
    "DENSE": "string",  # ... and the prefix of its dense-millisecond keys
    "MIN_BUDGET": "number",
    "MAX_MANY": "number",
    "ERROR_CODES": "list",
    "COUNT_FIELDS": "list",
    "SWEEP_FIELDS": "list",
    "THREAD_OPTIONS": "table",
    "SWEEP_OPTIONS": "table",
}


def value_text(text: str, name: str) -> str | None:
    """What follows `local NAME = ` at the start of a line: to the line's end, or a whole
    `{ ... }` table; without comments."""
    found = re.search(rf"^local {name} = (\{{.*?\}}|[^\n]*)", text, re.MULTILINE | re.DOTALL)
    return None if found is None else re.sub(r"--[^\n]*", "", found.group(1)).strip()


def facts(text: str) -> tuple[dict[str, object], list[str]]:
    """The facts of FACT_KINDS the library states, and what is missing or unreadable."""
    found: dict[str, object] = {}
    problems = []
    for name, kind in FACT_KINDS.items():
        value = value_text(text, name)
        if kind == "string" and value is not None and re.fullmatch(r"'[^']*'", value):
            found[name] = value.strip("'")
        elif kind == "number" and value is not None and value.isdigit():
            found[name] = int(value)
        elif kind == "list" and value is not None and re.fullmatch(r"\{\s*'.*\}", value, re.DOTALL):
            found[name] = re.findall(r"'([^']*)'", value)
        elif kind == "table" and value is not None and re.fullmatch(r"\{\s*\w+\s*=.*\}", value, re.DOTALL):
            pairs = re.findall(r"(\w+)\s*=\s*([^,}]+)", value)
            found[name] = {key: text.strip().strip("'") for key, text in pairs}
        else:
            problems.append(f"the library states no {kind} {name} (local {name} = ...), which facts.py reads")
    return found, problems


def facts_file(found: dict[str, object]) -> str:
    return json.dumps(found, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = join()
    problems = oversized(text)
    for problem in problems:
        print(f"lua/build.py: {problem}; the limit is {MAX_LINES} lines, {MAX_PARAMS} parameters")
    parts = [(part.name, part.read_text(encoding="utf-8")) for part in sorted(PARTS.glob("*.lua"))]
    for problem in [] if "--no-headers" in argv else unknown_members(parts) + drifted(parts):
        problems.append(problem)
        print(f"lua/build.py: {problem}")
    found, missing = facts(text)
    for problem in missing:
        print(f"lua/build.py: {problem}")
    problems += missing
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != text:
            print("lua/build.py: lua/lgprune.lua is not the join of lua/src/*.lua: run python lua/build.py")
            return 1
        if not FACTS.exists() or FACTS.read_text(encoding="utf-8") != facts_file(found):
            print("lua/build.py: lua/facts.json is not what the library states: run python lua/build.py")
            return 1
    else:
        TARGET.write_text(text, encoding="utf-8")
        if not missing:
            FACTS.write_text(facts_file(found), encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
