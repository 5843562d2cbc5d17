"""DecodedBatch: the L2-L4 header fields of a PacketBatch, one numpy column per field.

Produced by :func:`fieldward.decode.decode_batch`; consumed by the flow table, the protocol
dissectors and the summary. Offsets are relative to the start of each packet (add
``PacketBatch.offsets`` to index the batch buffer). A field a packet does not have is 0 (offsets: -1).

IP addresses are 16-byte rows: IPv6 as is, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``), so one
column serves both families and ``addr.view(np.uint64)`` gives two 64-bit words per address.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Bool = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]

# EtherTypes (IEEE registry) used by the decoder.
ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_QINQ_OLD = 0x9100

# IP protocol numbers (IANA).
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

# TCP flag bits as in the header (RFC 9293, RFC 3168): FIN=0x01 ... CWR=0x80, NS(AE)=0x100.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80
TCP_NS = 0x100


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Decoded L2-L4 columns for the ``n`` packets of one PacketBatch (same order)."""

    n: int
    # --- layer 2 ---
    eth_src: U64
    """Source MAC as a 48-bit integer (0 when the link type has none)."""
    eth_dst: U64
    ethertype: U16
    """EtherType after any VLAN tags (for SLL/NULL/RAW: the equivalent protocol type)."""
    vlan: U16
    """Outer VLAN id (802.1Q or 802.1ad S-tag); 0 when untagged."""
    vlan_inner: U16
    """Inner VLAN id of a QinQ (802.1ad) frame; 0 otherwise."""
    # --- ARP (RFC 826), Ethernet/IPv4 only ---
    arp_op: U16
    arp_sha: U64
    arp_spa: U32
    arp_tha: U64
    arp_tpa: U32
    # --- layer 3 ---
    l3_offset: I32
    ip_version: U8
    """4, 6, or 0 when the packet carries no (decodable) IP header."""
    src_ip: U8
    """shape (n, 16); see module docstring."""
    dst_ip: U8
    ip_proto: U8
    """Transport protocol: IPv4 protocol, or IPv6 next header after extension headers."""
    ttl: U8
    """IPv4 TTL or IPv6 hop limit."""
    ip_total_len: U32
    """Bytes of the IP packet per its header (IPv4 total length; IPv6 40 + payload length)."""
    ip_header_len: U16
    """IPv4 header length including options; IPv6 40 plus extension headers."""
    ip_id: U32
    """IPv4 identification, or IPv6 fragment header identification."""
    ip_dscp: U8
    ip_options: Bool
    """IPv4 header carries options (IHL > 5)."""
    ipv6_ext_headers: U8
    """Number of IPv6 extension headers walked."""
    is_fragment: Bool
    """IP fragment: MF set or non-zero offset (IPv4), or an IPv6 fragment header."""
    more_fragments: Bool
    frag_offset: U32
    """Fragment offset in bytes."""
    # --- layer 4 ---
    l4_offset: I32
    sport: U16
    dport: U16
    tcp_flags: U16
    tcp_seq: U32
    tcp_ack: U32
    tcp_window: U16
    tcp_header_len: U8
    tcp_mss: U16
    """MSS option value (0 if absent); options are parsed on packets that carry them."""
    tcp_wscale: U8
    """Window scale shift (0xFF if absent)."""
    tcp_sack_permitted: Bool
    tcp_has_timestamps: Bool
    icmp_type: U8
    icmp_code: U8
    payload_offset: I32
    """Start of the L4 payload (TCP/UDP data, ICMP body); -1 when there is none."""
    payload_len: I32
    """Captured L4 payload bytes, trimmed to the IP length so Ethernet padding is not payload."""
    # --- bookkeeping ---
    weird: U8
    """0, or the code (index into DECODE_WEIRD_NAMES) of the first problem this packet had."""


DECODE_WEIRD_NAMES: tuple[str, ...] = (
    "",
    "truncated_l2",
    "unknown_linktype",
    "truncated_vlan",
    "truncated_arp",
    "truncated_ipv4",
    "ipv4_bad_version",
    "ipv4_bad_header_length",
    "ipv4_total_length_too_small",
    "ipv4_truncated_payload",
    "truncated_ipv6",
    "ipv6_bad_version",
    "ipv6_truncated_extension_header",
    "ipv6_too_many_extension_headers",
    "truncated_tcp",
    "tcp_bad_header_length",
    "truncated_udp",
    "udp_bad_length",
    "truncated_icmp",
    "tcp_bad_option",
    "raw_ip_bad_version",
    "ipv4_total_length_zero",
    "ipv6_truncated_payload",
    "vlan_too_many_tags",
)
"""Names of decode weirds, indexed by ``DecodedBatch.weird`` codes. Append only."""

DECODE_WEIRD_CODES: dict[str, int] = {name: code for code, name in enumerate(DECODE_WEIRD_NAMES)}
