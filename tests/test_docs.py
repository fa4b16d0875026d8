"""The docs hold no fact the code would not give today: generated pages are current, every
version shown is the package's, the README's numbers are the committed benchmarks', and a
reader meets no project-internal reference. (CI also runs `mkdocs build --strict`, which fails
on a broken link or a page missing from the site.)"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from helpers import lgprune

from lgprune import __version__
from lgprune.facts import ERROR_CODES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$', re.MULTILINE)


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen", DOCS / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered(page: Path) -> str:
    """The page as a reader sees it: its snippet includes filled in (README sections,
    CHANGELOG, and the benchmark results `python -m benchmarks` wrote)."""

    def include(found: re.Match[str]) -> str:
        path, section = found.group(1), found.group(2)
        text = (ROOT / path).read_text()
        if section is None:
            return text
        return text.split(f"<!-- --8<-- [start:{section}] -->\n", 1)[1].split(
            f"<!-- --8<-- [end:{section}] -->", 1
        )[0]

    return INCLUDE.sub(include, page.read_text())


def test_the_generated_pages_are_what_the_code_gives() -> None:
    gen = generator()
    assert gen.PAGES, "docs/gen.py generates pages"
    assert [page.relative_to(ROOT) for page in gen.stale()] == [], "run python docs/gen.py"


def test_the_fcall_reference_has_every_registered_function_and_error_code() -> None:
    page = (DOCS / "fcall.md").read_text()
    lua = (ROOT / "lua" / "lgprune.lua").read_text()
    registered = re.findall(r"function_name = '(\w+)'", lua) + [
        name + suffix
        for name in re.findall(r"^register\('(\w+)'\)$", lua, re.MULTILINE)
        for suffix in ("", "_ro")
    ]
    assert len(registered) == 7
    for name in registered:
        assert f"| `{name}` |" in page, name
    for code in ERROR_CODES:
        assert f"| `{code}` |" in page, code


def test_every_snippet_a_page_includes_exists() -> None:
    for page in PAGES:
        for path, section in INCLUDE.findall(page.read_text()):
            assert (ROOT / path).is_file(), f"{page.name} includes {path}"
            if section:
                text = (ROOT / path).read_text()
                assert f"<!-- --8<-- [start:{section}] -->" in text, f"{page.name} includes {path}:{section}"
                assert f"<!-- --8<-- [end:{section}] -->" in text, f"{page.name} includes {path}:{section}"


VERSION_SHOWN = [
    re.compile(r'"library": "(\d+\.\d+\.\d+)"'),  # /healthz
    re.compile(r"\blgprune (\d+\.\d+\.\d+)\b"),  # lgprune --version
]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: str(page.relative_to(ROOT)))
def test_no_page_shows_a_version_the_package_would_not_print(page: Path) -> None:
    text = rendered(page)
    for pattern in VERSION_SHOWN:
        for shown in pattern.findall(text):
            assert shown == __version__, f"{page.name} shows version {shown}"


def test_the_service_page_shows_the_version_healthz_answers() -> None:
    assert f'{{"redis": "ok", "library": "{__version__}"}}' in (DOCS / "serve.md").read_text()


def test_the_changelog_has_an_entry_for_this_version() -> None:
    released = re.findall(
        r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", CHANGELOG.read_text(), re.MULTILINE
    )
    assert released and released[0] == __version__


INTERNAL = re.compile(r"\bissues? #?\d+|#\d+\b|\bgoal met\b|\bthis issue\b|\bthe seed\b", re.IGNORECASE)


@pytest.mark.parametrize("page", [README, CHANGELOG, *PAGES], ids=lambda page: str(page.relative_to(ROOT)))
def test_a_reader_meets_no_project_internal_reference(page: Path) -> None:
    found = INTERNAL.findall(rendered(page))
    assert found == [], f"{page.name}: {found}"


def test_the_readme_starts_people_in_a_few_screens() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:45])  # the set-up commands come first
    assert ".venv/bin/python -m lgprune.demo" in head and ".venv/bin/python -m pytest -q" in head


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    block = README.read_text().split("<!-- --8<-- [start:tests] -->\n```bash\n", 1)[1].split("\n```", 1)[0]
    assert block in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readmes_links_lead_somewhere() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def test_the_numbers_quoted_are_the_committed_benchmarks() -> None:
    core = (ROOT / "benchmarks" / "results" / "core.md").read_text()

    def median(contender: str) -> str:
        row = re.search(rf"^\| {re.escape(contender)} \| ([\d.,]+) \|", core, re.MULTILINE)
        assert row, contender
        return row.group(1)

    ours, saver = median("lgprune Pruner.prune"), median("RedisSaver.prune")
    for page in (README, DOCS / "index.md"):
        text = page.read_text()
        assert f"{ours} ms" in text and f"{saver} ms" in text, page.name


def test_the_documented_check_report_is_what_lgprune_check_prints(redis_url: str) -> None:
    shown = re.search(r"`(\{\"cron_can_run\": .*?), \.\.\.\]\}`", (DOCS / "sweeps.md").read_text())
    assert shown, "the sweeps page shows lgprune check --json"
    example = json.loads(shown.group(1) + "]}")
    done = lgprune("check", "--json", "--url", redis_url)
    printed = json.loads(done.stdout)
    assert printed.keys() == example.keys()
    first, documented = printed["items"][0], example["items"][0]
    assert first.keys() == documented.keys() and first["name"] == documented["name"]
    assert first["status"] == documented["status"] and first["detail"].startswith("Redis ")
