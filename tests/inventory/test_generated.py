"""The inventory of a generated plant against the generator's ground truth (types, vendors, levels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fieldward.generator import GeneratorConfig, generate_capture
from fieldward.generator.truth import plant_truth, score
from fieldward.pipeline import analyze
from tests.inventory.helpers import load_devices

CONFIG = GeneratorConfig(devices=36, minutes=4.0, seed=3, camera_streams=False)


@pytest.fixture(scope="module")
def plant(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Path]:
    folder = tmp_path_factory.mktemp("plant")
    capture = folder / "plant.pcap"
    generate_capture(capture, CONFIG)
    analyze([capture], folder / "out")
    return plant_truth(CONFIG), load_devices(folder / "out"), folder / "out"


def test_every_simulated_device_is_found_once(
    plant: tuple[list[dict[str, Any]], list[dict[str, Any]], Path],
) -> None:
    truth, devices, _ = plant
    macs = [d["mac"] for d in devices if d["mac"]]
    assert len(macs) == len(set(macs))
    for item in truth:
        (device,) = [d for d in devices if d["mac"] == item["mac"]]
        assert item["ip"] in device["ips"]
        assert device["local"]


@pytest.mark.parametrize(
    ("attribute", "target"), [("vendor", 0.95), ("device_type", 0.95), ("purdue_level", 0.9)]
)
def test_precision_and_recall_meet_the_targets(
    plant: tuple[list[dict[str, Any]], list[dict[str, Any]], Path], attribute: str, target: float
) -> None:
    truth, devices, _ = plant
    row = score(truth, devices)[attribute]
    assert row["precision"] >= target, row
    assert row["recall"] >= target, row


def test_identities_the_plant_announces(
    plant: tuple[list[dict[str, Any]], list[dict[str, Any]], Path],
) -> None:
    """Where a PLC said who it is (ListIdentity, SZL, FC 43/14), model and firmware are exact."""
    truth, devices, _ = plant
    by_mac = {d["mac"]: d for d in devices}
    checked = 0
    for item in truth:
        device = by_mac[item["mac"]]
        if item["firmware"] is not None and device["firmware"] is not None:
            assert device["firmware"] == item["firmware"]
            assert device["model"] == item["model"]
            checked += 1
    assert checked >= 5


def test_communications_form_the_network_map(
    plant: tuple[list[dict[str, Any]], list[dict[str, Any]], Path],
) -> None:
    import pyarrow.parquet as pq

    truth, devices, out = plant
    edges = pq.read_table(out / "communications.parquet").to_pylist()
    ids = {d["id"] for d in devices}
    assert edges
    for edge in edges:
        assert edge["src_device"] in ids
        assert edge["dst_device"] in ids
        assert edge["flows"] >= 1
        assert edge["src_packets"] + edge["dst_packets"] > 0
        assert edge["first_ts"] <= edge["last_ts"]
    by_ip = {ip: d["id"] for d in devices for ip in d["ips"]}
    hmi = next(t for t in truth if t["role"] == "hmi")
    polled = {(e["dst_device"], e["service"]) for e in edges if e["src_device"] == by_ip[hmi["ip"]]}
    assert any(service in ("modbus", "s7comm", "enip") for _, service in polled)
    summary = json.loads((out / "devices.json").read_text())["summary"]
    assert summary["devices"] == len(devices)
    assert summary["communications"] == len(edges)
