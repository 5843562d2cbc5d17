"""Live capture from a network interface: Linux AF_PACKET with a TPACKET_V3 memory-mapped ring.

:class:`LiveCapture` opens a raw packet socket on one interface, maps a TPACKET_V3 receive ring
(the kernel fills whole blocks of packets; user space hands a block back by clearing its status
word, with no system call per packet), optionally attaches a BPF filter and joins a
``PACKET_FANOUT_HASH`` group so several processes share the interface's traffic by flow (the kernel's
symmetric flow hash keeps both directions of a flow in one member). :meth:`LiveCapture.read` returns
the packets waiting as one :class:`~fieldward.capture.batch.PacketBatch`, the unit ``analyze`` reads
from files.

Only the Python standard library is used for the socket and the ring (``socket``, ``mmap``,
``select``); the BPF filter text is compiled by libpcap through ``ctypes`` (``pcap_compile`` on a
"dead" handle), the same compiler tcpdump uses, so filter syntax is exactly tcpdump's.

Errors are :class:`LiveCaptureError` with a message that says what to do: missing interface,
missing privilege (CAP_NET_RAW), an unsupported kernel, a filter that does not compile.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from fieldward.capture.batch import PacketBatch
from fieldward.errors import FieldWardError

__all__ = [
    "InterfaceState",
    "KernelStats",
    "LiveCapture",
    "LiveCaptureError",
    "compile_bpf",
    "interface_state",
]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
LINKTYPE_ETHERNET = 1

_BLOCK_HDR = struct.Struct("<IIIIIIQ")  # version, offset_to_priv, status, num_pkts, first, blk_len, seq
_PKT_HDR = struct.Struct("<IIIIIIHHIIH")  # next, sec, nsec, snaplen, len, status, mac, net, rxhash, tci, tpid
_REQ3 = struct.Struct("<IIIIIII")
_STATS3 = struct.Struct("<III")


class LiveCaptureError(FieldWardError):
    """The interface cannot be captured from (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class KernelStats:
    """Counters of the packet socket since the last reading (the kernel resets them when read)."""

    packets: int
    drops: int
    """Packets the kernel could not put in the ring (it was full: the reader fell behind)."""
    freezes: int


@dataclass(frozen=True, slots=True)
class InterfaceState:
    """What ``/sys/class/net/<if>`` says about an interface."""

    exists: bool
    up: bool
    """Administratively up and with a carrier (operstate up or unknown)."""
    operstate: str
    rx_packets: int = 0
    rx_dropped: int = 0
    """Frames the interface/driver dropped before any socket saw them (``rx_dropped + rx_missed_errors``)."""


def interface_state(name: str) -> InterfaceState:
    """The current state and receive counters of interface ``name``."""
    base = Path("/sys/class/net") / name
    if not base.is_dir():
        return InterfaceState(exists=False, up=False, operstate="missing")

    def read(rel: str) -> str:
        try:
            return (base / rel).read_text().strip()
        except OSError:
            return ""

    def number(rel: str) -> int:
        text = read(rel)
        return int(text) if text.isdigit() else 0

    operstate = read("operstate") or "unknown"
    flags = int(read("flags") or "0", 16)
    up = bool(flags & 0x1) and operstate in ("up", "unknown")
    return InterfaceState(
        exists=True,
        up=up,
        operstate=operstate,
        rx_packets=number("statistics/rx_packets"),
        rx_dropped=number("statistics/rx_dropped") + number("statistics/rx_missed_errors"),
    )


class _BpfInsn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn)))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_BpfInsn)))


