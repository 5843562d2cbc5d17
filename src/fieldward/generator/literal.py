"""Rare traffic built packet by packet: boot and IT chatter, camera control, engineering sessions.

Every producer here is a :class:`Periodic`: a set of items (a device, a pair of devices), each
occurring at ``first + k * period`` plus a small random delay. The occurrences due in a chunk are
found with numpy; building their few packets is plain Python, which costs nothing measurable next
to the bulk traffic (these are well under 1% of the packets).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from fieldward.generator import protocols as p
from fieldward.generator.build import (
    BROADCAST_MAC,
    ETH_ARP,
    PROTO_TCP,
    PROTO_UDP,
    Link,
    Stamped,
    TcpConversation,
    ethernet,
    udp_frame,
)
from fieldward.generator.plant import DOMAIN, LINUX, ROUTER_STACK, Device, Plant, Role
from fieldward.generator.schedule import MS, NEVER, SECOND, US, FlowLog, Proto, Sink, due
from fieldward.generator.traffic import CameraSpec, VideoStreams

ZERO_IP = bytes(4)
BROADCAST_IP = b"\xff" * 4


class Periodic:
    """Items that recur: item ``i`` occurs at ``first[i] + k * period[i]`` plus up to ``jitter[i]``."""

    packets_per_occurrence = 2.0
    """Rough packets and bytes per packet of an occurrence, for :meth:`expected`."""
    bytes_per_packet = 100.0

    def __init__(self, rng: np.random.Generator, flows: FlowLog) -> None:
        self.rng = rng
        self.flows = flows
        self._first: list[int] = []
        self._period: list[int] = []
        self._jitter: list[int] = []
        self.first = np.zeros(0, dtype=np.int64)
        self.period = np.zeros(0, dtype=np.int64)
        self.jitter = np.zeros(0, dtype=np.int64)
        self.next_k = np.zeros(0, dtype=np.int64)

    def schedule(self, first: int, period: int, jitter: int = 0) -> int:
        """Add an item; returns its index. Call :meth:`freeze` after the last one."""
        self._first.append(first)
        self._period.append(period)
        self._jitter.append(jitter)
        return len(self._first) - 1

    def freeze(self) -> None:
        self.first = np.array(self._first, dtype=np.int64)
        self.period = np.array(self._period, dtype=np.int64)
        self.jitter = np.array(self._jitter, dtype=np.int64)
        self.next_k = np.zeros(len(self._first), dtype=np.int64)

    def expected(self, start: int, end: int) -> tuple[float, float]:
        occurrences = np.where(self.first < end, 1 + np.maximum(end - self.first - 1, 0) // self.period, 0)
        count = float(occurrences.sum()) * self.packets_per_occurrence
        return count, count * self.bytes_per_packet

    def emit(self, t0: int, t1: int, sink: Sink) -> None:
        item, k, count = due(self.first, self.period, self.next_k, t1)
        self.next_k += count
        if item.shape[0] == 0:
            return
        ts = (
            self.first[item]
            + k * self.period[item]
            + (self.rng.random(item.shape[0]) * self.jitter[item]).astype(np.int64)
        )
        order = np.lexsort((item, ts))
        for i, occurrence, when in zip(
            item[order].tolist(), k[order].tolist(), ts[order].tolist(), strict=True
        ):
            self.occur(i, occurrence, when, sink)

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        raise NotImplementedError

    def delay(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high))


def _ephemeral(rng: np.random.Generator) -> int:
    return int(rng.integers(49152, 65536))


class ArpTraffic(Periodic):
    """ARP requests (broadcast, or unicast refreshes from Linux stacks) and replies."""

    packets_per_occurrence = 2.0
    bytes_per_packet = 60.0

    def __init__(
        self, plant: Plant, rng: np.random.Generator, flows: FlowLog, start: int, boots: dict[int, int]
    ) -> None:
        super().__init__(rng, flows)
        self.items: list[tuple[bytes, bytes, bytes, bytes, bool]] = []
        for device in plant.devices:
            up = boots[device.index] + SECOND if device.index in boots else start
            subnet = device.subnet
            linux = device.stack is LINUX
            # (sender MAC, sender IP, target MAC, target IP, unicast refreshes, period range in s)
            pairs = [(device.mac, device.ip, subnet.router_mac, subnet.gateway, linux, 60, 300)]
            pairs += [
                (device.mac, device.ip, peer.mac, peer.ip, linux, 60, 300)
                for peer in _on_link_peers(plant, device)
            ]
            pairs.append((subnet.router_mac, subnet.gateway, device.mac, device.ip, False, 240, 1200))
            for sender_mac, sender_ip, target_mac, target_ip, refresh, low, high in pairs:
                period = self.delay(low, high) * SECOND
                self.items.append((sender_mac, sender_ip, target_mac, target_ip, refresh))
                self.schedule(up + self.delay(0, period // MS) * MS, period, 5 * SECOND)
        self.freeze()

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        sender_mac, sender_ip, target_mac, target_ip, refresh = self.items[item]
        unicast = refresh and k > 0
        request = ethernet(
            target_mac if unicast else BROADCAST_MAC,
            sender_mac,
            ETH_ARP,
            p.arp(p.ARP_REQUEST, sender_mac, sender_ip, bytes(6), target_ip),
        )
        reply = ethernet(
            sender_mac, target_mac, ETH_ARP, p.arp(p.ARP_REPLY, target_mac, target_ip, sender_mac, sender_ip)
        )
        sink.packets(Proto.ARP, [(ts, request), (ts + self.delay(40 * US, 900 * US), reply)])
        self.flows.add(Proto.ARP, sender_ip, target_ip)


def _on_link_peers(plant: Plant, device: Device) -> list[Device]:
    """The on-link devices ``device`` exchanges unicast traffic with (so it ARPs for them)."""
    peers: list[Device] = []
    server_role = {Role.SENSOR: Role.BROKER, Role.CAMERA: Role.NVR}.get(device.role)
    server = plant.first(server_role) if server_role is not None else None
    if server is not None and server.subnet is device.subnet:
        peers.append(server)
    if device.role in (Role.PLC_ROCKWELL, Role.IO_ADAPTER):
        other = Role.IO_ADAPTER if device.role is Role.PLC_ROCKWELL else Role.PLC_ROCKWELL
        peers += [d for d in plant.role(other) if d.subnet is device.subnet][:4]
    return peers


class DnsTraffic(Periodic):
    """Name lookups of the Windows hosts and Linux servers against the domain controller."""

    packets_per_occurrence = 2.0
    bytes_per_packet = 110.0

    def __init__(
        self, plant: Plant, server: Device, rng: np.random.Generator, flows: FlowLog, start: int
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.server = server
        self.clients: list[Device] = []
        peers = [d for d in plant.devices if d.role not in (Role.SENSOR, Role.CAMERA)]
        self.names: list[tuple[str, int, bytes | None, int]] = []
        for device in peers[:64]:
            self.names.append((device.fqdn, p.DNS_A, device.ip, 0))
            self.names.append((device.fqdn, p.DNS_AAAA, None, 0))
            reverse = ".".join(str(b) for b in reversed(device.ip)) + ".in-addr.arpa"
            self.names.append((reverse, p.DNS_PTR, p.dns_name(device.fqdn), 0))
        self.names += [
            (f"wpad.{DOMAIN}", p.DNS_A, None, 3),
            ("time.windows.com", p.DNS_A, None, 5),
            ("ctldl.windowsupdate.com", p.DNS_A, None, 5),
        ]
        for device in plant.role(Role.HMI, Role.EWS, Role.HISTORIAN, Role.SCADA, Role.NVR, Role.BROKER):
            period = self.delay(20, 90) * SECOND
            self.clients.append(device)
            self.schedule(start + self.delay(0, period // MS) * MS, period, 3 * SECOND)
        self.freeze()

    def lookup(
        self,
        client: Device,
        ts: int,
        name: str,
        qtype: int,
        rdata: bytes | None,
        rcode: int,
        rng: np.random.Generator,
    ) -> list[Stamped]:
        """A query from ``client`` and the server's answer (random port and id drawn from ``rng``)."""
        txid, ipid = rng.integers(0, 1 << 16, 2).tolist()
        sport = _ephemeral(rng)
        delay = int(rng.integers(150 * US, 2 * MS))
        query = p.dns_query(txid, name, qtype)
        answers = [(qtype, 1200, rdata)] if rdata is not None else []
        soa = (DOMAIN, self.server.fqdn, 2026010101) if rdata is None and rcode in (0, 3) else None
        response = p.dns_response(txid, name, qtype, answers, rcode, soa)
        there = self.plant.link(client, self.server)
        back = self.plant.link(self.server, client)
        self.flows.add(Proto.DNS, client.ip, self.server.ip, sport, 53, PROTO_UDP)
        return [
            (ts, udp_frame(there, sport, 53, query, ipid)),
            (ts + delay, udp_frame(back, 53, sport, response, ipid ^ 0x5A5A)),
        ]

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        name, qtype, rdata, rcode = self.names[self.delay(0, len(self.names))]
        sink.packets(Proto.DNS, self.lookup(self.clients[item], ts, name, qtype, rdata, rcode, self.rng))


