"""The transport seam of the REST client: origin (`http://host[:port]`) → the httpx transport that
serves it, for every `HttpClient` made while it is mounted (the CIMcloud sandbox's app in-process,
`testing.sandbox_serve.InProcess`, for tests that are not about HTTP). Nothing mounted (always,
outside tests): the real network. A transport given to `HttpClient` itself wins over a mounted one."""

from __future__ import annotations

import httpx

TRANSPORTS: dict[str, httpx.BaseTransport] = {}


def mount(origin: str, transport: httpx.BaseTransport) -> None:
    """Serve `origin`'s requests of every HttpClient made from now on through `transport`."""
    TRANSPORTS[origin.rstrip("/").lower()] = transport


def unmount(origin: str) -> None:
    TRANSPORTS.pop(origin.rstrip("/").lower(), None)


def mounted() -> dict[str, httpx.BaseTransport] | None:
    """httpx `mounts` for a new client: what is mounted now, or None."""
    return dict(TRANSPORTS) if TRANSPORTS else None
