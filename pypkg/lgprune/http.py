"""`lgprune serve`: prune and sweep over HTTP, Prometheus metrics, a status page.

    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=50, timeout=30)
    app = create_app(AsyncPruner(redis.asyncio.Redis(connection_pool=pool)), token="...")

returns an ASGI app (FastAPI): run it with uvicorn, or mount it in another
Starlette/FastAPI app (`host.mount("/lgprune", app)`) whose lifespan runs its schedules
(`FastAPI(lifespan=lambda _: schedules(app))`: Starlette runs no mounted app's). Needs
the serve extra. The code lives in `lgprune.service`: the routes, the
checks every request passes first, and the core without a web framework.
"""

from __future__ import annotations

from lgprune.service.routes import create_app, schedules
from lgprune.sweep_plan import SweepPlan

__all__ = ["SweepPlan", "create_app", "schedules"]
