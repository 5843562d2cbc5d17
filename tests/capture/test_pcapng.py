"""The pcapng reader: files built here block by block (draft-ietf-opsawg-pcapng) and cross-checked with
tshark, the corpus converted by editcap, gzip, every kind of bad block, and chunking.

The builder at the top is shared with test_fuzz.py.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from fieldward.capture.reader import open_capture
from fieldward.errors import CaptureFormatError
from tests.capture.test_pcap import (
    CORPUS_FILES,
    Packet,
    epoch_ns,
    packets,
    read,
    read_packets,
    tshark_fields,
    write,
)

# ------------------------------------------------------------------------------------------ builder

SHB, IDB, PB, SPB, NRB, ISB, EPB, DSB, CUSTOM = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 10, 0x00000BAD
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_TSOFFSET = 2, 3, 9, 14


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(btype: int, body: bytes, *, big: bool = False) -> bytes:
    """type, total length, body (padded to 32 bits), total length (section 3.1)."""
    o = ">" if big else "<"
    body = pad4(body)
    return struct.pack(o + "II", btype, 12 + len(body)) + body + struct.pack(o + "I", 12 + len(body))


def options(opts: list[tuple[int, bytes]], *, big: bool = False) -> bytes:
    o = ">" if big else "<"
    if not opts:
        return b""
    return b"".join(struct.pack(o + "HH", c, len(v)) + pad4(v) for c, v in opts) + b"\0\0\0\0"


def shb(
    *, big: bool = False, major: int = 1, minor: int = 0, opts: list[tuple[int, bytes]] | None = None
) -> bytes:
    o = ">" if big else "<"
    body = struct.pack(o + "IHHq", 0x1A2B3C4D, major, minor, -1) + options(opts or [], big=big)
    return block(SHB, body, big=big)


def idb(
    linktype: int,
    snaplen: int = 0,
    *,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    name: str | None = None,
    description: str | None = None,
    big: bool = False,
) -> bytes:
    o = ">" if big else "<"
    opts: list[tuple[int, bytes]] = []
    if name is not None:
        opts.append((IF_NAME, name.encode()))
    if description is not None:
        opts.append((IF_DESCRIPTION, description.encode()))
    if tsresol is not None:
        opts.append((IF_TSRESOL, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((IF_TSOFFSET, struct.pack(o + "q", tsoffset)))
    return block(IDB, struct.pack(o + "HHI", linktype, 0, snaplen) + options(opts, big=big), big=big)


def epb(iface: int, ts: int, data: bytes, origlen: int | None = None, *, big: bool = False) -> bytes:
    o = ">" if big else "<"
    ol = len(data) if origlen is None else origlen
    head = struct.pack(o + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), ol)
    return block(EPB, head + pad4(data) + options([(1, b"comment")], big=big), big=big)


def pb(iface: int, ts: int, data: bytes, *, big: bool = False) -> bytes:
    o = ">" if big else "<"
    head = struct.pack(o + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(PB, head + pad4(data), big=big)


def spb(data: bytes, origlen: int | None = None, *, big: bool = False) -> bytes:
    o = ">" if big else "<"
    return block(SPB, struct.pack(o + "I", len(data) if origlen is None else origlen) + data, big=big)


def frame(i: int, size: int = 60) -> bytes:
    """A distinct frame: an Ethernet-looking header, then the index."""
    return (bytes.fromhex("ffffffffffff0200000000010800") + i.to_bytes(4, "big") * size)[:size]


def block_offsets(data: bytes) -> list[int]:
    """Offsets of the blocks of a well-formed little-endian pcapng."""
    offsets, p = [], 0
    while p < len(data):
        offsets.append(p)
        p += struct.unpack_from("<I", data, p + 4)[0]
    return offsets


def tshark_frames(tshark: str, path: Path) -> list[tuple[int, int | None, int, int]]:
    """(interface id, ts_ns, frame.len, frame.cap_len) of every frame, according to tshark.

    tshark numbers interfaces within their section and gives no time to Simple Packet Blocks (None).
    """
    rows = tshark_fields(tshark, path, "frame.interface_id", "frame.time_epoch", "frame.len", "frame.cap_len")
    return [
        (int(i), epoch_ns(ts) if ts else None, int(length), int(caplen)) for i, ts, length, caplen in rows
    ]


def our_frames(got: list[Packet]) -> list[tuple[int, int | None, int, int]]:
    return [(iface, ts, origlen, len(data)) for ts, data, origlen, _, iface in got]


T0 = 1_700_000_000  # a second in 2023


# ------------------------------------------------------------------------------------ interfaces, time


def test_interfaces_with_own_linktype_and_resolution(tmp_path: Path, tshark: str) -> None:
    """Three interfaces: Ethernet in µs (default), raw IP in ns (10^-9), SLL in 2^-20 s units."""
    data = shb() + idb(1, 1514, name="eth0") + idb(101, 65535, tsresol=9) + idb(113, 0, tsresol=0x80 | 20)
    raw_ip = bytes.fromhex("4500001c000100004011") + bytes(18)
    expected: list[Packet] = []
    for i in range(12):
        iface = i % 3
        if iface == 0:
            ts = (T0 + i) * 10**6 + 123_456 + i
            ns = ts * 1000
            payload, linktype = frame(i), 1
        elif iface == 1:
            ts = (T0 + i) * 10**9 + 987_654_321 + i
            ns = ts
            payload, linktype = raw_ip, 101
        else:
            ts = ((T0 + i) << 20) + 777_777 + i
            ns = ts * 10**9 // 2**20
            payload, linktype = frame(i, 80), 113
        data += epb(iface, ts, payload, len(payload) + 4)
        expected.append((ns, payload, len(payload) + 4, linktype, iface))
    path = write(tmp_path, "ifaces.pcapng", data)
    batches, reader = read(path)
    assert packets(batches) == expected
    assert reader.format == "pcapng"
    assert reader.weird.total == 0
    assert [(i.index, i.linktype, i.snaplen, i.ts_resolution_ns) for i in reader.interfaces] == [
        (0, 1, 1514, 1000),
        (1, 101, 65535, 1),
        (2, 113, 0, round(1e9 / 2**20)),
    ]
    assert reader.interfaces[0].name == "eth0"
    assert our_frames(expected) == tshark_frames(tshark, path)


def test_decimal_and_binary_resolutions(tmp_path: Path) -> None:
    for tsresol in (0, 3, 6, 9, 12, 0x80, 0x80 | 10, 0x80 | 33, 0x80 | 40):
        units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
        raw = min(T0 + 5, 2**64 // units - 1) * units + units // 3
        got, weird = read_packets(
            write(tmp_path, "res.pcapng", shb() + idb(1, tsresol=tsresol) + epb(0, raw, frame(1)))
        )
        exact = raw * 10**9 // units
        assert abs(got[0][0] - exact) <= 1, tsresol
        assert weird.total == 0


def test_tsoffset_is_added(tmp_path: Path) -> None:
    raw = T0 * 10**6 + 42
    data = shb() + idb(1, tsoffset=-3600, description="offset by an hour") + epb(0, raw, frame(0))
    batches, reader = read(write(tmp_path, "off.pcapng", data))
    assert packets(batches)[0][0] == (T0 - 3600) * 10**9 + 42_000
    assert reader.interfaces[0].ts_offset_s == -3600
    assert reader.interfaces[0].description == "offset by an hour"


def test_sections_of_both_byte_orders(tmp_path: Path, tshark: str) -> None:
    """Interface numbers restart in each section; capture-wide indexes keep growing."""
    data = (
        shb() + idb(1) + idb(101, tsresol=9) + epb(0, T0 * 10**6, frame(0)) + epb(1, T0 * 10**9 + 5, frame(1))
    )
    data += shb(big=True) + idb(113, tsresol=9, big=True) + idb(1, big=True)
    data += epb(0, (T0 + 1) * 10**9 + 7, frame(2), big=True) + epb(
        1, (T0 + 2) * 10**6 + 9, frame(3), big=True
    )
    data += pb(1, (T0 + 3) * 10**6, frame(4), big=True)
    data += shb() + idb(1) + epb(0, (T0 + 4) * 10**6, frame(5))
    path = write(tmp_path, "sections.pcapng", data)
    batches, reader = read(path)
    got = packets(batches)
    assert [(iface, linktype) for _, _, _, linktype, iface in got] == [
        (0, 1),
        (1, 101),
        (2, 113),
        (3, 1),
        (3, 1),
        (4, 1),
    ]
    assert [ts for ts, *_ in got] == [
        T0 * 10**9,
        T0 * 10**9 + 5,
        (T0 + 1) * 10**9 + 7,
        (T0 + 2) * 10**9 + 9_000,
        (T0 + 3) * 10**9,
        (T0 + 4) * 10**9,
    ]
    assert [d for _, d, *_ in got] == [frame(i) for i in range(6)]
    assert len(reader.interfaces) == 5
    assert reader.weird.total == 0
    local_ids = [0, 1, 0, 1, 1, 0]  # tshark numbers interfaces within their section
    theirs = tshark_frames(tshark, path)
    assert [(i, *rest) for i, (_, *rest) in zip(local_ids, our_frames(got), strict=True)] == theirs


def test_simple_and_obsolete_packet_blocks(tmp_path: Path, tshark: str) -> None:
    data = shb() + idb(1, 64) + epb(0, T0 * 10**6 + 1, frame(0))
    data += spb(frame(1, 100)[:64], 100)  # truncated to the snaplen of interface 0
    data += spb(frame(2, 40))  # shorter than the snaplen
    data += pb(0, T0 * 10**6 + 3, frame(3))
    path = write(tmp_path, "spb.pcapng", data)
    got, weird = read_packets(path)
    assert [(ts, d, ol) for ts, d, ol, _, _ in got] == [
        (T0 * 10**9 + 1000, frame(0), 60),
        (T0 * 10**9 + 1000, frame(1, 100)[:64], 100),  # an SPB has no time: the previous packet's
        (T0 * 10**9 + 1000, frame(2, 40), 40),
        (T0 * 10**9 + 3000, frame(3), 60),
    ]
    assert weird.total == 0
    theirs = tshark_frames(tshark, path)
    assert [(i, ol, cl) for i, _, ol, cl in our_frames(got)] == [(i, ol, cl) for i, _, ol, cl in theirs]
    assert [ts for _, ts, _, _ in theirs] == [T0 * 10**9 + 1000, None, None, T0 * 10**9 + 3000]


def test_ignored_blocks_are_skipped_quietly(tmp_path: Path) -> None:
    data = shb() + idb(1) + block(NRB, b"\0\0\0\0") + epb(0, T0 * 10**6, frame(0))
    data += block(ISB, struct.pack("<III", 0, 0, 0)) + block(DSB, b"TLSK" + b"\0\0\0\0")
    data += block(CUSTOM, b"\x00\x00\x7e\x7e data") + epb(0, T0 * 10**6 + 1, frame(1))
    got, weird = read_packets(write(tmp_path, "ignored.pcapng", data))
    assert [d for _, d, *_ in got] == [frame(0), frame(1)]
    assert weird.total == 0


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_as_pcapng_reads_like_the_pcap(path: Path, corpus: Path, tmp_path: Path) -> None:
    editcap = "/usr/bin/editcap"
    if not Path(editcap).exists():
        pytest.skip("editcap is not installed (Debian package 'wireshark-common')")
    converted = tmp_path / "converted.pcapng"
    subprocess.run([editcap, "-F", "pcapng", str(path), str(converted)], check=True, capture_output=True)
    expected, _ = read_packets(path)
    got, weird = read_packets(converted, batch_bytes=4096)
    assert got == expected
    assert weird.total == 0


def test_gzip_pcapng(tmp_path: Path) -> None:
    data = shb() + idb(1) + b"".join(epb(0, T0 * 10**6 + i, frame(i)) for i in range(300))
    plain, _ = read_packets(write(tmp_path, "p.pcapng", data))
    batches, reader = read(write(tmp_path, "c.pcapng.gz", gzip.compress(data)), batch_bytes=700)
    assert packets(batches) == plain
    assert len(plain) == 300
    assert reader.compressed
    assert reader.format == "pcapng"


def test_chunking_and_batching(tmp_path: Path) -> None:
    """IDBs and SHBs that straddle chunk boundaries; batches bounded in packets."""
    data = (
        shb(opts=[(2, b"hardware " * 30)])
        + idb(1)
        + b"".join(epb(0, T0 * 10**6 + i, frame(i)) for i in range(50))
    )
    data += shb(big=True) + idb(101, tsresol=9, name="x" * 200, big=True)
    data += b"".join(epb(0, T0 * 10**9 + i, frame(i, 33), big=True) for i in range(50, 100))
    expected, _ = read_packets(write(tmp_path, "whole.pcapng", data))
    assert len(expected) == 100
    for batch_packets, batch_bytes in ((7, 1 << 20), (1000, 100), (3, 17), (1, 1)):
        batches, reader = read(
            write(tmp_path, "chunked.pcapng", data), batch_packets=batch_packets, batch_bytes=batch_bytes
        )
        assert packets(batches) == expected, (batch_packets, batch_bytes)
        assert all(len(b) <= batch_packets for b in batches)
        assert reader.position == reader.size
        assert len(reader.interfaces) == 2


# ------------------------------------------------------------------------------------------ bad input


def test_corrupt_first_section_header(tmp_path: Path) -> None:
    good = shb() + idb(1) + epb(0, 0, frame(0))
    bad_bom = bytearray(good)
    bad_bom[8:12] = b"\x01\x02\x03\x04"
    path = write(tmp_path, "bom.pcapng", bytes(bad_bom))
    with pytest.raises(CaptureFormatError) as info:
        open_capture(path)
    assert (
        str(info.value)
        == f"{path}: corrupt pcapng section header block (byte-order magic 0x01020304 at offset 8)"
    )
    with pytest.raises(CaptureFormatError, match="truncated pcapng section header block"):
        open_capture(write(tmp_path, "short.pcapng", good[:20]))
    with pytest.raises(CaptureFormatError, match="truncated pcapng section header block"):
        open_capture(write(tmp_path, "tiny.pcapng", good[:6]))
    with pytest.raises(CaptureFormatError, match=r"unsupported pcapng version 2\.0"):
        open_capture(write(tmp_path, "v2.pcapng", shb(major=2) + idb(1)))
    trailer = bytearray(good)
    trailer[24:28] = b"\x99\0\0\0"  # the SHB's trailing length
    with pytest.raises(CaptureFormatError, match="block total length 28 but trailer 153"):
        open_capture(write(tmp_path, "trailer.pcapng", bytes(trailer)))


def test_unknown_block_is_skipped_with_a_weird(tmp_path: Path) -> None:
    data = (
        shb()
        + idb(1)
        + epb(0, T0 * 10**6, frame(0))
        + block(0x12345678, b"mystery!")
        + epb(0, T0 * 10**6, frame(1))
    )
    got, weird = read_packets(write(tmp_path, "unknown.pcapng", data))
    assert [d for _, d, *_ in got] == [frame(0), frame(1)]
    assert weird.counts == {"pcapng_unknown_block": 1}
    assert "0x12345678" in weird.samples[0].detail


def packet_file(n: int = 40) -> tuple[bytes, list[int]]:
    """A pcapng with n EPBs; the offsets of its blocks."""
    data = shb() + idb(1) + b"".join(epb(0, (T0 + i) * 10**6, frame(i, 60 + i)) for i in range(n))
    return data, block_offsets(data)


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(None, id="trailer-mismatch"),
        pytest.param(13, id="not-multiple-of-4"),
        pytest.param(8, id="below-12"),
        pytest.param(0x7FFFFFF0, id="absurd"),
        pytest.param(100_000, id="long-but-plausible"),
    ],
)
def test_bad_block_length_resyncs(tmp_path: Path, length: int | None) -> None:
    data, offsets = packet_file()
    expected, _ = read_packets(write(tmp_path, "good.pcapng", data))
    k = 20  # the block of packet k - 2
    corrupt = bytearray(data)
    if length is None:
        corrupt[offsets[k + 1] - 4 : offsets[k + 1]] = b"\x04\x04\0\0"
    else:
        struct.pack_into("<I", corrupt, offsets[k] + 4, length)
    for batch_bytes in (1 << 20, 500):
        got, weird = read_packets(write(tmp_path, "bad.pcapng", bytes(corrupt)), batch_bytes=batch_bytes)
        assert got == expected[: k - 2] + expected[k - 1 :], batch_bytes
        assert weird.counts == {"pcapng_bad_block_length": 1}
        assert f"offset {offsets[k]}" in weird.samples[0].detail


def test_garbage_between_blocks(tmp_path: Path) -> None:
    data, offsets = packet_file()
    expected, _ = read_packets(write(tmp_path, "good.pcapng", data))
    junk = b"\x06\0\0\0\xff\xff\xff" + bytes(range(61))
    got, weird = read_packets(write(tmp_path, "junk.pcapng", data[: offsets[9]] + junk + data[offsets[9] :]))
    assert got == expected
    assert weird.counts == {"pcapng_bad_block_length": 1}
    assert f"skipped {len(junk)} bytes" in weird.samples[0].detail


def test_bad_mid_file_section_header(tmp_path: Path) -> None:
    data, _ = packet_file(10)
    second = bytearray(shb())
    second[8:12] = b"\0\0\0\0"
    more = b"".join(epb(0, (T0 + i) * 10**6, frame(i)) for i in range(10, 15))
    got, weird = read_packets(write(tmp_path, "shb.pcapng", data + bytes(second) + more))
    assert [d for _, d, *_ in got] == [frame(i, 60 + i) for i in range(10)] + [
        frame(i) for i in range(10, 15)
    ]
    assert weird.counts == {"pcapng_bad_block_length": 1}
    assert "byte-order magic" in weird.samples[0].detail


def test_truncated_last_block(tmp_path: Path) -> None:
    data, offsets = packet_file()
    expected, _ = read_packets(write(tmp_path, "good.pcapng", data))
    for cut in (len(data) - 1, offsets[-1] + 30, offsets[-1] + 11, offsets[-1] + 2):
        got, weird = read_packets(write(tmp_path, "cut.pcapng", data[:cut]))
        assert got == expected[:-1], cut
        assert weird.counts == {"pcapng_truncated_block": 1}, cut


def test_packet_blocks_that_do_not_fit(tmp_path: Path) -> None:
    data = shb() + idb(1) + epb(0, T0 * 10**6, frame(0))
    bad = bytearray(epb(0, T0 * 10**6, frame(1)))
    struct.pack_into("<I", bad, 20, 5000)  # caplen beyond the block
    data += (
        bytes(bad)
        + block(EPB, b"\0" * 12)
        + block(SPB, b"")
        + epb(7, 0, frame(2))
        + epb(0, T0 * 10**6, frame(3))
    )
    got, weird = read_packets(write(tmp_path, "fit.pcapng", data))
    assert [d for _, d, *_ in got] == [frame(0), frame(3)]
    assert weird.counts == {"pcapng_bad_packet_block": 3, "pcapng_unknown_interface": 1}
    assert "interface 7" in next(s.detail for s in weird.samples if s.name == "pcapng_unknown_interface")


def test_packets_before_any_interface(tmp_path: Path) -> None:
    data = shb() + epb(0, 0, frame(0)) + spb(frame(1)) + idb(1) + epb(0, 0, frame(2))
    got, weird = read_packets(write(tmp_path, "noif.pcapng", data))
    assert [d for _, d, *_ in got] == [frame(2)]
    assert weird.counts == {"pcapng_unknown_interface": 2}


def test_odd_but_delivered_packets(tmp_path: Path) -> None:
    data = shb() + idb(147) + epb(0, 1, b"") + epb(0, 2, frame(1), origlen=10) + epb(0, 3, frame(2))
    got, weird = read_packets(write(tmp_path, "odd.pcapng", data))
    assert [(d, ol, lt) for _, d, ol, lt, _ in got] == [
        (b"", 0, 147),
        (frame(1), 10, 147),
        (frame(2), 60, 147),
    ]
    assert weird.counts == {
        "pcapng_unknown_linktype": 1,
        "pcapng_zero_length_record": 1,
        "pcapng_caplen_exceeds_origlen": 1,
    }


def test_bad_interface_options(tmp_path: Path) -> None:
    bad_option = bytearray(idb(1, name="eth0"))
    struct.pack_into("<H", bad_option, 18, 400)  # if_name's length runs past the block
    data = shb() + idb(1, tsresol=0x7F) + bytes(bad_option) + idb(1, tsoffset=1 << 40)
    data += block(IDB, b"\x01\0")  # shorter than an IDB can be
    data += epb(0, T0 * 10**6, frame(0)) + epb(1, T0 * 10**6, frame(1)) + epb(2, T0 * 10**6, frame(2))
    data += shb(major=3) + idb(1) + epb(0, T0 * 10**6, frame(3))
    batches, reader = read(write(tmp_path, "opts.pcapng", data))
    got = packets(batches)
    assert [(ts, d) for ts, d, *_ in got] == [(T0 * 10**9, frame(i)) for i in range(4)]
    assert reader.weird.counts == {
        "pcapng_bad_tsresol": 1,
        "pcapng_bad_option": 2,
        "pcapng_bad_interface_block": 1,
        "pcapng_unsupported_version": 1,
    }
    assert len(reader.interfaces) == 4
