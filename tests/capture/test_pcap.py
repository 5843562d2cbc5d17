"""The pcap reader: the corpus against tshark, capinfos and dpkt; byte-order and nanosecond variants;
gzip; every kind of bad input; batching, chunking and flat memory.

The helpers at the top (a struct-based pcap builder and parser) are shared with test_fuzz.py.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import tracemalloc
from pathlib import Path

import dpkt
import numpy as np
import pytest

from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import CaptureReader, open_capture
from fieldward.errors import CaptureFormatError, CaptureIOError
from fieldward.weird import WeirdLog

CORPUS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_FILES = sorted(CORPUS_DIR.glob("*/*.pcap"))

Packet = tuple[int, bytes, int, int, int]
"""(ts_ns, captured bytes, origlen, linktype, interface) of one delivered packet."""
Record = tuple[int, int, bytes, int]
"""(ts_sec, ts_frac, data, origlen) of one pcap record."""


# ------------------------------------------------------------------------------------------ helpers


def pcap_header(
    *, big: bool = False, nano: bool = False, snaplen: int = 65535, linktype: int = 1, major: int = 2
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack(">IHHiIII" if big else "<IHHiIII", magic, major, 4, 0, 0, snaplen, linktype)


def pcap_record(
    sec: int,
    frac: int,
    data: bytes,
    origlen: int | None = None,
    *,
    big: bool = False,
    caplen: int | None = None,
) -> bytes:
    cl = len(data) if caplen is None else caplen
    ol = len(data) if origlen is None else origlen
    return struct.pack(">IIII" if big else "<IIII", sec, frac, cl, ol) + data


def pcap_file(records: list[Record], *, big: bool = False, nano: bool = False, **header: int) -> bytes:
    return pcap_header(big=big, nano=nano, **header) + b"".join(
        pcap_record(s, f, d, o, big=big) for s, f, d, o in records
    )


def parse_pcap(data: bytes) -> tuple[bytes, list[Record]]:
    """Header and records of a well-formed little-endian microsecond pcap (to transform corpus files)."""
    assert data[:4] == bytes.fromhex("d4c3b2a1")
    records: list[Record] = []
    p = 24
    while p < len(data):
        sec, frac, cl, ol = struct.unpack_from("<IIII", data, p)
        records.append((sec, frac, data[p + 16 : p + 16 + cl], ol))
        p += 16 + cl
    return data[:24], records


def record_offsets(data: bytes) -> list[int]:
    """File offsets of the record headers of a well-formed little-endian pcap."""
    offsets, p = [], 24
    while p < len(data):
        offsets.append(p)
        p += 16 + struct.unpack_from("<I", data, p + 8)[0]
    return offsets


def synthetic_records(n: int, *, start: int = 1_700_000_000) -> list[Record]:
    """n small, distinct records 10 ms apart."""
    return [
        (
            start + i // 100,
            (i % 100) * 10_000,
            bytes([i % 256]) * (20 + i % 50) + i.to_bytes(4, "big"),
            24 + i % 50,
        )
        for i in range(n)
    ]


def expected_packets(records: list[Record], *, nano: bool = False, linktype: int = 1) -> list[Packet]:
    mult = 1 if nano else 1000
    return [(s * 10**9 + f * mult, d, o, linktype, 0) for s, f, d, o in records]


def check_batches(batches: list[PacketBatch], source: str | None = None) -> None:
    """The structural promises of a PacketBatch stream."""
    first = 0
    for b in batches:
        n = len(b)
        assert n > 0
        assert b.first_index == first
        for column in (b.caplen, b.origlen, b.ts_ns, b.interface, b.linktype):
            assert column.shape == (n,)
        assert b.offsets.dtype == np.int64
        assert b.ts_ns.dtype == np.int64
        assert b.caplen.dtype == np.uint32
        assert b.interface.dtype == np.uint16
        assert b.buffer.dtype == np.uint8
        assert (b.offsets >= 0).all()
        assert (b.offsets + b.caplen.astype(np.int64) <= b.buffer.shape[0]).all()
        if source is not None:
            assert b.source == source
        first += n


def read(path: Path, **kwargs: int | bool) -> tuple[list[PacketBatch], CaptureReader]:
    with open_capture(path, **kwargs) as reader:  # type: ignore[arg-type]
        batches = list(reader)
    check_batches(batches, str(path))
    assert reader.packets_read == sum(len(b) for b in batches)
    return batches, reader


def packets(batches: list[PacketBatch]) -> list[Packet]:
    return [
        (int(b.ts_ns[i]), b.packet(i), int(b.origlen[i]), int(b.linktype[i]), int(b.interface[i]))
        for b in batches
        for i in range(len(b))
    ]


def read_packets(path: Path, **kwargs: int) -> tuple[list[Packet], WeirdLog]:
    batches, reader = read(path, **kwargs)
    return packets(batches), reader.weird


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def epoch_ns(text: str) -> int:
    """tshark's frame.time_epoch ("1461764814.520906000") as integer ns."""
    sec, _, frac = text.partition(".")
    return int(sec) * 10**9 + int((frac + "000000000")[:9])


