"""TCP reassembly: scapy-built conversations with reordering, duplicates, overlaps, wrap-around,
missing SYN and gaps; PDUs split across and packed into segments; the batch entry point; tshark's
"follow tcp" on a corpus capture."""

from __future__ import annotations

import random
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from fieldward.capture.reader import open_capture
from fieldward.decode.columns import TCP_FIN, TCP_SYN
from fieldward.decode.flows import FlowTable
from fieldward.decode.reassembly import StreamChunk, TcpReassembler
from fieldward.weird import WeirdLog
from tests.decode.test_flows import CLIENT, SERVER, T0, decode, make_batch

ISN = 1000


def segments(data: bytes, sizes: list[int], isn: int = ISN) -> list[Packet]:
    """A client->server SYN, the data cut into segments of the given sizes (cycled), then a FIN."""
    out = [Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=502, flags="S", seq=isn)]
    pos, k = 0, 0
    while pos < len(data):
        size = max(sizes[k % len(sizes)], 1)
        seq = (isn + 1 + pos) % 2**32
        out.append(
            Ether()
            / IP(src=CLIENT, dst=SERVER)
            / TCP(sport=40000, dport=502, flags="PA", seq=seq)
            / data[pos : pos + size]
        )
        pos, k = pos + size, k + 1
    fin_seq = (isn + 1 + len(data)) % 2**32
    out.append(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=502, flags="FA", seq=fin_seq))
    return out


def feed_all(reassembler: TcpReassembler, packets: list[Packet], flow_id: int = 7) -> list[StreamChunk]:
    chunks: list[StreamChunk] = []
    for i, p in enumerate(packets):
        t = p[TCP]
        chunks += reassembler.feed(flow_id, 0, t.seq, int(t.flags), bytes(t.payload), T0 + i)
    return chunks


def stream(chunks: list[StreamChunk]) -> bytes:
    """Concatenated chunk data, after checking the chunks are contiguous and in order."""
    position = chunks[0].offset - chunks[0].gap_before if chunks else 0
    for chunk in chunks:
        assert chunk.offset == position + chunk.gap_before
        position = chunk.offset + len(chunk.data)
    return b"".join(c.data for c in chunks)


def test_in_order_stream_is_delivered_as_is() -> None:
    data = bytes(range(256)) * 20
    r = TcpReassembler()
    chunks = feed_all(r, segments(data, [100, 333, 7]))
    assert stream(chunks) == data
    assert chunks[0].offset == 0
    assert all(c.gap_before == 0 for c in chunks)
    assert r.closed(7, 0)


@settings(max_examples=80, deadline=None)
@given(
    st.binary(min_size=1, max_size=3000),
    st.lists(st.integers(1, 400), min_size=1, max_size=8),
    st.randoms(use_true_random=False),
    st.integers(0, 2**32 - 1),
)
def test_reordered_duplicated_and_overlapping_segments(
    data: bytes, sizes: list[int], rnd: random.Random, isn: int
) -> None:
    packets = segments(data, sizes, isn)
    syn, body, fin = packets[0], packets[1:-1], packets[-1]
    # Overlapping re-sends with the same bytes: random sub-ranges of the stream.
    for _ in range(rnd.randint(0, 4)):
        start = rnd.randrange(len(data))
        end = min(len(data), start + rnd.randint(1, 500))
        seq = (isn + 1 + start) % 2**32
        body.append(Ether() / IP() / TCP(flags="PA", seq=seq) / data[start:end])
    body += rnd.sample(body, k=min(len(body), rnd.randint(0, 3)))  # exact duplicates
    rnd.shuffle(body)
    weird = WeirdLog()
    r = TcpReassembler(weird=weird)
    chunks = feed_all(r, [syn, *body, fin])
    assert stream(chunks) == data
    assert all(c.gap_before == 0 for c in chunks)
    assert weird.total == 0
    assert r.buffered_bytes == 0


def test_sequence_numbers_wrap_around() -> None:
    data = bytes(random.Random(1).randbytes(5000))
    packets = segments(data, [1000], isn=2**32 - 2500)
    assert any(p[TCP].seq < 3000 for p in packets[1:])  # the stream crosses 2**32
    r = TcpReassembler()
    chunks = feed_all(r, [packets[0], *reversed(packets[1:-1]), packets[-1]])
    assert stream(chunks) == data
    assert chunks[-1].offset + len(chunks[-1].data) == len(data)


def test_missing_syn_starts_at_the_first_segment_seen() -> None:
    data = b"0123456789" * 30
    packets = segments(data, [50])
    r = TcpReassembler()
    chunks = feed_all(r, packets[2:])  # no SYN, first data segment lost too
    assert chunks[0].offset == 0
    assert stream(chunks) == data[50:]


