"""The assessment's typed records: vulnerability knowledge, findings, insecure configurations and risk.

This module is the contract between the parts of ``assess/``: feed parsers (``feeds/``) produce
``Vulnerability``, ``KevEntry`` and ``Advisory`` records; the vulnerability store (``store/vulndb.py``)
keeps them; the matcher (``matching.py``) turns a device's vendor/product/firmware into ``Finding``
records; the configuration checks (``configs.py``) produce ``ConfigFinding`` records from what the
sensor saw; the risk model (``risk.py``) combines both with alerts into ``DeviceRisk``, ``SiteRisk``
and a ``RemediationItem`` list. Every record is frozen and serialises with ``to_json``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import StrEnum
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

_Record = TypeVar("_Record")


class Severity(StrEnum):
    """Qualitative severity, the CVSS v3/v4 rating scale (FIRST), also used for configuration findings."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @classmethod
    def from_score(cls, score: float) -> Severity:
        """CVSS v3.1 specification, section 5: qualitative severity rating scale."""
        if score <= 0.0:
            return cls.NONE
        if score < 4.0:
            return cls.LOW
        if score < 7.0:
            return cls.MEDIUM
        if score < 9.0:
            return cls.HIGH
        return cls.CRITICAL


class Priority(StrEnum):
    """When to remediate: Dragos-style Now / Next / Later triage."""

    NOW = "now"
    NEXT = "next"
    LATER = "later"


@dataclass(frozen=True, slots=True)
class CvssScore:
    """One CVSS rating of a vulnerability, as a feed states it.

    version: "2.0", "3.0", "3.1" or "4.0"
    source: who scored it (``nvd@nist.gov``, a CNA's e-mail, a CSAF publisher's namespace)
    primary: NVD's "Primary" type (the NVD's own score) rather than "Secondary" (the CNA's)
    """

    version: str
    vector: str
    base_score: float
    severity: Severity
    source: str = ""
    primary: bool = True

    @property
    def attack_vector_network(self) -> bool:
        """Exploitable over the network (AV:N), the worst exposure for a device on a plant network."""
        return "AV:N" in self.vector.split("/") or "/AV:N" in self.vector


