"""DNS, multicast DNS and LLMNR dissector: one ``dns`` event per message, one ``dns_rr`` per record.

What is covered, with the specification it follows:

- the header of RFC 1035 4.1.1 (id, QR, opcode, AA, TC, RD, RA, Z, AD and CD of RFC 4035, rcode, the four
  section counts) and every question and resource record of the four sections (RFC 1035 4.1.2-4.1.3);
- multicast DNS (RFC 6762, UDP 5353): the "unicast response" (QU) bit of a question's class and the
  "cache flush" bit of a record's class (18.12, 18.13), and the names devices announce for themselves:
  A/AAAA host names, PTR/SRV/TXT DNS-SD service instances (RFC 6763: ``<Instance>.<_service>.<_proto>.
  <domain>``, TXT ``key=value`` strings);
- LLMNR (RFC 4795, UDP 5355), which uses the DNS message format;
- EDNS(0) (RFC 6891): the OPT record's UDP payload size;
- DNS over TCP with its two-byte length prefix (RFC 1035 4.2.2).

Names are decoded (compression pointers must point backwards, which rules out loops) and rdata parsed
with dnspython (``dns.name.from_wire``, ``dns.rdata.from_wire``), whose exceptions on malformed input
become ``dns_*`` weirds; the walk over sections, the mDNS class bits and the text of names are ours.

Recognition is by content: a 12-byte header with a known opcode and a structure that walks (questions
and records with well-formed names and lengths) to the end of the datagram.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rdtypes.mxbase
import dns.rdtypes.nsbase
import dns.rdtypes.txtbase

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

HEADER = struct.Struct(">HHHHHH")
HEADER_SIZE = HEADER.size
QUESTION_FIXED = struct.Struct(">HH")
RR_FIXED = struct.Struct(">HHIH")
MDNS_PORT = 5353
LLMNR_PORT = 5355
CLASS_TOP_BIT = 0x8000
"""mDNS: QU bit of a question's class, cache-flush bit of a record's class (RFC 6762 18.12-18.13)."""
MAX_RECORDS = 512
"""Questions plus records read per message (a bound on hostile input)."""
MAX_TEXT = 1024
"""Characters kept of one rdata text."""
ROOT = "<Root>"
"""How the root name is written (as tshark does)."""
OPCODES: dict[int, str] = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}
RCODES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
    11: "DSOTYPENI",
}
SECTIONS = ("question", "answer", "authority", "additional")
TYPE_PTR, TYPE_TXT, TYPE_SRV, TYPE_OPT = 12, 16, 33, 41
SERVICE_PROTOCOLS = (b"_tcp", b"_udp")


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsMessage(Event):
    """One DNS/mDNS/LLMNR message (``events/dns.parquet``)."""

    log: ClassVar[str] = "dns"

    variant: str
    trans_id: int
    qr: bool
    opcode: int
    opcode_name: str
    rcode: int
    rcode_name: str
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    z: bool
    ad: bool
    cd: bool
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    query: str | None = None
    qtype: int | None = None
    qtype_name: str | None = None
    qclass: int | None = None
    qclass_name: str | None = None
    qu: bool | None = None
    answers: list[str] | None = None
    ttls: list[int] | None = None
    edns_udp_size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsRecord(Event):
    """One question or resource record of a message (``events/dns_rr.parquet``)."""

    log: ClassVar[str] = "dns_rr"

    variant: str
    trans_id: int
    qr: bool
    section: str
    name: str
    rtype: int
    rtype_name: str
    rclass: int
    rclass_name: str
    qu: bool | None = None
    cache_flush: bool | None = None
    ttl: int | None = None
    rdata: str | None = None
    address: str | None = None
    target: str | None = None
    port: int | None = None
    txt: list[str] | None = None
    instance: str | None = None
    service: str | None = None


class _MalformedError(Exception):
    """A message that cannot be walked further (its weird name and detail)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail


def _label_text(label: bytes) -> str:
    return label.decode("utf-8", "backslashreplace")


def name_text(name: dns.name.Name) -> str:
    """A name as dotted text, without the final dot, labels as UTF-8 (``<Root>`` for the root)."""
    labels = [_label_text(label) for label in name.labels if label]
    return ".".join(labels) if labels else ROOT


