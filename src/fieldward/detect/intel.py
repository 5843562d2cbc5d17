"""Offline threat intelligence: indicators read from STIX 2.1 bundles and CSV files, and their lookup.

A sensor in an OT network usually has no internet access, so indicators are imported from files
(``fieldward analyze --intel FILE``, repeatable) and matched locally. Two formats are read:

- **STIX 2.1 JSON**: a bundle (or a single object, or a list of objects) whose ``indicator`` objects
  carry STIX patterns. Patterns are parsed with the OASIS ``stix2-patterns`` grammar (a strict regular
  expression recognises the common one-comparison form first: the ANTLR parser costs about 0.2 ms a
  pattern, seconds for a feed of tens of thousands). A pattern is usable when it is a
  disjunction: comparisons and observations joined by ``OR`` only, without qualifiers; every
  ``=``/``IN`` (and ``ISSUBSET`` for addresses) comparison on a supported object path becomes one
  indicator. Patterns with ``AND``, ``FOLLOWEDBY`` or qualifiers, and non-STIX pattern types (Snort,
  YARA, Sigma), cannot be judged from single observations without over-matching: they are skipped
  and counted in :attr:`IntelSet.skipped`, not an error.
- **CSV**: ``type,value[,description]`` per line; blank lines and ``#`` comments are ignored, a first
  row starting with ``type`` is a header. Types are FieldWard's short names or the MISP attribute
  types that mean the same thing (``ip-dst``, ``hostname``, ``ja3-fingerprint-md5``, ...).

A file that cannot be read, is not valid JSON or CSV, or holds a malformed value (an address that is
not one, a hash of the wrong length, a pattern that does not parse) raises :class:`IntelError` with
the file and the line (CSV) or the object (STIX): a bad feed must fail loudly at load, not silently
match nothing.

JA3 has no STIX object type; FieldWard's convention is the custom observable ``x-ja3`` with a
``value`` property (``[x-ja3:value = 'e7d705a3286e19ea42f587b344ee6865']``), and ``x-ja3s`` for the
server fingerprint.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from fieldward.errors import FieldWardError

logger = logging.getLogger(__name__)


class IntelError(FieldWardError):
    """A threat-intelligence file that cannot be used (the message names the file and line or object)."""


class Kind(StrEnum):
    """What an indicator's value is, and so which observed field it is compared with."""

    IP = "ip"
    CIDR = "cidr"
    DOMAIN = "domain"
    URL = "url"
    JA3 = "ja3"
    JA3S = "ja3s"
    X509_SHA1 = "x509_sha1"
    X509_SHA256 = "x509_sha256"
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"


FILE_HASHES = frozenset({Kind.MD5, Kind.SHA1, Kind.SHA256})
"""File hashes match the MD5, SHA-1 and SHA-256 of HTTP message bodies (downloads and uploads); FTP
data connections are not hashed yet."""

CSV_TYPES: dict[str, Kind] = {
    "ip": Kind.IP,
    "ipv4": Kind.IP,
    "ipv6": Kind.IP,
    "ip-src": Kind.IP,
    "ip-dst": Kind.IP,
    "cidr": Kind.CIDR,
    "domain": Kind.DOMAIN,
    "hostname": Kind.DOMAIN,
    "url": Kind.URL,
    "ja3": Kind.JA3,
    "ja3-fingerprint-md5": Kind.JA3,
    "ja3s": Kind.JA3S,
    "x509_sha1": Kind.X509_SHA1,
    "x509-fingerprint-sha1": Kind.X509_SHA1,
    "x509_sha256": Kind.X509_SHA256,
    "x509-fingerprint-sha256": Kind.X509_SHA256,
    "md5": Kind.MD5,
    "sha1": Kind.SHA1,
    "sha256": Kind.SHA256,
}
"""CSV ``type`` column (case-insensitive): FieldWard names and MISP attribute types."""

HEX_LENGTHS: dict[Kind, int] = {
    Kind.JA3: 32,
    Kind.JA3S: 32,
    Kind.MD5: 32,
    Kind.SHA1: 40,
    Kind.X509_SHA1: 40,
    Kind.SHA256: 64,
    Kind.X509_SHA256: 64,
}
HEX = re.compile(r"[0-9a-f]+")
LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
MAX_DOMAIN = 253
MAX_FIELD = 8192
"""Longest value or description accepted (csv's own field limit is 128 KiB)."""


