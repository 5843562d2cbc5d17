"""Firmware and software versions as vendors write them: normalisation, ordering and ranges.

The matcher (``matching.py``) asks one question of this module: is the version a device reported
(``V2.9.4``, ``33.11``, ``4.3 Build 19011514``) inside the range a feed gives (NVD's
``versionEndExcluding: 2.9.7``, a CSAF ``vers:intdot/<2.9.7`` or ``All versions < V2.9.7``)? The
answer is ``True``, ``False`` or ``None`` when the versions cannot be compared; nothing here raises
on a malformed version.

Rules (docs/assess/matching.md has examples):

- prefixes are dropped: ``V``, ``v``, ``R``, ``Rev``, ``Firmware``, ``FW``, ``Version``;
- the release is the leading run of numeric components, compared as integers (``2.10.001`` is
  2, 10, 1 and above ``2.9.4``; Rockwell's ``33.011`` equals ``33.11``); trailing zero components do
  not count (``3.5`` == ``3.5.0``);
- what follows the release is a list of qualifiers: pre-releases (``dev`` < ``alpha`` < ``beta`` <
  ``rc``) sort before the release, service packs, patches, updates, hot fixes and unknown labels
  (OpenSSL's ``1.0.2k``, OpenSSH's ``p1``) after it;
- build metadata (``Build 19011514``, ``(build 1234)``, ``+meta``) never changes the order, as in
  SemVer 2.0 section 10: Moxa's ``4.3 Build 19011514`` is release 4.3;
- vendor quirks are data (``data/version_schemes.yaml``): Schneider Electric's ``V3.50`` is ``3.5``;
- a text without a numeric release (``SP1``, ``unknown``) cannot be compared: ``parse_version``
  returns None.

univers (the package-URL project's version library) supplies the ``vers`` range grammar and its
containment algorithm. Its own ``intdot`` and ``generic`` schemes compare the numeric labels as
text (``2.9.4 < 2.10.001`` is False in univers 32), so FieldWard's ordering is plugged into univers
as a ``Version`` subclass.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from univers.version_constraint import (
    InvalidConstraintsError,
    VersionConstraint,
    contains_version,
)
from univers.version_range import RANGE_CLASS_BY_SCHEMES
from univers.versions import Version as UniversVersion

from fieldward.assess.model import VersionRange

MAX_LENGTH = 200
"""Longer version texts are not versions (and would make integer parsing slow)."""

Qualifier = tuple[int, str, int]
"""(rank, label, number): rank < 0 sorts before the release, 0 is the release itself, > 0 after."""

_RELEASE_END: Qualifier = (0, "", 0)

_PRE_RELEASE = {
    "dev": -4,
    "snapshot": -4,
    "alpha": -3,
    "a": -3,
    "beta": -2,
    "b": -2,
    "rc": -1,
    "c": -1,
    "cr": -1,
    "pre": -1,
    "preview": -1,
}
_POST_RELEASE = {
    "sp": "sp",
    "servicepack": "sp",
    "p": "p",
    "pl": "p",
    "patch": "p",
    "update": "update",
    "upd": "update",
    "u": "update",
    "hotfix": "hf",
    "hf": "hf",
}
_CANONICAL_PRE = {"a": "alpha", "b": "beta", "c": "rc", "cr": "rc", "pre": "rc", "preview": "rc"}
_NEUTRAL = frozenset({"final", "ga", "release", "stable"})
"""Labels that name the release itself."""

_PREFIX = re.compile(r"^(?:firmware|fw|software|sw|version|ver|revision|rev|release|v|r)\s*[:._-]?\s*(?=\d)")
_PREFIX_WORD = re.compile(r"^(?:firmware|fw|software|sw|version|ver|revision|rev|release)\b[\s:]*")
_BUILD = re.compile(r"[\(\[]?\s*\bbuild\s*[:#.]?\s*([0-9a-z][\w.-]*)\s*[\)\]]?")
_SEMVER_BUILD = re.compile(r"\+([0-9a-z.-]+)$")
_RELEASE = re.compile(r"^(\d+(?:[._]\d+)*)")
_TOKEN = re.compile(r"[a-z]+|\d+")


@dataclass(frozen=True, slots=True)
class VersionScheme:
    """How one vendor writes versions (``data/version_schemes.yaml``).

    minor_digits: the second component is a decimal fraction of that many digits (``3.5`` == ``3.50``)
    """

    name: str = "default"
    minor_digits: int | None = None


DEFAULT_SCHEME = VersionScheme()


@dataclass(frozen=True, slots=True, eq=False)
class FirmwareVersion:
    """A parsed version. Equality and order follow ``key``; ``build`` is kept but never compared."""

    original: str
    release: tuple[int, ...]
    qualifiers: tuple[Qualifier, ...] = ()
    build: str | None = None
    clean: str = ""
    """The version without prefix and build metadata, lowercase: ``V2.9.4`` -> ``2.9.4``."""

    @property
    def key(self) -> tuple[tuple[int, ...], tuple[Qualifier, ...]]:
        return (self.release, (*self.qualifiers, _RELEASE_END))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: FirmwareVersion) -> bool:
        return self.key < other.key

    def __le__(self, other: FirmwareVersion) -> bool:
        return self.key <= other.key

    def __gt__(self, other: FirmwareVersion) -> bool:
        return self.key > other.key

    def __ge__(self, other: FirmwareVersion) -> bool:
        return self.key >= other.key

    def __str__(self) -> str:
        return self.original

    def __repr__(self) -> str:
        return f"FirmwareVersion({self.original!r})"


def parse_version(text: object, scheme: VersionScheme = DEFAULT_SCHEME) -> FirmwareVersion | None:
    """``text`` as a comparable version, or None when it holds no numeric release. Never raises."""
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        return None
    original = str(text).strip()
    if not original or len(original) > MAX_LENGTH:
        return None
    value = original.lower().replace("service pack", "sp")
    build: str | None = None
    if found := _BUILD.search(value):
        build = found.group(1)
        value = value[: found.start()] + " " + value[found.end() :]
    if found := _SEMVER_BUILD.search(value):
        build = build or found.group(1)
        value = value[: found.start()]
    value = value.strip(" \t()[]")
    for _ in range(4):  # "Firmware V1.2", "FW: Rev 3"
        stripped = _PREFIX.sub("", value, count=1)
        stripped = _PREFIX_WORD.sub("", stripped, count=1).strip()
        if stripped == value:
            break
        value = stripped
    found = _RELEASE.match(value)
    if found is None:
        return None
    components = re.split(r"[._]", found.group(1))
    release = _release(components, scheme)
    qualifiers = _qualifiers(value[found.end() :])
    return FirmwareVersion(original, release, qualifiers, build, value.strip())


def _release(components: Sequence[str], scheme: VersionScheme) -> tuple[int, ...]:
    numbers: list[int] = []
    for index, digits in enumerate(components):
        if index == 1 and scheme.minor_digits and len(digits.rstrip("0")) <= scheme.minor_digits:
            digits = digits.rstrip("0").ljust(scheme.minor_digits, "0")
        numbers.append(int(digits))
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def _qualifiers(rest: str) -> tuple[Qualifier, ...]:
    tokens = _TOKEN.findall(rest)
    qualifiers: list[Qualifier] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        number_follows = index + 1 < len(tokens) and tokens[index + 1].isdigit()
        number = int(tokens[index + 1]) if number_follows else 0
        if token.isdigit():
            qualifiers.append((1, "", int(token)))
            index += 1
            continue
        index += 2 if number_follows else 1
        if token in _NEUTRAL:
            continue
        if token in _PRE_RELEASE and (len(token) > 1 or number_follows):
            qualifiers.append((_PRE_RELEASE[token], _CANONICAL_PRE.get(token, token), number))
        elif token in _POST_RELEASE and (token != "u" or number_follows):  # noqa: S105
            qualifiers.append((1, _POST_RELEASE[token], number))
        else:  # OpenSSL's 1.0.2k, a vendor's own suffix: after the release, ordered by label
            qualifiers.append((1, token, number))
    return tuple(qualifiers)


def compare(left: object, right: object, scheme: VersionScheme = DEFAULT_SCHEME) -> int | None:
    """-1, 0 or 1 as ``left`` is below, equal to or above ``right``; None when either is no version."""
    a = left if isinstance(left, FirmwareVersion) else parse_version(left, scheme)
    b = right if isinstance(right, FirmwareVersion) else parse_version(right, scheme)
    if a is None or b is None:
        return None
    return (a > b) - (a < b)


# ---------------------------------------------------------------------- vendor schemes


@dataclass(frozen=True, slots=True)
class _SchemeRule:
    vendor: str
    products: re.Pattern[str] | None
    scheme: VersionScheme


@dataclass(frozen=True, slots=True)
class VersionSchemes:
    """The vendor schemes of ``data/version_schemes.yaml`` (plus a user's), looked up by CPE vendor."""

    rules: tuple[_SchemeRule, ...] = ()

    def scheme_for(self, vendor: str, product: str = "") -> VersionScheme:
        vendor = vendor.lower()
        product = re.sub(r"\s+", "_", product.strip().lower())
        for rule in self.rules:
            if rule.vendor == vendor and (rule.products is None or rule.products.search(product)):
                return rule.scheme
        return DEFAULT_SCHEME


def load_version_schemes(extra_paths: Iterable[Path] = ()) -> VersionSchemes:
    """The built-in schemes, after the rules of ``extra_paths`` (tried first)."""
    documents: list[Any] = [yaml.safe_load(Path(path).read_text()) for path in extra_paths]
    builtin = resources.files("fieldward.assess").joinpath("data/version_schemes.yaml").read_text()
    documents.append(yaml.safe_load(builtin))
    rules: list[_SchemeRule] = []
    for document in documents:
        entries = document.get("schemes", []) if isinstance(document, dict) else []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("vendor"):
                raise ValueError(f"version scheme entry needs a vendor: {entry!r}")
            products = entry.get("products")
            digits = entry.get("minor_digits")
            scheme = VersionScheme(
                name=f"{entry['vendor']}", minor_digits=int(digits) if digits is not None else None
            )
            pattern = re.compile(str(products), re.IGNORECASE) if products else None
            rules.append(_SchemeRule(str(entry["vendor"]).lower(), pattern, scheme))
    return VersionSchemes(tuple(rules))


@functools.cache
def builtin_schemes() -> VersionSchemes:
    return load_version_schemes()


# ---------------------------------------------------------------------- ranges


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """A range as a list of (comparator, version) constraints.

    every: all versions (``vers:all/*``, ``All versions``)
    union: the constraints follow the ``vers`` specification (intervals, ``|``-separated); False
    means all constraints must hold (NVD bounds, free text such as ``>=V1.0 <V3.0``)
    """

    constraints: tuple[tuple[str, str], ...] = ()
    every: bool = False
    union: bool = False
    text: str = ""

    def describe(self) -> str:
        if self.every:
            return "all versions"
        return ", ".join(f"{op} {version}" if op != "=" else version for op, version in self.constraints)


_FREE_ALL = re.compile(r"^(all(\s+versions?)?|\*|any|all\s+releases)$")
_AND_PRIOR = re.compile(
    r"^(?P<v>.+?)\s*(and|&|or)\s*(prior|earlier|older|below|before|lower)(\s+versions?)?$"
)
_AND_LATER = re.compile(r"^(?P<v>.+?)\s*(and|&|or)\s*(later|newer|above|higher)(\s+versions?)?$")
_WORDS = (
    (re.compile(r"\b(up\s+to\s+and\s+including|up\s+to|through|until)\b"), "<="),
    (re.compile(r"\b(prior\s+to|before|earlier\s+than|older\s+than|lower\s+than|below|less\s+than)\b"), "<"),
    (re.compile(r"\b(from|since|starting\s+(with|from)|at\s+least)\b"), ">="),
    (re.compile(r"\b(after|later\s+than|newer\s+than|greater\s+than|above|higher\s+than)\b"), ">"),
)
_CONSTRAINT = re.compile(
    r"(<=|>=|<|>|=|!=)?\s*([vVrR]?\s*\d[\w.()+-]*(?:\s+(?:sp|build|update|patch)\s*\d+)?)"
)
_TO = re.compile(r"^(?P<a>[vVrR]?\d[\w.]*)\s*(?:-|to|through|–)\s*(?P<b>[vVrR]?\d[\w.]*)$")


def parse_range(text: object) -> VersionSpec | None:
    """A CSAF ``product_version_range`` (a ``vers`` string or free text), or None when unreadable.

    ``vers:intdot/<2.9.2``, ``vers:all/*``, ``<V2.9.2``, ``<=4.2``, ``>=V1.0 <V3.0``,
    ``All versions < V2.9.7``, ``V4.0 and prior``, ``versions prior to V2.9.7``, ``V2.0 - V2.9``.
    """
    if not isinstance(text, str):
        return None
    original = text.strip()
    if not original or len(original) > MAX_LENGTH:
        return None
    if original.lower().startswith("vers:"):
        return _parse_vers(original)
    value = " ".join(original.lower().split())
    value = re.sub(r"^(all\s+)?(firmware\s+|software\s+)?(versions?|releases?)\b\s*", "", value)
    value = re.sub(r"\bversions?\b", "", value).strip(" :,")
    if original.lower().startswith("all") and not value:
        return VersionSpec(every=True, text=original)
    if _FREE_ALL.match(value):
        return VersionSpec(every=True, text=original)
    if found := _AND_PRIOR.match(value):
        return _spec([("<=", found.group("v"))], original)
    if found := _AND_LATER.match(value):
        return _spec([(">=", found.group("v"))], original)
    if found := _TO.match(value):
        return _spec([(">=", found.group("a")), ("<=", found.group("b"))], original)
    for pattern, operator in _WORDS:
        value = pattern.sub(f" {operator} ", value)
    value = re.sub(r"\b(and|&)\b|,", " ", value)
    value = re.sub(r"([<>]=?|=)\s+", r"\1", value)
    constraints: list[tuple[str, str]] = []
    for found in _CONSTRAINT.finditer(value):
        constraints.append((found.group(1) or "=", found.group(2).strip()))
    leftover = _CONSTRAINT.sub("", value).strip(" ")
    if not constraints or re.search(r"[a-z0-9]", leftover):
        return None
    return _spec(constraints, original)


def _spec(constraints: Sequence[tuple[str, str]], text: str, union: bool = False) -> VersionSpec | None:
    if any(parse_version(version) is None for _, version in constraints):
        return None
    return VersionSpec(tuple(constraints), union=union, text=text)


def _parse_vers(text: str) -> VersionSpec | None:
    """``vers:<scheme>/<constraint>|<constraint>...`` (the univers/purl ``vers`` grammar)."""
    _, _, rest = text.partition(":")
    scheme, _, body = rest.partition("/")
    body = "".join(body.split())
    if scheme.lower() not in RANGE_CLASS_BY_SCHEMES or not body:
        return None
    if body == "*":
        return VersionSpec(every=True, text=text)
    constraints: list[tuple[str, str]] = []
    for part in body.strip("|").split("|"):
        try:
            operator, version = VersionConstraint.split(part)  # type: ignore[no-untyped-call]
        except ValueError:
            return None
        if operator == "*" or not version:
            return None
        constraints.append((operator, version))
    return _spec(constraints, text, union=True)


def nvd_spec(bounds: VersionRange) -> VersionSpec:
    """NVD's version bounds as constraints that must all hold."""
    constraints = []
    if bounds.start_including:
        constraints.append((">=", bounds.start_including))
    if bounds.start_excluding:
        constraints.append((">", bounds.start_excluding))
    if bounds.end_including:
        constraints.append(("<=", bounds.end_including))
    if bounds.end_excluding:
        constraints.append(("<", bounds.end_excluding))
    return VersionSpec(tuple(constraints), text=bounds.describe())


_OPERATORS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def in_range(
    version: object,
    bounds: VersionRange | VersionSpec | str | None,
    scheme: VersionScheme = DEFAULT_SCHEME,
) -> bool | None:
    """Whether ``version`` lies in ``bounds``; None when it cannot be told.

    bounds: NVD bounds (a ``VersionRange``; unbounded means any version), a parsed ``VersionSpec``,
    an exact version string, or ``*``/``-``/None (any version: CPE's ANY and NA do not constrain it)
    """
    if bounds is None or (isinstance(bounds, str) and bounds.strip() in ("*", "-", "")):
        return True
    if isinstance(bounds, VersionRange):
        if not bounds.bounded:
            return True
        bounds = nvd_spec(bounds)
    parsed = version if isinstance(version, FirmwareVersion) else parse_version(version, scheme)
    if parsed is None:
        return None
    if isinstance(bounds, str):
        exact = parse_version(bounds, scheme)
        return None if exact is None else parsed == exact
    if bounds.every:
        return True
    pairs: list[tuple[str, FirmwareVersion]] = []
    for operator, text in bounds.constraints:
        limit = parse_version(text, scheme)
        if limit is None or operator not in _OPERATORS:
            return None
        pairs.append((operator, limit))
    if not pairs:
        return None
    if bounds.union:
        return _vers_contains(parsed, pairs, scheme)
    return all(_OPERATORS[operator](parsed, limit) for operator, limit in pairs)


def _vers_contains(
    version: FirmwareVersion, pairs: Sequence[tuple[str, FirmwareVersion]], scheme: VersionScheme
) -> bool | None:
    """The ``vers`` containment algorithm of univers, over FieldWard's ordering."""
    cls = _univers_class(scheme)
    try:
        constraints = sorted(
            VersionConstraint(comparator=operator, version=cls(limit.original)) for operator, limit in pairs
        )
        return bool(contains_version(cls(version.original), constraints))  # type: ignore[no-untyped-call]
    except (InvalidConstraintsError, ValueError, TypeError):
        return None


@functools.cache
def _univers_class(scheme: VersionScheme) -> type[UniversVersion]:
    """A univers ``Version`` subclass whose value is a ``FirmwareVersion`` parsed with ``scheme``."""

    def is_valid(cls: type[UniversVersion], string: str) -> bool:
        return parse_version(string, scheme) is not None

    def normalize(cls: type[UniversVersion], string: str) -> str:
        return string

    def build_value(cls: type[UniversVersion], string: str) -> FirmwareVersion | None:
        return parse_version(string, scheme)

    namespace: dict[str, Any] = {
        "is_valid": classmethod(is_valid),
        "normalize": classmethod(normalize),
        "build_value": classmethod(build_value),
    }
    return type(f"FieldWardVersion_{scheme.name}", (UniversVersion,), namespace)


def describe_relation(version: str, bounds: VersionRange | VersionSpec) -> str:
    """``is below 2.9.7``, ``is within >= 2.0, < 2.9.7``: how a version sits in a range it is in."""
    spec = nvd_spec(bounds) if isinstance(bounds, VersionRange) else bounds
    if spec.every:
        return "is covered (all versions)"
    if len(spec.constraints) == 1:
        operator, limit = spec.constraints[0]
        words = {
            "<": "is below",
            "<=": "is at or below",
            ">": "is above",
            ">=": "is at or above",
            "=": "is",
            "!=": "is not",
        }
        return f"{words.get(operator, operator)} {limit}"
    return f"is within {spec.describe()}"
