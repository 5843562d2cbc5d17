"""The risk model: device and site scores (0-100) with their reasons, Now/Next/Later, and the fix list.

This is the last step of ``assess/``: it reads the vulnerability findings (``matching.py``), the
insecure configurations (``configs.py``), the open alerts of ``detect/`` (as the plain records of
``alerts.jsonl``; ``assess/`` does not import ``detect/``), the inventory (``devices.json`` records)
and the analyst's importance (``importance.py``), and produces :class:`~fieldward.assess.model.DeviceRisk`,
:class:`~fieldward.assess.model.SiteRisk` and a sorted list of
:class:`~fieldward.assess.model.RemediationItem`. ``docs/assess/risk.md`` describes the model, every
weight and the priority rules; every number lives in :class:`RiskSettings`.

In one breath: four factors in [0, 1] (exploitability E, exposure X, criticality C, behaviour B),
each a saturating "noisy-or" of its items; ``likelihood = 1 - (1 - E·(r + (1-r)·X))·(1 - k·X)·(1 - B)``,
``impact = f + (1-f)·C``, ``score = 100·likelihood·impact``. The score is attributed to the four
factors by their Shapley values (exact, order-free, they add up to the score) and within a factor to
its items by their share of the factor's log-doubt.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fieldward.assess.importance import Importance
from fieldward.assess.model import (
    ConfigFinding,
    DeviceRisk,
    Finding,
    Priority,
    RemediationItem,
    RiskContributor,
    Severity,
    SiteRisk,
)
from fieldward.errors import ConfigError, FieldWardError
from fieldward.weird import WeirdLog

__all__ = [
    "ALERTS_FILE",
    "DEVICES_FILE",
    "CheckRule",
    "RiskInputError",
    "RiskSettings",
    "Tier",
    "device_label",
    "load_alerts",
    "load_devices",
    "remediation_plan",
    "score_devices",
    "score_site",
]

DEVICES_FILE = "devices.json"
ALERTS_FILE = "alerts.jsonl"
TRIAGE_FILE = "triage.json"

FACTORS = ("exploitability", "exposure", "criticality", "behaviour")
PRIORITY_ORDER = {Priority.NOW: 0, Priority.NEXT: 1, Priority.LATER: 2}
SEVERITY_RANK = {"none": 0, "info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_DOUBT_FLOOR = 1e-6
"""A factor is kept below certainty so that its log-doubt (the attribution's measure) stays finite."""


class RiskInputError(FieldWardError):
    """An input of the risk model (devices.json, alerts.jsonl) cannot be read at all."""


@dataclass(frozen=True, slots=True)
class Tier:
    """How much one kind of weakness weighs: ``weight`` for one item at full confidence, ``cap`` for
    any number of them. Items of a tier combine as ``cap·(1 - Π(1 - w_i/cap))``: the second item adds
    less than the first, and a hundred items never pass ``cap``."""

    weight: float
    cap: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.weight <= self.cap <= 1.0):
            raise ConfigError(f"a risk tier needs 0 <= weight <= cap <= 1, not {self.weight}/{self.cap}")


@dataclass(frozen=True, slots=True)
class CheckRule:
    """What an insecure-configuration check means to the model.

    weakness: its exploitability tier (None: it is only about exposure)
    exposure: how reachable the finding shows the device to be (0-1)
    action: the fix in words, for the remediation list ("" = use the finding's recommendation)
    """

    weakness: Tier | None
    exposure: float = 0.0
    action: str = ""


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


