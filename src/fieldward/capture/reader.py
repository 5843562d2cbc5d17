"""Capture files in, bounded PacketBatch objects out: :func:`open_capture` and :class:`CaptureReader`.

The pipeline of one reader:

- a byte source: the file itself, or an incremental gzip decoder over it when the file starts with
  the gzip magic 1f 8b (the file name does not matter);
- a :class:`ChunkStream`, which holds one chunk of about ``batch_bytes`` in a fresh numpy buffer and
  carries the partial record at the end of a chunk over to the next one, so memory stays flat
  whatever the size of the file; a buffer is never written again once a batch refers to it;
- a format walker (:class:`~fieldward.capture.pcap.PcapWalker`,
  :class:`~fieldward.capture.pcapng.PcapngWalker`) that runs the numba record walk over a chunk and
  fills :class:`RecordArrays`;
- :class:`CaptureReader`, which drives the walk, cuts batches, resynchronises after corrupt records
  and turns what it could not read into counted weird events.
"""

from __future__ import annotations

import io
import mmap
import os
import stat
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol

import numpy as np

from fieldward.capture import _kernels as kernels
from fieldward.capture.batch import I64, U8, U16, U32, InterfaceInfo, PacketBatch
from fieldward.capture.pcap import PcapWalker, is_pcap_magic
from fieldward.capture.pcapng import SHB_MAGIC, PcapngWalker
from fieldward.errors import CaptureFormatError, CaptureIOError
from fieldward.weird import WeirdLog

GZIP_MAGIC = b"\x1f\x8b"
RAW_READ = 1 << 18
"""Compressed bytes read at a time from a gzip file."""
SNIFF_LEN = 24
"""Bytes wanted before the format is decided (a pcap file header)."""


# ------------------------------------------------------------------------------------ byte sources


class ByteSource(Protocol):
    """What a ChunkStream reads from."""

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far."""
        ...

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` as far as possible; fewer bytes than its length only at the end of the data."""
        ...


