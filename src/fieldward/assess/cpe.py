"""CPE 2.3 candidates for an inventory device: what NVD would call its firmware, hardware and software.

The first step of vulnerability matching (``matching.py``). A device record of ``devices.json``
(vendor, model, product code, firmware, OS, raw facts such as the HTTP ``Server`` header) becomes
a list of ``CpeCandidate`` names such as
``cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:2.9.4:*:*:*:*:*:*:*``, from two sources:

- the rules of ``data/cpe_map.yaml`` (plus a user's files, ``load_cpe_map``): vendor aliases and
  model patterns, each naming the firmware and hardware products NVD uses;
- a fallback over the feed's own product names of the device's CPE vendor
  (``ProductCatalog.products_of``), chosen by normalised token similarity, at a lower confidence.

A candidate's confidence is the product of the inventory confidences of the attributes it used,
times the certainty of the mapping. Nothing here reads a feed beyond ``products_of``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

from fieldward.assess.model import CpeCandidate, split_cpe
from fieldward.assess.versions import parse_version

FACT_CONFIDENCE = 0.85
"""Confidence of a raw fact (a banner is what the device said about itself, literally)."""

FALLBACK_CERTAINTY = 0.6
"""Highest mapping certainty of a name found by token similarity rather than by a rule."""

FALLBACK_LIMIT = 6
"""At most this many fallback names per device and CPE vendor."""

_GENERIC_TOKENS = frozenset(
    {"firmware", "series", "cpu", "module", "modules", "device", "devices", "controller", "family", "fw"}
)
_SOFTWARE_TOKENS = frozenset(
    {
        "software",
        "simulator",
        "plcsim",
        "designer",
        "studio",
        "engineering",
        "tia",
        "step7",
        "runtime",
        "suite",
    }
)
"""Tokens of application names: a device seen on the wire is hardware running firmware, never these
(``simatic_s7-1500__software_controller`` is not a CPU 1515-2 PN)."""
_SPECIAL = re.compile(r"([\\!\"#$%&'()+,/:;<=>@\[\]^`{|}~?*])")
_FIELD = re.compile(r"\{([\w.:-]+)(?:\|(\w+))?\}")
ATTRIBUTES = ("vendor", "model", "product_code", "firmware", "os", "device_type", "hostname")


class ProductCatalog(Protocol):
    """The part of a vulnerability source the fallback needs (``matching.VulnerabilitySource`` has it)."""

    def products_of(self, vendor: str) -> list[str]: ...


# ---------------------------------------------------------------------- CPE strings


def escape(value: str) -> str:
    """A value for a CPE 2.3 formatted string: special characters backslash-escaped (NISTIR 7695, 6.2)."""
    return _SPECIAL.sub(r"\\\1", value)


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def slug(value: str) -> str:
    """A name as NVD writes CPE products: lowercase, spaces to ``_``, special characters escaped."""
    return escape("_".join(value.strip().lower().split()))


def compact(value: str) -> str:
    """An order number without spaces: ``6ES7 515-2AM02-0AB0`` -> ``6es7515-2am02-0ab0``."""
    return escape("".join(value.strip().lower().split()))


def format_cpe(part: str, vendor: str, product: str, version: str = "*", update: str = "*") -> str:
    """``cpe:2.3:part:vendor:product:version:update:*:*:*:*:*:*`` (vendor and product already escaped)."""
    return f"cpe:2.3:{part}:{vendor}:{product}:{version}:{update}:*:*:*:*:*:*"


def cpe_version(text: str) -> str:
    """The device's version as a CPE version component: ``V2.9.4`` -> ``2.9.4``."""
    parsed = parse_version(text)
    value = parsed.clean if parsed is not None else text.strip().lower()
    value = "_".join(value.split())
    return escape(value) if value else "*"


# ---------------------------------------------------------------------- the mapping file


@dataclass(frozen=True, slots=True)
class CpeTemplate:
    part: str
    product: str
    certainty: float | None = None
    vendor: str | None = None


