"""Inventory benchmark: accuracy against the generator's ground truth, and cost at scale.

    python benchmarks/bench_inventory.py                      # accuracy + cost on a generated plant
    python benchmarks/bench_inventory.py --scale 50000        # also: 50,000 devices in one capture

Accuracy: generates (once, cached under benchmarks/data/) a plant capture with ``fieldward generate``
and its ground truth (``fieldward.generator.truth``), runs the analysis, matches devices by MAC and
prints precision and recall per attribute (vendor, type, Purdue level, model, firmware, serial,
hostname). precision = right values / values reported; recall = right values / values in the truth.

Cost: the same analysis with and without the inventory, each in its own process pinned to one core;
prints the inventory's share of the total time and each run's peak memory. The share is also given
in CPU time (the process's user + system time during ``analyze``): on a machine shared with other
work, wall time also counts the time the run waited for its core, CPU time does not. ``--scale N`` builds a
capture of N devices (each: an ARP announcement, a DHCP request with host name and vendor class, a
Modbus/TCP session with a device identification answer) and does the same. This is a benchmark,
never a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sensor_core import DATA, _count_packets, _max_rss_mb, _pin_to_one_core


def _worker(capture: Path, inventory: bool, keep: bool) -> None:
    _pin_to_one_core()
    from fieldward.pipeline import AnalysisOptions, analyze

    warm = DATA / "warmup-inventory.pcap"
    if not warm.exists():
        from fieldward.generator import GeneratorConfig, generate_capture

        generate_capture(warm, GeneratorConfig(devices=12, minutes=0.1, seed=1))
    with tempfile.TemporaryDirectory() as out:
        analyze([warm], Path(out))  # JIT compilation (numba, cached on disk) is not timed
    with tempfile.TemporaryDirectory() as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = analyze([capture], Path(out), AnalysisOptions(inventory=inventory))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        peak = _max_rss_mb()  # before the devices are read back for scoring
        count = len(result.inventory.devices) if result.inventory is not None else 0
        del result
        devices = (
            json.loads((Path(out) / "devices.json").read_text())["devices"] if inventory and keep else []
        )
    print(json.dumps({"seconds": seconds, "cpu": cpu, "max_rss_mb": peak, "devices": devices, "n": count}))


def _run(capture: Path, inventory: bool, keep: bool) -> dict[str, Any]:
    flags = ["--inventory" if inventory else "--no-inventory", "--keep" if keep else "--no-keep"]
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(capture), *flags],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"analysis failed: {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _cost(capture: Path, keep: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    packets = _count_packets(capture)
    print(f"\ncapture: {capture} ({packets:,} packets, {capture.stat().st_size / 2**20:,.1f} MiB)")
    subprocess.run(["cat", str(capture)], stdout=subprocess.DEVNULL, check=False)
    without = _run(capture, inventory=False, keep=False)
    with_inventory = _run(capture, inventory=True, keep=keep)
    share = (with_inventory["seconds"] - without["seconds"]) / with_inventory["seconds"]
    cpu_share = (with_inventory["cpu"] - without["cpu"]) / with_inventory["cpu"]
    print(f"{'run':<22} {'seconds':>9} {'CPU s':>9} {'packets/s':>12} {'peak MB':>9} {'devices':>9}")
    for label, res in (("without inventory", without), ("with inventory", with_inventory)):
        pps = packets / res["seconds"]
        print(
            f"{label:<22} {res['seconds']:>9.2f} {res['cpu']:>9.2f} {pps:>12,.0f} "
            f"{res['max_rss_mb']:>9,.0f} {res['n']:>9,}"
        )
    print(f"inventory share of the total analysis time: {share:.1%} (target < 10%)")
    print(f"inventory share of the analysis CPU time:   {cpu_share:.1%} (the same on a busy machine)")
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
    _without, run = _cost(capture, keep=True)
    table = score(truth, run["devices"])
    print(f"\naccuracy against the ground truth of {len(truth)} devices (matched by MAC):")
    print(f"{'attribute':<16} {'precision':>10} {'recall':>8} {'reported':>9} {'in truth':>9}")
    for name, row in table.items():
        precision = "-" if row["precision"] != row["precision"] else f"{row['precision']:.3f}"
        print(f"{name:<16} {precision:>10} {row['recall']:>8.3f} {row['reported']:>9} {row['expected']:>9}")
    print("targets: precision and recall >= 0.95 for vendor and device_type")


def build_scale_capture(path: Path, devices: int, polls: int = 60) -> None:
    """N devices on a /8, as a sensor on a large site sees them over about a minute: each announces
    itself (ARP), asks DHCP for its lease (host name, vendor class), and is polled by a Modbus
    master once a second over one TCP session (handshake, device identification, ``polls`` register
    reads, close): about ``2 * polls + 10`` packets per device.

    Vectorized: every packet of the conversation is built once per vendor group from the generator's
    encoders, then stamped with each device's MAC, address and names by numpy column assignment.
    """
    import numpy as np

    from fieldward.capture.batch import PacketBatch
    from fieldward.capture.writer import PcapWriter
    from fieldward.generator import protocols as p
    from fieldward.generator.build import ACK, FIN, PSH, SYN, Link, Stack, tcp_frame, udp_frame

    stack = Stack(ttl=64, syn_window=5840, window_scale=None, window_bytes=5840)
    master_mac, master_ip = bytes.fromhex("3cd92b000001"), bytes([10, 255, 255, 1])
    groups = (
        ("001d9c", "Rockwell Automation"),
        ("0080f4", "Schneider Electric"),
        ("0090e8", "Moxa"),
        ("002459", "ABB"),
        ("286336", "Siemens"),
    )
    sport = 40000
    index = np.arange(devices, dtype=np.int64)
    subnet, host = np.divmod(index, 254)
    ips = np.stack([np.full(devices, 10), (subnet >> 8) & 0xFF, subnet & 0xFF, host + 1], axis=1).astype(
        np.uint8
    )
    serial = index + 1
    low = np.stack([(serial >> 16) & 0xFF, (serial >> 8) & 0xFF, serial & 0xFF], axis=1).astype(np.uint8)
    names = np.array([list(f"{i:05d}".encode()) for i in range(devices)], dtype=np.uint8)
    product = (np.frombuffer(b"0", dtype=np.uint8)[0] + index % 7).astype(np.uint8)

    def conversation(oui: str, vendor: str) -> list[tuple[float, str, bytes]]:
        """(time offset s, sender 'd'evice/'m'aster/'b'roadcast from device, frame) for device 0."""
        mac, ip = bytes.fromhex(oui) + b"\0\0\0", bytes([10, 0, 0, 1])
        arp = (b"\xff" * 6 + mac + bytes.fromhex("08060001080006040002") + mac + ip + mac + ip).ljust(
            60, b"\x00"
        )
        options = [(53, b"\x03"), (12, b"field-00000"), (60, b"udhcp 1.20.2"), (55, b"\x01\x03\x06\x0c")]
        bootp = p.dhcp_message(1, 7, mac, options, ciaddr=ip)
        there, back = Link(master_mac, mac, master_ip, ip, stack), Link(mac, master_mac, ip, master_ip, stack)
        request = p.modbus_adu(1, 1, p.modbus_device_id_request())
        answer = p.modbus_adu(1, 1, p.modbus_device_id_response([vendor, "P0", "V1.0"]))
        c, s_ = 101, 901
        out: list[tuple[float, str, bytes]] = [
            (0.0, "b", arp),
            (0.5, "b", udp_frame(Link(mac, b"\xff" * 6, ip, b"\xff" * 4, stack), 68, 67, bootp)),
            (1.0, "m", tcp_frame(there, sport, 502, 100, 0, SYN, 5840, options=stack.syn_options())),
            (1.001, "d", tcp_frame(back, 502, sport, 900, c, SYN | ACK, 5840, options=stack.syn_options())),
            (1.002, "m", tcp_frame(there, sport, 502, c, s_, ACK, 5840)),
            (1.5, "m", tcp_frame(there, sport, 502, c, s_, PSH | ACK, 5840, request)),
            (1.501, "d", tcp_frame(back, 502, sport, s_, c + len(request), PSH | ACK, 5840, answer)),
        ]
        c, s_ = c + len(request), s_ + len(answer)
        for j in range(polls):
            read = p.modbus_adu(2 + j, 1, p.modbus_read_request(3, 0, 10))
            values = p.modbus_adu(2 + j, 1, p.modbus_read_response(3, [j] * 10))
            out.append((2.0 + j, "m", tcp_frame(there, sport, 502, c, s_, PSH | ACK, 5840, read)))
            out.append(
                (2.001 + j, "d", tcp_frame(back, 502, sport, s_, c + len(read), PSH | ACK, 5840, values))
            )
            c, s_ = c + len(read), s_ + len(values)
        end = 2.0 + polls
        out += [
            (end, "m", tcp_frame(there, sport, 502, c, s_, FIN | ACK, 5840)),
            (end + 0.001, "d", tcp_frame(back, 502, sport, s_, c + 1, FIN | ACK, 5840)),
            (end + 0.002, "m", tcp_frame(there, sport, 502, c + 1, s_ + 1, ACK, 5840)),
        ]
        return out

    def stamp(frame: bytes, kind: str, rows: np.ndarray, oui: bytes) -> np.ndarray:
        block = np.tile(np.frombuffer(frame, dtype=np.uint8), (rows.shape[0], 1))
        macs = np.concatenate(
            [np.tile(np.frombuffer(oui, dtype=np.uint8), (rows.shape[0], 1)), low[rows]], axis=1
        )
        if kind == "m":
            block[:, 0:6], block[:, 30:34] = macs, ips[rows]
            return block
        block[:, 6:12] = macs
        if frame[12:14] == b"\x08\x06":  # ARP: sender and target hardware and protocol addresses
            block[:, 22:28], block[:, 28:32] = macs, ips[rows]
            block[:, 32:38], block[:, 38:42] = macs, ips[rows]
            return block
        block[:, 26:30] = ips[rows]
        at = frame.find(b"field-00000")
        if at >= 0:  # DHCP: chaddr, ciaddr and the host name
            block[:, 70:76], block[:, 54:58], block[:, at + 6 : at + 11] = macs, ips[rows], names[rows]
        at = frame.find(b"\x02P0")
        if at >= 0:  # device identification: the product code's digit
            block[:, at + 2] = product[rows]
        return block

    members = [index[g :: len(groups)] for g in range(len(groups))]
    plans = [conversation(oui, vendor) for oui, vendor in groups]
    start_ns = 1_767_225_600 * 10**9
    tmp = path.with_suffix(".tmp")
    with PcapWriter(tmp) as writer:
        for step in range(len(plans[0])):
            blocks, lengths = [], []
            for (oui, _vendor), plan, rows in zip(groups, plans, members, strict=True):
                _offset, kind, frame = plan[step]
                blocks.append(stamp(frame, kind, rows, bytes.fromhex(oui)).ravel())
                lengths.append(np.full(rows.shape[0], len(frame), dtype=np.int64))
            size = np.concatenate(lengths)
            offsets = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
            base = start_ns + int(plans[0][step][0] * 1e9)
            ts = base + np.arange(size.shape[0], dtype=np.int64) * 5_000
            batch = PacketBatch(
                buffer=np.concatenate(blocks),
                offsets=offsets,
                caplen=size.astype(np.uint32),
                origlen=size.astype(np.uint32),
                ts_ns=ts,
                interface=np.zeros(size.shape[0], dtype=np.uint16),
                linktype=np.ones(size.shape[0], dtype=np.uint16),
            )
            writer.write_batch(batch)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--devices", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=int, default=0, help="also measure a capture with this many devices")
    parser.add_argument(
        "--polls", type=int, default=60, help="Modbus polls per device in the --scale capture"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--inventory", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--keep", action=argparse.BooleanOptionalAction, default=False, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.inventory, args.keep)
        return
    accuracy(args.devices, args.minutes, args.seed)
    if args.scale:
        capture = DATA / f"inventory-scale-{args.scale}-p{args.polls}.pcap"
        if not capture.exists():
            print(f"\nbuilding {capture} ...", flush=True)
            capture.parent.mkdir(parents=True, exist_ok=True)
            build_scale_capture(capture, args.scale, args.polls)
        _without, run = _cost(capture)
        print(f"devices found: {run['n']:,} of {args.scale:,} (plus the Modbus master)")


if __name__ == "__main__":
    main()
