"""Attack scenarios: labelled malicious traffic mixed into a generated plant capture.

Each scenario is one attack step a detection engine must catch (a PLC stop from a rogue laptop, a
port scan, a telnet brute force against a camera, an HMI polling ten times too fast, ...). It is
built packet by packet at plan time, from its own random stream, and comes with its ground truth:
name, engine, time window, attacker and targets, MITRE ATT&CK for ICS techniques and the alert types
expected. ``GeneratorConfig(attacks=("s7_plc_stop", "port_scan@12.5"))`` adds scenarios (``@M``:
start at minute ``M``; without it the scenarios are laid out one after another over the second half
of the capture, the first half being attack-free for a learning period).

The clean traffic does not change when attacks are added: the scenarios draw from a random stream of
their own, the chunk layout is computed from the clean producers only, and the merge is a stable sort,
so the plant's packets keep their bytes, times and order (``tests/generator/test_attacks.py`` checks
that the clean capture is an ordered subsequence of the attacked one).

The attackers are hosts the plant does not have (a laptop plugged into the field network, a new
laptop in the control room, a Raspberry Pi on the IoT network, at host address ``.250`` that the plant
never assigns) or plant devices acting out of character (a compromised historian, an HMI gone wild).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fieldward.errors import ConfigError
from fieldward.generator import protocols as p
from fieldward.generator.build import (
    ACK,
    BROADCAST_MAC,
    ETH_ARP,
    RST,
    SYN,
    Link,
    Stack,
    Stamped,
    TcpConversation,
    ethernet,
    tcp_frame,
    udp_frame,
)
from fieldward.generator.plant import (
    LINUX,
    MODBUS_SERVERS,
    PLCS,
    ROUTER_STACK,
    WINDOWS,
    Device,
    Plant,
    Role,
    Subnet,
)
from fieldward.generator.schedule import MS, SECOND, US, Proto, Sink

if TYPE_CHECKING:
    from fieldward.generator.config import GeneratorConfig

ATTACK_STREAM = 0xA77AC
"""Spawn key of the attacks' random streams (the clean traffic uses keys 0-15)."""

_EXTRA = max(Proto) + 1
TELNET, FTP, HTTP, TCP_OTHER = _EXTRA, _EXTRA + 1, _EXTRA + 2, _EXTRA + 3
ATTACK_PROTOCOL_NAMES: dict[int, str] = {TELNET: "telnet", FTP: "ftp", HTTP: "http", TCP_OTHER: "tcp"}
"""Statistics tags of attack packets in protocols the plant itself does not speak."""

Tagged = tuple[int, bytes, int]
"""An attack packet: (timestamp in ns, frame, statistics tag)."""

DNS_TXT = 16
ROGUE_HOST = 250
"""Host number of the rogue devices: the plant assigns .10 to .249 only."""
INTERNET_IP = bytes([185, 243, 115, 84])
"""The command-and-control server of the internet-connection scenario (any public address)."""
INTERNET_STACK = Stack(ttl=47, syn_window=64240, window_scale=7, window_bytes=64256)
"""A Linux server some 17 hops away, as its packets arrive at the plant."""


# --------------------------------------------------------------------------------------------------
# Endpoints: plant devices, rogue hosts, a server on the internet
# --------------------------------------------------------------------------------------------------


class Endpoint(Protocol):
    """What a packet builder needs of a host (a plant :class:`Device` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def mac(self) -> bytes: ...

    @property
    def ip(self) -> bytes: ...

    @property
    def subnet(self) -> Subnet | None: ...

    @property
    def stack(self) -> Stack: ...


@dataclass(frozen=True, slots=True)
class Host:
    """A host that is not part of the plant: a rogue device (``subnet`` set) or an internet server."""

    name: str
    mac: bytes
    ip: bytes
    subnet: Subnet | None
    stack: Stack
    description: str


def _ip_text(ip: bytes) -> str:
    return ".".join(str(b) for b in ip)


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _link(src: Endpoint, dst: Endpoint) -> Link:
    """Frames from ``src`` to ``dst`` as a SPAN port sees them: direct on one subnet, else through the
    router (the sender's side; for an internet sender, the router's delivery to ``dst``)."""
    if src.subnet is None:
        assert dst.subnet is not None
        return Link(dst.subnet.router_mac, dst.mac, src.ip, dst.ip, src.stack)
    if dst.subnet is src.subnet:
        return Link(src.mac, dst.mac, src.ip, dst.ip, src.stack)
    return Link(src.mac, src.subnet.router_mac, src.ip, dst.ip, src.stack)


def describe(endpoint: Endpoint) -> dict[str, str]:
    return {"name": endpoint.name, "ip": _ip_text(endpoint.ip), "mac": _mac_text(endpoint.mac)}


# --------------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Scenario:
    """One generated attack: its packets and its ground truth."""

    name: str
    engine: str
    title: str
    mitre: tuple[str, ...]
    alert_types: tuple[str, ...]
    attacker: Endpoint
    targets: tuple[Endpoint, ...]
    description: str
    packets: list[Tagged] = field(default_factory=list)
    also_engines: tuple[str, ...] = ()

    @property
    def start_ns(self) -> int:
        return min(ts for ts, _, _ in self.packets)

    @property
    def end_ns(self) -> int:
        return max(ts for ts, _, _ in self.packets)

    def truth(self) -> dict[str, Any]:
        """The ground-truth record of the scenario (what ``--attack-truth`` writes)."""
        return {
            "name": self.name,
            "engine": self.engine,
            "engines": [self.engine, *self.also_engines],
            "title": self.title,
            "description": self.description,
            "start": _iso(self.start_ns),
            "end": _iso(self.end_ns),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "attacker": describe(self.attacker),
            "targets": [describe(t) for t in self.targets],
            "mitre": list(self.mitre),
            "alert_types": list(self.alert_types),
            "packets": len(self.packets),
        }


Builder = Callable[["_Context", int, int], Scenario]


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A scenario of the catalogue: how long it nominally lasts and how to build it."""

    name: str
    engine: str
    nominal_s: float
    build: Builder


def _iso(ts_ns: int) -> str:
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ns:09d}Z"


# --------------------------------------------------------------------------------------------------
# Building blocks shared by the scenarios
# --------------------------------------------------------------------------------------------------


