"""Flow table: counts against tshark's conversations, batch-split invariance, timeouts, eviction,
Zeek conn_state/history, and a reference model of the split rules (hypothesis)."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet

from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import open_capture
from fieldward.decode.columns import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, DecodedBatch
from fieldward.decode.flows import FLOW_SCHEMA, FlowConfig, FlowTable
from fieldward.weird import WeirdLog

CORPUS_FILES = [
    "modbus/modbusSmall.pcap",
    "http/bro.org.pcap",
    "dns/mdns.pcap",
    "dnp3/dnp3_udp_read.pcap",
    "tls/ssl.v3.pcap",
]
NO_TIMEOUTS = FlowConfig(
    tcp_idle_timeout_s=1e9, udp_idle_timeout_s=1e9, other_idle_timeout_s=1e9, active_timeout_s=1e9
)
T0 = 1_700_000_000 * 10**9
SEC = 10**9
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
MAC_C, MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"


# ---------------------------------------------------------------------------------- helpers


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts, timestamps as integer ns (datetime cannot hold nanoseconds)."""
    columns = {
        name: (col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col)
        for name, col in zip(table.column_names, table.columns, strict=True)
    }
    return pa.table(columns).to_pylist()


def decode(batch: PacketBatch, weird: WeirdLog | None = None) -> DecodedBatch:
    """The real L2-L4 decoder."""
    from fieldward.decode.l2l4 import decode_batch

    return decode_batch(batch, weird if weird is not None else WeirdLog())


def make_batch(packets: list[Packet], ts_ns: list[int], first_index: int = 0) -> PacketBatch:
    return PacketBatch.from_packets([bytes(p) for p in packets], ts_ns=ts_ns, first_index=first_index)


def run_table(
    packets: list[Packet], ts_ns: list[int], config: FlowConfig | None = None, weird: WeirdLog | None = None
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """One batch through a fresh table; returns (flows, flow_id per packet, direction per packet)."""
    table = FlowTable(config, weird)
    batch = make_batch(packets, ts_ns)
    assignment = table.update(batch, decode(batch))
    return table.finish(), assignment.flow_id, assignment.direction


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, payload: bytes = b"", seq: int = 0) -> Packet:
    mac_src, mac_dst = (MAC_C, MAC_S) if src == CLIENT else (MAC_S, MAC_C)
    return (
        Ether(src=mac_src, dst=mac_dst)
        / IP(src=src, dst=dst)
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq)
        / payload
    )


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> Packet:
    return Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def capture_flows(path: Path, config: FlowConfig, batch_packets: int = 65536) -> pa.Table:
    """A capture through open_capture, the decoder and a flow table, expiring after every batch."""
    table = FlowTable(config)
    parts = []
    with open_capture(path, batch_packets=batch_packets) as reader:
        for batch in reader:
            table.update(batch, decode(batch))
            if len(batch):
                parts.append(table.expire(int(batch.ts_ns[-1])))
    parts.append(table.finish())
    return pa.concat_tables(parts).sort_by("flow_id")


def tshark_fields(tshark: str, path: Path, fields: Iterable[str], *options: str) -> list[list[str]]:
    args = [tshark, "-r", str(path), *options, "-T", "fields", "-E", "occurrence=f"]
    for name in fields:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


