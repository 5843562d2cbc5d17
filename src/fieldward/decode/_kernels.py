"""Numba kernels of the decode layer: the flow table's per-batch walk and its hash index.

:class:`fieldward.decode.flows.FlowTable` keeps per-flow state in numpy column arrays indexed by
*slot*, and a live index that maps a flow key to its slot: an open-addressing hash table (linear
probing, power-of-two size, ``-1`` for an empty cell) holding slot numbers; the key and its 64-bit hash
live in the state arrays. Deletion shifts the following cells of the probe run back (no tombstones).

:func:`flow_update` walks the packets of one batch in capture order and applies the split rules of the
flows module one packet at a time (the sequential model the tests spell out), updating the counters
of each flow in place. The caller guarantees room: at least one free slot per packet, and a hash table
at most half full after inserting one new key per packet, so the kernel never allocates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.extending import intrinsic

_F = TypeVar("_F", bound=Callable[..., Any])


def _kernel(fn: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)`` keeping the Python signature for the type checker."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


if TYPE_CHECKING:

    def _i64(value: Any) -> int:
        """``np.int64``: numba keeps unsigned types through ``int()``, and mixing them with signed
        values would give floats; the type checker sees a plain int."""

else:
    _i64 = np.int64


def _prefetch_intrinsic(typingctx: Any, arr: Any, index: Any) -> Any:
    """Typing and code generation of :data:`_prefetch`."""
    sig = types.void(arr, index)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        fn = cast(Any, cgutils).get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_prefetch = cast(Callable[[Any, Any], None], intrinsic(_prefetch_intrinsic))
"""``_prefetch(arr, index)`` in a kernel: ask the CPU to start loading the cache line of ``arr[index]``
(``llvm.prefetch``; a hint that never faults, whatever the address)."""

PREFETCH_PACKETS = 12
"""How many packets ahead l2l4_fast asks for the header bytes it will read."""

# Kept in sync with fieldward.decode.flows (asserted there at import).
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
CB_FIN_A = 1
CB_FIN_B = 2
CB_RST = 4
REASON_IDLE = 0
REASON_ACTIVE = 1
L_SYN, L_SYNACK, L_ACK, L_DATA, L_FIN, L_RST, L_FINRST, L_MULTI = range(8)
HIST_NONE = 0xFFFFFFFF

# Layout of the ``io`` array of flow_update (scalars carried in and out).
IO_NFREE = 0
"""Free slots on the ``free`` stack (its first IO_NFREE entries)."""
IO_NEXT_ID = 1
"""Next flow id."""
IO_LIVE = 2
"""Live flows in the hash index."""
IO_ENDED = 3
"""(out) flows ended inside the batch, in ``ended_slot``/``ended_reason``."""
IO_MIN_DEADLINE = 4
"""A lower bound of the time at which some live flow times out (only ever lowered by the update)."""
IO_SIZE = 5

# Layout of the ``params`` array: serial of packet 0, idle timeouts, active timeout (ns).
P_SERIAL0, P_TCP_IDLE, P_UDP_IDLE, P_OTHER_IDLE, P_ACTIVE = range(5)
P_SIZE = 5

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


@_kernel
def _mix(x: np.uint64) -> np.uint64:
    """splitmix64 finalizer (as ``fieldward.decode.flows._mix``)."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


@_kernel
def hash_key(k0: np.uint64, k1: np.uint64, k2: np.uint64, k3: np.uint64, k4: np.uint64) -> np.uint64:
    """The hash of one key (the same function as ``fieldward.decode.flows._hash_keys``)."""
    h = _mix(k0 + _GOLDEN)
    h = _mix(h ^ (k1 + _GOLDEN))
    h = _mix(h ^ (k2 + _GOLDEN))
    h = _mix(h ^ (k3 + _GOLDEN))
    return _mix(h ^ (k4 + _GOLDEN))


