"""BACnet/IP dissector: BVLC, NPDU, APDU headers and the services that matter for security.

Covers BACnet/IP (ANSI/ASHRAE Standard 135, Annex J) over UDP, as seen on port 47808 (0xBAC0) or on any
other port (recognition is by content):

- BVLC (Annex J.2): every function (Original-Unicast/Broadcast-NPDU, Forwarded-NPDU with the original
  B/IP address, Distribute-Broadcast-To-Network, BVLC-Result with its result code, Register-Foreign-
  Device with its time-to-live, broadcast/foreign-device table reads and writes, Secure-BVLL).
- NPDU (clause 6.2): version, control octet, DNET/DLEN/DADR, SNET/SLEN/SADR, hop count, and the
  network-layer messages (clause 6.4: Who-Is-Router-To-Network, I-Am-Router-To-Network, Reject-Message-
  To-Network with its reason, Router-Busy/Available, Initialize-Routing-Table, ... with the network
  numbers they carry).
- APDU (clause 20.1): the eight PDU types with invoke id, service choice, segmentation header (sequence
  number, window size), error class/code (clause 18), reject reason (clause 18.9) and abort reason
  (clause 18.10). Segmented confirmed requests and complex ACKs are reassembled (clause 5.4) before their
  service is decoded.
- Services (clauses 13-17, tags per clause 20.2): Who-Is (limits) / I-Am (device instance, max APDU,
  segmentation, vendor) / Who-Has / I-Have; ReadProperty, ReadPropertyMultiple, WriteProperty,
  WritePropertyMultiple (object, property, array index, priority, value of application-tagged
  primitives); ReinitializeDevice and DeviceCommunicationControl (state, duration, whether a password was
  given: the password itself is never kept), their results; TimeSynchronization and UTC-
  TimeSynchronization; SubscribeCOV and SubscribeCOVProperty; AtomicReadFile and AtomicWriteFile.

Logs and field names follow CISA ICSNPP-BACnet (``bacnet``, ``bacnet_discovery``, ``bacnet_property``,
``bacnet_device_control``) so that its logs compare field by field; ``bacnet_time_sync``, ``bacnet_cov``
and ``bacnet_file`` are FieldWard's own. Names of enumerations are the standard's ASN.1 names (clause 21);
vendor names come from the ASHRAE vendor-ID registry in ``data/bacnet_vendors.tsv``. BACnet/IPv6 (BVLC
type 0x82, Annex U) and BACnet Secure Connect are not dissected.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Final

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

# ====================================================================================== events


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetHeader(Event):
    """One BACnet/IP datagram: its BVLC, NPDU and APDU headers (ICSNPP ``bacnet.log``)."""

    log: ClassVar[str] = "bacnet"

    bvlc_function: str
    fwd_ip: str | None = None
    fwd_port: int | None = None
    npdu_version: int | None = None
    npdu_control: int | None = None
    dnet: int | None = None
    dlen: int | None = None
    dadr: str | None = None
    snet: int | None = None
    slen: int | None = None
    sadr: str | None = None
    hop_count: int | None = None
    pdu_type: str | None = None
    pdu_service: str | None = None
    invoke_id: int | None = None
    segmented: bool | None = None
    more_follows: bool | None = None
    sequence_number: int | None = None
    window_size: int | None = None
    result_code: str | None = None
    error_class: str | None = None
    dnets: list[int] = field(default_factory=list)
    ttl: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetDiscovery(Event):
    """Who-Is, I-Am, Who-Has and I-Have (ICSNPP ``bacnet_discovery.log``)."""

    log: ClassVar[str] = "bacnet_discovery"

    pdu_service: str
    device_id_type: str | None = None
    device_id_number: int | None = None
    object_type: str | None = None
    instance_number: int | None = None
    vendor: str | None = None
    vendor_id: int | None = None
    max_apdu: int | None = None
    segmentation: str | None = None
    range: str | None = None
    low_limit: int | None = None
    high_limit: int | None = None
    object_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetProperty(Event):
    """One property read or written (ICSNPP ``bacnet_property.log``); RPM/WPM give one per property."""

    log: ClassVar[str] = "bacnet_property"

    invoke_id: int | None
    pdu_service: str
    object_type: str | None = None
    instance_number: int | None = None
    property: str | None = None
    array_index: int | None = None
    value: str | None = None
    values: list[str] = field(default_factory=list)
    value_type: str | None = None
    priority: int | None = None
    error_class: str | None = None
    result_code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetDeviceControl(Event):
    """ReinitializeDevice / DeviceCommunicationControl requests and their results (ICSNPP
    ``bacnet_device_control.log``, with ``password_present`` instead of the password)."""

    log: ClassVar[str] = "bacnet_device_control"

    invoke_id: int | None
    pdu_service: str
    time_duration: int | None = None
    device_state: str | None = None
    password_present: bool | None = None
    result: str | None = None
    result_code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetTimeSync(Event):
    """TimeSynchronization / UTC-TimeSynchronization: the date and time a device was told."""

    log: ClassVar[str] = "bacnet_time_sync"

    pdu_service: str
    year: int | None = None
    month: int | None = None
    day: int | None = None
    day_of_week: int | None = None
    hour: int | None = None
    minute: int | None = None
    second: int | None = None
    hundredths: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetCov(Event):
    """SubscribeCOV / SubscribeCOVProperty requests (change-of-value subscriptions)."""

    log: ClassVar[str] = "bacnet_cov"

    invoke_id: int | None
    pdu_service: str
    subscriber_process_id: int | None = None
    object_type: str | None = None
    instance_number: int | None = None
    issue_confirmed: bool | None = None
    lifetime: int | None = None
    cancellation: bool = False
    property: str | None = None
    array_index: int | None = None
    cov_increment: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacnetFile(Event):
    """AtomicReadFile / AtomicWriteFile requests and ACKs (file data length only, never the data)."""

    log: ClassVar[str] = "bacnet_file"

    invoke_id: int | None
    pdu_service: str
    object_type: str | None = None
    instance_number: int | None = None
    access_method: str | None = None
    file_start: int | None = None
    count: int | None = None
    data_length: int | None = None
    end_of_file: bool | None = None


# ====================================================================================== tables

BVLC_TYPE: Final = 0x81
MAX_TAGS: Final = 4096
"""Tags decoded per APDU at most (a 1476-octet APDU holds fewer than 1476)."""
MAX_VALUES: Final = 256
"""Values kept per property (arrays, lists)."""
MAX_ROWS: Final = 1024
"""Property/service events per APDU at most."""
MAX_NETWORKS: Final = 1024
MAX_REASSEMBLY_BYTES: Final = 1 << 18
MAX_REASSEMBLIES: Final = 16
MAX_OUTSTANDING: Final = 256

# BVLC functions (Annex J.2), named as ICSNPP names them.
BVLC_FUNCTIONS: Final[dict[int, str]] = {
    0x00: "BVLC_Result",
    0x01: "Write_Broadcast_Table",
    0x02: "Read_Broadcast_Table",
    0x03: "Read_Broadcast_Table_ACK",
    0x04: "Forwarded_NPDU",
    0x05: "Register_Foreign_Device",
    0x06: "Read_Foreign_Device_Table",
    0x07: "Read_Foreign_Device_Table_ACK",
    0x08: "Delete_Foreign_Device_Table_Entry",
    0x09: "Distribute_Broadcast_to_Network",
    0x0A: "Original_Unicast_NPDU",
    0x0B: "Original_Broadcast_NPDU",
    0x0C: "Secure_BVLL",
}
BVLC_RESULTS: Final[dict[int, str]] = {
    0x00: "Successful_completion",
    0x10: "Write-Broadcast-Distribution-Table_NAK",
    0x20: "Read-Broadcast-Distribution-Table_NAK",
    0x30: "Register-Foreign-Device_NAK",
    0x40: "Read-Foreign-Device-Table_NAK",
    0x50: "Delete-Foreign-Device-Table-Entry_NAK",
    0x60: "Distribute-Broadcast-To-Network_NAK",
}
_NPDU_FUNCTIONS: Final = frozenset({0x04, 0x09, 0x0A, 0x0B})
_FIXED_BVLC_LENGTHS: Final[dict[int, int]] = {0x00: 6, 0x02: 4, 0x05: 6, 0x06: 4, 0x08: 10}
_TABLE_BVLC_FUNCTIONS: Final = frozenset({0x01, 0x03, 0x07})

# Network layer message types (clause 6.2.4).
NETWORK_MESSAGES: Final[dict[int, str]] = {
    0x00: "who_is_router_to_network",
    0x01: "i_am_router_to_network",
    0x02: "i_could_be_router_to_network",
    0x03: "reject_message_to_network",
    0x04: "router_busy_to_network",
    0x05: "router_available_to_network",
    0x06: "initialize_routing_table",
    0x07: "initialize_routing_table_ack",
    0x08: "establish_connection_to_network",
    0x09: "disconnect_connection_to_network",
    0x0A: "challenge_request",
    0x0B: "security_payload",
    0x0C: "security_response",
    0x0D: "request_key_update",
    0x0E: "update_key_set",
    0x0F: "update_distribution_key",
    0x10: "request_master_key",
    0x11: "set_master_key",
    0x12: "what_is_network_number",
    0x13: "network_number_is",
}
NETWORK_REJECT_REASONS: Final[dict[int, str]] = {
    0: "other",
    1: "not-directly-connected",
    2: "router-busy",
    3: "unknown-network-message",
    4: "message-too-long",
    5: "security-error",
    6: "addressing-error",
}

APDU_TYPES: Final[dict[int, str]] = {
    0: "CONFIRMED_REQUEST",
    1: "UNCONFIRMED_REQUEST",
    2: "SIMPLE_ACK",
    3: "COMPLEX_ACK",
    4: "SEGMENT_ACK",
    5: "ERROR_PDU",
    6: "REJECT_PDU",
    7: "ABORT_PDU",
}
CONFIRMED_REQUEST, UNCONFIRMED_REQUEST, SIMPLE_ACK, COMPLEX_ACK = 0, 1, 2, 3
SEGMENT_ACK, ERROR_PDU, REJECT_PDU, ABORT_PDU = 4, 5, 6, 7

CONFIRMED_SERVICES: Final[dict[int, str]] = {
    0: "acknowledge_alarm",
    1: "confirmed_cov_notification",
    2: "confirmed_event_notification",
    3: "get_alarm_summary",
    4: "get_enrollment_summary",
    5: "subscribe_cov",
    6: "atomic_read_file",
    7: "atomic_write_file",
    8: "add_list_element",
    9: "remove_list_element",
    10: "create_object",
    11: "delete_object",
    12: "read_property",
    13: "read_property_conditional",
    14: "read_property_multiple",
    15: "write_property",
    16: "write_property_multiple",
    17: "device_communication_control",
    18: "confirmed_private_transfer",
    19: "confirmed_text_message",
    20: "reinitialize_device",
    21: "vt_open",
    22: "vt_close",
    23: "vt_data",
    24: "authenticate",
    25: "request_key",
    26: "read_range",
    27: "life_safety_operation",
    28: "subscribe_cov_property",
    29: "get_event_information",
    30: "subscribe_cov_property_multiple",
    31: "confirmed_cov_notification_multiple",
    32: "confirmed_audit_notification",
    33: "audit_log_query",
}
UNCONFIRMED_SERVICES: Final[dict[int, str]] = {
    0: "i_am",
    1: "i_have",
    2: "unconfirmed_cov_notification",
    3: "unconfirmed_event_notification",
    4: "unconfirmed_private_transfer",
    5: "unconfirmed_text_message",
    6: "time_synchronization",
    7: "who_has",
    8: "who_is",
    9: "utc_time_synchronization",
    10: "write_group",
    11: "unconfirmed_cov_notification_multiple",
    12: "unconfirmed_audit_notification",
    13: "who_am_i",
    14: "you_are",
}
SUBSCRIBE_COV, ATOMIC_READ_FILE, ATOMIC_WRITE_FILE = 5, 6, 7
READ_PROPERTY, READ_PROPERTY_MULTIPLE, WRITE_PROPERTY, WRITE_PROPERTY_MULTIPLE = 12, 14, 15, 16
DEVICE_COMMUNICATION_CONTROL, REINITIALIZE_DEVICE, SUBSCRIBE_COV_PROPERTY = 17, 20, 28
I_AM, I_HAVE, TIME_SYNCHRONIZATION, WHO_HAS, WHO_IS, UTC_TIME_SYNCHRONIZATION = 0, 1, 6, 7, 8, 9
_DEVICE_CONTROL: Final = frozenset({DEVICE_COMMUNICATION_CONTROL, REINITIALIZE_DEVICE})

ERROR_CLASSES: Final[dict[int, str]] = {
    0: "device",
    1: "object",
    2: "property",
    3: "resources",
    4: "security",
    5: "services",
    6: "vt",
    7: "communication",
}
REJECT_REASONS: Final[dict[int, str]] = {
    0: "other",
    1: "buffer-overflow",
    2: "inconsistent-parameters",
    3: "invalid-parameter-data-type",
    4: "invalid-tag",
    5: "missing-required-parameter",
    6: "parameter-out-of-range",
    7: "too-many-arguments",
    8: "undefined-enumeration",
    9: "unrecognized-service",
}
ABORT_REASONS: Final[dict[int, str]] = {
    0: "other",
    1: "buffer-overflow",
    2: "invalid-apdu-in-this-state",
    3: "preempted-by-higher-priority-task",
    4: "segmentation-not-supported",
    5: "security-error",
    6: "insufficient-security",
    7: "window-size-out-of-range",
    8: "application-exceeded-reply-time",
    9: "out-of-resources",
    10: "tsm-timeout",
    11: "apdu-too-long",
}
SEGMENTATION: Final[dict[int, str]] = {
    0: "segmented-both",
    1: "segmented-transmit",
    2: "segmented-receive",
    3: "no-segmentation",
}
EVENT_STATES: Final[dict[int, str]] = {
    0: "normal",
    1: "fault",
    2: "offnormal",
    3: "high-limit",
    4: "low-limit",
    5: "life-safety-alarm",
}
NOTIFY_TYPES: Final[dict[int, str]] = {0: "alarm", 1: "event", 2: "ack-notification"}
RELIABILITY: Final[dict[int, str]] = {
    0: "no-fault-detected",
    1: "no-sensor",
    2: "over-range",
    3: "under-range",
    4: "open-loop",
    5: "shorted-loop",
    6: "no-output",
    7: "unreliable-other",
    8: "process-error",
    9: "multi-state-fault",
    10: "configuration-error",
    12: "communication-failure",
    13: "member-fault",
    14: "monitored-object-fault",
    15: "tripped",
    16: "lamp-failure",
    17: "activation-failure",
    18: "renew-dhcp-failure",
    19: "renew-fd-registration-failure",
    20: "restart-auto-negotiation-failure",
    21: "restart-failure",
    22: "proprietary-command-failure",
    23: "faults-listed",
    24: "referenced-object-fault",
}
DEVICE_STATUS: Final[dict[int, str]] = {
    0: "operational",
    1: "operational-read-only",
    2: "download-required",
    3: "download-in-progress",
    4: "non-operational",
    5: "backup-in-progress",
}
LOGGING_TYPES: Final[dict[int, str]] = {0: "polled", 1: "cov", 2: "triggered"}
REINITIALIZED_STATES: Final[dict[int, str]] = {
    0: "coldstart",
    1: "warmstart",
    2: "start-backup",
    3: "end-backup",
    4: "start-restore",
    5: "end-restore",
    6: "abort-restore",
    7: "activate-changes",
}
ENABLE_DISABLE: Final[dict[int, str]] = {0: "enable", 1: "disable", 2: "disable-initiation"}
APPLICATION_TAGS: Final[dict[int, str]] = {
    0: "null",
    1: "boolean",
    2: "unsigned",
    3: "signed",
    4: "real",
    5: "double",
    6: "octet-string",
    7: "character-string",
    8: "bit-string",
    9: "enumerated",
    10: "date",
    11: "time",
    12: "object-identifier",
}
DEVICE_OBJECT_TYPE: Final = 8


@cache
def _enumerations() -> dict[str, dict[int, str]]:
    """The large standard tables of ``data/bacnet_enumerations.tsv`` (table, code, name)."""
    text = resources.files("fieldward.protocols").joinpath("data/bacnet_enumerations.tsv").read_text("utf-8")
    tables: dict[str, dict[int, str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        table, code, name = line.split("\t", 2)
        tables.setdefault(table, {})[int(code)] = name
    return tables


@cache
def vendors() -> dict[int, str]:
    """ASHRAE BACnet vendor identifiers -> names (``data/bacnet_vendors.tsv``)."""
    text = resources.files("fieldward.protocols").joinpath("data/bacnet_vendors.tsv").read_text("utf-8")
    table: dict[int, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t", 1)
            table[int(code)] = name
    return table


def object_types() -> dict[int, str]:
    return _enumerations()["object_type"]


def property_identifiers() -> dict[int, str]:
    return _enumerations()["property_identifier"]


def error_codes() -> dict[int, str]:
    return _enumerations()["error_code"]


def engineering_units() -> dict[int, str]:
    return _enumerations()["engineering_units"]


def _name(table: dict[int, str], code: int) -> str:
    """The standard name of ``code``, or the number itself for unnamed (proprietary, future) codes."""
    return table.get(code, str(code))


def _enumerated_names(prop: int | None) -> dict[int, str] | None:
    """Which enumeration an ENUMERATED value of property ``prop`` is (as ICSNPP maps them)."""
    match prop:
        case 36:
            return EVENT_STATES
        case 72:
            return NOTIFY_TYPES
        case 79:
            return object_types()
        case 103:
            return RELIABILITY
        case 107:
            return SEGMENTATION
        case 112:
            return DEVICE_STATUS
        case 117:
            return engineering_units()
        case 197:
            return LOGGING_TYPES
        case _:
            return None


# ====================================================================================== tags


class _MalformedError(Exception):
    """Internal: the encoding does not match the service's grammar (reported as a weird)."""


