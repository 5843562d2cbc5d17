"""The response of the device plane: quarantine a device on a serious alert, release it by hand
(issue 8, docs/trust/enforcement.md).

:meth:`QuarantineService.on_alert` receives an alert about a device (a ``fieldward.detect`` alert,
a store ``Alert`` row or its JSON form) and, when a :class:`QuarantineRule` of the settings matches
(severity at or above a threshold, for given groups, device types and alert types), quarantines the
device in three steps, each written to the audit log:

1. the registry's quarantine flag is set: the EST renewal gate refuses a quarantined device, so its
   short-lived certificate is not renewed and runs out;
2. its broker client is disabled (the dynamic-security plugin disconnects it at once) and its role
   removed, so a reconnection with the still-valid certificate has no rights at all;
3. the policy sees ``quarantined`` in the device context, so later broker syncs keep it out.

:meth:`QuarantineService.release` is the analyst's action undoing it. Broker failures never stop the
response: the registry flag is set, the failure is audited, and the next sync applies it.

Auditing is a callback taking an :class:`AuditEntry`; :func:`database_audit` writes
``fieldward.store.models.AuditLog`` rows (what the console shows), one short transaction each.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from fieldward.store.database import Database
from fieldward.store.models import AuditLog
from fieldward.trust.autolink import LinkSettings
from fieldward.trust.broker import BrokerError, role_name
from fieldward.trust.context import SEVERITIES, severity_rank
from fieldward.trust.errors import TrustError
from fieldward.trust.registry import DeviceRecord, TrustRegistry

__all__ = [
    "AUTOMATIC_ACTOR",
    "AuditEntry",
    "BrokerControl",
    "QuarantineOutcome",
    "QuarantineRule",
    "QuarantineService",
    "QuarantineSettings",
    "alert_facts",
    "database_audit",
    "load_quarantine_settings",
]

log = logging.getLogger(__name__)

AUTOMATIC_ACTOR = "fieldward:response"
"""The audit actor of automatic quarantines."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited step: who (a user name or :data:`AUTOMATIC_ACTOR`), what, on which device, details."""

    actor: str
    action: str
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)


def database_audit(database: Database) -> Callable[[AuditEntry], None]:
    """An audit callback writing ``audit_log`` rows, each in its own committed transaction."""

    def write(entry: AuditEntry) -> None:
        with database.session() as session:
            session.add(
                AuditLog(
                    actor=entry.actor[:200],
                    action=entry.action[:100],
                    target=entry.target,
                    details=dict(entry.details),
                )
            )

    return write


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True, slots=True)
class QuarantineRule:
    """Quarantine a device on an alert of at least ``min_severity`` when the device's group, type and
    the alert's type match these glob lists (an empty list matches anything)."""

    name: str
    min_severity: str = "high"
    groups: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    alert_types: tuple[str, ...] = ()

    def matches(self, device: DeviceRecord, severity: str, alert_type: str | None) -> bool:
        if severity_rank(severity) < SEVERITIES.index(self.min_severity):
            return False
        for patterns, value in (
            (self.groups, device.group),
            (self.types, device.device_type),
            (self.alert_types, alert_type),
        ):
            if patterns and (value is None or not any(fnmatch.fnmatchcase(value, p) for p in patterns)):
                return False
        return True


