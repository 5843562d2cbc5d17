"""Schemas of the console settings: syslog/CEF forwarding and retention."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from fieldward.console.api.schemas import InputModel, OutputModel

__all__ = [
    "TARGET_PATTERN",
    "ForwardingPublic",
    "ForwardingUpdate",
    "SettingsPublic",
    "SettingsUpdate",
    "parse_target",
]


TARGET_PATTERN = (
    r"^(udp|tcp|tls)://([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]):"
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$"
)
"""A forwarding target: ``udp|tcp|tls://host:port`` (a DNS name, IPv4, or IPv6 in brackets; port
1-65535). Nothing else: no credentials, path, query, fragment, blanks or control characters."""
_TARGET = re.compile(TARGET_PATTERN)


def parse_target(url: str) -> tuple[str, str, int]:
    """``udp://host:port`` / ``tcp://`` / ``tls://`` -> (scheme, host, port); ``ValueError`` otherwise."""
    match = _TARGET.fullmatch(url)
    if match is None:
        raise ValueError("the target must be udp://, tcp:// or tls://host:port (port 1-65535)")
    return match.group(1), match.group(2).strip("[]"), int(match.group(3))


class ForwardingPublic(OutputModel):
    enabled: bool
    target: str | None = Field(description="udp://, tcp:// or tls://host:port")
    format: Literal["cef", "syslog"]
    min_severity: Literal["info", "low", "medium", "high", "critical"]


class SettingsPublic(OutputModel):
    forwarding: ForwardingPublic
    retention_days: int = Field(
        description="Days flows and protocol events are kept (alerts, closed ones included, are not deleted)"
    )
    updated_by: str | None
    updated: dt.datetime | None


class ForwardingUpdate(InputModel):
    """Forwarding; ``enabled`` needs a ``target`` (stated in the JSON schema with ``if``/``then``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"enabled": {"const": True}}, "required": ["enabled"]},
            "then": {"required": ["target"], "properties": {"target": {"type": "string"}}},
        },
    )

    enabled: bool = Field(default=False, strict=True)
    target: str | None = Field(default=None, max_length=300, json_schema_extra={"pattern": TARGET_PATTERN})
    """The pattern is stated in the JSON schema; the validator below says what is wrong in words."""
    format: Literal["cef", "syslog"] = "cef"
    min_severity: Literal["info", "low", "medium", "high", "critical"] = "medium"

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(TARGET_PATTERN, value):
            raise ValueError("the target must be udp://, tcp:// or tls://host:port (port 1-65535)")
        return value


class SettingsUpdate(InputModel):
    """Only the parts sent change."""

    forwarding: ForwardingUpdate | None = None
    retention_days: int | None = Field(default=None, ge=1, le=3650)
