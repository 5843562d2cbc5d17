"""Evidence sources: what each protocol event tells about the device that sent or received it.

One function per event log, registered with :func:`source`. A function reads one event and reports
through an :class:`Observations` sink: attribute values (``vendor``, ``model``, ``firmware``, ...)
with a confidence, raw facts for the fingerprint rules (``http.server``, ``dhcp.vendor_class``, ...),
behaviour tags, and MAC/IP bindings. Events of logs without a source cost one dictionary look-up.
A source may also name the rows it can act on (``rows=``, a function of an event table returning a
boolean mask): tables from the dissectors' columnar fast paths are filtered with it before rows are
turned into event objects, so a log of 50,000 rows of which the source reads three costs three objects.

Third-party dissectors add their own sources the same way (``@source("mylog")``) from their module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

Target = tuple[str, str]
"""("ip", address) or ("mac", aa:bb:cc:dd:ee:ff): which device an observation is about."""


class Observations(Protocol):
    """What a source reports to (implemented by the inventory builder)."""

    def attribute(
        self, target: Target, name: str, value: str | int, confidence: float, event: Any, detail: str
    ) -> None: ...

    def fact(self, target: Target, name: str, value: str) -> None: ...

    def bind(self, mac: str, ip: str, ts: int, source: str) -> None: ...


SourceFunction = Callable[[Any, Observations], None]
SOURCES: dict[str, SourceFunction] = {}
RowFilter = Callable[[pa.Table], "pa.Array | pa.ChunkedArray"]
ROW_FILTERS: dict[str, RowFilter] = {}
"""Per log: the rows of an event table its source can act on (a boolean mask; null counts as False).
The source must do nothing for the other rows (tests/inventory check it on real captures)."""


def source(log: str, rows: RowFilter | None = None) -> Callable[[SourceFunction], SourceFunction]:
    """Register ``function`` as the evidence source of events of ``log``; ``rows``, when given, selects
    the rows of an event table the function can act on (it is never called for the others)."""

    def register(function: SourceFunction) -> SourceFunction:
        SOURCES[log] = function
        if rows is None:
            ROW_FILTERS.pop(log, None)
        else:
            ROW_FILTERS[log] = rows
        return function

    return register


def sender(event: Any) -> Target:
    """The device that sent the PDU behind ``event``."""
    return ("ip", event.orig_h if event.is_orig else event.resp_h)


def receiver(event: Any) -> Target:
    return ("ip", event.resp_h if event.is_orig else event.orig_h)


def link_sender(event: Any) -> Target:
    """The source MAC of a layer-2 event (``orig_h`` holds it for link events)."""
    return ("mac", str(event.orig_h).lower())


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split()).strip("\x00 ")
    return text or None


_OCTET = re.compile(r"0|[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-5]")
"""One decimal octet as ``ipaddress`` accepts it (no leading zero, at most 255, ASCII digits)."""


def ipv4_value(text: str) -> int | None:
    """The integer of a dotted IPv4 address exactly as ``ipaddress`` accepts it, else None (IPv6,
    or not an address)."""
    octets = text.split(".")
    if len(octets) != 4 or not all(_OCTET.fullmatch(octet) for octet in octets):
        return None
    a, b, c, d = (int(octet) for octet in octets)
    return (a << 24) | (b << 16) | (c << 8) | d


@lru_cache(maxsize=1 << 16)
def _usable_ip(text: str | None) -> bool:
    if not text:
        return False
    value = ipv4_value(text)
    if value is not None:  # decided without building an ipaddress object
        first = value >> 24
        return not (value == 0 or 224 <= first <= 239 or first == 127 or text.endswith(".255"))
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (
        address.is_unspecified or address.is_multicast or address.is_loopback or text.endswith(".255")
    )


# ---------------------------------------------------------------------- industrial identity


@source("cip_identity")
def cip_identity(event: Any, out: Observations) -> None:
    """ListIdentity reply: the most complete identity an EtherNet/IP device gives."""
    device = sender(event)
    if (vendor := _text(event.vendor_name)) and not vendor.lower().startswith("unknown"):
        out.attribute(device, "vendor", vendor, 0.95, event, "ListIdentity vendor_id")
    if product := _text(event.product_name):
        out.attribute(device, "model", product, 0.95, event, "ListIdentity product_name")
    if event.product_code is not None:
        out.attribute(
            device, "product_code", str(event.product_code), 0.9, event, "ListIdentity product_code"
        )
    if revision := _text(event.revision):
        out.attribute(device, "firmware", revision, 0.9, event, "ListIdentity revision")
    if isinstance(event.serial_number, int):  # hex, as ODVA tools and ICSNPP's cip_identity.log write it
        serial = f"0x{event.serial_number:08x}"
        out.attribute(device, "serial", serial, 0.95, event, "ListIdentity serial_number")
    if kind := _text(event.device_type_name):
        out.fact(device, "cip.device_type", kind)
    if _usable_ip(getattr(event, "socket_address", None)) and event.socket_address != device[1]:
        out.fact(device, "cip.socket_address", event.socket_address)


@source("s7comm_identification")
def s7_identification(event: Any, out: Observations) -> None:
    """SZL 0x0011 / 0x001C answers: order number, firmware, serial, names of a S7 PLC."""
    if event.is_orig:
        return
    device = sender(event)
    out.attribute(device, "vendor", "Siemens", 0.9, event, "S7comm SZL answer")
    if order := _text(event.order_number):
        out.attribute(device, "product_code", order, 0.95, event, f"SZL {event.szl_id} order number")
        out.fact(device, "s7.order_number", order)
    if module := _text(event.module_type_name):
        out.attribute(device, "model", module, 0.92, event, f"SZL {event.szl_id} module type name")
        out.fact(device, "s7.module_type", module)
    if firmware := _text(event.firmware_version):
        out.attribute(device, "firmware", firmware, 0.92, event, f"SZL {event.szl_id} firmware")
    if serial := _text(event.module_serial):
        out.attribute(device, "serial", serial, 0.95, event, f"SZL {event.szl_id} serial number")
    for name in ("module_name", "automation_system_name"):
        if station := _text(getattr(event, name)):
            out.attribute(device, "hostname", station, 0.6, event, f"SZL {event.szl_id} {name}")
            break
    if plant := _text(event.plant_name):
        out.fact(device, "s7.plant_name", plant)


ENGINEERING_REQUESTS: dict[str, tuple[str, str] | None] = {
    "enip": ("enip_command", "List Identity"),  # how RSLinx-style tools browse
    "s7comm_read_szl": ("method", "Request"),  # reading a PLC's system status lists
    "s7comm_upload_download": None,  # moving program blocks (any request)
}
"""Requests that engineering tools send and HMIs or historians do not (``behaviour: ot-engineering``):
per log, the (field, value) a request must have, or None for every request of the log."""


def _engineering(log: str, condition: tuple[str, str] | None) -> None:
    def rows(table: pa.Table) -> pa.Array | pa.ChunkedArray:
        mask = table["is_orig"]
        if condition is not None:
            mask = pc.and_(mask, pc.equal(table[condition[0]], condition[1]))
        return mask

    @source(log, rows=rows)
    def marks(event: Any, out: Observations) -> None:
        if event.is_orig and (condition is None or getattr(event, condition[0]) == condition[1]):
            out.fact(sender(event), "behaviour", "ot-engineering")


for _log, _condition in ENGINEERING_REQUESTS.items():
    _engineering(_log, _condition)


_MODBUS_OBJECTS = {
    0: ("vendor", 0.9),
    1: ("product_code", 0.9),
    2: ("firmware", 0.9),
    4: ("model", 0.85),
    5: ("model", 0.9),
}


@source("modbus_device_id")
def modbus_device_id(event: Any, out: Observations) -> None:
    """Read Device Identification (FC 43/14) answers: vendor, product code, revision, names."""
    if event.is_orig or event.object_value is None:
        return
    value = _text(event.object_value)
    if value is None:
        return
    device = sender(event)
    code = int(event.object_id_code)
    if code in (1, 4, 5):
        out.fact(device, "modbus.product", value)
    if code in _MODBUS_OBJECTS:
        name, confidence = _MODBUS_OBJECTS[code]
        if code == 1:  # the product code doubles as the model where no name object is given
            out.attribute(device, "model", value, 0.8, event, "Modbus FC43/14 ProductCode")
        out.attribute(device, name, value, confidence, event, f"Modbus FC43/14 {event.object_id}")


@source("bacnet_discovery")
def bacnet_discovery(event: Any, out: Observations) -> None:
    """I-Am: the device object instance and the vendor id of a BACnet device."""
    if event.pdu_service != "i-am":
        return
    device = sender(event)
    if (vendor := _text(event.vendor)) and not vendor.lower().startswith("unknown"):
        out.attribute(device, "vendor", vendor, 0.85, event, "BACnet I-Am vendor_id")
    if event.instance_number is not None:
        out.fact(device, "bacnet.device_instance", str(event.instance_number))
    out.fact(device, "role", "bacnet/server")


_BACNET_PROPERTIES = {
    "vendor-name": ("vendor", 0.9),
    "model-name": ("model", 0.9),
    "firmware-revision": ("firmware", 0.85),
    "application-software-version": ("firmware", 0.6),
    "object-name": ("hostname", 0.6),
    "serial-number": ("serial", 0.9),
}


@source("bacnet_property")
def bacnet_property(event: Any, out: Observations) -> None:
    """ReadProperty answers about the device object: vendor, model, firmware, name."""
    if event.is_orig or event.object_type != "device" or event.value is None:
        return
    found = _BACNET_PROPERTIES.get(str(event.property))
    value = _text(event.value)
    if found is None or value is None:
        return
    name, confidence = found
    out.attribute(sender(event), name, value, confidence, event, f"BACnet ReadProperty {event.property}")


@source("profinet_dcp")
def profinet_dcp(event: Any, out: Observations) -> None:
    """DCP Identify answers: station name, vendor/device id, role and IP of a PROFINET device."""
    device = link_sender(event)
    if station := _text(event.name_of_station):
        out.attribute(device, "hostname", station, 0.8, event, "PROFINET DCP NameOfStation")
    if model := _text(event.device_vendor_value):
        out.attribute(device, "model", model, 0.75, event, "PROFINET DCP DeviceVendorValue")
    if event.vendor_id is not None:
        out.fact(device, "profinet.vendor_id", f"{event.vendor_id:04x}")
        if event.vendor_id == 0x002A:
            out.attribute(device, "vendor", "Siemens", 0.85, event, "PROFINET DCP VendorID 0x002a")
    for role in event.device_roles or ():
        out.fact(device, "profinet.role", role)
    if _usable_ip(event.ip_address):
        out.bind(device[1], event.ip_address, event.ts, "profinet_dcp")


# ---------------------------------------------------------------------- network infrastructure


@source("lldp")
def lldp(event: Any, out: Observations) -> None:
    device = link_sender(event)
    if name := _text(event.system_name):
        out.attribute(device, "hostname", name, 0.8, event, "LLDP system name")
    if description := _text(event.system_description):
        out.fact(device, "lldp.system_description", description)
    for capability in event.enabled_capabilities or ():
        out.fact(device, "lldp.capabilities", str(capability).lower())
    for address in event.management_addresses or ():
        if _usable_ip(address):
            out.bind(device[1], address, event.ts, "lldp")


@source("cdp")
def cdp(event: Any, out: Observations) -> None:
    device = link_sender(event)
    if name := _text(event.device_id):
        out.attribute(device, "hostname", name, 0.75, event, "CDP device id")
    if platform := _text(event.platform):
        out.fact(device, "cdp.platform", platform)
        out.attribute(device, "vendor", "Cisco", 0.6, event, "CDP speaker")
    if software := _text(event.software_version):
        out.fact(device, "snmp.sys_descr", software)  # CDP carries the same text as sysDescr
    for capability in event.capabilities or ():
        out.fact(device, "cdp.capabilities", str(capability))
    for address in event.addresses or ():
        if _usable_ip(address):
            out.bind(device[1], address, event.ts, "cdp")


@source("snmp")
def snmp(event: Any, out: Observations) -> None:
    """The agent's system group (sysDescr, sysName, sysObjectID) in answers and traps."""
    if event.pdu_type not in ("response", "trap", "trapv2", "inform_request", "report"):
        return
    device = sender(event)
    if descr := _text(event.sys_descr):
        out.fact(device, "snmp.sys_descr", descr)
    if name := _text(event.sys_name):
        out.attribute(device, "hostname", name, 0.8, event, "SNMP sysName")
    if oid := _text(event.sys_object_id):
        out.fact(device, "snmp.sys_object_id", oid)


