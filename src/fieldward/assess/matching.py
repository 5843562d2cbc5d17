"""Vulnerability matching: inventory devices against NVD configurations, CSAF advisories and KEV.

For each device, ``cpe.candidates`` proposes CPE names; the ``VulnerabilitySource`` (the store of
``store/vulndb.py``, or ``InMemorySource`` here) returns the vulnerabilities that name those
products. Each NVD configuration is evaluated as NVD defines it (nodes of ``cpeMatch`` entries
combined by OR/AND, ``negate``; vulnerable entries against the device's version, platform entries
against its hardware) in three-valued logic: a criterion is met, not met, or cannot be told
(firmware unknown, hardware unknown). CSAF advisories are matched by vendor and product name,
model number or CPE helper and their version or version range; KEV marks exploited ones. The
result is one ``Finding`` per (device, vulnerability) with the reason in plain words.

Rules and confidence: docs/assess/matching.md.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fieldward.assess.cpe import (
    CpeMap,
    builtin_cpe_map,
    candidate_vendor_product,
    candidates,
    device_terms,
    tokens,
    unescape,
)
from fieldward.assess.model import (
    Advisory,
    AdvisoryProduct,
    AdvisoryVulnerability,
    Configuration,
    ConfigurationNode,
    CpeCandidate,
    CpeMatch,
    CvssScore,
    Finding,
    KevEntry,
    Remediation,
    Severity,
    Vulnerability,
    split_cpe,
)
from fieldward.assess.versions import (
    VersionSchemes,
    builtin_schemes,
    describe_relation,
    in_range,
    nvd_spec,
    parse_range,
)

UNKNOWN_VERSION_FACTOR = 0.3
"""A bounded criterion met by product but not verifiable because the device's version is unknown."""
UNKNOWN_HARDWARE_FACTOR = 0.5
"""An AND configuration whose platform (hardware) entries cannot be checked: the model is unknown."""
SIMILAR_HARDWARE_FACTOR = 0.9
"""A platform entry whose name shares the device's model-number tokens, without an exact CPE name."""
NA_VERSION_FACTOR = 0.9
"""A vulnerable criterion whose version is ``-`` (NVD: not applicable): no version to check."""
CSAF_FAMILY_FACTOR = 0.7
"""A CSAF product named by the device's family (``S7-1500``) rather than its own model."""
CSAF_NO_VERSION_FACTOR = 0.8
"""A CSAF product without version or range (the advisory names the product as a whole)."""
FIXED_CONFLICT_FACTOR = 0.5
"""An NVD finding for a version a CSAF advisory lists as fixed."""

_REMEDIATION_ORDER = ("vendor_fix", "mitigation", "workaround", "no_fix_planned", "none_available")


class VulnerabilitySource(Protocol):
    """Where vulnerability knowledge comes from (the store implements it; ``InMemorySource`` too)."""

    def vulnerabilities_for(self, vendor: str, product: str) -> list[Vulnerability]: ...

    # Vulnerabilities having a cpeMatch whose CPE vendor == vendor and product == product (lowercase CPE
    # names as NVD writes them), with full configurations
    def products_of(self, vendor: str) -> list[str]: ...  # distinct CPE product names of a CPE vendor

    def kev_entries(self, cve_ids: Iterable[str]) -> dict[str, KevEntry]: ...

    def advisories_for(self, vendor: str, terms: Sequence[str]) -> list[Advisory]: ...

    # CSAF advisories with a product whose vendor matches case-insensitively and whose name contains a term


class InMemorySource:
    """A ``VulnerabilitySource`` over lists of records (tests, small offline uses)."""

    def __init__(
        self,
        vulnerabilities: Iterable[Vulnerability] = (),
        kev: Iterable[KevEntry] = (),
        advisories: Iterable[Advisory] = (),
    ) -> None:
        self._by_product: dict[tuple[str, str], dict[str, Vulnerability]] = {}
        self._products: dict[str, set[str]] = {}
        for vulnerability in vulnerabilities:
            for configuration in vulnerability.configurations:
                for node in configuration.nodes:
                    for match in node.matches:
                        key = (match.vendor.lower(), match.product.lower())
                        self._by_product.setdefault(key, {})[vulnerability.id] = vulnerability
                        self._products.setdefault(key[0], set()).add(key[1])
        self._kev = {entry.cve_id: entry for entry in kev}
        self._advisories = list(advisories)

    def vulnerabilities_for(self, vendor: str, product: str) -> list[Vulnerability]:
        found = self._by_product.get((vendor.lower(), product.lower()), {})
        return [found[key] for key in sorted(found)]

    def products_of(self, vendor: str) -> list[str]:
        return sorted(self._products.get(vendor.lower(), ()))

    def kev_entries(self, cve_ids: Iterable[str]) -> dict[str, KevEntry]:
        return {cve: self._kev[cve] for cve in cve_ids if cve in self._kev}

    def advisories_for(self, vendor: str, terms: Sequence[str]) -> list[Advisory]:
        wanted = vendor.strip().lower()
        lowered = [term.lower() for term in terms if term.strip()]
        return [
            advisory
            for advisory in self._advisories
            if any(
                product.vendor.strip().lower() == wanted
                and any(term in product.name.lower() for term in lowered)
                for product in advisory.products
            )
        ]