def tshark_fields(tshark: str, path: Path, *fields: str) -> list[list[str]]:
    """The given fields of every frame of ``path``, as tshark dissects them."""
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", *(arg for field in fields for arg in ("-e", field))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines()]


def tshark_frames(tshark: str, path: Path) -> list[tuple[int, int, int]]:
    """(ts_ns, frame.len, frame.cap_len) of every frame, according to tshark."""
    rows = tshark_fields(tshark, path, "frame.time_epoch", "frame.len", "frame.cap_len")
    return [(epoch_ns(ts), int(length), int(caplen)) for ts, length, caplen in rows]


def our_frames(path: Path) -> list[tuple[int, int, int]]:
    return [(ts, origlen, len(data)) for ts, data, origlen, _, _ in read_packets(path)[0]]


@pytest.fixture(scope="module")
def dnp3(corpus: Path) -> bytes:
    return (corpus / "dnp3" / "dnp3.pcap").read_bytes()


# ------------------------------------------------------------------------------------------ corpus


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_matches_tshark(path: Path, corpus: Path, tshark: str) -> None:
    """Count, every timestamp, original and captured length, as tshark reads them."""
    ours = our_frames(path)
    theirs = tshark_frames(tshark, path)
    assert len(ours) == len(theirs) > 0
    assert ours[0][0] == theirs[0][0]
    assert ours[-1][0] == theirs[-1][0]
    assert sum(f[2] for f in ours) == sum(f[2] for f in theirs)
    assert ours == theirs


