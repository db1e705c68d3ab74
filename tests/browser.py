"""A headless Chromium driven by Selenium, for the page tests: Debian's ``chromium`` and ``chromedriver`` (never a
downloaded browser), a fresh profile, no background traffic, and the two logs the tests read: the console (errors)
and the DevTools network events (every URL a page asked for).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = Path(os.environ.get("METAML_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("METAML_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: Hosts a page may reach: this machine only.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Schemes that never leave the browser.
INNER_SCHEMES = frozenset({"data", "blob", "about", "chrome", "devtools", "chrome-extension"})

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage", "--no-default-browser-check",
         "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
         "CertificateTransparencyComponentUpdater",
         # a name that is not loopback resolves to nothing: a page's stray request fails at once, on no network
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")


def available() -> bool:
    """Whether Debian's Chromium and its driver are installed."""
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


def is_local(url: str) -> bool:
    """Whether a request for ``url`` stays on this machine (loopback hosts, or a scheme that never leaves the
    browser)."""
    parts = urlsplit(url)
    if parts.scheme in INNER_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and (parts.hostname or "") in LOCAL_HOSTS


class Browser:
    """One headless Chromium session (a fresh profile in a temporary folder, removed on :meth:`quit`).

    Args:
        width, height: the window size in CSS pixels.
    """

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never fetch a browser or a driver
        self.profile = Path(tempfile.mkdtemp(prefix="metaml-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(self.profile / "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(120)
        self.requested: list[str] = []
        self.console: list[dict[str, Any]] = []

    # -- logs ----------------------------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Move the browser's pending log entries into :attr:`requested` and :attr:`console`."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
            elif message.get("method") == "Network.webSocketCreated":
                self.requested.append(message["params"]["url"])
        self.console.extend(self.driver.get_log("browser"))

    def console_errors(self) -> list[str]:
        """Console messages of level SEVERE so far (errors, failed loads, CSP violations, uncaught exceptions)."""
        self.drain()
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"]

    def foreign_requests(self) -> list[str]:
        """Every URL requested so far that would leave this machine."""
        self.drain()
        return [u for u in self.requested if not is_local(u)]

    def clear_logs(self) -> None:
        self.drain()
        self.requested.clear()
        self.console.clear()

    # -- pages ---------------------------------------------------------------------------------------------------------

    def get(self, url: str) -> None:
        self.driver.get(url)

    def resize(self, width: int, height: int) -> None:
        self.driver.set_window_size(width, height)

    def wait_for(self, script: str, timeout: float = 60.0, *args: Any) -> Any:
        """Wait until the JavaScript expression ``script`` (``return ...``) is truthy; its value."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda d: d.execute_script(script, *args))

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page's height when ``full_page``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if full_page:
            size = self.driver.get_window_size()
            height = self.js("return Math.ceil(document.documentElement.scrollHeight)")
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": self.js("return window.innerWidth"), "height": min(int(height), 8000),
                "deviceScaleFactor": 1, "mobile": False})
            try:
                self.driver.save_screenshot(str(path))
            finally:
                self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
                self.driver.set_window_size(size["width"], size["height"])
        else:
            self.driver.save_screenshot(str(path))
        return path

    def download(self, element: Any, folder: Path, timeout: float = 30.0) -> Path:
        """Click ``element`` (a download link) and wait for the file it saves into ``folder``."""
        import time

        folder.mkdir(parents=True, exist_ok=True)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow",
                                                                     "downloadPath": str(folder)})
        before = set(folder.iterdir())
        element.click()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [p for p in set(folder.iterdir()) - before if not p.name.endswith(".crdownload")]
            if done:
                return done[0]
            time.sleep(0.1)
        raise TimeoutError(f"no download in {folder} after {timeout:g}s")

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def browser_session(width: int = 1280, height: int = 900) -> Iterator[Browser]:
    """A :class:`Browser` for a ``with``-less fixture: yields it, quits it."""
    b = Browser(width, height)
    try:
        yield b
    finally:
        b.quit()
