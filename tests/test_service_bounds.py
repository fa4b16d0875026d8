"""What one client may hold of `lgprune serve`, and what it is told: header and body
deadlines, the connection cap and its one log line, uvicorn's own 400 in the service's
shape, HEAD, the two 401s, and the log line of each sweep. The real service (uvicorn in a
subprocess), real Redis, raw sockets on loopback."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from helpers import put_checkpoints, put_unreadable_thread
from langgraph.checkpoint.redis import RedisSaver
from test_http import TOKEN, Service, start, stop

HELD = 40  # connections the cap lets in
EXTRA = 120  # connections beyond it
TIMEOUT = 2.0  # --header-timeout and --body-timeout, seconds
SLACK = 2.5  # seconds a deadline may be late on a busy 2-core machine


def port_of(service: Service) -> int:
    return int(service.base.rsplit(":", 1)[1])


def host_of(service: Service) -> bytes:
    return f"127.0.0.1:{port_of(service)}".encode()


def stderr_of(service: Service) -> str:
    return service.process.stderr.read() if service.process.stderr else ""


@pytest.fixture
def bounded(redis_url: str, saver: RedisSaver) -> Iterator[Service]:
    service = start(
        redis_url,
        "--max-connections",
        str(HELD),
        "--header-timeout",
        f"{TIMEOUT}s",
        "--body-timeout",
        f"{TIMEOUT}s",
    )
    yield service
    stop(service)


def connect(service: Service, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(service)), timeout=TIMEOUT + SLACK + 5)
    if first:
        sock.sendall(first)
    return sock


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the service sends until it closes the connection, and when it closed
    (time.monotonic())."""
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except ConnectionResetError:
        pass
    return answer, time.monotonic()


