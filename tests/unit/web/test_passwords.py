"""mapsync.web.passwords: scrypt hashes in the sheet's format, and constant-time comparisons."""

from __future__ import annotations

import base64
import re

import pytest

from mapsync.sheet.web_models import WebUser
from mapsync.web import passwords


def test_a_hash_verifies_its_password_only() -> None:
    stored = passwords.hash_password("correct horse battery", n=1024)
    assert re.fullmatch(r"scrypt\$1024\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", stored)
    assert passwords.verify_password("correct horse battery", stored)
    assert not passwords.verify_password("correct horse batterz", stored)
    assert not passwords.verify_password("", stored)


def test_the_default_cost_is_the_designs_and_the_sheet_accepts_it() -> None:
    stored = passwords.hash_password("pw-for-the-sheet")
    assert stored.startswith("scrypt$16384$8$1$")
    assert "pw-for-the-sheet" not in stored
    assert WebUser(role="viewer", password_hash=stored).password_hash == stored
    assert passwords.verify_password("pw-for-the-sheet", stored)


def test_each_hash_has_its_own_salt() -> None:
    one, two = (passwords.hash_password("same", n=1024) for _ in range(2))
    assert one != two
    assert passwords.verify_password("same", one) and passwords.verify_password("same", two)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$2b$12$abc",
        "scrypt$1024$8$1$not base64!$AAAA",
        "scrypt$1024$8$1$c2FsdA==$c2hvcnQ=",  # a key of the wrong length
        "scrypt$1000$8$1$c2FsdA==$" + base64.b64encode(bytes(32)).decode(),  # N not a power of 2
        "scrypt$1073741824$8$1$c2FsdA==$" + base64.b64encode(bytes(32)).decode(),  # N too costly
        "scrypt$1024$999$1$c2FsdA==$" + base64.b64encode(bytes(32)).decode(),  # r too costly
        "scrypt$x$8$1$c2FsdA==$" + base64.b64encode(bytes(32)).decode(),
    ],
)
def test_a_malformed_or_too_costly_hash_never_verifies(stored: str) -> None:
    assert passwords.verify_password("anything", stored) is False


def test_same_token() -> None:
    assert passwords.same_token("abc-123", "abc-123")
    assert not passwords.same_token("abc-123", "abc-124")
    assert not passwords.same_token("abc", "abc-123")
    assert passwords.same_token("é-ünï", "é-ünï")


def test_an_empty_password_is_refused() -> None:
    with pytest.raises(ValueError):
        passwords.hash_password("")


def test_the_dummy_hash_is_a_valid_hash_of_nobodys_password() -> None:
    assert passwords.dummy_hash().startswith("scrypt$16384$")
    assert not passwords.verify_password("", passwords.dummy_hash())
