"""Whose is a next-page URL? Credentials go only to the origin of the connection's `base_url`.

A REST source that pages by an absolute next URL (cursor in the body, `Link` header) follows it
with the connection's credentials only when its scheme, host and port are `base_url`'s. A host
the sheet names in `paging.allow_hosts` (`host` or `host:port`) is followed without credentials
or configured headers; anything else stops the run, naming both origins (never the URL's path
or query, which may carry a token).
"""

from __future__ import annotations

import urllib.parse

from mapsync import errors

_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in; the host lower-cased."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a number: never the same origin
        port = -1
    return scheme, (parts.hostname or "").lower(), port if port is not None else _PORTS.get(scheme)


def shown(o: tuple[str, str, int | None]) -> str:
    scheme, host, port = o
    return f"{scheme}://{host}" + ("" if port is None or port == _PORTS.get(scheme) else f":{port}")


def foreign(url: str, base_url: str, allow_hosts: list[str], where: str) -> bool:
    """False when `url` is on `base_url`'s origin (send the credentials); True when its host is
    in `allow_hosts` (send none); raises PermanentError (class `source`) otherwise."""
    theirs, ours = origin(url), origin(base_url)
    if theirs == ours:
        return False
    allowed = {h.strip().lower() for h in allow_hosts}
    if theirs[0] in _PORTS and (theirs[1] in allowed or f"{theirs[1]}:{theirs[2]}" in allowed):
        return True
    raise errors.PermanentError(
        f"{where}: the API points the next page to {shown(theirs)}, another origin than "
        f"`base_url` ({shown(ours)}); mapsync does not send the connection's credentials there. "
        "If that host is meant to serve the pages, name it in the connection's "
        "`paging.allow_hosts` (its pages are then fetched without credentials)",
        failure_class="source",
    )