@_kernel
def _find(
    ht: np.ndarray[Any, Any],
    key: np.ndarray[Any, Any],
    shash: np.ndarray[Any, Any],
    h: np.uint64,
    k0: np.uint64,
    k1: np.uint64,
    k2: np.uint64,
    k3: np.uint64,
    k4: np.uint64,
) -> int:
    """Cell of the hash table holding the key, or ``-(empty cell) - 1`` where it would go."""
    mask = _i64(ht.shape[0] - 1)
    cell = _i64(h & np.uint64(mask))
    while True:
        s = ht[cell]
        if s < 0:
            return -cell - 1
        if (
            shash[s] == h
            and key[s, 0] == k0
            and key[s, 1] == k1
            and key[s, 2] == k2
            and key[s, 3] == k3
            and key[s, 4] == k4
        ):
            return cell
        cell = (cell + 1) & mask


@_kernel
def _delete_cell(ht: np.ndarray[Any, Any], shash: np.ndarray[Any, Any], cell: int) -> None:
    """Empty ``cell`` and shift the rest of its probe run back so every key stays reachable."""
    mask = _i64(ht.shape[0] - 1)
    hole = cell
    j = cell
    while True:
        j = (j + 1) & mask
        s = ht[j]
        if s < 0:
            break
        home = _i64(shash[s] & np.uint64(mask))
        # Move the entry at j into the hole unless its home lies cyclically in (hole, j].
        stays = (hole < home <= j) if hole <= j else (home > hole or home <= j)
        if not stays:
            ht[hole] = s
            hole = j
    ht[hole] = -1


@_kernel
def ht_remove_slots(
    ht: np.ndarray[Any, Any],
    key: np.ndarray[Any, Any],
    shash: np.ndarray[Any, Any],
    slots: np.ndarray[Any, Any],
) -> int:
    """Remove the live flows in ``slots`` from the hash index; returns how many were there."""
    removed = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        cell = _find(ht, key, shash, shash[s], key[s, 0], key[s, 1], key[s, 2], key[s, 3], key[s, 4])
        if cell >= 0 and ht[cell] == s:
            _delete_cell(ht, shash, cell)
            removed += 1
    return removed


@_kernel
def ht_rebuild(
    ht_new: np.ndarray[Any, Any], ht_old: np.ndarray[Any, Any], shash: np.ndarray[Any, Any]
) -> None:
    """Insert the slots of ``ht_old`` into the empty (all ``-1``) table ``ht_new``."""
    mask = _i64(ht_new.shape[0] - 1)
    for i in range(ht_old.shape[0]):
        s = ht_old[i]
        if s >= 0:
            cell = _i64(shash[s] & np.uint64(mask))
            while ht_new[cell] >= 0:
                cell = (cell + 1) & mask
            ht_new[cell] = s


@_kernel
def ht_slots(ht: np.ndarray[Any, Any], out: np.ndarray[Any, Any]) -> int:
    """Write the live slots into ``out`` (table order); returns how many."""
    n = 0
    for i in range(ht.shape[0]):
        if ht[i] >= 0 and n < out.shape[0]:
            out[n] = ht[i]
            n += 1
    return n


@_kernel
def _idle_of(proto: int, params: np.ndarray[Any, Any]) -> int:
    if proto == PROTO_TCP:
        return _i64(params[P_TCP_IDLE])
    if proto == PROTO_UDP:
        return _i64(params[P_UDP_IDLE])
    return _i64(params[P_OTHER_IDLE])


