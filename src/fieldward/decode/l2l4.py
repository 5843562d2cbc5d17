"""Vectorized L2-L4 header decoding: :func:`decode_batch` turns a PacketBatch into a DecodedBatch.

Everything here works on whole numpy columns. There is no Python loop over packets; the only loops
run over a small, bounded number of header *steps* (stacked VLAN tags, the IPv6 extension header
chain, the TCP option list), and every step is vectorized across all the packets still walking.

How bytes are read
    A header layer (Ethernet, IPv4, TCP, ...) is fetched for all packets at once by :class:`_Gather`:
    a ``void``-typed, stride-1 view of the batch buffer turns "copy ``w`` bytes from each of these
    start positions" into a single fancy-indexing call (alignment does not matter for ``void``). Rows
    that would run past the end of the buffer take a slow, bounds-checked path and read 0 there; no
    index ever leaves the buffer. The ``(m, w)`` byte rows are then transposed once into big-endian
    32-bit words (``rows.view('>u4').T``), so every header field is one or two shift/mask/astype
    operations on a contiguous column.

Truncation
    Every fetched row carries how many bytes of that layer the packet really captured (``avail``).
    A field whose bytes are not all captured reads as 0 (:meth:`_Layer.keep`), and the packet gets
    the weird code of the first problem it hit. Fields up to the problem are still decoded.

Dense and sparse layers
    A layer that most packets have (IPv4 in a typical batch) is decoded *densely*: over every row of
    the batch, with packets that do not have the layer treated as having captured 0 bytes of it, so
    their fields come out 0 without any scatter. Rarer layers are decoded over the index array of the
    packets that have them and scattered into the output columns.

Compiled fast path
    :func:`decode_batch` first runs a numba kernel (``fieldward.decode._kernels.l2l4_fast``) over the
    batch; it decodes the common packets -- Ethernet with up to two VLAN tags carrying IPv4 (TCP, UDP,
    ICMP or another transport) or ARP, with no decode weird -- and marks the rest, which go through
    the vectorized decoder described above (:func:`decode_batch_vectorized`, the reference the tests
    compare the kernel with).

Weird events: each packet records its first problem in ``DecodedBatch.weird`` (a code into
:data:`~fieldward.decode.columns.DECODE_WEIRD_NAMES`); the WeirdLog gets one ``report`` per weird
name per batch, with the count and the first packet as the sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.decode import _kernels as _k
from fieldward.decode.columns import (
    DECODE_WEIRD_CODES,
    DECODE_WEIRD_NAMES,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_QINQ,
    ETH_QINQ_OLD,
    ETH_VLAN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    DecodedBatch,
)
from fieldward.weird import WeirdLog

__all__ = [
    "MAX_IPV6_EXT_HEADERS",
    "MAX_VLAN_TAGS",
    "WEIRD_DETAILS",
    "decode_batch",
    "decode_batch_vectorized",
]

Bool = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Idx = npt.NDArray[np.intp]
AnyArray = npt.NDArray[Any]

MAX_VLAN_TAGS: Final = 4
"""VLAN tags walked per frame (802.1ad QinQ needs 2); a deeper stack is a ``vlan_too_many_tags`` weird."""
MAX_IPV6_EXT_HEADERS: Final = 10
"""IPv6 extension headers walked per packet; a longer chain is ``ipv6_too_many_extension_headers``."""
MAX_TCP_OPTION_STEPS: Final = 40
"""The TCP option area is at most 40 bytes (RFC 9293 §3.1), so at most 40 options."""
_INT32_MAX: Final = 2**31 - 1

_TPIDS: Final = (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD)

# IPv6 extension headers walked (RFC 8200 §4, IANA "IPv6 Extension Header Types"): hop-by-hop,
# routing, fragment, destination options, AH (RFC 4302), mobility (RFC 6275), HIP (RFC 7401),
# shim6 (RFC 5533). ESP (50) and No Next Header (59) end the walk.
IPV6_HOPOPTS: Final = 0
IPV6_ROUTING: Final = 43
IPV6_FRAGMENT: Final = 44
IPV6_ESP: Final = 50
IPV6_AH: Final = 51
IPV6_NONXT: Final = 59
IPV6_DSTOPTS: Final = 60
IPV6_MOBILITY: Final = 135
IPV6_HIP: Final = 139
IPV6_SHIM6: Final = 140
_IPV6_EXT: Final[Bool] = np.zeros(256, dtype=np.bool_)
_IPV6_EXT[[IPV6_HOPOPTS, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_DSTOPTS, IPV6_AH, IPV6_MOBILITY]] = True
_IPV6_EXT[[IPV6_HIP, IPV6_SHIM6]] = True

# Address families in DLT_NULL / DLT_LOOP headers: AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD,
# OpenBSD), 28 (FreeBSD, DragonFly) or 30 (macOS, iOS).
_AF_INET: Final = 2
_AF_INET6: Final = (24, 28, 30)
ARPHRD_ETHER: Final = 1
_TCP_TS_FAST: Final = 0x0101080A
"""NOP, NOP, kind 8 length 10: the usual layout of a timestamp-only TCP option area (RFC 7323 App. A)."""
TCPOPT_EOL: Final = 0
TCPOPT_NOP: Final = 1
TCPOPT_MSS: Final = 2
TCPOPT_WSCALE: Final = 3
TCPOPT_SACK_PERMITTED: Final = 4
TCPOPT_TIMESTAMP: Final = 8
_TCP_OPT_LEN: Final[npt.NDArray[np.int32]] = np.zeros(256, dtype=np.int32)
"""Required length of the fixed-size TCP options this decoder reads (0: any length >= 2)."""
_TCP_OPT_LEN[[TCPOPT_MSS, TCPOPT_WSCALE, TCPOPT_SACK_PERMITTED, TCPOPT_TIMESTAMP]] = (4, 3, 2, 10)

WEIRD_DETAILS: Final[dict[str, str]] = {
    "truncated_l2": "frame shorter than its link-layer header",
    "unknown_linktype": "link-layer type not decoded",
    "truncated_vlan": "802.1Q/802.1ad tag cut short",
    "truncated_arp": "ARP message shorter than its fixed part",
    "truncated_ipv4": "IPv4 header (or its options) not fully captured",
    "ipv4_bad_version": "EtherType says IPv4 but the version nibble is not 4",
    "ipv4_bad_header_length": "IPv4 IHL below 5 (20 bytes)",
    "ipv4_total_length_too_small": "IPv4 total length smaller than the header length",
    "ipv4_truncated_payload": "IPv4 total length larger than the bytes on the wire",
    "truncated_ipv6": "IPv6 fixed header not fully captured",
    "ipv6_bad_version": "EtherType says IPv6 but the version nibble is not 6",
    "ipv6_truncated_extension_header": "IPv6 extension header runs past the packet",
    "ipv6_too_many_extension_headers": f"more than {MAX_IPV6_EXT_HEADERS} IPv6 extension headers",
    "truncated_tcp": "TCP header not fully captured",
    "tcp_bad_header_length": "TCP data offset below 5 or beyond the IP payload",
    "truncated_udp": "UDP header not fully captured",
    "udp_bad_length": "UDP length below 8 or beyond the IP payload",
    "truncated_icmp": "ICMP header shorter than 8 bytes",
    "tcp_bad_option": "TCP option with a bad length",
    "raw_ip_bad_version": "raw-IP link type but the first nibble is neither 4 nor 6",
    "ipv4_total_length_zero": "IPv4 total length 0 (TCP segmentation offload); captured length used",
    "ipv6_truncated_payload": "IPv6 payload length larger than the bytes on the wire",
    "vlan_too_many_tags": f"more than {MAX_VLAN_TAGS} stacked VLAN tags",
}
"""Human-readable detail for each decode weird name (the ``detail`` of the WeirdLog report)."""

_missing = [name for name in WEIRD_DETAILS if name not in DECODE_WEIRD_CODES]
if _missing:  # pragma: no cover - guards the append-only name table in columns.py
    raise ImportError(f"decode weird names missing from DECODE_WEIRD_NAMES: {_missing}")


def _w(name: str) -> int:
    return DECODE_WEIRD_CODES[name]


# ----------------------------------------------------------------------------- output columns

_COLUMNS: Final[dict[str, tuple[type[np.generic], int]]] = {
    "eth_src": (np.uint64, 0),
    "eth_dst": (np.uint64, 0),
    "ethertype": (np.uint16, 0),
    "vlan": (np.uint16, 0),
    "vlan_inner": (np.uint16, 0),
    "arp_op": (np.uint16, 0),
    "arp_sha": (np.uint64, 0),
    "arp_spa": (np.uint32, 0),
    "arp_tha": (np.uint64, 0),
    "arp_tpa": (np.uint32, 0),
    "l3_offset": (np.int32, -1),
    "ip_version": (np.uint8, 0),
    "ip_proto": (np.uint8, 0),
    "ttl": (np.uint8, 0),
    "ip_total_len": (np.uint32, 0),
    "ip_header_len": (np.uint16, 0),
    "ip_id": (np.uint32, 0),
    "ip_dscp": (np.uint8, 0),
    "ip_options": (np.bool_, 0),
    "ipv6_ext_headers": (np.uint8, 0),
    "is_fragment": (np.bool_, 0),
    "more_fragments": (np.bool_, 0),
    "frag_offset": (np.uint32, 0),
    "l4_offset": (np.int32, -1),
    "sport": (np.uint16, 0),
    "dport": (np.uint16, 0),
    "tcp_flags": (np.uint16, 0),
    "tcp_seq": (np.uint32, 0),
    "tcp_ack": (np.uint32, 0),
    "tcp_window": (np.uint16, 0),
    "tcp_header_len": (np.uint8, 0),
    "tcp_mss": (np.uint16, 0),
    "tcp_wscale": (np.uint8, 0xFF),
    "tcp_sack_permitted": (np.bool_, 0),
    "tcp_has_timestamps": (np.bool_, 0),
    "icmp_type": (np.uint8, 0),
    "icmp_code": (np.uint8, 0),
    "payload_offset": (np.int32, -1),
    "payload_len": (np.int32, 0),
}
"""dtype and "absent" value of every per-packet column except the address rows and ``weird``."""


class _Gather:
    """Bounds-safe gathers from the batch buffer: nothing outside it is read; missing bytes are 0."""

    def __init__(self, buffer: U8) -> None:
        self.buf: U8 = np.ascontiguousarray(buffer, dtype=np.uint8)
        self.size = int(self.buf.shape[0])
        self._views: dict[int, AnyArray] = {}

    def _view(self, width: int) -> AnyArray:
        """The buffer as overlapping ``width``-byte records, one starting at every byte."""
        view = self._views.get(width)
        if view is None:
            view = np.ndarray(
                shape=(self.size - width + 1,),
                dtype=np.dtype((np.void, width)),
                buffer=self.buf,
                offset=0,
                strides=(1,),
            )
            self._views[width] = view
        return view

    def rows(self, pos: I64, width: int) -> U8:
        """``(m, width)`` bytes starting at buffer positions ``pos``; bytes outside the buffer read 0."""
        m = int(pos.shape[0])
        limit = self.size - width
        if m == 0 or limit < 0:
            return self._slow(pos, width)
        if int(pos.min()) >= 0 and int(pos.max()) <= limit:
            got: U8 = self._view(width)[pos].view(np.uint8).reshape(m, width)
            return got
        outside = (pos < 0) | (pos > limit)
        out: U8 = self._view(width)[np.where(outside, 0, pos)].view(np.uint8).reshape(m, width)
        sel = np.flatnonzero(outside)
        out[sel] = self._slow(pos[sel], width)
        return out

    def _slow(self, pos: I64, width: int) -> U8:
        """Byte-by-byte gather with bounds checks (rows near the buffer end, tiny buffers)."""
        m = int(pos.shape[0])
        if self.size == 0 or m == 0:
            return np.zeros((m, width), dtype=np.uint8)
        idx = pos[:, None] + np.arange(width, dtype=np.int64)
        inside = (idx >= 0) & (idx < self.size)
        vals: U8 = self.buf[np.clip(idx, 0, self.size - 1)]
        vals[~inside] = 0
        return vals


class _Layer:
    """One header layer gathered for ``m`` packets: its bytes as big-endian 32-bit words.

    ``avail`` is how many bytes of the layer each packet captured (``<= 0``: none). Field readers
    return arrays that are 0 wherever the field's bytes were not all captured; ``word`` returns a
    row of ``words`` itself (read-only use), the other readers fresh arrays.
    """

    __slots__ = ("avail", "rows", "short", "short_avail", "width", "words")

    def __init__(self, gather: _Gather, pos: I64, avail: I32, width: int) -> None:
        self.width = width
        self.rows: U8 = gather.rows(pos, width)
        self.words: U32 = self.rows.view(">u4").T.astype(np.uint32, order="C")
        self.avail: I32 = avail
        self.short: Idx | None = None
        self.short_avail: I32 | None = None
        self._find_short()

    def _find_short(self) -> None:
        short = self.avail < self.width
        if bool(short.any()):
            self.short = np.flatnonzero(short)
            self.short_avail = self.avail[self.short]
        else:
            self.short = self.short_avail = None

    def restrict(self, mask: Bool) -> I32:
        """Treat rows outside ``mask`` as having captured nothing (all their fields read 0)."""
        self.avail = np.where(mask, self.avail, np.int32(0))
        self._find_short()
        return self.avail

    def keep(self, values: AnyArray, end: int) -> AnyArray:
        """Zero ``values`` (in place; it must be a fresh array) where bytes ``[.., end)`` are missing."""
        if self.short is not None and self.short_avail is not None:
            bad = self.short[self.short_avail < end]
            if bad.shape[0]:
                values[bad] = 0
        return values

    def word(self, off: int) -> U32:
        """The raw 4 bytes at ``off`` (a multiple of 4) as a big-endian integer, unmasked: every
        field taken from it must go through :meth:`keep` with its own end. Do not modify it."""
        row: U32 = self.words[off >> 2]
        return row

    def u8(self, off: int) -> U8:
        shift = 8 * (3 - (off & 3))
        word = self.words[off >> 2]
        out: U8 = (word >> shift).astype(np.uint8) if shift else word.astype(np.uint8)
        return self.keep(out, off + 1)

    def u16(self, off: int) -> U16:
        if off & 1:
            hi: AnyArray = self.u8(off).astype(np.uint16) << 8
            return self.keep(hi | self.u8(off + 1), off + 2)
        word = self.words[off >> 2]
        out: U16 = word.astype(np.uint16) if off & 2 else (word >> 16).astype(np.uint16)
        return self.keep(out, off + 2)

    def u32(self, off: int) -> U32:
        if off & 3:
            hi: AnyArray = self.u16(off).astype(np.uint32) << 16
            return self.keep(hi | self.u16(off + 2), off + 4)
        return self.keep(self.words[off >> 2].copy(), off + 4)

    def mac(self, off: int) -> U64:
        """The 6-byte MAC address at even offset ``off`` as a 48-bit integer."""
        k = off >> 2
        if off & 3 == 0:
            hi: U64 = self.words[k].astype(np.uint64) << 16
            out: U64 = hi | (self.words[k + 1] >> 16)
        else:
            hi = (self.words[k] & 0xFFFF).astype(np.uint64) << 32
            out = hi | self.words[k + 1]
        return self.keep(out, off + 6)


class _Sel:
    """Which packets a layer decoder works on.

    ``idx`` None: all ``n`` rows (dense), with ``present`` marking the rows that really have the
    layer (None: all of them). Otherwise the rows ``idx`` (sparse), all of which have it.
    """

    __slots__ = ("idx", "m", "present")

    def __init__(self, idx: Idx | None, present: Bool | None, m: int) -> None:
        self.idx = idx
        self.present = present
        self.m = m

    @classmethod
    def choose(cls, mask: Bool, allow_dense: bool = True) -> _Sel | None:
        """Dense when at least half the rows qualify, sparse otherwise; None when none does."""
        n = int(mask.shape[0])
        k = int(np.count_nonzero(mask))
        if k == 0:
            return None
        if allow_dense and k == n:
            return cls(None, None, n)
        if allow_dense and 2 * k >= n:
            return cls(None, mask, n)
        return cls(np.flatnonzero(mask), None, k)

    @property
    def dense(self) -> bool:
        return self.idx is None

    def sub(self, values: AnyArray) -> AnyArray:
        return values if self.idx is None else values[self.idx]

    def only(self, mask: Bool) -> Bool:
        """``mask`` restricted to the rows that have the layer."""
        return mask if self.present is None else mask & self.present

    def rows(self, mask: Bool) -> Idx:
        """Batch row numbers of the rows of ``sel`` in ``mask``."""
        return np.flatnonzero(mask) if self.idx is None else self.idx[mask]


def _masked(mask: Bool, values: AnyArray, every: bool) -> AnyArray:
    """``values`` where ``mask``, else 0; ``every``: the mask is known to be all set (no work)."""
    return values if every else np.where(mask, values, values.dtype.type(0))


def _as_int32(values: U32) -> I32:
    """A uint32 length column as int32 (a free view unless some value exceeds 2**31 - 1)."""
    if values.shape[0] and int(values.max()) > _INT32_MAX:
        return np.minimum(values, _INT32_MAX).astype(np.int32)
    return values.view(np.int32)


class _State:
    """Per-batch decode state: inputs as columns, output columns, weird codes."""

    def __init__(self, batch: PacketBatch) -> None:
        self.batch = batch
        self.n = len(batch)
        self.off: I64 = batch.offsets.astype(np.int64, copy=False)
        self.cap: I32 = _as_int32(batch.caplen.astype(np.uint32, copy=False))
        self.orig: I32 = _as_int32(batch.origlen.astype(np.uint32, copy=False))
        self.gather = _Gather(batch.buffer)
        self.cols: dict[str, AnyArray] = {}
        self.wcode: U8 = np.zeros(self.n, dtype=np.uint8)
        # link-layer results: L3 start relative to the packet (-1: none) and the EtherType
        self.l3: I32 = np.full(self.n, -1, dtype=np.int32)
        self.l3_all = False
        """Every packet has a complete link-layer header (``l3 >= 0`` everywhere)."""
        self.etype: U16 = np.zeros(self.n, dtype=np.uint16)
        self.src_ip: U8 | None = None
        self.dst_ip: U8 | None = None
        # Handed from the L3 decoders to the L4 decoder, relative to the packet start: l4 (-1: no
        # transport header to decode), ip_end (end of the IP packet within the captured bytes),
        # wire_end (end per the IP header), first_frag (first fragment of a datagram).
        self.l4: I32 | None = None
        self.l4_proto: U8 | None = None
        self.ip_end: I32 | None = None
        self.wire_end: I32 | None = None
        self.first_frag: Bool | None = None

    # --- output columns ---------------------------------------------------------------------------
    def col(self, name: str) -> AnyArray:
        """The output column ``name``, allocated with its "absent" value on first use."""
        arr = self.cols.get(name)
        if arr is None:
            dtype, default = _COLUMNS[name]
            arr = np.full(self.n, default, dtype=dtype) if default else np.zeros(self.n, dtype=dtype)
            self.cols[name] = arr
        return arr

    def put(self, name: str, sel: _Sel, values: AnyArray) -> None:
        """Store a column computed over ``sel`` (dense values must already be "absent" off-layer).

        A dense column is stored as is, so ``values`` must not be used (or stored) anywhere else.
        """
        if sel.idx is None:
            self.cols[name] = values.astype(_COLUMNS[name][0], copy=False)
        else:
            self.col(name)[sel.idx] = values

    def addr(self, which: str) -> U8:
        """The (n, 16) source or destination address rows, allocated on first use."""
        if which == "src":
            if self.src_ip is None:
                self.src_ip = np.zeros((self.n, 16), dtype=np.uint8)
            return self.src_ip
        if self.dst_ip is None:
            self.dst_ip = np.zeros((self.n, 16), dtype=np.uint8)
        return self.dst_ip

    def set_l4(self, sel: _Sel, l4: I32, proto: U8, ip_end: I32, wire_end: I32, first_frag: Bool) -> None:
        """Record where each packet's transport header starts (-1: none) for the L4 decoder."""
        values: tuple[AnyArray, ...] = (l4, proto, ip_end, wire_end, first_frag)
        if sel.idx is None and self.l4 is None:
            self.l4, self.l4_proto, self.ip_end, self.wire_end, self.first_frag = values
            return
        if self.l4 is None:
            self.l4 = np.full(self.n, -1, dtype=np.int32)
            self.l4_proto = np.zeros(self.n, dtype=np.uint8)
            self.ip_end = np.zeros(self.n, dtype=np.int32)
            self.wire_end = np.zeros(self.n, dtype=np.int32)
            self.first_frag = np.zeros(self.n, dtype=np.bool_)
        targets: tuple[AnyArray | None, ...] = (
            self.l4,
            self.l4_proto,
            self.ip_end,
            self.wire_end,
            self.first_frag,
        )
        if sel.idx is not None:
            rows, take = sel.idx, None
        else:
            assert sel.present is not None
            rows = take = np.flatnonzero(sel.present)
        for dst, src in zip(targets, values, strict=True):
            assert dst is not None
            dst[rows] = src if take is None else src[take]

    # --- weird codes ------------------------------------------------------------------------------
    def flag(self, sel: _Sel, mask: Bool, name: str) -> None:
        """Give weird ``name`` to the rows of ``sel`` in ``mask`` that have no earlier problem."""
        mask = sel.only(mask)
        if bool(mask.any()):
            self.flag_rows(sel.rows(mask), name)

    def flag_rows(self, rows: Idx, name: str) -> None:
        if rows.shape[0]:
            rows = rows[self.wcode[rows] == 0]
            self.wcode[rows] = _w(name)


