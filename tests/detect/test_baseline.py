"""The baseline and policy engine from real bytes: a clean plant is learned (a ``--learn`` capture, a
saved ``baseline.json``, or the first minutes of the analysed capture), then a capture with new
behaviour raises exactly the baseline alerts it should, and nothing when that behaviour was learned.

The plant: an HMI polls two Modbus PLCs, an S7 PLC and a DNP3 outstation; an engineering station
reads one Modbus PLC; an IT host asks the local DNS server. Packets are built with scapy and the
traffic generator's protocol encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.lldp import (
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUPortID,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap
from typer.testing import CliRunner

from fieldward.cli import app
from fieldward.decode.flows import FLOW_SCHEMA
from fieldward.detect.baseline import (
    CATEGORIES,
    DEVICE,
    BaselineDetector,
    address_class,
    flow_services,
)
from fieldward.detect.engine import AlertBook, DetectionContext
from fieldward.detect.knowledge import ANY, AlertRule, Knowledge
from fieldward.detect.settings import DetectionSettings
from fieldward.generator import protocols as p
from fieldward.pipeline import AnalysisOptions, analyze, learn_baseline
from fieldward.protocols.engine import ProtocolSettings
from fieldward.protocols.modbus import ModbusEvent
from tests.inventory.helpers import tcp_session

HMI = ("00:1d:9c:00:00:10", "10.1.2.10")
EWS = ("00:1d:9c:00:00:11", "10.1.2.11")
PLC = ("00:80:f4:00:00:20", "10.1.1.20")
PLC2 = ("00:80:f4:00:00:21", "10.1.1.21")
S7PLC = ("00:1b:1b:00:00:30", "10.1.1.30")
S7PLC2 = ("00:1b:1b:00:00:31", "10.1.1.31")
OUTSTATION = ("00:50:c2:00:00:40", "10.1.1.40")
IT_HOST = ("00:50:56:00:00:50", "10.1.3.50")
DNS_SERVER = ("00:50:56:00:00:05", "10.1.3.5")
ROGUE = ("00:0c:29:00:00:99", "10.1.2.99")
GATEWAY_MAC = "00:11:22:33:44:55"
SWITCH_MAC = "00:1b:1b:aa:00:01"
NEW_SWITCH_MAC = "00:1b:1b:aa:00:02"
INTERNET = "8.8.8.8"
START = 1_700_000_000.0

MODBUS_IDENTITY = ["Schneider Electric", "BMX P34 2020", "v2.8"]
S7_ORDER = "6ES7 315-2EH14-0AB0"


# ------------------------------------------------------------------------------------ traffic


def modbus(tid: int, pdu: bytes, unit: int = 1) -> bytes:
    return p.modbus_adu(tid, unit, pdu)


def read(tid: int, function: int = 3, address: int = 0, quantity: int = 10) -> list[tuple[bool, bytes]]:
    return [
        (True, modbus(tid, p.modbus_read_request(function, address, quantity))),
        (False, modbus(tid, p.modbus_read_response(function, list(range(quantity))))),
    ]


def write_single(tid: int, address: int, value: int) -> list[tuple[bool, bytes]]:
    pdu = p.modbus_write_single_register(address, value)
    return [(True, modbus(tid, pdu)), (False, modbus(tid, pdu))]


def write_multiple(tid: int, address: int, values: list[int]) -> list[tuple[bool, bytes]]:
    return [
        (True, modbus(tid, p.modbus_write_multiple_request(address, values))),
        (False, modbus(tid, p.modbus_write_multiple_response(address, len(values)))),
    ]


def device_id(tid: int, objects: list[str]) -> list[tuple[bool, bytes]]:
    return [
        (True, modbus(tid, p.modbus_device_id_request())),
        (False, modbus(tid, p.modbus_device_id_response(objects))),
    ]


def s7_flights(write: bool, firmware: tuple[int, int, int] | None = None) -> list[tuple[bool, bytes]]:
    """An S7 session: connect, setup, a read; an engineering tool also reads SZL 0x0011 (module
    identification: firmware), an HMI may write a variable."""
    item = p.S7Item(p.S7_AREA_DB, 1, 0, 4)
    flights = [
        (True, p.cotp_connection_request(1, 0x0100, 0x0102)),
        (False, p.cotp_connection_confirm(1, 2, 0x0100, 0x0102)),
        (True, p.s7_setup_request(1)),
        (False, p.s7_setup_response(1)),
        (True, p.s7_read_request(2, [item])),
        (False, p.s7_read_response(2, [b"\x00\x01\x02\x03"])),
    ]
    if firmware is not None:
        identity = p.szl_module_identification(S7_ORDER, firmware)
        flights += [
            (True, p.s7_szl_request(3, 0x0011, 0)),
            (False, p.s7_szl_response(3, 0x0011, 0, 28, identity)),
        ]
    if write:
        flights += [(True, p.s7_write_request(4, item, b"\x00\x00\x00\x07")), (False, p.s7_write_response(4))]
    return flights


def dnp3_flights(function: int) -> list[tuple[bool, bytes]]:
    objects = p.DNP3_CLASS0 if function == p.DNP3_READ else bytes([80, 1, 0x00, 7, 7, 0x00])
    return [
        (True, p.dnp3_request(1, 10, 0, 0, function, objects)),
        (False, p.dnp3_response(10, 1, 0, 0, 0, p.dnp3_static_objects([True], [42], [7]))),
    ]


def dns_exchange(client: tuple[str, str], name: str, sport: int) -> list[Packet]:
    query = (
        Ether(src=client[0], dst=DNS_SERVER[0])
        / IP(src=client[1], dst=DNS_SERVER[1])
        / UDP(sport=sport, dport=53)
        / DNS(id=sport, rd=1, qd=DNSQR(qname=name))
    )
    answer = (
        Ether(src=DNS_SERVER[0], dst=client[0])
        / IP(src=DNS_SERVER[1], dst=client[1])
        / UDP(sport=53, dport=sport)
        / DNS(id=sport, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.1.3.7"))
    )
    return [query, answer]


def lldp(mac: str, name: bytes) -> Packet:
    return (
        Ether(src=mac, dst="01:80:c2:00:00:0e")
        / LLDPDUChassisID(subtype=4, id=mac)
        / LLDPDUPortID(subtype=5, id=b"P1.3")
        / LLDPDUTimeToLive(ttl=120)
        / LLDPDUSystemName(system_name=name)
        / LLDPDUEndOfLLDPDU()
    )


def clean_plant() -> list[Packet]:
    """The learned behaviour."""
    hmi_plc = read(1) + read(2, function=3, address=100, quantity=20) + write_single(3, 200, 5)
    hmi_plc += device_id(4, MODBUS_IDENTITY)
    packets = tcp_session(HMI, PLC, 502, hmi_plc, cport=50001)
    packets += tcp_session(HMI, PLC2, 502, read(5), cport=50002)
    packets += tcp_session(EWS, PLC, 502, read(6, function=4), cport=50003)
    packets += tcp_session(HMI, S7PLC, 102, s7_flights(write=False), cport=50004)
    packets += tcp_session(HMI, S7PLC2, 102, s7_flights(write=False), cport=50014)
    packets += tcp_session(EWS, S7PLC, 102, s7_flights(write=False, firmware=(3, 2, 6)), cport=50024)
    packets += tcp_session(HMI, OUTSTATION, 20000, dnp3_flights(p.DNP3_READ), cport=50005)
    packets += dns_exchange(IT_HOST, "historian.plant.local", 40001)
    packets.append(lldp(SWITCH_MAC, b"sw-cell1"))
    return packets


def internet_session(client: tuple[str, str], cport: int) -> list[Packet]:
    hello = b"\x16\x03\x01\x00\x05hello"
    return tcp_session(
        client,
        (GATEWAY_MAC, INTERNET),
        443,
        [(True, hello), (False, b"\x15\x03\x03\x00\x02\x02\x28")],
        cport=cport,
    )


def new_behaviour() -> list[Packet]:
    """Every kind of new behaviour, once."""
    packets = tcp_session(ROGUE, PLC, 502, write_multiple(20, 300, [1, 2]), cport=51001)  # new device
    packets += tcp_session(EWS, PLC2, 502, read(21), cport=51002)  # new pair of known devices
    hmi_plc = read(22, address=5000) + write_multiple(23, 300, [9])  # new range, new function
    hmi_plc += device_id(24, ["Schneider Electric", "BMX P58 4040", "v2.8"])  # model changed
    packets += tcp_session(HMI, PLC, 502, hmi_plc, cport=51003)
    packets += tcp_session(EWS, PLC, 502, write_single(25, 200, 1), cport=51004)  # EWS is a master
    packets += tcp_session(
        HMI, PLC, 22, [(True, b"SSH-2.0-OpenSSH_9.6\r\n"), (False, b"SSH-2.0-dropbear\r\n")], cport=51005
    )
    packets += tcp_session(HMI, S7PLC, 102, s7_flights(write=True), cport=51006)  # HMI: a new write
    packets += tcp_session(EWS, S7PLC, 102, s7_flights(write=False, firmware=(4, 0, 0)), cport=51016)
    # the engineering station goes online with the other S7 PLC (expected), and writes (new for it)
    packets += tcp_session(EWS, S7PLC2, 102, s7_flights(write=True, firmware=(3, 2, 6)), cport=51026)
    packets += tcp_session(HMI, OUTSTATION, 20000, dnp3_flights(0x02), cport=51007)
    packets += internet_session(PLC, 51008)  # OT device to the internet
    packets += internet_session(IT_HOST, 51009)  # an IT host: not an OT device
    packets += [lldp(SWITCH_MAC, b"sw-cell1"), lldp(NEW_SWITCH_MAC, b"sw-cell2")]  # a new switch
    return packets


def write_capture(path: Path, packets: list[Packet], start: float = START) -> Path:
    for index, packet in enumerate(packets):
        packet.time = start + index * 0.01
    wrpcap(str(path), packets)
    return path


def read_alerts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def baseline_alerts(out: Path) -> list[dict[str, Any]]:
    return [a for a in read_alerts(out) if a["engine"] == "baseline"]


def keyed(alerts: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(a["type"].split(".", 1)[1], a["src"], a["dst"]): a for a in alerts}


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("baseline")
    clean = write_capture(folder / "clean.pcap", clean_plant())
    new = write_capture(folder / "new.pcap", new_behaviour(), start=START + 3600)
    return clean, new


@pytest.fixture(scope="module")
def learned_run(captures: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    clean, new = captures
    out = tmp_path_factory.mktemp("learned") / "out"
    analyze([new], out, AnalysisOptions(learn_captures=(clean,)))
    return out


EXPECTED = {
    ("new_device", ROGUE[1], ROGUE[1]),
    ("new_communication_pair", ROGUE[1], PLC[1]),
    ("modbus_write_from_unknown_master", ROGUE[1], PLC[1]),
    ("new_communication_pair", EWS[1], PLC2[1]),
    ("new_register_range", HMI[1], PLC[1]),
    ("new_function", HMI[1], PLC[1]),
    ("identity_changed", PLC[1], PLC[1]),
    ("new_function", EWS[1], PLC[1]),
    ("new_register_range", EWS[1], PLC[1]),  # it only read input registers while learning
    ("new_protocol", HMI[1], PLC[1]),
    ("new_function", HMI[1], S7PLC[1]),
    ("new_function", EWS[1], "*"),  # an engineering station is judged as a role, not per PLC
    ("firmware_changed", S7PLC[1], S7PLC[1]),
    ("new_function", HMI[1], OUTSTATION[1]),
    ("new_external_destination", PLC[1], INTERNET),
    ("new_device", NEW_SWITCH_MAC, NEW_SWITCH_MAC),  # a layer-2 speaker is a device by its MAC
}


# --------------------------------------------------------------------------------------- tests


def test_every_new_behaviour_raises_its_alert(learned_run: Path) -> None:
    found = keyed(baseline_alerts(learned_run))
    assert set(found) == EXPECTED
    for alert in found.values():
        assert alert["mitre"]
        assert all(t.startswith("T08") for t in alert["mitre"])
        assert alert["recommendation"]
        assert alert["severity"] in ("medium", "high")
        assert alert["details"]["behaviours"], alert  # the exact baseline keys, for an analyst's learn


def test_alerts_explain_who_did_what_to_which_device(learned_run: Path) -> None:
    found = keyed(baseline_alerts(learned_run))
    rogue = found[("new_device", ROGUE[1], ROGUE[1])]
    assert ROGUE[1] in rogue["explanation"]
    assert PLC[1] in rogue["explanation"]
    assert rogue["protocol"] == "modbus"
    write = found[("modbus_write_from_unknown_master", ROGUE[1], PLC[1])]
    assert write["severity"] == "high"
    assert "T0855" in write["mitre"]
    assert "WRITE_MULTIPLE_REGISTERS" in write["explanation"]
    assert "address 300" in write["explanation"]
    assert sorted(write["details"]["learned_masters"]) == sorted([HMI[1], EWS[1]])
    assert write["evidence"][0]["flow_id"] >= 0
    modbus_functions = found[("new_function", HMI[1], PLC[1])]
    assert modbus_functions["details"]["functions"] == ["WRITE_MULTIPLE_REGISTERS"]
    assert "READ_HOLDING_REGISTERS" in modbus_functions["details"]["learned_functions"]
    assert found[("new_function", EWS[1], PLC[1])]["details"]["functions"] == ["WRITE_SINGLE_REGISTER"]
    assert found[("new_function", HMI[1], S7PLC[1])]["details"]["functions"] == ["Write Variable"]
    engineering = found[("new_function", EWS[1], "*")]
    assert engineering["details"]["functions"] == [f"Write Variable ({S7PLC2[1]})"]
    assert engineering["explanation"].startswith(f"engineering station {EWS[1]} sent s7comm Write Variable")
    assert found[("new_function", HMI[1], OUTSTATION[1])]["details"]["functions"] == ["WRITE"]
    ranges = found[("new_register_range", HMI[1], PLC[1])]
    assert sorted(ranges["details"]["ranges"]) == [
        "unit 1 holding_registers:300-399",  # the new FC 16 write
        "unit 1 holding_registers:5000-5099",
    ]
    protocol = found[("new_protocol", HMI[1], PLC[1])]
    assert protocol["protocol"] in ("ssh", "tcp/22")
    assert protocol["details"]["learned_services"] == ["modbus"]
    firmware = found[("firmware_changed", S7PLC[1], S7PLC[1])]
    assert firmware["details"]["learned"] == ["V3.2.6"]
    assert firmware["details"]["observed"] == "V4.0.0"
    assert firmware["mitre"] == ["T0857", "T0839"]
    identity = found[("identity_changed", PLC[1], PLC[1])]
    changed = " ".join(identity["details"]["changes"])
    assert "BMX P34 2020 -> BMX P58 4040" in changed
    external = found[("new_external_destination", PLC[1], INTERNET)]
    assert external["severity"] == "high"
    assert "OT device" in external["explanation"]


def test_functions_are_judged_alike_on_the_columnar_and_the_per_event_path(
    captures: tuple[Path, Path], learned_run: Path, tmp_path: Path
) -> None:
    clean, new = captures
    slow = AnalysisOptions(learn_captures=(clean,), protocols=ProtocolSettings(fast_path=False))
    analyze([new], tmp_path / "slow", slow)
    fast = {(a["id"], a["count"]) for a in baseline_alerts(learned_run)}
    assert {(a["id"], a["count"]) for a in baseline_alerts(tmp_path / "slow")} == fast


def test_learned_behaviour_raises_nothing(captures: tuple[Path, Path], tmp_path: Path) -> None:
    clean, new = captures
    analyze([new], tmp_path / "out", AnalysisOptions(learn_captures=(clean, new)))
    assert baseline_alerts(tmp_path / "out") == []


def test_without_a_baseline_the_engine_is_silent(captures: tuple[Path, Path], tmp_path: Path) -> None:
    _, new = captures
    analyze([new], tmp_path / "out")
    assert baseline_alerts(tmp_path / "out") == []
    behaviours = json.loads((tmp_path / "out" / "baseline.json").read_text())["behaviours"]
    assert not any(behaviours.get(category) for category in CATEGORIES)  # nothing learned either


def test_new_behaviour_is_not_added_to_the_baseline(learned_run: Path) -> None:
    knowledge = Knowledge.load(learned_run / "baseline.json")
    assert knowledge.knows(DEVICE, (PLC[1],))
    assert knowledge.knows("pair", (HMI[1], PLC[1]))
    assert knowledge.knows("modbus_master", (EWS[1], PLC[1]))
    assert not knowledge.knows(DEVICE, (ROGUE[1],))
    assert not knowledge.knows("pair", (EWS[1], PLC2[1]))
    assert not knowledge.knows("function", (HMI[1], PLC[1], "modbus", "WRITE_MULTIPLE_REGISTERS"))
    assert knowledge.knows("function", (HMI[1], PLC[1], "modbus", "READ_HOLDING_REGISTERS"))
    assert knowledge.knows("register_range", (HMI[1], PLC[1], "1", "holding_registers:200-299"))
    assert knowledge.knows("attribute", (S7PLC[1], "firmware", "SZL 0x0011 firmware", "V3.2.6"))
    assert knowledge.knows("external", (IT_HOST[1], INTERNET)) is False
    assert knowledge.knows("engineering", (EWS[1], "s7comm"))  # it read SZL while learning
    assert not knowledge.knows("engineering", (HMI[1], "s7comm"))
    assert not knowledge.knows("attribute", (S7PLC2[1], "firmware", "SZL 0x0011 firmware", "V3.2.6"))


def test_baseline_file_round_trips(captures: tuple[Path, Path], learned_run: Path, tmp_path: Path) -> None:
    clean, new = captures
    saved = learn_baseline([clean])
    saved.save(tmp_path / "baseline.json")
    first = json.loads((learned_run / "baseline.json").read_text())
    assert json.loads((tmp_path / "baseline.json").read_text())["behaviours"] == first["behaviours"]
    analyze([new], tmp_path / "again", AnalysisOptions(baseline=learned_run / "baseline.json"))
    again = baseline_alerts(tmp_path / "again")
    assert {(a["id"], a["count"], a["explanation"]) for a in again} == {
        (a["id"], a["count"], a["explanation"]) for a in baseline_alerts(learned_run)
    }
    assert json.loads((tmp_path / "again" / "baseline.json").read_text())["behaviours"] == first["behaviours"]


def test_learned_alerts_and_mutes_suppress(
    learned_run: Path, captures: tuple[Path, Path], tmp_path: Path
) -> None:
    _, new = captures
    knowledge = Knowledge.load(learned_run / "baseline.json")
    knowledge.learned.add(AlertRule("baseline.new_register_range", HMI[1], PLC[1]))
    knowledge.mutes.add(AlertRule("baseline.new_function", ANY, ANY))
    knowledge.save(tmp_path / "baseline.json")
    analyze([new], tmp_path / "out", AnalysisOptions(baseline=tmp_path / "baseline.json"))
    found = keyed(baseline_alerts(tmp_path / "out"))
    learned = ("new_register_range", HMI[1], PLC[1])
    assert set(found) == {k for k in EXPECTED if k[0] != "new_function" and k != learned}
    assert ("new_register_range", EWS[1], PLC[1]) in found  # the rule names one pair only
    suppressed = json.loads((tmp_path / "out" / "summary.json").read_text())["alerts_suppressed"]
    assert suppressed.get("learned", 0) >= 1
    assert suppressed.get("muted", 0) >= 4


def timed(packets: list[Packet], start: float) -> list[Packet]:
    for index, packet in enumerate(packets):
        packet.time = start + index * 0.01
    return packets


def test_learn_minutes_learns_the_start_of_the_capture(tmp_path: Path) -> None:
    """``--learn-minutes 1`` on one capture: the clean plant in the first seconds, the new behaviour two
    minutes later. A session of the HMI with a third PLC starts while learning and runs on after a
    second, short connection of the same pair has ended: that flow is reported first, and must wait
    for the long one (reported last, learned) instead of being a new pair and a new device."""
    plc3 = ("00:80:f4:00:00:22", "10.1.1.22")
    long_session = tcp_session(HMI, plc3, 502, read(40) + read(41) + read(43), cport=50100)
    again = tcp_session(HMI, plc3, 502, read(42), cport=50101)
    packets = timed(long_session[:5] + clean_plant(), START)
    packets += timed(new_behaviour() + again, START + 120)
    packets += timed(long_session[5:7], START + 250) + timed(long_session[7:], START + 500)
    wrpcap(str(tmp_path / "one.pcap"), packets)
    command = ["analyze", str(tmp_path / "one.pcap"), "-o", str(tmp_path / "out"), "-q"]
    result = CliRunner().invoke(app, [*command, "--learn-minutes", "1", "--batch-packets", "8"])
    assert result.exit_code == 0, result.output
    assert set(keyed(baseline_alerts(tmp_path / "out"))) == EXPECTED
    knowledge = Knowledge.load(tmp_path / "out" / "baseline.json")
    assert knowledge.knows("pair", (HMI[1], plc3[1]))
    assert not knowledge.knows(DEVICE, (ROGUE[1],))


def test_flow_orientation_gives_one_key_whoever_sent_first() -> None:
    def flow(
        orig: str,
        resp: str,
        oport: int,
        rport: int,
        proto: str,
        history: str,
        service: str | None,
        opkts: int = 3,
        rpkts: int = 3,
    ) -> dict[str, Any]:
        return {
            "orig_ip": orig,
            "resp_ip": resp,
            "orig_port": oport,
            "resp_port": rport,
            "proto": proto,
            "history": history,
            "service": service,
            "orig_pkts": opkts,
            "resp_pkts": rpkts,
        }

    rows = [
        flow("10.0.0.1", "10.0.0.2", 50000, 502, "tcp", "ShADadFf", "modbus"),  # normal
        flow("10.0.0.2", "10.0.0.1", 502, 50000, "tcp", "Dd", "modbus"),  # continued, server first
        flow("10.0.0.5", "10.0.0.4", 2222, 2222, "udp", "Dd", "enip"),  # CIP I/O, either way
        flow("10.0.0.4", "10.0.0.5", 2222, 2222, "udp", "Dd", "enip"),
        flow("10.0.0.9", "10.0.0.8", 67, 68, "udp", "Dd", "dhcp"),  # server answers
        flow("10.0.0.7", "10.0.0.6", 8280, 46268, "udp", "D", None, rpkts=0),  # RTP, negotiated ports
        flow("10.0.0.6", "10.0.0.7", 46269, 8281, "udp", "Dd", None),
        flow("10.0.0.1", "10.0.0.3", 3, 1, "icmp", "", None, rpkts=0),  # unreachable: no conversation
        flow("10.0.0.1", "10.0.0.2", 40000, 23, "tcp", "S", None, rpkts=0),  # unanswered SYN
        flow("10.0.0.1", "10.0.0.2", 40000, 23, "tcp", "Sr", None, rpkts=1),  # rejected
        flow("10.0.0.1", "10.0.0.2", 40001, 3389, "tcp", "ShAD", None),
    ]
    out = flow_services(pa.Table.from_pylist(rows))
    keys = list(
        zip(out["client"].to_pylist(), out["server"].to_pylist(), out["service"].to_pylist(), strict=True)
    )
    assert keys[0] == keys[1] == ("10.0.0.1", "10.0.0.2", "modbus")
    assert keys[2] == keys[3] == ("10.0.0.4", "10.0.0.5", "enip")
    assert keys[4] == ("10.0.0.8", "10.0.0.9", "dhcp")
    assert keys[5] == keys[6] == ("10.0.0.6", "10.0.0.7", "udp/high")
    assert keys[10] == ("10.0.0.1", "10.0.0.2", "tcp/3389")
    conversation = out["conversation"].to_pylist()
    assert conversation[:7] == [True] * 7
    assert conversation[7:10] == [False, False, False]
    assert out["answered"].to_pylist()[7:10] == [False, False, True]  # a RST proves the host exists


def test_address_classes() -> None:
    assert address_class("10.1.2.3") == address_class("fe80::1") == address_class("192.168.0.7") == "local"
    assert address_class("8.8.8.8") == address_class("2001:4860::8888") == "global"
    for special in ("255.255.255.255", "10.1.2.255", "224.0.0.251", "0.0.0.0", "ff02::1", "127.0.0.1", "::"):
        assert address_class(special) == "special"
    assert address_class("nonsense") == address_class(None) == "invalid"


# ------------------------------------------------------------------------------- hostile input


def learned_context() -> DetectionContext:
    knowledge = Knowledge()
    knowledge.learn(DEVICE, ("10.0.0.1",))
    knowledge.learn("pair", ("10.0.0.1", "10.0.0.2"))
    knowledge.learn("protocol", ("10.0.0.1", "10.0.0.2", "modbus"))
    knowledge.learn("function", ("10.0.0.1", "10.0.0.2", "modbus", "READ_COILS"))
    knowledge.learn("register_range", ("10.0.0.1", "10.0.0.2", "1", "coils:0-99"))
    knowledge.learn("modbus_master", ("10.0.0.1", "10.0.0.2"))
    knowledge.learn("bogus", ("x",))
    knowledge.learn("function", ("too", "short"))  # a malformed key of a hand-edited file
    return DetectionContext(DetectionSettings(learn_minutes=0.5), knowledge)


ADDRESSES = st.sampled_from(
    ["10.0.0.1", "10.0.0.2", "8.8.8.8", "255.255.255.255", "0.0.0.0", "::1", "fe80::2", "", "x"]
)
NS = st.integers(min_value=0, max_value=2**62)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "flow_id": st.integers(-1, 2**40),
                "first_ts": NS,
                "last_ts": NS,
                "orig_ip": st.one_of(st.none(), ADDRESSES),
                "resp_ip": st.one_of(st.none(), ADDRESSES),
                "orig_port": st.integers(0, 65535),
                "resp_port": st.integers(0, 65535),
                "proto": st.sampled_from(["tcp", "udp", "icmp", "icmpv6", "sctp", "47"]),
                "history": st.text(alphabet="ShHADdFfRr^x", max_size=8),
                "orig_pkts": st.integers(0, 10),
                "resp_pkts": st.integers(0, 10),
                "service": st.one_of(st.none(), st.sampled_from(["modbus", "enip", "dns", "", "??"])),
            }
        ),
        max_size=30,
    )
)
def test_random_flow_tables_never_raise(rows: list[dict[str, Any]]) -> None:
    names = [f.name for f in FLOW_SCHEMA]
    columns = {name: [row.get(name) for row in rows] for name in names}
    schema = FLOW_SCHEMA.append(pa.field("service", pa.string()))
    columns["service"] = [row["service"] for row in rows]
    table = pa.Table.from_pydict(columns, schema=schema)
    context = learned_context()
    detector = BaselineDetector(AlertBook(context), context)
    context.observe_time(min((r["first_ts"] for r in rows), default=0))
    detector.on_flows(table)
    detector.on_flows(table)
    detector.finish()
    for alert in detector.alerts:
        assert alert.type.id.startswith("baseline.")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            NS,
            ADDRESSES,
            ADDRESSES,
            st.booleans(),
            st.integers(0, 255),
            st.integers(0, 255),
            st.sampled_from(["REQ", "RESP", "x"]),
            st.one_of(st.none(), st.integers(0, 65535)),
            st.one_of(st.none(), st.integers(0, 65535)),
        ),
        max_size=30,
    )
)
def test_random_modbus_events_never_raise(rows: list[tuple[Any, ...]]) -> None:
    context = learned_context()
    detector = BaselineDetector(AlertBook(context), context)
    context.observe_time(0)
    for ts, orig, resp, is_orig, unit, code, kind, address, quantity in rows:
        detector.on_event(
            ModbusEvent(
                ts=ts,
                flow_id=1,
                orig_h=orig,
                orig_p=1,
                resp_h=resp,
                resp_p=502,
                is_orig=is_orig,
                tid=1,
                unit=unit,
                function_code=code,
                func=f"unknown-{code}",
                pdu_type=kind,
                len=6,
                address=address,
                quantity=quantity,
                write_start_address=address,
                write_quantity=quantity,
            )
        )
    detector.finish()
    for alert in detector.alerts:
        assert alert.type.id.startswith("baseline.")


def test_a_device_first_identified_after_learning_is_its_own_reference(
    captures: tuple[Path, Path], tmp_path: Path
) -> None:
    """PLC2 never answered an identification while learning: its first answer is no alert, a later
    different firmware is (compared with the first answer, which is not added to the baseline)."""
    clean, _ = captures
    packets = tcp_session(HMI, PLC2, 502, device_id(1, ["Acme", "X1", "v1.0"]), cport=52001)
    packets += tcp_session(HMI, PLC2, 502, device_id(2, ["Acme", "X1", "v1.0"]), cport=52002)
    packets += tcp_session(HMI, PLC2, 502, device_id(3, ["Acme", "X1", "v1.1"]), cport=52003)
    judged = write_capture(tmp_path / "judged.pcap", packets, start=START + 7200)
    analyze([judged], tmp_path / "out", AnalysisOptions(learn_captures=(clean,)))
    found = keyed(baseline_alerts(tmp_path / "out"))
    assert set(found) == {("firmware_changed", PLC2[1], PLC2[1]), ("new_function", HMI[1], PLC2[1])}  # FC 43
    alert = found[("firmware_changed", PLC2[1], PLC2[1])]
    assert "earlier in this capture" in alert["explanation"]
    assert (alert["details"]["learned"], alert["details"]["observed"], alert["count"]) == (
        ["v1.0"],
        "v1.1",
        1,
    )
    knowledge = Knowledge.load(tmp_path / "out" / "baseline.json")
    assert not any(key[0] == PLC2[1] for key in knowledge.behaviours.get("attribute", ()))


def test_an_analysts_learn_teaches_the_baseline_keys(captures: tuple[Path, Path], tmp_path: Path) -> None:
    """``fieldward alerts DIR learn ID`` adds the keys of ``details.behaviours``: the next run does not
    even raise the alert (nothing to suppress), while the other new behaviour still alerts."""
    clean, new = captures
    out = tmp_path / "out"
    analyze([new], out, AnalysisOptions(learn_captures=(clean,)))
    pair = keyed(baseline_alerts(out))[("new_communication_pair", EWS[1], PLC2[1])]
    assert pair["details"]["behaviours"] == [
        ["pair", EWS[1], PLC2[1]],
        ["protocol", EWS[1], PLC2[1], "modbus"],
    ]
    result = CliRunner().invoke(app, ["alerts", str(out), "learn", pair["id"], "--by", "test"])
    assert result.exit_code == 0, result.output
    analyze([new], tmp_path / "next", AnalysisOptions(baseline=out / "baseline.json"))
    found = keyed(baseline_alerts(tmp_path / "next"))
    assert set(found) == EXPECTED - {("new_communication_pair", EWS[1], PLC2[1])}
