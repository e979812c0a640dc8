"""`/docs` (Swagger UI) and `/redoc` render with the network unplugged: their scripts and styles come from the
server (the fastapi-offline package), and any request to another host is aborted."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def unplug(page, server_url: str) -> list[str]:
    """Aborts every request that does not go to the server; returns the list of the aborted URLs."""
    local = urlsplit(server_url).netloc
    aborted: list[str] = []

    def route(r) -> None:
        url = r.request.url
        if urlsplit(url).netloc == local or url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            aborted.append(url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    return aborted


def test_swagger_ui_renders_offline(page, web_server):
    aborted = unplug(page, web_server.url)
    page.goto(f"{web_server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("wanserve")
    expect(page.locator(".opblock-summary-path", has_text="/v1/jobs").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/models").first).to_be_visible()
    assert aborted == []  # nothing was even asked of another host


# ReDoc's bundle shows its makers' logo in the menu from their CDN (a URL written in the bundle); offline that one
# decorative image is missing, and the page is whole.
REDOC_CREDIT_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_redoc_renders_offline(page, web_server, page_errors):
    aborted = unplug(page, web_server.url)
    page_errors.expect("ERR_INTERNET_DISCONNECTED")  # the credit logo, below
    page.goto(f"{web_server.url}/redoc")
    expect(page.locator("h1", has_text="wanserve")).to_be_visible()
    expect(page.get_by_text("Generate videos with the Wan models").first).to_be_visible()
    expect(page.get_by_role("menuitem").filter(has_text="Create Job").first).to_be_attached()
    assert set(aborted) <= {REDOC_CREDIT_LOGO}, aborted
