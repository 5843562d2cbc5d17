"""Protocol violations: industrial PDUs that break their own specification.

Well-behaved controllers, HMIs and engineering stations speak their protocol by the book, so a PDU
that does not is either a broken device or someone probing one: fuzzers, exploit code and scanners
send malformed frames, undefined function codes and requests that make a device answer with error
after error. This engine turns what the dissectors already notice into alerts:

- **malformed PDUs, length mismatches, reserved values, checksum errors**: the dissectors' weirds
  (``ProtocolWeird`` events, log ``weird``) of Modbus, DNP3, S7comm, EtherNet/IP-CIP and BACnet, each
  name classified once in :data:`WEIRD_CLASSES` (or marked a capture artefact that never alerts:
  packet loss, a flow cut by the end of the capture), aggregated per (protocol, sender, receiver)
  with the count of every weird name in ``details["weirds"]``; plus the checks only events allow
  (DNP3 UNS bit and reserved IIN bits, undefined Modbus exception and diagnostic sub-function codes);
- **illegal function codes**: Modbus function codes outside the public, legacy-reserved and
  user-defined ranges, undefined DNP3 function codes, unknown S7comm job functions and ROSCTRs,
  reserved CIP service codes, BACnet services no standard defines (an unknown EtherNet/IP
  command cannot even be framed: it is a malformed PDU);
- **exception storms**: one device answering one client with many error responses in a short window
  (Modbus exceptions, S7comm error classes, CIP and encapsulation error statuses, DNP3 IIN
  request-error bits, BACnet Error/Reject/Abort PDUs), the trace of fuzzing or of a register scan;
- **DNP3 broadcast and unsolicited anomalies**: requests to the broadcast addresses 0xFFFD-0xFFFF
  (one message that every outstation on the link executes), responses from or to them, unsolicited
  responses sent to a link address that is not the master's, or carrying data while the master has
  disabled unsolicited reporting for every class;
- **Modbus broadcasts through a gateway**: unit id 0 sent to a device addressed with several unit ids
  (a serial gateway, where unit 0 is a broadcast to every slave): a write there is executed by every
  slave, a read can never be answered;
- **other protocols on industrial ports**: a finished flow to port 502, 102, 20000, 44818, 2222 or
  47808 whose data the dissectors did not recognise as that port's protocol.

High-volume logs (Modbus and S7comm reads, CIP and EtherNet/IP headers arrive as Arrow tables) are
filtered with ``pyarrow.compute``; only the rare rows that can be a violation become Python objects.
Thresholds are in :class:`~fieldward.detect.settings.ViolationSettings`; the rules are explained in
``docs/detection/protocol.md``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.engine import AlertBook, DetectionContext, Detector
from fieldward.detect.model import Alert, AlertType, Severity, alert_types_of
from fieldward.detect.settings import ViolationSettings
from fieldward.protocols import dnp3, enip, modbus
from fieldward.protocols.base import Event

ENGINE = "protocol"
OT_PROTOCOLS = ("modbus", "dnp3", "s7comm", "enip", "bacnet")
"""Protocols whose weirds are judged (others' weirds stay in ``weird.parquet``)."""
CAP = 65_536
"""Entries kept per state table (device pairs, flows): bounded memory whatever the traffic."""
MAX_PENDING_BROADCASTS = 1_000
"""Unit-id-0 requests remembered per (client, device) until the end of the run."""


_type = alert_types_of(ENGINE)


CHECK_SOURCE = (
    "Identify the sending host. If it is not a known engineering or SCADA station, or the device is "
    "not known to be faulty, treat it as an attack (fuzzing, exploit attempt): isolate the host and "
    "check the target device's state."
)
MALFORMED = _type(
    "malformed_pdu",
    "Malformed industrial PDU",
    Severity.MEDIUM,
    ("T0866", "T0814"),
    "A PDU broke the structure its protocol requires (bad start bytes, invalid header, truncated "
    "objects, invalid values, a stream that cannot be framed). Fuzzers and exploits of device "
    "firmware produce such PDUs; a faulty device can too.",
    CHECK_SOURCE,
)
LENGTH = _type(
    "length_mismatch",
    "Length field mismatch",
    Severity.MEDIUM,
    ("T0866", "T0814"),
    "A length, byte count or quantity field disagrees with the bytes that follow it (MBAP length, "
    "TPKT/COTP length, encapsulation or BVLC length, DNP3 link length). Inconsistent lengths are the "
    "classic trigger of buffer overflows in controller firmware.",
    CHECK_SOURCE,
)
RESERVED = _type(
    "reserved_value",
    "Reserved value or bit used",
    Severity.LOW,
    ("T0866",),
    "A PDU set a field to a value its specification reserves (reserved bits, codes or types). "
    "Standard-conformant devices never do; crafted packets and covert channels do.",
    CHECK_SOURCE,
)
CHECKSUM = _type(
    "checksum_error",
    "Protocol checksum error",
    Severity.MEDIUM,
    ("T0830", "T0866"),
    "A DNP3 frame failed its CRC. Over TCP the transport already protects the bytes, so a bad CRC "
    "means the sender built a corrupt frame or something on the path altered it.",
    CHECK_SOURCE,
)
ILLEGAL_FUNCTION = _type(
    "illegal_function_code",
    "Illegal function code",
    Severity.HIGH,
    ("T0866", "T0814"),
    "A PDU carried a function, service or command code its protocol does not define (Modbus function "
    "outside the public, legacy and user-defined ranges; undefined DNP3 function; unknown S7comm "
    "function; reserved CIP service; undefined BACnet service). Fuzzers "
    "and exploit tools send them; no legitimate master does.",
    CHECK_SOURCE,
)
EXCEPTION_STORM = _type(
    "exception_storm",
    "Exception storm",
    Severity.HIGH,
    ("T0861", "T0814"),
    "A device answered one client with many error responses in a short time (exceptions, error "
    "classes or statuses): the client is probing addresses, objects or functions the device does not "
    "have, as a register scan or a fuzzer does.",
    "Identify the client. A misconfigured HMI polls a few bad addresses at a steady rate; a burst of "
    "different errors is a scan: block the client and review what it read or wrote.",
)
DNP3_BROADCAST = _type(
    "dnp3_broadcast",
    "DNP3 broadcast message",
    Severity.MEDIUM,
    ("T0855",),
    "A DNP3 message used a broadcast link address (0xFFFD-0xFFFF): every outstation on the link "
    "executes a broadcast request without answering it, and responses must never be broadcast.",
    "Confirm that broadcasts are part of the system's design (time sync, freeze); otherwise find the "
    "sender and check every outstation on the link.",
)
DNP3_UNSOLICITED = _type(
    "dnp3_unexpected_unsolicited",
    "Unexpected DNP3 unsolicited response",
    Severity.MEDIUM,
    ("T0856",),
    "An outstation sent an unsolicited response to a link address that is not the master's on this "
    "link, or sent event data unsolicited while the master had disabled unsolicited reporting for "
    "every class: spoofed reporting or a misconfigured outstation.",
    "Check the outstation's unsolicited-reporting configuration and which station owns the "
    "destination address.",
)
MODBUS_BROADCAST_WRITE = _type(
    "modbus_broadcast_write",
    "Modbus broadcast write through a gateway",
    Severity.HIGH,
    ("T0855", "T0836"),
    "A write or diagnostic request was sent to unit id 0 of a Modbus gateway: every serial slave "
    "behind the gateway executes it, and none confirms it.",
    "Confirm that broadcast writes are intended; otherwise block the client and check the values "
    "and modes of every slave behind the gateway.",
)
MODBUS_ILLEGAL_BROADCAST = _type(
    "modbus_illegal_broadcast",
    "Modbus read sent to broadcast unit id",
    Severity.LOW,
    ("T0855",),
    "A request that needs an answer (a read) was sent to unit id 0 of a Modbus gateway, the broadcast "
    "address of the serial line behind it: the specification allows only writes to be broadcast, so "
    "the client is misconfigured or probing.",
    "Fix the client's unit id, or find out why it addresses the broadcast unit.",
)
FOREIGN_PROTOCOL = _type(
    "unexpected_protocol_on_ics_port",
    "Non-industrial traffic on an industrial port",
    Severity.MEDIUM,
    ("T0885",),
    "A connection to a well-known industrial port (Modbus 502, S7comm 102, DNP3 20000, EtherNet/IP "
    "44818 and 2222, BACnet 47808) carried data that is not that protocol: traffic disguised on a port "
    "the firewall lets through, a scanner's probes, or an industrial stream so malformed that it "
    "cannot be recognised.",
    "Look at what the client sent (the alert's evidence flow). Block other protocols on industrial "
    "ports at the firewall; if the client is a controller or HMI, check it for compromise.",
)

# ---------------------------------------------------------------------- weird classification

_ENGINE_WEIRDS: dict[str, AlertType | None] = {
    "unframeable_data": MALFORMED,  # bytes that cannot start a PDU (unless a capture gap explains them)
    "pdu_too_large": MALFORMED,  # a length field announcing more than any PDU of the protocol holds
    "pdu_lost_in_gap": None,  # capture loss
}
WEIRD_CLASSES: dict[str, AlertType | None] = {
    **{f"{p}_{name}": kind for p in OT_PROTOCOLS for name, kind in _ENGINE_WEIRDS.items()},
    # Modbus
    "modbus_truncated_header": LENGTH,
    "modbus_bad_protocol_id": None,  # protocol id != 0: not Modbus at all
    "modbus_bad_length": LENGTH,
    "modbus_truncated_pdu": LENGTH,
    "modbus_too_many_adus": MALFORMED,
    "modbus_illegal_function_code": None,  # FC 0 / 0x80: the event raises illegal_function_code
    "modbus_exception_in_request": MALFORMED,
    "modbus_length_mismatch": LENGTH,
    "modbus_invalid_quantity": MALFORMED,
    "modbus_byte_count_mismatch": LENGTH,
    "modbus_quantity_mismatch": LENGTH,
    "modbus_odd_byte_count": LENGTH,
    "modbus_invalid_coil_value": MALFORMED,
    "modbus_bad_reference_type": RESERVED,
    "modbus_reserved_mei_type": RESERVED,
    "modbus_bad_device_id_code": RESERVED,
    "modbus_bad_more_follows": RESERVED,
    "modbus_object_count_mismatch": LENGTH,
    # DNP3
    "dnp3_truncated_frame": LENGTH,
    "dnp3_bad_start": MALFORMED,
    "dnp3_invalid_length": LENGTH,
    "dnp3_header_crc_error": CHECKSUM,
    "dnp3_data_crc_error": CHECKSUM,
    "dnp3_transport_incomplete": None,  # a fragment cut by the end of the flow or by loss
    "dnp3_transport_missing_first": None,  # capture started (or lost packets) inside a fragment
    "dnp3_transport_sequence_gap": None,  # lost segment
    "dnp3_too_many_streams": MALFORMED,
    "dnp3_fragment_too_large": MALFORMED,
    "dnp3_application_too_short": MALFORMED,
    "dnp3_unknown_function_code": None,  # the event raises illegal_function_code
    "dnp3_unexpected_objects": MALFORMED,
    "dnp3_object_header_truncated": LENGTH,
    "dnp3_invalid_qualifier": RESERVED,
    "dnp3_invalid_range": MALFORMED,
    "dnp3_object_data_truncated": LENGTH,
    "dnp3_unknown_object": None,  # object of a group/variation the dissector does not size
    "dnp3_object_size_mismatch": LENGTH,
    "dnp3_file_object_malformed": MALFORMED,
    # S7comm (TPKT/COTP/S7)
    "s7comm_bad_tpkt": MALFORMED,
    "s7comm_tpkt_length_mismatch": LENGTH,
    "s7comm_cotp_bad_length": LENGTH,
    "s7comm_cotp_unfinished": None,  # flow ended inside a segmented TPDU
    "s7comm_szl_unfinished": None,  # flow ended inside a multi-part SZL answer
    "s7comm_cotp_unknown_type": MALFORMED,
    "s7comm_cotp_bad_parameter": MALFORMED,
    "s7comm_cotp_reassembly_overflow": MALFORMED,
    "s7comm_unknown_protocol_id": None,  # another ISO-on-TCP application (IEC 61850 MMS...)
    "s7comm_truncated_header": LENGTH,
    "s7comm_truncated_pdu": LENGTH,
    "s7comm_trailing_bytes": LENGTH,
    "s7comm_unknown_rosctr": None,  # the event raises illegal_function_code
    "s7comm_missing_parameter": MALFORMED,
    "s7comm_truncated_parameter": LENGTH,
    "s7comm_bad_item": MALFORMED,
    "s7comm_truncated_data": LENGTH,
    "s7comm_szl_reassembly_overflow": MALFORMED,
    "s7comm_szl_bad_record": MALFORMED,
    "s7comm_szl_truncated": LENGTH,
    "s7comm_plus_truncated_header": LENGTH,
    "s7comm_plus_unknown_version": None,  # newer S7comm-plus firmware, not a violation
    "s7comm_plus_truncated_data": LENGTH,
    # EtherNet/IP and CIP
    "enip_unknown_datagram": MALFORMED,
    "enip_too_many_events": MALFORMED,
    "enip_truncated_header": LENGTH,
    "enip_truncated": LENGTH,
    "enip_trailing_data": LENGTH,
    "enip_nonzero_options": RESERVED,
    "enip_bad_command_data": MALFORMED,
    "enip_bad_cpf_item": MALFORMED,
    "enip_bad_identity": MALFORMED,
    "enip_cip_truncated": LENGTH,
    "enip_cip_bad_path": MALFORMED,
    "enip_cip_too_deep": MALFORMED,
    "enip_cip_bad_multiple_service": MALFORMED,
    "enip_cip_bad_unconnected_send": MALFORMED,
    "enip_cip_bad_connection_service": MALFORMED,
    # BACnet
    "bacnet_truncated_bvlc": LENGTH,
    "bacnet_unsupported_bvlc_type": None,  # BACnet/IPv6 and other BVLL types are not dissected
    "bacnet_bvlc_length_mismatch": LENGTH,
    "bacnet_unknown_bvlc_function": RESERVED,
    "bacnet_truncated_npdu": LENGTH,
    "bacnet_bad_npdu_version": RESERVED,
    "bacnet_bad_address_length": MALFORMED,
    "bacnet_truncated_apdu": LENGTH,
    "bacnet_unknown_apdu_type": RESERVED,
    "bacnet_too_many_segmented_messages": MALFORMED,
    "bacnet_segment_out_of_order": None,  # UDP loss or reordering
    "bacnet_segment_overflow": MALFORMED,
    "bacnet_malformed_service": MALFORMED,
    "bacnet_bad_priority": MALFORMED,
    "bacnet_too_many_properties": None,  # the dissector's own cap on rows per APDU
}
"""Every weird name of the OT dissectors (and of the engine's framing, per protocol): the alert type it
raises, or None for capture artefacts, dissector limits and what an event already reports."""

# ---------------------------------------------------------------------- protocol facts

MODBUS_LEGACY = frozenset(modbus.FUNCTION_NAMES) - modbus.PUBLIC_FUNCTIONS | {42}
"""Function codes the specification reserves for legacy products (9, 10, 13, 14, 41, 42, 90, 91, 125,
126, 127) and the other Modicon codes Zeek names (18, 19, 40): used by real devices, not illegal."""
MODBUS_USER_DEFINED = frozenset(range(65, 73)) | frozenset(range(100, 111))
MODBUS_DIAGNOSTICS = frozenset(range(0, 5)) | frozenset(range(10, 19)) | {20}
"""Diagnostics (FC 8) sub-functions the specification defines; 5-9, 19 and 21-65535 are reserved."""
MODBUS_BROADCASTABLE = frozenset({5, 6, 8, 15, 16, 21, 22})
"""Writes and diagnostics: what a broadcast can carry (every slave executes it, none answers)."""

DNP3_RESPONSES = dnp3.RESPONSE_CODES
DNP3_CONFIRM, DNP3_UNSOLICITED_RESPONSE = 0x00, 0x82
DNP3_BROADCAST_ADDRESSES = range(0xFFFD, 0x10000)
DNP3_REQUEST_ERRORS = 0x0007
"""IIN2 bits 0-2: function code not supported, object unknown, parameter error."""
DNP3_IIN_RESERVED = 0x00C0
"""IIN2 bits 6 and 7, reserved."""
DNP3_CLASS_VARIATIONS = frozenset({2, 3, 4})
"""Group 60 variations 2-4: event classes 1-3, the objects of (DIS|EN)ABLE_UNSOLICITED."""

CIP_ILLEGAL_SERVICES = frozenset(c for c in range(0x32) if c not in enip.COMMON_SERVICES) | frozenset(
    range(0x64, 0x80)
)
"""Request service codes CIP reserves: the undefined codes of the common range 0x00-0x31 and the range
0x64-0x7F (0x32-0x4A are vendor specific and 0x4B-0x63 object-class specific: legal)."""
CIP_BENIGN_STATUSES = frozenset({0x00, 0x06, 0x1E})
"""Success, partial transfer (a fragmented read's normal answer) and embedded service error (the
embedded replies report their own status)."""

ICS_PORTS: dict[tuple[str, int], str] = {
    ("tcp", 502): "modbus",
    ("udp", 502): "modbus",
    ("tcp", 102): "s7comm",
    ("tcp", 20000): "dnp3",
    ("udp", 20000): "dnp3",
    ("tcp", 44818): "enip",
    ("udp", 44818): "enip",
    ("udp", 2222): "enip",
    ("udp", 47808): "bacnet",
}
"""(transport, responder port) -> the protocol a flow there must carry."""
STARTED_TCP = "[Sh]"
"""A TCP history with the originator's SYN or the responder's SYN+ACK: the stream was seen from its
first byte (a capture that starts mid-stream may not be recognisable, and is not judged)."""

S7_ERROR_FREE = ("No error",)
S7_RESPONSES = ("ACK", "ACK-Data", "User-Data")
BACNET_ERRORS = frozenset({"ERROR_PDU", "REJECT_PDU", "ABORT_PDU"})
BACNET_REQUESTS = frozenset({"CONFIRMED_REQUEST", "UNCONFIRMED_REQUEST"})


def _sender(event: Any) -> tuple[str, str]:
    """(sender, receiver) of an event's PDU."""
    return (event.orig_h, event.resp_h) if event.is_orig else (event.resp_h, event.orig_h)


@dataclass(slots=True)
class _Storm:
    """Error responses of one device to one client: the last ``storm_exceptions`` (time, name), and
    whether a storm is going on (errors closer than the window to the previous one continue it)."""

    recent: deque[tuple[int, str]]
    active: bool = False
    last: int = 0


REPLY_BIN_NS = 1_000_000_000
"""Width of the bins in which a pair's replies are counted (for the error share of a storm)."""

REPLY_PROTOCOLS = {
    "modbus": "modbus",
    "dnp3_application": "dnp3",
    "s7comm": "s7comm",
    "cip": "enip",
    "enip": "enip",
    "bacnet": "bacnet",
}
"""Event log -> protocol name of the storm keys: the replies each log counts."""
COUNT_EVERY_REPLY = frozenset({"cip", "enip"})
"""Logs whose tables count the replies of every pair, not only of the pairs that erred (their table
filters only spare the objects of the rows that cannot be a violation)."""


@dataclass(slots=True)
class _Replies:
    """Replies of one device to one client in one-second bins (the last window's worth)."""

    bins: deque[list[int]] = field(default_factory=deque)

    def add(self, ts: int, count: int, window_ns: int) -> None:
        start = ts - ts % REPLY_BIN_NS
        if self.bins and self.bins[-1][0] == start:
            self.bins[-1][1] += count
        elif not self.bins or start > self.bins[-1][0]:
            self.bins.append([start, count])
        else:  # a late reply (interleaved flows): count it in the newest bin
            self.bins[-1][1] += count
        while self.bins and self.bins[0][0] < start - window_ns - REPLY_BIN_NS:
            self.bins.popleft()

    def between(self, first: int, last: int) -> int:
        """Replies in the bins from the one of ``first`` to the one of ``last`` (a table's replies
        are counted before its errors are judged: later bins must not dilute the share)."""
        low, high = first - first % REPLY_BIN_NS, last - last % REPLY_BIN_NS
        return sum(n for start, n in self.bins if low <= start <= high)


@dataclass(slots=True)
class _Unsolicited:
    """What the master of one (master, outstation) pair has shown: its link addresses, and the event
    classes it disabled for unsolicited reporting."""

    masters: set[int] = field(default_factory=set)
    disabled: set[int] = field(default_factory=set)


class ProtocolDetector(Detector):
    name: ClassVar[str] = ENGINE
    alert_types: ClassVar[tuple[AlertType, ...]] = (
        MALFORMED,
        LENGTH,
        RESERVED,
        CHECKSUM,
        ILLEGAL_FUNCTION,
        EXCEPTION_STORM,
        DNP3_BROADCAST,
        DNP3_UNSOLICITED,
        MODBUS_BROADCAST_WRITE,
        MODBUS_ILLEGAL_BROADCAST,
        FOREIGN_PROTOCOL,
    )
    logs: ClassVar[frozenset[str]] = frozenset(
        {"weird", "modbus", "dnp3_application", "dnp3_objects", "s7comm", "cip", "enip", "bacnet"}
    )

    def __init__(self, alerts: AlertBook, context: DetectionContext | None = None) -> None:
        super().__init__(alerts, context)
        self.settings: ViolationSettings = self.context.settings.violations
        legal = modbus.PUBLIC_FUNCTIONS | MODBUS_LEGACY
        if self.settings.modbus_user_defined_functions:
            legal |= MODBUS_USER_DEFINED
        self._modbus_legal = frozenset(legal)
        self._modbus_legal_array = pa.array(sorted(self._modbus_legal), pa.int64())
        self._cip_illegal_array = pa.array(sorted(CIP_ILLEGAL_SERVICES), pa.int64())
        self._cip_benign_array = pa.array(sorted(CIP_BENIGN_STATUSES), pa.int64())
        self._window_ns = round(self.settings.storm_window_s * 1e9)
        self._gapped: dict[tuple[int, bool], None] = {}
        """(flow, direction) that lost a PDU in a capture gap: later unframeable bytes are its tail."""
        self._storms: dict[tuple[str, str, str], _Storm] = {}
        self._storm_alerts: dict[tuple[str, str, str], Alert] = {}
        self._replies: dict[tuple[str, str, str], _Replies] = {}
        """(protocol, client, device) -> the device's recent replies (error share of a storm)."""
        self._table_counted = False
        """True while on_event gets the rows of a table whose replies were counted with Arrow."""
        self._dnp3: dict[tuple[str, str], _Unsolicited] = {}
        self._units: dict[str, set[int]] = {}
        self._units_seen: set[tuple[str, int]] = set()
        """Distinct (device, unit) of the columnar Modbus requests so far (only new ones are noted)."""
        """Device -> unit ids 1-247 it was addressed with (up to ``gateway_unit_ids``)."""
        self._unit0: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
        """(client, device) -> (time, flow, function) of requests to unit id 0."""

    # ------------------------------------------------------------------ routing

    def table_filter(self, log: str, table: pa.Table) -> pa.Array | None:
        """The rows that can be a violation: never the bulk of well-formed reads."""
        if log == "modbus":
            codes = table["function_code"]
            # Exceptions, illegal codes, diagnostics (their sub-function may be reserved), unit id 0.
            return pc.or_kleene(
                pc.or_kleene(
                    pc.or_kleene(pc.greater_equal(codes, 0x80), pc.equal(codes, 8)),
                    pc.invert(pc.is_in(codes, self._modbus_legal_array)),
                ),
                pc.and_kleene(pc.equal(table["unit"], 0), pc.equal(table["pdu_type"], "REQ")),
            )
        if log == "s7comm":
            unknown = pc.or_kleene(
                pc.equal(table["rosctr_name"], "unknown"), pc.equal(table["function_name"], "unknown")
            )
            error_class = table["error_class"]
            errors = pc.and_kleene(
                pc.is_in(table["rosctr_name"], pa.array(S7_RESPONSES)),
                pc.and_kleene(
                    pc.is_valid(error_class), pc.invert(pc.is_in(error_class, pa.array(S7_ERROR_FREE)))
                ),
            )
            return pc.or_kleene(pc.fill_null(unknown, False), pc.fill_null(errors, False))
        if log == "cip":  # what _cip acts on: reserved request services, error statuses of the rest
            request = pc.fill_null(pc.equal(table["direction"], "request"), False)
            illegal = pc.and_kleene(request, pc.is_in(table["cip_service_code"], self._cip_illegal_array))
            status = table["cip_status_code"]
            errors = pc.and_kleene(
                pc.invert(request),
                pc.and_kleene(pc.is_valid(status), pc.invert(pc.is_in(status, self._cip_benign_array))),
            )
            return pc.or_kleene(pc.fill_null(illegal, False), pc.fill_null(errors, False))
        if log == "enip":  # what _enip acts on: a non-zero encapsulation status
            return pc.fill_null(pc.not_equal(table["enip_status_code"], 0), False)
        return None

    def on_table(self, event_type: type[Event], table: pa.Table) -> None:
        if event_type.log == "modbus" and table.num_rows:
            self._modbus_units(table)
        mask = self.table_filter(event_type.log, table)
        protocol = REPLY_PROTOCOLS.get(event_type.log)
        if protocol is not None and table.num_rows and self.settings.storm_error_share > 0:
            # EtherNet/IP and CIP count every pair's replies (the filter only spares their objects).
            suspects = None if event_type.log in COUNT_EVERY_REPLY else mask
            self._count_replies(protocol, table, suspects)
        self._table_counted = True
        try:
            self.on_rows(event_type, table, mask)
        finally:
            self._table_counted = False

    def _count_replies(self, protocol: str, table: pa.Table, suspects: pa.Array | None = None) -> None:
        """Replies (PDUs of the responder) per (client, device, one-second bin) of a table, grouped
        with Arrow: a batch spans many seconds, and each reply counts in its own bin."""
        table = table.select(["orig_h", "resp_h", "is_orig", "ts"])  # not the payload columns
        if suspects is not None:
            # Only pairs that erred before, or may err in this table, need their replies counted
            # (the share looks at replies from a storm's first error on): a few pairs, not thousands.
            suspects = pc.fill_null(suspects, False)
            known = [f"{c}|{d}" for (p, c, d) in self._storms if p == protocol]
            if not known and not pc.any(suspects).as_py():
                return
            flagged_rows = table.filter(suspects)
            flagged = pc.binary_join_element_wise(flagged_rows["orig_h"], flagged_rows["resp_h"], "|")
            replies = table.filter(pc.invert(pc.fill_null(table["is_orig"], True)))
            pairs = pc.binary_join_element_wise(replies["orig_h"], replies["resp_h"], "|")
            value_set = pa.concat_arrays([pc.unique(flagged).cast(pa.string()), pa.array(known, pa.string())])
            if len(value_set) == 0:
                return
            replies = replies.filter(pc.is_in(pairs, value_set=value_set))
        else:
            replies = table.filter(pc.invert(pc.fill_null(table["is_orig"], True)))
        if not replies.num_rows:
            return
        bins = pc.divide(pc.cast(replies["ts"], pa.int64()), REPLY_BIN_NS)
        for client, device, start, count in _group_counts(replies["orig_h"], replies["resp_h"], bins):
            self._reply((protocol, str(client), str(device)), start * REPLY_BIN_NS, count)

    def _reply(self, key: tuple[str, str, str], ts: int, count: int = 1) -> None:
        replies = self._replies.get(key)
        if replies is None:
            if len(self._replies) >= CAP:
                return
            replies = self._replies[key] = _Replies()
        replies.add(ts, count, self._window_ns)

    def on_event(self, event: Any) -> None:
        if not self._table_counted and not event.is_orig and self.settings.storm_error_share > 0:
            protocol = REPLY_PROTOCOLS.get(event.log)
            if protocol is not None:
                self._reply((protocol, event.orig_h, event.resp_h), int(event.ts))
        handler = getattr(self, f"_{event.log}", None)
        if handler is not None:
            handler(event)

    def _raise(
        self,
        alert_type: AlertType,
        event: Any,
        src: str,
        dst: str,
        protocol: str,
        explanation: str,
        counter: str,
        key: str,
    ) -> Alert | None:
        """Raise (or repeat) ``alert_type`` and count ``key`` in ``details[counter]``."""
        alert = self.alerts.raise_alert(
            alert_type,
            ts=int(event.ts),
            src=src,
            dst=dst,
            protocol=protocol,
            explanation=explanation,
            flow_id=int(event.flow_id),
        )
        if alert is not None:
            counts = alert.details.setdefault(counter, {})
            counts[key] = counts.get(key, 0) + 1
        return alert

    def _violation(self, alert_type: AlertType, event: Any, protocol: str, name: str, detail: str) -> None:
        """A malformed, length, reserved or checksum violation in the PDU ``event`` describes."""
        src, dst = _sender(event)
        what = {MALFORMED: "a malformed", LENGTH: "a length-inconsistent", CHECKSUM: "a corrupt"}.get(
            alert_type, "a reserved-value"
        )
        text = f"{src} sent {what} {protocol} PDU to {dst}: {name} ({detail})"
        self._raise(alert_type, event, src, dst, protocol, text, "weirds", name)

    def _illegal(self, event: Any, protocol: str, code: str, what: str) -> None:
        src, dst = _sender(event)
        text = f"{src} sent {protocol} {what} {code}, which the protocol does not define, to {dst}"
        self._raise(ILLEGAL_FUNCTION, event, src, dst, protocol, text, "functions", code)

    # ------------------------------------------------------------------ weirds

    def _weird(self, event: Any) -> None:
        name = event.name
        alert_type = WEIRD_CLASSES.get(name)
        key = (int(event.flow_id), bool(event.is_orig))
        if name.endswith("_pdu_lost_in_gap"):
            if len(self._gapped) >= CAP:
                self._gapped.pop(next(iter(self._gapped)))
            self._gapped[key] = None
            return
        if alert_type is None:
            return
        if name.endswith("_unframeable_data") and key in self._gapped:
            return  # the tail of a PDU cut by a capture gap, not a malformed stream
        self._violation(alert_type, event, event.protocol, name, event.detail)

    # ------------------------------------------------------------------ exception storms

    def _error(self, protocol: str, event: Any, what: str) -> None:
        """An error response: the sender is the device, the receiver the client it answers."""
        device, client = _sender(event)
        key = (protocol, client, device)
        state = self._storms.get(key)
        if state is None:
            if len(self._storms) >= CAP:
                return
            state = self._storms[key] = _Storm(deque(maxlen=max(1, self.settings.storm_exceptions)))
        ts = int(event.ts)
        if state.active and ts - state.last <= self._window_ns:
            state.last = max(state.last, ts)
            alert = self._storm_alerts.get(key)
            if alert is not None:
                _count(alert, [what])
            return
        state.active = False
        state.recent.append((ts, what))
        if len(state.recent) < (state.recent.maxlen or 1) or ts - state.recent[0][0] > self._window_ns:
            return
        share = self.settings.storm_error_share
        replies = self._replies.get(key)
        if share > 0 and replies is not None:
            total = replies.between(state.recent[0][0], ts)
            if total and len(state.recent) < share * total:  # errors among many good replies
                return
        names = [name for _, name in state.recent]
        state.recent.clear()
        state.active, state.last = True, ts
        top = ", ".join(f"{name} x{n}" for name, n in Counter(names).most_common(3))
        text = (
            f"{device} sent {len(names)} {protocol} error responses to {client} within "
            f"{self.settings.storm_window_s:g} s ({top})"
        )
        alert = self.alerts.raise_alert(
            EXCEPTION_STORM,
            ts=ts,
            src=client,
            dst=device,
            protocol=protocol,
            explanation=text,
            flow_id=int(event.flow_id),
        )
        if alert is None:  # suppressed (learning, learned, muted): this storm's errors are not counted
            self._storm_alerts.pop(key, None)
            return
        self._storm_alerts[key] = alert
        alert.details["window_s"] = self.settings.storm_window_s
        _count(alert, names)

    # ------------------------------------------------------------------ Modbus

    def _modbus_units(self, table: pa.Table) -> None:
        """Unit ids 1-247 per device from a table of ADUs (gateway detection), grouped with Arrow."""
        unit = table["unit"]
        mask = pc.and_kleene(
            pc.equal(table["pdu_type"], "REQ"),
            pc.and_kleene(pc.greater_equal(unit, 1), pc.less_equal(unit, 247)),
        )
        rows = table.filter(pc.fill_null(mask, False))
        if not rows.num_rows:
            return
        device = pc.if_else(rows["is_orig"], rows["resp_h"], rows["orig_h"])
        # Distinct (device, unit) in order of appearance (units are 1-247: one int64 key per pair);
        # only pairs not seen in an earlier table reach _note_unit.
        codes, hosts = _dictionary_codes(device)
        units = _int64(rows["unit"])
        first = np.sort(np.unique(codes * 256 + units, return_index=True)[1])
        seen = self._units_seen
        for host, number in zip(
            [hosts[c] for c in codes[first].tolist()], units[first].tolist(), strict=True
        ):
            if (host, number) not in seen:
                seen.add((host, number))
                self._note_unit(host, number)

    def _note_unit(self, device: str, unit: int) -> None:
        units = self._units.get(device)
        if units is None:
            if len(self._units) >= CAP:
                return
            units = self._units[device] = set()
        if len(units) < self.settings.gateway_unit_ids:
            units.add(unit)

    def _note_unit0(self, client: str, device: str, event: Any, code: int) -> None:
        pending = self._unit0.get((client, device))
        if pending is None:
            if len(self._unit0) >= CAP:
                return
            pending = self._unit0[(client, device)] = []
        if len(pending) < MAX_PENDING_BROADCASTS:
            pending.append((int(event.ts), int(event.flow_id), code))

    def _modbus(self, event: Any) -> None:
        code = int(event.function_code)
        sender, receiver = _sender(event)
        if event.pdu_type == "REQ":
            unit = int(event.unit)
            if 1 <= unit <= 247:
                self._note_unit(receiver, unit)
            elif unit == 0:
                self._note_unit0(sender, receiver, event, code)
            if code < 0x80 and code not in self._modbus_legal:
                self._illegal(event, "modbus", str(code), "function code")
            elif (
                code == 8 and event.sub_function is not None and event.sub_function not in MODBUS_DIAGNOSTICS
            ):
                detail = f"diagnostics sub-function {event.sub_function}"
                self._violation(RESERVED, event, "modbus", "modbus_reserved_diagnostic_subfunction", detail)
            return
        if code == 0x80:
            self._illegal(event, "modbus", str(code), "function code")
        elif code & 0x80:
            self._error("modbus", event, event.exception or "no exception code")
            exception = event.exception_code
            if exception is not None and exception not in modbus.EXCEPTION_NAMES:
                detail = f"exception code {exception}"
                self._violation(RESERVED, event, "modbus", "modbus_undefined_exception_code", detail)
        elif code not in self._modbus_legal:
            self._illegal(event, "modbus", str(code), "function code")

    # ------------------------------------------------------------------ DNP3

    def _pair(self, master: str, outstation: str) -> _Unsolicited | None:
        state = self._dnp3.get((master, outstation))
        if state is None and len(self._dnp3) < CAP:
            state = self._dnp3[(master, outstation)] = _Unsolicited()
        return state

    def _dnp3_application(self, event: Any) -> None:
        fc = int(event.fc)
        sender, receiver = _sender(event)
        response = fc in DNP3_RESPONSES
        if fc not in dnp3.FUNCTION_CODES:
            self._illegal(event, "dnp3", f"{fc} ({event.function_code})", "function code")
        if fc == DNP3_UNSOLICITED_RESPONSE and not event.uns:
            self._violation(MALFORMED, event, "dnp3", "dnp3_unsolicited_without_uns", "UNS bit clear")
        elif event.uns and fc not in (DNP3_UNSOLICITED_RESPONSE, DNP3_CONFIRM):
            detail = f"UNS bit set on {event.function_code}"
            self._violation(MALFORMED, event, "dnp3", "dnp3_uns_on_solicited_message", detail)
        dest, src = int(event.dest_addr), int(event.src_addr)
        if dest in DNP3_BROADCAST_ADDRESSES or src in DNP3_BROADCAST_ADDRESSES:
            if response or src in DNP3_BROADCAST_ADDRESSES:
                what = f"a {event.function_code} from link address {src} to {dest}: never broadcast"
            else:
                what = f"{event.function_code} to broadcast address 0x{dest:04X}"
            text = f"{sender} sent DNP3 {what} (on the link to {receiver})"
            self._raise(
                DNP3_BROADCAST, event, sender, receiver, "dnp3", text, "functions", event.function_code
            )
        if not response:
            state = self._pair(sender, receiver)
            if state is not None and len(state.masters) < 16 and src not in DNP3_BROADCAST_ADDRESSES:
                state.masters.add(src)
            return
        iin = int(event.iin or 0)
        if iin & DNP3_REQUEST_ERRORS:
            flags = [f for bit, f in dnp3.IIN_FLAGS if iin & bit & DNP3_REQUEST_ERRORS]
            self._error("dnp3", event, "+".join(flags))
        if iin & DNP3_IIN_RESERVED:
            self._violation(RESERVED, event, "dnp3", "dnp3_iin_reserved_bits", f"IIN 0x{iin:04x}")
        if fc == DNP3_UNSOLICITED_RESPONSE:
            self._unsolicited(event, sender, receiver, dest)

    def _unsolicited(self, event: Any, outstation: str, master: str, dest: int) -> None:
        state = self._dnp3.get((master, outstation))
        if state is None or dest in DNP3_BROADCAST_ADDRESSES:
            return
        if state.masters and dest not in state.masters:
            known = ", ".join(str(a) for a in sorted(state.masters))
            text = (
                f"outstation {outstation} sent an unsolicited response to link address {dest}, but the "
                f"master at {master} uses {known}"
            )
            self._raise(
                DNP3_UNSOLICITED, event, outstation, master, "dnp3", text, "reasons", "unexpected_destination"
            )
        if int(event.objects) > 0 and state.disabled >= DNP3_CLASS_VARIATIONS:
            text = (
                f"outstation {outstation} sent unsolicited data to {master} after the master disabled "
                "unsolicited responses for every class"
            )
            self._raise(
                DNP3_UNSOLICITED, event, outstation, master, "dnp3", text, "reasons", "while_disabled"
            )

    def _dnp3_objects(self, event: Any) -> None:
        if event.group != 60 or event.variation not in DNP3_CLASS_VARIATIONS:
            return
        function = event.function_code
        if function not in ("DISABLE_UNSOLICITED", "ENABLE_UNSOLICITED"):
            return
        master, outstation = _sender(event)
        state = self._pair(master, outstation)
        if state is None:
            return
        if function == "DISABLE_UNSOLICITED":
            state.disabled.add(int(event.variation))
        else:
            state.disabled.discard(int(event.variation))

    # ------------------------------------------------------------------ S7comm, CIP, BACnet

    def _s7comm(self, event: Any) -> None:
        if event.rosctr_name == "unknown":
            self._illegal(event, "s7comm", f"0x{int(event.rosctr_code):02x}", "ROSCTR (PDU type)")
        elif event.rosctr_name == "Job-Request" and event.function_name == "unknown":
            self._illegal(event, "s7comm", str(event.function_code), "job function")
        if event.rosctr_name in S7_RESPONSES and event.error_class not in (None, *S7_ERROR_FREE):
            self._error("s7comm", event, f"{event.error_class} {event.error_code or ''}".strip())

    def _cip(self, event: Any) -> None:
        code = int(event.cip_service_code)
        if event.direction == "request":
            if code in CIP_ILLEGAL_SERVICES:
                self._illegal(event, "enip", f"0x{code:02x}", "CIP service")
        elif event.cip_status_code is not None and event.cip_status_code not in CIP_BENIGN_STATUSES:
            self._error("enip", event, event.cip_status or f"0x{int(event.cip_status_code):02x}")

    def _enip(self, event: Any) -> None:
        # An unknown encapsulation command never becomes an event: the dissector cannot frame it
        # (TCP: enip_unframeable_data) or place it (UDP: enip_unknown_datagram), both malformed_pdu.
        if event.enip_status_code:
            self._error("enip", event, event.enip_status)

    def _bacnet(self, event: Any) -> None:
        pdu_type, service = event.pdu_type, event.pdu_service
        if pdu_type in BACNET_REQUESTS and service is not None and service.isdigit():
            kind = "confirmed" if pdu_type == "CONFIRMED_REQUEST" else "unconfirmed"
            self._illegal(event, "bacnet", service, f"{kind} service")
        elif pdu_type in BACNET_ERRORS:
            reason = event.result_code or event.error_class or service or ""
            self._error("bacnet", event, f"{pdu_type} {reason}".strip())

    # ------------------------------------------------------------------ flows

    def on_flows(self, flows: pa.Table) -> None:
        """Finished flows to an industrial port whose data the dissectors did not recognise as the
        port's protocol (``service`` is another protocol, or none)."""
        if not flows.num_rows:
            return
        proto, port, service = flows["proto"], flows["resp_port"], flows["service"]
        payload = pc.greater(pc.add(flows["orig_payload_bytes"], flows["resp_payload_bytes"]), 0)
        started = pc.match_substring_regex(flows["history"], STARTED_TCP)
        foreign = None
        for (transport, number), expected in ICS_PORTS.items():
            here = pc.and_kleene(pc.equal(proto, transport), pc.equal(port, number))
            if transport == "tcp":
                here = pc.and_kleene(here, started)
            wrong = pc.fill_null(pc.not_equal(service, expected), True)
            mask = pc.and_kleene(here, wrong)
            foreign = mask if foreign is None else pc.or_kleene(foreign, mask)
        if foreign is None:
            return
        rows = flows.filter(pc.fill_null(pc.and_kleene(foreign, payload), False))
        if not rows.num_rows:
            return
        columns = ["orig_ip", "resp_ip", "resp_port", "proto", "service", "first_ts", "flow_id"]
        rows = rows.select(columns).set_column(5, "first_ts", rows["first_ts"].cast(pa.int64()))
        for src, dst, number, transport, found, ts, flow in zip(
            *(rows[c].to_pylist() for c in columns), strict=True
        ):
            expected = ICS_PORTS[(transport, number)]
            what = f"{found} traffic" if found else "data that is no known protocol"
            text = f"{src} sent {what} to {dst} on {transport}/{number}, the {expected} port"
            alert = self.alerts.raise_alert(
                FOREIGN_PROTOCOL, ts=ts, src=src, dst=dst, protocol=expected, explanation=text, flow_id=flow
            )
            if alert is not None:
                _count(alert, [found or "unknown"], "services")

    # ------------------------------------------------------------------ end of input

    def finish(self) -> None:
        """Requests to unit id 0 are judged once every device's unit ids are known."""
        gateways = {d for d, units in self._units.items() if len(units) >= self.settings.gateway_unit_ids}
        for (client, device), requests in self._unit0.items():
            if device not in gateways:
                continue
            for ts, flow, code in requests:
                name = modbus.function_name(code)
                if code in MODBUS_BROADCASTABLE:
                    alert_type = MODBUS_BROADCAST_WRITE
                    text = f"{client} broadcast {name} to every slave behind gateway {device} (unit id 0)"
                else:
                    alert_type = MODBUS_ILLEGAL_BROADCAST
                    text = f"{client} sent {name} to the broadcast unit id 0 of gateway {device}"
                alert = self.alerts.raise_alert(
                    alert_type,
                    ts=ts,
                    src=client,
                    dst=device,
                    protocol="modbus",
                    explanation=text,
                    flow_id=flow,
                )
                if alert is not None:
                    _count(alert, [name], "functions")


def _group_counts(
    clients: pa.ChunkedArray | pa.Array, devices: pa.ChunkedArray | pa.Array, bins: pa.ChunkedArray | pa.Array
) -> list[tuple[Any, Any, int, int]]:
    """(client, device, bin, rows) of each distinct (client, device, bin), ordered by bin: a sort of
    dictionary codes with numpy (an Acero group-by costs milliseconds per call even on small tables)."""
    client_codes, client_names = _dictionary_codes(clients)
    device_codes, device_names = _dictionary_codes(devices)
    bin_values = _int64(bins)
    if bin_values.shape[0] == 0:
        return []
    order = np.lexsort((device_codes, client_codes, bin_values))
    keys = np.stack([bin_values[order], client_codes[order], device_codes[order]])
    starts = np.flatnonzero(np.concatenate([[True], (keys[:, 1:] != keys[:, :-1]).any(axis=0)]))
    counts = np.diff(np.append(starts, order.shape[0]))
    first = keys[:, starts].tolist()
    return [
        (client_names[client], device_names[device], start, count)
        for start, client, device, count in zip(first[0], first[1], first[2], counts.tolist(), strict=True)
    ]


def _dictionary_codes(column: pa.ChunkedArray | pa.Array) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """Integer codes of a column's values (null: its own code) and the value of each code."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    return _int64(encoded.indices), encoded.dictionary.to_pylist()


def _int64(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)


def _count(alert: Alert, names: list[str], counter: str = "errors") -> None:
    """Add ``names`` to the per-name counts ``details[counter]`` (and ``details["total"]`` for errors)."""
    counts = alert.details.setdefault(counter, {})
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    if counter == "errors":
        alert.details["total"] = alert.details.get("total", 0) + len(names)
