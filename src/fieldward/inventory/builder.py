"""Builds the device inventory from host evidence, finished flows and protocol events.

The analysis job feeds an :class:`InventoryBuilder` three streams, each already reduced:

* every decoded batch (:meth:`observe_batch`): vectorized host aggregation (``hosts.py``);
* every table of finished flows (:meth:`observe_flows`): grouped with Arrow into client/server edges;
* the protocol events of the logs that carry identity (:meth:`observe_event`, see ``sources.py``).

:meth:`build` then decides which devices exist (MAC on the local segment, IP behind a router), folds
the evidence into attributes with confidence, derives roles, services and behaviour, runs the
fingerprint rules, and infers type and Purdue level. Nothing here touches a packet one at a time.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import DecodedBatch
from fieldward.inventory.fingerprints import Fingerprints
from fieldward.inventory.hosts import HostObserver, SynSignature, mac_text
from fieldward.inventory.model import Attribute, Candidate, Device, DeviceType, Evidence, Role, Service
from fieldward.inventory.oui import OuiRegistry
from fieldward.inventory.sources import ROW_FILTERS, SOURCES, Target, ipv4_value
from fieldward.protocols.base import Event, events_of_table
from fieldward.weird import WeirdLog

logger = logging.getLogger(__name__)

OT_PROTOCOLS = frozenset(
    {"modbus", "s7comm", "s7comm_plus", "enip", "dnp3", "bacnet", "opcua", "profinet_dcp"}
)
"""Industrial protocols: a server of one is a field device, a client one supervises them."""
OT_POLLING = frozenset({"modbus", "s7comm", "enip", "dnp3"})
FIELD_SERVER_ROLES = frozenset(
    {"modbus/slave", "s7comm/server", "s7comm_plus/server", "enip/server", "dnp3/outstation", "bacnet/server"}
)
ROLE_NAMES: dict[str, tuple[str, str]] = {
    "modbus": ("master", "slave"),
    "dnp3": ("master", "outstation"),
}
"""Client and server role names per protocol where the industry has its own (default client/server)."""
GENERAL_TYPES = frozenset(
    {
        DeviceType.UNKNOWN,
        DeviceType.IT_SERVER,
        DeviceType.IT_WORKSTATION,
        DeviceType.OT_SERVER,
        DeviceType.NETWORK_DEVICE,
    }
)
"""Types whose Purdue level depends on where they sit, refined from their communications."""
SERVER_UDP_PORTS = frozenset({53, 67, 69, 123, 161, 502, 514, 623, 4840, 5683, 20000, 44818, 47808})
"""UDP ports only servers answer from: a flow from one of them to another port is turned around."""
FAST_POLL_PKTS_PER_S = 2.5
"""Client packets per second on an OT polling session above which a client polls like an HMI
(display refresh, 100-500 ms) rather than like a historian (1 s and slower)."""
MIN_POLL_SECONDS = 5.0
"""OT sessions shorter than this (in total per client/server pair) say nothing about a poll rate."""
EDGE_COMPACT_ROWS = 200_000
MAX_NEXT_HOP_IPS = 64
EDGE_KEYS = ("client", "server", "client_mac", "server_mac", "transport", "port", "service")


@dataclass(frozen=True, slots=True)
class InventorySettings:
    router_min_ips: int = 4
    """A MAC that sends IPv4 packets for at least this many addresses routes for them: the hosts
    behind it are keyed by IP, not merged into the router."""
    fingerprint_files: tuple[Path, ...] = ()
    """User fingerprint files, on top of the built-in ones."""
    fast_poll_pkts_per_s: float = FAST_POLL_PKTS_PER_S


@dataclass(slots=True)
class _Record:
    """Evidence about one address or MAC, before the devices exist."""

    attributes: dict[str, Attribute] = field(default_factory=dict)
    facts: dict[str, dict[str, int]] = field(default_factory=dict)
    """name -> {value: packet time it was first seen}: the time decides whose it was when an
    address changed hands."""


@dataclass
class Inventory:
    """The result: devices and the device-to-device communications (the network map's edges)."""

    devices: list[Device]
    communications: pa.Table
    unattributed_events: int = 0

    def by_id(self) -> dict[str, Device]:
        return {d.id: d for d in self.devices}

    def summary(self) -> dict[str, Any]:
        kinds = Counter(str(d.value("device_type") or DeviceType.UNKNOWN) for d in self.devices)
        levels = Counter(str(d.value("purdue_level")) for d in self.devices)
        return {
            "devices": len(self.devices),
            "local": sum(1 for d in self.devices if d.local),
            "by_type": dict(kinds.most_common()),
            "by_purdue_level": dict(sorted(levels.items())),
            "communications": self.communications.num_rows,
            "unattributed_evidence": self.unattributed_events,
        }

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "devices": [d.to_json() for d in self.devices]}

    def write(self, out_dir: Path) -> None:
        """``devices.json`` (streamed: one device per line, so memory stays flat) and
        ``communications.parquet``."""
        with (out_dir / "devices.json").open("wb") as handle:
            handle.write(b'{"summary": ' + orjson.dumps(self.summary()) + b',\n"devices": [\n')
            for index, device in enumerate(self.devices):
                if index:
                    handle.write(b",\n")
                handle.write(orjson.dumps(device.to_json()))
            handle.write(b"\n]}\n")
        pq.write_table(self.communications, out_dir / "communications.parquet", compression="zstd")


