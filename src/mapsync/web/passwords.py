"""Password hashes for the sheet's `web: users` (`mapsync web hash-password`) and constant-time
comparisons of secrets.

Format: `scrypt$N$r$p$<salt base64>$<hash base64>` (hashlib.scrypt, a 16-byte random salt, a
32-byte key). Verifying bounds the cost parameters, so a tampered sheet cannot make one login
take minutes or gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets

N, R, P = 16_384, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
_MAX_N, _MAX_R, _MAX_P = 1 << 20, 32, 16


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=KEY_BYTES
    )


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """The sheet's text for `password` (a fresh salt each time)."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, n, r, p)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (a `hash_password` text); False for a malformed text
    or cost parameters out of bounds (never an exception that could echo the hash)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return False
    if not salt or len(expected) != KEY_BYTES:
        return False
    try:
        key = _scrypt(password, salt, n, r, p)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(key, expected)


def same_token(given: str, expected: str) -> bool:
    """Whether two secrets are equal, in time independent of where they differ."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@functools.cache
def dummy_hash() -> str:
    """A hash verified for an unknown user, so that a login takes as long whether the user exists."""
    return hash_password(secrets.token_urlsafe(16))