@dataclass(frozen=True, slots=True)
class ProductRule:
    """One rule of ``cpe_map.yaml``: device attributes that match -> CPE names."""

    name: str
    vendor: str
    alternatives: tuple[tuple[tuple[str, re.Pattern[str]], ...], ...]
    templates: tuple[CpeTemplate, ...]
    certainty: float = 0.9
    device_vendor: bool = True


@dataclass(frozen=True, slots=True)
class CpeMap:
    """Vendor aliases (inventory name -> CPE vendors) and product rules, user rules first."""

    vendors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rules: tuple[ProductRule, ...] = ()

    def cpe_vendors(self, vendor: str | None) -> tuple[str, ...]:
        """CPE vendor names of an inventory vendor (``Rockwell Automation`` -> ``rockwellautomation``)."""
        if not vendor or not vendor.strip():
            return ()
        known = self.vendors.get(vendor.strip().lower())
        if known:
            return known
        words = re.sub(r"[^a-z0-9]+", " ", vendor.lower()).split()
        if not words:
            return ()
        return tuple(dict.fromkeys(("".join(words), "-".join(words), "_".join(words))))


class CpeMapError(ValueError):
    """A mapping file is malformed (the message names the file and the entry)."""


def load_cpe_map(extra_paths: Iterable[Path | str] = ()) -> CpeMap:
    """The built-in ``cpe_map.yaml`` with the users' files of ``extra_paths`` before it.

    A user's vendor alias replaces the built-in one; a user's rules are tried before the built-in ones.
    """
    sources: list[tuple[str, Any]] = []
    for path in extra_paths:
        try:
            sources.append((str(path), yaml.safe_load(Path(path).read_text())))
        except (OSError, yaml.YAMLError) as error:
            raise CpeMapError(f"{path}: {error}") from error
    builtin = resources.files("fieldward.assess").joinpath("data/cpe_map.yaml").read_text()
    sources.append(("builtin:cpe_map.yaml", yaml.safe_load(builtin)))
    vendors: dict[str, tuple[str, ...]] = {}
    rules: list[ProductRule] = []
    for origin, document in sources:
        if document is None:
            continue
        if not isinstance(document, dict):
            raise CpeMapError(f"{origin}: expected a mapping with 'vendors' and/or 'products'")
        for name, cpe_names in (document.get("vendors") or {}).items():
            names = [cpe_names] if isinstance(cpe_names, str) else cpe_names
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise CpeMapError(f"{origin}: vendor {name!r} needs a list of CPE vendor names")
            vendors.setdefault(str(name).lower(), tuple(n.lower() for n in names))
        for entry in document.get("products") or []:
            rules.append(_rule(origin, entry))
    return CpeMap(vendors, tuple(rules))


def _rule(origin: str, entry: Any) -> ProductRule:
    if not isinstance(entry, dict) or not entry.get("vendor") or not entry.get("cpes"):
        raise CpeMapError(f"{origin}: a product rule needs vendor, match and cpes: {entry!r}")
    name = str(entry.get("name") or entry["vendor"])
    raw = entry.get("match")
    alternatives_raw = raw if isinstance(raw, list) else [raw]
    alternatives = []
    for alternative in alternatives_raw:
        if not isinstance(alternative, dict) or not alternative:
            raise CpeMapError(f"{origin}: rule {name!r}: match must be a mapping or a list of mappings")
        try:
            compiled = tuple(
                (str(key), re.compile(str(pattern), re.IGNORECASE)) for key, pattern in alternative.items()
            )
        except re.error as error:
            raise CpeMapError(f"{origin}: rule {name!r}: bad regex: {error}") from error
        for key, _ in compiled:
            if key not in ATTRIBUTES and not key.startswith("fact:"):
                raise CpeMapError(f"{origin}: rule {name!r}: unknown match key {key!r}")
        alternatives.append(compiled)
    templates = []
    for item in entry["cpes"]:
        text, certainty, vendor = (item, None, None) if isinstance(item, str) else _template_item(item)
        part, sep, product = str(text).partition(":")
        if not sep or part not in ("o", "h", "a") or not product:
            raise CpeMapError(f"{origin}: rule {name!r}: CPE template {text!r} is not '<o|h|a>:<product>'")
        templates.append(CpeTemplate(part, product, certainty, vendor))
    certainty = float(entry.get("certainty", 0.9))
    if not 0.0 < certainty <= 1.0:
        raise CpeMapError(f"{origin}: rule {name!r}: certainty must be in (0, 1]")
    return ProductRule(
        name,
        str(entry["vendor"]).lower(),
        tuple(alternatives),
        tuple(templates),
        certainty,
        bool(entry.get("device_vendor", True)),
    )


