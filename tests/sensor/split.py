"""A multi-worker sensor without the kernel: a capture split by flow into one file per worker (both
directions of a flow in the same file, as AF_PACKET's symmetric fanout hash does), each file analysed
the way a capture worker analyses its share, then merged the way the sensor's main process merges."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet
from scapy.utils import rdpcap, wrpcap

from fieldward.detect.knowledge import Knowledge
from fieldward.pipeline import AnalysisOptions, analyze
from fieldward.sensor.correlate import apply_correlation, correlate_segment
from fieldward.sensor.merge import ADDRESSES_FILE, merge_segment


def flow_key(packet: Packet) -> bytes:
    """The same key for both directions of a flow (non-IP frames: one key)."""
    ip = packet.getlayer(IP) or packet.getlayer(IPv6)
    if ip is None:
        return b""
    a: tuple[str, int] = (str(ip.src), 0)
    b: tuple[str, int] = (str(ip.dst), 0)
    l4 = packet.getlayer(TCP) or packet.getlayer(UDP)
    if l4 is not None and not (ip.haslayer(IP) and (ip.flags.MF or ip.frag)):
        a, b = (str(ip.src), int(l4.sport)), (str(ip.dst), int(l4.dport))
    low, high = sorted([a, b])
    return f"{low}|{high}".encode()


def split_by_flow(capture: Path, folder: Path, workers: int, salt: int = 0) -> list[Path]:
    """``capture`` as ``workers`` files; packet order and times kept."""
    parts: list[list[Packet]] = [[] for _ in range(workers)]
    for packet in rdpcap(str(capture)):
        parts[zlib.crc32(flow_key(packet), salt) % workers].append(packet)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, packets in enumerate(parts):
        path = folder / f"part-{index}.pcap"
        wrpcap(str(path), packets)
        paths.append(path)
    return paths


def merged_run(parts: list[Path], segment: Path, *, correlate: bool = True) -> Path:
    """Each part analysed as a worker does with several workers (per-flow detectors only), then merged
    and the cross-flow detectors run over the merged segment (``correlate``)."""
    options = AnalysisOptions(detectors="per_flow" if correlate else "all")
    folders = [segment / f"worker-{index}" for index in range(len(parts))]
    for part, folder in zip(parts, folders, strict=True):
        done = analyze([part], folder, options)
        (folder / ADDRESSES_FILE).write_text(json.dumps(done.totals.address_sets()))

    def finish(target: Path) -> None:
        apply_correlation(target, correlate_segment(target, Knowledge()), parts)

    merge_segment(segment, folders, {"workers": len(parts)}, finish if correlate else None)
    return segment


def worker_alerts(segment: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (segment / "alerts.jsonl").read_text().splitlines() if line.strip()]
