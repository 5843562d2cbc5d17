"""The compiled fast path of decode_batch against the vectorized numpy decoder (the reference): every
column and every weird count must be identical, for corpus captures and for random, often malformed,
Ethernet/VLAN/IPv4/ARP/IPv6 frames (hypothesis), and the fast path must really take the common ones."""

from __future__ import annotations

import struct
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import open_capture
from fieldward.decode import _kernels
from fieldward.decode.columns import DecodedBatch
from fieldward.decode.l2l4 import decode_batch, decode_batch_vectorized
from fieldward.weird import WeirdLog


def assert_same(batch: PacketBatch) -> None:
    """decode_batch and decode_batch_vectorized agree on every column and on the weird reports."""
    w_fast, w_ref = WeirdLog(), WeirdLog()
    fast = decode_batch(batch, w_fast)
    ref = decode_batch_vectorized(batch, w_ref)
    for field in fields(DecodedBatch):
        a, b = getattr(fast, field.name), getattr(ref, field.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype, field.name
            assert a.shape == b.shape, field.name
            mismatch = np.flatnonzero((a != b).reshape(a.shape[0], -1).any(axis=1))
            assert mismatch.shape[0] == 0, (
                field.name,
                mismatch[:5].tolist(),
                batch.packet(int(mismatch[0])).hex(),
            )
        else:
            assert a == b, field.name
    assert w_fast.counts == w_ref.counts
    fast_samples = [(s.name, s.packet_index) for s in w_fast.samples]
    assert fast_samples == [(s.name, s.packet_index) for s in w_ref.samples]


def fast_rows(batch: PacketBatch) -> int:
    """How many packets of ``batch`` the compiled kernel decodes itself."""
    n = len(batch)
    slow = np.zeros(n, dtype=np.bool_)
    n_slow = _kernels.l2l4_fast(
        batch.buffer,
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.linktype,
        np.zeros((_kernels.U64_ROWS, n), dtype=np.uint64),
        np.zeros((_kernels.U32_ROWS, n), dtype=np.uint32),
        np.zeros((_kernels.U16_ROWS, n), dtype=np.uint16),
        np.zeros((_kernels.U8_ROWS, n), dtype=np.uint8),
        np.zeros((_kernels.B_ROWS, n), dtype=np.bool_),
        np.zeros((_kernels.I32_ROWS, n), dtype=np.int32),
        np.zeros((n, 16), dtype=np.uint8),
        np.zeros((n, 16), dtype=np.uint8),
        slow,
    )
    assert n_slow == int(slow.sum())
    return n - n_slow


# ------------------------------------------------------------------------------------ raw frames

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def ipv4(
    proto: int, l4: bytes, *, ihl: int = 5, total: int | None = None, frag: int = 0, version: int = 4
) -> bytes:
    options = b"\x01" * (4 * ihl - 20) if ihl > 5 else b""
    length = 4 * max(ihl, 5) + len(l4) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s",
        (version << 4) | ihl,
        0xB8,
        length & 0xFFFF,
        0x1234,
        frag,
        64,
        proto,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    return header + options + l4


def tcp(options: bytes = b"", flags: int = 0x18, payload: bytes = b"", offset: int | None = None) -> bytes:
    words = offset if offset is not None else 5 + (len(options) + 3) // 4
    opts = options.ljust(4 * (words - 5), b"\x00") if words > 5 else b""
    return struct.pack("!HHIIHHHH", 40000, 502, 7, 9, (words << 12) | flags, 8192, 0, 0) + opts + payload


def udp(payload: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("!HHHH", 5353, 53, 8 + len(payload) if length is None else length, 0) + payload


def ether(ethertype: int, body: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    tags = b"".join(struct.pack("!HH", tpid, 100 + k) for k, tpid in enumerate(vlans))
    if vlans:
        return MAC_B + MAC_A + struct.pack("!H", vlans[0]) + tags[2:] + struct.pack("!H", ethertype) + body
    return MAC_B + MAC_A + struct.pack("!H", ethertype) + body


def arp(hlen: int = 6, plen: int = 4, ptype: int = 0x0800) -> bytes:
    return struct.pack("!HHBBH", 1, ptype, hlen, plen, 1) + MAC_A + bytes(4) + MAC_B + bytes([10, 0, 0, 2])


COMMON = [
    ether(0x0800, ipv4(17, udp(b"query"))),
    ether(0x0800, ipv4(6, tcp(payload=b"data"))),
    ether(0x0800, ipv4(6, tcp(options=b"\x01\x01\x08\x0a" + bytes(8), flags=0x10))),
    ether(
        0x0800,
        ipv4(6, tcp(options=b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07", flags=2)),
    ),
    ether(0x0800, ipv4(1, b"\x08\x00\x00\x00\x00\x01\x00\x01ping")),
    ether(0x0800, ipv4(47, b"\x00\x00\x08\x00gre")),
    ether(0x0800, ipv4(17, udp(b"x" * 40), frag=0x2000)),
    ether(0x0800, ipv4(17, b"rest of a datagram", frag=0x0010)),
    ether(0x0800, ipv4(17, udp(b"v")), vlans=(0x8100,)),
    ether(0x0800, ipv4(6, tcp()), vlans=(0x88A8, 0x8100)),
    ether(0x0806, arp()),
    ether(0x0806, arp(hlen=8)),
    ether(0x88CC, b"\x02\x07\x04" + MAC_A),
    ether(0x0800, ipv4(17, udp(b"pad"))) + bytes(10),
]


def test_common_packets_take_the_fast_path_and_match_the_reference() -> None:
    batch = PacketBatch.from_packets(COMMON, ts_ns=list(range(len(COMMON))))
    assert fast_rows(batch) == len(COMMON)
    assert_same(batch)


UNUSUAL = [
    ether(0x0800, ipv4(17, udp(b"q"), version=5)),  # bad version
    ether(0x0800, ipv4(17, udp(b"q"), total=0)),  # TSO
    ether(0x0800, ipv4(17, udp(b"q"), total=200)),  # truncated payload
    ether(0x0800, ipv4(6, tcp()[:12] + b"\xf0\x18" + tcp()[14:])),  # data offset beyond the IP payload
    ether(0x0800, ipv4(6, tcp(options=b"\x02\x05\x05\xb4"))),  # MSS with a bad length
    ether(0x0800, ipv4(17, udp(b"q", length=4))),
    ether(0x0800, ipv4(1, b"\x08\x00")),  # truncated ICMP
    ether(0x0800, ipv4(17, udp(b"v")), vlans=(0x8100, 0x8100, 0x8100)),  # three tags
    ether(
        0x86DD,
        bytes.fromhex("60000000000811400000000000000000000000000000000100000000000000000000000000000002")
        + udp(),
    ),
    ether(0x0806, arp())[:30],
    MAC_B + MAC_A,  # truncated Ethernet
]


def test_unusual_packets_fall_back_to_the_reference() -> None:
    batch = PacketBatch.from_packets(COMMON + UNUSUAL, ts_ns=list(range(len(COMMON) + len(UNUSUAL))))
    assert fast_rows(batch) == len(COMMON)
    assert_same(batch)
    weird = WeirdLog()
    decode_batch(batch, weird)
    assert sum(weird.counts.values()) == len(UNUSUAL) - 2  # the IPv6 and three-tag frames are fine


def test_other_link_types_fall_back_to_the_reference() -> None:
    raw = [ipv4(17, udp(b"raw")), ipv4(6, tcp())]
    batch = PacketBatch.from_packets(raw, ts_ns=[0, 1], linktype=linktypes.RAW)
    assert fast_rows(batch) == 0
    assert_same(batch)


# ------------------------------------------------------------------------------------ hypothesis

frame = st.one_of(
    st.sampled_from(COMMON + UNUSUAL),
    st.builds(
        lambda proto, l4, ihl, frag, vlans: ether(0x0800, ipv4(proto, l4, ihl=ihl, frag=frag), vlans=vlans),
        st.sampled_from([1, 6, 17, 47, 58]),
        st.binary(min_size=0, max_size=80),
        st.integers(0, 15),
        st.sampled_from([0, 0x2000, 0x4000, 0x0001, 0x2003]),
        st.sampled_from([(), (0x8100,), (0x88A8, 0x8100), (0x9100, 0x8100, 0x8100)]),
    ),
    st.builds(
        lambda options, flags, payload, offset: ether(
            0x0800, ipv4(6, tcp(options=options, flags=flags, payload=payload, offset=offset))
        ),
        st.binary(min_size=0, max_size=40),
        st.integers(0, 0x1FF),
        st.binary(max_size=20),
        st.one_of(st.none(), st.integers(0, 15)),
    ),
    st.binary(min_size=0, max_size=90),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(frame, st.integers(-8, 8), st.integers(-4, 40)),
        min_size=1,
        max_size=24,
    )
)
def test_fast_path_matches_the_vectorized_decoder(specs: list[tuple[bytes, int, int]]) -> None:
    """Random frames, cut short (caplen) or claimed longer on the wire (origlen), decode alike."""
    packets, origlen = [], []
    for data, cut, extra in specs:
        kept = data[: max(len(data) + cut, 0)] if cut < 0 else data
        packets.append(kept)
        origlen.append(max(len(kept) + extra, 0))
    batch = PacketBatch.from_packets(packets, ts_ns=list(range(len(packets))), origlen=origlen)
    assert_same(batch)


def test_corpus_captures_decode_alike(corpus: Path) -> None:
    paths = sorted(corpus.glob("*/*.pcap*"))
    assert paths
    for path in paths:
        with open_capture(path, batch_packets=512) as reader:
            for batch in reader:
                assert_same(batch)


@pytest.mark.parametrize("cut", [0, 1, 13, 14, 33, 34, 41, 53])
def test_frames_cut_at_every_layer_boundary(cut: int) -> None:
    packets = [p[:cut] for p in COMMON]
    batch = PacketBatch.from_packets(
        packets, ts_ns=list(range(len(packets))), origlen=[len(p) for p in COMMON]
    )
    assert_same(batch)
