"""The simulated plant: devices, vendors, addresses and Purdue-level subnets.

:func:`build_plant` lays out ``n`` devices deterministically from a seeded generator. Roles come from
a fixed sequence (a core of one device per role first, then a repeating mix), so any ``n`` gives a
plant where every device has the peers it needs, and larger ``n`` scales the mix proportionally.

Addressing (one router, a Moxa EDR firewall, with an interface ``.1`` in every subnet):

=========  ===================  =====================================================
level      subnet               devices
=========  ===================  =====================================================
L1         10.10.1.0/24         PLCs, Modbus gateways, I/O adapters, RTUs
L2         10.10.2.0/24         HMIs, engineering workstation, SCADA/DNP3 master
L3         10.10.3.0/24         domain controller (DNS, NTP), historian
IoT        10.20.0.0/24         MQTT broker, video recorder, sensors and cameras (DHCP)
=========  ===================  =====================================================

A level that outgrows its /24 continues in the next cell: 10.10.11.0/24, 10.10.21.0/24, ... for
L1 to L3 and 10.20.1.0/24, 10.20.2.0/24, ... for IoT. MAC addresses use real IEEE OUIs of each
vendor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from fieldward.generator.build import Link, Stack, TcpConversation
from fieldward.generator.protocols import CipIdentity


class Role(StrEnum):
    HMI = "hmi"
    EWS = "engineering-workstation"
    HISTORIAN = "historian"
    SCADA = "scada-master"
    DOMAIN_CONTROLLER = "domain-controller"
    BROKER = "mqtt-broker"
    NVR = "video-recorder"
    PLC_SIEMENS = "plc-siemens"
    PLC_ROCKWELL = "plc-rockwell"
    PLC_SCHNEIDER = "plc-schneider"
    PLC_ABB = "plc-abb"
    GATEWAY = "modbus-gateway"
    IO_ADAPTER = "io-adapter"
    RTU = "rtu"
    SENSOR = "sensor"
    CAMERA = "camera"


MODBUS_SERVERS = (Role.PLC_SCHNEIDER, Role.PLC_ABB, Role.GATEWAY)
PLCS = (Role.PLC_SIEMENS, Role.PLC_ROCKWELL, *MODBUS_SERVERS)

# One of each role, dependencies first (a sensor needs the broker, an adapter its scanner, ...).
_CORE: tuple[Role, ...] = (
    Role.HMI,
    Role.PLC_SCHNEIDER,
    Role.HISTORIAN,
    Role.PLC_SIEMENS,
    Role.DOMAIN_CONTROLLER,
    Role.PLC_ROCKWELL,
    Role.IO_ADAPTER,
    Role.BROKER,
    Role.SENSOR,
    Role.NVR,
    Role.CAMERA,
    Role.EWS,
    Role.SCADA,
    Role.RTU,
    Role.PLC_ABB,
    Role.GATEWAY,
)
_MIX: tuple[Role, ...] = (
    Role.SENSOR,
    Role.PLC_SIEMENS,
    Role.CAMERA,
    Role.HMI,
    Role.PLC_SCHNEIDER,
    Role.SENSOR,
    Role.RTU,
    Role.IO_ADAPTER,
    Role.PLC_ROCKWELL,
    Role.SENSOR,
    Role.GATEWAY,
    Role.IO_ADAPTER,
    Role.PLC_ABB,
    Role.SENSOR,
    Role.RTU,
    Role.PLC_SIEMENS,
    Role.IO_ADAPTER,
    Role.HMI,
    Role.SENSOR,
    Role.CAMERA,
)


def role_sequence(n: int) -> list[Role]:
    """The roles of an ``n``-device plant, in device order."""
    roles = list(_CORE[:n])
    while len(roles) < n:
        roles.append(_MIX[(len(roles) - len(_CORE)) % len(_MIX)])
    return roles


# TCP/IP stack profiles (TTL, windows, options) as the devices' real stacks show them.
WINDOWS = Stack(ttl=128, syn_window=64240, window_scale=8, window_bytes=262144)
LINUX = Stack(ttl=64, syn_window=64240, window_scale=7, window_bytes=64256)
SIEMENS_STACK = Stack(ttl=30, syn_window=8192, window_scale=None, window_bytes=8192, df=False)
ROCKWELL_STACK = Stack(ttl=64, syn_window=4096, window_scale=None, window_bytes=4096, df=False)
EMBEDDED = Stack(ttl=64, syn_window=5840, window_scale=None, window_bytes=5840)
ROUTER_STACK = Stack(ttl=64, syn_window=5840, window_scale=None, window_bytes=5840)


@dataclass(frozen=True, slots=True)
class Model:
    """A product line: vendor, real OUIs, model names and the stack it runs."""

    vendor: str
    ouis: tuple[str, ...]
    models: tuple[str, ...]
    stack: Stack
    dhcp_vendor_class: str = ""


CATALOG: dict[Role, tuple[Model, ...]] = {
    Role.HMI: (
        Model("HP", ("3C:D9:2B", "9C:8E:99"), ("HP Z2 G9 Workstation",), WINDOWS),
        Model("Dell", ("18:66:DA", "D4:BE:D9"), ("Dell OptiPlex XE4",), WINDOWS),
        Model("Siemens", ("28:63:36",), ("SIMATIC IPC677E",), WINDOWS),
    ),
    Role.EWS: (Model("Dell", ("F8:BC:12", "B8:AC:6F"), ("Dell Precision 3660",), WINDOWS),),
    Role.HISTORIAN: (Model("Dell", ("D4:BE:D9", "EC:F4:BB"), ("Dell PowerEdge R650",), WINDOWS),),
    Role.SCADA: (Model("HP", ("9C:8E:99",), ("HPE ProLiant DL360 Gen10",), WINDOWS),),
    Role.DOMAIN_CONTROLLER: (Model("HP", ("3C:D9:2B",), ("HPE ProLiant DL380 Gen10",), WINDOWS),),
    Role.BROKER: (Model("Moxa", ("00:90:E8",), ("UC-8112A-ME-T",), LINUX),),
    Role.NVR: (Model("Hikvision", ("C0:56:E3", "44:19:B6"), ("DS-7616NI-K2",), LINUX),),
    Role.PLC_SIEMENS: (
        Model(
            "Siemens",
            ("28:63:36", "00:1B:1B", "AC:64:17", "00:0E:8C"),
            ("S7-1500", "S7-1200", "S7-300"),
            SIEMENS_STACK,
        ),
    ),
    Role.PLC_ROCKWELL: (
        Model(
            "Rockwell Automation",
            ("00:1D:9C", "E4:90:69", "F4:54:33", "5C:88:16"),
            ("1756-L83E/B", "5069-L320ER/A"),
            ROCKWELL_STACK,
        ),
    ),
    Role.PLC_SCHNEIDER: (
        Model("Schneider Electric", ("00:80:F4", "00:00:54"), ("BMEP582040", "BMXP342020"), EMBEDDED),
    ),
    Role.PLC_ABB: (Model("ABB", ("00:24:59",), ("PM573-ETH", "PM583-ETH"), EMBEDDED),),
    Role.GATEWAY: (Model("Moxa", ("00:90:E8",), ("MGate MB3180", "MGate MB3270"), EMBEDDED),),
    Role.IO_ADAPTER: (
        Model(
            "Rockwell Automation", ("00:1D:9C", "5C:88:16"), ("1734-AENT/B", "1794-AENTR/A"), ROCKWELL_STACK
        ),
    ),
    Role.RTU: (
        Model("Schneider Electric", ("00:00:54",), ("SCADAPack 474",), EMBEDDED),
        Model("ABB", ("00:0C:02",), ("RTU540CMD01",), EMBEDDED),
        Model("Honeywell", ("00:40:84",), ("RTU2020",), EMBEDDED),
    ),
    Role.SENSOR: (
        Model("Moxa", ("00:90:E8",), ("ioThinx 4510",), LINUX, "Moxa ioThinx 4510"),
        Model("Honeywell", ("00:30:AF",), ("SmartLine STT850",), EMBEDDED, "Honeywell SmartLine"),
        Model("Advantech", ("74:FE:48",), ("WISE-4012",), EMBEDDED, "WISE-4012"),
    ),
    Role.CAMERA: (
        Model(
            "Axis",
            ("AC:CC:8E", "B8:A4:4F", "00:40:8C"),
            ("AXIS P1455-LE", "AXIS M3106-L Mk II"),
            LINUX,
            "AXIS,Network Camera",
        ),
        Model(
            "Hikvision",
            ("44:19:B6", "BC:AD:28", "C0:56:E3"),
            ("DS-2CD2143G2-I", "DS-2CD2T47G2-L"),
            LINUX,
            "udhcp 1.20.2",
        ),
    ),
}

ROUTER_MODEL = Model("Moxa", ("00:90:E8",), ("EDR-G903",), ROUTER_STACK)

_HOST_PREFIX: dict[Role, str] = {
    Role.HMI: "hmi",
    Role.EWS: "ews",
    Role.HISTORIAN: "historian",
    Role.SCADA: "scada",
    Role.DOMAIN_CONTROLLER: "dc",
    Role.BROKER: "mqtt",
    Role.NVR: "nvr",
    Role.PLC_SIEMENS: "plc-s7",
    Role.PLC_ROCKWELL: "plc-logix",
    Role.PLC_SCHNEIDER: "plc-m580",
    Role.PLC_ABB: "plc-ac500",
    Role.GATEWAY: "mgate",
    Role.IO_ADAPTER: "io-aent",
    Role.RTU: "rtu",
    Role.SENSOR: "sensor",
    Role.CAMERA: "cam",
}

LEVEL: dict[Role, str] = {
    Role.HMI: "L2",
    Role.EWS: "L2",
    Role.SCADA: "L2",
    Role.HISTORIAN: "L3",
    Role.DOMAIN_CONTROLLER: "L3",
    Role.BROKER: "IoT",
    Role.NVR: "IoT",
    Role.SENSOR: "IoT",
    Role.CAMERA: "IoT",
}
"""Purdue level per role; roles not listed are level 1 field devices."""

_SUBNET_BASE = {"L1": (10, 10, 1), "L2": (10, 10, 2), "L3": (10, 10, 3), "IoT": (10, 20, 0)}
FIRST_HOST = 10
LAST_HOST = 249
DOMAIN = "plant.local"

_SIEMENS_ORDER = {
    "S7-1500": ("6ES7 515-2AM02-0AB0", "CPU 1515-2 PN", (2, 9, 4)),
    "S7-1200": ("6ES7 214-1AG40-0XB0", "CPU 1214C DC/DC/DC", (4, 5, 2)),
    "S7-300": ("6ES7 315-2EH14-0AB0", "CPU 315-2 PN/DP", (3, 2, 17)),
}
_ROCKWELL_IDENTITY = {
    "1756-L83E/B": (14, 166, (33, 11)),
    "5069-L320ER/A": (14, 150, (32, 12)),
    "1734-AENT/B": (12, 108, (6, 1)),
    "1794-AENTR/A": (12, 142, (2, 1)),
}
_MODBUS_REVISION = {
    "BMEP582040": "V4.10",
    "BMXP342020": "V3.50",
    "PM573-ETH": "V3.4.1",
    "PM583-ETH": "V3.5.0",
    "MGate MB3180": "V2.2",
    "MGate MB3270": "V4.3",
}
_QUANTITIES = (
    ("temperature", "degC", 21.0, 4.0, "tt"),
    ("pressure", "bar", 6.2, 0.4, "pt"),
    ("flow", "m3/h", 48.0, 6.0, "ft"),
    ("level", "%", 63.0, 9.0, "lt"),
    ("vibration", "mm/s", 2.1, 0.6, "vt"),
)


@dataclass(frozen=True, slots=True)
class Subnet:
    level: str
    cell: int
    network: bytes
    router_mac: bytes

    @property
    def gateway(self) -> bytes:
        return self.network[:3] + bytes([1])

    @property
    def broadcast(self) -> bytes:
        return self.network[:3] + bytes([255])


@dataclass(frozen=True, slots=True)
class Device:
    """One host or field device of the plant."""

    index: int
    role: Role
    name: str
    vendor: str
    model: str
    mac: bytes
    ip: bytes
    subnet: Subnet
    stack: Stack
    serial: str
    dhcp: bool = False
    dhcp_vendor_class: str = ""
    s7: tuple[str, str, tuple[int, int, int]] | None = None
    """Siemens order number, module type name and firmware version."""
    cip: CipIdentity | None = None
    modbus_identity: tuple[str, str, str] | None = None
    """Modbus device identification objects: vendor name, product code, revision."""
    dnp3_address: int = 0
    sensor: tuple[str, str, float, float] | None = None
    """Measured quantity, unit, nominal value and spread."""

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def ip_text(self) -> str:
        return ".".join(str(b) for b in self.ip)

    @property
    def level(self) -> str:
        return self.subnet.level


@dataclass(frozen=True, slots=True)
class Plant:
    devices: tuple[Device, ...]
    subnets: tuple[Subnet, ...]
    router_name: str = "edr-g903"
    by_role: dict[Role, tuple[Device, ...]] = field(default_factory=dict)

    def role(self, *roles: Role) -> tuple[Device, ...]:
        out: list[Device] = []
        for role in roles:
            out.extend(self.by_role.get(role, ()))
        return tuple(sorted(out, key=lambda d: d.index))

    def first(self, role: Role) -> Device | None:
        found = self.by_role.get(role, ())
        return found[0] if found else None

    def next_hop(self, src: Device, dst_ip: bytes) -> bytes:
        """The destination MAC of a frame from ``src`` to ``dst_ip`` (peer on-link, else the router)."""
        for device in self.devices:
            if device.ip == dst_ip and device.subnet is src.subnet:
                return device.mac
        return src.subnet.router_mac

    def link(self, src: Device, dst: Device, stack: Stack | None = None) -> Link:
        """Frames from ``src`` to ``dst`` as a SPAN port on ``src``'s access port sees them."""
        dst_mac = dst.mac if dst.subnet is src.subnet else src.subnet.router_mac
        return Link(src.mac, dst_mac, src.ip, dst.ip, stack or src.stack)

    def conversation(
        self, client: Device, server: Device, sport: int, dport: int, rng: np.random.Generator
    ) -> TcpConversation:
        """A TCP connection between two devices, with random initial sequence numbers and IP ids."""
        isn = rng.integers(0, 1 << 32, 2).tolist()
        ipid = rng.integers(0, 1 << 16, 2).tolist()
        return TcpConversation(
            self.link(client, server),
            self.link(server, client),
            sport,
            dport,
            isn[0],
            isn[1],
            ipid[0],
            ipid[1],
        )


