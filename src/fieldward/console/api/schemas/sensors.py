"""Schemas of sensors (the push credential is returned once, at creation or rotation)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from fieldward.console.api.schemas import NAME, NO_NUL, InputModel, OutputModel

__all__ = ["SensorCreate", "SensorCreated", "SensorPublic"]


class SensorPublic(OutputModel):
    id: int
    name: str
    created: dt.datetime
    last_seen: dt.datetime | None
    version: str | None
    description: str | None
    has_credential: bool


class SensorCreated(SensorPublic):
    token: str = Field(description="The sensor's push credential (fws_...); shown only in this response")


class SensorCreate(InputModel):
    name: str = Field(min_length=1, max_length=200, pattern=NAME)
    description: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)
