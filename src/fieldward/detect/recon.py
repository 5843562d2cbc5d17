"""Reconnaissance: port and ping scans, and industrial discovery sweeps.

Scans are found in the finished flows, grouped with Arrow: a source that tries many ports of one
host (vertical scan), one port on many hosts (horizontal scan), or pings many hosts (ping sweep),
counting only attempts a scanner makes (unanswered or rejected TCP connections, ICMP echo
requests). Industrial discovery is read from the protocol events: EtherNet/IP ListIdentity and
BACnet Who-Is sent to many devices or to broadcast, a Modbus unit id sweep, SZL reads of many S7
PLCs. Thresholds are per run (an offline capture) and set in :class:`ReconSettings`.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.engine import AlertBook, DetectionContext, Detector
from fieldward.detect.model import Alert, AlertType, Severity
from fieldward.detect.settings import ReconSettings
from fieldward.protocols.base import Event

ENGINE = "recon"
FAILED_TCP_STATES = ("S0", "REJ", "RSTOS0", "RSTR", "SH", "OTH")
"""TCP flows that never became a conversation: what scanners leave behind."""
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
CAP = 4096
"""Distinct targets kept per source (enough to judge, bounded memory)."""


def _type(name: str, title: str, severity: Severity, mitre: tuple[str, ...], description: str) -> AlertType:
    fix = (
        "Identify the source. Scans from anything but an approved asset-management tool are an early "
        "attack step: isolate the host and look for other activity from it."
    )
    return AlertType(f"{ENGINE}.{name}", title, severity, description, fix, mitre)


VERTICAL = _type(
    "port_scan_vertical",
    "Port scan of a device",
    Severity.HIGH,
    ("T0846",),
    "One source tried many ports of one device without holding a conversation on them.",
)
HORIZONTAL = _type(
    "port_scan_horizontal",
    "Port sweep across devices",
    Severity.HIGH,
    ("T0846",),
    "One source tried the same port on many devices without holding a conversation.",
)
PING = _type(
    "ping_sweep",
    "Ping sweep",
    Severity.MEDIUM,
    ("T0846",),
    "One source sent ICMP echo requests to many hosts.",
)
CIP_SWEEP = _type(
    "cip_list_identity_sweep",
    "EtherNet/IP ListIdentity discovery",
    Severity.MEDIUM,
    ("T0846", "T0888"),
    "A host asked many devices (or the broadcast address) who they are with ListIdentity.",
)
BACNET_SWEEP = _type(
    "bacnet_who_is",
    "BACnet Who-Is discovery",
    Severity.LOW,
    ("T0846",),
    "A host sent BACnet Who-Is to find the building-automation devices.",
)
MODBUS_SWEEP = _type(
    "modbus_unit_id_sweep",
    "Modbus unit id sweep",
    Severity.MEDIUM,
    ("T0846",),
    "A host addressed many Modbus unit ids of one gateway or device: a search for slaves behind it.",
)
ARP_SCAN = _type(
    "arp_scan",
    "ARP scan",
    Severity.MEDIUM,
    ("T0846",),
    "A host asked for the hardware address of many IP addresses within seconds: a sweep of the local "
    "segment for live hosts (arp-scan, nmap -sn), invisible to IP-level scan detection.",
)
SZL_SCAN = _type(
    "s7_szl_scan",
    "S7 identification scan",
    Severity.MEDIUM,
    ("T0888",),
    "A host read the system status lists (identity, modules) of many S7 PLCs.",
)


class ReconDetector(Detector):
    name: ClassVar[str] = ENGINE
    alert_types: ClassVar[tuple[AlertType, ...]] = (
        VERTICAL,
        HORIZONTAL,
        PING,
        CIP_SWEEP,
        BACNET_SWEEP,
        MODBUS_SWEEP,
        SZL_SCAN,
        ARP_SCAN,
    )
    logs: ClassVar[frozenset[str]] = frozenset(
        {"enip", "bacnet_discovery", "modbus", "s7comm_read_szl", "arp"}
    )

    def __init__(self, alerts: AlertBook, context: DetectionContext | None = None) -> None:
        super().__init__(alerts, context)
        self.settings: ReconSettings = self.context.settings.recon
        self._ports: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._hosts: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        self._pinged: dict[str, set[str]] = defaultdict(set)
        self._unit_parts: list[pa.Table] = []
        """Distinct (master, device, unit) of the columnar Modbus requests, first time and flow."""
        self._arp_recent: dict[str, deque[tuple[int, str]]] = {}
        """Sender MAC -> its ARP requests (time, asked address) within the last ``arp_window_s``."""
        self._arp_scans: dict[str, int] = {}
        """Sender MAC -> most distinct addresses it asked for within one window (once a scan)."""
        self._arp_alerts: dict[str, Alert | None] = {}
        self._first: dict[tuple[str, ...], tuple[int, int]] = {}
        """(kind, source, ...) -> (time, flow id) of the first attempt: the alert's start and trigger."""
        self._discovery: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._units: dict[tuple[str, str], set[int]] = defaultdict(set)

    # ------------------------------------------------------------------ flows

    def on_flows(self, flows: pa.Table) -> None:
        if flows.num_rows == 0:
            return
        tcp = pc.and_(
            pc.equal(flows["proto"], "tcp"), pc.is_in(flows["conn_state"], pa.array(FAILED_TCP_STATES))
        )
        if "orig_payload_bytes" in flows.column_names and "resp_payload_bytes" in flows.column_names:
            # payload both ways is a conversation whatever the state: a connection seen midstream
            # (a capture or a live sensor's segment that starts while it is open) is no attempt
            talked = pc.and_(
                pc.greater(flows["orig_payload_bytes"], 0), pc.greater(flows["resp_payload_bytes"], 0)
            )
            tcp = pc.and_(tcp, pc.invert(pc.fill_null(talked, False)))
        attempts = flows.filter(pc.fill_null(tcp, False)).select(
            ["orig_ip", "resp_ip", "resp_port", "first_ts", "flow_id"]
        )
        for src, dst, port, ts, flow in zip(*_python_columns(attempts), strict=True):
            ports = self._ports[(src, dst)]
            if len(ports) < CAP:
                ports.add(port)
            hosts = self._hosts[(src, "tcp", port)]
            if len(hosts) < CAP:
                hosts.add(dst)
            self._remember(("tcp", src, dst), ts, flow)
            self._remember(("tcp-port", src, str(port)), ts, flow)
        echo = pc.or_(
            pc.and_(pc.equal(flows["proto"], "icmp"), pc.equal(flows["orig_port"], ICMP_ECHO_REQUEST)),
            pc.and_(pc.equal(flows["proto"], "icmpv6"), pc.equal(flows["orig_port"], ICMPV6_ECHO_REQUEST)),
        )
        pings = flows.filter(pc.fill_null(echo, False)).select(["orig_ip", "resp_ip", "first_ts", "flow_id"])
        for src, dst, ts, flow in zip(*_python_columns(pings), strict=True):
            if len(self._pinged[src]) < CAP:
                self._pinged[src].add(dst)
            self._remember(("ping", src), ts, flow)

    def _remember(self, key: tuple[str, ...], ts: Any, flow: int) -> None:
        ns = _ns(ts)
        known = self._first.get(key)
        if known is None or ns < known[0]:
            self._first[key] = (ns, flow)

    # ------------------------------------------------------------------ events

    def on_event(self, event: Any) -> None:
        log = event.log
        if log == "arp":
            self._arp_request(event)
            return
        if not event.is_orig:
            return
        if log == "enip" and event.enip_command == "List Identity":
            self._discover(CIP_SWEEP.id, event, "enip")
        elif log == "bacnet_discovery" and event.pdu_service == "who-is":
            self._discover(BACNET_SWEEP.id, event, "bacnet")
        elif log == "s7comm_read_szl" and event.method == "Request":
            self._discover(SZL_SCAN.id, event, "s7comm")
        elif log == "modbus" and event.pdu_type == "REQ":
            units = self._units[(event.orig_h, event.resp_h)]
            if len(units) < CAP:
                units.add(int(event.unit))
            self._remember(("modbus", event.orig_h, event.resp_h), int(event.ts), int(event.flow_id))

    def table_filter(self, log: str, table: pa.Table) -> pa.Array | None:
        if log == "enip":
            return pc.and_(table["is_orig"], pc.equal(table["enip_command"], "List Identity"))
        if log == "s7comm_read_szl":
            return pc.and_(table["is_orig"], pc.equal(table["method"], "Request"))
        return None

    def on_table(self, event_type: type[Event], table: pa.Table) -> None:
        if event_type.log != "modbus":
            super().on_table(event_type, table)
            return
        # Columnar: the distinct (master, device, unit) of the requests with their first packet, kept
        # as Arrow tables and merged now and then; Python sees only the sweeps (in finish).
        requests = table.filter(
            pc.fill_null(pc.and_(table["is_orig"], pc.equal(table["pdu_type"], "REQ")), False)
        )
        if requests.num_rows == 0:
            return
        triples = pa.table(
            {
                "orig_h": requests["orig_h"],
                "resp_h": requests["resp_h"],
                "unit": pc.cast(requests["unit"], pa.int64()),
                "ts": pc.cast(requests["ts"], pa.int64()),
                "flow_id": pc.cast(requests["flow_id"], pa.int64()),
            }
        )
        self._unit_parts.append(_distinct_units(triples))
        if len(self._unit_parts) >= UNIT_PARTS:
            self._compact_units()

    def _compact_units(self) -> None:
        if len(self._unit_parts) > 1:
            self._unit_parts = [_distinct_units(pa.concat_tables(self._unit_parts))]

    def _unit_sweeps(self) -> None:
        """Merge the columnar unit ids into the per-event ones, for the pairs that may be sweeps."""
        self._compact_units()
        if not self._unit_parts:
            return
        triples = self._unit_parts[0]
        pairs = triples.group_by(["orig_h", "resp_h"], use_threads=False).aggregate(
            [("unit", "count_distinct")]
        )
        near = self.settings.unit_ids - max((len(u) for u in self._units.values()), default=0)
        pairs = pairs.filter(pc.greater_equal(pairs["unit_count_distinct"], max(1, near)))
        if pairs.num_rows == 0:
            return
        wanted = pc.is_in(
            pc.binary_join_element_wise(triples["orig_h"], triples["resp_h"], "|"),
            value_set=pc.binary_join_element_wise(pairs["orig_h"], pairs["resp_h"], "|"),
        )
        rows = triples.filter(wanted)
        for src, dst, unit, ts, flow in zip(
            *(rows[c].to_pylist() for c in ("orig_h", "resp_h", "unit", "ts", "flow_id")), strict=True
        ):
            units = self._units[(src, dst)]
            if len(units) < CAP:
                units.add(int(unit))
            self._remember(("modbus", src, dst), int(ts), int(flow))

    def _arp_request(self, event: Any) -> None:
        """An ARP request for another address: count the distinct addresses asked within the window."""
        if event.op != 1 or event.gratuitous or event.announcement or event.tpa == event.spa:
            return
        mac, ts = str(event.sha), int(event.ts)
        recent = self._arp_recent.get(mac)
        if recent is None:
            if len(self._arp_recent) >= CAP:
                return
            recent = self._arp_recent[mac] = deque()
        recent.append((ts, str(event.tpa)))
        horizon = ts - round(self.settings.arp_window_s * 1e9)
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if len(recent) < self.settings.arp_hosts:
            return
        asked = len({address for _, address in recent})
        if asked < self.settings.arp_hosts:
            if len(recent) > 4 * CAP:  # one address asked over and over: keep the window bounded
                recent.popleft()
            return
        known = self._arp_scans.get(mac)
        self._arp_scans[mac] = max(known or 0, asked)
        if known is None:
            source = str(event.spa) if event.spa not in ("", "0.0.0.0") else mac  # noqa: S104 - compared
            self._arp_alerts[mac] = self.alerts.raise_alert(
                ARP_SCAN,
                ts=recent[0][0],
                src=source,
                dst="*",
                protocol="arp",
                explanation=f"{source} ({mac}) asked for {asked} addresses with ARP within "
                f"{self.settings.arp_window_s:g} s",
                details={"mac": mac, "hosts": asked},
            )

    def _discover(self, kind: str, event: Any, protocol: str) -> None:
        targets = self._discovery[(kind, event.orig_h)]
        if len(targets) < CAP:
            targets.add(event.resp_h)
        self._remember((kind, event.orig_h, protocol), int(event.ts), int(event.flow_id))

    # ------------------------------------------------------------------ verdicts

    def finish(self) -> None:
        limits = self.settings
        self._unit_sweeps()
        for mac, alert in self._arp_alerts.items():
            if alert is not None:
                alert.details["hosts"] = self._arp_scans[mac]
        for (src, dst), ports in sorted(self._ports.items()):
            if len(ports) >= limits.vertical_ports:
                self._alert(
                    VERTICAL,
                    ("tcp", src, dst),
                    src,
                    dst,
                    "tcp",
                    f"{src} tried {len(ports)} TCP ports of {dst}",
                    ports=len(ports),
                )
        for (src, _tcp, port), hosts in sorted(self._hosts.items()):
            if len(hosts) >= limits.horizontal_hosts:
                text = f"{src} tried TCP port {port} on {len(hosts)} hosts"
                self._alert(
                    HORIZONTAL, ("tcp-port", src, str(port)), src, f"*:{port}", "tcp", text, hosts=len(hosts)
                )
        for src, hosts in sorted(self._pinged.items()):
            if len(hosts) >= limits.ping_hosts:
                self._alert(
                    PING,
                    ("ping", src),
                    src,
                    "*",
                    "icmp",
                    f"{src} pinged {len(hosts)} hosts",
                    hosts=len(hosts),
                )
        protocols = {
            CIP_SWEEP.id: ("enip", CIP_SWEEP),
            BACNET_SWEEP.id: ("bacnet", BACNET_SWEEP),
            SZL_SCAN.id: ("s7comm", SZL_SCAN),
        }
        for (kind, src), targets in sorted(self._discovery.items()):
            protocol, alert_type = protocols[kind]
            broadcast = any(t.endswith(".255") or t.startswith("ff") for t in targets)
            if len(targets) >= limits.discovery_hosts or (broadcast and kind != SZL_SCAN.id):
                text = f"{src} sent {alert_type.title.split(' ', 1)[-1]} to {len(targets)} destination(s)"
                if broadcast:
                    text += " including a broadcast address"
                self._alert(alert_type, (kind, src, protocol), src, "*", protocol, text, targets=len(targets))
        for (src, dst), units in sorted(self._units.items()):
            if len(units) >= limits.unit_ids:
                text = f"{src} addressed {len(units)} Modbus unit ids at {dst}"
                self._alert(MODBUS_SWEEP, ("modbus", src, dst), src, dst, "modbus", text, unit_ids=len(units))

    def _alert(
        self,
        alert_type: AlertType,
        key: tuple[str, ...],
        src: str,
        dst: str,
        protocol: str,
        text: str,
        **details: Any,
    ) -> None:
        ts, flow = self._first.get(key, (0, -1))
        self.alerts.raise_alert(
            alert_type,
            ts=ts,
            src=src,
            dst=dst,
            protocol=protocol,
            explanation=text,
            flow_id=flow,
            details=details,
        )


