"""Template stamping: vectorized packets must equal frames built one by one in Python."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.generator.build import (
    ACK,
    PSH,
    Events,
    Link,
    Slot,
    Stack,
    TcpConversation,
    TemplateTable,
    internet_checksum,
    stamp,
    tcp_frame,
    udp_frame,
)

LINUX = Stack(ttl=64, syn_window=64240, window_scale=7, window_bytes=64256)
PLC = Stack(ttl=30, syn_window=8192, window_scale=None, window_bytes=8192, df=False)
CLIENT = Link(b"\x02" * 6, b"\x04" * 6, bytes([10, 10, 2, 10]), bytes([10, 10, 1, 20]), LINUX)
SERVER = Link(b"\x04" * 6, b"\x02" * 6, bytes([10, 10, 1, 20]), bytes([10, 10, 2, 10]), PLC)


def stamped(table: TemplateTable, events: Events) -> list[bytes]:
    lengths = table.length[events.tpl]
    offsets = np.cumsum(lengths + 16) - lengths
    out = np.zeros(int((lengths + 16).sum()), dtype=np.uint8)
    stamp(table, events, out, offsets)
    return [out[o : o + n].tobytes() for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]


u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)


@settings(max_examples=80, deadline=None)
@given(
    payload=st.binary(min_size=0, max_size=1200),
    seq=u32,
    ack=u32,
    ident=u16,
    counter=u16,
    slot_at=st.integers(0, 8),
)
def test_tcp_template_matches_literal_frame(
    payload: bytes, seq: int, ack: int, ident: int, counter: int, slot_at: int
) -> None:
    table = TemplateTable()
    slots = (Slot(54 + slot_at, 2),) if len(payload) >= slot_at + 2 else ()
    tpl = table.add(tcp_frame(CLIENT, 50000, 502, 0, 0, PSH | ACK, 501, payload, checksums=False), 0, slots)
    table.compile()
    events = Events.make(
        np.array([0]),
        np.array([tpl]),
        np.array([seq]),
        np.array([ack]),
        np.array([ident]),
        np.array([counter]),
    )
    expected_payload = bytearray(payload)
    if slots:
        expected_payload[slot_at : slot_at + 2] = struct.pack(">H", counter)
    expected = tcp_frame(CLIENT, 50000, 502, seq, ack, PSH | ACK, 501, bytes(expected_payload), ident)
    assert stamped(table, events) == [expected]


@settings(max_examples=80, deadline=None)
@given(
    payload=st.binary(min_size=24, max_size=1400),
    ident=u16,
    first=u32,
    second=u16,
    odd=st.booleans(),
    little=st.booleans(),
)
def test_udp_slots_at_any_alignment_and_byte_order(
    payload: bytes, ident: int, first: int, second: int, odd: bool, little: bool
) -> None:
    table = TemplateTable()
    a, b = (3, 11) if odd else (4, 12)
    slots = (Slot(42 + a, 4, little), Slot(42 + b, 2, little))
    tpl = table.add(udp_frame(CLIENT, 2222, 2222, payload, checksum=False), 0, slots)
    table.compile()
    events = Events.make(
        np.array([0]), np.array([tpl]), ipid=np.array([ident]), s0=np.array([first]), s1=np.array([second])
    )
    data = bytearray(payload)
    data[a : a + 4] = struct.pack("<I" if little else ">I", first)
    data[b : b + 2] = struct.pack("<H" if little else ">H", second)
    assert stamped(table, events) == [udp_frame(CLIENT, 2222, 2222, bytes(data), ident)]


def test_many_events_across_groups_and_large_frames() -> None:
    """Large (video-size) frames take the in-place path; every packet must still be exact."""
    rng = np.random.default_rng(3)
    table = TemplateTable()
    payloads = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (8, 13, 40, 40, 700, 1400, 1400)]
    ids = [
        table.add(udp_frame(CLIENT, 40000, 8200, p, checksum=False), 0, (Slot(44, 2), Slot(46, 4)))
        for p in payloads
    ]
    table.compile()
    n = 300
    tpl = rng.choice(ids, n)
    ipid = rng.integers(0, 1 << 16, n)
    s0 = rng.integers(0, 1 << 16, n)
    s1 = rng.integers(0, 1 << 32, n)
    frames = stamped(table, Events.make(np.zeros(n, dtype=np.int64), tpl, ipid=ipid, s0=s0, s1=s1))
    for i in range(n):
        data = bytearray(payloads[ids.index(int(tpl[i]))])
        data[2:4] = struct.pack(">H", int(s0[i]))
        data[4:8] = struct.pack(">I", int(s1[i]))
        assert frames[i] == udp_frame(CLIENT, 40000, 8200, bytes(data), int(ipid[i]))


def test_conversation_sequence_numbers_advance() -> None:
    conv = TcpConversation(CLIENT, SERVER, 50123, 102, 1000, 2000, 7, 9)
    packets = conv.handshake(0, 300_000)
    exchange, last = conv.exchange(packets[-1][0] + 1000, b"q" * 25, b"r" * 40, 2_000_000, 500_000)
    closing = conv.close(last + 1_000_000, 300_000)
    frames = [f for _, f in packets + exchange + closing]
    fields = [struct.unpack(">IIBB", f[38:48]) for f in frames]
    seqs_acks = [(s, a) for s, a, _, _ in fields]
    assert seqs_acks == [
        (1000, 0),
        (2000, 1001),
        (1001, 2001),
        (1001, 2001),
        (2001, 1026),
        (1026, 2041),
        (1026, 2041),
        (2041, 1027),
        (1027, 2042),
    ]
    assert [f[47] for f in frames] == [0x02, 0x12, 0x10, 0x18, 0x18, 0x10, 0x11, 0x11, 0x10]
    # A PLC without window scaling: the SYN-ACK carries only MSS, and no side scales its window.
    assert frames[1][46] >> 4 == 6
    for frame in frames:
        ip_len = struct.unpack(">H", frame[16:18])[0]
        assert internet_checksum(frame[14:34]) == 0
        pseudo = frame[26:34] + struct.pack(">BBH", 0, 6, ip_len - 20)
        assert internet_checksum(pseudo + frame[34 : 14 + ip_len]) == 0
    times = [t for t, _ in packets + exchange + closing]
    assert times == sorted(times)


def test_slots_only_on_ip_templates() -> None:
    table = TemplateTable()
    with pytest.raises(ValueError, match="slots"):
        table.add(b"\xff" * 12 + b"\x08\x06" + bytes(46), 0, (Slot(20, 2),))