class FileSource:
    """The bytes of a file, with a pushed-back prefix (what was read to sniff the gzip magic)."""

    def __init__(self, file: io.FileIO, path: str) -> None:
        self._file = file
        self._path = path
        self._prefix = b""
        self._position = 0

    @property
    def position(self) -> int:
        return self._position - len(self._prefix)

    def unread(self, data: bytes) -> None:
        self._prefix = data + self._prefix

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the file)."""
        buf = bytearray(size)
        return bytes(buf[: self.readinto(memoryview(buf))])

    def readinto(self, view: memoryview) -> int:
        got = 0
        if self._prefix:
            got = min(len(self._prefix), len(view))
            view[:got] = self._prefix[:got]
            self._prefix = self._prefix[got:]
        while got < len(view):
            try:
                n = self._file.readinto(view[got:])
            except OSError as exc:
                raise CaptureIOError(f"{self._path}: read error: {exc.strerror or exc}") from None
            if not n:
                break
            got += n
            self._position += n
        return got


class GzipSource:
    """The decompressed bytes of a gzip file (RFC 1952), decoded incrementally with bounded output.

    Concatenated members are read one after the other; zero padding after the last is ignored. A
    truncated or corrupt stream ends the data where decoding stopped, and ``problem`` says why (the
    reader turns it into a weird): what was decoded before is still delivered.
    """

    def __init__(self, raw: FileSource) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._input = b""
        self._pending = b""
        self._done = False
        self.members = 1
        self.problem: tuple[str, str] | None = None
        """(weird name suffix, detail) when the stream did not end cleanly."""

    @property
    def position(self) -> int:
        return self._raw.position

    def readinto(self, view: memoryview) -> int:
        got = 0
        want = len(view)
        while got < want:
            if self._pending:
                k = min(len(self._pending), want - got)
                view[got : got + k] = self._pending[:k]
                self._pending = self._pending[k:]
                got += k
                continue
            if self._done:
                break
            inflate = self._inflate
            if inflate.eof:
                self._done = not self._next_member(inflate.unused_data)
                continue
            data = inflate.unconsumed_tail or self._input or self._raw.read(RAW_READ)
            self._input = b""
            if not data:
                try:
                    self._pending = inflate.flush()
                except zlib.error:
                    self._pending = b""
                self._stop(
                    "gzip_truncated",
                    f"gzip stream ends inside member {self.members} (after {self._raw.position} "
                    "compressed bytes); the data decoded before is delivered",
                )
                continue
            try:
                chunk = inflate.decompress(data, want - got)
            except zlib.error as exc:
                self._stop(
                    "gzip_corrupt",
                    f"gzip member {self.members} is corrupt near compressed offset "
                    f"{self._raw.position}: {exc}; the data decoded before is delivered",
                )
                continue
            if not chunk and not inflate.eof and len(inflate.unconsumed_tail) == len(data):
                self._stop("gzip_corrupt", f"gzip member {self.members} makes no progress; stopped")
                continue
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        return got

    def _stop(self, name: str, detail: str) -> None:
        self.problem = (name, detail)
        self._done = True

    def _next_member(self, rest: bytes) -> bool:
        """Start the next gzip member after the end of one; False at the clean end of the file."""
        while True:
            rest = rest.lstrip(b"\0")  # zero padding after a member is allowed (as gzip does)
            if rest:
                break
            rest = self._raw.read(RAW_READ)
            if not rest:
                return False
        if not GZIP_MAGIC.startswith(rest[:2]):
            self.problem = (
                "gzip_trailing_garbage",
                f"the bytes after gzip member {self.members} (compressed offset about "
                f"{self._raw.position - len(rest)}) are not a gzip member; ignored",
            )
            return False
        self.members += 1
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._input = rest
        return True


# ------------------------------------------------------------------------------------------ chunks


class ChunkStream:
    """A window of the (decompressed) capture data: ``buf[:end]`` holds bytes ``base`` onwards.

    :meth:`refill` drops a consumed prefix and reads on into a *new* buffer, so batches that refer to
    the old one stay valid; the old buffer lives exactly as long as such batches.
    """

    def __init__(self, source: ByteSource, chunk_bytes: int, size_hint: int = 0) -> None:
        self._source = source
        self._chunk = chunk_bytes
        self._size_hint = size_hint
        self.buf: U8 = np.empty(0, dtype=np.uint8)
        self.end = 0
        self.base = 0
        self.eof = False

    def refill(self, keep: int, need: int) -> None:
        """Keep ``buf[keep:end]`` at the start of a new buffer and read on, at least ``need`` bytes from
        there if the data goes on that far (more, up to the chunk size). Sets ``eof`` at the end."""
        tail = self.end - keep
        cap = max(self._chunk, need, tail + 1)
        if self._size_hint > 0:  # a plain file: do not allocate more than what is left (+1 to see EOF)
            left = self._size_hint - self._source.position
            cap = max(min(cap, tail + left + 1), need, tail + 1)
        new: U8 = np.empty(cap, dtype=np.uint8)
        new[:tail] = self.buf[keep : self.end]
        got = self._source.readinto(new.data[tail:]) if not self.eof else 0
        self.base += keep
        self.buf = new
        self.end = tail + got
        self.eof = self.end < cap


DEFAULT_BATCH_BYTES = 32 * 2**20
"""Window (and batch) size in bytes: large enough that per-batch costs (flow expiry, record building)
stay small next to per-packet work on big-packet traffic such as video, small enough to stay cached."""


class _NoSource:
    """The byte source of a MappedStream: it reads from its mapping, never from a source."""

    position = 0

    def readinto(self, view: memoryview) -> int:
        raise AssertionError("a MappedStream never reads from a source")


class MappedStream(ChunkStream):
    """A window over a memory-mapped, uncompressed capture file: the same surface as ChunkStream.

    Windows are views of one read-only mapping, so :meth:`refill` copies nothing and batches stay
    valid for as long as they are referenced. Pages behind the window are released with
    ``MADV_DONTNEED`` (a read-only file mapping re-reads them from the page cache if an old batch
    touches them again), so resident memory stays about one window whatever the file size.
    """

    def __init__(self, file: io.FileIO, size: int, chunk_bytes: int) -> None:
        super().__init__(_NoSource(), chunk_bytes)
        self._map = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._all: U8 = np.frombuffer(self._map, dtype=np.uint8)
        self._size = size
        self._released = 0
        self.buf = self._all[:0]

    @property
    def position(self) -> int:
        return self.base + self.end

    def refill(self, keep: int, need: int) -> None:
        """Move the window to start ``keep`` bytes further, at least ``need`` bytes long where the file
        goes on that far (up to the chunk size). Sets ``eof`` when the window reaches the file end."""
        start = self.base + keep
        cap = max(self._chunk, need, self.end - keep + 1)
        stop = min(self._size, start + cap)
        self.base = start
        self.buf = self._all[start:stop]
        self.end = stop - start
        self.eof = self.end < cap
        release = (start // mmap.PAGESIZE) * mmap.PAGESIZE
        if release > self._released and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, self._released, release - self._released)
            self._released = release


class RecordArrays:
    """The per-packet output arrays the kernels fill; ``n`` of them are in use."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.n = 0
        self._allocate()

    def _allocate(self) -> None:
        c = self.capacity
        self.offsets: I64 = np.empty(c, dtype=np.int64)
        self.caplen: U32 = np.empty(c, dtype=np.uint32)
        self.origlen: U32 = np.empty(c, dtype=np.uint32)
        self.ts_ns: I64 = np.empty(c, dtype=np.int64)
        self.interface: U16 = np.empty(c, dtype=np.uint16)
        self.linktype: U16 = np.empty(c, dtype=np.uint16)

    def take(self) -> tuple[I64, U32, U32, I64, U16, U16]:
        """The ``n`` records as arrays of their own (full arrays are handed over, not copied)."""
        n = self.n
        arrays = (self.offsets, self.caplen, self.origlen, self.ts_ns, self.interface, self.linktype)
        self.n = 0
        if n == self.capacity:
            self._allocate()
            return arrays
        o, c, ol, t, i, lt = arrays
        return o[:n].copy(), c[:n].copy(), ol[:n].copy(), t[:n].copy(), i[:n].copy(), lt[:n].copy()