# ---------------------------------------------------------------------------------- corpus vs tshark


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_conversations_match_tshark(corpus: Path, tshark: str, name: str) -> None:
    path = corpus / name
    rows = tshark_fields(
        tshark,
        path,
        [
            "tcp.stream",
            "udp.stream",
            "ip.proto",
            "ipv6.nxt",
            "ip.src",
            "ipv6.src",
            "tcp.srcport",
            "udp.srcport",
            "frame.len",
            "ip.len",
            "ipv6.plen",
        ],
    )
    # Per tshark stream: sender (ip, port) -> [frames, frame bytes, IP bytes]
    expected: dict[tuple[str, str], dict[tuple[str, int], list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0, 0])
    )
    for tcp_stream, udp_stream, proto, nxt, ip4, ip6, tport, uport, frame_len, ip_len, plen in rows:
        transport = proto or nxt
        if transport == "6" and tcp_stream:
            stream, port = ("tcp", tcp_stream), tport
        elif transport == "17" and udp_stream:
            stream, port = ("udp", udp_stream), uport
        else:
            continue
        ip_bytes = int(ip_len) if ip4 else 40 + int(plen)
        counters = expected[stream][(ip4 or ip6, int(port))]
        counters[0] += 1
        counters[1] += int(frame_len)
        counters[2] += ip_bytes

    flows = capture_flows(path, NO_TIMEOUTS)
    got = []
    for flow in flows.filter(pa.compute.is_in(flows["proto"], pa.array(["tcp", "udp"]))).to_pylist():
        sides = {}
        for side in ("orig", "resp"):
            if flow[f"{side}_pkts"]:
                sides[(flow[f"{side}_ip"], flow[f"{side}_port"])] = (
                    flow[f"{side}_pkts"],
                    flow[f"{side}_wire_bytes"],
                    flow[f"{side}_bytes"],
                )
        got.append(sorted(sides.items()))
    want = [sorted((k, tuple(v)) for k, v in sides.items()) for sides in expected.values()]
    assert len(want) > 0
    assert sorted(got) == sorted(want)


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_small_batches_give_the_same_flows(corpus: Path, name: str) -> None:
    path = corpus / name
    whole = capture_flows(path, FlowConfig())
    pieces = capture_flows(path, FlowConfig(), batch_packets=7)
    assert whole.num_rows > 0
    assert whole.equals(pieces)


def test_flow_records_have_the_documented_schema(corpus: Path) -> None:
    flows = capture_flows(corpus / "http/bro.org.pcap", FlowConfig())
    assert flows.schema.equals(FLOW_SCHEMA)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "flows.md").read_text()
    for column in FLOW_SCHEMA.names:
        assert f"`{column}`" in docs, column


# ---------------------------------------------------------------------------------- keys and directions


def test_both_directions_share_a_flow_and_first_sender_originates() -> None:
    packets = [
        udp(CLIENT, SERVER, 40000, 502, b"req"),
        udp(SERVER, CLIENT, 502, 40000, b"response"),
        udp(CLIENT, SERVER, 40000, 502, b"req2"),
    ]
    flows, flow_id, direction = run_table(packets, [T0, T0 + 1000, T0 + 2000])
    assert flow_id.tolist() == [0, 0, 0]
    assert direction.tolist() == [0, 1, 0]
    (flow,) = rows(flows)
    assert (flow["orig_ip"], flow["orig_port"], flow["resp_ip"], flow["resp_port"]) == (
        CLIENT,
        40000,
        SERVER,
        502,
    )
    assert (flow["orig_pkts"], flow["resp_pkts"]) == (2, 1)
    assert flow["orig_payload_bytes"] == len(b"req") + len(b"req2")
    assert flow["resp_payload_bytes"] == len(b"response")
    assert flow["orig_bytes"] == sum(len(p[IP]) for p in packets if p[IP].src == CLIENT)
    assert flow["conn_state"] == "SF"
    assert flow["history"] == "Dd"


def test_syn_ack_first_makes_its_receiver_the_originator() -> None:
    packets = [
        tcp(SERVER, CLIENT, 80, 40000, "SA"),
        tcp(CLIENT, SERVER, 40000, 80, "A"),
    ]
    flows, _, direction = run_table(packets, [T0, T0 + 1])
    assert direction.tolist() == [1, 0]
    (flow,) = rows(flows)
    assert (flow["orig_ip"], flow["orig_port"]) == (CLIENT, 40000)
    assert flow["orig_mac"] == MAC_C
    assert flow["resp_mac"] == MAC_S
    assert flow["history"].startswith("^h")


def test_non_ip_packets_and_vlans() -> None:
    arp = Ether() / ARP(psrc=CLIENT, pdst=SERVER)
    tagged = Ether() / Dot1Q(vlan=7) / IP(src=CLIENT, dst=SERVER) / UDP(sport=1, dport=2) / b"x"
    untagged = udp(CLIENT, SERVER, 1, 2)
    flows, flow_id, _ = run_table([arp, tagged, untagged], [T0, T0 + 1, T0 + 2])
    assert flow_id[0] == -1
    assert flow_id[1] != flow_id[2]
    assert sorted(flows["vlan"].to_pylist()) == [0, 7]