class _Context:
    """The plant, the attackers and a random stream: what a scenario builder draws on."""

    def __init__(self, plant: Plant, rng: np.random.Generator, hosts: dict[str, Host]) -> None:
        self.plant = plant
        self.rng = rng
        self.hosts = hosts

    # ----------------------------------------------------------------- draws

    def delay(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high))

    def port(self) -> int:
        return self.delay(49152, 65536)

    # ----------------------------------------------------------------- plant

    def need(self, scenario: str, *roles: Role) -> Device:
        """The first device of any of ``roles`` (in that order of preference)."""
        for role in roles:
            found = self.plant.first(role)
            if found is not None:
                return found
        wanted = " or ".join(r.value for r in roles)
        raise ConfigError(
            f"attack scenario {scenario} needs a {wanted}: generate a larger plant (16+ devices)"
        )

    def host(self, key: str, scenario: str) -> Host:
        found = self.hosts.get(key)
        if found is None:
            raise ConfigError(f"attack scenario {scenario} needs the {key} subnet: generate a larger plant")
        return found

    def poller(self, scenario: str) -> tuple[Device, Device]:
        """An HMI and the Modbus device it polls in the clean traffic (the pairing of ``poll_sessions``)."""
        hmis = self.plant.role(Role.HMI)
        for i, plc in enumerate(self.plant.role(*PLCS)):
            if hmis and plc.role in MODBUS_SERVERS:
                return hmis[i % len(hmis)], plc
        raise ConfigError(f"attack scenario {scenario} needs an HMI polling a Modbus device")

    # ----------------------------------------------------------------- packets

    def conversation(self, client: Endpoint, server: Endpoint, dport: int, sport: int = 0) -> TcpConversation:
        isn = self.rng.integers(0, 1 << 32, 2).tolist()
        ipid = self.rng.integers(0, 1 << 16, 2).tolist()
        return TcpConversation(
            _link(client, server),
            _link(server, client),
            sport or self.port(),
            dport,
            isn[0],
            isn[1],
            ipid[0],
            ipid[1],
        )

    def udp(self, src: Endpoint, dst: Endpoint, sport: int, dport: int, payload: bytes) -> bytes:
        return udp_frame(_link(src, dst), sport, dport, payload, self.delay(0, 1 << 16))

    def resolve(self, host: Endpoint, peer: Endpoint, ts: int) -> list[Stamped]:
        """ARP of a rogue host for ``peer`` (or for its router when ``peer`` is off-link) and the reply."""
        subnet = host.subnet
        assert subnet is not None
        if peer.subnet is subnet:
            target_mac, target_ip = peer.mac, peer.ip
        else:
            target_mac, target_ip = subnet.router_mac, subnet.gateway
        request = ethernet(
            BROADCAST_MAC, host.mac, ETH_ARP, p.arp(p.ARP_REQUEST, host.mac, host.ip, bytes(6), target_ip)
        )
        reply = ethernet(
            host.mac, target_mac, ETH_ARP, p.arp(p.ARP_REPLY, target_mac, target_ip, host.mac, host.ip)
        )
        return [(ts, request), (ts + self.delay(80 * US, 900 * US), reply)]

    def session(
        self,
        conv: TcpConversation,
        ts: int,
        steps: list[tuple[bytes, bytes]],
        gap: tuple[int, int] = (5 * MS, 60 * MS),
        response: tuple[int, int] = (1 * MS, 8 * MS),
        close: bool = True,
    ) -> tuple[list[Stamped], int]:
        """Handshake, request/response steps ``gap`` apart, and (``close``) a client-initiated close."""
        out = conv.handshake(ts, self.delay(150 * US, 700 * US))
        t = out[-1][0]
        for request, reply in steps:
            t += self.delay(*gap)
            done, t = conv.exchange(t, request, reply, self.delay(*response), self.delay(100 * US, 3 * MS))
            out.extend(done)
        if close:
            out.extend(conv.close(t + self.delay(1 * MS, 40 * MS), self.delay(150 * US, 700 * US)))
        return out, out[-1][0]


def _tag(packets: list[Stamped], tag: int) -> list[Tagged]:
    return [(ts, frame, tag) for ts, frame in packets]


def _arp_tagged(ctx: _Context, host: Endpoint, peer: Endpoint, ts: int) -> list[Tagged]:
    return _tag(ctx.resolve(host, peer, ts), Proto.ARP)


# --------------------------------------------------------------------------------------------------
# S7comm, CIP and Modbus messages the clean traffic never sends
# --------------------------------------------------------------------------------------------------

S7_PLC_STOP, S7_PLC_CONTROL = 0x29, 0x28
S7_REQUEST_DOWNLOAD, S7_DOWNLOAD_BLOCK, S7_DOWNLOAD_ENDED = 0x1A, 0x1B, 0x1C
CIP_RESET = 0x05


def s7_plc_stop_request(pdu_ref: int) -> bytes:
    """PLC Stop job: function 0x29, five reserved bytes and the PI service ``P_PROGRAM``."""
    service = b"P_PROGRAM"
    return p.s7_message(p.S7_JOB, pdu_ref, bytes([S7_PLC_STOP]) + bytes(5) + bytes([len(service)]) + service)


def s7_function_ack(pdu_ref: int, function: int, status: bytes = b"") -> bytes:
    """Ack-Data carrying only the function code (and a function status byte)."""
    return p.s7_message(p.S7_ACK_DATA, pdu_ref, bytes([function]) + status)


def _s7_filename(block_type: str, number: int) -> bytes:
    """PLC file name: ``_``, block type (``08`` OB, ``0A`` DB, ``0C`` FC, ``0E`` FB), number, ``P``."""
    return f"_{block_type}{number:05d}P".encode()


def s7_request_download(pdu_ref: int, filename: bytes, load_length: int, mc7_length: int) -> bytes:
    """Request Download job: status, reserved, file name, then load memory and MC7 code lengths."""
    part2 = b"1" + f"{load_length:06d}{mc7_length:06d}".encode()
    params = bytes([S7_REQUEST_DOWNLOAD, 0x00]) + b"\x01\x00" + bytes(4)
    params += bytes([len(filename)]) + filename + bytes([len(part2)]) + part2
    return p.s7_message(p.S7_JOB, pdu_ref, params)


def s7_download_block_job(pdu_ref: int, filename: bytes) -> bytes:
    """Download Block job (sent by the PLC, which pulls the block from the programming device)."""
    params = bytes([S7_DOWNLOAD_BLOCK, 0x00]) + b"\x01\x00" + bytes(4) + bytes([len(filename)]) + filename
    return p.s7_message(p.S7_JOB, pdu_ref, params)


def s7_download_block_ack(pdu_ref: int, block: bytes) -> bytes:
    """The programming device's answer: the block's bytes (length, 0x00FB, data)."""
    data = struct.pack(">HH", len(block), 0x00FB) + block
    return p.s7_message(p.S7_ACK_DATA, pdu_ref, bytes([S7_DOWNLOAD_BLOCK, 0x00]), data)


def s7_download_ended_job(pdu_ref: int, filename: bytes) -> bytes:
    params = bytes([S7_DOWNLOAD_ENDED, 0x00]) + b"\x00\x00" + bytes(4) + bytes([len(filename)]) + filename
    return p.s7_message(p.S7_JOB, pdu_ref, params)


def s7_insert_block(pdu_ref: int, block_type: str, number: int) -> bytes:
    """PLC Control PI service ``_INSE``: activate the downloaded block in the running program."""
    names = f"{block_type}{number:05d}P".encode()
    block = bytes([1, 0]) + names
    service = b"_INSE"
    params = bytes([S7_PLC_CONTROL]) + bytes(6) + b"\xfd" + struct.pack(">H", len(block)) + block
    params += bytes([len(service)]) + service
    return p.s7_message(p.S7_JOB, pdu_ref, params)


def _s7_connect(ctx: _Context, plc: Device, client_tsap: int) -> list[tuple[bytes, bytes]]:
    assert plc.s7 is not None
    dst_tsap = 0x0102 if plc.s7[1].startswith("CPU 31") else 0x0101
    src_ref = ctx.delay(1, 0xFFFF)
    ref = ctx.delay(1, 0x8000)
    return [
        (
            p.cotp_connection_request(src_ref, client_tsap, dst_tsap),
            p.cotp_connection_confirm(src_ref, ctx.delay(1, 0xFFFF), client_tsap, dst_tsap),
        ),
        (p.s7_setup_request(ref), p.s7_setup_response(ref)),
    ]


def _modbus(tid: int, unit: int, pdu: bytes) -> bytes:
    return p.modbus_adu(tid, unit, pdu)


def _modbus_unit(device: Device) -> int:
    return 255 if device.role is Role.PLC_SCHNEIDER else 1


# --------------------------------------------------------------------------------------------------
# Scenarios: OT operations
# --------------------------------------------------------------------------------------------------


def _s7_plc_stop(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "s7_plc_stop")
    plc = ctx.need("s7_plc_stop", Role.PLC_SIEMENS)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.S7_PORT)
    ref = ctx.delay(0x100, 0x7000)
    steps = [*_s7_connect(ctx, plc, 0x0100), (s7_plc_stop_request(ref), s7_function_ack(ref, S7_PLC_STOP))]
    packets, _ = ctx.session(conv, t0 + 5 * MS, steps, gap=(20 * MS, 300 * MS), response=(2 * MS, 30 * MS))
    return Scenario(
        "s7_plc_stop",
        "operations",
        "S7 PLC stop from a rogue laptop",
        ("T0881", "T0858"),
        ("operations.s7_plc_stop",),
        rogue,
        (plc,),
        "A laptop plugged into the field network connects to a Siemens PLC and sends PLC Stop "
        "(PI service P_PROGRAM): the controller stops executing its program.",
        out + _tag(packets, Proto.S7COMM),
    )