# ------------------------------------------------------------------------------------ link layer


def _set_link(st: _State, sel: _Sel, etype: U16, avail: I32, hdr_len: int) -> None:
    """Record the EtherType and L3 start of a link decoder's rows; short frames are ``truncated_l2``."""
    short = avail < max(hdr_len, 1)
    any_short = bool(short.any())
    if any_short:
        l3 = np.where(short, np.int32(-1), np.int32(hdr_len))
        st.flag(sel, short, "truncated_l2")
    else:
        l3 = np.full(sel.m, hdr_len, dtype=np.int32)
    if sel.idx is None:
        st.etype = etype.astype(np.uint16, copy=False)
        st.l3 = l3
        st.l3_all = not any_short
    else:
        st.etype[sel.idx] = etype
        st.l3[sel.idx] = l3


def _link_ethernet(st: _State, sel: _Sel) -> None:
    """Ethernet II / 802.3 (IEEE 802.3 §3.2): destination, source, then EtherType or length.

    An EtherType of 1500 or less is an 802.3 length (LLC follows); it is reported as is.
    """
    avail: I32 = sel.sub(st.cap)
    lay = _Layer(st.gather, sel.sub(st.off), avail, 16)
    st.put("eth_dst", sel, lay.mac(0))
    st.put("eth_src", sel, lay.mac(6))
    _set_link(st, sel, lay.u16(12), avail, 14)