# ---------------------------------------------------------------------- addressing and names


@source("dhcp")
def dhcp(event: Any, out: Observations) -> None:
    """Client hostname, vendor class and parameter list; the server's ACK binds MAC and address."""
    mac = _text(event.chaddr)
    if mac is None or event.htype != 1:
        return
    client: Target = ("mac", mac.lower())
    if event.op == 1:  # BOOTREQUEST: the client speaks about itself
        if name := _text(event.host_name):
            out.attribute(client, "hostname", name, 0.8, event, "DHCP option 12 host name")
        if fqdn := _text(event.client_fqdn):
            out.attribute(client, "hostname", fqdn.split(".")[0], 0.75, event, "DHCP option 81 FQDN")
        if vendor_class := _text(event.vendor_class):
            out.fact(client, "dhcp.vendor_class", vendor_class)
        if event.param_fingerprint:
            out.fact(client, "dhcp.fingerprint", str(event.param_fingerprint))
        if _usable_ip(event.ciaddr):
            out.bind(mac.lower(), event.ciaddr, event.ts, "dhcp")
    elif event.msg_type == 5 and _usable_ip(event.yiaddr):  # DHCPACK
        out.bind(mac.lower(), event.yiaddr, event.ts, "dhcp")
        for router in event.routers or ():
            if _usable_ip(router):
                out.fact(("ip", router), "network.gateway", "DHCP router option")
        server = sender(event)
        if _usable_ip(server[1]):
            out.fact(server, "role", "dhcp/server")