def test_syn_consumes_one_sequence_number() -> None:
    r = TcpReassembler()
    assert r.feed(1, 0, 500, TCP_SYN, b"", T0) == []
    (chunk,) = r.feed(1, 0, 501, 0, b"abc", T0 + 1)
    assert (chunk.offset, chunk.data) == (0, b"abc")


def test_conflicting_overlap_keeps_the_first_copy_and_counts_a_weird() -> None:
    weird = WeirdLog()
    r = TcpReassembler(weird=weird)
    r.feed(1, 0, ISN, TCP_SYN, b"", T0)
    later = r.feed(1, 0, ISN + 1 + 4, 0, b"EFGH", T0 + 1)  # buffered: offset 0..3 missing
    assert later == []
    got = r.feed(1, 0, ISN + 1, 0, b"abcdXXGHij", T0 + 2)  # overlaps the buffered EFGH with XXGH
    assert stream(got) == b"abcdEFGHij"
    assert weird.counts["tcp_overlap_conflict"] == 1
    # A retransmission of delivered bytes with different content: dropped, counted.
    assert r.feed(1, 0, ISN + 1, 0, b"zz", T0 + 3) == []
    assert weird.counts["tcp_overlap_conflict"] == 2
    assert r.feed(1, 0, ISN + 1, 0, b"ab", T0 + 4) == []  # same bytes: no weird
    assert weird.counts["tcp_overlap_conflict"] == 2


def test_gap_is_delivered_on_close_with_its_size() -> None:
    data = b"A" * 100 + b"B" * 100 + b"C" * 100
    packets = segments(data, [100])
    weird = WeirdLog()
    r = TcpReassembler(weird=weird)
    chunks = feed_all(r, [packets[0], packets[1], packets[3]])  # the "B" segment never arrives
    assert stream(chunks) == b"A" * 100
    chunks += r.close(7)
    assert [c.gap_before for c in chunks] == [0, 100]
    assert chunks[1].offset == 200
    assert chunks[1].data == b"C" * 100
    assert weird.counts["tcp_reassembly_gap"] == 1
    assert not r.closed(7, 0)  # forgotten after close()


def test_buffer_overflow_gives_up_the_hole() -> None:
    data = bytes(range(100)) * 10
    packets = segments(data, [100])
    weird = WeirdLog()
    r = TcpReassembler(max_buffer_bytes_per_direction=250, weird=weird)
    chunks = feed_all(r, [packets[0], *packets[2:6]])  # segment 1 lost; 400 bytes wait
    assert chunks[0].gap_before == 100
    assert chunks[0].offset == 100
    assert weird.counts["tcp_reassembly_gap"] == 1
    assert r.buffered_bytes <= 250


def test_large_hole_is_not_waited_for() -> None:
    r = TcpReassembler(max_gap_bytes=1000)
    r.feed(1, 0, ISN, TCP_SYN, b"", T0)
    (chunk,) = r.feed(1, 0, ISN + 1 + 5000, 0, b"late", T0 + 1)
    assert (chunk.offset, chunk.gap_before, chunk.data) == (5000, 5000, b"late")
    assert r.feed(1, 0, ISN + 1 + 100, 0, b"old", T0 + 2) == []  # behind the stream now


def test_fin_and_rst_close_a_direction() -> None:
    r = TcpReassembler()
    r.feed(1, 0, ISN, TCP_SYN, b"", T0)
    r.feed(1, 0, ISN + 1, TCP_FIN, b"bye", T0 + 1)
    assert r.closed(1, 0)
    assert r.feed(1, 0, ISN + 4, 0, b"after", T0 + 2) == []
    r.feed(1, 1, 9000, 0, b"x", T0)
    (chunk,) = r.feed(1, 1, 9002, 0, b"z", T0 + 1) or [StreamChunk(1, 1, -1, b"", 0)]
    assert chunk.offset == -1  # out of order, buffered
    rst = r.feed(1, 1, 9003, 0x04, b"ignored", T0 + 2)
    assert [(c.offset, c.data, c.gap_before) for c in rst] == [(2, b"z", 1)]
    assert r.closed(1, 1)


def pdus(count: int, seed: int) -> list[bytes]:
    """Length-prefixed application messages (a 2-byte length then the body)."""
    rnd = random.Random(seed)
    bodies = [rnd.randbytes(rnd.randint(0, 300)) for _ in range(count)]
    return [struct.pack("!H", len(b)) + b for b in bodies]


def parse_pdus(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 2 <= len(data):
        (length,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos : pos + 2 + length])
        pos += 2 + length
    assert pos == len(data)
    return out


@pytest.mark.parametrize("sizes", [[1], [3, 700], [1460], [5000]])
def test_pdus_split_across_and_packed_into_segments(sizes: list[int]) -> None:
    messages = pdus(40, seed=len(sizes))
    data = b"".join(messages)
    r = TcpReassembler()
    chunks = feed_all(r, segments(data, sizes))
    assert parse_pdus(stream(chunks)) == messages


