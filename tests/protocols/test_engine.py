"""The protocol engine with a toy length-prefixed protocol: recognition, framing, confinement."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from fieldward.capture.batch import PacketBatch
from fieldward.decode.flows import FlowTable
from fieldward.decode.l2l4 import decode_batch
from fieldward.protocols.base import Dissector, Event, PduContext, Transport, Verdict
from fieldward.protocols.engine import ProtocolEngine, ProtocolSettings
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

MAGIC = b"TOY!"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToyEvent(Event):
    log: ClassVar[str] = "toy"
    body: str


class ToyDissector(Dissector):
    """Frames: 'TOY!' + 2-byte big-endian body length + body. Body 'boom' raises."""

    name = "toy"
    transports = frozenset({Transport.TCP, Transport.UDP})
    ports = frozenset({7777})
    event_types = (ToyEvent,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if len(data) < 4:
            return Verdict.MAYBE if MAGIC.startswith(data) else Verdict.NO
        return Verdict.YES if data.startswith(MAGIC) else Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) < 6:
            return 0
        if not data.startswith(MAGIC):
            return -1
        size = 6 + struct.unpack_from(">H", data, 4)[0]
        return size if len(data) >= size else 0

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        body = pdu[6:].decode("ascii", "replace") if ctx.flow.transport == Transport.TCP else pdu[6:].decode()
        if body == "boom":
            raise RuntimeError("dissector bug")
        if body == "bad":
            ctx.weird("toy_bad_body", "body was 'bad'")
            return
        ctx.emit(ToyEvent(**ctx.where(), body=body))


def toy(body: str) -> bytes:
    raw = body.encode()
    return MAGIC + struct.pack(">H", len(raw)) + raw


def tcp_conversation(port: int, client_segments: list[bytes]) -> list[bytes]:
    c, s = "10.0.0.1", "10.0.0.2"
    seq_c, seq_s = 1000, 5000
    pkts = [
        Ether() / IP(src=c, dst=s) / TCP(sport=40000, dport=port, flags="S", seq=seq_c),
        Ether() / IP(src=s, dst=c) / TCP(sport=port, dport=40000, flags="SA", seq=seq_s, ack=seq_c + 1),
        Ether() / IP(src=c, dst=s) / TCP(sport=40000, dport=port, flags="A", seq=seq_c + 1, ack=seq_s + 1),
    ]
    seq = seq_c + 1
    for data in client_segments:
        pkts.append(Ether() / IP(src=c, dst=s) / TCP(sport=40000, dport=port, flags="PA", seq=seq) / data)
        seq += len(data)
    pkts.append(Ether() / IP(src=c, dst=s) / TCP(sport=40000, dport=port, flags="FA", seq=seq))
    return [bytes(p) for p in pkts]


def run(packets: list[bytes], batch_size: int = 1000) -> tuple[list[Event], WeirdLog, ProtocolEngine]:
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    registry.add(ToyDissector)
    engine = ProtocolEngine(registry, events.append, weird, ProtocolSettings(max_exceptions_per_flow=2))
    flows = FlowTable(weird=weird)
    for start in range(0, len(packets), batch_size):
        chunk = packets[start : start + batch_size]
        batch = PacketBatch.from_packets(chunk, ts_ns=[(start + i) * 1000 for i in range(len(chunk))])
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird, engine


def bodies(events: list[Event]) -> list[str]:
    return [e.body for e in events if isinstance(e, ToyEvent)]


def test_pdus_split_across_segments_and_several_per_segment() -> None:
    stream = toy("one") + toy("two") + toy("three") + toy("four")
    segments = [stream[:3], stream[3:15], stream[15:16], stream[16:]]
    for batch_size in (1, 2, 1000):
        events, _, _ = run(tcp_conversation(7777, segments), batch_size)
        assert bodies(events) == ["one", "two", "three", "four"], batch_size


def test_recognition_is_by_content_not_port() -> None:
    events, _, engine = run(tcp_conversation(5020, [toy("elsewhere")]))
    assert bodies(events) == ["elsewhere"]
    assert engine.flows_by_protocol == {"toy": 1}
    events, _, engine = run(tcp_conversation(7777, [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]))
    assert events == []
    assert engine.flows_by_protocol == {}


def test_event_fields_carry_flow_orientation() -> None:
    events, _, _ = run(tcp_conversation(7777, [toy("x")]))
    (event,) = events
    assert isinstance(event, ToyEvent)
    assert (event.orig_h, event.orig_p, event.resp_h, event.resp_p) == ("10.0.0.1", 40000, "10.0.0.2", 7777)
    assert event.is_orig
    assert event.ts == 3000


def test_dissector_exception_is_confined_and_counted() -> None:
    events, weird, _ = run(tcp_conversation(7777, [toy("a"), toy("boom"), toy("b"), toy("boom"), toy("c")]))
    # Two exceptions detach the dissector from the flow (max_exceptions_per_flow=2); the run goes on.
    assert bodies(events) == ["a", "b"]
    assert weird.counts["dissector_exception"] == 2


def test_malformed_pdu_and_garbage_become_weird_events() -> None:
    events, weird, _ = run(tcp_conversation(7777, [toy("a"), toy("bad"), b"garbage!", toy("after")]))
    assert bodies(events) == ["a", "after"]
    names = [getattr(e, "name", None) for e in events if e.log == "weird"]
    assert names == ["toy_bad_body", "toy_unframeable_data"]
    assert weird.counts["toy_bad_body"] == 1
    assert weird.counts["toy_unframeable_data"] == 1


def test_udp_datagrams() -> None:
    pkts = [
        bytes(Ether() / IP(src="10.0.0.5", dst="10.0.0.6") / UDP(sport=1234, dport=9999) / toy(f"d{i}"))
        for i in range(3)
    ]
    events, _, _ = run(pkts)
    assert bodies(events) == ["d0", "d1", "d2"]