@_kernel
def flow_expire(
    ht: np.ndarray[Any, Any],
    key: np.ndarray[Any, Any],
    shash: np.ndarray[Any, Any],
    first_ts: np.ndarray[Any, Any],
    last_pkt_ts: np.ndarray[Any, Any],
    params: np.ndarray[Any, Any],
    now: int,
    out_slot: np.ndarray[Any, Any],
    out_reason: np.ndarray[Any, Any],
    io: np.ndarray[Any, Any],
) -> int:
    """End the live flows idle or past the active timeout at ``now``: removed from the index, written
    to ``out_slot``/``out_reason`` (count returned). Sets ``io[IO_MIN_DEADLINE]`` exactly for the rest."""
    active = params[P_ACTIVE]
    n = 0
    min_deadline = np.iinfo(np.int64).max
    for i in range(ht.shape[0]):
        s = ht[i]
        if s < 0:
            continue
        proto = _i64((key[s, 4] >> np.uint64(24)) & np.uint64(0xFF))
        idle = _idle_of(proto, params)
        if n == out_slot.shape[0]:  # no room (the live count is wrong): leave the rest for later
            min_deadline = now
        elif now - last_pkt_ts[s] > idle:
            out_slot[n] = s
            out_reason[n] = REASON_IDLE
            n += 1
        elif now - first_ts[s] >= active:
            out_slot[n] = s
            out_reason[n] = REASON_ACTIVE
            n += 1
        else:
            deadline = min(last_pkt_ts[s] + idle + 1, first_ts[s] + active)
            min_deadline = min(min_deadline, deadline)
    io[IO_LIVE] -= ht_remove_slots(ht, key, shash, out_slot[:n])
    io[IO_MIN_DEADLINE] = min_deadline
    return n


