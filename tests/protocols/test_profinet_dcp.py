"""PROFINET DCP dissector: built PDUs cross-checked with tshark, FrameID selection, malformed blocks, fuzzing.

The corpus has no PROFINET capture. DCP PDUs are built with ``scapy.contrib.pnio_dcp`` (Identify
request and response, the example shapes of scapy's documentation) and, for the services and blocks
scapy's classes do not build correctly (Set, Get, Hello, Control, DeviceOptions, full IP suite),
byte by byte after IEC 61158-6-10 with ``struct``. Every event field is compared with tshark's
``pn_dcp.*`` dissection of the same capture; a cyclic real-time frame (FrameID 0x8000) on the same
EtherType must produce nothing.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.pnio import ProfinetIO
from scapy.contrib.pnio_dcp import (
    DCPDeviceIDBlock,
    DCPDeviceRoleBlock,
    DCPIPBlock,
    DCPManufacturerSpecificBlock,
    DCPNameOfStationBlock,
    ProfinetDCP,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from fieldward.protocols.profinet_dcp import (
    OPTION_NAMES,
    ProfinetDcpDissector,
    ProfinetDcpEvent,
    block_name,
)
from tests.protocols.test_l2_engine import (
    analyze_frames,
    link_ctx,
    read_events,
    run_frames,
    tshark_epoch_ns,
    tshark_fields,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "profinet_dcp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "profinet_dcp.py"
CONTROLLER, DEVICE, OTHER = "00:1b:1b:00:00:01", "00:0e:cf:00:00:02", "00:0e:cf:00:00:03"
DCP_MULTICAST = "01:0e:cf:00:00:00"
INFO = b"\x00\x00"
IP_PARAMS = bytes([192, 168, 0, 10, 255, 255, 255, 0, 192, 168, 0, 1])
DNS = bytes([8, 8, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])


def block(option: int, suboption: int, data: bytes, prefix: bytes = b"") -> bytes:
    """Option, Suboption, DCPBlockLength, [BlockInfo/BlockQualifier], data, padding to an even length."""
    body = prefix + data
    return struct.pack(">BBH", option, suboption, len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def dcp(frame_id: int, service: int, service_type: int, xid: int, blocks: bytes, delay: int = 0) -> bytes:
    return struct.pack(">HBBIHH", frame_id, service, service_type, xid, delay, len(blocks)) + blocks


def frame(payload: bytes, src: str, dst: str, priority_tag: bool = False) -> Packet:
    if priority_tag:
        return Ether(src=src, dst=dst) / Dot1Q(vlan=0, prio=6, type=0x8892) / Raw(payload)
    return Ether(src=src, dst=dst, type=0x8892) / Raw(payload)


def scapy_frames() -> list[Packet]:
    """Identify request and response built with scapy's classes (explicit lengths: see module doc)."""
    request = (
        Ether(src=CONTROLLER, dst=DCP_MULTICAST)
        / Dot1Q(vlan=0, prio=6)
        / ProfinetIO(frameID=0xFEFE)
        / ProfinetDCP(service_id=5, service_type=0, option=255, sub_option=255, dcp_data_length=4)
    )
    response = (
        Ether(src=DEVICE, dst=CONTROLLER)
        / ProfinetIO(frameID=0xFEFF)
        / ProfinetDCP(service_id=5, service_type=1, xid=0x1234)
        / DCPNameOfStationBlock(name_of_station=b"plc-1")
        / DCPDeviceIDBlock(dcp_block_length=6, vendor_id=0x2A, device_id=0x0101, padding=b"")
        / DCPIPBlock(
            dcp_block_length=14,
            ip="192.168.0.10",
            netmask="255.255.255.0",
            gateway="192.168.0.1",
            padding=b"",
        )
        / DCPManufacturerSpecificBlock(dcp_block_length=9, device_vendor_value=b"S7-1500")
        / DCPDeviceRoleBlock(device_role_details=2, padding=b"")
    )
    return [request, response]


