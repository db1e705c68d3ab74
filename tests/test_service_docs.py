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


def test_every_sql_example_of_the_docs_is_a_correct_analysis(public_data: Path, tmp_path: Path) -> None:
    """Each query the docs show (`"query": "..."` in docs/api.md, `metaml kb sql "..."` in the README) runs on a real
    knowledge base and answers rows; an average of scores is taken over one metric only (scores of different metrics
    are on different scales, so averaging them mixes accuracies with errors)."""
    from collector.ingest import ingest_path
    from collector.store import KnowledgeBase

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "api.md").read_text() + (root / "README.md").read_text()
    text = text.replace("'\"'\"'", "'")  # a single quote inside a shell single-quoted curl body
    queries = re.findall(r'"query": "((?:SELECT|WITH)[^"]*)"', text)
    queries += re.findall(r'metaml kb sql "((?:SELECT|WITH)[^"]*[^.])"', text)
    assert queries, "the docs show no SQL example"
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    ingest_path(kb, public_data / "metadatasets" / "transfergraph")
    for query in queries:
        if "avg(outcome_score)" in query.lower().replace(" ", ""):
            assert "task_primary_metric" in query, f"averages scores of different metrics: {query}"
        answer = kb.sql(query, max_rows=100)
        assert answer.table.num_rows > 0, query