DEFAULT_CHECKS: Mapping[str, CheckRule] = _frozen(
    {
        # exact check names first; a name ending in "." is a prefix rule for the family
        "credentials.default": CheckRule(Tier(0.9, 0.95), 0.0, "Change the default credentials"),
        # the names configs.py uses (issue 6), beside the generic ones above and below
        "credentials.default_account": CheckRule(Tier(0.9, 0.95), 0.0, "Change the default credentials"),
        # a default account name accepted with no password seen: unconfirmed, clearly weaker
        "credentials.default_user": CheckRule(
            Tier(0.45, 0.6), 0.0, "Set a password on the default account or disable it"
        ),
        "credentials.anonymous_ftp": CheckRule(Tier(0.5, 0.65), 0.0, "Disable anonymous FTP"),
        "credentials.": CheckRule(Tier(0.6, 0.75), 0.0, ""),
        "remote.vnc_no_auth": CheckRule(
            Tier(0.85, 0.9),
            0.5,
            "Require a password on VNC (or disable it); reach it only through a jump host",
        ),
        "remote.rdp_no_nla": CheckRule(
            Tier(0.45, 0.6),
            0.5,
            "Enable Network Level Authentication for RDP; reach it only through a jump host",
        ),
        "remote.": CheckRule(Tier(0.3, 0.45), 0.5, ""),
        "cleartext.mqtt_no_auth": CheckRule(
            Tier(0.5, 0.65), 0.0, "Require authentication and TLS on the MQTT broker"
        ),
        "cleartext.mqtt_plaintext": CheckRule(Tier(0.2, 0.35), 0.0, "Use MQTT over TLS (port 8883)"),
        "cleartext.http_admin": CheckRule(
            Tier(0.3, 0.45), 0.0, "Serve the management interface over HTTPS only"
        ),
        "cleartext.snmp": CheckRule(Tier(0.3, 0.45), 0.0, "Use SNMPv3 with authentication and privacy"),
        "tls.old_protocol": CheckRule(
            Tier(0.15, 0.25), 0.0, "Disable SSL and TLS 1.0/1.1; allow TLS 1.2 or later"
        ),
        "tls.": CheckRule(Tier(0.1, 0.2), 0.0, ""),
        "exposure.internet": CheckRule(
            Tier(0.6, 0.8),
            0.95,
            "Block internet access to the device; reach it only through a VPN with MFA and the DMZ",
        ),
        "remote_access.vnc_no_auth": CheckRule(
            Tier(0.85, 0.9),
            0.5,
            "Require a password on VNC (or disable it); reach it only through a jump host",
        ),
        "remote_access.rdp_no_nla": CheckRule(
            Tier(0.45, 0.6),
            0.5,
            "Enable Network Level Authentication for RDP; reach it only through a jump host",
        ),
        "remote_access.": CheckRule(Tier(0.3, 0.45), 0.5, ""),
        "mqtt.no_auth": CheckRule(Tier(0.5, 0.65), 0.0, "Require authentication and TLS on the MQTT broker"),
        "cleartext.telnet": CheckRule(Tier(0.4, 0.55), 0.0, "Disable Telnet, use SSH"),
        "cleartext.ftp": CheckRule(Tier(0.3, 0.45), 0.0, "Disable FTP, use SFTP or FTPS"),
        "cleartext.http": CheckRule(Tier(0.2, 0.35), 0.0, "Serve the web interface over HTTPS only"),
        "cleartext.": CheckRule(Tier(0.25, 0.4), 0.0, ""),
        "tls.weak_version": CheckRule(
            Tier(0.15, 0.25), 0.0, "Disable SSL and TLS 1.0/1.1; allow TLS 1.2 or later"
        ),
        "exposure.ot_from_internet": CheckRule(
            Tier(0.6, 0.8),
            0.95,
            "Block internet access to the device; reach it only through a VPN with MFA and the DMZ",
        ),
        "internet.ot_device": CheckRule(
            Tier(0.6, 0.8),
            0.95,
            "Block internet access to the device; reach it only through a VPN with MFA and the DMZ",
        ),
        "exposure.ot_from_it": CheckRule(
            Tier(0.3, 0.45),
            0.6,
            "Filter IT-to-OT traffic at the IT/OT boundary (allow only named flows through the DMZ)",
        ),
        "exposure.": CheckRule(Tier(0.3, 0.45), 0.6, ""),
        "internet.": CheckRule(Tier(0.5, 0.7), 0.9, ""),
    }
)

DEFAULT_CONFIG_BY_SEVERITY: Mapping[str, Tier] = _frozen(
    {
        "critical": Tier(0.6, 0.75),
        "high": Tier(0.4, 0.55),
        "medium": Tier(0.2, 0.35),
        "low": Tier(0.05, 0.12),
        "none": Tier(0.0, 0.0),
    }
)

DEFAULT_ALERTS: Mapping[str, Tier] = _frozen(
    {
        "critical": Tier(0.85, 0.95),
        "high": Tier(0.5, 0.7),
        "medium": Tier(0.15, 0.3),
        "low": Tier(0.05, 0.1),
        "info": Tier(0.0, 0.0),
    }
)

DEFAULT_TYPES: Mapping[str, float] = _frozen(
    {
        "sis": 1.0,
        "safety_controller": 1.0,
        "plc": 0.9,
        "rtu": 0.9,
        "ied": 0.9,
        "dcs_controller": 0.9,
        "engineering_workstation": 0.85,
        "scada_server": 0.8,
        "hmi": 0.75,
        "io_module": 0.7,
        "field_gateway": 0.6,
        "historian": 0.6,
        "ot_server": 0.55,
        "network_device": 0.5,
        "iot_sensor": 0.4,
        "it_server": 0.4,
        "unknown": 0.4,
        "ip_camera": 0.3,
        "video_recorder": 0.3,
        "it_workstation": 0.3,
        "printer": 0.2,
    }
)

DEFAULT_LEVELS: Mapping[int, float] = _frozen({0: 0.9, 1: 0.9, 2: 0.75, 3: 0.55, 4: 0.35, 5: 0.25})

DEFAULT_IMPORTANCE: Mapping[str, float] = _frozen({"critical": 1.5, "high": 1.2, "normal": 1.0, "low": 0.6})


