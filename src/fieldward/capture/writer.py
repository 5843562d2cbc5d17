"""Classic pcap writer: PacketBatch (or single packets) to a ``.pcap`` / ``.pcap.gz`` file.

Used by the traffic generator and to cut alert evidence captures. A batch is written with one
``write`` call: all 16-byte record headers are built with numpy at once and interleaved with the
packet bytes by fixed-length row copies (one numpy operation per distinct packet length, none per
packet). Batches whose packets already sit 16 bytes apart in their buffer (the generator lays its
chunks out that way, and a batch cut from a memory-mapped pcap file has the same shape) take a
faster path: one copy of the buffer, then the headers are stamped into the gaps.

File format: libpcap "classic" format, little-endian, version 2.4, magic ``0xA1B2C3D4``
(microsecond timestamps) or ``0xA1B23C4D`` (nanosecond timestamps).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from fieldward.capture.batch import PacketBatch
from fieldward.errors import CaptureIOError, ConfigError

__all__ = [
    "MAGIC_NSEC",
    "MAGIC_USEC",
    "RECORD_HEADER_LEN",
    "PcapWriter",
    "byte_rows",
    "copy_runs",
    "run_bounds",
    "write_pcap",
]

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
RECORD_HEADER_LEN = 16
_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_MAX_TS_SEC = 0xFFFFFFFF

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def byte_rows(buffer: U8, width: int) -> U8:
    """A writable ``(len - width + 1, width)`` view whose row ``i`` is ``buffer[i : i + width]``.

    Fancy-indexing this view with start offsets copies whole rows at memcpy speed; the rows
    overlap, so callers only ever write non-overlapping ones.
    """
    rows = max(buffer.shape[0] - width + 1, 0)
    return as_strided(buffer, shape=(rows, width), strides=(1, 1), writeable=True)


def run_bounds(sorted_keys: npt.NDArray[np.integer[Any]]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal values in ``sorted_keys``."""
    if sorted_keys.shape[0] == 0:
        return []
    cuts = (np.flatnonzero(np.diff(sorted_keys)) + 1).tolist()
    return list(zip([0, *cuts], [*cuts, int(sorted_keys.shape[0])], strict=True))


