"""Registration: idempotent, upgrades older libraries, never downgrades newer ones; the wheel."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import redis.asyncio
from helpers import checkpoint_ids, put_checkpoints
from langgraph.checkpoint.redis import RedisSaver

from lgprune import AsyncPruner, LibraryVersionError, Pruner
from lgprune.library import library_build, library_code, library_file, library_version

ROOT = Path(__file__).resolve().parent.parent


def load_as(r: redis.Redis, version: str, extra: str = "", code: str | None = None) -> None:
    code = (code or library_code()).replace(
        f"local VERSION = '{library_version()}'", f"local VERSION = '{version}'"
    )
    r.function_load(code + extra, replace=True)


def server_code(r: redis.Redis) -> str:
    entry = r.function_list(library="lgprune", withcode=True)[0]
    fields = dict(zip(entry[::2], entry[1::2], strict=True))
    code = fields[b"library_code"]
    return code.decode() if isinstance(code, bytes) else str(code)


def test_install_loads_once_and_is_idempotent(r: redis.Redis) -> None:
    assert Pruner(r).install() == library_version()
    assert Pruner(r).install() == library_version()
    assert r.fcall("lgprune_version", 0) == library_version().encode()
    assert server_code(r) == library_code()


def test_an_older_library_is_replaced(r: redis.Redis) -> None:
    load_as(r, "0.0.1")
    assert Pruner(r).install() == library_version()
    assert server_code(r) == library_code()


def test_the_same_version_with_other_code_is_replaced(r: redis.Redis) -> None:
    """Other code of our version: the file loaded by hand (BUILD 'dev'), or another build."""
    for other in (library_file(), library_code().replace(library_build(), "0123456789abcdef")):
        load_as(r, library_version(), extra="\n-- a local edit\n", code=other)
        Pruner(r).install()
        assert server_code(r) == library_code()


def test_the_library_says_its_version_and_build(r: redis.Redis) -> None:
    Pruner(r).install()
    assert r.fcall("lgprune_version", 0, "BUILD") == [library_version().encode(), library_build().encode()]
    r.function_load(library_file(), replace=True)  # as redis-cli FUNCTION LOAD "$(cat lua/lgprune.lua)"
    assert r.fcall("lgprune_version", 0, "BUILD") == [library_version().encode(), b"dev"]


def command_calls(r: redis.Redis) -> dict[str, int]:
    """Calls per command since CONFIG RESETSTAT, from INFO commandstats."""
    return {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in r.info("commandstats").items()}


async def test_concurrent_first_prunes_install_once_with_a_cheap_probe(
    r: redis.Redis, redis_url: str, saver: RedisSaver
) -> None:
    """2,000 concurrent first prunes through one AsyncPruner: one probe of a few bytes
    and one FUNCTION LOAD, never the library's code; after FUNCTION FLUSH, one load again."""
    put_checkpoints(saver, "t", 3, writes=0)
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=64)
    client = redis.asyncio.Redis(connection_pool=pool)
    pruner = AsyncPruner(client)
    r.config_resetstat()
    results = await asyncio.gather(*(pruner.prune("t", 3) for _ in range(2000)))
    assert all(result.checkpoints_kept == 3 for result in results)
    calls = command_calls(r)
    assert calls.get("function|load") == 1 and "function|list" not in calls
    assert calls["fcall"] == 2000 + 1  # the prunes and one version probe
    r.function_flush()
    r.config_resetstat()
    results = await asyncio.gather(*(pruner.prune("t", 2) for _ in range(300)))
    assert sum(result.checkpoints_deleted for result in results) == 1
    assert command_calls(r).get("function|load") == 1
    await client.aclose()


def test_concurrent_threads_share_one_install(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 3, writes=0)
    pruner = Pruner(redis.Redis(connection_pool=r.connection_pool))
    r.config_resetstat()
    with ThreadPoolExecutor(16) as pool:
        assert all(kept == 3 for kept in pool.map(lambda _: pruner.prune("t", 3).checkpoints_kept, range(64)))
    assert command_calls(r).get("function|load") == 1
    r.function_flush()
    r.config_resetstat()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: pruner.prune("t", 3), range(64)))
    assert command_calls(r).get("function|load") == 1


def built_as(version: str) -> str:
    """What a newer lgprune package would load: its file with BUILD the hash of that file."""
    newer = library_file().replace(f"local VERSION = '{library_version()}'", f"local VERSION = '{version}'")
    build = hashlib.sha256(newer.encode()).hexdigest()[:16]
    return newer.replace("local BUILD = 'dev'", f"local BUILD = '{build}'", 1)


def test_a_newer_library_is_never_downgraded(r: redis.Redis) -> None:
    """A newer build of an lgprune package; one no package built is never run (test_acl)."""
    r.function_load(built_as("0.99.0"), replace=True)
    before = server_code(r)
    assert Pruner(r).install() == "0.99.0"
    assert server_code(r) == before


def test_a_newer_major_version_is_refused(r: redis.Redis) -> None:
    load_as(r, "9.0.0")
    with pytest.raises(LibraryVersionError, match="upgrade"):
        Pruner(r).install()


def test_a_library_lost_after_first_use_is_loaded_again(r: redis.Redis, saver: RedisSaver) -> None:
    pruner = Pruner(r)
    put_checkpoints(saver, "t", 5)
    pruner.prune("t", 4)
    r.function_flush()
    assert pruner.prune("t", 2).checkpoints_deleted == 2


def test_the_wheel_ships_the_lua_and_works_from_outside_the_repo(tmp_path: Path, redis_url: str) -> None:
    """Build the wheel, install it alone, and prune with the Lua it carries."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("lgprune-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("lgprune/lua/lgprune.lua").decode() == (ROOT / "lua" / "lgprune.lua").read_text()
        assert archive.read("lgprune/lua/facts.json").decode() == (ROOT / "lua" / "facts.json").read_text()
        assert "lgprune/py.typed" in archive.namelist()
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
    )
    script = textwrap.dedent(f"""
        import redis, lgprune, lgprune.facts
        from lgprune.library import library_code
        assert lgprune.__file__.startswith({str(site)!r}), lgprune.__file__
        client = redis.Redis.from_url({redis_url!r})
        client.function_flush()
        print(lgprune.Pruner(client).install())
        assert client.fcall("lgprune_version", 0).decode() == lgprune.__version__
        assert lgprune.facts.MIN_BUDGET > 0 and "NOINDEX" in lgprune.facts.ERROR_CODES
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == library_version()


def test_pruning_works_after_install_from_the_wheel_library(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "w", 3)
    Pruner(r).install()
    assert Pruner(r).prune("w", 1).checkpoints_deleted == 2
    assert len(checkpoint_ids(saver, "w")) == 1