def _mac(oui: str, rng: np.random.Generator, used: set[bytes]) -> bytes:
    prefix = bytes.fromhex(oui.replace(":", ""))
    while True:
        mac = prefix + bytes(rng.integers(0, 256, size=3, dtype=np.uint8).tolist())
        if mac not in used:
            used.add(mac)
            return mac


def build_plant(n: int, rng: np.random.Generator) -> Plant:
    """Lay out an ``n``-device plant (deterministic for a given generator state)."""
    used: set[bytes] = set()
    router_oui = ROUTER_MODEL.ouis[0]
    subnets: dict[tuple[str, int], Subnet] = {}
    next_host: dict[str, int] = {}
    cells: dict[str, int] = {}
    counters: dict[Role, int] = {}
    devices: list[Device] = []

    def subnet_for(level: str) -> tuple[Subnet, int]:
        host = next_host.get(level, FIRST_HOST)
        cell = cells.get(level, 0)
        if host > LAST_HOST:
            cell, host = cell + 1, FIRST_HOST
        cells[level], next_host[level] = cell, host + 1
        key = (level, cell)
        if key not in subnets:
            a, b, c = _SUBNET_BASE[level]
            network = bytes([a, b, c + (cell if level == "IoT" else 10 * cell), 0])
            subnets[key] = Subnet(level, cell, network, _mac(router_oui, rng, used))
        return subnets[key], host

    for index, role in enumerate(role_sequence(n)):
        counters[role] = counters.get(role, 0) + 1
        number = counters[role]
        options = CATALOG[role]
        model = options[(number - 1) % len(options)]  # vendors in turn, so every vendor shows up
        model_name = model.models[int(rng.integers(0, len(model.models)))]
        level = LEVEL.get(role, "L1")
        subnet, host = subnet_for(level)
        mac = _mac(model.ouis[int(rng.integers(0, len(model.ouis)))], rng, used)
        serial_number = int(rng.integers(0x1000_0000, 0xFFFF_FFFF))
        name = _HOST_PREFIX[role]
        s7: tuple[str, str, tuple[int, int, int]] | None = None
        cip: CipIdentity | None = None
        modbus_identity: tuple[str, str, str] | None = None
        sensor: tuple[str, str, float, float] | None = None
        if role in (Role.HISTORIAN, Role.BROKER):
            hostname = name if number == 1 else f"{name}-{number:02d}"
        elif role is Role.DOMAIN_CONTROLLER:
            hostname = f"dc{number:02d}"
        elif role is Role.SENSOR:
            quantity, unit, nominal, spread, tag = _QUANTITIES[(number - 1) % len(_QUANTITIES)]
            hostname = f"{tag}-{100 + number}"
            sensor = (quantity, unit, round(nominal + float(rng.normal(0, spread / 2)), 2), spread)
        else:
            hostname = f"{name}-{number:02d}"
        if role is Role.PLC_SIEMENS:
            s7 = _SIEMENS_ORDER[model_name]
        if role in (Role.PLC_ROCKWELL, Role.IO_ADAPTER):
            device_type, product_code, revision = _ROCKWELL_IDENTITY[model_name]
            cip = CipIdentity(1, device_type, product_code, revision, serial_number, model_name)
        if role in MODBUS_SERVERS:
            modbus_identity = (model.vendor, model_name, _MODBUS_REVISION[model_name])
        devices.append(
            Device(
                index=index,
                role=role,
                name=hostname,
                vendor=model.vendor,
                model=model_name,
                mac=mac,
                ip=subnet.network[:3] + bytes([host]),
                subnet=subnet,
                stack=model.stack,
                serial=f"{serial_number:08X}",
                dhcp=role in (Role.SENSOR, Role.CAMERA),
                dhcp_vendor_class=model.dhcp_vendor_class,
                s7=s7,
                cip=cip,
                modbus_identity=modbus_identity,
                dnp3_address=10 + number if role is Role.RTU else 0,
                sensor=sensor,
            )
        )
    by_role: dict[Role, list[Device]] = {}
    for device in devices:
        by_role.setdefault(device.role, []).append(device)
    return Plant(
        devices=tuple(devices),
        subnets=tuple(subnets.values()),
        by_role={role: tuple(found) for role, found in by_role.items()},
    )