@dataclass(frozen=True, slots=True)
class Indicator:
    """One indicator of compromise: a normalised value of a kind, and where it came from."""

    kind: Kind
    value: str
    source: str
    """``file.csv:12`` or ``bundle.json indicator--<uuid>``: where to look it up."""
    name: str | None = None
    """The indicator's name or description (STIX ``name``/``description``, CSV third column)."""
    valid_until_ns: int | None = None
    """STIX ``valid_until``: traffic after it no longer matches (``valid_from`` is not applied, so a
    feed can be checked against older captures)."""

    def live_at(self, ts_ns: int) -> bool:
        return self.valid_until_ns is None or ts_ns <= self.valid_until_ns

    def details(self) -> dict[str, Any]:
        """What an alert shows about the indicator."""
        out: dict[str, Any] = {"indicator": self.value, "indicator_type": self.kind.value}
        out["intel_source"] = self.source
        if self.name:
            out["intel_name"] = self.name
        return out


@dataclass
class IntelSet:
    """Every loaded indicator, indexed for the lookups the threats engine makes per event."""

    ips: dict[str, Indicator] = field(default_factory=dict)
    networks: dict[tuple[int, int], dict[int, Indicator]] = field(default_factory=dict)
    """(IP version, prefix length) -> network address as an int -> indicator: a lookup masks the
    address once per prefix length in use (at most 33 or 129), whatever the number of networks."""
    _prefixes: list[tuple[int, int]] = field(default_factory=list)
    """Keys of :attr:`networks`, longest prefix first."""
    domains: dict[str, Indicator] = field(default_factory=dict)
    urls: dict[str, Indicator] = field(default_factory=dict)
    hashes: dict[Kind, dict[str, Indicator]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    """STIX objects not turned into indicators, by reason (unsupported pattern, revoked, ...)."""
    files: list[str] = field(default_factory=list)

    # building ----------------------------------------------------------------------------------------
    def add(self, indicator: Indicator) -> None:
        kind = indicator.kind
        if kind is Kind.IP:
            _keep(self.ips, indicator.value, indicator)
        elif kind is Kind.CIDR:
            net = ipaddress.ip_network(indicator.value)
            key = (net.version, net.prefixlen)
            if key not in self.networks:
                self.networks[key] = {}
                self._prefixes = sorted(self.networks, key=lambda k: -k[1])
            _keep(self.networks[key], int(net.network_address), indicator)
        elif kind is Kind.DOMAIN:
            _keep(self.domains, indicator.value, indicator)
        elif kind is Kind.URL:
            _keep(self.urls, indicator.value, indicator)
        else:
            _keep(self.hashes.setdefault(kind, {}), indicator.value, indicator)

    def __len__(self) -> int:
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        """Indicators per kind (for the run summary and the docs' examples)."""
        out: Counter[str] = Counter()
        out[Kind.IP.value] = len(self.ips)
        out[Kind.CIDR.value] = sum(len(t) for t in self.networks.values())
        out[Kind.DOMAIN.value] = len(self.domains)
        out[Kind.URL.value] = len(self.urls)
        for kind, table in self.hashes.items():
            out[kind.value] += len(table)
        return {k: v for k, v in sorted(out.items()) if v}

    @property
    def has_addresses(self) -> bool:
        return bool(self.ips or self.networks)

    # lookups -----------------------------------------------------------------------------------------
    def match_ip(self, address: str, ts_ns: int) -> Indicator | None:
        """The indicator for an address (exact, else the longest matching network), if any."""
        if not self.has_addresses:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        found = self.ips.get(ip.compressed)
        if found is not None and found.live_at(ts_ns):
            return found
        if self.networks:
            value = int(ip)
            bits = ip.max_prefixlen
            for version, prefix in self._prefixes:
                if version != ip.version:
                    continue
                found = self.networks[(version, prefix)].get(value >> (bits - prefix) << (bits - prefix))
                if found is not None and found.live_at(ts_ns):
                    return found
        return None

    def match_domain(self, name: str | None, ts_ns: int) -> Indicator | None:
        """The indicator for a host name or one of its parent domains (``evil.example`` matches
        ``cdn.evil.example``)."""
        if not name or not self.domains:
            return None
        candidate = name.strip().rstrip(".").lower()
        while candidate:
            found = self.domains.get(candidate)
            if found is not None and found.live_at(ts_ns):
                return found
            _, _, candidate = candidate.partition(".")
        return None

    def match_url(self, url: str, ts_ns: int) -> Indicator | None:
        if not self.urls:
            return None
        try:
            key = normalise_url(url)
        except ValueError:
            return None
        found = self.urls.get(key)
        return found if found is not None and found.live_at(ts_ns) else None

    def match_hash(self, kind: Kind, value: str | None, ts_ns: int) -> Indicator | None:
        table = self.hashes.get(kind)
        if not table or not value:
            return None
        found = table.get(value.lower())
        return found if found is not None and found.live_at(ts_ns) else None


def _keep(table: dict[Any, Indicator], key: Any, indicator: Indicator) -> None:
    """Of two indicators with one value, keep the one valid longest (no end date wins)."""
    old = table.get(key)
    if old is None or (
        old.valid_until_ns is not None
        and (indicator.valid_until_ns is None or indicator.valid_until_ns > old.valid_until_ns)
    ):
        table[key] = indicator


# ------------------------------------------------------------------------------------------ values


def normalise(kind: Kind, raw: str) -> tuple[Kind, str]:
    """The canonical form of a value (an address ``1.2.3.4/32`` becomes an IP, hashes lower case);
    ValueError with a short reason when it is not a valid value of ``kind``."""
    text = raw.strip()
    if not text:
        raise ValueError("empty value")
    if len(text) > MAX_FIELD:
        raise ValueError("value too long")
    if kind in (Kind.IP, Kind.CIDR):
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.prefixlen == net.max_prefixlen:
                return Kind.IP, net.network_address.compressed
            return Kind.CIDR, net.compressed
        if kind is Kind.CIDR:
            raise ValueError(f"not a network (address/prefix): {text!r}")
        return Kind.IP, ipaddress.ip_address(text).compressed
    if kind is Kind.DOMAIN:
        return kind, normalise_domain(text)
    if kind is Kind.URL:
        return kind, normalise_url(text)
    length = HEX_LENGTHS[kind]
    value = text.lower().replace(":", "") if kind in (Kind.X509_SHA1, Kind.X509_SHA256) else text.lower()
    if len(value) != length or not HEX.fullmatch(value):
        raise ValueError(f"a {kind.value} is {length} hex digits, not {text!r}")
    return kind, value


def normalise_domain(text: str) -> str:
    name = text.strip().rstrip(".").lower()
    if name.startswith("*."):
        name = name[2:]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"not a valid domain name: {text!r}") from exc
    if not name or len(name) > MAX_DOMAIN or not all(LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"not a valid domain name: {text!r}")
    return name