_PRIMITIVE, _OPEN, _CLOSE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Tag:
    number: int
    context: bool
    kind: int
    lvt: int
    data: bytes


def _parse_tags(data: bytes) -> list[_Tag]:
    """Split an encoded APDU body into tags (clause 20.2.1); opening/closing tags stay in the list."""
    tags: list[_Tag] = []
    pos, end, depth = 0, len(data), 0
    while pos < end:
        if len(tags) >= MAX_TAGS:
            raise _MalformedError(f"more than {MAX_TAGS} tags")
        first = data[pos]
        pos += 1
        number, context, lvt = first >> 4, bool(first & 0x08), first & 0x07
        if number == 15:
            if pos >= end:
                raise _MalformedError("truncated extended tag number")
            number = data[pos]
            pos += 1
        if context and lvt in (6, 7):
            if lvt == 6:
                depth += 1
            else:
                depth -= 1
                if depth < 0:
                    raise _MalformedError("closing tag without opening tag")
            tags.append(_Tag(number, True, _OPEN if lvt == 6 else _CLOSE, lvt, b""))
            continue
        if not context and number == 1:  # application BOOLEAN: the value is in the L/V/T field
            tags.append(_Tag(number, False, _PRIMITIVE, lvt, b""))
            continue
        length = lvt
        if lvt == 5:
            if pos >= end:
                raise _MalformedError("truncated extended length")
            length = data[pos]
            pos += 1
            if length in (254, 255):
                size = 2 if length == 254 else 4
                if pos + size > end:
                    raise _MalformedError("truncated extended length")
                length = int.from_bytes(data[pos : pos + size], "big")
                pos += size
        elif lvt > 5:
            raise _MalformedError(f"application tag {number} with L/V/T {lvt}")
        if pos + length > end:
            raise _MalformedError(f"tag {number} length {length} beyond the APDU")
        tags.append(_Tag(number, context, _PRIMITIVE, lvt, data[pos : pos + length]))
        pos += length
    if depth != 0:
        raise _MalformedError("opening tag without closing tag")
    return tags