class _CachedSource:
    """Memoises a source's answers for one ``match_devices`` run (many devices share products)."""

    def __init__(self, source: VulnerabilitySource) -> None:
        self.source = source
        self._vulnerabilities: dict[tuple[str, str], list[Vulnerability]] = {}
        self._products: dict[str, list[str]] = {}
        self._advisories: dict[tuple[str, tuple[str, ...]], list[Advisory]] = {}

    def vulnerabilities_for(self, vendor: str, product: str) -> list[Vulnerability]:
        key = (vendor, product)
        if key not in self._vulnerabilities:
            self._vulnerabilities[key] = self.source.vulnerabilities_for(vendor, product)
        return self._vulnerabilities[key]

    def products_of(self, vendor: str) -> list[str]:
        if vendor not in self._products:
            self._products[vendor] = self.source.products_of(vendor)
        return self._products[vendor]

    def kev_entries(self, cve_ids: Iterable[str]) -> dict[str, KevEntry]:
        return self.source.kev_entries(cve_ids)

    def advisories_for(self, vendor: str, terms: Sequence[str]) -> list[Advisory]:
        key = (vendor, tuple(terms))
        if key not in self._advisories:
            self._advisories[key] = self.source.advisories_for(vendor, terms)
        return self._advisories[key]


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """How cautious matching is.

    include_uncertain: report criteria that cannot be checked (version or hardware unknown) at a
    reduced confidence, saying so in the reason; False reports only what was verified
    """

    include_uncertain: bool = True
    cpe_map: CpeMap | None = None
    schemes: VersionSchemes | None = None


# ---------------------------------------------------------------------- NVD configurations


@dataclass(frozen=True, slots=True)
class _Hit:
    """How one cpeMatch entry relates to the device."""

    state: bool | None
    factor: float
    criterion: CpeMatch
    text: str
    candidate: CpeCandidate | None = None

    @property
    def score(self) -> float:
        return self.factor * (self.candidate.confidence if self.candidate else 1.0)


@dataclass(frozen=True, slots=True)
class _Result:
    state: bool | None
    hits: tuple[_Hit, ...] = ()

    @property
    def vulnerable_hit(self) -> _Hit | None:
        hits = [hit for hit in self.hits if hit.criterion.vulnerable and hit.candidate is not None]
        return max(hits, key=lambda hit: hit.score) if hits else None

    @property
    def confidence(self) -> float:
        hit = self.vulnerable_hit
        if hit is None:
            return 0.0
        value = hit.score
        for other in self.hits:
            if other is not hit:
                value *= other.factor
        return value


def _rank(result: _Result) -> tuple[int, float]:
    order = {True: 2, None: 1, False: 0}
    return (order[result.state], result.confidence)


def _any(results: Sequence[_Result]) -> _Result:
    """Kleene OR: the best result carries the evidence."""
    if not results:
        return _Result(False)
    return max(results, key=_rank)


def _all(results: Sequence[_Result]) -> _Result:
    """Kleene AND: every part must hold; the evidence is all parts'."""
    if not results or any(result.state is False for result in results):
        return _Result(False)
    state: bool | None = True if all(result.state for result in results) else None
    return _Result(state, tuple(hit for result in results for hit in result.hits))


def _negate(result: _Result, negate: bool) -> _Result:
    if not negate:
        return result
    if result.state is None:
        return _Result(None)
    return _Result(not result.state)  # a negated term proves nothing about the device: no evidence