def _s7_program_download(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "s7_program_download")
    plc = ctx.need("s7_program_download", Role.PLC_SIEMENS)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.S7_PORT)
    packets, t = ctx.session(conv, t0 + 5 * MS, _s7_connect(ctx, plc, 0x0100), close=False)
    ref = ctx.delay(0x100, 0x7000)
    plc_ref = ctx.delay(0x100, 0x7000)
    filename = _s7_filename("08", 1)
    block = bytes(ctx.rng.integers(0, 256, 180, dtype=np.uint8).tolist())
    t += ctx.delay(50 * MS, 200 * MS)
    done, t = conv.exchange(
        t,
        s7_request_download(ref, filename, len(block) + 36, len(block)),
        s7_function_ack(ref, S7_REQUEST_DOWNLOAD),
        ctx.delay(2 * MS, 20 * MS),
        ctx.delay(100 * US, 2 * MS),
    )
    packets += done
    # The PLC pulls the block (Download Block), then closes the transfer (Download Ended).
    for job, answer in (
        (s7_download_block_job(plc_ref, filename), s7_download_block_ack(plc_ref, block)),
        (s7_download_ended_job(plc_ref + 1, filename), s7_function_ack(plc_ref + 1, S7_DOWNLOAD_ENDED)),
    ):
        t += ctx.delay(5 * MS, 40 * MS)
        packets.append(conv.server_send(t, job))
        t += ctx.delay(1 * MS, 10 * MS)
        packets.append(conv.client_send(t, answer))
        t += ctx.delay(1 * MS, 20 * MS)
        packets.append(conv.server_ack(t))
    t += ctx.delay(50 * MS, 300 * MS)
    done, t = conv.exchange(
        t,
        s7_insert_block(ref + 1, "08", 1),
        s7_function_ack(ref + 1, S7_PLC_CONTROL),
        ctx.delay(5 * MS, 60 * MS),
        ctx.delay(100 * US, 2 * MS),
    )
    packets += done
    packets += conv.close(t + ctx.delay(20 * MS, 200 * MS), ctx.delay(150 * US, 700 * US))
    return Scenario(
        "s7_program_download",
        "operations",
        "S7 program download (OB1) from a rogue laptop",
        ("T0843", "T0889"),
        ("operations.s7_program_download", "operations.s7_plc_control"),
        rogue,
        (plc,),
        "The rogue laptop downloads a new OB1 (main program cycle) to a Siemens PLC and activates it "
        "with the PI service _INSE: the controller now runs the attacker's logic.",
        out + _tag(packets, Proto.S7COMM),
    )


def _cip_reset(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "cip_reset")
    plc = ctx.need("cip_reset", Role.PLC_ROCKWELL)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.ENIP_PORT)
    session = ctx.delay(1, 1 << 32)
    context = struct.pack("<Q", ctx.delay(0, 1 << 62))
    reset = p.cip_request(CIP_RESET, p.cip_logical_path(0x01, 0x01))
    steps = [
        (p.enip_register_session(), p.enip(p.ENIP_REGISTER_SESSION, session, struct.pack("<HH", 1, 0))),
        (
            p.enip_send_rr_data(session, reset, context, 10),
            p.enip_send_rr_data(session, p.cip_reply(CIP_RESET), context),
        ),
    ]
    packets, _ = ctx.session(conv, t0 + 5 * MS, steps, gap=(20 * MS, 200 * MS))
    return Scenario(
        "cip_reset",
        "operations",
        "CIP reset of a Logix controller",
        ("T0816",),
        ("operations.cip_reset",),
        rogue,
        (plc,),
        "The rogue laptop sends the CIP Reset service to the Identity object of a Rockwell controller: "
        "the device restarts and its I/O stops meanwhile.",
        out + _tag(packets, Proto.ENIP),
    )


