"""Placeholder: h-pages replaces this module at merge."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
