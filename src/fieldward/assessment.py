"""The assessment of an analysis folder: vulnerabilities, insecure configurations, risk, remediation.

This is the glue between ``assess/`` (pure logic: matching, configuration checks, the risk model) and
the vulnerability knowledge in the store: :func:`assess_folder` reads what ``fieldward analyze`` wrote
(``devices.json``, ``flows.parquet``, ``events/``, ``alerts.jsonl``, the analyst's ``assets.json``
and ``triage.json``), matches the devices against a :class:`VulnerabilitySource` when one is given,
and :func:`write_assessment` writes

- ``DIR/vulnerabilities.json``: ``{"feeds": <knowledge status>, "findings": [Finding...]}``
- ``DIR/configurations.json``: ``{"findings": [ConfigFinding...]}``
- ``DIR/risk.json``: ``{"site": SiteRisk, "devices": [DeviceRisk...], "remediation": [RemediationItem...]}``

which :func:`load_assessment` reads back for the report and the console.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldward.assess.configs import ConfigSettings, check_configurations
from fieldward.assess.importance import load_importance
from fieldward.assess.matching import VulnerabilitySource, match_devices
from fieldward.assess.model import (
    ConfigFinding,
    DeviceRisk,
    Finding,
    RemediationItem,
    SiteRisk,
    from_json,
)
from fieldward.assess.risk import (
    RiskSettings,
    load_alerts,
    load_devices,
    remediation_plan,
    score_devices,
    score_site,
)
from fieldward.errors import FieldWardError
from fieldward.weird import WeirdLog

VULNERABILITIES_FILE = "vulnerabilities.json"
CONFIGURATIONS_FILE = "configurations.json"
RISK_FILE = "risk.json"


class AssessmentError(FieldWardError):
    """An assessment file of an analysis folder is missing or unreadable."""


@dataclass(slots=True)
class Assessment:
    """Everything ``fieldward assess`` concludes about one analysis folder."""

    findings: list[Finding]
    config_findings: list[ConfigFinding]
    risks: list[DeviceRisk]
    site: SiteRisk
    plan: list[RemediationItem]
    feeds: dict[str, Any] | None = None
    """The vulnerability knowledge it was matched against (store status); None: no feeds were used."""
    devices: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def open_findings(self) -> list[Finding]:
        return [f for f in self.findings if not f.not_applicable]


def assess_folder(
    out_dir: Path,
    source: VulnerabilitySource | None = None,
    marks: Mapping[tuple[str, str], Any] | None = None,
    *,
    feeds: dict[str, Any] | None = None,
    config_settings: ConfigSettings | None = None,
    risk_settings: RiskSettings | None = None,
    weird: WeirdLog | None = None,
) -> Assessment:
    """Assess the analysis folder ``out_dir``; without ``source`` no vulnerability matching is done
    (configurations, alerts and criticality still make the risk)."""
    devices = load_devices(out_dir)
    findings = match_devices(devices, source, marks) if source is not None else []
    configs = check_configurations(out_dir, config_settings)
    alerts = load_alerts(out_dir, weird)
    importance = load_importance(out_dir)
    risks = score_devices(devices, findings, configs, alerts, importance, risk_settings, weird=weird)
    site = score_site(risks, devices, risk_settings)
    plan = remediation_plan(risks, devices, findings, configs, alerts, importance, risk_settings)
    return Assessment(
        findings=findings,
        config_findings=configs,
        risks=risks,
        site=site,
        plan=plan,
        feeds=feeds if source is not None else None,
        devices=devices,
        alerts=alerts,
    )


def write_assessment(out_dir: Path, assessment: Assessment) -> list[Path]:
    """Write the three assessment files (each atomically); returns their paths."""
    documents = {
        VULNERABILITIES_FILE: {
            "feeds": assessment.feeds,
            "findings": [f.to_json() for f in assessment.findings],
        },
        CONFIGURATIONS_FILE: {"findings": [f.to_json() for f in assessment.config_findings]},
        RISK_FILE: {
            "site": assessment.site.to_json(),
            "devices": [r.to_json() for r in assessment.risks],
            "remediation": [item.to_json() for item in assessment.plan],
        },
    }
    written = []
    for name, document in documents.items():
        path = out_dir / name
        temporary = path.with_name(f".{name}.tmp")
        temporary.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
        written.append(path)
    return written


def load_assessment(out_dir: Path) -> Assessment:
    """Read back what :func:`write_assessment` wrote (with the folder's devices and alerts)."""
    try:
        vulnerabilities = _document(out_dir / VULNERABILITIES_FILE)
        configurations = _document(out_dir / CONFIGURATIONS_FILE)
        risk = _document(out_dir / RISK_FILE)
        return Assessment(
            findings=[from_json(Finding, r) for r in vulnerabilities.get("findings", [])],
            config_findings=[from_json(ConfigFinding, r) for r in configurations.get("findings", [])],
            risks=[from_json(DeviceRisk, r) for r in risk.get("devices", [])],
            site=from_json(SiteRisk, risk["site"]),
            plan=[from_json(RemediationItem, r) for r in risk.get("remediation", [])],
            feeds=vulnerabilities.get("feeds"),
            devices=load_devices(out_dir),
            alerts=load_alerts(out_dir),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AssessmentError(f"{out_dir}: the assessment files do not read back ({exc})") from exc


def _document(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssessmentError(
            f"{path} does not exist: run `fieldward assess {path.parent}` (or analyze) first"
        ) from None
    except (OSError, ValueError) as exc:
        raise AssessmentError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise AssessmentError(f"{path} is not a FieldWard assessment file")
    return data
