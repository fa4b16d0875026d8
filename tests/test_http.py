"""`lgprune serve`, run for real: uvicorn on a free loopback port, a real Redis, real HTTP."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import browser_dom, checkpoint_ids, lgprune, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver
from prometheus_client.parser import text_string_to_metric_families

from lgprune.embedded import EmbeddedRedis, free_port

TOKEN = "t0ken-for-tests"
HOSTILE = ["", "a/b", "x} | @thread_id:{*", "ünï cödé", "Wang1", "wang1", "a,b", "a"]


class Service:
    def __init__(self, base: str, process: subprocess.Popen[str]) -> None:
        self.base, self.process = base, process

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        basic: str | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if basic is not None:
            request.add_header("authorization", "Basic " + base64.b64encode(f"x:{basic}".encode()).decode())
        elif token is not None:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        kind = "json"
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            kind = "text"
        return status, text if kind == "text" else None


def start(redis_url: str, *args: str, token: str | None = TOKEN) -> Service:
    port = free_port()
    env = {**os.environ}
    env.pop("LGPRUNE_TOKEN", None)
    if token is not None:
        env["LGPRUNE_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "lgprune", "serve", "--url", redis_url, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    service = Service(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(service.base + "/healthz", timeout=2).close()
            return service
        except urllib.error.HTTPError:
            return service  # it answers (Redis may be down on purpose)
        except OSError:
            if process.poll() is not None:
                raise AssertionError(
                    f"lgprune serve exited: {process.stderr.read() if process.stderr else ''}"
                ) from None
            time.sleep(0.1)
    process.kill()
    raise AssertionError("lgprune serve did not answer within 30 s")


def stop(service: Service) -> None:
    service.process.send_signal(signal.SIGTERM)
    try:
        assert service.process.wait(timeout=20) == 0
    finally:
        service.process.kill()


@pytest.fixture
def served(redis_url: str, saver: RedisSaver) -> Iterator[Service]:
    service = start(redis_url)
    yield service
    stop(service)


def test_health_and_metrics_need_no_token(served: Service) -> None:
    status, body = served.call("GET", "/healthz", token=None)
    assert (status, body["redis"]) == (200, "ok") and body["library"]
    status, text = served.call("GET", "/metrics", token=None)
    assert status == 200 and "lgprune_redis_up 1.0" in text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/prune", {"thread_id": "t", "keep": 0}),
        ("POST", "/sweep", {"keep": 0}),
        ("GET", "/stats", None),
        ("GET", "/sweeps", None),
        ("GET", "/sweeps/abc", None),
        ("GET", "/", None),
    ],
)
def test_without_the_token_nothing_is_served_and_nothing_deleted(
    served: Service, r: redis.Redis, saver: RedisSaver, method: str, path: str, body: Any
) -> None:
    put_checkpoints(saver, "t", 3)
    before = snapshot(r)
    for kwargs in (
        {"token": None},
        {"token": "wrong"},
        {"token": TOKEN + "x"},
        {"basic": "wrong"},
        {"token": ""},
    ):
        status, answer = served.call(method, path, body, **kwargs)  # type: ignore[arg-type]
        assert status == 401, (kwargs, answer)
        assert "token" in answer["error"]
    time.sleep(0.2)  # a sweep would have run by now
    assert snapshot(r) == before


def test_hostile_ids_prune_exactly(served: Service, r: redis.Redis, saver: RedisSaver) -> None:
    for thread_id in HOSTILE:
        put_checkpoints(saver, thread_id, 5)
    for thread_id in HOSTILE:
        stored = thread_id or "00000000-0000-0000-0000-000000000000"  # how the saver stores ""
        before = snapshot(r, skip_thread=stored)
        status, body = served.call("POST", "/prune", {"thread_id": thread_id, "keep": 2})
        assert status == 200, body
        assert (body["thread_id"], body["checkpoints_deleted"], body["dry_run"]) == (thread_id, 3, False)
        assert len(checkpoint_ids(saver, thread_id)) == 2
        assert snapshot(r, skip_thread=stored) == before  # no other thread's key changed
    assert all(len(checkpoint_ids(saver, t)) == 2 for t in HOSTILE)


@pytest.mark.parametrize(
    "body",
    [
        {"thread_id": "t", "keep": -1},
        {"thread_id": "t", "keep": "2"},
        {"thread_id": "t", "keep": 2.5},
        {"thread_id": "t", "keep": None},
        {"thread_id": 5, "keep": 2},
        {"thread_id": "t", "keep": 2, "dry_run": "no"},
        {"thread_id": "t", "keep": 2, "delete_everything": True},
        {"keep": 2},
        {"thread_id": "x" * 8000, "keep": 0},  # over the body limit: 413
        {"thread_id": "t" * 5000, "keep": 0},
        {"thread_id": "   ", "keep": 0},
        [],
    ],
)
def test_bad_prune_input_is_a_4xx_and_deletes_nothing(
    served: Service, r: redis.Redis, saver: RedisSaver, body: Any
) -> None:
    put_checkpoints(saver, "t", 3)
    before = snapshot(r)
    status, answer = served.call("POST", "/prune", body)
    assert 400 <= status < 500, answer
    assert (
        isinstance(answer["error"], str)
        and "\n" not in answer["error"]
        and "Traceback" not in answer["error"]
    )
    assert "nothing was deleted" in answer["error"]
    assert snapshot(r) == before


def test_bad_sweep_input_and_bodies_that_are_not_json(
    served: Service, r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 3)
    before = snapshot(r)
    for body in (
        {"keep": -1},
        {"keep": 1, "idle_ttl": "soon"},
        {"keep": 1, "grace": "5m"},
        {"keep": 1, "x": 1},
    ):
        status, answer = served.call("POST", "/sweep", body)
        assert 400 <= status < 500 and "nothing was deleted" in answer["error"], answer
    status, answer = served.call("POST", "/prune", raw=b"{not json")
    assert status == 400 and "not JSON" in answer["error"] and "nothing was deleted" in answer["error"]
    status, answer = served.call("POST", "/sweep", {"keep": 1, "idle_ttl": "30"})
    assert status == 422 and answer["error"].startswith("idle_ttl: '30' needs a unit"), (
        answer
    )  # its JSON name
    status, answer = served.call("GET", "/stats?keep=-3")
    assert status == 422
    time.sleep(0.2)
    assert snapshot(r) == before


def wait_done(served: Service, sweep_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = served.call("GET", f"/sweeps/{sweep_id}")
        assert status == 200, body
        if body["done"]:
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the sweep did not finish within 60 s")


def test_a_background_sweep_finishes_exactly_and_a_second_waits(
    served: Service, r: redis.Redis, saver: RedisSaver
) -> None:
    for i in range(1500):
        put_checkpoints(saver, f"user:{i}", 1 if i else 9, writes=0)
    for thread_id in ("Wang1", "wang1"):
        put_checkpoints(saver, thread_id, 6)
    status, started = served.call("POST", "/sweep", {"keep": 3})
    assert status == 202
    status, busy = served.call("POST", "/sweep", {"keep": 0})
    assert status == 409 and "running" in busy["error"]
    done = wait_done(served, started["sweep"])
    assert (done["outcome"], done["checkpoints_deleted"]) == ("success", 6 + 3 + 3)
    assert [len(checkpoint_ids(saver, t)) for t in ("user:0", "user:1", "Wang1", "wang1")] == [3, 1, 3, 3]
    status, listing = served.call("GET", "/sweeps")
    assert status == 200 and listing["sweeps"][0]["id"] == started["sweep"]


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_parse_and_match_the_work_done(redis_url: str, r: redis.Redis, saver: RedisSaver) -> None:
    served = start(redis_url, "--refresh-every", "1s")
    try:
        metrics_match_the_work_done(served, r, saver)
    finally:
        stop(served)


def metrics_match_the_work_done(served: Service, r: redis.Redis, saver: RedisSaver) -> None:
    for thread_id in ("a", "b", "c"):
        put_checkpoints(saver, thread_id, 6, writes=2)
    deleted = [0, 0, 0]
    for thread_id in ("a", "b"):
        _, body = served.call("POST", "/prune", {"thread_id": thread_id, "keep": 4})
        deleted = [
            deleted[0] + body["checkpoints_deleted"],
            deleted[1] + body["writes_deleted"],
            deleted[2] + body["keys_deleted"],
        ]
    served.call("POST", "/prune", {"thread_id": "c", "keep": 1, "dry_run": True})
    served.call("POST", "/prune", {"thread_id": "c", "keep": -1})
    _, started = served.call("POST", "/sweep", {"keep": 2})
    sweep = wait_done(served, started["sweep"])
    _, again = served.call("POST", "/sweep", {"keep": 2})
    assert (sweep["kind"], wait_done(served, again["sweep"])["kind"]) == ("full", "incremental")
    deleted = [
        deleted[0] + sweep["checkpoints_deleted"],
        deleted[1] + sweep["writes_deleted"],
        deleted[2] + sweep["keys_deleted"],
    ]
    deadline = time.monotonic() + 20
    while True:  # the store's figures come from the background refresh (every second here)
        _, text = served.call("GET", "/metrics", token=None)
        values = metric_values(text)
        if values[("lgprune_store_keys", ())] == int(r.dbsize()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (
        [
            values[("lgprune_checkpoints_deleted_total", ())],
            values[("lgprune_writes_deleted_total", ())],
            values[("lgprune_keys_deleted_total", ())],
        ]
        == deleted
        == [4 + 8, 8 + 16, 16 + 32]
    )
    assert values[("lgprune_prunes_total", (("outcome", "success"),))] == 2  # a and b
    assert values[("lgprune_prunes_total", (("outcome", "dry_run"),))] == 1  # never a success
    assert values[("lgprune_sweeps_total", (("outcome", "success"),))] == 2
    assert values[("lgprune_sweep_passes_total", (("kind", "full"),))] == 1
    assert values[("lgprune_sweep_passes_total", (("kind", "incremental"),))] == 1
    assert abs(values[("lgprune_last_full_sweep_success_timestamp_seconds", ())] - time.time()) < 60
    assert values[("lgprune_sweep_duration_seconds_count", ())] == 2
    assert abs(values[("lgprune_last_sweep_success_timestamp_seconds", ())] - time.time()) < 60
    assert values[("lgprune_store_threads", ())] == 3
    assert values[("lgprune_store_checkpoints", ())] == 6
    assert values[("lgprune_store_keys", ())] == int(r.dbsize())
    assert values[("lgprune_redis_up", ())] == 1


def test_stats_is_what_the_cli_prints(served: Service, redis_url: str, saver: RedisSaver) -> None:
    for i, thread_id in enumerate(("wang1", "Wang1", "a,b")):
        put_checkpoints(saver, thread_id, 3 + i)
    status, body = served.call("GET", "/stats?keep=2&top=3")
    cli = subprocess.run(
        [sys.executable, "-m", "lgprune", "stats", "--keep", "2", "--top", "3", "--json", "--url", redis_url],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = json.loads(cli.stdout)
    assert status == 200
    for key in ("threads", "checkpoints", "writes", "histogram", "top", "sweep_checkpoints", "sweep_keys"):
        assert body[key] == expected[key], key


def test_the_status_page_in_a_real_browser_shows_the_stats(
    served: Service, saver: RedisSaver, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    for i, thread_id in enumerate(("user:big", "user:small", "Wang1")):
        put_checkpoints(saver, thread_id, 40 - 15 * i, writes=1)
    _, started = served.call("POST", "/sweep", {"keep": 30, "dry_run": True})
    wait_done(served, started["sweep"])
    _, stats = served.call("GET", "/stats?keep=10&top=20")
    url = served.base.replace("http://", f"http://lgprune:{TOKEN}@") + "/"
    dom = browser_dom(browser, url, tmp_path)
    assert f"threads<b>{stats['threads']}</b>" in dom and f"checkpoints<b>{stats['checkpoints']}</b>" in dom
    assert dom.index("user:big") < dom.index("user:small") < dom.index(">Wang1<")
    assert "<svg" in dom and "11-50" in dom and "dry run (nothing deleted)" in dom and ">success<" not in dom
    shot = tmp_path / "status.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1100,900",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=90,
    )
    assert shot.stat().st_size > 10_000  # a page was drawn, not an error box
    if os.environ.get("LGPRUNE_DOCS_SCREENSHOT"):  # set it to refresh the docs' picture of the page
        shutil.copy(shot, Path(__file__).resolve().parent.parent / "docs" / "images" / "status-page.png")


def test_redis_down_is_a_503_in_one_line() -> None:
    service = start("redis://127.0.0.1:1")
    try:
        for method, path, body in (
            ("GET", "/healthz", None),
            ("POST", "/prune", {"thread_id": "t", "keep": 1}),
        ):
            status, answer = service.call(method, path, body)
            assert status == 503, answer
            assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
        values = metric_values(service.call("GET", "/metrics", token=None)[1])
        assert (values[("lgprune_redis_up", ())], values[("lgprune_store_ready", ())]) == (0, 0)
        status, page = service.call("GET", "/")
        assert status == 200 and "Redis does not answer" in page
    finally:
        stop(service)


def test_a_server_without_the_modules_is_up_but_not_ready() -> None:
    """Redis answers PING, so an alert on lgprune_redis_up stays quiet; lgprune_store_ready
    and the page say what is missing."""
    with EmbeddedRedis(modules=False) as bare:
        service = start(bare.url)
        try:
            status, answer = service.call("GET", "/healthz", token=None)
            assert status == 503 and "module" in answer["error"] and "\n" not in answer["error"]
            assert answer["error"].startswith("the store is not ready: "), answer
            values = metric_values(service.call("GET", "/metrics", token=None)[1])
            assert (values[("lgprune_redis_up", ())], values[("lgprune_store_ready", ())]) == (1, 0)
            status, page = service.call("GET", "/")
            assert status == 200 and "The store is not ready: " in page
            assert "Redis does not answer" not in page
        finally:
            stop(service)


def test_a_public_host_without_a_token_is_refused(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LGPRUNE_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "lgprune", "serve", "--url", redis_url, "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert (
        out.returncode == 2 and out.stderr.count("\n") == 1 and "--host 0.0.0.0 needs a token" in out.stderr
    )


def test_no_token_on_loopback_serves_everything(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 4)
    service = start(redis_url, token=None)
    try:
        status, body = service.call("POST", "/prune", {"thread_id": "t", "keep": 1}, token=None)
        assert (status, body["checkpoints_deleted"]) == (200, 3)
    finally:
        stop(service)


def test_the_scheduled_sweep_runs_itself(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 6)
    service = start(redis_url, "--sweep-keep", "2", "--sweep-every", "1w")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, listing = service.call("GET", "/sweeps")
            if listing["sweeps"] and listing["sweeps"][0]["done"]:
                break
            time.sleep(0.1)
        first = listing["sweeps"][0]
        assert (first["trigger"], first["outcome"], first["checkpoints_deleted"]) == (
            "schedule",
            "success",
            4,
        )
        _, page = service.call("GET", "/")
        assert "Scheduled: keep 2, every 1w; next at 20" in page
    finally:
        stop(service)
    assert len(checkpoint_ids(saver, "t")) == 2


def test_create_app_mounts_in_another_app_and_its_schedules_run(redis_url: str, saver: RedisSaver) -> None:
    """The README's recipe: a blocking pool, and the schedules in the host's lifespan
    (Starlette runs no mounted app's own): the refresh and the scheduled sweep both run."""
    import redis.asyncio
    import uvicorn
    from fastapi import FastAPI

    from lgprune import AsyncPruner
    from lgprune.http import SweepPlan, create_app, schedules

    put_checkpoints(saver, "t", 3)
    port = free_port()
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=5, timeout=30)
    lgprune_app = create_app(
        AsyncPruner(redis.asyncio.Redis(connection_pool=pool)),
        token=TOKEN,
        sweep=SweepPlan(keep=2),
        sweep_every=3600,
        refresh_every=1,
    )
    host = FastAPI(lifespan=lambda _: schedules(lgprune_app))
    host.mount("/lgprune", lgprune_app)
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning"))
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        service = Service(f"http://127.0.0.1:{port}/lgprune", subprocess.Popen(["true"], text=True))
        while True:  # the scheduled sweep, then a refresh after it
            values = metric_values(service.call("GET", "/metrics", token=None)[1])
            if values[("lgprune_store_checkpoints", ())] == 2:
                break
            assert time.monotonic() < deadline, values
            time.sleep(0.1)
        assert [s["trigger"] for s in service.call("GET", "/sweeps")[1]["sweeps"]] == ["schedule"]
        put_checkpoints(saver, "u", 3)
        status, body = service.call("POST", "/prune", {"thread_id": "u", "keep": 1})
        assert (status, body["checkpoints_deleted"]) == (200, 2)
        assert service.call("GET", "/healthz", token=None)[0] == 200
    finally:
        server.should_exit = True
        runner.join(timeout=20)


