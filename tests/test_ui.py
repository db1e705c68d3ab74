"""The pages under /ui in a real browser: Debian's headless Chromium driven by Selenium, against a live server
(uvicorn in a child process) on a knowledge base built from the real TransferGraph and OPDA files with a promoted
meta-model (the session's ``served`` server of conftest).

Every page is loaded at 1280 and 390 CSS pixels wide and must log no console error, request nothing off this
machine, keep its content inside the window, label its controls, captions and plots, and keep text contrast at WCAG
AA. The interactive pages are driven as a person would: a file is uploaded (chosen and dropped) and its report read
and downloaded, the advisor ranks configurations (a known dataset, pasted meta-features, a sample file) and its
Optuna snippet runs, SQL answers as a table and a CSV; and the pages follow a server that requires keys for reads.
Screenshots go to ``artifacts/ui/`` (or ``$METAML_UI_ARTIFACTS``).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import Browser, available, is_local
from factories import record, write_jsonl

from service.testing import ServerProcess

# CI installs the browser (.ci/run): there a missing one fails the tests instead of skipping them
pytestmark = pytest.mark.skipif(not available() and os.environ.get("CI") != "true",
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver)")
pytest.importorskip("selenium")

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("METAML_UI_ARTIFACTS", REPO / "artifacts" / "ui"))
WIDTHS = (1280, 390)

#: Accessibility and layout checks run in every page (see the file's header).
AUDIT_JS = (Path(__file__).parent / "ui_audit.js").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser(1280, 900)
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture(scope="module")
def urls(served: ServerProcess, served_world: dict[str, Any]) -> dict[str, str]:
    rows = served_world["kb"].scan(["run_id", "outcome_curve"], filters={"provenance_source": "opda"},
                                   limit=200).to_pylist()
    run_id = next(r["run_id"] for r in rows if r["outcome_curve"])
    base = served.url + "/ui"
    return {"overview": base + "/", "datasets": base + "/datasets", "dataset": base + "/datasets/glue/sst2",
            "run": f"{base}/runs/{run_id}", "upload": base + "/upload", "advisor": base + "/advisor",
            "sql": base + "/sql"}


def _settled(b: Browser) -> None:
    """Wait until the page's own API calls have answered (its status lines no longer say 'Asking')."""
    b.wait_for("return document.readyState === 'complete' && ![...document.querySelectorAll('.status')]"
               ".some((s) => s.textContent.includes('Asking'))")


def _load(b: Browser, url: str) -> None:
    b.get(url)
    _settled(b)


def _table(b: Browser, selector: str) -> list[list[str]]:
    """The body cells of the table at ``selector``, as text."""
    return b.js("return [...document.querySelectorAll(arguments[0] + ' tbody tr')].filter((tr) => !tr.hidden)"
                ".map((tr) => [...tr.cells].map((c) => c.textContent.trim()))", selector)


def _headers(b: Browser, selector: str) -> list[str]:
    return b.js("return [...document.querySelectorAll(arguments[0] + ' thead th')].map((th) => th.textContent.trim())",
                selector)


def _key(b: Browser, key: str, field: str = "#api-key") -> None:
    el = b.driver.find_element("css selector", field)
    el.clear()
    el.send_keys(key)


def _clean(b: Browser, *, allow: tuple[str, ...] = ()) -> None:
    """No console error (except messages containing one of ``allow``) and no request off this machine so far."""
    errors = [e for e in b.console_errors() if not any(a in e for a in allow)]
    assert errors == [], errors
    assert b.foreign_requests() == []
    b.clear_logs()


# -- every page ------------------------------------------------------------------------------------------------------


