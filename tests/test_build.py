"""lua/build.py's checks of the engine's parts, without Redis: each catches what it is for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

LUA = Path(__file__).resolve().parent.parent / "lua"


def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lgprune_build", LUA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parts() -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted((LUA / "src").glob("*.lua"))]


def test_the_parts_headers_say_what_each_provides_and_assumes() -> None:
    assert build().drifted(parts()) == []


def test_a_header_that_omits_or_invents_a_name_is_caught() -> None:
    b, original = build(), parts()
    name, text = next((n, t) for n, t in original if n.startswith("30-"))
    for edited in (
        text.replace("-- Provides: capped, ", "-- Provides: "),  # a name another part uses, unlisted
        text.replace(
            "-- Assumes: rcall, ", "-- Assumes: rcall, Core.rcall_twice, "
        ),  # a name it does not use
    ):
        assert edited != text
        problems = b.drifted([(n, edited if n == name else t) for n, t in original])
        assert problems and all(p.startswith(name) for p in problems)


def test_a_part_using_a_name_its_header_does_not_assume_is_caught() -> None:
    b, original = build(), parts()
    name, text = next((n, t) for n, t in original if n.startswith("55-"))
    edited = text.replace(
        "function Blobs.version_text(v)\n", "function Blobs.version_text(v)\n  Core.show(v)\n"
    )
    assert edited != text
    assert any(
        "Assumes" in p and "Core.show" in p
        for p in b.drifted([(n, edited if n == name else t) for n, t in original])
    )


def test_a_misspelt_member_and_a_member_nothing_uses_are_caught() -> None:
    b, original = build(), parts()
    assert b.unknown_members(original) == []
    name, text = next((n, t) for n, t in original if n.startswith("40-"))
    misspelt = text.replace(
        "Search.count_tagged(ctx, thread, Listing.OTHERS_WHERE)", "Search.count_taged(ctx, thread)"
    )
    unused = text + "\nfunction Listing.nobody_calls_this()\nend\n"
    for edited, problem in ((misspelt, "Search.count_taged"), (unused, "Listing.nobody_calls_this")):
        assert edited != text
        found = b.unknown_members([(n, edited if n == name else t) for n, t in original])
        assert any(problem in p for p in found), found
