"""Pydantic schemas of the API, one module per domain, split by direction (docs/console/api.md):

- ``XPublic``: what the API returns (``model_config = from_attributes`` so a row converts directly);
- ``XCreate`` / ``XUpdate``: what a client sends (``extra="forbid"``: an unknown field is a 422);
- list endpoints return ``Page[XPublic]`` = ``{items, total, limit, offset}``.

Common models live here; a domain's own models in ``schemas/<domain>.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

__all__ = [
    "MAX_LIMIT",
    "NAME",
    "NO_NUL",
    "ErrorPublic",
    "InputModel",
    "JsonBool",
    "JsonInt",
    "Message",
    "OutputModel",
    "Page",
    "ValidationErrorPublic",
    "json_integer",
]

T = TypeVar("T")


def json_integer(value: Any) -> Any:
    """JSON Schema's ``integer``: an int, or a float with no fraction (``768.0``); never a string or
    a boolean (pydantic's lax mode would take ``"768"`` and ``true``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a JSON integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]
"""An integer field of an input model, exactly as its OpenAPI schema says. Bounded, put the bounds
*before* the validator so that OpenAPI shows them as minimum/maximum:
``Annotated[int, Field(ge=1, le=10), BeforeValidator(json_integer)]``."""

JsonBool = StrictBool
"""A boolean field of an input model: ``true``/``false`` only."""

NO_NUL = r"^[^\x00]*$"
"""Pattern of free-text query parameters: PostgreSQL text cannot hold NUL, so it is a 422."""
NAME = r"^[^\x00-\x1f\s](?:[^\x00-\x1f]*[^\x00-\x1f\s])?$"
"""Pattern of names (tokens, sensors): no control characters, no leading or trailing blanks."""
MAX_LIMIT = 500
"""Largest page of every list endpoint."""


class OutputModel(BaseModel):
    """Base of the ``XPublic`` models: built from ORM rows or dicts."""

    model_config = ConfigDict(from_attributes=True)


class InputModel(BaseModel):
    """Base of the ``XCreate`` / ``XUpdate`` models: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """PostgreSQL text cannot hold NUL: refuse it in every string field (a 422, not a 500)."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("NUL characters are not allowed")
        if isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            raise ValueError("NUL characters are not allowed")
        return value


class ErrorPublic(BaseModel):
    """Every error: a human-readable ``detail``."""

    detail: str


class ValidationErrorPublic(BaseModel):
    """A 422: FastAPI's list of field errors, or one sentence from a handler."""

    detail: str | list[dict[str, Any]]


class Message(OutputModel):
    detail: str


class Page(BaseModel, Generic[T]):
    """One page of a list: the items, the total number matching the filters, and the window."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=0)
    offset: int = Field(ge=0)
