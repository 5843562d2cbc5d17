"""Detection benchmark: every attack scenario detected? How many false alerts on a clean plant? At what cost?

    python benchmarks/bench_detection.py [--devices N --learn-minutes L --minutes M --seed S] [--quick]

Generates (once, cached under benchmarks/data/) with the project's own generator, camera video off:

* a **clean** capture of the plant: ``L`` minutes of learning, then ``M`` (default 60) judged minutes;
* an **attack** capture of the same plant (same devices and seed): the same ``L`` learning minutes,
  then every scenario of ``fieldward.generator.attacks`` one after another (``--gap`` minutes
  between them), labelled in the ground truth (time window, attacker, targets, engine, alert types).

Both are analysed with ``--learn-minutes L`` (``fieldward.pipeline.analyze``). A scenario counts as
**detected** when an alert of the scenario's engine (or of one of its expected alert types) names
its attacker or one of its targets as source or destination, and fired (first time or a kept
trigger) in the scenario's window: from 1 s before its first packet to ``--grace`` seconds after its
last. The alerts on the attack capture that no scenario explains are listed too.
Every alert on the clean capture is a **false alert**; the rate is per simulated judged hour.

Then the **cost**: ``analyze`` of the protocol-heavy capture of ``bench_dissection.py`` (generated if
missing) with every detection engine on (learning its first 2 minutes) and with ``detect=False``, each
in its own process pinned to one CPU core, best of ``--repeat`` runs; prints the speed ratio.

Targets (issue 5): every scenario detected; at most 1 false alert per simulated hour; detection
keeps at least 50 % of the speed without it. This is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_sensor_core import DATA, _count_packets, _pin_to_one_core

ENGINES = ("operations", "recon", "protocol", "baseline", "threats", "anomaly")
SPEED_LEARN_MINUTES = 2.0


# --------------------------------------------------------------------------------------------------
# Captures
# --------------------------------------------------------------------------------------------------


def _config(devices: int, minutes: float, seed: int, attacks: tuple[str, ...] = ()) -> Any:
    from fieldward.generator import GeneratorConfig

    return GeneratorConfig(devices=devices, minutes=minutes, seed=seed, camera_streams=False, attacks=attacks)


def _generate(path: Path, config: Any) -> None:
    from fieldward.generator import generate_capture

    if path.exists():
        return
    print(f"generating {path.name} ...", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    generate_capture(tmp, config)
    tmp.replace(path)


def attack_schedule(learn_minutes: float, gap: float) -> tuple[tuple[str, ...], float]:
    """Every scenario at an explicit minute after the learning period, each ``gap`` minutes after the
    nominal end of the one before; and the capture length."""
    from fieldward.generator.attacks import CATALOG

    timed = []
    minute = learn_minutes + 1.0
    for spec in CATALOG:
        timed.append(f"{spec.name}@{minute:.2f}")
        minute += spec.nominal_s / 60 + gap
    return tuple(timed), round(minute + 0.5, 2)


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def _ns(iso: str) -> int:
    stamp = dt.datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * 1_000_000_000 + int(iso[20:29].ljust(9, "0"))


def score(
    scenarios: list[dict[str, Any]], alerts: list[dict[str, Any]], grace_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per scenario: detected or not, and the alerts that matched; plus the alerts nothing explains."""
    results = []
    explained: set[str] = set()
    for scenario in scenarios:
        hosts = {scenario["attacker"]["ip"], *(t["ip"] for t in scenario["targets"])}
        low = scenario["start_ns"] - 1_000_000_000
        high = scenario["end_ns"] + round(grace_s * 1e9)
        hits = []
        first: int | None = None
        for a in alerts:
            if a["engine"] not in scenario["engines"] and a["type"] not in scenario["alert_types"]:
                continue
            if a["src"] not in hosts and a["dst"] not in hosts:
                continue
            inside = [t for t in _times(a) if low <= t <= high]
            if inside:
                hits.append(a)
                first = min(inside) if first is None else min(first, *inside)
        explained.update(a["id"] for a in hits)
        results.append(
            {
                "name": scenario["name"],
                "engine": scenario["engine"],
                "detected": bool(hits),
                "types": sorted({a["type"] for a in hits}),
                "expected_types": scenario["alert_types"],
                "delay_s": None if first is None else max(0.0, (first - scenario["start_ns"]) / 1e9),
            }
        )
    others = [a for a in alerts if a["id"] not in explained]
    return results, others