def _modbus_rogue_write(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "modbus_rogue_write")
    plc = ctx.need("modbus_rogue_write", Role.PLC_SCHNEIDER, Role.PLC_ABB, Role.GATEWAY)
    unit = _modbus_unit(plc)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.MODBUS_PORT)
    tid = ctx.delay(1, 100)
    writes = max(3, min(12, span // (5 * SECOND)))
    steps = []
    for i in range(writes):
        if i % 2:
            pdu = p.modbus_write_single_register(ctx.delay(200, 260), ctx.delay(0, 65536))
            steps.append((_modbus(tid + i, unit, pdu), _modbus(tid + i, unit, pdu)))
        else:
            values = ctx.rng.integers(0, 65536, 4).tolist()
            request = p.modbus_write_multiple_request(300, values)
            reply = p.modbus_write_multiple_response(300, len(values))
            steps.append((_modbus(tid + i, unit, request), _modbus(tid + i, unit, reply)))
    gap = max(span // max(writes, 1), 50 * MS)
    packets, _ = ctx.session(conv, t0 + 5 * MS, steps, gap=(gap // 2, gap), response=(1 * MS, 8 * MS))
    return Scenario(
        "modbus_rogue_write",
        "baseline",
        "Modbus register writes from a host that is not a master",
        ("T0855", "T0836"),
        ("baseline.modbus_write_from_unknown_master",),
        rogue,
        (plc,),
        "The rogue laptop writes holding registers (setpoints) of a PLC with function codes 6 and 16; "
        "only the HMIs ever wrote to it.",
        out + _tag(packets, Proto.MODBUS),
        also_engines=("operations",),
    )


# --------------------------------------------------------------------------------------------------
# Scenarios: reconnaissance
# --------------------------------------------------------------------------------------------------

SCAN_EXTRA_PORTS = (1433, 1883, 1911, 2404, 3389, 4840, 5900, 8080, 8443, 9600, 18245, 20000, 44818)


def _port_scan(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "port_scan")
    plc = ctx.need("port_scan", Role.PLC_ABB, Role.PLC_SCHNEIDER, Role.PLC_SIEMENS, Role.PLC_ROCKWELL)
    service = {Role.PLC_SIEMENS: p.S7_PORT, Role.PLC_ROCKWELL: p.ENIP_PORT}.get(plc.role, p.MODBUS_PORT)
    open_ports = {service, 80}
    ports = np.array(sorted(set(range(1, 1025)) | set(SCAN_EXTRA_PORTS)))
    ctx.rng.shuffle(ports)
    sport = ctx.port()
    there, back = _link(rogue, plc), _link(plc, rogue)
    out = _arp_tagged(ctx, rogue, plc, t0)
    packets: list[Stamped] = []
    t = t0 + 5 * MS
    ipid = ctx.delay(0, 1 << 16)
    mss = struct.pack(">BBH", 2, 4, 1460)
    for port in ports.tolist():
        isn = ctx.delay(0, 1 << 32)
        packets.append((t, tcp_frame(there, sport, port, isn, 0, SYN, 1024, b"", ipid, mss)))
        ipid += 1
        answer = t + ctx.delay(150 * US, 900 * US)
        if port in open_ports:
            server_isn = ctx.delay(0, 1 << 32)
            synack = tcp_frame(
                back, port, sport, server_isn, isn + 1, SYN | ACK, plc.stack.syn_window, b"", 0, mss
            )
            packets.append((answer, synack))
            reset = tcp_frame(there, sport, port, isn + 1, 0, RST, 0, b"", ipid)
            ipid += 1
            packets.append((answer + ctx.delay(30 * US, 200 * US), reset))
        else:
            packets.append((answer, tcp_frame(back, port, sport, 0, isn + 1, RST | ACK, 0)))
        t += ctx.delay(400 * US, 2 * MS)
    return Scenario(
        "port_scan",
        "recon",
        "TCP SYN scan of a PLC",
        ("T0846",),
        ("recon.port_scan_vertical",),
        rogue,
        (plc,),
        f"The rogue laptop SYN-scans {len(ports)} TCP ports of a PLC (nmap -sS style: one source port, "
        "RST after each SYN-ACK).",
        out + _tag(packets, TCP_OTHER),
    )


def _cip_list_identity_sweep(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "cip_list_identity_sweep")
    assert rogue.subnet is not None
    responders = [
        d
        for d in ctx.plant.role(Role.PLC_ROCKWELL, Role.IO_ADAPTER)
        if d.cip is not None and d.subnet is rogue.subnet
    ]
    if not responders:
        raise ConfigError("attack scenario cip_list_identity_sweep needs an EtherNet/IP device")
    sport = ctx.port()
    context = struct.pack("<Q", ctx.delay(0, 1 << 62))
    request = p.enip(p.ENIP_LIST_IDENTITY, 0, b"", context)
    packets: list[Stamped] = []
    t = t0
    broadcast = Link(rogue.mac, BROADCAST_MAC, rogue.ip, rogue.subnet.broadcast, rogue.stack)
    for _ in range(2):  # tools repeat the broadcast in case a reply was lost
        packets.append((t, udp_frame(broadcast, sport, p.ENIP_PORT, request, ctx.delay(0, 1 << 16))))
        for device in responders:
            assert device.cip is not None
            reply = p.enip_list_identity_reply(device.cip, device.ip, context)
            when = t + ctx.delay(1 * MS, 60 * MS)
            packets.append((when, ctx.udp(device, rogue, p.ENIP_PORT, sport, reply)))
        t += ctx.delay(800 * MS, 1500 * MS)
    return Scenario(
        "cip_list_identity_sweep",
        "recon",
        "EtherNet/IP ListIdentity broadcast discovery",
        ("T0846", "T0888"),
        ("recon.cip_list_identity_sweep",),
        rogue,
        tuple(responders),
        "The rogue laptop broadcasts ListIdentity on the field network; every EtherNet/IP device "
        "answers with its vendor, product, revision and serial number.",
        _tag(packets, Proto.ENIP),
    )


def _modbus_unit_sweep(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "modbus_unit_sweep")
    gateway = ctx.need("modbus_unit_sweep", Role.GATEWAY, Role.PLC_ABB, Role.PLC_SCHNEIDER)
    present = {1, 2, 3, 4} if gateway.role is Role.GATEWAY else {_modbus_unit(gateway)}
    out = _arp_tagged(ctx, rogue, gateway, t0)
    conv = ctx.conversation(rogue, gateway, p.MODBUS_PORT)
    packets = conv.handshake(t0 + 5 * MS, ctx.delay(200 * US, 600 * US))
    t = packets[-1][0]
    tid = ctx.delay(0, 100)
    for unit in range(1, 41):
        t += ctx.delay(5 * MS, 30 * MS)
        request = _modbus(tid + unit, unit, p.modbus_read_request(3, 0, 1))
        if unit in present:
            value = [ctx.delay(0, 4000)]
            reply = _modbus(tid + unit, unit, p.modbus_read_response(3, value))
            wait = ctx.delay(15 * MS, 60 * MS)
        else:  # the serial slave does not answer: the gateway times out
            reply = _modbus(tid + unit, unit, p.modbus_exception(3, 0x0B))
            wait = ctx.delay(250 * MS, 350 * MS)
        done, t = conv.exchange(t, request, reply, wait, ctx.delay(100 * US, 3 * MS))
        packets += done
    packets += conv.close(t + ctx.delay(5 * MS, 50 * MS), ctx.delay(200 * US, 600 * US))
    return Scenario(
        "modbus_unit_sweep",
        "recon",
        "Modbus unit id sweep of a serial gateway",
        ("T0846",),
        ("recon.modbus_unit_id_sweep",),
        rogue,
        (gateway,),
        "The rogue laptop reads one register from unit ids 1 to 40 of a Modbus gateway to find the "
        "serial slaves behind it (absent units answer exception 0x0B).",
        out + _tag(packets, Proto.MODBUS),
    )


# --------------------------------------------------------------------------------------------------
# Scenarios: protocol violations
# --------------------------------------------------------------------------------------------------

ILLEGAL_FUNCTIONS = (0x19, 0x1B, 0x1F, 0x24, 0x2D, 0x2E, 0x33, 0x37, 0x3C, 0x4A, 0x51, 0x5F, 0x70, 0x79)
"""Function codes neither the Modbus specification (public, user-defined 65-72 and 100-110) nor the
legacy Modicon and vendor tables (9, 10, 13, 14, 18, 19, 40-42, 90, 91, 125-127) assign."""


def _modbus_target(ctx: _Context, scenario: str) -> Device:
    return ctx.need(scenario, Role.PLC_ABB, Role.PLC_SCHNEIDER, Role.GATEWAY)


def _modbus_illegal_function(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "modbus_illegal_function")
    plc = _modbus_target(ctx, "modbus_illegal_function")
    unit = _modbus_unit(plc)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.MODBUS_PORT)
    tid = ctx.delay(0, 1000)
    steps = []
    for i, code in enumerate(ILLEGAL_FUNCTIONS):
        data = bytes(ctx.rng.integers(0, 256, 4, dtype=np.uint8).tolist())
        steps.append(
            (
                _modbus(tid + i, unit, bytes([code]) + data),
                _modbus(tid + i, unit, p.modbus_exception(code, 1)),
            )
        )
    packets, _ = ctx.session(conv, t0 + 5 * MS, steps, gap=(100 * MS, 400 * MS))
    return Scenario(
        "modbus_illegal_function",
        "protocol",
        "Modbus requests with unassigned function codes",
        ("T0888",),
        ("protocol.illegal_function_code",),
        rogue,
        (plc,),
        f"The rogue laptop probes a PLC with {len(ILLEGAL_FUNCTIONS)} function codes the Modbus "
        "specification does not define; the PLC answers ILLEGAL FUNCTION to each.",
        out + _tag(packets, Proto.MODBUS),
    )


def _modbus_malformed(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "modbus_malformed")
    plc = _modbus_target(ctx, "modbus_malformed")
    unit = _modbus_unit(plc)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.MODBUS_PORT)
    tid = ctx.delay(0, 1000)
    bad = [
        p.modbus_read_request(3, 0, 10) + b"\x00\x00",  # two bytes after a fixed-size body
        p.modbus_read_request(3, 0, 0),  # quantity 0
        p.modbus_read_request(4, 0, 300),  # quantity above 125
        p.modbus_write_multiple_request(300, [1, 2, 3])[:-2],  # byte count says 6, 4 bytes follow
        struct.pack(">BHHB", 16, 300, 3, 6) + bytes(6) + b"\xde\xad",  # trailing bytes
        p.modbus_write_single_register(200, 7)[:3],  # truncated body
        bytes([5]) + struct.pack(">HH", 10, 0x1234),  # coil value other than 0xFF00/0x0000
    ]
    # Two well-formed reads first, as a fuzzer replaying a captured session does: a sensor (and
    # FieldWard) recognises Modbus by its first ADUs, and the malformed ones follow.
    steps = []
    for i in range(2):
        values = ctx.rng.integers(0, 4000, 10).tolist()
        request = _modbus(tid + i, unit, p.modbus_read_request(3, 0, 10))
        steps.append((request, _modbus(tid + i, unit, p.modbus_read_response(3, values))))
    for i, pdu in enumerate(bad * 2, start=2):
        reply = p.modbus_exception(pdu[0], 3)
        steps.append((_modbus(tid + i, unit, pdu), _modbus(tid + i, unit, reply)))
    packets, _ = ctx.session(conv, t0 + 5 * MS, steps, gap=(100 * MS, 600 * MS))
    return Scenario(
        "modbus_malformed",
        "protocol",
        "Malformed Modbus requests (length and count mismatches)",
        ("T0866",),
        ("protocol.length_mismatch", "protocol.malformed_pdu"),
        rogue,
        (plc,),
        "The rogue laptop sends Modbus requests whose lengths, byte counts, quantities or values "
        "break the specification, as a fuzzer hunting for a parser bug does.",
        out + _tag(packets, Proto.MODBUS),
    )


def _modbus_exception_storm(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "modbus_exception_storm")
    plc = ctx.need("modbus_exception_storm", Role.PLC_SCHNEIDER, Role.PLC_ABB, Role.GATEWAY)
    unit = _modbus_unit(plc)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, p.MODBUS_PORT)
    packets = conv.handshake(t0 + 5 * MS, ctx.delay(200 * US, 600 * US))
    t = packets[-1][0]
    tid = ctx.delay(0, 1000)
    end = t0 + max(span, 5 * SECOND)
    i = 0
    while t < end:
        t += ctx.delay(20 * MS, 60 * MS)
        address = ctx.delay(20000, 65000)
        request = _modbus(tid + i, unit, p.modbus_read_request(3, address, 10))
        reply = _modbus(tid + i, unit, p.modbus_exception(3, 0x02))
        done, t = conv.exchange(t, request, reply, ctx.delay(1 * MS, 6 * MS), ctx.delay(100 * US, 2 * MS))
        packets += done
        i += 1
    packets += conv.close(t + ctx.delay(5 * MS, 50 * MS), ctx.delay(200 * US, 600 * US))
    return Scenario(
        "modbus_exception_storm",
        "protocol",
        "Modbus exception storm (reads of registers that do not exist)",
        ("T0861",),
        ("protocol.exception_storm",),
        rogue,
        (plc,),
        f"The rogue laptop reads {i} random register addresses above 20000 in quick succession; the "
        "PLC answers ILLEGAL DATA ADDRESS to every one.",
        out + _tag(packets, Proto.MODBUS),
    )


# --------------------------------------------------------------------------------------------------
# Scenarios: baseline and policy
# --------------------------------------------------------------------------------------------------


def _new_device(ctx: _Context, t0: int, span: int) -> Scenario:
    laptop = ctx.host("L2", "new_device")
    plc = ctx.need("new_device", Role.PLC_SCHNEIDER, Role.PLC_ABB, Role.GATEWAY)
    unit = _modbus_unit(plc)
    assert laptop.subnet is not None
    announce = ethernet(
        BROADCAST_MAC, laptop.mac, ETH_ARP, p.arp(p.ARP_REQUEST, laptop.mac, laptop.ip, bytes(6), laptop.ip)
    )
    out: list[Tagged] = [(t0, announce, Proto.ARP)]
    out += _arp_tagged(ctx, laptop, plc, t0 + ctx.delay(200 * MS, 900 * MS))
    conv = ctx.conversation(laptop, plc, p.MODBUS_PORT)
    tid = ctx.delay(0, 1000)
    reads = max(5, min(60, span // SECOND))
    steps = []
    for i in range(reads):
        values = ctx.rng.integers(0, 4000, 20).tolist()
        steps.append(
            (
                _modbus(tid + i, unit, p.modbus_read_request(3, 0, 20)),
                _modbus(tid + i, unit, p.modbus_read_response(3, values)),
            )
        )
    packets, _ = ctx.session(conv, t0 + SECOND, steps, gap=(800 * MS, 1200 * MS))
    return Scenario(
        "new_device",
        "baseline",
        "A device never seen before reads a PLC",
        ("T0848",),
        ("baseline.new_device", "baseline.new_communication_pair"),
        laptop,
        (plc,),
        "A laptop that was not on the network during learning appears in the control room subnet and "
        "polls a PLC's holding registers over Modbus/TCP.",
        out + _tag(packets, Proto.MODBUS),
    )


def _internet_connection(ctx: _Context, t0: int, span: int) -> Scenario:
    device = ctx.need("internet_connection", Role.GATEWAY, Role.RTU, Role.PLC_ABB, Role.PLC_SCHNEIDER)
    dc = ctx.plant.first(Role.DOMAIN_CONTROLLER)
    assert device.subnet is not None
    server = Host("c2-server", device.subnet.router_mac, INTERNET_IP, None, INTERNET_STACK, "internet host")
    domain = "update.industrial-sync.net"
    out: list[Tagged] = []
    t = t0
    if dc is not None:
        sport, txid = ctx.port(), ctx.delay(0, 1 << 16)
        query = p.dns_query(txid, domain, p.DNS_A)
        answer = p.dns_response(txid, domain, p.DNS_A, [(p.DNS_A, 300, INTERNET_IP)])
        out.append((t, ctx.udp(device, dc, sport, 53, query), Proto.DNS))
        out.append((t + ctx.delay(2 * MS, 40 * MS), ctx.udp(dc, device, 53, sport, answer), Proto.DNS))
        t += 100 * MS
    beacons = max(2, min(8, span // (15 * SECOND)))
    gap = max(span // beacons, SECOND)
    for i in range(beacons):
        body = bytes(ctx.rng.integers(0, 256, 64, dtype=np.uint8).tolist())
        request = (
            f"POST /api/v2/beacon?id={device.serial} HTTP/1.1\r\nHost: {domain}\r\n"
            "User-Agent: Wget/1.20.3\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        task = base64.b64encode(bytes(ctx.rng.integers(0, 256, 24, dtype=np.uint8).tolist()))
        reply = (
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(task)}\r\n\r\n"
        ).encode() + task
        conv = ctx.conversation(device, server, 80)
        rtt = ctx.delay(30 * MS, 60 * MS)
        packets = conv.handshake(t, rtt)
        when = packets[-1][0] + ctx.delay(1 * MS, 5 * MS)
        done, when = conv.exchange(
            when, request, reply, rtt + ctx.delay(5 * MS, 40 * MS), ctx.delay(1 * MS, 20 * MS)
        )
        packets += done
        packets += conv.close(when + ctx.delay(5 * MS, 50 * MS), rtt)
        out += _tag(packets, HTTP)
        if i + 1 < beacons:
            t += gap + ctx.delay(0, SECOND)
    return Scenario(
        "internet_connection",
        "baseline",
        "A field device beacons to an internet address",
        ("T0883", "T0869"),
        ("baseline.new_external_destination",),
        device,
        (server,),
        f"A field device resolves {domain} and posts to {_ip_text(INTERNET_IP)} over HTTP every few "
        "seconds: a command-and-control channel out of the control network.",
        out,
    )


def _firmware_change(ctx: _Context, t0: int, span: int) -> Scenario:
    ews = ctx.need("firmware_change", Role.EWS)
    plc = ctx.need("firmware_change", Role.PLC_SIEMENS)
    assert plc.s7 is not None
    order, module, (major, minor, patch) = plc.s7
    firmware = (major, minor - 1, (patch + 3) % 10) if minor else (major, minor + 1, 0)
    conv = ctx.conversation(ews, plc, p.S7_PORT)
    ref = ctx.delay(1, 0xFF00)
    steps = [
        *_s7_connect(ctx, plc, 0x0100),
        (
            p.s7_szl_request(ref, 0x0011, 0),
            p.s7_szl_response(ref, 0x0011, 0, 28, p.szl_module_identification(order, firmware)),
        ),
        (
            p.s7_szl_request(ref + 1, 0x001C, 0),
            p.s7_szl_response(
                ref + 1,
                0x001C,
                0,
                34,
                p.szl_component_identification(
                    "Plant_Station", plc.name.upper(), f"S C-{plc.serial}", module
                ),
            ),
        ),
    ]
    packets, _ = ctx.session(conv, t0, steps, gap=(20 * MS, 400 * MS), response=(1 * MS, 12 * MS))
    old = f"V{major}.{minor}.{patch}"
    new = "V" + ".".join(str(x) for x in firmware)
    return Scenario(
        "firmware_change",
        "baseline",
        "PLC reports another firmware version",
        ("T0839",),
        ("baseline.firmware_changed",),
        ews,
        (plc,),
        f"The engineering workstation reads the identity of a Siemens PLC, which now reports firmware "
        f"{new} instead of {old}: the module firmware was replaced.",
        _tag(packets, Proto.S7COMM),
    )


# --------------------------------------------------------------------------------------------------
# Scenarios: threats and IoT malware
# --------------------------------------------------------------------------------------------------

MIRAI_CREDENTIALS = (
    ("root", "xc3511"),
    ("root", "vizxv"),
    ("admin", "admin"),
    ("root", "888888"),
    ("root", "xmhdipc"),
    ("root", "default"),
    ("root", "juantech"),
    ("root", "123456"),
    ("root", "54321"),
    ("support", "support"),
    ("root", ""),
    ("admin", "password"),
)
"""The first entries of Mirai's credential table (its public source)."""
IAC, DO, DONT, WILL, WONT = 255, 253, 254, 251, 252
ECHO, SGA, NAWS = 1, 3, 31


def _telnet_brute_force(ctx: _Context, t0: int, span: int) -> Scenario:
    bot = ctx.host("IoT", "telnet_brute_force")
    camera = ctx.need("telnet_brute_force", Role.CAMERA)
    out = _arp_tagged(ctx, bot, camera, t0)
    # One credential per connection, each ~1.5 s (the camera delays its "Login incorrect").
    attempts = max(6, min(len(MIRAI_CREDENTIALS), span // (2 * SECOND)))
    gap = max(span // attempts - 1600 * MS, 200 * MS)
    t = t0 + 5 * MS
    prompt = f"{camera.name} login: ".encode()
    for user, password in MIRAI_CREDENTIALS[:attempts]:
        conv = ctx.conversation(bot, camera, 23)
        packets = conv.handshake(t, ctx.delay(200 * US, 900 * US))
        when = packets[-1][0]
        script: list[tuple[bool, bytes, int]] = [
            (False, bytes([IAC, DO, ECHO, IAC, DO, NAWS, IAC, WILL, ECHO, IAC, WILL, SGA]), 2 * MS),
            (True, bytes([IAC, WONT, ECHO, IAC, WONT, NAWS, IAC, DO, ECHO, IAC, DO, SGA]), 1 * MS),
            (False, b"\r\n" + prompt, 3 * MS),
            (True, user.encode() + b"\r\n", 20 * MS),
            (False, user.encode() + b"\r\nPassword: ", 2 * MS),
            (True, password.encode() + b"\r\n", 20 * MS),
            (False, b"\r\nLogin incorrect\r\n" + prompt, 1000 * MS),
        ]
        for from_client, payload, delay in script:
            when += delay + ctx.delay(0, delay // 2 + 1)
            packets.append(
                conv.client_send(when, payload) if from_client else conv.server_send(when, payload)
            )
        packets += conv.close(when + ctx.delay(5 * MS, 50 * MS), ctx.delay(200 * US, 900 * US))
        out += _tag(packets, TELNET)
        t = packets[-1][0] + gap
    return Scenario(
        "telnet_brute_force",
        "threats",
        "Mirai-style telnet brute force against a camera",
        ("T0812", "T0866"),
        ("threats.brute_force", "threats.cleartext_credentials"),
        bot,
        (camera,),
        f"An infected device on the IoT network tries {attempts} factory credentials from Mirai's "
        "table on a camera's telnet port, one per connection; every login fails.",
        out,
    )


def _cleartext_credentials(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "cleartext_credentials")
    plc = ctx.need("cleartext_credentials", Role.PLC_SCHNEIDER, Role.PLC_ABB, Role.PLC_SIEMENS)
    out = _arp_tagged(ctx, rogue, plc, t0)
    conv = ctx.conversation(rogue, plc, 21)
    packets = conv.handshake(t0 + 5 * MS, ctx.delay(200 * US, 600 * US))
    t = packets[-1][0] + ctx.delay(2 * MS, 20 * MS)
    packets.append(conv.server_send(t, b"220 FTP server ready.\r\n"))
    t += ctx.delay(1 * MS, 10 * MS)
    packets.append(conv.client_ack(t))
    for command, reply in (
        (b"USER USER\r\n", b"331 User name okay, need password.\r\n"),
        (b"PASS USERUSER\r\n", b"230 User logged in, proceed.\r\n"),
        (b"SYST\r\n", b"215 UNIX Type: L8\r\n"),
        (b"PWD\r\n", b'257 "/" is current directory.\r\n'),
        (b"QUIT\r\n", b"221 Goodbye.\r\n"),
    ):
        t += ctx.delay(50 * MS, 600 * MS)
        done, t = conv.exchange(t, command, reply, ctx.delay(1 * MS, 15 * MS), ctx.delay(100 * US, 5 * MS))
        packets += done
    packets += conv.close(t + ctx.delay(1 * MS, 20 * MS), ctx.delay(200 * US, 600 * US))
    return Scenario(
        "cleartext_credentials",
        "threats",
        "FTP login to a PLC with default credentials in clear",
        ("T0812", "T0859"),
        ("threats.cleartext_credentials",),
        rogue,
        (plc,),
        "The rogue laptop logs into a PLC's FTP server with the vendor's default account; user name "
        "and password cross the network in clear.",
        out + _tag(packets, FTP),
    )


def _arp_spoofing(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("L1", "arp_spoofing")
    assert rogue.subnet is not None
    victims = [d for d in ctx.plant.role(*PLCS) if d.subnet is rogue.subnet]
    if not victims:
        raise ConfigError("attack scenario arp_spoofing needs a PLC")
    plc = victims[0]
    router_mac, gateway = rogue.subnet.router_mac, rogue.subnet.gateway
    out: list[Tagged] = []
    rounds = max(5, min(60, span // (2 * SECOND)))
    t = t0
    for _ in range(rounds):
        to_router = p.arp(p.ARP_REPLY, rogue.mac, plc.ip, router_mac, gateway)
        to_plc = p.arp(p.ARP_REPLY, rogue.mac, gateway, plc.mac, plc.ip)
        out.append((t, ethernet(router_mac, rogue.mac, ETH_ARP, to_router), Proto.ARP))
        out.append(
            (t + ctx.delay(50 * US, 400 * US), ethernet(plc.mac, rogue.mac, ETH_ARP, to_plc), Proto.ARP)
        )
        t += 2 * SECOND + ctx.delay(0, 20 * MS)
    router = Host("router", router_mac, gateway, rogue.subnet, ROUTER_STACK, "router interface")
    return Scenario(
        "arp_spoofing",
        "threats",
        "ARP spoofing: the rogue laptop claims a PLC's address",
        ("T0830",),
        ("threats.arp_spoofing",),
        rogue,
        (plc, router),
        "Every two seconds the rogue laptop tells the router that the PLC's IP address is at its MAC, "
        "and the PLC that the router's is: a man in the middle of the HMI-PLC traffic (arpspoof).",
        out,
    )


def _dhcp_options(device: Device, msg_type: int, extra: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    options: list[tuple[int, bytes]] = [
        (53, bytes([msg_type])),
        (61, b"\x01" + device.mac),
        (57, struct.pack(">H", 1500)),
    ]
    options += extra
    options.append((12, device.name.encode()))
    if device.dhcp_vendor_class:
        options.append((60, device.dhcp_vendor_class.encode()))
    options.append((55, bytes([1, 3, 6, 12, 15, 28, 42, 51, 58, 59])))
    return options


def _server_options(
    msg_type: int, server: bytes, router: bytes, dns: bytes, lease: int
) -> list[tuple[int, bytes]]:
    return [
        (53, bytes([msg_type])),
        (54, server),
        (51, struct.pack(">I", lease)),
        (58, struct.pack(">I", lease // 2)),
        (59, struct.pack(">I", lease * 7 // 8)),
        (1, b"\xff\xff\xff\x00"),
        (3, router),
        (6, dns),
    ]


def _rogue_dhcp(ctx: _Context, t0: int, span: int) -> Scenario:
    rogue = ctx.host("IoT", "rogue_dhcp")
    assert rogue.subnet is not None
    clients = [d for d in ctx.plant.devices if d.dhcp and d.subnet is rogue.subnet][:2]
    if not clients:
        raise ConfigError("attack scenario rogue_dhcp needs an IoT device using DHCP")
    dc = ctx.plant.first(Role.DOMAIN_CONTROLLER)
    subnet = rogue.subnet
    out: list[Tagged] = []
    t = t0
    for client in clients:
        xid = ctx.delay(0, 1 << 32)
        broadcast = Link(client.mac, BROADCAST_MAC, bytes(4), b"\xff" * 4, client.stack)
        discover = p.dhcp_message(
            1, xid, client.mac, _dhcp_options(client, p.DHCP_DISCOVER, [(50, client.ip)])
        )
        rogue_offer = p.dhcp_message(
            2,
            xid,
            client.mac,
            _server_options(p.DHCP_OFFER, rogue.ip, rogue.ip, rogue.ip, 86400),
            yiaddr=client.ip,
        )
        real_offer = p.dhcp_message(
            2,
            xid,
            client.mac,
            _server_options(
                p.DHCP_OFFER, subnet.gateway, subnet.gateway, dc.ip if dc else subnet.gateway, 600
            ),
            yiaddr=client.ip,
        )
        request = p.dhcp_message(
            1,
            xid,
            client.mac,
            _dhcp_options(client, p.DHCP_REQUEST, [(50, client.ip), (54, rogue.ip)]),
            secs=1,
        )
        ack = p.dhcp_message(
            2,
            xid,
            client.mac,
            _server_options(p.DHCP_ACK, rogue.ip, rogue.ip, rogue.ip, 86400),
            yiaddr=client.ip,
        )
        to_client = Link(rogue.mac, client.mac, rogue.ip, client.ip, rogue.stack)
        from_router = Link(subnet.router_mac, client.mac, subnet.gateway, client.ip, ROUTER_STACK)
        ipid = ctx.delay(0, 1 << 16)
        when = t
        out.append((when, udp_frame(broadcast, 68, 67, discover, ipid), Proto.DHCP))
        when += ctx.delay(500 * US, 1500 * US)  # the rogue answers first: that is how it wins
        out.append((when, udp_frame(to_client, 67, 68, rogue_offer, ctx.delay(0, 1 << 16)), Proto.DHCP))
        out.append(
            (
                when + ctx.delay(2 * MS, 12 * MS),
                udp_frame(from_router, 67, 68, real_offer, ctx.delay(0, 1 << 16)),
                Proto.DHCP,
            )
        )
        when += ctx.delay(15 * MS, 40 * MS)
        out.append((when, udp_frame(broadcast, 68, 67, request, ipid + 1), Proto.DHCP))
        when += ctx.delay(500 * US, 3 * MS)
        out.append((when, udp_frame(to_client, 67, 68, ack, ctx.delay(0, 1 << 16)), Proto.DHCP))
        t += max(span // len(clients), SECOND)
    return Scenario(
        "rogue_dhcp",
        "threats",
        "Rogue DHCP server on the IoT network",
        ("T0830",),
        ("threats.rogue_dhcp_server",),
        rogue,
        tuple(clients),
        "A Raspberry Pi on the IoT network answers the DHCP discovery of rebooting devices before the "
        "router does, and hands out itself as their gateway and DNS server.",
        out,
    )


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def _dns_tunnelling(ctx: _Context, t0: int, span: int) -> Scenario:
    client = ctx.need("dns_tunnelling", Role.HISTORIAN, Role.HMI)
    dc = ctx.need("dns_tunnelling", Role.DOMAIN_CONTROLLER)
    domain = "cdn-sync-relay.net"
    out: list[Tagged] = []
    queries = max(30, min(240, int(span / (500 * MS))))
    gap = max(span // queries, 50 * MS)
    t = t0
    session = "".join(_BASE32[i] for i in ctx.rng.integers(0, 32, 6).tolist())
    for seq in range(queries):
        chunk = "".join(_BASE32[i] for i in ctx.rng.integers(0, 32, ctx.delay(52, 62)).tolist())
        name = f"{chunk}.{seq:04x}.{session}.{domain}"
        txid, sport = ctx.delay(0, 1 << 16), ctx.port()
        text = base64.b64encode(bytes(ctx.rng.integers(0, 256, ctx.delay(60, 120), dtype=np.uint8).tolist()))
        query = p.dns_query(txid, name, DNS_TXT)
        answer = p.dns_response(txid, name, DNS_TXT, [(DNS_TXT, 0, bytes([len(text)]) + text)])
        out.append((t, ctx.udp(client, dc, sport, 53, query), Proto.DNS))
        out.append((t + ctx.delay(20 * MS, 90 * MS), ctx.udp(dc, client, 53, sport, answer), Proto.DNS))
        t += gap + ctx.delay(0, gap // 4 + 1)
    return Scenario(
        "dns_tunnelling",
        "threats",
        "DNS tunnel from the historian",
        ("T0869", "T0882"),
        ("threats.dns_tunneling",),
        client,
        (dc,),
        f"Malware on a server exfiltrates data in {queries} TXT lookups of long random subdomains of "
        f"{domain}, answered with encoded commands, through the plant's DNS server.",
        out,
    )


# --------------------------------------------------------------------------------------------------
# Scenarios: anomalies
# --------------------------------------------------------------------------------------------------


def _poll_flood(ctx: _Context, t0: int, span: int) -> Scenario:
    hmi, plc = ctx.poller("poll_flood")
    unit = _modbus_unit(plc)
    conv = ctx.conversation(hmi, plc, p.MODBUS_PORT)
    packets = conv.handshake(t0, ctx.delay(200 * US, 600 * US))
    t = packets[-1][0]
    end = t0 + max(span, 10 * SECOND)
    quantity = ctx.delay(10, 41)
    variants = [ctx.rng.integers(0, 4000, quantity).tolist() for _ in range(8)]
    tid = ctx.delay(0, 1 << 16)
    i = 0
    while t < end:
        t += ctx.delay(20 * MS, 40 * MS)  # ten times the normal 200-500 ms cycle
        request = _modbus(tid + i, unit, p.modbus_read_request(3, 0, quantity))
        reply = _modbus(tid + i, unit, p.modbus_read_response(3, variants[i % 8]))
        done, t = conv.exchange(t, request, reply, ctx.delay(1 * MS, 8 * MS), ctx.delay(100 * US, 3 * MS))
        packets += done
        i += 1
    packets += conv.close(t + ctx.delay(5 * MS, 50 * MS), ctx.delay(200 * US, 600 * US))
    return Scenario(
        "poll_flood",
        "anomaly",
        "HMI polls a PLC ten times faster than usual",
        ("T0814",),
        ("anomaly.rate_change", "anomaly.function_mix_change", "anomaly.periodicity_break"),
        hmi,
        (plc,),
        f"The HMI that normally reads this PLC every 200-500 ms opens a second connection and reads the "
        f"same registers every 20-40 ms ({i} reads): a misbehaving or hijacked HMI loading the PLC.",
        _tag(packets, Proto.MODBUS),
    )


def _write_flood(ctx: _Context, t0: int, span: int) -> Scenario:
    hmi, plc = ctx.poller("write_flood")
    unit = _modbus_unit(plc)
    conv = ctx.conversation(hmi, plc, p.MODBUS_PORT)
    packets = conv.handshake(t0, ctx.delay(200 * US, 600 * US))
    t = packets[-1][0]
    end = t0 + max(span, 10 * SECOND)
    tid = ctx.delay(0, 1 << 16)
    i = 0
    while t < end:
        t += ctx.delay(10 * MS, 30 * MS)
        values = ctx.rng.integers(0, 65536, 4).tolist()
        request = _modbus(tid + i, unit, p.modbus_write_multiple_request(300, values))
        reply = _modbus(tid + i, unit, p.modbus_write_multiple_response(300, 4))
        done, t = conv.exchange(t, request, reply, ctx.delay(1 * MS, 8 * MS), ctx.delay(100 * US, 3 * MS))
        packets += done
        i += 1
    packets += conv.close(t + ctx.delay(5 * MS, 50 * MS), ctx.delay(200 * US, 600 * US))
    return Scenario(
        "write_flood",
        "anomaly",
        "Write flood: an HMI rewrites PLC registers dozens of times a second",
        ("T0806", "T0836"),
        ("anomaly.rate_change", "anomaly.function_mix_change"),
        hmi,
        (plc,),
        f"The HMI, which writes this PLC's setpoints a few times a minute, sends {i} Write Multiple "
        "Registers requests within seconds (brute-force I/O).",
        _tag(packets, Proto.MODBUS),
    )


CATALOG: tuple[ScenarioSpec, ...] = (
    ScenarioSpec("s7_plc_stop", "operations", 2, _s7_plc_stop),
    ScenarioSpec("s7_program_download", "operations", 3, _s7_program_download),
    ScenarioSpec("cip_reset", "operations", 2, _cip_reset),
    ScenarioSpec("modbus_rogue_write", "baseline", 30, _modbus_rogue_write),
    ScenarioSpec("port_scan", "recon", 2, _port_scan),
    ScenarioSpec("cip_list_identity_sweep", "recon", 3, _cip_list_identity_sweep),
    ScenarioSpec("modbus_unit_sweep", "recon", 15, _modbus_unit_sweep),
    ScenarioSpec("modbus_illegal_function", "protocol", 5, _modbus_illegal_function),
    ScenarioSpec("modbus_malformed", "protocol", 6, _modbus_malformed),
    ScenarioSpec("modbus_exception_storm", "protocol", 30, _modbus_exception_storm),
    ScenarioSpec("new_device", "baseline", 60, _new_device),
    ScenarioSpec("internet_connection", "baseline", 60, _internet_connection),
    ScenarioSpec("firmware_change", "baseline", 2, _firmware_change),
    ScenarioSpec("telnet_brute_force", "threats", 40, _telnet_brute_force),
    ScenarioSpec("cleartext_credentials", "threats", 3, _cleartext_credentials),
    ScenarioSpec("arp_spoofing", "threats", 40, _arp_spoofing),
    ScenarioSpec("rogue_dhcp", "threats", 10, _rogue_dhcp),
    ScenarioSpec("dns_tunnelling", "threats", 60, _dns_tunnelling),
    ScenarioSpec("poll_flood", "anomaly", 60, _poll_flood),
    ScenarioSpec("write_flood", "anomaly", 60, _write_flood),
)
"""Every scenario, in the order ``--attacks all`` lays them out."""
SCENARIOS: dict[str, ScenarioSpec] = {spec.name: spec for spec in CATALOG}
ALL = tuple(SCENARIOS)


def parse_attack(text: str) -> tuple[str, float | None]:
    """``name`` or ``name@minute`` -> (name, minute or None); raises ConfigError on an unknown name."""
    name, _, at = text.strip().partition("@")
    if name not in SCENARIOS:
        raise ConfigError(f"unknown attack scenario {name!r}; known: {', '.join(ALL)}")
    if not at:
        return name, None
    try:
        minute = float(at)
    except ValueError:
        raise ConfigError(f"attack {text!r}: the time after @ must be a number of minutes") from None
    if not (math.isfinite(minute) and minute >= 0):
        raise ConfigError(f"attack {text!r}: the time after @ must be a non-negative number of minutes")
    return name, minute


# --------------------------------------------------------------------------------------------------
# Hosts, layout and the producer
# --------------------------------------------------------------------------------------------------

ROGUE_MODELS: dict[str, tuple[str, str, Stack, str]] = {
    "L1": ("rogue-laptop", "8C:16:45", LINUX, "a Linux laptop plugged into the field network"),
    "L2": ("new-laptop", "D0:94:66", WINDOWS, "a Windows laptop new to the control room network"),
    "IoT": ("rogue-pi", "DC:A6:32", LINUX, "a Raspberry Pi hidden on the IoT network"),
}
"""The hosts the plant does not have, per subnet: name, OUI (Lenovo, Dell, Raspberry Pi), stack."""


def rogue_hosts(plant: Plant, rng: np.random.Generator) -> dict[str, Host]:
    """One host per level, at ``.250`` of the level's first subnet, with a MAC no plant device has."""
    used = {d.mac for d in plant.devices} | {s.router_mac for s in plant.subnets}
    hosts: dict[str, Host] = {}
    for level, (name, oui, stack, description) in ROGUE_MODELS.items():
        subnet = next((s for s in plant.subnets if s.level == level and s.cell == 0), None)
        if subnet is None:
            continue
        while True:
            mac = bytes.fromhex(oui.replace(":", "")) + bytes(
                rng.integers(0, 256, 3, dtype=np.uint8).tolist()
            )
            if mac not in used:
                used.add(mac)
                break
        hosts[level] = Host(name, mac, subnet.network[:3] + bytes([ROGUE_HOST]), subnet, stack, description)
    return hosts


def _seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(ATTACK_STREAM, *key))


def build_scenarios(config: GeneratorConfig, plant: Plant) -> list[Scenario]:
    """The attack scenarios ``config.attacks`` asks for, built and clipped to the capture.

    Scenarios without a time (``@M``) share the second half of the capture in the order given: each
    starts at the beginning of its slot and lasts its nominal time, or 80 % of the slot if shorter.
    Every scenario draws from a stream keyed by its catalogue position, so adding one does not change
    the bytes of another (only, without ``@M``, the slots).
    """
    if not config.attacks:
        return []
    start, end = config.start_ns, config.start_ns + config.duration_ns
    hosts = rogue_hosts(plant, np.random.default_rng(_seed_sequence(config.seed, 0)))
    wanted = [parse_attack(text) for text in config.attacks]
    auto = [name for name, minute in wanted if minute is None]
    window_start = start + config.duration_ns // 2
    slot = (end - window_start) * 95 // 100 // max(len(auto), 1)
    scenarios: list[Scenario] = []
    repeats: dict[str, int] = {}
    k = 0
    for name, minute in wanted:
        spec = SCENARIOS[name]
        nominal = round(spec.nominal_s * SECOND)
        if minute is None:
            t0 = window_start + k * slot + SECOND
            span = min(nominal, slot * 8 // 10)
            k += 1
        else:
            t0 = start + round(minute * 60 * SECOND)
            span = nominal
        if t0 >= end:
            raise ConfigError(f"attack {name} at minute {minute} starts after the capture ends")
        repeats[name] = repeats.get(name, 0) + 1
        key = (1 + ALL.index(name), repeats[name])
        rng = np.random.default_rng(_seed_sequence(config.seed, *key))
        scenario = spec.build(_Context(plant, rng, hosts), t0, max(span, SECOND))
        scenario.packets = sorted((x for x in scenario.packets if x[0] < end), key=lambda x: x[0])
        if not scenario.packets:
            raise ConfigError(f"attack {name} does not fit in the capture")
        scenarios.append(scenario)
    return scenarios


class AttackTraffic:
    """The producer of every attack packet (prebuilt, sorted by time, handed out chunk by chunk)."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        self.scenarios = scenarios
        merged = sorted((x for s in scenarios for x in s.packets), key=lambda x: x[0])
        self.ts = np.array([x[0] for x in merged], dtype=np.int64)
        self.frames = [x[1] for x in merged]
        self.tags = [x[2] for x in merged]
        self.next = 0

    def expected(self, start: int, end: int) -> tuple[float, float]:
        del start, end
        return float(len(self.frames)), float(sum(len(f) for f in self.frames))

    def emit(self, t0: int, t1: int, sink: Sink) -> None:
        del t0
        stop = int(np.searchsorted(self.ts, t1, side="left"))
        for i in range(self.next, stop):
            sink.packets(self.tags[i], [(int(self.ts[i]), self.frames[i])])
        self.next = max(self.next, stop)


def attack_truth(config: GeneratorConfig) -> dict[str, Any]:
    """Ground truth of the attacks in the capture ``config`` generates (the scenarios and attackers)."""
    from fieldward.generator.plan import build_plan

    plan = build_plan(config)
    scenarios = plan.attacks.scenarios if plan.attacks is not None else []
    attackers: dict[str, dict[str, str]] = {}
    for scenario in scenarios:
        if isinstance(scenario.attacker, Host):
            attackers[scenario.attacker.name] = {
                **describe(scenario.attacker),
                "description": scenario.attacker.description,
            }
    return {
        "generator": {"devices": config.devices, "minutes": config.minutes, "seed": config.seed},
        "attackers": list(attackers.values()),
        "scenarios": [s.truth() for s in scenarios],
    }


def write_attack_truth(path: Path, config: GeneratorConfig, merge: bool = False) -> None:
    """Write :func:`attack_truth` as JSON; ``merge``: add it as ``attacks`` to the JSON file at
    ``path`` (the device truth ``fieldward generate --truth`` writes)."""
    truth = attack_truth(config)
    if merge:
        payload = json.loads(path.read_text())
        payload["attacks"] = {"attackers": truth["attackers"], "scenarios": truth["scenarios"]}
    else:
        payload = truth
    path.write_text(json.dumps(payload, indent=1) + "\n")