@dataclass(frozen=True, slots=True)
class RiskSettings:
    """Every weight and threshold of the risk model (``docs/assess/risk.md`` explains each)."""

    # exploitability of vulnerability findings, by class (a KEV or ransomware CVE is its own class)
    cve_known_exploited: Tier = Tier(0.97, 0.99)
    cve_critical_network: Tier = Tier(0.85, 0.95)
    """CVSS >= 9.0 and exploitable over the network (AV:N)."""
    cve_high_network: Tier = Tier(0.6, 0.8)
    """CVSS 7.0-8.9, AV:N."""
    cve_severe_local: Tier = Tier(0.3, 0.45)
    """CVSS >= 7.0 but adjacent, local or physical (or no vector)."""
    cve_medium: Tier = Tier(0.15, 0.3)
    cve_low: Tier = Tier(0.04, 0.1)
    update_outdated: Tier = Tier(0.2, 0.35)
    """The device runs older software than its update channel's newest release (a device record's
    ``update`` field, as the console fills it from the signed-update service), scaled by how long it
    has been behind: ``min(1, days_behind / update_full_days)``."""
    update_full_days: float = 90.0
    checks: Mapping[str, CheckRule] = field(default_factory=lambda: DEFAULT_CHECKS)
    config_by_severity: Mapping[str, Tier] = field(default_factory=lambda: DEFAULT_CONFIG_BY_SEVERITY)
    alerts: Mapping[str, Tier] = field(default_factory=lambda: DEFAULT_ALERTS)
    inactive_alert_statuses: frozenset[str] = frozenset(
        {"closed", "learned", "muted", "resolved", "false_positive", "suppressed"}
    )
    """Alert statuses that no longer count (any other status, new and acknowledged included, counts)."""
    type_criticality: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TYPES)
    level_criticality: Mapping[int, float] = field(default_factory=lambda: DEFAULT_LEVELS)
    unknown_criticality: float = 0.4
    importance: Mapping[str, float] = field(default_factory=lambda: DEFAULT_IMPORTANCE)
    # combination
    reach_floor: float = 0.8
    """r: the share of a weakness's likelihood that holds even without any exposure finding (an
    attacker already inside the control network)."""
    exposure_alone: float = 0.5
    """k: how much exposure raises the likelihood by itself (an internet-facing PLC with no known CVE)."""
    impact_floor: float = 0.35
    """f: the impact of a device of criticality 0 (every device is a foothold)."""
    # priority rules
    controller_types: frozenset[str] = frozenset(
        {"plc", "rtu", "ied", "sis", "safety_controller", "dcs_controller"}
    )
    controller_levels: frozenset[int] = frozenset({0, 1, 2})
    reachable_exposure: float = 0.3
    """A device is reachable for a KEV when its exposure is at least this, or the CVE is AV:N (or has
    no vector: we do not assume it is local)."""
    now_checks: frozenset[str] = frozenset(
        {
            "credentials.default",
            "credentials.default_account",
            "exposure.internet",
            "remote.vnc_no_auth",
            "exposure.ot_from_internet",
            "internet.ot_device",
            "remote_access.vnc_no_auth",
        }
    )
    next_exposure: float = 0.5
    now_score: int = 85
    next_score: int = 50
    # site
    at_risk_score: int = 40
    site_worst_weight: float = 0.6
    site_top_weight: float = 0.25
    site_top_devices: int = 5
    site_share_weight: float = 0.15
    max_contributors: int = 10

    def __post_init__(self) -> None:
        fractions = {
            "unknown_criticality": self.unknown_criticality,
            "reach_floor": self.reach_floor,
            "exposure_alone": self.exposure_alone,
            "impact_floor": self.impact_floor,
            "reachable_exposure": self.reachable_exposure,
            "next_exposure": self.next_exposure,
        }
        fractions |= {f"type_criticality[{k}]": v for k, v in self.type_criticality.items()}
        fractions |= {f"level_criticality[{k}]": v for k, v in self.level_criticality.items()}
        fractions |= {f"checks[{k}].exposure": v.exposure for k, v in self.checks.items()}
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"risk setting {name} must be between 0 and 1, not {value}")
        if any(value < 0 for value in self.importance.values()):
            raise ConfigError("risk setting importance multipliers must not be negative")
        if missing := {level.value for level in Importance} - set(self.importance):
            raise ConfigError(f"risk setting importance lacks {', '.join(sorted(missing))}")
        weights = self.site_worst_weight + self.site_top_weight + self.site_share_weight
        if (
            min(self.site_worst_weight, self.site_top_weight, self.site_share_weight) < 0
            or weights > 1.0 + 1e-9
        ):
            raise ConfigError(f"site weights must be >= 0 and add up to at most 1, not {weights:.3f}")
        if not 0 <= self.next_score <= self.now_score <= 100 or not 0 <= self.at_risk_score <= 100:
            raise ConfigError("risk score thresholds need 0 <= next_score <= now_score <= 100")
        if self.site_top_devices < 1 or self.max_contributors < 1:
            raise ConfigError("site_top_devices and max_contributors must be at least 1")

    def check_rule(self, check: str, severity: Severity) -> CheckRule:
        """The rule of a check: its exact name, else the longest family prefix, else by severity."""
        rule = self.checks.get(check)
        if rule is not None:
            return rule
        prefixes = [name for name in self.checks if name.endswith(".") and check.startswith(name)]
        if prefixes:
            family = self.checks[max(prefixes, key=len)]
            if family.weakness is not None:
                return family
            return CheckRule(self.config_by_severity.get(severity.value), family.exposure, family.action)
        return CheckRule(self.config_by_severity.get(severity.value, Tier(0.0, 0.0)), 0.0, "")


# --------------------------------------------------------------------------------------------------
# inputs


def load_devices(out_dir: Path) -> list[dict[str, Any]]:
    """The device records of ``out_dir/devices.json`` (RiskInputError when it cannot be read)."""
    path = out_dir / DEVICES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RiskInputError(f"{path} does not exist: run `fieldward analyze` into {out_dir} first") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RiskInputError(f"cannot read the inventory {path}: {exc}") from exc
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list):
        raise RiskInputError(f"{path} is not a FieldWard inventory (no 'devices' list)")
    return [record for record in devices if isinstance(record, dict) and isinstance(record.get("id"), str)]


def load_alerts(out_dir: Path, weird: WeirdLog | None = None) -> list[dict[str, Any]]:
    """The alert records of ``out_dir/alerts.jsonl`` with the analyst's status from ``triage.json``
    laid over them (an absent file is no alerts; a bad line is counted as a weird and skipped)."""
    path = out_dir / ALERTS_FILE
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RiskInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    statuses = _triage_statuses(out_dir / TRIAGE_FILE, weird)
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            _weird(weird, "risk_bad_alert_line", f"{path.name} line {number} is not an alert object")
            continue
        alert_id = record.get("id")
        if isinstance(alert_id, str) and alert_id in statuses:
            record["status"] = statuses[alert_id]
        records.append(record)
    return records


