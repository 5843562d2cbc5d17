"""Fingerprint rules: data files that turn observed facts into device attributes.

A rule says "when these facts match, propose these attribute values with this confidence". Rules live
in YAML files (the built-in ``inventory/data/fingerprints.yaml`` plus any the user adds with
``--fingerprints FILE``), are validated when loaded (pydantic) and never need code. The format is in
docs/inventory.md; in short::

    rules:
      - name: axis-camera-dhcp
        match:                       # every key must match one of the device's facts (re.search, no case)
          dhcp.vendor_class: '^AXIS'
        unless:                      # optional: the rule does not fire if any of these matches
          role: 'rtsp/client'
        set:                         # attribute values; {group} inserts a named regex group
          vendor: Axis
          device_type: ip_camera
        confidence: 0.8

Facts are strings grouped by name (``dhcp.vendor_class``, ``http.server``, ``role``, ``serves``, ...;
the full list is in docs/inventory.md). ``attr.<name>`` facts hold the attribute values found by the
other rules and protocol evidence; rules that read them run in a second round, after the others.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fieldward.errors import ConfigError
from fieldward.inventory.model import ATTRIBUTES, DeviceType, Evidence

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (about 10x faster), else the pure-Python one."""

SETTABLE = frozenset(ATTRIBUTES) - {"purdue_level"}
"""Attributes a rule may set (the Purdue level follows from the type and the communications)."""


class RuleSpec(BaseModel):
    """One rule as written in a file (validated)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    match: dict[str, str] = Field(min_length=1)
    unless: dict[str, str] = Field(default_factory=dict)
    set: dict[str, str]
    confidence: float = Field(gt=0.0, le=1.0)

    @field_validator("match", "unless")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for fact, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"fact {fact!r}: bad regular expression {pattern!r}: {exc}") from exc
        return value

    @field_validator("set")
    @classmethod
    def _known_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("set must name at least one attribute")
        for name, text in value.items():
            if name not in SETTABLE:
                raise ValueError(f"unknown attribute {name!r} (one of {', '.join(sorted(SETTABLE))})")
            if name == "device_type" and text not in DeviceType.__members__.values():
                raise ValueError(f"unknown device_type {text!r} (one of {', '.join(DeviceType)})")
        return value


class VendorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    match: list[str] = Field(min_length=1)


class FingerprintFile(BaseModel):
    """A whole file: any of the three sections may be absent."""

    model_config = ConfigDict(extra="forbid")

    rules: list[RuleSpec] = Field(default_factory=list)
    vendors: list[VendorSpec] = Field(default_factory=list)
    levels: dict[str, int] = Field(default_factory=dict)

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: dict[str, int]) -> dict[str, int]:
        for kind, level in value.items():
            if kind not in DeviceType.__members__.values():
                raise ValueError(f"levels: unknown device_type {kind!r}")
            if not 0 <= level <= 5:
                raise ValueError(f"levels: {kind} level {level} is not between 0 and 5")
        return value


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule."""

    name: str
    match: tuple[tuple[str, re.Pattern[str]], ...]
    unless: tuple[tuple[str, re.Pattern[str]], ...]
    set: tuple[tuple[str, str], ...]
    confidence: float
    origin: str
    required: frozenset[str] = frozenset()
    """The facts ``match`` names: a device lacking one cannot match (checked first, cheaply)."""
    second_round: bool = False
    """The rule reads ``attr.*`` facts: it runs after every other rule."""
    evidence: Evidence = field(default_factory=lambda: Evidence("rule", None, -1, ""))
    """The evidence every value this rule proposes carries (shared: evidence is immutable)."""

    def reads(self, facts: frozenset[str]) -> bool:
        return any(fact in facts for fact, _ in self.match + self.unless)

    @classmethod
    def compile(cls, spec: RuleSpec, origin: str) -> Rule:
        match, unless = _compile(spec.match), _compile(spec.unless)
        return cls(
            name=spec.name,
            match=match,
            unless=unless,
            set=tuple(spec.set.items()),
            confidence=spec.confidence,
            origin=origin,
            required=frozenset(spec.match),
            second_round=any(fact.startswith("attr.") for fact, _ in match + unless),
            evidence=Evidence("rule", None, -1, f"{spec.name} ({origin})"),
        )

    def apply(self, facts: Mapping[str, Collection[str]]) -> dict[str, str] | None:
        """The attribute values this rule proposes for a device with ``facts``, or None."""
        if not self.required <= facts.keys():
            return None
        groups: dict[str, str] = {}
        for fact, pattern in self.match:
            found: dict[str, str] | None = None
            values = facts.get(fact, ())
            for value in sorted(values) if len(values) > 1 else values:
                found = _search(pattern, value)
                if found is not None:
                    break
            if found is None:
                return None
            groups.update(found)
        for fact, pattern in self.unless:
            if any(_search(pattern, value) is not None for value in facts.get(fact, ())):
                return None
        out: dict[str, str] = {}
        for name, template in self.set:
            try:
                value = template.format_map(groups).strip()
            except (KeyError, IndexError, ValueError):
                continue  # a group that did not take part in the match
            if value:
                out[name] = value
        return out or None


