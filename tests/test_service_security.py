"""What a stranger can reach of `lgprune serve`, tried as an attacker, a busy Prometheus and a
hurried operator would: the real service (uvicorn in a subprocess), real Redis, real HTTP,
and a real headless Chromium for the cross-site case."""

from __future__ import annotations

import http.server
import json
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import browser_dom, checkpoint_ids, put_checkpoints, snapshot
from langgraph.checkpoint.redis import RedisSaver
from test_http import TOKEN, Service, metric_values, start, stop, wait_done

from lgprune.embedded import free_port


@pytest.fixture
def served(redis_url: str, saver: RedisSaver) -> Iterator[Service]:
    service = start(redis_url)
    yield service
    stop(service)


def raw(service: Service, request: bytes, *, body: bytes = b"", chunk: int = 1 << 20) -> bytes:
    """Send a request by hand (headers as given), then `body` a chunk at a time for as long as
    the service has not answered; the answer."""
    port = int(service.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        for start_at in range(0, len(body), chunk):
            if select.select([sock], [], [], 0.5 if start_at == 0 else 0)[0]:
                break  # answered before reading the body: what we want
            try:
                sock.sendall(body[start_at : start_at + chunk])
            except OSError:
                break
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                    break
        except OSError:
            pass
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A raw POST; its Content-Length is the body's unless `headers` set the length or
    Transfer-Encoding themselves."""
    if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
        headers = {**headers, "Content-Length": str(len(body))}
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode() + body


def host_of(service: Service) -> str:
    return service.base.removeprefix("http://")


def test_a_body_without_the_json_type_is_refused_before_it_is_read(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    """CSRF: a cross-site form or a no-cors fetch cannot send application/json."""
    put_checkpoints(saver, "t", 4)
    before = snapshot(r)
    service = start(redis_url, token=None)  # loopback without a token: any local page could try
    try:
        for kind in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"):
            for path, body in (("/prune", {"thread_id": "t", "keep": 0}), ("/sweep", {"keep": 0})):
                data = json.dumps(body).encode()
                headers = {"Host": host_of(service)}
                if kind is not None:
                    headers["Content-Type"] = kind
                answer = raw(service, post(path, data, headers))
                assert status_of(answer) == 415, answer
                assert b'"error"' in answer and b"application/json" in answer
        time.sleep(0.3)  # a sweep would have run by now
        assert snapshot(r) == before
    finally:
        stop(service)


class AttackerPage(http.server.BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_page_on_another_loopback_port_deletes_nothing_in_chromium(
    redis_url: str, r: redis.Redis, saver: RedisSaver, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    put_checkpoints(saver, "t", 4)
    before = snapshot(r)
    service = start(redis_url, token=None)
    target = service.base
    prune_all = "JSON.stringify({thread_id: 't', keep: 0})"
    sweep_all = "JSON.stringify({keep: 0})"
    no_cors = "method: 'POST', mode: 'no-cors', credentials: 'include'"
    as_json = "method: 'POST', headers: {'content-type': 'application/json'}"  # CORS preflight
    calls = [
        f"fetch('{target}/prune', {{{no_cors}, body: new Blob([{prune_all}])}})",
        f"fetch('{target}/prune', {{{no_cors}, body: {prune_all}}})",
        f"fetch('{target}/sweep', {{{no_cors}, body: new Blob([{sweep_all}])}})",
        f"fetch('{target}/prune', {{{as_json}, body: {prune_all}}})",
    ]
    # the fetches go out while the page loads; the slow image holds the load event (and the
    # DOM dump) until they are answered
    AttackerPage.html = (
        "<!doctype html><body><p id=out>start</p><script>Promise.allSettled(["
        + ", ".join(calls)
        + "]).then(r => { document.getElementById('out').textContent = 'settled ' + r.length; });"
        + "</script><img src=/slow></body>"
    ).encode()
    page = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), AttackerPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        dom = browser_dom(browser, f"http://127.0.0.1:{page.server_address[1]}/", tmp_path)
        assert "settled 4" in dom, dom  # every request was sent and answered
        time.sleep(0.5)
        assert snapshot(r) == before
        assert len(checkpoint_ids(saver, "t")) == 4
    finally:
        page.shutdown()
        stop(service)


def test_a_foreign_host_or_origin_is_refused(redis_url: str, r: redis.Redis, saver: RedisSaver) -> None:
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    put_checkpoints(saver, "t", 4)
    before = snapshot(r)
    service = start(redis_url, "--allowed-host", "lgprune.internal", token=None)
    port = host_of(service).rsplit(":", 1)[1]
    body = json.dumps({"thread_id": "t", "keep": 0}).encode()
    try:
        for headers in (
            {"Host": f"evil.example:{port}"},
            {"Host": "evil.example"},
            {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{free_port()}"},
            {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"},
            {"Host": f"127.0.0.1:{port}", "Origin": "null"},
        ):
            answer = raw(
                service,
                post(
                    "/prune",
                    body,
                    {**headers, "Content-Type": "application/json"},
                ),
            )
            assert status_of(answer) == 403, (headers, answer)
            assert b'"error"' in answer
        assert snapshot(r) == before
        for headers in (
            {"Host": f"localhost:{port}"},
            {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"},
            {"Host": "lgprune.internal", "Origin": "https://lgprune.internal"},
        ):
            keep3 = json.dumps({"thread_id": "t", "keep": 3}).encode()
            answer = raw(
                service,
                post(
                    "/prune",
                    keep3,
                    {**headers, "Content-Type": "application/json"},
                ),
            )
            assert status_of(answer) == 200, (headers, answer)
        assert len(checkpoint_ids(saver, "t")) == 3
    finally:
        stop(service)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_large_body_is_refused_before_it_is_read_and_before_auth(served: Service, r: redis.Redis) -> None:
    before = rss_kib(served.process.pid)
    size = 50 * 2**20
    for auth in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        for length in ({"Content-Length": str(size)}, {"Transfer-Encoding": "chunked"}):
            headers = {"Host": host_of(served), "Content-Type": "application/json", **auth, **length}
            body = b"x" * size
            if "Transfer-Encoding" in length:
                body = b"".join(f"{2**20:x}\r\n".encode() + b"x" * 2**20 + b"\r\n" for _ in range(50))
            answer = raw(served, post("/prune", b"", headers), body=body)
            assert status_of(answer) in (401, 413), answer
            if auth:
                assert status_of(answer) == 413
    assert rss_kib(served.process.pid) - before < 20 * 1024  # was +101 MB for one 50 MB body


def test_auth_comes_before_the_body_is_parsed(served: Service) -> None:
    for data in (b"{not json", b'{"thread_id": 5}', b"[]"):
        answer = raw(
            served,
            post(
                "/prune",
                data,
                {
                    "Host": host_of(served),
                    "Content-Type": "application/json",
                },
            ),
        )
        assert status_of(answer) == 401, answer


def test_two_hundred_concurrent_prunes_wait_for_a_connection(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    for i in range(20):
        put_checkpoints(saver, f"t{i}", 3, writes=0)
    before = len(r.client_list())  # earlier tests' clients may still be connected
    service = start(redis_url, "--redis-connections", "8")
    try:
        with ThreadPoolExecutor(200) as pool:
            answers = list(
                pool.map(
                    lambda i: service.call("POST", "/prune", {"thread_id": f"t{i % 20}", "keep": 2}),
                    range(200),
                )
            )
        assert [status for status, _ in answers] == [200] * 200, [a for a in answers if a[0] != 200][:3]
        assert sum(body["checkpoints_deleted"] for _, body in answers) == 20
        assert len(r.client_list()) - before <= 8 + 1  # the pool's 8, the refresh's at most
    finally:
        stop(service)


@pytest.mark.parametrize(
    "body",
    [
        {"keep": 5, "idle_ttl": "9" * 400},
        {"keep": 5, "idle_ttl": 1e400},
        {"keep": 5, "max_age": "1e9d"},
        {"keep": 5, "max_age": 0},
        {"keep": 5, "idle_ttl": "0s"},
        {"keep": 5, "idle_ttl": True},
        {"keep": 5, "idle_ttl": -5},
        {"keep": 5, "grace": "5m"},
    ],
)
def test_durations_out_of_range_are_a_422_and_sweeps_stay_readable(
    served: Service, r: redis.Redis, saver: RedisSaver, body: dict[str, Any]
) -> None:
    put_checkpoints(saver, "t", 7)
    before = snapshot(r)
    if isinstance(body.get("idle_ttl"), float):
        data = b'{"keep": 5, "idle_ttl": 1e400}'
        answer = raw(
            served,
            post(
                "/sweep",
                data,
                {
                    "Host": host_of(served),
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {TOKEN}",
                },
            ),
        )
        status, answer_body = status_of(answer), json.loads(answer.split(b"\r\n\r\n", 1)[1])
    else:
        status, answer_body = served.call("POST", "/sweep", body)
    assert status == 422, answer_body
    assert "nothing was deleted" in answer_body["error"]
    assert served.call("GET", "/sweeps")[0] == 200
    assert snapshot(r) == before


def test_durations_as_seconds_and_grace_zero(served: Service, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 7)
    status, started = served.call(
        "POST", "/sweep", {"keep": 5, "idle_ttl": 86400 * 30, "orphans": True, "grace": 0}
    )
    assert status == 202, started
    done = wait_done(served, started["sweep"])
    assert (
        done["outcome"] == "success" and done["plan"]["idle_ttl"] == "30d" and done["plan"]["grace"] == "0s"
    )
    status, listing = served.call("GET", "/sweeps")
    assert status == 200 and listing["sweeps"][0]["checkpoints_deleted"] == 2


def test_every_answer_carries_the_security_headers(served: Service) -> None:
    import urllib.request

    for path, token in (("/", TOKEN), ("/stats", TOKEN), ("/healthz", None), ("/nope", TOKEN)):
        request = urllib.request.Request(served.base + path)
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as error:
            response = error  # type: ignore[assignment]
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["cache-control"] == "no-store", path
        assert headers["x-frame-options"] == "DENY", path
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        if path == "/":
            assert "script-src" not in csp and "style-src 'sha256-" in csp


def command_calls(r: redis.Redis) -> dict[str, int]:
    """Calls by command name, lower case (Redis names module commands in upper case: FT.INFO)."""
    return {
        name.removeprefix("cmdstat_").lower(): stat["calls"] for name, stat in r.info("commandstats").items()
    }


def test_a_scrape_sends_nothing_to_redis(redis_url: str, r: redis.Redis, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 3)
    service = start(redis_url, "--refresh-every", "1h")
    try:
        deadline = time.monotonic() + 20
        while (
            metric_values(service.call("GET", "/metrics", token=None)[1]).get(
                ("lgprune_store_refresh_timestamp_seconds", ()), 0
            )
            == 0
        ):
            assert time.monotonic() < deadline, "the first refresh did not happen"
            time.sleep(0.1)
        r.config_resetstat()
        for _ in range(50):
            status, text = service.call("GET", "/metrics", token=None)
            assert status == 200
        calls = command_calls(r)
        assert "fcall" not in calls and "ft.search" not in calls, calls
        values = metric_values(text)
        assert values[("lgprune_store_threads", ())] == 1 and values[("lgprune_redis_up", ())] == 1
    finally:
        stop(service)


def test_a_dry_run_is_labelled_and_never_a_success(served: Service, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 7)
    status, started = served.call("POST", "/sweep", {"keep": 2, "dry_run": True})
    assert status == 202 and started["dry_run"] is True
    done = wait_done(served, started["sweep"])
    assert (done["outcome"], done["dry_run"], done["checkpoints_deleted"]) == ("dry_run", True, 5)
    values = metric_values(served.call("GET", "/metrics", token=None)[1])
    assert values[("lgprune_sweeps_total", (("outcome", "success"),))] == 0
    assert values[("lgprune_sweeps_total", (("outcome", "dry_run"),))] == 1
    assert values[("lgprune_last_sweep_success_timestamp_seconds", ())] == 0
    _, page = served.call("GET", "/")
    assert "dry run (nothing deleted)" in page and "would free" in page and ">success<" not in page
    assert len(checkpoint_ids(saver, "t")) == 7


def test_one_error_shape_for_every_refusal(served: Service) -> None:
    for method, path, body in (
        ("GET", "/nope", None),
        ("DELETE", "/prune", None),
        ("GET", "/stats?kepe=5", None),
        ("GET", "/?x=1", None),
        ("POST", "/prune?force=1", {"thread_id": "t", "keep": 1}),
        ("GET", "/sweeps/nope", None),
    ):
        status, answer = served.call(method, path, body)
        assert 400 <= status < 500 and isinstance(answer, dict) and set(answer) == {"error"}, (path, answer)
        assert "\n" not in answer["error"]
    status, answer = served.call("POST", "/prune", raw=b"{not json")
    assert status == 400 and "not JSON" in answer["error"] and "JSON decode error" not in answer["error"]
    status, answer = served.call("POST", "/sweep", {"keep": 1, "idle_ttl": "soon"})
    assert status == 422  # a bad duration is validation like any other
    status, answer = served.call("DELETE", "/sweeps")
    assert status == 405 and set(answer) == {"error"}, answer  # a method no route takes


def test_the_page_uses_the_services_keep_and_honours_keep(redis_url: str, saver: RedisSaver) -> None:
    put_checkpoints(saver, "t", 9, writes=0)
    service = start(redis_url, "--sweep-keep", "5", "--sweep-every", "1w")
    try:
        deadline = time.monotonic() + 20
        while not (listing := service.call("GET", "/sweeps")[1]["sweeps"]) or not listing[0]["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        put_checkpoints(saver, "u", 9, writes=0)
        _, page = service.call("GET", "/")
        assert "a sweep with keep 5 frees" in page
        _, page = service.call("GET", "/?keep=3")
        assert "a sweep with keep 3 frees<b>6 keys</b>" in page.replace("\n", "") or "keep 3 frees" in page
    finally:
        stop(service)


def test_no_password_in_any_message_log_or_page(redis_url: str) -> None:
    secret = "S3cr3tPassw0rd"
    service = start(f"redis://user:{secret}@127.0.0.1:1/0")
    try:
        for method, path in (("GET", "/healthz"), ("GET", "/"), ("GET", "/stats"), ("GET", "/metrics")):
            _, answer = service.call(method, path)
            assert secret not in json.dumps(answer), (path, answer)
    finally:
        service.process.send_signal(2)
        out, err = service.process.communicate(timeout=20)
        assert secret not in out + err


STORE_READS = ("ft.info", "ft.search", "fcall", "memory|usage", "scan", "dbsize")


def store_reads(r: redis.Redis) -> dict[str, int]:
    """Commands a stats pass or a health check sends, by name, since the last CONFIG RESETSTAT."""
    return {name: n for name, n in command_calls(r).items() if name in STORE_READS}


def wait_refreshed(service: Service) -> None:
    deadline = time.monotonic() + 20
    while (
        metric_values(service.call("GET", "/metrics", token=None)[1]).get(
            ("lgprune_store_refresh_timestamp_seconds", ()), 0
        )
        == 0
    ):
        assert time.monotonic() < deadline, "the first refresh did not happen"
        time.sleep(0.1)


def test_another_sites_images_make_the_service_read_nothing_in_chromium(
    redis_url: str, r: redis.Redis, saver: RedisSaver, tmp_path: Path
) -> None:
    """40 <img> tags on a page of another loopback port (the same site: ports do not count),
    each asking for stats with a keep of its own, on a service without a token: none reaches
    a route, so not one command reads the store."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    put_checkpoints(saver, "t", 4)
    service = start(redis_url, "--refresh-every", "1h", token=None)
    target = service.base
    tags = "".join(f"<img src='{target}/stats?keep={i}'><img src='{target}/?keep={i}'>" for i in range(20))
    AttackerPage.html = f"<!doctype html><body><p>cats</p>{tags}<img src=/slow></body>".encode()
    page = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), AttackerPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        wait_refreshed(service)
        r.config_resetstat()
        dom = browser_dom(browser, f"http://127.0.0.1:{page.server_address[1]}/", tmp_path)
        assert "cats" in dom, dom
        time.sleep(0.5)
        assert store_reads(r) == {}
        # the service's own page, opened by hand, still computes what it is asked
        status, _ = service.call("GET", "/stats?keep=3")
        assert status == 200 and store_reads(r).get("ft.info", 0) == 2
    finally:
        page.shutdown()
        stop(service)


