"""The CIMcloud sandbox in-process (uvicorn in a thread, a free loopback port, its own SQLite file).

Registered for every test module by one import line in tests/conftest.py; the sandbox (FastAPI,
uvicorn) is imported only when a test asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from mapsync.testing.sandbox import Running

CREDENTIALS = {"AuthKey": "sandbox-key", "AuthUserName": "sandbox", "AuthPassword": "sandbox-password"}


@pytest.fixture
def cimcloud_sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """`factory(**Config fields)` → a started sandbox (stopped after the test)."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options: Any) -> Running:
            from mapsync.testing.sandbox import Config, Running

            nonlocal count
            count += 1
            options.setdefault("db_path", str(tmp_path / f"sandbox{count}.db"))
            return stack.enter_context(Running(Config(**options)))

        yield start


@pytest.fixture
def cimcloud_sandbox(cimcloud_sandbox_factory: Callable[..., Running]) -> Running:
    """A sandbox with the budget off, site `sandbox`, async contract `none`."""
    return cimcloud_sandbox_factory()


def site_url(sandbox: Running) -> str:
    return f"{sandbox.base_url}/{sandbox.sandbox.config.site}/"


@contextlib.contextmanager
def token_client(sandbox: Running) -> Iterator[httpx.Client]:
    """An httpx client already holding a bearer token of the sandbox."""
    with httpx.Client(base_url=site_url(sandbox), timeout=10) as client:
        token = client.post("authenticate", json=CREDENTIALS).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