def built_frames() -> list[Packet]:
    c, d = CONTROLLER, DEVICE
    identify_response = (
        block(2, 2, b"plc-1", INFO)
        + block(2, 1, b"S7-1500", INFO)
        + block(2, 3, b"\x00\x2a\x01\x0e", INFO)
        + block(2, 4, b"\x03\x00", INFO)
        + block(1, 2, IP_PARAMS, b"\x00\x01")
        + block(2, 5, b"\x01\x01\x01\x02\x02\x02", INFO)
        + block(2, 6, b"port-001.plc-1", INFO)
        + block(2, 7, b"\x00\x64", INFO)
        + block(1, 1, bytes.fromhex("000ecf000002"), INFO)
    )
    hello = (
        block(2, 2, b"io-dev", INFO)
        + block(1, 3, IP_PARAMS + DNS, b"\x00\x01")
        + block(2, 3, b"\x00\x2a\x02\x03", INFO)
        + block(6, 1, b"\x00\x01", INFO)
    )
    return [
        *scapy_frames(),
        frame(dcp(0xFEFE, 5, 0, 0x11, block(2, 2, b"plc-1"), delay=128), c, DCP_MULTICAST),
        frame(dcp(0xFEFF, 5, 1, 0x11, identify_response), d, c),
        frame(dcp(0xFEFD, 4, 0, 0x12, block(2, 2, b"new-name", b"\x00\x01") + block(5, 2, b"", INFO)), c, d),
        frame(dcp(0xFEFD, 4, 1, 0x12, block(5, 4, b"\x02\x02\x00") + block(5, 4, b"\x05\x02\x01")), d, c),
        frame(dcp(0xFEFD, 3, 0, 0x13, b"\x01\x02\x02\x02"), c, d),
        frame(dcp(0xFEFD, 3, 1, 0x13, block(1, 2, IP_PARAMS, b"\x00\x02") + block(2, 2, b"x", INFO)), d, c),
        frame(dcp(0xFEFC, 6, 0, 0x14, hello), OTHER, DCP_MULTICAST, priority_tag=True),
        frame(dcp(0xFEFD, 4, 0, 0x15, block(5, 3, b"\x01\x00", INFO)), c, d),
        frame(dcp(0xFEFD, 4, 5, 0x15, b""), d, c),
        frame(dcp(0xFEFD, 4, 0, 0x16, block(1, 2, IP_PARAMS, b"\x00\x01")), c, d),
        frame(b"\x80\x00" + bytes(40) + b"\x00\x00\x35\x00", d, c),  # cyclic RT data: not DCP
    ]


TSHARK_FIELDS = [
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "vlan.id",
    "pn_rt.frame_id",
    "pn_dcp.service_id",
    "pn_dcp.service_type",
    "pn_dcp.xid",
    "pn_dcp.response_delay",
    "pn_dcp.option",
    "pn_dcp.suboption_device_nameofstation",
    "pn_dcp.suboption_device_aliasname",
    "pn_dcp.suboption_device_devicevendorvalue",
    "pn_dcp.suboption_vendor_id",
    "pn_dcp.suboption_device_id",
    "pn_dcp.suboption_device_role",
    "pn_dcp.suboption_device_instance",
    "pn_dcp.suboption_ip_mac_address",
    "pn_dcp.suboption_ip_ip",
    "pn_dcp.suboption_ip_subnetmask",
    "pn_dcp.suboption_ip_standard_gateway",
    "pn_dcp.suboption_ip_block_info",
    "pn_dcp.block_info",
    "pn_dcp.block_qualifier",
    "pn_dcp.block_error",
    "pn_dcp.suboption_control_option",
    "pn_dcp.suboption_control_signal_value",
    "pn_dcp.deviceinitiative_value",
]
OPTION_NUMBERS = {name: number for number, name in OPTION_NAMES.items()}


def ints(value: str) -> list[int]:
    return [int(v, 0) for v in value.split("|") if v]


def texts(value: str) -> list[str]:
    return [v for v in value.split("|") if v]


def expected_from_tshark(row: list[str]) -> dict[str, Any]:
    (ts, src, dst, vlan, frame_id, service, service_type, xid, delay, options) = row[:10]
    (name, alias, vendor_value, vendor_id, device_id, role, instance, mac, ips, masks, gateways) = row[10:21]
    (ip_info, infos, qualifiers, errors, control_options, signal, initiative) = row[21:]
    ip_list, mask_list, gw_list = texts(ips), texts(masks), texts(gateways)
    # tshark shows a full IP suite's DNS servers with the IP address / mask / gateway fields.
    dns = [ip_list[1], mask_list[1], gw_list[1], gw_list[2]] if len(ip_list) == 2 else []
    high_low = ints(instance)
    return {
        "ts": tshark_epoch_ns(ts),
        "orig_h": src,
        "resp_h": dst,
        "vlan": int(vlan or 0),
        "frame_id": int(frame_id),
        "service_id": int(service),
        "service_type": int(service_type),
        "xid": int(xid, 16),
        "response_delay": int(delay) if delay else None,
        "options": ints(options),
        "name_of_station": name or None,
        "alias_name": alias or None,
        "device_vendor_value": vendor_value or None,
        "vendor_id": int(vendor_id, 16) if vendor_id else None,
        "device_id": int(device_id, 16) if device_id else None,
        "device_role": int(role, 16) if role else None,
        "device_instance": high_low[0] << 8 | high_low[1] if high_low else None,
        "mac_address": mac or None,
        "ip_address": ip_list[0] if ip_list else None,
        "subnet_mask": mask_list[0] if mask_list else None,
        "gateway": gw_list[0] if gw_list else None,
        "dns_servers": dns,
        "ip_info": ints(ip_info),
        "block_infos": ints(infos),
        "block_qualifier": ints(qualifiers)[0] if qualifiers else None,
        "block_errors": ints(errors),
        "response_options": ints(control_options),
        "signal_value": int(signal, 16) if signal else None,
        "device_initiative": int(initiative) if initiative else None,
    }


