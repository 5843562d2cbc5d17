"""RDP dissector: built connection starts (scapy) against tshark, coexistence with S7comm on the shared
TPKT/COTP framing (the snap7 corpus capture, S7 connection requests), recognition by content, split
segments, malformed input and fuzzing. The shared corpus has no RDP capture."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import Transport, Verdict
from fieldward.protocols.rdp import RdpDissector, RdpNegotiation, protocol_names, split_variable
from fieldward.protocols.s7comm import S7commDissector
from tests.protocols.test_s7comm import run_capture
from tests.protocols.test_tls import AGG, Collector, documented, run_flights, tshark_fields

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "rdp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "rdp.py"


def tpkt(body: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, 4 + len(body)) + body


def cr(variable: bytes = b"") -> bytes:
    """Client X.224 Connection Request (MS-RDPBCGR 2.2.1.1): LI, CR, DST-REF 0, SRC-REF, class 0."""
    return tpkt(bytes([6 + len(variable), 0xE0, 0, 0, 0x12, 0x34, 0]) + variable)


def cc(variable: bytes = b"") -> bytes:
    """Server X.224 Connection Confirm (2.2.1.2)."""
    return tpkt(bytes([6 + len(variable), 0xD0, 0x12, 0x34, 0x56, 0x78, 0]) + variable)


def neg_req(protocols: int, flags: int = 0) -> bytes:
    return struct.pack("<BBHI", 1, flags, 8, protocols)


def neg_rsp(selected: int, flags: int = 0x0F) -> bytes:
    return struct.pack("<BBHI", 2, flags, 8, selected)


def neg_failure(code: int) -> bytes:
    return struct.pack("<BBHI", 3, 0, 8, code)


def correlation() -> bytes:
    return struct.pack("<BBH", 6, 0, 36) + bytes(range(1, 17)) + bytes(16)


MCS_CONNECT_INITIAL = tpkt(b"\x02\xf0\x80\x7f\x65\x82\x01\x00" + bytes(16))
TLS_HELLO = b"\x16\x03\x01\x00\x05hello"

SESSIONS: dict[str, list[tuple[bool, bytes]]] = {
    "nla": [
        (True, cr(b"Cookie: mstshash=operator\r\n" + neg_req(0x0B))),
        (False, cc(neg_rsp(0x02))),
        (True, TLS_HELLO),
    ],
    "tls_only": [(True, cr(b"Cookie: mstshash=eng01\r\n" + neg_req(0x01))), (False, cc(neg_rsp(0x01)))],
    "standard": [(True, cr(b"Cookie: mstshash=admin\r\n" + neg_req(0x00))), (False, cc(neg_rsp(0x00)))],
    "failure": [(True, cr(neg_req(0x00))), (False, cc(neg_failure(0x05)))],
    "legacy": [(True, cr(b"Cookie: mstshash=scada\r\n")), (False, cc()), (True, MCS_CONNECT_INITIAL)],
    "token": [
        (True, cr(b"Cookie: msts=3640205228.15629.0000\r\n" + neg_req(0x03, 0x08) + correlation())),
        (False, cc(neg_rsp(0x08))),
    ],
}


def test_connection_starts_match_tshark(tshark: str, tmp_path: Path) -> None:
    for name, flights in SESSIONS.items():
        run, capture = run_flights(tmp_path, flights, f"rdp-{name}", port=3389)
        (ours,) = run.rows("rdp")
        fields = ["rdp.rt_cookie", "rdp.negReq.requestedProtocols", "rdp.negReq.selectedProtocol"]
        fields += ["rdp.negFailure.failureCode", "rdp.negReq.flags", "rdp.negRsp.flags"]
        theirs: dict[str, str] = {}
        for frame in tshark_fields(tshark, capture, "rdp", fields):
            theirs.update({k: v for k, v in frame.items() if v and k in fields})
        cookie = theirs.get("rdp.rt_cookie", "")
        if ours["cookie"] is not None:
            assert cookie == f"Cookie: mstshash={ours['cookie']}", name
        elif ours["routing_token"] is not None:
            assert cookie == f"Cookie: msts={ours['routing_token']}", name
        else:
            assert cookie == "", name
        assert ours["requested_protocols_value"] == _int(theirs.get("rdp.negReq.requestedProtocols")), name
        assert ours["request_flags"] == _int(theirs.get("rdp.negReq.flags")), name
        assert ours["response_flags"] == _int(theirs.get("rdp.negRsp.flags")), name
        assert ours["selected_protocol_value"] == _int(theirs.get("rdp.negReq.selectedProtocol")), name
        assert ours["failure_code"] == _int(theirs.get("rdp.negFailure.failureCode")), name
        assert AGG not in str(ours)


def _int(text: str | None) -> int | None:
    return int(text, 0) if text else None


def test_event_values(tmp_path: Path) -> None:
    expected = {
        "nla": ("operator", ["SSL", "HYBRID", "HYBRID_EX"], "HYBRID", True, "negotiation_response"),
        "tls_only": ("eng01", ["SSL"], "SSL", False, "negotiation_response"),
        "standard": ("admin", ["RDP"], "RDP", False, "negotiation_response"),
        "failure": (None, ["RDP"], None, False, "negotiation_failure"),
        "legacy": ("scada", [], "RDP", False, "no_negotiation_data"),
        "token": (None, ["SSL", "HYBRID"], "HYBRID_EX", True, "negotiation_response"),
    }
    for name, flights in SESSIONS.items():
        run, _ = run_flights(tmp_path, flights, f"v-{name}", port=3389)
        (row,) = run.rows("rdp")
        got = (
            row["cookie"],
            row["requested_protocols"],
            row["selected_protocol"],
            row["nla"],
            row["response"],
        )
        assert got == expected[name], name
        assert row["is_orig"] is True
        assert not [w for w in run.rows("weird") if w["protocol"] == "rdp"], name
    run, _ = run_flights(tmp_path, SESSIONS["failure"], "fail2", port=3389)
    assert run.rows("rdp")[0]["failure_reason"] == "HYBRID_REQUIRED_BY_SERVER"
    run, _ = run_flights(tmp_path, SESSIONS["token"], "tok2", port=3389)
    assert run.rows("rdp")[0]["correlation_id"] == bytes(range(1, 17)).hex()
    assert run.rows("rdp")[0]["routing_token"] == "3640205228.15629.0000"


def test_split_segments_and_unusual_port(tmp_path: Path) -> None:
    run, _ = run_flights(tmp_path, SESSIONS["nla"], "split", port=13389, mss=5)
    (row,) = run.rows("rdp")
    assert (row["cookie"], row["selected_protocol"], row["resp_p"]) == ("operator", "HYBRID", 13389)


def test_rdp_on_port_102_and_s7comm_keep_apart(tmp_path: Path, corpus: Path) -> None:
    run, _ = run_flights(tmp_path, SESSIONS["nla"], "p102", port=102)
    assert [r["cookie"] for r in run.rows("rdp")] == ["operator"]
    assert not run.rows("cotp")
    s7 = run_capture(corpus / "s7comm" / "snap7.pcap", tmp_path / "snap7")
    assert not s7.rows("rdp")
    assert s7.rows("s7comm")
    services = set(pq.read_table(tmp_path / "snap7" / "flows.parquet")["service"].to_pylist())
    assert "s7comm" in services
    assert "rdp" not in services


# Connection requests and confirms of S7comm (TSAP parameters), from the snap7 corpus capture's layout.
S7_CR = tpkt(bytes([17, 0xE0, 0, 0, 0, 1, 0]) + b"\xc0\x01\x0a\xc1\x02\x01\x00\xc2\x02\x01\x02")
S7_CC = tpkt(bytes([17, 0xD0, 0, 1, 0, 1, 0]) + b"\xc0\x01\x0a\xc1\x02\x01\x00\xc2\x02\x01\x02")


@pytest.mark.parametrize(
    ("data", "port", "verdict"),
    [
        (cr(b"Cookie: mstshash=a\r\n"), 3389, Verdict.YES),
        (cr(neg_req(3)), 102, Verdict.YES),
        (cc(neg_rsp(2)), 4000, Verdict.YES),
        (cr(), 3389, Verdict.MAYBE),  # a bare request: the confirm or the MCS data decides
        (cr() + MCS_CONNECT_INITIAL, 3389, Verdict.YES),
        (cr()[:5], 3389, Verdict.MAYBE),
        (cr(b"Cookie: mstshash=operator\r\n")[:19], 3389, Verdict.YES),  # a cut request: cookie start
        (S7_CR[:19], 102, Verdict.NO),
        (S7_CR, 102, Verdict.NO),
        (S7_CC, 102, Verdict.NO),
        (tpkt(b"\x02\xf0\x80\x32\x01\x00\x00"), 102, Verdict.NO),  # S7comm data
        (b"GET / HTTP/1.1\r\n", 3389, Verdict.NO),
        (TLS_HELLO, 3389, Verdict.NO),
        (cr(b"Cookie: mstshash=a"), 3389, Verdict.NO),  # cookie without CR LF
        (cr(struct.pack("<BBHI", 1, 0, 9, 3)), 3389, Verdict.NO),  # wrong negotiation length
    ],
)
def test_recognition_by_content(data: bytes, port: int, verdict: Verdict) -> None:
    assert RdpDissector.recognize(data, Transport.TCP, 51000, port) == verdict


def test_s7comm_recogniser_declines_rdp() -> None:
    assert S7commDissector.recognize(cr(b"Cookie: mstshash=a\r\n"), Transport.TCP, 5100, 102) == Verdict.NO
    assert RdpDissector.recognize(b"", Transport.UDP, 1, 3389) == Verdict.NO


def sans_io(chunks: list[tuple[bool, bytes]]) -> Collector:
    collector = Collector("rdp", resp_p=3389)
    dissector = RdpDissector(collector.flow)
    rest = {True: b"", False: b""}
    for is_orig, data in chunks:
        rest[is_orig] = collector.feed(dissector, rest[is_orig] + data, is_orig)
    dissector.close(collector.ctx)
    return collector


@pytest.mark.parametrize(
    ("chunks", "weird"),
    [
        ([(True, cr(b"Cookie: mstshash=a\r\n\x01\x00"))], "rdp_bad_negotiation"),
        ([(True, cr(neg_req(3) + b"xx"))], "rdp_bad_negotiation"),
        ([(True, tpkt(b"\x06\x80\x00\x00\x00\x00\x00"))], "rdp_unexpected_tpdu"),
        ([(True, tpkt(b"\x20\xe0\x00\x00\x00\x00\x00"))], "rdp_bad_length"),
        ([(True, cr(neg_req(3))), (True, cr(neg_req(3)))], "rdp_repeated_request"),
        ([(False, cc(neg_rsp(2))), (False, cc(neg_rsp(2)))], "rdp_repeated_confirm"),
        ([(True, b"\x03\x00\x00\x08\x06\xe0\x00")], "rdp_bad_tpkt"),
    ],
)
def test_malformed_input_gives_weirds(chunks: list[tuple[bool, bytes]], weird: str) -> None:
    collector = Collector("rdp", resp_p=3389)
    dissector = RdpDissector(collector.flow)
    for is_orig, data in chunks:
        collector.ctx.is_orig = is_orig
        if weird == "rdp_bad_tpkt":
            dissector.parse(data[:5], collector.ctx)
        else:
            dissector.parse(data, collector.ctx)
    assert weird in collector.weirds()


def test_request_only_is_reported_at_close_and_confirm_first() -> None:
    collector = sans_io([(True, cr(b"Cookie: mstshash=x\r\n" + neg_req(3)))])
    (event,) = collector.of(RdpNegotiation)
    assert (event.cookie, event.response, event.selected_protocol, event.nla) == ("x", None, None, False)
    collector = sans_io([(False, cc(neg_rsp(8))), (True, cr(neg_req(11)))])
    (event,) = collector.of(RdpNegotiation)
    assert (event.selected_protocol, event.nla, event.requested_protocols_value) == ("HYBRID_EX", True, 11)


def test_protocol_names() -> None:
    assert protocol_names(0) == ["RDP"]
    assert protocol_names(0x1F) == ["SSL", "HYBRID", "RDSTLS", "HYBRID_EX", "RDSAAD"]
    assert protocol_names(0x100) == ["unknown-0x00000100"]
    assert split_variable(b"Cookie: other=1\r\n", True).routing_token == "other=1"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), max_size=8))
def test_fuzz_never_raises(chunks: list[tuple[bool, bytes]]) -> None:
    for _is_orig, data in chunks:
        RdpDissector.recognize(data, Transport.TCP, 1, 3389)
    sans_io(chunks)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_session_never_raises(flips: list[tuple[int, int]]) -> None:
    flights = SESSIONS["token"]
    request = bytearray(flights[0][1])
    for position, value in flips:
        request[position % len(request)] = value
    RdpDissector.recognize(bytes(request), Transport.TCP, 1, 3389)
    collector = sans_io([(True, bytes(request)), flights[1]])
    assert len(collector.of(RdpNegotiation)) <= 1


def test_every_event_field_and_weird_is_documented() -> None:
    documented(DOC, MODULE, "rdp", RdpDissector.event_types, set())
