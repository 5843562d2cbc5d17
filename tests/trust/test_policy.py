"""Policy engine: parsing and validation, MQTT wildcard semantics, the decision matrix, placeholders
that cannot be abused, deny wins, and property tests against the naive evaluator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.trust.context import DeviceContext
from fieldward.trust.errors import TrustError
from fieldward.trust.policy import (
    NaiveEvaluator,
    PolicyEngine,
    PolicyError,
    explain,
    filter_covers,
    filter_matches,
    filters_overlap,
    load_policy,
    mqtt_acl,
    parse_policy,
    policy_test,
)

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
EXAMPLE = Path(str(resources.files("fieldward.trust").joinpath("data/policy.example.yaml")))

RTU = DeviceContext(
    device_id="rtu-7",
    group="plant-a",
    device_type="rtu",
    model="ACME-RTU-500",
    firmware="2.4.1",
    attested_at=NOW - dt.timedelta(hours=2),
    verdict="healthy",
    quarantined=False,
    open_alert_severity=None,
)
GW = dataclasses.replace(RTU, device_id="gw-1", device_type="gateway", model="ACME-GW-10", firmware="1.2.0")


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(load_policy(EXAMPLE))


def rule(name: str, effect: str, what: Any, who: Any = "any", **extra: Any) -> dict[str, Any]:
    return {"name": name, "effect": effect, "who": who, "what": what, **extra}


def engine_of(*rules: dict[str, Any]) -> PolicyEngine:
    return PolicyEngine(parse_policy({"version": 1, "rules": list(rules)}, "test.yaml"))


# ---------------------------------------------------------------------- MQTT topic semantics


def split(text: str) -> list[str]:
    return text.split("/")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        # MQTT 3.1.1 section 4.7.1.2 (multi-level wildcard)
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "anything/at/all", True),
        # 4.7.1.3 (single-level wildcard)
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("+/tennis/#", "sport/tennis/player1", True),
        # 4.7.2 (topics beginning with $)
        ("#", "$SYS/broker/uptime", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        # literal levels are case-sensitive and exact
        ("ACCOUNTS", "Accounts", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_filter_matches_follows_the_mqtt_spec(topic_filter: str, topic: str, expected: bool) -> None:
    assert filter_matches(split(topic_filter), split(topic)) is expected


@pytest.mark.parametrize(
    ("outer", "inner", "covers", "overlap"),
    [
        ("a/#", "a/b/+", True, True),
        ("a/#", "a", True, True),
        ("a/+", "a/#", False, True),
        ("a/+/c", "a/b/c", True, True),
        ("a/b/c", "a/+/c", False, True),
        ("a/+", "b/+", False, False),
        ("#", "$SYS/#", False, False),
        ("$SYS/#", "$SYS/x", True, True),
        ("a/b", "a/b/#", False, True),
        ("+/+", "+/+/+", False, False),
    ],
)
def test_filter_containment_and_overlap(outer: str, inner: str, covers: bool, overlap: bool) -> None:
    assert filter_covers(split(outer), split(inner)) is covers
    assert filters_overlap(split(outer), split(inner)) is overlap
    assert filters_overlap(split(inner), split(outer)) is overlap


# ---------------------------------------------------------------------- parsing and validation


def test_example_policy_loads() -> None:
    policy = load_policy(EXAMPLE)
    assert [r.name for r in policy.rules][:2] == ["quarantine-lockdown", "no-broker-internals"]
    assert policy.rules[2].conditions.firmware_min == (("ACME-RTU-*", "2.4.0"),)


@pytest.mark.parametrize(
    ("bad_rule", "message"),
    [
        (rule("r", "allow", {"publish": ["a/#/b"]}), r"rule 'r' \(#1\): what.publish\[0\] 'a/#/b'"),
        (rule("r", "allow", {"publish": ["a/b+"]}), "'\\+' must be a whole level"),
        (rule("r", "allow", {"subscribe": ["x/{serial}"]}), "unknown placeholder {serial}"),
        (rule("r", "allow", "any"), "only allowed on deny rules"),
        (rule("r", "permit", {"publish": ["a"]}), "'effect' must be allow or deny"),
        ({"name": "r", "effect": "allow", "what": {"publish": ["a"]}}, "'who' is required"),
        (rule("r", "allow", {"publish": ["a"]}, who={"device": ["x"]}), "who: unknown key"),
        (rule("r", "allow", {"connect": ["host-without-port"]}), "host:port"),
        (rule("r", "allow", {"connect": ["h:99999"]}), "out of range"),
        (rule("r", "allow", {"publish": ["a"]}, conditions={"verdict": ["fine"]}), "not one of healthy"),
        (
            rule("r", "allow", {"publish": ["a"]}, conditions={"no_open_alert_at_or_above": "severe"}),
            "no_open_alert_at_or_above must be one of",
        ),
        (
            rule("r", "allow", {"publish": ["a"]}, conditions={"firmware_min": {"M": "latest"}}),
            "not a version",
        ),
        (rule("r", "allow", {"publish": ["a"]}, conditions={"attested_within_hours": -1}), "positive number"),
        (rule("r", "allow", {"publish": ["a"]}, conditions={"attested": 1}), "conditions: unknown key"),
        (rule("r", "allow", {"publish": []}), "names no topic filter"),
    ],
)
def test_validation_names_file_rule_and_field(bad_rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message) as caught:
        parse_policy({"version": 1, "rules": [bad_rule]}, "site.yaml")
    assert str(caught.value).startswith("site.yaml: rule")
    assert isinstance(caught.value, TrustError)


def test_validation_of_the_document(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="the name is used twice"):
        parse_policy({"rules": [rule("r", "deny", "any"), rule("r", "deny", "any")]}, "p.yaml")
    with pytest.raises(PolicyError, match="unsupported policy version 2"):
        parse_policy({"version": 2, "rules": []})
    path = tmp_path / "broken.yaml"
    path.write_text("rules: [\n")
    with pytest.raises(PolicyError, match=r"broken\.yaml: not valid YAML"):
        load_policy(path)
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------- the decision matrix


def ctx(**changes: Any) -> DeviceContext:
    return dataclasses.replace(RTU, **changes)


MATRIX = [
    # (context, action, resource, allowed, rule)
    (RTU, "publish", "devices/rtu-7/telemetry/temp", True, "rtu-telemetry"),
    (RTU, "publish", "devices/rtu-7/state", True, "rtu-telemetry"),
    (RTU, "publish", "devices/rtu-8/telemetry/temp", False, None),
    (RTU, "publish", "devices/rtu-7/commands/reboot", False, None),
    (RTU, "subscribe", "devices/rtu-7/commands/+", True, "rtu-telemetry"),
    (RTU, "subscribe", "devices/rtu-7/commands/#", False, None),
    (RTU, "subscribe", "groups/plant-a/broadcast/#", True, "rtu-telemetry"),
    (RTU, "subscribe", "groups/plant-b/broadcast/#", False, None),
    (RTU, "subscribe", "#", False, None),
    (RTU, "subscribe", "$SYS/broker/clients", False, "no-broker-internals"),
    (RTU, "publish", "$SYS/broker/x", False, "no-broker-internals"),
    (RTU, "connect", "broker.plant.local:8883", False, None),
    (ctx(quarantined=True), "publish", "devices/rtu-7/state", False, "quarantine-lockdown"),
    (ctx(verdict="compromised"), "publish", "devices/rtu-7/state", False, "quarantine-lockdown"),
    (ctx(verdict=None, attested_at=None), "publish", "devices/rtu-7/state", False, "quarantine-lockdown"),
    (ctx(verdict="outdated"), "publish", "devices/rtu-7/telemetry/t", False, None),
    (ctx(verdict="outdated"), "publish", "devices/rtu-7/state", True, "outdated-may-report"),
    (ctx(firmware="2.3.9"), "publish", "devices/rtu-7/telemetry/t", False, None),
    (ctx(firmware="V2.4.0"), "publish", "devices/rtu-7/telemetry/t", True, "rtu-telemetry"),
    (ctx(firmware=None), "publish", "devices/rtu-7/telemetry/t", False, None),
    (ctx(attested_at=NOW - dt.timedelta(hours=25)), "publish", "devices/rtu-7/telemetry/t", False, None),
    (
        ctx(attested_at=NOW - dt.timedelta(hours=24)),
        "publish",
        "devices/rtu-7/telemetry/t",
        True,
        "rtu-telemetry",
    ),
    (ctx(open_alert_severity="high"), "publish", "devices/rtu-7/telemetry/t", False, None),
    (ctx(open_alert_severity="critical"), "publish", "devices/rtu-7/telemetry/t", False, None),
    (ctx(open_alert_severity="medium"), "publish", "devices/rtu-7/telemetry/t", True, "rtu-telemetry"),
    (ctx(group="office"), "publish", "devices/rtu-7/telemetry/t", False, None),
    (ctx(device_type="plc"), "publish", "devices/rtu-7/telemetry/t", False, None),
    (GW, "connect", "broker.plant.local:8883", True, "gateways-upstream"),
    (GW, "connect", "BROKER.plant.local:8883", True, "gateways-upstream"),
    (GW, "connect", "broker.plant.local:1883", False, None),
    (GW, "connect", "10.20.4.5:502", True, "gateways-upstream"),
    (GW, "connect", "10.21.4.5:502", False, None),
    (GW, "connect", "10.20.4.5:not-a-port", False, None),
    (GW, "publish", "devices/gw-1/state", True, "outdated-may-report"),
    (GW, "publish", "devices/gw-1/telemetry/x", False, None),
    (RTU, "publish", "devices/rtu-7/+", False, None),  # wildcards are not topic names
    (RTU, "reboot", "devices/rtu-7", False, None),
]


@pytest.mark.parametrize(("context", "action", "resource", "allowed", "rule_name"), MATRIX)
def test_decision_matrix(
    engine: PolicyEngine,
    context: DeviceContext,
    action: str,
    resource: str,
    allowed: bool,
    rule_name: str | None,
) -> None:
    decision = engine.decide(context, action, resource, now=NOW)
    assert (decision.allowed, decision.rule) == (allowed, rule_name), decision.reasons
    assert decision.reasons
    naive = NaiveEvaluator(engine.policy).decide(context, action, resource, now=NOW)
    assert (naive.allowed, naive.rule) == (allowed, rule_name)


def test_failed_conditions_are_explained(engine: PolicyEngine) -> None:
    decision = engine.decide(ctx(firmware="2.3.9"), "publish", "devices/rtu-7/telemetry/t", now=NOW)
    assert decision.reasons == (
        "no rule allows it (default deny)",
        "rtu-telemetry would allow (topic matches devices/rtu-7/telemetry/#) "
        "but firmware 2.3.9 is below the minimum 2.4.0",
    )


def test_context_changes_are_seen_despite_the_identity_cache(engine: PolicyEngine) -> None:
    topic = "devices/rtu-7/telemetry/t"
    assert engine.decide(RTU, "publish", topic, now=NOW).allowed
    assert not engine.decide(ctx(quarantined=True), "publish", topic, now=NOW).allowed
    assert engine.decide(RTU, "publish", topic, now=NOW).allowed
    assert not engine.decide(RTU, "publish", topic, now=NOW + dt.timedelta(days=2)).allowed


def test_deny_wins_whatever_the_order() -> None:
    allow = rule("all-telemetry", "allow", {"publish": ["telemetry/#"], "subscribe": ["telemetry/#"]})
    deny = rule(
        "no-secrets", "deny", {"publish": ["telemetry/secrets/#"], "subscribe": ["telemetry/secrets/#"]}
    )
    for policy in (engine_of(allow, deny), engine_of(deny, allow)):
        assert policy.decide(RTU, "publish", "telemetry/x").allowed
        decision = policy.decide(RTU, "publish", "telemetry/secrets/key")
        assert (decision.allowed, decision.rule) == (False, "no-secrets")
        # a subscription that could receive a denied topic is refused as a whole
        assert policy.decide(RTU, "subscribe", "telemetry/+/key").rule == "no-secrets"
        assert policy.decide(RTU, "subscribe", "telemetry/#").rule == "no-secrets"
        assert policy.decide(RTU, "subscribe", "telemetry/public/+").allowed


def test_who_patterns_combine_fields_with_and_and_patterns_with_or() -> None:
    policy = engine_of(
        rule("r", "allow", {"publish": ["x"]}, who={"devices": ["rtu-*", "gw-9"], "models": ["ACME-*"]})
    )
    assert policy.decide(RTU, "publish", "x").allowed
    assert policy.decide(ctx(device_id="gw-9"), "publish", "x").allowed
    assert not policy.decide(ctx(device_id="plc-1"), "publish", "x").allowed
    assert not policy.decide(ctx(model="Other"), "publish", "x").allowed
    assert not policy.decide(ctx(model=None), "publish", "x").allowed


def test_destinations_ipv6_and_port_ranges() -> None:
    policy = engine_of(rule("r", "allow", {"connect": ["[fd00::/8]:1000-2000", "*.example.org:*"]}))
    assert policy.decide(RTU, "connect", "[fd00::1]:1500").allowed
    assert not policy.decide(RTU, "connect", "[fd00::1]:2001").allowed
    assert not policy.decide(RTU, "connect", "[fe80::1]:1500").allowed
    assert policy.decide(RTU, "connect", "a.example.org:1").allowed
    assert not policy.decide(RTU, "connect", "example.org:1").allowed


# ---------------------------------------------------------------------- placeholders cannot be abused

OWN = rule(
    "own",
    "allow",
    {"publish": ["devices/{device_id}/data"], "subscribe": ["devices/{device_id}/cmd/{group}"]},
)


@pytest.mark.parametrize(
    ("device_id", "action", "resource"),
    [
        ("+", "subscribe", "devices/+/data"),
        ("#", "subscribe", "devices/#"),
        ("a/b", "publish", "devices/a/b/data"),
        ("x/+", "subscribe", "devices/x/+/cmd/plant-a"),
        ("$SYS", "publish", "devices/$SYS/data"),
        ("", "publish", "devices//data"),
        ("a\0b", "publish", "devices/a\0b/data"),
    ],
)
def test_device_ids_with_mqtt_syntax_cannot_widen_rights(device_id: str, action: str, resource: str) -> None:
    policy = engine_of(OWN)
    decision = policy.decide(ctx(device_id=device_id), action, resource)
    assert not decision.allowed
    assert all(entry[1] == "deny" for entry in mqtt_acl(policy, ctx(device_id=device_id)))


def test_group_with_mqtt_syntax_cannot_widen_rights() -> None:
    policy = engine_of(OWN)
    assert policy.decide(RTU, "subscribe", "devices/rtu-7/cmd/plant-a").allowed
    assert not policy.decide(ctx(group="#"), "subscribe", "devices/rtu-7/cmd/#").allowed
    assert not policy.decide(ctx(group="+"), "subscribe", "devices/rtu-7/cmd/x").allowed


def test_a_deny_placeholder_that_cannot_be_filled_denies_the_whole_action() -> None:
    policy = engine_of(
        rule("no-peers", "deny", {"publish": ["devices/{device_id}/firmware"]}),
        rule("all", "allow", {"publish": ["devices/#"]}),
    )
    assert policy.decide(RTU, "publish", "devices/rtu-8/x").allowed
    assert not policy.decide(RTU, "publish", "devices/rtu-7/firmware").allowed
    decision = policy.decide(ctx(device_id="a/b"), "publish", "devices/x/y")
    assert (decision.allowed, decision.rule) == (False, "no-peers")
    assert ("#", "deny", "publish") in mqtt_acl(policy, ctx(device_id="a/b"))


# ---------------------------------------------------------------------- ACL export, explain, policy test


def test_mqtt_acl_mirrors_the_policy(engine: PolicyEngine) -> None:
    assert mqtt_acl(engine, RTU, now=NOW) == [
        ("$SYS/#", "deny", "publish"),
        ("$CONTROL/#", "deny", "publish"),
        ("$SYS/#", "deny", "subscribe"),
        ("$CONTROL/#", "deny", "subscribe"),
        ("devices/rtu-7/telemetry/#", "allow", "publish"),
        ("devices/rtu-7/state", "allow", "publish"),
        ("devices/rtu-7/commands/+", "allow", "subscribe"),
        ("groups/plant-a/broadcast/#", "allow", "subscribe"),
    ]
    quarantined = mqtt_acl(engine.policy, ctx(quarantined=True), now=NOW)
    assert quarantined[:2] == [("#", "deny", "publish"), ("#", "deny", "subscribe")] or (
        ("#", "deny", "publish") in quarantined and ("#", "deny", "subscribe") in quarantined
    )
    assert not any(entry[1] == "allow" for entry in quarantined)


def test_explain_lists_the_rules_considered(engine: PolicyEngine) -> None:
    text = explain(engine, ctx(open_alert_severity="high"), "publish", "devices/rtu-7/telemetry/t", now=NOW)
    assert text.splitlines()[0] == "decision: DENY"
    assert "rule:     (none: default deny)" in text
    assert "rtu-telemetry (allow): covers it, but open alert of severity high (at or above high)" in text
    assert "quarantine-lockdown (deny): covers it, but the device meets its conditions" in text


def test_policy_test_takes_a_file_or_inline_json(tmp_path: Path) -> None:
    device = RTU.to_dict()
    path = tmp_path / "device.json"
    path.write_text(json.dumps(device))
    text = policy_test(EXAMPLE, path, "publish", "devices/rtu-7/state", now=NOW)
    assert text.startswith("decision: ALLOW")
    assert "rule:     rtu-telemetry" in text
    inline = policy_test(
        EXAMPLE, json.dumps({**device, "quarantined": True}), "publish", "devices/rtu-7/state", now=NOW
    )
    assert inline.startswith("decision: DENY")
    assert "rule:     quarantine-lockdown" in inline


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ('{"group": "x"}', "non-empty string device_id"),
        ('{"device_id": "a", "verdict": "great"}', "verdict must be one of"),
        ('{"device_id": "a", "colour": "red"}', "unknown device context field"),
        ('{"device_id": "a", "attested_at": "yesterday"}', "not ISO 8601"),
        ("[1, 2]", "must be an object"),
        ("{not json", "device JSON is not valid"),
    ],
)
def test_policy_test_reports_bad_devices_clearly(device: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_test(EXAMPLE, device, "publish", "a")


def test_policy_test_reports_a_bad_action() -> None:
    with pytest.raises(PolicyError, match="unknown action 'write'"):
        policy_test(EXAMPLE, '{"device_id": "a"}', "write", "a")


def test_example_policy_documented_in_yaml_is_the_shipped_one() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert document["version"] == 1


# ---------------------------------------------------------------------- properties

LEVELS = st.sampled_from(["a", "b", "", "$x", "+", "{device_id}", "{group}"])


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(LEVELS, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "a"


@st.composite
def policies(draw: st.DrawFn) -> PolicyEngine:
    rules = []
    for index in range(draw(st.integers(1, 6))):
        effect = draw(st.sampled_from(["allow", "deny"]))
        what = {
            "publish": draw(st.lists(topic_filters(), min_size=1, max_size=3)),
            "subscribe": draw(st.lists(topic_filters(), min_size=1, max_size=3)),
        }
        who: Any = draw(
            st.sampled_from(["any", {"devices": ["a*"]}, {"groups": ["g"]}, {"types": ["rtu", "plc"]}])
        )
        conditions = draw(
            st.sampled_from(
                [
                    None,
                    {"not_quarantined": True},
                    {"verdict": ["healthy"], "attested_within_hours": 24},
                    {"firmware_min": {"M*": "2.0"}, "no_open_alert_at_or_above": "high"},
                ]
            )
        )
        entry = rule(f"r{index}", effect, what, who)
        if conditions:
            entry["conditions"] = conditions
        rules.append(entry)
    return engine_of(*rules)


TEXT = st.text(alphabet=st.sampled_from("ab+#/$\0 é"), max_size=6)
contexts = st.builds(
    DeviceContext,
    device_id=st.one_of(st.sampled_from(["a", "ab", "b"]), TEXT),
    group=st.one_of(st.none(), st.just("g"), TEXT),
    device_type=st.sampled_from([None, "rtu", "plc"]),
    model=st.sampled_from([None, "M1", "X"]),
    firmware=st.sampled_from([None, "1.0", "2.0.1", "garbage"]),
    attested_at=st.sampled_from([None, NOW - dt.timedelta(hours=1), NOW - dt.timedelta(hours=48)]),
    verdict=st.sampled_from([None, "healthy", "compromised"]),
    quarantined=st.booleans(),
    open_alert_severity=st.sampled_from([None, "low", "high"]),
)
topics = st.lists(st.sampled_from(["a", "b", "", "$x", "ab", "+", "#"]), min_size=1, max_size=5).map("/".join)


@settings(max_examples=400, deadline=None)
@given(
    policy=policies(),
    context=contexts,
    action=st.sampled_from(["publish", "subscribe", "connect", "x"]),
    resource=topics | TEXT,
)
def test_decide_never_raises_and_agrees_with_the_naive_reading(
    policy: PolicyEngine, context: DeviceContext, action: str, resource: str
) -> None:
    decision = policy.decide(context, action, resource, now=NOW)
    assert isinstance(decision.allowed, bool)
    assert decision.reasons
    naive = NaiveEvaluator(policy.policy).decide(context, action, resource, now=NOW)
    assert (decision.allowed, decision.rule) == (naive.allowed, naive.rule)
    assert explain(policy, context, action, resource, now=NOW).startswith(
        "decision: ALLOW" if decision.allowed else "decision: DENY"
    )


def independent_regex(topic_filter: str) -> re.Pattern[str]:
    """A second, independent reading of MQTT matching for the property below."""
    out = ""
    for index, level in enumerate(topic_filter.split("/")):
        sep = "" if index == 0 else "/"
        if level == "#":
            out = out + ("(/.*)?" if index else ".*")
            break
        out += sep + ("[^/]*" if level == "+" else re.escape(level))
    if topic_filter[0] in "+#":
        out = r"(?!\$)" + out
    return re.compile(out, re.DOTALL)


@settings(max_examples=400, deadline=None)
@given(
    denied=st.lists(topic_filters().filter(lambda f: "{" not in f), min_size=1, max_size=3),
    context=contexts,
    topic=topics.filter(lambda t: "+" not in t and "#" not in t),
)
def test_a_topic_matched_by_a_deny_rule_is_never_allowed(
    denied: list[str], context: DeviceContext, topic: str
) -> None:
    policy = engine_of(
        rule("allow-everything", "allow", {"publish": ["#", "$x/#", "/#"], "subscribe": ["#"]}),
        rule("deny", "deny", {"publish": denied, "subscribe": denied}),
    )
    if any(independent_regex(f).fullmatch(topic) for f in denied):
        assert not policy.decide(context, "publish", topic, now=NOW).allowed
        assert not policy.decide(context, "subscribe", topic, now=NOW).allowed