def normalise_url(text: str) -> str:
    """Scheme and host in lower case, default port and fragment dropped, empty path as ``/``: the
    form both indicator and observed URL are compared in."""
    url = text.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isalpha():
        raise ValueError(f"not a URL (scheme://host/path): {text!r}")
    scheme = scheme.lower()
    rest = rest.split("#", 1)[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host, path = rest[:cut].lower(), rest[cut:]
    if "@" in host:
        host = host.rsplit("@", 1)[1]  # user info is not part of what is compared
    default = {"http": ":80", "https": ":443", "ftp": ":21"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"not a URL (no host): {text!r}")
    if not path.startswith("/"):
        path = "/" + path
    return f"{scheme}://{host}{path}"


# ------------------------------------------------------------------------------------------ CSV


def read_csv(text: str, source: str) -> Iterator[Indicator]:
    """Indicators of a CSV file's text; IntelError names ``source`` and the line of a bad row."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    first = True
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise IntelError(f"{source}:{reader.line_num}: not valid CSV ({exc})") from exc
        line = reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if first and cells[0].lower() == "type":
            first = False
            continue
        first = False
        if len(cells) < 2:
            raise IntelError(f"{source}:{line}: expected type,value[,description], got {row!r:.80}")
        kind = CSV_TYPES.get(cells[0].lower())
        if kind is None:
            known = ", ".join(sorted(CSV_TYPES))
            raise IntelError(f"{source}:{line}: unknown indicator type {cells[0]!r:.40} (known: {known})")
        try:
            kind, value = normalise(kind, cells[1])
        except ValueError as exc:
            raise IntelError(f"{source}:{line}: {exc}") from exc
        description = ",".join(cells[2:]).strip()[:MAX_FIELD] or None
        yield Indicator(kind, value, f"{source}:{line}", description)


# ------------------------------------------------------------------------------------------ STIX

STIX_PATHS: dict[tuple[str, tuple[str, ...]], Kind] = {
    ("ipv4-addr", ("value",)): Kind.IP,
    ("ipv6-addr", ("value",)): Kind.IP,
    ("network-traffic", ("dst_ref", "value")): Kind.IP,
    ("network-traffic", ("src_ref", "value")): Kind.IP,
    ("domain-name", ("value",)): Kind.DOMAIN,
    ("url", ("value",)): Kind.URL,
    ("x-ja3", ("value",)): Kind.JA3,
    ("x-ja3s", ("value",)): Kind.JA3S,
}
"""Object paths compared with observed values (``hashes`` paths are handled by :data:`HASH_NAMES`)."""
HASH_NAMES: dict[str, str] = {
    "md5": "md5",
    "sha-1": "sha1",
    "sha1": "sha1",
    "sha-256": "sha256",
    "sha256": "sha256",
}
HASH_OBJECTS: dict[str, dict[str, Kind]] = {
    "file": {"md5": Kind.MD5, "sha1": Kind.SHA1, "sha256": Kind.SHA256},
    "artifact": {"md5": Kind.MD5, "sha1": Kind.SHA1, "sha256": Kind.SHA256},
    "x509-certificate": {"sha1": Kind.X509_SHA1, "sha256": Kind.X509_SHA256},
}
_STRING = r"'((?:[^'\\]|\\['\\])*)'"
"""A STIX string literal: the grammar allows only the escapes ``\\'`` and ``\\\\``."""
SIMPLE_PATTERN = re.compile(
    r"\[[ \t\r\n]*([a-z][a-z0-9-]*):((?:[a-z_][a-z0-9_]*)(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|'[A-Za-z0-9_-]+'))*)"
    r"[ \t\r\n]*=[ \t\r\n]*" + _STRING + r"[ \t\r\n]*\]"
)
"""The one-comparison pattern most feeds use, ``[type:path = 'value']``: read without the ANTLR parser
(``tests/detect/test_intel.py`` checks both readings agree)."""


@dataclass(frozen=True, slots=True)
class Comparison:
    object_type: str
    path: tuple[str, ...]
    operator: str
    values: tuple[str, ...]


@dataclass
class PatternShape:
    """What a STIX pattern holds: its comparisons and whether anything but OR joins them."""

    comparisons: list[Comparison] = field(default_factory=list)
    conjunctive: set[str] = field(default_factory=set)
    """``AND``, ``FOLLOWEDBY`` and qualifiers found: such a pattern is not a plain disjunction."""


def unescape(literal: str) -> str:
    """Text of a STIX string literal without its quotes (``\\'`` and ``\\\\`` unescaped)."""
    body = literal[1:-1] if len(literal) >= 2 and literal[0] == literal[-1] == "'" else literal
    return re.sub(r"\\(.)", r"\1", body)


def parse_pattern(pattern: str) -> PatternShape:
    """Comparisons of a STIX 2.1 pattern; ValueError with the parser's message when it does not parse."""
    simple = SIMPLE_PATTERN.fullmatch(pattern.strip())
    if simple is not None:
        object_type, path, value = simple.groups()
        steps = tuple(unescape(step) for step in _split_path(path))
        return PatternShape([Comparison(object_type, steps, "=", (unescape(f"'{value}'"),))])
    return _parse_with_grammar(pattern)


def _split_path(path: str) -> list[str]:
    return re.findall(r"'[^']*'|[^.]+", path)


def _parse_with_grammar(pattern: str) -> PatternShape:
    from stix2patterns.exceptions import ParseException  # type: ignore[import-untyped]
    from stix2patterns.v21.pattern import Pattern  # type: ignore[import-untyped]

    try:
        listener = _shape_listener()
        Pattern(pattern).walk(listener)
    except ParseException as exc:
        raise ValueError(f"STIX pattern does not parse: {exc}") from exc
    except Exception as exc:  # the generated parser's own failures (deep nesting, ...)
        raise ValueError(f"STIX pattern does not parse: {type(exc).__name__}") from exc
    shape: PatternShape = listener.shape
    return shape


def _shape_listener() -> Any:
    """A listener over the OASIS grammar's parse tree that fills a :class:`PatternShape` (built lazily so
    the ANTLR runtime loads only for patterns the simple form does not cover)."""
    from stix2patterns.v21.grammars.STIXPatternListener import (  # type: ignore[import-untyped]
        STIXPatternListener,
    )

    class ShapeListener(STIXPatternListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.shape = PatternShape()
            self.object_type = ""
            self.path: list[str] = []

        def exitObservationExpressions(self, ctx: Any) -> None:  # noqa: N802 - ANTLR's names
            if ctx.FOLLOWEDBY():
                self.shape.conjunctive.add("FOLLOWEDBY")

        def exitObservationExpressionAnd(self, ctx: Any) -> None:  # noqa: N802
            if ctx.AND():
                self.shape.conjunctive.add("AND")

        def exitComparisonExpressionAnd(self, ctx: Any) -> None:  # noqa: N802
            if ctx.AND():
                self.shape.conjunctive.add("AND")

        def exitObservationExpressionRepeated(self, ctx: Any) -> None:  # noqa: N802
            self.shape.conjunctive.add("REPEATS")

        def exitObservationExpressionWithin(self, ctx: Any) -> None:  # noqa: N802
            self.shape.conjunctive.add("WITHIN")

        def exitObservationExpressionStartStop(self, ctx: Any) -> None:  # noqa: N802
            self.shape.conjunctive.add("START/STOP")

        def exitObjectType(self, ctx: Any) -> None:  # noqa: N802
            self.object_type = ctx.getText()

        def exitFirstPathComponent(self, ctx: Any) -> None:  # noqa: N802
            literal = ctx.StringLiteral()
            self.path = [unescape(literal.getText()) if literal else ctx.getText()]

        def exitKeyPathStep(self, ctx: Any) -> None:  # noqa: N802
            literal = ctx.StringLiteral()
            self.path.append(unescape(literal.getText()) if literal else ctx.getText().lstrip("."))

        def exitIndexPathStep(self, ctx: Any) -> None:  # noqa: N802
            self.path.append("*")

        def _add(self, ctx: Any, operator: str, values: Iterable[str]) -> None:
            op = ("NOT " if ctx.NOT() else "") + operator
            self.shape.comparisons.append(Comparison(self.object_type, tuple(self.path), op, tuple(values)))

        def exitPropTestEqual(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "=" if ctx.EQ() else "!=", [_literal(ctx.primitiveLiteral())])

        def exitPropTestSet(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "IN", [_literal(p) for p in ctx.setLiteral().primitiveLiteral()])

        def exitPropTestIsSubset(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "ISSUBSET", [unescape(ctx.StringLiteral().getText())])

        def exitPropTestOrder(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "ORDER", [])

        def exitPropTestLike(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "LIKE", [])

        def exitPropTestRegex(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "MATCHES", [])

        def exitPropTestIsSuperset(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "ISSUPERSET", [])

        def exitPropTestExists(self, ctx: Any) -> None:  # noqa: N802
            self._add(ctx, "EXISTS", [])

    return ShapeListener()


def _literal(ctx: Any) -> str:
    text: str = ctx.getText()
    return unescape(text) if text.startswith("'") else text


def comparison_kind(comparison: Comparison) -> Kind | None:
    """Which indicator kind a comparison's object path holds; None for paths FieldWard cannot observe."""
    path = comparison.path
    kind = STIX_PATHS.get((comparison.object_type, path))
    if kind is not None:
        return kind
    hashes = HASH_OBJECTS.get(comparison.object_type)
    if hashes is not None and len(path) == 2 and path[0] == "hashes":
        algorithm = HASH_NAMES.get(path[1].lower())
        return hashes.get(algorithm) if algorithm is not None else None
    return None


def pattern_indicators(pattern: str) -> tuple[list[tuple[Kind, str]], str | None]:
    """(kind, normalised value) pairs a pattern matches on its own, or the reason it is skipped.

    ValueError for a pattern that does not parse or a malformed value in a supported comparison."""
    shape = parse_pattern(pattern)
    if shape.conjunctive:
        return [], "pattern uses " + "/".join(sorted(shape.conjunctive))
    found: list[tuple[Kind, str]] = []
    for comparison in shape.comparisons:
        kind = comparison_kind(comparison)
        if kind is None:
            continue
        if comparison.operator == "ISSUBSET" and kind is Kind.IP:
            kind = Kind.CIDR
        elif comparison.operator not in ("=", "IN"):
            continue
        for value in comparison.values:
            if kind is Kind.IP and comparison.object_type == "network-traffic":
                try:
                    found.append(normalise(kind, value))
                except ValueError:
                    found.append(normalise(Kind.DOMAIN, value))  # a ref may be a domain-name
                continue
            found.append(normalise(kind, value))
    if not found:
        return [], "no comparison FieldWard can observe"
    return found, None


def read_stix(text: str, source: str, skipped: Counter[str]) -> Iterator[Indicator]:
    """Indicators of a STIX 2.1 JSON document; IntelError names ``source`` and the bad object."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntelError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except (ValueError, RecursionError) as exc:  # over-long integers, nesting deeper than the stack
        raise IntelError(f"{source}: not usable JSON ({type(exc).__name__})") from exc
    if isinstance(document, dict) and document.get("type") == "bundle":
        objects = document.get("objects", [])
        if not isinstance(objects, list):
            raise IntelError(f"{source}: the bundle's 'objects' is not a list")
    elif isinstance(document, dict):
        objects = [document]
    elif isinstance(document, list):
        objects = document
    else:
        raise IntelError(f"{source}: not a STIX bundle, object or list of objects")
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise IntelError(f"{source}: object {index} is not a STIX object (no 'type')")
        if obj["type"] != "indicator":
            continue
        stix_id = str(obj.get("id", f"object {index}"))[:80]
        yield from _indicator(obj, f"{source}: object {index} ({stix_id})", f"{source} {stix_id}", skipped)


def _indicator(obj: dict[str, Any], where: str, source: str, skipped: Counter[str]) -> Iterator[Indicator]:
    pattern = obj.get("pattern")
    if not isinstance(pattern, str):
        raise IntelError(f"{where}: an indicator needs a 'pattern' string")
    pattern_type = obj.get("pattern_type", "stix")
    if not isinstance(pattern_type, str):
        raise IntelError(f"{where}: 'pattern_type' is not a string")
    if pattern_type.lower() != "stix":
        skipped[f"pattern_type {pattern_type[:40]}"] += 1
        return
    if obj.get("revoked") is True:
        skipped["revoked"] += 1
        return
    valid_until = _timestamp(obj.get("valid_until"), where)
    name = obj.get("name") or obj.get("description")
    label = str(name)[:MAX_FIELD] if isinstance(name, str) and name else None
    try:
        pairs, reason = pattern_indicators(pattern)
    except ValueError as exc:
        raise IntelError(f"{where}: {exc}") from exc
    if reason is not None:
        skipped[reason] += 1
        return
    for kind, value in pairs:
        yield Indicator(kind, value, source, label, valid_until)


def _timestamp(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise IntelError(f"{where}: valid_until is not a timestamp")
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise IntelError(f"{where}: valid_until {value[:40]!r} is not an RFC 3339 timestamp") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - EPOCH) // dt.timedelta(microseconds=1) * 1000


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ------------------------------------------------------------------------------------------ loading

_CACHE: dict[tuple[str, int, int], tuple[tuple[Indicator, ...], Counter[str]]] = {}
"""Parsed files by (path, mtime, size): a ``--learn`` pass and the judged pass share one parse."""
_CACHE_FILES = 32


def read_file(path: Path) -> tuple[tuple[Indicator, ...], Counter[str]]:
    """Indicators of one file (STIX when it is ``.json``/``.stix`` or starts with ``{``/``[``, else CSV)."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise IntelError(f"no threat-intelligence file at {path}") from exc
    except UnicodeDecodeError as exc:
        raise IntelError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise IntelError(f"cannot read threat-intelligence file {path}: {exc.strerror or exc}") from exc
    skipped: Counter[str] = Counter()
    suffix = path.suffix.lower()
    stix = suffix in (".json", ".stix", ".stix2") or (
        suffix not in (".csv", ".txt") and text.lstrip()[:1] in ("{", "[")
    )
    source = path.name
    indicators = tuple(read_stix(text, source, skipped) if stix else read_csv(text, source))
    logger.info("threat intel %s: %d indicators", source, len(indicators))
    if skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
        logger.warning("threat intel %s: %d STIX indicators skipped (%s)", source, skipped.total(), reasons)
    if len(_CACHE) >= _CACHE_FILES:
        _CACHE.clear()
    _CACHE[key] = (indicators, skipped)
    return indicators, skipped


def load_intel(paths: Sequence[Path | str]) -> IntelSet:
    """Every indicator of ``paths`` in one :class:`IntelSet`; IntelError on the first bad file."""
    intel = IntelSet()
    for raw in paths:
        path = Path(raw)
        indicators, skipped = read_file(path)
        for indicator in indicators:
            intel.add(indicator)
        intel.skipped.update(skipped)
        intel.files.append(path.name)
    return intel
