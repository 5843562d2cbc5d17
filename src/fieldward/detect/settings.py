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


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """What the detection engines of one run are told."""

    recon: ReconSettings = field(default_factory=ReconSettings)
    learn_minutes: float = 0.0
    """Learning period at the start of the analysed traffic: behaviour seen in its first
    ``learn_minutes`` becomes the baseline (0: no time-based learning; ``--learn`` captures and a
    loaded baseline still apply)."""
    intel_files: tuple[Path, ...] = ()
    """Threat-intelligence files (STIX 2.1 JSON bundles or CSV) loaded offline."""