def _template_item(item: Any) -> tuple[str, float | None, str | None]:
    if not isinstance(item, dict) or "cpe" not in item:
        raise CpeMapError(f"CPE entry must be a string or a mapping with 'cpe': {item!r}")
    certainty = item.get("certainty")
    vendor = item.get("vendor")
    return str(item["cpe"]), float(certainty) if certainty is not None else None, vendor


@functools.cache
def builtin_cpe_map() -> CpeMap:
    return load_cpe_map()


# ---------------------------------------------------------------------- candidates


def _value(device: Mapping[str, Any], key: str) -> list[tuple[str, float]]:
    """The values of a match key: an attribute (one value, its confidence) or a raw fact (all values)."""
    if key.startswith("fact:"):
        facts = device.get("facts") or {}
        values = facts.get(key[5:]) if isinstance(facts, Mapping) else None
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            return []
        return [(str(v), FACT_CONFIDENCE) for v in values if v is not None]
    value = device.get(key)
    if value is None or value == "":
        return []
    return [(str(value), _confidence(device, key))]


def _confidence(device: Mapping[str, Any], attribute: str) -> float:
    confidences = device.get("confidence") or {}
    try:
        value = float(confidences.get(attribute, 0.5)) if isinstance(confidences, Mapping) else 0.5
    except (TypeError, ValueError):
        value = 0.5
    return min(1.0, max(0.0, value))


@dataclass(slots=True)
class _Binding:
    fields: dict[str, str]
    used: dict[str, float]
    """Attribute or fact -> confidence, of everything the candidate was built from."""
    basis: dict[str, str]


def _bindings(rule: ProductRule, device: Mapping[str, Any]) -> list[_Binding]:
    """Every way the first matching alternative of ``rule`` matches ``device`` (one per fact value)."""
    for alternative in rule.alternatives:
        results: list[_Binding] = [_Binding({}, {}, {})]
        for key, pattern in alternative:
            extended: list[_Binding] = []
            for value, confidence in _value(device, key):
                found = pattern.search(value)
                if found is None:
                    continue
                for binding in results:
                    groups = {k: v for k, v in found.groupdict().items() if v}
                    extended.append(
                        _Binding(
                            {**binding.fields, **groups},
                            {**binding.used, key: confidence},
                            {**binding.basis, key.removeprefix("fact:"): value},
                        )
                    )
            results = extended
            if not results:
                break
        if results:
            return results
    return []


def _render(template: str, binding: _Binding, device: Mapping[str, Any]) -> str | None:
    """A product template filled from the groups or the device's attributes (None: a field is missing)."""
    missing = False

    def fill(found: re.Match[str]) -> str:
        nonlocal missing
        name, flt = found.group(1), found.group(2)
        value = binding.fields.get(name)
        if value is None and name in ATTRIBUTES:
            attribute = device.get(name)
            if attribute is not None and attribute != "":
                value = str(attribute)
                binding.used.setdefault(name, _confidence(device, name))
                binding.basis.setdefault(name, value)
        if value is None:
            missing = True
            return ""
        return compact(value) if flt == "compact" else slug(value)

    product = _FIELD.sub(fill, template)
    return None if missing or not product else product