SERVICE_ALIASES = frozenset(
    {"ntp", "time", "dns", "ns", "ns1", "ns2", "www", "mail", "smtp", "imap", "proxy", "wpad", "ldap", "kms"}
)
"""Names that usually point at a service, not at one host's own name: weak hostname evidence."""

_PTR_V4 = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+)\.in-addr\.arpa\.?$", re.IGNORECASE)


@source("dns_rr")
def dns_record(event: Any, out: Observations) -> None:
    """Answers that name an address (A/AAAA, PTR); mDNS services a device announces."""
    if not event.qr or event.section not in ("answer", "additional"):
        return
    name = str(event.name).rstrip(".")
    mdns = event.variant == "mdns"
    confidence = 0.7 if mdns else 0.55
    kind = "mDNS" if mdns else "DNS"
    if event.rtype_name in ("A", "AAAA") and _usable_ip(event.address):
        host = name.removesuffix(".local").split(".")[0]
        if host in SERVICE_ALIASES:
            confidence = 0.3
        if host:
            out.attribute(
                ("ip", event.address), "hostname", host, confidence, event, f"{kind} {event.rtype_name}"
            )
    elif event.rtype_name == "PTR" and (ptr := _PTR_V4.match(name)) and event.target:
        address = ".".join(reversed(ptr.groups()))
        host = str(event.target).rstrip(".").removesuffix(".local").split(".")[0]
        if host and _usable_ip(address):
            ptr_confidence = confidence + 0.05  # the address's canonical name, where A may be an alias
            out.attribute(("ip", address), "hostname", host, ptr_confidence, event, f"{kind} PTR")
    if mdns:
        announcer = sender(event)
        if event.service:
            out.fact(announcer, "mdns.service", str(event.service))
        for item in event.txt or ():
            key, _, value = str(item).partition("=")
            if key.lower() in ("md", "model", "ty", "usb_mdl") and value:
                out.attribute(announcer, "model", value, 0.6, event, f"mDNS TXT {key}")