@dataclass(slots=True)
class _DeviceView:
    """What configuration evaluation needs to know about the device."""

    device: Mapping[str, Any]
    candidates: list[CpeCandidate]
    schemes: VersionSchemes
    cpe_vendors: tuple[str, ...] = ()
    by_product: dict[tuple[str, str], list[CpeCandidate]] = field(default_factory=dict)
    identity: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for candidate in self.candidates:
            self.by_product.setdefault(candidate_vendor_product(candidate), []).append(candidate)
        for attribute in ("model", "product_code"):
            value = self.device.get(attribute)
            if value not in (None, ""):
                self.identity |= tokens(str(value))

    @property
    def model_text(self) -> str:
        for attribute in ("model", "product_code"):
            value = self.device.get(attribute)
            if value not in (None, ""):
                return str(value)
        return ""


def _evaluate_match(match: CpeMatch, view: _DeviceView) -> _Result:
    key = (match.vendor.lower(), match.product.lower())
    found = view.by_product.get(key, [])
    if not match.vulnerable:
        return _platform(match, view, found)
    if not found:
        return _Result(False)
    hits = [_version_hit(match, candidate, view) for candidate in found]
    return _any([_Result(hit.state, (hit,)) for hit in hits])


def _label(candidate: CpeCandidate) -> tuple[str, str]:
    """("firmware", "V2.9.4") or ("version", "7.4p1"): what the device's version is and as it was read."""
    if "firmware" in candidate.basis:
        return "firmware", candidate.basis["firmware"]
    if split_cpe(candidate.cpe)[2] in ("o", "h") and candidate.version is None:
        return "firmware", ""
    return "version", candidate.version or ""


def _version_hit(match: CpeMatch, candidate: CpeCandidate, view: _DeviceView) -> _Hit:
    scheme = view.schemes.scheme_for(match.vendor, match.product)
    parts = split_cpe(match.criteria)
    criterion_version = unescape(parts[5])
    update = unescape(parts[6])
    where = f"on {candidate.cpe}"
    label, shown = _label(candidate)
    if criterion_version == "*" and not match.versions.bounded:
        text = f"NVD lists all versions of {match.vendor} {match.product} {where}"
        return _Hit(True, 1.0, match, text, candidate)
    if criterion_version == "-":
        text = f"NVD lists {match.vendor} {match.product} without a version ('-') {where}"
        return _Hit(True, NA_VERSION_FACTOR, match, text, candidate)
    if criterion_version == "*":
        bounds = match.versions
        spec_text = f"NVD range {bounds.describe()}"
        inside = in_range(candidate.version, bounds, scheme) if candidate.version else None
        if inside is None:
            text = _unknown_text(label, shown, spec_text, candidate)
            return _Hit(None, UNKNOWN_VERSION_FACTOR, match, text, candidate)
        relation = describe_relation(shown, nvd_spec(bounds))
        if inside:
            return _Hit(True, 1.0, match, f"{label} {shown} {relation} ({spec_text}) {where}", candidate)
        return _Hit(False, 1.0, match, f"{label} {shown} is outside {spec_text}", candidate)
    exact = criterion_version + (update if update not in ("*", "-", "") else "")
    inside = in_range(candidate.version, exact, scheme) if candidate.version else None
    if inside is None:
        text = _unknown_text(label, shown, f"NVD version {exact}", candidate)
        return _Hit(None, UNKNOWN_VERSION_FACTOR, match, text, candidate)
    if inside:
        return _Hit(
            True, 1.0, match, f"{label} {shown} is the version NVD lists ({exact}) {where}", candidate
        )
    return _Hit(False, 1.0, match, f"{label} {shown} is not {exact}", candidate)


def _unknown_text(label: str, shown: str, spec: str, candidate: CpeCandidate) -> str:
    if not shown:
        return f"{label} unknown: cannot tell whether it is within {spec} for {candidate.cpe}; verify it"
    return f"{label} {shown} cannot be compared with {spec} for {candidate.cpe}; verify it"


