"""Schemas of the users an administrator manages."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from fieldward.console.api.schemas import NO_NUL, InputModel, JsonBool, OutputModel
from fieldward.console.api.schemas.auth import PASSWORD_MAX, PASSWORD_MIN

__all__ = ["RoleName", "UserCreate", "UserPublic", "UserUpdate"]

RoleName = Literal["viewer", "analyst", "admin"]
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,149}$"


class UserPublic(OutputModel):
    id: int
    username: str
    role: RoleName
    active: bool
    created: dt.datetime
    last_login: dt.datetime | None


class UserCreate(InputModel):
    username: str = Field(min_length=1, max_length=150, pattern=USERNAME_PATTERN)
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=NO_NUL)
    role: RoleName = "viewer"


class UserUpdate(InputModel):
    """Only the fields sent change; a new ``password`` also ends the user's browser sessions."""

    role: RoleName | None = None
    active: JsonBool | None = None
    password: str | None = Field(
        default=None, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=NO_NUL
    )
