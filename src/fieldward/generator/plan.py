"""Who talks to whom: turns a plant into conversations and the producers that emit them.

=======================  ==========================================================================
conversation             shape
=======================  ==========================================================================
HMI -> PLC               long-lived TCP session polling every 200-500 ms: Modbus/TCP (Schneider,
                         ABB, Moxa gateways), S7comm (Siemens), EtherNet/IP SendRRData (Rockwell)
historian -> PLC         the same protocols, bigger reads every 1-2 s, reconnecting every 1-5 min
SCADA master -> RTU      DNP3 over TCP 20000: class 1/2/3 event polls and class 0 integrity polls
                         every 2-5 s
Rockwell PLC <-> I/O     Forward_Open over TCP 44818, then CIP class-1 I/O over UDP 2222 both
                         ways every RPI (10, 20 or 50 ms)
sensor -> broker         MQTT 3.1.1: CONNECT, then PUBLISH (QoS 0 or 1, JSON) every 1-10 s
recorder <-> camera      RTSP 554 (digest auth, SETUP, PLAY, keep-alives); H.264 over RTP/UDP from
                         the camera, RTCP both ways
workstation -> PLCs      ListIdentity browsing; online sessions every few minutes (S7: SZL reads;
                         Logix: identity, tag reads)
IT background            DHCP (IoT devices), DNS, NTP, ARP
=======================  ==========================================================================
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from fieldward.generator import protocols as p
from fieldward.generator.attacks import AttackTraffic, build_scenarios
from fieldward.generator.build import Slot, TemplateTable
from fieldward.generator.config import GeneratorConfig
from fieldward.generator.literal import (
    ArpTraffic,
    CipConnections,
    DhcpTraffic,
    DnsTraffic,
    EngineeringTraffic,
    IoConnection,
    ListIdentityTraffic,
    NtpTraffic,
    RtcpTraffic,
    RtspTraffic,
)
from fieldward.generator.plant import PLCS, Device, Plant, Role, build_plant
from fieldward.generator.schedule import MS, SECOND, US, FlowLog, Proto, Sink
from fieldward.generator.traffic import (
    CameraSpec,
    ExchangeSpec,
    PollSessions,
    SessionSpec,
    StreamSpec,
    UdpStreams,
    VideoStreams,
)

CHUNK_BYTES = 64 << 20
MIN_CHUNK_NS = 1 * SECOND
MAX_CHUNK_NS = 60 * SECOND


class Producer(Protocol):
    def emit(self, t0: int, t1: int, sink: Sink) -> None: ...

    def expected(self, start: int, end: int) -> tuple[float, float]: ...


@dataclass(slots=True)
class Plan:
    config: GeneratorConfig
    plant: Plant
    table: TemplateTable
    producers: list[Producer]
    flows: FlowLog
    start_ns: int
    end_ns: int
    chunk_ns: int
    expected_packets: float
    expected_bytes: float
    attacks: AttackTraffic | None = None
    """The attack scenarios mixed in (``config.attacks``), with their ground truth."""


class _Draw:
    """Convenience draws from the planning generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def between(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high))

    def ms(self, low: float, high: float) -> int:
        return int(self.rng.uniform(low, high) * MS)

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)

    def port(self) -> int:
        return self.between(49152, 65536)

    def choice(self, options: tuple[int, ...]) -> int:
        return options[self.between(0, len(options))]


def _registers(draw: _Draw, count: int, variants: int) -> list[list[int]]:
    """Register value sets that drift a little from one variant to the next (process values)."""
    base = draw.rng.integers(0, 4000, count)
    noise = draw.rng.integers(-40, 41, (variants, count))
    return [np.clip(base + row, 0, 65535).astype(int).tolist() for row in noise]


def _modbus_read(
    draw: _Draw, weight: float, unit: int, function: int, address: int, quantity: int, variants: int = 8
) -> ExchangeSpec:
    request = p.modbus_adu(0, unit, p.modbus_read_request(function, address, quantity))
    if function in (1, 2):
        values = [draw.rng.integers(0, 2, quantity).tolist() for _ in range(variants)]
    else:
        values = _registers(draw, quantity, variants)
    responses = [p.modbus_adu(0, unit, p.modbus_read_response(function, v)) for v in values]
    return ExchangeSpec(weight, [request], responses, req_slot=0, resp_slot=0)


