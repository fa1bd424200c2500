"""The built-in dashboard's page: one HTML file, its script and its style sheet, served by the
gateway itself (`app/dashboard.py`) with nothing fetched from elsewhere, so it works offline and
under a strict Content-Security-Policy. The page holds no data and no secret: it asks for a key,
keeps it in the tab's sessionStorage, and draws what `/dashboard/data` answers as SVG."""

from __future__ import annotations

from importlib.resources import files

ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}


def asset(name: str) -> bytes:
    """The bytes of one of `ASSETS`."""
    if name not in ASSETS:
        raise KeyError(name)
    return files("gateway.dashboard").joinpath(name).read_bytes()