def _platform(match: CpeMatch, view: _DeviceView, found: Sequence[CpeCandidate]) -> _Result:
    """A platform entry (``vulnerable: false``): is the device this hardware (or OS)?"""
    name = unescape(match.product)
    if found:
        text = f"on {match.vendor} {name}, the device's hardware ({view.model_text or found[0].cpe})"
        return _Result(True, (_Hit(True, 1.0, match, text),))
    if not view.identity:
        text = f"hardware not confirmed: NVD requires {match.vendor} {name} and the device's model is unknown"
        return _Result(None, (_Hit(None, UNKNOWN_HARDWARE_FACTOR, match, text),))
    numbered = {token for token in tokens(match.product) if any(c.isdigit() for c in token)}
    family = set(view.identity)
    for _, product in view.by_product:
        family |= tokens(product)
    if numbered and numbered <= family and numbered & view.identity:
        text = f"on {match.vendor} {name}, similar to the device's model {view.model_text}"
        return _Result(True, (_Hit(True, SIMILAR_HARDWARE_FACTOR, match, text),))
    if view.device.get("model") not in (None, "") and numbered - family:
        return _Result(False)  # the entry names another model than the one the device reported
    text = f"hardware not confirmed: NVD requires {match.vendor} {name}, not the device's {view.model_text}"
    return _Result(None, (_Hit(None, UNKNOWN_HARDWARE_FACTOR, match, text),))


def _evaluate_node(node: ConfigurationNode, view: _DeviceView) -> _Result:
    results = [_evaluate_match(match, view) for match in node.matches]
    combined = _all(results) if node.operator.upper() == "AND" else _any(results)
    return _negate(combined, node.negate)


def evaluate_configuration(configuration: Configuration, view: _DeviceView) -> _Result:
    """One NVD configuration against the device: True, False or None (cannot be told), with evidence."""
    results = [_evaluate_node(node, view) for node in configuration.nodes]
    operator = configuration.operator.upper() if configuration.operator else "OR"
    combined = _all(results) if len(results) > 1 and operator == "AND" else _any(results)
    return _negate(combined, configuration.negate)


def _evaluate_vulnerability(vulnerability: Vulnerability, view: _DeviceView) -> _Result | None:
    best: _Result | None = None
    for configuration in vulnerability.configurations:
        result = evaluate_configuration(configuration, view)
        if result.state is False or result.vulnerable_hit is None:
            continue
        if best is None or _rank(result) > _rank(best):
            best = result
    return best


# ---------------------------------------------------------------------- CSAF advisories


@dataclass(frozen=True, slots=True)
class _CsafHit:
    vulnerability_id: str
    advisory: Advisory
    vulnerability: AdvisoryVulnerability
    product: AdvisoryProduct
    state: bool | None
    confidence: float
    reason: str
    criteria: str
    remediation: str | None
    candidate: CpeCandidate | None


def _normal(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().lower())


def _compact(text: str) -> str:
    return re.sub(r"[\s_-]+", "", text.strip().upper())


def _whole_tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}


def _shape(token: str) -> str:
    return re.sub(r"[a-z]", "a", re.sub(r"\d", "9", token))


def _product_identity(
    product: AdvisoryProduct, view: _DeviceView, terms: Sequence[str]
) -> tuple[float, str, CpeCandidate | None] | None:
    """How surely a CSAF product is the device's product: (factor, how, candidate) or None."""
    if product.cpe:
        parts = split_cpe(product.cpe)
        for candidate in view.candidates:
            if candidate_vendor_product(candidate) == (parts[3].lower(), parts[4].lower()):
                return 1.0, f"CPE {parts[3]}:{parts[4]}", candidate
    own = [str(view.device.get(a)) for a in ("product_code", "model") if view.device.get(a) not in (None, "")]
    model = str(view.device.get("model") or "")
    if "/" in model:
        own.append(model.split("/")[0])
    compact_own = {_compact(value) for value in own if len(value.strip()) >= 3}
    for number in product.model_numbers:
        if _compact(number) in compact_own:
            return 1.0, f"model number {number}", None
    name = _normal(product.name)
    for value in own:
        if len(value.strip()) >= 3 and re.search(rf"(?<![\w-]){re.escape(_normal(value))}(?![\w-])", name):
            return 0.95, f"product '{product.name}'", None
    own_tokens = {t for value in own for t in _whole_tokens(value)}
    model_tokens = _whole_tokens(model)
    shapes = {_shape(t) for t in model_tokens if len(t) >= 3 and any(c.isdigit() for c in t)}
    for term in terms:
        if term in own or _normal(term) not in name:
            continue
        others = {
            t
            for t in _whole_tokens(product.name)
            if any(c.isdigit() for c in t) and t not in own_tokens and t not in _whole_tokens(term)
        }
        if any(_shape(t) in shapes for t in others):
            return None  # the product names a sibling model (CPU 1518 for a CPU 1515)
        return CSAF_FAMILY_FACTOR, f"product family '{term}' in '{product.name}'", None
    return None