def modbus_exchanges(draw: _Draw, server: Device, heavy: bool) -> list[ExchangeSpec]:
    """HMI polling (mixed reads, occasional writes and an exception) or historian block reads."""
    units = {Role.PLC_SCHNEIDER: (255,), Role.PLC_ABB: (1,)}.get(server.role, (1, 2, 3, 4))
    out: list[ExchangeSpec] = []
    for unit in units:
        share = 1.0 / len(units)
        if heavy:
            out.append(_modbus_read(draw, 0.85 * share, unit, 3, 0, draw.between(100, 126)))
            out.append(_modbus_read(draw, 0.13 * share, unit, 4, 0, 60))
            if server.modbus_identity is not None:
                request = p.modbus_adu(0, unit, p.modbus_device_id_request())
                response = p.modbus_adu(0, unit, p.modbus_device_id_response(list(server.modbus_identity)))
                out.append(ExchangeSpec(0.02 * share, [request], [response], req_slot=0, resp_slot=0))
            continue
        out.append(_modbus_read(draw, 0.45 * share, unit, 3, 0, draw.between(10, 41)))
        out.append(_modbus_read(draw, 0.20 * share, unit, 3, 100, draw.between(20, 61)))
        out.append(_modbus_read(draw, 0.20 * share, unit, 4, 0, draw.between(8, 17)))
        out.append(_modbus_read(draw, 0.07 * share, unit, 1, 0, draw.between(16, 33)))
        address = draw.between(200, 260)
        singles = [
            p.modbus_adu(0, unit, p.modbus_write_single_register(address, v))
            for v in draw.rng.integers(0, 1000, 4).tolist()
        ]
        out.append(ExchangeSpec(0.04 * share, singles, singles, req_slot=0, resp_slot=0))
        count = draw.between(2, 5)
        multiples = [
            p.modbus_adu(0, unit, p.modbus_write_multiple_request(300, v)) for v in _registers(draw, count, 4)
        ]
        reply = p.modbus_adu(0, unit, p.modbus_write_multiple_response(300, count))
        out.append(ExchangeSpec(0.03 * share, multiples, [reply], req_slot=0, resp_slot=0))
        bad = p.modbus_adu(0, unit, p.modbus_read_request(3, 9000, 10))
        code = 0x0B if server.role is Role.GATEWAY and unit == units[-1] else 0x02
        out.append(
            ExchangeSpec(
                0.01 * share,
                [bad],
                [p.modbus_adu(0, unit, p.modbus_exception(3, code))],
                req_slot=0,
                resp_slot=0,
            )
        )
    return out


