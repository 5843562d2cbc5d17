"""Community ID v1 flow hashing (https://github.com/corelight/community-id-spec).

The Community ID is a string ``"1:" + base64(sha1(...))`` that names a bidirectional flow the same way
in Zeek, Suricata, Wireshark, Elastic and FieldWard, so records from different tools can be joined.

The hashed bytes are, in network byte order: the 2-byte seed, the source address (4 bytes for IPv4,
16 for IPv6), the destination address, the 1-byte IP protocol, one zero byte of padding and, for the
port-carrying protocols (ICMP, TCP, UDP, ICMPv6, SCTP), the 2-byte source and destination ports. The
endpoints are first ordered so that the smaller ``(address, port)`` pair comes first, which makes both
directions of a flow hash alike.

ICMP and ICMPv6 have no ports: as in Zeek, the message type is the source "port" and, for the types
that have a reply counterpart (echo request / echo reply, ...), the counterpart type is the destination
"port", so a request and its reply get one ID. Other types are one-way: the destination "port" is the
message code and the endpoints are not reordered.

:func:`community_id` computes one ID; :func:`community_ids` computes one per flow over columns (one
``hashlib`` call per flow, never per packet).
"""

from __future__ import annotations

import base64
import hashlib
import struct

import numpy as np
import numpy.typing as npt

from fieldward.decode.columns import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

PROTO_SCTP = 132
"""SCTP's IP protocol number (IANA); its ports take part in the ID like TCP's and UDP's."""

PORT_PROTOCOLS: frozenset[int] = frozenset({PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6, PROTO_SCTP})
"""IP protocols whose (real or ICMP-derived) ports are part of the hashed tuple."""

ICMP4_COUNTERPART: dict[int, int] = {
    8: 0,  # echo request -> echo reply
    0: 8,
    13: 14,  # timestamp request -> reply
    14: 13,
    15: 16,  # information request -> reply
    16: 15,
    10: 9,  # router solicitation -> router advertisement
    9: 10,
    17: 18,  # address mask request -> reply
    18: 17,
}
"""ICMPv4 message types that have a reply counterpart (pycommunityid's table, after Zeek's)."""

ICMP6_COUNTERPART: dict[int, int] = {
    128: 129,  # echo request -> echo reply
    129: 128,
    130: 131,  # multicast listener query -> report
    131: 130,
    133: 134,  # router solicitation -> advertisement
    134: 133,
    135: 136,  # neighbor solicitation -> advertisement
    136: 135,
    139: 140,  # node information query -> response ("who are you")
    140: 139,
    144: 145,  # home agent address discovery request -> reply
    145: 144,
}
"""ICMPv6 message types that have a reply counterpart."""

VERSION_PREFIX = "1:"


def _counterpart_table(mapping: dict[int, int]) -> npt.NDArray[np.int16]:
    table = np.full(256, -1, dtype=np.int16)
    for key, value in mapping.items():
        table[key] = value
    table.setflags(write=False)
    return table


ICMP4_COUNTERPART_TABLE: npt.NDArray[np.int16] = _counterpart_table(ICMP4_COUNTERPART)
"""``ICMP4_COUNTERPART`` as a 256-entry lookup array (-1: one-way type), for vectorized use."""
ICMP6_COUNTERPART_TABLE: npt.NDArray[np.int16] = _counterpart_table(ICMP6_COUNTERPART)
"""``ICMP6_COUNTERPART`` as a 256-entry lookup array (-1: one-way type)."""


def icmp_port_equivalents(proto: int, icmp_type: int, icmp_code: int) -> tuple[int, int, bool]:
    """Map an ICMP(v6) type and code to ``(source port, destination port, is_one_way)``."""
    mapping = ICMP6_COUNTERPART if proto == PROTO_ICMPV6 else ICMP4_COUNTERPART
    counterpart = mapping.get(icmp_type)
    if counterpart is None:
        return icmp_type, icmp_code, True
    return icmp_type, counterpart, False


def _check_address(name: str, address: bytes) -> None:
    if len(address) not in (4, 16):
        raise ValueError(f"{name} must be 4 (IPv4) or 16 (IPv6) bytes, not {len(address)}")


def community_id(
    src_ip: bytes,
    dst_ip: bytes,
    proto: int,
    sport: int,
    dport: int,
    seed: int = 0,
) -> str:
    """The Community ID v1 of a flow seen from ``src_ip:sport`` to ``dst_ip:dport``.

    Addresses are packed network-order bytes (4 for IPv4, 16 for IPv6; both the same family). For
    ICMP (``proto`` 1) and ICMPv6 (58), ``sport`` is the message type and ``dport`` the code. Ports
    are ignored for protocols outside :data:`PORT_PROTOCOLS`.
    """
    _check_address("src_ip", src_ip)
    _check_address("dst_ip", dst_ip)
    if len(src_ip) != len(dst_ip):
        raise ValueError("src_ip and dst_ip must be of the same address family")
    if not 0 <= proto <= 255:
        raise ValueError(f"IP protocol out of range: {proto}")
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError(f"ports out of range: {sport}, {dport}")
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"seed must fit 16 bits: {seed}")

    has_ports = proto in PORT_PROTOCOLS
    one_way = False
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        sport, dport, one_way = icmp_port_equivalents(proto, sport, dport)
    if not has_ports:
        sport = dport = 0
    if not one_way and (src_ip, sport) > (dst_ip, dport):
        src_ip, dst_ip, sport, dport = dst_ip, src_ip, dport, sport

    data = struct.pack("!H", seed) + src_ip + dst_ip + struct.pack("!BB", proto, 0)
    if has_ports:
        data += struct.pack("!HH", sport, dport)
    digest = hashlib.sha1(data, usedforsecurity=False).digest()
    return VERSION_PREFIX + base64.b64encode(digest).decode("ascii")


def community_ids(
    src_ip: npt.NDArray[np.uint8],
    dst_ip: npt.NDArray[np.uint8],
    ip_version: npt.NDArray[np.uint8],
    proto: npt.NDArray[np.uint8],
    sport: npt.NDArray[np.uint16],
    dport: npt.NDArray[np.uint16],
    seed: int = 0,
) -> list[str]:
    """Community IDs of many flows given as columns (one ID per row).

    ``src_ip``/``dst_ip`` are ``(n, 16)`` address rows as in :class:`~fieldward.decode.DecodedBatch`
    (IPv4 as ``::ffff:a.b.c.d``; rows with ``ip_version`` 4 hash their last 4 bytes). ``sport`` and
    ``dport`` are ports, or ICMP type and code (or the type's counterpart, which maps to the same ID).
    """
    n = int(proto.shape[0])
    src = np.ascontiguousarray(src_ip, dtype=np.uint8).reshape(n, 16)
    dst = np.ascontiguousarray(dst_ip, dtype=np.uint8).reshape(n, 16)
    src_rows = src.tobytes()
    dst_rows = dst.tobytes()
    versions = ip_version.tolist()
    protos = proto.tolist()
    sports = sport.tolist()
    dports = dport.tolist()
    out: list[str] = []
    for i in range(n):
        start = 16 * i + (12 if versions[i] == 4 else 0)
        end = 16 * i + 16
        out.append(
            community_id(src_rows[start:end], dst_rows[start:end], protos[i], sports[i], dports[i], seed)
        )
    return out