def actual_from_event(event: dict[str, Any]) -> dict[str, Any]:
    options: list[int] = []
    for name in event["blocks"]:
        options.append(OPTION_NUMBERS[name.split("/")[0]])
        if name == "DeviceProperties/DeviceOptions":  # tshark lists each announced option too
            options += [OPTION_NUMBERS[n.split("/")[0]] for n in event["device_options"]]
    actual = {
        key: event[key]
        for key in (
            "orig_h",
            "resp_h",
            "vlan",
            "frame_id",
            "service_id",
            "service_type",
            "xid",
            "response_delay",
            "name_of_station",
            "alias_name",
            "device_vendor_value",
            "vendor_id",
            "device_id",
            "device_role",
            "device_instance",
            "mac_address",
            "ip_address",
            "subnet_mask",
            "gateway",
            "dns_servers",
            "block_qualifier",
            "block_errors",
            "signal_value",
            "device_initiative",
        )
    }
    actual["ts"] = event["ts"]
    actual["options"] = options
    actual["response_options"] = [OPTION_NUMBERS[n.split("/")[0]] for n in event["responses"]]
    # tshark puts the BlockInfo of an IP parameter block in its own field, the others in block_info.
    has_info = event["service_type"] & 1 or event["service_id"] == 6
    info_blocks = [n for n in event["blocks"] if n != "IP/IPParameter" and not n.startswith("Control/")]
    if has_info and event["ip_block_info"] is not None and "IP/IPParameter" in event["blocks"]:
        actual["ip_info"] = [event["ip_block_info"]]
    else:
        actual["ip_info"] = []
    if has_info and "IP/FullIPSuite" in info_blocks:
        actual["block_infos"] = ["ip" if n == "IP/FullIPSuite" else "other" for n in info_blocks]
    return actual


def test_built_pdus_match_tshark(tshark: str, tmp_path: Path) -> None:
    capture, result, out = analyze_frames(tmp_path, built_frames())
    events = read_events(out, "profinet_dcp")
    rows = tshark_fields(tshark, capture, TSHARK_FIELDS, "pn_dcp", aggregator="|")
    assert len(rows) == len(events) == 12
    for event, row in zip(events, rows, strict=True):
        expected = expected_from_tshark(row)
        actual = actual_from_event(event)
        if "block_infos" in actual:  # full IP suite: its BlockInfo is the generic one, at its position
            labels = actual.pop("block_infos")
            assert expected["block_infos"][labels.index("ip")] == event["ip_block_info"]
        expected.pop("block_infos")
        assert actual == expected
        assert (event["flow_id"], event["orig_p"], event["resp_p"], event["is_orig"]) == (-1, 0, 0, True)
    assert result.weird.total == 0
    # Values the frames were built with, independent of either dissector.
    assert events[1]["device_roles"] == ["io_controller"]
    assert events[3]["device_roles"] == ["io_device", "io_controller"]
    assert events[3]["device_options"] == [
        "IP/MACAddress",
        "IP/IPParameter",
        "DeviceProperties/NameOfStation",
    ]
    assert events[4]["blocks"] == ["DeviceProperties/NameOfStation", "Control/Stop"]
    assert events[6]["blocks"] == ["IP/IPParameter", "DeviceProperties/NameOfStation"]
    assert events[8]["dns_servers"] == ["8.8.8.8", "1.1.1.1", "0.0.0.0", "0.0.0.0"]
    assert [e["service"] for e in events] == ["identify"] * 4 + ["set"] * 2 + ["get"] * 2 + ["hello"] + [
        "set"
    ] * 3
    assert events[10]["service_type_name"] == "response_unsupported"


def test_only_dcp_frame_ids_reach_python() -> None:
    """match_frames keeps FrameIDs 0xFEFC-0xFEFF, vectorized; RT, alarm and PTCP frames never reach parse."""
    heads = np.zeros((6, 16), dtype=np.uint8)
    heads[:, :2] = [[0xFE, 0xFC], [0xFE, 0xFF], [0xFE, 0xFB], [0x80, 0x00], [0xFE, 0x01], [0xFE, 0xFE]]
    lengths = np.array([50, 50, 50, 50, 50, 1], dtype=np.int32)
    mask = ProfinetDcpDissector.match_frames(heads, lengths)
    assert mask is not None
    assert mask.tolist() == [True, True, False, False, False, False]
    frames = [
        frame(dcp(fid, 5, 0, fid, block(0xFF, 0xFF, b"")), CONTROLLER, DCP_MULTICAST)
        for fid in (0xFEFE, 0xFEFB, 0xFC01, 0x8000, 0xFF00)
    ]
    events, weird, engine = run_frames(frames, [ProfinetDcpDissector])
    assert [e.frame_id for e in events if isinstance(e, ProfinetDcpEvent)] == [0xFEFE]
    assert engine.frames_by_protocol == {"profinet_dcp": 1}
    assert weird.total == 0