def type_name(rtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))


def class_name(rclass: int) -> str:
    return dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(rclass))


def _service_instance(name: dns.name.Name) -> tuple[str, str] | None:
    """(instance, service) of a DNS-SD service instance name ``<Instance>.<_svc>.<_tcp|_udp>.<domain>``."""
    labels = name.labels
    for i in range(1, len(labels) - 1):
        if labels[i].startswith(b"_") and labels[i + 1].lower() in SERVICE_PROTOCOLS:
            if i == 1:
                return _label_text(labels[0]), f"{_label_text(labels[1])}.{_label_text(labels[2])}"
            return None
    return None


def _read_name(wire: bytes, offset: int) -> tuple[dns.name.Name, int]:
    try:
        name, used = dns.name.from_wire(wire, offset)
    except dns.name.BadPointer as exc:
        raise _MalformedError("dns_bad_pointer", f"name at offset {offset}: {exc}") from None
    except (dns.name.BadLabelType, dns.name.NameTooLong, dns.name.LabelTooLong) as exc:
        raise _MalformedError("dns_bad_name", f"name at offset {offset}: {type(exc).__name__}") from None
    except dns.exception.FormError:
        raise _MalformedError("dns_truncated", f"name at offset {offset} runs past the message") from None
    except (dns.exception.DNSException, ValueError, IndexError) as exc:
        raise _MalformedError("dns_bad_name", f"name at offset {offset}: {type(exc).__name__}") from None
    return name, offset + used


def _skip_name(wire: bytes, offset: int) -> int:
    """Structural walk for recognition: the offset after a name, or -1 (no pointer is followed)."""
    total = 0
    while offset < len(wire):
        size = wire[offset]
        if size & 0xC0 == 0xC0:
            return offset + 2 if offset + 1 < len(wire) else -1
        if size & 0xC0:
            return -1
        if size == 0:
            return offset + 1
        total += size + 1
        if total > 255:
            return -1
        offset += 1 + size
    return -1


def _walks(wire: bytes, offset: int, questions: int, records: int) -> int:
    """Structural walk over the sections: the offset after the last record, or -1."""
    for i in range(questions + records):
        offset = _skip_name(wire, offset)
        if offset < 0:
            return -1
        if i < questions:
            offset += QUESTION_FIXED.size
        else:
            if offset + RR_FIXED.size > len(wire):
                return -1
            offset += RR_FIXED.size + struct.unpack_from(">H", wire, offset + 8)[0]
        if offset > len(wire):
            return -1
    return offset


