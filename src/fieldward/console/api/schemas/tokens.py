"""Schemas of users' API tokens (the secret is returned once, at creation)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from fieldward.console.api.schemas import NAME, InputModel, OutputModel, json_integer

__all__ = ["Scope", "TokenCreate", "TokenCreated", "TokenPublic"]

Scope = Literal["read", "write"]


class TokenPublic(OutputModel):
    id: int
    user_id: int
    username: str
    name: str
    scopes: list[str]
    created: dt.datetime
    expires: dt.datetime | None
    revoked: dt.datetime | None
    last_used: dt.datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret (fwt_...); shown only in this response")


Lifetime = Annotated[int, Field(ge=1, le=3650), BeforeValidator(json_integer)]


class TokenCreate(InputModel):
    name: str = Field(min_length=1, max_length=150, pattern=NAME)
    scopes: list[Scope] = Field(default=["read"], min_length=1, max_length=2)
    expires_in_days: Lifetime | None = Field(
        default=90, description="Lifetime in days; null for a token that never expires"
    )
