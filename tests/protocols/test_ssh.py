"""SSH dissector: banners and KEXINIT against tshark (which computes HASSH and HASSHServer itself), with a
real OpenSSH client's bytes captured on loopback, hand-built packets, recognition, malformed input and
fuzzing.

There is no SSH capture in the shared corpus. The client side of the test session is what the installed
``ssh`` client really sends to a small server this test runs on 127.0.0.1 (skipped if ``ssh`` is
missing); the server side is built by the test (OpenSSH's identification string and algorithm lists).
Both are written into a pcap with scapy and dissected by tshark (``ssh.*``, ``ssh.kex.hassh*``).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import Transport, Verdict
from fieldward.protocols.ssh import NAME_LISTS, SshDissector, SshKexInit, SshVersion
from tests.protocols.test_modbus import Run
from tests.protocols.test_tls import Collector, documented, run_flights, tshark_fields

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "ssh.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "ssh.py"

SERVER_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
SERVER_LISTS = [
    "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256",
    "rsa-sha2-512,rsa-sha2-256,ecdsa-sha2-nistp256,ssh-ed25519",
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes256-gcm@openssh.com",
    "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512",
    "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha1",
    "none,zlib@openssh.com",
    "none",
    "",
    "",
]


def packet(payload: bytes, block: int = 8) -> bytes:
    """An unencrypted SSH binary packet (RFC 4253 6) with at least 4 bytes of padding."""
    padding = block - (len(payload) + 5) % block
    padding += block if padding < 4 else 0
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + bytes(padding)


def kexinit(lists: list[str], follows: bool = False) -> bytes:
    body = b"".join(struct.pack(">I", len(names)) + names.encode() for names in lists)
    return packet(bytes([20]) + os.urandom(16) + body + bytes([follows]) + bytes(4))


NEWKEYS = packet(b"\x15")


@pytest.fixture(scope="module")
def openssh_client() -> bytes:
    """The identification string and KEXINIT packet the installed OpenSSH client sends."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("OpenSSH client 'ssh' is not installed (Debian package openssh-client)")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        conn.settimeout(5)
        conn.sendall(SERVER_BANNER + kexinit(SERVER_LISTS))
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                received.extend(data)
                end = received.find(b"\n") + 1
                if end and len(received) >= end + 4 + int.from_bytes(received[end : end + 4], "big"):
                    break
        except TimeoutError:
            pass
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    options = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    options += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5"]
    subprocess.run(
        [ssh, *options, "-p", str(port), "probe@127.0.0.1", "true"], capture_output=True, timeout=30
    )
    thread.join(timeout=15)
    server.close()
    end = received.find(b"\n") + 1
    if not received.startswith(b"SSH-2.0-") or not end:
        pytest.skip(f"no SSH-2 exchange captured from the ssh client: {bytes(received[:60])!r}")
    size = end + 4 + int.from_bytes(received[end : end + 4], "big")
    return bytes(received[:size])


def session(client_hello: bytes) -> list[tuple[bool, bytes]]:
    """Banners, KEXINITs, a key exchange reply, NEWKEYS both ways, then encrypted bytes."""
    encrypted = os.urandom(300)
    return [
        (False, SERVER_BANNER),
        (True, client_hello),
        (False, kexinit(SERVER_LISTS)),
        (True, packet(b"\x1e" + struct.pack(">I", 32) + os.urandom(32))),  # KEX_ECDH_INIT
        (False, packet(b"\x1f" + os.urandom(200)) + NEWKEYS),
        (True, NEWKEYS + encrypted[:100]),
        (False, encrypted[100:] + packet(bytes([20]) + bytes(60))),  # a cleartext-looking KEXINIT: skipped
    ]


TSHARK_KEX = [*(f"ssh.{name}" for name in NAME_LISTS), "ssh.first_kex_packet_follows"]
TSHARK_HASSH = [
    "ssh.kex.hassh",
    "ssh.kex.hassh_algorithms",
    "ssh.kex.hasshserver",
    "ssh.kex.hasshserver_algorithms",
]


def compare_with_tshark(run: Run, tshark: str, capture: Path) -> int:
    banners = tshark_fields(tshark, capture, "ssh.protocol", ["ssh.protocol"])
    versions = run.rows("ssh_version")
    assert [v["banner"] for v in versions] == [t["ssh.protocol"] for t in banners]
    kex = tshark_fields(tshark, capture, "ssh.message_code == 20", TSHARK_KEX + TSHARK_HASSH)
    ours = run.rows("ssh_kexinit")
    assert len(ours) == len(kex)
    for row, t in zip(ours, kex, strict=True):
        for name in NAME_LISTS:
            assert ",".join(row[name]) == t[f"ssh.{name}"], name
        assert row["first_kex_packet_follows"] == bool(int(t["ssh.first_kex_packet_follows"]))
        side = "hassh" if row["client"] else "hasshserver"
        assert row["hassh"] == t[f"ssh.kex.{side}"]
        assert row["hassh_algorithms"] == t[f"ssh.kex.{side}_algorithms"]
    return len(ours)


