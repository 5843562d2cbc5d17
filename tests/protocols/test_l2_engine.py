"""The layer-2 part of the plugin SDK: ``Transport.ETHERNET`` dissectors selected by EtherType or LLC/SNAP.

Toy dissectors record what the engine hands them, so each test checks one rule of the contract
(docs/plugins.md, "Layer-2 dissectors"): selection by the ``ethertype`` column (after VLAN tags) and by
the LLC/SNAP id of 802.3 frames, payload boundaries (802.3 length, padding), the ``LinkInfo`` and
``Event`` base fields of a frame, the vectorized ``match_frames`` narrowing, IP traffic never reaching
a layer-2 dissector, confinement of exceptions, and the pipeline writing ``events/<log>.parquet``.

The helpers at the top (``run_frames``, ``link_ctx``, ``tshark_fields``, ``analyze_frames``) are shared
with the layer-2 dissector tests (test_arp, test_lldp, test_cdp, test_profinet_dcp).
"""

from __future__ import annotations

import importlib
import re
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, LLC, SNAP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.decode.flows import FlowTable
from fieldward.decode.l2l4 import decode_batch
from fieldward.pipeline import AnalysisResult, analyze
from fieldward.protocols.base import (
    NO_FLOW,
    Dissector,
    Event,
    FlowInfo,
    LinkDissector,
    LinkEvent,
    LinkInfo,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
    event_schema,
)
from fieldward.protocols.engine import ProtocolEngine, ProtocolSettings
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

TOY_TYPE = 0x88B5
"""IEEE 802 "local experimental" EtherType 1."""
OTHER_TYPE = 0x88B6
TOY_SNAP = (0x00000C, 0x2000)
SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"


# ------------------------------------------------------------------------------- shared helpers


def run_frames(
    frames: list[bytes | Packet],
    dissectors: list[type[Dissector]],
    *,
    linktype: int = linktypes.ETHERNET,
    batch_size: int = 1000,
    settings: ProtocolSettings | None = None,
) -> tuple[list[Event], WeirdLog, ProtocolEngine]:
    """Run frames (timestamps 1000 ns apart) through decode, flows and the engine with ``dissectors``."""
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    for d in dissectors:
        registry.add(d)
    engine = ProtocolEngine(registry, events.append, weird, settings)
    flows = FlowTable(weird=weird)
    raw = [bytes(f) for f in frames]
    for start in range(0, len(raw), batch_size):
        chunk = raw[start : start + batch_size]
        times = [(start + i + 1) * 1000 for i in range(len(chunk))]
        batch = PacketBatch.from_packets(chunk, ts_ns=times, linktype=linktype)
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird, engine


@dataclass
class Collected:
    """What a sans-io ``parse`` call produced."""

    events: list[Event] = field(default_factory=list)
    weirds: list[ProtocolWeird] = field(default_factory=list)

    @property
    def weird_names(self) -> list[str]:
        return [w.name for w in self.weirds]


def link_ctx(protocol: str, link: LinkInfo | None = None) -> tuple[PduContext, Collected]:
    """A PduContext as the engine makes it for a layer-2 frame, collecting events and weirds."""
    out = Collected()
    ctx = PduContext(
        FlowInfo(NO_FLOW, Transport.ETHERNET, "", 0, "", 0), protocol, out.events.append, out.weirds.append
    )
    ctx.link = link or LinkInfo(src_mac=SRC, dst_mac=DST, vlan=0, vlan_inner=0, ethertype=0)
    ctx.ts = 1
    return ctx, out


def tshark_fields(
    tshark: str, capture: Path, fields: list[str], display: str = "", aggregator: str = ","
) -> list[list[str]]:
    """One row per displayed frame: the values of ``fields``, occurrences joined by ``aggregator``."""
    cmd = [tshark, "-r", str(capture), "-T", "fields", "-E", "occurrence=a", "-E", f"aggregator={aggregator}"]
    if display:
        cmd += ["-Y", display]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def analyze_frames(
    tmp_path: Path, frames: list[Packet], name: str = "l2.pcap"
) -> tuple[Path, AnalysisResult, Path]:
    """Write ``frames`` to a pcap (1 ms apart) and run ``fieldward.pipeline.analyze`` on it."""
    capture = tmp_path / name
    for i, frame in enumerate(frames):
        frame.time = 1_700_000_000 + i / 1000
    wrpcap(str(capture), frames)
    out = tmp_path / f"{name}.out"
    return capture, analyze([capture], out), out


