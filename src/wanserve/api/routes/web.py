"""The web page: `GET /` serves `web/index.html`; its scripts and styles are under `/web/` (static files shipped
in the package, no build step). The page talks to the native API (`/v1/models`, `/v1/jobs`) like any client."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from wanserve.api.middleware import PAGE_SECURITY_HEADERS

WEB_DIR = Path(str(files("wanserve") / "web"))

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The page. Revalidated on every load, so an upgraded server's page is picked up at once."""
    headers = {"Cache-Control": "no-cache", **PAGE_SECURITY_HEADERS}
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=headers)


def mount_static(app: FastAPI) -> None:
    """Serves the page's scripts, styles and icons under `/web/`."""
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
