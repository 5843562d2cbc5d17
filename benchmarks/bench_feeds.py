"""Benchmark of the vulnerability feed import and the matcher's lookups (SQLite and PostgreSQL).

Generates an NVD-2.0-shaped feed of N CVEs (default 300,000, like the whole NVD) split into yearly
gzip files like ``nvdcve-2.0-2024.json.gz``: 1-5 cpeMatch entries per CVE, version ranges, a fifth of
the configurations "firmware AND hardware", vendors and products drawn from a few thousand. Then, on
SQLite and on PostgreSQL (when reachable), it measures:

- the import of all files into an empty store, against the floor "gunzip + orjson.loads of the same
  files" (and the parse into records, ``load_feed``);
- the re-import of the same files (identical files are recognised by their digest and not parsed
  again) and a forced re-import (every record parsed and compared: nothing added, nothing duplicated);
- ``vulnerabilities_for(vendor, product)`` latency, p50/p95 over random pairs, against a naive full
  scan of the stored records (``record LIKE '%:vendor:product:%'``).

Usage: python benchmarks/bench_feeds.py [--cves 300000] [--lookups 1000] [--out DIR] [--pg URL]
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

from fieldward.assess.feeds import load_feed
from fieldward.store.vulndb import CveRow, VulnerabilityDatabase

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
YEARS = list(range(2002, 2026))


def generate(out: Path, cves: int, seed: int) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write the yearly feed files (reused when already there for the same size and seed)."""
    marker = out / f"generated-{cves}-{seed}.txt"
    rng = random.Random(seed)
    vendors = [f"vendor{index:04d}" for index in range(1500)]
    catalogue = [
        (vendor, f"{vendor}_product{index:02d}") for vendor in vendors for index in range(rng.randint(1, 4))
    ]
    paths = [out / f"nvdcve-2.0-{year}.json.gz" for year in YEARS]
    if marker.exists():
        return paths, catalogue
    per_year = -(-cves // len(YEARS))
    number = 0
    for year, path in zip(YEARS, paths, strict=True):
        items: list[dict[str, Any]] = []
        for _ in range(min(per_year, cves - number)):
            number += 1
            items.append({"cve": _cve(rng, year, number, catalogue)})
        document = {
            "resultsPerPage": len(items),
            "startIndex": 0,
            "totalResults": len(items),
            "format": "NVD_CVE",
            "version": "2.0",
            "timestamp": "2026-06-01T00:00:00.000",
            "vulnerabilities": items,
        }
        path.write_bytes(gzip.compress(orjson.dumps(document), compresslevel=5))
    marker.write_text("ok\n")
    return paths, catalogue


def _cve(rng: random.Random, year: int, number: int, catalogue: list[tuple[str, str]]) -> dict[str, Any]:
    vendor, product = rng.choice(catalogue)
    matches = []
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.7:
            vendor_, product_ = vendor, product
        else:
            vendor_, product_ = rng.choice(catalogue)
        match: dict[str, Any] = {
            "vulnerable": True,
            "criteria": f"cpe:2.3:o:{vendor_}:{product_}_firmware:*:*:*:*:*:*:*:*",
            "matchCriteriaId": str(uuid.UUID(int=rng.getrandbits(128))).upper(),
        }
        if rng.random() < 0.6:
            match["versionStartIncluding"] = f"{rng.randint(1, 3)}.0"
            match["versionEndExcluding"] = f"{rng.randint(3, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
        else:
            match["criteria"] = match["criteria"].replace(
                ":*:*:*:*:*:*:*:*", f":{rng.randint(1, 9)}.{rng.randint(0, 9)}:*:*:*:*:*:*:*"
            )
        matches.append(match)
    configurations: list[dict[str, Any]] = [
        {"nodes": [{"operator": "OR", "negate": False, "cpeMatch": matches}]}
    ]
    if rng.random() < 0.2:
        configurations = [
            {
                "operator": "AND",
                "nodes": [
                    {"operator": "OR", "negate": False, "cpeMatch": matches},
                    {
                        "operator": "OR",
                        "negate": False,
                        "cpeMatch": [
                            {
                                "vulnerable": False,
                                "criteria": f"cpe:2.3:h:{vendor}:{product}:-:*:*:*:*:*:*:*",
                                "matchCriteriaId": str(uuid.UUID(int=rng.getrandbits(128))).upper(),
                            }
                        ],
                    },
                ],
            }
        ]
    score = round(rng.uniform(2.0, 10.0), 1)
    severity = "LOW" if score < 4 else "MEDIUM" if score < 7 else "HIGH" if score < 9 else "CRITICAL"
    return {
        "id": f"CVE-{year}-{number:06d}",
        "sourceIdentifier": "cna@example.org",
        "published": f"{year}-03-{rng.randint(10, 28)}T10:15:{rng.randint(10, 59)}.123",
        "lastModified": f"{year + 1}-05-{rng.randint(10, 28)}T11:20:{rng.randint(10, 59)}.456",
        "vulnStatus": "Analyzed",
        "descriptions": [
            {
                "lang": "en",
                "value": f"Buffer overflow in {product} firmware allows remote code execution ({number}).",
            }
        ],
        "metrics": {
            "cvssMetricV31": [
                {
                    "source": "nvd@nist.gov",
                    "type": "Primary",
                    "cvssData": {
                        "version": "3.1",
                        "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                        "baseScore": score,
                        "baseSeverity": severity,
                    },
                    "exploitabilityScore": 3.9,
                    "impactScore": 5.9,
                }
            ]
        },
        "weaknesses": [
            {"source": "nvd@nist.gov", "type": "Primary", "description": [{"lang": "en", "value": "CWE-787"}]}
        ],
        "configurations": configurations,
        "references": [{"url": f"https://example.org/advisories/{number}", "source": "cna@example.org"}],
    }


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def bench_store(
    label: str, url: str, paths: list[Path], pairs: list[tuple[str, str]], floor: float, naive_runs: int
) -> None:
    db = VulnerabilityDatabase(url)
    seconds, report = timed(lambda: db.import_documents(paths))
    counts = report.by_source["nvd"]
    rows = db.status()["sources"]["nvd"]["records"]
    print(
        f"[{label}] import: {seconds:.1f} s ({counts.added} added, {counts.skipped} skipped; "
        f"{rows} CVEs stored), {seconds / floor:.1f}x the orjson.loads floor"
    )
    for name, force in (("re-import", False), ("forced re-import", True)):
        again, report = timed(lambda force=force: db.import_documents(paths, force=force))
        counts = report.by_source["nvd"]
        rows_after = db.status()["sources"]["nvd"]["records"]
        print(
            f"[{label}] {name}: {again:.2f} s ({counts.unchanged} unchanged, {counts.added} added, "
            f"{counts.updated} updated; rows {rows} -> {rows_after}), {again / floor:.2f}x the floor, "
            f"{seconds / again:.1f}x faster than the first import"
        )
    latencies = []
    found = 0
    for vendor, product in pairs:
        started = time.perf_counter()
        found += len(db.vulnerabilities_for(vendor, product + "_firmware"))
        latencies.append(time.perf_counter() - started)
    p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
    print(
        f"[{label}] vulnerabilities_for: p50 {p50:.2f} ms, p95 {p95:.2f} ms over {len(pairs)} lookups "
        f"({found / len(pairs):.1f} CVEs each)"
    )
    naive = []
    with db.engine.connect() as conn:
        for vendor, product in pairs[:naive_runs]:
            pattern = f"%:{vendor}:{product}_firmware:%"
            started = time.perf_counter()
            conn.execute(CveRow.__table__.select().where(CveRow.record.like(pattern))).all()
            naive.append(time.perf_counter() - started)
    naive_p50 = statistics.median(naive) * 1000
    print(
        f"[{label}] naive full scan (record LIKE): p50 {naive_p50:.1f} ms over {len(naive)} lookups "
        f"-> the index is {naive_p50 / p50:.0f}x faster"
    )
    db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cves", type=int, default=300_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--naive", type=int, default=10, help="naive full-scan lookups to time")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--out", type=Path, default=None, help="where the feed files go (default: a temp dir)"
    )
    parser.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL URL ('' to skip)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="fieldward-feeds-"))
    work.mkdir(parents=True, exist_ok=True)
    seconds, (paths, catalogue) = timed(lambda: generate(work, args.cves, args.seed))
    size = sum(path.stat().st_size for path in paths) / 1e6
    print(
        f"feed: {args.cves} CVEs in {len(paths)} gzip files, {size:.0f} MB "
        f"({seconds:.1f} s to generate) in {work}"
    )
    floor, _ = timed(lambda: [orjson.loads(gzip.decompress(path.read_bytes())) for path in paths])
    print(f"floor: gunzip + orjson.loads of every file: {floor:.1f} s")
    parse, _ = timed(lambda: [load_feed(path).records for path in paths])
    print(f"parse: load_feed into records: {parse:.1f} s ({parse / floor:.1f}x the floor)")
    rng = random.Random(args.seed + 1)
    pairs = [rng.choice(catalogue) for _ in range(args.lookups)]
    database = work / "vulns.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    bench_store("sqlite", f"sqlite:///{database}", paths, pairs, floor, args.naive)
    if args.pg:
        schema = f"bench_feeds_{uuid.uuid4().hex[:10]}"
        try:
            admin = create_engine(args.pg)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as exc:
            print(f"[postgresql] skipped: {args.pg} unreachable ({str(exc).splitlines()[0][:120]})")
            return 0
        try:
            joiner = "&" if "?" in args.pg else "?"
            bench_store(
                "postgresql",
                f"{args.pg}{joiner}options=-csearch_path%3D{schema}",
                paths,
                pairs,
                floor,
                args.naive,
            )
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
