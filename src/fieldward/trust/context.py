"""The device context shared by the trust modules: who a device is and what is known of its health.

The registry builds a :class:`DeviceContext` from its tables, the attestation verifier contributes
``attested_at`` and ``verdict``, the sensor contributes ``open_alert_severity``, and the policy engine,
the EST renewal hook and the broker sync read it. It is a plain frozen value: no database handle, no
clock, so a decision made on it is reproducible.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

VERDICTS = ("healthy", "unknown", "compromised", "outdated")
"""The attestation verdicts (docs/trust/attestation.md)."""

SEVERITIES = ("info", "low", "medium", "high", "critical")
"""Alert severities in rising order, as ``fieldward.detect.model.Severity`` spells them."""


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """One device as the policy engine sees it.

    attested_at: when the newest attestation verdict was reached (timezone-aware, UTC), None if never
    verdict: that verdict (one of ``VERDICTS``), None if never attested
    open_alert_severity: the highest severity among the device's open alerts, None if there are none
    """

    device_id: str
    group: str | None = None
    device_type: str | None = None
    model: str | None = None
    firmware: str | None = None
    attested_at: dt.datetime | None = None
    verdict: str | None = None
    quarantined: bool = False
    open_alert_severity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``attested_at`` as ISO 8601)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.attested_at is not None:
            out["attested_at"] = self.attested_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceContext:
        """The inverse of :meth:`to_dict`; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("device context must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown device context field(s): {', '.join(unknown)}")
        device_id = data.get("device_id")
        if not isinstance(device_id, str) or not device_id:
            raise ValueError("device context needs a non-empty string device_id")
        values: dict[str, Any] = {"device_id": device_id}
        for name in ("group", "device_type", "model", "firmware", "verdict", "open_alert_severity"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"device context field {name} must be a string or null")
            values[name] = value
        if values["verdict"] is not None and values["verdict"] not in VERDICTS:
            raise ValueError(f"device context verdict must be one of {', '.join(VERDICTS)}")
        severity = values["open_alert_severity"]
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"device context open_alert_severity must be one of {', '.join(SEVERITIES)}")
        quarantined = data.get("quarantined", False)
        if not isinstance(quarantined, bool):
            raise ValueError("device context field quarantined must be true or false")
        values["quarantined"] = quarantined
        attested = data.get("attested_at")
        if attested is None:
            values["attested_at"] = None
        elif isinstance(attested, dt.datetime):
            values["attested_at"] = attested
        elif isinstance(attested, str):
            try:
                parsed = dt.datetime.fromisoformat(attested.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"device context attested_at is not ISO 8601: {attested!r}") from exc
            values["attested_at"] = parsed
        else:
            raise ValueError("device context attested_at must be an ISO 8601 string or null")
        if values["attested_at"] is not None and values["attested_at"].tzinfo is None:
            values["attested_at"] = values["attested_at"].replace(tzinfo=dt.UTC)
        return cls(**values)


def severity_rank(severity: str | None) -> int:
    """0..4 for ``SEVERITIES``, -1 for None or an unknown word."""
    if severity is None:
        return -1
    try:
        return SEVERITIES.index(severity.lower())
    except ValueError:
        return -1