def _times(alert: dict[str, Any]) -> list[int]:
    """When an alert fired: its first time and every trigger it kept; its last time too when it
    repeated more often than it keeps triggers (an aggregated alert's span alone could reach into the
    next scenario's window without firing there)."""
    times = [_ns(alert["first_ts"])] + [_ns(e["ts"]) for e in alert.get("evidence", [])]
    if alert["count"] > len(alert.get("evidence", [])):
        times.append(_ns(alert["last_ts"]))
    return times


def _alerts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def _analyze(capture: Path, learn_minutes: float) -> tuple[list[dict[str, Any]], float, int]:
    from fieldward.detect.settings import DetectionSettings
    from fieldward.pipeline import AnalysisOptions, analyze

    options = AnalysisOptions(detection=DetectionSettings(learn_minutes=learn_minutes))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = analyze([capture], Path(tmp), options)
        seconds = time.perf_counter() - started
        return _alerts(Path(tmp)), seconds, result.totals.packets


# --------------------------------------------------------------------------------------------------
# Cost: the protocol benchmark with and without detection, one pinned process each
# --------------------------------------------------------------------------------------------------


def _speed_worker(capture: Path, detect: bool) -> None:
    _pin_to_one_core()
    from bench_dissection import _generate as generate_protocols
    from fieldward.detect.settings import DetectionSettings
    from fieldward.pipeline import AnalysisOptions, analyze

    options = AnalysisOptions(detect=detect, detection=DetectionSettings(learn_minutes=SPEED_LEARN_MINUTES))
    warm = DATA / "warmup-protocols.pcap"
    if not warm.exists():
        generate_protocols(warm, devices=12, minutes=0.1, seed=1)
    with tempfile.TemporaryDirectory() as out:
        analyze([warm], Path(out), options)  # JIT compilation (numba, cached on disk) is not timed
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = analyze([capture], Path(out), options)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "alerts": len(result.alerts)}))