def s7_session(
    draw: _Draw, plc: Device, heavy: bool, client_tsap: int
) -> tuple[list[tuple[bytes, bytes]], list[ExchangeSpec], int]:
    """COTP connect + setup communication, then Read Var jobs (and HMI setpoint writes)."""
    assert plc.s7 is not None
    ref = draw.between(1, 0x8000)
    dst_tsap = 0x0102 if plc.s7[1].startswith("CPU 31") else 0x0101
    src_ref = draw.between(1, 0xFFFF)
    setup = [
        (
            p.cotp_connection_request(src_ref, client_tsap, dst_tsap),
            p.cotp_connection_confirm(src_ref, draw.between(1, 0xFFFF), client_tsap, dst_tsap),
        ),
        (p.s7_setup_request(ref), p.s7_setup_response(ref)),
    ]
    slot = p.S7_PDU_REF_OFFSET

    def read(weight: float, items: list[p.S7Item]) -> ExchangeSpec:
        request = p.s7_read_request(0, items)
        responses = [
            p.s7_read_response(
                0, [bytes(draw.rng.integers(0, 256, i.length, dtype=np.uint8).tolist()) for i in items]
            )
            for _ in range(8)
        ]
        return ExchangeSpec(weight, [request], responses, req_slot=slot, resp_slot=slot)

    if heavy:
        exchanges = [read(1.0, [p.S7Item(p.S7_AREA_DB, 100, 0, draw.between(150, 201))])]
    else:
        writes = [
            p.s7_write_request(0, p.S7Item(p.S7_AREA_DB, 20, 4, 4), struct.pack(">f", float(v)))
            for v in draw.rng.uniform(10, 90, 4)
        ]
        exchanges = [
            read(0.5, [p.S7Item(p.S7_AREA_DB, 1, 0, draw.between(32, 65))]),
            read(
                0.35,
                [
                    p.S7Item(p.S7_AREA_DB, 1, 0, 16),
                    p.S7Item(p.S7_AREA_DB, 2, 0, 8),
                    p.S7Item(p.S7_AREA_FLAGS, 0, 0, 4),
                ],
            ),
            read(0.12, [p.S7Item(p.S7_AREA_DB, 10, 0, draw.between(100, 181))]),
            ExchangeSpec(0.03, writes, [p.s7_write_response(0)], req_slot=slot, resp_slot=slot),
        ]
    return setup, exchanges, ref + 1


def enip_session(
    draw: _Draw, heavy: bool
) -> tuple[list[tuple[bytes, bytes]], list[ExchangeSpec], list[bytes]]:
    """RegisterSession, then SendRRData Read Tag requests (and writes, and an unknown tag)."""
    session = draw.between(1, 1 << 32)
    setup = [(p.enip_register_session(), p.enip(p.ENIP_REGISTER_SESSION, session, struct.pack("<HH", 1, 0)))]
    slot = p.ENIP_CONTEXT_OFFSET

    def rr(cip: bytes) -> bytes:
        return p.enip_send_rr_data(session, cip)

    def read(weight: float, tag: str, type_code: int, count: int) -> ExchangeSpec:
        request = rr(p.cip_request(p.CIP_READ_TAG, p.cip_symbolic_path(tag), struct.pack("<H", count)))
        responses = []
        for _ in range(8):
            if type_code == p.CIP_REAL:
                data = struct.pack(f"<{count}f", *draw.rng.uniform(0, 100, count).tolist())
            else:
                data = struct.pack(f"<{count}i", *draw.rng.integers(0, 5000, count).tolist())
            responses.append(rr(p.cip_reply(p.CIP_READ_TAG, struct.pack("<H", type_code) + data)))
        return ExchangeSpec(weight, [request], responses, req_slot=slot, resp_slot=slot)

    if heavy:
        exchanges = [read(1.0, "Hist_Data", p.CIP_DINT, 50)]
    else:
        writes = [
            rr(
                p.cip_request(
                    p.CIP_WRITE_TAG,
                    p.cip_symbolic_path("Setpoint_Temp"),
                    struct.pack("<HHf", p.CIP_REAL, 1, float(v)),
                )
            )
            for v in draw.rng.uniform(20, 80, 4)
        ]
        unknown = rr(p.cip_request(p.CIP_READ_TAG, p.cip_symbolic_path("Line9_Speed"), struct.pack("<H", 1)))
        exchanges = [
            read(0.32, "Line1_Speed", p.CIP_REAL, 1),
            read(0.30, "Tank1_Level", p.CIP_REAL, 1),
            read(0.31, "Motor_Status", p.CIP_DINT, 4),
            ExchangeSpec(0.05, writes, [rr(p.cip_reply(p.CIP_WRITE_TAG))], req_slot=slot, resp_slot=slot),
            ExchangeSpec(
                0.02, [unknown], [rr(p.cip_reply(p.CIP_READ_TAG, status=0x05))], req_slot=slot, resp_slot=slot
            ),
        ]
    return setup, exchanges, [p.enip(p.ENIP_UNREGISTER_SESSION, session)]