class Walker(Protocol):
    """A capture format, as the reader drives it (pcap.PcapWalker, pcapng.PcapngWalker).

    Positions are indexes into ``stream.buf``; statuses are those of fieldward.capture._kernels.
    """

    prefix: str
    truncated_weird: str
    bad_weird: str
    last_ts: int

    def start(self, stream: ChunkStream) -> int:
        """Parse the file header (CaptureFormatError if bad); returns the position after it."""
        ...

    def walk(self, stream: ChunkStream, pos: int, out: RecordArrays) -> tuple[int, int, int]:
        """Extract records from ``pos`` into ``out``: (pos, FULL | MORE | BAD, need)."""
        ...

    def resync(self, stream: ChunkStream, pos: int) -> tuple[int, int, int]:
        """Scan from ``pos`` for a plausible record: (pos, FOUND | SCAN_MORE | NOT_FOUND, need)."""
        ...

    def describe_bad(self, stream: ChunkStream, pos: int) -> str:
        """One line on the corrupt record or block at ``pos``."""
        ...


# ---------------------------------------------------------------------------------------- reader


def _is_regular(file: io.FileIO) -> bool:
    """Only regular files are memory-mapped (not pipes, devices or sockets)."""
    return stat.S_ISREG(os.fstat(file.fileno()).st_mode)


def _open_file(path: Path) -> io.FileIO:
    try:
        return open(path, "rb", buffering=0)  # owned and closed by the reader
    except FileNotFoundError:
        raise CaptureIOError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureIOError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureIOError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CaptureIOError(f"{path}: cannot open: {exc.strerror or exc}") from None