class _Cursor:
    """Reads a service's tags in order, as its ASN.1 grammar (clause 21) lays them out."""

    __slots__ = ("i", "tags")

    def __init__(self, tags: list[_Tag]) -> None:
        self.tags = tags
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.tags)

    def peek(self) -> _Tag | None:
        return self.tags[self.i] if self.i < len(self.tags) else None

    def _primitive(self, number: int, context: bool) -> _Tag | None:
        tag = self.peek()
        if tag is not None and tag.kind == _PRIMITIVE and tag.context == context and tag.number == number:
            self.i += 1
            return tag
        return None

    def context(self, number: int) -> bytes:
        """The content of the primitive context-tagged value ``[number]`` that must come next."""
        tag = self._primitive(number, True)
        if tag is None:
            raise _MalformedError(f"context tag [{number}] expected")
        return tag.data

    def optional_context(self, number: int) -> bytes | None:
        tag = self._primitive(number, True)
        return None if tag is None else tag.data

    def optional_context_tag(self, number: int) -> _Tag | None:
        return self._primitive(number, True)

    def application(self, number: int) -> _Tag:
        """The application-tagged value of type ``number`` that must come next."""
        tag = self._primitive(number, False)
        if tag is None:
            raise _MalformedError(f"application tag {APPLICATION_TAGS.get(number, number)} expected")
        return tag

    def is_open(self, number: int) -> bool:
        tag = self.peek()
        return tag is not None and tag.kind == _OPEN and tag.number == number

    def constructed(self, number: int) -> list[_Tag]:
        """The tags between opening tag ``[number]`` (which must come next) and its closing tag."""
        if not self.is_open(number):
            raise _MalformedError(f"opening tag [{number}] expected")
        depth, j = 0, self.i + 1
        while j < len(self.tags):
            tag = self.tags[j]
            if tag.kind == _OPEN:
                depth += 1
            elif tag.kind == _CLOSE:
                if depth == 0:
                    if tag.number != number:
                        raise _MalformedError(f"opening tag [{number}] closed by [{tag.number}]")
                    inner = self.tags[self.i + 1 : j]
                    self.i = j + 1
                    return inner
                depth -= 1
            j += 1
        raise _MalformedError(f"opening tag [{number}] not closed")


def _unsigned(data: bytes, max_octets: int = 4) -> int:
    if not 1 <= len(data) <= max_octets:
        raise _MalformedError(f"unsigned of {len(data)} octets")
    return int.from_bytes(data, "big")


def _signed(data: bytes, max_octets: int = 4) -> int:
    if not 1 <= len(data) <= max_octets:
        raise _MalformedError(f"signed of {len(data)} octets")
    return int.from_bytes(data, "big", signed=True)


def _object_id(data: bytes) -> tuple[int, int]:
    """BACnetObjectIdentifier (clause 20.2.14): 10-bit object type, 22-bit instance number."""
    if len(data) != 4:
        raise _MalformedError(f"object identifier of {len(data)} octets")
    value = int.from_bytes(data, "big")
    return value >> 22, value & 0x3FFFFF