def _triage_statuses(path: Path, weird: WeirdLog | None) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        _weird(weird, "risk_bad_triage_file", f"{path.name} cannot be read; alert statuses as raised")
        return {}
    alerts = data.get("alerts") if isinstance(data, dict) else None
    if not isinstance(alerts, dict):
        return {}
    return {
        str(k): str(v["status"])
        for k, v in alerts.items()
        if isinstance(v, dict) and isinstance(v.get("status"), str)
    }


def _weird(weird: WeirdLog | None, name: str, detail: str) -> None:
    if weird is not None:
        weird.report(name, "assess", detail)


def device_label(device: Mapping[str, Any]) -> str:
    """A device as a person names it: host name, else first IP address, else its id."""
    hostname = device.get("hostname")
    if isinstance(hostname, str) and hostname:
        return hostname
    ips = device.get("ips")
    if isinstance(ips, list) and ips:
        return str(ips[0])
    return str(device.get("id", "?"))


# --------------------------------------------------------------------------------------------------
# items of the factors


@dataclass(frozen=True, slots=True)
class _Item:
    """One thing that raises a factor: a finding, a configuration finding, an alert."""

    factor: str
    group: str
    """Items of one group share a tier's cap."""
    tier: Tier
    weight: float
    """The item's weight in [0, tier.cap]: the tier's weight times the confidence."""
    detail: str
    reference: str
    kind: str
    """``cve``, ``config`` or ``alert``: what a remediation item removes."""


@dataclass(slots=True)
class _DeviceInputs:
    device: Mapping[str, Any]
    findings: list[Finding] = field(default_factory=list)
    configs: list[ConfigFinding] = field(default_factory=list)
    alerts: list[Mapping[str, Any]] = field(default_factory=list)
    importance: Importance = Importance.NORMAL

    @property
    def device_id(self) -> str:
        return str(self.device["id"])


def _cve_tier(finding: Finding, settings: RiskSettings) -> tuple[str, Tier, str]:
    """The class of a vulnerability finding: (group, tier, words)."""
    if finding.kev or finding.known_ransomware:
        words = "known ransomware use" if finding.known_ransomware else "exploited in the wild (CISA KEV)"
        return "cve.known_exploited", settings.cve_known_exploited, words
    score = finding.cvss.base_score if finding.cvss is not None else _severity_score(finding.severity)
    network = finding.cvss is not None and finding.cvss.attack_vector_network
    vector = "network" if network else ("no vector" if finding.cvss is None else "not network")
    if score >= 9.0 and network:
        return "cve.critical_network", settings.cve_critical_network, f"CVSS {score:.1f}, {vector}"
    if score >= 7.0 and network:
        return "cve.high_network", settings.cve_high_network, f"CVSS {score:.1f}, {vector}"
    if score >= 7.0:
        return "cve.severe_local", settings.cve_severe_local, f"CVSS {score:.1f}, {vector}"
    if score >= 4.0:
        return "cve.medium", settings.cve_medium, f"CVSS {score:.1f}"
    return "cve.low", settings.cve_low, f"CVSS {score:.1f}"


def _severity_score(severity: Severity) -> float:
    """A CVSS-like score for a finding without CVSS: the bottom of its severity's band."""
    return {"critical": 9.0, "high": 7.0, "medium": 4.0, "low": 0.1}.get(severity.value, 0.0)


def _clamp(value: float) -> float:
    return 0.0 if not value > 0.0 else min(1.0, value)  # NaN -> 0


def _finding_items(finding: Finding, settings: RiskSettings) -> list[_Item]:
    group, tier, words = _cve_tier(finding, settings)
    weight = tier.weight * _clamp(finding.confidence)
    confidence = f", match confidence {finding.confidence:.0%}" if finding.confidence < 0.995 else ""
    detail = f"{finding.vulnerability_id} ({finding.severity.value}, {words}{confidence})"
    return [_Item("exploitability", group, tier, weight, detail, finding.vulnerability_id, "cve")]


def _config_items(config: ConfigFinding, settings: RiskSettings) -> list[_Item]:
    rule = settings.check_rule(config.check, config.severity)
    items: list[_Item] = []
    where = f" on port {config.port}" if config.port else ""
    if rule.weakness is not None and rule.weakness.weight > 0:
        detail = f"{config.title}{where} ({config.check})"
        items.append(
            _Item(
                "exploitability",
                f"config.{config.check}",
                rule.weakness,
                rule.weakness.weight,
                detail,
                config.id,
                "config",
            )
        )
    if rule.exposure > 0:
        detail = f"{config.title}{where}"
        tier = Tier(rule.exposure, rule.exposure)
        items.append(
            _Item("exposure", f"exposure.{config.check}", tier, rule.exposure, detail, config.id, "config")
        )
    return items


def _alert_items(alert: Mapping[str, Any], settings: RiskSettings) -> list[_Item]:
    severity = str(alert.get("severity", "")).lower()
    tier = settings.alerts.get(severity)
    if tier is None or tier.weight <= 0:
        return []
    title = str(alert.get("title") or alert.get("type") or "alert")
    status = str(alert.get("status") or "new")
    detail = f"open {severity} alert: {title} ({status})"
    reference = str(alert.get("id") or "")
    return [_Item("behaviour", f"alert.{severity}", tier, tier.weight, detail, reference, "alert")]


def _alert_active(alert: Mapping[str, Any], settings: RiskSettings) -> bool:
    return str(alert.get("status") or "new").lower() not in settings.inactive_alert_statuses