def read_events(out: Path, log: str) -> list[dict[str, Any]]:
    """Rows of ``events/<log>.parquet``, ``ts`` as integer ns (datetime cannot hold nanoseconds)."""
    path = out / "events" / f"{log}.parquet"
    if not path.exists():
        return []
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast("int64"))
    return table.to_pylist()


def tshark_epoch_ns(value: str) -> int:
    """``frame.time_epoch`` (seconds with 9 decimals) as integer nanoseconds, without float rounding."""
    seconds, _, fraction = value.partition(".")
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


# ---------------------------------------------------------------------------------- toy dissectors


@dataclass(frozen=True, slots=True, kw_only=True)
class ToyFrame(LinkEvent):
    log: ClassVar[str] = "toy_l2"
    payload: bytes
    ethertype: int
    vlan_inner: int
    snap: list[int]


class ToyL2(LinkDissector):
    """Emits one event per frame; payload 'boom' raises, 'bad' reports a weird."""

    name = "toy_l2"
    ethertypes = frozenset({TOY_TYPE, 0x0800, 0x86DD, 0x8100})
    snap = frozenset({TOY_SNAP})
    event_types = (ToyFrame,)
    closed: ClassVar[int] = 0

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if pdu.startswith(b"boom"):
            raise RuntimeError("toy bug")
        if pdu.startswith(b"bad"):
            ctx.weird("toy_l2_bad", "payload was bad")
            return
        link = ctx.link
        assert link is not None
        ctx.emit(
            ToyFrame(
                **ctx.where_link(),
                payload=pdu,
                ethertype=link.ethertype,
                vlan_inner=link.vlan_inner,
                snap=list(link.snap) if link.snap else [],
            )
        )

    def close(self, ctx: PduContext) -> None:
        type(self).closed += 1


def payloads(events: list[Event]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, ToyFrame)]


def toy(payload: bytes, ethertype: int = TOY_TYPE, src: str = SRC, dst: str = DST) -> Packet:
    return Ether(src=src, dst=dst, type=ethertype) / Raw(payload)


def snap_frame(payload: bytes, oui: int = TOY_SNAP[0], pid: int = TOY_SNAP[1]) -> Packet:
    return (
        Dot3(src=SRC, dst="01:00:0c:cc:cc:cc")
        / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
        / SNAP(OUI=oui, code=pid)
        / payload
    )


# ------------------------------------------------------------------------------------------ tests


def test_frames_selected_by_ethertype_with_link_fields() -> None:
    frames = [
        toy(b"one"),
        Ether(src=SRC, dst=DST, type=OTHER_TYPE) / Raw(b"other"),
        Ether(src="02:00:00:00:00:09", dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=42) / Raw(b"x"),  # type 0x9000
        Ether(src="02:00:00:00:00:03", dst="ff:ff:ff:ff:ff:ff")
        / Dot1Q(vlan=42, type=TOY_TYPE)
        / Raw(b"tagged"),
        Ether(src=SRC, dst=DST) / Dot1AD(vlan=7) / Dot1Q(vlan=9, type=TOY_TYPE) / Raw(b"qinq"),
    ]
    events, weird, engine = run_frames(frames, [ToyL2])
    assert payloads(events) == [b"one", b"tagged", b"qinq"]
    first, tagged, qinq = (e for e in events if isinstance(e, ToyFrame))
    assert (first.flow_id, first.orig_h, first.orig_p, first.resp_h, first.resp_p) == (-1, SRC, 0, DST, 0)
    assert first.is_orig
    assert (first.ts, first.vlan, first.ethertype) == (1000, 0, TOY_TYPE)
    assert (tagged.orig_h, tagged.resp_h, tagged.vlan, tagged.ts) == (
        "02:00:00:00:00:03",
        "ff:ff:ff:ff:ff:ff",
        42,
        4000,
    )
    assert (qinq.vlan, qinq.vlan_inner) == (7, 9)
    assert engine.frames_by_protocol == {"toy_l2": 3}
    assert engine.flows_by_protocol == {}
    assert weird.total == 0


