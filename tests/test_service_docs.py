"""The interactive API docs work offline: /docs and /redoc reference only assets the server itself serves."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from service.testing import ServerProcess

_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_server(page: str, tmp_path: Path) -> None:
    """Every script, stylesheet, icon and spec URL the page references is a path on this server (no CDN, no other
    host, no Google Fonts) and is served with content: the JavaScript bundles, the CSS, the favicon, the spec."""
    with ServerProcess(tmp_path / "kb.duckdb") as server:
        html = httpx.get(server.url + page, timeout=30)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert "http://" not in html.text and "https://" not in html.text and "//cdn" not in html.text
        refs = {a or b for a, b in _REFERENCE.findall(html.text)}
        scripts = {r for r in refs if r.endswith(".js")}
        assert scripts, f"{page} references no script"
        if page == "/docs":
            assert any(r.endswith(".css") for r in refs)
        for ref in refs:
            assert ref.startswith("/") and not ref.startswith("//"), f"{page} references {ref} off this server"
            got = httpx.get(server.url + ref, timeout=30)
            assert got.status_code == 200 and len(got.content) > 0, ref
            if ref.endswith(".js"):
                assert "javascript" in got.headers["content-type"] and len(got.content) > 100_000, ref
            if ref.endswith(".css"):
                assert got.headers["content-type"].startswith("text/css")
        assert "/openapi.json" in refs or "/openapi.json" in html.text