def get(service: Service, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host_of(service)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return raw(service, "\r\n".join([*lines, "", ""]).encode())


def test_a_navigation_from_another_site_is_served_from_what_is_held(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 4)
    service = start(redis_url, "--refresh-every", "1h", token=None)
    try:
        wait_refreshed(service)
        r.config_resetstat()
        navigate = {
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
        }
        for path in ("/", "/?keep=7"):
            answer = get(service, path, navigate)
            assert status_of(answer) == 200 and b"<!doctype html>" in answer, answer[:300]
        for site in ("cross-site", "same-site"):
            for path, headers in (
                ("/stats?keep=7", navigate),
                ("/?keep=7", {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}),
                ("/sweeps", {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}),
            ):
                answer = get(service, path, {**headers, "Sec-Fetch-Site": site})
                assert status_of(answer) == 403 and b"another site" in answer, (path, answer)
        assert store_reads(r) == {}
        answer = get(service, "/stats?keep=7", {"Sec-Fetch-Site": "same-origin"})
        assert status_of(answer) == 200
    finally:
        stop(service)


def test_a_burst_of_stats_requests_reads_the_store_once(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 4)
    service = start(redis_url, "--refresh-every", "1h")
    try:
        wait_refreshed(service)
        r.config_resetstat()
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: service.call("GET", "/stats?keep=3&top=5"), range(30)))
        assert {status for status, _ in answers} == {200}
        assert len({json.dumps(body, sort_keys=True) for _, body in answers}) == 1
        for _ in range(10):
            assert service.call("GET", "/?keep=3")[0] == 200
            assert service.call("GET", "/")[0] == 200  # the background refresh: no pass either
        # one pass (an FT.INFO for each of the two indexes) for (3, 5), one for the page's (3, 20)
        assert command_calls(r).get("ft.info", 0) == 2 * 2
    finally:
        stop(service)


