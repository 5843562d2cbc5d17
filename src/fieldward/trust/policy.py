"""Least-privileged access: YAML policies compiled into a fast decision engine.

A policy is data (docs/trust/policy.md): rules that name *who* (device ids, groups, device types,
models; glob patterns), *what* (MQTT publish/subscribe topic filters with ``+``/``#`` and
placeholders such as ``{device_id}``; network destinations ``host:port``) and *conditions*
(attested within N hours, verdict, firmware minimum per model, no open alert at or above a severity,
not quarantined), with an effect, allow or deny. The decision is default deny, an applicable deny
always wins, and every decision names its rule and reasons.

Conditions are what a well-behaved device satisfies, so they read the same way on both effects:
an allow rule grants only while its conditions hold, a deny rule applies *unless* its conditions hold
(a deny rule without conditions always applies).

MQTT semantics follow MQTT 3.1.1/5.0 section 4.7: ``+`` matches one level (possibly empty), ``#``
the parent and every level below, filters starting with a wildcard never match topics starting with
``$``. A publish is allowed when its topic name matches an allowed filter; a subscription when every
topic its filter can match is matched by one allowed filter; a deny rule refuses a subscription
whose filter merely overlaps its own. A placeholder value holding ``+``, ``#``, ``/``, NUL or a
leading ``$`` cannot widen a grant: an allow rule whose template it would fill does not apply, a deny
rule applies to the whole action.

:class:`PolicyEngine` indexes the rules by action and by the most selective literal *who* field, and
caches per device identity the rules that concern it with their placeholders filled and their topic
filters split, so a decision is a few dictionary lookups and level comparisons.
:class:`NaiveEvaluator` is the straightforward reading of the same rules (regular expressions built
per decision), kept as the benchmark's baseline and the tests' second opinion.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fieldward.assess.versions import FirmwareVersion, parse_version
from fieldward.trust.context import SEVERITIES, VERDICTS, DeviceContext, severity_rank
from fieldward.trust.errors import TrustError

__all__ = [
    "ACTIONS",
    "Decision",
    "NaiveEvaluator",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "Rule",
    "explain",
    "filter_covers",
    "filter_matches",
    "filters_overlap",
    "load_policy",
    "mqtt_acl",
    "parse_policy",
    "policy_test",
]

Action = Literal["publish", "subscribe", "connect"]
ACTIONS: tuple[Action, ...] = ("publish", "subscribe", "connect")
PLACEHOLDERS = ("device_id", "group", "device_type", "model")
MAX_TOPIC_BYTES = 65535
"""MQTT 1.5.4: a UTF-8 string, so a topic is at most 65,535 bytes."""

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_GLOB_CHARS = frozenset("*?[")


class PolicyError(TrustError):
    """A policy document is invalid; the message names the file, the rule and the field."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request: allowed or not, the deciding rule (None: default deny), why."""

    allowed: bool
    rule: str | None
    reasons: tuple[str, ...]


# ---------------------------------------------------------------------- MQTT topic semantics


def topic_filter_error(text: str) -> str | None:
    """Why ``text`` is not a valid MQTT topic filter (MQTT 4.7.1), or None."""
    if not text:
        return "a topic filter must not be empty"
    if "\0" in text:
        return "a topic filter must not contain NUL"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return "a topic filter is at most 65,535 bytes"
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def topic_name_error(text: str) -> str | None:
    """Why ``text`` is not a valid MQTT topic name to publish to (no wildcards), or None."""
    if not text:
        return "a topic name must not be empty"
    if "+" in text or "#" in text:
        return "a topic name must not contain wildcards"
    if "\0" in text:
        return "a topic name must not contain NUL"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return "a topic name is at most 65,535 bytes"
    return None


def _dollar_guard(first_filter_level: str, first_topic_level: str) -> bool:
    """MQTT 4.7.2: a filter starting with a wildcard does not match a topic starting with ``$``."""
    return first_filter_level in ("+", "#") and first_topic_level.startswith("$")


def filter_matches(filter_levels: Sequence[str], topic_levels: Sequence[str]) -> bool:
    """Whether the topic filter matches the topic name (both split on ``/``)."""
    if _dollar_guard(filter_levels[0], topic_levels[0]):
        return False
    size = len(topic_levels)
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= size or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == size


def filter_covers(outer: Sequence[str], inner: Sequence[str]) -> bool:
    """Whether every topic ``inner`` matches is matched by ``outer`` (both valid filters, split)."""
    if _dollar_guard(outer[0], inner[0]):
        return False
    for index, level in enumerate(outer):
        if level == "#":
            return True
        if index >= len(inner):
            return False
        wanted = inner[index]
        if wanted == "#":
            return False
        if level == "+":
            continue
        if wanted == "+" or wanted != level:
            return False
    return len(outer) == len(inner)