def test_ip_traffic_never_reaches_layer2_dissectors() -> None:
    """Even a dissector that lists 0x0800/0x86DD/0x8100 gets no IP frame, and is never asked to recognise."""
    calls: list[str] = []

    class Spy(ToyL2):
        name = "spy"

        @classmethod
        def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
            calls.append(transport.value)
            return Verdict.YES

    c, s = "10.0.0.1", "10.0.0.2"
    frames = [
        Ether(src=SRC, dst=DST) / IP(src=c, dst=s) / UDP(sport=1, dport=2) / b"udp payload",
        Ether(src=SRC, dst=DST) / IP(src=c, dst=s) / TCP(sport=3, dport=4, flags="S"),
        Ether(src=SRC, dst=DST) / IP(src=c, dst=s) / TCP(sport=3, dport=4, flags="PA", seq=1) / b"tcp data",
        Ether(src=SRC, dst=DST) / Dot1Q(vlan=3) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP() / b"v6",
        Ether(src=SRC, dst=DST) / IP(src=c, dst=s, proto=47) / b"gre-ish",
        toy(b"only this"),
    ]
    events, _, engine = run_frames(frames, [Spy])
    assert payloads(events) == [b"only this"]
    assert calls == []
    assert engine.flows_by_protocol == {}


def test_tcp_udp_dissectors_are_not_offered_layer2_frames() -> None:
    seen: list[bytes] = []

    class Greedy(Dissector):
        name = "greedy"
        transports = frozenset({Transport.TCP, Transport.UDP})

        @classmethod
        def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
            seen.append(data)
            return Verdict.YES

        def parse(self, pdu: bytes, ctx: PduContext) -> None:
            seen.append(pdu)

    events, _, _ = run_frames([toy(b"l2 only"), Ether() / ARP()], [Greedy, ToyL2])
    assert seen == []
    assert payloads(events) == [b"l2 only"]


def test_llc_snap_selection_and_8023_length() -> None:
    frames = [
        snap_frame(b"cdp-ish"),  # 802.3 length; padded to 60 bytes by the writer
        snap_frame(b"wrong pid", pid=0x2004),
        snap_frame(b"wrong oui", oui=0x00000D),
        Dot3(src=SRC, dst="01:80:c2:00:00:00") / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00" * 35),  # STP
        Ether(src=SRC, dst=DST, type=0x8870)
        / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
        / SNAP(OUI=0xC, code=0x2000)
        / b"j",
    ]
    raw = [bytes(f) for f in frames]
    raw[0] = raw[0] + b"\x00" * (60 - len(raw[0]))  # Ethernet minimum frame: padding after the LLC data
    events, _, _ = run_frames(raw, [ToyL2])
    assert payloads(events) == [b"cdp-ish", b"j"]
    first = next(e for e in events if isinstance(e, ToyFrame))
    assert first.snap == [0x00000C, 0x2000]
    assert first.ethertype == len(b"cdp-ish") + 8  # the 802.3 length field: LLC + SNAP + data


def test_match_frames_narrows_and_leftovers_go_to_the_next_dissector() -> None:
    shapes: list[tuple[int, ...]] = []

    class Evens(ToyL2):
        """Takes frames whose first byte is even; the decision is made on the whole batch at once."""

        name = "evens"

        @classmethod
        def match_frames(
            cls, heads: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int32]
        ) -> npt.NDArray[np.bool_] | None:
            shapes.append(heads.shape)
            assert lengths.tolist() == [len(b"\x00 first"), 1, len(b"\x02 three"), 46]
            taken: npt.NDArray[np.bool_] = (heads[:, 0] % 2 == 0) & (lengths > 0)
            return taken

    class Rest(ToyL2):
        name = "rest"

    frames = [toy(b"\x00 first"), toy(b"\x01"), toy(b"\x02 three"), toy(b"\x03" + b"\x00" * 45)]
    events, _, engine = run_frames(frames, [Evens, Rest])
    assert shapes == [(4, 16)]
    assert [(type(e).__name__, e.ts) for e in events] == [
        ("ToyFrame", 1000),
        ("ToyFrame", 2000),
        ("ToyFrame", 3000),
        ("ToyFrame", 4000),
    ]
    assert engine.frames_by_protocol == {"evens": 2, "rest": 2}