def dnp3_exchanges(draw: _Draw, master: int, outstation: int) -> list[ExchangeSpec]:
    """Class 1/2/3 event polls (null responses) and class 0 integrity polls, 64 sequence variants."""
    seqs = range(64)
    class0 = [p.dnp3_request(master, outstation, s, s, p.DNP3_READ, p.DNP3_CLASS0) for s in seqs]
    events = [p.dnp3_request(master, outstation, s, s, p.DNP3_READ, p.DNP3_CLASS123) for s in seqs]
    static: list[bytes] = []
    for _ in range(2):
        objects = p.dnp3_static_objects(
            draw.rng.integers(0, 2, 8).astype(bool).tolist(),
            draw.rng.integers(-2000, 30000, 6).tolist(),
            draw.rng.integers(0, 1 << 24, 2).tolist(),
        )
        static.extend(p.dnp3_response(outstation, master, s, s, 0x0000, objects) for s in seqs)
    null = [p.dnp3_response(outstation, master, s, s, 0x0000, b"") for s in seqs]
    return [ExchangeSpec(0.25, class0, static, nseq=64), ExchangeSpec(0.75, events, null, nseq=64)]


def mqtt_exchange(draw: _Draw, sensor: Device, qos: int) -> ExchangeSpec:
    """PUBLISH of a JSON reading with 16 value variants (one length), PUBACK for QoS 1."""
    assert sensor.sensor is not None
    quantity, unit, nominal, spread = sensor.sensor
    digits = len(str(int(nominal)))
    low, high = (10 ** (digits - 1) if digits > 1 else 0.0), 10**digits - 0.01
    topic = f"plant/area{1 + sensor.index % 4}/{sensor.name}/{quantity}"
    requests = []
    offset = -1
    for value in draw.rng.normal(nominal, spread / 3, 16).tolist():
        reading = min(max(value, low), high)
        payload = (
            f'{{"sensor":"{sensor.name}","{quantity}":{reading:.2f},"unit":"{unit}","status":"ok"}}'.encode()
        )
        packet, offset = p.mqtt_publish(topic, payload, qos)
        requests.append(packet)
    if qos:
        return ExchangeSpec(1.0, requests, [p.mqtt_puback()], req_slot=offset, resp_slot=2)
    return ExchangeSpec(1.0, requests)


def _reconnecting(
    draw: _Draw, first: int, end: int, lifetime: tuple[int, int], gap: tuple[float, float]
) -> list[tuple[int, int | None]]:
    """Open/close times of a client that reconnects after every ``lifetime`` seconds."""
    out: list[tuple[int, int | None]] = []
    t = first
    while t < end:
        close = t + draw.between(*lifetime) * SECOND
        out.append((t, close if close < end else None))
        t = close + draw.ms(gap[0] * 1000, gap[1] * 1000)
    return out


def _session(
    draw: _Draw,
    tag: Proto,
    client: Device,
    server: Device,
    dport: int,
    when: tuple[int, int | None],
    period: int,
) -> SessionSpec:
    rtt, response = _delays(server)
    return SessionSpec(
        tag=tag,
        client=client,
        server=server,
        sport=draw.port(),
        dport=dport,
        open_ns=when[0],
        close_ns=when[1],
        period_ns=period,
        jitter_ns=period * 3 // 100,
        rtt_ns=rtt,
        response_delay=response,
        ack_delay=(100 * US, 15 * MS),
        exchanges=[],
    )


def _plc_session(
    draw: _Draw, client: Device, server: Device, when: tuple[int, int | None], period: int, heavy: bool
) -> SessionSpec:
    """An HMI (or, ``heavy``, historian) session with a PLC in the PLC's own protocol."""
    if server.role is Role.PLC_SIEMENS:
        spec = _session(draw, Proto.S7COMM, client, server, p.S7_PORT, when, period)
        spec.setup, spec.exchanges, spec.counter_start = s7_session(
            draw, server, heavy, 0x0300 if heavy else 0x0200
        )
    elif server.role is Role.PLC_ROCKWELL:
        spec = _session(draw, Proto.ENIP, client, server, p.ENIP_PORT, when, period)
        spec.setup, spec.exchanges, spec.teardown = enip_session(draw, heavy)
        spec.counter_width, spec.counter_little, spec.counter_modulo = 4, True, 1 << 32
        spec.counter_start = draw.between(0, 1 << 31)
    else:
        spec = _session(draw, Proto.MODBUS, client, server, p.MODBUS_PORT, when, period)
        spec.exchanges = modbus_exchanges(draw, server, heavy)
        spec.counter_start = draw.between(0, 1 << 16)
    return spec


