"""Canary secrets: grep every artifact a run leaves for a secret and its derived forms.

A test plants known secret values (a password, a token, a Basic user and password), runs
mapsync, and hands every artifact to a `Canary`:

    c = canary("pa@ss:w0rd/9#x%y", basic=[("svc", "pa@ss:w0rd/9#x%y")])
    c.text("run stdout", done.stdout)              # CLI text, `--json`, an export file, …
    c.process("seed", done)                        # stdout + stderr of a CLI process
    c.store(state_url)                             # every row of every table of the state store
    c.assert_clean()                               # also checks the logs captured at DEBUG

The fixture `canary` (tests/conftest.py) captures the `mapsync` loggers at DEBUG through both
formatters (text and JSON) for as long as the test runs; `assert_clean` checks them too. The
webhook inbox lives in the state store, so `store` covers it; give other artifacts (a
dashboard's HTML, a metrics endpoint, an export) to `text` or `json`.

The derived forms are computed here, independently of `mapsync.redact` (a shared bug would
otherwise hide itself): the raw value, base64 (standard, unpadded, URL-safe), base64 of each
Basic `user:password`, percent-encoded (`quote` with and without `/`, `quote_plus`, lower-case
escapes), JSON-escaped, and the pieces a URL parser cuts a raw password into (between, before
and after `@ : / # ? %`), when at least `fragment_min` characters long. A secret that is a whole
URL is not cut up (its scheme and host are no secret); the password in it is.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import urllib.parse
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from mapsync import logs

_DELIMITERS = re.compile(r"[@:/#?%]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(.*)$", re.S)


def derived_forms(secret: str, *, basic_user: str | None = None, fragment_min: int = 5) -> dict[str, str]:
    """Form → how it was derived, for one secret."""
    out: dict[str, str] = {}

    def add(value: str, how: str) -> None:
        if value and value not in out:
            out[value] = how

    def encodings(value: str, what: str) -> None:
        raw = value.encode()
        add(value, what)
        add(base64.b64encode(raw).decode(), f"base64 of {what}")
        add(base64.b64encode(raw).decode().rstrip("="), f"unpadded base64 of {what}")
        add(base64.urlsafe_b64encode(raw).decode().rstrip("="), f"URL-safe base64 of {what}")
        add(urllib.parse.quote(value, safe=""), f"percent-encoded {what}")
        add(urllib.parse.quote(value), f"percent-encoded {what} (/ kept)")
        add(urllib.parse.quote_plus(value), f"quote_plus of {what}")
        add(urllib.parse.quote(value, safe="").lower(), f"lower-case percent-encoded {what}")
        add(json.dumps(value)[1:-1], f"JSON-escaped {what}")

    encodings(secret, "the secret")
    if basic_user is not None:
        pair = f"{basic_user}:{secret}".encode()
        add(base64.b64encode(pair).decode(), "base64 of Basic user:password")
    cut_up = secret
    url = _URL.match(secret)
    if url:  # a whole URL: its scheme and host are no secret, the password in it is
        userinfo = url.group(1).rpartition("@")[0]
        cut_up = urllib.parse.unquote(userinfo.partition(":")[2]) if "@" in url.group(1) else ""
        if cut_up:
            encodings(cut_up, "the password in the URL")
    cuts = [m.start() for m in _DELIMITERS.finditer(cut_up)]
    pieces = set(_DELIMITERS.split(cut_up)) if cuts else set()
    for cut in cuts:
        pieces |= {cut_up[:cut], cut_up[cut + 1 :]}
    for piece in sorted(pieces):
        if len(piece) >= fragment_min:
            encodings(piece, f"URL fragment {piece[:2]}… of the secret")
    return out


class Canary:
    """Known secrets and the leaks found of them so far."""

    def __init__(
        self,
        *secrets: str,
        basic: Iterable[tuple[str, str]] = (),
        fragment_min: int = 5,
        logs: list[str] | None = None,
    ) -> None:
        self.forms: dict[str, str] = {}
        for i, secret in enumerate(secrets, 1):
            for form, how in derived_forms(secret, fragment_min=fragment_min).items():
                self.forms.setdefault(form, f"{how} #{i}")
        for user, password in basic:
            for form, how in derived_forms(password, basic_user=user, fragment_min=fragment_min).items():
                self.forms.setdefault(form, f"{how} (Basic {user})")
        self.leaks: list[str] = []
        self.checked: list[str] = []
        self._logs = logs if logs is not None else []

    def text(self, where: str, text: str) -> list[str]:
        """Record (and return) every form found in `text`."""
        self.checked.append(where)
        found = [f"{where}: {how} ({form[:4]}…)" for form, how in self.forms.items() if form in text]
        self.leaks.extend(found)
        return found

    def json(self, where: str, data: Any) -> list[str]:
        return self.text(where, json.dumps(data, default=str)) + self.text(
            where, json.dumps(data, default=str, ensure_ascii=False)
        )

    def process(self, where: str, done: subprocess.CompletedProcess[str]) -> list[str]:
        return self.text(f"{where} stdout", done.stdout or "") + self.text(
            f"{where} stderr", done.stderr or ""
        )

    def store(self, url: str) -> list[str]:
        """Every row of every table of a database (the state store, the inbox in it, …)."""
        parsed = sa.make_url(url)
        driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
        engine = sa.create_engine(parsed.set(drivername=driver.get(parsed.drivername, parsed.drivername)))
        found: list[str] = []
        try:
            meta = sa.MetaData()
            meta.reflect(engine)
            with engine.connect() as conn:
                for table in meta.sorted_tables:
                    rows = conn.execute(sa.select(table)).all()
                    dump = "\n".join(repr(tuple(r)) + " " + " ".join(_text(v) for v in r) for r in rows)
                    found += self.text(f"state store table {table.name}", dump)
        finally:
            engine.dispose()
        return found

    def logs(self) -> list[str]:
        return self.text("logs at DEBUG", "\n".join(self._logs))

    def assert_clean(self) -> None:
        self.logs()
        assert not self.leaks, "secret leaked:\n" + "\n".join(self.leaks)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


class LogCapture(logging.Handler):
    """Every `mapsync` log record at DEBUG, formatted as the CLI would (text and JSON)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatters = (logs.TextFormatter(), logs.JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        for formatter in self.formatters:
            self.lines.append(formatter.format(record))
