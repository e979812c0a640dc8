"""Browser tests: Playwright driving the system's Chromium (Debian's `chromium` package; never `playwright install`)
headless against a real `wanserve serve` with tiny models.

Every page fails its test when it throws (`pageerror`) or logs a console error, unless the test declared that
error as expected (`page_errors.expect("422")` for a request the test makes fail on purpose).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")
TIMEOUT_MS = 60_000
"""How long an action or expectation waits: a busy 2-core machine runs a tiny job in seconds, not minutes."""


def chromium_path() -> str | None:
    """`WANSERVE_TEST_CHROMIUM`, or the first Chromium on the PATH."""
    configured = os.environ.get("WANSERVE_TEST_CHROMIUM")
    if configured:
        return configured
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium. Absent Chromium skips the browser tests, except under CI, where it fails them.

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread while it is open, and a
    session-wide one made every later test that calls `asyncio.run` fail (tests/jobs/test_event_push.py)."""
    path = chromium_path()
    if path is None:
        message = "no Chromium found (apt-get install chromium, or set WANSERVE_TEST_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    playwright_api = pytest.importorskip("playwright.sync_api")
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def web_server(start_server):
    """A server for the page: a text-to-video and an image-to-video tiny model, with the test hold hook."""
    return start_server({"WANSERVE_MODELS": "tiny-t2v,tiny-i2v"}, name="web")


@dataclass
class PageErrors:
    """Errors a page reported; `expect(text)` allows the next console error that contains `text`."""

    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, text: str) -> None:
        self.expected.append(text)

    def console(self, message) -> None:
        if message.type != "error":
            return
        allowed = next((text for text in self.expected if text in message.text), None)
        if allowed is not None:
            self.expected.remove(allowed)
        else:
            self.errors.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def page_error(self, error) -> None:
        self.errors.append(f"uncaught exception: {error}")


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def new_page(browser, page_errors):
    """`new_page(width=1280, height=800)`: a fresh browser context and page; it fails the test at teardown if it
    threw or logged an unexpected console error."""
    contexts = []

    def make(width: int = 1280, height: int = 800, **options):
        context = browser.new_context(viewport={"width": width, "height": height}, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", page_errors.console)
        page.on("pageerror", page_errors.page_error)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not page_errors.errors, "\n".join(page_errors.errors)


@pytest.fixture
def page(new_page):
    """A page at 1280x800."""
    return new_page()
