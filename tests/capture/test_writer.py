"""PcapWriter: file format, round trips (own parser, dpkt, tshark), gzip, nanoseconds, fast paths."""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
from pathlib import Path

import dpkt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.capture.batch import PacketBatch
from fieldward.capture.writer import MAGIC_NSEC, MAGIC_USEC, PcapWriter, copy_runs, write_pcap
from fieldward.errors import CaptureIOError, ConfigError

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns


def parse_pcap(data: bytes) -> tuple[tuple[int, ...], list[tuple[int, int, int, bytes]]]:
    """Minimal independent reader: global header fields and (sec, frac, origlen, bytes) per record."""
    header = struct.unpack("<IHHiIII", data[:24])
    records = []
    at = 24
    while at < len(data):
        sec, frac, caplen, origlen = struct.unpack("<IIII", data[at : at + 16])
        records.append((sec, frac, origlen, data[at + 16 : at + 16 + caplen]))
        at += 16 + caplen
    assert at == len(data)
    return header, records


def sample_packets(n: int = 50, seed: int = 0) -> tuple[list[bytes], list[int]]:
    rng = np.random.default_rng(seed)
    packets = [rng.integers(0, 256, int(rng.integers(14, 1600)), dtype=np.uint8).tobytes() for _ in range(n)]
    times = (T0 + np.cumsum(rng.integers(0, 5_000_000, n))).tolist()
    return packets, times


def with_headroom(packets: list[bytes], times: list[int]) -> PacketBatch:
    """The same packets laid out 16 bytes apart (the generator's and an mmap'd pcap's layout)."""
    chunks = bytearray()
    offsets = []
    for packet in packets:
        chunks += b"\xee" * 16
        offsets.append(len(chunks))
        chunks += packet
    lengths = np.array([len(p) for p in packets], dtype=np.uint32)
    n = len(packets)
    return PacketBatch(
        buffer=np.frombuffer(bytes(chunks), dtype=np.uint8).copy(),
        offsets=np.array(offsets, dtype=np.int64),
        caplen=lengths,
        origlen=lengths.copy(),
        ts_ns=np.array(times, dtype=np.int64),
        interface=np.zeros(n, dtype=np.uint16),
        linktype=np.ones(n, dtype=np.uint16),
    )


