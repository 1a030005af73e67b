"""Headless Chromium for the page tests: Debian's `chromium`, driven by Playwright, with the network cut off.

Every request that is not to a local file is blocked and recorded, and so is every console error and uncaught
exception, so that a test can assert a page is self-contained and runs cleanly. The browser is installed by
``tests/install_browser.sh`` when it is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def chromium_path() -> str:
    """The system Chromium, installed first when missing (raises with the command to run when that fails)."""
    if shutil.which("chromium") is None:
        done = subprocess.run(["bash", str(REPO / "tests" / "install_browser.sh")], capture_output=True, text=True)
        if done.returncode != 0 or shutil.which("chromium") is None:
            raise RuntimeError(f"could not install chromium for the page tests:\n{done.stderr[-2000:]}")
    return shutil.which("chromium")


@dataclass
class Visit:
    """An open page with what it tried to fetch from the network and what it logged as an error."""

    page: object
    blocked_requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@contextlib.contextmanager
def launched_chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def offline_visit(browser, path: Path, width: int = 1400, height: int = 1000) -> Iterator[Visit]:
    """Open ``path`` from disk in a fresh context where only local URLs load."""
    context = browser.new_context(viewport={"width": width, "height": height})
    visit = Visit(page=context.new_page())

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(LOCAL_SCHEMES):
            request_route.continue_()
        else:
            visit.blocked_requests.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = visit.page
    page.on("console", lambda message: visit.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: visit.errors.append(f"uncaught: {error}"))
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        yield visit
    finally:
        context.close()
