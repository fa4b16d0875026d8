"""What the Python package reads about the library comes from lua/facts.json, which
lua/build.py writes from the library's own definitions and its --check holds to them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from lgprune import facts

LUA = Path(__file__).resolve().parent.parent / "lua"


def build(lua: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(lua / "build.py"), *args], capture_output=True, text=True, timeout=60
    )


def copy_of_lua(tmp_path: Path) -> Path:
    shutil.copytree(LUA, tmp_path / "lua", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "lua"


def test_the_package_reads_the_facts_the_build_wrote() -> None:
    written = json.loads((LUA / "facts.json").read_text())
    read = {name: getattr(facts, name) for name in written}
    assert read == {
        name: tuple(value) if isinstance(value, list) else set(value) if isinstance(value, dict) else value
        for name, value in written.items()
    }
    assert f"local VERSION = '{facts.VERSION}'" in facts.library_file() and "NOINDEX" in facts.ERROR_CODES
    assert build(LUA, "--check").returncode == 0  # and the committed file is what the library states


def test_the_facts_come_from_the_file_not_the_lua(tmp_path: Path) -> None:
    """A copy of the package whose facts.json differs from its Lua: facts.py says what the file says."""
    ignored = shutil.ignore_patterns("src", "*.pyc")
    shutil.copytree(Path(facts.__file__).parent, tmp_path / "lgprune", ignore=ignored)
    written = json.loads((tmp_path / "lgprune" / "lua" / "facts.json").read_text())
    (tmp_path / "lgprune" / "lua" / "facts.json").write_text(json.dumps({**written, "MAX_MANY": 7}))
    out = subprocess.run(
        [sys.executable, "-c", "import lgprune.facts as f; print(f.__file__, f.MAX_MANY)"],
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [str(tmp_path / "lgprune" / "facts.py"), "7"]


def test_a_changed_fact_makes_check_fail_until_the_build_writes_it(tmp_path: Path) -> None:
    lua = copy_of_lua(tmp_path)
    part = next(p for p in sorted((lua / "src").glob("*.lua")) if "local MIN_BUDGET = " in p.read_text())
    part.write_text(part.read_text().replace("local MIN_BUDGET = ", "local MIN_BUDGET = 9", 1))
    assert build(lua).returncode == 0  # the join and the facts, written together
    assert json.loads((lua / "facts.json").read_text())["MIN_BUDGET"] == int(f"9{facts.MIN_BUDGET}")
    (lua / "facts.json").write_text((LUA / "facts.json").read_text())  # stale: the join alone is current
    stale = build(lua, "--check")
    assert stale.returncode == 1 and "lua/facts.json is not what the library states" in stale.stdout


def test_a_fact_the_library_no_longer_states_fails_the_build(tmp_path: Path) -> None:
    lua = copy_of_lua(tmp_path)
    part = next(p for p in sorted((lua / "src").glob("*.lua")) if "local MAX_MANY = " in p.read_text())
    part.write_text(part.read_text().replace("local MAX_MANY = ", "local MANY = ", 1))
    before = (lua / "facts.json").read_text()
    out = build(lua)
    assert out.returncode == 1 and "no number MAX_MANY" in out.stdout
    assert (lua / "facts.json").read_text() == before