@source("ssdp")
def ssdp(event: Any, out: Observations) -> None:
    if event.kind == "request" and event.method != "NOTIFY":
        return
    device = sender(event)
    if server := _text(event.server):
        out.fact(device, "ssdp.server", server)


# ---------------------------------------------------------------------- IT application banners


@source("http")
def http(event: Any, out: Observations) -> None:
    """One request and its response: the client's User-Agent, the server's Server header."""
    if agent := _text(event.user_agent):
        out.fact(("ip", event.orig_h), "http.user_agent", agent)
    if server := _text(event.server):
        out.fact(("ip", event.resp_h), "http.server", server)


@source("ssh_version")
def ssh_version(event: Any, out: Observations) -> None:
    software = _text(event.software)
    if software is None:
        return
    comments = _text(event.comments)
    out.fact(sender(event), "ssh.software", f"{software} {comments}" if comments else software)


@source("tls_client_hello")
def tls_client_hello(event: Any, out: Observations) -> None:
    device = sender(event)
    if event.ja3:
        out.fact(device, "tls.ja3", str(event.ja3))
    if event.ja4:
        out.fact(device, "tls.ja4", str(event.ja4))


@source("tls_certificate")
def tls_certificate(event: Any, out: Observations) -> None:
    if event.chain_index != 0:
        return
    device = sender(event)
    if subject := _text(event.subject):
        out.fact(device, "tls.subject", subject)
    if event.self_signed:
        out.fact(device, "tls.self_signed", "true")


@source("telnet_login")
def telnet_login(event: Any, out: Observations) -> None:
    if banner := _text(event.banner):
        out.fact(receiver(event) if event.is_orig else sender(event), "telnet.banner", banner)


@source("ftp")
def ftp(event: Any, out: Observations) -> None:
    if not event.is_orig and event.reply_code == 220 and (banner := _text(event.reply_msg)):
        out.fact(sender(event), "ftp.banner", banner)


@source("mqtt_connect")
def mqtt_connect(event: Any, out: Observations) -> None:
    if event.is_orig and (client_id := _text(event.client_id)):
        out.fact(sender(event), "mqtt.client_id", client_id)