def _boolean(tag: _Tag) -> bool:
    """Application BOOLEAN keeps the value in L/V/T; context-tagged BOOLEAN has one content octet."""
    if not tag.context:
        if tag.lvt > 1:
            raise _MalformedError(f"boolean with L/V/T {tag.lvt}")
        return tag.lvt == 1
    if len(tag.data) != 1 or tag.data[0] > 1:
        raise _MalformedError("boolean content is not one octet 0 or 1")
    return tag.data[0] == 1


def _character_string(data: bytes) -> str | None:
    """CharacterString (clause 20.2.9): a character-set octet, then the characters."""
    if not data:
        raise _MalformedError("character string without character set")
    charset, text = data[0], data[1:]
    if charset == 0:  # ISO 10646 UTF-8 (ANSI X3.4 before 2010)
        return text.decode("utf-8", "replace")
    if charset == 3:
        return text.decode("utf-32-be", "replace")
    if charset == 4:
        return text.decode("utf-16-be", "replace")
    if charset == 5:
        return text.decode("latin-1")
    return None  # IBM/Microsoft DBCS (code page), JIS X 0208: not decoded


def _wild(value: int, width: int = 2) -> str:
    return "*" if value == 255 else f"{value:0{width}d}"


def _app_value(tag: _Tag, prop: int | None) -> str | None:
    """Text of an application-tagged primitive (clause 20.2); None for NULL and undecodable strings."""
    number, data = tag.number, tag.data
    if number == 0:
        return None
    if number == 1:
        return "true" if _boolean(tag) else "false"
    if number == 2:
        return str(_unsigned(data, 8))
    if number == 3:
        return str(_signed(data, 8))
    if number in (4, 5):
        size, fmt = (4, ">f") if number == 4 else (8, ">d")
        if len(data) != size:
            raise _MalformedError(f"{APPLICATION_TAGS[number]} of {len(data)} octets")
        return f"{struct.unpack(fmt, data)[0]:f}"
    if number == 6:
        return data.hex()
    if number == 7:
        return _character_string(data)
    if number == 8:
        if not data or data[0] > 7 or (len(data) == 1 and data[0] != 0):
            raise _MalformedError("bit string with a bad unused-bits octet")
        bits = "".join("T" if (octet >> (7 - i)) & 1 else "F" for octet in data[1:] for i in range(8))
        return bits[: len(bits) - data[0]]
    if number == 9:
        value = _unsigned(data, 4)
        names = _enumerated_names(prop)
        return names.get(value, str(value)) if names is not None else str(value)
    if number in (10, 11):
        if len(data) != 4:
            raise _MalformedError(f"{APPLICATION_TAGS[number]} of {len(data)} octets")
        if number == 10:
            year = "*" if data[0] == 255 else str(1900 + data[0])
            return f"{year}-{_wild(data[1])}-{_wild(data[2])}"
        return f"{_wild(data[0])}:{_wild(data[1])}:{_wild(data[2])}.{_wild(data[3])}"
    if number == 12:
        object_type, instance = _object_id(data)
        return f"{_name(object_types(), object_type)}: {instance}"
    raise _MalformedError(f"reserved application tag {number}")


@dataclass(frozen=True, slots=True)
class _Value:
    value: str | None = None
    values: tuple[str, ...] = ()
    value_type: str | None = None


def _property_value(tags: list[_Tag], prop: int | None) -> _Value:
    """A property value (ABSTRACT-SYNTAX.&Type): application-tagged primitives are decoded; a
    constructed (context-tagged) value is only typed ``constructed``."""
    if not tags:
        return _Value()
    if any(t.context or t.kind != _PRIMITIVE for t in tags):
        return _Value(value_type="constructed")
    texts = [_app_value(t, prop) for t in tags[:MAX_VALUES]]
    values = tuple("null" if (t.number == 0 and v is None) else v for t, v in zip(tags, texts, strict=False))
    return _Value(texts[0], tuple(v for v in values if v is not None), APPLICATION_TAGS[tags[0].number])


# ====================================================================================== recognition


def _npdu_plausible(data: bytes, pos: int) -> bool:
    """A strict look at the NPDU (and APDU header) starting at ``pos``."""
    end = len(data)
    if pos + 2 > end or data[pos] != 0x01 or data[pos + 1] & 0x50:
        return False
    control = data[pos + 1]
    pos += 2
    if control & 0x20:
        if pos + 3 > end:
            return False
        pos += 3 + data[pos + 2]
    if control & 0x08:
        if pos + 3 > end or data[pos + 2] == 0:
            return False
        pos += 3 + data[pos + 2]
    if control & 0x20:
        pos += 1
    if pos >= end:
        return False
    if control & 0x80:
        kind = data[pos]
        return kind in NETWORK_MESSAGES or (kind >= 0x80 and pos + 3 <= end)
    pdu_type = data[pos] >> 4
    minimum = {0: 4, 1: 2, 2: 3, 3: 3, 4: 4, 5: 3, 6: 3, 7: 3}.get(pdu_type)
    if minimum is None or pos + minimum > end:
        return False
    if pdu_type == CONFIRMED_REQUEST:
        service_at = pos + (5 if data[pos] & 0x08 else 3)
        return service_at < end and data[service_at] in CONFIRMED_SERVICES
    if pdu_type == UNCONFIRMED_REQUEST:
        return data[pos + 1] in UNCONFIRMED_SERVICES
    if pdu_type in (SIMPLE_ACK, ERROR_PDU):
        return data[pos + 2] in CONFIRMED_SERVICES
    if pdu_type == COMPLEX_ACK:
        service_at = pos + (4 if data[pos] & 0x08 else 2)
        return service_at < end and data[service_at] in CONFIRMED_SERVICES
    return True


# ====================================================================================== dissector


@dataclass(slots=True)
class _Reassembly:
    service: int
    next_sequence: int
    data: bytearray


