"""Telnet dissector: a built session (scapy: negotiation, subnegotiation, a failed and a successful login
typed one character per segment) against tshark, the no-password rule, recognition, framing of split IAC
sequences, malformed input and fuzzing. The shared corpus has no Telnet capture."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import Transport, Verdict
from fieldward.protocols.telnet import TelnetDissector, TelnetLogin, TelnetOption, complete_length
from tests.protocols.test_mqtt import assert_password_absent
from tests.protocols.test_tls import AGG, Collector, documented, ints, run_flights, tshark_fields

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "telnet.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "telnet.py"
IAC, SB, SE, WILL, WONT, DO, DONT = 255, 250, 240, 251, 252, 253, 254
PASSWORDS = (b"wrongpw", b"S3cr3t!")
MAX_EVENTS = 400


def cmd(command: int, option: int) -> bytes:
    return bytes([IAC, command, option])


def sub(option: int, data: bytes) -> bytes:
    return bytes([IAC, SB, option]) + data + bytes([IAC, SE])


def typed(text: bytes, echo: bool) -> list[tuple[bool, bytes]]:
    """A user typing ``text`` one key per segment (the server echoing each key when ``echo``)."""
    out: list[tuple[bool, bytes]] = []
    for key in text:
        out.append((True, bytes([key])))
        if echo:
            out.append((False, bytes([key])))
    return out


SESSION: list[tuple[bool, bytes]] = [
    (False, cmd(DO, 24) + cmd(DO, 31) + cmd(WILL, 1) + cmd(WILL, 3)),
    (True, cmd(WILL, 24) + cmd(WILL, 31) + cmd(DO, 1) + cmd(DO, 3)),
    (False, sub(24, b"\x01")),
    (True, sub(31, b"\x00\x50\x00\x18") + sub(24, b"\x00XTERM")),
    (False, b"SCALANCE X-200 gateway\r\nAuthorised access only\r\n\r\nplc-gw login: "),
    *typed(b"operator\r\n", echo=True),
    (False, b"Password: "),
    *typed(PASSWORDS[0] + b"\r\n", echo=False),
    (False, b"\r\nLogin incorrect\r\nplc-gw login: "),
    *typed(b"admin\r\n", echo=True),
    (False, b"Password: "),
    *typed(PASSWORDS[1] + b"\r\n", echo=False),
    (False, b"\r\nLast login: Mon Jan  1 10:00:00 2024 from 10.1.0.4\r\nadmin@plc-gw:~$ "),
    (True, b"exit\r\n"),
]


def test_negotiation_matches_tshark(tshark: str, tmp_path: Path) -> None:
    run, capture = run_flights(tmp_path, SESSION, "telnet", port=23)
    fields = ["telnet.cmd", "telnet.subcmd", "telnet.string_subopt.value"]
    fields += ["telnet.naws_subopt.width", "telnet.naws_subopt.height"]
    frames = tshark_fields(tshark, capture, "telnet.cmd", fields)
    names = {WILL: "WILL", WONT: "WONT", DO: "DO", DONT: "DONT", SB: "SB"}
    theirs: list[tuple[str, int]] = []
    for t in frames:
        # tshark lists the command bytes (SE included) in telnet.cmd and, in telnet.subcmd, the option
        # of each negotiation and subnegotiation, followed for TERMINAL-TYPE by its IS/SEND code.
        options = iter(ints(t["telnet.subcmd"]))
        for c in ints(t["telnet.cmd"]):
            if c in names:
                option = next(options)
                theirs.append((names[c], option))
                if c == SB and option == 24:
                    next(options)
    ours = run.rows("telnet_option")
    assert [(r["command"], r["option"]) for r in ours] == theirs
    assert len(ours) == 11
    values = [v for t in frames for v in t["telnet.string_subopt.value"].split(AGG) if v]
    assert [r["value"] for r in ours if r["option"] == 24 and r["value"]] == values == ["XTERM"]
    (naws,) = [t for t in frames if t["telnet.naws_subopt.width"]]
    (ours_naws,) = [r for r in ours if r["option"] == 31 and r["command"] == "SB"]
    assert ours_naws["value"] == f"{naws['telnet.naws_subopt.width']}x{naws['telnet.naws_subopt.height']}"
    assert {r["option_name"] for r in ours} == {"TERMINAL-TYPE", "NAWS", "ECHO", "SUPPRESS-GO-AHEAD"}
    assert [r["name"] for r in run.rows("weird")] == []


def test_login_attempts_and_no_password(tmp_path: Path) -> None:
    run, capture = run_flights(tmp_path, SESSION, "telnet-login", port=23)
    logins = run.rows("telnet_login")
    assert [(r["username"], r["cleartext_credentials"], r["success"]) for r in logins] == [
        ("operator", True, False),
        ("admin", True, True),
    ]
    assert logins[0]["banner"] == "SCALANCE X-200 gateway\nAuthorised access only"
    assert all(r["is_orig"] for r in logins)
    for path in (capture.parent / "out-telnet-login" / "events").glob("*.parquet"):
        text = str(pq.read_table(path).to_pylist())
        for secret in PASSWORDS:
            assert secret.decode() not in text


def test_telnet_on_unusual_port_and_other_text_off_port(tmp_path: Path) -> None:
    run, _ = run_flights(tmp_path, SESSION[:4], "telnet2601", port=2601)
    assert len(run.rows("telnet_option")) == 11
    run, _ = run_flights(tmp_path, [(False, b"hello there\r\n")], "text2601", port=2601)
    assert "telnet" not in run.result.dissected_flows


def sans_io(chunks: list[tuple[bool, bytes]], resp_p: int = 23) -> Collector:
    col = Collector("telnet", resp_p=resp_p)
    dissector = TelnetDissector(col.flow)
    rest = {True: b"", False: b""}
    for is_orig, data in chunks:
        rest[is_orig] = col.feed(dissector, rest[is_orig] + data, is_orig)
    dissector.close(col.ctx)
    return col


def test_iac_sequences_split_across_segments() -> None:
    whole = sans_io([(False, cmd(DO, 24) + sub(24, b"\x01") + b"lo\xff\xffgin: ")])
    stream = cmd(DO, 24) + sub(24, b"\x01") + b"lo\xff\xffgin: "
    split = sans_io([(False, bytes([b])) for b in stream])
    assert [(e.command, e.option) for e in split.of(TelnetOption)] == [("DO", 24), ("SB", 24)]
    assert split.of(TelnetOption) == whole.of(TelnetOption)
    assert split.weirds() == []


@pytest.mark.parametrize(
    ("data", "length"),
    [
        (b"abc", 3),
        (b"abc\xff", 3),
        (b"abc\xff\xfd", 3),
        (b"abc\xff\xfd\x18", 6),
        (b"abc\xff\xff", 5),  # an escaped 0xFF data byte
        (b"\xff\xfa\x18\x01", 0),
        (b"ab\xff\xfa\x18\x01\xff\xf0cd", 10),
        (b"\xff\xfa" + b"x" * 5000, 5002),  # an unterminated subnegotiation is handed over (and reported)
    ],
)
def test_complete_length(data: bytes, length: int) -> None:
    assert complete_length(data) == length


def test_password_prompt_without_user_name() -> None:
    """Routers often ask for a password only (line password)."""
    col = sans_io(
        [
            (False, b"\r\nUser Access Verification\r\n\r\nPassword: "),
            (True, b"cisco\r"),
            (False, b"\r\nrouter>"),
        ]
    )
    (login,) = col.of(TelnetLogin)
    assert (login.username, login.cleartext_credentials, login.success) == (None, True, True)
    assert "cisco" not in str(col.events)


def test_attempt_without_outcome_is_reported_at_close() -> None:
    col = sans_io([(False, b"login: "), (True, b"root\r\n"), (False, b"Password: "), (True, b"x\x7fy\r\n")])
    (login,) = col.of(TelnetLogin)
    assert (login.username, login.cleartext_credentials, login.success) == ("root", True, None)


def test_server_first_flow_is_handled() -> None:
    """When the flow table saw the server first (originator on port 23), the responder is the client."""
    col = Collector("telnet", orig_p=23, resp_p=50000)
    dissector = TelnetDissector(col.flow)
    col.feed(dissector, b"login: ", True)
    col.feed(dissector, b"guest\r\n", False)
    dissector.close(col.ctx)
    (login,) = col.of(TelnetLogin)
    assert login.username == "guest"
    assert not login.is_orig


@pytest.mark.parametrize(
    ("data", "weird"),
    [
        (sub(31, b"\x00\x50"), "telnet_bad_subnegotiation"),
        (bytes([IAC, SB, IAC, SE]), "telnet_empty_subnegotiation"),
        (cmd(DO, 1) * 300, "telnet_too_many_options"),
    ],
)
def test_malformed_input_gives_weirds(data: bytes, weird: str) -> None:
    assert weird in sans_io([(False, data)]).weirds()


def test_parse_reports_truncated_sequences() -> None:
    col = Collector("telnet")
    dissector = TelnetDissector(col.flow)
    for pdu in (b"ab\xff", b"\xff\xfb", b"\xff\xfa\x18\x01"):
        dissector.parse(pdu, col.ctx)
    assert col.weirds() == [
        "telnet_truncated_command",
        "telnet_truncated_command",
        "telnet_unterminated_subnegotiation",
    ]


@pytest.mark.parametrize(
    ("data", "port", "verdict"),
    [
        (cmd(DO, 24), 2601, Verdict.YES),
        (sub(24, b"\x01"), 2601, Verdict.YES),
        (b"\xff", 2601, Verdict.MAYBE),
        (b"\xff\xfd", 2601, Verdict.MAYBE),
        (b"\xff\xfd\x99", 2601, Verdict.NO),  # no such option
        (b"\xff\x00\x01", 2601, Verdict.NO),
        (b"Ubuntu 22.04\r\nlogin: ", 23, Verdict.YES),
        (b"Ubuntu 22.04\r\nlogin: ", 2601, Verdict.NO),
        (b"\x16\x03\x01\x00\x05", 23, Verdict.NO),
        (b"", 23, Verdict.MAYBE),
    ],
)
def test_recognition_by_content(data: bytes, port: int, verdict: Verdict) -> None:
    assert TelnetDissector.recognize(data, Transport.TCP, port, 50000) == verdict


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), max_size=12))
def test_fuzz_never_raises(chunks: list[tuple[bool, bytes]]) -> None:
    col = sans_io(chunks)
    TelnetDissector.recognize(b"".join(d for _, d in chunks), Transport.TCP, 23, 5000)
    assert len(col.events) <= MAX_EVENTS


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(SESSION) - 1), st.integers(0, 80), st.integers(0, 255)), max_size=6)
)
@example(flips=[(33, 0, 255)])  # the password's line end turned into IAC: the line never ended
def test_fuzz_mutated_session_never_leaks_passwords(flips: list[tuple[int, int, int]]) -> None:
    chunks = [(is_orig, bytearray(data)) for is_orig, data in SESSION]
    for index, pos, value in flips:
        # Prompts stay intact: a password typed after a prompt mutated into "login:" is a user name.
        prompt = b"login" in chunks[index][1] or b"Password" in chunks[index][1]
        if pos < len(chunks[index][1]) and not prompt:
            chunks[index][1][pos] = value
    col = sans_io([(is_orig, bytes(data)) for is_orig, data in chunks])
    logged = " ".join(str(e.username) for e in col.of(TelnetLogin))
    for secret in PASSWORDS:
        assert secret.decode() not in logged


# ---------------------------------------------------------------------- default credentials

DEFAULT_PASSWORDS = (b"vizxv", b"dbps")  # Mirai's root/vizxv, Digi's root/dbps


def test_default_credentials_are_matched_and_never_stored(tmp_path: Path) -> None:
    session = [
        (False, b"Digi PortServer TS 16\r\nlogin: "),
        *typed(b"root\r\n", echo=True),
        (False, b"Password: "),
        *typed(DEFAULT_PASSWORDS[0] + b"\r\n", echo=False),
        (False, b"\r\nLogin incorrect\r\nlogin: "),
        *typed(b"root\r\n", echo=True),
        (False, b"Password: "),
        *typed(b"dbpx\x7fs\r\n", echo=False),  # a typo corrected with DEL: the pair compared is root/dbps
        (False, b"\r\nWelcome to the PortServer\r\n# "),
        (True, b"exit\r\n"),
    ]
    run, capture = run_flights(tmp_path, session, "telnet-defaults", port=23)
    logins = run.rows("telnet_login")
    assert [(r["username"], r["default_credential"], r["success"]) for r in logins] == [
        ("root", "mirai", False),
        ("root", "digi", True),
    ]
    out = capture.parent / "out-telnet-defaults"
    for secret in DEFAULT_PASSWORDS:
        assert_password_absent(out, secret)
    # The session of a changed password matches no list.
    run, _ = run_flights(tmp_path, SESSION, "telnet-changed", port=23)
    assert [r["default_credential"] for r in run.rows("telnet_login")] == [None, None]


def test_empty_default_password_and_password_only_logins() -> None:
    col = sans_io(
        [(False, b"Moxa NPort\r\nlogin: "), (True, b"admin\r\n"), (False, b"Password: "), (True, b"\r\n")]
    )
    (login,) = col.of(TelnetLogin)
    assert (login.username, login.cleartext_credentials, login.default_credential) == (
        "admin",
        True,
        "mirai,moxa",
    )
    col = sans_io([(False, b"Password: "), (True, b"xc3511\r"), (False, b"\r\nrouter>")])
    (login,) = col.of(TelnetLogin)
    assert (login.username, login.default_credential, login.success) == (None, None, True)  # no pair
    assert "xc3511" not in repr(col.events)


def test_the_last_password_typed_decides() -> None:
    """A server that asks for the password again: the outcome belongs to the last pair typed."""
    col = sans_io(
        [
            (False, b"login: "),
            (True, b"root\r\n"),
            (False, b"Password: "),
            (True, b"xc3511\r\n"),
            (False, b"\r\nPassword: "),
            (True, b"N0tDefault\r\n"),
            (False, b"\r\n$ "),
        ]
    )
    (login,) = col.of(TelnetLogin)
    assert (login.default_credential, login.success) == (None, True)


def test_every_event_field_and_weird_is_documented() -> None:
    documented(DOC, MODULE, "telnet", TelnetDissector.event_types, set())