@lru_cache(maxsize=1 << 18)
def _search(pattern: re.Pattern[str], value: str) -> dict[str, str] | None:
    """Named groups of ``pattern``'s first match in ``value`` (None: no match). Cached: thousands of
    devices share the same fact values (``modbus/slave``, a DHCP vendor class)."""
    found = pattern.search(value)
    if found is None:
        return None
    return {k: v for k, v in found.groupdict().items() if v is not None}


def _compile(spec: dict[str, str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((fact, re.compile(pattern, re.IGNORECASE)) for fact, pattern in spec.items())


_LEGAL_SUFFIX = re.compile(
    r"[\s,.]+(inc|incorporated|corp|corporation|co|company|ltd|limited|llc|gmbh|ag|sa|s\.a|spa|bv|b\.v|"
    r"oy|ab|plc|kg|kk|pty|srl|nv|as|a/s)\b\.?",
    re.IGNORECASE,
)


@dataclass
class Fingerprints:
    """Every loaded rule, vendor alias and Purdue level default."""

    rules: list[Rule]
    vendors: list[tuple[str, tuple[re.Pattern[str], ...]]]
    levels: dict[str, int]
    _vendor_cache: dict[str, str] = field(default_factory=dict, repr=False)
    _verdicts: dict[object, list[tuple[Rule, dict[str, str]]]] = field(default_factory=dict, repr=False)

    UNIQUE_FACTS = frozenset({"hostname"})
    """Facts whose values differ from device to device: rules reading them are never cached."""
    MAX_CACHED = 1 << 16

    def evaluate(
        self, facts: Mapping[str, Collection[str]], second_round: bool
    ) -> list[tuple[Rule, dict[str, str]]]:
        """Every rule of the round that fires on ``facts``, with what it proposes.

        Thousands of devices share the same facts but for their names: the verdicts of the rules that
        do not read a unique fact are cached by the device's other facts (the rule set's view of it).
        """
        relevant = self._relevant_facts
        signature = (
            second_round,
            frozenset((name, frozenset(values)) for name, values in facts.items() if name in relevant),
        )
        shared = self._verdicts.get(signature)
        cacheable, uncached = self._partition[second_round]
        if shared is None:
            if len(self._verdicts) >= self.MAX_CACHED:
                self._verdicts.clear()
            shared = self._verdicts[signature] = [
                (rule, proposed) for rule in cacheable if (proposed := rule.apply(facts)) is not None
            ]
        own = [(rule, proposed) for rule in uncached if (proposed := rule.apply(facts)) is not None]
        return shared + own if own else shared

    @cached_property
    def _partition(self) -> dict[bool, tuple[list[Rule], list[Rule]]]:
        """Per round: the rules whose verdict can be cached, and those reading unique facts."""
        return {
            round_: (
                [r for r in self.rules if r.second_round == round_ and not r.reads(self.UNIQUE_FACTS)],
                [r for r in self.rules if r.second_round == round_ and r.reads(self.UNIQUE_FACTS)],
            )
            for round_ in (False, True)
        }

    @cached_property
    def _relevant_facts(self) -> frozenset[str]:
        """Every fact a rule reads, but the unique ones: a device's signature for the verdict cache."""
        return (
            frozenset(fact for rule in self.rules for fact, _ in rule.match + rule.unless) - self.UNIQUE_FACTS
        )

    @classmethod
    def load(cls, extra: Iterable[Path] = ()) -> Fingerprints:
        """The built-in data files plus ``extra`` user files (whose vendors and levels win)."""
        builtin = resources.files("fieldward.inventory") / "data"
        files: list[tuple[str, str]] = [
            (f"builtin:{name}", (builtin / name).read_text(encoding="utf-8"))
            for name in ("vendors.yaml", "fingerprints.yaml")
        ]
        for path in extra:
            try:
                files.append((str(path), Path(path).read_text(encoding="utf-8")))
            except OSError as exc:
                raise ConfigError(f"cannot read fingerprint file {path}: {exc.strerror}") from exc
        rules: list[Rule] = []
        vendors: list[tuple[str, tuple[re.Pattern[str], ...]]] = []
        levels: dict[str, int] = {}
        for origin, text in files:
            parsed = parse_file(origin, text)
            user = not origin.startswith("builtin:")
            rules.extend(Rule.compile(spec, origin) for spec in parsed.rules)
            entries = [(v.name, tuple(re.compile(p, re.IGNORECASE) for p in v.match)) for v in parsed.vendors]
            vendors = entries + vendors if user else vendors + entries
            levels.update(parsed.levels)
        return cls(rules, vendors, levels)

    def vendor(self, raw: str) -> str:
        """The canonical vendor name of a raw registry or device spelling."""
        known = self._vendor_cache.get(raw)
        if known is None:
            known = self._vendor_cache[raw] = self._canonical(raw)
        return known

    def _canonical(self, raw: str) -> str:
        text = " ".join(raw.split())
        for name, patterns in self.vendors:
            if any(p.search(text) for p in patterns):
                return name
        cleaned = _LEGAL_SUFFIX.sub("", text).strip(" ,.")
        return cleaned or text


def parse_file(origin: str, text: str) -> FingerprintFile:
    """Validate one YAML fingerprint file; a bad file fails with one clear line."""
    try:
        data: Any = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with rules/vendors/levels")
    try:
        return FingerprintFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{origin}: {where}: {first['msg']}") from exc