def _update_items(device: Mapping[str, Any], settings: RiskSettings) -> list[_Item]:
    """An outdated device (``device["update"]``: ``outdated``, ``days_behind``, ``releases_behind``,
    ``running_version``, ``newest_version``, as ``fieldward.trust.updates.update_status`` reports)."""
    update = device.get("update")
    if not isinstance(update, Mapping) or update.get("outdated") is not True:
        return []
    try:
        days = max(0.0, float(update.get("days_behind") or 0.0))
    except (TypeError, ValueError):
        days = 0.0
    share = min(1.0, days / settings.update_full_days) if settings.update_full_days > 0 else 1.0
    weight = settings.update_outdated.weight * max(share, 0.25)  # behind at all is a weakness
    newest = str(update.get("newest_version") or "?")
    running = str(update.get("running_version") or "?")
    detail = f"runs {running}, {newest} is released ({days:.0f} days behind)"
    return [
        _Item(
            "exploitability",
            "update.outdated",
            settings.update_outdated,
            weight,
            detail,
            f"update:{newest}",
            "update",
        )
    ]


def _items(inputs: _DeviceInputs, settings: RiskSettings) -> list[_Item]:
    items: list[_Item] = _update_items(inputs.device, settings)
    for finding in inputs.findings:
        items.extend(_finding_items(finding, settings))
    for config in inputs.configs:
        items.extend(_config_items(config, settings))
    for alert in inputs.alerts:
        items.extend(_alert_items(alert, settings))
    # order-free: the same inputs in any order give bit-identical floats
    items.sort(key=lambda item: (item.factor, item.group, -item.weight, item.reference, item.detail))
    return items


def _tier_value(tier: Tier, weights: Iterable[float]) -> float:
    if tier.cap <= 0:
        return 0.0
    doubt = 1.0
    for weight in weights:
        doubt *= 1.0 - min(weight, tier.cap) / tier.cap
    return tier.cap * (1.0 - doubt)


def _factor(items: Sequence[_Item]) -> tuple[float, dict[int, float]]:
    """The factor's value (noisy-or of its tiers) and each item's share of it (by log-doubt)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.group].append(index)
    doubt = 1.0
    shares: dict[int, float] = {}
    for indexes in groups.values():
        tier = items[indexes[0]].tier
        value = min(_tier_value(tier, (items[i].weight for i in indexes)), 1.0 - _DOUBT_FLOOR)
        doubt *= 1.0 - value
        group_log = -math.log1p(-value)
        item_logs = [-math.log1p(-min(items[i].weight / tier.cap, 1.0 - _DOUBT_FLOOR)) for i in indexes]
        total = sum(item_logs)
        for i, log in zip(indexes, item_logs, strict=True):
            shares[i] = group_log * (log / total) if total > 0 else 0.0
    value = 1.0 - doubt
    total = sum(shares.values())
    return value, {i: (s / total if total > 0 else 0.0) for i, s in shares.items()}


def _criticality(inputs: _DeviceInputs, settings: RiskSettings) -> tuple[float, str]:
    device = inputs.device
    device_type = device.get("device_type")
    level = device.get("purdue_level")
    type_weight = (
        settings.type_criticality.get(device_type, settings.unknown_criticality)
        if isinstance(device_type, str)
        else settings.unknown_criticality
    )
    level_weight = (
        settings.level_criticality.get(level, settings.unknown_criticality)
        if isinstance(level, int) and not isinstance(level, bool)
        else settings.unknown_criticality
    )
    base = max(type_weight, level_weight)
    multiplier = settings.importance[inputs.importance.value]
    value = _clamp(base * multiplier)
    kind = str(device_type).replace("_", " ") if isinstance(device_type, str) else "device of unknown type"
    where = f" at Purdue level {level}" if isinstance(level, int) and not isinstance(level, bool) else ""
    detail = f"{kind}{where}"
    if inputs.importance is not Importance.NORMAL:
        detail += f", analyst importance {inputs.importance.value} (x{multiplier:g})"
    return value, detail


def _combine(factors: Sequence[float], settings: RiskSettings) -> float:
    """The score (0-100, unrounded) of the four factor values (E, X, C, B)."""
    e, x, c, b = factors
    reach = settings.reach_floor + (1.0 - settings.reach_floor) * x
    likelihood = 1.0 - (1.0 - e * reach) * (1.0 - settings.exposure_alone * x) * (1.0 - b)
    impact = settings.impact_floor + (1.0 - settings.impact_floor) * c
    return 100.0 * likelihood * impact


def _shapley(values: Sequence[float], settings: RiskSettings) -> list[float]:
    """Each factor's Shapley value in the game "score with only these factors on" (off = 0)."""
    n = len(values)
    result = [0.0] * n
    for player in range(n):
        others = [i for i in range(n) if i != player]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                with_ = [values[i] if i in subset or i == player else 0.0 for i in range(n)]
                without = [values[i] if i in subset else 0.0 for i in range(n)]
                result[player] += weight * (_combine(with_, settings) - _combine(without, settings))
    return result


@dataclass(frozen=True, slots=True)
class _Scored:
    raw: float
    factors: tuple[float, float, float, float]
    contributors: tuple[RiskContributor, ...]