def conversation() -> tuple[list[Packet], bytes, bytes]:
    """A client/server exchange with a reordered and a duplicated segment, on a wire."""
    request = b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n" * 3
    response = b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 8
    c, s = (CLIENT, SERVER, 40000, 80), (SERVER, CLIENT, 80, 40000)

    def pkt(side: tuple[str, str, int, int], flags: str, seq: int, data: bytes = b"") -> Packet:
        return (
            Ether()
            / IP(src=side[0], dst=side[1])
            / TCP(sport=side[2], dport=side[3], flags=flags, seq=seq)
            / data
        )

    cs, ss = 100, 5000
    wire = [pkt(c, "S", cs), pkt(s, "SA", ss), pkt(c, "A", cs + 1)]
    wire += [pkt(c, "PA", cs + 1 + 40, request[40:]), pkt(c, "PA", cs + 1, request[:40])]  # reordered
    body = [pkt(s, "PA", ss + 1 + i, response[i : i + 500]) for i in range(0, len(response), 500)]
    wire += [body[0], body[2], body[1], body[1], *body[3:]]  # reordered and duplicated
    wire += [
        pkt(c, "FA", cs + 1 + len(request)),
        pkt(s, "FA", ss + 1 + len(response)),
        pkt(c, "A", cs + 2 + len(request)),
    ]
    return wire, request, response


@pytest.mark.parametrize("as_mask", [True, False])
def test_reassemble_batch_selects_wanted_flows(as_mask: bool) -> None:
    wire, request, response = conversation()
    other = [Ether() / IP(src="10.9.9.9", dst=SERVER) / TCP(sport=1, dport=2, flags="PA", seq=1) / b"noise"]
    packets = other + wire
    table = FlowTable()
    r = TcpReassembler()
    chunks: list[StreamChunk] = []
    for start in range(0, len(packets), 4):
        batch = make_batch(
            packets[start : start + 4],
            [T0 + i for i in range(start, start + 4)][: len(packets[start : start + 4])],
        )
        assignment = table.update(batch, decode(batch))
        wanted: np.ndarray | set[int] = np.array([False, True]) if as_mask else {1}
        chunks += r.reassemble_batch(batch, decode(batch), assignment, wanted)
    assert {c.flow_id for c in chunks} == {1}
    assert stream([c for c in chunks if c.direction == 0]) == request
    assert stream([c for c in chunks if c.direction == 1]) == response
    assert r.closed(1, 0)
    assert r.closed(1, 1)
    assert r.active_directions == 2


def tshark_stdout(tshark: str, *args: str) -> str:
    return subprocess.run([tshark, *args], capture_output=True, text=True, check=True).stdout


def test_corpus_streams_match_tshark_follow(corpus: Path, tshark: str) -> None:
    """The reassembled bytes of three HTTP flows equal tshark's "follow tcp" output, holes included
    (tshark marks them "[N bytes missing in capture file]")."""
    path = corpus / "http/bro.org.pcap"
    wanted = {0, 1, 2}
    table = FlowTable()
    r = TcpReassembler()
    chunks: list[StreamChunk] = []
    with open_capture(path) as reader:
        for batch in reader:
            decoded = decode(batch)
            assignment = table.update(batch, decoded)
            chunks += r.reassemble_batch(batch, decoded, assignment, wanted)
    chunks += r.flush()
    flows = {f["flow_id"]: f for f in table.finish().to_pylist()}
    for flow in sorted(wanted):
        record = flows[flow]
        ports = f"tcp.port=={record['orig_port']} && tcp.port=={record['resp_port']}"
        index = tshark_stdout(tshark, "-r", str(path), "-Y", ports, "-T", "fields", "-e", "tcp.stream")
        index = index.split()[0]
        out = tshark_stdout(tshark, "-r", str(path), "-q", "-z", f"follow,tcp,raw,{index}")
        lines = [line for line in out.splitlines() if line.strip() and set(line.strip()) <= HEX_DIGITS]
        node0 = b"".join(bytes.fromhex(line) for line in lines if not line.startswith("\t"))
        node1 = b"".join(bytes.fromhex(line.strip()) for line in lines if line.startswith("\t"))
        mine = [c for c in chunks if c.flow_id == flow]
        assert len(node0) + len(node1) > 0
        for direction, theirs in ((0, node0), (1, node1)):
            ours = [c for c in mine if c.direction == direction]
            assert b"".join(c.data for c in ours) == MISSING.sub(b"", theirs)
            assert [c.gap_before for c in ours if c.gap_before] == [int(n) for n in MISSING.findall(theirs)]


MISSING = re.compile(rb"\[(\d+) bytes missing in capture file\]\x00?")  # tshark keeps the C NUL
HEX_DIGITS = set("0123456789abcdef")
