"""Dissection benchmark: FieldWard's full analysis against tshark dissecting the same protocols.

    python benchmarks/bench_dissection.py [--devices N --minutes M --seed S] [--capture FILE]

Generates (once, cached under benchmarks/data/) a protocol-heavy plant capture with the project's own
generator (camera video off, so the packets are mostly Modbus/TCP, S7comm, EtherNet/IP and CIP I/O,
DNP3 and MQTT), then times, each in its own process pinned to one CPU core:

* fieldward: ``fieldward.pipeline.analyze`` (read, decode, flows, TCP reassembly, every installed
  dissector, events and flows written to Parquet, then inventory and detection)
* fieldward-dissect: the same without inventory and detection (``AnalysisOptions(detect=False,
  inventory=False)``): dissection only, the work tshark does
* tshark:    ``tshark -T fields`` of the same protocols' main fields (Wireshark's full dissection)

and prints packets per second, FieldWard's ratio to tshark and each one's peak memory (max RSS).
Both the wall-clock time and the CPU time (user + system) of each run are printed; on a machine shared
with other work the CPU time is the steadier figure, and ``--repeat N`` keeps each tool's fastest of N
runs. ``--src DIR`` imports FieldWard from another source tree (e.g. a ``git worktree`` of an older
commit) to compare two versions on the same capture in the same session.
This is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sensor_core import DATA, _count_packets, _max_rss_mb, _pin_to_one_core

TOOLS = ("fieldward", "fieldward-dissect", "tshark")
TSHARK_FIELDS = (
    "frame.number",
    "modbus.func_code",
    "mbtcp.trans_id",
    "s7comm.param.func",
    "s7comm.header.rosctr",
    "enip.command",
    "cip.service",
    "dnp3.al.func",
    "dnp3.ctl.prifunc",
    "mqtt.msgtype",
    "mqtt.topic",
    "dns.qry.name",
    "dhcp.option.dhcp",
)


def run_fieldward(capture: Path, *, dissect_only: bool = False) -> dict[str, Any]:
    from fieldward.pipeline import AnalysisOptions, analyze

    options = AnalysisOptions(detect=False, inventory=False) if dissect_only else AnalysisOptions()
    warm = DATA / "warmup-protocols.pcap"
    if not warm.exists():
        _generate(warm, devices=12, minutes=0.1, seed=1)
    with tempfile.TemporaryDirectory() as out:
        analyze([warm], Path(out), options)  # JIT compilation (numba, cached on disk) is not timed
    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        start = time.perf_counter()
        result = analyze([capture], Path(out), options)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    events = sum(result.summary()["events"].values())  # type: ignore[union-attr]
    return {"seconds": seconds, "cpu_seconds": cpu, "events": events, "max_rss_mb": _max_rss_mb()}


def run_tshark(capture: Path) -> dict[str, Any]:
    import resource

    tshark = shutil.which("tshark")
    if tshark is None:
        raise ModuleNotFoundError("tshark is not installed (Debian package 'tshark')")
    fields = [arg for name in TSHARK_FIELDS for arg in ("-e", name)]
    start = time.perf_counter()
    with open("/dev/null", "wb") as sink:
        subprocess.run([tshark, "-n", "-r", str(capture), "-T", "fields", *fields], stdout=sink, check=True)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "events": None,
        "max_rss_mb": _max_rss_mb(resource.RUSAGE_CHILDREN),
    }


def run_fieldward_dissect(capture: Path) -> dict[str, Any]:
    return run_fieldward(capture, dissect_only=True)


RUNNERS = {"fieldward": run_fieldward, "fieldward-dissect": run_fieldward_dissect, "tshark": run_tshark}


def _generate(path: Path, devices: int, minutes: float, seed: int) -> None:
    from fieldward.generator import GeneratorConfig, generate_capture

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    config = GeneratorConfig(devices=devices, minutes=minutes, seed=seed, camera_streams=False)
    generate_capture(tmp, config)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--capture", type=Path, help="benchmark this capture instead of a generated one")
    parser.add_argument("--devices", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + str(TOOLS))
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per tool; the fastest (by CPU time) is kept"
    )
    parser.add_argument(
        "--src", type=Path, help="import fieldward from this source tree (default: installed)"
    )
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.src is not None:
            sys.path.insert(0, str(args.src.resolve()))
        _pin_to_one_core()
        try:
            result = RUNNERS[args.worker](args.capture)
        except (ImportError, ModuleNotFoundError, subprocess.CalledProcessError) as exc:
            result = {"skipped": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result))
        return

    capture = args.capture
    if capture is None:
        capture = DATA / f"protocols-d{args.devices}-m{args.minutes:g}-s{args.seed}.pcap"
        if not capture.exists():
            print(f"generating {capture} ...", flush=True)
            _generate(capture, args.devices, args.minutes, args.seed)
    total_packets = _count_packets(capture)
    print(f"capture: {capture} ({total_packets:,} packets, {capture.stat().st_size / 2**20:,.1f} MiB)")
    print("each tool runs in its own process pinned to one CPU core; file in page cache\n")
    subprocess.run(["cat", str(capture)], stdout=subprocess.DEVNULL, check=False)

    worker = [sys.executable, __file__, "--capture", str(capture)]
    if args.src is not None:
        worker += ["--src", str(args.src)]
        print(f"fieldward imported from {args.src}")
    results: dict[str, dict[str, Any]] = {}
    for tool in args.tools.split(","):
        for _ in range(max(args.repeat, 1)):
            proc = subprocess.run([*worker, "--worker", tool], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results[tool] = {"skipped": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
                break
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            best = results.get(tool)
            if best is None or res.get("cpu_seconds", 0.0) < best.get("cpu_seconds", 0.0):
                results[tool] = res

    print(
        f"{'tool':<18} {'seconds':>9} {'packets/s':>13} {'CPU s':>8} {'packets/CPU s':>14} "
        f"{'events':>11} {'peak MB':>9}"
    )
    for tool, res in results.items():
        if "skipped" in res:
            print(f"{tool:<18} skipped: {res['skipped']}")
            continue
        pps = total_packets / res["seconds"]
        cpu_pps = total_packets / res["cpu_seconds"]
        events = f"{res['events']:,}" if res["events"] is not None else "-"
        print(
            f"{tool:<18} {res['seconds']:>9.2f} {pps:>13,.0f} {res['cpu_seconds']:>8.2f} {cpu_pps:>14,.0f} "
            f"{events:>11} {res['max_rss_mb']:>9,.0f}"
        )
    peer = results.get("tshark", {})
    for tool in ("fieldward", "fieldward-dissect"):
        own = results.get(tool, {})
        if "seconds" in own and "seconds" in peer:
            print(
                f"{tool} / tshark: x{peer['seconds'] / own['seconds']:,.1f} wall-clock, "
                f"x{peer['cpu_seconds'] / own['cpu_seconds']:,.1f} per CPU second (target >= 5x)"
            )
    for tool in ("fieldward", "fieldward-dissect"):
        own = results.get(tool, {})
        if "cpu_seconds" in own:
            rate = total_packets / own["cpu_seconds"]
            verdict = "met" if rate >= 1_000_000 else "NOT met"
            print(f"{tool}: {rate:,.0f} packets per CPU second on one core (target >= 1,000,000: {verdict})")


if __name__ == "__main__":
    main()
