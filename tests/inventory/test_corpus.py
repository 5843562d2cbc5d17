"""Golden inventory tests: the identities the shared corpus's expected logs record are found on the
right devices with the right values.

The expected values are read from the logs shipped beside each capture (CISA ICSNPP's
cip_identity.log, bacnet_discovery.log and bacnet_property.log, Zeek's dhcp.log) and, for S7 SZL
contents that ICSNPP does not log, from tshark's dissection of the same capture. Nothing is typed in
by hand: a capture with other devices gives other expectations.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from fieldward.inventory.fingerprints import Fingerprints
from fieldward.pipeline import analyze
from tests.inventory.helpers import device_for_ip, device_for_mac, load_devices

CIP_IDENTITY_COLUMNS = [
    "ts",
    "uid",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "is_orig",
    "source_h",
    "source_p",
    "destination_h",
    "destination_p",
    "encapsulation_version",
    "socket_address",
    "socket_port",
    "vendor_id",
    "vendor_name",
    "device_type_id",
    "device_type_name",
    "product_code",
    "revision",
    "device_status",
    "serial_number",
    "product_name",
    "device_state",
]
"""cip_identity.log has no header line: the column order of cisagov/icsnpp-enip's README."""


def btest_rows(path: Path, names: list[str] | None = None) -> list[dict[str, str]]:
    """Rows of a btest baseline: by its ``#fields`` line, else by ``names``."""
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            assert names is not None, f"{path}: no #fields line and no column names given"
            rows.append(dict(zip(names, line.split("\t"), strict=True)))
    return rows


@pytest.fixture(scope="module")
def fingerprints() -> Fingerprints:
    return Fingerprints.load()


def run(corpus: Path, tmp: Path, name: str) -> list[dict[str, Any]]:
    analyze([corpus / name], tmp)
    return load_devices(tmp)


def test_cip_identity_on_the_device_that_answered(
    corpus: Path, tmp_path: Path, fingerprints: Fingerprints
) -> None:
    devices = run(corpus, tmp_path, "enip/enip_cip_example.pcap")
    log = corpus / "enip" / "expected" / "analyzer.basic" / "cip_identity.log"
    rows = btest_rows(log, CIP_IDENTITY_COLUMNS)
    assert rows
    for row in rows:
        device = device_for_ip(devices, row["source_h"])
        assert device["mac"] is not None
        assert device["local"]
        assert device["vendor"] == fingerprints.vendor(row["vendor_name"])
        assert device["model"] == row["product_name"]
        assert device["firmware"] == row["revision"]
        assert device["serial"] == row["serial_number"]
        assert device["product_code"] == row["product_code"]
        assert device["device_type"] == "io_module"  # ICSNPP: device type "Communications Adapter"
        assert row["device_type_name"] == "Communications Adapter"
        assert device["purdue_level"] == 1
        assert {"protocol": "enip", "role": "server", "peers": 1} in device["roles"]
        evidence = device["attributes"]["serial"]["evidence"][0]
        assert evidence["source"] == "cip_identity"
        assert evidence["flow_id"] >= 0