@_kernel
def flow_update(
    ip_version: np.ndarray[Any, Any],
    is_fragment: np.ndarray[Any, Any],
    ip_proto: np.ndarray[Any, Any],
    src64: np.ndarray[Any, Any],
    dst64: np.ndarray[Any, Any],
    sport_in: np.ndarray[Any, Any],
    dport_in: np.ndarray[Any, Any],
    icmp_type: np.ndarray[Any, Any],
    icmp_code: np.ndarray[Any, Any],
    vlan_in: np.ndarray[Any, Any],
    vlan_inner_in: np.ndarray[Any, Any],
    tcp_flags_in: np.ndarray[Any, Any],
    payload_len: np.ndarray[Any, Any],
    ip_total_len: np.ndarray[Any, Any],
    eth_src: np.ndarray[Any, Any],
    eth_dst: np.ndarray[Any, Any],
    ts_ns: np.ndarray[Any, Any],
    origlen: np.ndarray[Any, Any],
    icmp4_cp: np.ndarray[Any, Any],
    icmp6_cp: np.ndarray[Any, Any],
    params: np.ndarray[Any, Any],
    hash_mask: np.uint64,
    # flow state, indexed by slot
    key: np.ndarray[Any, Any],
    shash: np.ndarray[Any, Any],
    flow_id: np.ndarray[Any, Any],
    st_ip_version: np.ndarray[Any, Any],
    orig_is_a: np.ndarray[Any, Any],
    flipped: np.ndarray[Any, Any],
    first_ts: np.ndarray[Any, Any],
    last_ts: np.ndarray[Any, Any],
    last_pkt_ts: np.ndarray[Any, Any],
    first_serial: np.ndarray[Any, Any],
    pkts: np.ndarray[Any, Any],
    ip_bytes: np.ndarray[Any, Any],
    wire_bytes: np.ndarray[Any, Any],
    payload_bytes: np.ndarray[Any, Any],
    st_tcp_flags: np.ndarray[Any, Any],
    history: np.ndarray[Any, Any],
    closure: np.ndarray[Any, Any],
    orig_mac: np.ndarray[Any, Any],
    resp_mac: np.ndarray[Any, Any],
    ht: np.ndarray[Any, Any],
    free: np.ndarray[Any, Any],
    io: np.ndarray[Any, Any],
    # outputs
    flow_id_out: np.ndarray[Any, Any],
    direction_out: np.ndarray[Any, Any],
    ended_slot: np.ndarray[Any, Any],
    ended_reason: np.ndarray[Any, Any],
) -> None:
    """Assign the packets of one batch to flows and update the flow state (see the module docstring)."""
    n = ip_version.shape[0]
    serial0 = params[P_SERIAL0]
    active = params[P_ACTIVE]
    nfree = io[IO_NFREE]
    next_id = io[IO_NEXT_ID]
    live = io[IO_LIVE]
    n_ended = 0
    min_deadline = io[IO_MIN_DEADLINE]
    for i in range(n):
        if ip_version[i] == 0 or is_fragment[i]:
            continue
        proto = _i64(ip_proto[i])
        sp = np.uint64(sport_in[i])
        dp = np.uint64(dport_in[i])
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            itype = _i64(icmp_type[i])
            cp = _i64(icmp6_cp[itype]) if proto == PROTO_ICMPV6 else _i64(icmp4_cp[itype])
            sp = np.uint64(itype)
            dp = np.uint64(cp) if cp >= 0 else np.uint64(icmp_code[i])
        s_hi = src64[i, 0]
        s_lo = src64[i, 1]
        d_hi = dst64[i, 0]
        d_lo = dst64[i, 1]
        swap = s_hi > d_hi or (s_hi == d_hi and (s_lo > d_lo or (s_lo == d_lo and sp > dp)))
        if swap:
            k0, k1, k2, k3 = d_hi, d_lo, s_hi, s_lo
            a_port, b_port = dp, sp
        else:
            k0, k1, k2, k3 = s_hi, s_lo, d_hi, d_lo
            a_port, b_port = sp, dp
        from_a = not swap
        k4 = (
            (a_port << np.uint64(48))
            | (b_port << np.uint64(32))
            | (np.uint64(proto) << np.uint64(24))
            | ((np.uint64(vlan_in[i]) & np.uint64(0xFFF)) << np.uint64(12))
            | (np.uint64(vlan_inner_in[i]) & np.uint64(0xFFF))
        )
        h = hash_key(k0, k1, k2, k3, k4) & hash_mask
        ts = ts_ns[i]
        is_tcp = proto == PROTO_TCP
        flags = _i64(tcp_flags_in[i]) if is_tcp else 0
        syn = (flags & TCP_SYN) != 0 and (flags & TCP_ACK) == 0
        idle = _idle_of(proto, params)

        cell = _find(ht, key, shash, h, k0, k1, k2, k3, k4)
        start = True
        if cell >= 0:
            s = ht[cell]
            cb = closure[s]
            closed = (cb & CB_RST) != 0 or (cb & (CB_FIN_A | CB_FIN_B)) == (CB_FIN_A | CB_FIN_B)
            if ts - last_pkt_ts[s] > idle:
                ended_slot[n_ended] = s
                ended_reason[n_ended] = REASON_IDLE
                n_ended += 1
            elif ts - first_ts[s] >= active or (syn and closed):
                ended_slot[n_ended] = s
                ended_reason[n_ended] = REASON_ACTIVE
                n_ended += 1
            else:
                start = False
        if start:
            nfree -= 1
            s = free[nfree]
            if cell >= 0:
                ht[cell] = s
            else:
                ht[-cell - 1] = s
                live += 1
            flip = (flags & TCP_SYN) != 0 and (flags & TCP_ACK) != 0
            key[s, 0] = k0
            key[s, 1] = k1
            key[s, 2] = k2
            key[s, 3] = k3
            key[s, 4] = k4
            shash[s] = h
            flow_id[s] = next_id
            next_id += 1
            st_ip_version[s] = ip_version[i]
            orig_is_a[s] = from_a != flip
            flipped[s] = flip
            first_ts[s] = ts
            last_ts[s] = ts
            first_serial[s] = serial0 + i
            for d in range(2):
                pkts[s, d] = 0
                ip_bytes[s, d] = 0
                wire_bytes[s, d] = 0
                payload_bytes[s, d] = 0
                st_tcp_flags[s, d] = 0
            for j in range(history.shape[1]):
                history[s, j] = HIST_NONE
            closure[s] = 0
            if flip:
                orig_mac[s] = eth_dst[i]
                resp_mac[s] = eth_src[i]
            else:
                orig_mac[s] = eth_src[i]
                resp_mac[s] = eth_dst[i]
        elif syn:
            closure[s] = 0

        d = 0 if from_a == orig_is_a[s] else 1
        flow_id_out[i] = flow_id[s]
        direction_out[i] = d
        payload = max(_i64(payload_len[i]), 0)
        pkts[s, d] += 1
        ip_bytes[s, d] += ip_total_len[i]
        wire_bytes[s, d] += origlen[i]
        payload_bytes[s, d] += payload
        if is_tcp:
            st_tcp_flags[s, d] |= flags
            fin = (flags & TCP_FIN) != 0
            rst = (flags & TCP_RST) != 0
            if fin:
                closure[s] |= CB_FIN_A if from_a else CB_FIN_B
            if rst:
                closure[s] |= CB_RST
            nbits = _i64((flags & TCP_SYN) != 0) + _i64(fin) + _i64(rst)
            if nbits > 1:
                letter = L_FINRST if fin and rst else L_MULTI
            elif flags & TCP_SYN:
                letter = L_SYNACK if flags & TCP_ACK else L_SYN
            elif fin:
                letter = L_FIN
            elif rst:
                letter = L_RST
            elif payload > 0:
                letter = L_DATA
            elif flags & TCP_ACK:
                letter = L_ACK
            else:
                letter = -1
        elif proto == PROTO_UDP and payload > 0:
            letter = L_DATA
        else:
            letter = -1
        if letter >= 0:
            rel = min(serial0 + i - first_serial[s], HIST_NONE - 1)
            col = d * 8 + letter
            if rel < history[s, col]:
                history[s, col] = rel
        if ts > last_ts[s]:
            last_ts[s] = ts
        last_pkt_ts[s] = ts
        deadline = min(ts + idle + 1, first_ts[s] + active)
        if deadline < min_deadline:
            min_deadline = deadline
    io[IO_NFREE] = nfree
    io[IO_NEXT_ID] = next_id
    io[IO_LIVE] = live
    io[IO_ENDED] = n_ended
    io[IO_MIN_DEADLINE] = min_deadline