def poll_sessions(
    plant: Plant, draw: _Draw, start: int, end: int, boots: dict[int, int]
) -> list[SessionSpec]:
    """Every request/response session of the capture (reconnecting clients: one spec per connection)."""
    specs: list[SessionSpec] = []
    hmis = plant.role(Role.HMI)
    plcs = plant.role(*PLCS)
    for i, plc in enumerate(plcs):
        if not hmis:
            break
        period_low = 300 if plc.role is Role.GATEWAY else 100
        pollers = [hmis[i % len(hmis)]]
        if len(hmis) > 1 and draw.chance(0.3):
            pollers.append(hmis[(i + 1) % len(hmis)])
        for hmi in pollers:
            specs.append(
                _plc_session(
                    draw,
                    hmi,
                    plc,
                    (start + draw.ms(50, 3000), None),
                    draw.between(period_low, 501) * MS,
                    heavy=False,
                )
            )
    for historian in plant.role(Role.HISTORIAN):
        for plc in plcs:
            for when in _reconnecting(draw, start + draw.ms(200, 3000), end, (60, 600), (1.0, 3.0)):
                specs.append(
                    _plc_session(draw, historian, plc, when, draw.between(1000, 2001) * MS, heavy=True)
                )
    masters = plant.role(Role.SCADA)
    for i, rtu in enumerate(plant.role(Role.RTU)):
        if not masters:
            break
        spec = _session(
            draw,
            Proto.DNP3,
            masters[i % len(masters)],
            rtu,
            p.DNP3_PORT,
            (start + draw.ms(100, 3000), None),
            draw.between(2000, 5001) * MS,
        )
        spec.jitter_ns = spec.period_ns // 50
        spec.rtt_ns = draw.ms(15, 60)
        spec.response_delay = (20 * MS, 150 * MS)
        spec.ack_delay = (1 * MS, 40 * MS)
        spec.exchanges = dnp3_exchanges(draw, 1, rtu.dnp3_address)
        spec.seq_start = draw.between(0, 64)
        specs.append(spec)
    broker = plant.first(Role.BROKER)
    for sensor in plant.role(Role.SENSOR):
        if broker is None:
            break
        qos = 1 if draw.chance(0.35) else 0
        credentials = draw.chance(0.5)
        period = draw.choice((1, 2, 5, 5, 10)) * SECOND
        first = boots[sensor.index] + draw.ms(400, 900)
        schedule = (
            _reconnecting(draw, first, end, (120, 600), (1.0, 5.0)) if draw.chance(0.2) else [(first, None)]
        )
        exchange = mqtt_exchange(draw, sensor, qos)
        for when in schedule:
            connect = p.mqtt_connect(
                sensor.name, 60, "sensor" if credentials else None, "Pl4nt-IoT" if credentials else None
            )
            spec = _session(draw, Proto.MQTT, sensor, broker, p.MQTT_PORT, when, period)
            spec.setup = [(connect, p.mqtt_connack())]
            spec.teardown = [p.MQTT_DISCONNECT]
            spec.counter_modulo, spec.counter_add = 65535, 1
            spec.jitter_ns = period // 20
            spec.response_delay = (300 * US, 3 * MS) if qos else (200 * US, 40 * MS)
            spec.ack_delay = (100 * US, 40 * MS)
            spec.exchanges = [exchange]
            specs.append(spec)
    return specs


def _delays(server: Device) -> tuple[int, tuple[int, int]]:
    """Handshake RTT and response time of a server (gateways answer after the serial round trip)."""
    if server.role is Role.GATEWAY:
        return 300 * US, (15 * MS, 60 * MS)
    if server.role in PLCS:
        return 250 * US, (1 * MS, 8 * MS)
    return 200 * US, (300 * US, 3 * MS)