def _link_sll(st: _State, sel: _Sel) -> None:
    """Linux cooked v1: pkttype(2) hatype(2) halen(2) address(8) protocol(2)."""
    avail: I32 = sel.sub(st.cap)
    lay = _Layer(st.gather, sel.sub(st.off), avail, 16)
    ether = (lay.u16(2) == ARPHRD_ETHER) & (lay.u16(4) == 6)
    st.put("eth_src", sel, np.where(ether, lay.mac(6), np.uint64(0)))
    _set_link(st, sel, lay.u16(14), avail, 16)


def _link_sll2(st: _State, sel: _Sel) -> None:
    """Linux cooked v2: protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) address(8)."""
    avail: I32 = sel.sub(st.cap)
    lay = _Layer(st.gather, sel.sub(st.off), avail, 20)
    ether = (lay.u16(8) == ARPHRD_ETHER) & (lay.u8(11) == 6)
    st.put("eth_src", sel, np.where(ether, lay.mac(12), np.uint64(0)))
    _set_link(st, sel, lay.u16(0), avail, 20)


def _link_raw(st: _State, sel: _Sel) -> None:
    """Raw IP: the version nibble of the first byte chooses IPv4 or IPv6."""
    avail: I32 = sel.sub(st.cap)
    lay = _Layer(st.gather, sel.sub(st.off), avail, 4)
    version = lay.u8(0) >> 4
    etype = np.where(version == 4, ETH_IPV4, np.where(version == 6, ETH_IPV6, 0)).astype(np.uint16)
    st.flag(sel, (avail >= 1) & (etype == 0), "raw_ip_bad_version")
    _set_link(st, sel, etype, avail, 0)


