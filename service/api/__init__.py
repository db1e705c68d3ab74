"""The HTTP API (FastAPI): ``create_app(settings)`` builds it."""

from service.api.main import ROUTERS, STATE_LOADERS, create_app

__all__ = ["ROUTERS", "STATE_LOADERS", "create_app"]