def test_a_service_started_before_the_index_waits_for_it(redis_url: str, r: redis.Redis) -> None:
    """The saver creates its index after the service started: /stats is a 503 in one line,
    the refresh keeps trying and counts the store once the index is there, and the service
    stops cleanly."""
    service = start(redis_url, "--refresh-every", "1s")
    try:
        status, answer = service.call("GET", "/stats")
        assert status == 503 and '"checkpoint" does not exist' in answer["error"], answer
        assert "--checkpoint-prefix" in answer["error"] and "CHECKPOINT_PREFIX" not in answer["error"]
        time.sleep(1.5)  # a refresh or two fail meanwhile
        values = metric_values(service.call("GET", "/metrics", token=None)[1])
        assert (values[("lgprune_redis_up", ())], values[("lgprune_store_ready", ())]) == (1, 0)
        _, page = service.call("GET", "/")
        assert "The store is not ready: index &quot;checkpoint&quot; does not exist" in page, page
        assert "--layout" in page and "Redis does not answer" not in page
        saver = RedisSaver(redis_client=r)
        saver.setup()
        put_checkpoints(saver, "t", 3)
        deadline = time.monotonic() + 20
        while (
            metric_values(service.call("GET", "/metrics", token=None)[1])[("lgprune_store_checkpoints", ())]
            != 3
        ):
            assert time.monotonic() < deadline, "the refresh stopped"
            time.sleep(0.2)
        assert service.call("GET", "/stats")[0] == 200
        assert service.call("GET", "/healthz", token=None)[0] == 200
        assert metric_values(service.call("GET", "/metrics", token=None)[1])[("lgprune_store_ready", ())] == 1
    finally:
        stop(service)
    err = service.process.stderr.read() if service.process.stderr else ""
    assert "Traceback" not in err and "TypeError" not in err, err