@dataclass(frozen=True, slots=True)
class QuarantineSettings:
    """The automatic response; no rules means alerts never quarantine by themselves. ``links``: when
    device identities are linked to inventory devices without an analyst
    (:class:`~fieldward.trust.autolink.LinkSettings`; off by default), since a link decides which
    device an alert quarantines."""

    rules: tuple[QuarantineRule, ...] = ()
    links: LinkSettings = field(default_factory=LinkSettings)

    @classmethod
    def from_mapping(cls, document: object, source: str = "<quarantine>") -> QuarantineSettings:
        """From ``{"quarantine": [{"name", "min_severity", "groups", "types", "alert_types"}, ...],
        "links": {"auto": "off" | "serial" | [kinds], "sources": [...]}}`` (``links`` optional)."""
        if not isinstance(document, Mapping) or set(document) - {"quarantine", "links"}:
            raise TrustError(f"{source}: expected a mapping with 'quarantine' (and optionally 'links')")
        entries = document.get("quarantine") or []
        if not isinstance(entries, list):
            raise TrustError(f"{source}: 'quarantine' must be a list of rules")
        rules: list[QuarantineRule] = []
        for index, entry in enumerate(entries):
            where = f"{source}: quarantine rule #{index + 1}"
            if not isinstance(entry, Mapping):
                raise TrustError(f"{where}: a rule is a mapping")
            if unknown := set(entry) - {"name", "min_severity", "groups", "types", "alert_types"}:
                raise TrustError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
            severity = entry.get("min_severity", "high")
            if severity not in SEVERITIES:
                raise TrustError(f"{where}: min_severity must be one of {', '.join(SEVERITIES)}")
            lists: dict[str, tuple[str, ...]] = {}
            for key in ("groups", "types", "alert_types"):
                value = entry.get(key, [])
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise TrustError(f"{where}: {key} must be a list of names or glob patterns")
                lists[key] = tuple(value)
            name = entry.get("name", f"rule-{index + 1}")
            if not isinstance(name, str) or not name:
                raise TrustError(f"{where}: name must be text")
            rules.append(
                QuarantineRule(name, severity, lists["groups"], lists["types"], lists["alert_types"])
            )
        return cls(tuple(rules), LinkSettings.from_mapping(document.get("links"), source))

    def rule_for(self, device: DeviceRecord, severity: str, alert_type: str | None) -> QuarantineRule | None:
        return next((rule for rule in self.rules if rule.matches(device, severity, alert_type)), None)


def load_quarantine_settings(path: Path | str) -> QuarantineSettings:
    """Read the response settings from YAML (see :meth:`QuarantineSettings.from_mapping`)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrustError(f"{path}: cannot read the quarantine settings: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TrustError(f"{path}: not valid YAML: {exc}") from None
    return QuarantineSettings.from_mapping(document, str(path))


# ------------------------------------------------------------------------------------------ alerts


def _field(record: object, name: str) -> object:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def alert_facts(record: object) -> tuple[str | None, str | None, str | None]:
    """(severity, alert type id, alert id) of an alert in any of its forms: a
    ``fieldward.detect.model.Alert`` (severity and id under ``type``), a store ``Alert`` row, or the
    JSON dict of either. Unknown severities come back as None (they never quarantine)."""
    kind = _field(record, "type")
    severity = _field(record, "severity")
    type_id: object = kind
    if kind is not None and not isinstance(kind, str):  # a detect AlertType
        severity = severity if severity is not None else _field(kind, "severity")
        type_id = _field(kind, "id")
    alert_id = _field(record, "id")
    if alert_id is None or isinstance(alert_id, int):
        alert_id = _field(record, "alert_key") or alert_id
    text = str(severity).lower() if severity is not None else None
    return (
        text if text in SEVERITIES else None,
        type_id if isinstance(type_id, str) else None,
        None if alert_id is None else str(alert_id),
    )


# ------------------------------------------------------------------------------------------ service


class BrokerControl(Protocol):
    """What the service needs of the broker (a connected :class:`~fieldward.trust.broker.DynsecClient`)."""

    def disable_client(self, username: str) -> None: ...
    def enable_client(self, username: str) -> None: ...
    def remove_client_role(self, username: str, rolename: str) -> None: ...
    def add_client_role(self, username: str, rolename: str, priority: int = 1) -> None: ...
    def get_client(self, username: str) -> dict[str, Any] | None: ...
    def get_role(self, rolename: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class QuarantineOutcome:
    """What :meth:`QuarantineService.on_alert` / ``release`` did."""

    device_id: str
    quarantined: bool
    """The device's quarantine state afterwards."""
    changed: bool
    reason: str
    broker: str
    """``disabled``, ``enabled``, ``not managed``, ``no broker``, ``unchanged`` or ``failed: ...``."""