def test_icmp_echo_request_and_reply_are_one_flow() -> None:
    packets = [
        Ether() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=1),
        Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=1),
        Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3),
    ]
    flows, flow_id, direction = run_table(packets, [T0, T0 + 1, T0 + 2])
    assert flow_id[0] == flow_id[1] != flow_id[2]
    assert direction[:2].tolist() == [0, 1]
    echo = rows(flows.filter(pa.compute.equal(flows["flow_id"], int(flow_id[0]))))[0]
    assert (echo["proto"], echo["orig_port"], echo["resp_port"]) == ("icmp", 8, 0)
    unreachable = rows(flows.filter(pa.compute.equal(flows["flow_id"], int(flow_id[2]))))[0]
    assert (unreachable["orig_ip"], unreachable["orig_port"], unreachable["resp_port"]) == (SERVER, 3, 3)


def test_ipv6_flows_format_addresses() -> None:
    packets = [
        Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5353, dport=5353) / b"q",
        Ether() / IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=5353, dport=5353) / b"a",
    ]
    flows, flow_id, direction = run_table(packets, [T0, T0 + 1])
    assert flow_id.tolist() == [0, 0]
    assert direction.tolist() == [0, 1]
    (flow,) = rows(flows)
    assert (flow["ip_version"], flow["orig_ip"], flow["resp_ip"]) == (6, "2001:db8::1", "2001:db8::2")
    assert flow["orig_bytes"] == len(packets[0][IPv6])


# ---------------------------------------------------------------------------------- timeouts and eviction


def test_idle_timeout_splits_inside_a_batch_and_across_batches() -> None:
    config = FlowConfig(udp_idle_timeout_s=10)
    packets = [udp(CLIENT, SERVER, 1, 2) for _ in range(4)]
    times = [T0, T0 + 5 * SEC, T0 + 16 * SEC, T0 + 20 * SEC]  # 11 s gap > 10 s
    flows, flow_id, _ = run_table(packets, times, config)
    assert flow_id.tolist() == [0, 0, 1, 1]
    assert flows["end_reason"].to_pylist() == ["idle_timeout", "end_of_capture"]

    table = FlowTable(config)
    first = make_batch(packets[:2], times[:2])
    table.update(first, decode(first))
    assert table.expire(times[1] + 10 * SEC).num_rows == 0  # exactly the timeout: still live
    expired = table.expire(times[1] + 10 * SEC + 1)
    assert expired["end_reason"].to_pylist() == ["idle_timeout"]
    assert expired["orig_pkts"].to_pylist() == [2]
    assert table.stats.live_flows == 0


def test_active_timeout_splits_long_flows() -> None:
    config = FlowConfig(udp_idle_timeout_s=60, active_timeout_s=30)
    times = [T0 + k * 10 * SEC for k in range(10)]  # one packet every 10 s for 90 s
    packets = [udp(CLIENT, SERVER, 1, 2) for _ in times]
    flows, flow_id, _ = run_table(packets, times, config)
    # Each flow runs from its first packet until the first packet 30 s or more after it.
    expected, start, current = [], times[0], 0
    for t in times:
        if t - start >= 30 * SEC:
            current, start = current + 1, t
        expected.append(current)
    assert flow_id.tolist() == expected
    assert set(flows["end_reason"].to_pylist()[:-1]) == {"active_timeout"}
    assert max(flows["duration_s"].to_pylist()) < 30


def test_eviction_keeps_the_table_bounded_and_counts_a_weird() -> None:
    weird = WeirdLog()
    table = FlowTable(FlowConfig(max_flows=3), weird)
    packets = [udp(CLIENT, SERVER, 1000 + i, 53) for i in range(10)]
    batch = make_batch(packets, [T0 + i for i in range(10)])
    table.update(batch, decode(batch))
    assert table.stats.live_flows == 3
    assert table.stats.flows_evicted == 7
    assert weird.counts["flow_table_evicted"] == 7
    assert any(w.layer == "flow" for w in weird.samples if w.name == "flow_table_evicted")
    evicted = table.expire(T0)
    assert evicted["end_reason"].to_pylist() == ["evicted"] * 7
    # The least recently seen went first: the survivors are the last three ports.
    assert sorted(table.finish()["orig_port"].to_pylist()) == [1007, 1008, 1009]


