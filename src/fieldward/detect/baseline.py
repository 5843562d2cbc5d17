"""Baseline and policy violations: learn what the plant normally does, then alert on what is new.

An industrial network is small and repetitive: the same HMIs poll the same PLCs with the same
function codes all day. What it has never done is therefore worth a look: a new device, two devices
that never talked, a protocol they never used, a Modbus function or register range an HMI never
touched, a PLC reaching the internet, a firmware that changed, a host writing registers of a PLC it
has never been a master of. This engine learns those behaviours into the knowledge file
(``baseline.json``, :class:`~fieldward.detect.knowledge.Knowledge`) and raises one alert per new
behaviour afterwards.

**Learning.** Behaviour is learned while :meth:`DetectionContext.is_learning` holds for its time:
during a ``--learn`` pass, or in the first ``--learn-minutes`` of the analysed traffic (flows by the
time of their first packet, events by their own time). A loaded ``--baseline`` is judged against as
it is. What is seen for the first time *after* learning is alerted and is **not** added to the
baseline: the analyst decides (``learn``, ``mute``). A run without any baseline stays silent.

**Categories** (``Knowledge.behaviours``, keys are tuples of strings):

========================  ======================================================================
``device``                ``(address,)``: an IP address of the plant (not internet), or the MAC of
                          a layer-2-only speaker (LLDP, CDP, PROFINET DCP)
``pair``                  ``(client, server)``: who opened a conversation with whom
``protocol``              ``(client, server, service)``: the dissected protocol, else
                          ``tcp/<port>``, ``udp/high``, ``icmp`` (see :func:`flow_services`)
``function``              ``(client, server, protocol, function)``: Modbus function, S7comm job or
                          user-data function, CIP service (and class), DNP3 function
``register_range``        ``(client, server, unit, "<table>:<lo>-<hi>")``: Modbus address ranges
``modbus_master``         ``(master, slave)``: hosts that sent Modbus requests to a slave
``external``              ``(client, internet address)``: destinations outside private space
``attribute``             ``(device, attribute, source, value)``: firmware, model, vendor, serial,
                          product code from identity answers (S7 SZL, CIP identity, Modbus device
                          identification, BACnet properties, PROFINET DCP)
``engineering``           ``(client, protocol)``: clients that sent engineering requests (SZL
                          reads, block transfers, CIP Identity reads) while learning; they are
                          judged as a role (see :meth:`BaselineDetector._roams`)
========================  ======================================================================

**Noise control.** Ephemeral client ports are never part of a key; broadcast, multicast and
unspecified (DHCP ``0.0.0.0``) addresses make no pair; a pair is oriented by who opened the
conversation (the TCP SYN), or, where no handshake was seen, by the protocol's well-known port;
a connection attempt nobody answered is a scan (the reconnaissance engine's business), not a new
pair; Modbus addresses are learned in ranges; new functions of a pair aggregate into one alert per
pair and protocol; past ``fanout_limit`` new destinations of one source (or new protocols of one
pair) the rest join one ``*`` alert. With ``--learn-minutes`` flows are judged once every flow of
the learning period has been reported (a long session started while learning ends late).

Hot paths are columnar: flow tables and the Modbus, S7comm, CIP and DNP3 tables are grouped with
Arrow (``group_by``) into their distinct keys before any Python runs; events that arrive one by one
are buffered into the same tables.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.engine import AlertBook, DetectionContext, Detector
from fieldward.detect.model import AlertType, Severity, alert_types_of
from fieldward.protocols.base import Event, event_schema, events_table

ENGINE = "baseline"

DEVICE = "device"
PAIR = "pair"
PROTOCOL = "protocol"
FUNCTION = "function"
REGISTER_RANGE = "register_range"
MODBUS_MASTER = "modbus_master"
EXTERNAL = "external"
ATTRIBUTE = "attribute"
ENGINEERING = "engineering"
CATEGORIES = (
    DEVICE,
    PAIR,
    PROTOCOL,
    FUNCTION,
    REGISTER_RANGE,
    MODBUS_MASTER,
    EXTERNAL,
    ATTRIBUTE,
    ENGINEERING,
)
"""The behaviour categories this engine learns; one of them non-empty means there is a baseline."""


_type = alert_types_of(ENGINE)


LEARN_OR_INVESTIGATE = (
    "If the change is planned, mark the alert as learned so the baseline includes it; otherwise find "
    "out who made it and isolate the source."
)
NEW_DEVICE = _type(
    "new_device",
    "New device",
    Severity.MEDIUM,
    ("T0864",),
    "A device that was not seen during the learning period appeared on the network (a laptop, a "
    "contractor's tool or a rogue device plugged in).",
    "Identify the device and its owner; unknown devices on a control network should be removed. "
    + LEARN_OR_INVESTIGATE,
)
NEW_PAIR = _type(
    "new_communication_pair",
    "New communication pair",
    Severity.MEDIUM,
    ("T0886", "T0848"),
    "Two devices that never communicated during the learning period (in this direction) started a "
    "conversation: lateral movement or a rogue master looks like this.",
    "Check that the client is meant to reach the server (change ticket, firewall policy). "
    + LEARN_OR_INVESTIGATE,
)
NEW_PROTOCOL = _type(
    "new_protocol",
    "New protocol between known devices",
    Severity.MEDIUM,
    ("T0869", "T0885"),
    "Two devices that talk to each other used a protocol or port they never used during the learning "
    "period (remote access, file transfer or an engineering protocol opened next to the usual polling).",
    "Check why the new protocol is used between these devices. " + LEARN_OR_INVESTIGATE,
)
NEW_FUNCTION = _type(
    "new_function",
    "New industrial function for a device pair",
    Severity.MEDIUM,
    ("T0855", "T0836"),
    "A client sent a Modbus, S7comm, CIP or DNP3 function (a write, a control, a diagnostic) to a "
    "device it talks to but never with this function during the learning period.",
    "Confirm with the process owner that the command was intended (maintenance, a new HMI screen). "
    + LEARN_OR_INVESTIGATE,
)
NEW_REGISTER_RANGE = _type(
    "new_register_range",
    "New Modbus register range for a device pair",
    Severity.MEDIUM,
    ("T0861", "T0836"),
    "A Modbus client read or wrote an address range of a device it never touched during the learning "
    "period: point enumeration, or changes to parameters nobody normally changes.",
    "Check which process values live in the range and why the client accesses them. " + LEARN_OR_INVESTIGATE,
)
NEW_EXTERNAL = _type(
    "new_external_destination",
    "OT device contacting a new internet address",
    Severity.HIGH,
    ("T0883", "T0869"),
    "A device that speaks industrial protocols reached an address outside private address space that "
    "it did not reach during the learning period: command and control, data exfiltration or an "
    "unmanaged remote-access path.",
    "Block the destination at the firewall unless a documented vendor connection needs it; look for "
    "remote-access software on the device.",
)
FIRMWARE_CHANGED = _type(
    "firmware_changed",
    "Device firmware changed",
    Severity.HIGH,
    ("T0857", "T0839"),
    "A device reports a firmware revision different from the one it reported during the learning "
    "period: a firmware update (planned or malicious, as in Industroyer 2 and TRITON campaigns).",
    "Verify the update against the change log and the vendor's signed image. " + LEARN_OR_INVESTIGATE,
)
IDENTITY_CHANGED = _type(
    "identity_changed",
    "Device identity changed",
    Severity.HIGH,
    ("T0849",),
    "A device answers with a model, vendor, serial number or product code different from the learned "
    "one: the hardware was replaced, or something else now answers at its address.",
    "Confirm a hardware replacement was planned; otherwise treat it as a device masquerading at this "
    "address. " + LEARN_OR_INVESTIGATE,
)
MODBUS_WRITE_NEW_MASTER = _type(
    "modbus_write_from_unknown_master",
    "Modbus write from a host that is not an established master",
    Severity.HIGH,
    ("T0855", "T0836", "T0848"),
    "A host wrote coils or registers of a Modbus device although it was not one of the device's masters "
    "(hosts that sent it requests) during the learning period: a rogue master changing the process.",
    "Find the writing host and stop it; check the written values on the device. " + LEARN_OR_INVESTIGATE,
)

MODBUS_WRITES = (5, 6, 15, 16, 22, 23)
"""Write Single Coil, Write Single Register, Write Multiple Coils, Write Multiple Registers, Mask
Write Register, Read/Write Multiple Registers."""

_TABLES = {1: "coils", 5: "coils", 15: "coils", 2: "discrete_inputs", 4: "input_registers"}
_TABLES |= dict.fromkeys((3, 6, 16, 22, 23, 24), "holding_registers")
_TABLE_OF_CODE = pa.array([_TABLES.get(code) for code in range(256)], pa.string())
"""Modbus function code (0..255) -> the address space its start address is in; null for none."""

NON_CONVERSATION_ICMP = {
    "icmp": frozenset({3, 4, 5, 9, 10, 11, 12}),
    "icmpv6": frozenset({1, 2, 3, 4, 130, 131, 132, 133, 134, 135, 136, 137, 143}),
}
"""ICMP types that answer or manage rather than converse (errors, router and neighbour discovery,
multicast listener reports): they make no communication pair."""


def engineering_request(protocol: str, function: str) -> bool:
    """Requests engineering tools send and HMIs, historians and SCADA masters do not: reading a
    controller's identity or system status lists, moving program blocks, programming. A client that
    sends one while learning is baselined as an engineering station for that protocol."""
    if protocol == "s7comm":
        return function in S7_ENGINEERING or function.endswith(": Read SZL")
    if protocol == "enip":
        return function.startswith("Get Attribute") and function.endswith("/ Identity")
    if protocol == "modbus":
        return function.startswith("PROGRAM_")
    return False


S7_ENGINEERING = frozenset(
    {"Request Download", "Download Block", "Download Ended", "Start Upload", "Upload", "End Upload"}
)

FUNCTION_LOGS = {"modbus": "modbus", "s7comm": "s7comm", "cip": "enip", "dnp3_application": "dnp3"}
"""Event logs whose requests are learned as functions, and the protocol they are keyed under."""
IDENTITY_LOGS = frozenset(
    {"cip_identity", "s7comm_identification", "modbus_device_id", "bacnet_property", "profinet_dcp"}
)
LINK_LOGS = frozenset({"lldp", "cdp", "profinet_dcp"})
"""Layer-2 protocols whose senders are devices by MAC address."""
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")

MAX_DETAIL_VALUES = 50
"""New keys listed in one alert's details at most."""
BUFFER_EVENTS = 4096
"""Events of one log that arrive one by one are grouped this many at a time."""