def _link_fixed(etype_value: int) -> _LinkDecoder:
    """LINKTYPE_IPV4 / LINKTYPE_IPV6: no link header, the network protocol is implied."""

    def decode(st: _State, sel: _Sel) -> None:
        avail: I32 = sel.sub(st.cap)
        _set_link(st, sel, np.full(sel.m, etype_value, dtype=np.uint16), avail, 0)

    return decode


def _link_null(network_order: bool) -> _LinkDecoder:
    """BSD loopback: a 4-byte address family, host byte order (NULL) or network order (LOOP)."""

    def decode(st: _State, sel: _Sel) -> None:
        avail: I32 = sel.sub(st.cap)
        lay = _Layer(st.gather, sel.sub(st.off), avail, 4)
        family = lay.u32(0)
        if not network_order:
            # The writer's byte order is unknown, but families are small: a value with its upper
            # half set was written little-endian (libpcap does the same).
            family = np.where(family > 0xFFFF, family.byteswap(), family)
        v6 = (family == _AF_INET6[0]) | (family == _AF_INET6[1]) | (family == _AF_INET6[2])
        etype = np.where(family == _AF_INET, ETH_IPV4, np.where(v6, ETH_IPV6, 0)).astype(np.uint16)
        _set_link(st, sel, etype, avail, 4)

    return decode


_LinkDecoder = Callable[[_State, _Sel], None]

_LINK_DECODERS: Final[dict[int, _LinkDecoder]] = {
    linktypes.ETHERNET: _link_ethernet,
    linktypes.LINUX_SLL: _link_sll,
    linktypes.LINUX_SLL2: _link_sll2,
    linktypes.RAW: _link_raw,
    linktypes.RAW_OPENBSD: _link_raw,
    linktypes.RAW_BSD: _link_raw,
    linktypes.IPV4: _link_fixed(ETH_IPV4),
    linktypes.IPV6: _link_fixed(ETH_IPV6),
    linktypes.NULL: _link_null(network_order=False),
    linktypes.LOOP: _link_null(network_order=True),
}


def _decode_link(st: _State) -> None:
    lt = st.batch.linktype
    groups: list[tuple[int, _Sel]]
    if int(lt.min()) == int(lt.max()):
        groups = [(int(lt[0]), _Sel(None, None, st.n))]
    else:
        groups = []
        for value in np.unique(lt).tolist():
            idx = np.flatnonzero(lt == value)
            groups.append((int(value), _Sel(idx, None, int(idx.shape[0]))))
    for value, sel in groups:
        decoder = _LINK_DECODERS.get(value)
        if decoder is None:
            st.flag_rows(sel.idx if sel.idx is not None else np.arange(st.n), "unknown_linktype")
        else:
            decoder(st, sel)
    _decode_vlan(st)


def _is_tpid(etype: U16) -> Bool:
    tagged: Bool = (etype == ETH_VLAN) | (etype == ETH_QINQ) | (etype == ETH_QINQ_OLD)
    return tagged


def _decode_vlan(st: _State) -> None:
    """Stacked 802.1Q / 802.1ad tags (IEEE 802.1Q §9.6): TCI(2) then the next EtherType(2).

    The first (outer) tag's VLAN id goes to ``vlan``, the second's to ``vlan_inner``; deeper tags are
    skipped, up to MAX_VLAN_TAGS in all.
    """
    if int(st.etype.max(initial=0)) < ETH_VLAN:  # every TPID is >= 0x8100
        return
    rows = np.flatnonzero(_is_tpid(st.etype) & (st.l3 >= 0))
    depth = 0
    while rows.shape[0] and depth < MAX_VLAN_TAGS:
        rel = st.l3[rows]
        avail = st.cap[rows] - rel
        lay = _Layer(st.gather, st.off[rows] + rel, avail, 4)
        tci, inner = lay.u16(0), lay.u16(2)
        cut = avail < 4
        if bool(cut.any()):
            st.flag_rows(rows[cut], "truncated_vlan")
            st.l3[rows[cut]] = -1
            st.l3_all = False
            whole = ~cut
            rows, rel, tci, inner = rows[whole], rel[whole], tci[whole], inner[whole]
        if depth < 2:
            st.col("vlan" if depth == 0 else "vlan_inner")[rows] = tci & 0x0FFF
        st.etype[rows] = inner
        st.l3[rows] = rel + 4
        rows = rows[_is_tpid(inner)]
        depth += 1
    if rows.shape[0]:
        st.flag_rows(rows, "vlan_too_many_tags")
        st.l3[rows] = -1
        st.l3_all = False


# ------------------------------------------------------------------------------------- layer 3


def _decode_l3(st: _State) -> None:
    has_l3 = None if st.l3_all else st.l3 >= 0
    is4 = st.etype == ETH_IPV4
    is6 = st.etype == ETH_IPV6
    isarp = st.etype == ETH_ARP
    if has_l3 is not None:
        is4 &= has_l3
        is6 &= has_l3
        isarp &= has_l3
    # A dense decoder replaces whole columns, so only one of the two may be dense and it runs first.
    sel4 = _Sel.choose(is4)
    sel6 = _Sel.choose(is6, allow_dense=sel4 is None or not sel4.dense)
    if sel6 is not None and sel6.dense:
        _decode_ipv6(st, sel6)
        if sel4 is not None:
            _decode_ipv4(st, sel4)
    else:
        if sel4 is not None:
            _decode_ipv4(st, sel4)
        if sel6 is not None:
            _decode_ipv6(st, sel6)
    sel_arp = _Sel.choose(isarp)
    if sel_arp is not None:
        _decode_arp(st, sel_arp)