# ---------------------------------------------------------------------------------- TCP state


HANDSHAKE = [(CLIENT, "S"), (SERVER, "SA"), (CLIENT, "A")]


@pytest.mark.parametrize(
    ("exchange", "state", "history"),
    [
        # Zeek's conn.log documentation defines each state; the histories follow its letters.
        (
            [
                *HANDSHAKE,
                (CLIENT, "PA+"),
                (SERVER, "A"),
                (SERVER, "PA+"),
                (CLIENT, "FA"),
                (SERVER, "FA"),
                (CLIENT, "A"),
            ],
            "SF",
            "ShADadFf",
        ),
        ([(CLIENT, "S"), (SERVER, "RA")], "REJ", "Sr"),
        ([(CLIENT, "S")], "S0", "S"),
        ([(CLIENT, "S"), (CLIENT, "S")], "S0", "S"),
        ([*HANDSHAKE, (CLIENT, "PA+")], "S1", "ShAD"),
        ([*HANDSHAKE, (CLIENT, "PA+"), (CLIENT, "R")], "RSTO", "ShADR"),
        ([*HANDSHAKE, (CLIENT, "PA+"), (SERVER, "R")], "RSTR", "ShADr"),
        ([(CLIENT, "S"), (CLIENT, "R")], "RSTOS0", "SR"),
        ([(SERVER, "SA"), (SERVER, "R")], "RSTRH", "^hr"),
        ([(CLIENT, "S"), (CLIENT, "F")], "SH", "SF"),
        ([(SERVER, "SA"), (SERVER, "F")], "SHR", "^hf"),
        ([*HANDSHAKE, (CLIENT, "FA")], "S2", "ShAF"),
        ([*HANDSHAKE, (SERVER, "FA")], "S3", "ShAf"),
        ([(CLIENT, "PA+"), (SERVER, "A")], "OTH", "Da"),
    ],
)
def test_conn_state_and_history(exchange: list[tuple[str, str]], state: str, history: str) -> None:
    packets = []
    for sender, flags in exchange:
        payload = b"data" if flags.endswith("+") else b""
        flag_text = flags.rstrip("+")
        if sender == CLIENT:
            packets.append(tcp(CLIENT, SERVER, 40000, 502, flag_text, payload))
        else:
            packets.append(tcp(SERVER, CLIENT, 502, 40000, flag_text, payload))
    flows, flow_id, _ = run_table(packets, [T0 + i * 1000 for i in range(len(packets))])
    assert set(flow_id.tolist()) == {0}
    (flow,) = rows(flows)
    assert (flow["conn_state"], flow["history"]) == (state, history)


def test_port_reuse_after_close_starts_a_new_flow() -> None:
    first = [
        *[
            tcp(*((CLIENT, SERVER, 40000, 80) if s == CLIENT else (SERVER, CLIENT, 80, 40000)), f)
            for s, f in HANDSHAKE
        ],
        tcp(CLIENT, SERVER, 40000, 80, "FA"),
        tcp(SERVER, CLIENT, 80, 40000, "FA"),
        tcp(CLIENT, SERVER, 40000, 80, "A"),
    ]
    second = [tcp(CLIENT, SERVER, 40000, 80, "S"), tcp(SERVER, CLIENT, 80, 40000, "RA")]
    packets = first + second
    flows, flow_id, _ = run_table(packets, [T0 + i * SEC for i in range(len(packets))])
    assert flow_id.tolist() == [0] * len(first) + [1] * len(second)
    assert flows["conn_state"].to_pylist() == ["SF", "REJ"]
    assert flows["end_reason"].to_pylist() == ["tcp_close", "tcp_close"]


# ---------------------------------------------------------------------------------- reference model


