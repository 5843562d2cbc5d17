"""Settings and result of a generator run (what the ``fieldward generate`` command passes and prints)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fieldward.errors import ConfigError

MAX_DEVICES = 20_000
MAX_MINUTES = 7 * 24 * 60


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to simulate.

    ``devices`` field devices and hosts (the router is extra), ``minutes`` of traffic starting at
    ``start_ts`` (Unix seconds; default 2026-01-01 00:00:00 UTC). The same configuration always
    produces the same bytes.
    """

    devices: int = 40
    minutes: float = 10.0
    seed: int = 1
    start_ts: float = 1_767_225_600.0
    camera_streams: bool = True
    """Whether cameras stream video (RTP, the bulk of the bytes); without it they only boot and idle."""
    camera_kbps: int = 2000
    """Video bit rate of each camera stream."""
    nanosecond: bool = False
    """Write nanosecond instead of microsecond pcap timestamps."""
    chunk_packets: int = 150_000
    """Target packets per written chunk (bounds memory; the chunk length in time follows from it)."""
    attacks: tuple[str, ...] = ()
    """Attack scenarios to mix in (``fieldward.generator.attacks``): ``name`` or ``name@minute``. The
    clean traffic keeps its bytes whatever is added."""

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ConfigError(f"devices must be between 1 and {MAX_DEVICES}, not {self.devices}")
        if not (math.isfinite(self.minutes) and 0 < self.minutes <= MAX_MINUTES):
            raise ConfigError(f"minutes must be above 0 and at most {MAX_MINUTES}, not {self.minutes}")
        if self.seed < 0:
            raise ConfigError(f"seed must not be negative, not {self.seed}")
        if not (math.isfinite(self.start_ts) and 0 <= self.start_ts < 4_000_000_000):
            raise ConfigError(f"start_ts must be a Unix time between 1970 and 2096, not {self.start_ts}")
        if not 100 <= self.camera_kbps <= 50_000:
            raise ConfigError(f"camera_kbps must be between 100 and 50000, not {self.camera_kbps}")
        if not 1_000 <= self.chunk_packets <= 10_000_000:
            raise ConfigError(f"chunk_packets must be between 1000 and 10000000, not {self.chunk_packets}")
        if self.attacks:
            # Imported here: the scenarios module builds on the generator, which imports this module.
            from fieldward.generator.attacks import parse_attack

            for attack in self.attacks:
                parse_attack(attack)

    @property
    def start_ns(self) -> int:
        return round(self.start_ts * 1_000_000) * 1000

    @property
    def duration_ns(self) -> int:
        return round(self.minutes * 60_000_000) * 1000


@dataclass(slots=True)
class GeneratorStats:
    """What a run wrote: totals, and per protocol the packets and distinct flows (5-tuples)."""

    packets: int = 0
    bytes: int = 0
    """Captured packet bytes (without pcap headers)."""
    file_bytes: int = 0
    """Size of the pcap data written (before gzip compression, when the file is gzipped)."""
    devices: int = 0
    duration_s: float = 0.0
    packets_by_protocol: dict[str, int] = field(default_factory=dict)
    flows_by_protocol: dict[str, int] = field(default_factory=dict)