@dataclass(frozen=True, slots=True)
class VersionRange:
    """NVD's version bounds of a CPE match criterion; all None means "the criterion's own version"."""

    start_including: str | None = None
    start_excluding: str | None = None
    end_including: str | None = None
    end_excluding: str | None = None

    @property
    def bounded(self) -> bool:
        return any((self.start_including, self.start_excluding, self.end_including, self.end_excluding))

    def describe(self) -> str:
        """Human text such as ``>= 2.0, < 2.9.2``."""
        parts = []
        if self.start_including:
            parts.append(f">= {self.start_including}")
        if self.start_excluding:
            parts.append(f"> {self.start_excluding}")
        if self.end_including:
            parts.append(f"<= {self.end_including}")
        if self.end_excluding:
            parts.append(f"< {self.end_excluding}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class CpeMatch:
    """One NVD ``cpeMatch`` entry: a CPE 2.3 formatted string with wildcards and optional version bounds.

    vulnerable: False for platform entries of an AND configuration ("running on" hardware)
    """

    criteria: str
    vulnerable: bool = True
    versions: VersionRange = field(default_factory=VersionRange)
    match_criteria_id: str | None = None

    @property
    def vendor(self) -> str:
        return split_cpe(self.criteria)[3]

    @property
    def product(self) -> str:
        return split_cpe(self.criteria)[4]

    @property
    def version(self) -> str:
        return split_cpe(self.criteria)[5]


def split_cpe(cpe: str) -> list[str]:
    """The 13 components of a CPE 2.3 formatted string (``cpe:2.3:part:vendor:product:version:...``),
    backslash escapes kept (an escaped colon does not split); missing ones are ``*``."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in cpe:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts + ["*"] * (13 - len(parts))


@dataclass(frozen=True, slots=True)
class ConfigurationNode:
    """An NVD configuration node: its CPE matches combined by ``operator`` (``OR``/``AND``)."""

    operator: str
    matches: tuple[CpeMatch, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Configuration:
    """An NVD configuration: nodes combined by ``operator``; ``AND`` expresses "firmware X on hardware Y"."""

    nodes: tuple[ConfigurationNode, ...]
    operator: str = "OR"
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Vulnerability:
    """A CVE as a feed describes it (NVD CVE JSON 2.0 ``cve`` object).

    published / last_modified: the feed's own dates (UTC); the store keeps them, and an import that
    carries the same ``last_modified`` changes nothing.
    """

    id: str
    source: str
    description: str = ""
    published: dt.datetime | None = None
    last_modified: dt.datetime | None = None
    status: str = ""
    """NVD ``vulnStatus`` (Analyzed, Modified, Rejected, ...)."""
    cvss: tuple[CvssScore, ...] = ()
    cwes: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    configurations: tuple[Configuration, ...] = ()

    def best_cvss(self) -> CvssScore | None:
        """The score to rank by: the newest CVSS version, the primary (NVD) score before a secondary one."""
        if not self.cvss:
            return None
        return max(self.cvss, key=lambda s: (_version_rank(s.version), s.primary, s.base_score))

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


def _version_rank(version: str) -> float:
    try:
        return float(version)
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class KevEntry:
    """One entry of CISA's Known Exploited Vulnerabilities catalogue."""

    cve_id: str
    vendor_project: str
    product: str
    name: str
    date_added: dt.date
    short_description: str = ""
    required_action: str = ""
    due_date: dt.date | None = None
    known_ransomware: bool = False
    notes: str = ""
    cwes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


@dataclass(frozen=True, slots=True)
class AdvisoryProduct:
    """A product of a CSAF product tree, flattened: vendor, product name and the version it names.

    version: an exact version (``product_version``) or None
    version_range: a ``product_version_range`` as written (a vers string such as ``vers:intdot/<2.9.2``
    or free text such as ``<=V4.2``), or None
    cpe: the ``product_identification_helper.cpe`` where the advisory gives one
    """

    product_id: str
    vendor: str
    name: str
    version: str | None = None
    version_range: str | None = None
    cpe: str | None = None
    model_numbers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Remediation:
    """CSAF remediation: category (vendor_fix, mitigation, workaround, no_fix_planned, none_available)."""

    category: str
    details: str
    url: str | None = None
    product_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdvisoryVulnerability:
    """One vulnerability of a CSAF advisory, with the products it affects and their fixes."""

    cve: str | None
    title: str = ""
    cvss: tuple[CvssScore, ...] = ()
    cwes: tuple[str, ...] = ()
    known_affected: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    known_not_affected: tuple[str, ...] = ()
    remediations: tuple[Remediation, ...] = ()


@dataclass(frozen=True, slots=True)
class Advisory:
    """A CSAF 2.0 advisory (``csaf_security_advisory``), e.g. a CISA ICS advisory or a Siemens SSA."""

    id: str
    """``document.tracking.id``, e.g. ``ICSA-24-046-15`` or ``SSA-123456``."""
    title: str
    publisher: str
    initial_release: dt.datetime | None = None
    current_release: dt.datetime | None = None
    revision: str = ""
    url: str | None = None
    products: tuple[AdvisoryProduct, ...] = ()
    vulnerabilities: tuple[AdvisoryVulnerability, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


@dataclass(frozen=True, slots=True)
class CpeCandidate:
    """A CPE 2.3 name FieldWard proposes for a device, from its inventory attributes.

    confidence: how sure the inventory is of the vendor, product and version it was built from
    (the product of their attribute confidences, times the certainty of the name mapping)
    basis: the attribute values it came from, e.g. ``{"vendor": "Siemens", "model": "CPU 1515-2 PN",
    "firmware": "V2.9.4"}``
    """

    cpe: str
    confidence: float
    basis: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    """The device's version normalised for comparison (``V2.9.4`` -> ``2.9.4``)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A vulnerability that applies to a device, and why FieldWard believes it does."""

    device_id: str
    vulnerability_id: str
    cpe: str
    """The device's candidate CPE that matched."""
    criteria: str
    """The feed's criterion it matched: the CPE match string or the advisory product, with its range."""
    reason: str
    """Plain words, e.g. ``firmware V2.9.4 is below 2.9.7 (NVD: < 2.9.7) on cpe:2.3:o:siemens:...``."""
    confidence: float
    sources: tuple[str, ...]
    """Where the knowledge came from: ``nvd``, ``kev``, ``csaf:ICSA-24-046-15``."""
    severity: Severity
    cvss: CvssScore | None = None
    kev: bool = False
    kev_due_date: dt.date | None = None
    known_ransomware: bool = False
    description: str = ""
    remediation: str | None = None
    published: dt.datetime | None = None
    not_applicable: bool = False
    not_applicable_reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.device_id, self.vulnerability_id)

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


@dataclass(frozen=True, slots=True)
class ConfigFinding:
    """An insecure configuration seen in traffic: cleartext management, missing authentication, exposure.

    check: stable name of the check, e.g. ``cleartext.telnet`` or ``exposure.ot_from_internet``
    device_id: the device at fault (the server that offers the insecure service, the device exposed)
    evidence: flow ids in ``flows.parquet`` and event rows that show it (at most a few)
    """

    check: str
    device_id: str
    title: str
    severity: Severity
    explanation: str
    recommendation: str
    protocol: str | None = None
    port: int | None = None
    peers: tuple[str, ...] = ()
    first_seen: str | None = None
    last_seen: str | None = None
    count: int = 1
    evidence: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.check}:{self.device_id}:{self.port or ''}"

    def to_json(self) -> dict[str, Any]:
        record = _json_record(asdict(self))
        record["id"] = self.id
        return record