def candidates(
    device: Mapping[str, Any],
    catalog: ProductCatalog | None = None,
    cpe_map: CpeMap | None = None,
) -> list[CpeCandidate]:
    """The CPE names FieldWard proposes for ``device`` (a ``devices.json`` record), most confident first.

    catalog: where the fallback finds the feed's product names of the device's CPE vendors (None:
    rules only). Firmware and hardware names carry the device's firmware as ``version``.
    """
    mapping = cpe_map or builtin_cpe_map()
    vendor_name = device.get("vendor")
    device_vendors = mapping.cpe_vendors(str(vendor_name) if vendor_name else None)
    found: dict[str, CpeCandidate] = {}
    firmware = device.get("firmware")
    firmware_text = str(firmware) if firmware not in (None, "") else None
    for rule in mapping.rules:
        if rule.device_vendor and rule.vendor not in device_vendors:
            continue
        for binding in _bindings(rule, device):
            if rule.device_vendor:
                binding.used.setdefault("vendor", _confidence(device, "vendor"))
                binding.basis.setdefault("vendor", str(vendor_name))
            for template in rule.templates:
                _add(found, _from_rule(rule, template, binding, device, firmware_text))
    if catalog is not None:
        for cpe_vendor in device_vendors:
            for candidate in _fallback(device, cpe_vendor, catalog, found, firmware_text):
                _add(found, candidate)
    return sorted(found.values(), key=lambda c: (-c.confidence, c.cpe))


def _add(found: dict[str, CpeCandidate], candidate: CpeCandidate | None) -> None:
    if candidate is None:
        return
    known = found.get(candidate.cpe)
    if known is None or candidate.confidence > known.confidence:
        found[candidate.cpe] = candidate


def _from_rule(
    rule: ProductRule,
    template: CpeTemplate,
    binding: _Binding,
    device: Mapping[str, Any],
    firmware: str | None,
) -> CpeCandidate | None:
    local = _Binding(dict(binding.fields), dict(binding.used), dict(binding.basis))
    product = _render(template.product, local, device)
    if product is None:
        return None
    version_text = local.fields.get("version")
    if version_text is not None:
        update = local.fields.get("update")
        version: str | None = version_text + (update or "")
        cpe_fields = (cpe_version(version_text), escape(update.lower()) if update else "*")
    elif firmware is not None and template.part in ("o", "h"):
        version = firmware
        local.basis.setdefault("firmware", firmware)
        if template.part == "o":  # a hardware name does not depend on the firmware being right
            local.used.setdefault("firmware", _confidence(device, "firmware"))
        cpe_fields = (cpe_version(firmware) if template.part == "o" else "*", "*")
    else:
        version = None
        cpe_fields = ("*", "*")
    confidence = template.certainty if template.certainty is not None else rule.certainty
    for value in local.used.values():
        confidence *= value
    vendor = template.vendor or rule.vendor
    basis = dict(local.basis)
    basis["rule"] = rule.name
    parsed = parse_version(version) if version is not None else None
    return CpeCandidate(
        cpe=format_cpe(template.part, vendor, product, *cpe_fields),
        confidence=round(confidence, 4),
        basis=basis,
        version=parsed.clean if parsed is not None else version,
    )


def tokens(text: str) -> set[str]:
    """Normalised tokens of a name: lowercase alphanumeric runs, plus letter/digit splits (``mb3270``
    -> ``mb3270``, ``mb``, ``3270``)."""
    result: set[str] = set()
    for token in re.split(r"[^a-z0-9]+", unescape(text).lower()):
        if not token:
            continue
        result.add(token)
        result.update(part for part in re.findall(r"[a-z]+|\d+", token) if len(part) > 1 or part.isdigit())
    return result