_RPI_MS = (20, 10, 50, 10)


def io_connections(plant: Plant, draw: _Draw, start: int) -> list[IoConnection]:
    """Each I/O adapter is scanned by a Rockwell PLC over one or two class-1 connections."""
    scanners = [d for d in plant.role(Role.PLC_ROCKWELL) if d.cip is not None]
    out = []
    for i, adapter in enumerate(plant.role(Role.IO_ADAPTER)):
        if not scanners:
            break
        scanner = scanners[i % len(scanners)]
        assert scanner.cip is not None
        forward_opens = []
        # Connection counts and RPIs follow the adapter's number (not the seed): I/O is the largest
        # share of packets, and this keeps the packet rate of a plant size predictable.
        for n in range(1 + i % 2):
            rpi = _RPI_MS[(i + n) % len(_RPI_MS)] * 1000
            forward_opens.append(
                p.ForwardOpen(
                    o_t_connection_id=draw.between(1 << 16, 1 << 31),
                    t_o_connection_id=draw.between(1 << 16, 1 << 31),
                    serial=draw.between(1, 1 << 16),
                    originator_vendor=1,
                    originator_serial=scanner.cip.serial,
                    o_t_rpi_us=rpi,
                    t_o_rpi_us=rpi,
                    o_t_size=2 * draw.between(2, 9),
                    t_o_size=2 * draw.between(4, 17),
                    input_instance=0x65 + 2 * n,
                    output_instance=0x66 + 2 * n,
                )
            )
        opened = start + draw.ms(100, 2000)
        out.append(
            IoConnection(scanner, adapter, forward_opens, draw.between(1, 1 << 32), opened, opened + 300 * MS)
        )
    return out


def io_streams(plant: Plant, connections: list[IoConnection], draw: _Draw) -> list[StreamSpec]:
    """Both directions of every class-1 connection: O->T with a run/idle header, T->O without."""
    slots = (Slot(p.CIP_IO_SEQUENCE_OFFSET, 4, little=True), Slot(p.CIP_IO_COUNT_OFFSET, 2, little=True))
    out = []
    for c in connections:
        for fo in c.forward_opens:
            for scanner_to_adapter in (True, False):
                src, dst = (c.scanner, c.adapter) if scanner_to_adapter else (c.adapter, c.scanner)
                size = fo.o_t_size if scanner_to_adapter else fo.t_o_size
                conn_id = fo.o_t_connection_id if scanner_to_adapter else fo.t_o_connection_id
                payloads = [
                    p.cip_io_packet(
                        conn_id,
                        bytes(draw.rng.integers(0, 256, size, dtype=np.uint8).tolist()),
                        scanner_to_adapter,
                    )
                    for _ in range(8)
                ]
                period = (fo.o_t_rpi_us if scanner_to_adapter else fo.t_o_rpi_us) * US
                out.append(
                    StreamSpec(
                        tag=Proto.CIP_IO,
                        link=plant.link(src, dst, replace(src.stack, tos=0xBC)),
                        sport=p.CIP_IO_PORT,
                        dport=p.CIP_IO_PORT,
                        first_ns=c.io_first_ns + draw.between(0, period),
                        period_ns=period,
                        jitter_ns=period // 20,
                        payloads=payloads,
                        hold=25,
                        slots=slots,
                        start0=draw.between(0, 1 << 24),
                        start1=draw.between(0, 1 << 16),
                    )
                )
    return out