# ------------------------------------------------------------------------------------- malformed


def parse(pdu: bytes) -> tuple[list[ProfinetDcpEvent], list[str]]:
    ctx, out = link_ctx("profinet_dcp")
    ProfinetDcpDissector(ctx.flow).parse(pdu, ctx)
    return [e for e in out.events if isinstance(e, ProfinetDcpEvent)], out.weird_names


def test_malformed_pdus_are_weird() -> None:
    good_blocks = block(2, 2, b"plc-1", INFO)
    cases: dict[str, tuple[bytes, list[str], int]] = {
        "header cut": (dcp(0xFEFF, 5, 1, 1, good_blocks)[:11], ["profinet_dcp_truncated_header"], 0),
        "data length too big": (
            dcp(0xFEFF, 5, 1, 1, good_blocks)[:-2],
            ["profinet_dcp_bad_data_length", "profinet_dcp_truncated_block"],
            1,
        ),
        "block header cut": (
            dcp(0xFEFF, 5, 1, 1, good_blocks + b"\x02\x02"),
            ["profinet_dcp_truncated_block"],
            1,
        ),
        "block length past end": (
            dcp(0xFEFF, 5, 1, 1, struct.pack(">BBH", 2, 2, 40) + b"abc"),
            ["profinet_dcp_truncated_block"],
            1,
        ),
        "no room for BlockInfo": (
            dcp(0xFEFF, 5, 1, 1, block(2, 2, b"a")),
            ["profinet_dcp_bad_block_length"],
            1,
        ),
        "short IP parameter": (
            dcp(0xFEFF, 5, 1, 1, block(1, 2, IP_PARAMS[:10], INFO)),
            ["profinet_dcp_bad_block_length"],
            1,
        ),
        "short device id": (
            dcp(0xFEFF, 5, 1, 1, block(2, 3, b"\x00\x2a", INFO)),
            ["profinet_dcp_bad_block_length"],
            1,
        ),
        "short control response": (
            dcp(0xFEFD, 4, 1, 1, block(5, 4, b"\x02\x02")),
            ["profinet_dcp_bad_block_length"],
            1,
        ),
        "odd get request": (dcp(0xFEFD, 3, 0, 1, b"\x01\x02\x02"), ["profinet_dcp_truncated_block"], 1),
    }
    for label, (pdu, weirds, count) in cases.items():
        events, names = parse(pdu)
        assert names == weirds, label
        assert len(events) == count, label


def test_unknown_service_and_options_are_named_by_number() -> None:
    (event,), names = parse(dcp(0xFEFD, 9, 3, 7, block(0x80, 0x05, b"vendor", INFO)))
    assert names == []
    assert (event.service, event.service_type_name, event.blocks) == (
        "unknown-9",
        "unknown-3",
        ["option-128/suboption-5"],
    )
    assert block_name(2, 200) == "DeviceProperties/suboption-200"


def test_name_of_station_not_utf8_is_replaced_not_fatal() -> None:
    (event,), names = parse(dcp(0xFEFF, 5, 1, 1, block(2, 2, b"plc\xff", INFO)))
    assert (event.name_of_station, names) == ("plc\ufffd", [])


# ------------------------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_parse_never_raises(data: bytes) -> None:
    events, names = parse(data)
    assert len(events) <= 1
    assert all(name.startswith("profinet_dcp_") for name in names)
    if events:
        assert len(events[0].blocks) <= 64


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_pdu(data: st.DataObject) -> None:
    pdu = bytearray(bytes(built_frames()[3])[14:])
    for _ in range(data.draw(st.integers(1, 6))):
        pdu[data.draw(st.integers(0, len(pdu) - 1))] = data.draw(st.integers(0, 255))
    events, names = parse(bytes(pdu[: data.draw(st.integers(0, len(pdu)))]))
    assert len(events) <= 1
    assert all(name.startswith("profinet_dcp_") for name in names)


def test_every_event_field_and_weird_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{ProfinetDcpEvent.log}`" in doc
    for f in dataclasses.fields(ProfinetDcpEvent):
        assert f"| `{f.name}` |" in doc, f"ProfinetDcpEvent.{f.name} is not documented"
    weirds = set(re.findall(r'"(profinet_dcp_[a-z_]+)"', MODULE.read_text()))
    assert weirds
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