def _l3_rows(st: _State, sel: _Sel) -> tuple[I32, I64, I32]:
    """(relative L3 start, absolute position, captured bytes from L3 on) for the rows of ``sel``."""
    rel: I32 = sel.sub(st.l3)
    pos: I64 = (sel.sub(st.off) + rel).astype(np.int64, copy=False)
    avail: I32 = sel.sub(st.cap) - rel
    if sel.present is not None:
        avail = np.where(sel.present, avail, np.int32(0))
    return rel, pos, avail


def _mapped_v4(st: _State, sel: _Sel, which: str, value: U32, valid: Bool | None) -> None:
    """Write IPv4 addresses as IPv4-mapped IPv6 rows ``::ffff:a.b.c.d`` (RFC 4291 §2.5.5.2)."""
    words = st.addr(which).view(">u4")  # (n, 4) big-endian words of the 16-byte rows
    prefix = np.uint32(0xFFFF)
    if sel.idx is None:
        words[:, 2] = prefix if valid is None else np.where(valid, prefix, np.uint32(0))
        words[:, 3] = value
    elif valid is None:
        words[sel.idx, 2] = prefix
        words[sel.idx, 3] = value
    else:
        words[sel.idx[valid], 2] = prefix
        words[sel.idx[valid], 3] = value[valid]


def _decode_ipv4(st: _State, sel: _Sel) -> None:
    """IPv4 header (RFC 791 §3.1); fragments per RFC 791 §2.3 (offset in 8-byte units)."""
    rel, pos, avail = _l3_rows(st, sel)
    lay = _Layer(st.gather, pos, avail, 20)
    good = lay.keep(lay.words[0] >> 28, 1) == 4
    if bool(sel.only(~good).any()):
        st.flag(sel, avail < 1, "truncated_ipv4")
        st.flag(sel, ~good, "ipv4_bad_version")
        avail = lay.restrict(good)  # not IPv4 after all: no field of it is decoded
    w0, w1, w2 = lay.word(0), lay.word(4), lay.word(8)
    hlen = lay.keep((w0 >> 22) & 0x3C, 1).view(np.int32)  # IHL * 4
    total_u = lay.keep(w0 & 0xFFFF, 4)
    total = total_u.view(np.int32)
    wire: I32 = sel.sub(st.orig) - rel
    cap_rel: I32 = sel.sub(st.cap)

    # Checks in header order; the first one a packet fails is its weird code.
    header_ok = (hlen >= 20) & (hlen <= avail)  # IHL >= 5 and the whole header (with options) captured
    if bool(sel.only(good & ~header_ok).any()):
        st.flag(sel, good & (avail < 20), "truncated_ipv4")
        st.flag(sel, good & (hlen < 20), "ipv4_bad_header_length")
        st.flag(sel, good & (hlen > avail), "truncated_ipv4")
    short_total = total < hlen
    tso = None
    if bool(sel.only(header_ok & short_total).any()):
        # Total length 0 is what TCP segmentation offload leaves in locally sent packets: like
        # Zeek, flag it and use the captured length instead.
        tso = header_ok & (total == 0)
        st.flag(sel, tso, "ipv4_total_length_zero")
        too_small = header_ok & short_total & ~tso
        st.flag(sel, too_small, "ipv4_total_length_too_small")
        header_ok &= ~too_small
    if tso is None:
        wire_end = rel + total
        ip_end = np.minimum(wire_end, cap_rel)
    else:
        wire_end = rel + np.where(tso, wire, total)
        ip_end = np.minimum(np.where(tso, cap_rel, rel + total), cap_rel)
    st.flag(sel, header_ok & (wire_end > rel + wire), "ipv4_truncated_payload")

    frag = lay.keep(w1 & 0xFFFF, 8)
    offset = (frag & 0x1FFF) << 3  # fragment offset in bytes
    more = (frag & 0x2000) != 0
    is_frag = more | (offset != 0)
    proto = lay.u8(9)
    st.put("ip_version", sel, good.view(np.uint8) << 2)
    st.put("ip_dscp", sel, lay.keep((w0 >> 18).astype(np.uint8) & 0x3F, 2))
    st.put("ip_header_len", sel, hlen.astype(np.uint16))
    st.put("ip_total_len", sel, total_u)
    st.put("ip_id", sel, lay.keep(w1 >> 16, 6))
    st.put("ip_options", sel, hlen > 20)
    st.put("is_fragment", sel, is_frag)
    st.put("more_fragments", sel, more)
    st.put("frag_offset", sel, offset)
    st.put("ttl", sel, lay.keep((w2 >> 24).astype(np.uint8), 9))
    st.put("ip_proto", sel, proto.copy())
    _mapped_v4(st, sel, "src", lay.u32(12), None if lay.short is None else avail >= 16)
    _mapped_v4(st, sel, "dst", lay.u32(16), None if lay.short is None else avail >= 20)

    l4 = np.where(header_ok & (offset == 0), rel + hlen, np.int32(-1))
    st.set_l4(sel, l4, proto, ip_end, wire_end, is_frag)


def _decode_ipv6(st: _State, sel: _Sel) -> None:
    """IPv6 fixed header (RFC 8200 §3) and the extension header chain (RFC 8200 §4)."""
    rel, pos, avail = _l3_rows(st, sel)
    lay = _Layer(st.gather, pos, avail, 40)
    good = lay.keep(lay.words[0] >> 28, 1) == 6
    if bool(sel.only(~good).any()):
        st.flag(sel, avail < 1, "truncated_ipv6")
        st.flag(sel, ~good, "ipv6_bad_version")
        avail = lay.restrict(good)
    header_ok = avail >= 40
    st.flag(sel, good & ~header_ok, "truncated_ipv6")
    w0, w1 = lay.word(0), lay.word(4)
    plen = lay.keep(w1 >> 16, 6).view(np.int32)
    nh = lay.u8(6)
    wire: I32 = sel.sub(st.orig) - rel
    # Payload length 0 with a hop-by-hop header may be a jumbogram (RFC 2675): use the wire length.
    total = np.where((plen == 0) & (nh == IPV6_HOPOPTS), wire, plen + 40)
    total = np.where(good & (avail >= 6), total, np.int32(0))
    st.flag(sel, header_ok & (total > wire), "ipv6_truncated_payload")

    st.put("ip_version", sel, good.view(np.uint8) * np.uint8(6))
    st.put("ip_dscp", sel, lay.keep((w0 >> 22).astype(np.uint8) & 0x3F, 2))
    st.put("ttl", sel, lay.u8(7))
    st.put("ip_total_len", sel, total.astype(np.uint32))
    for which, start in (("src", 8), ("dst", 24)):
        addr = lay.rows[:, start : start + 16]
        if lay.short is not None:
            addr = np.where((avail >= start + 16)[:, None], addr, np.uint8(0))
        if sel.idx is None:
            st.addr(which)[...] = addr
        else:
            st.addr(which)[sel.idx] = addr

    # Extension header walk, only over the packets that have extension headers.
    hdr_len = np.where(header_ok, np.int32(40), np.int32(0))
    ext_count = np.zeros(sel.m, dtype=np.uint8)
    is_frag = np.zeros(sel.m, dtype=np.bool_)
    more = np.zeros(sel.m, dtype=np.bool_)
    frag_off = np.zeros(sel.m, dtype=np.uint32)
    frag_id = np.zeros(sel.m, dtype=np.uint32)
    l4_ok = header_ok.copy()
    walking = sel.only(header_ok & _IPV6_EXT[nh])
    if bool(walking.any()):
        rows = np.flatnonzero(walking)
        walk = _ipv6_ext_walk(st, pos[rows], np.minimum(avail, total)[rows], nh[rows])
        nh[rows] = walk.nh
        hdr_len[rows] = walk.cur
        ext_count[rows] = walk.count
        is_frag[rows], more[rows] = walk.is_frag, walk.more
        frag_off[rows], frag_id[rows] = walk.frag_off, walk.frag_id
        l4_ok[rows] = walk.ok
        abs_rows = rows if sel.idx is None else sel.idx[rows]
        st.flag_rows(abs_rows[walk.truncated], "ipv6_truncated_extension_header")
        st.flag_rows(abs_rows[walk.too_many], "ipv6_too_many_extension_headers")
    st.put("ip_header_len", sel, hdr_len.astype(np.uint16))
    st.put("ip_proto", sel, nh.copy())
    st.put("ipv6_ext_headers", sel, ext_count)
    st.put("is_fragment", sel, is_frag)
    st.put("more_fragments", sel, more)
    st.put("frag_offset", sel, frag_off)
    st.put("ip_id", sel, frag_id)

    cap_rel: I32 = sel.sub(st.cap)
    wire_end = rel + total
    ip_end = np.minimum(wire_end, cap_rel)
    l4 = np.where(sel.only(l4_ok) & (nh != IPV6_NONXT), rel + hdr_len, np.int32(-1))
    st.set_l4(sel, l4, nh, ip_end, wire_end, is_frag)


