"""The EtherNet/IP explicit-messaging fast path (SendRRData over TCP) gives exactly the per-PDU output.

Differential tests in the style of ``test_fast_path.py``: the same TCP conversations dissected with and
without fast paths, in batches of several sizes, must give the same events (per log, in order) and the
same weirds. PDUs the fast path must leave to ``parse`` (Multiple Service Packets, Unconnected Send,
Forward Open, Reset, bad paths, other CPF layouts, options, trailing bytes, truncated statuses, PDUs
split across segments or packed together) are mixed in, and replies are named from the request with
the same sender context whichever path dissected it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.protocols.base import Event, ProtocolWeird
from fieldward.protocols.enip import CipHeader, EnipDissector, EnipHeader
from tests.protocols.test_fast_path import _assert_same_output, _by_log, _tcp, run_dissector

SEND_RR_DATA = 0x6F


def _rr(
    context: int,
    message: bytes,
    items: list[tuple[int, bytes]] | None = None,
    options: int = 0,
    status: int = 0,
    session: int = 0x1234,
    trailing: bytes = b"",
) -> bytes:
    """A SendRRData encapsulation message; by default a Null Address item and an Unconnected Data item
    holding ``message``."""
    if items is None:
        items = [(0x0000, b""), (0x00B2, message)]
    cpf = struct.pack("<IHH", 0, 5, len(items))
    cpf += b"".join(struct.pack("<HH", kind, len(data)) + data for kind, data in items)
    header = struct.pack(
        "<HHII8sI", SEND_RR_DATA, len(cpf), session, status, context.to_bytes(8, "little"), options
    )
    return header + cpf + trailing


def _request(service: int, path: bytes, data: bytes = b"") -> bytes:
    return bytes([service, len(path) // 2]) + path + data


def _reply(service: int, status: int = 0, extended: list[int] | None = None, data: bytes = b"") -> bytes:
    words = extended or []
    return (
        bytes([service | 0x80, 0, status, len(words)]) + b"".join(struct.pack("<H", w) for w in words) + data
    )


def _symbol(name: bytes) -> bytes:
    return bytes([0x91, len(name)]) + name + (b"\x00" if len(name) % 2 else b"")


IDENTITY_PATH = bytes([0x20, 0x01, 0x24, 0x01, 0x30, 0x07])
CM_PATH = bytes([0x20, 0x06, 0x24, 0x01])
FORWARD_OPEN_DATA = bytes(36) + b"\x01\x00"

SEGMENTS: list[tuple[bool, bytes]] = [
    (True, _rr(1, _request(0x4C, _symbol(b"Motor_Status"), b"\x01\x00"))),
    (False, _rr(1, _reply(0x4C, data=b"\xc1\x00\x01"))),
    (True, _rr(2, _request(0x0E, IDENTITY_PATH))),
    (False, _rr(2, _reply(0x0E, data=b"Pump"))),
    (True, _rr(3, _request(0x4D, _symbol(b"Setpoint_Temp"), b"\xca\x00\x01\x00\x00\x00\x20\x41"))),
    (False, _rr(3, _reply(0x4D, status=0x05, extended=[0x0204]))),  # extended status
    (False, _rr(77, _reply(0x4C))),  # no request with that context: unmatched
    (True, _rr(4, _request(0x4B, bytes([0x20, 0x67, 0x24, 0x01])))),  # object-specific service
    (False, _rr(4, _reply(0x4B))),  # named from the request's class
    (True, _rr(5, _request(0x54, CM_PATH, FORWARD_OPEN_DATA))),  # Forward Open: parse()
    (False, _rr(5, _reply(0x54, status=0x01, extended=[0x0100]))),
    (True, _rr(6, _request(0x0A, bytes([0x20, 0x02, 0x24, 0x01]), b"\x01\x00\x04\x00\x02\x00\x20\x01"))),
    (True, _rr(7, _request(0x05, bytes([0x20, 0x01, 0x24, 0x01]), b"\x01"))),  # Reset: parse()
    (False, _rr(7, _reply(0x05))),
    (True, _rr(8, _request(0x4C, bytes([0x91, 0x09, 0x41])))),  # truncated symbol: parse(), a weird
    (False, _rr(8, _reply(0x4C))),
    (True, _rr(9, _request(0x0E, IDENTITY_PATH), options=1)),  # options: parse(), a weird
    (False, _rr(9, _reply(0x0E), trailing=b"\x00\x00")),  # trailing bytes: the frame ends before them
    (True, _rr(10, b"", items=[(0x0000, b""), (0x00B2, _request(0x0E, IDENTITY_PATH)), (0x0000, b"")])),
    (False, _rr(10, b"", items=[(0x00B2, _reply(0x0E))])),  # one item only: parse()
    (True, _rr(11, _request(0x0E, IDENTITY_PATH)) + _rr(12, _request(0x4C, _symbol(b"A")))),  # packed
    (False, _rr(12, _reply(0x4C)) + _rr(11, _reply(0x0E))),  # answered out of order
    (True, _rr(13, _request(0x0E, IDENTITY_PATH))[:30]),  # split across two segments
    (True, _rr(13, _request(0x0E, IDENTITY_PATH))[30:]),
    (False, _rr(13, bytes([0x8E, 0, 0, 2, 1, 0]))),  # additional status truncated: parse(), a weird
    (True, _rr(14, _request(0x52, CM_PATH, b"\x0a\x0e\x06\x00" + _request(0x0E, IDENTITY_PATH)))),
    (False, _rr(14, _reply(0x0E))),  # answers the Unconnected Send's embedded request
    (True, _rr(15, bytes([0x4C]))),  # request without a path size: parse(), a weird
    (False, _rr(15, _reply(0x4C), status=0x64, session=0)),  # encapsulation status
]


def _enip_tcp(segments: list[tuple[bool, bytes]], cport: int = 40001) -> list[bytes]:
    return [_retarget(p) for p in _tcp(segments, cport=cport)]


def _retarget(packet: bytes) -> bytes:
    """``_tcp`` builds port-502 conversations: move them to EtherNet/IP's port 44818."""
    frame = Ether(packet)
    tcp = frame.payload.payload
    if tcp.sport == 502:
        tcp.sport = 44818
    if tcp.dport == 502:
        tcp.dport = 44818
    del frame.payload.chksum
    del tcp.chksum
    return bytes(frame)


