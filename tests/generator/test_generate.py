"""End to end: determinism, time order, scaling, and tshark's verdict on a generated capture."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
from pathlib import Path

import pytest

from fieldward.errors import ConfigError
from fieldward.generator import GeneratorConfig, GeneratorStats, estimate_packets, generate_capture

SMALL = GeneratorConfig(devices=40, minutes=0.5, seed=1)
"""30 s of a 40-device plant: every role, boot-time DHCP/DNS/ARP, an engineering session."""
CHECKSUMS = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]


def records(data: bytes) -> list[tuple[int, bytes]]:
    """(timestamp in us, frame) of every record of a microsecond pcap."""
    out = []
    at = 24
    while at < len(data):
        sec, usec, caplen, _ = struct.unpack("<IIII", data[at : at + 16])
        out.append((sec * 1_000_000 + usec, data[at + 16 : at + 16 + caplen]))
        at += 16 + caplen
    return out


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneratorStats]:
    path = tmp_path_factory.mktemp("generated") / "plant.pcap"
    return path, generate_capture(path, SMALL)


def run_tshark(tshark: str, path: Path, *args: str) -> str:
    result = subprocess.run([tshark, "-r", str(path), *args], capture_output=True, text=True, check=True)
    return result.stdout


def test_same_seed_same_bytes(small_capture: tuple[Path, GeneratorStats], tmp_path: Path) -> None:
    path, _ = small_capture
    again = tmp_path / "again.pcap"
    generate_capture(again, SMALL)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()


def test_other_seed_other_bytes() -> None:
    config = GeneratorConfig(devices=20, minutes=0.1, seed=1)
    first, second, other = io.BytesIO(), io.BytesIO(), io.BytesIO()
    generate_capture(first, config)
    generate_capture(second, config)
    generate_capture(other, GeneratorConfig(devices=20, minutes=0.1, seed=2))
    assert first.getvalue() == second.getvalue()
    assert first.getvalue() != other.getvalue()


def test_small_chunks_keep_time_order() -> None:
    """Packets that run past a chunk's end are carried into the next one, still in time order."""
    small, large = io.BytesIO(), io.BytesIO()
    stats = generate_capture(small, GeneratorConfig(devices=24, minutes=0.2, chunk_packets=1000))
    reference = generate_capture(large, GeneratorConfig(devices=24, minutes=0.2))
    times = [t for t, _ in records(small.getvalue())]
    assert len(times) == stats.packets
    assert times == sorted(times)
    assert stats.packets == pytest.approx(reference.packets, rel=0.02)


def test_time_order_and_window(small_capture: tuple[Path, GeneratorStats]) -> None:
    path, stats = small_capture
    rows = records(path.read_bytes())
    times = [t for t, _ in rows]
    assert len(rows) == stats.packets
    assert times == sorted(times)
    start = round(SMALL.start_ts * 1e6)
    assert start <= times[0]
    assert times[-1] < start + 30_000_000
    assert sum(len(frame) for _, frame in rows) == stats.bytes


def test_stats(small_capture: tuple[Path, GeneratorStats]) -> None:
    path, stats = small_capture
    assert stats.devices == 40
    assert stats.file_bytes == path.stat().st_size
    assert sum(stats.packets_by_protocol.values()) == stats.packets
    expected = {"modbus", "s7comm", "enip", "cip_io", "dnp3", "mqtt", "rtp", "rtsp", "dhcp", "dns", "arp"}
    assert expected <= set(stats.packets_by_protocol)
    assert expected <= set(stats.flows_by_protocol)
    assert stats.packets_by_protocol["rtp"] > stats.packets_by_protocol["modbus"]


