"""The CIMcloud sandbox for tests, its own SQLite file each: `cimcloud_sandbox` serves it with
uvicorn in a thread on a free loopback port (a real socket: for tests about HTTP itself, and for
a CLI in another process); `cimcloud_inprocess` reaches the same app through an httpx transport
(`mapsync.testing.sandbox_serve.InProcess`: no server, no socket, ~0.2 s less per sandbox), for tests
about a connector or a sync that make their connections in this process.

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
    from mapsync.testing.sandbox_serve import InProcess, Running

CREDENTIALS = {"AuthKey": "sandbox-key", "AuthUserName": "sandbox", "AuthPassword": "sandbox-password"}


@pytest.fixture
def cimcloud_sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`factory(**Config fields)` → a started sandbox (stopped after the test); with
    `in_process=True` an `InProcess` one instead of a `Running` one."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(in_process: bool = False, **options: Any) -> Running | InProcess:
            from mapsync.testing.sandbox import Config
            from mapsync.testing.sandbox_serve import InProcess, Running

            nonlocal count
            count += 1
            options.setdefault("db_path", str(tmp_path / f"sandbox{count}.db"))
            kind = InProcess if in_process else Running
            box: Running | InProcess = stack.enter_context(kind(Config(**options)))
            return box

        yield start


@pytest.fixture
def cimcloud_sandbox(cimcloud_sandbox_factory: Callable[..., Running]) -> Running:
    """A sandbox with the budget off, site `sandbox`, async contract `none`, on a real socket."""
    return cimcloud_sandbox_factory()


@pytest.fixture
def cimcloud_inprocess(cimcloud_sandbox_factory: Callable[..., InProcess]) -> InProcess:
    """The same sandbox through its httpx transport (connections made in this process only)."""
    return cimcloud_sandbox_factory(in_process=True)


def site_url(sandbox: Running | InProcess) -> str:
    return f"{sandbox.base_url}/{sandbox.sandbox.config.site}/"


@contextlib.contextmanager
def token_client(sandbox: Running | InProcess) -> Iterator[httpx.Client]:
    """An httpx client already holding a bearer token of the sandbox."""
    with sandbox.client(site_url(sandbox), timeout=10) as client:
        token = client.post("authenticate", json=CREDENTIALS).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