def _run(
    packets: list[bytes], fast: bool, batch_size: int, writer: bool = True
) -> tuple[list[Event], dict[str, int]]:
    return run_dissector(EnipDissector, packets, fast, batch_size, writer)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_enip_fast_and_per_pdu_agree(batch_size: int) -> None:
    packets = _enip_tcp(SEGMENTS) + _enip_tcp(SEGMENTS[:4], cport=40002)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
    plain, _ = _run(packets, fast=True, batch_size=batch_size, writer=False)
    assert plain == slow
    cip = [
        e for e in fast if isinstance(e, CipHeader) and e.orig_p == 40001 and e.parent_service_code is None
    ]
    assert [(e.direction, e.cip_service, e.cip_status, e.cip_extended_status_code) for e in cip[:8]] == [
        ("request", "Read Tag", None, None),
        ("response", "Read Tag", "Success", None),
        ("request", "Get Attribute Single", None, None),
        ("response", "Get Attribute Single", "Success", None),
        ("request", "Write Tag", None, None),
        ("response", "Write Tag", "Path Destination Unknown", 0x0204),
        ("response", "unknown", "Success", None),
        ("request", "Execute PCCC", None, None),
    ]
    assert (cip[8].direction, cip[8].cip_service) == ("response", "Execute PCCC")  # named from its request
    assert (cip[2].class_name, cip[2].instance_id, cip[2].attribute_id) == ("Identity", 1, 7)
    assert cip[0].request_path == "symbol:Motor_Status"
    headers = [e for e in fast if isinstance(e, EnipHeader) and e.orig_p == 40001]
    assert headers[0].cpf_item_types == [0, 0xB2]
    assert headers[0].sender_context == (1).to_bytes(8, "little")
    names = {e.name for e in fast if isinstance(e, ProtocolWeird)}
    assert {"enip_nonzero_options", "enip_cip_bad_path", "enip_cip_truncated"} <= names


def test_enip_fast_path_takes_the_common_pdus(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    original = EnipDissector.parse

    def parse(self: EnipDissector, pdu: bytes, ctx: object) -> None:
        seen.append(pdu)
        original(self, pdu, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(EnipDissector, "parse", parse)
    _run(_enip_tcp(SEGMENTS[:9]), fast=True, batch_size=1000)
    assert seen == []  # every PDU of these nine went through the fast path
    _run(_enip_tcp(SEGMENTS[9:11]), fast=True, batch_size=1000)
    assert len(seen) == 2  # Forward Open and its reply: parse()


def test_enip_fast_path_parquet_matches(tmp_path: Path) -> None:
    packets = _enip_tcp(SEGMENTS) + _enip_tcp(SEGMENTS, cport=40003)
    capture = tmp_path / "enip.pcap"
    wrpcap(str(capture), [Ether(p) for p in packets])
    tables = _assert_same_output(capture, tmp_path)
    assert tables["events/cip.parquet"].num_rows > 50


_paths = st.one_of(
    st.builds(_symbol, st.binary(min_size=1, max_size=6)),
    st.sampled_from(
        [IDENTITY_PATH, CM_PATH, bytes([0x20, 0x67, 0x24, 0x01]), b"", bytes([0x91, 0x09, 0x41])]
    ),
    st.binary(max_size=6).map(lambda b: b + b"\x00" * (len(b) % 2)),
)
_services = st.sampled_from([0x0E, 0x4C, 0x4D, 0x4B, 0x54, 0x4E, 0x52, 0x0A, 0x05, 0x01])
_messages = st.one_of(
    st.builds(_request, _services, _paths, st.binary(max_size=6)),
    st.builds(
        _reply,
        _services,
        st.sampled_from([0, 1, 5, 0x1E]),
        st.lists(st.integers(0, 0xFFFF), max_size=2),
        st.binary(max_size=4),
    ),
    st.binary(max_size=6),
)
_pdus = st.one_of(
    st.builds(lambda c, msg: _rr(c, msg), st.integers(0, 3), _messages),
    st.builds(lambda c, msg, o: _rr(c, msg, options=o), st.integers(0, 3), _messages, st.integers(0, 1)),
    st.builds(
        lambda c, msg: _rr(c, b"", items=[(0x00B2, msg)]), st.integers(0, 3), _messages
    ),  # no address item
    st.builds(
        lambda pdu, cut: pdu[:cut],
        st.builds(lambda c, msg: _rr(c, msg), st.integers(0, 3), _messages),
        st.integers(0, 50),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _pdus), min_size=1, max_size=10), st.integers(1, 6))
def test_fuzz_enip_fast_path_equals_per_pdu(segments: list[tuple[bool, bytes]], batch_size: int) -> None:
    packets = _enip_tcp([(True, _rr(0, _request(0x0E, IDENTITY_PATH))), *segments])
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
