"""Threat-intelligence files: CSV and STIX 2.1 read into one indicator set, the same indicators from
either format, clear errors naming the file and line or object, and no uncontrolled failure on
fuzzed input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.detect.intel import (
    Comparison,
    Indicator,
    IntelError,
    IntelSet,
    Kind,
    _parse_with_grammar,
    load_intel,
    parse_pattern,
    read_csv,
    read_stix,
)
from fieldward.errors import FieldWardError

JA3 = "e7d705a3286e19ea42f587b344ee6865"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
SHA1 = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def bundle(*indicators: dict[str, Any], extra: Iterable[dict[str, Any]] = ()) -> str:
    objects: list[dict[str, Any]] = [
        {"type": "identity", "spec_version": "2.1", "id": "identity--1", "name": "Feed"},
        *extra,
    ]
    for n, item in enumerate(indicators):
        objects.append(
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": f"indicator--{n:08d}-0000-4000-8000-000000000000",
                "created": "2024-01-01T00:00:00.000Z",
                "modified": "2024-01-01T00:00:00.000Z",
                "valid_from": "2024-01-01T00:00:00Z",
                "pattern_type": "stix",
                **item,
            }
        )
    return json.dumps({"type": "bundle", "id": "bundle--1", "objects": objects}, indent=1)


# --------------------------------------------------------------------------------------------- CSV


def test_csv_types_aliases_comments_and_lookups(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feed.csv",
        "type,value,description\n"
        "# exported from the SOC\n"
        "\n"
        "ip,198.51.100.7,C2 server\n"
        'ip-dst, 2001:DB8::0:1 ,"IPv6, with a comma"\n'
        "cidr,203.0.113.0/25,bulletproof hosting\n"
        "ip,192.0.2.9/32,a /32 is one address\n"
        "hostname,Evil.Example.,\n"
        "domain,*.wild.example,\n"
        "url,HTTP://Bad.Example:80/drop/x.bin?id=1#frag,dropper\n"
        f"ja3-fingerprint-md5,{JA3.upper()},Cobalt Strike default\n"
        f"x509-fingerprint-sha1,{':'.join(SHA1[i : i + 2] for i in range(0, 40, 2))},\n"
        f"sha256,{SHA256},payload\n",
    )
    intel = load_intel([path])
    assert intel.counts() == {
        "cidr": 1,
        "domain": 2,
        "ip": 3,
        "ja3": 1,
        "sha256": 1,
        "url": 1,
        "x509_sha1": 1,
    }
    c2 = intel.match_ip("198.51.100.7", 0)
    assert c2 is not None
    assert (c2.name, c2.source) == ("C2 server", "feed.csv:4")
    assert intel.match_ip("2001:db8::1", 0) is not None
    assert intel.match_ip("192.0.2.9", 0) is not None
    hosting = intel.match_ip("203.0.113.127", 0)
    assert hosting is not None
    assert hosting.kind is Kind.CIDR
    assert intel.match_ip("203.0.113.128", 0) is None  # outside the /25
    assert intel.match_ip("198.51.100.8", 0) is None
    assert intel.match_domain("cdn.EVIL.example.", 0) is not None
    assert intel.match_domain("notevil.example", 0) is None
    assert intel.match_domain("a.wild.example", 0) is not None
    assert intel.match_url("http://bad.example/drop/x.bin?id=1", 0) is not None
    assert intel.match_url("http://bad.example/drop/x.bin", 0) is None
    assert intel.match_hash(Kind.JA3, JA3, 0) is not None
    assert intel.match_hash(Kind.X509_SHA1, SHA1.upper(), 0) is not None
    assert intel.match_hash(Kind.SHA256, SHA256, 0) is not None
    assert intel.match_hash(Kind.JA3S, JA3, 0) is None


# -------------------------------------------------------------------------------------------- STIX


def test_stix_bundle_patterns_and_what_is_skipped(tmp_path: Path) -> None:
    text = bundle(
        {"pattern": "[ipv4-addr:value = '198.51.100.7']", "name": "C2"},
        {
            "pattern": "[ipv6-addr:value = '2001:db8::1'] OR "
            + "[domain-name:value IN ('evil.example', 'bad.example')]"
        },
        {"pattern": "[ipv4-addr:value ISSUBSET '203.0.113.0/24']"},
        {"pattern": "[network-traffic:dst_ref.value = '192.0.2.50']"},
        {"pattern": "[url:value = 'https://bad.example/gate.php']"},
        {"pattern": f"[x-ja3:value = '{JA3}']", "labels": ["ja3"]},
        {"pattern": f"[x509-certificate:hashes.'SHA-256' = '{SHA256}']"},
        {"pattern": f"[file:hashes.MD5 = '{JA3}' OR file:hashes.'SHA-1' = '{SHA1}']"},
        {"pattern": "[ipv4-addr:value = '10.0.0.1' AND domain-name:value = 'x.example']"},
        {"pattern": "[ipv4-addr:value = '10.0.0.2'] FOLLOWEDBY [ipv4-addr:value = '10.0.0.3']"},
        {"pattern": "[ipv4-addr:value = '10.0.0.4'] REPEATS 3 TIMES"},
        {"pattern": "[process:name = 'evil.exe']"},
        {"pattern": 'alert tcp any any -> any 80 (msg:"x";)', "pattern_type": "snort"},
        {"pattern": "[ipv4-addr:value = '10.0.0.5']", "revoked": True},
        {"pattern": "[domain-name:value = 'old.example']", "valid_until": "2020-01-01T00:00:00Z"},
        extra=[{"type": "malware", "spec_version": "2.1", "id": "malware--1", "name": "Mirai"}],
    )
    intel = load_intel([write(tmp_path, "feed.json", text)])
    assert intel.counts() == {
        "cidr": 1,
        "domain": 3,
        "ip": 3,
        "ja3": 1,
        "md5": 1,
        "sha1": 1,
        "url": 1,
        "x509_sha256": 1,
    }
    assert intel.skipped == {
        "pattern uses AND": 1,
        "pattern uses FOLLOWEDBY": 1,
        "pattern uses REPEATS": 1,
        "no comparison FieldWard can observe": 1,
        "pattern_type snort": 1,
        "revoked": 1,
    }
    c2 = intel.match_ip("198.51.100.7", 0)
    assert c2 is not None
    assert c2.name == "C2"
    assert c2.source == "feed.json indicator--00000000-0000-4000-8000-000000000000"
    assert intel.match_ip("203.0.113.200", 0) is not None
    assert intel.match_ip("192.0.2.50", 0) is not None
    assert intel.match_ip("10.0.0.1", 0) is None  # only as part of an AND
    assert intel.match_domain("www.bad.example", 0) is not None
    assert intel.match_hash(Kind.X509_SHA256, SHA256, 0) is not None
    # valid_until: traffic up to the date matches, later traffic does not
    before = 1_500_000_000 * 10**9
    after = 1_600_000_000 * 10**9
    assert intel.match_domain("old.example", before) is not None
    assert intel.match_domain("old.example", after) is None


def test_single_object_and_plain_list_are_accepted(tmp_path: Path) -> None:
    one = {"type": "indicator", "id": "indicator--a", "pattern": "[domain-name:value = 'a.example']"}
    two = {"type": "indicator", "id": "indicator--b", "pattern": "[domain-name:value = 'b.example']"}
    assert len(load_intel([write(tmp_path, "one.json", json.dumps(one))])) == 1
    assert len(load_intel([write(tmp_path, "list.stix", json.dumps([one, two]))])) == 2


def indicators_of(intel: IntelSet) -> set[tuple[str, str, str | None]]:
    found: set[tuple[str, str, str | None]] = set()
    tables: list[dict[Any, Indicator]] = [intel.ips, intel.domains, intel.urls, *intel.networks.values()]
    tables += list(intel.hashes.values())
    for table in tables:
        found |= {(i.kind.value, i.value, i.name) for i in table.values()}
    return found


def as_csv(items: list[tuple[Kind, str, str]]) -> str:
    lines = ["type,value,description"]
    for kind, value, name in items:
        lines.append(f'{kind.value},{value},"{name}"')
    return "\n".join(lines) + "\n"


STIX_PATH = {
    Kind.IP: "ipv4-addr:value",
    Kind.CIDR: "ipv4-addr:value",
    Kind.DOMAIN: "domain-name:value",
    Kind.URL: "url:value",
    Kind.JA3: "x-ja3:value",
    Kind.JA3S: "x-ja3s:value",
    Kind.X509_SHA1: "x509-certificate:hashes.'SHA-1'",
    Kind.X509_SHA256: "x509-certificate:hashes.'SHA-256'",
    Kind.MD5: "file:hashes.MD5",
    Kind.SHA1: "file:hashes.'SHA-1'",
    Kind.SHA256: "file:hashes.'SHA-256'",
}


def as_stix(items: list[tuple[Kind, str, str]]) -> str:
    return bundle(
        *({"pattern": f"[{STIX_PATH[kind]} = '{value}']", "name": name} for kind, value, name in items)
    )


hexes = {n: st.text("0123456789abcdef", min_size=n, max_size=n) for n in (32, 40, 64)}
words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
values: dict[Kind, st.SearchStrategy[str]] = {
    Kind.IP: st.ip_addresses(v=4).map(str),
    Kind.CIDR: st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(8, 30)),
    Kind.DOMAIN: st.lists(words, min_size=2, max_size=4).map(".".join),
    Kind.URL: st.builds(lambda h, p: f"http://{h}.example/{p}", words, words),
    Kind.JA3: hexes[32],
    Kind.JA3S: hexes[32],
    Kind.X509_SHA1: hexes[40],
    Kind.X509_SHA256: hexes[64],
    Kind.MD5: hexes[32],
    Kind.SHA1: hexes[40],
    Kind.SHA256: hexes[64],
}
indicator_items = st.lists(
    st.sampled_from(sorted(values)).flatmap(
        lambda kind: st.tuples(st.just(kind), values[kind], words.map(lambda w: f"note {w}"))
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda item: (item[0], item[1]),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(items=indicator_items)
def test_csv_and_stix_round_trip_to_the_same_indicators(
    tmp_path: Path, items: list[tuple[Kind, str, str]]
) -> None:
    """The same indicators written as CSV and as a STIX bundle load to the same normalised set."""
    from_csv = load_intel([write(tmp_path, "x.csv", as_csv(items))])
    from_stix = load_intel([write(tmp_path, "x.json", as_stix(items))])
    assert indicators_of(from_csv) == indicators_of(from_stix)
    assert len(from_csv) <= len(items)  # overlapping values (192.0.2.0/24 and 192.0.2.0/24) merge
    for kind, value, _name in items:
        if kind is Kind.IP:
            assert from_stix.match_ip(value, 0) is not None
        elif kind is Kind.DOMAIN:
            assert from_stix.match_domain(value.upper(), 0) is not None


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "ip,198.51.100.7\nhost,evil.example\n", r"a\.csv:2: unknown indicator type 'host'"),
        ("a.csv", "type,value\n\nip,999.1.1.1\n", r"a\.csv:3: .*999\.1\.1\.1"),
        ("a.csv", "# c\ncidr,10.0.0.1\n", r"a\.csv:2: not a network"),
        ("a.csv", "ja3,abc\n", r"a\.csv:1: a ja3 is 32 hex digits"),
        ("a.csv", "sha256," + "g" * 64 + "\n", r"a\.csv:1: a sha256 is 64 hex digits"),
        ("a.csv", "domain,bad_label-.example\n", r"a\.csv:1: not a valid domain"),
        ("a.csv", "url,evil.example/x\n", r"a\.csv:1: not a URL"),
        ("a.csv", "ip\n", r"a\.csv:1: expected type,value"),
        ("a.csv", 'ip,"198.51.100.7\n', r"a\.csv:\d+: not valid CSV"),
        (
            "a.json",
            '{"type": "bundle", "objects": [\n  {"type": "indicator",}\n]}',
            r"a\.json:2: not valid JSON",
        ),
        ("a.json", '{"type": "bundle", "objects": {}}', r"a\.json: the bundle's 'objects' is not a list"),
        ("a.json", "42", r"a\.json: not a STIX bundle"),
        ("a.json", '[{"id": "x"}]', r"a\.json: object 0 is not a STIX object"),
        (
            "a.json",
            '[{"type": "indicator", "id": "indicator--z"}]',
            r"object 0 \(indicator--z\): .*'pattern'",
        ),
        (
            "a.json",
            '[{"type": "indicator", "id": "indicator--p", "pattern": "[ipv4-addr:value = "}]',
            r"a\.json: object 0 \(indicator--p\): STIX pattern does not parse",
        ),
        (
            "a.json",
            '[{"type": "x"}, {"type": "indicator", "id": "i--2", '
            '"pattern": "[ipv4-addr:value = \'1.2.3\']"}]',
            r"a\.json: object 1 \(i--2\): .*1\.2\.3",
        ),
        (
            "a.json",
            '[{"type": "indicator", "id": "i", "pattern": "[url:value = \'x\']", "valid_until": "soon"}]',
            r"object 0 \(i\): valid_until 'soon'",
        ),
    ],
)
def test_bad_files_fail_with_file_and_line_or_object(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(IntelError, match=message) as caught:
        load_intel([write(tmp_path, name, text)])
    assert isinstance(caught.value, FieldWardError)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(IntelError, match="no threat-intelligence file at"):
        load_intel([tmp_path / "absent.csv"])
    path = tmp_path / "latin.csv"
    path.write_bytes(b"domain,caf\xe9.example\n")
    with pytest.raises(IntelError, match=r"latin\.csv: not UTF-8"):
        load_intel([path])


def test_cli_reports_a_bad_intel_file_in_one_line(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    capture = tmp_path / "one.pcap"
    wrpcap(str(capture), [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)])
    feed = write(tmp_path, "feed.csv", "ip,198.51.100.7\nipv4,not-an-address\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fieldward.cli",
            "analyze",
            str(capture),
            "-o",
            str(tmp_path / "out"),
            "--intel",
            str(feed),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "feed.csv:2" in lines[0]
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- pattern readings


@pytest.mark.parametrize(
    "pattern",
    [
        "[ipv4-addr:value = '198.51.100.7']",
        "[domain-name:value='evil.example']",
        "[ file:hashes.'SHA-256' = 'abc' ]",
        "[file:hashes.MD5 = 'it\\'s']",
        "[url:value = 'http://x/\\\\path']",
        "[x-ja3:value = '']",
        "[network-traffic:dst_ref.value = '192.0.2.1']",
    ],
)
def test_simple_form_reads_as_the_grammar_does(pattern: str) -> None:
    assert parse_pattern(pattern) == _parse_with_grammar(pattern)


object_types = st.sampled_from(["ipv4-addr", "domain-name", "url", "file", "x-ja3", "x509-certificate"])
paths = st.sampled_from(["value", "hashes.MD5", "hashes.'SHA-256'", "dst_ref.value", "name"])
literal_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@settings(max_examples=150, deadline=None)
@given(object_types, paths, literal_text, st.sampled_from(["", " ", "  "]))
def test_simple_form_agrees_with_the_grammar(object_type: str, path: str, text: str, space: str) -> None:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    pattern = f"[{space}{object_type}:{path}{space}={space}'{escaped}'{space}]"
    fast = parse_pattern(pattern)
    assert fast == _parse_with_grammar(pattern)
    assert fast.comparisons == [
        Comparison(object_type, tuple(p.strip("'") for p in path.split(".")), "=", (text,))
    ]


# ---------------------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
pattern_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda t, p, op, v: f"[{t}:{p} {op} {v}]",
        object_types,
        paths,
        st.sampled_from(["=", "!=", "IN", "ISSUBSET", "LIKE", "MATCHES", ">", "AND"]),
        st.text(max_size=20),
    ),
    st.lists(
        st.sampled_from(["[", "]", "(", ")", "OR", "AND", "FOLLOWEDBY", "ipv4-addr:value", "=", "'1.2.3.4'"])
    ).map(" ".join),
)
indicator_objects = st.fixed_dictionaries(
    {"type": st.just("indicator"), "pattern": pattern_text},
    optional={
        "id": st.text(max_size=10),
        "pattern_type": st.sampled_from(["stix", "snort", 3]),
        "valid_until": st.one_of(st.text(max_size=25), st.just("2030-01-01T00:00:00Z"), st.integers()),
        "revoked": st.booleans(),
        "name": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.lists(indicator_objects, max_size=4), st.text(max_size=200)))
def test_fuzzed_stix_loads_or_fails_cleanly(document: Any) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    try:
        indicators = list(read_stix(text, "fuzz.json", Counter()))
    except IntelError as exc:
        message = str(exc)
    else:
        assert all(isinstance(i, Indicator) for i in indicators)
        return
    assert message.startswith("fuzz.json")


csv_cells = st.one_of(
    st.sampled_from(["ip", "cidr", "domain", "url", "ja3", "sha1", "md5", "sha256", "type", "#", ""]),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(st.lists(csv_cells, max_size=4).map(",".join), max_size=8).map("\n".join),
    )
)
def test_fuzzed_csv_loads_or_fails_cleanly(text: str) -> None:
    try:
        indicators = list(read_csv(text, "fuzz.csv"))
    except IntelError as exc:
        message = str(exc)
    else:
        assert all(isinstance(i, Indicator) for i in indicators)
        return
    assert re.match(r"fuzz\.csv:\d+: ", message)