def test_every_page_loads_offline_clean_and_accessible_at_two_widths(browser: Browser, urls: dict[str, str]) -> None:
    """Each page, at 1280 and 390 px: no console error, every request to this machine (and the page's own assets
    among them: the log is really read), one h1 and the four landmarks, labelled controls, captioned tables, labelled
    plots, AA contrast, nothing wider than the window; a screenshot of each."""
    for width in WIDTHS:
        browser.resize(width, 900)
        for name, url in urls.items():
            browser.clear_logs()
            _load(browser, url)
            assert browser.js("return window.innerWidth") == width
            problems = browser.js(AUDIT_JS)
            assert problems == [], (name, width, problems)
            errors, foreign = browser.console_errors(), browser.foreign_requests()
            assert errors == [] and foreign == [], (name, width, errors, foreign)
            requested = list(browser.requested)
            assert url in requested and all(is_local(u) for u in requested)
            assert any(u.split("?")[0].endswith("/ui/static/ui.js") for u in requested) or width != WIDTHS[0]
            browser.screenshot(ARTIFACTS / f"{name}-{width}.png")
    browser.resize(1280, 900)


def test_a_request_off_the_machine_is_caught(browser: Browser, urls: dict[str, str]) -> None:
    """The guards themselves: a page that asks another host is seen in the network log; a script injected into one of
    our pages from another origin is refused by its Content-Security-Policy, which logs a console error, and the
    attempt is in the network log too (either check alone fails the page tests)."""
    browser.clear_logs()
    browser.get('data:text/html,<img src="http://offsite.example/pixel.png" alt="">')
    browser.wait_for("return document.readyState === 'complete'")
    assert "http://offsite.example/pixel.png" in browser.foreign_requests()
    browser.clear_logs()
    _load(browser, urls["sql"])
    browser.js("const s = document.createElement('script'); s.src = 'http://cdn.example/lib.js';"
               "document.head.append(s);")
    browser.wait_for("return true")
    errors = browser.console_errors()
    assert any("Content Security Policy" in e and "cdn.example" in e for e in errors), errors
    assert browser.foreign_requests() == ["http://cdn.example/lib.js"]
    browser.clear_logs()


# -- read pages ------------------------------------------------------------------------------------------------------


def test_overview_counts_and_served_model(browser: Browser, urls: dict[str, str], served: ServerProcess) -> None:
    """The overview shows the counts /v1/stats answers and the served version /v1/models names, with its metrics."""
    stats = httpx.get(served.url + "/v1/stats").json()
    _load(browser, urls["overview"])
    figures = browser.js("return [...document.querySelectorAll('.figures .figure')].map((f) => f.textContent)")
    assert figures[0] == f"{stats['runs']:,}" and figures[1] == f"{stats['datasets']:,}"
    by_source = {r[0]: int(r[1].replace(",", "")) for r in _table(browser, "section[aria-labelledby=by-source] table")}
    assert by_source == stats["by_source"]
    status = browser.js("return document.querySelector('[data-model-status]').textContent")
    assert "Version 1 of" in status
    assert "spearman" in " ".join(_headers(browser, "[data-model-metrics] table"))
    _clean(browser)


