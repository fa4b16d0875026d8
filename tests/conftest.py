"""One real Redis for the whole session; a clean database for each test.

The server is $REDIS_URL if set (it is flushed: point it at a throwaway
server), else a container ($LGPRUNE_IMAGES, else redis:8) where a Docker engine
answers, else an embedded redis-server 8.2 with the search and JSON modules
(see lgprune/containers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import settings
from jsaver import js_saver  # noqa: F401  (a fixture: LangGraph.js's saver can run here)
from langgraph.checkpoint.redis import RedisSaver

from lgprune import Pruner
from lgprune.containers import any_server

# Property tests draw the same examples on every run, so CI is repeatable;
# HYPOTHESIS_PROFILE=explore draws new ones, ten times as many.
settings.register_profile("repeatable", derandomize=True, max_examples=40)
settings.register_profile("explore", max_examples=400)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with any_server() as (url, kind):
        print(f"\ntests run against: {kind} at {url}")
        yield url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client on an empty database without functions (bytes replies, RESP2)."""
    client = redis.Redis.from_url(redis_url, protocol=2)
    client.flushall()
    client.function_flush()
    yield client
    client.close()


@pytest.fixture
def saver(r: redis.Redis) -> RedisSaver:
    """The real saver with its indexes, on the clean database."""
    saver = RedisSaver(redis_client=r)
    saver.setup()
    return saver


@pytest.fixture
def pruner(r: redis.Redis) -> Pruner:
    return Pruner(r)