# ------------------------------------------------------------------------------------ addresses

LOCAL = "local"
GLOBAL = "global"
SPECIAL = "special"
INVALID = "invalid"


@lru_cache(maxsize=1 << 16)
def address_class(text: str | None) -> str:
    """``local`` (a device of the plant), ``global`` (internet), ``special`` (broadcast, multicast,
    unspecified, loopback: never a device nor a pair) or ``invalid``.

    Internet means not private or reserved per :mod:`ipaddress` (``is_global``). A ``.255`` IPv4
    address is taken for a subnet broadcast, as the inventory does (the netmask is not on the wire).
    """
    if not text:
        return INVALID
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return INVALID
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        return SPECIAL
    if address.version == 4 and (int(address) & 0xFF) == 0xFF:
        return SPECIAL
    return GLOBAL if address.is_global else LOCAL


@lru_cache(maxsize=1)
def service_ports() -> frozenset[str]:
    """``service:port`` for every well-known port the installed dissectors declare: a flow whose
    handshake was not seen is oriented towards the port of the protocol recognised on it."""
    from fieldward.protocols.registry import Registry

    return frozenset(
        f"{entry.name}:{port}" for entry in Registry.default(plugins=False) for port in entry.dissector.ports
    )


def _ints(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Timestamps (ns, UTC) as int64 nanoseconds; integers as they are."""
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.int64())
    return column


def _strings(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


def _join(*parts: Any) -> Any:
    """Element-wise string concatenation (null where any part is null); numpy parts are converted."""
    arrays = [pa.array(part).cast(pa.string()) if isinstance(part, np.ndarray) else part for part in parts]
    return pc.binary_join_element_wise(*arrays, "")


def flow_services(flows: pa.Table) -> dict[str, Any]:
    """Orient each flow (client, server) and name its service; see the module docstring.

    Returns arrays ``client``, ``server``, ``service``, ``answered`` (the server sent something: it
    exists) and ``conversation`` (a real exchange: TCP handshake answered, UDP answered or a protocol
    recognised, ICMP echo answered; not ICMP errors or neighbour discovery).

    Orientation: a TCP flow whose SYN was seen is oriented by it (the flow table already flipped a
    flow that started with a SYN+ACK). Otherwise (UDP, TCP picked up mid-stream or continued after an
    active timeout) the server is the end on the recognised protocol's well-known port; else the end
    on the lower port when that port is below 1024 (or below 32768 for a recognised protocol); equal
    ports, and two ports above 1023 of an unrecognised UDP protocol, are peers ordered by address, so
    whichever end sent first the key is the same.

    Service: the dissected protocol; else ``tcp/<server port>`` below 32768, ``tcp/high`` above;
    ``udp/<port>`` when the server port is below 1024, ``udp/high`` otherwise (RTP and other
    negotiated ports change from one session to the next); ``icmp``; the protocol number otherwise.
    """
    n = flows.num_rows
    names = flows.column_names
    proto = pc.fill_null(_strings(flows["proto"]), "")
    history = pc.fill_null(flows["history"], "") if "history" in names else pa.array([""] * n)
    service = flows["service"] if "service" in names else pa.nulls(n, pa.string())
    service = _strings(service)
    orig_ip = pc.fill_null(flows["orig_ip"], "")
    resp_ip = pc.fill_null(flows["resp_ip"], "")
    orig_port = np.asarray(pc.fill_null(flows["orig_port"], 0).to_numpy(), dtype=np.int64)
    resp_port = np.asarray(pc.fill_null(flows["resp_port"], 0).to_numpy(), dtype=np.int64)
    orig_pkts = np.asarray(pc.fill_null(flows["orig_pkts"], 0).to_numpy(), dtype=np.int64)
    resp_pkts = np.asarray(pc.fill_null(flows["resp_pkts"], 0).to_numpy(), dtype=np.int64)

    tcp = np.asarray(pc.equal(proto, "tcp").to_numpy(zero_copy_only=False), dtype=bool)
    udp = np.asarray(pc.equal(proto, "udp").to_numpy(zero_copy_only=False), dtype=bool)
    icmp = np.asarray(
        pc.is_in(proto, pa.array(["icmp", "icmpv6"])).to_numpy(zero_copy_only=False), dtype=bool
    )
    known = np.asarray(pc.is_valid(service).to_numpy(zero_copy_only=False), dtype=bool)
    syn = tcp & np.asarray(
        pc.or_(pc.match_substring(history, "S"), pc.match_substring(history, "^")).to_numpy(
            zero_copy_only=False
        ),
        dtype=bool,
    )
    handshake = np.asarray(pc.match_substring(history, "h").to_numpy(zero_copy_only=False), dtype=bool)
    ports = pa.array(sorted(service_ports()), pa.string())
    resp_service = np.asarray(
        pc.fill_null(pc.is_in(_join(service, ":", resp_port), ports), False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    orig_service = np.asarray(
        pc.fill_null(pc.is_in(_join(service, ":", orig_port), ports), False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    by_address = np.asarray(pc.greater(orig_ip, resp_ip).to_numpy(zero_copy_only=False), dtype=bool)
    both_high = (orig_port >= 1024) & (resp_port >= 1024)
    peers = (orig_port == resp_port) | (~known & both_high & udp)
    lower = (orig_port < resp_port) & ((orig_port < 1024) | ((orig_port < 32768) & known))
    peers |= resp_service & orig_service  # both on the protocol's port (CIP I/O 2222 <-> 2222)
    guess = np.where(peers, by_address, np.where(resp_service, False, np.where(orig_service, True, lower)))
    swap = (tcp | udp) & ~syn & guess

    client = pc.if_else(pa.array(swap), resp_ip, orig_ip)
    server = pc.if_else(pa.array(swap), orig_ip, resp_ip)
    server_port = np.where(swap, orig_port, resp_port)
    server_pkts = np.where(swap, orig_pkts, resp_pkts)
    answered = server_pkts > 0

    icmp_type = orig_port
    chatter = np.zeros(n, dtype=bool)
    for name, types in NON_CONVERSATION_ICMP.items():
        is_proto = np.asarray(pc.equal(proto, name).to_numpy(zero_copy_only=False), dtype=bool)
        chatter |= is_proto & np.isin(icmp_type, list(types))
    conversation = np.where(
        tcp,
        np.where(syn, handshake, answered),
        np.where(udp, answered | known, np.where(icmp, answered & ~chatter, True)),
    )

    numbered = (tcp & (server_port < 32768)) | (udp & (server_port < 1024))
    fallback = pc.if_else(
        pa.array(numbered),
        _join(proto, "/", server_port),
        pc.if_else(pa.array(tcp | udp), _join(proto, "/high"), proto),
    )
    return {
        "client": client,
        "server": server,
        "service": pc.coalesce(service, fallback),
        "answered": pa.array(answered),
        "conversation": pa.array(conversation),
    }


# --------------------------------------------------------------------------------- the detector


@dataclass(slots=True)
class _Pending:
    """A judged flow key waiting for the settle time (``BaselineSettings.settle_s``)."""

    first_ts: int
    last_ts: int
    flow_id: int
    count: int


class _Identity:
    """Collects what an inventory evidence source says about device attributes."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str, str, str]] = []

    def attribute(
        self, target: tuple[str, str], name: str, value: str | int, confidence: float, event: Any, detail: str
    ) -> None:
        del confidence, event
        self.found.append((target[1], name, detail, str(value)))

    def fact(self, target: tuple[str, str], name: str, value: str) -> None:
        del target, name, value

    def bind(self, mac: str, ip: str, ts: int, source: str) -> None:
        del mac, ip, ts, source


class BaselineDetector(Detector):
    """Learns behaviours into the knowledge file, then alerts on new ones (see the module docstring)."""

    name: ClassVar[str] = ENGINE
    alert_types: ClassVar[tuple[AlertType, ...]] = (
        NEW_DEVICE,
        NEW_PAIR,
        NEW_PROTOCOL,
        NEW_FUNCTION,
        NEW_REGISTER_RANGE,
        NEW_EXTERNAL,
        FIRMWARE_CHANGED,
        IDENTITY_CHANGED,
        MODBUS_WRITE_NEW_MASTER,
    )
    logs: ClassVar[frozenset[str]] = frozenset(FUNCTION_LOGS) | IDENTITY_LOGS | LINK_LOGS

    def __init__(self, alerts: AlertBook, context: DetectionContext | None = None) -> None:
        super().__init__(alerts, context)
        self.settings = self.context.settings.baseline
        self._ot_services = frozenset(self.settings.ot_services)
        self._attributes = frozenset(self.settings.attributes)
        # indexes over the knowledge, kept up to date as behaviours are learned
        self._pair_services: dict[tuple[str, str], set[str]] = {}
        self._functions: dict[tuple[str, str, str], set[str]] = {}
        self._ranged_pairs: set[tuple[str, str]] = set()
        self._masters: dict[str, set[str]] = {}
        self._attribute_values: dict[tuple[str, str, str], set[str]] = {}
        self._seen_attributes: dict[tuple[str, str, str], set[str]] = {}
        """Attribute values first seen after learning: a reference for later changes within the run
        (a device not identified while learning), never added to the baseline."""
        self._ot_devices: set[str] = set()
        self._engineering: set[tuple[str, str]] = set()
        """(client, protocol): engineering stations, baselined as a role (see :meth:`_roams`)."""
        self._servers: dict[str, set[str]] = {}
        """protocol -> devices learned as its servers."""
        self._client_functions: dict[tuple[str, str], set[str]] = {}
        """(client, protocol) -> functions it used with any server while learning."""
        for category in CATEGORIES:
            for key in self.context.knowledge.behaviours.get(category, ()):
                self._index(category, key)
        # run state
        self._buffers: dict[str, list[Event]] = {}
        self._schemas: dict[type[Event], pa.Schema] = {}
        self._pending: dict[tuple[str, str, str, bool, bool], _Pending] = {}
        self._now = 0
        self._labels: dict[tuple[str, str, str], str] = {}
        self._fanout: dict[tuple[str, str], set[str]] = {}

    # ----------------------------------------------------------------------------- knowledge
    def _index(self, category: str, key: tuple[str, ...]) -> None:
        """Keep the look-up indexes in step with the knowledge; malformed keys are ignored."""
        if category == PROTOCOL and len(key) == 3:
            self._pair_services.setdefault((key[0], key[1]), set()).add(key[2])
            self._servers.setdefault(key[2], set()).add(key[1])
            if key[2] in self._ot_services:
                self._ot_devices.update(key[:2])
        elif category == FUNCTION and len(key) == 4:
            self._functions.setdefault((key[0], key[1], key[2]), set()).add(key[3])
            self._client_functions.setdefault((key[0], key[2]), set()).add(key[3])
            self._servers.setdefault(key[2], set()).add(key[1])
        elif category == ENGINEERING and len(key) == 2:
            self._engineering.add((key[0], key[1]))
        elif category == REGISTER_RANGE and len(key) == 4:
            self._ranged_pairs.add((key[0], key[1]))
        elif category == MODBUS_MASTER and len(key) == 2:
            self._masters.setdefault(key[1], set()).add(key[0])
        elif category == ATTRIBUTE and len(key) == 4:
            self._attribute_values.setdefault((key[0], key[1], key[2]), set()).add(key[3])

    def _learn(self, category: str, key: tuple[str, ...]) -> None:
        if self.context.knowledge.learn(category, key):
            self._index(category, key)
            if category == FUNCTION and engineering_request(key[2], key[3]):
                self._learn(ENGINEERING, (key[0], key[2]))

    def _roams(self, client: str, server: str, protocol: str) -> bool:
        """An engineering station going online with a controller of a protocol it engineers.

        Engineering workstations visit controllers one at a time, every few minutes or days, so a
        learning period rarely sees every pair; their sessions are judged as a role instead: the
        pair is expected when the client was an engineering station for ``protocol`` while learning
        and the server was a learned ``protocol`` server. What they *do* is still judged (a function
        the station never used with any controller alerts), and so are new controllers, other
        protocols and every client that is not an engineering station.
        """
        return (client, protocol) in self._engineering and server in self._servers.get(protocol, ())

    def _knows(self, category: str, key: tuple[str, ...]) -> bool:
        return self.context.knowledge.knows(category, key)

    def _has_baseline(self) -> bool:
        """Judging needs something learned: without a baseline everything would be new."""
        behaviours = self.context.knowledge.behaviours
        return any(behaviours.get(category) for category in CATEGORIES)

    def _idle(self) -> bool:
        """Nothing to learn and nothing to judge against: skip the work."""
        context = self.context
        return not context.learning and context.learn_until_ns is None and not self._has_baseline()

    def _learning_mask(self, ts: pa.ChunkedArray | pa.Array) -> pa.Array:
        n = len(ts)
        context = self.context
        if context.learning:
            return pa.array(np.ones(n, dtype=bool))
        until = context.learn_until_ns
        if until is None:
            return pa.array(np.zeros(n, dtype=bool))
        return pa.array(np.asarray(ts.to_numpy(), dtype=np.int64) < until)

    # --------------------------------------------------------------------------------- alerts
    def _raise(
        self,
        alert_type: AlertType,
        *,
        src: str,
        dst: str,
        protocol: str,
        group: dict[str, Any],
        explanation: str,
        listed: tuple[str, str] | None,
        behaviour: tuple[str, tuple[str, ...]],
        also: tuple[str, tuple[str, ...]] | None = None,
        **details: Any,
    ) -> None:
        """Raise (or add to) the alert of ``alert_type`` between ``src`` and ``dst``.

        The protocol label is the first one given for the pair, so one pair's new services or
        functions make one alert; ``listed`` (detail name, value) accumulates the distinct new keys,
        and ``behaviours`` the exact baseline keys (``behaviour``, and ``also`` where learning the
        alert must teach a second key), for an analyst's ``learn``.
        """
        label = self._labels.setdefault((alert_type.id, src, dst), protocol)
        flow = group.get("flow_id_min")
        flow_id = int(flow) if flow is not None else -1
        alert = self.alerts.raise_alert(
            alert_type,
            ts=int(group["ts_min"]),
            src=src,
            dst=dst,
            protocol=label,
            explanation=explanation,
            flow_id=flow_id,
            details=details,
        )
        if alert is None:
            return
        count = int(group.get("ts_count") or 1)
        if count > 1:
            alert.count += count - 1
        alert.last_ts = max(alert.last_ts, int(group.get("ts_max") or group["ts_min"]))
        if listed is not None:
            values = alert.details.setdefault(listed[0], [])
            if listed[1] not in values and len(values) < MAX_DETAIL_VALUES:
                values.append(listed[1])
        behaviours = alert.details.setdefault("behaviours", [])
        for category, key in (behaviour, also) if also is not None else (behaviour,):
            entry = [category, *key]
            if entry not in behaviours and len(behaviours) < MAX_DETAIL_VALUES:
                behaviours.append(entry)

    def _fan(self, alert_type: AlertType, src: str, value: str) -> str:
        """``value`` while ``src`` has had fewer than ``fanout_limit`` of them alerted, then ``*``."""
        seen = self._fanout.setdefault((alert_type.id, src), set())
        if value in seen:
            return value
        if len(seen) < self.settings.fanout_limit:
            seen.add(value)
            return value
        return "*"

    # ---------------------------------------------------------------------------------- flows
    def on_flows(self, flows: pa.Table) -> None:
        if flows.num_rows == 0:
            return
        self._flush_buffers()
        if self._idle():
            return
        self._now = max(self._now, int(pc.max(_ints(flows["last_ts"])).as_py() or 0))
        oriented = flow_services(flows)
        first_ts = _ints(flows["first_ts"])
        table = pa.table(
            {
                "client": oriented["client"],
                "server": oriented["server"],
                "service": oriented["service"],
                "answered": oriented["answered"],
                "conversation": oriented["conversation"],
                "learning": self._learning_mask(first_ts),
                "ts": first_ts,
                "last": _ints(flows["last_ts"]),
                "flow_id": flows["flow_id"],
            }
        )
        groups = (
            table.group_by(
                ["client", "server", "service", "answered", "conversation", "learning"], use_threads=False
            )
            .aggregate([("ts", "min"), ("last", "max"), ("flow_id", "min"), ("ts", "count")])
            .to_pylist()
        )
        groups.sort(key=lambda g: (g["ts_min"], g["client"], g["server"], g["service"]))
        defer = self._deferring()
        for group in groups:
            group["ts_max"] = group.pop("last_max")
            if group["service"] in self._ot_services:
                self._ot_devices.update((group["client"], group["server"]))
            if group["learning"]:
                self._learn_flow(group)
                continue
            key = (
                group["client"],
                group["server"],
                group["service"],
                group["answered"],
                group["conversation"],
            )
            waiting = self._pending.get(key)
            if waiting is not None:
                waiting.first_ts = min(waiting.first_ts, group["ts_min"])
                waiting.last_ts = max(waiting.last_ts, group["ts_max"])
                waiting.count += group["ts_count"]
            elif defer and len(self._pending) < self.settings.max_pending:
                self._pending[key] = _Pending(
                    group["ts_min"], group["ts_max"], group["flow_id_min"], group["ts_count"]
                )
            else:
                self._judge_flow(group)
        if self._pending and not self._deferring():
            self._settle()

    def _deferring(self) -> bool:
        """True while flows started in the learning period may still be reported (see settings)."""
        context = self.context
        until = context.learn_until_ns
        if context.learning or until is None:
            return False
        return self._now < until + round(self.settings.settle_s * 1e9)

    def _settle(self) -> None:
        """Judge the flows that waited for the settle time, in time order."""
        pending = sorted(self._pending.items(), key=lambda kv: (kv[1].first_ts, kv[0][:3]))
        self._pending.clear()
        for (client, server, service, answered, conversation), waiting in pending:
            self._judge_flow(
                {
                    "client": client,
                    "server": server,
                    "service": service,
                    "answered": answered,
                    "conversation": conversation,
                    "ts_min": waiting.first_ts,
                    "ts_max": waiting.last_ts,
                    "flow_id_min": waiting.flow_id,
                    "ts_count": waiting.count,
                }
            )

    @staticmethod
    def _flow_roles(group: dict[str, Any]) -> Iterator[tuple[str, tuple[str, ...]]]:
        """The behaviours a flow group shows: devices, pair and protocol, external destination."""
        client, server, service = group["client"], group["server"], group["service"]
        client_class, server_class = address_class(client), address_class(server)
        if client_class == LOCAL:
            yield DEVICE, (client,)
        if group["answered"] and server_class == LOCAL:
            yield DEVICE, (server,)
        if group["conversation"] and client_class in (LOCAL, GLOBAL) and server_class == LOCAL:
            yield PAIR, (client, server)
            yield PROTOCOL, (client, server, service)
        if client_class == LOCAL and server_class == GLOBAL:
            yield EXTERNAL, (client, server)

    def _learn_flow(self, group: dict[str, Any]) -> None:
        for category, key in self._flow_roles(group):
            self._learn(category, key)

    def _judge_flow(self, group: dict[str, Any]) -> None:
        if not self._has_baseline():
            return
        client, server, service = group["client"], group["server"], group["service"]
        for category, key in self._flow_roles(group):
            if self._knows(category, key):
                continue
            if category == DEVICE:
                device = key[0]
                peer, role = (
                    (server, "opened a conversation with") if device == client else (client, "answered")
                )
                self._raise(
                    NEW_DEVICE,
                    src=device,
                    dst=device,
                    protocol=service,
                    group=group,
                    explanation=(
                        f"New device {device}: not seen while learning; it first {role} {peer} ({service})"
                    ),
                    listed=("services", service),
                    behaviour=(category, key),
                    first_peer=peer,
                )
            elif category == PAIR:
                if self._roams(client, server, service):
                    continue
                self._raise(
                    NEW_PAIR,
                    src=client,
                    dst=self._fan(NEW_PAIR, client, server),
                    protocol=service,
                    group=group,
                    explanation=(
                        f"{client} opened {service} to {server}: {client} never opened a conversation "
                        f"with {server} while learning"
                    ),
                    listed=("services", f"{server} {service}"),
                    behaviour=(category, key),
                    also=(PROTOCOL, (client, server, service)),  # learning the pair learns its protocol
                )
            elif category == PROTOCOL:
                known = self._pair_services.get((client, server))
                if not known or self._roams(client, server, service):
                    continue  # a new pair has its own alert; an engineering station roams
                usual = ", ".join(sorted(known)[:8])
                self._raise(
                    NEW_PROTOCOL,
                    src=client,
                    dst=server,
                    protocol=self._fan(NEW_PROTOCOL, f"{client}>{server}", service),
                    group=group,
                    explanation=(
                        f"{client} used {service} with {server} for the first time; while learning they "
                        f"used only {usual}"
                    ),
                    listed=("services", service),
                    behaviour=(category, key),
                    learned_services=sorted(known)[:MAX_DETAIL_VALUES],
                )
            elif category == EXTERNAL and client in self._ot_devices:
                self._raise(
                    NEW_EXTERNAL,
                    src=client,
                    dst=self._fan(NEW_EXTERNAL, client, server),
                    protocol=service,
                    group=group,
                    explanation=(
                        f"OT device {client} contacted internet address {server} ({service}), which it "
                        f"did not reach while learning"
                    ),
                    listed=("destinations", f"{server} {service}"),
                    behaviour=(category, key),
                )

    # ------------------------------------------------------------------------- event tables
    def on_event(self, event: Any) -> None:
        log = event.log
        if log in FUNCTION_LOGS:
            buffer = self._buffers.setdefault(log, [])
            buffer.append(event)
            if len(buffer) >= BUFFER_EVENTS:
                self._flush_buffer(log)
            return
        if self._idle():
            return
        ts = int(event.ts)
        self._now = max(self._now, ts)
        if log in LINK_LOGS:
            self._link_device(event, ts)
        if log in IDENTITY_LOGS:
            self._identity(event, ts)

    def on_table(self, event_type: type[Event], table: pa.Table) -> None:
        log = event_type.log
        if log not in FUNCTION_LOGS:
            super().on_table(event_type, table)
            return
        self._flush_buffer(log)
        self._functions_table(log, table)

    def finish(self) -> None:
        self._flush_buffers()
        if self._pending:
            self._settle()

    def _flush_buffers(self) -> None:
        for log in list(self._buffers):
            self._flush_buffer(log)

    def _flush_buffer(self, log: str) -> None:
        events = self._buffers.pop(log, None)
        if not events:
            return
        event_type = type(events[0])
        schema = self._schemas.get(event_type)
        if schema is None:
            schema = self._schemas[event_type] = event_schema(event_type)
        self._functions_table(log, events_table(event_type, events, schema))

    def _functions_table(self, log: str, table: pa.Table) -> None:
        if table.num_rows == 0 or self._idle():
            return
        rows = self._requests(log, table)
        if rows is None or rows.num_rows == 0:
            return
        self._now = max(self._now, int(pc.max(rows["ts"]).as_py() or 0))
        protocol = FUNCTION_LOGS[log]
        groups = (
            rows.group_by(["client", "server", "function", "learning"], use_threads=False)
            .aggregate([("ts", "min"), ("ts", "max"), ("flow_id", "min"), ("ts", "count")])
            .to_pylist()
        )
        groups.sort(key=lambda g: (g["ts_min"], g["client"], g["server"], g["function"]))
        for group in groups:
            self._ot_devices.update((group["client"], group["server"]))
            key = (group["client"], group["server"], protocol, group["function"])
            if group["learning"]:
                self._learn(FUNCTION, key)
            elif not self._knows(FUNCTION, key):
                self._new_function(protocol, key, group)
        if log == "modbus":
            self._modbus(rows)

    def _requests(self, log: str, table: pa.Table) -> pa.Table | None:
        """Requests of ``table`` as (client, server, function, ts, flow_id, learning) rows, plus the
        Modbus address columns; None for a table without the needed columns."""
        names = set(table.column_names)
        if not {"ts", "flow_id", "orig_h", "resp_h", "is_orig"} <= names:
            return None
        is_orig = pc.fill_null(table["is_orig"], True)
        sender = pc.if_else(is_orig, table["orig_h"], table["resp_h"])
        receiver = pc.if_else(is_orig, table["resp_h"], table["orig_h"])
        extra: dict[str, Any] = {}
        if log == "modbus":
            mask = pc.equal(table["pdu_type"], "REQ")
            function = _strings(table["func"])
            client, server = sender, receiver
            for name in (
                "unit",
                "function_code",
                "address",
                "quantity",
                "write_start_address",
                "write_quantity",
            ):
                extra[name] = table[name]
        elif log == "s7comm":
            rosctr = table["rosctr_name"]
            group = pc.replace_substring_regex(pc.fill_null(table["function_name"], "?"), "^Request: ", "")
            job = pc.equal(rosctr, "Job-Request")
            userdata = pc.and_(
                pc.equal(rosctr, "User-Data"),
                pc.starts_with(pc.fill_null(table["function_name"], ""), "Request"),
            )
            mask = pc.or_(job, userdata)
            function = pc.if_else(
                job,
                pc.fill_null(table["function_name"], "?"),
                _join(group, ": ", pc.fill_null(table["subfunction_name"], "?")),
            )
            client, server = sender, receiver
        elif log == "cip":
            mask = pc.equal(table["direction"], "request")
            service = pc.fill_null(table["cip_service"], "?")
            function = pc.coalesce(_join(service, " / ", table["class_name"]), service)
            client, server = sender, receiver
        else:  # dnp3_application: requests from the master; unsolicited responses towards it
            code = table["fc"]
            mask = pc.not_equal(code, 129)
            request = pc.fill_null(pc.less(code, 128), True)
            function = pc.fill_null(_strings(table["function_code"]), "?")
            client = pc.if_else(request, sender, receiver)
            server = pc.if_else(request, receiver, sender)
        ts = _ints(table["ts"])
        columns = {
            "client": client,
            "server": server,
            "function": pc.fill_null(function, "?"),
            "ts": ts,
            "flow_id": table["flow_id"],
            "learning": self._learning_mask(ts),
            **extra,
        }
        rows = pa.table(columns)
        return rows.filter(pc.fill_null(mask, False))

    def _new_function(self, protocol: str, key: tuple[str, str, str, str], group: dict[str, Any]) -> None:
        client, server, _, function = key
        if not self._has_baseline():
            return
        if (client, protocol) in self._engineering:  # judged as a role: any controller, one alert
            known = self._client_functions.get((client, protocol), set())
            if function in known:
                return
            usual = ", ".join(sorted(known)[:8])
            dst = "*"
            explanation = (
                f"engineering station {client} sent {protocol} {function} to {server}: it did not use "
                f"{function} with any device while learning (it used {usual})"
            )
        else:
            known = self._functions.get((client, server, protocol), set())
            if not known:
                return  # never spoke this protocol while learning: the pair or protocol alert covers it
            usual = ", ".join(sorted(known)[:8])
            dst = server
            explanation = (
                f"{client} sent {protocol} {function} to {server}: not seen between them while learning "
                f"(they used {usual})"
            )
        self._raise(
            NEW_FUNCTION,
            src=client,
            dst=dst,
            protocol=protocol,
            group=group,
            explanation=explanation,
            listed=("functions", function if dst == server else f"{function} ({server})"),
            behaviour=(FUNCTION, key),
            learned_functions=sorted(known)[:MAX_DETAIL_VALUES],
        )

    # --------------------------------------------------------------------------------- Modbus
    def _modbus(self, rows: pa.Table) -> None:
        """Masters, register ranges and writes of Modbus requests (``rows`` from :meth:`_requests`)."""
        code = pc.fill_null(rows["function_code"], 0)
        learning = rows["learning"]
        if pc.any(learning).as_py():
            masters = rows.filter(learning).group_by(["client", "server"], use_threads=False).aggregate([])
            for master, slave in zip(
                masters["client"].to_pylist(), masters["server"].to_pylist(), strict=True
            ):
                self._learn(MODBUS_MASTER, (master, slave))
        self._register_ranges(rows, code)
        if not self._masters:
            return  # no Modbus master was learned: nothing says which hosts are established
        writes = rows.filter(
            pc.and_(pc.invert(learning), pc.is_in(code, pa.array(MODBUS_WRITES, pa.int64())))
        )
        if writes.num_rows == 0:
            return
        groups = (
            writes.group_by(["client", "server", "function", "unit"], use_threads=False)
            .aggregate(
                [("ts", "min"), ("ts", "max"), ("flow_id", "min"), ("ts", "count"), ("address", "min")]
            )
            .to_pylist()
        )
        groups.sort(key=lambda g: (g["ts_min"], g["client"], g["server"], g["function"]))
        for group in groups:
            client, server = group["client"], group["server"]
            masters = self._masters.get(server, set())
            if client in masters:
                continue
            established = ", ".join(sorted(masters)[:8]) or "none"
            where = f" at address {group['address_min']}" if group["address_min"] is not None else ""
            self._raise(
                MODBUS_WRITE_NEW_MASTER,
                src=client,
                dst=server,
                protocol="modbus",
                group=group,
                explanation=(
                    f"{client} sent {group['function']} to unit {group['unit']} of {server}{where}, but it "
                    f"was not one of {server}'s Modbus masters while learning (masters: {established})"
                ),
                listed=("functions", group["function"]),
                behaviour=(MODBUS_MASTER, (client, server)),
                learned_masters=sorted(masters)[:MAX_DETAIL_VALUES],
            )

    def _register_ranges(self, rows: pa.Table, code: Any) -> None:
        size = max(1, int(self.settings.register_bucket))
        table_name = pc.take(_TABLE_OF_CODE, pc.bit_wise_and(pc.cast(code, pa.int64()), 0xFF))
        parts = []
        for address, quantity, kind in (
            (rows["address"], rows["quantity"], table_name),
            (
                rows["write_start_address"],
                rows["write_quantity"],
                pa.array(["holding_registers"] * rows.num_rows),
            ),
        ):
            start = np.asarray(pc.fill_null(address, -1).to_numpy(), dtype=np.int64)
            count = np.maximum(np.asarray(pc.fill_null(quantity, 1).to_numpy(), dtype=np.int64), 1)
            valid = pc.and_(pa.array(start >= 0), pc.is_valid(kind))
            for edge in (start, start + count - 1):
                parts.append(
                    pa.table(
                        {
                            "client": rows["client"],
                            "server": rows["server"],
                            "unit": rows["unit"],
                            "table": kind,
                            "low": pa.array((edge // size) * size),
                            "ts": rows["ts"],
                            "flow_id": rows["flow_id"],
                            "learning": rows["learning"],
                        }
                    ).filter(valid)
                )
        ranges = pa.concat_tables(parts)
        if ranges.num_rows == 0:
            return
        groups = (
            ranges.group_by(["client", "server", "unit", "table", "low", "learning"], use_threads=False)
            .aggregate([("ts", "min"), ("ts", "max"), ("flow_id", "min"), ("ts", "count")])
            .to_pylist()
        )
        groups.sort(key=lambda g: (g["ts_min"], g["client"], g["server"], g["unit"], g["table"], g["low"]))
        for group in groups:
            group["range"] = f"{group['table']}:{group['low']}-{group['low'] + size - 1}"
            key = (group["client"], group["server"], str(group["unit"]), group["range"])
            if group["learning"]:
                self._learn(REGISTER_RANGE, key)
            elif (
                (key[0], key[1]) in self._ranged_pairs
                and not self._knows(REGISTER_RANGE, key)
                and self._has_baseline()
            ):
                self._raise(
                    NEW_REGISTER_RANGE,
                    src=key[0],
                    dst=key[1],
                    protocol="modbus",
                    group=group,
                    explanation=(
                        f"{key[0]} accessed {group['range'].replace('_', ' ')} of unit {key[2]} on {key[1]}: "
                        f"a range it never touched while learning"
                    ),
                    listed=("ranges", f"unit {key[2]} {group['range']}"),
                    behaviour=(REGISTER_RANGE, key),
                )

    # ------------------------------------------------------------------ link devices, identity
    def _link_device(self, event: Any, ts: int) -> None:
        mac = str(event.orig_h or "").lower()
        if _MAC.fullmatch(mac) is None or int(mac[:2], 16) & 1:  # not a unicast MAC
            return
        key = (mac,)
        if self.context.is_learning(ts):
            self._learn(DEVICE, key)
        elif self._has_baseline() and not self._knows(DEVICE, key):
            self._raise(
                NEW_DEVICE,
                src=mac,
                dst=mac,
                protocol=event.log,
                group={"ts_min": ts, "flow_id_min": -1},
                explanation=f"New device {mac}: not seen while learning; it sent {event.log} frames",
                listed=("services", event.log),
                behaviour=(DEVICE, key),
            )

    def _identity(self, event: Any, ts: int) -> None:
        from fieldward.inventory.sources import SOURCES

        source = SOURCES.get(event.log)
        if source is None:
            return
        found = _Identity()
        source(event, found)
        unit = getattr(event, "unit", None) if event.log == "modbus_device_id" else None
        learning = self.context.is_learning(ts)
        for device, attribute, detail, value in found.found:
            if attribute not in self._attributes:
                continue
            origin = f"{detail} (unit {unit})" if unit is not None else detail
            key = (device, attribute, origin, value)
            if learning:
                self._learn(ATTRIBUTE, key)
                continue
            scope = (device, attribute, origin)
            learned = self._attribute_values.get(scope, set())
            seen = self._seen_attributes.setdefault(scope, set())
            if value in learned or value in seen or not self._has_baseline():
                continue
            before = learned or set(seen)
            seen.add(value)
            if not before:
                continue  # the first answer of a device not identified while learning: a reference
            alert_type = FIRMWARE_CHANGED if attribute == "firmware" else IDENTITY_CHANGED
            was = " / ".join(sorted(before)[:4])
            when = "while learning" if learned else "earlier in this capture"
            self._raise(
                alert_type,
                src=device,
                dst=device,
                protocol=_IDENTITY_PROTOCOLS.get(event.log, event.log),
                group={"ts_min": ts, "flow_id_min": int(getattr(event, "flow_id", -1))},
                explanation=f"{device} reports {attribute} {value!r} ({origin}); {when} it reported {was!r}",
                listed=("changes", f"{attribute}: {was} -> {value}"),
                behaviour=(ATTRIBUTE, key),
                attribute=attribute,
                learned=sorted(before)[:MAX_DETAIL_VALUES],
                observed=value,
            )


_IDENTITY_PROTOCOLS = {
    "cip_identity": "enip",
    "s7comm_identification": "s7comm",
    "modbus_device_id": "modbus",
    "bacnet_property": "bacnet",
}


__all__ = ["CATEGORIES", "BaselineDetector", "address_class", "flow_services"]