class _ExtWalk:
    """Result of :func:`_ipv6_ext_walk` for ``k`` packets."""

    __slots__ = (
        "count",
        "cur",
        "frag_id",
        "frag_off",
        "is_frag",
        "more",
        "nh",
        "ok",
        "too_many",
        "truncated",
    )

    def __init__(self, k: int, first: U8) -> None:
        self.nh: U8 = first.copy()
        """Next Header after the walk: the transport protocol (or where the walk stopped)."""
        self.cur: I32 = np.full(k, 40, dtype=np.int32)
        """Bytes of IPv6 header walked: 40 plus the extension headers."""
        self.count: U8 = np.zeros(k, dtype=np.uint8)
        self.ok: Bool = np.ones(k, dtype=np.bool_)
        """The transport header follows (False: truncated chain, non-first fragment, too long)."""
        self.is_frag: Bool = np.zeros(k, dtype=np.bool_)
        self.more: Bool = np.zeros(k, dtype=np.bool_)
        self.frag_off: U32 = np.zeros(k, dtype=np.uint32)
        self.frag_id: U32 = np.zeros(k, dtype=np.uint32)
        self.truncated: Bool = np.zeros(k, dtype=np.bool_)
        self.too_many: Bool = np.zeros(k, dtype=np.bool_)


def _ipv6_ext_walk(st: _State, pos: I64, limit: I32, first: U8) -> _ExtWalk:
    """Walk the IPv6 extension headers of ``k`` packets, one header per step for all of them.

    ``pos``: absolute start of each IPv6 header; ``limit``: bytes of it usable (captured and within
    the payload length); ``first``: the fixed header's Next Header. Header sizes (RFC 8200 §4.3-4.6,
    RFC 4302 §2.2): fragment 8 bytes; AH (len + 2) * 4; the others (len + 1) * 8. The walk stops at
    a non-extension header (ESP and No Next Header included) and after a non-first fragment header.
    """
    out = _ExtWalk(int(pos.shape[0]), first)
    nh, cur = out.nh, out.cur
    active = np.arange(pos.shape[0])
    for _ in range(MAX_IPV6_EXT_HEADERS):
        active = active[_IPV6_EXT[nh[active]]]
        if active.shape[0] == 0:
            break
        c = cur[active]
        room = limit[active] - c
        hdr = _Layer(st.gather, pos[active] + c, room, 8)
        kind = nh[active]
        b1 = hdr.u8(1).astype(np.int32)
        size = np.where(kind == IPV6_FRAGMENT, 8, np.where(kind == IPV6_AH, (b1 + 2) * 4, (b1 + 1) * 8))
        hdr_next, field, ident = hdr.u8(0), hdr.u16(2), hdr.u32(4)
        cut = (room < 8) | (size > room)
        if bool(cut.any()):
            out.truncated[active[cut]] = True
            out.ok[active[cut]] = False
            whole = ~cut
            active, c, kind, size = active[whole], c[whole], kind[whole], size[whole]
            hdr_next, field, ident = hdr_next[whole], field[whole], ident[whole]
        nh[active] = hdr_next
        cur[active] = c + size
        out.count[active] += 1
        fragment = kind == IPV6_FRAGMENT
        if bool(fragment.any()):
            # Fragment header (RFC 8200 §4.5): offset (13 bits, 8-byte units), 2 reserved bits, M.
            rows = active[fragment]
            offset = (field[fragment] & 0xFFF8).astype(np.uint32)
            out.is_frag[rows] = True
            out.more[rows] = (field[fragment] & 1) != 0
            out.frag_off[rows] = offset
            out.frag_id[rows] = ident[fragment]
            later = offset != 0  # a non-first fragment: what follows is not a header
            out.ok[rows[later]] = False
            if bool(later.any()):
                active = np.setdiff1d(active, rows[later], assume_unique=True)
    left = active[_IPV6_EXT[nh[active]]]
    out.too_many[left] = True
    out.ok[left] = False
    return out


def _decode_arp(st: _State, sel: _Sel) -> None:
    """ARP (RFC 826): addresses decoded for Ethernet/IPv4 (hlen 6, plen 4, ptype 0x0800)."""
    _, pos, avail = _l3_rows(st, sel)
    lay = _Layer(st.gather, pos, avail, 28)
    eth4 = (lay.u16(2) == ETH_IPV4) & (lay.u8(4) == 6) & (lay.u8(5) == 4)
    st.flag(sel, avail < 8, "truncated_arp")
    st.flag(sel, eth4 & (avail < 28), "truncated_arp")
    every = bool(eth4.all())
    st.put("arp_op", sel, lay.u16(6))
    st.put("arp_sha", sel, _masked(eth4, lay.mac(8), every))
    st.put("arp_spa", sel, _masked(eth4, lay.u32(14), every))
    st.put("arp_tha", sel, _masked(eth4, lay.mac(18), every))
    st.put("arp_tpa", sel, _masked(eth4, lay.u32(24), every))


# ------------------------------------------------------------------------------------- layer 4


