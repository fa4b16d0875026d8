"""The container path: any engine (host networking, no Ryuk image), and its fallback.

These need a Docker engine (CI starts one); elsewhere they skip.
"""

from __future__ import annotations

import os

import pytest
import redis

from lgprune import containers
from lgprune.containers import ContainerError, any_server, docker_client

engine = docker_client()
needs_docker = pytest.mark.skipif(engine is None, reason="no Docker engine answers")
LOCAL = os.environ.get("LGPRUNE_TEST_IMAGE", containers.LOCAL_IMAGE)


def has_image(name: str) -> bool:
    try:
        assert engine is not None
        engine.images.get(name)
        return True
    except Exception:
        return False


@pytest.fixture
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("LGPRUNE_IMAGES", raising=False)


@needs_docker
@pytest.mark.skipif(not has_image(LOCAL), reason=f"{LOCAL} is not built (python -m lgprune.image)")
@pytest.mark.parametrize("network", ["host", ""])
def test_a_local_image_runs_and_is_removed_after(
    no_redis_url: None, monkeypatch: pytest.MonkeyPatch, network: str
) -> None:
    monkeypatch.setenv("LGPRUNE_DOCKER_NETWORK", network)  # "": chosen by the engine's networks
    assert engine is not None
    before = {c.id for c in engine.containers.list(all=True)}
    with any_server(LOCAL) as (url, kind):
        client = redis.Redis.from_url(url)
        modules = {m[b"name"] for m in client.module_list()}
        assert {b"search", b"ReJSON"} <= modules
        assert kind.startswith(f"container {LOCAL} (sha256:")
        if network == "host":
            assert url.startswith("redis://127.0.0.1:") and "host network" in kind
        client.close()
    assert {c.id for c in engine.containers.list(all=True)} == before


@needs_docker
def test_an_image_asked_for_that_cannot_start_is_an_error(no_redis_url: None) -> None:
    with (
        pytest.raises(ContainerError, match="container lgprune-no-such-image:0 did not start"),
        any_server("lgprune-no-such-image:0"),
    ):
        pass


@needs_docker
def test_the_default_image_that_cannot_start_falls_back_to_embedded(
    no_redis_url: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(containers, "DEFAULT_IMAGE", "lgprune-no-such-image:0")
    with any_server() as (url, kind):
        assert kind.startswith("embedded") and redis.Redis.from_url(url).ping()
    err = capsys.readouterr().err
    assert err.startswith("lgprune: container lgprune-no-such-image:0 did not start")
    assert err.count("\n") == 1 and err.rstrip().endswith("using the embedded server")


def test_no_engine_and_an_image_asked_for_is_an_error(
    no_redis_url: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containers, "docker_client", lambda: None)
    monkeypatch.setenv("LGPRUNE_IMAGES", "redis:8")
    with pytest.raises(ContainerError, match="no Docker engine answers"), any_server():
        pass


def test_each_image_is_told_its_port(no_redis_url: None) -> None:
    assert containers.server_args("redis:8", 7000) == (["redis-server", "--port", "7000"], {})
    assert containers.server_args("redis/redis-stack-server:latest", 7000) == (
        None,
        {"REDIS_ARGS": "--port 7000"},
    )
    assert containers.server_args("lgprune-redis:8.2", 7000)[0] == [
        "redis-server",
        "/etc/redis/redis.conf",
        "--port",
        "7000",
    ]