# ---------------------------------------------------------------------- tshark comparisons


def test_openssh_client_session_matches_tshark(openssh_client: bytes, tshark: str, tmp_path: Path) -> None:
    run, capture = run_flights(tmp_path, session(openssh_client), "openssh", port=22)
    assert compare_with_tshark(run, tshark, capture) == 2
    server, client = run.rows("ssh_version")  # the server speaks first
    assert (client["client"], server["client"]) == (True, False)
    assert client["software"].startswith("OpenSSH_")
    assert server["software"] == "OpenSSH_9.2p1"
    assert server["comments"] == "Debian-2+deb12u3"
    assert server["proto_version"] == "2.0"
    kex_client, kex_server = sorted(run.rows("ssh_kexinit"), key=lambda r: not r["client"])
    assert kex_client["client"]
    assert not kex_server["client"]
    assert "curve25519-sha256" in kex_client["kex_algorithms"]
    assert [r["name"] for r in run.rows("weird")] == []


def test_hand_built_kexinit_and_split_segments_match_tshark(tshark: str, tmp_path: Path) -> None:
    lists = ["diffie-hellman-group14-sha256", "ssh-rsa", "aes256-ctr", "aes128-cbc", "hmac-sha1", "hmac-md5"]
    lists += ["none", "zlib", "en-US", ""]
    client = b"SSH-2.0-PuTTY_Release_0.78\r\n" + kexinit(lists, follows=True)
    flights = [(True, client), (False, SERVER_BANNER + kexinit(SERVER_LISTS))]
    run, capture = run_flights(tmp_path, flights, "putty", port=22)
    assert compare_with_tshark(run, tshark, capture) == 2
    # Cut into 13-byte segments (tshark does not reassemble banners that way; we must).
    small, _ = run_flights(tmp_path, flights, "putty-small", port=22, mss=13)
    for log in ("ssh_version", "ssh_kexinit"):
        strip = ("ts",)
        assert [{k: v for k, v in r.items() if k not in strip} for r in small.rows(log)] == [
            {k: v for k, v in r.items() if k not in strip} for r in run.rows(log)
        ]
    (kex_client,) = [r for r in run.rows("ssh_kexinit") if r["client"]]
    assert kex_client["first_kex_packet_follows"]
    assert kex_client["languages_client_to_server"] == ["en-US"]
    assert kex_client["languages_server_to_client"] == []
    versions = {v["software"]: v for v in run.rows("ssh_version")}
    assert versions["PuTTY_Release_0.78"]["comments"] is None


def test_ssh_on_unusual_port(tshark: str, tmp_path: Path) -> None:
    flights = [(False, SERVER_BANNER), (True, b"SSH-2.0-Go\r\n" + kexinit(SERVER_LISTS))]
    run, _ = run_flights(tmp_path, flights, "port2201", port=2201)
    assert run.result.dissected_flows == {"ssh": 1}
    assert [v["software"] for v in run.rows("ssh_version")] == ["OpenSSH_9.2p1", "Go"]
    assert len(run.rows("ssh_kexinit")) == 1


# ---------------------------------------------------------------------- sans-io


def test_nothing_after_newkeys_is_parsed() -> None:
    col = Collector("ssh", resp_p=22)
    dissector = SshDissector(col.flow)
    col.feed(dissector, b"SSH-2.0-a\r\n" + NEWKEYS + kexinit(SERVER_LISTS) + os.urandom(64), True)
    assert len(col.of(SshVersion)) == 1
    assert col.of(SshKexInit) == []
    assert col.weirds() == []


def test_pre_banner_lines_are_skipped_and_ssh1_is_not_parsed() -> None:
    col = Collector("ssh", resp_p=22)
    dissector = SshDissector(col.flow)
    col.feed(
        dissector,
        b"Welcome to the gateway\r\nAuthorised use only\r\nSSH-1.5-OpenSSH_2.1\n" + os.urandom(40),
        False,
    )
    col.feed(dissector, b"SSH-1.99-legacy\r\n" + kexinit(SERVER_LISTS), True)
    server, client = col.of(SshVersion)
    assert (server.proto_version, server.client) == ("1.5", False)
    assert (client.proto_version, client.client) == ("1.99", True)
    assert len(col.of(SshKexInit)) == 1  # 1.99 speaks SSH-2
    assert col.weirds() == []


