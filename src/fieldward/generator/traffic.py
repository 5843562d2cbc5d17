"""The bulk producers: vectorized request/response polling, cyclic UDP I/O and RTP video.

Each keeps its per-conversation state (next cycle, TCP sequence numbers, IP ids, counters) in numpy
arrays and turns every cycle due in a chunk into template events with a handful of array operations,
whatever the number of conversations. Only session opening and teardown (handshake, protocol setup,
FIN exchange) go through :class:`~fieldward.generator.build.TcpConversation` in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fieldward.generator.build import (
    ACK,
    PROTO_TCP,
    PROTO_UDP,
    TCP_PAYLOAD,
    UDP_PAYLOAD,
    Events,
    Link,
    Slot,
    TcpConversation,
    TemplateTable,
    udp_frame,
)
from fieldward.generator.plant import Device, Plant
from fieldward.generator.protocols import (
    FU_A_PAYLOAD,
    fu_a,
    h264_pps,
    h264_slice_header,
    h264_sps,
    rtp_header,
)
from fieldward.generator.schedule import (
    I64,
    MS,
    NEVER,
    SECOND,
    US,
    FlowLog,
    Proto,
    Sink,
    due,
    segment_offsets,
    segment_rank,
    uniform,
)

_U32 = 0xFFFFFFFF


@dataclass(slots=True)
class ExchangeSpec:
    """One kind of request/response a poller sends, with its payload variants.

    ``requests`` and ``responses`` hold ``values x nseq`` payloads each, all of one length: variant
    ``v * nseq + s`` carries value set ``v`` at sequence position ``s`` (``nseq`` > 1 for protocols
    whose sequence number lives inside checksummed payload, like DNP3). An empty ``responses``
    means the server only acknowledges (MQTT QoS 0). ``req_slot``/``resp_slot`` are the payload
    offsets of the session counter (transaction id, PDU reference, ...), -1 for none.
    """

    weight: float
    requests: Sequence[bytes]
    responses: Sequence[bytes] = ()
    nseq: int = 1
    req_slot: int = -1
    resp_slot: int = -1


@dataclass(slots=True)
class SessionSpec:
    """A TCP client/server session: opened at ``open_ns``, polled every ``period_ns``, closed or not."""

    tag: Proto
    client: Device
    server: Device
    sport: int
    dport: int
    open_ns: int
    close_ns: int | None
    period_ns: int
    jitter_ns: int
    rtt_ns: int
    response_delay: tuple[int, int]
    ack_delay: tuple[int, int]
    exchanges: list[ExchangeSpec]
    setup: list[tuple[bytes, bytes]] = field(default_factory=list)
    teardown: list[bytes] = field(default_factory=list)
    counter_width: int = 2
    counter_little: bool = False
    counter_start: int = 0
    counter_modulo: int = 1 << 16
    counter_add: int = 0
    seq_start: int = 0

    def cycle_span(self) -> int:
        """Longest time from a cycle's nominal start to its last packet."""
        return self.jitter_ns + self.response_delay[1] + self.ack_delay[1]