def _decode_l4(st: _State) -> None:
    """TCP (RFC 9293 §3.1), UDP (RFC 768), ICMP (RFC 792) / ICMPv6 (RFC 4443) headers, payload.

    The payload of other transport protocols (SCTP, GRE, ESP, ...) is everything after the IP
    header(s), so their dissectors can still find it.
    """
    if st.l4 is None:
        return
    assert st.l4_proto is not None
    assert st.ip_end is not None
    assert st.wire_end is not None
    assert st.first_frag is not None
    sel = _Sel.choose(st.l4 >= 0)
    if sel is None:
        return
    rel: I32 = sel.sub(st.l4)
    avail: I32 = sel.sub(st.cap) - rel
    if sel.present is not None:
        avail = np.where(sel.present, avail, np.int32(0))
    proto: U8 = sel.sub(st.l4_proto)
    end: I32 = sel.sub(st.ip_end)
    room: I32 = sel.sub(st.wire_end) - rel  # transport bytes per the IP header
    lay = _Layer(st.gather, (sel.sub(st.off) + rel).astype(np.int64, copy=False), avail, 24)

    tcp = sel.only(proto == PROTO_TCP)
    udp = sel.only(proto == PROTO_UDP)
    ports = tcp | udp
    all_ports = bool(ports.all())
    all_tcp = all_ports and bool(tcp.all())
    icmp = None if all_ports else sel.only((proto == PROTO_ICMP) | (proto == PROTO_ICMPV6))
    st.put("l4_offset", sel, np.where(avail > 0, rel, np.int32(-1)))
    st.put("sport", sel, _masked(ports, lay.u16(0), all_ports))
    st.put("dport", sel, _masked(ports, lay.u16(2), all_ports))
    # Payload: ``start`` bytes after the transport header start, up to ``end`` (relative offsets).
    start = np.full(sel.m, 8, dtype=np.int32)  # UDP and ICMP
    payload_ok: Bool | None = None

    def add_ok(ok: Bool) -> None:
        nonlocal payload_ok
        payload_ok = ok if payload_ok is None else payload_ok | ok

    if bool(udp.any()):
        ulen = lay.u16(4).astype(np.int32)
        udp_hdr = udp & (avail >= 8)
        st.flag(sel, udp & ~udp_hdr, "truncated_udp")
        udp_ok = udp_hdr & (ulen >= 8)
        # A first fragment carries the whole datagram's UDP length: only the lower bound holds there.
        too_long = udp_ok & (ulen > room)
        if bool(too_long.any()):
            too_long &= ~sel.sub(st.first_frag)
        st.flag(sel, (udp_hdr & ~udp_ok) | too_long, "udp_bad_length")
        end = np.where(udp_ok, np.minimum(end, rel + ulen), end)
        add_ok(udp_ok)

    if bool(tcp.any()):
        w3 = lay.word(12)
        hlen = lay.keep((w3 >> 26) & 0x3C, 13).view(np.int32)  # data offset * 4
        tcp_ok = tcp & (hlen >= 20) & (hlen <= np.minimum(avail, room))
        if bool((tcp & ~tcp_ok).any()):
            long_enough = tcp & (avail >= 20)
            st.flag(sel, tcp & ~long_enough, "truncated_tcp")
            st.flag(sel, long_enough & ((hlen < 20) | (hlen > room)), "tcp_bad_header_length")
            st.flag(sel, long_enough & (hlen > avail), "truncated_tcp")
        flags = (w3 >> 16).astype(np.uint16) & 0x1FF
        st.put("tcp_seq", sel, _masked(tcp, lay.u32(4), all_tcp))
        st.put("tcp_ack", sel, _masked(tcp, lay.u32(8), all_tcp))
        st.put("tcp_flags", sel, _masked(tcp, lay.keep(flags, 14), all_tcp))
        st.put("tcp_window", sel, _masked(tcp, lay.u16(14), all_tcp))
        st.put("tcp_header_len", sel, _masked(tcp, hlen.astype(np.uint8), all_tcp))
        start = hlen if all_tcp else np.where(tcp, hlen, start)
        add_ok(tcp_ok)
        options = tcp_ok & (hlen > 20)
        if bool(options.any()):
            _tcp_options(st, sel, lay, rel, hlen, options)

    if icmp is not None and bool(icmp.any()):
        every = bool(icmp.all())
        st.put("icmp_type", sel, _masked(icmp, lay.u8(0), every))
        st.put("icmp_code", sel, _masked(icmp, lay.u8(1), every))
        icmp_ok = icmp & (avail >= 8)
        st.flag(sel, icmp & ~icmp_ok, "truncated_icmp")
        add_ok(icmp_ok)

    if not all_ports:  # other protocols: the payload is the whole IP payload
        other = sel.only(~ports & ~icmp) if icmp is not None else sel.only(~ports)
        if bool(other.any()):
            start = np.where(other, np.int32(0), start)
            add_ok(other & (avail > 0))

    if payload_ok is None:
        return
    first = rel + start
    length = end - first
    has = payload_ok & (length > 0)
    st.put("payload_offset", sel, np.where(has, first, np.int32(-1)))
    st.put("payload_len", sel, np.where(has, length, np.int32(0)))


def _tcp_options(st: _State, sel: _Sel, lay: _Layer, rel: I32, hlen: I32, with_options: Bool) -> None:
    """TCP options (RFC 9293 §3.2): MSS (kind 2), window scale (3, RFC 7323 §2.2), SACK-permitted
    (4, RFC 2018 §2) and timestamps (8, RFC 7323 §3.2), walked one option per step for all packets.

    A packet's last good option of a kind wins; a bad length (below 2, past the option area, or
    wrong for a fixed-size kind) is a ``tcp_bad_option`` and ends that packet's walk.
    """
    m = sel.m
    mss = np.zeros(m, dtype=np.uint16)
    wscale = np.full(m, 0xFF, dtype=np.uint8)
    sack = np.zeros(m, dtype=np.bool_)
    # The usual data segment option area: NOP NOP TS, nothing else; no walk needed.
    stamps = with_options & (hlen == 32) & (lay.words[5] == _TCP_TS_FAST)
    walk = np.flatnonzero(with_options & ~stamps)
    if walk.shape[0]:
        k = int(walk.shape[0])
        size = hlen[walk] - 20
        # Option area of each packet, zero (End of Option List) past its end, plus spare zero
        # columns so that reading a kind, length or value near the end stays inside the matrix.
        opts = np.zeros((k, 52), dtype=np.uint8)
        area: I64 = sel.sub(st.off)[walk] + (rel[walk] + 20).astype(np.int64)
        opts[:, :40] = st.gather.rows(area, 40)
        opts[np.arange(52) >= size[:, None]] = 0
        cur = np.zeros(k, dtype=np.int32)
        bad = np.zeros(k, dtype=np.bool_)
        found_row: list[Idx] = []
        found_at: list[I32] = []
        found_kind: list[U8] = []
        active = np.arange(k)
        for _ in range(MAX_TCP_OPTION_STEPS):
            if active.shape[0] == 0:
                break
            c = cur[active]
            kind = opts[active, c]
            length = np.where(kind <= TCPOPT_NOP, 1, opts[active, c + 1]).astype(np.int32)
            fixed = _TCP_OPT_LEN[kind]
            tlv = kind > TCPOPT_NOP
            wrong = tlv & ((length < 2) | (c + length > size[active]) | ((fixed != 0) & (length != fixed)))
            good = tlv & ~wrong
            found_row.append(active[good])
            found_at.append(c[good])
            found_kind.append(kind[good])
            bad[active[wrong]] = True
            nxt = c + length
            cur[active] = nxt
            active = active[(kind != TCPOPT_EOL) & ~wrong & (nxt < size[active])]
        rows = np.concatenate(found_row)
        at = np.concatenate(found_at)
        kinds = np.concatenate(found_kind)
        pick = kinds == TCPOPT_MSS
        hi = opts[rows[pick], at[pick] + 2].astype(np.uint16) << 8
        mss[walk[rows[pick]]] = hi | opts[rows[pick], at[pick] + 3]
        pick = kinds == TCPOPT_WSCALE
        wscale[walk[rows[pick]]] = opts[rows[pick], at[pick] + 2]
        sack[walk[rows[kinds == TCPOPT_SACK_PERMITTED]]] = True
        stamps[walk[rows[kinds == TCPOPT_TIMESTAMP]]] = True
        if bool(bad.any()):
            st.flag_rows(sel.rows(np.isin(np.arange(m), walk[bad])), "tcp_bad_option")
    st.put("tcp_mss", sel, mss)
    st.put("tcp_wscale", sel, wscale)
    st.put("tcp_sack_permitted", sel, sack)
    st.put("tcp_has_timestamps", sel, stamps)


