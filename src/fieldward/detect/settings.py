"""Typed settings of the detection engines (one frozen dataclass per engine, gathered here).

Every threshold an engine applies lives in one of these classes with its default and a docstring, so
a run's behaviour is explained by its settings, not by literals scattered through the detectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ReconSettings:
    vertical_ports: int = 20
    """Distinct ports of one host a source must try (without conversation) to be a vertical scan."""
    horizontal_hosts: int = 20
    """Distinct hosts on one port a source must try (without conversation) to be a horizontal scan."""
    ping_hosts: int = 20
    discovery_hosts: int = 10
    """Distinct devices an ICS discovery request (ListIdentity, Who-Is, SZL read) must reach."""
    unit_ids: int = 10
    """Distinct Modbus unit ids one source must address on one device to be a unit id sweep."""
    arp_hosts: int = 32
    """Distinct addresses one host must ask for with ARP requests within ``arp_window_s`` to be an
    ARP scan (arp-scan, nmap -sn on a LAN). Routers and hosts refresh their ARP caches entry by entry,
    spread over minutes; a scan asks for a whole subnet in seconds."""
    arp_window_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ViolationSettings:
    """The protocol-violation engine's thresholds (``docs/detection/protocol.md``)."""

    storm_exceptions: int = 20
    """Error responses (Modbus exceptions, S7comm error classes, CIP and EtherNet/IP error statuses,
    DNP3 IIN request-error bits, BACnet Error/Reject/Abort PDUs) one device must send to one client
    within ``storm_window_s`` to be an exception storm: fuzzing or a scan of registers or objects.
    Polling of an unmapped register in the generated plant peaks at 9 a minute per pair."""
    storm_window_s: float = 60.0
    storm_error_share: float = 0.25
    """Share of the device's replies to that client within the window that must be errors. An HMI
    that polls a missing tag or register among hundreds of good reads (2 % errors in the generated
    plant, 20 in a minute at peak) is a misconfiguration, not a storm; fuzzing and scans of
    registers or objects are mostly errors. 0 disables the condition."""
    modbus_user_defined_functions: bool = True
    """Modbus function codes 65-72 and 100-110 are the specification's user-defined ranges (vendor
    extensions): legal unless this is False."""
    gateway_unit_ids: int = 2
    """Distinct unit ids (1-247) a device must be addressed with to be taken for a serial gateway,
    where unit id 0 is a broadcast to every slave behind it (on a plain Modbus/TCP server, unit id 0
    addresses the server itself)."""


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """The anomaly engine's time bins, model memory and alert threshold (``docs/detection/anomaly.md``)."""

    bin_seconds: float = 10.0
    """Length of the time bins of protocol messages: each channel gets one feature vector per bin."""
    flow_bin_seconds: float = 60.0
    """Length of the time bins of short flows (connections, packets per device pair)."""
    short_flow_seconds: float = 60.0
    """Flows at most this long are counted per bin; longer ones are sessions the protocol messages
    describe better (their packets cannot be placed in time from a flow record)."""
    flow_lag_seconds: float = 420.0
    """How long a flow bin stays open for flows still to finish: must exceed the TCP idle timeout
    (300 s) plus ``short_flow_seconds``, since an unanswered SYN only ends by timing out."""
    half_life_hours: float = 24.0
    """Memory of the damped statistics: a training bin this much older weighs half as much."""
    min_training_minutes: float = 5.0
    """Training a channel needs before it is judged (damped time, in minutes of bins)."""
    threshold: float = 6.0
    """A feature deviates when its z-score (deviation over the learned, floored standard deviation)
    reaches this value and the change is material (see ``min_ratio``)."""
    consecutive_bins: int = 2
    """Bins in a row that must deviate before an alert fires ..."""
    burst_factor: float = 3.0
    """... unless one bin deviates by ``burst_factor * threshold`` or more (a short flood)."""
    min_ratio: float = 2.0
    """A count, size or period deviates only if it changed by at least this factor (up or down):
    a historian that reconnects with a 1.2 s instead of a 1.8 s period is not an attack, a poll at
    twice or ten times its rate is."""
    relative_floor: float = 0.1
    """The standard deviation used in the z-score is at least this fraction of the learned mean: a
    perfectly periodic poll does not make a one-request difference an anomaly."""
    jitter_increase: float = 0.5
    """Rise of the coefficient of variation of the request inter-arrival times for a periodicity
    break (a periodic poll has about 0.05; irregular traffic 1)."""
    min_mix_requests: int = 5
    """Requests a bin needs before its function-code mix is judged."""
    min_mix_shift: float = 0.2
    """Total variation distance between the learned and the observed function-code shares that a
    mix change needs (0: same mix, 1: disjoint)."""
    min_flow_increase: float = 20.0
    """Short flows per flow bin a device pair or device must gain before more connections are an
    anomaly (an engineering session of one connection is not a flood)."""
    min_packet_increase: float = 500.0
    """Packets of short flows per flow bin that must be added before more packets are an anomaly."""
    min_active_bins: float = 5.0
    """Active training bins after which a channel's counts are compared with its active bins only
    (a maintenance session with its earlier sessions); before, with all bins, idle ones as zeros."""
    capture_gap_seconds: float = 120.0
    """A stretch without any protocol message up to this long is silence (judged); a longer one is
    taken for a gap in the capture and skipped."""
    silent_activity: float = 0.95
    """Share of the training bins in which a channel must have been active to be a periodic one
    whose silence is an alert."""
    max_channels: int = 50_000
    """Channels (device pairs and devices per protocol) learned at most, bounding memory."""


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    """The baseline and policy engine: what makes two behaviours the same key (so a clean plant stays
    quiet) and how findings are grouped (so one new host is a handful of alerts, not hundreds)."""

    register_bucket: int = 100
    """Modbus addresses are learned in ranges of this many (per table: coils, discrete inputs, input
    and holding registers): an HMI reading 110..150 after learning 100..140 is not a new range."""
    settle_s: float = 2100.0
    """With ``--learn-minutes``, flows that started after the learning period are judged only once
    every flow that started inside it has been reported (flows are reported when they end): the
    active timeout (1800 s) plus the TCP idle timeout (300 s). Until then they wait (see
    ``max_pending``); the end of the capture judges whatever still waits."""
    max_pending: int = 100_000
    """Distinct flow keys waiting for the settle time at most; beyond it they are judged at once."""
    fanout_limit: int = 10
    """Distinct new destinations one source gets its own alert for (new pair, new external
    destination), and distinct new protocols per device pair; beyond it they join one alert whose
    destination (or protocol) is ``*``, so a sweep is one more alert, not hundreds."""
    ot_services: tuple[str, ...] = ("modbus", "s7comm", "enip", "dnp3", "bacnet", "opcua", "profinet_dcp")
    """Protocols that make a device an OT device (whose internet destinations are alerted)."""
    attributes: tuple[str, ...] = ("firmware", "model", "vendor", "serial", "product_code")
    """Device attributes (from identity answers) whose change is alerted."""