class PollSessions:
    """Request/response polling over long-lived or reconnecting TCP sessions (vectorized)."""

    def __init__(
        self,
        specs: Sequence[SessionSpec],
        plant: Plant,
        table: TemplateTable,
        rng: np.random.Generator,
        flows: FlowLog,
    ) -> None:
        self.specs = list(specs)
        self.rng = rng
        self.flows = flows
        self.convs: list[TcpConversation] = []
        n = len(self.specs)
        c_ack: list[int] = []
        s_ack: list[int] = []
        cdf: list[float] = []
        ex_cols: dict[str, list[int]] = {
            name: []
            for name in ("req_base", "req_nval", "resp_base", "resp_nval", "nseq", "req_len", "resp_len")
        }
        for i, spec in enumerate(self.specs):
            if spec.period_ns <= 2 * spec.cycle_span():
                raise ValueError(f"poll period too short for its delays: {spec}")
            conv = plant.conversation(spec.client, spec.server, spec.sport, spec.dport, rng)
            self.convs.append(conv)
            c_ack.append(table.add(conv.template(True, b"", ACK), spec.tag))
            s_ack.append(table.add(conv.template(False, b"", ACK), spec.tag))
            if not spec.exchanges:
                continue
            weights = np.array([e.weight for e in spec.exchanges], dtype=np.float64)
            cumulative = np.cumsum(weights) / weights.sum()
            cumulative[-1] = 1.0
            cdf.extend((i + cumulative).tolist())
            for ex in spec.exchanges:
                req_slots = (
                    (Slot(TCP_PAYLOAD + ex.req_slot, spec.counter_width, spec.counter_little),)
                    if ex.req_slot >= 0
                    else ()
                )
                resp_slots = (
                    (Slot(TCP_PAYLOAD + ex.resp_slot, spec.counter_width, spec.counter_little),)
                    if ex.resp_slot >= 0
                    else ()
                )
                if len({len(r) for r in ex.requests}) != 1 or len({len(r) for r in ex.responses}) > 1:
                    raise ValueError("all variants of an exchange must have one length")
                req_ids = [
                    table.add(conv.template(True, payload), spec.tag, req_slots) for payload in ex.requests
                ]
                resp_ids = [
                    table.add(conv.template(False, payload), spec.tag, resp_slots) for payload in ex.responses
                ]
                ex_cols["req_base"].append(req_ids[0])
                ex_cols["req_nval"].append(len(ex.requests) // ex.nseq)
                ex_cols["resp_base"].append(resp_ids[0] if resp_ids else -1)
                ex_cols["resp_nval"].append(max(len(ex.responses) // ex.nseq, 1))
                ex_cols["nseq"].append(ex.nseq)
                ex_cols["req_len"].append(len(ex.requests[0]))
                ex_cols["resp_len"].append(len(ex.responses[0]) if ex.responses else 0)
        self.cdf = np.array(cdf, dtype=np.float64)
        self.ex = {name: np.array(values, dtype=np.int64) for name, values in ex_cols.items()}

        def col(values: Sequence[int]) -> I64:
            return np.array(values, dtype=np.int64)

        self.c_ack = col(c_ack)
        self.s_ack = col(s_ack)
        self.period = col([s.period_ns for s in self.specs])
        self.jitter = col([s.jitter_ns for s in self.specs])
        self.close_limit = col(
            [NEVER if s.close_ns is None else s.close_ns - s.cycle_span() - MS for s in self.specs]
        )
        self.rd_lo = col([s.response_delay[0] for s in self.specs])
        self.rd_hi = col([s.response_delay[1] for s in self.specs])
        self.ad_lo = col([s.ack_delay[0] for s in self.specs])
        self.ad_hi = col([s.ack_delay[1] for s in self.specs])
        self.ctr_start = col([s.counter_start for s in self.specs])
        self.ctr_mod = col([s.counter_modulo for s in self.specs])
        self.ctr_add = col([s.counter_add for s in self.specs])
        self.seq_start = col([s.seq_start for s in self.specs])
        self.first = np.full(n, NEVER, dtype=np.int64)
        self.next_k = np.zeros(n, dtype=np.int64)
        self.c_seq = np.zeros(n, dtype=np.int64)
        self.s_seq = np.zeros(n, dtype=np.int64)
        self.c_ipid = np.zeros(n, dtype=np.int64)
        self.s_ipid = np.zeros(n, dtype=np.int64)
        self._open_order = sorted(range(n), key=lambda i: (self.specs[i].open_ns, i))
        closing = [i for i in range(n) if self.specs[i].close_ns is not None]
        self._close_order = sorted(closing, key=lambda i: (self.specs[i].close_ns or 0, i))
        self._next_open = 0
        self._next_close = 0

    def expected(self, start: int, end: int) -> tuple[float, float]:
        """Expected packets and bytes in ``[start, end)`` (for chunk sizing and documentation)."""
        packets = octets = 0.0
        ex_start = 0
        for spec in self.specs:
            stop = end if spec.close_ns is None else min(spec.close_ns, end)
            active = max(stop - max(spec.open_ns, start), 0)
            cycles = active / spec.period_ns if spec.exchanges else 0.0
            weights = np.array([e.weight for e in spec.exchanges], dtype=np.float64)
            count = len(spec.exchanges)
            if count:
                w = weights / weights.sum()
                req = self.ex["req_len"][ex_start : ex_start + count]
                resp = self.ex["resp_len"][ex_start : ex_start + count]
                per_cycle = float((w * (2 + (resp > 0))).sum())
                per_bytes = float((w * (req + resp + 60 * (2 + (resp > 0)))).sum())
                packets += cycles * per_cycle
                octets += cycles * per_bytes
            ex_start += count
            if spec.open_ns < end:
                packets += 3 + 3 * len(spec.setup)
        return packets, octets

    def emit(self, t0: int, t1: int, sink: Sink) -> None:
        while (
            self._next_open < len(self._open_order)
            and self.specs[self._open_order[self._next_open]].open_ns < t1
        ):
            self._open(self._open_order[self._next_open], sink)
            self._next_open += 1
        self._cycles(t1, sink)
        while (
            self._next_close < len(self._close_order)
            and (self.specs[self._close_order[self._next_close]].close_ns or 0) < t1
        ):
            self._close(self._close_order[self._next_close], sink)
            self._next_close += 1

    def _delay(self, bounds: tuple[int, int]) -> int:
        return int(bounds[0] + self.rng.random() * (bounds[1] - bounds[0]))

    def _open(self, i: int, sink: Sink) -> None:
        spec, conv = self.specs[i], self.convs[i]
        packets = conv.handshake(spec.open_ns, spec.rtt_ns)
        t = packets[-1][0]
        for request, response in spec.setup:
            t += int(self.rng.integers(300 * US, 3 * MS))
            done, t = conv.exchange(
                t, request, response, self._delay(spec.response_delay), self._delay(spec.ack_delay)
            )
            packets.extend(done)
        sink.packets(spec.tag, packets)
        self.flows.add(spec.tag, spec.client.ip, spec.server.ip, spec.sport, spec.dport, PROTO_TCP)
        if spec.exchanges:
            self.first[i] = t + int(self.rng.integers(10 * MS, 100 * MS))
        self.c_seq[i], self.s_seq[i] = conv.c_seq, conv.s_seq
        self.c_ipid[i], self.s_ipid[i] = conv.c_ipid, conv.s_ipid

    def _close(self, i: int, sink: Sink) -> None:
        spec, conv = self.specs[i], self.convs[i]
        conv.c_seq, conv.s_seq = int(self.c_seq[i]), int(self.s_seq[i])
        conv.c_ipid, conv.s_ipid = int(self.c_ipid[i]) & 0xFFFF, int(self.s_ipid[i]) & 0xFFFF
        t = spec.close_ns or 0
        packets = []
        for message in spec.teardown:
            packets.append(conv.client_send(t, message))
            t += self._delay(spec.ack_delay)
            packets.append(conv.server_ack(t))
            t += int(self.rng.integers(100 * US, 2 * MS))
        packets.extend(conv.close(t, spec.rtt_ns))
        sink.packets(spec.tag, packets)
        self.first[i] = NEVER
        self.next_k[i] = 0

    def _cycles(self, t1: int, sink: Sink) -> None:
        limit = np.minimum(self.close_limit, t1)
        item, k, count = due(self.first, self.period, self.next_k, limit)
        n = item.shape[0]
        if n == 0:
            return
        rng = self.rng
        ts = self.first[item] + k * self.period[item] + (rng.random(n) * self.jitter[item]).astype(np.int64)
        ex = np.searchsorted(self.cdf, item + rng.random(n), side="right")
        req_len = self.ex["req_len"][ex]
        resp_len = self.ex["resp_len"][ex]
        answered = resp_len > 0
        c_off = segment_offsets(req_len, count)
        s_off = segment_offsets(resp_len, count)
        c_pkts = segment_offsets(1 + answered.astype(np.int64), count)
        rank = segment_rank(count)
        c_seq = self.c_seq[item] + c_off
        s_seq = self.s_seq[item] + s_off
        nseq = self.ex["nseq"][ex]
        position = (self.seq_start[item] + k) % nseq
        value = rng.integers(0, 1 << 30, n)
        req_tpl = self.ex["req_base"][ex] + (value % self.ex["req_nval"][ex]) * nseq + position
        resp_tpl = np.where(
            answered,
            self.ex["resp_base"][ex] + (value % self.ex["resp_nval"][ex]) * nseq + position,
            self.s_ack[item],
        )
        counter = (self.ctr_start[item] + k) % self.ctr_mod[item] + self.ctr_add[item]
        t_resp = ts + uniform(rng, self.rd_lo[item], self.rd_hi[item], n)
        c_ipid = self.c_ipid[item] + c_pkts
        request = Events.make(ts, req_tpl, c_seq, s_seq, c_ipid, counter)
        response = Events.make(t_resp, resp_tpl, s_seq, c_seq + req_len, self.s_ipid[item] + rank, counter)
        a = np.flatnonzero(answered)
        t_ack = t_resp[a] + uniform(rng, self.ad_lo[item[a]], self.ad_hi[item[a]], a.shape[0])
        ack = Events.make(
            t_ack, self.c_ack[item[a]], (c_seq + req_len)[a], (s_seq + resp_len)[a], c_ipid[a] + 1
        )
        sink.events.extend((request, response, ack))
        sessions = self.first.shape[0]
        self.next_k += count
        self.c_seq = (
            self.c_seq + np.bincount(item, weights=req_len, minlength=sessions).astype(np.int64)
        ) & _U32
        self.s_seq = (
            self.s_seq + np.bincount(item, weights=resp_len, minlength=sessions).astype(np.int64)
        ) & _U32
        self.c_ipid = (
            self.c_ipid + np.bincount(item, weights=1 + answered, minlength=sessions).astype(np.int64)
        ) & 0xFFFF
        self.s_ipid = (self.s_ipid + count) & 0xFFFF


@dataclass(slots=True)
class StreamSpec:
    """A cyclic UDP datagram stream (CIP class-1 I/O): one packet every ``period_ns``."""

    tag: Proto
    link: Link
    sport: int
    dport: int
    first_ns: int
    period_ns: int
    jitter_ns: int
    payloads: Sequence[bytes]
    hold: int
    """Packets between changes of the payload variant (the I/O data)."""
    slots: tuple[Slot, ...] = ()
    """Counters at payload offsets: slot 0 gets ``start0 + k``, slot 1 ``start1 + k``."""
    start0: int = 0
    start1: int = 0


class UdpStreams:
    def __init__(
        self, specs: Sequence[StreamSpec], table: TemplateTable, rng: np.random.Generator, flows: FlowLog
    ) -> None:
        self.specs = list(specs)
        self.rng = rng
        self.flows = flows
        base: list[int] = []
        for spec in self.specs:
            slots = tuple(Slot(UDP_PAYLOAD + s.offset, s.width, s.little) for s in spec.slots)
            ids = [
                table.add(
                    udp_frame(spec.link, spec.sport, spec.dport, payload, checksum=False), spec.tag, slots
                )
                for payload in spec.payloads
            ]
            base.append(ids[0])
        self.base = np.array(base, dtype=np.int64)
        self.nval = np.array([len(s.payloads) for s in self.specs], dtype=np.int64)
        self.hold = np.array([s.hold for s in self.specs], dtype=np.int64)
        self.first = np.array([s.first_ns for s in self.specs], dtype=np.int64)
        self.period = np.array([s.period_ns for s in self.specs], dtype=np.int64)
        self.jitter = np.array([s.jitter_ns for s in self.specs], dtype=np.int64)
        self.start0 = np.array([s.start0 for s in self.specs], dtype=np.int64)
        self.start1 = np.array([s.start1 for s in self.specs], dtype=np.int64)
        self.ipid = rng.integers(0, 1 << 16, len(self.specs)).astype(np.int64)
        self.next_k = np.zeros(len(self.specs), dtype=np.int64)
        self.lengths = np.array([len(s.payloads[0]) + UDP_PAYLOAD for s in self.specs], dtype=np.int64)

    def expected(self, start: int, end: int) -> tuple[float, float]:
        active = np.maximum(end - np.maximum(self.first, start), 0)
        packets = active / self.period
        return float(packets.sum()), float((packets * self.lengths).sum())

    def emit(self, t0: int, t1: int, sink: Sink) -> None:
        item, k, count = due(self.first, self.period, self.next_k, t1)
        n = item.shape[0]
        for i in np.flatnonzero((self.next_k == 0) & (count > 0)).tolist():
            spec = self.specs[i]
            self.flows.add(spec.tag, spec.link.src_ip, spec.link.dst_ip, spec.sport, spec.dport, PROTO_UDP)
        self.next_k += count
        if n == 0:
            return
        ts = (
            self.first[item]
            + k * self.period[item]
            + (self.rng.random(n) * self.jitter[item]).astype(np.int64)
        )
        tpl = self.base[item] + (k // self.hold[item]) % self.nval[item]
        sink.events.append(
            Events.make(ts, tpl, ipid=self.ipid[item] + k, s0=self.start0[item] + k, s1=self.start1[item] + k)
        )


@dataclass(slots=True)
class CameraSpec:
    """An H.264 video stream from a camera to the recorder (RTP over UDP, FU-A fragmentation)."""

    camera: Device
    link: Link
    sport: int
    dport: int
    ssrc: int
    first_ns: int
    fps: int
    kbps: int
    gop: int
    width: int = 1920
    height: int = 1080
    seq0: int = 0
    ts0: int = 0


_LAST_SIZES = tuple(min(32 * (q + 1), FU_A_PAYLOAD) for q in range(math.ceil(FU_A_PAYLOAD / 32)))
"""Quantized sizes of a frame's last fragment (keeps the number of template shapes small)."""
_RTP_OFFSET = UDP_PAYLOAD
_START_VARIANTS = 4
_MID_VARIANTS = 32
"""Payload variants of full-size fragments (random bytes; 32 x 1454 bytes exceeds gzip's window)."""
_IDR_RATIO = 6.0
"""Size of an IDR frame relative to a P frame."""


class VideoStreams:
    """Camera video: frames every 1/fps s (IDR every ``gop``), each split into FU-A packets."""

    def __init__(
        self, specs: Sequence[CameraSpec], table: TemplateTable, rng: np.random.Generator, flows: FlowLog
    ) -> None:
        self.specs = list(specs)
        self.rng = rng
        self.flows = flows
        cols: dict[str, list[int]] = {
            name: []
            for name in ("sps", "pps", "start_idr", "start_p", "mid_idr", "mid_p", "last_idr", "last_p")
        }
        slots = (Slot(_RTP_OFFSET + 2, 2), Slot(_RTP_OFFSET + 4, 4))  # sequence number, timestamp
        for spec in self.specs:

            def add(payload: bytes, marker: bool, spec: CameraSpec = spec) -> int:
                frame = udp_frame(
                    spec.link,
                    spec.sport,
                    spec.dport,
                    rtp_header(0, 0, spec.ssrc, marker) + payload,
                    checksum=False,
                )
                return table.add(frame, Proto.RTP, slots)

            def noise(n: int) -> bytes:
                return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

            cols["sps"].append(add(h264_sps(spec.width, spec.height), False))
            cols["pps"].append(add(h264_pps(), False))
            for idr, nal in ((True, 0x65), (False, 0x41)):
                kind = "idr" if idr else "p"
                header = h264_slice_header(idr)
                starts = [
                    add(fu_a(nal, True, False) + header + noise(FU_A_PAYLOAD - len(header)), False)
                    for _ in range(_START_VARIANTS)
                ]
                mids = [
                    add(fu_a(nal, False, False) + noise(FU_A_PAYLOAD), False) for _ in range(_MID_VARIANTS)
                ]
                lasts = [add(fu_a(nal, False, True) + noise(size), True) for size in _LAST_SIZES]
                cols[f"start_{kind}"].append(starts[0])
                cols[f"mid_{kind}"].append(mids[0])
                cols[f"last_{kind}"].append(lasts[0])
        self.tpl = {name: np.array(values, dtype=np.int64) for name, values in cols.items()}
        n = len(self.specs)
        self.first = np.array([s.first_ns for s in self.specs], dtype=np.int64)
        self.fps = np.array([s.fps for s in self.specs], dtype=np.int64)
        self.gop = np.array([s.gop for s in self.specs], dtype=np.int64)
        self.ticks = 90_000 // self.fps
        average = np.array([s.kbps * 1000 / 8 for s in self.specs], dtype=np.float64) / self.fps
        self.p_size = average * self.gop / (self.gop - 1 + _IDR_RATIO)
        self.spacing = np.array([int(rng.integers(40, 120)) * US for _ in self.specs], dtype=np.int64)
        self.seq = np.array([s.seq0 for s in self.specs], dtype=np.int64)
        self.ts0 = np.array([s.ts0 for s in self.specs], dtype=np.int64)
        self.ipid = rng.integers(0, 1 << 16, n).astype(np.int64)
        self.next_k = np.zeros(n, dtype=np.int64)
        self.sent_packets = np.zeros(n, dtype=np.int64)
        self.sent_octets = np.zeros(n, dtype=np.int64)
        self.last_ts = np.zeros(n, dtype=np.int64)

    def expected(self, start: int, end: int) -> tuple[float, float]:
        active = np.maximum(end - np.maximum(self.first, start), 0) / SECOND
        average = self.p_size * (self.gop - 1 + _IDR_RATIO) / self.gop
        frames = active * self.fps
        packets = frames * (np.ceil(average / FU_A_PAYLOAD) + 0.5)
        return float(packets.sum()), float((frames * average + packets * 70).sum())

    def emit(self, t0: int, t1: int, sink: Sink) -> None:
        # Frame k of a stream is nominally at first + k / fps seconds (exact integer arithmetic).
        start = self.first + (self.next_k * SECOND) // self.fps
        count = np.where(t1 > start, -((-(t1 - self.first) * self.fps) // SECOND) - self.next_k, 0)
        count = np.maximum(count, 0)
        for i in np.flatnonzero((self.next_k == 0) & (count > 0)).tolist():
            spec = self.specs[i]
            self.flows.add(Proto.RTP, spec.link.src_ip, spec.link.dst_ip, spec.sport, spec.dport, PROTO_UDP)
        cam = np.repeat(np.arange(self.first.shape[0], dtype=np.int64), count)
        k = self.next_k[cam] + segment_rank(count)
        self.next_k += count
        frames = cam.shape[0]
        if frames == 0:
            return
        rng = self.rng
        frame_ts = (
            self.first[cam] + (k * SECOND) // self.fps[cam] + (rng.random(frames) * 2 * MS).astype(np.int64)
        )
        idr = k % self.gop[cam] == 0
        size = self.p_size[cam] * np.where(idr, _IDR_RATIO, 1.0) * rng.lognormal(0.0, 0.2, frames)
        fragments = np.maximum(np.ceil(size / FU_A_PAYLOAD).astype(np.int64), 2)
        remainder = np.clip(size - (fragments - 1) * FU_A_PAYLOAD, 1, FU_A_PAYLOAD)
        last_q = np.minimum(np.ceil(remainder / 32).astype(np.int64) - 1, len(_LAST_SIZES) - 1)
        extra = np.where(idr, 2, 0)
        per_frame = fragments + extra
        # Keep every frame's burst well inside its frame interval.
        interval = SECOND // self.fps[cam]
        spacing = np.minimum(self.spacing[cam], (interval * 6 // 10) // per_frame)
        frame_of = np.repeat(np.arange(frames, dtype=np.int64), per_frame)
        j = segment_rank(per_frame)
        fragment = j - extra[frame_of]
        c = cam[frame_of]
        is_idr = idr[frame_of]
        last = fragment == fragments[frame_of] - 1
        choices = [
            fragment == -2,
            fragment == -1,
            (fragment == 0) & is_idr,
            fragment == 0,
            last & is_idr,
            last,
            is_idr,
        ]
        variant = rng.integers(0, _MID_VARIANTS, c.shape[0])
        values = [
            self.tpl["sps"][c],
            self.tpl["pps"][c],
            self.tpl["start_idr"][c] + variant % _START_VARIANTS,
            self.tpl["start_p"][c] + variant % _START_VARIANTS,
            self.tpl["last_idr"][c] + last_q[frame_of],
            self.tpl["last_p"][c] + last_q[frame_of],
            self.tpl["mid_idr"][c] + variant,
        ]
        tpl = np.select(choices, values, default=self.tpl["mid_p"][c] + variant)
        ts = frame_ts[frame_of] + j * spacing[frame_of]
        streams = self.first.shape[0]
        frame_packets = np.bincount(cam, weights=per_frame, minlength=streams).astype(np.int64)
        before = segment_offsets(per_frame, count)[frame_of] + j
        seq = self.seq[c] + before
        rtp_ts = self.ts0[c] + k[frame_of] * self.ticks[c]
        sink.events.append(Events.make(ts, tpl, ipid=self.ipid[c] + before, s0=seq, s1=rtp_ts))
        self.seq = (self.seq + frame_packets) & 0xFFFF
        self.ipid = (self.ipid + frame_packets) & 0xFFFF
        self.sent_packets += frame_packets
        octets = (fragments - 1) * (FU_A_PAYLOAD + 2) + np.asarray(_LAST_SIZES)[last_q] + 2 + extra * 12
        self.sent_octets += np.bincount(cam, weights=octets, minlength=streams).astype(np.int64)
        last_frame = np.zeros(streams, dtype=np.int64)
        np.maximum.at(last_frame, cam, k)
        self.last_ts = np.where(count > 0, self.ts0 + last_frame * self.ticks, self.last_ts)