@dataclass(frozen=True, slots=True)
class RiskContributor:
    """One reason a score is what it is: ``points`` added to the score, with the reason in words."""

    factor: str
    """``exploitability``, ``exposure``, ``criticality`` or ``behaviour``."""
    points: float
    detail: str
    reference: str | None = None
    """What it points at: a CVE id, a configuration finding id, an alert id."""


@dataclass(frozen=True, slots=True)
class DeviceRisk:
    """A device's risk score (0-100) and the contributors that explain it, largest first."""

    device_id: str
    score: int
    exploitability: float
    """0-1: how exploitable its weaknesses are (KEV, CVSS, insecure services)."""
    exposure: float
    """0-1: how reachable it is (from IT or the internet, remote access)."""
    criticality: float
    """0-1: how much it matters (type, Purdue level, analyst-set importance)."""
    behaviour: float
    """0-1: what it did (open alerts, by severity)."""
    priority: Priority
    contributors: tuple[RiskContributor, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


@dataclass(frozen=True, slots=True)
class SiteRisk:
    """The site's score: dominated by its worst devices, raised by how many are at risk."""

    score: int
    devices: int
    by_priority: dict[str, int]
    contributors: tuple[RiskContributor, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


@dataclass(frozen=True, slots=True)
class RemediationItem:
    """One line of the prioritised remediation list."""

    priority: Priority
    device_id: str
    action: str
    reason: str
    references: tuple[str, ...] = ()
    """CVE ids, configuration finding ids or alert ids the action resolves."""
    risk_reduction: int = 0
    """Points the device's score would drop by once done (an estimate)."""

    def to_json(self) -> dict[str, Any]:
        return _json_record(asdict(self))


def _json(value: Any) -> Any:
    """``asdict`` output made JSON-ready: dates as ISO 8601 strings, tuples as lists, enums as values."""
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value


def _json_record(record: dict[str, Any]) -> dict[str, Any]:
    return {key: _json(value) for key, value in record.items()}


def from_json(cls: type[_Record], data: Mapping[str, Any]) -> _Record:
    """Rebuild a record of this module from its ``to_json`` form (the files ``fieldward assess`` writes).

    Unknown keys (``id`` of a configuration finding) are ignored; a missing required field or a
    value of the wrong shape raises ``ValueError`` naming the record type.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in fields(cls):  # type: ignore[arg-type]
        if item.name in data:
            values[item.name] = _revive(hints[item.name], data[item.name])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"not a {cls.__name__} record: {exc}") from exc


def _revive(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (UnionType, Union):
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        return _revive(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        args = get_args(hint)
        inner = args[0] if args else Any
        return tuple(_revive(inner, item) for item in value)
    if origin is dict:
        return dict(value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if hint is dt.date:
        return dt.date.fromisoformat(str(value))
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return hint(value)
    if isinstance(hint, type) and is_dataclass(hint):
        return from_json(hint, value)
    if hint is float and isinstance(value, int | float):
        return float(value)
    return value