# ------------------------------------------------------------------------------------------- L2-L4
#
# The common-case decoder of fieldward.decode.l2l4: Ethernet (up to two VLAN tags) carrying IPv4
# with TCP, UDP, ICMP or another transport, or ARP. A packet it does not fully handle -- another link
# type, IPv6, anything that would be a decode weird -- is marked ``slow`` and left to the vectorized
# numpy decoder, whose results are the reference (the tests compare the two).

# Rows of the column blocks filled by l2l4_fast, per dtype.
U64_ETH_SRC, U64_ETH_DST, U64_ARP_SHA, U64_ARP_THA = range(4)
U64_ROWS = 4
U32_IP_TOTAL_LEN, U32_IP_ID, U32_FRAG_OFFSET, U32_TCP_SEQ, U32_TCP_ACK, U32_ARP_SPA, U32_ARP_TPA = range(7)
U32_ROWS = 7
(
    U16_ETHERTYPE,
    U16_VLAN,
    U16_VLAN_INNER,
    U16_ARP_OP,
    U16_IP_HEADER_LEN,
    U16_SPORT,
    U16_DPORT,
    U16_TCP_FLAGS,
    U16_TCP_WINDOW,
    U16_TCP_MSS,
) = range(10)
U16_ROWS = 10
(
    U8_IP_VERSION,
    U8_IP_PROTO,
    U8_TTL,
    U8_IP_DSCP,
    U8_IPV6_EXT_HEADERS,
    U8_TCP_HEADER_LEN,
    U8_TCP_WSCALE,
    U8_ICMP_TYPE,
    U8_ICMP_CODE,
) = range(9)
U8_ROWS = 9
B_IP_OPTIONS, B_IS_FRAGMENT, B_MORE_FRAGMENTS, B_TCP_SACK_PERMITTED, B_TCP_HAS_TIMESTAMPS = range(5)
B_ROWS = 5
I32_L3_OFFSET, I32_L4_OFFSET, I32_PAYLOAD_OFFSET, I32_PAYLOAD_LEN = range(4)
I32_ROWS = 4

