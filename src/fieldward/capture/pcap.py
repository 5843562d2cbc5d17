"""The classic pcap format (libpcap savefile, draft-ietf-opsawg-pcap): header parsing and record walk.

A pcap file is a 24-byte file header (magic, version, snaplen, link type) followed by records, each a
16-byte header (ts_sec, ts_usec or ts_nsec, caplen, origlen) and caplen bytes of packet data. The magic
gives the byte order and the timestamp resolution. :class:`PcapWalker` runs the numba record walk
over the chunks the capture reader hands it and knows how to resynchronise after a corrupt record.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fieldward.capture import _kernels as kernels
from fieldward.capture import linktypes
from fieldward.capture.batch import InterfaceInfo
from fieldward.errors import CaptureFormatError
from fieldward.weird import WeirdLog

if TYPE_CHECKING:
    from fieldward.capture.reader import ChunkStream, RecordArrays

FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16

# The magic as the first four bytes of the file -> (big-endian, nanosecond timestamps).
MAGICS: dict[bytes, tuple[bool, bool]] = {
    bytes.fromhex("d4c3b2a1"): (False, False),  # 0xa1b2c3d4 written little-endian: microseconds
    bytes.fromhex("4d3cb2a1"): (False, True),  # 0xa1b23c4d written little-endian: nanoseconds
    bytes.fromhex("a1b2c3d4"): (True, False),
    bytes.fromhex("a1b23c4d"): (True, True),
}

MIN_MAX_CAPLEN = 262144
"""A record may always hold this much (Wireshark's largest snaplen), whatever the header's snaplen."""
SNAPLEN_CEILING = 1 << 24
"""Larger snaplens are taken as this, bounding the memory a garbage length can make us read ahead."""
RESYNC_WINDOW_S = 7 * 86400
"""How far (s) the timestamp of a record may be from its predecessor's before it is suspicious."""


@dataclass(frozen=True, slots=True)
class PcapHeader:
    """The pcap file header (draft-ietf-opsawg-pcap section 4)."""

    big_endian: bool
    nanosecond: bool
    version_major: int
    version_minor: int
    snaplen: int
    linktype: int
    """LinkType: the low 16 bits of the LinkType-and-additional-information field (FCS bits above)."""

    @property
    def max_caplen(self) -> int:
        """Largest caplen a record may claim before it is considered corrupt."""
        return max(MIN_MAX_CAPLEN, min(self.snaplen, SNAPLEN_CEILING))


def is_pcap_magic(head: bytes) -> bool:
    return head[:4] in MAGICS


def parse_header(data: bytes, source: str) -> PcapHeader:
    """Parse the 24-byte file header; CaptureFormatError (one line) if it is truncated or corrupt."""
    if len(data) < FILE_HEADER_LEN:
        raise CaptureFormatError(
            f"{source}: truncated pcap file header ({len(data)} of {FILE_HEADER_LEN} bytes)"
        )
    order = MAGICS.get(data[:4])
    if order is None:
        raise CaptureFormatError(f"{source}: not a pcap capture (magic 0x{data[:4].hex()})")
    big, nano = order
    major, minor, _zone, _sigfigs, snaplen, network = struct.unpack(
        ">HHiIII" if big else "<HHiIII", data[4:FILE_HEADER_LEN]
    )
    if major != 2:
        raise CaptureFormatError(
            f"{source}: corrupt pcap file header (version {major}.{minor}, expected 2.x)"
        )
    return PcapHeader(big, nano, major, minor, snaplen, network & 0xFFFF)


class PcapWalker:
    """Walks the records of one pcap file for the capture reader (see reader.Walker)."""

    prefix = "pcap"
    truncated_weird = "pcap_truncated_record"
    bad_weird = "pcap_bad_record_length"

    def __init__(self, source: str, weird: WeirdLog, interfaces: list[InterfaceInfo]) -> None:
        self._source = source
        self._weird = weird
        self._interfaces = interfaces
        self.header = PcapHeader(False, False, 2, 4, 0, 0)
        self.last_ts = -1
        """Timestamp (ns) of the last record delivered, -1 before the first."""

    def start(self, stream: ChunkStream) -> int:
        """Parse the file header at the start of the stream; returns the position of the first record."""
        header = parse_header(bytes(stream.buf[: min(stream.end, FILE_HEADER_LEN)]), self._source)
        self.header = header
        self._interfaces.append(
            InterfaceInfo(
                index=0,
                linktype=header.linktype,
                snaplen=header.snaplen,
                ts_resolution_ns=1 if header.nanosecond else 1000,
            )
        )
        if header.linktype not in linktypes.SUPPORTED:
            self._weird.report(
                "pcap_unknown_linktype",
                "capture",
                f"link type {header.linktype} ({linktypes.name(header.linktype)}) is not decoded; "
                "packets are delivered undecoded",
                source=self._source,
            )
        return FILE_HEADER_LEN

    def walk(self, stream: ChunkStream, pos: int, out: RecordArrays) -> tuple[int, int, int]:
        """Walk records from ``pos``; returns (pos, status, need) with a status of _kernels."""
        h = self.header
        n0 = out.n
        n, pos, status, need = kernels.pcap_walk(
            stream.buf,
            pos,
            stream.end,
            h.big_endian,
            1 if h.nanosecond else 1000,
            1_000_000_000 if h.nanosecond else 1_000_000,
            h.max_caplen,
            RESYNC_WINDOW_S,
            self.last_ts // kernels.NS_PER_S if self.last_ts >= 0 else -1,
            stream.eof,
            h.linktype,
            out.offsets,
            out.caplen,
            out.origlen,
            out.ts_ns,
            out.interface,
            out.linktype,
            n0,
        )
        out.n = n
        if n > n0:
            self.last_ts = int(out.ts_ns[n - 1])
        return pos, status, need

    def resync(self, stream: ChunkStream, pos: int) -> tuple[int, int, int]:
        """Scan from ``pos`` for the next plausible record; returns (pos, status, need)."""
        h = self.header
        ref_sec = self.last_ts // kernels.NS_PER_S if self.last_ts >= 0 else -1
        p, status, need = kernels.pcap_resync(
            stream.buf,
            pos,
            stream.end,
            h.big_endian,
            1_000_000_000 if h.nanosecond else 1_000_000,
            h.max_caplen,
            RESYNC_WINDOW_S,
            ref_sec,
            stream.eof,
        )
        return p, status, need

    def describe_bad(self, stream: ChunkStream, pos: int) -> str:
        """One line on the corrupt record header at ``pos`` (for the weird's detail)."""
        offset = stream.base + pos
        if stream.end - pos < RECORD_HEADER_LEN:
            return f"record header at offset {offset} is cut short"
        _sec, _frac, caplen, origlen = struct.unpack(
            ">IIII" if self.header.big_endian else "<IIII", stream.buf[pos : pos + 16].tobytes()
        )
        return (
            f"record at offset {offset} claims caplen {caplen}, origlen {origlen} "
            f"(snaplen {self.header.snaplen}, limit {self.header.max_caplen})"
        )
