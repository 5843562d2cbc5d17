"""DHCPv4/BOOTP dissector: Zeek's dhcp.log rebuilt from our events, tshark cross-checks, built messages.

Golden references (``../shared/corpus/dhcp``), each matched to the Zeek btest that produced it:

- ``dhcp.pcap`` -> ``expected/dhcp.dhcp-all-msg-types/dhcp.log`` (``dhcp-all-msg-types.zeek``);
- ``dhcp_discover_param_req_and_client_id.pcap`` -> ``expected/dhcp.dhcp-discover-msg-types/dhcp.log``;
- ``dhcp_flood.pcap`` -> ``expected/dhcp.dhcp-prevent-large-msgtypes/dhcp.log``, run by Zeek with
  ``DHCP::max_uids_per_log_entry=500`` and ``DHCP::max_msg_types_per_log_entry=8``.

Zeek logs one row per DHCP *transaction* (messages with one xid); FieldWard emits one event per
message. :func:`zeek_rows` rebuilds Zeek's rows from our events following Zeek's
``scripts/base/protocols/dhcp/main.zeek`` (the mapping is in ``docs/protocols/dhcp.md``), and every
column is compared. The per-message fields Zeek does not log are compared with tshark.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.dhcp import DhcpDissector, DhcpMessage

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "dhcp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "dhcp.py"
COOKIE = bytes([99, 130, 83, 99])

# ---------------------------------------------------------------------- helpers


def bootp(
    op: int = 1,
    xid: int = 0x1234,
    chaddr: bytes = bytes.fromhex("020000aabbcc"),
    *,
    options: list[tuple[int, bytes]] | None = None,
    yiaddr: str = "0.0.0.0",
    ciaddr: str = "0.0.0.0",
    htype: int = 1,
    hlen: int | None = None,
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = COOKIE,
    end: bool = True,
    raw_options: bytes = b"",
) -> bytes:
    """A BOOTP/DHCP message built from RFC 2131's layout (independent of the dissector's code)."""

    def ip(text: str) -> bytes:
        return bytes(int(part) for part in text.split("."))

    header = struct.pack(
        ">BBBBIHH4s4s4s4s16s64s128s",
        op,
        htype,
        len(chaddr) if hlen is None else hlen,
        0,
        xid,
        0,
        0,
        ip(ciaddr),
        ip(yiaddr),
        bytes(4),
        bytes(4),
        chaddr,
        sname,
        file,
    )
    body = b"".join(bytes([code, len(value)]) + value for code, value in options or [])
    return header + cookie + body + raw_options + (b"\xff" if end else b"")


def udp(
    payload: bytes, src: str = "0.0.0.0", dst: str = "255.255.255.255", sport: int = 68, dport: int = 67
) -> Packet:
    return Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)


def write_pcap(path: Path, packets: list[Packet], start: float = 1_700_000_000.0) -> Path:
    for i, packet in enumerate(packets):
        packet.time = start + i * 0.25
    wrpcap(str(path), packets)
    return path


@dataclass
class Run:
    logs: dict[str, list[dict[str, Any]]]

    def rows(self, log: str) -> list[dict[str, Any]]:
        return self.logs.get(log, [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "dhcp"]


def run_capture(capture: Path, out: Path) -> Run:
    analyze([capture], out)
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = table.to_pylist()
    return Run(logs)


class Collector:
    """A PduContext for sans-io tests."""

    def __init__(self) -> None:
        self.flow = FlowInfo(1, Transport.UDP, "0.0.0.0", 68, "255.255.255.255", 67)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "dhcp", self.events.append, self.events.append)

    def parse(self, data: bytes) -> Collector:
        DhcpDissector(self.flow).parse(data, self.ctx)
        return self

    def messages(self) -> list[DhcpMessage]:
        return [e for e in self.events if isinstance(e, DhcpMessage)]

    def one(self) -> DhcpMessage:
        (message,) = self.messages()
        return message

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


def zeek_log(path: Path) -> list[dict[str, str]]:
    names: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(names, line.split("\t"), strict=True)))
    return rows


# ---------------------------------------------------------------------- Zeek's aggregation, rebuilt


@dataclass
class _Transaction:
    first: int
    last: int
    check_at: int
    flows: set[int] = field(default_factory=set)
    msg_types: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    client_chaddr: str | None = None


ZEEK_COLUMNS = (
    "client_addr",
    "server_addr",
    "mac",
    "host_name",
    "client_fqdn",
    "domain",
    "requested_addr",
    "assigned_addr",
    "lease_time",
    "client_message",
    "server_message",
    "msg_types",
    "duration",
    "uids",
)
SECOND = 1_000_000_000


def zeek_rows(
    events: list[dict[str, Any]], max_uids: int = 10, max_msg_types: int = 50
) -> list[tuple[str, ...]]:
    """Zeek's dhcp.log rows (``ZEEK_COLUMNS``, uids as their count) rebuilt from our message events.

    Follows ``DHCP::aggregate_msgs`` and ``join_data_expiration`` of Zeek's ``main.zeek``: messages are
    joined by xid; a row is written when it holds ``max_uids`` connections or ``max_msg_types``
    messages, when its entry expires (checked 10 s after creation, then every 5 s: written if no message
    came for 5 s or the transaction is older than 30 s), or at the end of the input. A message is the
    client's when its BOOTP op is BOOTREQUEST (Zeek: ``is_orig`` and client/server ports; the golden
    test checks they agree). Zeek's connection uids are our flow ids.
    """
    open_: dict[int, _Transaction] = {}
    written: list[tuple[str, ...]] = []

    def write(t: _Transaction) -> None:
        if "mac" not in t.values and t.client_chaddr is not None:
            t.values["mac"] = t.client_chaddr
        t.values["msg_types"] = ",".join(t.msg_types)
        t.values["duration"] = f"{(t.last - t.first) / SECOND:.6f}"
        t.values["uids"] = str(len(t.flows))
        written.append(tuple(t.values.get(column, "-") for column in ZEEK_COLUMNS))

    for e in sorted(events, key=lambda e: e["ts"]):
        now = e["ts"]
        t = open_.get(e["xid"])
        if t is not None and now >= t.check_at:
            if now - t.last > 5 * SECOND or now - t.first > 30 * SECOND:
                write(open_.pop(e["xid"]))
                t = None
            else:
                t.check_at = now + 5 * SECOND
        if t is None:
            t = open_[e["xid"]] = _Transaction(now, now, now + 10 * SECOND)
        t.last = now
        t.flows.add(e["flow_id"])
        t.msg_types.append(e["msg_type_name"])
        sender = e["orig_h"] if e["is_orig"] else e["resp_h"]
        client = e["op"] == 1
        if e["message"] is not None:
            t.values["client_message" if client else "server_message"] = e["message"]
        if client:
            if sender not in ("0.0.0.0", "255.255.255.255"):
                t.values["client_addr"] = sender
            for ours, zeek in (("host_name", "host_name"), ("client_fqdn", "client_fqdn")):
                if e[ours] is not None:
                    t.values[zeek] = e[ours]
            if e["client_id_type"] == 1 and e["client_id_hwaddr"] is not None:
                t.values["mac"] = e["client_id_hwaddr"]
            else:
                t.client_chaddr = e["chaddr"]
            if e["requested_addr"] is not None:
                t.values["requested_addr"] = e["requested_addr"]
        else:
            if e["yiaddr"] != "0.0.0.0":
                t.values["server_addr"] = sender
                t.values["assigned_addr"] = e["yiaddr"]
            if e["chaddr"] and "mac" not in t.values:
                t.values["mac"] = e["chaddr"]
            if "client_addr" not in t.values and "assigned_addr" in t.values:
                t.values["client_addr"] = t.values["assigned_addr"]
            if e["domain"] is not None:
                t.values["domain"] = e["domain"]
            if e["lease_time"] is not None:
                t.values["lease_time"] = f"{e['lease_time']:.6f}"
        if len(t.flows) >= max_uids or len(t.msg_types) >= max_msg_types:
            write(open_.pop(e["xid"]))
    for t in open_.values():
        write(t)
    return written


def expected_rows(path: Path) -> Counter[tuple[str, ...]]:
    rows = []
    for row in zeek_log(path):
        uids = row.pop("uids")
        row["uids"] = str(len(uids.split(",")))
        rows.append(tuple(row[column] for column in ZEEK_COLUMNS))
    return Counter(rows)


GOLDEN = [
    ("dhcp.pcap", "dhcp.dhcp-all-msg-types", 10, 50, 3, 9),
    ("dhcp_discover_param_req_and_client_id.pcap", "dhcp.dhcp-discover-msg-types", 10, 50, 1, 1),
    ("dhcp_flood.pcap", "dhcp.dhcp-prevent-large-msgtypes", 500, 8, 63, 500),
]


@pytest.mark.parametrize(("capture", "test", "max_uids", "max_msg_types", "n_rows", "n_messages"), GOLDEN)
def test_golden_zeek_dhcp_log(
    corpus: Path,
    tmp_path: Path,
    capture: str,
    test: str,
    max_uids: int,
    max_msg_types: int,
    n_rows: int,
    n_messages: int,
) -> None:
    run = run_capture(corpus / "dhcp" / capture, tmp_path / "out")
    events = run.rows("dhcp")
    assert len(events) == n_messages
    assert run.weirds() == []
    # Zeek's is_client test (client port 68 / server port 67) and the BOOTP op agree on every message.
    for e in events:
        sport, dport = (e["orig_p"], e["resp_p"]) if e["is_orig"] else (e["resp_p"], e["orig_p"])
        assert (e["op"] == 1) == (sport == 68 or dport == 67)
    expected = expected_rows(corpus / "dhcp" / "expected" / test / "dhcp.log")
    assert sum(expected.values()) == n_rows
    assert Counter(zeek_rows(events, max_uids, max_msg_types)) == expected


# ---------------------------------------------------------------------- tshark cross-check

TSHARK_FIELDS = [
    "dhcp.type",
    "dhcp.hw.type",
    "dhcp.hw.len",
    "dhcp.hops",
    "dhcp.id",
    "dhcp.secs",
    "dhcp.flags.bc",
    "dhcp.ip.client",
    "dhcp.ip.your",
    "dhcp.ip.server",
    "dhcp.ip.relay",
    "dhcp.hw.mac_addr",
    "dhcp.option.type",
    "dhcp.option.value",
    "dhcp.option.dhcp",
    "dhcp.option.hostname",
    "dhcp.option.vendor_class_id",
    "dhcp.option.request_list_item",
    "dhcp.option.requested_ip_address",
    "dhcp.option.dhcp_server_id",
    "dhcp.option.ip_address_lease_time",
    "dhcp.option.renewal_time_value",
    "dhcp.option.rebinding_time_value",
    "dhcp.option.subnet_mask",
    "dhcp.option.router",
    "dhcp.option.domain_name_server",
    "dhcp.option.ntp_server",
    "dhcp.option.domain_name",
    "dhcp.option.message",
    "dhcp.option.dhcp_max_message_size",
    "dhcp.fqdn.name",
    "dhcp.fqdn.flags",
]


def tshark_rows(tshark: str, capture: Path, fields: list[str]) -> list[dict[str, str]]:
    names = ["frame.time_epoch", *fields]
    cmd = [tshark, "-r", str(capture), "-Y", "dhcp", "-T", "fields", "-E", "separator=|"]
    cmd += ["-E", "occurrence=a", "-E", "aggregator=;", "-d", "udp.port==6767,dhcp"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * SECOND + int(fraction.ljust(9, "0")[:9])


def _opt(text: str) -> str | None:
    return text or None


def _list(text: str) -> list[str] | None:
    return text.split(";") if text else None


def check_with_tshark(e: dict[str, Any], t: dict[str, str]) -> None:
    """Every field tshark decodes agrees with ours (one message)."""
    assert int(t["dhcp.type"]) == e["op"]
    assert int(t["dhcp.hw.type"].split(";")[0], 0) == e["htype"]
    assert int(t["dhcp.hw.len"]) == e["hlen"]
    assert int(t["dhcp.hops"]) == e["hops"]
    assert int(t["dhcp.id"], 16) == e["xid"]
    assert int(t["dhcp.secs"]) == e["secs"]
    assert (t["dhcp.flags.bc"] in ("1", "True")) == e["broadcast"]
    assert t["dhcp.ip.client"] == e["ciaddr"]
    assert t["dhcp.ip.your"] == e["yiaddr"]
    assert t["dhcp.ip.server"] == e["siaddr"]
    assert t["dhcp.ip.relay"] == e["giaddr"]
    if e["hlen"] == 6:
        assert t["dhcp.hw.mac_addr"].split(";")[0] == e["chaddr"]
    # Options, by code: tshark's option boundaries and raw values; End (255) carries no value.
    codes = [int(c) for c in t["dhcp.option.type"].split(";") if c]
    values = [v for v in t["dhcp.option.value"].split(";") if v]
    assert codes[: len(values)] == e["options"]
    raw = dict(zip(codes, (bytes.fromhex(v) for v in values), strict=False))
    assert _opt(t["dhcp.option.dhcp"]) == (None if e["msg_type"] is None else str(e["msg_type"]))
    assert _opt(t["dhcp.option.hostname"]) == e["host_name"]
    assert _opt(t["dhcp.option.vendor_class_id"]) == e["vendor_class"]
    items = _list(t["dhcp.option.request_list_item"])
    assert (None if items is None else [int(i) for i in items]) == e["param_list"]
    assert e["param_fingerprint"] == (None if items is None else ",".join(items))
    if 61 in raw:
        assert e["client_id"] == raw[61].hex()
        assert e["client_id_type"] == raw[61][0]
        if raw[61][0] == 1:
            assert t["dhcp.hw.mac_addr"].split(";")[-1] == e["client_id_hwaddr"]
    else:
        assert e["client_id"] is None
    assert _opt(t["dhcp.option.requested_ip_address"]) == e["requested_addr"]
    assert _opt(t["dhcp.option.dhcp_server_id"]) == e["server_id"]
    for name, ours in (
        ("ip_address_lease_time", "lease_time"),
        ("renewal_time_value", "renewal_time"),
        ("rebinding_time_value", "rebinding_time"),
        ("dhcp_max_message_size", "max_msg_size"),
    ):
        value = t[f"dhcp.option.{name}"]
        assert (int(value) if value else None) == e[ours]
    assert _opt(t["dhcp.option.subnet_mask"]) == e["subnet_mask"]
    assert _list(t["dhcp.option.router"]) == e["routers"]
    assert _list(t["dhcp.option.domain_name_server"]) == e["dns_servers"]
    assert _list(t["dhcp.option.ntp_server"]) == e["ntp_servers"]
    assert _opt(t["dhcp.option.domain_name"]) == e["domain"]
    assert _opt(t["dhcp.option.message"]) == e["message"]
    assert _opt(t["dhcp.fqdn.name"]) == e["client_fqdn"]
    assert (int(t["dhcp.fqdn.flags"], 16) if t["dhcp.fqdn.flags"] else None) == e["client_fqdn_flags"]


@pytest.mark.parametrize("capture", [g[0] for g in GOLDEN])
def test_tshark_corpus(corpus: Path, tshark: str, tmp_path: Path, capture: str) -> None:
    path = corpus / "dhcp" / capture
    events = run_capture(path, tmp_path / "out").rows("dhcp")
    frames = tshark_rows(tshark, path, TSHARK_FIELDS)
    assert len(frames) == len(events)
    by_time = {epoch_ns(t["frame.time_epoch"]): t for t in frames}
    for e in events:
        check_with_tshark(e, by_time[e["ts"]])


MAC = bytes.fromhex("02a0b1c2d3e4")
BUILT = [
    # A client announcing itself: host name, vendor class, parameter list, FQDN (wire format), MUD URL.
    bootp(
        1,
        0xA1,
        MAC,
        options=[
            (53, b"\x01"),
            (61, b"\x01" + MAC),
            (12, b"plc-line-4\x00"),
            (60, b"MSFT 5.0"),
            (55, bytes([1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252])),
            (57, b"\x05\xdc"),
            (81, b"\x05\x00\x00\x06plc-04\x07factory\x07example\x00"),
            (77, b"iot"),
            (161, b"https://mud.example.com/plc.json"),
        ],
    ),
    # A server's answer with a long DNS server list split in two options (RFC 3396 concatenation).
    bootp(
        2,
        0xA1,
        MAC,
        yiaddr="10.1.2.3",
        options=[
            (53, b"\x02"),
            (54, bytes([10, 1, 2, 1])),
            (51, struct.pack(">I", 86400)),
            (58, struct.pack(">I", 43200)),
            (59, struct.pack(">I", 75600)),
            (1, bytes([255, 255, 255, 0])),
            (3, bytes([10, 1, 2, 1])),
            (6, bytes([10, 1, 2, 53, 10, 1, 2, 54])),
            (15, b"factory.example"),
        ],
    ),
    # A client FQDN in ASCII (E flag clear), a non-Ethernet client identifier (type 0: a name).
    bootp(1, 0xA2, MAC, options=[(53, b"\x03"), (61, b"\x00sensor-17"), (81, b"\x01\x00\x00sensor17.lan")]),
    # Option overload: host name in `file`, vendor class in `sname`.
    bootp(
        1,
        0xA3,
        MAC,
        options=[(53, b"\x08"), (52, b"\x03")],
        file=b"\x0c\x04cam1\xff",
        sname=b"\x3c\x05Axis1\xff",
    ),
    # Plain BOOTP (no cookie, zero vendor area) from a relay (hops), unicast.
    bootp(1, 0xA4, MAC, cookie=bytes(4), end=False, raw_options=bytes(60)),
]


def test_built_messages_against_tshark(tmp_path: Path, tshark: str) -> None:
    packets = [udp(m) for m in BUILT]
    packets[1] = udp(BUILT[1], src="10.1.2.1", dst="10.1.2.3", sport=67, dport=68)
    path = write_pcap(tmp_path / "built.pcap", packets)
    run = run_capture(path, tmp_path / "out")
    events = run.rows("dhcp")
    assert len(events) == len(BUILT)
    by_time = {epoch_ns(t["frame.time_epoch"]): t for t in tshark_rows(tshark, path, TSHARK_FIELDS)}
    for e in events:
        if e["xid"] != 0xA3:  # tshark does not follow option overload into sname/file
            check_with_tshark(e, by_time[e["ts"]])
    client, server, ascii_fqdn, overload, plain = sorted(events, key=lambda e: (e["xid"], e["op"]))
    # Values from the specification, independent of tshark.
    assert client["host_name"] == "plc-line-4"  # trailing NUL dropped
    assert client["param_fingerprint"] == "1,3,6,15,31,33,43,44,46,47,119,121,249,252"
    assert client["client_fqdn"] == "plc-04.factory.example"
    assert client["client_fqdn_flags"] == 5
    assert client["client_id_hwaddr"] == "02:a0:b1:c2:d3:e4"
    assert client["user_class"] == "iot"
    assert client["mud_url"] == "https://mud.example.com/plc.json"
    assert client["max_msg_size"] == 1500
    assert (server["msg_type_name"], server["lease_time"], server["domain"]) == (
        "OFFER",
        86400,
        "factory.example",
    )
    assert server["dns_servers"] == ["10.1.2.53", "10.1.2.54"]
    assert (ascii_fqdn["client_fqdn"], ascii_fqdn["client_id_type"]) == ("sensor17.lan", 0)
    assert ascii_fqdn["client_id_hwaddr"] is None
    assert (overload["host_name"], overload["vendor_class"]) == ("cam1", "Axis1")
    assert (overload["sname"], overload["file"]) == (None, None)
    assert overload["options"] == [53, 52, 12, 60]
    assert (plain["msg_type"], plain["options"]) == (None, [])
    assert run.weirds() == []


def test_long_option_concatenation() -> None:
    """RFC 3396: one option split into several instances is one value."""
    message = bootp(
        options=[(53, b"\x01"), (12, b"very-long-"), (55, b"\x01\x03"), (12, b"host-name"), (55, b"\x06")]
    )
    event = Collector().parse(message).one()
    assert event.host_name == "very-long-host-name"
    assert event.param_list == [1, 3, 6]
    assert event.options == [53, 12, 55, 12, 55]


def test_message_type_names_follow_zeek() -> None:
    names = [
        Collector().parse(bootp(options=[(53, bytes([code]))])).one().msg_type_name for code in (1, 6, 18, 19)
    ]
    assert names == ["DISCOVER", "NAK", "TLS", "unknown-message-type-19"]


# ---------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("data", "ports", "verdict"),
    [
        (BUILT[0], (68, 67), Verdict.YES),
        (BUILT[0], (40000, 6767), Verdict.YES),  # content decides: DHCP on another port
        (BUILT[4], (68, 67), Verdict.YES),  # plain BOOTP on the BOOTP ports
        (BUILT[4], (40000, 6767), Verdict.NO),  # ... but not elsewhere
        (BUILT[0][:235], (68, 67), Verdict.NO),
        (bytes([3]) + BUILT[0][1:], (68, 67), Verdict.NO),  # op 3
        (BUILT[0][:2] + bytes([17]) + BUILT[0][3:], (68, 67), Verdict.NO),  # hlen 17
        (bytes.fromhex("123401000001000000000000") + bytes(300), (68, 67), Verdict.NO),  # DNS-like
        (b"M-SEARCH * HTTP/1.1\r\n" + bytes(300), (68, 67), Verdict.NO),
        (bytes(400), (68, 67), Verdict.NO),
    ],
)
def test_recognize(data: bytes, ports: tuple[int, int], verdict: Verdict) -> None:
    assert DhcpDissector.recognize(data, Transport.UDP, *ports) == verdict
    assert DhcpDissector.recognize(data, Transport.TCP, *ports) == Verdict.NO


def test_dhcp_found_on_unusual_port(tmp_path: Path) -> None:
    packets = [
        udp(BUILT[0], src="10.9.0.5", dst="10.9.0.1", sport=6868, dport=6767),
        udp(bytes(400), src="10.9.0.5", dst="10.9.0.1", sport=68, dport=67),  # zeros on 67: not DHCP
    ]
    run = run_capture(write_pcap(tmp_path / "ports.pcap", packets), tmp_path / "out")
    assert [(e["resp_p"], e["host_name"]) for e in run.rows("dhcp")] == [(6767, "plc-line-4")]


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("data", "weird"),
    [
        (BUILT[0][:200], "dhcp_truncated"),
        (BUILT[0][:238], "dhcp_truncated"),
        (bootp(op=7, options=[(53, b"\x01")]), "dhcp_bad_op"),
        (bootp(hlen=20, options=[(53, b"\x01")]), "dhcp_bad_hlen"),
        (bootp(cookie=b"\x01\x02\x03\x04", options=[(53, b"\x01")]), "dhcp_bad_cookie"),
        (bootp(options=[(53, b"\x01")], end=False, raw_options=b"\x0c\x09abc"), "dhcp_truncated_option"),
        (bootp(options=[(53, b"\x01")], end=False, raw_options=b"\x0c"), "dhcp_truncated_option"),
        (bootp(options=[(53, b"\x01")], end=False), "dhcp_no_end_option"),
        (bootp(options=[(53, b"\x01\x02")]), "dhcp_bad_option_length"),
        (bootp(options=[(50, b"\x0a\x00\x00")]), "dhcp_bad_option_length"),
        (bootp(options=[(3, b"\x0a\x00\x00\x01\x02")]), "dhcp_bad_option_length"),
        (bootp(options=[(61, b"")]), "dhcp_bad_option_length"),
        (bootp(options=[(81, b"\x04")]), "dhcp_bad_option_length"),
        (bootp(options=[(53, b"\x63")]), "dhcp_unknown_message_type"),
        (bootp(options=[(52, b"\x04")]), "dhcp_bad_overload"),
        (bootp(options=[(81, b"\x04\x00\x00\x09abc")]), "dhcp_bad_client_fqdn"),
        (bootp(options=[(200, b"")] * 300), "dhcp_too_many_options"),
    ],
)
def test_weirds(data: bytes, weird: str) -> None:
    col = Collector().parse(data)
    assert weird in col.weirds()
    assert len(col.messages()) <= 1


def test_malformed_values_are_dropped_not_guessed() -> None:
    event = (
        Collector().parse(bootp(options=[(53, b"\x01\x02"), (50, b"\x0a\x00\x00"), (12, b"\xffname")])).one()
    )
    assert (event.msg_type, event.requested_addr) == (None, None)
    assert event.host_name == "\\xffname"  # not UTF-8: escaped, never lost


# ---------------------------------------------------------------------- fuzz


def _exercise(data: bytes) -> None:
    for ports in ((68, 67), (40000, 6767)):
        DhcpDissector.recognize(data, Transport.UDP, *ports)
    col = Collector().parse(data)
    assert len(col.messages()) <= 1
    assert len(col.events) <= 1 + 30


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(BUILT[0][:240] + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(BUILT),
    st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), max_size=8),
    st.integers(0, 700),
)
def test_fuzz_mutated_real_messages(message: bytes, mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(message)
    for position, value in mutations:
        data[position % len(data)] = value
    _exercise(bytes(data[:cut]))
    _exercise(bytes(data))


# ---------------------------------------------------------------------- documentation


def test_every_event_field_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{DhcpMessage.log}`" in doc
    for f in dataclasses.fields(DhcpMessage):
        assert f"| `{f.name}` |" in doc, f"DhcpMessage.{f.name} is not documented"
    for name in sorted(set(re.findall(r'"(dhcp_[a-z_]+)"', MODULE.read_text()))):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
