"""The inventory's typed records: devices, their attributes with evidence, and communications.

A device attribute is never a bare value: it is the best of the candidate values the evidence
proposed, with a confidence in [0, 1] and the evidence (protocol, packet time, flow) behind it, so an
analyst can see why FieldWard believes a PLC is a Siemens S7-1500 with firmware V2.9.4.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any


class DeviceType(StrEnum):
    """What a device is. The values are the names used in ``devices.json`` and in fingerprint rules."""

    PLC = "plc"
    RTU = "rtu"
    IED = "ied"
    """Intelligent electronic device: protection relay, meter, bay controller."""
    IO_MODULE = "io_module"
    """Remote I/O adapter or module serving a controller."""
    FIELD_GATEWAY = "field_gateway"
    """Protocol gateway or serial-to-Ethernet converter (Modbus gateway, IoT edge gateway)."""
    HMI = "hmi"
    ENGINEERING_WORKSTATION = "engineering_workstation"
    SCADA_SERVER = "scada_server"
    HISTORIAN = "historian"
    OT_SERVER = "ot_server"
    """Other operations server: OPC server, MQTT broker, alarm server."""
    IOT_SENSOR = "iot_sensor"
    IP_CAMERA = "ip_camera"
    VIDEO_RECORDER = "video_recorder"
    PRINTER = "printer"
    NETWORK_DEVICE = "network_device"
    """Switch, router, firewall, wireless access point."""
    IT_WORKSTATION = "it_workstation"
    IT_SERVER = "it_server"
    UNKNOWN = "unknown"


ATTRIBUTES = (
    "vendor",
    "model",
    "product_code",
    "firmware",
    "serial",
    "hostname",
    "os",
    "device_type",
    "purdue_level",
)
"""The attributes every device record carries (null when nothing was observed)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observation behind an attribute value.

    source: what produced it (an event log such as ``cip_identity``, or ``oui``, ``tcp_syn``, ``rule``)
    ts: packet time in ns since the epoch (UTC), None for evidence without a packet (the OUI registry)
    flow_id: the flow in ``flows.parquet``, -1 for none (link-layer frames, registries)
    detail: a short human explanation, e.g. ``ListIdentity product_name``
    """

    source: str
    ts: int | None
    flow_id: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "ts": _iso(self.ts), "flow_id": self.flow_id, "detail": self.detail}


@dataclass(slots=True)
class Candidate:
    """One proposed value of an attribute, with what supports it."""

    value: str | int
    sources: dict[str, float] = field(default_factory=dict)
    """Highest confidence per distinct source: several independent sources raise the confidence."""
    count: int = 0
    evidence: list[Evidence] = field(default_factory=list)
    confidence: float = 0.0
    """Independent sources combine as a noisy-or: 1 - prod(1 - c), capped below certainty."""

    MAX_EVIDENCE = 3

    def support(self, confidence: float, evidence: Evidence) -> None:
        self.count += 1
        if confidence > self.sources.get(evidence.source, 0.0):
            self.sources[evidence.source] = confidence
            self.rescore()
        if len(self.evidence) < self.MAX_EVIDENCE:
            self.evidence.append(evidence)

    def rescore(self) -> None:
        doubt = 1.0
        for value in self.sources.values():
            doubt *= 1.0 - value
        self.confidence = round(min(0.99, 1.0 - doubt), 3)


@dataclass(slots=True)
class Attribute:
    """Every candidate value of one attribute of one device; ``best`` is the one reported."""

    candidates: dict[str | int, Candidate] = field(default_factory=dict)
    _best: Candidate | None = None
    _stale: bool = False

    def propose(self, value: str | int, confidence: float, evidence: Evidence) -> None:
        candidate = self.candidates.get(value)
        if candidate is None:
            candidate = self.candidates[value] = Candidate(value)
        candidate.support(confidence, evidence)
        self._stale = True

    def changed(self) -> None:
        """Candidates were edited directly (merged): recompute ``best`` when next asked."""
        self._stale = True

    @property
    def best(self) -> Candidate | None:
        if self._stale or (self._best is None and self.candidates):
            self._stale = False
            self._best = (
                max(self.candidates.values(), key=lambda c: (c.confidence, c.count, str(c.value)))
                if self.candidates
                else None
            )
        return self._best

    def to_json(self) -> dict[str, Any] | None:
        best = self.best
        if best is None:
            return None
        others = (
            sorted(
                (c for c in self.candidates.values() if c is not best),
                key=lambda c: (-c.confidence, -c.count, str(c.value)),
            )
            if len(self.candidates) > 1
            else []
        )
        return {
            "value": best.value,
            "confidence": best.confidence,
            "evidence": [e.to_json() for e in best.evidence],
            "alternatives": [{"value": c.value, "confidence": c.confidence} for c in others[:3]],
        }


@dataclass(frozen=True, slots=True)
class Role:
    """What a device does in one protocol, e.g. Modbus ``master`` or DNP3 ``outstation``."""

    protocol: str
    role: str
    peers: int
    """Distinct devices it plays this role against."""


@dataclass(frozen=True, slots=True)
class Service:
    """A port the device answered on."""

    transport: str
    port: int
    service: str | None
    """The protocol FieldWard recognised on it (None where no dissector did)."""
    clients: int


@dataclass(slots=True)
class Device:
    """One device of the inventory.

    id: ``mac:aa:bb:cc:dd:ee:ff`` for a device on the monitored segment, ``ip:10.1.2.3`` for a host
    only seen behind a router (its frames carry the router's MAC), one of several addresses a single
    MAC answers for, or a host seen without link-layer addresses.
    local: on the monitored segment (its own MAC, or an undecremented TTL); False for routed hosts.
    """

    id: str
    mac: str | None
    local: bool
    ips: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Each address the device used, with first and last time seen (ns)."""
    vlans: set[int] = field(default_factory=set)
    first_seen: int | None = None
    last_seen: int | None = None
    packets: int = 0
    attributes: dict[str, Attribute] = field(default_factory=dict)
    facts: dict[str, set[str]] = field(default_factory=dict)
    """Raw identifying facts (``dhcp.vendor_class``, ``http.server``, ...) that fingerprint rules read."""
    roles: list[Role] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    protocols: set[str] = field(default_factory=set)
    is_router: bool = False
    """Its MAC carried the traffic of many IP addresses: it routes (or answers) for hosts behind it."""
    via: str | None = None
    """For a device keyed by IP: the MAC its packets arrived from (its router, or the host that
    answers for several addresses)."""

    def attribute(self, name: str) -> Attribute:
        found = self.attributes.get(name)
        if found is None:
            found = self.attributes[name] = Attribute()
        return found

    def value(self, name: str) -> str | int | None:
        found = self.attributes.get(name)
        best = found.best if found is not None else None
        return best.value if best is not None else None

    def add_fact(self, name: str, value: str) -> None:
        self.facts.setdefault(name, set()).add(value)

    def seen(self, ts: int) -> None:
        self.first_seen = ts if self.first_seen is None else min(self.first_seen, ts)
        self.last_seen = ts if self.last_seen is None else max(self.last_seen, ts)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "mac": self.mac,
            "ips": sorted(self.ips),
            "local": self.local,
            "router": self.is_router,
            "via": self.via,
            "vlans": sorted(self.vlans),
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "packets": self.packets,
        }
        attributes = self.attributes
        confidence: dict[str, float] = {}
        for name in ATTRIBUTES:
            attr = attributes.get(name)
            best = attr.best if attr is not None else None
            if best is None:
                record[name] = None
            else:
                record[name] = best.value
                confidence[name] = best.confidence
        record["confidence"] = confidence
        record["protocols"] = sorted(self.protocols)
        record["roles"] = [{"protocol": r.protocol, "role": r.role, "peers": r.peers} for r in self.roles]
        record["services"] = [
            {"transport": s.transport, "port": s.port, "service": s.service, "clients": s.clients}
            for s in self.services
        ]
        record["address_history"] = [
            {"ip": ip, "first_seen": _iso(first), "last_seen": _iso(last)}
            for ip, (first, last) in sorted(self.ips.items(), key=lambda kv: kv[1])
        ]
        record["attributes"] = {
            name: data
            for name, attr in sorted(self.attributes.items())
            if (data := attr.to_json()) is not None
        }
        record["facts"] = {name: sorted(values)[:20] for name, values in sorted(self.facts.items())}
        return record


def _iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    seconds, ns = divmod(int(ts_ns), 1_000_000_000)
    return f"{_iso_seconds(seconds)}.{ns:09d}Z"


@lru_cache(maxsize=1 << 14)
def _iso_seconds(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
