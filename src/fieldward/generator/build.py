"""Packet assembly for the generator: frames, templates and vectorized stamping.

Two ways to make a packet:

* **Literal** frames, built whole in Python with correct checksums (:func:`tcp_frame`,
  :func:`udp_frame`, :class:`TcpConversation`). Used for rare packets: handshakes, teardown, DHCP,
  DNS, NTP, ARP, RTSP, engineering sessions.
* **Templates**, registered once per conversation and message variant in a :class:`TemplateTable`.
  A template is a complete frame whose per-packet fields (IP id, TCP seq/ack, up to two application
  counters) are zero, plus the ones-complement sums of its static bytes.
  :func:`stamp` turns arrays of events (template id, timestamp, seq, ack, ...) into packet bytes:
  templates of equal shape form a group (a 2-D byte matrix); a group's events are gathered as rows,
  the per-packet fields and both checksums (from the precomputed sums plus the fields' shares) are
  written column-wise, and the rows are copied to their places in the output chunk. The Python
  work is per group and chunk, never per packet.

Frames are Ethernet II + IPv4 without options, so L4 always starts at offset 34, and are padded to
the 60-byte Ethernet minimum as a switch's mirror port delivers them (the FCS is not captured).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fieldward.capture.writer import byte_rows, run_bounds

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
PROTO_TCP = 6
PROTO_UDP = 17
L4_OFFSET = 34
IP_ID = 18
IP_CSUM = 24
TCP_SEQ = 38
TCP_ACK = 42
TCP_CSUM = 50
UDP_CSUM = 40
TCP_PAYLOAD = 54
UDP_PAYLOAD = 42
MIN_FRAME = 60

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

BROADCAST_MAC = b"\xff" * 6


def ones_sum(data: bytes) -> int:
    """Sum of the big-endian 16-bit words of ``data`` (odd length padded with a zero byte), unfolded."""
    if len(data) % 2:
        data += b"\x00"
    if len(data) > 256:
        return int(np.frombuffer(data, dtype=">u2").sum(dtype=np.int64))
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 checksum of ``data`` (plus an already summed ``initial``)."""
    return ~fold(initial + ones_sum(data)) & 0xFFFF


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    frame = dst + src + struct.pack(">H", ethertype) + payload
    return frame.ljust(MIN_FRAME, b"\x00")


def ipv4_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    ident: int,
    ttl: int,
    df: bool = True,
    tos: int = 0,
    checksum: bool = True,
) -> bytes:
    header = bytearray(
        struct.pack(
            ">BBHHHBBH", 0x45, tos, 20 + payload_len, ident & 0xFFFF, 0x4000 if df else 0, ttl, proto, 0
        )
        + src
        + dst
    )
    if checksum:
        header[10:12] = struct.pack(">H", internet_checksum(bytes(header)))
    return bytes(header)


def _pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return ones_sum(src + dst) + proto + length


@dataclass(frozen=True, slots=True)
class Stack:
    """The TCP/IP behaviour of a device's network stack (what OS fingerprinting looks at)."""

    ttl: int
    syn_window: int
    window_scale: int | None
    window_bytes: int
    mss: int = 1460
    df: bool = True
    tos: int = 0

    def syn_options(self) -> bytes:
        options = struct.pack(">BBH", 2, 4, self.mss)
        if self.window_scale is not None:
            options += bytes([1, 3, 3, self.window_scale, 1, 1, 4, 2])  # NOP, WS, NOP, NOP, SACK-permitted
        return options