def measure_speed(capture: Path, repeat: int) -> dict[str, Any]:
    best: dict[bool, float] = {}
    alerts = 0
    for _ in range(repeat):
        for detect in (False, True):  # interleaved, so a busy moment hurts both modes alike
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--speed-worker",
                    "on" if detect else "off",
                    "--capture",
                    str(capture),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                return {"skipped": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            best[detect] = min(best.get(detect, float("inf")), run["seconds"])
            alerts = run["alerts"] if detect else alerts
    packets = _count_packets(capture)
    return {
        "packets": packets,
        "seconds_without": best[False],
        "seconds_with": best[True],
        "pps_without": packets / best[False],
        "pps_with": packets / best[True],
        "ratio": best[False] / best[True],
        "alerts": alerts,
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--learn-minutes", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=60.0, help="judged clean minutes (after learning)")
    parser.add_argument("--gap", type=float, default=0.75, help="minutes between one scenario and the next")
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds an alert may come after a scenario"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small and short (judged time below one hour)")
    parser.add_argument(
        "--speed-capture", type=Path, help="time this capture instead of the protocol benchmark's"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per mode for the speed ratio (best counts)"
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--speed-worker", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--capture", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.speed_worker:
        _speed_worker(args.capture, args.speed_worker == "on")
        return
    if args.quick:
        args.devices, args.learn_minutes, args.minutes = 24, 8.0, 15.0

    from fieldward.generator.attacks import attack_truth

    total = args.learn_minutes + args.minutes
    clean = DATA / f"detect-clean-d{args.devices}-m{total:g}-s{args.seed}.pcap"
    _generate(clean, _config(args.devices, total, args.seed))
    timed, attack_minutes = attack_schedule(args.learn_minutes, args.gap)
    attack_config = _config(args.devices, attack_minutes, args.seed, timed)
    attacked = DATA / f"detect-attacks-d{args.devices}-m{attack_minutes:g}-g{args.gap:g}-s{args.seed}.pcap"
    _generate(attacked, attack_config)
    scenarios = attack_truth(attack_config)["scenarios"]

    learning = f"learning {args.learn_minutes:g} min"
    print(f"plant: {args.devices} devices, seed {args.seed}, camera video off; {learning}")
    attack_alerts, attack_seconds, attack_packets = _analyze(attacked, args.learn_minutes)
    print(f"attack capture: {attacked.name} ({attack_packets:,} packets, {len(scenarios)} scenarios, "
          f"analysed in {attack_seconds:.1f} s)\n")  # fmt: skip
    results, unexplained = score(scenarios, attack_alerts, args.grace)
    print(f"{'scenario':<26} {'engine':<11} {'detected':<9} {'delay s':>8}  matching alert types")
    for r in results:
        delay = f"{r['delay_s']:.1f}" if r["delay_s"] is not None else "-"
        types = ", ".join(r["types"]) or f"(expected {', '.join(r['expected_types']) or r['engine'] + '.*'})"
        print(f"{r['name']:<26} {r['engine']:<11} {'yes' if r['detected'] else 'NO':<9} {delay:>8}  {types}")
    detected = sum(r["detected"] for r in results)
    print(f"\ndetection rate: {detected}/{len(results)} scenarios ({100 * detected / len(results):.0f} %)")
    for engine in ENGINES:
        mine = [r for r in results if r["engine"] == engine]
        if mine:
            print(f"  {engine:<11} {sum(r['detected'] for r in mine)}/{len(mine)}")
    missed = [r["name"] for r in results if not r["detected"]]
    if missed:
        print("not detected: " + ", ".join(missed))
    print(
        f"other alerts on the attack capture (no scenario of their engine explains them): {len(unexplained)}"
    )
    for kind, count in Counter(a["type"] for a in unexplained).most_common(8):
        print(f"  {count:>4}  {kind}")

    clean_alerts, clean_seconds, clean_packets = _analyze(clean, args.learn_minutes)
    hours = args.minutes / 60
    print(f"\nclean capture: {clean.name} ({clean_packets:,} packets, {args.minutes:g} judged minutes after "
          f"{args.learn_minutes:g} of learning, analysed in {clean_seconds:.1f} s)")  # fmt: skip
    occurrences = sum(a["count"] for a in clean_alerts)
    print(f"false alerts: {len(clean_alerts)} ({len(clean_alerts) / hours:.2f} per simulated hour; "
          f"{occurrences} occurrences aggregated)")  # fmt: skip
    if hours < 1:
        print("  (judged time below one simulated hour: --quick)")
    for kind, count in Counter(a["type"] for a in clean_alerts).most_common(10):
        print(f"  {count:>4}  {kind}")
    for alert in clean_alerts[:10]:
        print(f"    {alert['first_ts'][:19]} {alert['type']} {alert['src']} -> {alert['dst']}: "
              f"{alert['explanation'][:100]}")  # fmt: skip

    speed: dict[str, Any] = {}
    if not args.skip_speed:
        capture = args.speed_capture
        if capture is None:
            from bench_dissection import _generate as generate_protocols

            devices, minutes = (40, 2.0) if args.quick else (120, 12.0)
            capture = DATA / f"protocols-d{devices}-m{minutes:g}-s1.pcap"
            if not capture.exists():
                print(f"generating {capture.name} ...", flush=True)
                generate_protocols(capture, devices, minutes, 1)
        subprocess.run(["cat", str(capture)], stdout=subprocess.DEVNULL, check=False)
        speed = measure_speed(capture, max(1, args.repeat))
        print(f"\ncost on {capture.name} (one pinned core each, best of {max(1, args.repeat)}):")
        if "skipped" in speed:
            print(f"  skipped: {speed['skipped']}")
        else:
            print(f"  detection off: {speed['seconds_without']:.2f} s, {speed['pps_without']:,.0f} packets/s")
            print(f"  detection on:  {speed['seconds_with']:.2f} s, {speed['pps_with']:,.0f} packets/s "
                  f"({speed['alerts']} alerts, learning the first {SPEED_LEARN_MINUTES:g} min)")  # fmt: skip
            verdict = "meets" if speed["ratio"] >= 0.5 else "MISSES"
            print(
                f"  speed ratio with/without detection: {speed['ratio']:.2f} ({verdict} the >= 0.50 target)"
            )

    if args.json is not None:
        payload = {
            "devices": args.devices,
            "seed": args.seed,
            "learn_minutes": args.learn_minutes,
            "judged_minutes": args.minutes,
            "scenarios": results,
            "detection_rate": detected / len(results),
            "unexplained_attack_alerts": len(unexplained),
            "false_alerts": len(clean_alerts),
            "false_alerts_per_hour": len(clean_alerts) / hours,
            "false_alert_types": dict(Counter(a["type"] for a in clean_alerts)),
            "speed": speed,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