class DnsDissector(Dissector):
    """DNS (UDP and TCP 53), multicast DNS (UDP 5353) and LLMNR (UDP 5355)."""

    name = "dns"
    description = "DNS, mDNS and LLMNR: queries, answers, DNS-SD service instances and TXT properties"
    transports = frozenset({Transport.UDP, Transport.TCP})
    ports = frozenset({53, MDNS_PORT, LLMNR_PORT})
    event_types = (DnsMessage, DnsRecord)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        ports = {flow.orig_p, flow.resp_p}
        self._variant = "mdns" if MDNS_PORT in ports else "llmnr" if LLMNR_PORT in ports else "dns"
        self._tcp = flow.transport == Transport.TCP

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport == Transport.TCP:
            if len(data) < 2:
                return Verdict.MAYBE
            length = struct.unpack_from(">H", data)[0]
            if length < HEADER_SIZE:
                return Verdict.NO
            if len(data) < 2 + length:
                if 53 not in (sport, dport) or not cls._header_ok(data[2 : 2 + HEADER_SIZE]):
                    return Verdict.NO
                return Verdict.MAYBE
            return cls._plausible(data[2 : 2 + length], exact=True)
        on_port = bool({sport, dport} & cls.ports)
        return cls._plausible(data, exact=not on_port)

    @staticmethod
    def _header_ok(head: bytes) -> bool:
        """A plausible header (or a prefix of one too short to judge)."""
        if len(head) < HEADER_SIZE:
            return len(head) < 4 or (head[2] >> 3) & 0xF in OPCODES
        _id, flags, qd, an, ns, ar = HEADER.unpack_from(head)
        total = qd + an + ns + ar
        if (flags >> 11) & 0xF not in OPCODES or total == 0 or total > MAX_RECORDS:
            return False
        return not (not flags & 0x8000 and an and (flags >> 11) & 0xF == 0 and qd == 0)

    @classmethod
    def _plausible(cls, message: bytes, exact: bool) -> Verdict:
        if len(message) < HEADER_SIZE or not cls._header_ok(message[:HEADER_SIZE]):
            return Verdict.NO
        _id, _flags, qd, an, ns, ar = HEADER.unpack_from(message)
        end = _walks(message, HEADER_SIZE, qd, an + ns + ar)
        if end < 0 or (exact and end != len(message)):
            return Verdict.NO
        return Verdict.YES

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) < 2:
            return 0
        length = struct.unpack_from(">H", data)[0]
        if length < HEADER_SIZE:
            return -1
        return 2 + length if len(data) >= 2 + length else 0

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        wire = pdu[2:] if self._tcp else pdu
        if len(wire) < HEADER_SIZE:
            ctx.weird("dns_truncated_header", f"{len(wire)} bytes, a DNS header needs {HEADER_SIZE}")
            return
        trans_id, flags, qd, an, ns, ar = HEADER.unpack_from(wire)
        qr = bool(flags & 0x8000)
        opcode, rcode = (flags >> 11) & 0xF, flags & 0xF
        if opcode not in OPCODES:
            ctx.weird("dns_unknown_opcode", f"opcode {opcode}")
        common = {"variant": self._variant, "trans_id": trans_id, "qr": qr}
        records: list[DnsRecord] = []
        answers: list[str] = []
        ttls: list[int] = []
        edns: int | None = None
        offset = HEADER_SIZE
        counts = (qd, an, ns, ar)
        try:
            for section, count in zip(SECTIONS, counts, strict=True):
                for _ in range(count):
                    if len(records) >= MAX_RECORDS:
                        raise _MalformedError("dns_too_many_records", f"more than {MAX_RECORDS} records")
                    if offset >= len(wire):
                        raise _MalformedError(
                            "dns_truncated", f"{section} section ends early ({count} announced)"
                        )
                    if section == "question":
                        record, offset = self._question(wire, offset, ctx, common)
                    else:
                        record, offset = self._record(wire, offset, section, ctx, common)
                        if section == "answer" and record.rdata is not None and record.ttl is not None:
                            answers.append(record.rdata)
                            ttls.append(record.ttl)
                        if record.rtype == TYPE_OPT:
                            edns = record.rclass
                    records.append(record)
        except _MalformedError as exc:
            ctx.weird(exc.name, exc.detail)
        else:
            if offset < len(wire):
                ctx.weird("dns_trailing_data", f"{len(wire) - offset} bytes after the last record")
        first = records[0] if records and records[0].section == "question" else None
        ctx.emit(
            DnsMessage(
                **ctx.where(),
                **common,
                opcode=opcode,
                opcode_name=OPCODES.get(opcode, f"unknown-{opcode}"),
                rcode=rcode,
                rcode_name=RCODES.get(rcode, f"unknown-{rcode}"),
                aa=bool(flags & 0x0400),
                tc=bool(flags & 0x0200),
                rd=bool(flags & 0x0100),
                ra=bool(flags & 0x0080),
                z=bool(flags & 0x0040),
                ad=bool(flags & 0x0020),
                cd=bool(flags & 0x0010),
                qdcount=qd,
                ancount=an,
                nscount=ns,
                arcount=ar,
                query=None if first is None else first.name,
                qtype=None if first is None else first.rtype,
                qtype_name=None if first is None else first.rtype_name,
                qclass=None if first is None else first.rclass,
                qclass_name=None if first is None else first.rclass_name,
                qu=None if first is None else first.qu,
                answers=answers if qr else None,
                ttls=ttls if qr else None,
                edns_udp_size=edns,
            )
        )
        for record in records:
            ctx.emit(record)

    def _class_bit(self, rclass: int) -> tuple[int, bool | None]:
        """Class without the mDNS top bit, and the bit (None outside mDNS, where it is part of the class)."""
        if self._variant != "mdns":
            return rclass, None
        return rclass & ~CLASS_TOP_BIT, bool(rclass & CLASS_TOP_BIT)

    def _question(
        self, wire: bytes, offset: int, ctx: PduContext, common: dict[str, Any]
    ) -> tuple[DnsRecord, int]:
        name, offset = _read_name(wire, offset)
        if offset + QUESTION_FIXED.size > len(wire):
            raise _MalformedError("dns_truncated", "question type and class run past the message")
        qtype, raw_class = QUESTION_FIXED.unpack_from(wire, offset)
        qclass, qu = self._class_bit(raw_class)
        record = DnsRecord(
            **ctx.where(),
            **common,
            section="question",
            name=name_text(name),
            rtype=qtype,
            rtype_name=type_name(qtype),
            rclass=qclass,
            rclass_name=class_name(qclass),
            qu=qu,
        )
        return record, offset + QUESTION_FIXED.size

    def _record(
        self, wire: bytes, offset: int, section: str, ctx: PduContext, common: dict[str, Any]
    ) -> tuple[DnsRecord, int]:
        name, offset = _read_name(wire, offset)
        if offset + RR_FIXED.size > len(wire):
            raise _MalformedError("dns_truncated", f"{section} record header runs past the message")
        rtype, raw_class, ttl, rdlength = RR_FIXED.unpack_from(wire, offset)
        offset += RR_FIXED.size
        if offset + rdlength > len(wire):
            raise _MalformedError("dns_truncated", f"rdata of {rdlength} bytes, {len(wire) - offset} present")
        rclass, flush = (raw_class, None) if rtype == TYPE_OPT else self._class_bit(raw_class)
        fields = self._rdata(wire, offset, rdlength, rtype, rclass, ctx)
        identity = _service_instance(name) if rtype in (TYPE_SRV, TYPE_TXT) else None
        if rtype == TYPE_PTR and fields.get("_target_name") is not None:
            identity = _service_instance(fields["_target_name"])
        fields.pop("_target_name", None)
        if identity is not None:
            fields["instance"], fields["service"] = identity
        record = DnsRecord(
            **ctx.where(),
            **common,
            section=section,
            name=name_text(name),
            rtype=rtype,
            rtype_name=type_name(rtype),
            rclass=rclass,
            rclass_name=class_name(rclass),
            cache_flush=flush,
            ttl=ttl,
            **fields,
        )
        return record, offset + rdlength

    @staticmethod
    def _rdata(
        wire: bytes, offset: int, size: int, rtype: int, rclass: int, ctx: PduContext
    ) -> dict[str, Any]:
        raw = wire[offset : offset + size]
        generic = f"\\# {size} {raw.hex()}" if size else "\\# 0"
        try:
            rdata = dns.rdata.from_wire(
                dns.rdataclass.RdataClass.make(rclass),
                dns.rdatatype.RdataType.make(rtype),
                wire,
                offset,
                size,
            )
        except Exception as exc:  # dnspython raises many exception types on hostile rdata
            ctx.weird("dns_bad_rdata", f"{type_name(rtype)} rdata of {size} bytes: {type(exc).__name__}")
            return {"rdata": generic[:MAX_TEXT]}
        out: dict[str, Any] = {}
        if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
            out["address"] = out["rdata"] = str(ipaddress.ip_address(rdata.address))
        elif isinstance(rdata, dns.rdtypes.nsbase.NSBase | dns.rdtypes.nsbase.UncompressedNS):
            out["target"] = out["rdata"] = name_text(rdata.target)
            out["_target_name"] = rdata.target
        elif isinstance(rdata, dns.rdtypes.mxbase.MXBase):
            out["target"] = name_text(rdata.exchange)
            out["rdata"] = f"{rdata.preference} {out['target']}"
        elif isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            out["target"] = name_text(rdata.target)
            out["port"] = rdata.port
            out["rdata"] = f"{rdata.priority} {rdata.weight} {rdata.port} {out['target']}"
        elif isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
            out["txt"] = [s.decode("utf-8", "backslashreplace") for s in rdata.strings]
            out["rdata"] = " ".join(out["txt"])
        else:
            try:
                out["rdata"] = rdata.to_text()
            except Exception:  # a type dnspython parses but cannot print
                out["rdata"] = generic
        out["rdata"] = out["rdata"][:MAX_TEXT]
        return out
