"""Users' API tokens (``/api/v1/tokens``): create (the secret is shown once), list, revoke.

Everyone manages their own tokens; an administrator lists (``?all=true``) and revokes anyone's. A
token never grants more than its user's role; its scopes only narrow it (``read`` refuses writes).
Browser sessions are tokens too (scope ``session``) but are not listed here.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldward.console.api.deps import (
    SESSION_SCOPE,
    CurrentUser,
    IdPath,
    PagingDep,
    Principal,
    SessionDep,
    access,
    audit,
)
from fieldward.console.api.schemas import Page
from fieldward.console.api.schemas.tokens import TokenCreate, TokenCreated, TokenPublic
from fieldward.console.security import USER_PREFIX, new_token
from fieldward.store.models import ApiToken, User, utcnow

__all__ = ["router"]

router = APIRouter(prefix="/tokens", tags=["tokens"])
# Sessions are named "session <hash prefix>" by the login; API tokens may not take such names.
SESSION_NAME_PREFIX = "session "


def _public(token: ApiToken, username: str, secret: str | None = None) -> TokenPublic:
    values: dict[str, object] = {
        "id": token.id,
        "user_id": token.user_id,
        "username": username,
        "name": token.name,
        "scopes": token.scopes,
        "created": token.created,
        "expires": token.expires,
        "revoked": token.revoked,
        "last_used": token.last_used,
    }
    if secret is not None:
        return TokenCreated.model_validate({**values, "token": secret})
    return TokenPublic.model_validate(values)


def _visible(session: Session, user: Principal, token_id: int) -> tuple[ApiToken, str]:
    row = session.execute(
        select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).where(ApiToken.id == token_id)
    ).first()
    # Another user's token is "not found" for a non-admin (no enumeration of token ids).
    if row is None or SESSION_SCOPE in row[0].scopes:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such token")
    token, username = row
    if token.user_id != user.user_id and not user.at_least("admin"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such token")
    return token, username


@router.get("", operation_id="tokens_list", response_model=Page[TokenPublic], **access("viewer", 403))
def list_tokens(
    user: CurrentUser,
    session: SessionDep,
    paging: PagingDep,
    all_users: Annotated[bool, Query(alias="all", description="Every user's tokens (admin)")] = False,
) -> Page[TokenPublic]:
    if all_users and not user.at_least("admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="needs the admin role")
    statement = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if not all_users:
        statement = statement.where(ApiToken.user_id == user.user_id)
    rows = [(token, name) for token, name in session.execute(statement.order_by(ApiToken.id))]
    tokens = [(token, name) for token, name in rows if SESSION_SCOPE not in token.scopes]
    window = tokens[paging.offset : paging.offset + paging.limit]
    return Page[TokenPublic](
        items=[_public(t, name) for t, name in window],
        total=len(tokens),
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post(
    "",
    operation_id="tokens_create",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    **access("viewer", 409),
)
def create_token(body: TokenCreate, user: CurrentUser, session: SessionDep) -> TokenPublic:
    name = body.name
    if name.startswith(SESSION_NAME_PREFIX):
        raise HTTPException(status.HTTP_409_CONFLICT, detail="names starting with 'session ' are reserved")
    taken = session.scalar(
        select(func.count()).where(ApiToken.user_id == user.user_id, ApiToken.name == name)
    )
    if taken:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="you already have a token with this name")
    now = utcnow()
    secret, digest = new_token(USER_PREFIX)
    scopes = sorted(set(body.scopes))
    expires = now + dt.timedelta(days=body.expires_in_days) if body.expires_in_days is not None else None
    token = ApiToken(
        user_id=user.user_id, name=name, token_hash=digest, scopes=scopes, created=now, expires=expires
    )
    session.add(token)
    session.flush()
    audit(session, user.username, "token.create", f"token:{token.id}", name=name, scopes=scopes)
    session.commit()
    return _public(token, user.username, secret)


@router.delete(
    "/{token_id}", operation_id="tokens_revoke", response_model=TokenPublic, **access("viewer", 404)
)
def revoke_token(token_id: IdPath, user: CurrentUser, session: SessionDep) -> TokenPublic:
    token, username = _visible(session, user, token_id)
    if token.revoked is None:
        token.revoked = utcnow()
        audit(session, user.username, "token.revoke", f"token:{token.id}", owner=username, name=token.name)
        session.commit()
    return _public(token, username)