def compile_bpf(
    expression: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144
) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump filter expression to classic BPF instructions ``(code, jt, jf, k)`` with
    libpcap (``pcap_compile`` on a dead handle: no device is opened)."""
    path = ctypes.util.find_library("pcap")
    if path is None:
        raise LiveCaptureError("--bpf needs libpcap (Debian: apt-get install libpcap0.8)")
    lib = ctypes.CDLL(path)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.pcap_compile.argtypes = (
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    )
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
    lib.pcap_freecode.argtypes = (ctypes.POINTER(_BpfProgram),)
    lib.pcap_close.argtypes = (ctypes.c_void_p,)
    handle = lib.pcap_open_dead(linktype, snaplen)
    if not handle:
        raise LiveCaptureError("libpcap could not open a handle to compile the filter")
    program = _BpfProgram()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, 0xFFFFFFFF) != 0:
            message = (lib.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
            raise LiveCaptureError(f"bad --bpf filter {expression!r}: {message}")
        insns = [
            (program.bf_insns[i].code, program.bf_insns[i].jt, program.bf_insns[i].jf, program.bf_insns[i].k)
            for i in range(program.bf_len)
        ]
        lib.pcap_freecode(ctypes.byref(program))
        return insns
    finally:
        lib.pcap_close(handle)


def _attach_bpf(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    array = (_BpfInsn * len(insns))(*(_BpfInsn(*insn) for insn in insns))
    prog = _SockFprog(len(insns), ctypes.cast(array, ctypes.POINTER(_BpfInsn)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))  # array stays alive across the call


def _explain(exc: OSError, interface: str) -> LiveCaptureError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return LiveCaptureError(
            f"permission denied capturing on {interface}: live capture needs CAP_NET_RAW "
            "(run as root, or grant it: setcap cap_net_raw,cap_net_admin+eip on the Python binary, "
            "or AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN in the systemd unit)"
        )
    if exc.errno in (errno.ENODEV, errno.ENXIO) or (
        isinstance(exc, OSError) and "no such device" in str(exc)
    ):
        return LiveCaptureError(f"no such interface: {interface} (see `ip link`)")
    if exc.errno == errno.ENETDOWN:
        return LiveCaptureError(f"interface {interface} is down (`ip link set {interface} up`)")
    return LiveCaptureError(f"cannot capture on {interface}: {exc.strerror or exc}")


class LiveCapture:
    """A TPACKET_V3 ring on one interface; :meth:`read` returns a batch of what arrived.

    ``block_size`` x ``block_count`` is the ring's memory (default 1 MiB x 64 = 64 MiB: about half a
    second at 1 Gbit/s; at low rates a block holds what arrived in one ``block_timeout_ms``).
    ``block_timeout_ms`` is how long the kernel keeps a partly
    filled block before handing it over, the floor of the detection latency at low rates.
    ``fanout_group`` joins a hash fanout group (all members must use the same id);
    ``ignore_outgoing`` leaves out frames this host sends (a SPAN port sensor only listens).
    Timestamps are cut to microseconds, as libpcap delivers them by default (``nanosecond`` keeps
    the kernel's nanoseconds).
    """

    def __init__(
        self,
        interface: str,
        *,
        bpf: str | None = None,
        snaplen: int = 262144,
        block_size: int = 1 << 20,
        block_count: int = 64,
        block_timeout_ms: int = 100,
        fanout_group: int | None = None,
        promiscuous: bool = True,
        ignore_outgoing: bool = True,
        nanosecond: bool = False,
    ) -> None:
        if block_size < 4096 or block_size & (block_size - 1):
            raise LiveCaptureError("block_size must be a power of two of at least 4096")
        self.interface = interface
        self.block_size = block_size
        self.block_count = block_count
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.packets = 0
        self.bytes = 0
        self._block = 0
        self._index = 0
        insns = compile_bpf(bpf) if bpf else None
        state = interface_state(interface)
        if not state.exists:
            raise LiveCaptureError(f"no such interface: {interface} (see `ip link`)")
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise _explain(exc, interface) from None
        try:
            sock = self._sock
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            if insns is not None:
                _attach_bpf(sock, insns)  # before bind: no unfiltered packet gets in
            if ignore_outgoing:
                with contextlib.suppress(OSError):  # kernel < 4.20: outgoing frames are captured too
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            request = _REQ3.pack(
                block_size, block_count, 2048, block_size // 2048 * block_count, block_timeout_ms, 0, 0
            )
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
            self._ring = mmap.mmap(
                sock.fileno(), block_size * block_count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
            self._view = memoryview(self._ring)
            sock.bind((interface, ETH_P_ALL))
            self.ifindex = socket.if_nametoindex(interface)
            if promiscuous:
                mreq = struct.pack("<iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if fanout_group is not None:
                mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
                sock.setsockopt(
                    SOL_PACKET, PACKET_FANOUT, struct.pack("<I", (fanout_group & 0xFFFF) | (mode << 16))
                )
        except OSError as exc:
            self.close()
            raise _explain(exc, interface) from None
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)

    def fileno(self) -> int:
        return self._sock.fileno()

    def stats(self) -> KernelStats:
        """Packets received and dropped by the kernel since the last call."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        packets, drops, freezes = _STATS3.unpack(raw)
        return KernelStats(packets=packets, drops=drops, freezes=freezes)

    def _ready(self) -> bool:
        status = struct.unpack_from("<I", self._view, self._block * self.block_size + 8)[0]
        return bool(status & TP_STATUS_USER)

    def read(self, max_packets: int = 65536, timeout: float = 0.1) -> PacketBatch:
        """The packets of every block the kernel has handed over (waiting up to ``timeout`` seconds
        for the first), up to about ``max_packets``; an empty batch when nothing arrived."""
        if not self._ready():
            events = self._poll.poll(max(int(timeout * 1000), 0))
            for _fd, flags in events:
                if flags & select.POLLERR and not self._ready():
                    # the device went away or down; let the caller look at the interface
                    err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise _explain(OSError(err, os.strerror(err)), self.interface)
        chunks: list[bytes] = []
        times: list[int] = []
        wire: list[int] = []
        view = self._view
        while len(times) < max_packets and self._ready():
            base = self._block * self.block_size
            _v, _p, _s, count, first, _l, _seq = _BLOCK_HDR.unpack_from(view, base)
            offset = base + first
            for _ in range(count):
                nxt, sec, nsec, caplen, length, status, mac, _net, _h, tci, tpid = _PKT_HDR.unpack_from(
                    view, offset
                )
                start = offset + mac
                frame = bytes(view[start : start + caplen])
                if status & TP_STATUS_VLAN_VALID and len(frame) >= 12:
                    # the kernel took the 802.1Q tag off the frame: put it back where it was on the wire
                    proto = tpid if status & TP_STATUS_VLAN_TPID_VALID and tpid else 0x8100
                    frame = frame[:12] + struct.pack("!HH", proto, tci & 0xFFFF) + frame[12:]
                    length += 4
                chunks.append(frame)
                times.append(sec * 1_000_000_000 + (nsec if self.nanosecond else nsec - nsec % 1000))
                wire.append(length)
                offset += nxt
            struct.pack_into("<I", view, base + 8, TP_STATUS_KERNEL)  # hand the block back
            self._block = (self._block + 1) % self.block_count
        n = len(chunks)
        if n == 0:
            return PacketBatch.empty(source=self.interface)
        lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=n)
        offsets = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        batch = PacketBatch(
            buffer=np.frombuffer(b"".join(chunks), dtype=np.uint8),
            offsets=offsets,
            caplen=lengths.astype(np.uint32),
            origlen=np.asarray(wire, dtype=np.uint32),
            ts_ns=np.asarray(times, dtype=np.int64),
            interface=np.zeros(n, dtype=np.uint16),
            linktype=np.full(n, LINKTYPE_ETHERNET, dtype=np.uint16),
            first_index=self._index,
            source=self.interface,
        )
        self._index += n
        self.packets += n
        self.bytes += int(lengths.sum())
        return batch

    def close(self) -> None:
        view = getattr(self, "_view", None)
        if view is not None:
            view.release()
            self._view = None  # type: ignore[assignment]
        ring = getattr(self, "_ring", None)
        if ring is not None:
            ring.close()
            self._ring = None  # type: ignore[assignment]
        self._sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def wait_for_interface(name: str, timeout: float, interval: float = 0.5) -> InterfaceState:
    """Poll until ``name`` exists and is up, or ``timeout`` seconds pass; returns the last state."""
    deadline = time.monotonic() + timeout
    state = interface_state(name)
    while not (state.exists and state.up) and time.monotonic() < deadline:
        time.sleep(interval)
        state = interface_state(name)
    return state
