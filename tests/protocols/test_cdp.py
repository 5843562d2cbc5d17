"""CDP dissector: scapy-built advertisements cross-checked with tshark, malformed TLVs, fuzzing.

The corpus has no CDP capture, so advertisements are built with ``scapy.contrib.cdp`` over 802.3 +
LLC/SNAP (plain, VLAN-tagged, CDPv1 with an odd length that exercises Cisco's checksum rule, a bad
checksum) and every event field is compared with tshark's dissection of the same capture (``cdp.*``,
including ``cdp.checksum.status`` for ``checksum_ok``).
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.cdp import (
    CDPAddrRecordIPv4,
    CDPAddrRecordIPv6,
    CDPMsgAddr,
    CDPMsgCapabilities,
    CDPMsgDeviceID,
    CDPMsgDuplex,
    CDPMsgGeneric,
    CDPMsgMgmtAddr,
    CDPMsgNativeVLAN,
    CDPMsgPlatform,
    CDPMsgPortID,
    CDPMsgSoftwareVersion,
    CDPMsgVoIPVLANReply,
    CDPMsgVTPMgmtDomain,
    CDPv2_HDR,
)
from scapy.layers.l2 import LLC, SNAP, Dot1Q, Dot3, Ether
from scapy.packet import Packet, Raw

from fieldward.protocols.cdp import CAPABILITY_NAMES, CdpDissector, CdpEvent, checksum_ok
from tests.protocols.test_l2_engine import (
    analyze_frames,
    link_ctx,
    read_events,
    run_frames,
    tshark_epoch_ns,
    tshark_fields,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "cdp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "cdp.py"
CDP_MULTICAST = "01:00:0c:cc:cc:cc"
MAC_A, MAC_B = "00:1b:54:aa:bb:01", "00:1b:54:aa:bb:02"
LLC_SNAP = bytes.fromhex("aaaa0300000c2000")


def cdp_frame(pdu: bytes, src: str = MAC_A, vlan: int | None = None) -> Packet:
    """802.3 frame (length field) with LLC/SNAP 00-00-0C/0x2000, optionally behind an 802.1Q tag."""
    body = LLC_SNAP + pdu
    if vlan is None:
        return Dot3(src=src, dst=CDP_MULTICAST, len=len(body)) / Raw(body)
    return Ether(src=src, dst=CDP_MULTICAST) / Dot1Q(vlan=vlan, type=len(body)) / Raw(body)


def full_pdu() -> bytes:
    return bytes(
        CDPv2_HDR(
            vers=2,
            ttl=180,
            msg=[
                CDPMsgDeviceID(val=b"sw-core-1.plant.example"),
                CDPMsgAddr(addr=[CDPAddrRecordIPv4(addr="10.1.1.1"), CDPAddrRecordIPv6(addr="2001:db8::5")]),
                CDPMsgPortID(iface=b"GigabitEthernet1/0/24"),
                CDPMsgCapabilities(cap=0x29),
                CDPMsgSoftwareVersion(
                    val=b"Cisco IOS Software, C2960 Software (C2960-LANBASEK9-M), Version 15.0(2)SE11\n"
                    b"Technical Support: http://www.cisco.com/techsupport"
                ),
                CDPMsgPlatform(val=b"cisco WS-C2960-24TT-L"),
                CDPMsgVTPMgmtDomain(val=b"plant"),
                CDPMsgNativeVLAN(vlan=10),
                CDPMsgDuplex(duplex=1),
                CDPMsgVoIPVLANReply(vlan=20),
                CDPMsgGeneric(type=0x0014, val=b"sw-core-1"),
                CDPMsgGeneric(type=0x0011, val=b"\x00\x00\x05\xdc"),  # MTU: counted only
                CDPMsgMgmtAddr(addr=[CDPAddrRecordIPv4(addr="10.1.1.2")]),
            ],
        )
    )


def v1_odd_pdu() -> bytes:
    """CDPv1 with an odd length whose last byte has its top bit set: Cisco's odd-length checksum rule."""
    pdu = bytes(
        CDPv2_HDR(
            vers=1,
            ttl=60,
            msg=[
                CDPMsgDeviceID(val=b"router-7"),
                CDPMsgCapabilities(cap=0x01),
                CDPMsgGeneric(type=0x17, val=b"\x85"),
            ],
        )
    )
    assert len(pdu) % 2 == 1
    assert pdu[-1] & 0x80
    return pdu


def bad_checksum_pdu() -> bytes:
    pdu = bytearray(bytes(CDPv2_HDR(msg=[CDPMsgDeviceID(val=b"phone"), CDPMsgDuplex(duplex=0)])))
    pdu[2] ^= 0x5A
    return bytes(pdu)