def copy_runs(dst: U8, dst_start: I64, src: U8, src_start: I64, lengths: I64) -> None:
    """Copy ``src[src_start[i] : src_start[i] + lengths[i]]`` to ``dst[dst_start[i] : ...]`` for all ``i``.

    One row copy per distinct length: fast when lengths repeat (packet sizes do), with no Python
    work per run. Destination runs must not overlap.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    for lo, hi in run_bounds(sorted_lengths):
        width = int(sorted_lengths[lo])
        if width == 0:
            continue
        sel = order[lo:hi]
        byte_rows(dst, width)[dst_start[sel]] = byte_rows(src, width)[src_start[sel]]


def _record_headers(ts_ns: I64, caplen: I64, origlen: I64, nanosecond: bool) -> U8:
    """The ``(n, 16)`` little-endian record headers (ts_sec, ts_frac, caplen, origlen)."""
    sec, frac = np.divmod(ts_ns, 1_000_000_000)
    if sec.shape[0] and (int(sec.min()) < 0 or int(sec.max()) > _MAX_TS_SEC):
        raise ConfigError("packet timestamps must lie between 1970 and 2106 to be written to pcap")
    if not nanosecond:
        frac = frac // 1000
    header = np.empty((ts_ns.shape[0], 4), dtype="<u4")
    header[:, 0] = sec
    header[:, 1] = frac
    header[:, 2] = caplen
    header[:, 3] = origlen
    return header.view(np.uint8).reshape(-1, RECORD_HEADER_LEN)


class PcapWriter:
    """Write packets to a classic pcap file (gzip-compressed when the path ends in ``.gz``).

    ``target`` is a path or an open binary file object (left open on close). Packets longer than
    ``snaplen`` are truncated to it; their original length is kept in the record header.
    """

    def __init__(
        self,
        target: str | Path | BinaryIO,
        linktype: int = 1,
        snaplen: int = 262144,
        nanosecond: bool = False,
        compresslevel: int = 6,
    ) -> None:
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise ConfigError(f"snaplen must be between 1 and 2**31 - 1, not {snaplen}")
        if not 0 <= linktype <= 0xFFFF:
            raise ConfigError(f"linktype must fit in 16 bits, not {linktype}")
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.packets = 0
        self.bytes_written = 0
        """Bytes of pcap data written so far (before gzip compression)."""
        self._raw: BinaryIO | None = None
        self._owns = False
        self._file: BinaryIO | gzip.GzipFile
        if isinstance(target, str | Path):
            path = Path(target)
            try:
                raw = path.open("wb")
            except OSError as exc:
                raise CaptureIOError(f"cannot create {path}: {exc.strerror or exc}") from exc
            self._raw = raw
            self._owns = True
            if path.name.endswith(".gz"):
                # mtime=0 and no embedded file name keep the output byte-for-byte reproducible.
                self._file = gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0
                )
            else:
                self._file = raw
        else:
            self._file = target
        magic = MAGIC_NSEC if nanosecond else MAGIC_USEC
        self._write(_GLOBAL_HEADER.pack(magic, 2, 4, 0, 0, snaplen, linktype))

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise CaptureIOError(f"cannot write capture: {exc.strerror or exc}") from exc
        self.bytes_written += data.nbytes if isinstance(data, memoryview) else len(data)

    def write(self, packet: bytes, ts_ns: int, origlen: int | None = None) -> None:
        """Write one packet captured at ``ts_ns`` nanoseconds since the Unix epoch."""
        sec, frac = divmod(int(ts_ns), 1_000_000_000)
        if not 0 <= sec <= _MAX_TS_SEC:
            raise ConfigError("packet timestamps must lie between 1970 and 2106 to be written to pcap")
        if not self.nanosecond:
            frac //= 1000
        data = packet[: self.snaplen]
        wire = len(packet) if origlen is None else origlen
        self._write(_RECORD_HEADER.pack(sec, frac, len(data), wire) + bytes(data))
        self.packets += 1

    def write_batch(self, batch: PacketBatch, *, in_place: bool = False) -> None:
        """Write every packet of ``batch`` in order with a single file write.

        With ``in_place``, a batch whose packets sit exactly 16 bytes apart in a writable buffer gets
        its record headers stamped into those gaps and is written straight from its buffer (the
        gap bytes, which belong to no packet, are overwritten); otherwise the batch is copied.
        """
        n = len(batch)
        if n == 0:
            return
        offsets = batch.offsets.astype(np.int64, copy=False)
        caplen = batch.caplen.astype(np.int64)
        origlen = batch.origlen.astype(np.int64)
        truncated = caplen > self.snaplen
        if truncated.any():
            caplen = np.minimum(caplen, self.snaplen)
        headers = _record_headers(batch.ts_ns.astype(np.int64, copy=False), caplen, origlen, self.nanosecond)
        ends = offsets + caplen
        headroom = int(offsets[0]) >= RECORD_HEADER_LEN and bool(
            (offsets[1:] - ends[:-1] == RECORD_HEADER_LEN).all()
        )
        if headroom and not truncated.any():
            # Packets already 16 bytes apart: copy the span once and stamp the headers into the gaps.
            base = int(offsets[0]) - RECORD_HEADER_LEN
            out = batch.buffer[base : int(ends[-1])]
            if not (in_place and out.flags.writeable):
                out = out.copy()
            dst_header = offsets - base - RECORD_HEADER_LEN
        else:
            record = caplen + RECORD_HEADER_LEN
            dst_header = np.cumsum(record) - record
            out = np.empty(int(record.sum()), dtype=np.uint8)
            copy_runs(out, dst_header + RECORD_HEADER_LEN, batch.buffer, offsets, caplen)
        byte_rows(out, RECORD_HEADER_LEN)[dst_header] = headers
        self._write(out.data)
        self.packets += n

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Finish the file (the gzip trailer included); a file object passed in stays open."""
        if self._owns:
            try:
                self._file.close()
                if self._raw is not None and self._raw is not self._file:
                    self._raw.close()
            except OSError as exc:
                raise CaptureIOError(f"cannot finish capture: {exc.strerror or exc}") from exc
            self._owns = False
        elif not self._file.closed:
            self._file.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_pcap(
    target: str | Path | BinaryIO,
    batch: PacketBatch,
    linktype: int | None = None,
    snaplen: int = 262144,
    nanosecond: bool = False,
) -> int:
    """Write ``batch`` as a complete pcap file; returns the number of bytes written.

    The link type defaults to the batch's (Ethernet for an empty batch); a batch that mixes link
    types cannot be written to one classic pcap file.
    """
    if linktype is None:
        kinds = np.unique(batch.linktype)
        if kinds.shape[0] > 1:
            raise ConfigError("a classic pcap file holds one link type; this batch mixes several")
        linktype = int(kinds[0]) if kinds.shape[0] else 1
    with PcapWriter(target, linktype=linktype, snaplen=snaplen, nanosecond=nanosecond) as writer:
        writer.write_batch(batch)
        return writer.bytes_written