def _fallback(
    device: Mapping[str, Any],
    cpe_vendor: str,
    catalog: ProductCatalog,
    known: Mapping[str, CpeCandidate],
    firmware: str | None,
) -> list[CpeCandidate]:
    """Feed product names of ``cpe_vendor`` whose model-number tokens the device's model or product
    code contains; certainty grows with the share of the name's tokens the device explains."""
    own = {"model", "product_code"}
    identity: set[str] = set()
    used: dict[str, float] = {}
    for attribute in own:
        value = device.get(attribute)
        if value not in (None, ""):
            identity |= tokens(str(value))
            used[attribute] = _confidence(device, attribute)
    if not identity:
        return []
    family = set(identity)
    for candidate in known.values():
        family |= tokens(split_cpe(candidate.cpe)[4])
    family |= tokens(str(device.get("vendor") or ""))
    known_products = {split_cpe(c.cpe)[4] for c in known.values() if split_cpe(c.cpe)[3] == cpe_vendor}
    try:
        products = catalog.products_of(cpe_vendor)
    except Exception:  # a broken source must not stop candidate generation
        return []
    scored: list[tuple[float, str]] = []
    for product in products:
        if product in known_products:
            continue
        name_tokens = tokens(product) - _GENERIC_TOKENS
        if name_tokens & _SOFTWARE_TOKENS:
            continue
        numbered = {t for t in name_tokens if any(c.isdigit() for c in t)}
        if not numbered or not numbered <= family or not (numbered & identity):
            continue
        share = len(name_tokens & family) / len(name_tokens)
        scored.append((share, product))
    scored.sort(key=lambda item: (-item[0], item[1]))
    result = []
    vendor_confidence = _confidence(device, "vendor")
    for share, product in scored[:FALLBACK_LIMIT]:
        certainty = FALLBACK_CERTAINTY * share
        confidence = certainty * vendor_confidence
        for value in used.values():
            confidence *= value
        firmware_part = product.endswith("_firmware")
        version = firmware if firmware_part else None
        if version is not None:
            confidence *= _confidence(device, "firmware")
        basis = {k: str(device.get(k)) for k in used}
        basis["vendor"] = str(device.get("vendor"))
        basis["rule"] = f"fallback: feed product name, token share {share:.2f}"
        if version is not None:
            basis["firmware"] = version
        parsed = parse_version(version) if version else None
        result.append(
            CpeCandidate(
                cpe=format_cpe(
                    "o" if firmware_part else "h",
                    cpe_vendor,
                    product,
                    cpe_version(version) if version else "*",
                ),
                confidence=round(confidence, 4),
                basis=basis,
                version=parsed.clean if parsed is not None else version,
            )
        )
    return result


def candidate_vendor_product(candidate: CpeCandidate) -> tuple[str, str]:
    parts = split_cpe(candidate.cpe)
    return parts[3], parts[4]


def is_fallback(candidate: CpeCandidate) -> bool:
    return candidate.basis.get("rule", "").startswith("fallback")


def device_terms(device: Mapping[str, Any], found: Sequence[CpeCandidate]) -> list[str]:
    """Search terms for CSAF product names: the model, the product code, and the product families
    the rules named (``S7-1500``, ``ControlLogix 5580``, ``Modicon M340``)."""
    terms: list[str] = []
    for attribute in ("model", "product_code"):
        value = device.get(attribute)
        if value not in (None, "") and len(str(value).strip()) >= 3:
            terms.append(str(value).strip())
    for candidate in found:
        if is_fallback(candidate):
            continue
        product = unescape(split_cpe(candidate.cpe)[4]).removesuffix("_firmware")
        pattern = r"(s7-\d{3,4}|(?:control|compact|guard)logix_\d{4}|modicon_m\d{3})"
        for family in re.findall(pattern, product):
            terms.append(family.removeprefix("modicon_").replace("_", " "))
    model = str(device.get("model") or "")
    if "/" in model:  # Rockwell catalog numbers carry the series: 1756-L83E/B
        terms.append(model.split("/")[0])
    return list(dict.fromkeys(t for t in terms if t))