class CaptureReader:
    """One capture file (pcap or pcapng, optionally gzip-compressed) read as bounded PacketBatches.

    Iterate it (once) for batches of at most ``batch_packets`` packets and about ``batch_bytes`` of
    data; use it as a context manager or call :meth:`close`. Malformed content never raises: it is
    counted in ``weird`` (names ``pcap_*`` / ``pcapng_*``, layer ``capture``; offsets in their details
    are positions in the decompressed capture data) and reading goes on. A file that is not a capture
    raises CaptureFormatError, one that cannot be read CaptureIOError, both from the constructor.

    An uncompressed regular file is memory-mapped (``memory_map=True``, the default): batches are views
    of the mapping, nothing is copied. Pass ``memory_map=False`` for a file that another process may
    truncate while it is read (a mapped file that shrinks under the reader faults on access).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_packets: int = 65536,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        weird: WeirdLog | None = None,
        memory_map: bool = True,
    ) -> None:
        if batch_packets < 1 or batch_bytes < 1:
            raise ValueError("batch_packets and batch_bytes must be positive")
        self.path = Path(path)
        self.weird = weird if weird is not None else WeirdLog()
        self.interfaces: list[InterfaceInfo] = []
        self.packets_read = 0
        self.format = ""
        self.compressed = False
        self._source_name = str(self.path)
        self._batch_packets = batch_packets
        self._file = _open_file(self.path)
        self._batches: Generator[PacketBatch, None, None] | None = None
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            raw = FileSource(self._file, self._source_name)
            head = raw.read(len(GZIP_MAGIC))
            raw.unread(head)
            self.compressed = head == GZIP_MAGIC
            self._gzip = GzipSource(raw) if self.compressed else None
            self._raw = raw
            self._stream: ChunkStream
            if memory_map and not self.compressed and self._size > 0 and _is_regular(self._file):
                self._stream = MappedStream(self._file, self._size, batch_bytes)
            else:
                self._stream = ChunkStream(
                    self._gzip or raw, batch_bytes, size_hint=0 if self.compressed else self._size
                )
            self._stream.refill(0, SNIFF_LEN)
            self._walker = self._detect()
            self._start = self._walker.start(self._stream)
        except BaseException:
            self._file.close()
            raise

    def _detect(self) -> Walker:
        stream = self._stream
        head = stream.buf[: min(stream.end, 4)].tobytes()
        where = " (in its gzip stream)" if self.compressed else ""
        if stream.end == 0:
            if self._gzip is not None and self._gzip.problem is not None:
                raise CaptureFormatError(f"{self.path}: corrupt gzip stream: {self._gzip.problem[1]}")
            raise CaptureFormatError(f"{self.path}: empty file{where}, not a pcap or pcapng capture")
        if head == SHB_MAGIC:
            self.format = "pcapng"
            return PcapngWalker(self._source_name, self.weird, self.interfaces)
        if is_pcap_magic(head):
            self.format = "pcap"
            return PcapWalker(self._source_name, self.weird, self.interfaces)
        raise CaptureFormatError(f"{self.path}: not a pcap or pcapng capture (magic 0x{head.hex()}){where}")

    # -- public surface ---------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Bytes of the file (compressed, for gzip) consumed so far, for a progress bar."""
        if isinstance(self._stream, MappedStream):
            return self._stream.position
        return self._raw.position

    @property
    def size(self) -> int:
        """Size of the file in bytes (0 if it is not a regular file)."""
        return self._size

    def __iter__(self) -> Iterator[PacketBatch]:
        if self._batches is None:
            self._batches = self._generate()
        return self._batches

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()
        self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the walk ---------------------------------------------------------------------------------

    def _generate(self) -> Generator[PacketBatch, None, None]:
        stream, walker = self._stream, self._walker
        out = RecordArrays(self._batch_packets)
        pos = self._start
        bad_at = -1  # stream offset of a corrupt record while resynchronising
        bad_detail = ""
        while True:
            if bad_at >= 0:
                p, status, need = walker.resync(stream, pos)
                if status == kernels.FOUND:
                    self._report_bad(bad_at, stream.base + p, bad_detail, out.n)
                    bad_at, pos = -1, p
                elif status == kernels.SCAN_MORE and not stream.eof:
                    yield from self._cut(out)
                    stream.refill(p, need)
                    pos = 0
                else:
                    self._report_bad(bad_at, -1, bad_detail, out.n)
                    break
                continue
            pos, status, need = walker.walk(stream, pos, out)
            if status == kernels.FULL:
                yield from self._cut(out)
            elif status == kernels.BAD:
                bad_at, bad_detail = stream.base + pos, walker.describe_bad(stream, pos)
                pos += 1
            elif not stream.eof:  # MORE: the chunk ends inside a record
                yield from self._cut(out)
                stream.refill(pos, need)
                pos = 0
            elif pos < stream.end:  # MORE at the end of the file: the last record is cut short
                p, status, _ = walker.resync(stream, pos + 1)
                if status == kernels.FOUND:  # not a cut: a corrupt length, and records follow
                    detail = walker.describe_bad(stream, pos)
                    self._report_bad(stream.base + pos, stream.base + p, detail, out.n)
                    pos = p
                    continue
                self.weird.report(
                    walker.truncated_weird,
                    "capture",
                    f"the file ends inside the record at offset {stream.base + pos} "
                    f"({stream.end - pos} of {need} bytes present); it is not delivered",
                    ts_ns=walker.last_ts if walker.last_ts > 0 else None,
                    packet_index=self.packets_read + out.n,
                    source=self._source_name,
                )
                break
            else:
                break
        yield from self._cut(out)
        if self._gzip is not None and self._gzip.problem is not None:
            name, detail = self._gzip.problem
            self.weird.report(f"{walker.prefix}_{name}", "capture", detail, source=self._source_name)

    def _report_bad(self, bad_at: int, found_at: int, detail: str, pending: int) -> None:
        """Count a corrupt record at stream offset ``bad_at``, resynchronised at ``found_at`` (or -1)."""
        if found_at >= 0:
            tail = f"; skipped {found_at - bad_at} bytes to the next plausible record at offset {found_at}"
        else:
            skipped = self._stream.base + self._stream.end - bad_at
            tail = f"; nothing plausible after it: the last {skipped} bytes are skipped"
        self.weird.report(
            self._walker.bad_weird,
            "capture",
            detail + tail,
            ts_ns=self._walker.last_ts if self._walker.last_ts > 0 else None,
            packet_index=self.packets_read + pending,
            source=self._source_name,
        )

    def _cut(self, out: RecordArrays) -> Iterator[PacketBatch]:
        """Yield the records in ``out`` (if any) as a batch over the current chunk."""
        n = out.n
        if n == 0:
            return
        offsets, caplen, origlen, ts_ns, interface, linktype = out.take()
        lo = int(offsets[0])
        hi = int(offsets[n - 1]) + int(caplen[n - 1])
        offsets -= lo
        first = self.packets_read
        self.packets_read += n
        self._check_lengths(caplen, origlen, ts_ns, first)
        yield PacketBatch(
            buffer=self._stream.buf[lo:hi],
            offsets=offsets,
            caplen=caplen,
            origlen=origlen,
            ts_ns=ts_ns,
            interface=interface,
            linktype=linktype,
            first_index=first,
            source=self._source_name,
        )

    def _check_lengths(self, caplen: U32, origlen: U32, ts_ns: I64, first: int) -> None:
        """Count zero-length records and records longer than the packet was (both delivered)."""
        prefix = self._walker.prefix
        for name, mask, what in (
            ("zero_length_record", caplen == 0, "zero-length record delivered as an empty packet"),
            (
                "caplen_exceeds_origlen",
                caplen > origlen,
                "record with a captured length above its original length delivered as captured",
            ),
        ):
            hits = np.flatnonzero(mask)
            if hits.size:
                i = int(hits[0])
                self.weird.report(
                    f"{prefix}_{name}",
                    "capture",
                    f"{what} (packet {first + i}: caplen {int(caplen[i])}, origlen {int(origlen[i])})",
                    count=int(hits.size),
                    ts_ns=int(ts_ns[i]),
                    packet_index=first + i,
                    source=self._source_name,
                )


def open_capture(
    path: str | os.PathLike[str],
    *,
    batch_packets: int = 65536,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    weird: WeirdLog | None = None,
    memory_map: bool = True,
) -> CaptureReader:
    """Open a pcap or pcapng capture, optionally gzip-compressed (sniffed from its first bytes).

    Raises CaptureIOError if the file cannot be opened or read and CaptureFormatError if it is not a
    capture (or its file header is corrupt). Iterate the reader for PacketBatch objects.
    """
    return CaptureReader(
        path, batch_packets=batch_packets, batch_bytes=batch_bytes, weird=weird, memory_map=memory_map
    )
