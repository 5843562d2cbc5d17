"""The pcapng format (draft-ietf-opsawg-pcapng): block parsing and the packet walk for the reader.

A pcapng file is a sequence of sections, each a Section Header Block (SHB, which fixes the byte order
of the section) followed by blocks: Interface Description Blocks (IDB: link type, snaplen and
timestamp resolution/offset of each interface, numbered from 0 within the section), packet blocks
(Enhanced, Simple and the obsolete Packet Block) and others (statistics, name resolution, secrets,
custom) that FieldWard does not need. Every block is ``type, total length, body, total length``.

:class:`PcapngWalker` lets the numba kernel walk the packet blocks and handles the rare other blocks
in Python. Interfaces get capture-wide indexes (CaptureReader.interfaces) across sections.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from fieldward.capture import _kernels as kernels
from fieldward.capture import linktypes
from fieldward.capture.batch import I64, InterfaceInfo
from fieldward.errors import CaptureFormatError
from fieldward.weird import WeirdLog

if TYPE_CHECKING:
    from fieldward.capture.reader import ChunkStream, RecordArrays

SHB_MAGIC = bytes.fromhex("0a0d0d0a")
BOM_LITTLE = bytes.fromhex("4d3c2b1a")  # 0x1A2B3C4D written little-endian (section 4.1)
BOM_BIG = bytes.fromhex("1a2b3c4d")
SHB_MIN_LEN = 28
IDB_MIN_LEN = 20
MAX_BLOCK_LEN = 32 * 2**20
"""Longer blocks are taken as corrupt: far above any real packet, it bounds what a bad length costs."""
MAX_INTERFACES = 65536  # PacketBatch.interface is uint16

# Block types defined by the specification that carry nothing FieldWard uses (section 11.1).
IGNORED_BLOCKS = frozenset(
    {
        kernels.BT_NRB,
        kernels.BT_ISB,
        0x00000007,
        0x00000008,
        kernels.BT_SJE,
        kernels.BT_DSB,
        kernels.BT_CB_COPY,
        kernels.BT_CB_NOCOPY,
    }
)

# Options (section 3.5) and IDB options (section 4.2).
OPT_ENDOFOPT = 0
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
IF_TSOFFSET = 14
MAX_TSOFFSET_S = 1 << 32  # keeps offset + timestamp within int64 nanoseconds

_CONTINUE = -1  # internal: the block was handled, walk on


def ts_resolution(value: int) -> tuple[int, int, int] | None:
    """Decode an if_tsresol byte: (kernel mode, kernel parameter, rounded ns per unit), None if absurd.

    MSB clear: units of 10^-value s; MSB set: units of 2^-(value & 0x7f) s (section 4.2).
    """
    if value & 0x80:
        k = value & 0x7F
        if k > 63:
            return None
        return kernels.TS_SHIFT, k, max(1, round(1e9 / 2**k))
    if value <= 9:
        return kernels.TS_MUL, 10 ** (9 - value), 10 ** (9 - value)
    if value <= 27:
        return kernels.TS_DIV, 10 ** (value - 9), 1
    return None


class PcapngWalker:
    """Walks the blocks of one pcapng file for the capture reader (see reader.Walker)."""

    prefix = "pcapng"
    truncated_weird = "pcapng_truncated_block"
    bad_weird = "pcapng_bad_block_length"

    def __init__(self, source: str, weird: WeirdLog, interfaces: list[InterfaceInfo]) -> None:
        self._source = source
        self._weird = weird
        self._interfaces = interfaces
        self.big = False
        """Byte order of the current section."""
        self.sections = 0
        self._rows: list[list[int]] = []
        self._iftab: I64 = np.zeros((0, kernels.IF_COLUMNS), dtype=np.int64)
        self._stats: I64 = np.zeros(kernels.ST_SIZE, dtype=np.int64)
        self.last_ts = 0
        """Timestamp (ns) of the last packet, also given to Simple Packet Blocks (they carry none)."""

    # -- the reader's interface -------------------------------------------------------------------

    def start(self, stream: ChunkStream) -> int:
        """Parse the first Section Header Block; returns the position after it."""
        pos, status, need = self._section_header(stream, 0, first=True)
        if status == kernels.MORE:
            stream.refill(0, need)
            pos, status, need = self._section_header(stream, 0, first=True)
            if status == kernels.MORE:
                raise CaptureFormatError(
                    f"{self._source}: truncated pcapng section header block ({stream.end} of {need} bytes)"
                )
        return pos

    def walk(self, stream: ChunkStream, pos: int, out: RecordArrays) -> tuple[int, int, int]:
        """Walk blocks from ``pos``; returns (pos, status, need) with a status FULL, MORE or BAD."""
        while True:
            n0 = out.n
            n, pos, status, need, self.last_ts = kernels.pcapng_walk(
                stream.buf,
                pos,
                stream.end,
                self.big,
                self._iftab,
                MAX_BLOCK_LEN,
                out.offsets,
                out.caplen,
                out.origlen,
                out.ts_ns,
                out.interface,
                out.linktype,
                n0,
                self._stats,
                self.last_ts,
            )
            out.n = n
            if self._stats[kernels.ST_BAD_PACKET] or self._stats[kernels.ST_NO_IF]:
                self._report_dropped(stream.base)
            if status != kernels.OTHER:
                return pos, status, need
            pos, status, need = self._block(stream, pos)
            if status != _CONTINUE:
                return pos, status, need

    def resync(self, stream: ChunkStream, pos: int) -> tuple[int, int, int]:
        """Scan from ``pos`` for the next plausible block; returns (pos, status, need)."""
        p, status, need = kernels.pcapng_resync(
            stream.buf, pos, stream.end, self.big, MAX_BLOCK_LEN, stream.eof
        )
        return p, status, need

    def describe_bad(self, stream: ChunkStream, pos: int) -> str:
        """One line on the corrupt block at ``pos`` (for the weird's detail)."""
        offset = stream.base + pos
        avail = stream.end - pos
        if avail < 12:
            return f"block header at offset {offset} is cut short"
        head = stream.buf[pos : pos + 12].tobytes()
        order = ">" if self.big else "<"
        btype = struct.unpack(order + "I", head[:4])[0]
        if head[:4] == SHB_MAGIC:
            if head[8:12] not in (BOM_LITTLE, BOM_BIG):
                return (
                    f"section header block at offset {offset} has a bad byte-order magic 0x{head[8:12].hex()}"
                )
            order = "<" if head[8:12] == BOM_LITTLE else ">"
            btype = kernels.BT_SHB
        blen = struct.unpack(order + "I", head[4:8])[0]
        text = f"block of type 0x{btype:08x} at offset {offset} has total length {blen}"
        if blen < 12 or blen % 4:
            return text + " (must be at least 12 and a multiple of 4)"
        if blen > MAX_BLOCK_LEN:
            return text + f" (over the {MAX_BLOCK_LEN}-byte limit)"
        if blen > avail:
            return text + " (runs past the end of the file)"
        trailer = struct.unpack(order + "I", stream.buf[pos + blen - 4 : pos + blen].tobytes())[0]
        return text + f" but its trailer says {trailer}"

    # -- blocks handled in Python -------------------------------------------------------------------

    def _block(self, stream: ChunkStream, pos: int) -> tuple[int, int, int]:
        """Handle the non-packet block at ``pos`` (the kernel checked its length and trailer)."""
        buf = stream.buf
        order = ">" if self.big else "<"
        btype, blen = struct.unpack(order + "II", buf[pos : pos + 8].tobytes())
        if btype == kernels.BT_SHB:
            return self._section_header(stream, pos, first=False)
        if btype == kernels.BT_IDB:
            self._interface_block(stream, pos, blen)
        elif btype not in IGNORED_BLOCKS:
            self._weird.report(
                "pcapng_unknown_block",
                "capture",
                f"block of unknown type 0x{btype:08x} ({blen} bytes) at offset {stream.base + pos} skipped",
                source=self._source,
            )
        return pos + blen, _CONTINUE, 0

    def _section_header(self, stream: ChunkStream, pos: int, *, first: bool) -> tuple[int, int, int]:
        """Parse the SHB at ``pos`` (section 4.1): starts a new section with its own byte order."""
        buf, end = stream.buf, stream.end
        offset = stream.base + pos

        def corrupt(why: str) -> tuple[int, int, int]:
            if first:
                raise CaptureFormatError(f"{self._source}: corrupt pcapng section header block ({why})")
            return pos, kernels.BAD, 0

        if end - pos < 12:
            return pos, kernels.MORE, 12
        bom = buf[pos + 8 : pos + 12].tobytes()
        if bom not in (BOM_LITTLE, BOM_BIG):
            return corrupt(f"byte-order magic 0x{bom.hex()} at offset {offset + 8}")
        big = bom == BOM_BIG
        order = ">" if big else "<"
        blen = struct.unpack(order + "I", buf[pos + 4 : pos + 8].tobytes())[0]
        if blen < SHB_MIN_LEN or blen % 4 or blen > MAX_BLOCK_LEN:
            return corrupt(f"block total length {blen}")
        if end - pos < blen:
            return pos, kernels.MORE, blen
        trailer = struct.unpack(order + "I", buf[pos + blen - 4 : pos + blen].tobytes())[0]
        if trailer != blen:
            return corrupt(f"block total length {blen} but trailer {trailer}")
        major, minor = struct.unpack(order + "HH", buf[pos + 12 : pos + 16].tobytes())
        if major != 1:
            if first:
                raise CaptureFormatError(
                    f"{self._source}: unsupported pcapng version {major}.{minor} (expected 1.x)"
                )
            self._weird.report(
                "pcapng_unsupported_version",
                "capture",
                f"section at offset {offset} has version {major}.{minor} (expected 1.x); read as 1.0",
                source=self._source,
            )
        # A new section: interface numbering restarts (section 4.2), byte order may change.
        self.big = big
        self.sections += 1
        self._rows = []
        self._iftab = np.zeros((0, kernels.IF_COLUMNS), dtype=np.int64)
        return pos + blen, _CONTINUE, 0

    def _interface_block(self, stream: ChunkStream, pos: int, blen: int) -> None:
        """Parse an IDB (section 4.2) and add the interface to the section and to the capture."""
        offset = stream.base + pos
        if blen < IDB_MIN_LEN:
            self._weird.report(
                "pcapng_bad_interface_block",
                "capture",
                f"interface description block at offset {offset} is {blen} bytes, "
                f"shorter than its {IDB_MIN_LEN}-byte minimum; skipped",
                source=self._source,
            )
            return
        order = ">" if self.big else "<"
        body = stream.buf[pos + 8 : pos + blen - 4].tobytes()
        linktype, _reserved, snaplen = struct.unpack(order + "HHI", body[:8])
        name = description = ""
        mode, param, ns_per_unit = kernels.TS_MUL, 1000, 1000  # default if_tsresol 6: microseconds
        ts_offset = 0
        for code, value in self._options(body, 8, offset):
            if code == IF_NAME:
                name = value.decode("utf-8", "replace")
            elif code == IF_DESCRIPTION:
                description = value.decode("utf-8", "replace")
            elif code == IF_TSRESOL and len(value) >= 1:
                resolution = ts_resolution(value[0])
                if resolution is None:
                    self._weird.report(
                        "pcapng_bad_tsresol",
                        "capture",
                        f"interface block at offset {offset}: if_tsresol 0x{value[0]:02x} unusable; "
                        "microseconds assumed",
                        source=self._source,
                    )
                else:
                    mode, param, ns_per_unit = resolution
            elif code == IF_TSOFFSET and len(value) >= 8:
                seconds = struct.unpack(order + "q", value[:8])[0]
                if abs(seconds) > MAX_TSOFFSET_S:
                    self._bad_option(offset, f"if_tsoffset {seconds} s out of range; ignored")
                else:
                    ts_offset = seconds
        index = len(self._interfaces)
        if index >= MAX_INTERFACES:
            self._weird.report(
                "pcapng_too_many_interfaces",
                "capture",
                f"interface block at offset {offset}: more than {MAX_INTERFACES} interfaces; "
                f"its packets are attributed to interface {MAX_INTERFACES - 1}",
                source=self._source,
            )
            index = MAX_INTERFACES - 1
        else:
            self._interfaces.append(
                InterfaceInfo(
                    index=index,
                    linktype=linktype,
                    snaplen=snaplen,
                    name=name,
                    description=description,
                    ts_resolution_ns=ns_per_unit,
                    ts_offset_s=ts_offset,
                )
            )
        if linktype not in linktypes.SUPPORTED:
            self._weird.report(
                "pcapng_unknown_linktype",
                "capture",
                f"interface {index} (block at offset {offset}): link type {linktype} "
                f"({linktypes.name(linktype)}) is not decoded; packets are delivered undecoded",
                source=self._source,
            )
        self._rows.append([index, linktype, snaplen, mode, param, ts_offset * kernels.NS_PER_S])
        self._iftab = np.array(self._rows, dtype=np.int64).reshape(len(self._rows), kernels.IF_COLUMNS)

    def _options(self, body: bytes, start: int, offset: int) -> list[tuple[int, bytes]]:
        """The (code, value) options in ``body[start:]`` up to opt_endofopt (section 3.5)."""
        order = ">" if self.big else "<"
        found: list[tuple[int, bytes]] = []
        p = start
        while p + 4 <= len(body):
            code, length = struct.unpack(order + "HH", body[p : p + 4])
            if code == OPT_ENDOFOPT:
                break
            if p + 4 + length > len(body):
                self._bad_option(offset, f"option {code} of {length} bytes runs past the end of the block")
                break
            found.append((code, body[p + 4 : p + 4 + length]))
            p += 4 + ((length + 3) & ~3)
        return found

    def _bad_option(self, offset: int, why: str) -> None:
        self._weird.report(
            "pcapng_bad_option", "capture", f"block at offset {offset}: {why}", source=self._source
        )

    def _report_dropped(self, base: int) -> None:
        """Turn the kernel's counts of skipped packet blocks into weirds, then reset them."""
        stats = self._stats
        bad = int(stats[kernels.ST_BAD_PACKET])
        if bad:
            self._weird.report(
                "pcapng_bad_packet_block",
                "capture",
                f"packet block at offset {base + int(stats[kernels.ST_BAD_PACKET_POS])} is too short for its "
                "fields or its captured length; skipped",
                count=bad,
                source=self._source,
            )
        missing = int(stats[kernels.ST_NO_IF])
        if missing:
            self._weird.report(
                "pcapng_unknown_interface",
                "capture",
                f"packet block at offset {base + int(stats[kernels.ST_NO_IF_POS])} names interface "
                f"{int(stats[kernels.ST_NO_IF_ID])}, which has no interface description block in its "
                "section; skipped",
                count=missing,
                source=self._source,
            )
        stats[:] = 0
