"""Pages for people under ``/ui``: the knowledge base (overview, datasets, runs), uploads, the advisor and SQL.

Mounted by the API's app factory (``service.api.main.ROUTERS``); every asset is served from this package.
"""

from service.ui._routes import router

__all__ = ["router"]