class QuarantineService:
    """Quarantines devices on alerts where the settings say so; releases them on an analyst's word.

    broker: a connected broker admin (``DynsecClient``); None when the deployment has none.
    resync: called after a release to restore the device's ACLs from the policy (typically a
    ``DynsecClient.sync`` with fresh contexts); without it the client's role is re-attached.
    """

    def __init__(
        self,
        registry: TrustRegistry,
        settings: QuarantineSettings,
        audit: Callable[[AuditEntry], None],
        *,
        broker: BrokerControl | None = None,
        resync: Callable[[], object] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.audit = audit
        self.broker = broker
        self.resync = resync

    def on_alert(self, alert_record: object, device_id: str) -> QuarantineOutcome:
        """Quarantine ``device_id`` when a rule matches ``alert_record``; otherwise change nothing."""
        severity, alert_type, alert_id = alert_facts(alert_record)
        device = self.registry.device(device_id)
        if device is None:
            return QuarantineOutcome(device_id, False, False, "not an enrolled device", "unchanged")
        if severity is None:
            return QuarantineOutcome(
                device_id, device.quarantined, False, "alert without severity", "unchanged"
            )
        rule = self.settings.rule_for(device, severity, alert_type)
        if rule is None:
            return QuarantineOutcome(
                device_id,
                device.quarantined,
                False,
                f"no quarantine rule for a {severity} alert",
                "unchanged",
            )
        reason = f"{severity} alert {alert_type or '?'} ({alert_id or 'no id'}), rule {rule.name}"
        return self.quarantine(
            device_id,
            by=AUTOMATIC_ACTOR,
            reason=reason,
            details={"alert_id": alert_id, "alert_type": alert_type, "severity": severity, "rule": rule.name},
        )

    def quarantine(
        self, device_id: str, *, by: str, reason: str, details: Mapping[str, Any] | None = None
    ) -> QuarantineOutcome:
        """Quarantine a device now (the automatic response, or an analyst's own decision)."""
        device = self.registry.device(device_id)
        if device is None:
            raise TrustError(f"no device {device_id!r}")
        if device.quarantined:
            return QuarantineOutcome(device_id, True, False, "already quarantined", "unchanged")
        self.registry.set_quarantine(device_id, True, reason[:1000])
        self.audit(AuditEntry(by, "trust.quarantine", device_id, {"reason": reason, **(details or {})}))
        log.info("quarantined device %s: %s", device_id, reason)
        broker = self._broker_step(device_id, by, disable=True)
        return QuarantineOutcome(device_id, True, True, reason, broker)

    def release(self, device_id: str, by: str, reason: str) -> QuarantineOutcome:
        """The analyst's release: clear the flag, re-enable the broker client, restore its ACLs."""
        if not by or not reason:
            raise TrustError("a release names who releases the device and why")
        device = self.registry.device(device_id)
        if device is None:
            raise TrustError(f"no device {device_id!r}")
        if not device.quarantined:
            return QuarantineOutcome(device_id, False, False, "not quarantined", "unchanged")
        self.registry.set_quarantine(device_id, False)
        self.audit(
            AuditEntry(
                by, "trust.release", device_id, {"reason": reason, "was": device.quarantine_reason or ""}
            )
        )
        log.info("released device %s from quarantine (by %s)", device_id, by)
        broker = self._broker_step(device_id, by, disable=False)
        return QuarantineOutcome(device_id, False, True, reason, broker)

    def renewal_gate(self, device_id: str) -> tuple[bool, str]:
        """An EST ``renewal_gate``: refuse renewal while the device is quarantined."""
        if self.registry.is_quarantined(device_id):
            return False, "the device is quarantined"
        return True, "not quarantined"

    def _broker_step(self, device_id: str, actor: str, *, disable: bool) -> str:
        action = "trust.broker.disable" if disable else "trust.broker.enable"
        if self.broker is None and (disable or self.resync is None):
            return "no broker"
        try:
            result = self._disable(device_id) if disable else self._enable(device_id)
        except (BrokerError, OSError) as exc:
            result = f"failed: {exc}"
            log.warning("broker step %s for %s failed: %s", action, device_id, exc)
        self.audit(AuditEntry(actor, action, device_id, {"result": result}))
        return result

    def _disable(self, device_id: str) -> str:
        assert self.broker is not None
        client = self.broker.get_client(device_id)
        if client is None:
            return "not managed"
        self.broker.disable_client(device_id)  # Mosquitto disconnects its sessions at once
        for role in client.get("roles", []):
            name = role.get("rolename") if isinstance(role, dict) else None
            if isinstance(name, str):
                # The device listener authenticates by certificate, which the plugin does not check
                # against "disabled": without roles a reconnection has no rights.
                self.broker.remove_client_role(device_id, name)
        return "disabled"

    def _enable(self, device_id: str) -> str:
        result = "not managed"
        if self.broker is not None and self.broker.get_client(device_id) is not None:
            self.broker.enable_client(device_id)
            if self.resync is None and self.broker.get_role(role_name(device_id)) is not None:
                self.broker.add_client_role(device_id, role_name(device_id))
            result = "enabled"
        if self.resync is not None:
            self.resync()
            result = "enabled" if result == "enabled" else "synced"
        return result
