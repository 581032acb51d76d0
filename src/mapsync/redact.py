"""Secret redaction: the one place that decides what of a secret may never be shown.

A secret (a value that came from `${VAR}`, a token, a password) can reach text in more forms
than its raw value: an API that echoes the request headers shows the base64 of a Basic
`user:password`; a URL carries the percent-encoded form; JSON output escapes quotes and
backslashes; a password pasted raw into a URL splits it, and its pieces turn up as host, port
or path. `forms(secret)` lists every such form and `Redactor` replaces each with `***`, longest
first. Errors, `--json`, the run summary, logs and the state store (run messages, record
errors) all go through here.

Limits: forms shorter than `MIN_LENGTH` characters are not replaced (they would blank out
ordinary text); a fragment of a secret split by a URL is replaced only when at least
`MIN_LENGTH` characters long.

This module imports nothing from mapsync: every layer may use it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 3
URL_DELIMITERS = "@:/#?%"
_SPLIT = re.compile(f"[{re.escape(URL_DELIMITERS)}]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<rest>.*)$", re.S)


def basic_credentials(username: str, password: str) -> str:
    """The base64 of `user:password` that a Basic `Authorization` header carries: a secret of
    its own (a server echoing the request headers shows it), though the user name is not."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _encodings(value: str) -> set[str]:
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),  # `/` kept, as in a path
        urllib.parse.quote_plus(value),
        urllib.parse.quote(value, safe="").lower(),  # lower-case %xx, as some servers write it
        json.dumps(value)[1:-1],  # inside a JSON string
        json.dumps(value, ensure_ascii=False)[1:-1],
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def _fragments(value: str) -> set[str]:
    """The pieces a URL parser can cut a raw password into: each piece between delimiters,
    each head ending before one and each tail starting after one."""
    out: set[str] = set()
    cuts = [m.start() for m in _SPLIT.finditer(value)]
    if not cuts:
        return out
    out.update(_SPLIT.split(value))
    for cut in cuts:
        out.add(value[:cut])
        out.add(value[cut + 1 :])
    return out


def _url_password(value: str) -> str | None:
    """The password of a URL-valued secret (`${DATABASE_URL}`): everything between the first
    `:` after `scheme://` and the last `@`, as a raw password would read."""
    match = _URL.match(value)
    if not match:
        return None
    rest = match.group("rest")
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo = rest[:at]
    _user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return None
    return urllib.parse.unquote(password)


@functools.lru_cache(maxsize=256)
def forms(secret: str) -> frozenset[str]:
    """Every form of `secret` that must not be shown (at least `MIN_LENGTH` characters each)."""
    if not secret:
        return frozenset()
    out = _encodings(secret)
    # a whole URL is not cut into pieces (its scheme, host and path are not secret); its
    # password is, and so is any other secret
    if _URL.match(secret):
        password = _url_password(secret)
        pieces: tuple[str, ...] = (password,) if password else ()
    else:
        pieces = (secret,)
    for piece in pieces:
        if piece != secret:
            out |= _encodings(piece)
        for fragment in _fragments(piece):
            out |= _encodings(fragment)
    return frozenset(f for f in out if len(f) >= MIN_LENGTH)


@functools.lru_cache(maxsize=64)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    every: set[str] = set()
    for secret in secrets:
        every |= forms(secret)
    if not every:
        return None
    return re.compile("|".join(re.escape(f) for f in sorted(every, key=lambda f: (-len(f), f))))


def redact(text: str, secrets: Iterable[str], cap: int | None = None) -> str:
    """`text` with every form of every secret replaced by `***`; with `cap`, also folded to one
    line and cut to `cap` characters (the cut comes after the redaction, so no half secret)."""
    pattern = _pattern(frozenset(s for s in secrets if s))
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if cap is not None:
        text = " ".join(text.split())
        text = text if len(text) <= cap else text[: cap - 1] + "…"
    return text


class Redactor:
    """A growing set of secrets and the redaction they imply (e.g. the log formatters')."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: frozenset[str] = frozenset(s for s in secrets if s)

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets = self.secrets | {s for s in secrets if s}

    def __call__(self, text: str, cap: int | None = None) -> str:
        return redact(text, self.secrets, cap)