def _product_version(
    product: AdvisoryProduct, view: _DeviceView, firmware: str | None
) -> tuple[bool | None, float, str]:
    vendor = view.cpe_vendors[0] if view.cpe_vendors else ""
    version_scheme = view.schemes.scheme_for(vendor, product.name)
    if product.version:
        if firmware is None:
            return (
                None,
                UNKNOWN_VERSION_FACTOR,
                f"firmware unknown; the advisory names version {product.version}",
            )
        inside = in_range(firmware, product.version, version_scheme)
        if inside is None:
            return (
                None,
                UNKNOWN_VERSION_FACTOR,
                f"firmware {firmware} cannot be compared with {product.version}",
            )
        relation = "is" if inside else "is not"
        return inside, 1.0, f"firmware {firmware} {relation} {product.version}"
    if product.version_range:
        spec = parse_range(product.version_range)
        if spec is None:
            return None, UNKNOWN_VERSION_FACTOR, f"range '{product.version_range}' could not be read"
        if spec.every:
            return True, 1.0, f"the advisory covers all versions ('{product.version_range}')"
        if firmware is None:
            text = f"firmware unknown: cannot tell whether it is within '{product.version_range}'"
            return None, UNKNOWN_VERSION_FACTOR, text
        inside = in_range(firmware, spec, version_scheme)
        if inside is None:
            return (
                None,
                UNKNOWN_VERSION_FACTOR,
                f"firmware {firmware} cannot be compared with '{product.version_range}'",
            )
        if inside:
            return (
                True,
                1.0,
                f"firmware {firmware} {describe_relation(firmware, spec)} ('{product.version_range}')",
            )
        return False, 1.0, f"firmware {firmware} is outside '{product.version_range}'"
    return True, CSAF_NO_VERSION_FACTOR, "the advisory names the product without a version"


def _remediation_text(remediations: Sequence[Remediation], product_ids: set[str]) -> str | None:
    relevant = [r for r in remediations if not r.product_ids or product_ids & set(r.product_ids)]
    if not relevant:
        return None

    def order(remediation: Remediation) -> int:
        category = remediation.category.lower()
        return (
            _REMEDIATION_ORDER.index(category) if category in _REMEDIATION_ORDER else len(_REMEDIATION_ORDER)
        )

    lines = []
    for remediation in sorted(relevant, key=order)[:3]:
        line = f"{remediation.category}: {remediation.details.strip()}"
        if remediation.url:
            line += f" ({remediation.url})"
        lines.append(line)
    return "; ".join(lines)


def _match_advisories(
    view: _DeviceView, source: VulnerabilitySource, include_uncertain: bool
) -> tuple[list[_CsafHit], dict[str, list[str]]]:
    """CSAF hits for affected products, and advisory ids that list the device's version as fixed."""
    vendor = view.device.get("vendor")
    terms = device_terms(view.device, view.candidates)
    if not vendor or not terms:
        return [], {}
    firmware_value = view.device.get("firmware")
    firmware = str(firmware_value) if firmware_value not in (None, "") else None
    firmware_confidence = _attribute_confidence(view.device, "firmware") if firmware else 1.0
    vendor_confidence = _attribute_confidence(view.device, "vendor")
    hits: list[_CsafHit] = []
    fixed: dict[str, list[str]] = {}
    for advisory in source.advisories_for(str(vendor), terms):
        matched: dict[str, tuple[float, str, bool | None, float, str, CpeCandidate | None]] = {}
        for product in advisory.products:
            if product.vendor.strip().lower() != str(vendor).strip().lower():
                continue
            identity = _product_identity(product, view, terms)
            if identity is None:
                continue
            state, factor, version_text = _product_version(product, view, firmware)
            how_factor, how, candidate = identity
            model_confidence = max(
                _attribute_confidence(view.device, "model"),
                _attribute_confidence(view.device, "product_code"),
            )
            confidence = how_factor * factor * vendor_confidence * model_confidence
            if state is not None and (product.version or product.version_range):
                confidence *= firmware_confidence
            matched[product.product_id] = (confidence, how, state, factor, version_text, candidate)
        if not matched:
            continue
        for index, vulnerability in enumerate(advisory.vulnerabilities):
            vulnerability_id = vulnerability.cve or f"{advisory.id}#{index + 1}"
            for product_id in (*vulnerability.fixed, *vulnerability.known_not_affected):
                if product_id in matched and matched[product_id][2] is True:
                    fixed.setdefault(vulnerability_id, []).append(advisory.id)
            best: _CsafHit | None = None
            for product_id in vulnerability.known_affected:
                if product_id not in matched:
                    continue
                confidence, how, state, _, version_text, candidate = matched[product_id]
                if state is False or (state is None and not include_uncertain):
                    continue
                product = next(p for p in advisory.products if p.product_id == product_id)
                reason = f"CSAF {advisory.id} lists {how} as affected: {version_text}"
                criteria = f"csaf:{advisory.id} {product.name}"
                if product.version or product.version_range:
                    criteria += f" {product.version or product.version_range}"
                hit = _CsafHit(
                    vulnerability_id,
                    advisory,
                    vulnerability,
                    product,
                    state,
                    confidence,
                    reason,
                    criteria,
                    _remediation_text(vulnerability.remediations, {product_id}),
                    candidate,
                )
                if (
                    best is None
                    or (best.state is not True and state is True)
                    or (best.state == state and confidence > best.confidence)
                ):
                    best = hit
            if best is not None:
                hits.append(best)
    return hits, fixed


