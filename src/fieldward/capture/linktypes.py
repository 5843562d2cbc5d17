"""Link-layer header types (tcpdump.org LINKTYPE_* values) that FieldWard decodes."""

from __future__ import annotations

NULL = 0  # BSD loopback: 4-byte address family in host byte order
ETHERNET = 1
RAW = 101  # raw IPv4 or IPv6, version from the first nibble
RAW_OPENBSD = 12  # DLT_RAW as some systems write it into pcap headers
RAW_BSD = 14
LOOP = 108  # OpenBSD loopback: 4-byte address family in network byte order
LINUX_SLL = 113
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276

SUPPORTED: dict[int, str] = {
    NULL: "NULL",
    ETHERNET: "EN10MB",
    RAW: "RAW",
    RAW_OPENBSD: "RAW",
    RAW_BSD: "RAW",
    LOOP: "LOOP",
    LINUX_SLL: "LINUX_SLL",
    IPV4: "IPV4",
    IPV6: "IPV6",
    LINUX_SLL2: "LINUX_SLL2",
}


def name(linktype: int) -> str:
    return SUPPORTED.get(linktype, f"LINKTYPE_{linktype}")