def test_corpus_matches_capinfos(corpus: Path, capinfos: str) -> None:
    """Packet count, data size (capinfos sums original lengths) and first/last timestamps."""
    out = subprocess.run(
        [capinfos, "-T", "-r", "-M", "-S", "-c", "-d", "-a", "-e", *map(str, CORPUS_FILES)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {Path(cols[0]): cols[1:] for cols in (line.split("\t") for line in out.splitlines() if line)}
    assert set(rows) == set(CORPUS_FILES)
    for path, (count, size, start, end) in rows.items():
        batches, reader = read(path)
        assert reader.packets_read == int(count), path
        assert sum(b.wire_bytes for b in batches) == int(size), path
        times = np.concatenate([b.ts_ns for b in batches])
        assert int(times.min()) == epoch_ns(start), path
        assert int(times.max()) == epoch_ns(end), path


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_bytes_match_dpkt(path: Path, corpus: Path) -> None:
    """The captured bytes of every packet, as dpkt's pcap reader gives them."""
    with path.open("rb") as f:
        theirs = [bytes(buf) for _ts, buf in dpkt.pcap.Reader(f)]
    batches, reader = read(path)
    assert [data for _, data, _, _, _ in packets(batches)] == theirs
    assert reader.format == "pcap"
    assert not reader.compressed
    assert reader.weird.total == 0
    assert len(reader.interfaces) == 1
    info = reader.interfaces[0]
    assert (info.index, info.linktype, info.ts_resolution_ns) == (0, 1, 1000)
    assert all((b.linktype == 1).all() and (b.interface == 0).all() for b in batches)


# ------------------------------------------------------------------------------ byte order, nanoseconds


@pytest.mark.parametrize(("big", "nano"), [(False, False), (False, True), (True, False), (True, True)])
def test_byte_order_and_nanosecond_variants(
    tmp_path: Path, dnp3: bytes, tshark: str, big: bool, nano: bool
) -> None:
    header, records = parse_pcap(dnp3)
    snaplen, linktype = struct.unpack_from("<II", header, 16)
    scale = 1000 if nano else 1
    variant = [(s, f * scale + (7 if nano else 0), d, o) for s, f, d, o in records]
    path = write(
        tmp_path, "variant.pcap", pcap_file(variant, big=big, nano=nano, snaplen=snaplen, linktype=linktype)
    )
    got, weird = read_packets(path)
    assert got == expected_packets(variant, nano=nano)
    assert weird.total == 0
    assert our_frames(path) == tshark_frames(tshark, path)
    _, reader = read(path)
    assert reader.interfaces[0].ts_resolution_ns == (1 if nano else 1000)


# -------------------------------------------------------------------------------------------- gzip


def test_gzip_is_sniffed_not_named(tmp_path: Path, dnp3: bytes) -> None:
    plain = write(tmp_path, "plain.pcap", dnp3)
    packed = write(tmp_path, "packed.pcap", gzip.compress(dnp3))  # no .gz: the magic decides
    expected, _ = read_packets(plain)
    batches, reader = read(packed, batch_bytes=1000)
    assert packets(batches) == expected
    assert reader.compressed
    assert reader.format == "pcap"
    assert reader.size == packed.stat().st_size == reader.position
    assert reader.weird.total == 0


def test_gzip_of_several_members(tmp_path: Path, dnp3: bytes) -> None:
    cut = len(dnp3) // 3 + 5  # inside a record: members need not follow record boundaries
    path = write(tmp_path, "multi.pcap.gz", gzip.compress(dnp3[:cut]) + gzip.compress(dnp3[cut:]) + b"\0" * 8)
    got, weird = read_packets(path, batch_bytes=512)
    assert got == read_packets(write(tmp_path, "plain.pcap", dnp3))[0]
    assert weird.total == 0


def test_truncated_gzip_delivers_what_was_decoded(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    packed = gzip.compress(dnp3, compresslevel=1)
    got, weird = read_packets(write(tmp_path, "cut.pcap.gz", packed[: len(packed) * 2 // 3]))
    assert 0 < len(got) < len(expected)
    assert got == expected[: len(got)]
    assert weird.counts["pcap_gzip_truncated"] == 1
    assert weird.counts["pcap_truncated_record"] <= 1


def test_corrupt_gzip_delivers_what_was_decoded(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    packed = bytearray(gzip.compress(dnp3 * 40, compresslevel=1))
    packed[len(packed) // 2 :] = bytes(len(packed) - len(packed) // 2)  # second half zeroed
    got, weird = read_packets(write(tmp_path, "bad.pcap.gz", bytes(packed)), batch_bytes=4096)
    assert weird.counts["pcap_gzip_corrupt"] + weird.counts["pcap_gzip_truncated"] == 1
    assert len(got) > 0
    assert got[: len(expected)] == expected


def test_gzip_with_trailing_garbage(tmp_path: Path, dnp3: bytes) -> None:
    path = write(tmp_path, "junk.pcap.gz", gzip.compress(dnp3) + b"not gzip at all")
    got, weird = read_packets(path)
    assert got == read_packets(write(tmp_path, "plain.pcap", dnp3))[0]
    assert weird.counts == {"pcap_gzip_trailing_garbage": 1}


def test_gzip_that_is_not_a_capture(tmp_path: Path) -> None:
    path = write(tmp_path, "text.gz", gzip.compress(b"hello, world\n"))
    with pytest.raises(CaptureFormatError, match=r"not a pcap or pcapng capture \(magic 0x68656c6c\)"):
        open_capture(path)
    with pytest.raises(CaptureFormatError, match="corrupt gzip stream"):
        open_capture(write(tmp_path, "broken.gz", b"\x1f\x8b\x08\x00garbage" * 3))
    with pytest.raises(CaptureFormatError, match="empty"):
        open_capture(write(tmp_path, "nothing.gz", gzip.compress(b"")))


# -------------------------------------------------------------------------------- file-level errors


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureIOError, match="no such file"):
        open_capture(tmp_path / "absent.pcap")
    with pytest.raises(CaptureIOError, match="is a directory"):
        open_capture(tmp_path)


def test_permission_denied(tmp_path: Path, dnp3: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "secret.pcap", dnp3)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make open() answer as it would for anyone else

        def denied(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("fieldward.capture.reader.open", denied, raising=False)
    with pytest.raises(CaptureIOError) as info:
        open_capture(path)
    assert str(info.value) == f"{path}: permission denied"


def test_not_a_capture(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", b"hello, world, this is not a capture\n")
    with pytest.raises(CaptureFormatError) as info:
        open_capture(path)
    assert str(info.value) == f"{path}: not a pcap or pcapng capture (magic 0x68656c6c)"


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="empty file"):
        open_capture(write(tmp_path, "empty.pcap", b""))
    with pytest.raises(CaptureFormatError, match=r"truncated pcap file header \(10 of 24 bytes\)"):
        open_capture(write(tmp_path, "short.pcap", pcap_header()[:10]))
    with pytest.raises(CaptureFormatError, match=r"magic 0xd4c3"):
        open_capture(write(tmp_path, "two.pcap", pcap_header()[:2]))


def test_corrupt_file_header(tmp_path: Path) -> None:
    path = write(tmp_path, "v9.pcap", pcap_header(major=9) + pcap_record(1, 2, b"x" * 60))
    with pytest.raises(CaptureFormatError) as info:
        open_capture(path)
    message = str(info.value)
    assert message == f"{path}: corrupt pcap file header (version 9.4, expected 2.x)"
    assert "\n" not in message


def test_header_only_file_has_no_packets(tmp_path: Path) -> None:
    batches, reader = read(write(tmp_path, "hdr.pcap", pcap_header(big=True, snaplen=1500, linktype=113)))
    assert batches == []
    assert reader.weird.total == 0
    assert reader.interfaces[0].linktype == 113
    assert reader.interfaces[0].snaplen == 1500


# ------------------------------------------------------------------------------------------ bad records


def test_truncated_last_record(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    last = record_offsets(dnp3)[-1]
    for cut in (len(dnp3) - 1, last + 20, last + 16, last + 9, last + 1):
        got, weird = read_packets(write(tmp_path, f"cut{cut}.pcap", dnp3[:cut]))
        assert got == expected[:-1], cut
        assert weird.counts == {"pcap_truncated_record": 1}, cut
        assert weird.samples[0].packet_index == len(expected) - 1
        assert f"offset {last}" in weird.samples[0].detail


def test_unknown_linktype_is_delivered_and_counted(tmp_path: Path) -> None:
    records = synthetic_records(5)
    got, weird = read_packets(write(tmp_path, "lt.pcap", pcap_file(records, linktype=147)))
    assert got == expected_packets(records, linktype=147)
    assert weird.counts == {"pcap_unknown_linktype": 1}
    assert "147" in weird.samples[0].detail
    assert weird.samples[0].layer == "capture"


def test_supported_linktypes_are_not_weird(tmp_path: Path) -> None:
    for linktype in (0, 1, 12, 14, 101, 108, 113, 228, 229, 276):
        _, weird = read_packets(
            write(tmp_path, "ok.pcap", pcap_file(synthetic_records(2), linktype=linktype))
        )
        assert weird.total == 0, linktype


def test_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    # draft-ietf-opsawg-pcap: FCS length and flag live above the 16-bit LinkType.
    got, weird = read_packets(
        write(tmp_path, "fcs.pcap", pcap_file(synthetic_records(2), linktype=(4 << 28) | 1))
    )
    assert {p[3] for p in got} == {1}
    assert weird.total == 0


def test_zero_length_record(tmp_path: Path) -> None:
    records = synthetic_records(6)
    records[3] = (records[3][0], records[3][1], b"", 0)
    got, weird = read_packets(write(tmp_path, "zero.pcap", pcap_file(records)))
    assert got == expected_packets(records)
    assert got[3][1] == b""
    assert weird.counts == {"pcap_zero_length_record": 1}
    assert weird.samples[0].packet_index == 3


def test_absurd_caplen_resyncs_on_the_next_record(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    offsets = record_offsets(dnp3)
    k = len(offsets) // 2
    data = bytearray(dnp3)
    struct.pack_into("<I", data, offsets[k] + 8, 0xFFFFFF00)
    got, weird = read_packets(write(tmp_path, "absurd.pcap", bytes(data)))
    assert got == expected[:k] + expected[k + 1 :]
    assert weird.counts == {"pcap_bad_record_length": 1}
    sample = weird.samples[0]
    assert f"offset {offsets[k]}" in sample.detail
    assert f"offset {offsets[k + 1]}" in sample.detail
    assert sample.packet_index == k


def test_caplen_over_origlen_breaking_the_chain_resyncs(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    offsets = record_offsets(dnp3)
    k = 10
    data = bytearray(dnp3)
    struct.pack_into("<II", data, offsets[k] + 8, 3000, 60)  # caplen 3000 > origlen 60, within snaplen
    got, weird = read_packets(write(tmp_path, "over.pcap", bytes(data)))
    assert got == expected[:k] + expected[k + 1 :]
    assert weird.counts == {"pcap_bad_record_length": 1}


def test_caplen_over_origlen_in_a_sound_chain_is_delivered(tmp_path: Path) -> None:
    records = synthetic_records(8)
    records[2] = (records[2][0], records[2][1], records[2][2], 3)  # origlen 3 < caplen
    records[7] = (records[7][0], records[7][1], records[7][2], 1)  # also on the last record
    got, weird = read_packets(write(tmp_path, "over.pcap", pcap_file(records)))
    assert got == expected_packets(records)
    assert weird.counts == {"pcap_caplen_exceeds_origlen": 2}


def test_plausible_but_wrong_caplen(tmp_path: Path, dnp3: bytes) -> None:
    """A length off by a few bytes is only seen at the next header: packets before and after survive."""
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    offsets = record_offsets(dnp3)
    k = 40
    data = bytearray(dnp3)
    caplen, origlen = struct.unpack_from("<II", data, offsets[k] + 8)
    struct.pack_into("<II", data, offsets[k] + 8, caplen + 5, origlen + 5)
    got, weird = read_packets(write(tmp_path, "off.pcap", bytes(data)))
    assert got[:k] == expected[:k]
    tail = expected[k + 2 :]
    assert got[-len(tail) :] == tail
    assert weird.counts == {"pcap_bad_record_length": 1}


def test_garbage_between_records(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    offsets = record_offsets(dnp3)
    k = 100
    junk = bytes(range(200, 237)) + b"\xff" * 20
    data = dnp3[: offsets[k]] + junk + dnp3[offsets[k] :]
    got, weird = read_packets(write(tmp_path, "junk.pcap", data))
    assert got == expected
    assert weird.counts == {"pcap_bad_record_length": 1}
    assert f"skipped {len(junk)} bytes" in weird.samples[0].detail


def test_corrupt_first_record(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    data = bytearray(dnp3)
    data[24:40] = b"\xee" * 16
    got, weird = read_packets(write(tmp_path, "first.pcap", bytes(data)))
    assert got == expected[1:]
    assert weird.counts == {"pcap_bad_record_length": 1}


def test_corrupt_record_with_nothing_after_it(tmp_path: Path, dnp3: bytes) -> None:
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    offsets = record_offsets(dnp3)
    k = 50
    data = dnp3[: offsets[k]] + b"\xfe" * 5000
    got, weird = read_packets(write(tmp_path, "end.pcap", data))
    assert got == expected[:k]
    assert weird.counts == {"pcap_bad_record_length": 1}
    assert "nothing plausible" in weird.samples[0].detail


def test_length_running_past_the_end_with_records_after(tmp_path: Path, dnp3: bytes) -> None:
    """A corrupt caplen that runs past the end of the file is not a truncation if records follow."""
    expected, _ = read_packets(write(tmp_path, "plain.pcap", dnp3))
    offsets = record_offsets(dnp3)
    k = len(offsets) - 5
    data = bytearray(dnp3)
    struct.pack_into("<II", data, offsets[k] + 8, 200_000, 200_000)
    got, weird = read_packets(write(tmp_path, "past.pcap", bytes(data)), batch_bytes=4096)
    assert got == expected[:k] + expected[k + 1 :]
    assert weird.counts == {"pcap_bad_record_length": 1}


def test_resync_across_chunk_boundaries(tmp_path: Path) -> None:
    records = synthetic_records(3000)
    data = bytearray(pcap_file(records))
    bad = record_offsets(bytes(data))[1000]
    struct.pack_into("<I", data, bad + 8, 0x7FFFFFFF)
    expected = expected_packets(records)
    for batch_bytes in (64, 1000, 1 << 20):
        got, weird = read_packets(write(tmp_path, "chunks.pcap", bytes(data)), batch_bytes=batch_bytes)
        assert got == expected[:1000] + expected[1001:], batch_bytes
        assert weird.counts == {"pcap_bad_record_length": 1}


# -------------------------------------------------------------------------------- batching, memory


def test_small_batches_match_one_big_batch(corpus: Path) -> None:
    path = corpus / "http" / "bro.org.pcap"
    whole, _ = read(path)
    assert len(whole) == 1
    expected = packets(whole)
    biggest = max(len(p[1]) for p in expected)
    for batch_packets, batch_bytes in ((7, 16 << 20), (65536, 3000), (5, 300), (1, 1)):
        for memory_map in (False, True):
            batches, reader = read(
                path, batch_packets=batch_packets, batch_bytes=batch_bytes, memory_map=memory_map
            )
            assert packets(batches) == expected
            assert all(len(b) <= batch_packets for b in batches)
            assert len(batches) >= len(expected) / batch_packets
            for b in batches:
                # Copied chunks are bounded; a mapped file is shared, each batch's window is bounded.
                chunk = b.buffer if memory_map or b.buffer.base is None else b.buffer.base
                assert chunk.nbytes <= max(batch_bytes, 32 + biggest)
            assert reader.position == reader.size == path.stat().st_size


@pytest.mark.parametrize("batch_bytes", [16 << 20, 1000])
def test_memory_mapped_and_copied_reads_agree(corpus: Path, tmp_path: Path, batch_bytes: int) -> None:
    """The memory-mapped reader delivers exactly what the copying one does, weirds included."""
    damaged = tmp_path / "damaged.pcap"
    data = bytearray((corpus / "http" / "bro.org.pcap").read_bytes())
    second = 24 + 16 + int.from_bytes(data[32:36], "little")  # file header, first record
    data[second + 8 : second + 16] = b"\xff" * 8  # the second record's lengths: corrupt
    damaged.write_bytes(bytes(data[:-7]))  # and a truncated last record
    for path in [*sorted(corpus.glob("*/*.pcap")), damaged]:
        copied, copied_reader = read(path, batch_bytes=batch_bytes, memory_map=False)
        mapped, mapped_reader = read(path, batch_bytes=batch_bytes, memory_map=True)
        assert packets(mapped) == packets(copied), path
        assert mapped_reader.weird.counts == copied_reader.weird.counts, path
    assert sum(copied_reader.weird.counts.values()) >= 2


def test_batches_stay_valid_after_later_ones(tmp_path: Path) -> None:
    records = synthetic_records(5000)
    path = write(tmp_path, "many.pcap", pcap_file(records))
    with open_capture(path, batch_packets=300, batch_bytes=2048) as reader:
        kept = []
        for batch in reader:
            kept.append(batch)
            assert reader.position <= reader.size
    assert packets(kept) == expected_packets(records)
    assert [b.first_index for b in kept] == list(np.cumsum([0] + [len(b) for b in kept[:-1]]))


def test_position_grows_to_size(tmp_path: Path) -> None:
    path = write(tmp_path, "pos.pcap", pcap_file(synthetic_records(4000)))
    with open_capture(path, batch_bytes=10_000) as reader:
        seen = [reader.position for _ in reader]
        assert seen == sorted(seen)
        assert 0 < seen[0] < reader.size
        assert reader.position == reader.size == path.stat().st_size


def test_memory_stays_flat(tmp_path: Path) -> None:
    """A 24 MB capture read in 1 MiB chunks never holds more than a few chunks."""
    n, size = 200_000, 100
    rec = np.zeros(
        n, dtype=[("sec", "<u4"), ("frac", "<u4"), ("cl", "<u4"), ("ol", "<u4"), ("data", "u1", size)]
    )
    rec["sec"] = 1_700_000_000 + np.arange(n) // 1000
    rec["frac"] = np.arange(n) % 1000 * 1000
    rec["cl"] = rec["ol"] = size
    rec["data"] = (np.arange(n) % 251)[:, None]
    path = tmp_path / "big.pcap"
    with path.open("wb") as f:
        f.write(pcap_header())
        rec.tofile(f)
    del rec
    tracemalloc.start()
    try:
        count = total = 0
        with open_capture(path, batch_bytes=1 << 20, batch_packets=4096) as reader:
            for batch in reader:
                count += len(batch)
                total += batch.captured_bytes
                assert int(batch.buffer[int(batch.offsets[-1])]) == (batch.first_index + len(batch) - 1) % 251
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (count, total) == (n, n * size)
    assert peak < 6 << 20, peak


def test_reader_api(tmp_path: Path) -> None:
    path = write(tmp_path, "api.pcap", pcap_file(synthetic_records(3)))
    log = WeirdLog()
    reader = open_capture(str(path), weird=log)
    assert isinstance(reader, CaptureReader)
    assert reader.path == path
    assert reader.weird is log
    assert reader.size == path.stat().st_size
    assert reader.packets_read == 0
    assert sum(len(b) for b in reader) == 3
    assert list(reader) == []  # a reader is a single pass
    reader.close()
    with pytest.raises(ValueError, match="positive"):
        open_capture(path, batch_packets=0)