def test_dataset_search_leaderboard_filters_plot_and_recommendations(browser: Browser, urls: dict[str, str],
                                                                     served: ServerProcess) -> None:
    """Typing in the search narrows the list; glue/sst2 shows its meta-features, a leaderboard sorted by score
    whose count agrees with /v1/runs, a method filter, a non-empty SVG scatter plot whose legend names the methods,
    and the meta-model's ranked recommendations."""
    _load(browser, urls["datasets"])
    total = len(_table(browser, "#dataset-table"))
    browser.driver.find_element("id", "dataset-query").send_keys("sst")
    names = [r[0] for r in _table(browser, "#dataset-table")]
    assert 0 < len(names) < total and all("sst" in n for n in names)
    browser.driver.find_element("link text", "glue/sst2").click()
    _settled(browser)
    assert browser.js("return document.querySelector('h1').textContent") == "glue/sst2"
    meta = dict(browser.js("return [...document.querySelectorAll('dl.meta > div')].map((d) => "
                           "[d.querySelector('dt').textContent, d.querySelector('dd').textContent])"))
    assert meta["n_classes"] == "2" and meta["language"] == "en"

    rows = _table(browser, "#leaderboard")
    header = _headers(browser, "#leaderboard")
    score = header.index("accuracy")
    scores = [float(r[score]) for r in rows]
    assert len(rows) == 50 and scores == sorted(scores, reverse=True)

    ok_lora = 0
    cursor = None
    while True:
        params = {"dataset": "glue/sst2", "method": "lora", "status": "ok", "limit": 1000}
        page = httpx.get(served.url + "/v1/runs", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        ok_lora += sum(1 for r in page["runs"] if r["outcome"].get("score") is not None
                       and r["task"]["primary_metric"] == "accuracy")
        if not (cursor := page["next_cursor"]):
            break
    from selenium.webdriver.support.ui import Select

    Select(browser.driver.find_element("id", "filter-method")).select_by_visible_text("lora")
    browser.driver.find_element("css selector", "form.filters button").click()
    _settled(browser)
    assert "method=lora" in browser.driver.current_url
    method = header.index("method")
    rows = _table(browser, "#leaderboard")
    assert rows and all(r[method].startswith("lora") for r in rows)
    assert f"{ok_lora:,} scored runs match" in browser.js("return document.querySelector('#board-heading')"
                                                          ".parentElement.textContent")
    browser.driver.back()
    _settled(browser)

    plot = browser.js("const s = document.querySelector('#cost-plot svg'); return {label: s.getAttribute('aria-label'),"
                      " marks: s.querySelectorAll('use, path').length, text: s.textContent,"
                      " width: s.getBoundingClientRect().width}")
    assert plot["marks"] > 50 and plot["width"] > 300
    assert "lora" in plot["text"] and "full" in plot["text"] and "training time" in plot["text"]
    assert "Scatter plot of accuracy" in plot["label"]

    ranked = _table(browser, "[data-rec-table] table")
    assert [r[0] for r in ranked] == [str(i) for i in range(1, len(ranked) + 1)] and len(ranked) == 5
    rec_header = _headers(browser, "[data-rec-table] table")
    for r in ranked:
        predicted = float(r[rec_header.index("predicted score")])
        lo, hi = (float(x) for x in r[rec_header.index("80% interval")].split(" – "))
        assert 0 <= lo <= predicted <= hi <= 1.5
        assert r[rec_header.index("failure risk")].endswith("%")
    browser.resize(1280, 1200)
    browser.js("document.querySelector('#plot-heading').scrollIntoView()")
    browser.screenshot(ARTIFACTS / "dataset-plot-1280.png", full_page=False)
    browser.resize(1280, 900)
    _clean(browser)


def test_run_page_shows_every_part_its_curve_and_provenance(browser: Browser, urls: dict[str, str],
                                                           served: ServerProcess) -> None:
    """A run with a learning curve: the page names it, shows each part of the record as /v1/runs/{id} answers it,
    the provenance (source, file, place), the metrics, and a line plot with one series per curve metric; an unknown
    run id answers 404 with a page."""
    run_id = urls["run"].rsplit("/", 1)[1]
    record = httpx.get(f"{served.url}/v1/runs/{run_id}").json()
    _load(browser, urls["run"])
    assert run_id in browser.js("return document.querySelector('h1').textContent")
    parts = browser.js("return Object.fromEntries([...document.querySelectorAll('section.part')].map((s) => "
                       "[s.querySelector('h2').textContent, Object.fromEntries([...s.querySelectorAll('dl > div')]"
                       ".map((d) => [d.querySelector('dt').textContent, d.querySelector('dd').textContent]))]))")
    assert set(parts) == {"Task", "Dataset", "Dataset meta-features", "Model", "Method", "Hyperparameters", "Outcome",
                          "Hardware", "Provenance"}
    assert parts["Provenance"]["source"] == "opda" and parts["Provenance"]["uri"] == record["provenance"]["uri"]
    assert parts["Provenance"]["locator"] == record["provenance"]["locator"]
    assert parts["Model"]["id"] == record["model"]["id"]
    assert float(parts["Hyperparameters"]["learning_rate"]) == pytest.approx(record["hparams"]["learning_rate"],
                                                                             rel=1e-3)
    assert parts["Outcome"]["status"] == record["outcome"]["status"]
    curve_metrics = {p["metric"] for p in record["outcome"]["curve"]}
    plot = browser.js("const s = document.querySelector('#curve-plot svg'); return {lines: "
                      "s.querySelectorAll('g[id^=line2d] path').length, text: s.textContent}")
    assert plot["lines"] >= len(curve_metrics) and all(m in plot["text"] for m in curve_metrics)
    assert f"{len(record['outcome']['curve'])} points" in browser.js(
        "return document.querySelector('#curve-plot figcaption').textContent")
    _clean(browser)

    missing = httpx.get(f"{served.url}/ui/runs/{'0' * 32}")
    assert missing.status_code == 404 and "No such run" in missing.text


# -- upload ----------------------------------------------------------------------------------------------------------


def _upload_file(tmp_path: Path) -> Path:
    """Two new runs, the first again (a duplicate), and one with a negative learning rate (rejected)."""
    good = [record(i, dataset__name="ui/browser-upload") for i in (1, 2)]
    bad = record(3, dataset__name="ui/browser-upload", hparams__learning_rate=-1)
    return write_jsonl(tmp_path / "runs.jsonl", [*good, good[0], bad])


def test_upload_a_file_and_read_its_report(browser: Browser, urls: dict[str, str], served: ServerProcess,
                                           served_world: dict[str, Any], tmp_path: Path) -> None:
    """Without a key the page says so and sends nothing; with a read key the API's 403 is shown; with a write key a
    chosen JSONL file is reported record by record (2 stored, 1 duplicate, 1 rejected with field and reason), the
    report downloads as CSV, its run links open the stored runs; a dropped CSV is read too."""
    path = _upload_file(tmp_path)
    before = httpx.get(served.url + "/v1/stats").json()["runs"]
    _load(browser, urls["upload"])
    browser.js("sessionStorage.clear()")
    browser.driver.find_element("id", "upload-file").send_keys(str(path))
    assert "runs.jsonl" in browser.js("return document.querySelector('#drop-name').textContent")
    browser.driver.find_element("css selector", "#upload-form button[type=submit]").click()
    assert "write scope" in browser.wait_for("return document.querySelector('#upload-error').textContent")
    browser.drain()
    assert not any("/v1/runs" in u for u in browser.requested)

    _key(browser, served_world["keys"]["reader"])
    browser.driver.find_element("css selector", "#upload-form button[type=submit]").click()
    message = browser.wait_for("return document.querySelector('#upload-error').textContent")
    assert message.startswith("403 forbidden") and "'write' scope" in message
    _clean(browser, allow=("/v1/runs - Failed to load resource: the server responded with a status of 403",))

    _key(browser, served_world["keys"]["root"])
    browser.driver.find_element("css selector", "#upload-form button[type=submit]").click()
    browser.wait_for("return !document.querySelector('#upload-result').hidden")
    counts = browser.js("return Object.fromEntries([...document.querySelectorAll('[data-count]')].map((e) => "
                        "[e.dataset.count, e.textContent]))")
    assert counts == {"accepted": "2", "duplicate": "1", "rejected": "1"}
    rows = _table(browser, "[data-report-table] table")
    assert [r[2] for r in rows] == ["accepted", "accepted", "duplicate", "rejected"]
    assert rows[3][4] == "hparams.learning_rate" and "greater than 0" in rows[3][5]
    assert browser.js("return sessionStorage.getItem('metaml.apiKey')") == served_world["keys"]["root"]
    assert browser.js("return document.cookie") == "" and browser.js("return localStorage.length") == 0

    link = browser.driver.find_element("id", "upload-csv")
    assert link.get_attribute("download") == "runs-report.csv" and link.get_attribute("href").startswith("blob:")
    saved = browser.download(link, tmp_path / "downloads")
    assert saved.name == "runs-report.csv"
    report = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [r["status"] for r in report] == ["accepted", "accepted", "duplicate", "rejected"]
    assert report[3]["field"] == "hparams.learning_rate" and report[0]["locator"] and len(report[0]["run_id"]) == 32
    assert httpx.get(served.url + "/v1/stats").json()["runs"] == before + 2
    _clean(browser)
    browser.screenshot(ARTIFACTS / "upload-report-1280.png")

    browser.driver.find_element("css selector", "[data-report-table] tbody tr a").click()
    _settled(browser)
    assert browser.js("return document.querySelector('h1').textContent").startswith("Run ")
    assert "ui/browser-upload" in browser.js("return document.querySelector('.lead').textContent")

    # the same file dropped on the zone: everything is already there
    _load(browser, urls["upload"])
    browser.js("""
        const dt = new DataTransfer();
        dt.items.add(new File([arguments[0]], 'runs-again.jsonl', {type: 'application/x-ndjson'}));
        document.querySelector('#drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    """, path.read_text())
    assert "runs-again.jsonl" in browser.js("return document.querySelector('#drop-name').textContent")
    browser.driver.find_element("css selector", "#upload-form button[type=submit]").click()
    browser.wait_for("return !document.querySelector('#upload-result').hidden")
    statuses = [r[2] for r in _table(browser, "[data-report-table] table")]
    assert statuses == ["duplicate", "duplicate", "duplicate", "rejected"]
    _clean(browser)


# -- advisor ---------------------------------------------------------------------------------------------------------


def _advise(b: Browser, *, models: list[str], methods: list[str], budget: int) -> list[list[str]]:
    b.js("document.querySelectorAll('input[name=model], input[name=method]').forEach((i) => { i.checked = false; })")
    more = b.driver.find_element("id", "adv-more-models")
    more.clear()
    more.send_keys(", ".join(models))
    for m in methods:
        b.driver.find_element("css selector", f"input[name=method][value='{m}']").click()
    budget_field = b.driver.find_element("id", "adv-budget")
    budget_field.clear()
    budget_field.send_keys(str(budget))
    b.js("document.querySelector('#advisor-result').hidden = true")
    b.driver.find_element("css selector", "#advisor-form button[type=submit]").click()
    b.wait_for("return !document.querySelector('#advisor-result').hidden || "
               "!document.querySelector('#advisor-error').hidden")
    assert b.js("return document.querySelector('#advisor-error').hidden"), \
        b.js("return document.querySelector('#advisor-error').textContent")
    return _table(b, "[data-adv-table] table")


def test_advisor_ranks_configurations_and_its_snippet_runs(browser: Browser, urls: dict[str, str],
                                                            served: ServerProcess, public_data: Path,
                                                            tmp_path: Path) -> None:
    """A known dataset: the ranked configurations are /v1/recommend's for the same request, best first, with
    predicted score inside its interval, training time and failure risk; the Optuna snippet compiles and, run with a
    stand-in training function, evaluates the recommended configurations first; the Ray Tune snippet compiles. Pasted
    meta-features and a sample file (described on the server) give rankings too."""
    models = ["roberta-base", "bert-base-uncased"]
    _load(browser, urls["advisor"])
    ranked = _advise(browser, models=models, methods=["full", "lora"], budget=5)
    request = {"task": {"primary_metric": "accuracy"}, "dataset": {"name": "glue/sst2"}, "source": "upload",
               "space": {"models": [{"id": m} for m in models],
                         "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}, {"name": "lora", "lora_r": 16}],
                         "hparams": {"learning_rate": {"low": 1e-5, "high": 5e-4, "log": True},
                                     "batch_size": [16, 32], "epochs": [3]}},
               "budget": 5}
    answer = httpx.post(served.url + "/v1/recommend", json=request, timeout=120).json()
    header = _headers(browser, "[data-adv-table] table")
    assert [(r[1], r[2]) for r in ranked] == [
        (c["config"]["model"]["id"], c["config"]["method"]["name"] + (
            f"(lora_r={c['config']['method']['lora_r']})" if c["config"]["method"].get("lora_r") else ""))
        for c in answer["ranked"]]
    for r, c in zip(ranked, answer["ranked"], strict=True):
        assert float(r[header.index("predicted score")]) == pytest.approx(c["score"], rel=1e-3)
        lo, hi = (float(x) for x in r[header.index("80% interval")].split(" – "))
        assert lo <= c["score"] <= hi
        assert r[header.index("training time")] and r[header.index("failure risk")].endswith("%")
    browser.screenshot(ARTIFACTS / "advisor-result-1280.png")

    optuna_code = browser.js("return document.querySelector('#optuna-snippet').textContent")
    ray_code = browser.js("return document.querySelector('#ray-snippet').textContent")
    compile(ray_code, "ray_snippet.py", "exec")
    evaluated: list[dict[str, Any]] = []
    scope: dict[str, Any] = {"train_and_evaluate": lambda config: evaluated.append(config) or 0.5}
    exec(compile(optuna_code.replace("n_trials=20", "n_trials=6"), "optuna_snippet.py", "exec"), scope)
    top = [c["config"] for c in answer["ranked"]]
    assert [(e["model"]["id"], e["method"].get("lora_r")) for e in evaluated[:5]] == \
        [(c["model"]["id"], c["method"].get("lora_r")) for c in top]
    assert [e["hparams"]["learning_rate"] for e in evaluated[:5]] == pytest.approx(
        [c["hparams"]["learning_rate"] for c in top])
    _clean(browser)

    browser.driver.find_element("css selector", "input[name=dataset_mode][value=meta]").click()
    assert browser.js("return document.querySelector('[data-mode=known]').hidden")
    ranked = _advise(browser, models=models, methods=["full"], budget=3)
    assert len(ranked) == 3
    assert "meta-features from request" in browser.js("return document.querySelector('[data-adv-status]').textContent")
    _clean(browser)

    from collector.features import load_public_text

    ds = load_public_text(public_data / "text", "glue_sst2")
    sample = tmp_path / "sst2-sample.csv"
    with open(sample, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        w.writerows(zip(ds.texts[:300], ds.labels[:300], strict=True))
    browser.driver.find_element("css selector", "input[name=dataset_mode][value=sample]").click()
    browser.driver.find_element("id", "adv-sample").send_keys(str(sample))
    ranked = _advise(browser, models=models, methods=["full", "lora"], budget=4)
    assert len(ranked) == 4
    described = dict(browser.js("return [...document.querySelectorAll('[data-sample-meta] > div')].map((d) => "
                                "[d.querySelector('dt').textContent, d.querySelector('dd').textContent])"))
    assert described["n_samples"] == "300" and described["n_classes"] == "2"
    _clean(browser)


# -- SQL -------------------------------------------------------------------------------------------------------------


def test_sql_answers_as_a_table_and_a_csv(browser: Browser, urls: dict[str, str], served: ServerProcess,
                                          served_world: dict[str, Any], tmp_path: Path) -> None:
    """An analyst key runs the example query: the table is /v1/sql's answer, the CSV holds the same rows; a row limit
    says the answer is truncated; a write is refused with the API's code; a read key gets the API's 403."""
    _load(browser, urls["sql"])
    _key(browser, served_world["keys"]["root"])
    query = browser.js("return document.querySelector('#sql-query').value")
    browser.driver.find_element("css selector", "#sql-form button[type=submit]").click()
    browser.wait_for("return !document.querySelector('#sql-result').hidden")
    api = httpx.post(served.url + "/v1/sql", json={"query": query, "max_rows": 1000},
                     headers={"X-API-Key": served_world["keys"]["root"]}).json()
    rows = _table(browser, "[data-sql-table] table")
    assert [r[0] for r in rows] == [r[0] for r in api["rows"]] and len(rows) == api["row_count"] > 1
    assert [int(r[1].replace(",", "")) for r in rows] == [r[1] for r in api["rows"]]
    saved = browser.download(browser.driver.find_element("id", "sql-csv"), tmp_path / "downloads")
    table = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert table[0] == [c["name"] for c in api["columns"]] and [r[0] for r in table[1:]] == [r[0] for r in api["rows"]]
    _clean(browser)
    browser.screenshot(ARTIFACTS / "sql-result-1280.png")

    limit = browser.driver.find_element("id", "sql-max-rows")
    limit.clear()
    limit.send_keys("1")
    browser.driver.find_element("css selector", "#sql-form button[type=submit]").click()
    browser.wait_for("return document.querySelector('[data-sql-status]').textContent.startsWith('1 row ')")
    assert "truncated" in browser.js("return document.querySelector('[data-sql-status]').textContent")

    area = browser.driver.find_element("id", "sql-query")
    area.clear()
    area.send_keys("DROP TABLE runs")
    browser.driver.find_element("css selector", "#sql-form button[type=submit]").click()
    assert browser.wait_for("return document.querySelector('#sql-error').textContent").startswith("400 query_refused")
    _key(browser, served_world["keys"]["reader"])
    browser.driver.find_element("css selector", "#sql-form button[type=submit]").click()
    browser.wait_for("return document.querySelector('#sql-error').textContent.startsWith('403')")
    _clean(browser, allow=("/v1/sql - Failed to load resource: the server responded with a status of 4",))
    assert httpx.get(served.url + "/v1/stats").json()["runs"] > 0


# -- keys for reads --------------------------------------------------------------------------------------------------


def test_pages_follow_a_server_that_requires_keys_for_reads(served_world: dict[str, Any]) -> None:
    """With METAML_READ_REQUIRES_KEY, a read page without a key shows a key form (401) and no data; a bad key is
    refused; a read key shows the page, is kept for the tab only (sessionStorage: no cookie, no localStorage), and
    opens the other pages; a new browser session starts without it."""
    kb = served_world["kb"]
    with ServerProcess(kb.path, settings={"read_requires_key": True, "tracking_uri": served_world["uri"]}) as server:
        page = httpx.get(server.url + "/ui/datasets")
        assert page.status_code == 401 and "asks for an API key" in page.text and "glue/sst2" not in page.text
        assert httpx.get(server.url + "/ui/datasets", headers={"X-API-Key": served_world["keys"]["reader"]}
                         ).status_code == 200
        b = Browser(1280, 900)
        try:
            b.get(server.url + "/ui/datasets")
            b.wait_for("return !!document.querySelector('#gate-form')")
            assert b.js("return document.querySelector('#dataset-table')") is None
            _key(b, "mk_000000000000_not-a-key", "#gate-key")
            b.driver.find_element("css selector", "#gate-form button[type=submit]").click()
            b.wait_for("return document.querySelector('#gate-reason').textContent.includes('invalid')")
            _key(b, served_world["keys"]["reader"], "#gate-key")
            b.driver.find_element("css selector", "#gate-form button[type=submit]").click()
            b.wait_for("return !!document.querySelector('#dataset-table')")
            assert "glue/sst2" in [r[0] for r in _table(b, "#dataset-table")]
            assert b.js("return sessionStorage.getItem('metaml.apiKey')") == served_world["keys"]["reader"]
            assert b.js("return document.cookie") == "" and b.js("return localStorage.length") == 0
            b.get(server.url + "/ui/datasets/glue/sst2")
            b.wait_for("return !!document.querySelector('#leaderboard')")
            b.wait_for("return !document.querySelector('[data-rec-status]').textContent.includes('Asking')")
            assert len(_table(b, "[data-rec-table] table")) == 5
            errors = [e for e in b.console_errors() if "status of 401" not in e]
            assert errors == [] and b.foreign_requests() == []
        finally:
            b.quit()
        fresh = Browser(1280, 900)
        try:
            fresh.get(server.url + "/ui/")
            fresh.wait_for("return !!document.querySelector('#gate-form')")
            assert fresh.js("return sessionStorage.length") == 0
        finally:
            fresh.quit()


def test_static_assets_are_the_package_files_and_nothing_else(served: ServerProcess) -> None:
    """/ui/static serves the package's CSS, JS and icon with their types, and nothing outside its folder."""
    static = Path(__file__).resolve().parents[1] / "service" / "ui" / "static"
    for name, kind in (("ui.css", "text/css"), ("ui.js", "text/javascript"), ("icon.svg", "image/svg+xml")):
        r = httpx.get(f"{served.url}/ui/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert r.content == (static / name).read_bytes()
    for bad in ("..%2f_routes.py", "%2e%2e/__init__.py", "missing.css", "..%2ftemplates%2fbase.html"):
        assert httpx.get(f"{served.url}/ui/static/{bad}").status_code == 404
    page = httpx.get(served.url + "/ui/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