def camera_specs(
    plant: Plant, nvr: Device, draw: _Draw, kbps: int, boots: dict[int, int]
) -> tuple[list[CameraSpec], list[int]]:
    specs: list[CameraSpec] = []
    opens: list[int] = []
    used: set[int] = set()
    for camera in plant.role(Role.CAMERA):
        hik = camera.vendor == "Hikvision"
        fps = 25 if hik else 30
        width, height = (2688, 1520) if camera.model == "DS-2CD2143G2-I" else (1920, 1080)
        client_port = 2 * draw.between(20000, 30000)
        while client_port in used:
            client_port += 2
        used.add(client_port)
        opened = boots[camera.index] + draw.ms(2000, 4000)
        opens.append(opened)
        specs.append(
            CameraSpec(
                camera=camera,
                link=plant.link(camera, nvr),
                sport=2 * draw.between(4100, 4150) if hik else 2 * draw.between(25000, 30000),
                dport=client_port,
                ssrc=draw.between(1 << 24, 1 << 32),
                first_ns=opened + 600 * MS,
                fps=fps,
                kbps=int(kbps * draw.rng.uniform(0.8, 1.2)),
                gop=50 if hik else 32,
                width=width,
                height=height,
                seq0=draw.between(0, 1 << 16),
                ts0=draw.between(0, 1 << 32),
            )
        )
    return specs, opens


def build_plan(config: GeneratorConfig) -> Plan:
    """Lay out the plant and every conversation of the capture (deterministic in ``config``)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(16)]
    plant = build_plant(config.devices, streams[0])
    draw = _Draw(streams[1])
    start = config.start_ns
    end = start + config.duration_ns
    table = TemplateTable()
    flows = FlowLog()
    boots = {d.index: start + draw.ms(0, 4000) for d in plant.devices if d.dhcp}
    producers: list[Producer] = []

    polls = PollSessions(poll_sessions(plant, draw, start, end, boots), plant, table, streams[2], flows)
    producers.append(polls)
    connections = io_connections(plant, draw, start)
    if connections:
        producers.append(UdpStreams(io_streams(plant, connections, draw), table, streams[3], flows))
        producers.append(CipConnections(plant, connections, streams[12], flows))
    nvr = plant.first(Role.NVR)
    video: VideoStreams | None = None
    if config.camera_streams and nvr is not None and plant.role(Role.CAMERA):
        cameras, opens = camera_specs(plant, nvr, draw, config.camera_kbps, boots)
        video = VideoStreams(cameras, table, streams[4], flows)
        producers.append(video)
        producers.append(RtspTraffic(plant, nvr, cameras, opens, streams[9], flows))
        producers.append(RtcpTraffic(plant, nvr, video, streams[10], flows))
    producers.append(ArpTraffic(plant, streams[5], flows, start, boots))
    dc = plant.first(Role.DOMAIN_CONTROLLER)
    dns = DnsTraffic(plant, dc, streams[6], flows, start) if dc is not None else None
    if dns is not None and dc is not None:
        producers.append(dns)
        producers.append(NtpTraffic(plant, dc, streams[7], flows, start))
    if boots:
        producers.append(DhcpTraffic(plant, dns, streams[8], flows, boots))
    for ews in plant.role(Role.EWS):
        producers.append(ListIdentityTraffic(plant, ews, streams[11], flows, start))
        producers.append(EngineeringTraffic(plant, ews, streams[13], flows, start))
    table.compile()
    packets = octets = 0.0
    for producer in producers:
        more_packets, more_octets = producer.expected(start, end)
        packets += more_packets
        octets += more_octets
    duration = end - start
    chunk = duration * config.chunk_packets / max(packets, 1.0)
    chunk = min(chunk, duration * CHUNK_BYTES / max(octets, 1.0))
    chunk_ns = int(min(max(chunk, MIN_CHUNK_NS), MAX_CHUNK_NS)) // MS * MS
    # Attacks come last and do not move the chunk boundaries: the clean packets keep their bytes
    # and order whatever scenarios are added (they have random streams of their own).
    attacks = None
    if config.attacks:
        attacks = AttackTraffic(build_scenarios(config, plant))
        producers.append(attacks)
        more_packets, more_octets = attacks.expected(start, end)
        packets += more_packets
        octets += more_octets
    return Plan(config, plant, table, producers, flows, start, end, chunk_ns, packets, octets, attacks)


def packets_per_device_minute(plan: Plan) -> float:
    minutes = (plan.end_ns - plan.start_ns) / (60 * SECOND)
    return plan.expected_packets / max(len(plan.plant.devices) * minutes, math.ulp(1.0))