UNIT_PARTS = 32
"""Columnar unit-id tables kept before they are merged into one."""


def _distinct_units(triples: pa.Table) -> pa.Table:
    """One row per (orig_h, resp_h, unit): the earliest time and the smallest flow id."""
    grouped = triples.group_by(["orig_h", "resp_h", "unit"], use_threads=False).aggregate(
        [("ts", "min"), ("flow_id", "min")]
    )
    return pa.table(
        {
            "orig_h": grouped["orig_h"],
            "resp_h": grouped["resp_h"],
            "unit": grouped["unit"],
            "ts": grouped["ts_min"],
            "flow_id": grouped["flow_id_min"],
        }
    )


def _python_columns(table: pa.Table) -> list[list[Any]]:
    """The table's columns as Python lists, timestamps as integer nanoseconds: ``to_pylist`` on a
    ``timestamp[ns]`` column makes ``datetime`` objects, which cannot hold a time that is not a whole
    microsecond (pyarrow refuses it), as live captures and nanosecond pcapng files give."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    return columns


def _ns(ts: Any) -> int:
    """Nanoseconds of an Arrow timestamp as to_pylist gives it (datetime or pandas Timestamp) or an int."""
    if isinstance(ts, int):
        return ts
    value = getattr(ts, "value", None)
    if isinstance(value, int):
        return value
    return int(ts.timestamp() * 1_000_000) * 1000