def reference_flows(
    packets: list[tuple[int, bool, int, int, int]], config: FlowConfig, boundaries: set[int]
) -> tuple[list[int], list[int]]:
    """Sequential model of the documented split rules: per packet (key, sender_is_a, proto, flags,
    ts) -> (flow ids, directions). Expiry runs at the last timestamp of each batch."""
    idle = {6: config.tcp_idle_timeout_s, 17: config.udp_idle_timeout_s}
    live: dict[int, dict[str, int]] = {}
    next_id = 0
    ids, dirs = [], []
    last_ts = 0
    for i, (key, from_a, proto, flags, ts) in enumerate(packets):
        if i in boundaries:  # expire(now) between batches
            for k in [
                k
                for k, f in live.items()
                if last_ts - f["last"] > f["idle"] or last_ts - f["first"] >= f["active"]
            ]:
                del live[k]
        flow = live.get(key)
        syn = proto == 6 and flags & TCP_SYN and not flags & TCP_ACK
        closed = flow is not None and (flow["rst"] or (flow["fa"] and flow["fb"]))
        if (
            flow is None
            or ts - flow["last"] > flow["idle"]
            or ts - flow["first"] >= flow["active"]
            or (syn and closed)
        ):
            flip = proto == 6 and flags & TCP_SYN and flags & TCP_ACK
            flow = live[key] = {
                "id": next_id,
                "first": ts,
                "orig_is_a": int(from_a != bool(flip)),
                "idle": int(idle.get(proto, config.other_idle_timeout_s) * SEC),
                "active": int(config.active_timeout_s * SEC),
                "fa": 0,
                "fb": 0,
                "rst": 0,
            }
            next_id += 1
        elif syn:
            flow.update(fa=0, fb=0, rst=0)
        if proto == 6:
            flow["fa"] |= bool(flags & TCP_FIN) and from_a
            flow["fb"] |= bool(flags & TCP_FIN) and not from_a
            flow["rst"] |= bool(flags & TCP_RST)
        flow["last"] = ts
        last_ts = ts
        ids.append(flow["id"])
        dirs.append(int(from_a != bool(flow["orig_is_a"])))
    return ids, dirs


ENDPOINTS = [(CLIENT, SERVER, 6), (CLIENT, SERVER, 17), ("10.0.0.3", CLIENT, 6)]
FLAG_CHOICES = ["S", "SA", "A", "PA", "FA", "R", "RA"]

packet_strategy = st.tuples(
    st.integers(0, len(ENDPOINTS) - 1),  # conversation
    st.booleans(),  # direction on the wire
    st.sampled_from(FLAG_CHOICES),
    st.integers(0, 40),  # gap to the previous packet, seconds
    st.integers(0, 30),  # payload bytes
)