def test_python_runs_only_for_matching_frames() -> None:
    parsed: list[int] = []

    class Counting(ToyL2):
        name = "counting"

        def parse(self, pdu: bytes, ctx: PduContext) -> None:
            parsed.append(len(pdu))

    noise = [Ether(src=SRC, dst=DST, type=OTHER_TYPE) / Raw(b"n" * 50)] * 2000
    frames = [*noise[:1000], toy(b"m" * 50), *noise[1000:]]
    run_frames(frames, [Counting], batch_size=700)
    assert parsed == [50]


def test_results_do_not_depend_on_batch_boundaries() -> None:
    frames = [toy(bytes([i]) * 3) if i % 3 else snap_frame(bytes([i]) * 2) for i in range(1, 40)]
    reference = payloads(run_frames(frames, [ToyL2])[0])
    for size in (1, 2, 7):
        assert payloads(run_frames(frames, [ToyL2], batch_size=size)[0]) == reference
    assert len(reference) == 39


def test_weird_and_exception_confinement_per_source_mac() -> None:
    other = "02:00:00:00:00:07"
    frames = [
        toy(b"bad"),
        toy(b"boom"),
        toy(b"ok1", src=other),
        toy(b"boom"),
        toy(b"ok2"),  # the dissector is detached from SRC's frames after two exceptions
        toy(b"ok3", src=other),
    ]
    events, weird, _ = run_frames(frames, [ToyL2], settings=ProtocolSettings(max_exceptions_per_flow=2))
    assert payloads(events) == [b"ok1", b"ok3"]
    assert weird.counts["dissector_exception"] == 2
    (bad,) = [e for e in events if isinstance(e, ProtocolWeird)]
    assert (bad.name, bad.protocol, bad.flow_id, bad.orig_h, bad.resp_h, bad.ts) == (
        "toy_l2_bad",
        "toy_l2",
        -1,
        SRC,
        DST,
        1000,
    )


def test_match_frames_bugs_are_confined() -> None:
    class WrongShape(ToyL2):
        name = "wrong_shape"

        @classmethod
        def match_frames(
            cls, heads: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int32]
        ) -> npt.NDArray[np.bool_] | None:
            return np.ones(heads.shape[0] + 1, dtype=np.bool_)

    class Raises(ToyL2):
        name = "raises"

        @classmethod
        def match_frames(
            cls, heads: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int32]
        ) -> npt.NDArray[np.bool_] | None:
            raise ValueError("selection bug")

    events, weird, _ = run_frames([toy(b"a"), toy(b"b")], [WrongShape, Raises, ToyL2])
    assert payloads(events) == [b"a", b"b"]
    assert weird.counts["dissector_exception"] == 2


def test_close_is_called_once_at_the_end() -> None:
    class Closing(ToyL2):
        name = "closing"
        closed = 0

    run_frames([toy(b"a"), toy(b"b")], [Closing], batch_size=1)
    assert Closing.closed == 1


def test_linux_cooked_capture() -> None:
    """SLL: the protocol field is the EtherType; the source MAC is the link address, no destination."""

    def sll(protocol: int, payload: bytes) -> bytes:
        mac = bytes.fromhex(SRC.replace(":", "")) + b"\x00\x00"
        return struct.pack(">HHH8sH", 0, 1, 6, mac, protocol) + payload

    llc = bytes.fromhex("aaaa0300000c2000") + b"via sll"
    events, _, _ = run_frames([sll(TOY_TYPE, b"cooked"), sll(4, llc)], [ToyL2], linktype=linktypes.LINUX_SLL)
    assert payloads(events) == [b"cooked", b"via sll"]
    assert all((e.orig_h, e.resp_h) == (SRC, "") for e in events)