class NtpTraffic(Periodic):
    """NTP client polls of servers, workstations, Siemens PLCs and cameras to the domain controller."""

    packets_per_occurrence = 2.0
    bytes_per_packet = 90.0

    def __init__(
        self, plant: Plant, server: Device, rng: np.random.Generator, flows: FlowLog, start: int
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.server = server
        self.clients: list[tuple[Device, int]] = []
        for device in plant.devices:
            if device is server:
                continue
            if device.role is Role.PLC_SIEMENS:
                period, port = self.delay(10, 60) * SECOND, 123
            elif device.role in (Role.CAMERA, Role.NVR, Role.BROKER):
                period, port = 64 * SECOND, _ephemeral(rng)
            elif device.role in (Role.HMI, Role.EWS, Role.HISTORIAN, Role.SCADA):
                period, port = 128 * SECOND, 123
            else:
                continue
            self.clients.append((device, port))
            self.schedule(start + self.delay(0, period // MS) * MS, period, 2 * SECOND)
        self.freeze()

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        client, port = self.clients[item]
        request = p.ntp_client_request(ts)
        arrive = ts + self.delay(100 * US, 600 * US)
        leave = arrive + self.delay(20 * US, 120 * US)
        reply = p.ntp_server_reply(request, arrive, leave, ts - 37 * SECOND, self.server.subnet.gateway)
        self.flows.add(Proto.NTP, client.ip, self.server.ip, port, 123, PROTO_UDP)
        sink.packets(
            Proto.NTP,
            [
                (
                    ts,
                    udp_frame(
                        self.plant.link(client, self.server), port, 123, request, self.delay(0, 1 << 16)
                    ),
                ),
                (
                    leave + self.delay(5 * US, 40 * US),
                    udp_frame(self.plant.link(self.server, client), 123, port, reply, self.delay(0, 1 << 16)),
                ),
            ],
        )


@dataclass(slots=True)
class _Lease:
    device: Device
    vendor_class: str
    lookup: tuple[str, bytes] | None
    """The name the device resolves once it has an address, and the answer."""


class DhcpTraffic(Periodic):
    """DHCP of the IoT devices: DORA at boot (then ARP announcement and a DNS lookup), renewals.

    The IoT subnet's router interface is the DHCP server (lease 600 s, renewal at T1 = 300 s).
    """

    LEASE = 600
    packets_per_occurrence = 2.5
    bytes_per_packet = 342.0

    def __init__(
        self,
        plant: Plant,
        dns: DnsTraffic | None,
        rng: np.random.Generator,
        flows: FlowLog,
        boots: dict[int, int],
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.dns = dns
        self.leases: list[_Lease] = []
        broker = plant.first(Role.BROKER)
        dc = plant.first(Role.DOMAIN_CONTROLLER)
        for device in plant.devices:
            if not device.dhcp:
                continue
            vendor_class = device.dhcp_vendor_class
            if device.vendor == "Axis":
                vendor_class = f"AXIS,Network Camera,{device.model.removeprefix('AXIS ')},10.12.220"
            lookup = None
            if device.role is Role.SENSOR and broker is not None:
                lookup = (broker.fqdn, broker.ip)
            elif dc is not None:
                lookup = (f"ntp.{DOMAIN}", dc.ip)
            self.leases.append(_Lease(device, vendor_class, lookup))
            self.schedule(boots[device.index], self.LEASE // 2 * SECOND)
        self.freeze()

    def _options(
        self, device: Device, msg_type: int, lease: _Lease, extra: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        options: list[tuple[int, bytes]] = [
            (53, bytes([msg_type])),
            (61, b"\x01" + device.mac),
            (57, struct.pack(">H", 1500)),
        ]
        options += extra
        options += [(12, device.name.encode())]
        if lease.vendor_class:
            options.append((60, lease.vendor_class.encode()))
        options.append((55, bytes([1, 3, 6, 12, 15, 28, 42, 51, 58, 59])))
        return options

    def _server_options(self, msg_type: int, device: Device) -> list[tuple[int, bytes]]:
        subnet = device.subnet
        dc = self.plant.first(Role.DOMAIN_CONTROLLER)
        dns = dc.ip if dc is not None else subnet.gateway
        return [
            (53, bytes([msg_type])),
            (54, subnet.gateway),
            (51, struct.pack(">I", self.LEASE)),
            (58, struct.pack(">I", self.LEASE // 2)),
            (59, struct.pack(">I", self.LEASE * 7 // 8)),
            (1, b"\xff\xff\xff\x00"),
            (3, subnet.gateway),
            (6, dns),
            (15, DOMAIN.encode()),
            (42, dns),
        ]

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        lease = self.leases[item]
        device = lease.device
        subnet = device.subnet
        xid = self.delay(0, 1 << 32)
        out: list[Stamped] = []
        client_bcast = Link(device.mac, BROADCAST_MAC, ZERO_IP, BROADCAST_IP, device.stack)
        server_to_client = Link(subnet.router_mac, device.mac, subnet.gateway, device.ip, ROUTER_STACK)
        if k == 0:
            discover = p.dhcp_message(1, xid, device.mac, self._options(device, p.DHCP_DISCOVER, lease, []))
            offer = p.dhcp_message(
                2, xid, device.mac, self._server_options(p.DHCP_OFFER, device), yiaddr=device.ip
            )
            request = p.dhcp_message(
                1,
                xid,
                device.mac,
                self._options(device, p.DHCP_REQUEST, lease, [(50, device.ip), (54, subnet.gateway)]),
                secs=1,
            )
            ack = p.dhcp_message(
                2, xid, device.mac, self._server_options(p.DHCP_ACK, device), yiaddr=device.ip
            )
            t = ts
            out.append((t, udp_frame(client_bcast, 68, 67, discover, self.delay(0, 1 << 16))))
            t += self.delay(2 * MS, 12 * MS)
            out.append((t, udp_frame(server_to_client, 67, 68, offer, self.delay(0, 1 << 16))))
            t += self.delay(5 * MS, 40 * MS)
            out.append((t, udp_frame(client_bcast, 68, 67, request, self.delay(0, 1 << 16))))
            t += self.delay(1 * MS, 6 * MS)
            out.append((t, udp_frame(server_to_client, 67, 68, ack, self.delay(0, 1 << 16))))
            t += self.delay(10 * MS, 60 * MS)
            announce = ethernet(
                BROADCAST_MAC,
                device.mac,
                ETH_ARP,
                p.arp(p.ARP_REQUEST, device.mac, device.ip, bytes(6), device.ip),
            )
            sink.packets(Proto.ARP, [(t, announce)])
            if self.dns is not None and lease.lookup is not None:
                t += self.delay(40 * MS, 120 * MS)
                name, address = lease.lookup
                sink.packets(Proto.DNS, self.dns.lookup(device, t, name, p.DNS_A, address, 0, self.rng))
        else:
            client_to_server = Link(device.mac, subnet.router_mac, device.ip, subnet.gateway, device.stack)
            request = p.dhcp_message(
                1, xid, device.mac, self._options(device, p.DHCP_REQUEST, lease, []), ciaddr=device.ip
            )
            ack = p.dhcp_message(
                2,
                xid,
                device.mac,
                self._server_options(p.DHCP_ACK, device),
                ciaddr=device.ip,
                yiaddr=device.ip,
            )
            out.append((ts, udp_frame(client_to_server, 68, 67, request, self.delay(0, 1 << 16))))
            out.append(
                (
                    ts + self.delay(1 * MS, 6 * MS),
                    udp_frame(server_to_client, 67, 68, ack, self.delay(0, 1 << 16)),
                )
            )
        sink.packets(Proto.DHCP, out)
        self.flows.add(Proto.DHCP, device.mac, subnet.gateway, 68, 67, PROTO_UDP)


_RTSP_METHODS = "OPTIONS, DESCRIBE, PLAY, PAUSE, SETUP, TEARDOWN, SET_PARAMETER, GET_PARAMETER"


class RtspTraffic(Periodic):
    """The recorder's RTSP session with each camera: setup with digest auth, PLAY, keep-alives."""

    packets_per_occurrence = 3.0
    bytes_per_packet = 200.0

    def __init__(
        self,
        plant: Plant,
        nvr: Device,
        cameras: list[CameraSpec],
        opens: list[int],
        rng: np.random.Generator,
        flows: FlowLog,
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.nvr = nvr
        self.cameras = cameras
        self.convs: list[TcpConversation | None] = [None] * len(cameras)
        self.cseq = [0] * len(cameras)
        self.sessions = [f"{int(rng.integers(1 << 28, 1 << 31)):X}" for _ in cameras]
        for spec, opened in zip(cameras, opens, strict=True):
            del spec
            self.schedule(opened, 30 * SECOND, 200 * MS)
        self.freeze()

    def _url(self, spec: CameraSpec) -> str:
        if spec.camera.vendor == "Axis":
            return f"rtsp://{spec.camera.ip_text}/axis-media/media.amp?videocodec=h264"
        return f"rtsp://{spec.camera.ip_text}:554/Streaming/Channels/101"

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        spec = self.cameras[item]
        camera = spec.camera
        url = self._url(spec)
        agent = ("User-Agent", "Hikvision NVR RTSP Client/1.0")
        server = ("Server", "Rtsp Server/3.0" if camera.vendor == "Hikvision" else "GStreamer RTSP server")
        session = self.sessions[item]
        if k == 0:
            conv = self.plant.conversation(self.nvr, camera, _ephemeral(self.rng), p.RTSP_PORT, self.rng)
            self.convs[item] = conv
            out = conv.handshake(ts, self.delay(150 * US, 600 * US))
            realm = (
                f"IP Camera({camera.serial[-5:]})"
                if camera.vendor == "Hikvision"
                else f"AXIS_{camera.mac.hex().upper()}"
            )
            nonce = f"{self.delay(0, 1 << 31):08x}{self.delay(0, 1 << 31):08x}"
            digest = p.rtsp_digest("nvr", "Plant2026!", realm, nonce, "DESCRIBE", url)
            authorization = (
                f'Digest username="nvr", realm="{realm}", nonce="{nonce}", uri="{url}", response="{digest}"'
            )
            sps = p.h264_sps(spec.width, spec.height)
            sdp = p.sdp_h264(
                self.delay(1 << 20, 1 << 30), camera.ip_text, sps, p.h264_pps(), "Media Presentation"
            )
            client_ports = f"{spec.dport}-{spec.dport + 1}"
            server_ports = f"{spec.sport}-{spec.sport + 1}"
            steps = [
                (
                    p.rtsp_request("OPTIONS", url, 1, [agent]),
                    p.rtsp_response(
                        1,
                        [
                            server,
                            ("Public", _RTSP_METHODS),
                        ],
                    ),
                ),
                (
                    p.rtsp_request("DESCRIBE", url, 2, [("Accept", "application/sdp"), agent]),
                    p.rtsp_response(
                        2,
                        [
                            server,
                            ("WWW-Authenticate", f'Digest realm="{realm}", nonce="{nonce}", stale="FALSE"'),
                        ],
                        status="401 Unauthorized",
                    ),
                ),
                (
                    p.rtsp_request(
                        "DESCRIBE",
                        url,
                        3,
                        [("Accept", "application/sdp"), ("Authorization", authorization), agent],
                    ),
                    p.rtsp_response(
                        3, [server, ("Content-Type", "application/sdp"), ("Content-Base", url + "/")], sdp
                    ),
                ),
                (
                    p.rtsp_request(
                        "SETUP",
                        url + "/trackID=1",
                        4,
                        [
                            ("Transport", f"RTP/AVP;unicast;client_port={client_ports}"),
                            ("Authorization", authorization),
                            agent,
                        ],
                    ),
                    p.rtsp_response(
                        4,
                        [
                            server,
                            ("Session", f"{session};timeout=60"),
                            (
                                "Transport",
                                f'RTP/AVP;unicast;client_port={client_ports};server_port={server_ports};ssrc={spec.ssrc:08X};mode="play"',
                            ),
                        ],
                    ),
                ),
                (
                    p.rtsp_request(
                        "PLAY",
                        url,
                        5,
                        [
                            ("Session", session),
                            ("Range", "npt=0.000-"),
                            ("Authorization", authorization),
                            agent,
                        ],
                    ),
                    p.rtsp_response(
                        5,
                        [
                            server,
                            ("Session", session),
                            ("RTP-Info", f"url={url}/trackID=1;seq={spec.seq0};rtptime={spec.ts0}"),
                        ],
                    ),
                ),
            ]
            self.cseq[item] = 5
            self.flows.add(Proto.RTSP, self.nvr.ip, camera.ip, conv.sport, p.RTSP_PORT, PROTO_TCP)
        else:
            existing = self.convs[item]
            if existing is None:
                return
            conv = existing
            out = []
            self.cseq[item] += 1
            cseq = self.cseq[item]
            steps = [
                (
                    p.rtsp_request("GET_PARAMETER", url, cseq, [("Session", session), agent]),
                    p.rtsp_response(cseq, [server, ("Session", session)]),
                )
            ]
        t = out[-1][0] if out else ts
        for request, response in steps:
            t += self.delay(1 * MS, 8 * MS)
            done, t = conv.exchange(
                t, request, response, self.delay(2 * MS, 25 * MS), self.delay(100 * US, 10 * MS)
            )
            out.extend(done)
        sink.packets(Proto.RTSP, out)


class RtcpTraffic(Periodic):
    """RTCP sender reports from each camera and receiver reports from the recorder, every 5 s."""

    packets_per_occurrence = 2.0
    bytes_per_packet = 110.0

    def __init__(
        self, plant: Plant, nvr: Device, video: VideoStreams, rng: np.random.Generator, flows: FlowLog
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.nvr = nvr
        self.video = video
        self.nvr_ssrc = int(rng.integers(1 << 24, 1 << 32))
        for spec in video.specs:
            self.schedule(spec.first_ns + self.delay(1, 5) * SECOND, 5 * SECOND, 300 * MS)
        self.freeze()

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        spec = self.video.specs[item]
        camera = spec.camera
        sr = p.rtcp_sender_report(
            spec.ssrc,
            ts,
            int(self.video.last_ts[item]),
            int(self.video.sent_packets[item]),
            int(self.video.sent_octets[item]),
            f"{camera.name}@{camera.ip_text}",
        )
        highest = (int(self.video.seq[item]) - 1) & 0xFFFF
        rr = p.rtcp_receiver_report(
            self.nvr_ssrc, spec.ssrc, highest, self.delay(20, 400), 0, 0, f"recorder@{self.nvr.ip_text}"
        )
        if k == 0:
            self.flows.add(Proto.RTCP, camera.ip, self.nvr.ip, spec.sport + 1, spec.dport + 1, PROTO_UDP)
        sink.packets(
            Proto.RTCP,
            [
                (
                    ts,
                    udp_frame(
                        self.plant.link(camera, self.nvr),
                        spec.sport + 1,
                        spec.dport + 1,
                        sr,
                        self.delay(0, 1 << 16),
                    ),
                ),
                (
                    ts + self.delay(2 * MS, 60 * MS),
                    udp_frame(
                        self.plant.link(self.nvr, camera),
                        spec.dport + 1,
                        spec.sport + 1,
                        rr,
                        self.delay(0, 1 << 16),
                    ),
                ),
            ],
        )


class ListIdentityTraffic(Periodic):
    """RSLinx-style unicast ListIdentity browsing of every EtherNet/IP device by the workstation."""

    packets_per_occurrence = 2.0
    bytes_per_packet = 110.0

    def __init__(
        self, plant: Plant, ews: Device, rng: np.random.Generator, flows: FlowLog, start: int
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.ews = ews
        self.port = _ephemeral(rng)
        self.targets = [d for d in plant.role(Role.PLC_ROCKWELL, Role.IO_ADAPTER) if d.cip is not None]
        for _ in self.targets:
            self.schedule(start + self.delay(500, 15_000) * MS, 30 * SECOND, 50 * MS)
        self.freeze()

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        target = self.targets[item]
        assert target.cip is not None
        context = struct.pack("<Q", self.delay(0, 1 << 62))
        request = p.enip(p.ENIP_LIST_IDENTITY, 0, b"", context)
        reply = p.enip_list_identity_reply(target.cip, target.ip, context)
        self.flows.add(Proto.ENIP, self.ews.ip, target.ip, self.port, p.ENIP_PORT, PROTO_UDP)
        sink.packets(
            Proto.ENIP,
            [
                (
                    ts,
                    udp_frame(
                        self.plant.link(self.ews, target),
                        self.port,
                        p.ENIP_PORT,
                        request,
                        self.delay(0, 1 << 16),
                    ),
                ),
                (
                    ts + self.delay(300 * US, 4 * MS),
                    udp_frame(
                        self.plant.link(target, self.ews),
                        p.ENIP_PORT,
                        self.port,
                        reply,
                        self.delay(0, 1 << 16),
                    ),
                ),
            ],
        )


@dataclass(slots=True)
class IoConnection:
    """A class-1 connection a Rockwell PLC (scanner) holds with an I/O adapter."""

    scanner: Device
    adapter: Device
    forward_opens: list[p.ForwardOpen]
    session: int
    open_ns: int
    io_first_ns: int = 0


class CipConnections(Periodic):
    """Scanner to adapter: TCP, RegisterSession and Forward_Open, then the session stays idle."""

    packets_per_occurrence = 12.0
    bytes_per_packet = 100.0

    def __init__(
        self, plant: Plant, connections: list[IoConnection], rng: np.random.Generator, flows: FlowLog
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.connections = connections
        for connection in connections:
            self.schedule(connection.open_ns, NEVER)
        self.freeze()

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        c = self.connections[item]
        conv = self.plant.conversation(c.scanner, c.adapter, self.delay(1024, 5000), p.ENIP_PORT, self.rng)
        out = conv.handshake(ts, self.delay(100 * US, 400 * US))
        context = struct.pack("<Q", self.delay(0, 1 << 62))
        steps = [
            (p.enip_register_session(), p.enip(p.ENIP_REGISTER_SESSION, c.session, struct.pack("<HH", 1, 0)))
        ]
        steps += [
            (
                p.enip_send_rr_data(c.session, p.cip_forward_open_request(fo), context, 10),
                p.enip_send_rr_data(c.session, p.cip_forward_open_reply(fo), context),
            )
            for fo in c.forward_opens
        ]
        t = out[-1][0]
        for request, response in steps:
            t += self.delay(200 * US, 2 * MS)
            done, t = conv.exchange(
                t, request, response, self.delay(500 * US, 3 * MS), self.delay(100 * US, 2 * MS)
            )
            out.extend(done)
        self.flows.add(Proto.ENIP, c.scanner.ip, c.adapter.ip, conv.sport, p.ENIP_PORT, PROTO_TCP)
        sink.packets(Proto.ENIP, out)


class EngineeringTraffic(Periodic):
    """The engineering workstation going online with a PLC every few minutes (S7comm or EtherNet/IP).

    S7: COTP connect, setup communication, read SZL 0x0011 and 0x001C (module and component
    identification), some variable reads and sometimes a write. Logix: RegisterSession,
    Get_Attribute_All of the Identity object, tag reads, UnRegisterSession.
    """

    packets_per_occurrence = 30.0
    bytes_per_packet = 120.0

    def __init__(
        self, plant: Plant, ews: Device, rng: np.random.Generator, flows: FlowLog, start: int
    ) -> None:
        super().__init__(rng, flows)
        self.plant = plant
        self.ews = ews
        self.targets = list(plant.role(Role.PLC_SIEMENS, Role.PLC_ROCKWELL))
        if self.targets:
            self.schedule(start + self.delay(3_000, 8_000) * MS, self.delay(150, 240) * SECOND, 5 * SECOND)
        self.freeze()

    def occur(self, item: int, k: int, ts: int, sink: Sink) -> None:
        target = self.targets[self.delay(0, len(self.targets))]
        port = p.S7_PORT if target.role is Role.PLC_SIEMENS else p.ENIP_PORT
        conv = self.plant.conversation(self.ews, target, _ephemeral(self.rng), port, self.rng)
        out = conv.handshake(ts, self.delay(150 * US, 700 * US))
        if target.role is Role.PLC_SIEMENS:
            tag, steps, teardown = Proto.S7COMM, self._s7_steps(target), b""
        else:
            tag, steps, teardown = Proto.ENIP, self._enip_steps(target), b""
            session = int.from_bytes(steps[0][1][4:8], "little")
            teardown = p.enip(p.ENIP_UNREGISTER_SESSION, session)
        t = out[-1][0]
        for request, response in steps:
            t += self.delay(20 * MS, 400 * MS)
            done, t = conv.exchange(
                t, request, response, self.delay(1 * MS, 12 * MS), self.delay(100 * US, 30 * MS)
            )
            out.extend(done)
        t += self.delay(200 * MS, 2000 * MS)
        if teardown:
            out.append(conv.client_send(t, teardown))
            t += self.delay(1 * MS, 30 * MS)
            out.append(conv.server_ack(t))
        out.extend(conv.close(t + self.delay(1 * MS, 50 * MS), self.delay(150 * US, 700 * US)))
        self.flows.add(tag, self.ews.ip, target.ip, conv.sport, conv.dport, PROTO_TCP)
        sink.packets(tag, out)

    def _s7_steps(self, plc: Device) -> list[tuple[bytes, bytes]]:
        assert plc.s7 is not None
        order, module, firmware = plc.s7
        ref = self.delay(1, 0xFF00)
        src_ref = self.delay(1, 0xFFFF)
        dst_ref = self.delay(1, 0xFFFF)
        tsap_dst = 0x0102 if module.startswith("CPU 31") else 0x0101
        items = [p.S7Item(p.S7_AREA_DB, 1, 0, 64), p.S7Item(p.S7_AREA_FLAGS, 0, 0, 16)]
        values = [bytes(self.rng.integers(0, 256, item.length, dtype=np.uint8).tolist()) for item in items]
        steps = [
            (
                p.cotp_connection_request(src_ref, 0x0100, tsap_dst),
                p.cotp_connection_confirm(src_ref, dst_ref, 0x0100, tsap_dst),
            ),
            (p.s7_setup_request(ref), p.s7_setup_response(ref)),
            (
                p.s7_szl_request(ref + 1, 0x0011, 0),
                p.s7_szl_response(ref + 1, 0x0011, 0, 28, p.szl_module_identification(order, firmware)),
            ),
            (
                p.s7_szl_request(ref + 2, 0x001C, 0),
                p.s7_szl_response(
                    ref + 2,
                    0x001C,
                    0,
                    34,
                    p.szl_component_identification(
                        "Plant_Station", plc.name.upper(), f"S C-{plc.serial}", module
                    ),
                ),
            ),
            (p.s7_read_request(ref + 3, items), p.s7_read_response(ref + 3, values)),
            (p.s7_read_request(ref + 4, items[:1]), p.s7_read_response(ref + 4, values[:1])),
        ]
        if self.rng.random() < 0.3:
            item = p.S7Item(p.S7_AREA_DB, 20, 4, 4)
            steps.append(
                (
                    p.s7_write_request(ref + 5, item, struct.pack(">f", float(self.rng.uniform(10, 90)))),
                    p.s7_write_response(ref + 5),
                )
            )
        return steps

    def _enip_steps(self, plc: Device) -> list[tuple[bytes, bytes]]:
        assert plc.cip is not None
        session = self.delay(1, 1 << 32)
        context = struct.pack("<Q", self.delay(0, 1 << 62))
        steps = [
            (p.enip_register_session(), p.enip(p.ENIP_REGISTER_SESSION, session, struct.pack("<HH", 1, 0))),
            (
                p.enip_send_rr_data(
                    session,
                    p.cip_request(p.CIP_GET_ATTRIBUTE_ALL, p.cip_logical_path(0x01, 0x01)),
                    context,
                    10,
                ),
                p.enip_send_rr_data(
                    session, p.cip_reply(p.CIP_GET_ATTRIBUTE_ALL, plc.cip.attributes()), context
                ),
            ),
        ]
        for tag in ("Program:MainProgram.Line1_Speed", "Tank1_Level", "Recipe_Active"):
            value = struct.pack("<Hi", p.CIP_DINT, self.delay(0, 5000))
            request = p.cip_request(p.CIP_READ_TAG, p.cip_symbolic_path(tag), struct.pack("<H", 1))
            steps.append(
                (
                    p.enip_send_rr_data(session, request, context, 10),
                    p.enip_send_rr_data(session, p.cip_reply(p.CIP_READ_TAG, value), context),
                )
            )
        return steps
