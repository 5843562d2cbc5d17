"""Numba kernels of the capture readers: the sequential record walks of pcap and pcapng.

Records are chained (each header says where the next one starts), so the walk cannot be vectorised;
instead it runs as compiled loops over one chunk of the file. A walk fills preallocated numpy arrays
(data offset, captured and original length, timestamp in ns, interface, link type) and returns to
Python only when the output arrays are full, when the chunk ends inside a record, at a corrupt header,
and (pcapng) at any block that is not a packet block, so the Python work is per chunk, not per packet.

Every read is bounds-checked against ``end`` before it happens (numba does not check indexes), and
every loop iteration advances its position, so the kernels terminate on any input.

Return codes are the module constants below. Formats: pcap as in draft-ietf-opsawg-pcap, pcapng as in
draft-ietf-opsawg-pcapng (section numbers below refer to it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

from fieldward.capture.batch import I64, U8, U16, U32

_F = TypeVar("_F", bound=Callable[..., Any])


def _kernel(fn: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)`` keeping the Python signature for the type checker."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


# Walk status codes.
FULL = 0
"""The output arrays are full; call again (from the returned position) after emitting a batch."""
MORE = 1
"""The chunk ends inside the record/block at the returned position; ``need`` bytes from it are needed."""
BAD = 2
"""The record/block header at the returned position is implausible: resynchronise."""
OTHER = 3
"""(pcapng) A block other than EPB/SPB/PB starts at the returned position: Python handles it."""

# Resync status codes.
FOUND = 0
"""A plausible record/block starts at the returned position."""
SCAN_MORE = 1
"""Undecided at the returned position until more data is read (``need`` bytes from it)."""
NOT_FOUND = 2
"""Nothing plausible up to the end of the file."""

NS_PER_S = 1_000_000_000

# pcapng block types (draft-ietf-opsawg-pcapng section 11.1).
BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block (appendix A)
BT_SPB = 0x00000003
BT_NRB = 0x00000004
BT_ISB = 0x00000005
BT_EPB = 0x00000006
BT_SJE = 0x00000009  # systemd Journal Export Block
BT_DSB = 0x0000000A  # Decryption Secrets Block
BT_CB_COPY = 0x00000BAD  # Custom Block that rewriters may copy
BT_CB_NOCOPY = 0x40000BAD  # Custom Block that rewriters should not copy
BOM = 0x1A2B3C4D  # Byte-Order Magic of the Section Header Block

# Columns of the per-interface table given to pcapng_walk (one row per interface of the section).
IF_GLOBAL = 0  # index of the interface in CaptureReader.interfaces
IF_LINKTYPE = 1
IF_SNAPLEN = 2
IF_TS_MODE = 3  # one of TS_MUL, TS_DIV, TS_SHIFT
IF_TS_PARAM = 4  # multiplier, divisor or shift
IF_TS_OFFSET = 5  # if_tsoffset in ns
IF_COLUMNS = 6

TS_MUL = 0  # units of 10^-k s with k <= 9: ns = ts * 10^(9-k)
TS_DIV = 1  # units of 10^-k s with k > 9: ns = ts // 10^(k-9)
TS_SHIFT = 2  # units of 2^-k s: ns = (ts >> k) * 1e9 + ((ts mod 2^k) * 1e9) >> k

# The pcapng_walk statistics array: per kind of skipped packet block, a count, then the chunk
# position and a detail (the interface id) of the first one.
ST_BAD_PACKET = 0  # EPB/PB/SPB whose fixed fields or captured data do not fit in the block
ST_BAD_PACKET_POS = 1
ST_NO_IF = 3  # packet block naming an interface with no IDB in the section
ST_NO_IF_POS = 4
ST_NO_IF_ID = 5
ST_SIZE = 6


@_kernel
def rd16(buf: U8, p: int, big: bool) -> int:
    """Unsigned 16-bit integer at ``buf[p]`` in the given byte order, as int64."""
    b0, b1 = np.int64(buf[p]), np.int64(buf[p + 1])
    return int((b0 << 8) | b1) if big else int(b0 | (b1 << 8))


@_kernel
def rd32(buf: U8, p: int, big: bool) -> int:
    """Unsigned 32-bit integer at ``buf[p]`` in the given byte order, as int64 (numba would make
    ``int(uint8)`` a uint64, and uint64 mixed with int64 a float64)."""
    b0, b1, b2, b3 = np.int64(buf[p]), np.int64(buf[p + 1]), np.int64(buf[p + 2]), np.int64(buf[p + 3])
    if big:
        return int((b0 << 24) | (b1 << 16) | (b2 << 8) | b3)
    return int(b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))


# ---------------------------------------------------------------------------------------------- pcap


MAX_ORIGLEN = 1 << 24
"""An original length above this makes a pcap record suspicious (no real link carries such frames)."""


@_kernel
def pcap_plausible(
    buf: U8, p: int, big: bool, frac_limit: int, max_caplen: int, ref_sec: int, window: int
) -> bool:
    """Whether the 16 bytes at ``p`` look like a pcap record header (for resynchronisation).

    caplen <= max_caplen, origlen <= MAX_ORIGLEN, the sub-second part below one second and ts_sec
    within ``window`` of ``ref_sec`` (unless ``ref_sec`` < 0). caplen <= origlen is not required:
    some writers get origlen wrong on every record, and their captures must still resynchronise.
    """
    frac = rd32(buf, p + 4, big)
    if frac >= frac_limit or rd32(buf, p + 8, big) > max_caplen or rd32(buf, p + 12, big) > MAX_ORIGLEN:
        return False
    return ref_sec < 0 or abs(rd32(buf, p, big) - ref_sec) <= window


@_kernel
def pcap_walk(
    buf: U8,
    pos: int,
    end: int,
    big: bool,
    frac_mult: int,
    frac_limit: int,
    max_caplen: int,
    window: int,
    ref_sec: int,
    at_eof: bool,
    linktype: int,
    offsets: I64,
    caplen: U32,
    origlen: U32,
    ts_ns: I64,
    interface: U16,
    linktypes: U16,
    n: int,
) -> tuple[int, int, int, int]:
    """Walk pcap records (16-byte header + caplen bytes) in ``buf[pos:end]``, filling the outputs from n.

    A record with caplen > max_caplen is BAD. A suspicious one (caplen 0 or above origlen, origlen
    above MAX_ORIGLEN, sub-second part of a second or more, or ts_sec more than ``window`` from the
    previous record's, ``ref_sec`` for the first) is accepted only if the next record header is a
    credible successor (caplen <= max_caplen, ts_sec within ``window`` of this one's) or the file ends
    there; else it is BAD: a corrupt header would derail the chain. Returns (n, pos, status, need).
    """
    cap = offsets.shape[0]
    prev = ref_sec
    while n < cap:
        if end - pos < 16:
            return n, pos, MORE, 16
        cl = rd32(buf, pos + 8, big)
        if cl > max_caplen:
            return n, pos, BAD, 0
        nxt = pos + 16 + cl
        if nxt > end:
            return n, pos, MORE, 16 + cl
        ol = rd32(buf, pos + 12, big)
        sec = rd32(buf, pos, big)
        frac = rd32(buf, pos + 4, big)
        if (
            cl == 0
            or cl > ol
            or ol > MAX_ORIGLEN
            or frac >= frac_limit
            or (prev >= 0 and abs(sec - prev) > window)
        ):
            if nxt + 16 <= end:
                if rd32(buf, nxt + 8, big) > max_caplen or abs(rd32(buf, nxt, big) - sec) > window:
                    return n, pos, BAD, 0
            elif not at_eof:
                return n, pos, MORE, 32 + cl
        offsets[n] = pos + 16
        caplen[n] = cl
        origlen[n] = ol
        ts_ns[n] = sec * NS_PER_S + frac * frac_mult
        interface[n] = 0
        linktypes[n] = linktype
        prev = sec
        n += 1
        pos = nxt
    return n, pos, FULL, 0


@_kernel
def pcap_resync(
    buf: U8,
    pos: int,
    end: int,
    big: bool,
    frac_limit: int,
    max_caplen: int,
    window: int,
    ref_sec: int,
    at_eof: bool,
) -> tuple[int, int, int]:
    """Scan ``buf[pos:end]`` byte by byte for the next plausible pcap record.

    A candidate is a plausible, non-empty header near ``ref_sec`` whose successor header is plausible
    near it too (at the end of the file: whose record ends at or just before it, the successor being
    cut short). Returns (pos, status, need).
    """
    p = pos
    while True:
        if end - p < 16:
            if at_eof:
                return end, NOT_FOUND, 0
            return p, SCAN_MORE, 16
        if rd32(buf, p + 8, big) > 0 and pcap_plausible(buf, p, big, frac_limit, max_caplen, ref_sec, window):
            nxt = p + 16 + rd32(buf, p + 8, big)
            if nxt + 16 <= end:
                sec = rd32(buf, p, big)
                if pcap_plausible(buf, nxt, big, frac_limit, max_caplen, sec, window):
                    return p, FOUND, 0
            elif not at_eof:
                return p, SCAN_MORE, nxt + 16 - p
            elif nxt <= end:
                return p, FOUND, 0
        p += 1


# -------------------------------------------------------------------------------------------- pcapng


@_kernel
def pcapng_ts(raw: int, mode: int, param: int) -> int:
    """Convert a raw pcapng timestamp (units of if_tsresol, section 4.2) to ns since the epoch.

    ``raw`` holds the unsigned 64-bit count in an int64: the division and the shifts are done on its
    uint64 view so that counts of 2^63 and more (present-day times in 2^-33 s units, say) convert.
    """
    if mode == TS_MUL:
        return raw * param
    u = np.uint64(raw)
    if mode == TS_DIV:
        return int(np.int64(u // np.uint64(param)))
    k = np.uint64(param)
    sec = int(np.int64(u >> k))
    frac = int(np.int64(u & ((np.uint64(1) << k) - np.uint64(1))))
    # Past 2^-33 s units, drop low bits first to keep frac * 1e9 within 63 bits.
    sub = (frac * NS_PER_S) >> param if param <= 33 else ((frac >> (param - 33)) * NS_PER_S) >> 33
    return sec * NS_PER_S + sub


@_kernel
def count_skipped(stats: I64, kind: int, pos: int, detail: int) -> None:
    """Count a skipped packet block of ``kind`` (ST_BAD_PACKET, ST_NO_IF); keep where the first was."""
    stats[kind] += 1
    if stats[kind] == 1:
        stats[kind + 1] = pos
        stats[kind + 2] = detail


@_kernel
def pcapng_walk(
    buf: U8,
    pos: int,
    end: int,
    big: bool,
    iftab: I64,
    max_block: int,
    offsets: I64,
    caplen: U32,
    origlen: U32,
    ts_ns: I64,
    interface: U16,
    linktypes: U16,
    n: int,
    stats: I64,
    last_ts: int,
) -> tuple[int, int, int, int, int]:
    """Walk pcapng blocks in ``buf[pos:end]`` and extract EPB, SPB and PB packets (sections 4.3-4.4).

    Each block's total length must be >= 12, a multiple of 4, <= max_block and repeated in its
    trailer (section 3.1), else BAD. Packet blocks that do not hold their own fields, or name an
    interface with no IDB, are skipped and counted in ``stats``. An SPB carries no timestamp: it gets
    the previous packet's. Returns (n, pos, status, need, last_ts); status OTHER stops at a block of
    another type (SHB as soon as 12 bytes are there, since its length's byte order is in it).
    """
    cap = offsets.shape[0]
    n_if = iftab.shape[0]
    while n < cap:
        if end - pos < 12:
            return n, pos, MORE, 12, last_ts
        btype = rd32(buf, pos, big)
        if btype == BT_SHB:
            return n, pos, OTHER, 0, last_ts
        blen = rd32(buf, pos + 4, big)
        if blen < 12 or (blen & 3) != 0 or blen > max_block:
            return n, pos, BAD, 0, last_ts
        if end - pos < blen:
            return n, pos, MORE, blen, last_ts
        if rd32(buf, pos + blen - 4, big) != blen:
            return n, pos, BAD, 0, last_ts
        if btype in (BT_EPB, BT_PB):
            # EPB: interface u32; PB: interface u16 + drops u16; then ts high, ts low, caplen, origlen.
            if blen < 32 or rd32(buf, pos + 20, big) > blen - 32:
                count_skipped(stats, ST_BAD_PACKET, pos, 0)
                pos += blen
                continue
            lid = rd32(buf, pos + 8, big) if btype == BT_EPB else rd16(buf, pos + 8, big)
            if lid >= n_if:
                count_skipped(stats, ST_NO_IF, pos, lid)
                pos += blen
                continue
            cl = rd32(buf, pos + 20, big)
            ol = rd32(buf, pos + 24, big)
            raw = (rd32(buf, pos + 12, big) << 32) | rd32(buf, pos + 16, big)
            ts = pcapng_ts(raw, iftab[lid, IF_TS_MODE], iftab[lid, IF_TS_PARAM]) + iftab[lid, IF_TS_OFFSET]
            data = pos + 28
        elif btype == BT_SPB:
            if blen < 16:
                count_skipped(stats, ST_BAD_PACKET, pos, 0)
                pos += blen
                continue
            lid = 0
            if n_if == 0:
                count_skipped(stats, ST_NO_IF, pos, 0)
                pos += blen
                continue
            ol = rd32(buf, pos + 8, big)
            # Captured length: min(original length, snaplen, room in the block) (section 4.4).
            cl = min(ol, blen - 16)
            snap = iftab[0, IF_SNAPLEN]
            if snap > 0 and cl > snap:
                cl = snap
            ts = last_ts
            data = pos + 12
        else:
            return n, pos, OTHER, 0, last_ts
        offsets[n] = data
        caplen[n] = cl
        origlen[n] = ol
        ts_ns[n] = ts
        interface[n] = iftab[lid, IF_GLOBAL]
        linktypes[n] = iftab[lid, IF_LINKTYPE]
        last_ts = ts
        n += 1
        pos += blen
    return n, pos, FULL, 0, last_ts


@_kernel
def pcapng_known_block(btype: int) -> bool:
    """Whether ``btype`` is a block type defined by the specification (section 11.1)."""
    return BT_IDB <= btype <= BT_EPB or btype in (BT_SJE, BT_DSB, BT_SHB, BT_CB_COPY, BT_CB_NOCOPY)


@_kernel
def pcapng_resync(
    buf: U8, pos: int, end: int, big: bool, max_block: int, at_eof: bool
) -> tuple[int, int, int]:
    """Scan ``buf[pos:end]`` byte by byte for the next plausible pcapng block.

    A candidate has a known block type, a total length that is a multiple of 4, at least the
    type's minimum and at most max_block, and the same length in its trailer; an SHB also needs a
    valid byte-order magic (which gives the byte order of its lengths). Returns (pos, status, need).
    """
    p = pos
    while True:
        if end - p < 12:
            if at_eof:
                return end, NOT_FOUND, 0
            return p, SCAN_MORE, 12
        order = big
        btype = rd32(buf, p, big)
        if btype == BT_SHB:
            bom = rd32(buf, p + 8, False)
            if bom == BOM:
                order = False
            elif bom == 0x4D3C2B1A:
                order = True
            else:
                p += 1
                continue
            minimum = 28
        elif pcapng_known_block(btype):
            minimum = 32 if btype in (BT_EPB, BT_PB) else 20 if btype == BT_IDB else 12
        else:
            p += 1
            continue
        blen = rd32(buf, p + 4, order)
        if blen < minimum or (blen & 3) != 0 or blen > max_block:
            p += 1
            continue
        if end - p < blen:
            if not at_eof:
                return p, SCAN_MORE, blen
            p += 1
            continue
        if rd32(buf, p + blen - 4, order) == blen:
            return p, FOUND, 0
        p += 1
