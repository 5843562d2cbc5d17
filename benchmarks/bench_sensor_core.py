"""Sensor-core benchmark: read + decode + flow table, FieldWard against its peers, in one run.

    python benchmarks/bench_sensor_core.py [--devices N --minutes M --seed S] [--capture FILE]

Generates (once, cached under benchmarks/data/) a plant capture with the project's own generator,
then times, each in its own process pinned to one CPU core:

* fieldward: open_capture -> decode_batch -> FlowTable (the ``analyze`` hot path, no output files)
* nfstream:  NFStreamer flow metering (nDPI dissection and statistics off), one meter
* dpkt:      per-packet parse (Ethernet/IP/TCP/UDP) into a Python dict flow table
* tshark:    ``tshark -q -z conv,tcp`` (Wireshark's own conversation table)

and prints packets per second, FieldWard's ratio to each peer and each one's peak memory (max RSS).
A peer that is not installed is reported as skipped. This is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PEERS = ("fieldward", "nfstream", "dpkt", "tshark")


def _pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[-1]})


def _max_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MB of this process (``RUSAGE_SELF``) or of its finished children.

    For this process it is the kernel's high-water mark of its own address space (``VmHWM``): Linux
    carries a parent's peak over fork and exec into the child's ``ru_maxrss``, so that would report
    the benchmark driver's memory for every worker.
    """
    if who == resource.RUSAGE_SELF:
        try:
            with open("/proc/self/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
    return resource.getrusage(who).ru_maxrss / 1024.0


def run_fieldward(capture: Path) -> dict[str, Any]:
    from fieldward.capture.reader import open_capture
    from fieldward.decode.flows import FlowConfig, FlowTable
    from fieldward.decode.l2l4 import decode_batch
    from fieldward.weird import WeirdLog

    def one_pass(path: Path) -> tuple[int, int]:
        weird = WeirdLog()
        table = FlowTable(FlowConfig(), weird)
        packets = flows = 0
        with open_capture(path, weird=weird) as reader:
            for batch in reader:
                decoded = decode_batch(batch, weird)
                table.update(batch, decoded)
                packets += len(batch)
                if len(batch):
                    flows += table.expire(int(batch.ts_ns.max())).num_rows
        flows += table.finish().num_rows
        return packets, flows

    # Warm-up on a small slice so JIT compilation (numba, cached on disk) is not timed.
    warm = DATA / "warmup.pcap"
    if not warm.exists():
        _generate(warm, devices=4, minutes=0.05, seed=1)
    one_pass(warm)
    start = time.perf_counter()
    packets, flows = one_pass(capture)
    seconds = time.perf_counter() - start
    return {"packets": packets, "flows": flows, "seconds": seconds, "max_rss_mb": _max_rss_mb()}


def run_nfstream(capture: Path) -> dict[str, Any]:
    from nfstream import NFStreamer

    start = time.perf_counter()
    packets = flows = 0
    streamer = NFStreamer(
        source=str(capture),
        n_meters=1,
        n_dissections=0,
        statistical_analysis=False,
        splt_analysis=0,
        performance_report=0,
    )
    for flow in streamer:
        flows += 1
        packets += int(flow.bidirectional_packets)
    seconds = time.perf_counter() - start
    # nfstream meters in child processes: count their memory too.
    rss = max(_max_rss_mb(), _max_rss_mb(resource.RUSAGE_CHILDREN))
    return {"packets": packets, "flows": flows, "seconds": seconds, "max_rss_mb": rss}


def run_dpkt(capture: Path) -> dict[str, Any]:
    import dpkt

    flows: dict[tuple[Any, ...], list[int]] = {}
    packets = 0
    start = time.perf_counter()
    with capture.open("rb") as handle:
        for _ts, raw in dpkt.pcap.Reader(handle):
            packets += 1
            eth = dpkt.ethernet.Ethernet(raw)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            l4 = ip.data
            sport = getattr(l4, "sport", 0)
            dport = getattr(l4, "dport", 0)
            a, b = (ip.src, sport), (ip.dst, dport)
            key = (ip.p, a, b) if a <= b else (ip.p, b, a)
            entry = flows.get(key)
            if entry is None:
                flows[key] = [1, len(raw)]
            else:
                entry[0] += 1
                entry[1] += len(raw)
    seconds = time.perf_counter() - start
    return {"packets": packets, "flows": len(flows), "seconds": seconds, "max_rss_mb": _max_rss_mb()}


def run_tshark(capture: Path) -> dict[str, Any]:
    tshark = shutil.which("tshark")
    if tshark is None:
        raise ModuleNotFoundError("tshark is not installed (Debian package 'tshark')")
    start = time.perf_counter()
    proc = subprocess.run(
        [tshark, "-n", "-r", str(capture), "-q", "-z", "conv,tcp"],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    flows = sum(1 for line in proc.stdout.splitlines() if "<->" in line)
    return {
        "packets": None,
        "flows": flows,
        "seconds": seconds,
        "max_rss_mb": _max_rss_mb(resource.RUSAGE_CHILDREN),
    }


RUNNERS = {"fieldward": run_fieldward, "nfstream": run_nfstream, "dpkt": run_dpkt, "tshark": run_tshark}


def _generate(path: Path, devices: int, minutes: float, seed: int) -> None:
    from fieldward.generator import GeneratorConfig, generate_capture

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    generate_capture(tmp, GeneratorConfig(devices=devices, minutes=minutes, seed=seed))
    tmp.replace(path)


def _count_packets(capture: Path) -> int:
    from fieldward.capture.reader import open_capture

    with open_capture(capture) as reader:
        return sum(len(batch) for batch in reader)


def _worker(tool: str, capture: Path) -> None:
    _pin_to_one_core()
    try:
        result = RUNNERS[tool](capture)
    except (ImportError, ModuleNotFoundError, subprocess.CalledProcessError) as exc:
        result = {"skipped": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--capture", type=Path, help="benchmark this capture instead of a generated one")
    parser.add_argument("--devices", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools", default=",".join(PEERS), help="comma-separated subset of " + str(PEERS))
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        _worker(args.worker, args.capture)
        return

    capture = args.capture
    if capture is None:
        capture = DATA / f"plant-d{args.devices}-m{args.minutes:g}-s{args.seed}.pcap"
        if not capture.exists():
            print(f"generating {capture} ...", flush=True)
            _generate(capture, args.devices, args.minutes, args.seed)
    total_packets = _count_packets(capture)
    size_mb = capture.stat().st_size / 2**20
    print(f"capture: {capture} ({total_packets:,} packets, {size_mb:,.1f} MiB)")
    print("each tool runs in its own process pinned to one CPU core; file in page cache\n")
    subprocess.run(["cat", str(capture)], stdout=subprocess.DEVNULL, check=False)  # warm page cache

    results: dict[str, dict[str, Any]] = {}
    for tool in args.tools.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", tool, "--capture", str(capture)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            results[tool] = {"skipped": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
            continue
        results[tool] = json.loads(proc.stdout.strip().splitlines()[-1])

    own = results.get("fieldward", {})
    own_pps = total_packets / own["seconds"] if "seconds" in own else None
    print(f"{'tool':<10} {'seconds':>9} {'packets/s':>13} {'flows':>9} {'peak MB':>9} {'FieldWard x':>12}")
    for tool, res in results.items():
        if "skipped" in res:
            print(f"{tool:<10} skipped: {res['skipped']}")
            continue
        pps = total_packets / res["seconds"]
        ratio = f"{own_pps / pps:,.1f}x" if own_pps and tool != "fieldward" else "-"
        print(
            f"{tool:<10} {res['seconds']:>9.2f} {pps:>13,.0f} {res['flows']:>9,} "
            f"{res['max_rss_mb']:>9,.0f} {ratio:>12}"
        )


if __name__ == "__main__":
    main()
