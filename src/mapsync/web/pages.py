"""The dashboard's HTML pages (docs/dashboard.md, "Pages"): `router` = read pages + form posts + /static.

Server-rendered Jinja2 over the same read and action functions as the JSON API; htmx (vendored
in `static/`) only enhances the forms, which work without JavaScript.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from mapsync.web import pages_actions, pages_read
from mapsync.web.templating import STATIC_DIR

STATIC_FILES = {"app.css": "text/css", "app.js": "text/javascript", "htmx.min.js": "text/javascript"}

router = APIRouter(include_in_schema=False)
router.include_router(pages_read.router)
router.include_router(pages_actions.router)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The few static files (no login needed: the login page uses the stylesheet)."""
    media = STATIC_FILES.get(name)
    if media is None:
        raise HTTPException(status_code=404, detail="not found")
    return FileResponse(
        STATIC_DIR / name, media_type=media, headers={"Cache-Control": "public, max-age=3600"}
    )