_LINKTYPE_ETHERNET = 1
_ETH_IPV4 = 0x0800
_ETH_ARP = 0x0806
_ETH_IPV6 = 0x86DD
_ETH_VLAN = 0x8100
_ETH_QINQ = 0x88A8
_ETH_QINQ_OLD = 0x9100
_INT32_MAX = 2**31 - 1


@_kernel
def _be16(buf: np.ndarray[Any, Any], p: int) -> int:
    return (_i64(buf[p]) << 8) | _i64(buf[p + 1])


@_kernel
def _be32(buf: np.ndarray[Any, Any], p: int) -> int:
    return (_be16(buf, p) << 16) | _be16(buf, p + 2)


@_kernel
def _mac(buf: np.ndarray[Any, Any], p: int) -> np.uint64:
    return np.uint64((_be16(buf, p) << 32) | _be32(buf, p + 2))


@_kernel
def _tcp_options_fast(buf: np.ndarray[Any, Any], area: int, size: int, res: np.ndarray[Any, Any]) -> bool:
    """Walk a TCP option area of ``size`` bytes at ``area`` like l2l4._tcp_options: fills
    ``res`` = (mss, wscale, sack_permitted, timestamps); False on a bad option length."""
    res[0] = 0
    res[1] = 0xFF
    res[2] = 0
    res[3] = 0
    if size == 12 and _be32(buf, area) == 0x0101080A:
        res[3] = 1
        return True
    cur = 0
    for _ in range(40):
        kind = _i64(buf[area + cur]) if cur < size else 0
        if kind <= 1:
            length = 1
        else:
            length = _i64(buf[area + cur + 1]) if cur + 1 < size else 0
            fixed = 0
            if kind == 2:
                fixed = 4
            elif kind == 3:
                fixed = 3
            elif kind == 4:
                fixed = 2
            elif kind == 8:
                fixed = 10
            if length < 2 or cur + length > size or (fixed != 0 and length != fixed):
                return False
            if kind == 2:
                res[0] = _be16(buf, area + cur + 2)
            elif kind == 3:
                res[1] = buf[area + cur + 2]
            elif kind == 4:
                res[2] = 1
            elif kind == 8:
                res[3] = 1
        nxt = cur + length
        if kind == 0 or nxt >= size:
            break
        cur = nxt
    return True