@settings(max_examples=60, deadline=None)
@given(st.lists(packet_strategy, min_size=1, max_size=40), st.sets(st.integers(1, 39), max_size=5))
def test_vectorized_splits_match_the_sequential_model(
    specs: list[tuple[int, bool, str, int, int]], boundaries: set[int]
) -> None:
    config = FlowConfig(tcp_idle_timeout_s=50, udp_idle_timeout_s=20, active_timeout_s=90)
    packets, times, model_input = [], [], []
    ts = T0
    for conv, forward, flags, gap, size in specs:
        a_ip, b_ip, proto = ENDPOINTS[conv]
        src, dst, sport, dport = (a_ip, b_ip, 40000, 502) if forward else (b_ip, a_ip, 502, 40000)
        ts += gap * SEC
        if proto == 6:
            packets.append(
                Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / (b"x" * size)
            )
            flag_bits = int(TCP(flags=flags).flags)
        else:
            packets.append(udp(src, dst, sport, dport, b"x" * size))
            flag_bits = 0
        times.append(ts)
        # canonical side A: the smaller (address, port) -- any fixed choice works for the model
        from_a = (src, sport) < (dst, dport)
        model_input.append((conv, from_a, proto, flag_bits, ts))

    cuts = sorted(b for b in boundaries if b < len(packets))
    table = FlowTable(config)
    flow_ids, directions, parts = [], [], []
    for start, end in zip([0, *cuts], [*cuts, len(packets)], strict=True):
        if start == end:
            continue
        if start:
            parts.append(table.expire(times[start - 1]))
        batch = make_batch(packets[start:end], times[start:end], first_index=start)
        assignment = table.update(batch, decode(batch))
        flow_ids += assignment.flow_id.tolist()
        directions += assignment.direction.tolist()
    want_ids, want_dirs = reference_flows(model_input, config, set(cuts))
    assert flow_ids == want_ids
    assert directions == want_dirs

    # Totals: every IP packet is in exactly one flow record.
    flows = pa.concat_tables([*parts, table.expire(ts), table.finish()])
    assert sum(flows["orig_pkts"].to_pylist()) + sum(flows["resp_pkts"].to_pylist()) == len(packets)
    ip_total = sum(len(p[IP]) for p in packets)
    assert sum(flows["orig_bytes"].to_pylist()) + sum(flows["resp_bytes"].to_pylist()) == ip_total
    assert flows.num_rows == len(set(flow_ids))


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(24))), st.integers(1, 24))
def test_flow_totals_equal_packet_totals_in_any_order(order: list[int], batch_size: int) -> None:
    base = []
    for i in range(8):
        base += [
            udp(CLIENT, SERVER, 1000 + i % 3, 53, b"q" * i),
            udp(SERVER, CLIENT, 53, 1000 + i % 3, b"a" * (2 * i)),
            tcp(CLIENT, SERVER, 2000 + i % 2, 80, "PA", b"d" * i),
        ]
    packets = [base[i] for i in order]
    times = [T0 + k for k in range(len(packets))]
    table = FlowTable()
    parts = []
    for start in range(0, len(packets), batch_size):
        batch = make_batch(packets[start : start + batch_size], times[start : start + batch_size])
        table.update(batch, decode(batch))
        parts.append(table.expire(times[min(start + batch_size, len(packets)) - 1]))
    parts.append(table.finish())
    flows = pa.concat_tables(parts)
    assert flows.num_rows == 5  # 3 UDP client ports + 2 TCP client ports
    pkts = sum(flows["orig_pkts"].to_pylist()) + sum(flows["resp_pkts"].to_pylist())
    ip_bytes = sum(flows["orig_bytes"].to_pylist()) + sum(flows["resp_bytes"].to_pylist())
    wire = sum(flows["orig_wire_bytes"].to_pylist()) + sum(flows["resp_wire_bytes"].to_pylist())
    payload = sum(flows["orig_payload_bytes"].to_pylist()) + sum(flows["resp_payload_bytes"].to_pylist())
    assert pkts == len(packets)
    assert ip_bytes == sum(len(p[IP]) for p in packets)
    assert wire == sum(len(p) for p in packets)
    assert payload == sum(len(p[IP].payload.payload) for p in packets)


def test_hash_collisions_never_merge_flows(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every key hashed alike, grouping and lookup fall back to full keys: same flows."""
    path = corpus / "http/bro.org.pcap"
    normal = capture_flows(path, FlowConfig(), batch_packets=50)
    import fieldward.decode.flows as flows_module

    monkeypatch.setattr(flows_module, "_HASH_MASK", 0)  # the flow kernel's hashes: all zero
    colliding = capture_flows(path, FlowConfig(), batch_packets=50)
    assert normal.num_rows > 1
    assert colliding.equals(normal)


@pytest.mark.parametrize(
    "settings_",
    [{"max_flows": 0}, {"tcp_idle_timeout_s": 0}, {"active_timeout_s": -1}, {"community_id_seed": 1 << 16}],
)
def test_invalid_settings_are_rejected(settings_: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="FlowConfig"):
        FlowConfig(**settings_)  # type: ignore[arg-type]


def test_batch_and_decoded_batch_must_match() -> None:
    batch = make_batch([udp(CLIENT, SERVER, 1, 2)], [T0])
    other = make_batch([udp(CLIENT, SERVER, 1, 2)] * 2, [T0, T0])
    with pytest.raises(ValueError, match="decoded batch"):
        FlowTable().update(batch, decode(other))