def test_a_host_without_a_port_matches_the_default_ports(redis_url: str, saver: RedisSaver) -> None:
    service = start(
        redis_url,
        "--allowed-host",
        "lgprune.example.com:443",
        "--allowed-host",
        "plain.example:80",
        token=None,
    )
    try:
        for host, status in (
            ("lgprune.example.com", 200),
            ("lgprune.example.com:443", 200),
            ("lgprune.example.com:8443", 403),
            ("plain.example", 200),
            ("127.0.0.1", 403),  # the service is not on port 80
        ):
            answer = raw(service, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert status_of(answer) == status, (host, answer)
    finally:
        stop(service)
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 80))
    except OSError:
        return  # not root, or port 80 is busy: the entries above prove the rule
    finally:
        probe.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "lgprune", "serve", "--url", redis_url, "--port", "80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    service = Service("http://127.0.0.1:80", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = raw(service, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "serve --port 80 did not start"
                time.sleep(0.1)
        assert status_of(answer) == 200, answer  # curl http://127.0.0.1/healthz
    finally:
        stop(service)


def test_numbers_and_nesting_no_parser_takes_are_4xx_not_500(served: Service, r: redis.Redis) -> None:
    huge = "1" + "0" * 400
    for body in (
        f'{{"keep": 5, "idle_ttl": {huge}}}',
        f'{{"keep": 5, "max_age": -{huge}}}',
        '{"keep": 5, "idle_ttl": NaN}',
        '{"keep": 5, "idle_ttl": -Infinity}',
        '{"keep": 5, "idle_ttl": "\u0663\u0660d"}',
    ):
        status, answer = served.call("POST", "/sweep", raw=body.encode())
        assert status == 422 and set(answer) == {"error"}, (body[:40], answer)
    status, answer = served.call("POST", "/sweep", raw=b'{"keep": 5, "idle_ttl": -5}')
    assert status == 422 and "got -5s" in answer["error"], answer
    status, answer = served.call("POST", "/sweep", raw=b'{"keep": 5, "idle_ttl": NaN}')
    assert "not a duration" in answer["error"], answer
    status, answer = served.call("POST", "/prune", raw=b"[" * 4000 + b"]" * 4000)
    assert status == 400 and "nested" in answer["error"], answer
    assert served.call("GET", "/sweeps")[1]["sweeps"] == []


def test_a_client_that_leaves_mid_body_ends_quietly(redis_url: str, saver: RedisSaver) -> None:
    service = start(redis_url)
    try:
        port = int(service.base.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    post(
                        "/prune",
                        b'{"thread_id": ',
                        {
                            "Host": host_of(service),
                            "Authorization": f"Bearer {TOKEN}",
                            "Content-Type": "application/json",
                            "Content-Length": "100",
                        },
                    )
                )
                time.sleep(0.2)
        time.sleep(0.5)
        assert service.call("GET", "/healthz", token=None)[0] == 200
    finally:
        stop(service)
    err = service.process.stderr.read() if service.process.stderr else ""
    assert "Traceback" not in err and "ClientDisconnect" not in err, err


def test_the_401_names_both_schemes_and_a_repeated_parameter_is_refused(served: Service) -> None:
    status, answer = served.call("GET", "/stats", token=None)
    assert status == 401 and "Bearer" in answer["error"] and "Basic" in answer["error"]
    for path in ("/stats?keep=1&keep=2", "/?keep=1&keep=1", "/stats?top=1&top=2"):
        status, answer = served.call("GET", path)
        assert status == 422 and "more than once" in answer["error"], (path, answer)
