"""The Jinja2 environment of the dashboard pages (autoescaped HTML templates beside this module)."""

from __future__ import annotations

import pathlib

from fastapi.templating import Jinja2Templates

TEMPLATE_DIR = pathlib.Path(__file__).parent / "templates"
STATIC_DIR = pathlib.Path(__file__).parent / "static"

templates = Jinja2Templates(directory=str(TEMPLATE_DIR))
templates.env.autoescape = True
