"""Login, logout, the current user and the own-password change (``/api/v1/auth``).

A login creates a browser session: an ``api_tokens`` row with the ``session`` scope whose secret goes
only into the HttpOnly cookie; the CSRF token returned in the body is derived from it. Failed logins
are throttled per username and client address (429) and answer one generic message whatever was
wrong, so the API does not reveal which user names exist.
"""

from __future__ import annotations

import datetime as dt
import math

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy import select, update

from fieldward.console.api.deps import (
    SESSION_COOKIE,
    SESSION_SCOPE,
    CurrentUser,
    SessionDep,
    SettingsDep,
    access,
    audit,
)
from fieldward.console.api.schemas import Message
from fieldward.console.api.schemas.auth import LoginCreate, LoginPublic, MePublic, PasswordChange
from fieldward.console.security import (
    USER_PREFIX,
    LoginLimiter,
    csrf_token,
    hash_password,
    new_token,
    password_needs_rehash,
    verify_password,
)
from fieldward.store.models import ApiToken, User, utcnow

__all__ = ["router"]

router = APIRouter(prefix="/auth", tags=["auth"])
BAD_LOGIN = "invalid username or password"


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _me(user: User, scopes: list[str], via: str) -> MePublic:
    return MePublic(id=user.id, username=user.username, role=user.role, via=via, scopes=scopes)


def revoke_sessions(session: SessionDep, user_id: int, keep: int | None = None) -> int:
    """Revoke the user's browser sessions (all but ``keep``); returns how many."""
    now = utcnow()
    rows = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked.is_(None))
    ).all()
    ids = [t.id for t in rows if SESSION_SCOPE in t.scopes and t.id != keep]
    if ids:
        session.execute(update(ApiToken).where(ApiToken.id.in_(ids)).values(revoked=now))
    return len(ids)


def _prune_sessions(session: SessionDep, user_id: int, now: dt.datetime) -> None:
    """Delete the user's expired or revoked sessions (they only fill the table)."""
    rows = session.scalars(select(ApiToken).where(ApiToken.user_id == user_id)).all()
    for token in rows:
        ended = token.revoked is not None or (token.expires is not None and token.expires <= now)
        if SESSION_SCOPE in token.scopes and ended:
            session.delete(token)


@router.post(
    "/login",
    operation_id="auth_login",
    response_model=LoginPublic,
    summary="Log in: sets the session cookie, returns the CSRF token",
    **access("public", 401, 429),
)
def login(
    body: LoginCreate, request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> LoginPublic:
    limiter: LoginLimiter = request.app.state.login_limiter
    client = _client(request)
    wait = limiter.retry_after(body.username, client)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many failed logins; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    user = session.scalars(select(User).where(User.username == body.username)).first()
    candidate = user.password_hash if user is not None and user.active else None
    if not verify_password(candidate, body.password) or user is None:
        limiter.failed(body.username, client)
        audit(session, body.username, "auth.login_failed", None, client=client)
        session.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=BAD_LOGIN)
    limiter.succeeded(body.username, client)
    now = utcnow()
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(body.password)
    _prune_sessions(session, user.id, now)
    secret, digest = new_token(USER_PREFIX)
    scopes = ["read", "write", SESSION_SCOPE]
    session.add(
        ApiToken(
            user_id=user.id,
            name=f"session {digest[7:23]}",
            token_hash=digest,
            scopes=scopes,
            created=now,
            expires=now + settings.session_ttl,
        )
    )
    user.last_login = now
    audit(session, user.username, "auth.login", f"user:{user.id}", client=client)
    session.commit()
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.session_ttl.total_seconds()),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return LoginPublic(csrf_token=csrf_token(secret), user=_me(user, scopes, "session"))


@router.post(
    "/logout",
    operation_id="auth_logout",
    response_model=Message,
    summary="Log out: ends the browser session and clears the cookie",
    **access("viewer"),
)
def logout(user: CurrentUser, response: Response, session: SessionDep, settings: SettingsDep) -> Message:
    if user.via == "session":
        session.execute(update(ApiToken).where(ApiToken.id == user.token_id).values(revoked=utcnow()))
    audit(session, user.username, "auth.logout", f"user:{user.user_id}", via=user.via)
    session.commit()
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=settings.secure_cookies, httponly=True, samesite="strict"
    )
    return Message(detail="logged out")


@router.get(
    "/me",
    operation_id="auth_me",
    response_model=MePublic,
    summary="The calling user, its role and credential",
    **access("viewer"),
)
def me(user: CurrentUser) -> MePublic:
    return MePublic(
        id=user.user_id, username=user.username, role=user.role, via=user.via, scopes=list(user.scopes)
    )


@router.post(
    "/password",
    operation_id="auth_change_password",
    response_model=Message,
    summary="Change the own password (ends the user's other browser sessions)",
    **access("viewer"),
)
def change_password(body: PasswordChange, user: CurrentUser, session: SessionDep) -> Message:
    row = session.get(User, user.user_id)
    if row is None or not verify_password(row.password_hash, body.current_password):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the current password is wrong")
    row.password_hash = hash_password(body.new_password)
    ended = revoke_sessions(session, row.id, keep=user.token_id if user.via == "session" else None)
    audit(session, user.username, "auth.password_changed", f"user:{row.id}", sessions_ended=ended)
    session.commit()
    return Message(detail="password changed")