def test_bacnet_i_am_and_properties(corpus: Path, tmp_path: Path, fingerprints: Fingerprints) -> None:
    devices = run(corpus, tmp_path, "bacnet/bacnet_example.pcap")
    folder = corpus / "bacnet" / "expected" / "analyzer.basic"
    i_ams = [r for r in btest_rows(folder / "bacnet_discovery.log") if r["pdu_service"] == "i-am"]
    assert len(i_ams) > 10
    for row in i_ams:
        device = device_for_ip(devices, row["source_h"])
        assert device["vendor"] == fingerprints.vendor(row["vendor"]), row
        assert row["instance_number"] in device["facts"]["bacnet.device_instance"]
        assert any(r["protocol"] == "bacnet" and r["role"] == "server" for r in device["roles"])
    # The simulator answers for every address from one MAC: each address is its own BACnet device.
    assert len({row["source_h"] for row in i_ams}) == len(
        {device_for_ip(devices, r["source_h"])["id"] for r in i_ams}
    )
    wanted = {"model-name": "model", "firmware-revision": "firmware", "vendor-name": "vendor"}
    answers = [
        r
        for r in btest_rows(folder / "bacnet_property.log")
        if r["pdu_service"] == "read-property-ack"
        and r["object_type"] == "device"
        and r["property"] in wanted
    ]
    assert answers
    for row in answers:
        device = device_for_ip(devices, row["source_h"])
        name = wanted[row["property"]]
        expected = fingerprints.vendor(row["value"]) if name == "vendor" else row["value"]
        assert expected in [device[name]] + [a["value"] for a in device["attributes"][name]["alternatives"]]


def test_s7_szl_identity_matches_tshark(corpus: Path, tmp_path: Path, tshark: str) -> None:
    devices = run(corpus, tmp_path, "s7comm/snap7.pcap")
    capture = corpus / "s7comm" / "snap7.pcap"
    fields = [
        "ip.src",
        "s7comm.szl.001c.0005.serialn",
        "s7comm.szl.001c.0007.cputypname",
        "s7comm.szl.001c.0002.name",
    ]
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(capture),
            "-Y",
            "s7comm.szl.001c.0005.serialn",
            "-T",
            "fields",
            "-E",
            "separator=|",
        ]
        + [arg for f in fields for arg in ("-e", f)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("|") for line in out if line]
    assert rows
    for source, serial, module_type, name in rows:
        device = device_for_ip(devices, source)
        assert device["vendor"] == "Siemens"
        assert device["serial"] == serial
        assert device["model"] == module_type
        assert device["hostname"] == name
        assert device["device_type"] == "plc"
        assert device["purdue_level"] == 1
        assert device["firmware"] is not None
        assert device["firmware"].startswith("V")


def test_s7_client_is_an_engineering_station(corpus: Path, tmp_path: Path) -> None:
    """The host that reads the SZL of a PLC (ICSNPP's s7comm_read_szl.log requests) does engineering."""
    devices = run(corpus, tmp_path, "s7comm/snap7.pcap")
    lines = (
        (corpus / "s7comm" / "expected" / "analyzer.snap7" / "s7comm_read_szl.log").read_text().splitlines()
    )
    clients = {line.split("\t")[2] for line in lines if line and not line.startswith("#")}
    assert clients
    for ip in clients:
        device = device_for_ip(devices, ip)
        assert "ot-engineering" in device["facts"]["behaviour"]
        assert device["device_type"] == "engineering_workstation"
        assert device["purdue_level"] == 2


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        ("dhcp.pcap", "dhcp.dhcp-all-msg-types"),
        ("dhcp_discover_param_req_and_client_id.pcap", "dhcp.dhcp-discover-msg-types"),
    ],
)
def test_dhcp_host_names_and_leases(corpus: Path, tmp_path: Path, capture: str, expected: str) -> None:
    devices = run(corpus, tmp_path, f"dhcp/{capture}")
    rows = btest_rows(corpus / "dhcp" / "expected" / expected / "dhcp.log")
    named = [r for r in rows if r["host_name"] != "-"]
    assert named
    for row in named:
        device = device_for_mac(devices, row["mac"])
        candidates = [device["hostname"]] + [
            a["value"] for a in device["attributes"]["hostname"]["alternatives"]
        ]
        assert row["host_name"] in candidates
        if row["assigned_addr"] != "-":
            assert row["assigned_addr"] in device["ips"]
    servers = {r["server_addr"] for r in rows if r["server_addr"] != "-"}
    for ip in servers:
        roles = device_for_ip(devices, ip)["roles"]
        assert any(r["protocol"] == "dhcp" and r["role"] == "server" for r in roles)