class InventoryBuilder:
    """Collects evidence during a run; :meth:`build` returns the :class:`Inventory`."""

    def __init__(
        self,
        settings: InventorySettings | None = None,
        fingerprints: Fingerprints | None = None,
        weird: WeirdLog | None = None,
    ):
        self.settings = settings or InventorySettings()
        self.weird = weird if weird is not None else WeirdLog()
        self._failing_sources: set[str] = set()
        self.fingerprints = fingerprints or Fingerprints.load(self.settings.fingerprint_files)
        self.hosts = HostObserver()
        self.oui = OuiRegistry()
        self._records: dict[Target, _Record] = {}
        """(kind, address) -> evidence; kind "ip" or "mac"."""
        self._binds: list[tuple[str, str, int, str]] = []
        self._binds_seen: set[tuple[str, str]] = set()
        self._edges: list[pa.Table] = []
        self._edge_rows = 0
        self._next_hop_ips: dict[str, set[str]] = {}
        self.events_seen = 0
        self._event_ts = 0
        """Packet time of the event being read: attributes evidence to the MAC using the address then."""

    # ------------------------------------------------------------------ streams in

    def observe_batch(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        self.hosts.observe(batch, decoded)

    def observe_flows(self, table: pa.Table) -> None:
        """Reduce a table of finished flows (flows.parquet schema, with ``service``) to edges."""
        if table.num_rows == 0:
            return
        self._next_hops(table)
        edges = _edges_of(table)
        self._edges.append(edges)
        self._edge_rows += edges.num_rows
        if self._edge_rows > EDGE_COMPACT_ROWS:
            merged = _merge_edges(self._edges)
            self._edges, self._edge_rows = [merged], merged.num_rows

    def _next_hops(self, table: pa.Table) -> None:
        """Which IPs each destination MAC was the next hop for: a gateway is the next hop of many."""
        if "resp_mac" not in table.column_names:
            return
        pairs = (
            table.select(["resp_mac", "resp_ip"]).drop_null().group_by(["resp_mac", "resp_ip"]).aggregate([])
        )
        for mac, ip in zip(
            pairs.column("resp_mac").to_pylist(), pairs.column("resp_ip").to_pylist(), strict=True
        ):
            if int(mac[:2], 16) & 1:
                continue  # broadcast or multicast
            known = self._next_hop_ips.setdefault(mac, set())
            if len(known) < MAX_NEXT_HOP_IPS:
                known.add(ip)

    def wants(self, log: str) -> bool:
        return log in SOURCES

    def observe_table(self, event_type: type[Event], table: pa.Table) -> None:
        """Events a dissector's fast path produced as a table: only the rows the log's source can act
        on (its ``rows`` filter, see :func:`~fieldward.inventory.sources.source`) become objects."""
        rows = ROW_FILTERS.get(event_type.log)
        if rows is not None and event_type.log in SOURCES:
            self.events_seen += table.num_rows
            for event in events_of_table(event_type, table.filter(rows(table))):
                self._observe(event)
            return
        for event in events_of_table(event_type, table):
            self.observe_event(event)

    def observe_event(self, event: Any) -> None:
        if event.log in SOURCES:
            self.events_seen += 1
            self._observe(event)

    def _observe(self, event: Any) -> None:
        function = SOURCES[event.log]
        self._event_ts = int(event.ts)
        try:
            function(event, self)
        except Exception as exc:  # a source bug or an odd field must not stop the run
            self.weird.report("inventory_source_error", "inventory", f"{event.log}: {type(exc).__name__}")
            if event.log not in self._failing_sources:
                self._failing_sources.add(event.log)
                logger.info("inventory source %s raised %s: %s", event.log, type(exc).__name__, exc)

    # ------------------------------------------------------------------ Observations protocol

    def _record(self, target: Target) -> _Record:
        record = self._records.get(target)
        if record is None:
            record = self._records[target] = _Record()
        return record

    def attribute(
        self, target: Target, name: str, value: str | int, confidence: float, event: Any, detail: str
    ) -> None:
        if name == "vendor" and isinstance(value, str):
            value = self.fingerprints.vendor(value)
        evidence = Evidence(event.log, int(event.ts), int(event.flow_id), detail)
        record = self._record(target)
        attribute = record.attributes.get(name)
        if attribute is None:
            attribute = record.attributes[name] = Attribute()
        attribute.propose(value, confidence, evidence)

    def fact(self, target: Target, name: str, value: str) -> None:
        self._record(target).facts.setdefault(name, {}).setdefault(value[:300], self._event_ts)

    def bind(self, mac: str, ip: str, ts: int, source: str) -> None:
        if (mac, ip) not in self._binds_seen:
            self._binds_seen.add((mac, ip))
            self._binds.append((mac, ip, ts, source))

    # ------------------------------------------------------------------ build

    def build(self) -> Inventory:
        with _collector_paused():
            return self._build()

    def _build(self) -> Inventory:
        devices, owner = self._devices()
        unattributed = self._apply_records(devices, owner)
        edges = _merge_edges(self._edges) if self._edges else _empty_edges()
        clients, servers = self._edge_devices(edges, devices, owner)
        communications = self._communications(edges, clients, servers)
        self._apply_edges(edges, clients, servers, devices)
        for device in devices.values():
            self._identify(device)
        levels = self._levels(devices, communications)
        for device in devices.values():
            level, detail = levels[device.id]
            if level is not None:
                confidence = _type_confidence(device)
                evidence = Evidence("purdue", None, -1, detail)
                device.attribute("purdue_level").propose(level, confidence, evidence)
        ordered = sorted(devices.values(), key=_device_order)
        return Inventory(ordered, communications, unattributed)

    def _devices(self) -> tuple[dict[str, Device], dict[str, list[tuple[str, int, int, int]]]]:
        """Create the devices and the address book ip -> [(device id, first, last, packets)]."""
        hosts = self.hosts
        ipv4_per_mac: dict[int, set[str]] = defaultdict(set)
        for (_vlan, mac, ip), _act in hosts.bindings.items():
            if mac and ":" not in ip:
                ipv4_per_mac[mac].add(ip)
        arp_ips: dict[int, set[str]] = defaultdict(set)
        for _vlan, mac, ip in hosts.arp:
            arp_ips[mac].add(ip)
        routers = {mac for mac, ips in ipv4_per_mac.items() if len(ips) >= self.settings.router_min_ips}
        gateways = {
            int(mac.replace(":", ""), 16)
            for mac, ips in self._next_hop_ips.items()
            if len(ips) >= self.settings.router_min_ips
        }

        devices: dict[str, Device] = {}
        owner: dict[str, list[tuple[str, int, int, int]]] = defaultdict(list)
        seen_macs = {mac for (_vlan, mac) in hosts.macs}

        def local(mac: int) -> Device:
            text = mac_text(mac)
            key = f"mac:{text}"
            device = devices.get(key)
            if device is None:
                device = devices[key] = Device(
                    id=key, mac=text, local=mac in seen_macs, is_router=mac in routers
                )
                if mac in gateways:
                    device.is_router = True
                    device.add_fact("network.gateway", "next hop")
            return device

        for (vlan, mac), act in hosts.macs.items():
            device = local(mac)
            device.vlans.add(vlan)
            device.packets += act.packets
            device.seen(act.first)
            device.seen(act.last)

        limit = self.settings.router_min_ips
        own = {mac: arp_ips[mac] if len(arp_ips[mac]) < limit else set() for mac in routers}
        """A router's own addresses: those it answers ARP for (a real router claims few)."""

        remote: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for (_vlan, mac, ip), act in hosts.bindings.items():
            if mac == 0 or (mac in routers and ip not in own[mac]):
                remote[ip].append((mac, act))
                continue
            device = local(mac)
            _add_ip(device, ip, act.first, act.last)
            owner[ip].append((device.id, act.first, act.last, act.packets))
        for (_vlan, mac, ip), act in hosts.arp.items():
            if mac in routers and ip not in own[mac]:
                if ip not in remote:
                    remote[ip].append((mac, act))
                continue
            device = local(mac)
            _add_ip(device, ip, act.first, act.last)
            if not any(entry[0] == device.id for entry in owner[ip]):
                owner[ip].append((device.id, act.first, act.last, 0))
        for mac_str, ip, ts, _source in self._binds:
            mac = int(mac_str.replace(":", ""), 16)
            if mac in routers and ip not in own[mac]:
                continue
            device = local(mac)
            _add_ip(device, ip, ts, ts)
            if not any(entry[0] == device.id for entry in owner[ip]):
                owner[ip].append((device.id, ts, ts, 0))
        for ip, seen in remote.items():
            if ip in owner:
                continue  # the host is on a monitored segment too: its own MAC identifies it
            hop_ttl = max(act.max_ttl for _m, act in seen)
            hops = _initial(hop_ttl) - hop_ttl if hop_ttl else None
            key = f"ip:{ip}"
            via = sorted({mac_text(m) for m, _act in seen if m})
            device = devices[key] = Device(id=key, mac=None, local=hops == 0, via=via[0] if via else None)
            for _mac, act in seen:
                _add_ip(device, ip, act.first, act.last)
                device.packets += act.packets
                device.seen(act.first)
                device.seen(act.last)
            if hops is not None:
                device.add_fact("hops", str(hops))
            owner[ip].append((key, device.first_seen or 0, device.last_seen or 0, device.packets))
            for mac in {m for m, _act in seen if m in routers}:
                carrier = local(mac)
                carrier.is_router = True
                routed = bool(hops)  # TTL decremented on the way: it routes, not just answers
                carrier.add_fact("network.gateway" if routed else "network.multi_address", "routes")
        for entries in owner.values():
            entries.sort(key=lambda e: (-e[3], e[1]))
        return devices, owner

    def _apply_records(
        self, devices: dict[str, Device], owner: dict[str, list[tuple[str, int, int, int]]]
    ) -> int:
        """Fold the evidence into the devices: a MAC's to its device; an address's to the device
        that used it at the time of each piece of evidence (an address can change hands)."""
        unattributed = 0
        while self._records:  # consumed as folded: the evidence moves into the devices
            (kind, address), record = self._records.popitem()
            if kind == "mac":
                key = f"mac:{address}"
                if key not in devices:
                    # Named by a protocol (a DHCP client behind a relay) but never a frame source here.
                    devices[key] = Device(id=key, mac=address, local=False)
                entries = [(key, 0, 0, 0)]
            else:
                entries = owner.get(address, [])
            if not entries:
                unattributed += 1
                continue
            single = devices[entries[0][0]] if len(entries) == 1 else None
            for name, attribute in record.attributes.items():
                if single is not None and name not in single.attributes:
                    single.attributes[name] = attribute  # the record is consumed: moved as it is
                    continue
                for value, candidate in attribute.candidates.items():
                    ts = candidate.evidence[0].ts if candidate.evidence else None
                    device = single or devices[_owner_at(entries, ts)]
                    _merge_candidate(device.attribute(name), value, candidate)
            for name, values in record.facts.items():
                if single is not None:
                    single.facts.setdefault(name, set()).update(values)
                    continue
                for value, ts in values.items():
                    device = devices[_owner_at(entries, ts)]
                    device.facts.setdefault(name, set()).add(value)
        return unattributed

    def _device_of(
        self,
        devices: dict[str, Device],
        owner: dict[str, list[tuple[str, int, int, int]]],
        ip: str,
        mac: str | None = None,
    ) -> str | None:
        """The device that used ``ip`` (sending with ``mac``, where the flow says which)."""
        if mac:
            device = devices.get(f"mac:{mac}")
            if device is not None and ip in device.ips:
                return device.id
        entries = owner.get(ip)
        return entries[0][0] if entries else None

    def _edge_devices(
        self, edges: pa.Table, devices: dict[str, Device], owner: dict[str, list[tuple[str, int, int, int]]]
    ) -> tuple[list[str | None], list[str | None]]:
        """The client and server device of every edge (None: an address no device used), each
        distinct (address, MAC) looked up once."""
        known: dict[tuple[str, str | None], str | None] = {}

        def device_ids(ips: list[str], macs: list[str | None]) -> list[str | None]:
            out: list[str | None] = []
            for pair in zip(ips, macs, strict=True):
                if pair in known:
                    out.append(known[pair])
                else:
                    out.append(found := self._device_of(devices, owner, *pair))
                    known[pair] = found
            return out

        return (
            device_ids(edges["client"].to_pylist(), edges["client_mac"].to_pylist()),
            device_ids(edges["server"].to_pylist(), edges["server_mac"].to_pylist()),
        )

    def _communications(
        self, edges: pa.Table, clients: list[str | None], servers: list[str | None]
    ) -> pa.Table:
        table = edges.append_column("src_device", pa.array(clients, pa.string())).append_column(
            "dst_device", pa.array(servers, pa.string())
        )
        table = table.rename_columns(
            [
                {"client": "src_ip", "server": "dst_ip", "port": "dst_port"}.get(n, n)
                for n in table.column_names
            ]
        )
        keep = pc.and_(pc.is_valid(table["src_device"]), pc.is_valid(table["dst_device"]))
        table = table.filter(keep)
        grouped = table.group_by(
            ["src_device", "dst_device", "transport", "dst_port", "service"], use_threads=False
        )
        out = grouped.aggregate(_edge_aggregates(with_duration=False))
        out = out.rename_columns(
            [n.removesuffix("_sum").removesuffix("_min").removesuffix("_max") for n in out.column_names]
        )
        return out.sort_by(
            [("src_device", "ascending"), ("dst_device", "ascending"), ("dst_port", "ascending")]
        )

    def _apply_edges(
        self,
        edges: pa.Table,
        clients: list[str | None],
        servers: list[str | None],
        devices: dict[str, Device],
    ) -> None:
        """Roles, services, ports used and polling behaviour, grouped with Arrow over all edges."""
        if edges.num_rows == 0:
            return
        client_ips, server_ips = edges["client"].to_pylist(), edges["server"].to_pylist()
        client_devs = [d or f"ip:{ip}" for d, ip in zip(clients, client_ips, strict=True)]
        server_devs = [d or f"ip:{ip}" for d, ip in zip(servers, server_ips, strict=True)]
        table = edges.append_column("client_dev", pa.array(client_devs, pa.string())).append_column(
            "server_dev", pa.array(server_devs, pa.string())
        )
        answered = pc.greater(table["answered"], 0)
        has_service = pc.is_valid(table["service"])
        l4 = pc.is_in(table["transport"], pa.array(["tcp", "udp"]))
        fixed = pc.less(table["port"], 49152)

        def grouped(mask: pa.Array, keys: list[str], distinct: str) -> list[dict[str, Any]]:
            chosen = table.filter(mask)
            if chosen.num_rows == 0:
                return []
            out = chosen.group_by(keys, use_threads=False).aggregate([(distinct, "count_distinct")])
            rows: list[dict[str, Any]] = out.to_pylist()
            return rows

        roles: list[tuple[str, str, str, int]] = []
        for row in grouped(has_service, ["client_dev", "service"], "server_dev"):
            name = ROLE_NAMES.get(row["service"], ("client", "server"))[0]
            roles.append((row["client_dev"], row["service"], name, row["server_dev_count_distinct"]))
        for row in grouped(pc.and_(has_service, answered), ["server_dev", "service"], "client_dev"):
            name = ROLE_NAMES.get(row["service"], ("client", "server"))[1]
            roles.append((row["server_dev"], row["service"], name, row["client_dev_count_distinct"]))
        for device_id, protocol, role, peers in sorted(roles):
            device = devices.get(device_id)
            if device is not None:
                device.protocols.add(protocol)
                device.roles.append(Role(protocol, role, peers))
                device.add_fact("role", f"{protocol}/{role}")

        served = pc.and_(
            pc.and_(l4, answered), pc.and_(pc.greater(table["port"], 0), pc.or_(fixed, has_service))
        )
        services = grouped(served, ["server_dev", "transport", "port", "service"], "client_dev")
        for row in sorted(
            services, key=lambda r: (r["server_dev"], r["transport"], r["port"], r["service"] or "")
        ):
            device = devices.get(row["server_dev"])
            if device is not None:
                device.services.append(
                    Service(row["transport"], row["port"], row["service"], row["client_dev_count_distinct"])
                )
                device.add_fact("serves", f"{row['transport']}/{row['port']}")
        used = pc.and_(pc.and_(l4, answered), pc.and_(pc.greater(table["port"], 0), fixed))
        for row in grouped(used, ["client_dev", "transport", "port"], "server_dev"):
            device = devices.get(row["client_dev"])
            if device is not None:
                device.add_fact("uses", f"{row['transport']}/{row['port']}")

        polling = pc.and_(
            pc.and_(
                pc.is_in(table["service"], pa.array(sorted(OT_POLLING))), pc.equal(table["transport"], "tcp")
            ),
            pc.greater_equal(table["duration"], MIN_POLL_SECONDS),
        )
        polls = table.filter(pc.fill_null(polling, False))
        if polls.num_rows:
            rate = pc.divide(pc.cast(polls["src_packets"], pa.float64()), polls["duration"])
            medians = (
                pa.table({"client_dev": polls["client_dev"], "rate": rate})
                .group_by("client_dev", use_threads=False)
                .aggregate([("rate", "approximate_median")])
            )
            threshold = self.settings.fast_poll_pkts_per_s
            for device_id, median in zip(
                medians["client_dev"].to_pylist(), medians["rate_approximate_median"].to_pylist(), strict=True
            ):
                device = devices.get(device_id)
                if device is not None and median is not None:
                    fast = median >= threshold
                    device.add_fact("behaviour", "ot-polling-fast" if fast else "ot-polling-slow")

    def _identify(self, device: Device) -> None:
        """OUI vendor, TCP/IP stack facts, then the fingerprint rules in two rounds."""
        if device.mac is not None:
            org = self.oui.organisation(device.mac)
            if org is not None:
                device.attribute("vendor").propose(self.fingerprints.vendor(org), 0.6, _oui_evidence(org))
        for ip in device.ips:
            for signature in self.hosts.syn.get(ip, {}):
                device.add_fact("tcp.synack" if signature.synack else "tcp.syn", _signature_text(signature))
        hostname = device.attributes.get("hostname")
        if hostname is not None:
            for value in hostname.candidates:
                device.add_fact("hostname", str(value))
        for second_round in (False, True):
            if second_round:
                for name, attribute in device.attributes.items():
                    best = attribute.best
                    if best is not None:
                        device.facts[f"attr.{name}"] = {str(best.value)}
            for rule, proposed in self.fingerprints.evaluate(device.facts, second_round):
                for name, value in proposed.items():
                    if name == "vendor":
                        value = self.fingerprints.vendor(value)
                    device.attribute(name).propose(value, rule.confidence, rule.evidence)
        for name in [n for n in device.facts if n.startswith("attr.")]:
            del device.facts[name]

    def _levels(
        self, devices: dict[str, Device], communications: pa.Table
    ) -> dict[str, tuple[int | None, str]]:
        """Purdue level per device: the type's default, refined from communications for general types."""
        defaults = self.fingerprints.levels
        levels: dict[str, tuple[int | None, str]] = {}
        for device in devices.values():
            kind = DeviceType(str(device.value("device_type") or DeviceType.UNKNOWN))
            level = defaults.get(kind.value)
            levels[device.id] = (level, f"default level of {kind.value}")
        peers: dict[str, set[str]] = defaultdict(set)
        clients_of: dict[str, set[str]] = defaultdict(set)
        for src, dst in zip(
            communications.column("src_device").to_pylist(),
            communications.column("dst_device").to_pylist(),
            strict=True,
        ):
            if src != dst:
                peers[src].add(dst)
                clients_of[dst].add(src)
        for device in devices.values():
            kind = DeviceType(str(device.value("device_type") or DeviceType.UNKNOWN))
            if kind not in GENERAL_TYPES:
                continue
            roles = {f"{r.protocol}/{r.role}" for r in device.roles}
            if roles & FIELD_SERVER_ROLES:
                levels[device.id] = (1, "serves an industrial protocol")
                continue
            field_peers = [p for p in peers[device.id] if levels.get(p, (None, ""))[0] == 1]
            if any(r.protocol in OT_PROTOCOLS for r in device.roles) and field_peers:
                levels[device.id] = (2, f"industrial client of {len(field_peers)} level-1 device(s)")
                continue
            client_levels = [
                levels[c][0] for c in clients_of[device.id] if levels.get(c, (None, ""))[0] is not None
            ]
            if client_levels and kind != DeviceType.NETWORK_DEVICE:
                low = sum(1 for lv in client_levels if lv is not None and lv <= 2)
                if low * 2 > len(client_levels):
                    levels[device.id] = (3, f"serves {low} device(s) of levels 0-2")
                    continue
            if kind == DeviceType.UNKNOWN:
                levels[device.id] = (None, "")
        return levels


# ---------------------------------------------------------------------- helpers


@lru_cache(maxsize=4096)
def _oui_evidence(org: str) -> Evidence:
    return Evidence("oui", None, -1, f"IEEE MA-L registry: {org}")


@lru_cache(maxsize=4096)
def _signature_text(signature: SynSignature) -> str:
    return signature.text()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building the inventory makes a few Python objects per device (devices, attributes,
    candidates, facts), all alive until the inventory is dropped. With 50,000 devices the cyclic
    collector would scan these millions of objects again and again (a young collection every 50,000
    allocations, a middle one every twenty of those) and find no garbage. It is paused meanwhile.

    In a process that freezes what it keeps (the analysis job does after every batch and unfreezes
    at its end, ``pipeline._CollectorPacing``), what the build made is frozen too: otherwise the next
    collection would still scan it all at once. Elsewhere (a test, a library user) nothing is frozen
    and the collector sees the objects as usual once it runs again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count():
            gc.freeze()
        if enabled:
            gc.enable()


def _merge_candidate(target: Attribute, value: str | int, candidate: Candidate) -> None:
    target.changed()
    merged = target.candidates.get(value)
    if merged is None:
        target.candidates[value] = candidate
        return
    merged.count += candidate.count
    for source, confidence in candidate.sources.items():
        merged.sources[source] = max(confidence, merged.sources.get(source, 0.0))
    merged.rescore()
    room = merged.MAX_EVIDENCE - len(merged.evidence)
    merged.evidence.extend(candidate.evidence[: max(room, 0)])


def _owner_at(entries: list[tuple[str, int, int, int]], ts: int | None) -> str:
    """Which of the devices that used an address (``(device id, first, last, packets)``) had it at
    ``ts``: of those whose period covers ``ts``, the one that started last (a lease handed over and
    back); else, of those that started before ``ts``, the one heard last; else the main user."""
    if ts is None:
        return entries[0][0]
    covering = [(first, device) for device, first, last, _n in entries if first <= ts <= last]
    if covering:
        return max(covering)[1]
    before = [(last, device) for device, first, last, _n in entries if first <= ts]
    if before:
        return max(before)[1]
    return entries[0][0]


def _add_ip(device: Device, ip: str, first: int, last: int) -> None:
    known = device.ips.get(ip)
    device.ips[ip] = (first, last) if known is None else (min(known[0], first), max(known[1], last))


def _initial(ttl: int) -> int:
    for start in (32, 64, 128, 255):
        if ttl <= start:
            return start
    return 255


def _type_confidence(device: Device) -> float:
    attribute = device.attributes.get("device_type")
    best = attribute.best if attribute is not None else None
    return round(0.9 * best.confidence, 3) if best is not None else 0.3


def _device_order(device: Device) -> tuple[int, str, str]:
    level = device.value("purdue_level")
    first_ip = min(device.ips, key=_ip_sort_key) if device.ips else ""
    return (
        int(level) if level is not None else 9,
        str(device.value("device_type") or "~"),
        _ip_text_key(first_ip),
    )


@lru_cache(maxsize=1 << 17)
def _ip_sort_key(ip: str) -> tuple[int, int]:
    value = ipv4_value(ip)
    if value is not None:
        return (4, value)
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (address.version, int(address))


def _ip_text_key(ip: str) -> str:
    version, value = _ip_sort_key(ip)
    return f"{version}{value:040d}"


EDGE_SCHEMA = pa.schema(
    [
        ("client", pa.string()),
        ("server", pa.string()),
        ("client_mac", pa.string()),
        ("server_mac", pa.string()),
        ("transport", pa.string()),
        ("port", pa.uint16()),
        ("service", pa.string()),
        ("flows", pa.int64()),
        ("answered", pa.int64()),
        ("src_packets", pa.int64()),
        ("dst_packets", pa.int64()),
        ("src_bytes", pa.int64()),
        ("dst_bytes", pa.int64()),
        ("duration", pa.float64()),
        ("first_ts", pa.timestamp("ns", tz="UTC")),
        ("last_ts", pa.timestamp("ns", tz="UTC")),
    ]
)


def _empty_edges() -> pa.Table:
    return EDGE_SCHEMA.empty_table()


def _edges_of(flows: pa.Table) -> pa.Table:
    """One flows table -> client/server edges. A UDP flow whose originator used a well-known port
    and whose responder did not (a server that answered a broadcast from its own port, or sent
    first) is turned around."""
    proto = flows.column("proto")
    orig_port = flows.column("orig_port").to_numpy(zero_copy_only=False).astype(np.int64)
    resp_port = flows.column("resp_port").to_numpy(zero_copy_only=False).astype(np.int64)
    udp = np.asarray(pc.equal(proto, "udp").to_numpy(zero_copy_only=False), dtype=bool)
    server_ports = np.fromiter(SERVER_UDP_PORTS, dtype=np.int64)
    known = np.isin(orig_port, server_ports)
    resp_known = np.isin(resp_port, server_ports)
    flip = udp & known & ~resp_known
    mask = pa.array(flip)

    def pick(a: str, b: str) -> pa.ChunkedArray:
        return pc.if_else(mask, flows.column(b), flows.column(a))

    service = (
        flows.column("service") if "service" in flows.column_names else pa.nulls(flows.num_rows, pa.string())
    )
    answered = pc.cast(pc.greater(pick("resp_pkts", "orig_pkts"), 0), pa.int64())
    table = pa.table(
        {
            "client": pick("orig_ip", "resp_ip"),
            "server": pick("resp_ip", "orig_ip"),
            "client_mac": pick("orig_mac", "resp_mac"),
            "server_mac": pick("resp_mac", "orig_mac"),
            "transport": proto,
            "port": pick("resp_port", "orig_port"),
            "service": service,
            "flows": pa.array(np.ones(flows.num_rows, dtype=np.int64)),
            "answered": answered,
            "src_packets": pick("orig_pkts", "resp_pkts"),
            "dst_packets": pick("resp_pkts", "orig_pkts"),
            "src_bytes": pick("orig_bytes", "resp_bytes"),
            "dst_bytes": pick("resp_bytes", "orig_bytes"),
            "duration": flows.column("duration_s"),
            "first_ts": flows.column("first_ts"),
            "last_ts": flows.column("last_ts"),
        }
    )
    return _merge_edges([table.cast(EDGE_SCHEMA)])


EDGE_SUMS = ("flows", "answered", "src_packets", "dst_packets", "src_bytes", "dst_bytes")


def _edge_aggregates(with_duration: bool) -> list[tuple[str, str]]:
    """Counters add up, the time span widens (duration adds up too while edges are merged)."""
    sums = [*EDGE_SUMS, "duration"] if with_duration else list(EDGE_SUMS)
    return [(name, "sum") for name in sums] + [("first_ts", "min"), ("last_ts", "max")]


def _merge_edges(tables: Iterable[pa.Table]) -> pa.Table:
    table = pa.concat_tables(list(tables))
    grouped = table.group_by(list(EDGE_KEYS), use_threads=False).aggregate(
        _edge_aggregates(with_duration=True)
    )
    names = [n.removesuffix("_sum").removesuffix("_min").removesuffix("_max") for n in grouped.column_names]
    return grouped.rename_columns(names).select(EDGE_SCHEMA.names).cast(EDGE_SCHEMA)