class BacnetDissector(Dissector):
    """BACnet/IP (Annex J) over UDP."""

    name = "bacnet"
    description = "BACnet/IP building automation (BVLC, NPDU, APDU and its main services)"
    transports = frozenset({Transport.UDP})
    ports = frozenset(range(47808, 47824))  # 0xBAC0-0xBACF, a hint only
    event_types = (
        BacnetHeader,
        BacnetDiscovery,
        BacnetProperty,
        BacnetDeviceControl,
        BacnetTimeSync,
        BacnetCov,
        BacnetFile,
    )

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._segments: dict[tuple[bool, int, int], _Reassembly] = {}
        self._outstanding: OrderedDict[tuple[bool, int], int] = OrderedDict()

    # ---------------------------------------------------------------------------- recognition

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.UDP or len(data) < 4 or data[0] != BVLC_TYPE:
            return Verdict.NO
        function, length = data[1], int.from_bytes(data[2:4], "big")
        if function not in BVLC_FUNCTIONS or length < 4:
            return Verdict.NO
        if function in _NPDU_FUNCTIONS:
            # The NPDU must check out; the BVLC length is not required to match the datagram (some
            # stacks get it wrong, and the datagram is what the receiver processes).
            start = 10 if function == 0x04 else 4
            return Verdict.YES if _npdu_plausible(data, start) else Verdict.NO
        if length != len(data):
            return Verdict.NO
        if function in _FIXED_BVLC_LENGTHS:
            return Verdict.YES if length == _FIXED_BVLC_LENGTHS[function] else Verdict.NO
        if function in _TABLE_BVLC_FUNCTIONS:
            return Verdict.YES if (length - 4) % 10 == 0 else Verdict.NO
        return Verdict.YES if length > 4 else Verdict.NO  # Secure-BVLL carries a payload

    # ---------------------------------------------------------------------------- BVLC

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < 4:
            ctx.weird("bacnet_truncated_bvlc", f"{len(pdu)} bytes")
            return
        if pdu[0] != BVLC_TYPE:
            ctx.weird("bacnet_unsupported_bvlc_type", f"BVLC type 0x{pdu[0]:02x}")
            return
        function, length = pdu[1], int.from_bytes(pdu[2:4], "big")
        if length != len(pdu):
            ctx.weird("bacnet_bvlc_length_mismatch", f"BVLC length {length}, datagram {len(pdu)}")
        header: dict[str, Any] = {"bvlc_function": _name(BVLC_FUNCTIONS, function)}
        if function not in BVLC_FUNCTIONS:
            ctx.weird("bacnet_unknown_bvlc_function", f"0x{function:02x}")
            self._emit_header(ctx, header)
            return
        npdu_at: int | None = None
        if function == 0x00:
            if len(pdu) >= 6:
                header["result_code"] = _name(BVLC_RESULTS, int.from_bytes(pdu[4:6], "big"))
            else:
                ctx.weird("bacnet_truncated_bvlc", "BVLC-Result without a result code")
        elif function == 0x05:
            if len(pdu) >= 6:
                header["ttl"] = int.from_bytes(pdu[4:6], "big")
            else:
                ctx.weird("bacnet_truncated_bvlc", "Register-Foreign-Device without a time-to-live")
        elif function == 0x04:
            if len(pdu) >= 10:
                header["fwd_ip"] = ".".join(str(b) for b in pdu[4:8])
                header["fwd_port"] = int.from_bytes(pdu[8:10], "big")
                npdu_at = 10
            else:
                ctx.weird("bacnet_truncated_bvlc", "Forwarded-NPDU without an original source address")
        elif function in _NPDU_FUNCTIONS:
            npdu_at = 4
        if npdu_at is None:
            self._emit_header(ctx, header)
            return
        self._npdu(pdu, npdu_at, header, ctx)

    def _emit_header(self, ctx: PduContext, header: dict[str, Any]) -> None:
        ctx.emit(BacnetHeader(**ctx.where(), **header))

    # ---------------------------------------------------------------------------- NPDU

    def _npdu(self, data: bytes, pos: int, header: dict[str, Any], ctx: PduContext) -> None:
        end = len(data)
        if pos + 2 > end:
            ctx.weird("bacnet_truncated_npdu", "no NPDU header")
            self._emit_header(ctx, header)
            return
        version, control = data[pos], data[pos + 1]
        header["npdu_version"], header["npdu_control"] = version, control
        if version != 0x01:
            ctx.weird("bacnet_bad_npdu_version", f"version {version}")
            self._emit_header(ctx, header)
            return
        pos += 2
        if control & 0x20:
            if pos + 3 > end:
                return self._truncated_npdu(ctx, header, "DNET/DLEN")
            header["dnet"] = int.from_bytes(data[pos : pos + 2], "big")
            dlen = header["dlen"] = data[pos + 2]
            pos += 3
            if pos + dlen > end:
                return self._truncated_npdu(ctx, header, "DADR")
            if dlen:
                header["dadr"] = data[pos : pos + dlen].hex()
            pos += dlen
        if control & 0x08:
            if pos + 3 > end:
                return self._truncated_npdu(ctx, header, "SNET/SLEN")
            header["snet"] = int.from_bytes(data[pos : pos + 2], "big")
            slen = header["slen"] = data[pos + 2]
            pos += 3
            if slen == 0:
                ctx.weird("bacnet_bad_address_length", "SLEN is 0")
            if pos + slen > end:
                return self._truncated_npdu(ctx, header, "SADR")
            if slen:
                header["sadr"] = data[pos : pos + slen].hex()
            pos += slen
        if control & 0x20:
            if pos >= end:
                return self._truncated_npdu(ctx, header, "hop count")
            header["hop_count"] = data[pos]
            pos += 1
        if control & 0x80:
            self._network_message(data, pos, header, ctx)
            return
        self._apdu(data, pos, header, ctx)

    def _truncated_npdu(self, ctx: PduContext, header: dict[str, Any], what: str) -> None:
        ctx.weird("bacnet_truncated_npdu", f"datagram ends in the NPDU {what}")
        self._emit_header(ctx, header)

    def _network_message(self, data: bytes, pos: int, header: dict[str, Any], ctx: PduContext) -> None:
        end = len(data)
        header["pdu_type"] = "NPDU"
        if pos >= end:
            return self._truncated_npdu(ctx, header, "message type")
        kind = data[pos]
        pos += 1
        header["pdu_service"] = NETWORK_MESSAGES.get(
            kind, f"proprietary-0x{kind:02x}" if kind >= 0x80 else str(kind)
        )
        if kind >= 0x80:
            if pos + 2 > end:
                return self._truncated_npdu(ctx, header, "vendor id")
            self._emit_header(ctx, header)
            return
        body = data[pos:end]
        networks: list[int] = []
        truncated = False
        if kind in (0x00, 0x09):  # optional (Who-Is-Router) or mandatory (Disconnect) DNET
            if len(body) >= 2:
                networks.append(int.from_bytes(body[:2], "big"))
            truncated = len(body) == 1 if kind == 0x00 else len(body) < 2
        elif kind in (0x01, 0x04, 0x05):  # list of DNETs
            count = min(len(body) // 2, MAX_NETWORKS)
            networks = [int.from_bytes(body[2 * i : 2 * i + 2], "big") for i in range(count)]
            truncated = len(body) % 2 == 1
        elif kind in (0x02, 0x08):  # DNET + performance index / termination time
            truncated = len(body) < 3
            if len(body) >= 2:
                networks.append(int.from_bytes(body[:2], "big"))
        elif kind == 0x03:  # reject reason + DNET
            truncated = len(body) < 3
            if body:
                header["result_code"] = _name(NETWORK_REJECT_REASONS, body[0])
            if len(body) >= 3:
                networks.append(int.from_bytes(body[1:3], "big"))
        elif kind in (0x06, 0x07):  # routing table: count, then DNET, port id, info length, info
            entries = body[0] if body else 0
            at = 1
            for _ in range(entries):
                if at + 4 > len(body):
                    truncated = True
                    break
                networks.append(int.from_bytes(body[at : at + 2], "big"))
                at += 4 + body[at + 3]
            truncated = truncated or at > len(body)
        elif kind == 0x13:  # network number + flag
            truncated = len(body) < 3
            if len(body) >= 2:
                networks.append(int.from_bytes(body[:2], "big"))
        header["dnets"] = networks
        if truncated:
            ctx.weird("bacnet_truncated_npdu", f"{header['pdu_service']} body of {len(body)} bytes")
        self._emit_header(ctx, header)

    # ---------------------------------------------------------------------------- APDU

    def _apdu(self, data: bytes, pos: int, header: dict[str, Any], ctx: PduContext) -> None:
        end = len(data)
        if pos >= end:
            ctx.weird("bacnet_truncated_apdu", "NPDU without an APDU")
            self._emit_header(ctx, header)
            return
        first = data[pos]
        pdu_type, flags = first >> 4, first & 0x0F
        if pdu_type not in APDU_TYPES:
            ctx.weird("bacnet_unknown_apdu_type", f"APDU type {pdu_type}")
            header["pdu_type"] = str(pdu_type)
            self._emit_header(ctx, header)
            return
        header["pdu_type"] = APDU_TYPES[pdu_type]
        need = {0: 4, 1: 2, 2: 3, 3: 3, 4: 4, 5: 3, 6: 3, 7: 3}[pdu_type]
        segmented = pdu_type in (CONFIRMED_REQUEST, COMPLEX_ACK) and bool(flags & 0x08)
        if segmented:
            need += 2
        if pos + need > end:
            ctx.weird("bacnet_truncated_apdu", f"{APDU_TYPES[pdu_type]} header of {end - pos} bytes")
            self._emit_header(ctx, header)
            return
        if pdu_type == UNCONFIRMED_REQUEST:
            service = data[pos + 1]
            header["pdu_service"] = _name(UNCONFIRMED_SERVICES, service)
            self._emit_header(ctx, header)
            self._unconfirmed(service, data[pos + 2 : end], ctx)
            return
        at = pos + (2 if pdu_type == CONFIRMED_REQUEST else 1)
        invoke_id = header["invoke_id"] = data[at]
        at += 1
        if pdu_type in (CONFIRMED_REQUEST, COMPLEX_ACK):
            header["segmented"], header["more_follows"] = segmented, bool(flags & 0x04)
            if segmented:
                header["sequence_number"], header["window_size"] = data[at], data[at + 1]
                at += 2
        if pdu_type == SEGMENT_ACK:
            header["sequence_number"], header["window_size"] = data[at], data[at + 1]
            self._emit_header(ctx, header)
            return
        if pdu_type in (REJECT_PDU, ABORT_PDU):
            reasons = REJECT_REASONS if pdu_type == REJECT_PDU else ABORT_REASONS
            header["pdu_service"] = "reject" if pdu_type == REJECT_PDU else "abort"  # as ICSNPP names them
            header["result_code"] = _name(reasons, data[at])
            self._emit_header(ctx, header)
            # Abort's SRV flag: sent by the server (a response to the peer's request) or by the client.
            by_server = pdu_type == REJECT_PDU or bool(flags & 0x01)
            requester = (not ctx.is_orig) if by_server else ctx.is_orig
            request = self._outstanding.pop((requester, invoke_id), None)
            if by_server and request in _DEVICE_CONTROL:
                result = "REJECT" if pdu_type == REJECT_PDU else "ABORT"
                ctx.emit(
                    BacnetDeviceControl(
                        **ctx.where(),
                        invoke_id=invoke_id,
                        pdu_service=CONFIRMED_SERVICES[request],
                        result=result,
                        result_code=header["result_code"],
                    )
                )
            return
        service = data[at]
        header["pdu_service"] = _name(CONFIRMED_SERVICES, service)
        body = data[at + 1 : end]
        if pdu_type == ERROR_PDU:
            self._error(service, invoke_id, body, header, ctx)
            return
        self._emit_header(ctx, header)
        if pdu_type == CONFIRMED_REQUEST:
            self._remember(ctx.is_orig, invoke_id, service)
        elif not (segmented and flags & 0x04):  # the final answer to the request
            self._outstanding.pop((not ctx.is_orig, invoke_id), None)
        if pdu_type == SIMPLE_ACK:
            if service in _DEVICE_CONTROL:
                ctx.emit(
                    BacnetDeviceControl(
                        **ctx.where(),
                        invoke_id=invoke_id,
                        pdu_service=header["pdu_service"],
                        result="SUCCESS",
                    )
                )
            return
        if segmented:
            body = self._reassemble(pdu_type, service, invoke_id, body, ctx, header)
            if not body:
                return
        if pdu_type == CONFIRMED_REQUEST:
            self._confirmed(service, invoke_id, body, ctx)
        else:
            self._complex_ack(service, invoke_id, body, ctx)

    def _remember(self, is_orig: bool, invoke_id: int, service: int) -> None:
        key = (is_orig, invoke_id)
        self._outstanding.pop(key, None)
        self._outstanding[key] = service
        while len(self._outstanding) > MAX_OUTSTANDING:
            self._outstanding.popitem(last=False)

    def _reassemble(
        self,
        pdu_type: int,
        service: int,
        invoke_id: int,
        body: bytes,
        ctx: PduContext,
        header: dict[str, Any],
    ) -> bytes:
        """Collect a segmented message (clause 5.4); the whole service data once the last segment came."""
        key = (ctx.is_orig, invoke_id, pdu_type)
        sequence: int = header["sequence_number"]
        more: bool = header["more_follows"]
        state = self._segments.get(key)
        if sequence == 0:
            if state is None and len(self._segments) >= MAX_REASSEMBLIES:
                oldest = next(iter(self._segments))
                del self._segments[oldest]
                ctx.weird("bacnet_too_many_segmented_messages", f"more than {MAX_REASSEMBLIES} at once")
            state = self._segments[key] = _Reassembly(service, 0, bytearray())
        elif state is None:
            ctx.weird("bacnet_segment_out_of_order", f"segment {sequence} without segment 0")
            return b""
        elif sequence == (state.next_sequence - 1) % 256:
            return b""  # a retransmitted segment
        if sequence != state.next_sequence or service != state.service:
            del self._segments[key]
            ctx.weird("bacnet_segment_out_of_order", f"segment {sequence}, expected {state.next_sequence}")
            return b""
        if len(state.data) + len(body) > MAX_REASSEMBLY_BYTES:
            del self._segments[key]
            ctx.weird("bacnet_segment_overflow", f"segmented message over {MAX_REASSEMBLY_BYTES} bytes")
            return b""
        state.data += body
        state.next_sequence = (sequence + 1) % 256
        if more:
            return b""
        del self._segments[key]
        return bytes(state.data)

    def _error(
        self, service: int, invoke_id: int, body: bytes, header: dict[str, Any], ctx: PduContext
    ) -> None:
        """Error-PDU (clause 20.1.7): error class and code, possibly wrapped in [0] (e.g. WPM)."""
        try:
            tags = _parse_tags(body)
        except _MalformedError as exc:
            ctx.weird("bacnet_malformed_service", f"error PDU: {exc}")
            tags = []
        enumerated = [t for t in tags if not t.context and t.number == 9 and 1 <= len(t.data) <= 4][:2]
        if len(enumerated) == 2:
            header["error_class"] = _name(ERROR_CLASSES, int.from_bytes(enumerated[0].data, "big"))
            header["result_code"] = _name(error_codes(), int.from_bytes(enumerated[1].data, "big"))
        else:
            ctx.weird("bacnet_malformed_service", "error PDU without error class and code")
        self._emit_header(ctx, header)
        self._outstanding.pop((not ctx.is_orig, invoke_id), None)
        if service in _DEVICE_CONTROL:
            ctx.emit(
                BacnetDeviceControl(
                    **ctx.where(),
                    invoke_id=invoke_id,
                    pdu_service=header["pdu_service"],
                    result="ERROR",
                    result_code=header.get("result_code"),
                )
            )

    # ---------------------------------------------------------------------------- services

    def _decode(self, what: str, body: bytes, ctx: PduContext) -> _Cursor | None:
        try:
            return _Cursor(_parse_tags(body))
        except _MalformedError as exc:
            ctx.weird("bacnet_malformed_service", f"{what}: {exc}")
            return None

    def _unconfirmed(self, service: int, body: bytes, ctx: PduContext) -> None:
        handler = {
            I_AM: self._i_am,
            I_HAVE: self._i_have,
            WHO_HAS: self._who_has,
            WHO_IS: self._who_is,
            TIME_SYNCHRONIZATION: self._time_sync,
            UTC_TIME_SYNCHRONIZATION: self._time_sync,
        }.get(service)
        if handler is None:
            return
        name = UNCONFIRMED_SERVICES[service]
        cursor = self._decode(name, body, ctx)
        if cursor is None:
            return
        try:
            handler(service, cursor, ctx)
        except _MalformedError as exc:
            ctx.weird("bacnet_malformed_service", f"{name}: {exc}")

    def _confirmed(self, service: int, invoke_id: int, body: bytes, ctx: PduContext) -> None:
        handler = {
            READ_PROPERTY: self._read_property,
            READ_PROPERTY_MULTIPLE: self._read_property_multiple,
            WRITE_PROPERTY: self._write_property,
            WRITE_PROPERTY_MULTIPLE: self._write_property_multiple,
            DEVICE_COMMUNICATION_CONTROL: self._device_communication_control,
            REINITIALIZE_DEVICE: self._reinitialize_device,
            SUBSCRIBE_COV: self._subscribe_cov,
            SUBSCRIBE_COV_PROPERTY: self._subscribe_cov,
            ATOMIC_READ_FILE: self._atomic_file_request,
            ATOMIC_WRITE_FILE: self._atomic_file_request,
        }.get(service)
        self._run(handler, service, invoke_id, body, ctx, CONFIRMED_SERVICES.get(service, str(service)))

    def _complex_ack(self, service: int, invoke_id: int, body: bytes, ctx: PduContext) -> None:
        handler = {
            READ_PROPERTY: self._read_property_ack,
            READ_PROPERTY_MULTIPLE: self._read_property_multiple_ack,
            ATOMIC_READ_FILE: self._atomic_read_file_ack,
            ATOMIC_WRITE_FILE: self._atomic_write_file_ack,
        }.get(service)
        self._run(handler, service, invoke_id, body, ctx, f"{CONFIRMED_SERVICES.get(service, service)} ack")

    def _run(
        self,
        handler: Callable[[int, int, _Cursor, PduContext], None] | None,
        service: int,
        invoke_id: int,
        body: bytes,
        ctx: PduContext,
        name: str,
    ) -> None:
        if handler is None:
            return
        cursor = self._decode(name, body, ctx)
        if cursor is None:
            return
        try:
            handler(service, invoke_id, cursor, ctx)
        except _MalformedError as exc:
            ctx.weird("bacnet_malformed_service", f"{name}: {exc}")

    # -- discovery (clause 16.10)

    def _who_is(self, service: int, c: _Cursor, ctx: PduContext) -> None:
        low = c.optional_context(0)
        high = c.context(1) if low is not None else None
        low_limit = _unsigned(low) if low is not None else None
        high_limit = _unsigned(high) if high is not None else None
        limits = f"{low_limit}-{high_limit}" if low_limit is not None else "All"
        self._trailing(c, "who_is", ctx)
        ctx.emit(
            BacnetDiscovery(
                **ctx.where(), pdu_service="who-is", range=limits, low_limit=low_limit, high_limit=high_limit
            )
        )

    def _i_am(self, service: int, c: _Cursor, ctx: PduContext) -> None:
        device = c.application(12)
        max_apdu, segmentation, vendor = c.application(2), c.application(9), c.application(2)
        object_type, instance = _object_id(device.data)
        vendor_id = _unsigned(vendor.data, 2)
        self._trailing(c, "i_am", ctx)
        ctx.emit(
            BacnetDiscovery(
                **ctx.where(),
                pdu_service="i-am",
                object_type=_name(object_types(), object_type),
                instance_number=instance,
                vendor=vendors().get(vendor_id),
                vendor_id=vendor_id,
                max_apdu=_unsigned(max_apdu.data),
                segmentation=_name(SEGMENTATION, _unsigned(segmentation.data, 1)),
            )
        )

    def _who_has(self, service: int, c: _Cursor, ctx: PduContext) -> None:
        low = c.optional_context(0)
        high = c.context(1) if low is not None else None
        low_limit = _unsigned(low) if low is not None else None
        high_limit = _unsigned(high) if high is not None else None
        object_id = c.optional_context(2)
        object_name = None if object_id is not None else _character_string(c.context(3))
        object_type = instance = None
        if object_id is not None:
            object_type, instance = _object_id(object_id)
        self._trailing(c, "who_has", ctx)
        ctx.emit(
            BacnetDiscovery(
                **ctx.where(),
                pdu_service="who-has",
                object_type=_name(object_types(), object_type) if object_type is not None else None,
                instance_number=instance,
                range=f"{low_limit}-{high_limit}" if low_limit is not None else "All",
                low_limit=low_limit,
                high_limit=high_limit,
                object_name=object_name,
            )
        )

    def _i_have(self, service: int, c: _Cursor, ctx: PduContext) -> None:
        device, obj, name = c.application(12), c.application(12), c.application(7)
        device_type, device_instance = _object_id(device.data)
        object_type, instance = _object_id(obj.data)
        self._trailing(c, "i_have", ctx)
        ctx.emit(
            BacnetDiscovery(
                **ctx.where(),
                pdu_service="i-have",
                device_id_type=_name(object_types(), device_type),
                device_id_number=device_instance,
                object_type=_name(object_types(), object_type),
                instance_number=instance,
                object_name=_character_string(name.data),
            )
        )

    def _time_sync(self, service: int, c: _Cursor, ctx: PduContext) -> None:
        date, time = c.application(10), c.application(11)
        if len(date.data) != 4 or len(time.data) != 4:
            raise _MalformedError("date or time is not 4 octets")
        self._trailing(c, UNCONFIRMED_SERVICES[service], ctx)

        def part(value: int, offset: int = 0) -> int | None:
            return None if value == 255 else value + offset

        ctx.emit(
            BacnetTimeSync(
                **ctx.where(),
                pdu_service=UNCONFIRMED_SERVICES[service].replace("_", "-"),
                year=part(date.data[0], 1900),
                month=part(date.data[1]),
                day=part(date.data[2]),
                day_of_week=part(date.data[3]),
                hour=part(time.data[0]),
                minute=part(time.data[1]),
                second=part(time.data[2]),
                hundredths=part(time.data[3]),
            )
        )

    def _trailing(self, c: _Cursor, name: str, ctx: PduContext) -> None:
        if not c.done():
            ctx.weird("bacnet_malformed_service", f"{name}: {len(c.tags) - c.i} unexpected trailing tags")

    # -- object access (clause 15)

    def _object(self, c: _Cursor, number: int = 0) -> tuple[str, int]:
        object_type, instance = _object_id(c.context(number))
        return _name(object_types(), object_type), instance

    def _read_property(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        object_type, instance = self._object(c)
        prop = _unsigned(c.context(1))
        index = c.optional_context(2)
        self._trailing(c, "read_property", ctx)
        ctx.emit(
            BacnetProperty(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="read-property-request",
                object_type=object_type,
                instance_number=instance,
                property=_name(property_identifiers(), prop),
                array_index=_unsigned(index) if index is not None else None,
            )
        )

    def _read_property_ack(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        object_type, instance = self._object(c)
        prop = _unsigned(c.context(1))
        index = c.optional_context(2)
        value = _property_value(c.constructed(3), prop)
        self._trailing(c, "read_property ack", ctx)
        ctx.emit(
            BacnetProperty(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="read-property-ack",
                object_type=object_type,
                instance_number=instance,
                property=_name(property_identifiers(), prop),
                array_index=_unsigned(index) if index is not None else None,
                value=value.value,
                values=list(value.values),
                value_type=value.value_type,
            )
        )

    def _read_property_multiple(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        rows: list[BacnetProperty] = []
        while not c.done():
            object_type, instance = self._object(c)
            refs = _Cursor(c.constructed(1))
            while not refs.done():
                prop = _unsigned(refs.context(0))
                index = refs.optional_context(1)
                rows.append(
                    BacnetProperty(
                        **ctx.where(),
                        invoke_id=invoke_id,
                        pdu_service="read-property-multiple-request",
                        object_type=object_type,
                        instance_number=instance,
                        property=_name(property_identifiers(), prop),
                        array_index=_unsigned(index) if index is not None else None,
                    )
                )
        self._emit_rows(rows, ctx)

    def _read_property_multiple_ack(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        rows: list[BacnetProperty] = []
        while not c.done():
            object_type, instance = self._object(c)
            results = _Cursor(c.constructed(1) if c.is_open(1) else [])
            while not results.done():
                prop = _unsigned(results.context(2))
                index = results.optional_context(3)
                row: dict[str, Any] = {
                    "invoke_id": invoke_id,
                    "pdu_service": "read-property-multiple-ack",
                    "object_type": object_type,
                    "instance_number": instance,
                    "property": _name(property_identifiers(), prop),
                    "array_index": _unsigned(index) if index is not None else None,
                }
                if results.is_open(4):
                    value = _property_value(results.constructed(4), prop)
                    row.update(value=value.value, values=list(value.values), value_type=value.value_type)
                else:
                    error = _Cursor(results.constructed(5))
                    error_class, error_code = error.application(9), error.application(9)
                    row.update(
                        value="PropertyError",  # ICSNPP's value for a property access error
                        value_type="error",
                        error_class=_name(ERROR_CLASSES, _unsigned(error_class.data)),
                        result_code=_name(error_codes(), _unsigned(error_code.data)),
                    )
                rows.append(BacnetProperty(**ctx.where(), **row))
        self._emit_rows(rows, ctx)

    def _write_property(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        object_type, instance = self._object(c)
        prop = _unsigned(c.context(1))
        index = c.optional_context(2)
        value = _property_value(c.constructed(3), prop)
        priority = c.optional_context(4)
        self._trailing(c, "write_property", ctx)
        ctx.emit(
            BacnetProperty(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="write-property",
                object_type=object_type,
                instance_number=instance,
                property=_name(property_identifiers(), prop),
                array_index=_unsigned(index) if index is not None else None,
                value=value.value,
                values=list(value.values),
                value_type=value.value_type,
                priority=self._priority(priority, ctx),
            )
        )

    def _write_property_multiple(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        rows: list[BacnetProperty] = []
        while not c.done():
            object_type, instance = self._object(c)
            props = _Cursor(c.constructed(1))
            while not props.done():
                prop = _unsigned(props.context(0))
                index = props.optional_context(1)
                value = _property_value(props.constructed(2), prop)
                priority = props.optional_context(3)
                rows.append(
                    BacnetProperty(
                        **ctx.where(),
                        invoke_id=invoke_id,
                        pdu_service="write-property-multiple",
                        object_type=object_type,
                        instance_number=instance,
                        property=_name(property_identifiers(), prop),
                        array_index=_unsigned(index) if index is not None else None,
                        value=value.value,
                        values=list(value.values),
                        value_type=value.value_type,
                        priority=self._priority(priority, ctx),
                    )
                )
        self._emit_rows(rows, ctx)

    def _priority(self, data: bytes | None, ctx: PduContext) -> int | None:
        """Write priority (clause 19.2): Unsigned (1..16); other values are reported and kept."""
        if data is None:
            return None
        priority = _unsigned(data, 1)
        if not 1 <= priority <= 16:
            ctx.weird("bacnet_bad_priority", f"write priority {priority} outside 1..16")
        return priority

    def _emit_rows(self, rows: list[BacnetProperty], ctx: PduContext) -> None:
        if len(rows) > MAX_ROWS:
            ctx.weird("bacnet_too_many_properties", f"{len(rows)} properties in one APDU, {MAX_ROWS} kept")
        for row in rows[:MAX_ROWS]:
            ctx.emit(row)

    # -- remote device management (clause 16.1, 16.4)

    def _device_communication_control(
        self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext
    ) -> None:
        duration = c.optional_context(0)
        state = _unsigned(c.context(1), 1)
        password = c.optional_context(2)
        self._trailing(c, "device_communication_control", ctx)
        ctx.emit(
            BacnetDeviceControl(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="device_communication_control",
                time_duration=_unsigned(duration, 2) if duration is not None else None,
                device_state=_name(ENABLE_DISABLE, state),
                password_present=password is not None,
            )
        )

    def _reinitialize_device(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        state = _unsigned(c.context(0), 1)
        password = c.optional_context(1)
        self._trailing(c, "reinitialize_device", ctx)
        ctx.emit(
            BacnetDeviceControl(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="reinitialize_device",
                device_state=_name(REINITIALIZED_STATES, state),
                password_present=password is not None,
            )
        )

    # -- alarm and event services (clause 13.14, 13.15)

    def _subscribe_cov(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        process = _unsigned(c.context(0))
        object_type, instance = self._object(c, 1)
        confirmed = c.optional_context_tag(2)
        lifetime = c.optional_context(3)
        prop = index = increment = None
        if service == SUBSCRIBE_COV_PROPERTY:
            reference = _Cursor(c.constructed(4))
            prop = _unsigned(reference.context(0))
            index_data = reference.optional_context(1)
            index = _unsigned(index_data) if index_data is not None else None
            increment_data = c.optional_context(5)
            if increment_data is not None:
                if len(increment_data) != 4:
                    raise _MalformedError("COV increment is not a REAL")
                increment = float(struct.unpack(">f", increment_data)[0])
        self._trailing(c, CONFIRMED_SERVICES[service], ctx)
        ctx.emit(
            BacnetCov(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service=CONFIRMED_SERVICES[service].replace("_", "-") + "-request",
                subscriber_process_id=process,
                object_type=object_type,
                instance_number=instance,
                issue_confirmed=_boolean(confirmed) if confirmed is not None else None,
                lifetime=_unsigned(lifetime) if lifetime is not None else None,
                cancellation=confirmed is None and lifetime is None,
                property=_name(property_identifiers(), prop) if prop is not None else None,
                array_index=index,
                cov_increment=increment,
            )
        )

    # -- file access (clause 14)

    def _file_access(self, c: _Cursor) -> tuple[str, list[_Tag]]:
        if c.is_open(0):
            return "stream", c.constructed(0)
        return "record", c.constructed(1)

    def _atomic_file_request(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        file_id = c.application(12)
        object_type, instance = _object_id(file_id.data)
        method, inner = self._file_access(c)
        access = _Cursor(inner)
        start = access.application(3)
        count: int | None = None
        data_length: int | None = None
        if service == ATOMIC_READ_FILE:
            requested = access.application(2)
            count = _unsigned(requested.data)
        elif method == "stream":
            data = access.application(6)
            data_length = len(data.data)
        else:
            records = access.application(2)
            count = _unsigned(records.data)
            data_length = self._octet_strings(access)
        self._trailing(access, CONFIRMED_SERVICES[service], ctx)
        self._trailing(c, CONFIRMED_SERVICES[service], ctx)
        ctx.emit(
            BacnetFile(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service=CONFIRMED_SERVICES[service].replace("_", "-") + "-request",
                object_type=_name(object_types(), object_type),
                instance_number=instance,
                access_method=method,
                file_start=_signed(start.data),
                count=count,
                data_length=data_length,
            )
        )

    def _octet_strings(self, c: _Cursor) -> int:
        total = 0
        while not c.done():
            record = c.application(6)
            total += len(record.data)
        return total

    def _atomic_read_file_ack(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        eof = c.application(1)
        method, inner = self._file_access(c)
        access = _Cursor(inner)
        start = access.application(3)
        count: int | None = None
        if method == "stream":
            data = access.application(6)
            data_length = len(data.data)
        else:
            records = access.application(2)
            count = _unsigned(records.data)
            data_length = self._octet_strings(access)
        self._trailing(access, "atomic_read_file ack", ctx)
        self._trailing(c, "atomic_read_file ack", ctx)
        ctx.emit(
            BacnetFile(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="atomic-read-file-ack",
                access_method=method,
                file_start=_signed(start.data),
                count=count,
                data_length=data_length,
                end_of_file=_boolean(eof),
            )
        )

    def _atomic_write_file_ack(self, service: int, invoke_id: int, c: _Cursor, ctx: PduContext) -> None:
        stream = c.optional_context(0)
        start = stream if stream is not None else c.context(1)
        self._trailing(c, "atomic_write_file ack", ctx)
        ctx.emit(
            BacnetFile(
                **ctx.where(),
                invoke_id=invoke_id,
                pdu_service="atomic-write-file-ack",
                access_method="stream" if stream is not None else "record",
                file_start=_signed(start),
            )
        )