def test_where_for_layer2_frames_and_link_event_schema() -> None:
    link = LinkInfo(src_mac=SRC, dst_mac=DST, vlan=5, vlan_inner=0, ethertype=TOY_TYPE)
    ctx, out = link_ctx("toy_l2", link)
    ctx.ts = 77
    assert ctx.where() == {
        "ts": 77,
        "flow_id": -1,
        "orig_h": SRC,
        "orig_p": 0,
        "resp_h": DST,
        "resp_p": 0,
        "is_orig": True,
    }
    assert ctx.where_link()["vlan"] == 5
    ctx.weird("toy_l2_x", "detail")
    assert out.weirds[0].orig_h == SRC
    assert event_schema(ToyFrame).names[:8] == [
        "ts",
        "flow_id",
        "orig_h",
        "orig_p",
        "resp_h",
        "resp_p",
        "is_orig",
        "vlan",
    ]
    # A TCP/UDP context is unchanged: link is None and where() describes the flow.
    flow_ctx = PduContext(
        FlowInfo(3, Transport.TCP, "10.0.0.1", 1, "10.0.0.2", 2), "x", out.events.append, out.weirds.append
    )
    assert flow_ctx.link is None
    assert (flow_ctx.where()["orig_h"], flow_ctx.where()["flow_id"]) == ("10.0.0.1", 3)


def test_pipeline_writes_events_for_layer2_protocols(tmp_path: Path) -> None:
    """``analyze`` with the built-in registry: one events file per layer-2 log, nothing from IP traffic."""
    from scapy.contrib.cdp import CDPMsgDeviceID, CDPv2_HDR
    from scapy.contrib.lldp import LLDPDUChassisID, LLDPDUEndOfLLDPDU, LLDPDUPortID, LLDPDUTimeToLive
    from scapy.contrib.pnio import ProfinetIO
    from scapy.contrib.pnio_dcp import ProfinetDCP

    frames = [
        Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.2", hwsrc=SRC),
        Ether(src=SRC, dst="01:80:c2:00:00:0e")
        / LLDPDUChassisID(subtype=4, id=SRC)
        / LLDPDUPortID(subtype=5, id="p1")
        / LLDPDUTimeToLive(ttl=120)
        / LLDPDUEndOfLLDPDU(),
        Dot3(src=SRC, dst="01:00:0c:cc:cc:cc")
        / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
        / SNAP(OUI=0xC, code=0x2000)
        / CDPv2_HDR(msg=[CDPMsgDeviceID(val=b"sw1")]),
        Ether(src=SRC, dst="01:0e:cf:00:00:00")
        / ProfinetIO(frameID=0xFEFE)
        / ProfinetDCP(service_id=5, service_type=0, option=255, sub_option=255, dcp_data_length=4),
        Ether(src=SRC, dst=DST) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=6) / (b"x" * 30),
    ]
    _, result, out = analyze_frames(tmp_path, frames)
    logs = ("arp", "lldp", "cdp", "profinet_dcp")
    assert {log: result.events.get(log) for log in logs} == dict.fromkeys(logs, 1)
    assert "weird" not in result.events
    for log in ("arp", "lldp", "cdp", "profinet_dcp"):
        (row,) = read_events(out, log)
        assert (row["flow_id"], row["orig_h"], row["orig_p"], row["resp_p"]) == (-1, SRC, 0, 0)
    assert read_events(out, "cdp")[0]["device_id"] == "sw1"
    assert result.flows == 1


@pytest.mark.parametrize("declared", [frozenset({0x0800}), frozenset({0x05DC}), frozenset()])
def test_unusable_declarations_select_nothing(declared: frozenset[int]) -> None:
    class Declared(ToyL2):
        name = "declared"
        ethertypes = declared
        snap = frozenset()

    frames = [Ether(src=SRC, dst=DST) / IP() / UDP() / b"x", snap_frame(b"y"), toy(b"z")]
    events, _, _ = run_frames(frames, [Declared])
    assert events == []


def test_documented_layer2_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer-2 plugin example of docs/plugins.md, run as written, as a built-in-style module."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    (code,) = [b for b in blocks if "class BeaconDissector" in b]
    (tmp_path / "fieldward_beacon.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("fieldward_beacon")
    try:
        frames = [
            Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff", type=TOY_TYPE) / Raw(b"\x42tank-7" + bytes(40)),
            Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff", type=TOY_TYPE) / Raw(b"\x41not a beacon"),
            Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff", type=TOY_TYPE) / Raw(b"\x42\xff"),
        ]
        events, weird, _ = run_frames(frames, [module.BeaconDissector])
        assert [(e.log, getattr(e, "station", None)) for e in events] == [
            ("beacon", "tank-7"),
            ("weird", None),
        ]
        assert weird.counts["beacon_bad_station"] == 1
    finally:
        sys.modules.pop("fieldward_beacon", None)
