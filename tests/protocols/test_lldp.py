"""LLDP dissector: scapy-built LLDPDUs cross-checked with tshark, malformed TLVs, fuzzing.

The corpus has no LLDP capture, so LLDPDUs are built with ``scapy.contrib.lldp`` (every chassis and
port id subtype family, VLAN-tagged frames, capabilities, IPv4/IPv6/MAC management addresses,
IEEE 802.1 / 802.3 / PROFINET organizationally specific TLVs, a reserved TLV type, Ethernet padding)
and every event field is compared with tshark's dissection of the same capture (``lldp.*``).
"""

from __future__ import annotations

import dataclasses
import re
import socket
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.config import conf
from scapy.contrib.lldp import (
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUGenericOrganisationSpecific,
    LLDPDUManagementAddress,
    LLDPDUPortDescription,
    LLDPDUPortID,
    LLDPDUSystemCapabilities,
    LLDPDUSystemDescription,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from fieldward.protocols.lldp import CAPABILITY_NAMES, LldpDissector, LldpEvent
from tests.protocols.test_l2_engine import (
    analyze_frames,
    link_ctx,
    read_events,
    tshark_epoch_ns,
    tshark_fields,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "lldp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "lldp.py"
LLDP_MULTICAST = "01:80:c2:00:00:0e"
MAC_A, MAC_B = "00:11:22:33:44:55", "00:0e:cf:01:02:03"


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack(">H", kind << 9 | len(value)) + value


def lldpdu(*layers: Packet | bytes) -> bytes:
    """TLVs as bytes (scapy's strict mode refuses to build a TLV without an Ethernet header)."""
    lldp_conf = conf.contribs["LLDP"]
    lldp_conf.strict_mode_disable()
    try:
        return b"".join(layer if isinstance(layer, bytes) else bytes(layer) for layer in layers)
    finally:
        lldp_conf.strict_mode_enable()


def mandatory(chassis: str = MAC_A, port: str = "Gi0/1", ttl: int = 120) -> bytes:
    return lldpdu(
        LLDPDUChassisID(subtype=4, id=chassis), LLDPDUPortID(subtype=5, id=port), LLDPDUTimeToLive(ttl=ttl)
    )


def frame(payload: bytes, src: str = MAC_A, vlan: int | None = None) -> Packet:
    eth = Ether(src=src, dst=LLDP_MULTICAST)
    if vlan is not None:
        return eth / Dot1Q(vlan=vlan, type=0x88CC) / Raw(payload)
    eth.type = 0x88CC
    return eth / Raw(payload)


def ip4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def ip6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def built_frames() -> list[Packet]:
    full = lldpdu(
        LLDPDUChassisID(subtype=4, id=MAC_A),
        LLDPDUPortID(subtype=5, id="GigabitEthernet0/1"),
        LLDPDUTimeToLive(ttl=120),
        LLDPDUPortDescription(description="uplink to core"),
        LLDPDUSystemName(system_name="sw-core-1.plant.example"),
        LLDPDUSystemDescription(description="Cisco IOS Software, C2960 Software, Version 15.2(4)E"),
        LLDPDUSystemCapabilities(mac_bridge_available=1, router_available=1, mac_bridge_enabled=1),
        LLDPDUManagementAddress(
            management_address_subtype=1,
            management_address=ip4("192.168.1.2"),
            interface_numbering_subtype=2,
            interface_number=5,
        ),
        LLDPDUManagementAddress(
            management_address_subtype=2,
            management_address=ip6("2001:db8::2"),
            interface_numbering_subtype=2,
            interface_number=5,
            object_id=b"\x2b\x06\x01",
        ),
        LLDPDUGenericOrganisationSpecific(org_code=0x0080C2, subtype=1, data=b"\x00\x0a"),
        LLDPDUGenericOrganisationSpecific(org_code=0x00120F, subtype=1, data=b"\x03\x6c\x03\x00\x10"),
        LLDPDUGenericOrganisationSpecific(org_code=0x0080C2, subtype=3, data=b"\x00\x0a\x04vl10"),
        tlv(9, b"reserved"),
        LLDPDUEndOfLLDPDU(),
    )
    profinet = lldpdu(
        LLDPDUChassisID(subtype=7, id="plc-1"),
        LLDPDUPortID(subtype=7, id="port-001.plc-1"),
        LLDPDUTimeToLive(ttl=20),
        LLDPDUSystemCapabilities(station_only_available=1, station_only_enabled=1),
        LLDPDUManagementAddress(
            management_address_subtype=6,
            management_address=bytes.fromhex(MAC_B.replace(":", "")),
            interface_numbering_subtype=1,
            interface_number=0,
        ),
        LLDPDUGenericOrganisationSpecific(org_code=0x000ECF, subtype=2, data=b"\x00\x00\x00\x00"),
        LLDPDUEndOfLLDPDU(),
    )
    network = lldpdu(
        LLDPDUChassisID(subtype=5, family=1, id="10.0.0.1"),
        LLDPDUPortID(subtype=4, family=2, id="2001:db8::1"),
        LLDPDUTimeToLive(ttl=3600),
        LLDPDUEndOfLLDPDU(),
    )
    textual = lldpdu(
        LLDPDUChassisID(subtype=6, id="eth0"),
        LLDPDUPortID(subtype=3, id=MAC_B),
        LLDPDUTimeToLive(ttl=0),  # shutdown LLDPDU
        LLDPDUEndOfLLDPDU(),
    )
    binary = lldpdu(
        LLDPDUChassisID(subtype=7, id=b"\x01\x02\xff"),
        LLDPDUPortID(subtype=1, id="alias"),
        LLDPDUTimeToLive(ttl=20),
        LLDPDUSystemCapabilities(**{f"{n}_available": 1 for n in ("other", "repeater", "telephone")}),
        LLDPDUEndOfLLDPDU(),
    )
    return [
        frame(full),
        frame(profinet, src=MAC_B, vlan=0),
        frame(network, vlan=42),
        frame(textual + bytes(30)),  # Ethernet padding after the End TLV
        frame(binary),
    ]


TSHARK_FIELDS = [
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "vlan.id",
    "lldp.chassis.subtype",
    "lldp.chassis.id",
    "lldp.chassis.id.mac",
    "lldp.chassis.id.ip4",
    "lldp.chassis.id.ip6",
    "lldp.port.subtype",
    "lldp.port.id",
    "lldp.port.id.mac",
    "lldp.port.id.ip4",
    "lldp.port.id.ip6",
    "lldp.time_to_live",
    "lldp.port.desc",
    "lldp.tlv.system.name",
    "lldp.tlv.system.desc",
    "lldp.tlv.system_cap",
    "lldp.tlv.enable_system_cap",
    "lldp.mgn.addr.ip4",
    "lldp.mgn.addr.ip6",
    "lldp.mgn.addr.hex",
    "lldp.ieee.802_1.port_vlan.id",
    "lldp.orgtlv.oui",
    "lldp.tlv.type",
]


def tshark_chassis(subtype: str, raw: str, mac: str, v4: str, v6: str) -> str:
    """tshark gives textual chassis ids as raw hex bytes; FieldWard writes printable ones as text."""
    if mac or v4 or v6:
        return mac or v4 or v6
    data = bytes.fromhex(raw)
    return data.decode() if all(0x20 <= b < 0x7F for b in data) else ":".join(f"{b:02x}" for b in data)


def caps(value: str) -> list[str]:
    bits = int(value, 16) if value else 0
    return [name for i, name in enumerate(CAPABILITY_NAMES) if bits >> i & 1]


def oui_text(value: str) -> str:
    return ":".join(f"{b:02x}" for b in int(value, 0).to_bytes(3, "big"))


def expected_from_tshark(row: list[str]) -> dict[str, Any]:
    (ts, src, dst, vlan, c_sub, c_raw, c_mac, c_v4, c_v6, p_sub, p_id, p_mac, p_v4, p_v6, ttl) = row[:15]
    (port_desc, name, desc, cap, enabled, m_v4, m_v6, m_hex, pvid, ouis, types) = row[15:]
    addresses = [a for a in m_v4.split(",") + m_v6.split(",") if a]
    addresses += [
        ":".join(h[i : i + 2] for i in range(0, 12, 2)) for h in m_hex.replace(":", "").split(",") if h
    ]
    tlv_types = [int(t) for t in types.split(",")]
    oui_list = [oui_text(o) for o in ouis.split(",") if o]
    return {
        "ts": tshark_epoch_ns(ts),
        "orig_h": src,
        "resp_h": dst,
        "vlan": int(vlan or 0),
        "chassis_id_subtype": int(c_sub),
        "chassis_id": tshark_chassis(c_sub, c_raw, c_mac, c_v4, c_v6),
        "port_id_subtype": int(p_sub),
        "port_id": p_mac or p_v4 or p_v6 or p_id,
        "ttl": int(ttl),
        "port_description": port_desc or None,
        "system_name": name or None,
        "system_description": desc or None,
        "system_capabilities": caps(cap),
        "enabled_capabilities": caps(enabled),
        "management_addresses": sorted(addresses),
        "port_vlan_id": int(pvid) if pvid else None,
        "org_tlvs": tlv_types.count(127),
        "org_ouis": list(dict.fromkeys(oui_list)),
        "unknown_tlvs": sum(1 for t in tlv_types if 9 <= t <= 126),
    }


def test_built_lldpdus_match_tshark(tshark: str, tmp_path: Path) -> None:
    capture, result, out = analyze_frames(tmp_path, built_frames())
    events = read_events(out, "lldp")
    rows = tshark_fields(tshark, capture, TSHARK_FIELDS, "lldp")
    assert len(rows) == len(events) == 5
    for event, row in zip(events, rows, strict=True):
        expected = expected_from_tshark(row)
        actual = {key: event[key] for key in expected}
        actual["ts"] = event["ts"]
        actual["management_addresses"] = sorted(event["management_addresses"])
        assert actual == expected
        assert (event["flow_id"], event["orig_p"], event["resp_p"], event["is_orig"]) == (-1, 0, 0, True)
    assert result.weird.total == 0
    # Spot checks against what the frames were built with, independent of either dissector.
    assert events[0]["system_name"] == "sw-core-1.plant.example"
    assert events[0]["management_addresses"] == ["192.168.1.2", "2001:db8::2"]
    assert events[1]["management_addresses"] == [MAC_B]
    assert events[2]["vlan"] == 42


# ------------------------------------------------------------------------------------- malformed


def parse(payload: bytes) -> tuple[list[LldpEvent], list[str]]:
    ctx, out = link_ctx("lldp")
    LldpDissector(ctx.flow).parse(payload, ctx)
    return [e for e in out.events if isinstance(e, LldpEvent)], out.weird_names


def test_malformed_tlvs_are_weird() -> None:
    good = mandatory()
    end = tlv(0, b"")
    cases: dict[str, tuple[bytes, list[str], int]] = {
        "tlv header cut": (good + b"\x0a", ["lldp_truncated_tlv"], 1),
        "tlv value cut": (good + tlv(5, b"name")[:-2], ["lldp_truncated_tlv"], 1),
        "ttl first": (lldpdu(LLDPDUTimeToLive(ttl=1)) + end, ["lldp_missing_mandatory_tlv"], 1),
        "no port id": (
            lldpdu(LLDPDUChassisID(subtype=4, id=MAC_A), LLDPDUTimeToLive(ttl=1)) + end,
            ["lldp_missing_mandatory_tlv"],
            1,
        ),
        "duplicate name": (good + tlv(5, b"a") + tlv(5, b"b") + end, ["lldp_duplicate_tlv"], 1),
        "ttl length 1": (good[:-4] + tlv(3, b"\x01") + end, ["lldp_bad_tlv_length"], 1),
        "chassis id length 1": (tlv(1, b"\x04") + good[good.index(b"\x04\x06") :] + end, [], 1),
        "capabilities length 3": (good + tlv(7, b"\x00\x04\x00") + end, ["lldp_bad_tlv_length"], 1),
        "org tlv length 3": (good + tlv(127, b"\x00\x80\xc2") + end, ["lldp_bad_tlv_length"], 1),
        "port vlan length 5": (good + tlv(127, b"\x00\x80\xc2\x01\x00") + end, ["lldp_bad_tlv_length"], 1),
        "management address string too long": (
            good + tlv(8, bytes([40]) + bytes(40)) + end,
            ["lldp_bad_management_address"],
            1,
        ),
        "management OID length": (
            good + tlv(8, b"\x05\x01" + ip4("10.0.0.1") + b"\x02\x00\x00\x00\x01\x09") + end,
            ["lldp_bad_management_address"],
            1,
        ),
        "empty": (b"", ["lldp_empty"], 0),
        "only end": (end + bytes(40), ["lldp_empty"], 0),
    }
    for label, (payload, weirds, count) in cases.items():
        events, names = parse(payload)
        if label == "chassis id length 1":
            assert names[0] == "lldp_bad_tlv_length", label
            assert events[0].chassis_id is None, label
            continue
        assert names == weirds, label
        assert len(events) == count, label


def test_truncated_lldpdu_keeps_what_was_read() -> None:
    payload = mandatory() + tlv(5, b"sw1") + tlv(6, b"description")[:5]
    events, names = parse(payload)
    assert names == ["lldp_truncated_tlv"]
    (event,) = events
    assert (event.chassis_id, event.port_id, event.ttl, event.system_name, event.system_description) == (
        MAC_A,
        "Gi0/1",
        120,
        "sw1",
        None,
    )


def test_end_tlv_is_optional_and_ends_the_tlvs() -> None:
    events, names = parse(mandatory())
    assert (len(events), names) == (1, [])
    events, names = parse(mandatory() + tlv(0, b"") + tlv(5, b"after end"))
    assert names == []
    assert events[0].system_name is None


def test_capability_bits_follow_the_standard_table() -> None:
    value = struct.pack(">HH", 0b111_1111_1111, 0b100_0001_0100)
    (event,), _ = parse(mandatory() + tlv(7, value))
    assert event.system_capabilities == list(CAPABILITY_NAMES)
    assert event.enabled_capabilities == ["bridge", "router", "two_port_mac_relay"]


# ------------------------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_parse_never_raises(data: bytes) -> None:
    events, names = parse(data)
    assert len(events) <= 1
    assert all(name.startswith("lldp_") for name in names)
    assert len(names) <= 1 + len(data) // 2


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_lldpdu(data: st.DataObject) -> None:
    payload = bytearray(bytes(built_frames()[0])[14:])
    for _ in range(data.draw(st.integers(1, 6))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    events, names = parse(bytes(payload[:cut]))
    assert len(events) <= 1
    assert all(name.startswith("lldp_") for name in names)


def test_every_event_field_and_weird_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{LldpEvent.log}`" in doc
    for f in dataclasses.fields(LldpEvent):
        assert f"| `{f.name}` |" in doc, f"LldpEvent.{f.name} is not documented"
    weirds = set(re.findall(r'"(lldp_[a-z_]+)"', MODULE.read_text()))
    assert weirds
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
