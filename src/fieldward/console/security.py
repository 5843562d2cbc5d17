"""Credentials of the console: Argon2 passwords, bearer tokens hashed at rest, CSRF, login throttling.

- Passwords: Argon2id (argon2-cffi defaults); :func:`verify_password` never raises on a malformed hash.
- Tokens: ``secrets.token_urlsafe(32)`` (256 random bits) with a prefix telling what they open —
  ``fwt_`` a user's API token or browser session, ``fws_`` a sensor. Being high-entropy, a token is
  stored as its SHA-256 (a fast hash is enough; Argon2 would make every request slow).
- CSRF: the token a browser must echo in ``X-CSRF-Token`` is derived from its (HttpOnly) session
  token, so it needs no storage and dies with the session.
- :class:`LoginLimiter`: failed logins per (username, client address) in a sliding window; the state
  lives on the application (``app.state``), not in a module global. With a database (what
  ``create_app`` passes) the failures are rows of ``login_attempts``, so every worker process of
  ``fieldward serve --workers N`` counts the same ones; without one they stay in memory.
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
from sqlalchemy import delete, insert, select

from fieldward.store.console_models import LoginAttempt
from fieldward.store.database import Database

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
    """At most ``attempts`` failed logins per key within ``window`` seconds (thread-safe, bounded).

    ``database``: keep the attempts in its ``login_attempts`` table (shared by every process on that
    database; ``clock`` must then be wall-clock time, the default): :meth:`retry_after` records an
    allowed attempt, :meth:`succeeded` forgets the key's attempts. None: failures are kept in this
    object's memory by :meth:`failed` (``clock`` default: monotonic time). Callers call
    :meth:`retry_after` first, then :meth:`failed` or :meth:`succeeded` (the login route does)."""

    def __init__(
        self,
        attempts: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] | None = None,
        *,
        database: Database | None = None,
    ) -> None:
        self.clock = clock or (time.monotonic if database is None else time.time)
        self.attempts = attempts
        self.window = window
        self.max_keys = max_keys
        self.database = database
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(key: tuple[str, str]) -> str:
        return hashlib.sha256("\0".join(key).encode("utf-8", "surrogatepass")).hexdigest()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def _reserve(self, key: tuple[str, str], now: float) -> float:
        """Record the attempt, then count: an insert before the count lets concurrent requests in any
        worker see each other, so no more than ``attempts`` get through (a race may refuse one more
        than needed, never admit one). A refused attempt's row is removed again."""
        assert self.database is not None
        digest = self._digest(key)
        with self.database.engine.begin() as connection:
            # expired attempts of every key go: the table holds at most one window's attempts
            connection.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - self.window))
            inserted = connection.execute(insert(LoginAttempt).values(key=digest, at=now))
            mine = inserted.inserted_primary_key[0] if inserted.inserted_primary_key else None
        with self.database.engine.connect() as connection:
            rows = connection.execute(
                select(LoginAttempt.id, LoginAttempt.at)
                .where(LoginAttempt.key == digest, LoginAttempt.at > now - self.window)
                .order_by(LoginAttempt.at, LoginAttempt.id)
            ).all()
        if len(rows) <= self.attempts:
            return 0.0
        with self.database.engine.begin() as connection:
            connection.execute(delete(LoginAttempt).where(LoginAttempt.id == mine))
        others = [at for row_id, at in rows if row_id != mine]
        wait = others[len(others) - self.attempts] + self.window - now if len(others) >= self.attempts else 0
        return max(1.0, min(self.window, wait))  # another process's clock may run ahead

    def retry_after(self, username: str, client: str) -> float:
        """Seconds until the next attempt is allowed (0: allowed now).

        With a database an allowed attempt is recorded here (it counts as a failure until
        :meth:`succeeded`; :meth:`failed` then has nothing to add)."""
        now = self.clock()
        key = (username.casefold(), client)
        if self.database is not None:
            return self._reserve(key, now)
        with self._lock:
            failures = self._recent(key, now)
            if len(failures) < self.attempts:
                return 0.0
            return max(0.0, failures[0] + self.window - now)

    def failed(self, username: str, client: str) -> None:
        now = self.clock()
        key = (username.casefold(), client)
        if self.database is not None:
            return  # recorded by retry_after() (before the password check)
        with self._lock:
            if key not in self._failures and len(self._failures) >= self.max_keys:
                for stale in list(self._failures)[:1000]:
                    self._recent(stale, now)  # drops the key when its failures expired
                if len(self._failures) >= self.max_keys:  # still full: forget the oldest key
                    self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, client: str) -> None:
        key = (username.casefold(), client)
        if self.database is not None:
            with self.database.engine.begin() as connection:
                connection.execute(delete(LoginAttempt).where(LoginAttempt.key == self._digest(key)))
            return
        with self._lock:
            self._failures.pop(key, None)