def _attribute_confidence(device: Mapping[str, Any], attribute: str) -> float:
    confidences = device.get("confidence") or {}
    try:
        return float(confidences.get(attribute, 0.5)) if isinstance(confidences, Mapping) else 0.5
    except (TypeError, ValueError):
        return 0.5


# ---------------------------------------------------------------------- findings


def _best_score(scores: Iterable[CvssScore]) -> CvssScore | None:
    ranked = list(scores)
    if not ranked:
        return None

    def rank(score: CvssScore) -> tuple[float, bool, float]:
        try:
            version = float(score.version)
        except ValueError:
            version = 0.0
        return (version, score.primary, score.base_score)

    return max(ranked, key=rank)


def match_device(
    device: Mapping[str, Any],
    source: VulnerabilitySource,
    options: MatchOptions | None = None,
) -> list[Finding]:
    """The vulnerabilities that apply to one ``devices.json`` device, one finding per vulnerability."""
    options = options or MatchOptions()
    device_id = device.get("id")
    if not isinstance(device_id, str) or not device_id:
        raise ValueError("a device record needs an 'id' (a devices.json device)")
    found = candidates(device, source, options.cpe_map)
    cpe_map = options.cpe_map or builtin_cpe_map()
    vendor_name = device.get("vendor")
    view = _DeviceView(
        device,
        found,
        options.schemes or builtin_schemes(),
        cpe_map.cpe_vendors(str(vendor_name) if vendor_name else None),
    )
    nvd: dict[str, tuple[Vulnerability, _Result]] = {}
    for vendor, product in dict.fromkeys(candidate_vendor_product(c) for c in found):
        for vulnerability in source.vulnerabilities_for(vendor, product):
            if vulnerability.id in nvd:
                continue
            result = _evaluate_vulnerability(vulnerability, view)
            if result is None or (result.state is None and not options.include_uncertain):
                continue
            nvd[vulnerability.id] = (vulnerability, result)
    csaf_hits, fixed = _match_advisories(view, source, options.include_uncertain)
    by_id: dict[str, list[_CsafHit]] = {}
    for hit in csaf_hits:
        by_id.setdefault(hit.vulnerability_id, []).append(hit)
    ids = sorted(set(nvd) | set(by_id))
    kev = source.kev_entries([i for i in ids if i.upper().startswith("CVE-")]) if ids else {}
    findings = [
        _finding(device_id, vid, nvd.get(vid), by_id.get(vid, []), fixed.get(vid, []), kev.get(vid), found)
        for vid in ids
    ]
    return sorted(
        findings, key=lambda f: (-(f.cvss.base_score if f.cvss else 0.0), -f.confidence, f.vulnerability_id)
    )