@dataclass(frozen=True, slots=True)
class ThreatSettings:
    """Thresholds of the threats and IoT malware engine (``fieldward.detect.threats``)."""

    brute_force_ports: tuple[int, ...] = (22, 23, 2222, 2323)
    """TCP ports of remote logins whose short connections count as brute-force attempts (SSH, Telnet
    and the alternates Mirai and its descendants use)."""
    brute_force_connections: int = 10
    """Short answered connections from one source to one device's login port within
    ``brute_force_window_s`` that make a brute force."""
    brute_force_failures: int = 5
    """Failed logins (Telnet, FTP, HTTP Basic, MQTT) from one source to one device within the window."""
    brute_force_window_s: float = 120.0
    brute_force_short_s: float = 30.0
    """A login connection at most this long counts as an attempt (interactive sessions last longer)."""
    telnet_ports: tuple[int, ...] = (23, 2323)
    telnet_scan_hosts: int = 10
    """Distinct hosts one source tries on a Telnet port to be Mirai-style scanning."""
    arp_conflict_window_s: float = 3600.0
    """A second MAC claiming an IP is spoofing while the first one claimed it this recently; after a
    longer silence the address is taken to have moved (a replaced device, a new DHCP lease)."""
    arp_flood_count: int = 30
    """Gratuitous ARP messages from one MAC within ``arp_flood_window_s`` that make a flood."""
    arp_flood_window_s: float = 60.0
    arp_ips_per_mac: int = 5
    """Distinct addresses of one /24 one MAC may claim (routers claim one per subnet, hosts one or a
    few aliases); more is a host answering for its neighbours."""
    dns_long_label: int = 50
    """A DNS label at least this long (63 is the maximum) is a sign of data encoded in the name."""
    dns_entropy_bits: float = 3.8
    """Shannon entropy per character of a subdomain that makes it look random (base32/hex data)."""
    dns_entropy_min_length: int = 24
    """Shorter subdomains are not judged by entropy (short random-looking names are common: CDNs)."""
    dns_suspicious_queries: int = 20
    """Long-label or random-looking queries from one client under one domain that make tunnelling."""
    dns_unique_subdomains: int = 200
    """Distinct subdomains of one domain queried by one client that make tunnelling."""
    dns_txt_queries: int = 50
    """TXT and NULL queries from one client under one domain that make tunnelling."""
    snmp_community: bool = True
    """Report SNMP v1/v2c community strings (passwords in clear) as ``threats.snmp_cleartext_community``."""


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """What the detection engines of one run are told."""

    recon: ReconSettings = field(default_factory=ReconSettings)
    violations: ViolationSettings = field(default_factory=ViolationSettings)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    threats: ThreatSettings = field(default_factory=ThreatSettings)
    learn_minutes: float = 0.0
    """Learning period at the start of the analysed traffic: behaviour seen in its first
    ``learn_minutes`` becomes the baseline (0: no time-based learning; ``--learn`` captures and a
    loaded baseline still apply)."""
    intel_files: tuple[Path, ...] = ()
    """Threat-intelligence files (STIX 2.1 JSON bundles or CSV) loaded offline."""
