"""`GET /`: the browser page (upload or record a clip and watch it anneal; live microphone streaming).

Everything the page loads ships in this package under `static/` (no external host), and its Content Security
Policy says so: a browser refuses any script, style or connection that is not this server's.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

# 'self' covers ws:/wss: to the same host in CSP level 3; blob: is the recorded clip played back.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> FileResponse:
    """The page itself."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                 "X-Content-Type-Options": "nosniff"})


def install_page(app: FastAPI) -> None:
    """Serve the page at `/` and its scripts and styles under `/static/`."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
