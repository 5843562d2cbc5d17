"""Community ID v1: the spec's published test vectors, properties, and tshark's per-packet IDs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldward.capture.reader import open_capture
from fieldward.decode.community_id import community_id, community_ids
from fieldward.decode.flows import FlowTable
from tests.decode.test_flows import CORPUS_FILES, decode, tshark_fields


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


# The vectors of corelight/community-id-spec (baseline/) and corelight/pycommunityid's tests: flow
# tuple, then the ID with seed 0 and with seed 1 (ICMP: type and code in the port fields).
SPEC_VECTORS = [
    (
        6,
        "128.232.110.120",
        "66.35.250.204",
        34855,
        80,
        "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
    ),
    (
        6,
        "66.35.250.204",
        "128.232.110.120",
        80,
        34855,
        "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
    ),
    (
        6,
        "10.0.0.1",
        "10.0.0.2",
        10,
        11569,
        "1:SXBGMX1lBOwhhoDrZynfROxnhnM=",
        "1:HmBRGR+fUyXF4t8WEtal7Y0gEAo=",
    ),
    (
        17,
        "192.168.1.52",
        "8.8.8.8",
        54585,
        53,
        "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
        "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
    ),
    (
        17,
        "8.8.8.8",
        "192.168.1.52",
        53,
        54585,
        "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
        "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
    ),
    (
        132,
        "192.168.170.8",
        "192.168.170.56",
        7,
        80,
        "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=",
        "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU=",
    ),
    (
        132,
        "192.168.170.56",
        "192.168.170.8",
        80,
        7,
        "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=",
        "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU=",
    ),
    (
        1,
        "192.168.0.89",
        "192.168.0.1",
        8,
        0,
        "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
        "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
    ),
    (
        1,
        "192.168.0.1",
        "192.168.0.89",
        0,
        8,
        "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
        "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
    ),
    (
        1,
        "192.168.0.89",
        "192.168.0.1",
        20,
        0,
        "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=",
        "1:lCXHHxavE1Vq3oX9NH5ladQg02o=",
    ),
    (
        1,
        "192.168.0.89",
        "192.168.0.1",
        20,
        1,
        "1:tz/fHIDUHs19NkixVVoOZywde+I=",
        "1:Ie3wmFyxiEyikbsbcO03d2nh+PM=",
    ),
    (
        1,
        "192.168.0.1",
        "192.168.0.89",
        0,
        20,
        "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
        "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
    ),
    (
        58,
        "fe80::200:86ff:fe05:80da",
        "fe80::260:97ff:fe07:69ea",
        135,
        0,
        "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
        "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
    ),
    (
        58,
        "fe80::260:97ff:fe07:69ea",
        "fe80::200:86ff:fe05:80da",
        136,
        0,
        "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
        "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
    ),
    (
        58,
        "3ffe:507:0:1:260:97ff:fe07:69ea",
        "3ffe:507:0:1:200:86ff:fe05:80da",
        3,
        0,
        "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=",
        "1:OlOWx9psIbBFi7lOCw/4MhlKR9M=",
    ),
    (
        58,
        "3ffe:507:0:1:200:86ff:fe05:80da",
        "3ffe:507:0:1:260:97ff:fe07:69ea",
        3,
        0,
        "1:/OGBt9BN1ofenrmSPWYicpij2Vc=",
        "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE=",
    ),
    (46, "10.1.24.4", "10.1.12.1", 0, 0, "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
    (46, "10.1.12.1", "10.1.24.4", 0, 0, "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
]


@pytest.mark.parametrize(("proto", "src", "dst", "sport", "dport", "seed0", "seed1"), SPEC_VECTORS)
def test_spec_vectors(proto: int, src: str, dst: str, sport: int, dport: int, seed0: str, seed1: str) -> None:
    assert community_id(packed(src), packed(dst), proto, sport, dport) == seed0
    assert community_id(packed(src), packed(dst), proto, sport, dport, seed=1) == seed1


def test_batch_function_matches_the_scalar_one() -> None:
    rows = SPEC_VECTORS
    mapped = [
        np.frombuffer(ipaddress.IPv6Address(f"::ffff:{a}").packed if ":" not in a else packed(a), np.uint8)
        for r in rows
        for a in (r[1], r[2])
    ]
    addresses = np.stack(mapped).reshape(len(rows), 2, 16)
    versions = np.array([6 if ":" in r[1] else 4 for r in rows], dtype=np.uint8)
    ids = community_ids(
        addresses[:, 0],
        addresses[:, 1],
        versions,
        np.array([r[0] for r in rows], dtype=np.uint8),
        np.array([r[3] for r in rows], dtype=np.uint16),
        np.array([r[4] for r in rows], dtype=np.uint16),
    )
    assert ids == [r[5] for r in rows]


ipv4 = st.binary(min_size=4, max_size=4)
ports = st.integers(0, 0xFFFF)


@given(ipv4, ipv4, st.sampled_from([6, 17, 132]), ports, ports, st.integers(0, 0xFFFF))
def test_both_directions_hash_alike(a: bytes, b: bytes, proto: int, pa_: int, pb: int, seed: int) -> None:
    assert community_id(a, b, proto, pa_, pb, seed) == community_id(b, a, proto, pb, pa_, seed)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="4 \\(IPv4\\) or 16"):
        community_id(b"\x01\x02\x03", packed("10.0.0.1"), 6, 1, 2)
    with pytest.raises(ValueError, match="same address family"):
        community_id(packed("10.0.0.1"), packed("::1"), 6, 1, 2)
    with pytest.raises(ValueError, match="ports"):
        community_id(packed("10.0.0.1"), packed("10.0.0.2"), 6, 70000, 2)
    with pytest.raises(ValueError, match="seed"):
        community_id(packed("10.0.0.1"), packed("10.0.0.2"), 6, 1, 2, seed=1 << 16)


@pytest.mark.parametrize("name", [*CORPUS_FILES, "modbus/fuzz-72.pcap", "arp/arp-who-has.pcap"])
def test_flow_community_ids_match_tshark(corpus: Path, tshark: str, name: str) -> None:
    """Each packet from a flow's originator carries, per tshark, the flow's Community ID."""
    path = corpus / name
    table = FlowTable()
    flow_of_packet, direction = [], []
    with open_capture(path) as reader:
        for batch in reader:
            assignment = table.update(batch, decode(batch))
            flow_of_packet += assignment.flow_id.tolist()
            direction += assignment.direction.tolist()
    flows = table.finish()
    by_flow = dict(zip(flows["flow_id"].to_pylist(), flows["community_id"].to_pylist(), strict=True))
    theirs = [
        row[0] for row in tshark_fields(tshark, path, ["communityid"], "--enable-protocol", "communityid")
    ]
    assert len(theirs) == len(flow_of_packet)
    compared = 0
    for flow, side, expected in zip(flow_of_packet, direction, theirs, strict=True):
        if flow < 0:
            assert expected == ""
        elif side == 0 and expected:
            assert by_flow[flow] == expected
            compared += 1
    if name != "arp/arp-who-has.pcap":
        assert compared > 0
