"""FTP dissector: a built control session (scapy) against tshark, the no-password rule, recognition
(FTP vs SMTP greetings), malformed input and fuzzing. The shared corpus has no FTP capture."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import Transport, Verdict
from fieldward.protocols.ftp import FtpDissector, FtpEvent
from tests.protocols.test_mqtt import assert_password_absent
from tests.protocols.test_tls import AGG, Collector, documented, epoch_ns, run_flights, tshark_fields

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "ftp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "ftp.py"
SECRETS = (b"S3cr3t!", b"hunter2")

SESSION: list[tuple[bool, bytes]] = [
    (False, b"220-Welcome to the line 3 PLC file server\r\n220 (vsFTPd 3.0.3)\r\n"),
    (True, b"USER operator\r\n"),
    (False, b"331 Please specify the password.\r\n"),
    (True, b"PASS " + SECRETS[0] + b"\r\n"),
    (False, b"530 Login incorrect.\r\n"),
    (True, b"USER admin\r\n"),
    (False, b"331 Please specify the password.\r\n"),
    (True, b"PASS " + SECRETS[1] + b"\r\n"),
    (False, b"230 Login successful.\r\n"),
    (True, b"SYST\r\n"),
    (False, b"215 UNIX Type: L8\r\n"),
    (True, b"PASV\r\n"),
    (False, b"227 Entering Passive Mode (10,1,0,9,195,80).\r\n"),
    (True, b"RETR /plc/program.bin\r\n"),
    (False, b"150 Opening BINARY mode data connection for /plc/program.bin (4096 bytes).\r\n"),
    (False, b"226 Transfer complete.\r\n"),
    (True, b"PORT 10,1,0,5,200,10\r\n"),
    (False, b"200 PORT command successful. Consider using PASV.\r\n"),
    (True, b"STOR recipe.csv\r\n"),
    (False, b"150 Ok to send data.\r\n"),
    (False, b"226 Transfer complete.\r\n"),
    (True, b"EPSV\r\n"),
    (False, b"229 Entering Extended Passive Mode (|||50001|)\r\n"),
    (True, b"EPRT |1|10.1.0.5|50002|\r\n"),
    (False, b"200 EPRT command successful.\r\n"),
    (True, b"QUIT\r\n"),
    (False, b"221 Goodbye.\r\n"),
]

FIELDS = [
    "ftp.request.command",
    "ftp.request.arg",
    "ftp.response.code",
    "ftp.response.arg",
    "ftp.passive.ip",
    "ftp.passive.port",
    "ftp.active.cip",
    "ftp.active.port",
    "ftp.eprt.ip",
    "ftp.eprt.port",
    "ftp.epsv.port",
]


def test_session_matches_tshark(tshark: str, tmp_path: Path) -> None:
    run, capture = run_flights(tmp_path, SESSION, "ftp", port=21)
    rows = run.rows("ftp")
    frames = tshark_fields(tshark, capture, "ftp", FIELDS)
    requests = [t for t in frames if t["ftp.request.command"]]
    commands = [r for r in rows if r["command"] is not None]
    assert len(commands) == len(requests) == 12
    for row, t in zip(commands, requests, strict=True):
        assert row["ts"] == epoch_ns(t["frame.time_epoch"])
        assert row["command"] == t["ftp.request.command"]
        if row["command"] == "PASS":
            assert row["arg"] is None  # tshark shows the password; we must not
            assert t["ftp.request.arg"].encode() in SECRETS
        else:
            assert row["arg"] == (t["ftp.request.arg"] or None)
        if t["ftp.active.cip"]:
            assert (row["data_h"], row["data_p"], row["data_passive"]) == (
                t["ftp.active.cip"],
                int(t["ftp.active.port"]),
                False,
            )
        if t["ftp.eprt.ip"]:
            assert (row["data_h"], row["data_p"]) == (t["ftp.eprt.ip"], int(t["ftp.eprt.port"]))
    # Replies: tshark's codes in order; ours keep the final reply of each command (not the 150s).
    codes = [int(c) for t in frames for c in t["ftp.response.code"].split(AGG) if c]
    assert [r["reply_code"] for r in rows] == [c for c in codes if c >= 200]
    for t in frames:
        if t["ftp.passive.ip"]:
            (pasv,) = [r for r in rows if r["command"] == "PASV"]
            assert (pasv["data_h"], pasv["data_p"], pasv["data_passive"]) == (
                t["ftp.passive.ip"],
                int(t["ftp.passive.port"]),
                True,
            )
        if t["ftp.epsv.port"]:
            (epsv,) = [r for r in rows if r["command"] == "EPSV"]
            assert (epsv["data_h"], epsv["data_p"]) == ("10.1.0.9", int(t["ftp.epsv.port"]))
    assert [r["name"] for r in run.rows("weird")] == []


def test_login_attempts_files_and_no_password(tmp_path: Path) -> None:
    run, capture = run_flights(tmp_path, SESSION, "ftp-login", port=21)
    rows = run.rows("ftp")
    greeting = rows[0]
    assert (greeting["command"], greeting["reply_code"]) == (None, 220)
    assert greeting["reply_msg"] == "Welcome to the line 3 PLC file server"
    logins = [(r["command"], r["user"], r["cleartext_credentials"], r["login_success"]) for r in rows[1:5]]
    assert logins == [
        ("USER", "operator", False, None),
        ("PASS", "operator", True, False),
        ("USER", "admin", False, None),
        ("PASS", "admin", True, True),
    ]
    assert {r["file_name"] for r in rows if r["file_name"]} == {"/plc/program.bin", "recipe.csv"}
    for path in (capture.parent / "out-ftp-login" / "events").glob("*.parquet"):
        text = str(pq.read_table(path).to_pylist())
        for secret in SECRETS:
            assert secret.decode() not in text


def test_ftp_on_unusual_port_and_smtp_on_port_21(tmp_path: Path) -> None:
    run, _ = run_flights(tmp_path, SESSION[:3], "ftp2121", port=2121)
    assert len(run.rows("ftp")) == 2
    smtp = [(False, b"220 mail.example.com ESMTP Postfix\r\n"), (True, b"EHLO client\r\n")]
    run, _ = run_flights(tmp_path, smtp, "smtp21", port=21)
    assert "ftp" not in run.result.dissected_flows


@pytest.mark.parametrize(
    ("data", "sport", "dport", "verdict"),
    [
        (b"220 ProFTPD Server ready\r\n", 21, 50000, Verdict.YES),
        (b"220 Welcome\r\n", 21, 50000, Verdict.YES),
        (b"220 Welcome\r\n", 2121, 50000, Verdict.NO),  # off port 21 the greeting must name FTP
        (b"220 Microsoft FTP Service\r\n", 2121, 50000, Verdict.YES),
        (b"220-Welcome\r\n", 2121, 50000, Verdict.MAYBE),  # a later line may name FTP
        (b"220-Welcome\r\n220 vsFTPd 3.0.3\r\n", 2121, 50000, Verdict.YES),
        (b"220 smtp.example.com ESMTP\r\n", 21, 50000, Verdict.NO),
        (b"USER anonymous\r\n", 50000, 21, Verdict.YES),
        (b"USER anonymous\r\n", 50000, 110, Verdict.NO),  # POP3 also has USER
        (b"22", 21, 50000, Verdict.MAYBE),
        (b"220 FTP ready", 21, 50000, Verdict.MAYBE),
        (b"SSH-2.0-x\r\n", 21, 50000, Verdict.NO),
        (b"\xff\xfb\x01", 21, 50000, Verdict.NO),
    ],
)
def test_recognition_by_content(data: bytes, sport: int, dport: int, verdict: Verdict) -> None:
    assert FtpDissector.recognize(data, Transport.TCP, sport, dport) == verdict


def feed_session(lines: list[tuple[bool, bytes]]) -> Collector:
    col = Collector("ftp", resp_p=21)
    dissector = FtpDissector(col.flow)
    for is_orig, data in lines:
        col.feed(dissector, data, is_orig)
    dissector.close(col.ctx)
    return col


def test_auth_tls_stops_parsing() -> None:
    col = feed_session(
        [
            (True, b"AUTH TLS\r\n"),
            (False, b"234 Proceed with negotiation.\r\n"),
            (True, b"PASS x\r\n\x16\x03"),
        ]
    )
    (event,) = col.of(FtpEvent)
    assert (event.command, event.arg, event.reply_code) == ("AUTH", "TLS", 234)
    assert col.weirds() == []


def test_client_lines_during_a_multiline_reply_stay_commands() -> None:
    col = feed_session(
        [(False, b"220-hello\r\n"), (True, b"USER a\r\n"), (False, b"220 ready\r\n331 pw\r\n")]
    )
    greeting, user = col.of(FtpEvent)
    assert (greeting.command, greeting.reply_code) == (None, 220)
    assert (user.command, user.reply_code) == ("USER", 331)


@pytest.mark.parametrize(
    ("lines", "weird"),
    [
        ([(True, b"\x00\x01binary\r\n")], "ftp_bad_command"),
        ([(True, b"PORT 10,1,0,5,999,1\r\n")], "ftp_bad_port"),
        ([(True, b"EPRT |3|x|1|\r\n")], "ftp_bad_port"),
        ([(True, b"PASV\r\n"), (False, b"227 Entering Passive Mode\r\n")], "ftp_bad_pasv_reply"),
        (
            [(True, b"EPSV\r\n"), (False, b"229 Entering Extended Passive Mode (|||99999|)\r\n")],
            "ftp_bad_pasv_reply",
        ),
        ([(False, b"220-multi\r\nno end\r\n")], "ftp_truncated_reply"),
        ([(True, b"NOOP\r\n" * 70)], "ftp_too_many_pending"),
    ],
)
def test_malformed_input_gives_weirds(lines: list[tuple[bool, bytes]], weird: str) -> None:
    assert weird in feed_session(lines).weirds()


def test_frame_bounds() -> None:
    dissector = FtpDissector(Collector("ftp").flow)
    assert dissector.frame(b"USER a", True) == 0
    assert dissector.frame(b"USER a\r\nPASS", True) == 8
    assert dissector.frame(b"A" * 5000, True) == -1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=120)), max_size=10))
def test_fuzz_never_raises(lines: list[tuple[bool, bytes]]) -> None:
    col = feed_session(lines)
    FtpDissector.recognize(b"".join(d for _, d in lines), Transport.TCP, 21, 5000)
    assert len(col.events) < 200


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(SESSION) - 1), st.integers(0, 60), st.integers(0, 255)), max_size=6)
)
def test_fuzz_mutated_session_never_leaks_passwords(flips: list[tuple[int, int, int]]) -> None:
    lines = [(is_orig, bytearray(data)) for is_orig, data in SESSION]
    for index, pos, value in flips:
        if pos < len(lines[index][1]) and lines[index][1][:5] != b"PASS ":
            lines[index][1][pos] = value
    col = feed_session([(is_orig, bytes(data)) for is_orig, data in lines])
    text = str(col.events)
    assert not any(secret.decode() in text for secret in SECRETS)


# ---------------------------------------------------------------------- default credentials

DEFAULT_PASSWORDS = (b"xc3511", b"fwdownload")  # Mirai's root/xc3511, Schneider's loader/fwdownload


def test_default_credentials_are_matched_and_never_stored(tmp_path: Path) -> None:
    session = [
        (False, b"220 Modicon M340 FTP server ready\r\n"),
        (True, b"USER root\r\n"),
        (False, b"331 Password required\r\n"),
        (True, b"PASS " + DEFAULT_PASSWORDS[0] + b"\r\n"),
        (False, b"530 Login incorrect\r\n"),
        (True, b"USER loader\r\n"),
        (False, b"331 Password required\r\n"),
        (True, b"PASS " + DEFAULT_PASSWORDS[1] + b"\r\n"),
        (False, b"230 Login successful\r\n"),
        (True, b"QUIT\r\n"),
        (False, b"221 Bye\r\n"),
    ]
    run, capture = run_flights(tmp_path, session, "ftp-defaults", port=21)
    rows = [(r["command"], r["user"], r["default_credential"], r["login_success"]) for r in run.rows("ftp")]
    assert rows == [
        (None, None, None, None),
        ("USER", "root", None, None),
        ("PASS", "root", "mirai", False),
        ("USER", "loader", None, None),
        ("PASS", "loader", "schneider-electric", True),
        ("QUIT", "loader", None, None),
    ]
    for secret in DEFAULT_PASSWORDS:
        assert_password_absent(capture.parent / "out-ftp-defaults", secret)
    # Passwords that are no default match nothing; a PASS without a USER has no pair.
    run, _ = run_flights(tmp_path, SESSION, "ftp-changed", port=21)
    assert {r["default_credential"] for r in run.rows("ftp")} == {None}
    col = feed_session([(True, b"PASS xc3511\r\n"), (False, b"503 Login with USER first\r\n")])
    assert [e.default_credential for e in col.of(FtpEvent)] == [None]


def test_malformed_pass_line_weird_hides_the_password() -> None:
    col = feed_session(
        [(True, b"USER root\r\n"), (True, b"PASS\txc3511\r\n"), (True, b" acct\x00S3cr3t!\r\n")]
    )
    assert col.weirds() == ["ftp_bad_command", "ftp_bad_command"]
    text = repr(col.events)
    assert "xc3511" not in text
    assert "S3cr3t!" not in text
    assert "PASS (secret not shown)" in text


def test_every_event_field_and_weird_is_documented() -> None:
    documented(DOC, MODULE, "ftp", FtpDissector.event_types, set())