@_kernel
def l2l4_fast(
    buf: np.ndarray[Any, Any],
    offsets: np.ndarray[Any, Any],
    caplen: np.ndarray[Any, Any],
    origlen: np.ndarray[Any, Any],
    linktype: np.ndarray[Any, Any],
    c64: np.ndarray[Any, Any],
    c32: np.ndarray[Any, Any],
    c16: np.ndarray[Any, Any],
    c8: np.ndarray[Any, Any],
    cb: np.ndarray[Any, Any],
    ci: np.ndarray[Any, Any],
    src_ip: np.ndarray[Any, Any],
    dst_ip: np.ndarray[Any, Any],
    slow: np.ndarray[Any, Any],
) -> int:
    """Decode the common packets of a batch into the column blocks; returns how many are ``slow``."""
    n = offsets.shape[0]
    size = buf.shape[0]
    opt = np.zeros(4, dtype=np.int64)
    n_slow = 0
    for i in range(n):
        if i + PREFETCH_PACKETS < n:
            ahead = offsets[i + PREFETCH_PACKETS]
            if 0 <= ahead < size - 64:
                _prefetch(buf, ahead)
                _prefetch(buf, ahead + 63)
        off = _i64(offsets[i])
        cap = _i64(caplen[i])
        orig = _i64(origlen[i])
        if (
            linktype[i] != _LINKTYPE_ETHERNET
            or cap < 14
            or off < 0
            or off + cap > size
            or cap > _INT32_MAX
            or orig > _INT32_MAX
        ):
            slow[i] = True
            n_slow += 1
            continue
        etype = _be16(buf, off + 12)
        l3 = 14
        vlan = 0
        vlan_inner = 0
        depth = 0
        ok = True
        while etype in (_ETH_VLAN, _ETH_QINQ, _ETH_QINQ_OLD):
            if depth == 2 or cap - l3 < 4:
                ok = False
                break
            tci = _be16(buf, off + l3) & 0xFFF
            if depth == 0:
                vlan = tci
            else:
                vlan_inner = tci
            etype = _be16(buf, off + l3 + 2)
            l3 += 4
            depth += 1
        if not ok or etype == _ETH_IPV6:
            slow[i] = True
            n_slow += 1
            continue
        avail = cap - l3
        p = off + l3
        # defaults: a packet without the layer
        arp_op = 0
        arp_sha = np.uint64(0)
        arp_tha = np.uint64(0)
        arp_spa = 0
        arp_tpa = 0
        ip_version = 0
        proto = 0
        ttl = 0
        dscp = 0
        total = 0
        hlen = 0
        ip_id = 0
        frag_off = 0
        is_frag = False
        more = False
        l4 = -1
        ip_end = 0
        wire_end = 0
        if etype == _ETH_IPV4:
            if avail < 20 or (buf[p] >> 4) != 4:
                slow[i] = True
                n_slow += 1
                continue
            hlen = (_i64(buf[p]) & 0xF) * 4
            total = _be16(buf, p + 2)
            if hlen < 20 or hlen > avail or total < hlen or total > orig - l3:
                slow[i] = True
                n_slow += 1
                continue
            ip_version = 4
            dscp = _i64(buf[p + 1]) >> 2
            ip_id = _be16(buf, p + 4)
            frag = _be16(buf, p + 6)
            frag_off = (frag & 0x1FFF) << 3
            more = (frag & 0x2000) != 0
            is_frag = more or frag_off != 0
            ttl = _i64(buf[p + 8])
            proto = _i64(buf[p + 9])
            wire_end = l3 + total
            ip_end = min(wire_end, cap)
            if frag_off == 0:
                l4 = l3 + hlen
        elif etype == _ETH_ARP:
            if avail < 8:
                slow[i] = True
                n_slow += 1
                continue
            eth4 = _be16(buf, p + 2) == _ETH_IPV4 and buf[p + 4] == 6 and buf[p + 5] == 4
            if eth4 and avail < 28:
                slow[i] = True
                n_slow += 1
                continue
            arp_op = _be16(buf, p + 6)
            if eth4:
                arp_sha = _mac(buf, p + 8)
                arp_spa = _be32(buf, p + 14)
                arp_tha = _mac(buf, p + 18)
                arp_tpa = _be32(buf, p + 24)

        sport = 0
        dport = 0
        tflags = 0
        seq = 0
        ack = 0
        window = 0
        thlen = 0
        icmp_type = 0
        icmp_code = 0
        l4_offset = -1
        payload_offset = -1
        payload_len = 0
        opt[0] = 0
        opt[1] = 0xFF
        opt[2] = 0
        opt[3] = 0
        if l4 >= 0:
            a4 = cap - l4
            room = wire_end - l4
            end = ip_end
            q = off + l4
            if a4 > 0:
                l4_offset = l4
            start = 8
            payload_ok = True
            if proto == PROTO_TCP:
                if a4 < 20:
                    slow[i] = True
                    n_slow += 1
                    continue
                thlen = (_i64(buf[q + 12]) >> 4) * 4
                if thlen < 20 or thlen > min(a4, room):
                    slow[i] = True
                    n_slow += 1
                    continue
                if thlen > 20 and not _tcp_options_fast(buf, q + 20, thlen - 20, opt):
                    slow[i] = True
                    n_slow += 1
                    continue
                sport = _be16(buf, q)
                dport = _be16(buf, q + 2)
                seq = _be32(buf, q + 4)
                ack = _be32(buf, q + 8)
                tflags = _be16(buf, q + 12) & 0x1FF
                window = _be16(buf, q + 14)
                start = thlen
            elif proto == PROTO_UDP:
                if a4 < 8:
                    slow[i] = True
                    n_slow += 1
                    continue
                ulen = _be16(buf, q + 4)
                if ulen < 8 or (ulen > room and not is_frag):
                    slow[i] = True
                    n_slow += 1
                    continue
                sport = _be16(buf, q)
                dport = _be16(buf, q + 2)
                end = min(end, l4 + ulen)
            elif proto in (PROTO_ICMP, PROTO_ICMPV6):
                if a4 < 8:
                    slow[i] = True
                    n_slow += 1
                    continue
                icmp_type = _i64(buf[q])
                icmp_code = _i64(buf[q + 1])
            else:
                start = 0
                payload_ok = a4 > 0
            first = l4 + start
            length = end - first
            if payload_ok and length > 0:
                payload_offset = first
                payload_len = length

        slow[i] = False
        c64[U64_ETH_DST, i] = _mac(buf, off)
        c64[U64_ETH_SRC, i] = _mac(buf, off + 6)
        c64[U64_ARP_SHA, i] = arp_sha
        c64[U64_ARP_THA, i] = arp_tha
        c32[U32_IP_TOTAL_LEN, i] = total
        c32[U32_IP_ID, i] = ip_id
        c32[U32_FRAG_OFFSET, i] = frag_off
        c32[U32_TCP_SEQ, i] = seq
        c32[U32_TCP_ACK, i] = ack
        c32[U32_ARP_SPA, i] = arp_spa
        c32[U32_ARP_TPA, i] = arp_tpa
        c16[U16_ETHERTYPE, i] = etype
        c16[U16_VLAN, i] = vlan
        c16[U16_VLAN_INNER, i] = vlan_inner
        c16[U16_ARP_OP, i] = arp_op
        c16[U16_IP_HEADER_LEN, i] = hlen
        c16[U16_SPORT, i] = sport
        c16[U16_DPORT, i] = dport
        c16[U16_TCP_FLAGS, i] = tflags
        c16[U16_TCP_WINDOW, i] = window
        c16[U16_TCP_MSS, i] = opt[0]
        c8[U8_IP_VERSION, i] = ip_version
        c8[U8_IP_PROTO, i] = proto
        c8[U8_TTL, i] = ttl
        c8[U8_IP_DSCP, i] = dscp
        c8[U8_IPV6_EXT_HEADERS, i] = 0
        c8[U8_TCP_HEADER_LEN, i] = thlen
        c8[U8_TCP_WSCALE, i] = opt[1]
        c8[U8_ICMP_TYPE, i] = icmp_type
        c8[U8_ICMP_CODE, i] = icmp_code
        cb[B_IP_OPTIONS, i] = hlen > 20
        cb[B_IS_FRAGMENT, i] = is_frag
        cb[B_MORE_FRAGMENTS, i] = more
        cb[B_TCP_SACK_PERMITTED, i] = opt[2] != 0
        cb[B_TCP_HAS_TIMESTAMPS, i] = opt[3] != 0
        ci[I32_L3_OFFSET, i] = l3 if l3 < cap else -1
        ci[I32_L4_OFFSET, i] = l4_offset
        ci[I32_PAYLOAD_OFFSET, i] = payload_offset
        ci[I32_PAYLOAD_LEN, i] = payload_len
        for j in range(16):
            src_ip[i, j] = 0
            dst_ip[i, j] = 0
        if ip_version == 4:
            src_ip[i, 10] = 0xFF
            src_ip[i, 11] = 0xFF
            dst_ip[i, 10] = 0xFF
            dst_ip[i, 11] = 0xFF
            for j in range(4):
                src_ip[i, 12 + j] = buf[p + 12 + j]
                dst_ip[i, 12 + j] = buf[p + 16 + j]
    return n_slow
