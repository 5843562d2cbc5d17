"""ARP dissector: golden comparison with tshark on the corpus, spec-built messages, malformed input, fuzzing.

Golden reference: ``../shared/corpus/arp/arp-who-has.pcap`` (a request and its padded reply) has no
expected log, so every event field is compared with tshark's dissection of the same frames
(``arp.*``, ``eth.*``, ``frame.time_epoch``). Messages the corpus lacks (probe, announcement, gratuitous
request and reply, VLAN-tagged, RARP, InARP, unknown opcode) are built with scapy and compared with
tshark in the same way; the ``src_mismatch`` flag (no tshark field) is checked against its definition.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet

from fieldward.capture.reader import open_capture
from fieldward.decode.l2l4 import decode_batch
from fieldward.pipeline import analyze
from fieldward.protocols.arp import ArpDissector, ArpEvent, opcode_name
from fieldward.protocols.base import LinkInfo, mac_str
from fieldward.weird import WeirdLog
from tests.protocols.test_l2_engine import (
    analyze_frames,
    link_ctx,
    read_events,
    run_frames,
    tshark_epoch_ns,
    tshark_fields,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "arp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "arp.py"
MAC_A, MAC_B = "00:11:22:33:44:55", "00:66:77:88:99:aa"
BCAST, ZERO = "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"

TSHARK_FIELDS = [
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "vlan.id",
    "arp.hw.type",
    "arp.proto.type",
    "arp.opcode",
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "arp.dst.hw_mac",
    "arp.dst.proto_ipv4",
    "arp.isgratuitous",
    "arp.isprobe",
    "arp.isannouncement",
]


def flag(value: str) -> bool:
    return value in ("1", "True")


def assert_matches_tshark(events: list[dict[str, object]], rows: list[list[str]]) -> None:
    assert len(events) == len(rows)
    for event, row in zip(events, rows, strict=True):
        ts, src, dst, vlan, hw, proto, op, sha, spa, tha, tpa, grat, probe, announce = row
        assert event["ts"] == tshark_epoch_ns(ts)
        assert (event["orig_h"], event["resp_h"], event["vlan"]) == (src, dst, int(vlan or 0))
        assert (event["hw_type"], event["proto_type"], event["op"]) == (int(hw), int(proto, 16), int(op))
        assert (event["sha"], event["spa"], event["tha"], event["tpa"]) == (sha, spa, tha, tpa)
        assert (event["gratuitous"], event["probe"], event["announcement"]) == (
            flag(grat),
            flag(probe),
            flag(announce),
        )
        assert (event["flow_id"], event["orig_p"], event["resp_p"], event["is_orig"]) == (-1, 0, 0, True)


def arp(
    op: int, hwsrc: str, psrc: str, hwdst: str, pdst: str, src: str | None = None, dst: str = BCAST
) -> Packet:
    return Ether(src=src or hwsrc, dst=dst) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst)


# ------------------------------------------------------------------------------------------ golden


def test_golden_arp_who_has_matches_tshark(corpus: Path, tshark: str, tmp_path: Path) -> None:
    capture = corpus / "arp" / "arp-who-has.pcap"
    result = analyze([capture], tmp_path / "out")
    events = read_events(tmp_path / "out", "arp")
    rows = tshark_fields(tshark, capture, TSHARK_FIELDS, "arp")
    assert len(rows) == 2
    assert_matches_tshark(events, rows)
    assert [e["op_name"] for e in events] == ["request", "reply"]
    assert result.weird.total == 0


def test_golden_agrees_with_the_decode_layer_columns(corpus: Path, tmp_path: Path) -> None:
    """The decode layer parses Ethernet/IPv4 ARP into columns; the dissector must agree with them."""
    capture = corpus / "arp" / "arp-who-has.pcap"
    analyze([capture], tmp_path / "out")
    events = read_events(tmp_path / "out", "arp")
    with open_capture(capture) as reader:
        (batch,) = list(reader)
    decoded = decode_batch(batch, WeirdLog())
    ipv4 = [".".join(str(b) for b in struct.pack(">I", int(v))) for v in decoded.arp_spa]
    tpa = [".".join(str(b) for b in struct.pack(">I", int(v))) for v in decoded.arp_tpa]
    assert [e["op"] for e in events] == decoded.arp_op.tolist()
    assert [e["sha"] for e in events] == [mac_str(int(v)) for v in decoded.arp_sha]
    assert [e["tha"] for e in events] == [mac_str(int(v)) for v in decoded.arp_tha]
    assert [e["spa"] for e in events] == ipv4
    assert [e["tpa"] for e in events] == tpa
    assert np.all(decoded.ethertype == 0x0806)


# ------------------------------------------------------------------------------------ built frames


def built_frames() -> list[Packet]:
    return [
        arp(1, MAC_A, "0.0.0.0", ZERO, "10.0.0.9"),  # RFC 5227 probe
        arp(1, MAC_A, "10.0.0.9", ZERO, "10.0.0.9"),  # RFC 5227 announcement
        arp(2, MAC_A, "10.0.0.9", BCAST, "10.0.0.9"),  # gratuitous reply
        arp(1, MAC_A, "10.0.0.9", BCAST, "10.0.0.9"),  # gratuitous request, target MAC not zero
        arp(2, MAC_B, "10.0.0.1", MAC_A, "10.0.0.9", dst=MAC_A),  # ordinary reply, unicast
        arp(1, MAC_A, "0.0.0.0", ZERO, "0.0.0.0"),  # both zero: Wireshark calls it an announcement
        Ether(src=MAC_B, dst=BCAST)
        / Dot1Q(vlan=42)
        / ARP(op=1, hwsrc=MAC_B, psrc="10.0.42.1", pdst="10.0.42.7"),
        Ether(src=MAC_A, dst=BCAST, type=0x8035) / ARP(op=3, hwsrc=MAC_A, hwdst=MAC_A),  # RARP request
        arp(8, MAC_A, "0.0.0.0", MAC_B, "0.0.0.1"),  # InARP request
        arp(99, MAC_A, "10.0.0.1", ZERO, "10.0.0.2"),  # unassigned opcode
    ]


def test_built_messages_match_tshark(tshark: str, tmp_path: Path) -> None:
    capture, result, out = analyze_frames(tmp_path, built_frames())
    events = read_events(out, "arp")
    rows = tshark_fields(tshark, capture, TSHARK_FIELDS, "arp")
    assert len(rows) == 10
    assert_matches_tshark(events, rows)
    assert [e["op_name"] for e in events] == [
        "request",
        "request",
        "reply",
        "request",
        "reply",
        "request",
        "request",
        "reverse_request",
        "inarp_request",
        "unknown-99",
    ]
    assert result.weird.counts == {"arp_unknown_opcode": 1}


def test_src_mismatch_is_ethernet_source_vs_sender_hardware_address() -> None:
    frames = [
        arp(2, MAC_A, "10.0.0.9", MAC_B, "10.0.0.1"),
        arp(2, MAC_A, "10.0.0.9", MAC_B, "10.0.0.1", src=MAC_B),  # Ethernet source is not the sender
    ]
    events, _, _ = run_frames(frames, [ArpDissector])
    assert [e.src_mismatch for e in events if isinstance(e, ArpEvent)] == [False, True]


def test_non_ethernet_non_ipv4_addresses_are_hex() -> None:
    """RFC 826 is generic: a 2-byte hardware address and a 6-byte protocol address are shown as hex."""
    pdu = struct.pack(">HHBBH", 6, 0x1234, 2, 6, 1) + bytes(range(1, 3)) + bytes(range(3, 9))
    pdu += b"\xaa\xbb" + bytes(6)
    ctx, out = link_ctx("arp")
    ArpDissector(ctx.flow).parse(pdu, ctx)
    (event,) = out.events
    assert isinstance(event, ArpEvent)
    assert (event.sha, event.spa, event.tha, event.tpa) == (
        "01:02",
        "03:04:05:06:07:08",
        "aa:bb",
        "00:00:00:00:00:00",
    )
    assert not event.src_mismatch  # only 6-byte hardware addresses are compared with the MAC


def test_ipv6_protocol_addresses() -> None:
    pdu = struct.pack(">HHBBH", 1, 0x86DD, 6, 16, 2) + bytes(6) + bytes(15) + b"\x01" + bytes(6) + bytes(16)
    ctx, out = link_ctx("arp")
    ArpDissector(ctx.flow).parse(pdu, ctx)
    (event,) = out.events
    assert isinstance(event, ArpEvent)
    assert (event.spa, event.tpa) == ("::1", "::")


# ------------------------------------------------------------------------------------- malformed


def test_truncated_and_malformed_messages_are_weird() -> None:
    good = bytes(Ether() / ARP(hwsrc=MAC_A, psrc="10.0.0.1", pdst="10.0.0.2"))[14:]
    cases = {
        good[:7]: "arp_truncated",
        good[:8]: "arp_truncated",
        good[:27]: "arp_truncated",
        good[:4] + b"\x00\x04" + good[6:]: "arp_zero_address_length",
        good[:4] + b"\x06\x00" + good[6:]: "arp_zero_address_length",
    }
    for pdu, name in cases.items():
        ctx, out = link_ctx("arp")
        ArpDissector(ctx.flow).parse(pdu, ctx)
        assert out.events == []
        assert out.weird_names == [name]
    ctx, out = link_ctx("arp")
    ArpDissector(ctx.flow).parse(good[:28] + b"\x00" * 18, ctx)  # padding after the message is ignored
    assert len(out.events) == 1
    assert out.weirds == []


def test_truncated_frames_through_the_engine() -> None:
    whole = bytes(Ether(src=MAC_A, dst=BCAST) / ARP(hwsrc=MAC_A, psrc="10.0.0.1", pdst="10.0.0.2"))
    events, weird, _ = run_frames([whole[:20], whole[: 14 + 27], whole], [ArpDissector])
    assert [e.log for e in events] == ["weird", "weird", "arp"]
    assert weird.counts["arp_truncated"] == 2


# ------------------------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_fuzz_parse_never_raises(data: bytes) -> None:
    ctx, out = link_ctx("arp", LinkInfo(src_mac=MAC_A, dst_mac=BCAST, vlan=0, vlan_inner=0, ethertype=0x0806))
    ArpDissector(ctx.flow).parse(data, ctx)
    assert len(out.events) + len(out.weirds) <= 2
    assert all(w.name.startswith("arp_") for w in out.weirds)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 27), st.integers(0, 255), st.integers(0, 28))
def test_fuzz_mutated_real_message(position: int, value: int, cut: int) -> None:
    pdu = bytearray(bytes(Ether() / ARP(hwsrc=MAC_A, psrc="10.0.0.1", pdst="10.0.0.2"))[14:])
    pdu[position] = value
    ctx, out = link_ctx("arp")
    ArpDissector(ctx.flow).parse(bytes(pdu[: len(pdu) - cut]), ctx)
    assert len(out.events) <= 1
    if out.events:
        event = out.events[0]
        assert isinstance(event, ArpEvent)
        assert event.op_name == opcode_name(event.op)


def test_every_event_field_and_weird_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{ArpEvent.log}`" in doc
    for f in dataclasses.fields(ArpEvent):
        assert f"| `{f.name}` |" in doc, f"ArpEvent.{f.name} is not documented"
    weirds = set(re.findall(r'"(arp_[a-z_]+)"', MODULE.read_text()))
    assert weirds
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