def test_a_cron_sweep_writes_a_textfile_for_node_exporter(
    redis_url: str, saver: RedisSaver, tmp_path: Path
) -> None:
    put_checkpoints(saver, "t", 5, writes=1)
    path = tmp_path / "textfile" / "lgprune.prom"
    ok = lgprune(
        "sweep",
        "--keep",
        "2",
        "--url",
        redis_url,
        "--metrics-file",
        str(path),
    )
    assert ok.returncode == 0, ok.stderr
    first = metric_values(path.read_text())
    assert first[("lgprune_sweeps_total", (("outcome", "success"),))] == 1
    assert first[("lgprune_checkpoints_deleted_total", ())] == 3
    assert first[("lgprune_keys_deleted_total", ())] == 3 * 3
    failed = lgprune(
        "sweep",
        "--keep",
        "2",
        "--url",
        "redis://127.0.0.1:1",
        "--metrics-file",
        str(path),
    )
    assert failed.returncode == 1
    second = metric_values(path.read_text())
    assert second[("lgprune_sweeps_total", (("outcome", "failure"),))] == 1
    assert second[("lgprune_sweeps_total", (("outcome", "success"),))] == 1
    assert second[("lgprune_checkpoints_deleted_total", ())] == 3
    success = ("lgprune_last_sweep_success_timestamp_seconds", ())
    assert second[success] == first[success]  # the alert sees how long since the last good one
    assert not [name for name, _ in second if name.endswith("_created")]  # carried over, not created
    assert [p.name for p in path.parent.iterdir()] == [
        "lgprune.prom"
    ]  # written atomically, nothing left over


def test_a_scheduled_run_that_fails_is_one_log_line_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from lgprune.schedule import every

    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise TypeError("'ResponseError' object is not iterable (redis://u:S3cret@h:1)")
        stopping.set()

    stopping = asyncio.Event()
    asyncio.run(every(0.01, job, stopping))
    assert runs == [0, 1]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "TypeError" in lines[0] and "S3cret" not in lines[0], lines