def built_frames() -> list[Packet]:
    return [
        cdp_frame(full_pdu()),
        cdp_frame(v1_odd_pdu(), src=MAC_B, vlan=30),
        cdp_frame(bad_checksum_pdu()),
    ]


TSHARK_FIELDS = [
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "vlan.id",
    "cdp.version",
    "cdp.ttl",
    "cdp.checksum",
    "cdp.checksum.status",
    "cdp.deviceid",
    "cdp.nrgyz.ip_address",
    "cdp.nrgyz.ipv6_address",
    "cdp.portid",
    "cdp.capabilities",
    "cdp.software_version",
    "cdp.platform",
    "cdp.vtp_management_domain",
    "cdp.native_vlan",
    "cdp.duplex",
    "cdp.voice_vlan",
    "cdp.system_name",
    "cdp.tlv.type",
]
DECODED_TLVS = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x09, 0x0A, 0x0B, 0x0E, 0x14, 0x16}


def caps(value: str) -> list[str]:
    bits = int(value, 16) if value else 0
    return [name for i, name in enumerate(CAPABILITY_NAMES) if bits >> i & 1]


def expected_from_tshark(row: list[str]) -> dict[str, Any]:
    (ts, src, dst, vlan, version, ttl, checksum, status, device, v4, v6, port, cap, software) = row[:14]
    (platform, vtp, native, duplex, voice, name, types) = row[14:]
    duplex_value = None if duplex == "" else ("full" if duplex in ("1", "True") else "half")
    return {
        "ts": tshark_epoch_ns(ts),
        "orig_h": src,
        "resp_h": dst,
        "vlan": int(vlan or 0),
        "version": int(version),
        "ttl": int(ttl),
        "checksum": int(checksum, 16),
        "checksum_ok": status == "1",  # Wireshark's PROTO_CHECKSUM_E_GOOD
        "device_id": device or None,
        "all_addresses": [a for a in v4.split("|") + v6.split("|") if a],
        "port_id": port or None,
        "capabilities": caps(cap),
        "software_version": software.replace("|", "\n") if software else None,
        "platform": platform or None,
        "vtp_management_domain": vtp or None,
        "native_vlan": int(native) if native else None,
        "duplex": duplex_value,
        "voice_vlan": int(voice) if voice else None,
        "system_name": name or None,
        "other_tlvs": sum(1 for t in types.split("|") if int(t, 0) not in DECODED_TLVS),
    }


def test_built_advertisements_match_tshark(tshark: str, tmp_path: Path) -> None:
    capture, result, out = analyze_frames(tmp_path, built_frames())
    events = read_events(out, "cdp")
    rows = tshark_fields(tshark, capture, TSHARK_FIELDS, "cdp", aggregator="|")
    assert len(rows) == len(events) == 3
    for event, row in zip(events, rows, strict=True):
        expected = expected_from_tshark(row)
        actual = {key: event[key] for key in expected if key != "all_addresses"}
        actual["ts"] = event["ts"]
        all_v4_then_v6 = sorted(event["addresses"] + event["management_addresses"], key=lambda a: ":" in a)
        actual["all_addresses"] = all_v4_then_v6
        assert actual == expected
        assert (event["flow_id"], event["orig_p"], event["resp_p"], event["is_orig"]) == (-1, 0, 0, True)
    # Values the frames were built with, independent of either dissector.
    assert events[0]["addresses"] == ["10.1.1.1", "2001:db8::5"]
    assert events[0]["management_addresses"] == ["10.1.1.2"]
    assert [e["checksum_ok"] for e in events] == [True, True, False]
    assert result.weird.counts == {"cdp_bad_checksum": 1}


def test_only_the_cdp_snap_id_is_taken() -> None:
    pdu = full_pdu()
    other_pid = (
        Dot3(src=MAC_A, dst=CDP_MULTICAST) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0xC, code=0x2004)
    )
    frames = [
        other_pid / Raw(pdu),  # DTP-like: another Cisco protocol id
        Dot3(src=MAC_A, dst=CDP_MULTICAST) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(pdu),  # not SNAP
        Ether(src=MAC_A, dst=CDP_MULTICAST, type=0x88B5) / Raw(LLC_SNAP + pdu),  # Ethernet II, not 802.3
        cdp_frame(pdu),
    ]
    events, _, _ = run_frames(frames, [CdpDissector])
    assert [type(e).__name__ for e in events] == ["CdpEvent"]


