"""The evidence ring: the last N bytes of raw packets in rotating pcapng files, on bounded disk.

Each capture worker writes its packets, as captured, to ``DIR/ring-<first ns>-<seq>.pcapng``; a file
is closed at ``file_bytes`` and the oldest files are deleted while the ring holds more than
``max_bytes``. An alert's evidence window is cut from these files later
(:func:`fieldward.detect.evidence.write_evidence` reads them like any capture). A full disk never
stops analysis: the ring frees its oldest file and retries once, then skips writing (the skipped
packets are counted) until the next file can be opened.
"""

from __future__ import annotations

import errno
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fieldward.capture.batch import PacketBatch
from fieldward.capture.writer import byte_rows, copy_runs

__all__ = [
    "EvidenceRing",
    "RingStats",
    "pcapng_batch_bytes",
    "pcapng_header",
    "ring_files",
    "ring_files_since",
]

_NAME = re.compile(r"^ring-(\d+)-(\d+)\.pcapng$")
_EPB_HEAD = 28
_SHB = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)


def pcapng_header(linktype: int = 1, snaplen: int = 262144) -> bytes:
    """Section header and one interface description with nanosecond timestamps (``if_tsresol`` 9)."""
    options = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    length = 16 + len(options) + 4
    return _SHB + struct.pack("<IIHHI", 1, length, linktype, 0, snaplen) + options + struct.pack("<I", length)


def pcapng_batch_bytes(batch: PacketBatch) -> bytes:
    """Every packet of ``batch`` as pcapng enhanced packet blocks (interface 0), built with numpy."""
    n = len(batch)
    if n == 0:
        return b""
    caplen = batch.caplen.astype(np.int64)
    padded = (caplen + 3) & ~3
    record = padded + _EPB_HEAD + 4
    starts = np.cumsum(record) - record
    out = np.zeros(int(record.sum()), dtype=np.uint8)
    ts = batch.ts_ns.astype(np.uint64)
    head = np.empty((n, 7), dtype="<u4")
    head[:, 0] = 6
    head[:, 1] = record
    head[:, 2] = 0
    head[:, 3] = ts >> np.uint64(32)
    head[:, 4] = ts & np.uint64(0xFFFFFFFF)
    head[:, 5] = caplen
    head[:, 6] = batch.origlen
    byte_rows(out, _EPB_HEAD)[starts] = head.view(np.uint8).reshape(n, _EPB_HEAD)
    copy_runs(out, starts + _EPB_HEAD, batch.buffer, batch.offsets.astype(np.int64), caplen)
    tail = record.astype("<u4").view(np.uint8).reshape(n, 4)
    byte_rows(out, 4)[starts + record - 4] = tail
    return out.tobytes()


@dataclass
class RingStats:
    files: int = 0
    bytes: int = 0
    written_packets: int = 0
    skipped_packets: int = 0
    """Packets not written (disk full or unwritable); analysis saw them."""
    deleted_files: int = 0
    last_error: str = ""


def ring_files(folder: Path) -> list[Path]:
    """The evidence ring files in ``folder``, oldest first (none when it does not exist)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _seq, p in sorted(found)]


def ring_files_since(folder: Path, ts_ns: int) -> list[Path]:
    """The ring files in ``folder`` that may hold packets captured at or after ``ts_ns``."""
    files = ring_files(folder)
    starts: list[int | None] = [int(m.group(1)) if (m := _NAME.match(p.name)) else 0 for p in files]
    following = [*starts[1:], None] if files else []
    return [p for p, nxt in zip(files, following, strict=True) if nxt is None or nxt >= ts_ns]


class EvidenceRing:
    """Rotating pcapng files in ``folder`` holding at most about ``max_bytes``."""

    def __init__(self, folder: Path, *, max_bytes: int, file_bytes: int = 64 * 1024**2) -> None:
        if max_bytes < 2 * file_bytes:
            file_bytes = max(max_bytes // 2, 64 * 1024)
        self.folder = folder
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes
        self.stats = RingStats()
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self._seq = 0
        folder.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        if existing:
            self._seq = max(int(m.group(2)) for p in existing if (m := _NAME.match(p.name))) + 1
        self._refresh()

    def files(self) -> list[Path]:
        """The ring's files, oldest first."""
        return ring_files(self.folder)

    def files_since(self, ts_ns: int) -> list[Path]:
        """The files that may hold packets captured at or after ``ts_ns`` (oldest first)."""
        return ring_files_since(self.folder, ts_ns)

    def _refresh(self) -> None:
        files = self.files()
        self.stats.files = len(files)
        self.stats.bytes = sum(p.stat().st_size for p in files if p.exists())

    def _trim(self, keep_current: bool = True) -> bool:
        """Delete the oldest files while over the cap; True when a file was deleted."""
        deleted = False
        for path in self.files():
            if self.stats.bytes <= self.max_bytes:
                break
            if keep_current and path == self._path:
                continue
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            self.stats.bytes -= size
            self.stats.deleted_files += 1
            deleted = True
        self.stats.files = len(self.files())
        return deleted

    def _free_oldest(self) -> bool:
        for path in self.files():
            if path != self._path:
                self.stats.bytes -= path.stat().st_size
                path.unlink(missing_ok=True)
                self.stats.deleted_files += 1
                return True
        return False

    def _open(self, first_ts: int) -> None:
        self._path = self.folder / f"ring-{first_ts}-{self._seq}.pcapng"
        self._seq += 1
        self._file = self._path.open("wb")
        header = pcapng_header()
        self._file.write(header)
        self._size = len(header)
        self.stats.bytes += len(header)
        self.stats.files += 1

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.stats.last_error = f"evidence ring: {exc.strerror or exc}"
            self._file = None

    def write(self, batch: PacketBatch) -> None:
        """Append ``batch``; rotates and trims. Never raises for a full or failing disk."""
        n = len(batch)
        if n == 0:
            return
        data = pcapng_batch_bytes(batch)
        for attempt in range(2):
            try:
                if self._file is None or self._size >= self.file_bytes:
                    self.close()
                    self._open(int(batch.ts_ns[0]))
                assert self._file is not None
                self._file.write(data)
                self._file.flush()
            except OSError as exc:
                self.close()
                self.stats.last_error = f"evidence ring: {exc.strerror or exc} in {self.folder}"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and attempt == 0 and self._free_oldest():
                    continue
                self.stats.skipped_packets += n
                return
            self._size += len(data)
            self.stats.bytes += len(data)
            self.stats.written_packets += n
            self.stats.last_error = ""
            if self.stats.bytes > self.max_bytes:
                self._trim()
            return