def filters_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether some topic name is matched by both filters."""
    if _dollar_guard(a[0], b[0]) or _dollar_guard(b[0], a[0]):
        return False
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else None
        right = b[index] if index < len(b) else None
        if left == "#" or right == "#":
            return True
        if left is None or right is None:
            return False
        if left != "+" and right != "+" and left != right:
            return False
    return True


# ---------------------------------------------------------------------- destinations


@dataclass(frozen=True, slots=True)
class Destination:
    """A ``host:port`` pattern: host a glob, an IP address or a CIDR network; port ``*``, N or N-M."""

    text: str
    host_glob: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port_low: int
    port_high: int

    def matches(self, host: str, port: int) -> bool:
        if not self.port_low <= port <= self.port_high:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return self.host_glob is not None and fnmatch.fnmatchcase(host.lower(), self.host_glob)


def _split_host_port(text: str) -> tuple[str, str]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("an IPv6 destination is written [address]:port")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("a destination is written host:port")
    return host, port


def parse_destination(text: str) -> Destination:
    """A destination pattern; ValueError with the reason."""
    host, port = _split_host_port(text.strip())
    if port == "*":
        low, high = 0, 65535
    else:
        first, dash, last = port.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"port {port!r} is not '*', a number or a range N-M")
        low, high = int(first), int(last) if dash else int(first)
        if not 0 <= low <= high <= 65535:
            raise ValueError(f"port {port!r} is out of range")
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9*?.\[\]_-]+", host):
            raise ValueError(f"host {host!r} is not a host name pattern, an address or a network") from None
    return Destination(text, None if network else host.lower(), network, low, high)


def _parse_resource_destination(text: str) -> tuple[str, int] | str:
    """``(host, port)`` of a requested destination, or why it is not one."""
    try:
        host, port = _split_host_port(text.strip())
    except ValueError as exc:
        return str(exc)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"port {port!r} is not a number 0-65535"
    return host.lower(), int(port)


# ---------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a device must satisfy for an allow rule to grant, or to be exempt from a deny rule."""

    attested_within_hours: float | None = None
    verdicts: frozenset[str] | None = None
    firmware_min: tuple[tuple[str, str], ...] = ()
    """(model glob, minimum version) in the order written; the first pattern matching the model counts."""
    no_open_alert_at_or_above: str | None = None
    not_quarantined: bool = False

    @property
    def empty(self) -> bool:
        return (
            self.attested_within_hours is None
            and self.verdicts is None
            and not self.firmware_min
            and self.no_open_alert_at_or_above is None
            and not self.not_quarantined
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy rule. Empty *who* tuples mean "any"; ``any_what`` (deny only) covers every action."""

    name: str
    effect: Literal["allow", "deny"]
    order: int
    source: str
    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    connect: tuple[Destination, ...] = ()
    any_what: bool = False
    conditions: Conditions = field(default_factory=Conditions)
    description: str = ""

    def who_matches(self, context: DeviceContext) -> bool:
        for patterns, value in (
            (self.devices, context.device_id),
            (self.groups, context.group),
            (self.types, context.device_type),
            (self.models, context.model),
        ):
            if patterns:
                if value is None:
                    return False
                literals, globs = _patterns(patterns)
                if value not in literals and not any(fnmatch.fnmatchcase(value, g) for g in globs):
                    return False
        return True

    def templates(self, action: str) -> tuple[str, ...]:
        if action == "publish":
            return self.publish
        if action == "subscribe":
            return self.subscribe
        return ()

    def covers_action(self, action: str) -> bool:
        if self.any_what:
            return True
        if action == "connect":
            return bool(self.connect)
        return bool(self.templates(action))


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    source: str = "<policy>"


_RULE_KEYS = {"name", "effect", "who", "what", "conditions", "description"}
_WHO_KEYS = {"devices": "devices", "groups": "groups", "types": "types", "models": "models"}
_WHAT_KEYS = {"publish", "subscribe", "connect"}
_CONDITION_KEYS = {
    "attested_within_hours",
    "verdict",
    "firmware_min",
    "no_open_alert_at_or_above",
    "not_quarantined",
}


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file; PolicyError names the file, the rule and the field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read policy: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    return parse_policy(document, source)


def parse_policy(document: object, source: str = "<policy>") -> Policy:
    """Validate a parsed policy document (``{"version": 1, "rules": [...]}``)."""
    if not isinstance(document, Mapping):
        raise PolicyError(f"{source}: a policy is a mapping with 'version' and 'rules'")
    if unknown := set(document) - {"version", "rules"}:
        raise PolicyError(f"{source}: unknown top-level key(s): {_names(unknown)}")
    if document.get("version", 1) != 1:
        raise PolicyError(f"{source}: unsupported policy version {document.get('version')!r} (expected 1)")
    entries = document.get("rules")
    if not isinstance(entries, list):
        raise PolicyError(f"{source}: 'rules' must be a list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for order, entry in enumerate(entries):
        rule = _parse_rule(entry, order, source)
        if rule.name in seen:
            raise PolicyError(f"{source}: rule {rule.name!r} (#{order + 1}): the name is used twice")
        seen.add(rule.name)
        rules.append(rule)
    return Policy(tuple(rules), source)


def _names(keys: Iterable[object]) -> str:
    return ", ".join(sorted(map(str, keys)))


def _parse_rule(entry: object, order: int, source: str) -> Rule:
    label = f"{source}: rule #{order + 1}"
    if not isinstance(entry, Mapping):
        raise PolicyError(f"{label}: a rule is a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f"{label}: 'name' must be a non-empty string")
    label = f"{source}: rule {name!r} (#{order + 1})"

    def fail(message: str) -> PolicyError:
        return PolicyError(f"{label}: {message}")

    if unknown := set(entry) - _RULE_KEYS:
        raise fail(f"unknown key(s): {_names(unknown)}")
    effect = entry.get("effect")
    if effect not in ("allow", "deny"):
        raise fail("'effect' must be allow or deny")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise fail("'description' must be text")

    who = entry.get("who")
    if who is None:
        raise fail("'who' is required (write 'who: any' for every device)")
    who_fields: dict[str, tuple[str, ...]] = dict.fromkeys(_WHO_KEYS.values(), ())
    if who != "any":
        if not isinstance(who, Mapping) or not who:
            raise fail("'who' must be 'any' or a mapping of devices/groups/types/models")
        if unknown := set(who) - set(_WHO_KEYS):
            raise fail(f"who: unknown key(s): {_names(unknown)}")
        for key, value in who.items():
            who_fields[_WHO_KEYS[key]] = _string_list(value, f"who.{key}", fail)

    what = entry.get("what")
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    connect: list[Destination] = []
    any_what = False
    if what == "any":
        if effect == "allow":
            raise fail("'what: any' is only allowed on deny rules (least privilege: name what is allowed)")
        any_what = True
    elif isinstance(what, Mapping) and what:
        if unknown := set(what) - _WHAT_KEYS:
            raise fail(f"what: unknown key(s): {_names(unknown)} (expected publish, subscribe, connect)")
        publish = _string_list(what.get("publish", []), "what.publish", fail)
        subscribe = _string_list(what.get("subscribe", []), "what.subscribe", fail)
        for key, templates in (("publish", publish), ("subscribe", subscribe)):
            for index, template in enumerate(templates):
                error = _template_error(template)
                if error:
                    raise fail(f"what.{key}[{index}] {template!r}: {error}")
        for index, text in enumerate(_string_list(what.get("connect", []), "what.connect", fail)):
            try:
                connect.append(parse_destination(text))
            except ValueError as exc:
                raise fail(f"what.connect[{index}] {text!r}: {exc}") from None
        if not (publish or subscribe or connect):
            raise fail("'what' names no topic filter or destination")
    else:
        raise fail("'what' must be a mapping of publish/subscribe/connect (or 'any' on a deny rule)")

    conditions = _parse_conditions(entry.get("conditions"), fail)
    return Rule(
        name=name,
        effect=effect,
        order=order,
        source=source,
        devices=who_fields["devices"],
        groups=who_fields["groups"],
        types=who_fields["types"],
        models=who_fields["models"],
        publish=publish,
        subscribe=subscribe,
        connect=tuple(connect),
        any_what=any_what,
        conditions=conditions,
        description=description,
    )


def _string_list(value: object, where: str, fail: Callable[[str], PolicyError]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise fail(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _template_error(template: str) -> str | None:
    for name in _PLACEHOLDER.findall(template):
        if name not in PLACEHOLDERS:
            return f"unknown placeholder {{{name}}} (known: {', '.join(PLACEHOLDERS)})"
    stripped = _PLACEHOLDER.sub("x", template)
    if "{" in stripped or "}" in stripped:
        return "unbalanced '{' or '}'"
    return topic_filter_error(stripped)


def _parse_conditions(value: object, fail: Callable[[str], PolicyError]) -> Conditions:
    if value is None:
        return Conditions()
    if not isinstance(value, Mapping):
        raise fail("'conditions' must be a mapping")
    if unknown := set(value) - _CONDITION_KEYS:
        raise fail(f"conditions: unknown key(s): {_names(unknown)}")
    hours = value.get("attested_within_hours")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float) or hours <= 0):
        raise fail("conditions.attested_within_hours must be a positive number")
    verdicts = value.get("verdict")
    verdict_set: frozenset[str] | None = None
    if verdicts is not None:
        listed = _string_list(verdicts, "conditions.verdict", fail)
        if bad := [v for v in listed if v not in VERDICTS]:
            raise fail(f"conditions.verdict: {_names(bad)} is not one of {', '.join(VERDICTS)}")
        verdict_set = frozenset(listed)
    minimums: list[tuple[str, str]] = []
    firmware = value.get("firmware_min")
    if firmware is not None:
        if not isinstance(firmware, Mapping) or not firmware:
            raise fail("conditions.firmware_min must map model patterns to minimum versions")
        for model, version in firmware.items():
            if not isinstance(model, str) or parse_version(str(version)) is None:
                raise fail(f"conditions.firmware_min: {version!r} for {model!r} is not a version")
            minimums.append((model, str(version)))
    severity = value.get("no_open_alert_at_or_above")
    if severity is not None and severity not in SEVERITIES:
        raise fail(f"conditions.no_open_alert_at_or_above must be one of {', '.join(SEVERITIES)}")
    quarantine = value.get("not_quarantined", False)
    if not isinstance(quarantine, bool):
        raise fail("conditions.not_quarantined must be true or false")
    return Conditions(
        attested_within_hours=None if hours is None else float(hours),
        verdicts=verdict_set,
        firmware_min=tuple(minimums),
        no_open_alert_at_or_above=severity,
        not_quarantined=quarantine,
    )


# ---------------------------------------------------------------------- conditions and placeholders


class _Versions:
    """Parsed firmware versions, cached (parsing is regular-expression work)."""

    def __init__(self, limit: int = 65536) -> None:
        self._cache: dict[str, FirmwareVersion | None] = {}
        self._limit = limit

    def __call__(self, text: str) -> FirmwareVersion | None:
        try:
            return self._cache[text]
        except KeyError:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            parsed = self._cache[text] = parse_version(text)
            return parsed


def _condition_failures(
    conditions: Conditions,
    context: DeviceContext,
    now: Callable[[], dt.datetime],
    versions: _Versions,
    first_only: bool,
) -> list[str]:
    """Why ``context`` does not satisfy ``conditions`` (empty when it does)."""
    failures: list[str] = []
    if conditions.not_quarantined and context.quarantined:
        failures.append("device is quarantined")
        if first_only:
            return failures
    if conditions.verdicts is not None and context.verdict not in conditions.verdicts:
        wanted = "/".join(sorted(conditions.verdicts))
        failures.append(f"attestation verdict is {context.verdict or 'none'}, not {wanted}")
        if first_only:
            return failures
    if conditions.attested_within_hours is not None:
        limit = conditions.attested_within_hours
        if context.attested_at is None:
            failures.append(f"never attested (must be within {limit:g} h)")
        else:
            attested = context.attested_at
            if attested.tzinfo is None:
                attested = attested.replace(tzinfo=dt.UTC)
            age = (now() - attested).total_seconds() / 3600
            if age > limit:
                failures.append(f"attested {age:.1f} h ago (must be within {limit:g} h)")
        if first_only and failures:
            return failures
    if conditions.no_open_alert_at_or_above is not None:
        threshold = SEVERITIES.index(conditions.no_open_alert_at_or_above)
        if severity_rank(context.open_alert_severity) >= threshold:
            failures.append(
                f"open alert of severity {context.open_alert_severity} "
                f"(at or above {conditions.no_open_alert_at_or_above})"
            )
            if first_only:
                return failures
    if conditions.firmware_min:
        minimum = next(
            (
                version
                for pattern, version in conditions.firmware_min
                if context.model is not None and fnmatch.fnmatchcase(context.model, pattern)
            ),
            None,
        )
        if minimum is not None:
            running = versions(context.firmware) if context.firmware is not None else None
            limit_version = versions(minimum)
            if running is None:
                failures.append(f"firmware {context.firmware!r} cannot be compared with minimum {minimum}")
            elif limit_version is not None and running < limit_version:
                failures.append(f"firmware {context.firmware} is below the minimum {minimum}")
    return failures


def _unsafe_value(value: str | None) -> bool:
    return not value or "+" in value or "#" in value or "/" in value or "\0" in value or value.startswith("$")


@functools.lru_cache(maxsize=4096)
def _patterns(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Who-patterns split into literal names (a set lookup) and globs."""
    literal = frozenset(p for p in patterns if not _GLOB_CHARS & set(p))
    return literal, tuple(p for p in patterns if p not in literal)


@functools.lru_cache(maxsize=4096)
def _template_parts(template: str) -> tuple[str, ...]:
    """``a/{device_id}/b`` -> ``("a/", "device_id", "/b")``: literals at even, placeholders at odd indices."""
    return tuple(_PLACEHOLDER.split(template))


def _fill(template: str, context: DeviceContext) -> str | None:
    """``template`` with its placeholders filled from ``context``; None when a value is unsafe."""
    parts = _template_parts(template)
    if len(parts) == 1:
        return template
    out: list[str] = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(part)
            continue
        value: str | None = getattr(context, part)
        if value is None or _unsafe_value(value):
            return None
        out.append(value)
    return "".join(out)


# ---------------------------------------------------------------------- the compiled engine


@dataclass(frozen=True, slots=True)
class _Bound:
    """A rule bound to one device identity and action: placeholders filled, filters split."""

    rule: Rule
    literal: frozenset[str]
    """Filled filters without wildcards (a publish topic is looked up as a whole string)."""
    wildcard: tuple[tuple[str, ...], ...]
    filters: tuple[tuple[str, ...], ...]
    """All filled filters, split (subscribe checks and the ACL export)."""
    unsafe: tuple[str, ...]
    """Templates that could not be filled safely for this device."""


@dataclass(slots=True)
class _ActionIndex:
    by_device: dict[str, list[Rule]] = field(default_factory=dict)
    by_group: dict[str, list[Rule]] = field(default_factory=dict)
    by_type: dict[str, list[Rule]] = field(default_factory=dict)
    by_model: dict[str, list[Rule]] = field(default_factory=dict)
    generic: list[Rule] = field(default_factory=list)


Hit = tuple[int, int, int, int, Rule, str]
"""(0 deny | 1 allow, rule order, 0 literal | 1 wildcard, filter index, rule, what matched)."""


class _Node:
    """One level of a topic-filter trie (the publish fast path)."""

    __slots__ = ("children", "end", "hash", "plus")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.plus: _Node | None = None
        self.hash: list[Hit] = []
        self.end: list[Hit] = []

    def add(self, levels: tuple[str, ...], hit: Hit) -> None:
        node = self
        for level in levels:
            if level == "#":
                node.hash.append(hit)
                return
            if level == "+":
                if node.plus is None:
                    node.plus = _Node()
                node = node.plus
            else:
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
        node.end.append(hit)

    def match(self, levels: list[str]) -> list[Hit]:
        """Every hit whose filter matches the topic (MQTT 4.7, with the ``$`` rule of 4.7.2)."""
        out: list[Hit] = []
        size = len(levels)
        dollar = levels[0].startswith("$")
        stack: list[tuple[_Node, int]] = [(self, 0)]
        while stack:
            node, depth = stack.pop()
            wild_ok = depth or not dollar
            if node.hash and wild_ok:
                out.extend(node.hash)
            if depth == size:
                out.extend(node.end)
                continue
            child = node.children.get(levels[depth])
            if child is not None:
                stack.append((child, depth + 1))
            if node.plus is not None and wild_ok:
                stack.append((node.plus, depth + 1))
        return out


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The rules that concern one device identity for one action."""

    entries: tuple[_Bound, ...]
    """Deny rules first, each group in policy order."""
    trie: _Node
    always: tuple[Hit, ...]
    """Deny rules that cover every topic for this identity (``what: any``, unfillable placeholder)."""


def _compile(entries: tuple[_Bound, ...], action: str) -> _Compiled:
    root = _Node()
    always: list[Hit] = []
    if action == "publish":
        for bound in entries:
            rule = bound.rule
            allow = 1 if rule.effect == "allow" else 0
            if not allow and (rule.any_what or bound.unsafe):
                text = (
                    "every publish"
                    if rule.any_what
                    else (f"device identity cannot fill {bound.unsafe[0]!r} safely")
                )
                always.append((0, rule.order, 0, 0, rule, text))
                continue
            for index, levels in enumerate(bound.filters):
                joined = "/".join(levels)
                if joined in bound.literal:
                    root.add(levels, (allow, rule.order, 0, index, rule, f"topic {joined}"))
                else:
                    root.add(levels, (allow, rule.order, 1, index, rule, f"topic matches {joined}"))
    return _Compiled(entries, root, tuple(always))


def _hit_key(hit: Hit) -> tuple[int, int, int, int]:
    return hit[0], hit[1], hit[2], hit[3]


DEFAULT_DENY = "no rule allows it (default deny)"


def _literal(patterns: tuple[str, ...]) -> bool:
    return bool(patterns) and not any(_GLOB_CHARS & set(pattern) for pattern in patterns)


class PolicyEngine:
    """A policy compiled for fast decisions. Thread-compatible: caches are plain dicts."""

    def __init__(self, policy: Policy, cache_size: int = 100_000) -> None:
        self.policy = policy
        self._index: dict[str, _ActionIndex] = {action: _ActionIndex() for action in ACTIONS}
        for rule in policy.rules:
            for action in ACTIONS:
                if rule.covers_action(action):
                    self._add(self._index[action], rule)
        self._cache: dict[tuple[str, str, str | None, str | None, str | None], _Compiled] = {}
        self._cache_size = cache_size
        self._versions = _Versions()

    @staticmethod
    def _add(index: _ActionIndex, rule: Rule) -> None:
        # index under the first literal who-field; who_matches still checks every field
        for patterns, table in (
            (rule.devices, index.by_device),
            (rule.groups, index.by_group),
            (rule.types, index.by_type),
            (rule.models, index.by_model),
        ):
            if _literal(patterns):
                for pattern in patterns:
                    table.setdefault(pattern, []).append(rule)
                return
        index.generic.append(rule)

    def _bound(self, context: DeviceContext, action: str) -> tuple[_Bound, ...]:
        return self._compiled(context, action).entries

    def _compiled(self, context: DeviceContext, action: str) -> _Compiled:
        key = (action, context.device_id, context.group, context.device_type, context.model)
        found = self._cache.get(key)
        if found is not None:
            return found
        index = self._index[action]
        candidates: dict[int, Rule] = {}
        for table, value in (
            (index.by_device, context.device_id),
            (index.by_group, context.group),
            (index.by_type, context.device_type),
            (index.by_model, context.model),
        ):
            if value is not None:
                for rule in table.get(value, ()):
                    candidates[rule.order] = rule
        for rule in index.generic:
            candidates[rule.order] = rule
        bound: list[_Bound] = []
        for order in sorted(candidates):
            rule = candidates[order]
            if rule.who_matches(context):
                bound.append(_bind(rule, action, context))
        # deny rules first: an applicable deny wins whatever the order of the rules
        result = tuple(b for b in bound if b.rule.effect == "deny") + tuple(
            b for b in bound if b.rule.effect == "allow"
        )
        compiled = _compile(result, action)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = compiled
        return compiled

    def decide(
        self,
        context: DeviceContext,
        action: str,
        resource: str,
        now: dt.datetime | None = None,
    ) -> Decision:
        """Allow or deny ``action`` on ``resource`` (a topic, a topic filter or ``host:port``)."""
        return self._evaluate(context, action, resource, now, None)

    def _evaluate(
        self,
        context: DeviceContext,
        action: str,
        resource: str,
        now: dt.datetime | None,
        trace: list[str] | None,
    ) -> Decision:
        if action not in self._index:
            return Decision(False, None, (f"unknown action {action!r} (expected {', '.join(ACTIONS)})",))
        if not isinstance(resource, str):
            return Decision(False, None, ("the resource must be text",))
        levels: list[str] | None = None
        destination: tuple[str, int] | None = None
        if action == "connect":
            parsed = _parse_resource_destination(resource)
            if isinstance(parsed, str):
                return Decision(False, None, (f"invalid destination {resource!r}: {parsed}",))
            destination = parsed
        else:
            error = topic_name_error(resource) if action == "publish" else topic_filter_error(resource)
            if error:
                return Decision(False, None, (f"invalid {action} topic {resource!r}: {error}",))
            levels = resource.split("/")

        moment: list[dt.datetime] = [now] if now is not None else []
        if trace is None and action == "publish":
            assert levels is not None
            return self._publish(context, levels, moment)

        def clock() -> dt.datetime:
            if not moment:
                moment.append(dt.datetime.now(dt.UTC))
            return moment[0]

        first_only = trace is None
        refused: list[str] = []
        for bound in self._bound(context, action):
            rule = bound.rule
            if rule.effect == "deny":
                hit = _deny_hit(bound, action, resource, levels, destination)
                if hit is None:
                    if trace is not None:
                        trace.append(f"{rule.name} (deny): does not cover this {action}")
                    continue
                failures = _condition_failures(rule.conditions, context, clock, self._versions, first_only)
                if rule.conditions.empty or failures:
                    why = [f"denied by rule {rule.name}: {hit}"]
                    why.extend(f"{rule.name}: {reason}" for reason in failures)
                    if trace is not None:
                        trace.append(f"{rule.name} (deny): applies ({hit})")
                    return Decision(False, rule.name, tuple(why))
                if trace is not None:
                    trace.append(f"{rule.name} (deny): covers it, but the device meets its conditions")
                continue
            hit = _allow_hit(bound, action, resource, levels, destination)
            if hit is None:
                if trace is not None:
                    trace.append(f"{rule.name} (allow): does not cover this {action}")
                continue
            failures = _condition_failures(rule.conditions, context, clock, self._versions, first_only)
            if not failures:
                if trace is not None:
                    trace.append(f"{rule.name} (allow): grants ({hit})")
                return Decision(True, rule.name, (f"allowed by rule {rule.name}: {hit}",))
            refused.extend(f"{rule.name} would allow ({hit}) but {reason}" for reason in failures)
            if trace is not None:
                trace.append(f"{rule.name} (allow): covers it, but {'; '.join(failures)}")
        return Decision(False, None, (DEFAULT_DENY, *refused))

    def _publish(self, context: DeviceContext, levels: list[str], moment: list[dt.datetime]) -> Decision:
        """The publish fast path: the identity's filter trie, then conditions of the hits in order."""
        compiled = self._compiled(context, "publish")
        hits = compiled.trie.match(levels)
        if compiled.always:
            hits.extend(compiled.always)
        if not hits:
            return Decision(False, None, (DEFAULT_DENY,))
        hits.sort(key=_hit_key)

        def clock() -> dt.datetime:
            if not moment:
                moment.append(dt.datetime.now(dt.UTC))
            return moment[0]

        refused: list[str] = []
        seen = -1
        for allow, order, _, _, rule, hit in hits:
            if order == seen:
                continue  # another filter of the same rule; the first one names the match
            seen = order
            conditions = rule.conditions
            failures = (
                []
                if conditions.empty
                else _condition_failures(conditions, context, clock, self._versions, True)
            )
            if not allow:
                if conditions.empty or failures:
                    why = [f"denied by rule {rule.name}: {hit}"]
                    why.extend(f"{rule.name}: {reason}" for reason in failures)
                    return Decision(False, rule.name, tuple(why))
            elif not failures:
                return Decision(True, rule.name, (f"allowed by rule {rule.name}: {hit}",))
            else:
                refused.extend(f"{rule.name} would allow ({hit}) but {reason}" for reason in failures)
        return Decision(False, None, (DEFAULT_DENY, *refused))

    def mqtt_acl(self, context: DeviceContext, now: dt.datetime | None = None) -> list[tuple[str, str, str]]:
        """(topic filter, allow|deny, publish|subscribe) for ``context``, denies first."""
        clock_value = now or dt.datetime.now(dt.UTC)
        denies: list[tuple[str, str, str]] = []
        allows: list[tuple[str, str, str]] = []
        for action in ("publish", "subscribe"):
            for bound in self._bound(context, action):
                rule = bound.rule
                failures = _condition_failures(
                    rule.conditions, context, lambda: clock_value, self._versions, True
                )
                if rule.effect == "deny":
                    if failures or rule.conditions.empty:
                        if rule.any_what or bound.unsafe:
                            denies.append(("#", "deny", action))
                        denies.extend(("/".join(f), "deny", action) for f in bound.filters)
                elif not failures:
                    allows.extend(("/".join(f), "allow", action) for f in bound.filters)
        out: list[tuple[str, str, str]] = []
        for entry in denies + allows:
            if entry not in out:
                out.append(entry)
        return out


def _bind(rule: Rule, action: str, context: DeviceContext) -> _Bound:
    literal: set[str] = set()
    wildcard: list[tuple[str, ...]] = []
    filters: list[tuple[str, ...]] = []
    unsafe: list[str] = []
    for template in rule.templates(action):
        filled = _fill(template, context)
        if filled is None:
            unsafe.append(template)
            continue
        levels = tuple(filled.split("/"))
        filters.append(levels)
        if "+" in levels or "#" in levels:
            wildcard.append(levels)
        else:
            literal.add(filled)
    return _Bound(rule, frozenset(literal), tuple(wildcard), tuple(filters), tuple(unsafe))


def _hit(
    bound: _Bound,
    action: str,
    resource: str,
    levels: list[str] | None,
    destination: tuple[str, int] | None,
    subscription: Callable[[Sequence[str], Sequence[str]], bool],
    subscription_words: str,
) -> str | None:
    """What in a bound rule's ``what`` matches the request, or None; a subscription is matched by
    ``subscription(rule_filter, requested_filter)`` (an allow must cover it, a deny only overlap)."""
    if action == "publish":
        assert levels is not None
        if resource in bound.literal:
            return f"topic {resource}"
        for filter_levels in bound.wildcard:
            if filter_matches(filter_levels, levels):
                return f"topic matches {'/'.join(filter_levels)}"
        return None
    if action == "subscribe":
        assert levels is not None
        for filter_levels in bound.filters:
            if subscription(filter_levels, levels):
                return f"filter {subscription_words} {'/'.join(filter_levels)}"
        return None
    assert destination is not None
    for pattern in bound.rule.connect:
        if pattern.matches(*destination):
            return f"destination matches {pattern.text}"
    return None


def _allow_hit(
    bound: _Bound,
    action: str,
    resource: str,
    levels: list[str] | None,
    destination: tuple[str, int] | None,
) -> str | None:
    """What in an allow rule grants the request, or None."""
    return _hit(bound, action, resource, levels, destination, filter_covers, "within")


def _deny_hit(
    bound: _Bound,
    action: str,
    resource: str,
    levels: list[str] | None,
    destination: tuple[str, int] | None,
) -> str | None:
    """What in a deny rule covers the request, or None."""
    if bound.rule.any_what:
        return f"every {action}"
    if bound.unsafe:
        return f"device identity cannot fill {bound.unsafe[0]!r} safely"
    return _hit(bound, action, resource, levels, destination, filters_overlap, "overlaps")


# ---------------------------------------------------------------------- the naive baseline


class NaiveEvaluator:
    """The same policy read literally: every rule, every time, filters as regular expressions.

    The benchmark's baseline and the tests' second opinion; it shares the validated rules and the
    condition checks with :class:`PolicyEngine` but none of its indexing, caching or matching code
    (for publish; subscribe containment and overlap reuse the level functions).
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._versions = _Versions()

    def decide(
        self, context: DeviceContext, action: str, resource: str, now: dt.datetime | None = None
    ) -> Decision:
        if action not in ACTIONS:
            return Decision(False, None, ("unknown action",))
        if action == "publish" and topic_name_error(resource):
            return Decision(False, None, ("invalid topic",))
        if action == "subscribe" and topic_filter_error(resource):
            return Decision(False, None, ("invalid filter",))
        destination = _parse_resource_destination(resource) if action == "connect" else None
        if isinstance(destination, str):
            return Decision(False, None, ("invalid destination",))
        instant = now or dt.datetime.now(dt.UTC)
        allowed_by: str | None = None
        for rule in self.policy.rules:
            if not rule.who_matches(context) or not rule.covers_action(action):
                continue
            failures = _condition_failures(rule.conditions, context, lambda: instant, self._versions, True)
            if rule.effect == "deny":
                applies = rule.conditions.empty or bool(failures)
                if applies and self._covers(rule, context, action, resource, destination, deny=True):
                    return Decision(False, rule.name, (f"denied by rule {rule.name}",))
            elif (
                allowed_by is None
                and not failures
                and self._covers(rule, context, action, resource, destination, deny=False)
            ):
                allowed_by = rule.name
        if allowed_by is not None:
            return Decision(True, allowed_by, (f"allowed by rule {allowed_by}",))
        return Decision(False, None, ("no rule allows it (default deny)",))

    @staticmethod
    def _covers(
        rule: Rule,
        context: DeviceContext,
        action: str,
        resource: str,
        destination: tuple[str, int] | None,
        deny: bool,
    ) -> bool:
        if rule.any_what:
            return True
        if action == "connect":
            assert destination is not None
            return any(pattern.matches(*destination) for pattern in rule.connect)
        for template in rule.templates(action):
            filled = _fill(template, context)
            if filled is None:
                if deny:
                    return True
                continue
            if action == "publish":
                if re.fullmatch(_filter_regex(filled), resource):
                    return True
            else:
                check = filters_overlap if deny else filter_covers
                if check(filled.split("/"), resource.split("/")):
                    return True
        return False


def _filter_regex(topic_filter: str) -> str:
    levels = topic_filter.split("/")
    guard = r"(?!\$)" if levels[0] in ("+", "#") else ""  # MQTT 4.7.2
    parts: list[str] = []
    for index, level in enumerate(levels):
        if level == "#":
            if index == 0:
                return guard + r"(?s:.*)"
            return guard + "/".join(parts) + r"(?:/(?s:.*))?"
        parts.append(r"[^/]*" if level == "+" else re.escape(level))
    return guard + "/".join(parts)


# ---------------------------------------------------------------------- helpers for the CLI and broker


def mqtt_acl(
    policy: Policy | PolicyEngine, context: DeviceContext, now: dt.datetime | None = None
) -> list[tuple[str, str, str]]:
    """The MQTT topic ACL of one device, for the Mosquitto dynamic-security sync.

    Returns (topic filter, ``allow`` | ``deny``, ``publish`` | ``subscribe``) with every deny before
    every allow; a deny whose placeholder cannot be filled safely (or ``what: any``) becomes ``#``.
    Conditions are evaluated at ``now``, so the list must be refreshed when the context changes.
    """
    engine = policy if isinstance(policy, PolicyEngine) else PolicyEngine(policy)
    return engine.mqtt_acl(context, now)


def explain(
    policy: Policy | PolicyEngine,
    context: DeviceContext,
    action: str,
    resource: str,
    now: dt.datetime | None = None,
) -> str:
    """A decision as text: the verdict, the deciding rule, the reasons and every rule considered."""
    engine = policy if isinstance(policy, PolicyEngine) else PolicyEngine(policy)
    trace: list[str] = []
    decision = engine._evaluate(context, action, resource, now, trace)
    identity = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("group", context.group),
            ("type", context.device_type),
            ("model", context.model),
            ("firmware", context.firmware),
            ("verdict", context.verdict),
        )
        if value is not None
    )
    lines = [
        f"decision: {'ALLOW' if decision.allowed else 'DENY'}",
        f"device:   {context.device_id}" + (f" ({identity})" if identity else ""),
        f"request:  {action} {resource}",
        f"rule:     {decision.rule or '(none: default deny)'}",
        "reasons:",
        *(f"  - {reason}" for reason in decision.reasons),
    ]
    if context.quarantined:
        lines.insert(2, "          quarantined")
    lines.append("rules considered:" if trace else "rules considered: none concern this device")
    lines.extend(f"  - {line}" for line in trace)
    return "\n".join(lines)


def policy_test(
    policy_path: Path | str,
    device_json: Path | str | Mapping[str, Any],
    action: str,
    resource: str,
    now: dt.datetime | None = None,
) -> str:
    """``fieldward policy test``: explain one decision for a device described in JSON.

    device_json: JSON text (starting with ``{``), a path to a JSON file, or a mapping, with
    the fields of :class:`~fieldward.trust.context.DeviceContext`. Raises PolicyError (a TrustError)
    with one clear line on a bad policy, device or action.
    """
    policy = load_policy(policy_path)
    if isinstance(device_json, Mapping):
        data: object = dict(device_json)
    else:
        text = str(device_json)
        if not text.lstrip().startswith(("{", "[")):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except OSError as exc:
                raise PolicyError(f"{device_json}: cannot read device JSON: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PolicyError(f"device JSON is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError("device JSON must be an object")
    try:
        context = DeviceContext.from_dict(data)
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    if action not in ACTIONS:
        raise PolicyError(f"unknown action {action!r} (expected {', '.join(ACTIONS)})")
    return explain(PolicyEngine(policy), context, action, resource, now)