def test_server_port_decides_the_client_side() -> None:
    """When the flow table saw the server first (originator on port 22), the responder is the client."""
    col = Collector("ssh", orig_p=22, resp_p=50000)
    dissector = SshDissector(col.flow)
    col.feed(dissector, SERVER_BANNER, True)
    (version,) = col.of(SshVersion)
    assert not version.client


@pytest.mark.parametrize(
    ("stream", "weird"),
    [
        (b"SSH-2.0\r\n", "ssh_bad_banner"),
        (b"SSH-2.0-" + b"x" * 300 + b"\r\n", "ssh_banner_too_long"),
        (
            b"SSH-2.0-a\r\n" + packet(bytes([20]) + bytes(16) + b"\x00\x00\x01\x00abc"),
            "ssh_malformed_kexinit",
        ),
        (b"SSH-2.0-a\r\n" + struct.pack(">IB", 12, 11) + bytes(11), "ssh_bad_padding"),
        (b"SSH-2.0-a\r\n" + struct.pack(">IB", 12, 2) + b"\x15" + bytes(10), "ssh_bad_padding"),
        (b"line\r\n" * 40, "ssh_no_banner"),
    ],
)
def test_malformed_input_gives_weirds(stream: bytes, weird: str) -> None:
    col = Collector("ssh", resp_p=22)
    dissector = SshDissector(col.flow)
    col.feed(dissector, stream, True)
    assert weird in col.weirds()


def test_parse_checks_packet_lengths() -> None:
    col = Collector("ssh", resp_p=22)
    dissector = SshDissector(col.flow)
    col.feed(dissector, b"SSH-2.0-a\r\n", True)
    dissector.parse(b"\x00\x00", col.ctx)
    dissector.parse(struct.pack(">IB", 99, 4) + bytes(10), col.ctx)
    assert col.weirds() == ["ssh_truncated_packet", "ssh_bad_packet_length"]


def test_frame_bounds() -> None:
    dissector = SshDissector(Collector("ssh").flow)
    assert dissector.frame(b"SSH-2.0-x", True) == 0
    assert dissector.frame(b"x" * 2000, True) == -1
    dissector.parse(b"SSH-2.0-x\r\n", Collector("ssh").ctx)
    assert dissector.frame(b"\x00\x00\x00", True) == 0
    assert dissector.frame(b"\x7f\x00\x00\x00\x00", True) == -1
    assert dissector.frame(NEWKEYS + b"more", True) == len(NEWKEYS)


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", Verdict.YES),
        (b"SSH-1.99-Cisco-1.25\n", Verdict.YES),
        (b"SSH-2.0-OpenSSH_9.2", Verdict.MAYBE),
        (b"SS", Verdict.MAYBE),
        (b"SSH-x", Verdict.NO),
        (b"GET / HTTP/1.1\r\n", Verdict.NO),
        (b"220 ProFTPD Server ready\r\n", Verdict.NO),
        (b"\xff\xfd\x18\xff\xfd\x20", Verdict.NO),
        (b"SSH-2.0\r\n", Verdict.NO),
    ],
)
def test_recognition_by_content(data: bytes, verdict: Verdict) -> None:
    assert SshDissector.recognize(data, Transport.TCP, 50000, 22) == verdict


def test_other_protocol_on_port_22_not_claimed(tmp_path: Path) -> None:
    run, _ = run_flights(tmp_path, [(True, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")], "http22", port=22)
    assert "ssh" not in run.result.dissected_flows


# ---------------------------------------------------------------------- fuzzing


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=500), banner=st.booleans())
def test_fuzz_never_raises(data: bytes, banner: bool) -> None:
    col = Collector("ssh", resp_p=22)
    dissector = SshDissector(col.flow)
    SshDissector.recognize(data, Transport.TCP, 1, 22)
    col.feed(dissector, (b"SSH-2.0-x\r\n" if banner else b"") + data, True)
    col.ctx.is_orig = False
    dissector.parse(data, col.ctx)
    dissector.close(col.ctx)
    assert len(col.events) < 100


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), max_size=6), cut=st.integers(0, 800)
)
def test_fuzz_mutated_kexinit_never_raises(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SERVER_BANNER + kexinit(SERVER_LISTS) + NEWKEYS)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    col = Collector("ssh", resp_p=22)
    dissector = SshDissector(col.flow)
    col.feed(dissector, bytes(data[:cut]), False)
    assert len(col.of(SshKexInit)) <= 1


def test_every_event_field_and_weird_is_documented() -> None:
    documented(DOC, MODULE, "ssh", SshDissector.event_types, set())
