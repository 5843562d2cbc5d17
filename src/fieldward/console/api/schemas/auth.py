"""Schemas of login, logout, the current user and the own-password change."""

from __future__ import annotations

from pydantic import Field

from fieldward.console.api.schemas import NO_NUL, InputModel, OutputModel

__all__ = ["LoginCreate", "LoginPublic", "MePublic", "PasswordChange"]

PASSWORD_MIN = 12
PASSWORD_MAX = 1024


class LoginCreate(InputModel):
    username: str = Field(min_length=1, max_length=150, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX, pattern=NO_NUL)


class MePublic(OutputModel):
    id: int
    username: str
    role: str
    via: str = Field(description="'session' (browser cookie) or 'token' (bearer API token)")
    scopes: list[str]


class LoginPublic(OutputModel):
    csrf_token: str = Field(description="Send it as the X-CSRF-Token header on every state change")
    user: MePublic


class PasswordChange(InputModel):
    current_password: str = Field(min_length=1, max_length=PASSWORD_MAX, pattern=NO_NUL)
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=NO_NUL)