@dataclass(frozen=True, slots=True)
class Link:
    """One direction of a conversation: the addresses and stack a frame is sent with."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: bytes
    dst_ip: bytes
    stack: Stack


def tcp_frame(
    link: Link,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes = b"",
    ident: int = 0,
    options: bytes = b"",
    checksums: bool = True,
) -> bytes:
    """A complete Ethernet/IPv4/TCP frame with correct IP and TCP checksums (zero without ``checksums``)."""
    options += b"\x00" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    segment = bytearray(
        struct.pack(
            ">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset << 4, flags, window, 0, 0
        )
        + options
        + payload
    )
    if checksums:
        value = internet_checksum(
            bytes(segment), _pseudo_sum(link.src_ip, link.dst_ip, PROTO_TCP, len(segment))
        )
        segment[16:18] = struct.pack(">H", value)
    stack = link.stack
    ip = ipv4_header(
        link.src_ip, link.dst_ip, PROTO_TCP, len(segment), ident, stack.ttl, stack.df, stack.tos, checksums
    )
    return ethernet(link.dst_mac, link.src_mac, ETH_IPV4, ip + bytes(segment))


def udp_frame(
    link: Link, sport: int, dport: int, payload: bytes, ident: int = 0, checksum: bool = True
) -> bytes:
    """A complete Ethernet/IPv4/UDP frame (UDP checksum computed unless ``checksum`` is false)."""
    datagram = bytearray(struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if checksum:
        value = internet_checksum(
            bytes(datagram), _pseudo_sum(link.src_ip, link.dst_ip, PROTO_UDP, len(datagram))
        )
        datagram[6:8] = struct.pack(">H", value or 0xFFFF)
    stack = link.stack
    ip = ipv4_header(
        link.src_ip, link.dst_ip, PROTO_UDP, len(datagram), ident, stack.ttl, stack.df, stack.tos, checksum
    )
    return ethernet(link.dst_mac, link.src_mac, ETH_IPV4, ip + bytes(datagram))


# --------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """A per-packet counter stamped into a template: frame offset, width (2 or 4), byte order."""

    offset: int
    width: int
    little: bool = False


@dataclass(slots=True)
class Group:
    """Templates of one shape: same length, L4 protocol and slots."""

    length: int
    proto: int
    slots: tuple[Slot, ...]
    matrix: U8
    ip_sum: I64
    l4_sum: I64


_Shape = tuple[int, int, tuple[Slot, ...]]


def _word_sums(matrix: U8) -> tuple[I64, I64]:
    """Per row: ones-complement sum of the IPv4 header and of the L4 segment plus pseudo-header.

    The per-packet fields are zero in a template and frame padding is zero too, so summing every
    word from offset 34 to the end of the row gives the L4 segment's sum.
    """
    if matrix.shape[1] % 2:
        matrix = np.concatenate((matrix, np.zeros((matrix.shape[0], 1), dtype=np.uint8)), axis=1)
    words = matrix[:, 0::2].astype(np.int64) * 256 + matrix[:, 1::2]
    ip_sum = words[:, 7:17].sum(axis=1)
    proto = words[:, 11] & 0xFF
    l4_length = words[:, 8] - 20
    l4_sum = words[:, 17:].sum(axis=1) + words[:, 13:17].sum(axis=1) + proto + l4_length
    return ip_sum, l4_sum


class TemplateTable:
    """Registry of frame templates, compiled into shape groups for :func:`stamp`.

    ``tag`` is a caller-defined small integer (the generator's protocol index) kept per template
    for statistics.
    """

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._shapes: list[_Shape] = []
        self._tags: list[int] = []
        self.groups: list[Group] = []
        self.group: I32 = np.zeros(0, dtype=np.int32)
        self.row: I32 = np.zeros(0, dtype=np.int32)
        self.length: I64 = np.zeros(0, dtype=np.int64)
        self.tag: I32 = np.zeros(0, dtype=np.int32)
        self._compiled = False

    def __len__(self) -> int:
        return len(self._shapes)

    def add(self, frame: bytes, tag: int, slots: Sequence[Slot] = ()) -> int:
        """Register ``frame``; returns its template id. Consecutive calls get consecutive ids.

        The per-packet fields (IP id and checksum, TCP seq/ack/checksum or UDP checksum, the slots)
        are cleared here; whatever the frame held there does not matter.
        """
        if self._compiled:
            raise RuntimeError("templates cannot be added after compile()")
        data = bytearray(frame)
        ethertype = int.from_bytes(data[12:14], "big")
        proto = data[23] if ethertype == ETH_IPV4 and len(data) >= L4_OFFSET else 0
        if proto in (PROTO_TCP, PROTO_UDP):
            data[IP_ID : IP_ID + 2] = b"\x00\x00"
            data[IP_CSUM : IP_CSUM + 2] = b"\x00\x00"
            if proto == PROTO_TCP:
                data[TCP_SEQ : TCP_SEQ + 8] = bytes(8)
                data[TCP_CSUM : TCP_CSUM + 2] = b"\x00\x00"
            else:
                data[UDP_CSUM : UDP_CSUM + 2] = b"\x00\x00"
            for slot in slots:
                data[slot.offset : slot.offset + slot.width] = bytes(slot.width)
        else:
            proto = 0
            if slots:
                raise ValueError("slots need a TCP or UDP template")
        self._frames.append(bytes(data))
        self._shapes.append((len(data), proto, tuple(slots)))
        self._tags.append(tag)
        return len(self._shapes) - 1

    def compile(self) -> None:
        """Freeze the table: build one byte matrix (and checksum partial sums) per template shape."""
        index: dict[_Shape, list[int]] = {}
        for tid, shape in enumerate(self._shapes):
            index.setdefault(shape, []).append(tid)
        n = len(self._shapes)
        self.group = np.zeros(n, dtype=np.int32)
        self.row = np.zeros(n, dtype=np.int32)
        self.length = np.array([shape[0] for shape in self._shapes], dtype=np.int64)
        self.tag = np.array(self._tags, dtype=np.int32)
        for gid, (shape, members) in enumerate(index.items()):
            length, proto, slots = shape
            joined = b"".join(self._frames[t] for t in members)
            matrix = np.frombuffer(joined, dtype=np.uint8).reshape(-1, length).copy()
            if proto:
                ip_sum, l4_sum = _word_sums(matrix)
            else:
                ip_sum = l4_sum = np.zeros(len(members), dtype=np.int64)
            self.groups.append(Group(length, proto, slots, matrix, ip_sum, l4_sum))
            self.group[members] = gid
            self.row[members] = np.arange(len(members), dtype=np.int32)
        self._frames = []  # the frames now live in the group matrices
        self._compiled = True


@dataclass(slots=True)
class Events:
    """Template-based packets of one chunk, as parallel arrays (see :func:`stamp`)."""

    ts: I64
    tpl: I64
    seq: I64
    ack: I64
    ipid: I64
    s0: I64
    s1: I64

    @classmethod
    def make(
        cls,
        ts: I64,
        tpl: I64,
        seq: I64 | None = None,
        ack: I64 | None = None,
        ipid: I64 | None = None,
        s0: I64 | None = None,
        s1: I64 | None = None,
    ) -> Events:
        n = ts.shape[0]

        def col(values: I64 | None) -> I64:
            return np.zeros(n, dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)

        return cls(
            ts=np.asarray(ts, dtype=np.int64),
            tpl=np.asarray(tpl, dtype=np.int64),
            seq=col(seq),
            ack=col(ack),
            ipid=col(ipid),
            s0=col(s0),
            s1=col(s1),
        )

    @classmethod
    def empty(cls) -> Events:
        zero = np.zeros(0, dtype=np.int64)
        return cls.make(zero, zero)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[Events]) -> Events:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in _EVENT_FIELDS))

    def take(self, index: I64) -> Events:
        return Events(*(getattr(self, name)[index] for name in _EVENT_FIELDS))


_EVENT_FIELDS = ("ts", "tpl", "seq", "ack", "ipid", "s0", "s1")


def _swap16(values: I64) -> I64:
    return ((values & 0xFF) << 8) | (values >> 8)


def _fold(total: I64) -> I64:
    for _ in range(3):
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _slot_sum(slot: Slot, wire: I64) -> I64:
    """Checksum share of a big-endian ``wire`` value placed at ``slot.offset``."""
    odd = (slot.offset - L4_OFFSET) % 2 == 1
    if slot.width == 2:
        return _swap16(wire) if odd else wire
    hi, lo = wire >> 16, wire & 0xFFFF
    return _swap16(hi) + _swap16(lo) if odd else hi + lo


def _to_wire(slot: Slot, values: I64) -> I64:
    mask = 0xFFFF if slot.width == 2 else 0xFFFFFFFF
    values = values & mask
    if not slot.little:
        return values
    if slot.width == 2:
        return _swap16(values)
    return ((values & 0xFF) << 24) | ((values & 0xFF00) << 8) | ((values >> 8) & 0xFF00) | (values >> 24)


Patch = tuple[int, U8]
"""Bytes to write at a frame offset in every packet of a group: (offset, (k, width) byte matrix)."""


def _be(values: I64, width: int) -> U8:
    return values.astype(">u2" if width == 2 else ">u4").view(np.uint8).reshape(-1, width)


def _patches(group: Group, rows_index: I32, events: Events, sel: I64) -> list[Patch]:
    """The per-packet fields of a group's packets: IP id, sequence numbers, slots, checksums."""
    ipid = events.ipid[sel] & 0xFFFF
    patches = [(IP_ID, _be(ipid, 2)), (IP_CSUM, _be(~_fold(group.ip_sum[rows_index] + ipid) & 0xFFFF, 2))]
    l4 = group.l4_sum[rows_index]
    if group.proto == PROTO_TCP:
        seq = events.seq[sel] & 0xFFFFFFFF
        ack = events.ack[sel] & 0xFFFFFFFF
        patches += [(TCP_SEQ, _be(seq, 4)), (TCP_ACK, _be(ack, 4))]
        l4 = l4 + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
    for slot, values in zip(group.slots, (events.s0, events.s1), strict=False):
        wire = _to_wire(slot, values[sel])
        patches.append((slot.offset, _be(wire, slot.width)))
        l4 = l4 + _slot_sum(slot, wire)
    checksum = ~_fold(l4) & 0xFFFF
    if group.proto == PROTO_TCP:
        patches.append((TCP_CSUM, _be(checksum, 2)))
    else:
        patches.append((UDP_CSUM, _be(np.where(checksum == 0, 0xFFFF, checksum), 2)))
    return patches


_BROADCAST_MIN_LENGTH = 512
"""From this frame length on, templates are copied straight into the output (no row gather)."""


def stamp(table: TemplateTable, events: Events, out: U8, dst: I64) -> None:
    """Write the packets of ``events`` into ``out`` at offsets ``dst``.

    Per group: small frames are gathered as rows, patched column-wise and copied out in one row
    copy; large frames (video) are copied from each template row to all its destinations at once
    and patched in place, which saves a pass over the bulk of the bytes.
    """
    if not len(events):
        return
    gid = table.group[events.tpl]
    order = np.argsort(gid, kind="stable")
    sorted_gid = gid[order]
    for lo, hi in run_bounds(sorted_gid):
        sel = order[lo:hi]
        group = table.groups[int(sorted_gid[lo])]
        rows_index = table.row[events.tpl[sel]]
        patches = _patches(group, rows_index, events, sel) if group.proto else []
        targets = byte_rows(out, group.length)
        if group.length < _BROADCAST_MIN_LENGTH:
            rows = group.matrix[rows_index]
            for offset, data in patches:
                rows[:, offset : offset + data.shape[1]] = data
            targets[dst[sel]] = rows
            continue
        by_row = np.argsort(rows_index, kind="stable")
        row_sorted = rows_index[by_row]
        for a, b in run_bounds(row_sorted):
            targets[dst[sel[by_row[a:b]]]] = group.matrix[row_sorted[a]]
        for offset, data in patches:
            byte_rows(out, data.shape[1])[dst[sel] + offset] = data


# --------------------------------------------------------------------------------------------------
# Literal TCP conversations
# --------------------------------------------------------------------------------------------------

Stamped = tuple[int, bytes]
"""A literal packet: (timestamp in ns, frame bytes)."""


class TcpConversation:
    """One TCP connection built packet by packet, with the sequence state kept here.

    Used for the handshake, setup and teardown of template-driven sessions (which hand their state
    to the vectorized poller in between) and for the rare conversations built entirely in Python.
    """

    def __init__(
        self,
        client: Link,
        server: Link,
        sport: int,
        dport: int,
        isn_client: int,
        isn_server: int,
        ipid_client: int,
        ipid_server: int,
    ) -> None:
        self.client = client
        self.server = server
        self.sport = sport
        self.dport = dport
        self.c_seq = isn_client & 0xFFFFFFFF
        self.s_seq = isn_server & 0xFFFFFFFF
        self.c_ipid = ipid_client & 0xFFFF
        self.s_ipid = ipid_server & 0xFFFF
        scaled = client.stack.window_scale is not None and server.stack.window_scale is not None
        self.c_window = self._window(client.stack, scaled)
        self.s_window = self._window(server.stack, scaled)

    @staticmethod
    def _window(stack: Stack, scaled: bool) -> int:
        if scaled and stack.window_scale is not None:
            return min(stack.window_bytes >> stack.window_scale, 0xFFFF)
        return min(stack.window_bytes, stack.syn_window, 0xFFFF)

    def _frame(
        self,
        from_client: bool,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
        options: bytes = b"",
        window: int | None = None,
    ) -> bytes:
        if from_client:
            link, sport, dport, ident, default = (
                self.client,
                self.sport,
                self.dport,
                self.c_ipid,
                self.c_window,
            )
            self.c_ipid = (ident + 1) & 0xFFFF
        else:
            link, sport, dport, ident, default = (
                self.server,
                self.dport,
                self.sport,
                self.s_ipid,
                self.s_window,
            )
            self.s_ipid = (ident + 1) & 0xFFFF
        window = default if window is None else window
        return tcp_frame(link, sport, dport, seq, ack, flags, window, payload, ident, options)

    def handshake(self, ts: int, rtt: int) -> list[Stamped]:
        """SYN, SYN-ACK after ``rtt``, ACK shortly after; advances both ISNs by one."""
        syn = self._frame(
            True,
            self.c_seq,
            0,
            SYN,
            options=self.client.stack.syn_options(),
            window=self.client.stack.syn_window,
        )
        server_options = self.server.stack.syn_options()
        if self.client.stack.window_scale is None:
            server_options = server_options[:4]
        synack = self._frame(
            False,
            self.s_seq,
            self.c_seq + 1,
            SYN | ACK,
            options=server_options,
            window=self.server.stack.syn_window,
        )
        self.c_seq = (self.c_seq + 1) & 0xFFFFFFFF
        self.s_seq = (self.s_seq + 1) & 0xFFFFFFFF
        ack = self._frame(True, self.c_seq, self.s_seq, ACK)
        return [(ts, syn), (ts + rtt, synack), (ts + rtt + max(rtt // 8, 20_000), ack)]

    def client_send(self, ts: int, payload: bytes) -> Stamped:
        frame = self._frame(True, self.c_seq, self.s_seq, PSH | ACK, payload)
        self.c_seq = (self.c_seq + len(payload)) & 0xFFFFFFFF
        return ts, frame

    def server_send(self, ts: int, payload: bytes) -> Stamped:
        frame = self._frame(False, self.s_seq, self.c_seq, PSH | ACK, payload)
        self.s_seq = (self.s_seq + len(payload)) & 0xFFFFFFFF
        return ts, frame

    def client_ack(self, ts: int) -> Stamped:
        return ts, self._frame(True, self.c_seq, self.s_seq, ACK)

    def server_ack(self, ts: int) -> Stamped:
        return ts, self._frame(False, self.s_seq, self.c_seq, ACK)

    def exchange(
        self, ts: int, request: bytes, response: bytes, response_delay: int, ack_delay: int
    ) -> tuple[list[Stamped], int]:
        """Request, response (or the server's bare ACK when ``response`` is empty), client ACK.

        Returns the packets and the time of the last one.
        """
        out = [self.client_send(ts, request)]
        t = ts + response_delay
        if response:
            out.append(self.server_send(t, response))
            t += ack_delay
            out.append(self.client_ack(t))
        else:
            out.append(self.server_ack(t))
        return out, t

    def close(self, ts: int, rtt: int) -> list[Stamped]:
        """Client-initiated teardown: FIN-ACK, FIN-ACK, ACK."""
        fin = self._frame(True, self.c_seq, self.s_seq, FIN | ACK)
        self.c_seq = (self.c_seq + 1) & 0xFFFFFFFF
        fin2 = self._frame(False, self.s_seq, self.c_seq, FIN | ACK)
        self.s_seq = (self.s_seq + 1) & 0xFFFFFFFF
        last = self._frame(True, self.c_seq, self.s_seq, ACK)
        return [(ts, fin), (ts + rtt, fin2), (ts + rtt + max(rtt // 8, 20_000), last)]

    def template(self, from_client: bool, payload: bytes = b"", flags: int = PSH | ACK) -> bytes:
        """A frame of this connection for a :class:`TemplateTable` (seq, ack, ip id, checksums zero)."""
        if from_client:
            return tcp_frame(
                self.client, self.sport, self.dport, 0, 0, flags, self.c_window, payload, checksums=False
            )
        return tcp_frame(
            self.server, self.dport, self.sport, 0, 0, flags, self.s_window, payload, checksums=False
        )
