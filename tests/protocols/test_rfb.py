"""RFB (VNC) dissector: built handshakes of RFB 3.3, 3.7 and 3.8 (scapy) against tshark, the rule that
the VNC Authentication challenge and response are never stored, recognition by content, split segments,
malformed input and fuzzing. The shared corpus has no VNC capture."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import Transport, Verdict
from fieldward.protocols.rfb import RfbDissector, RfbHandshake, behaviour, security_type_name
from tests.protocols.test_tls import AGG, Collector, documented, ints, run_flights, tshark_fields

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "rfb.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "rfb.py"
CHALLENGE = bytes(range(0xA0, 0xB0))
RESPONSE = bytes(range(0xC0, 0xD0))


def version(text: str) -> bytes:
    return f"RFB {text}\n".encode()


def string(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


def server_init(width: int, height: int, name: bytes) -> bytes:
    pixel_format = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
    return struct.pack(">HH", width, height) + pixel_format + string(name)


SESSIONS: dict[str, list[tuple[bool, bytes]]] = {
    "v38_none": [
        (False, version("003.008")),
        (True, version("003.008")),
        (False, b"\x02\x01\x02"),
        (True, b"\x01"),
        (False, struct.pack(">I", 0)),
        (True, b"\x01"),
        (False, server_init(1280, 800, b"line3-hmi")),
    ],
    "v38_vnc_failed": [
        (False, version("003.008")),
        (True, version("003.008")),
        (False, b"\x01\x02"),
        (True, b"\x02"),
        (False, CHALLENGE),
        (True, RESPONSE),
        (False, struct.pack(">I", 1) + string(b"Authentication failed")),
    ],
    "v37_vnc_ok": [
        (False, version("003.007")),
        (True, version("003.007")),
        (False, b"\x01\x02"),
        (True, b"\x02"),
        (False, CHALLENGE),
        (True, RESPONSE),
        (False, struct.pack(">I", 0)),
        (True, b"\x00"),
        (False, server_init(1024, 768, b"scada01:0")),
    ],
    "v33_none": [
        (False, version("003.003")),
        (True, version("003.003")),
        (False, struct.pack(">I", 1)),
        (True, b"\x01"),
        (False, server_init(800, 600, b"panel")),
    ],
    "v33_vnc": [
        (False, version("003.003")),
        (True, version("003.003")),
        (False, struct.pack(">I", 2)),
        (False, CHALLENGE),
        (True, RESPONSE),
        (False, struct.pack(">I", 0)),
        (True, b"\x01"),
        (False, server_init(640, 480, b"x")),
    ],
    "v38_vencrypt": [
        (False, version("003.008")),
        (True, version("003.008")),
        (False, b"\x02\x13\x02"),
        (True, b"\x13"),
        (False, b"\x00\x02"),
    ],
    "v38_refused": [
        (False, version("003.008")),
        (True, version("003.008")),
        (False, b"\x00" + string(b"Too many security failures")),
    ],
}

EXPECTED = {
    # security types, chosen, server chosen, no_auth, result, failure reason, shared, size, name
    "v38_none": ([1, 2], 1, False, True, "ok", None, True, (1280, 800), "line3-hmi"),
    "v38_vnc_failed": ([2], 2, False, False, "failed", "Authentication failed", None, (None, None), None),
    "v37_vnc_ok": ([2], 2, False, False, "ok", None, False, (1024, 768), "scada01:0"),
    "v33_none": ([1], 1, True, True, None, None, True, (800, 600), "panel"),
    "v33_vnc": ([2], 2, True, False, "ok", None, True, (640, 480), "x"),
    "v38_vencrypt": ([19, 2], 19, False, False, None, None, None, (None, None), None),
    "v38_refused": (
        [],
        None,
        False,
        False,
        "refused",
        "Too many security failures",
        None,
        (None, None),
        None,
    ),
}


def test_event_values(tmp_path: Path) -> None:
    for name, flights in SESSIONS.items():
        run, _ = run_flights(tmp_path, flights, f"v-{name}", port=5900)
        (row,) = run.rows("rfb")
        got = (
            row["security_types"],
            row["security_type"],
            row["server_chosen"],
            row["no_auth"],
            row["result"],
            row["failure_reason"],
            row["shared"],
            (row["width"], row["height"]),
            row["desktop_name"],
        )
        assert got == EXPECTED[name], name
        assert row["is_orig"] is True
        assert row["server_version"] == flights[0][1][4:11].decode()
        assert not [w for w in run.rows("weird") if w["protocol"] == "rfb"], name


def test_handshakes_match_tshark(tshark: str, tmp_path: Path) -> None:
    fields = ["vnc.server_proto_ver", "vnc.client_proto_ver", "vnc.server_security_type"]
    fields += ["vnc.client_security_type", "vnc.auth_result", "vnc.auth_error", "vnc.share_desktop_flag"]
    fields += ["vnc.width", "vnc.height", "vnc.desktop_name", "vnc.security_type"]
    for name, flights in SESSIONS.items():
        run, capture = run_flights(tmp_path, flights, f"t-{name}", port=5900)
        (ours,) = run.rows("rfb")
        theirs: dict[str, str] = {}
        for frame in tshark_fields(tshark, capture, "vnc", fields):
            theirs.update({k: v for k, v in frame.items() if v and k in fields})
        assert ours["server_version"] == theirs["vnc.server_proto_ver"], name
        assert ours["client_version"] == theirs["vnc.client_proto_ver"], name
        offered = ints(theirs.get("vnc.server_security_type", "")) or ints(
            theirs.get("vnc.security_type", "")
        )
        assert ours["security_types"] == offered, name
        if not ours["server_chosen"] and ours["security_type"] is not None:
            assert ours["security_type"] == int(theirs["vnc.client_security_type"]), name
        if ours["result_code"] is not None:
            assert ours["result_code"] == int(theirs["vnc.auth_result"], 0) or (
                ours["result_code"] == 0 and theirs["vnc.auth_result"] in ("0", "False")
            ), name
        if "vnc.desktop_name" in theirs:
            assert ours["desktop_name"] == theirs["vnc.desktop_name"], name
            assert (ours["width"], ours["height"]) == (int(theirs["vnc.width"]), int(theirs["vnc.height"]))
        if ours["failure_reason"] is not None and "vnc.auth_error" in theirs:
            assert ours["failure_reason"] == theirs["vnc.auth_error"], name
        assert AGG not in str(ours)


def test_challenge_and_response_are_never_stored(tmp_path: Path) -> None:
    for name in ("v38_vnc_failed", "v37_vnc_ok", "v33_vnc"):
        _run, _ = run_flights(tmp_path, SESSIONS[name], f"s-{name}", port=5900)
        for path in (tmp_path / f"out-s-{name}" / "events").glob("*.parquet"):
            text = repr(pq.read_table(path).to_pylist())
            assert CHALLENGE.hex() not in text
            assert RESPONSE.hex() not in text
            assert repr(CHALLENGE)[2:-1] not in text
            assert repr(RESPONSE)[2:-1] not in text


def test_split_segments_and_unusual_port(tmp_path: Path) -> None:
    run, _ = run_flights(tmp_path, SESSIONS["v37_vnc_ok"], "split", port=15900, mss=3)
    (row,) = run.rows("rfb")
    assert (row["security_type"], row["desktop_name"], row["resp_p"]) == (2, "scada01:0", 15900)


def test_all_client_bytes_before_server_bytes() -> None:
    """Buffered out of order (the engine hands both heads at once): the state machine waits."""
    flights = SESSIONS["v38_none"]
    collector = Collector("rfb", resp_p=5900)
    dissector = RfbDissector(collector.flow)
    for is_orig in (True, False):
        collector.ctx.is_orig = is_orig
        dissector.parse(b"".join(data for client, data in flights if client == is_orig), collector.ctx)
    (event,) = collector.of(RfbHandshake)
    assert (event.security_type, event.no_auth, event.desktop_name) == (1, True, "line3-hmi")


@pytest.mark.parametrize(
    ("data", "port", "verdict"),
    [
        (b"RFB 003.008\n", 5900, Verdict.YES),
        (b"RFB 003.889\n", 6000, Verdict.YES),
        (b"RFB 00", 5900, Verdict.MAYBE),
        (b"RFB x", 5900, Verdict.NO),
        (b"RFB 003.008\r\n", 5900, Verdict.NO),
        (b"SSH-2.0-OpenSSH\r\n", 5900, Verdict.NO),
        (b"GET / HTTP/1.1\r\n", 5900, Verdict.NO),
    ],
)
def test_recognition_by_content(data: bytes, port: int, verdict: Verdict) -> None:
    assert RfbDissector.recognize(data, Transport.TCP, 40000, port) == verdict


def sans_io(chunks: list[tuple[bool, bytes]]) -> Collector:
    collector = Collector("rfb", resp_p=5900)
    dissector = RfbDissector(collector.flow)
    for is_orig, data in chunks:
        collector.feed(dissector, data, is_orig)
    dissector.close(collector.ctx)
    return collector


@pytest.mark.parametrize(
    ("chunks", "weird"),
    [
        ([(False, b"RFB 3.8      \n")], "rfb_bad_version"),
        ([(False, version("003.008")), (True, version("003.008")), (False, b"\x00\xff\xff\xff\xff")],
         "rfb_bad_string_length"),
        ([(False, version("003.003")), (True, version("003.003")), (False, b"\x00\x00\x01\x00")],
         "rfb_bad_security_type"),
        ([(False, version("003.008")), (True, version("003.008")), (False, b"\x01\x02"), (True, b"\x01")],
         "rfb_unoffered_security_type"),
        ([(False, version("003.007")), (True, version("003.007")), (False, b"\x01\x02"), (True, b"\x02"),
          (False, CHALLENGE + b"\x00\x00\x00\x07")], "rfb_bad_security_result"),
        ([(True, version("003.008")), (True, b"\x00" * (70 * 1024))], "rfb_too_much_data"),
    ],
)  # fmt: skip
def test_malformed_input_gives_weirds(chunks: list[tuple[bool, bytes]], weird: str) -> None:
    assert weird in sans_io(chunks).weirds()


def test_handshake_cut_short_is_reported_at_close() -> None:
    (event,) = sans_io(SESSIONS["v38_none"][:3]).of(RfbHandshake)
    assert (event.security_types, event.security_type, event.no_auth) == ([1, 2], None, False)
    assert sans_io([]).of(RfbHandshake) == []


def test_helpers() -> None:
    assert [behaviour(v) for v in ("003.003", "003.005", "003.007", "003.008", "003.889", "004.001")] == [
        3,
        3,
        7,
        8,
        8,
        8,
    ]
    assert [security_type_name(t) for t in (1, 2, 19, 7, 99)] == [
        "None",
        "VNC Authentication",
        "VeNCrypt",
        "RealVNC-7",
        "unknown-99",
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=60)), max_size=10))
def test_fuzz_never_raises(chunks: list[tuple[bool, bytes]]) -> None:
    for _is_orig, data in chunks:
        RfbDissector.recognize(data, Transport.TCP, 1, 5900)
    sans_io([(False, version("003.008")), (True, version("003.008")), *chunks])
    sans_io(chunks)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(SESSIONS)),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_fuzz_mutated_sessions_never_raise_nor_leak(name: str, flips: list[tuple[int, int]]) -> None:
    flights = SESSIONS[name]
    stream = bytearray(b"".join(data for _, data in flights))
    owners = [client for client, data in flights for _ in data]
    for position, value in flips:
        stream[position % len(stream)] = value
    chunks = [(owners[i], bytes(stream[i : i + 1])) for i in range(len(stream))]
    events = sans_io(chunks).of(RfbHandshake)
    assert len(events) <= 1
    assert CHALLENGE not in repr(events).encode()
    assert RESPONSE.hex() not in repr(events)


def test_every_event_field_and_weird_is_documented() -> None:
    documented(DOC, MODULE, "rfb", RfbDissector.event_types, set())