def _score(inputs: _DeviceInputs, settings: RiskSettings, exclude: frozenset[str] = frozenset()) -> _Scored:
    items = [item for item in _items(inputs, settings) if item.reference not in exclude]
    by_factor: dict[str, list[_Item]] = {
        name: [item for item in items if item.factor == name] for name in FACTORS
    }
    e, e_shares = _factor(by_factor["exploitability"])
    x, x_shares = _factor(by_factor["exposure"])
    b, b_shares = _factor(by_factor["behaviour"])
    c, c_detail = _criticality(inputs, settings)
    raw = _combine((e, x, c, b), settings)
    phi = dict(zip(FACTORS, _shapley((e, x, c, b), settings), strict=True))
    contributors: list[RiskContributor] = []
    for name, shares in (("exploitability", e_shares), ("exposure", x_shares), ("behaviour", b_shares)):
        for index, share in shares.items():
            item = by_factor[name][index]
            points = round(phi[name] * share, 1)
            if points > 0:
                contributors.append(RiskContributor(name, points, item.detail, item.reference or None))
    if round(phi["criticality"], 1) > 0:
        contributors.append(RiskContributor("criticality", round(phi["criticality"], 1), c_detail, None))
    contributors.sort(key=lambda c_: (-c_.points, c_.factor, c_.detail, c_.reference or ""))
    return _Scored(raw, (e, x, c, b), tuple(contributors))


def _int_score(raw: float) -> int:
    return max(0, min(100, math.floor(raw + 0.5)))


# --------------------------------------------------------------------------------------------------
# priority rules


def _is_controller(device: Mapping[str, Any], settings: RiskSettings) -> bool:
    level = device.get("purdue_level")
    level_ok = level is None or (isinstance(level, int) and level in settings.controller_levels)
    return device.get("device_type") in settings.controller_types and level_ok


def _cve_priority(
    findings: Sequence[Finding], device: Mapping[str, Any], exposure: float, settings: RiskSettings
) -> tuple[Priority, str]:
    """Priority of fixing ``findings`` on ``device``, and the rule that set it."""
    for finding in findings:
        if finding.kev or finding.known_ransomware:
            network = finding.cvss is None or finding.cvss.attack_vector_network
            if network or exposure >= settings.reachable_exposure:
                what = "known ransomware use" if finding.known_ransomware else "CISA KEV"
                return (
                    Priority.NOW,
                    f"{finding.vulnerability_id} is exploited in the wild ({what}) and reachable",
                )
    if _is_controller(device, settings):
        for finding in findings:
            cvss = finding.cvss
            if cvss is not None and cvss.base_score >= 9.0 and cvss.attack_vector_network:
                return Priority.NOW, (
                    f"{finding.vulnerability_id} (CVSS {cvss.base_score:.1f}, network) "
                    "on a level 0-2 controller"
                )
    for finding in findings:
        if finding.kev or finding.known_ransomware:
            return (
                Priority.NEXT,
                f"{finding.vulnerability_id} is exploited in the wild (not reachable over the network)",
            )
        if finding.severity in (Severity.HIGH, Severity.CRITICAL):
            return Priority.NEXT, f"{finding.vulnerability_id} is of {finding.severity.value} severity"
    if exposure >= settings.next_exposure and findings:
        return Priority.NEXT, "the device is exposed beyond its zone"
    return Priority.LATER, "no known exploitation, moderate severity"


def _config_priority(configs: Sequence[ConfigFinding], settings: RiskSettings) -> tuple[Priority, str]:
    for config in configs:
        if config.check in settings.now_checks:
            return Priority.NOW, f"{config.title} ({config.check})"
    for config in configs:
        if config.severity in (Severity.HIGH, Severity.CRITICAL):
            return Priority.NEXT, f"{config.title} is of {config.severity.value} severity"
        if settings.check_rule(config.check, config.severity).exposure >= settings.next_exposure:
            return Priority.NEXT, f"{config.title} exposes the device"
    return Priority.LATER, "hardening"


def _alert_priority(alerts: Sequence[Mapping[str, Any]]) -> tuple[Priority, str]:
    for alert in alerts:
        if str(alert.get("severity", "")).lower() == "critical":
            return Priority.NOW, f"open critical alert: {alert.get('title') or alert.get('type')}"
    for alert in alerts:
        if str(alert.get("severity", "")).lower() == "high":
            return Priority.NEXT, f"open high alert: {alert.get('title') or alert.get('type')}"
    return Priority.LATER, "open alerts of medium severity or less"


def _best(priorities: Iterable[Priority]) -> Priority:
    return min(priorities, key=PRIORITY_ORDER.__getitem__, default=Priority.LATER)


def _device_priority(inputs: _DeviceInputs, score: int, exposure: float, settings: RiskSettings) -> Priority:
    candidates = [
        _cve_priority(inputs.findings, inputs.device, exposure, settings)[0],
        _config_priority(inputs.configs, settings)[0],
        _alert_priority(inputs.alerts)[0],
    ]
    if score >= settings.now_score:
        candidates.append(Priority.NOW)
    elif score >= settings.next_score:
        candidates.append(Priority.NEXT)
    return _best(candidates)


# --------------------------------------------------------------------------------------------------
# public API


