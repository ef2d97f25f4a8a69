"""The studio page at ``/``: one static HTML + JS + CSS page shipped in ``app/static/`` (no CDN, no build step) that
drives the API from a browser: pick a job, drop the files, set the options, watch a job's progress, compare the
result with the input."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
ASSET_PREFIX = "/studio/"
# Every file the page loads, with its content type. Only these are served (no directory listing, no traversal).
ASSETS = {
    "studio.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
}
# Paths reachable without an API key (app/security.py): the page and its assets hold no data; the API calls it makes
# send the key the user typed.
PAGE_PATHS = frozenset({"/", *(ASSET_PREFIX + name for name in ASSETS)})
# The page only loads its own files and talks to this origin.
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def studio_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "studio.html", media_type="text/html; charset=utf-8",
                        headers={**HEADERS, "Content-Security-Policy": CSP})


def _asset_route(name: str, media_type: str) -> None:
    async def asset() -> FileResponse:
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers=HEADERS)

    router.add_api_route(ASSET_PREFIX + name, asset, methods=["GET"], name=f"studio_{name.replace('.', '_')}")


for _name, _media_type in ASSETS.items():
    _asset_route(_name, _media_type)
