"""`lgprune serve`: prune and sweep over HTTP, Prometheus metrics, a status page.

    app = create_app(AsyncPruner(redis.asyncio.Redis.from_url(url)), token="...")

returns an ASGI app (FastAPI): run it with uvicorn, or mount it in another
Starlette/FastAPI app (`app.mount("/lgprune", create_app(...))`). Needs
`pip install 'lgprune[serve]'`. The code lives in `lgprune.service`: the routes, the
checks every request passes first, and the core without a web framework.
"""

from __future__ import annotations

from lgprune.service.routes import create_app
from lgprune.sweep_plan import SweepPlan

__all__ = ["SweepPlan", "create_app"]