def test_checksum_rule_for_odd_lengths() -> None:
    """RFC 1071 with Cisco's odd-length twist, checked against a hand computation of one case."""
    pdu = v1_odd_pdu()
    assert checksum_ok(pdu)
    # The RFC 1071 reading (pad with a zero byte) gives another checksum for the same bytes.
    words = struct.unpack(f">{(len(pdu) + 1) // 2}H", pdu + b"\x00")
    total = sum(words[:1]) + sum(words[2:])  # checksum field excluded
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    rfc1071 = ~total & 0xFFFF
    patched = pdu[:2] + struct.pack(">H", rfc1071) + pdu[4:]
    assert not checksum_ok(patched)


# ------------------------------------------------------------------------------------- malformed


def parse(pdu: bytes) -> tuple[list[CdpEvent], list[str]]:
    ctx, out = link_ctx("cdp")
    CdpDissector(ctx.flow).parse(pdu, ctx)
    return [e for e in out.events if isinstance(e, CdpEvent)], out.weird_names


def test_malformed_input_is_weird() -> None:
    good = full_pdu()
    tlv = struct.pack(">HH", 1, 8) + b"abcd"
    header = good[:4]
    cases: dict[str, tuple[bytes, str, int]] = {
        "short header": (good[:3], "cdp_truncated_header", 0),
        "version 3": (b"\x03" + good[1:], "cdp_bad_version", 0),
        "tlv header cut": (header + tlv + b"\x00\x01", "cdp_truncated_tlv", 1),
        "tlv length 3": (header + struct.pack(">HH", 1, 3) + b"x", "cdp_truncated_tlv", 1),
        "tlv past end": (header + struct.pack(">HH", 1, 40) + b"x", "cdp_truncated_tlv", 1),
        "native vlan 3 bytes": (
            header + struct.pack(">HH", 0x0A, 7) + b"\x00\x01\x02",
            "cdp_bad_tlv_length",
            1,
        ),
        "capabilities 2 bytes": (header + struct.pack(">HH", 0x04, 6) + b"\x00\x01", "cdp_bad_tlv_length", 1),
        "duplex 2 bytes": (header + struct.pack(">HH", 0x0B, 6) + b"\x00\x01", "cdp_bad_tlv_length", 1),
        "voice vlan 1 byte": (header + struct.pack(">HH", 0x0E, 5) + b"\x01", "cdp_bad_tlv_length", 1),
        "address count only": (header + struct.pack(">HH", 0x02, 6) + b"\x00\x01", "cdp_bad_address", 1),
        "address record cut": (
            header + struct.pack(">HHI", 0x02, 12, 2) + b"\x01\x01\xcc\x00",
            "cdp_bad_address",
            1,
        ),
        "address value cut": (
            header + struct.pack(">HHI", 0x02, 15, 1) + b"\x01\x01\xcc\x00\x04\x0a\x00",
            "cdp_bad_address",
            1,
        ),
    }
    for label, (pdu, weird, count) in cases.items():
        events, names = parse(pdu)
        assert weird in names, label
        assert len(events) == count, label
        assert set(names) <= {weird, "cdp_bad_checksum"}, label


def test_truncated_advertisement_keeps_what_was_read() -> None:
    pdu = full_pdu()
    cut = pdu[: pdu.index(b"GigabitEthernet") + 4]  # inside the Port ID TLV
    events, names = parse(cut)
    assert "cdp_truncated_tlv" in names
    (event,) = events
    assert (event.device_id, event.addresses, event.port_id) == (
        "sw-core-1.plant.example",
        ["10.1.1.1", "2001:db8::5"],
        None,
    )


# ------------------------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_parse_never_raises(data: bytes) -> None:
    events, names = parse(data)
    assert len(events) <= 1
    assert all(name.startswith("cdp_") for name in names)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_advertisement(data: st.DataObject) -> None:
    pdu = bytearray(full_pdu())
    for _ in range(data.draw(st.integers(1, 6))):
        pdu[data.draw(st.integers(4, len(pdu) - 1))] = data.draw(st.integers(0, 255))
    events, names = parse(bytes(pdu[: data.draw(st.integers(4, len(pdu)))]))
    assert len(events) == 1
    assert len(events[0].addresses) <= 64
    assert all(name.startswith("cdp_") for name in names)


def test_every_event_field_and_weird_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{CdpEvent.log}`" in doc
    for f in dataclasses.fields(CdpEvent):
        assert f"| `{f.name}` |" in doc, f"CdpEvent.{f.name} is not documented"
    weirds = set(re.findall(r'"(cdp_[a-z_]+)"', MODULE.read_text()))
    assert weirds
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
