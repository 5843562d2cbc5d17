"""Fingerprint rule files: validation with clear errors, rule semantics, vendor names, user rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldward.errors import ConfigError
from fieldward.inventory.fingerprints import Fingerprints, parse_file
from fieldward.inventory.model import DeviceType
from fieldward.inventory.oui import OuiRegistry


@pytest.fixture(scope="module")
def builtin() -> Fingerprints:
    return Fingerprints.load()


def test_builtin_files_load_and_cover_every_type_level(builtin: Fingerprints) -> None:
    assert len(builtin.rules) > 50
    assert {kind.value for kind in DeviceType} - {"unknown"} == set(builtin.levels)
    names = [rule.name for rule in builtin.rules]
    assert len(names) == len(set(names)), "rule names are unique"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("rules:\n  - {name: x, match: {a: '('}, set: {os: y}, confidence: 0.5}\n", "bad regular expression"),
        (
            "rules:\n  - {name: x, match: {a: b}, set: {colour: y}, confidence: 0.5}\n",
            "unknown attribute 'colour'",
        ),
        ("rules:\n  - {name: x, match: {a: b}, set: {device_type: toaster}, confidence: 0.5}\n", "toaster"),
        ("rules:\n  - {name: x, match: {a: b}, set: {os: y}, confidence: 1.5}\n", "rules.0.confidence"),
        ("rules:\n  - {name: x, match: {}, set: {os: y}, confidence: 0.5}\n", "rules.0.match"),
        ("rules:\n  - {name: x, match: {a: b}, set: {os: y}, confidence: 0.5, extra: 1}\n", "extra"),
        ("levels: {plc: 9}\n", "between 0 and 5"),
        ("vendors:\n  - {name: Acme}\n", "vendors.0.match"),
    ],
)
def test_bad_files_fail_with_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_file("mine.yaml", text)
    assert str(info.value).startswith("mine.yaml: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_user_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read fingerprint file"):
        Fingerprints.load([tmp_path / "absent.yaml"])


def test_rule_groups_unless_and_missing_groups(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "rules:\n"
        "  - name: acme-rtu\n"
        "    match: {http.server: '^AcmeWeb/(?P<version>[\\d.]+)', role: '^dnp3/outstation$'}\n"
        "    unless: {hostname: '^lab-'}\n"
        "    set: {vendor: Acme, firmware: '{version}', model: '{absent}', device_type: rtu}\n"
        "    confidence: 0.9\n"
    )
    rule = next(r for r in Fingerprints.load([path]).rules if r.name == "acme-rtu")
    facts = {"http.server": {"AcmeWeb/2.4.1"}, "role": {"dnp3/outstation", "ntp/client"}}
    assert rule.apply(facts) == {"vendor": "Acme", "firmware": "2.4.1", "device_type": "rtu"}
    assert rule.apply({**facts, "hostname": {"lab-rtu-3"}}) is None
    assert rule.apply({"http.server": {"AcmeWeb/2.4.1"}}) is None
    assert rule.apply({**facts, "http.server": {"acmeweb/3.0"}}) == {
        "vendor": "Acme",
        "firmware": "3.0",
        "device_type": "rtu",
    }  # case-insensitive


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("MOXA TECHNOLOGIES CORP., LTD.", "Moxa"),
        ("TELEMECANIQUE ELECTRIQUE", "Schneider Electric"),
        ("Rockwell Automation/Allen-Bradley", "Rockwell Automation"),
        ("Hangzhou Hikvision Digital Technology Co.,Ltd.", "Hikvision"),
        ("Siemens AG", "Siemens"),
        ("Siemens Energy Global GmbH & Co. KG", "Siemens Energy"),
        ("ABB Oy", "ABB"),
        ("Hewlett Packard", "HP"),
        ("Dell Inc.", "Dell"),
        ("Yamatake Building Systems Co. Ltd.", "Yamatake Building Systems"),
        ("Micro Control Systems Inc.", "Micro Control Systems"),
        ("Cornell University", "Cornell University"),
    ],
)
def test_vendor_names_are_canonical(builtin: Fingerprints, raw: str, canonical: str) -> None:
    assert builtin.vendor(raw) == canonical


def test_user_vendor_aliases_win(tmp_path: Path) -> None:
    path = tmp_path / "vendors.yaml"
    path.write_text("vendors:\n  - {name: Plant Integrator Ltd, match: ['^siemens']}\n")
    assert Fingerprints.load([path]).vendor("Siemens AG") == "Plant Integrator Ltd"


@pytest.mark.parametrize(
    ("mac", "organisation"),
    [
        ("00:1d:9c:00:00:01", "Rockwell Automation"),
        ("28:63:36:aa:bb:cc", "Siemens"),
        ("ac:cc:8e:00:00:01", "Axis"),
        ("02:00:00:00:00:01", None),  # locally administered: no registrant
        ("01:00:5e:00:00:fb", None),  # multicast
        ("not a mac", None),
    ],
)
def test_oui_registry(builtin: Fingerprints, mac: str, organisation: str | None) -> None:
    org = OuiRegistry().organisation(mac)
    assert (builtin.vendor(org) if org else None) == organisation


def test_every_fact_and_source_is_documented(builtin: Fingerprints) -> None:
    from fieldward.inventory.sources import SOURCES

    docs = (Path(__file__).resolve().parents[2] / "docs" / "inventory.md").read_text()
    facts = {fact for rule in builtin.rules for fact, _ in rule.match + rule.unless}
    for fact in sorted(facts):
        name = "attr.<attribute>" if fact.startswith("attr.") else fact
        assert f"`{name}`" in docs, f"fact {fact} is not in docs/inventory.md"
    for log in SOURCES:
        assert f"`{log}`" in docs, f"source {log} is not in docs/inventory.md"