def test_progress_and_gzip(tmp_path: Path) -> None:
    seen: list[int] = []
    config = GeneratorConfig(devices=16, minutes=0.2, chunk_packets=1000)
    stats = generate_capture(tmp_path / "p.pcap.gz", config, progress=seen.append)
    assert seen == sorted(seen)
    assert len(seen) > 1
    assert seen[-1] == stats.packets
    assert (tmp_path / "p.pcap.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_packet_count_scales_with_devices_and_minutes() -> None:
    base = estimate_packets(GeneratorConfig(devices=80, minutes=10))
    assert 1.8e6 < base < 2.6e6  # the documented benchmark size
    assert estimate_packets(GeneratorConfig(devices=80, minutes=20)) == pytest.approx(2 * base, rel=0.05)
    assert estimate_packets(GeneratorConfig(devices=160, minutes=10)) == pytest.approx(2 * base, rel=0.15)


def test_estimate_matches_generation() -> None:
    config = GeneratorConfig(devices=40, minutes=1.0)
    out = io.BytesIO()
    stats = generate_capture(out, config)
    assert stats.packets == pytest.approx(estimate_packets(config), rel=0.1)


def test_camera_streams_off() -> None:
    stats = generate_capture(io.BytesIO(), GeneratorConfig(devices=40, minutes=0.1, camera_streams=False))
    assert "rtp" not in stats.packets_by_protocol
    assert "rtsp" not in stats.packets_by_protocol


@pytest.mark.parametrize(
    "kwargs",
    [
        {"devices": 0},
        {"minutes": 0},
        {"minutes": float("nan")},
        {"seed": -1},
        {"camera_kbps": 10},
        {"start_ts": -5.0},
    ],
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


def test_tshark_dissects_every_protocol(small_capture: tuple[Path, GeneratorStats], tshark: str) -> None:
    path, _ = small_capture
    hierarchy = run_tshark(tshark, path, "-q", "-z", "io,phs")
    names = {line.split()[0] for line in hierarchy.splitlines() if "frames:" in line}
    expected = {"mbtcp", "modbus", "s7comm", "cotp", "enip", "cip", "cipio", "cipcm", "dnp3", "mqtt"}
    expected |= {"dhcp", "dns", "arp", "rtsp", "rtp", "rtcp"}
    assert expected <= names, expected - names


def test_tshark_finds_nothing_wrong(small_capture: tuple[Path, GeneratorStats], tshark: str) -> None:
    """No malformed packet, no expert warning or error, all checksums valid, clean TCP sequences."""
    path, stats = small_capture
    # Expert severities: warning 0x00600000, error 0x00800000.
    problems = run_tshark(
        tshark,
        path,
        *CHECKSUMS,
        "-Y",
        "_ws.malformed || _ws.expert.severity >= 0x00600000 || tcp.analysis.flags",
    )
    assert problems == ""
    statuses = run_tshark(
        tshark, path, *CHECKSUMS, "-T", "fields", "-e", "ip.checksum.status", "-e", "tcp.checksum.status",
        "-e", "udp.checksum.status", "-Y", "ip",
    )  # fmt: skip
    values = {value for line in statuses.splitlines() for value in line.split("\t") if value}
    assert values == {"1"}  # 1 = good
    assert len(statuses.splitlines()) == stats.packets - stats.packets_by_protocol["arp"]


def test_tshark_verifies_dnp3_crcs(small_capture: tuple[Path, GeneratorStats], tshark: str) -> None:
    path, _ = small_capture
    out = run_tshark(
        tshark,
        path,
        "-Y",
        "dnp3",
        "-T",
        "fields",
        "-e",
        "dnp.hdr.CRC.status",
        "-e",
        "dnp.data_chunk.CRC.status",
    )
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows
    assert {status for row in rows for field in row for status in field.split(",") if status} == {"1"}
    assert any(row[1] for row in rows)  # responses with data blocks, not only headers
    assert run_tshark(tshark, path, "-Y", "dnp3.hdr.CRC.incorrect || dnp3.data_chunk.CRC.incorrect") == ""


def test_tshark_sees_the_conversations(small_capture: tuple[Path, GeneratorStats], tshark: str) -> None:
    path, _ = small_capture
    fields = [
        "modbus.func_code",
        "modbus.exception_code",
        "s7comm.param.func",
        "s7comm.data.userdata.szl_id",
        "cip.service",
        "enip.command",
        "enip.lir.name",
        "dnp3.al.func",
        "dnp3.al.obj",
        "mqtt.msgtype",
        "mqtt.clientid",
        "mqtt.msg",
        "dhcp.option.dhcp",
        "dhcp.option.hostname",
        "dhcp.option.vendor_class_id",
        "dns.a",
        "arp.opcode",
        "rtsp.method",
        "tcp.flags.syn",
        "tcp.flags.ack",
        "tcp.flags.fin",
    ]
    args = ["-Y", "!rtp && !cipio", "-T", "fields", "-E", "occurrence=f"]
    out = run_tshark(tshark, path, *args, *[x for f in fields for x in ("-e", f)])
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
    markers = run_tshark(tshark, path, "-Y", "rtp.marker == 1", "-T", "fields", "-e", "frame.number")

    def seen(**wanted: str) -> bool:
        """Some packet has every field (``a__b`` stands for ``a.b``) at the value ("*": any value)."""
        wanted = {key.replace("__", "."): value for key, value in wanted.items()}
        return any(all(row[k] and v in ("*", row[k]) for k, v in wanted.items()) for row in rows)

    assert seen(modbus__func_code="3"), "Modbus read holding registers"
    assert seen(modbus__exception_code="*"), "Modbus exception response"
    assert seen(s7comm__param__func="0x04"), "S7 read var"
    assert seen(s7comm__data__userdata__szl_id="0x0011"), "S7 read SZL module identification"
    assert seen(cip__service="0x4c"), "CIP Read Tag"
    assert seen(cip__service="0xd4"), "CIP Forward_Open reply"
    assert seen(enip__command="0x0063", enip__lir__name="*"), "ListIdentity reply with a product name"
    assert seen(dnp3__al__func="129", dnp3__al__obj="*"), "DNP3 response with objects"
    assert seen(mqtt__msgtype="1", mqtt__clientid="*"), "MQTT CONNECT with a client id"
    assert any(
        '"status":"ok"' in bytes.fromhex(r["mqtt.msg"]).decode(errors="replace")
        for r in rows
        if r["mqtt.msg"]
    )
    assert seen(dhcp__option__dhcp="1", dhcp__option__hostname="*", dhcp__option__vendor_class_id="*"), (
        "DISCOVER"
    )
    assert seen(dhcp__option__dhcp="5"), "DHCP ACK"
    assert seen(dns__a="*"), "DNS answer"
    assert seen(arp__opcode="2"), "ARP reply"
    assert seen(rtsp__method="PLAY"), "RTSP PLAY"
    assert seen(tcp__flags__syn="1", tcp__flags__ack="1"), "SYN-ACK"
    assert seen(tcp__flags__fin="1"), "FIN"
    assert markers, "RTP frames ending with the marker bit"
