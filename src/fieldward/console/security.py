"""Credentials of the console: Argon2 passwords, bearer tokens hashed at rest, CSRF, login throttling.

- Passwords: Argon2id (argon2-cffi defaults); :func:`verify_password` never raises on a malformed hash.
- Tokens: ``secrets.token_urlsafe(32)`` (256 random bits) with a prefix telling what they open —
  ``fwt_`` a user's API token or browser session, ``fws_`` a sensor. Being high-entropy, a token is
  stored as its SHA-256 (a fast hash is enough; Argon2 would make every request slow).
- CSRF: the token a browser must echo in ``X-CSRF-Token`` is derived from its (HttpOnly) session
  token, so it needs no storage and dies with the session.
- :class:`LoginLimiter`: failed logins per (username, client address) in a sliding window; the state
  lives on the application (``app.state``), not in a module global.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "SENSOR_PREFIX",
    "USER_PREFIX",
    "LoginLimiter",
    "csrf_token",
    "csrf_valid",
    "generate_password",
    "hash_password",
    "hash_token",
    "new_token",
    "password_needs_rehash",
    "verify_password",
]

USER_PREFIX = "fwt_"
SENSOR_PREFIX = "fws_"
_HASHER = PasswordHasher()
# A hash of a random password: verifying against it when the user does not exist costs the same time
# as a real verification, so the response time does not reveal which user names exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing or malformed hash is simply False."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def generate_password() -> str:
    """A random password for the first administrator (about 128 bits)."""
    return secrets.token_urlsafe(16)


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh token and its hash: ``(secret, hash)``; only the hash may be stored."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, hash_token(secret)


def hash_token(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a browser session (HMAC of the session token, which only the cookie holds)."""
    return hmac.new(session_secret.encode(), b"fieldward-csrf", hashlib.sha256).hexdigest()


def csrf_valid(session_secret: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session_secret), presented)


class LoginLimiter:
    """At most ``attempts`` failed logins per key within ``window`` seconds (thread-safe, bounded)."""

    def __init__(
        self,
        attempts: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.attempts = attempts
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, username: str, client: str) -> float:
        """Seconds until the next attempt is allowed (0: allowed now)."""
        now = self.clock()
        key = (username.casefold(), client)
        with self._lock:
            failures = self._recent(key, now)
            if len(failures) < self.attempts:
                return 0.0
            return max(0.0, failures[0] + self.window - now)

    def failed(self, username: str, client: str) -> None:
        now = self.clock()
        key = (username.casefold(), client)
        with self._lock:
            if key not in self._failures and len(self._failures) >= self.max_keys:
                for stale in list(self._failures)[:1000]:
                    self._recent(stale, now)  # drops the key when its failures expired
                if len(self._failures) >= self.max_keys:  # still full: forget the oldest key
                    self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop((username.casefold(), client), None)
