"""The MQTT columnar fast path (QoS 0 PUBLISH of MQTT 3.1/3.1.1) gives exactly the per-PDU output.

Differential tests in the style of ``test_fast_path.py``: the same TCP conversations dissected with
and without fast paths, in batches of several sizes, must give the same events (per log, in order) and
the same weirds. Packets the fast path must leave to ``parse`` (QoS 1/2, DUP on QoS 0, wildcard, empty,
NUL or non-ASCII topics, non-minimal lengths, MQTT 5 sessions) are mixed in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.protocols.base import Event, ProtocolWeird
from fieldward.protocols.mqtt import MqttDissector, MqttPublish, MqttSession
from tests.protocols.test_fast_path import _assert_same_output, _by_log, _tcp, run_dissector
from tests.protocols.test_mqtt import connect4, connect5, pkt, utf8, varint

PUBLISH, PUBACK, DISCONNECT = 3, 4, 14


def publish(
    topic: bytes | str, payload: bytes = b"21.5", flags: int = 0, packet_id: int | None = None
) -> bytes:
    body = utf8(topic) + (packet_id.to_bytes(2, "big") if packet_id is not None else b"") + payload
    return pkt(PUBLISH, flags, body)


CONVERSATION: list[tuple[bool, bytes]] = [
    (True, connect4()),
    (False, pkt(2, 0, b"\x00\x00")),
    (True, publish("plant/line1/temp")),
    (True, publish("plant/line1/temp", b"x" * 300, flags=0x01)),  # retained, long payload, 2-octet length
    (False, publish("cmd/valve", b"")),  # from the broker, empty payload
    (True, publish("plant/+/temp")),  # wildcard: parse() reports it
    (True, publish("")),  # empty topic: parse()
    (True, publish(b"caf\xc3\xa9")),  # non-ASCII topic: parse()
    (True, publish(b"bad\x00topic")),  # NUL: parse()
    (True, publish("t", flags=0x08)),  # DUP on QoS 0: parse()
    (True, publish("q1", flags=0x02, packet_id=7)),  # QoS 1: parse()
    (False, pkt(PUBACK, 0, b"\x00\x07")),
    (True, bytes([0x30, 0x86, 0x00]) + utf8("t") + b"abc"),  # non-minimal remaining length: parse()
    (True, publish("a/b") + publish("c/d")),  # two in one segment
    (True, publish("split/topic")[:3]),  # one split across segments
    (True, publish("split/topic")[3:]),
    (True, pkt(DISCONNECT, 0)),
]


def _run(packets: list[bytes], fast: bool, batch_size: int) -> tuple[list[Event], dict[str, int]]:
    return run_dissector(MqttDissector, packets, fast, batch_size)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_mqtt_fast_and_per_pdu_agree(batch_size: int) -> None:
    packets = _tcp(CONVERSATION) + _tcp(CONVERSATION[:5], cport=40002)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
    rows = [
        (e.topic, e.retain, e.payload_len, e.from_client, e.status)
        for e in fast
        if isinstance(e, MqttPublish)
    ]
    assert rows[:3] == [
        ("plant/line1/temp", False, 4, True, "ok"),
        ("plant/line1/temp", True, 300, True, "ok"),
        ("cmd/valve", False, 0, False, "ok"),
    ]
    assert ("split/topic", False, 4, True, "ok") in rows
    sessions = [(e.client_packets, e.server_packets) for e in fast if isinstance(e, MqttSession)]
    assert sessions == [(14, 3), (3, 2)]
    weirds = {e.name for e in fast if isinstance(e, ProtocolWeird)}
    assert {
        "mqtt_wildcard_in_topic",
        "mqtt_empty_topic",
        "mqtt_bad_utf8",
        "mqtt_non_minimal_length",
    } <= weirds


def test_mqtt_fast_path_takes_qos0_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    original = MqttDissector.parse

    def spy(self: MqttDissector, pdu: bytes, ctx: object) -> None:
        parsed.append(pdu[0] >> 4)
        original(self, pdu, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(MqttDissector, "parse", spy)
    _run(_tcp(CONVERSATION), fast=True, batch_size=1000)
    # CONNECT, CONNACK, PUBACK, DISCONNECT and the seven PUBLISH packets the fast path must leave
    assert sorted(parsed) == [1, 2] + [PUBLISH] * 7 + [PUBACK, DISCONNECT]


def test_mqtt5_session_publishes_go_to_parse() -> None:
    """MQTT 5 PUBLISH packets carry properties: the fast path leaves them to ``parse``."""
    segments = [(True, connect5()), (True, pkt(PUBLISH, 0, utf8("v5/topic") + b"\x00" + b"data"))]
    fast, fast_weird = _run(_tcp(segments), fast=True, batch_size=1000)
    slow, slow_weird = _run(_tcp(segments), fast=False, batch_size=1000)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
    assert [e.topic for e in fast if isinstance(e, MqttPublish)] == ["v5/topic"]


def test_mqtt_fast_path_parquet_matches(tmp_path: Path) -> None:
    capture = tmp_path / "mqtt.pcap"
    wrpcap(str(capture), [Ether(p) for p in _tcp(CONVERSATION) + _tcp(CONVERSATION, cport=40003)])
    tables = _assert_same_output(capture, tmp_path)
    assert tables["events/mqtt_publish.parquet"].num_rows == 2 * 13


def test_mqtt_fast_path_matches_on_corpus(corpus: Path, tmp_path: Path) -> None:
    _assert_same_output(corpus / "mqtt" / "mqtt.pcap", tmp_path)


_topics = st.one_of(st.sampled_from(["a", "a/b", "x/+", "#", "", "t\x00"]), st.binary(max_size=6))
_packets = st.one_of(
    st.builds(
        lambda t, p, f: publish(t, p, flags=f),
        _topics,
        st.binary(max_size=140),
        st.sampled_from([0, 1, 8, 9]),
    ),
    st.builds(lambda t, p: publish(t, p, flags=2, packet_id=1), _topics, st.binary(max_size=4)),
    st.builds(lambda body: bytes([0x30]) + varint(len(body)) + body, st.binary(max_size=10)),
    st.sampled_from([connect4(), connect5(), pkt(PUBACK, 0, b"\x00\x01"), pkt(DISCONNECT, 0)]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _packets), min_size=1, max_size=12), st.integers(1, 6))
def test_fuzz_mqtt_fast_path_equals_per_pdu(segments: list[tuple[bool, bytes]], batch_size: int) -> None:
    packets = _tcp(segments)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
