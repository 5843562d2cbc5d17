"""Inventory benchmark: accuracy against the generator's ground truth, and cost at scale.

    python benchmarks/bench_inventory.py                      # accuracy + cost on a generated plant
    python benchmarks/bench_inventory.py --scale 50000        # also: 50,000 devices in one capture

Accuracy: generates (once, cached under benchmarks/data/) a plant capture with ``fieldward generate``
and its ground truth (``fieldward.generator.truth``), runs the analysis, matches devices by MAC and
prints precision and recall per attribute (vendor, type, Purdue level, model, firmware, serial,
hostname). precision = right values / values reported; recall = right values / values in the truth.

Cost: the same analysis with and without the inventory, each in its own process pinned to one core;
prints the inventory's share of the total time and each run's peak memory. ``--scale N`` builds a
capture of N devices (each: an ARP announcement, a DHCP request with host name and vendor class, a
Modbus/TCP session with a device identification answer) and does the same. This is a benchmark,
never a test.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sensor_core import DATA, _count_packets, _max_rss_mb, _pin_to_one_core


def _worker(capture: Path, inventory: bool) -> None:
    _pin_to_one_core()
    from fieldward.pipeline import AnalysisOptions, analyze

    warm = DATA / "warmup-inventory.pcap"
    if not warm.exists():
        from fieldward.generator import GeneratorConfig, generate_capture

        generate_capture(warm, GeneratorConfig(devices=12, minutes=0.1, seed=1))
    with tempfile.TemporaryDirectory() as out:
        analyze([warm], Path(out))  # JIT compilation (numba, cached on disk) is not timed
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = analyze([capture], Path(out), AnalysisOptions(inventory=inventory))
        seconds = time.perf_counter() - start
        devices = json.loads((Path(out) / "devices.json").read_text())["devices"] if inventory else []
    print(
        json.dumps({"seconds": seconds, "max_rss_mb": _max_rss_mb(), "devices": devices, "n": len(devices)})
    )
    del result


def _run(capture: Path, inventory: bool) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            str(capture),
            "--inventory" if inventory else "--no-inventory",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"analysis failed: {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _cost(capture: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    packets = _count_packets(capture)
    print(f"\ncapture: {capture} ({packets:,} packets, {capture.stat().st_size / 2**20:,.1f} MiB)")
    subprocess.run(["cat", str(capture)], stdout=subprocess.DEVNULL, check=False)
    without = _run(capture, inventory=False)
    with_inventory = _run(capture, inventory=True)
    share = (with_inventory["seconds"] - without["seconds"]) / with_inventory["seconds"]
    print(f"{'run':<22} {'seconds':>9} {'packets/s':>12} {'peak MB':>9} {'devices':>9}")
    for label, res in (("without inventory", without), ("with inventory", with_inventory)):
        pps = packets / res["seconds"]
        print(f"{label:<22} {res['seconds']:>9.2f} {pps:>12,.0f} {res['max_rss_mb']:>9,.0f} {res['n']:>9,}")
    print(f"inventory share of the total analysis time: {share:.1%} (target < 10%)")
    return without, with_inventory


def accuracy(devices: int, minutes: float, seed: int) -> None:
    from fieldward.generator import GeneratorConfig, generate_capture
    from fieldward.generator.truth import plant_truth, score

    config = GeneratorConfig(devices=devices, minutes=minutes, seed=seed, camera_streams=False)
    capture = DATA / f"inventory-d{devices}-m{minutes:g}-s{seed}.pcap"
    if not capture.exists():
        print(f"generating {capture} ...", flush=True)
        capture.parent.mkdir(parents=True, exist_ok=True)
        generate_capture(capture.with_suffix(".tmp"), config)
        capture.with_suffix(".tmp").replace(capture)
    truth = plant_truth(config)
    _without, run = _cost(capture)
    table = score(truth, run["devices"])
    print(f"\naccuracy against the ground truth of {len(truth)} devices (matched by MAC):")
    print(f"{'attribute':<16} {'precision':>10} {'recall':>8} {'reported':>9} {'in truth':>9}")
    for name, row in table.items():
        precision = "-" if row["precision"] != row["precision"] else f"{row['precision']:.3f}"
        print(f"{name:<16} {precision:>10} {row['recall']:>8.3f} {row['reported']:>9} {row['expected']:>9}")
    print("targets: precision and recall >= 0.95 for vendor and device_type")


def build_scale_capture(path: Path, devices: int) -> None:
    """N devices on one /8, each announcing itself, asking DHCP and answering a Modbus master."""
    from fieldward.capture.writer import PcapWriter
    from fieldward.generator import protocols as p
    from fieldward.generator.build import ACK, PSH, SYN, Link, Stack, tcp_frame, udp_frame

    stack = Stack(ttl=64, syn_window=5840, window_scale=None, window_bytes=5840)
    master_mac, master_ip = bytes.fromhex("3cd92b000001"), bytes([10, 255, 255, 1])
    ouis = ("001d9c", "0080f4", "0090e8", "002459", "286336")
    vendors = ("Rockwell Automation", "Schneider Electric", "Moxa", "ABB", "Siemens")
    start = 1_767_225_600 * 10**9
    tmp = path.with_suffix(".tmp")
    with PcapWriter(tmp) as writer:
        for i in range(devices):
            ts = start + i * 2_000_000
            mac = bytes.fromhex(ouis[i % len(ouis)]) + (i + 1).to_bytes(3, "big")
            ip = bytes([10, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF or 1])
            arp = (
                b"\xff" * 6
                + mac
                + struct.pack(">HHHBBH", 0x0806, 1, 0x0800, 6, 4, 1)
                + mac
                + ip
                + bytes(6)
                + ip
            ).ljust(60, b"\x00")
            writer.write(arp, ts)
            options = [
                (53, b"\x03"),
                (12, f"field-{i:05d}".encode()),
                (60, b"udhcp 1.20.2"),
                (55, b"\x01\x03\x06\x0c"),
            ]
            bootp = p.dhcp_message(1, i, mac, options, ciaddr=ip)
            writer.write(udp_frame(Link(mac, b"\xff" * 6, ip, b"\xff" * 4, stack), 68, 67, bootp), ts + 1000)
            there = Link(master_mac, mac, master_ip, ip, stack)
            back = Link(mac, master_mac, ip, master_ip, stack)
            sport = 40000 + i % 20000
            request = p.modbus_adu(1, 1, p.modbus_device_id_request())
            answer = p.modbus_adu(
                1, 1, p.modbus_device_id_response([vendors[i % len(vendors)], f"P{i % 7}", "V1.0"])
            )
            writer.write(
                tcp_frame(there, sport, 502, 100, 0, SYN, 5840, options=stack.syn_options()), ts + 2000
            )
            writer.write(
                tcp_frame(back, 502, sport, 900, 101, SYN | ACK, 5840, options=stack.syn_options()), ts + 3000
            )
            writer.write(tcp_frame(there, sport, 502, 101, 901, ACK, 5840), ts + 4000)
            writer.write(tcp_frame(there, sport, 502, 101, 901, PSH | ACK, 5840, request), ts + 5000)
            writer.write(
                tcp_frame(back, 502, sport, 901, 101 + len(request), PSH | ACK, 5840, answer), ts + 6000
            )
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--devices", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=int, default=0, help="also measure a capture with this many devices")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--inventory", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.inventory)
        return
    accuracy(args.devices, args.minutes, args.seed)
    if args.scale:
        capture = DATA / f"inventory-scale-{args.scale}.pcap"
        if not capture.exists():
            print(f"\nbuilding {capture} ...", flush=True)
            capture.parent.mkdir(parents=True, exist_ok=True)
            build_scale_capture(capture, args.scale)
        _without, run = _cost(capture)
        print(f"devices found: {run['n']:,} of {args.scale:,} (plus the Modbus master)")


if __name__ == "__main__":
    main()
