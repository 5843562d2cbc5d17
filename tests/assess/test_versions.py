"""Version normalisation, ordering and ranges as vendors and feeds write them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.assess.model import VersionRange
from fieldward.assess.versions import (
    VersionScheme,
    builtin_schemes,
    compare,
    in_range,
    parse_range,
    parse_version,
)

SCHNEIDER = builtin_schemes().scheme_for("schneider-electric", "modicon_m340_firmware")


@pytest.mark.parametrize(
    ("text", "release", "clean"),
    [
        ("V4.2.3", (4, 2, 3), "4.2.3"),
        ("v2.9.4", (2, 9, 4), "2.9.4"),
        ("2.10.001", (2, 10, 1), "2.10.001"),
        ("02.10.001", (2, 10, 1), "02.10.001"),
        ("20.08", (20, 8), "20.08"),
        ("33.11", (33, 11), "33.11"),
        ("33.011", (33, 11), "33.011"),
        ("R2.1", (2, 1), "2.1"),
        ("Firmware 1.2", (1, 2), "1.2"),
        ("FW: Rev 3", (3,), "3"),
        ("4.3 Build 19011514", (4, 3), "4.3"),
        ("2.9.4 (build 1234)", (2, 9, 4), "2.9.4"),
        ("V3.5.0", (3, 5), "3.5.0"),
    ],
)
def test_vendor_spellings_normalise(text: str, release: tuple[int, ...], clean: str) -> None:
    parsed = parse_version(text)
    assert parsed is not None
    assert parsed.release == release
    assert parsed.clean == clean


def test_build_metadata_is_kept_but_not_compared() -> None:
    moxa = parse_version("4.3 Build 19011514")
    assert moxa is not None
    assert moxa.build == "19011514"
    assert compare("4.3 Build 19011514", "4.3 Build 20010112") == 0
    assert compare("4.3 Build 19011514", "V4.3") == 0
    assert compare("4.3 Build 19011514", "4.4") == -1


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("2.9.4", "2.10.001", -1),  # numeric, not textual (univers' intdot/generic get this wrong)
        ("V2.9.4", "2.9.4", 0),
        ("33.11", "33.011", 0),  # Rockwell major.minor revision
        ("3.5", "3.5.0", 0),
        ("1.0.0-beta", "1.0.0", -1),
        ("1.0.0-alpha", "1.0.0-beta", -1),
        ("1.0.0-rc1", "1.0.0", -1),
        ("1.0.0-dev", "1.0.0-alpha", -1),
        ("V5.4 SP3", "V5.4", 1),
        ("V5.4 SP3", "V5.4 SP1", 1),
        ("V5.4 Service Pack 2", "V5.4 SP3", -1),
        ("V5.4 SP3", "5.4.1", -1),
        ("7.4p1", "7.4", 1),
        ("8.9p1", "9.0", -1),
        ("1.0.2k", "1.0.2", 1),
        ("1.0.2k", "1.0.2l", -1),
        ("2.0b1", "2.0", -1),
        ("20.08", "20.11", -1),
        ("V3.50", "3.5", 1),  # without the Schneider scheme 50 > 5
    ],
)
def test_ordering(left: str, right: str, expected: int) -> None:
    assert compare(left, right) == expected
    assert compare(right, left) == -expected


def test_schneider_minor_is_a_two_digit_fraction() -> None:
    assert SCHNEIDER.minor_digits == 2
    assert compare("V3.50", "3.5", SCHNEIDER) == 0
    assert compare("V3.5", "3.40", SCHNEIDER) == 1
    assert compare("V3.05", "3.5", SCHNEIDER) == -1
    assert compare("V3.01", "V3.10", SCHNEIDER) == -1
    # the scheme only applies to the products it names
    assert builtin_schemes().scheme_for("schneider-electric", "ecostruxure_machine_expert") == VersionScheme()
    assert builtin_schemes().scheme_for("siemens", "modicon_m340_firmware") == VersionScheme()


@pytest.mark.parametrize("text", ["SP1", "unknown", "", "   ", "n/a", "-", "*", "x" * 500, "V", "beta"])
def test_texts_without_a_release_are_not_versions(text: str) -> None:
    assert parse_version(text) is None
    assert compare(text, "1.0") is None
    assert in_range(text, VersionRange(end_excluding="2.0")) is None


def test_non_strings_are_not_versions() -> None:
    assert parse_version(None) is None
    assert parse_version(True) is None
    assert parse_version(["1.0"]) is None
    assert parse_version(33) is not None


def test_in_range_nvd_bounds() -> None:
    bounds = VersionRange(start_including="28.011", end_excluding="33.017")
    assert in_range("33.11", bounds) is True
    assert in_range("33.017", bounds) is False
    assert in_range("33.17", bounds) is False
    assert in_range("28.11", bounds) is True
    assert in_range("27.99", bounds) is False
    assert in_range("V2.9.4", VersionRange(end_excluding="2.9.2")) is False
    assert in_range("V2.9.1", VersionRange(end_excluding="2.9.2")) is True
    assert in_range("4.2", VersionRange(end_including="4.2")) is True
    assert in_range("4.2.1", VersionRange(end_including="4.2")) is False
    assert in_range("1.0", VersionRange(start_excluding="1.0")) is False
    assert in_range(None, VersionRange(end_excluding="2.0")) is None
    assert in_range("anything", VersionRange()) is True  # unbounded: every version
    assert in_range("1.0", VersionRange(end_excluding="garbage")) is None


def test_in_range_exact_and_wildcards() -> None:
    assert in_range("V2.9.4", "2.9.4") is True
    assert in_range("V2.9.4", "2.9.5") is False
    assert in_range("V2.9.4", "*") is True
    assert in_range("V2.9.4", "-") is True
    assert in_range("junk", "2.9.4") is None


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("vers:intdot/<2.9.2", ["2.9.1", "V2.2"], ["2.9.2", "2.10"]),
        ("vers:generic/>=1.0|<2.0", ["1.0", "1.9.9"], ["0.9", "2.0"]),
        ("vers:intdot/<2|>=3", ["1.5", "3.0", "10"], ["2.0", "2.5"]),
        ("vers:all/*", ["0.1", "99"], []),
        ("<V2.9.2", ["V2.9.1"], ["V2.9.2"]),
        ("<=4.2", ["4.2", "4.1.9"], ["4.2.1"]),
        (">=V1.0 <V3.0", ["1.0", "2.99"], ["0.9", "3.0"]),
        ("All versions < V2.9.7", ["V2.9.4"], ["V2.9.7", "V3.0"]),
        ("All versions >= V2.0 < V2.9.7", ["V2.9.4"], ["V1.9", "V2.9.7"]),
        ("V4.0 and prior", ["4.0", "3.9"], ["4.0.1"]),
        ("4.2 and later", ["4.2", "5"], ["4.1"]),
        ("versions prior to V2.9.7", ["2.9.6"], ["2.9.7"]),
        ("before 3.0", ["2.9"], ["3.0"]),
        (">= 1.0, < 2.0", ["1.5"], ["2.0"]),
        ("V2.0 - V2.9", ["2.0", "2.9"], ["3.0", "1.9"]),
        ("All versions", ["1.0"], []),
        ("< V3.1 SP2", ["V3.1 SP1", "V3.1"], ["V3.1 SP2", "V3.2"]),
    ],
)
def test_csaf_ranges(text: str, inside: list[str], outside: list[str]) -> None:
    spec = parse_range(text)
    assert spec is not None, text
    for version in inside:
        assert in_range(version, spec) is True, (text, version)
    for version in outside:
        assert in_range(version, spec) is False, (text, version)


@pytest.mark.parametrize(
    "text",
    ["", "garbage text", "vers:nosuchscheme/<1.0", "vers:intdot/", "vers:intdot/<<1.0", "see advisory"],
)
def test_unreadable_ranges(text: str) -> None:
    assert parse_range(text) is None


def test_unknown_version_in_a_range_is_none() -> None:
    spec = parse_range("All versions < V2.9.7")
    assert spec is not None
    assert in_range(None, spec) is None
    assert in_range("unknown", spec) is None


versions = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[vVrR]?\d{1,3}(\.\d{1,3}){0,3}([ -]?(sp|beta|rc|p|build )\d{0,3})?", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(versions, versions, versions)
def test_ordering_is_a_total_order_consistent_with_equality(a: str, b: str, c: str) -> None:
    parsed = [parse_version(text) for text in (a, b, c)]
    if any(p is None for p in parsed):
        return
    x, y, z = parsed
    assert x is not None
    assert y is not None
    assert z is not None
    assert (x < y) + (x == y) + (x > y) == 1  # trichotomy
    if x == y:
        assert hash(x) == hash(y)
    if x <= y and y <= z:
        assert x <= z  # transitivity
    if x == y:
        assert compare(a, c) == compare(b, c)
    assert (x <= y) == (x < y or x == y)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_junk_never_raises(version: str, bounds: str) -> None:
    parse_version(version)
    spec = parse_range(bounds)
    if spec is not None:
        assert in_range(version, spec) in (True, False, None)
    assert in_range(version, bounds) in (True, False, None)
    assert in_range(version, VersionRange(end_excluding=bounds or None)) in (True, False, None)
    parse_range("vers:intdot/" + bounds)