def _finding(
    device_id: str,
    vulnerability_id: str,
    nvd: tuple[Vulnerability, _Result] | None,
    csaf: Sequence[_CsafHit],
    fixed_by: Sequence[str],
    kev: KevEntry | None,
    found: Sequence[CpeCandidate],
) -> Finding:
    reasons: list[str] = []
    sources: list[str] = []
    confidences: list[float] = []
    cpe = ""
    criteria = ""
    vulnerability = nvd[0] if nvd else None
    if nvd is not None:
        result = nvd[1]
        hit = result.vulnerable_hit
        assert hit is not None  # _evaluate_vulnerability keeps only results with a vulnerable hit
        assert hit.candidate is not None
        cpe = hit.candidate.cpe
        bounds = hit.criterion.versions.describe()
        criteria = hit.criterion.criteria + (f" ({bounds})" if bounds else "")
        reasons.append(hit.text)
        reasons.extend(other.text for other in result.hits if other is not hit)
        if result.state is None and not any("verify" in r or "not confirmed" in r for r in reasons):
            reasons.append("not verified")
        sources.append("nvd")
        confidence = result.confidence
        if fixed_by:
            confidence *= FIXED_CONFLICT_FACTOR
            reasons.append(f"but CSAF {', '.join(sorted(set(fixed_by)))} lists this version as fixed")
        confidences.append(confidence)
    for csaf_hit in csaf:
        reasons.append(csaf_hit.reason)
        sources.append(f"csaf:{csaf_hit.advisory.id}")
        confidences.append(csaf_hit.confidence)
        if not criteria:
            criteria = csaf_hit.criteria
        if not cpe:
            cpe = csaf_hit.candidate.cpe if csaf_hit.candidate else (found[0].cpe if found else "")
    doubt = 1.0
    for value in confidences:
        doubt *= 1.0 - min(max(value, 0.0), 1.0)
    combined = max(confidences) if len(confidences) <= 1 else min(0.99, 1.0 - doubt)
    cvss = vulnerability.best_cvss() if vulnerability else None
    if cvss is None:
        cvss = _best_score(score for hit in csaf for score in hit.vulnerability.cvss)
    remediation = next((hit.remediation for hit in csaf if hit.remediation), None)
    if kev is not None:
        sources.append("kev")
        if remediation is None and kev.required_action:
            remediation = kev.required_action
    if cvss is not None:
        severity = (
            cvss.severity if isinstance(cvss.severity, Severity) else Severity.from_score(cvss.base_score)
        )
    else:
        severity = Severity.HIGH if kev is not None else Severity.NONE
    description = vulnerability.description if vulnerability and vulnerability.description else ""
    if not description and csaf:
        description = csaf[0].vulnerability.title or csaf[0].advisory.title
    published = vulnerability.published if vulnerability and vulnerability.published else None
    if published is None and csaf:
        published = csaf[0].advisory.initial_release
    return Finding(
        device_id=device_id,
        vulnerability_id=vulnerability_id,
        cpe=cpe,
        criteria=criteria,
        reason="; ".join(reasons),
        confidence=round(combined, 4),
        sources=tuple(dict.fromkeys(sources)),
        severity=severity,
        cvss=cvss,
        kev=kev is not None,
        kev_due_date=kev.due_date if kev else None,
        known_ransomware=bool(kev and kev.known_ransomware),
        description=description,
        remediation=remediation,
        published=published,
    )


def match_devices(
    devices: Iterable[Mapping[str, Any]],
    source: VulnerabilitySource,
    marks: Mapping[tuple[str, str], Any] | None = None,
    options: MatchOptions | None = None,
) -> list[Finding]:
    """Findings for every device; ``marks[(device_id, vulnerability_id)].reason`` marks one not applicable."""
    cached = _CachedSource(source)
    findings: list[Finding] = []
    for device in devices:
        if not isinstance(device, Mapping):
            raise ValueError(f"a device record must be a mapping, not {type(device).__name__}")
        findings.extend(match_device(device, cached, options))
    if marks:
        findings = [_apply_mark(finding, marks.get(finding.key)) for finding in findings]
    return findings


def _apply_mark(finding: Finding, mark: Any) -> Finding:
    if mark is None:
        return finding
    reason = getattr(mark, "reason", None)
    return dataclasses.replace(
        finding, not_applicable=True, not_applicable_reason=str(reason) if reason is not None else None
    )


def findings_by(findings: Iterable[Finding], key: Callable[[Finding], str]) -> dict[str, list[Finding]]:
    """Findings grouped by ``key`` (e.g. ``lambda f: f.device_id``), in order."""
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(key(finding), []).append(finding)
    return grouped


__all__ = [
    "InMemorySource",
    "MatchOptions",
    "VulnerabilitySource",
    "evaluate_configuration",
    "findings_by",
    "match_device",
    "match_devices",
]
