"""User management for administrators (``/api/v1/users``): list, create, update, delete.

The last active administrator cannot be demoted, deactivated or deleted (409), so the console never
locks itself out. A password reset or deactivation ends the user's browser sessions.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldward.console.api.deps import CurrentUser, IdPath, PagingDep, SessionDep, access, audit
from fieldward.console.api.routes.auth import revoke_sessions
from fieldward.console.api.schemas import Message, Page
from fieldward.console.api.schemas.users import UserCreate, UserPublic, UserUpdate
from fieldward.console.security import hash_password
from fieldward.store.models import User

__all__ = ["router"]

router = APIRouter(prefix="/users", tags=["users"])


def _get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such user")
    return user


def _other_active_admins(session: Session, user_id: int) -> int:
    statement = select(func.count()).where(User.role == "admin", User.active.is_(True), User.id != user_id)
    return int(session.scalar(statement) or 0)


@router.get("", operation_id="users_list", response_model=Page[UserPublic], **access("admin"))
def list_users(session: SessionDep, paging: PagingDep) -> Page[UserPublic]:
    total = int(session.scalar(select(func.count()).select_from(User)) or 0)
    rows = session.scalars(select(User).order_by(User.username).limit(paging.limit).offset(paging.offset))
    items = [UserPublic.model_validate(row) for row in rows]
    return Page[UserPublic](items=items, total=total, limit=paging.limit, offset=paging.offset)


@router.post(
    "",
    operation_id="users_create",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    **access("admin", 409),
)
def create_user(body: UserCreate, user: CurrentUser, session: SessionDep) -> UserPublic:
    if session.scalar(select(User.id).where(User.username == body.username)) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="a user with this name exists")
    row = User(username=body.username, password_hash=hash_password(body.password), role=body.role)
    session.add(row)
    session.flush()
    audit(session, user.username, "user.create", f"user:{row.id}", username=row.username, role=row.role)
    session.commit()
    return UserPublic.model_validate(row)


@router.get("/{user_id}", operation_id="users_get", response_model=UserPublic, **access("admin", 404))
def get_user(user_id: IdPath, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(_get(session, user_id))


@router.patch(
    "/{user_id}", operation_id="users_update", response_model=UserPublic, **access("admin", 404, 409)
)
def update_user(user_id: IdPath, body: UserUpdate, user: CurrentUser, session: SessionDep) -> UserPublic:
    row = _get(session, user_id)
    changes: dict[str, object] = {}
    demoted = body.role is not None and body.role != "admin"
    disabled = body.active is False
    if row.role == "admin" and (demoted or disabled) and _other_active_admins(session, row.id) == 0:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="the last administrator must stay an active admin"
        )
    if body.role is not None and body.role != row.role:
        changes["role"] = [row.role, body.role]
        row.role = body.role
    if body.active is not None and body.active != row.active:
        changes["active"] = [row.active, body.active]
        row.active = body.active
    if body.password is not None:
        row.password_hash = hash_password(body.password)
        changes["password_reset"] = True
    if body.password is not None or disabled:
        changes["sessions_ended"] = revoke_sessions(session, row.id)
    if changes:
        audit(session, user.username, "user.update", f"user:{row.id}", username=row.username, **changes)
    session.commit()
    return UserPublic.model_validate(row)


@router.delete("/{user_id}", operation_id="users_delete", response_model=Message, **access("admin", 404, 409))
def delete_user(user_id: IdPath, user: CurrentUser, session: SessionDep) -> Message:
    row = _get(session, user_id)
    if row.id == user.user_id:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="you cannot delete yourself")
    if row.role == "admin" and _other_active_admins(session, row.id) == 0:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the last administrator cannot be deleted")
    audit(session, user.username, "user.delete", f"user:{row.id}", username=row.username)
    session.delete(row)
    session.commit()
    return Message(detail="user deleted")