def head_and_body(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def assert_error_shape(answer: bytes, status: int) -> str:
    code, headers, body = head_and_body(answer)
    assert code == status, answer
    assert headers["content-type"] == "application/json", headers
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert (
        headers["cache-control"] == "no-store" and "default-src 'none'" in headers["content-security-policy"]
    )
    error: str = json.loads(body)["error"]
    assert "\n" not in error
    return error


def test_a_partial_header_is_closed_at_its_deadline_even_if_it_trickles(bounded: Service) -> None:
    silent = connect(bounded)
    partial = connect(bounded, b"GET /healthz HTTP/1.1\r\nHost: " + host_of(bounded))
    trickle = connect(bounded, b"G")
    opened, closed = time.monotonic(), {}
    rest = iter(b"ET /healthz HTTP/1.1\r\nX-Slow: " + b"1234567890abcdefghijklmnopqrstuvwxyz" * 4)
    while len(closed) < 3 and time.monotonic() - opened < TIMEOUT + SLACK:
        waiting = [sock for sock in (silent, partial, trickle) if sock not in closed]
        for sock in select.select(waiting, [], [], 0.15)[0]:
            if sock.recv(65536) == b"":
                closed[sock] = time.monotonic() - opened
        if trickle not in closed:
            time.sleep(0.05)  # (a closed socket no longer wakes the loop: pace the trickle)
            trickle.sendall(bytes([next(rest)]))  # a byte now and then never moves the deadline
    for sock in (silent, partial, trickle):
        assert TIMEOUT - 0.5 <= closed.get(sock, 1e9) <= TIMEOUT + SLACK, closed
        sock.close()
    assert bounded.call("GET", "/healthz", token=None)[0] == 200


def test_an_authenticated_partial_body_is_closed_at_its_deadline(bounded: Service) -> None:
    sock = connect(
        bounded,
        b"POST /prune HTTP/1.1\r\nHost: "
        + host_of(bounded)
        + b"\r\nAuthorization: Bearer "
        + TOKEN.encode()
        # the header is complete: the token is checked and the route waits for the body
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        + b'{"thread_id": ',
    )
    opened = time.monotonic()
    answer, closed = until_closed(sock)
    sock.close()
    assert answer == b"" and TIMEOUT - 0.5 <= closed - opened <= TIMEOUT + SLACK, (answer, closed - opened)
    assert bounded.call("GET", "/healthz", token=None)[0] == 200


def test_a_second_request_on_a_kept_alive_connection_has_a_header_deadline(bounded: Service) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: " + host_of(bounded) + b"\r\n\r\n"
    sock = connect(bounded, request)
    first = b""
    while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
        first += sock.recv(65536)
    assert head_and_body(first)[0] == 200
    sock.sendall(request[:20])  # uvicorn's own keep-alive timeout (5 s) stops at the first byte
    sent = time.monotonic()
    answer, closed = until_closed(sock)
    sock.close()
    assert answer == b"" and closed - sent <= TIMEOUT + SLACK, closed - sent


def test_past_the_cap_a_connection_is_a_503_at_once_and_one_log_line(
    redis_url: str, saver: RedisSaver
) -> None:
    service = start(redis_url, "--max-connections", str(HELD), "--header-timeout", f"{TIMEOUT}s")
    held: list[socket.socket] = []
    try:
        partial = b"GET / HTTP/1.1\r\nHost: " + host_of(service)
        held = [connect(service, partial) for _ in range(HELD)]
        opened = time.monotonic()
        for _ in range(EXTRA):
            with connect(service, partial) as extra:
                answer, closed = until_closed(extra)
                assert closed - opened < TIMEOUT, "a connection past the cap waited for the held ones"
                assert "too many connections" in assert_error_shape(answer, 503)
        for sock in held:  # the held ones end at their deadline, and the service answers again
            answer, closed = until_closed(sock)
            assert answer == b"" and closed - opened <= TIMEOUT + SLACK
        assert service.call("GET", "/healthz", token=None)[0] == 200
    finally:
        for sock in held:
            sock.close()
        stop(service)
    err = stderr_of(service)
    lines = [line for line in err.splitlines() if "--max-connections" in line]
    assert len(lines) == 1 and f"{HELD} connections are open" in lines[0], err
    assert "Traceback" not in err and "Too many open files" not in err, err


def test_uvicorns_own_400_has_the_error_shape_and_the_headers(bounded: Service) -> None:
    host = b"Host: " + host_of(bounded) + b"\r\n"
    for request in (
        b"POST /prune HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\nContent-Length: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + host + host + b"\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ):
        with connect(bounded, request) as sock:
            error = assert_error_shape(until_closed(sock)[0], 400)
            assert error.startswith("Invalid HTTP request received"), error


def test_malformed_requests_by_the_dozen_are_one_log_line(redis_url: str, saver: RedisSaver) -> None:
    service = start(redis_url)
    try:
        for _ in range(30):
            with connect(service, b"NOT HTTP AT ALL\r\n\r\n") as sock:
                assert_error_shape(until_closed(sock)[0], 400)
        assert service.call("GET", "/healthz", token=None)[0] == 200
    finally:
        stop(service)
    err = stderr_of(service)
    assert err.count("Invalid HTTP request received") == 1 and "Traceback" not in err, err


def test_head_is_answered_wherever_get_is(served_head: Service) -> None:
    for path in ("/", "/healthz", "/metrics", "/stats", "/sweeps", "/sweeps/none"):
        request = urllib.request.Request(served_head.base + path, method="HEAD")
        request.add_header("authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, body, headers = error.code, error.read(), error.headers
        assert status == (404 if path == "/sweeps/none" else 200), (path, status)
        assert body == b"" and headers["x-frame-options"] == "DENY", path


@pytest.fixture
def served_head(redis_url: str, saver: RedisSaver) -> Iterator[Service]:
    service = start(redis_url)
    yield service
    stop(service)


def test_a_wrong_token_is_told_apart_from_a_missing_one(served_head: Service) -> None:
    missing = served_head.call("GET", "/stats", token=None)
    wrong = served_head.call("GET", "/stats", token="not-the-token")
    assert missing[0] == wrong[0] == 401
    assert "needs the token" in missing[1]["error"] and "token is wrong" in wrong[1]["error"]


def test_a_refused_read_does_not_say_nothing_was_deleted(served_head: Service) -> None:
    status, answer = served_head.call("GET", "/stats?keep=-3")
    assert status == 422 and "keep" in answer["error"] and "deleted" not in answer["error"], answer
    status, answer = served_head.call("POST", "/prune", {"thread_id": "t", "keep": -3})
    assert status == 422 and "nothing was deleted" in answer["error"], answer


def sweep_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "lgprune: sweep " in line]


def test_each_sweep_is_one_log_line_and_a_failed_one_too(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    put_checkpoints(saver, "t", 5)
    service = start(redis_url, "--sweep-keep", "2", "--sweep-every", "1w")
    try:
        deadline = time.monotonic() + 30
        while not (listing := service.call("GET", "/sweeps")[1]["sweeps"]) or not listing[0]["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status, started = service.call("POST", "/sweep", {"keep": 1, "dry_run": True})
        assert status == 202
        while not service.call("GET", f"/sweeps/{started['sweep']}")[1]["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        first = listing[-1]
    finally:
        stop(service)
    scheduled, requested = sweep_lines(stderr_of(service))
    assert first["checkpoints_deleted"] == 3, first
    told = f"(schedule, full): 1 threads visited, 3 checkpoints and {first['keys_deleted']} keys deleted in "
    assert told in scheduled and scheduled.endswith(" ms") and scheduled.startswith("INFO:"), scheduled
    assert "(api, " in requested and ", dry run)" in requested and "keys would be deleted" in requested

    failing = start("redis://127.0.0.1:1", "--sweep-keep", "2", "--sweep-every", "1w")
    time.sleep(1.5)
    stop(failing)
    (line,) = sweep_lines(stderr_of(failing))
    assert line.startswith("ERROR:") and "(schedule, full) failed after " in line and "Error" in line, line


def test_max_connections_is_held_to_the_file_limit(redis_url: str) -> None:
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    out = subprocess.run(
        [sys.executable, "-m", "lgprune", "serve", "--url", redis_url, "--max-connections", str(files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"--max-connections {files}: the process may open {files} files" in out.stderr, out.stderr


def test_serve_without_its_extra_says_how_to_install_it() -> None:
    blocked = "import sys, runpy; sys.modules['uvicorn'] = None; sys.argv = ['lgprune', 'serve']; "
    out = subprocess.run(
        [sys.executable, "-c", blocked + "runpy.run_module('lgprune', run_name='__main__')"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LGPRUNE_TOKEN": ""},
    )
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "`pip install '.[serve]'` in a checkout of lgprune" in out.stderr, out.stderr


def test_a_thread_a_sweep_cannot_prune_is_logged_listed_and_counted(
    redis_url: str, r: redis.Redis, saver: RedisSaver
) -> None:
    put_unreadable_thread(r, saver, "bad")
    put_checkpoints(saver, "good", 4, writes=1)
    service = start(redis_url, "--sweep-keep", "1", "--sweep-every", "1w")
    try:
        deadline = time.monotonic() + 30
        while not (listing := service.call("GET", "/sweeps")[1]["sweeps"]) or not listing[0]["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        metrics = service.call("GET", "/metrics", token=None)[1]
        status, answer = service.call("POST", "/prune", {"thread_id": "bad", "keep": 1})
    finally:
        stop(service)
    assert status == 409 and "WRONGTYPE" in answer["error"] and "nothing was deleted" in answer["error"]
    (sweep,) = listing
    assert (
        sweep["outcome"] == "success" and sweep["threads_failed"] == 1 and sweep["checkpoints_deleted"] == 3
    )
    assert [f["thread_id"] for f in sweep["failed"]] == ["bad"]
    assert "lgprune_last_sweep_threads_failed 1.0" in metrics
    (line,) = [line for line in sweep_lines(stderr_of(service)) if line.startswith("WARNING:")]
    assert "1 threads could not be pruned" in line and "'bad': BADDATA" in line, line