def test_global_header_and_records(tmp_path: Path) -> None:
    packets, times = sample_packets()
    path = tmp_path / "out.pcap"
    written = write_pcap(path, PacketBatch.from_packets(packets, times))
    data = path.read_bytes()
    assert written == len(data)
    header, records = parse_pcap(data)
    assert header == (MAGIC_USEC, 2, 4, 0, 0, 262144, 1)
    assert [r[3] for r in records] == packets
    assert [r[0] * 1_000_000_000 + r[1] * 1000 for r in records] == [t // 1000 * 1000 for t in times]
    assert [r[2] for r in records] == [len(p) for p in packets]


def test_dpkt_reads_it_back(tmp_path: Path) -> None:
    packets, times = sample_packets(seed=1)
    path = tmp_path / "out.pcap"
    write_pcap(path, PacketBatch.from_packets(packets, times))
    with path.open("rb") as f:
        read = list(dpkt.pcap.Reader(f))
    assert [bytes(buf) for _, buf in read] == packets
    assert [round(ts * 1e6) for ts, _ in read] == [t // 1000 for t in times]


def test_nanosecond_timestamps(tmp_path: Path) -> None:
    packets, times = sample_packets(seed=2)
    times = [t + 123 for t in times]  # sub-microsecond parts must survive
    path = tmp_path / "ns.pcap"
    write_pcap(path, PacketBatch.from_packets(packets, times), nanosecond=True)
    header, records = parse_pcap(path.read_bytes())
    assert header[0] == MAGIC_NSEC
    assert [r[0] * 1_000_000_000 + r[1] for r in records] == times
    assert [r[3] for r in records] == packets


def test_nanosecond_file_read_by_tshark(tmp_path: Path, tshark: str) -> None:
    packets, times = sample_packets(n=5, seed=3)
    times = [t + 987 for t in times]
    path = tmp_path / "ns.pcap"
    write_pcap(path, PacketBatch.from_packets(packets, times), nanosecond=True)
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert [int(epoch.replace(".", "")) for epoch, _ in rows] == times
    assert [int(length) for _, length in rows] == [len(p) for p in packets]


def test_gzip_when_path_ends_in_gz(tmp_path: Path) -> None:
    packets, times = sample_packets(seed=4)
    batch = PacketBatch.from_packets(packets, times)
    plain, packed = tmp_path / "a.pcap", tmp_path / "a.pcap.gz"
    write_pcap(plain, batch)
    write_pcap(packed, batch)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    packets, times = sample_packets(seed=5)
    batch = PacketBatch.from_packets(packets, times)
    first, second = tmp_path / "1" / "x.pcap.gz", tmp_path / "2" / "x.pcap.gz"
    first.parent.mkdir()
    second.parent.mkdir()
    write_pcap(first, batch)
    write_pcap(second, batch)
    assert first.read_bytes() == second.read_bytes()


def test_headroom_layout_gives_the_same_file() -> None:
    packets, times = sample_packets(seed=6)
    generic, fast, in_place = io.BytesIO(), io.BytesIO(), io.BytesIO()
    write_pcap(generic, PacketBatch.from_packets(packets, times))
    write_pcap(fast, with_headroom(packets, times))
    batch = with_headroom(packets, times)
    with PcapWriter(in_place) as writer:
        writer.write_batch(batch, in_place=True)
    assert fast.getvalue() == generic.getvalue() == in_place.getvalue()
    assert [batch.packet(i) for i in range(len(batch))] == packets  # only the gaps were overwritten


def test_headroom_batch_is_not_modified_without_in_place() -> None:
    packets, times = sample_packets(n=10, seed=7)
    batch = with_headroom(packets, times)
    before = batch.buffer.copy()
    write_pcap(io.BytesIO(), batch)
    assert np.array_equal(batch.buffer, before)


def test_read_only_buffer() -> None:
    packets, times = sample_packets(n=10, seed=8)
    batch = with_headroom(packets, times)
    batch.buffer.flags.writeable = False
    out = io.BytesIO()
    with PcapWriter(out) as writer:
        writer.write_batch(batch, in_place=True)
    assert [r[3] for r in parse_pcap(out.getvalue())[1]] == packets


def test_batch_with_arbitrary_offsets() -> None:
    """Packets in any order and place in the buffer (a filtered batch) are written in batch order."""
    packets, times = sample_packets(n=30, seed=9)
    base = PacketBatch.from_packets(packets, times)
    pick = np.array([5, 2, 2, 29, 0, 17], dtype=np.int64)
    subset = PacketBatch(
        buffer=base.buffer,
        offsets=base.offsets[pick],
        caplen=base.caplen[pick],
        origlen=base.origlen[pick],
        ts_ns=np.sort(base.ts_ns[pick]),
        interface=base.interface[pick],
        linktype=base.linktype[pick],
    )
    out = io.BytesIO()
    write_pcap(out, subset)
    assert [r[3] for r in parse_pcap(out.getvalue())[1]] == [packets[i] for i in pick.tolist()]


def test_snaplen_truncates_and_keeps_original_length() -> None:
    packets, times = sample_packets(n=20, seed=10)
    out = io.BytesIO()
    write_pcap(out, with_headroom(packets, times), snaplen=100)
    header, records = parse_pcap(out.getvalue())
    assert header[5] == 100
    assert [r[3] for r in records] == [p[:100] for p in packets]
    assert [r[2] for r in records] == [len(p) for p in packets]


def test_single_packet_write_matches_batch() -> None:
    packets, times = sample_packets(n=8, seed=11)
    one_by_one, batch = io.BytesIO(), io.BytesIO()
    with PcapWriter(one_by_one) as writer:
        for packet, ts in zip(packets, times, strict=True):
            writer.write(packet, ts)
        assert writer.packets == len(packets)
    write_pcap(batch, PacketBatch.from_packets(packets, times))
    assert one_by_one.getvalue() == batch.getvalue()


def test_several_batches_and_counters(tmp_path: Path) -> None:
    packets, times = sample_packets(n=40, seed=12)
    path = tmp_path / "multi.pcap"
    with PcapWriter(path, linktype=101, snaplen=65535) as writer:
        writer.write_batch(PacketBatch.from_packets(packets[:25], times[:25]))
        writer.write_batch(PacketBatch.empty())
        writer.write_batch(PacketBatch.from_packets(packets[25:], times[25:]))
        assert writer.packets == 40
    header, records = parse_pcap(path.read_bytes())
    assert header[5:] == (65535, 101)
    assert [r[3] for r in records] == packets
    assert writer.bytes_written == path.stat().st_size


def test_empty_batch_writes_only_the_header() -> None:
    out = io.BytesIO()
    assert write_pcap(out, PacketBatch.empty()) == 24
    assert parse_pcap(out.getvalue())[1] == []


def test_caller_file_object_stays_open() -> None:
    out = io.BytesIO()
    with PcapWriter(out) as writer:
        writer.write(b"\x00" * 60, T0)
    assert not out.closed
    assert len(out.getvalue()) == 24 + 16 + 60


def test_mixed_link_types_rejected() -> None:
    a = PacketBatch.from_packets([b"\x00" * 20], [T0], linktype=1)
    b = PacketBatch.from_packets([b"\x45" + b"\x00" * 19], [T0], linktype=101)
    merged = PacketBatch(
        buffer=np.concatenate((a.buffer, b.buffer)),
        offsets=np.array([0, 20], dtype=np.int64),
        caplen=np.array([20, 20], dtype=np.uint32),
        origlen=np.array([20, 20], dtype=np.uint32),
        ts_ns=np.array([T0, T0], dtype=np.int64),
        interface=np.zeros(2, dtype=np.uint16),
        linktype=np.array([1, 101], dtype=np.uint16),
    )
    with pytest.raises(ConfigError):
        write_pcap(io.BytesIO(), merged)


def test_out_of_range_timestamps_rejected() -> None:
    with pytest.raises(ConfigError), PcapWriter(io.BytesIO()) as writer:
        writer.write_batch(PacketBatch.from_packets([b"\x00" * 60], [-1]))
    with pytest.raises(ConfigError), PcapWriter(io.BytesIO()) as writer:
        writer.write(b"\x00" * 60, (1 << 32) * 1_000_000_000)


@pytest.mark.parametrize(("kwargs"), [{"snaplen": 0}, {"linktype": 70000}])
def test_bad_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        PcapWriter(io.BytesIO(), **kwargs)


def test_unwritable_path(tmp_path: Path) -> None:
    with pytest.raises(CaptureIOError):
        PcapWriter(tmp_path / "missing-dir" / "x.pcap")


def test_copy_runs() -> None:
    src = np.arange(100, dtype=np.uint8)
    dst = np.zeros(40, dtype=np.uint8)
    copy_runs(dst, np.array([0, 10, 30]), src, np.array([50, 0, 90]), np.array([5, 5, 10]))
    assert dst[:5].tolist() == list(range(50, 55))
    assert dst[10:15].tolist() == list(range(5))
    assert dst[30:40].tolist() == list(range(90, 100))
    assert not dst[5:10].any()
    assert not dst[15:30].any()


@settings(max_examples=60, deadline=None)
@given(
    packets=st.lists(st.binary(min_size=0, max_size=300), min_size=0, max_size=40),
    gaps=st.lists(st.integers(0, 10**9), min_size=40, max_size=40),
    nanosecond=st.booleans(),
    headroom=st.booleans(),
)
def test_round_trip_property(packets: list[bytes], gaps: list[int], nanosecond: bool, headroom: bool) -> None:
    times = [T0 + sum(gaps[: i + 1]) for i in range(len(packets))]
    batch = (
        with_headroom(packets, times) if headroom and packets else PacketBatch.from_packets(packets, times)
    )
    out = io.BytesIO()
    write_pcap(out, batch, nanosecond=nanosecond)
    _, records = parse_pcap(out.getvalue())
    assert [r[3] for r in records] == packets
    scale = 1 if nanosecond else 1000
    assert [r[0] * 1_000_000_000 + r[1] * scale for r in records] == [t // scale * scale for t in times]