# ------------------------------------------------------------------------------------- entry point


def decode_batch(batch: PacketBatch, weird: WeirdLog | None = None) -> DecodedBatch:
    """Decode the L2-L4 headers of every packet of ``batch`` into a :class:`DecodedBatch`.

    Never raises on packet content: malformed or truncated headers give the packet a weird code
    (its first problem) and are counted in ``weird`` (one report per weird name per batch).

    The common packets (Ethernet, IPv4 or ARP, no decode weird) go through a compiled kernel; the
    others through the vectorized decoder (:func:`decode_batch_vectorized`), which is the reference.
    """
    n = len(batch)
    if n == 0:
        return decode_batch_vectorized(batch, weird)
    c64 = np.empty((_k.U64_ROWS, n), dtype=np.uint64)
    c32 = np.empty((_k.U32_ROWS, n), dtype=np.uint32)
    c16 = np.empty((_k.U16_ROWS, n), dtype=np.uint16)
    c8 = np.empty((_k.U8_ROWS, n), dtype=np.uint8)
    cb = np.empty((_k.B_ROWS, n), dtype=np.bool_)
    ci = np.empty((_k.I32_ROWS, n), dtype=np.int32)
    src_ip = np.empty((n, 16), dtype=np.uint8)
    dst_ip = np.empty((n, 16), dtype=np.uint8)
    slow = np.empty(n, dtype=np.bool_)
    n_slow = _k.l2l4_fast(
        np.ascontiguousarray(batch.buffer, dtype=np.uint8),
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.linktype,
        c64,
        c32,
        c16,
        c8,
        cb,
        ci,
        src_ip,
        dst_ip,
        slow,
    )
    blocks: dict[str, AnyArray] = {"64": c64, "32": c32, "16": c16, "8": c8, "b": cb, "i": ci}
    cols = {name: blocks[block][row] for name, (block, row) in _FAST_ROWS.items()}
    wcode = np.zeros(n, dtype=np.uint8)
    if n_slow:
        rows = np.flatnonzero(slow)
        part = decode_batch_vectorized(batch.take(rows))
        for name, col in cols.items():
            col[rows] = getattr(part, name)
        src_ip[rows] = part.src_ip
        dst_ip[rows] = part.dst_ip
        wcode[rows] = part.weird
        if weird is not None and bool(part.weird.any()):
            _report(batch, wcode, weird)
    return DecodedBatch(n=n, src_ip=src_ip, dst_ip=dst_ip, weird=wcode, **cols)


_FAST_ROWS: Final[dict[str, tuple[str, int]]] = {
    "eth_src": ("64", _k.U64_ETH_SRC),
    "eth_dst": ("64", _k.U64_ETH_DST),
    "arp_sha": ("64", _k.U64_ARP_SHA),
    "arp_tha": ("64", _k.U64_ARP_THA),
    "ip_total_len": ("32", _k.U32_IP_TOTAL_LEN),
    "ip_id": ("32", _k.U32_IP_ID),
    "frag_offset": ("32", _k.U32_FRAG_OFFSET),
    "tcp_seq": ("32", _k.U32_TCP_SEQ),
    "tcp_ack": ("32", _k.U32_TCP_ACK),
    "arp_spa": ("32", _k.U32_ARP_SPA),
    "arp_tpa": ("32", _k.U32_ARP_TPA),
    "ethertype": ("16", _k.U16_ETHERTYPE),
    "vlan": ("16", _k.U16_VLAN),
    "vlan_inner": ("16", _k.U16_VLAN_INNER),
    "arp_op": ("16", _k.U16_ARP_OP),
    "ip_header_len": ("16", _k.U16_IP_HEADER_LEN),
    "sport": ("16", _k.U16_SPORT),
    "dport": ("16", _k.U16_DPORT),
    "tcp_flags": ("16", _k.U16_TCP_FLAGS),
    "tcp_window": ("16", _k.U16_TCP_WINDOW),
    "tcp_mss": ("16", _k.U16_TCP_MSS),
    "ip_version": ("8", _k.U8_IP_VERSION),
    "ip_proto": ("8", _k.U8_IP_PROTO),
    "ttl": ("8", _k.U8_TTL),
    "ip_dscp": ("8", _k.U8_IP_DSCP),
    "ipv6_ext_headers": ("8", _k.U8_IPV6_EXT_HEADERS),
    "tcp_header_len": ("8", _k.U8_TCP_HEADER_LEN),
    "tcp_wscale": ("8", _k.U8_TCP_WSCALE),
    "icmp_type": ("8", _k.U8_ICMP_TYPE),
    "icmp_code": ("8", _k.U8_ICMP_CODE),
    "ip_options": ("b", _k.B_IP_OPTIONS),
    "is_fragment": ("b", _k.B_IS_FRAGMENT),
    "more_fragments": ("b", _k.B_MORE_FRAGMENTS),
    "tcp_sack_permitted": ("b", _k.B_TCP_SACK_PERMITTED),
    "tcp_has_timestamps": ("b", _k.B_TCP_HAS_TIMESTAMPS),
    "l3_offset": ("i", _k.I32_L3_OFFSET),
    "l4_offset": ("i", _k.I32_L4_OFFSET),
    "payload_offset": ("i", _k.I32_PAYLOAD_OFFSET),
    "payload_len": ("i", _k.I32_PAYLOAD_LEN),
}
"""Where the fast kernel puts each column: (dtype block, row)."""


def decode_batch_vectorized(batch: PacketBatch, weird: WeirdLog | None = None) -> DecodedBatch:
    """:func:`decode_batch` with numpy operations only, for every packet (the reference decoder)."""
    st = _State(batch)
    if st.n:
        _decode_link(st)
        _decode_l3(st)
        _decode_l4(st)
        if weird is not None and bool(st.wcode.any()):
            _report(batch, st.wcode, weird)
    return _finish(st)


def _report(batch: PacketBatch, wcode: U8, weird: WeirdLog) -> None:
    counts = np.bincount(wcode, minlength=len(DECODE_WEIRD_NAMES))
    for code in np.flatnonzero(counts[1:]).tolist():
        name = DECODE_WEIRD_NAMES[code + 1]
        first = int(np.argmax(wcode == code + 1))
        weird.report(
            name,
            "decode",
            WEIRD_DETAILS.get(name, name),
            count=int(counts[code + 1]),
            ts_ns=int(batch.ts_ns[first]),
            packet_index=batch.first_index + first,
            source=batch.source or None,
        )


def _finish(st: _State) -> DecodedBatch:
    cols = {name: st.col(name) for name in _COLUMNS if name not in ("ethertype", "l3_offset")}
    l3_offset = st.l3 if st.l3_all and bool((st.l3 < st.cap).all()) else None
    if l3_offset is None:
        l3_offset = np.where((st.l3 >= 0) & (st.l3 < st.cap), st.l3, np.int32(-1))
    return DecodedBatch(
        n=st.n,
        ethertype=st.etype,
        l3_offset=l3_offset,
        src_ip=st.addr("src"),
        dst_ip=st.addr("dst"),
        weird=st.wcode,
        **cols,
    )