def _gather(
    devices: Sequence[Mapping[str, Any]],
    findings: Iterable[Finding],
    config_findings: Iterable[ConfigFinding],
    alerts: Iterable[Mapping[str, Any]],
    importance: Mapping[str, Importance | str],
    settings: RiskSettings,
    weird: WeirdLog | None,
) -> dict[str, _DeviceInputs]:
    inputs: dict[str, _DeviceInputs] = {}
    for device in devices:
        device_id = device.get("id") if isinstance(device, Mapping) else None
        if not isinstance(device_id, str):
            _weird(weird, "risk_device_without_id", "a device record has no string id; not scored")
            continue
        inputs[device_id] = _DeviceInputs(device)
    for device_id, level in importance.items():
        if device_id in inputs:
            inputs[device_id].importance = Importance.parse(level)
        else:
            _weird(
                weird, "risk_unknown_device", f"importance set for {device_id}, which is not in the inventory"
            )
    for finding in findings:
        if finding.not_applicable:
            continue
        if finding.device_id in inputs:
            inputs[finding.device_id].findings.append(finding)
        else:
            _weird(weird, "risk_unknown_device", f"finding {finding.vulnerability_id} names unknown device")
    for config in config_findings:
        if config.device_id in inputs:
            inputs[config.device_id].configs.append(config)
        else:
            _weird(weird, "risk_unknown_device", f"configuration finding {config.check} names unknown device")
    for alert in alerts:
        if not isinstance(alert, Mapping):
            _weird(weird, "risk_bad_alert", "an alert is not an object")
            continue
        if not _alert_active(alert, settings):
            continue
        if str(alert.get("severity", "")).lower() not in settings.alerts:
            _weird(weird, "risk_bad_alert", f"alert {alert.get('id')} has severity {alert.get('severity')!r}")
            continue
        ends = {alert.get("src_device"), alert.get("dst_device")}
        for device_id in sorted(end for end in ends if isinstance(end, str)):
            if device_id in inputs:
                inputs[device_id].alerts.append(alert)
    for item in inputs.values():
        item.findings.sort(key=lambda f: (f.vulnerability_id, f.cpe, f.criteria))
        item.configs.sort(key=lambda c: (c.id, c.title))
        item.alerts.sort(key=lambda a: (str(a.get("id", "")), str(a.get("type", ""))))
    return inputs


def score_devices(
    devices: Sequence[Mapping[str, Any]],
    findings: Iterable[Finding],
    config_findings: Iterable[ConfigFinding],
    alerts: Iterable[Mapping[str, Any]],
    importance: Mapping[str, Importance | str] | None = None,
    settings: RiskSettings | None = None,
    *,
    weird: WeirdLog | None = None,
) -> list[DeviceRisk]:
    """The risk of every device of the inventory, riskiest first (ties by device id).

    Findings marked ``not_applicable`` are ignored, alerts whose status is in
    ``settings.inactive_alert_statuses`` (closed, learned, ...) too. An alert counts on both its
    source and its destination device. Findings for a device that is not in ``devices`` are counted
    as a ``risk_unknown_device`` weird.
    """
    settings = settings or RiskSettings()
    gathered = _gather(devices, findings, config_findings, alerts, importance or {}, settings, weird)
    risks: list[DeviceRisk] = []
    for device_id, inputs in gathered.items():
        scored = _score(inputs, settings)
        score = _int_score(scored.raw)
        e, x, c, b = scored.factors
        risks.append(
            DeviceRisk(
                device_id=device_id,
                score=score,
                exploitability=round(e, 4),
                exposure=round(x, 4),
                criticality=round(c, 4),
                behaviour=round(b, 4),
                priority=_device_priority(inputs, score, x, settings),
                contributors=scored.contributors[: settings.max_contributors],
            )
        )
    risks.sort(key=lambda r: (-r.score, PRIORITY_ORDER[r.priority], r.device_id))
    return risks


def score_site(
    device_risks: Sequence[DeviceRisk],
    devices: Sequence[Mapping[str, Any]] = (),
    settings: RiskSettings | None = None,
) -> SiteRisk:
    """The site's score: its worst device, the mean of its few worst, and the share of devices at risk.

    ``score = w·max + t·mean(top k) + s·100·share(score >= at_risk_score)``; each term is one
    contributor. ``devices`` (the inventory) names the worst device in words.
    """
    settings = settings or RiskSettings()
    by_priority = {p.value: 0 for p in Priority}
    for risk in device_risks:
        by_priority[risk.priority.value] += 1
    count = len(device_risks)
    if count == 0:
        return SiteRisk(0, 0, by_priority, ())
    labels = {str(d.get("id")): device_label(d) for d in devices if isinstance(d, Mapping)}
    ranked = sorted(device_risks, key=lambda r: (-r.score, r.device_id))
    worst = ranked[0]
    top = ranked[: settings.site_top_devices]
    top_mean = sum(r.score for r in top) / len(top)
    at_risk = sum(1 for r in device_risks if r.score >= settings.at_risk_score)
    share = at_risk / count
    terms = [
        (
            "worst_device",
            settings.site_worst_weight * worst.score,
            f"riskiest device {labels.get(worst.device_id, worst.device_id)} scores {worst.score}",
            worst.device_id,
        ),
        (
            "top_devices",
            settings.site_top_weight * top_mean,
            f"the {len(top)} riskiest devices average {top_mean:.0f}",
            None,
        ),
        (
            "share_at_risk",
            settings.site_share_weight * 100.0 * share,
            f"{at_risk} of {count} devices ({share:.0%}) score {settings.at_risk_score} or more",
            None,
        ),
    ]
    raw = sum(points for _, points, _, _ in terms)
    contributors = tuple(
        RiskContributor(factor, round(points, 1), detail, reference)
        for factor, points, detail, reference in sorted(terms, key=lambda t: -t[1])
    )
    return SiteRisk(_int_score(raw), count, by_priority, contributors)


_BOUND = re.compile(r"(<=?)\s*([vV]?[0-9][0-9A-Za-z.\-_]*)")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:6])


def _firmware_action(findings: Sequence[Finding], device: Mapping[str, Any]) -> str:
    """ "Update firmware to X or later" from the matched ranges, else "beyond" the running firmware."""
    below: list[str] = []
    at_most: list[str] = []
    for finding in findings:
        for operator, version in _BOUND.findall(finding.criteria):
            (below if operator == "<" else at_most).append(version)
    label = device_label(device)
    if below:
        target = max(below, key=_version_key)
        return f"Update the firmware of {label} to {target} or later"
    if at_most:
        target = max(at_most, key=_version_key)
        return f"Update the firmware of {label} beyond {target}"
    firmware = device.get("firmware")
    if isinstance(firmware, str) and firmware:
        return f"Update the firmware of {label} beyond {firmware}"
    return f"Update the firmware of {label} to the vendor's fixed release"


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def remediation_plan(
    device_risks: Sequence[DeviceRisk],
    devices: Sequence[Mapping[str, Any]],
    findings: Iterable[Finding],
    config_findings: Iterable[ConfigFinding],
    alerts: Iterable[Mapping[str, Any]] = (),
    importance: Mapping[str, Importance | str] | None = None,
    settings: RiskSettings | None = None,
) -> list[RemediationItem]:
    """One action per (device, fix), sorted Now, Next, Later, then by risk reduction.

    Vulnerabilities that the same update fixes are one action: findings with the same remediation
    text, and the rest of a device's findings together as "update the firmware". A configuration
    check is one action per device; open high or critical alerts are one "investigate" action per
    device. ``risk_reduction`` is the device's score now minus its score with the action's
    references removed (the same model, so it is consistent with the scores).
    """
    settings = settings or RiskSettings()
    findings = list(findings)
    config_findings = list(config_findings)
    alerts = list(alerts)
    gathered = _gather(devices, findings, config_findings, alerts, importance or {}, settings, None)
    scores = {risk.device_id: risk.score for risk in device_risks}
    items: list[tuple[RemediationItem, int]] = []
    for device_id, inputs in gathered.items():
        if device_id not in scores and not (inputs.findings or inputs.configs or inputs.alerts):
            continue
        base = _score(inputs, settings)
        base_score = _int_score(base.raw)
        exposure = base.factors[1]
        label = device_label(inputs.device)

        def reduction(
            references: Iterable[str], inputs: _DeviceInputs = inputs, base_score: int = base_score
        ) -> int:
            after = _int_score(_score(inputs, settings, frozenset(references)).raw)
            return max(0, base_score - after)

        # vulnerabilities, grouped by the fix that resolves them
        groups: dict[str, list[Finding]] = defaultdict(list)
        for finding in inputs.findings:
            key = (
                _normalise(finding.remediation) if finding.remediation and finding.remediation.strip() else ""
            )
            groups[key].append(finding)
        for key, group in sorted(groups.items()):
            cves = sorted({f.vulnerability_id for f in group})
            action = (
                " ".join(group[0].remediation.split())
                if key and group[0].remediation
                else _firmware_action(group, inputs.device)
            )
            priority, rule = _cve_priority(group, inputs.device, exposure, settings)
            worst = max(
                group, key=lambda f: (f.kev or f.known_ransomware, f.cvss.base_score if f.cvss else 0.0)
            )
            top = f"CVSS {worst.cvss.base_score:.1f}" if worst.cvss else worst.severity.value
            listed = ", ".join(cves[:6]) + (f" and {len(cves) - 6} more" if len(cves) > 6 else "")
            reason = f"{rule}; fixes {len(cves)} CVE{'s' if len(cves) != 1 else ''} ({listed}), worst {top}"
            items.append(
                (
                    RemediationItem(priority, device_id, action, reason, tuple(cves), reduction(cves)),
                    base_score,
                )
            )
        # insecure configurations, one action per check
        by_check: dict[str, list[ConfigFinding]] = defaultdict(list)
        for config in inputs.configs:
            by_check[config.check].append(config)
        for check, configs in sorted(by_check.items()):
            rule_action = settings.check_rule(check, configs[0].severity).action
            action = rule_action or configs[0].recommendation or f"Fix {configs[0].title}"
            action = f"{action} on {label}"
            priority, rule = _config_priority(configs, settings)
            ports = sorted({c.port for c in configs if c.port})
            where = f" (port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports))})" if ports else ""
            reason = f"{rule}{where}: {configs[0].explanation}".strip()
            references = tuple(sorted(c.id for c in configs))
            items.append(
                (
                    RemediationItem(priority, device_id, action, reason, references, reduction(references)),
                    base_score,
                )
            )
        # open alerts worth an investigation
        serious = [a for a in inputs.alerts if str(a.get("severity", "")).lower() in {"high", "critical"}]
        if serious:
            priority, rule = _alert_priority(serious)
            titles = sorted({str(a.get("title") or a.get("type")) for a in serious})
            references = tuple(sorted(str(a.get("id")) for a in serious if a.get("id")))
            action = (
                f"Investigate {len(serious)} open alert{'s' if len(serious) != 1 else ''} involving {label}"
            )
            worst_alert = max(serious, key=lambda a: SEVERITY_RANK.get(str(a.get("severity", "")).lower(), 0))
            severity = str(worst_alert.get("severity")).lower()
            reason = f"open {severity} alert, the device is under attack or misused: "
            reason += "; ".join(titles[:4]) + (" ..." if len(titles) > 4 else "")
            items.append(
                (
                    RemediationItem(priority, device_id, action, reason, references, reduction(references)),
                    base_score,
                )
            )
    items.sort(
        key=lambda pair: (
            PRIORITY_ORDER[pair[0].priority],
            -pair[0].risk_reduction,
            -pair[1],
            pair[0].device_id,
            pair[0].action,
        )
    )
    return [item for item, _ in items]
