"""Payload builders: lengths, counts and checksums each specification requires."""

from __future__ import annotations

import struct

import dpkt
import pytest

from fieldward.generator import protocols as p


def test_dnp3_crc_check_value() -> None:
    assert p.dnp3_crc(b"123456789") == 0xEA82  # CRC-16/DNP catalogue check value


def test_dnp3_frame_blocks_and_crcs() -> None:
    user = bytes(range(40))
    frame = p.dnp3_frame(0x44, 1, 10, user)
    assert frame[:2] == b"\x05\x64"
    assert frame[2] == 5 + len(user)
    assert struct.unpack("<H", frame[8:10])[0] == p.dnp3_crc(frame[:8])
    blocks = [user[i : i + 16] for i in range(0, 40, 16)]
    at = 10
    for block in blocks:
        assert frame[at : at + len(block)] == block
        assert struct.unpack("<H", frame[at + len(block) : at + len(block) + 2])[0] == p.dnp3_crc(block)
        at += len(block) + 2
    assert at == len(frame)
    with pytest.raises(ValueError, match="250"):
        p.dnp3_frame(0x44, 1, 10, bytes(251))


def test_dnp3_request_and_response_headers() -> None:
    request = p.dnp3_request(1, 11, transport_seq=5, app_seq=21, function=p.DNP3_READ, objects=p.DNP3_CLASS0)
    assert request[3] == 0xC4  # DIR, PRM, unconfirmed user data
    assert struct.unpack("<HH", request[4:8]) == (11, 1)
    assert request[10:13] == bytes([0xC5, 0xC5, p.DNP3_READ])  # transport FIN|FIR|5, app FIR|FIN|(21 % 16)
    response = p.dnp3_response(11, 1, 5, 5, 0x0000, p.dnp3_static_objects([True, False], [7, -3], [9]))
    assert response[3] == 0x44
    assert response[10:15] == bytes([0xC5, 0xC5, p.DNP3_RESPONSE, 0, 0])


def test_modbus_adus() -> None:
    request = p.modbus_adu(0x1234, 1, p.modbus_read_request(3, 100, 10))
    assert request == bytes.fromhex("1234 0000 0006 01 03 0064 000a")
    response = p.modbus_adu(7, 1, p.modbus_read_response(3, list(range(10))))
    assert response[4:6] == struct.pack(">H", 1 + 2 + 20)
    assert response[7:9] == bytes([3, 20])
    coils = p.modbus_read_response(1, [1, 0, 0, 0, 0, 0, 0, 0, 1])
    assert coils == bytes([1, 2, 0x01, 0x01])
    assert p.modbus_exception(3, 2) == b"\x83\x02"
    multiple = p.modbus_write_multiple_request(300, [1, 2, 3])
    assert multiple[:6] == bytes([16]) + struct.pack(">HHB", 300, 3, 6)
    identity = p.modbus_device_id_response(["Schneider Electric", "BMEP582040", "V4.10"])
    assert identity[:7] == bytes([0x2B, 0x0E, 1, 0x81, 0, 0, 3])
    assert identity[7:9] == bytes([0, len("Schneider Electric")])


def test_s7_messages() -> None:
    cr = p.cotp_connection_request(0x1234, 0x0100, 0x0102)
    assert cr[:4] == b"\x03\x00" + struct.pack(">H", len(cr))
    assert cr[4] == len(cr) - 5
    assert cr[5] == 0xE0
    item = p.S7Item(p.S7_AREA_DB, 1, 10, 3)
    request = p.s7_read_request(0x4242, [item, item])
    assert request[4:7] == p.COTP_DT
    assert request[p.S7_PDU_REF_OFFSET : p.S7_PDU_REF_OFFSET + 2] == b"\x42\x42"
    assert item.spec()[-3:] == (80).to_bytes(3, "big")  # bit address of byte 10
    response = p.s7_read_response(1, [b"abc", b"de"])
    header = response[7:19]
    param_len, data_len = struct.unpack(">HH", header[6:10])
    assert param_len == 2
    assert data_len == (4 + 3 + 1) + (4 + 2)  # the odd first item is padded, the last is not
    assert len(response) == 7 + 12 + param_len + data_len
    szl = p.s7_szl_response(1, 0x0011, 0, 28, p.szl_module_identification("6ES7 515-2AM02-0AB0", (2, 9, 4)))
    assert szl.endswith(bytes([ord("V"), 2, 9, 4]))


def test_enip_and_cip() -> None:
    identity = p.CipIdentity(1, 14, 166, (33, 11), 0xDEADBEEF, "1756-L83E/B")
    reply = p.enip_list_identity_reply(identity, bytes([10, 10, 1, 12]))
    command, length = struct.unpack("<HH", reply[:4])
    assert command == p.ENIP_LIST_IDENTITY
    assert length == len(reply) - 24
    assert reply.endswith(b"1756-L83E/B\x03")
    assert bytes([10, 10, 1, 12]) in reply
    assert p.cip_symbolic_path("Tank") == b"\x91\x04Tank"
    assert p.cip_symbolic_path("Tank1") == b"\x91\x05Tank1\x00"
    io = p.cip_io_packet(0x11223344, b"\xaa" * 6, run_idle=True)
    assert struct.unpack("<HHHI", io[:10]) == (2, 0x8002, 8, 0x11223344)
    assert struct.unpack("<HH", io[14:18]) == (0x00B1, 2 + 4 + 6)
    assert p.CIP_IO_SEQUENCE_OFFSET == 10
    assert p.CIP_IO_COUNT_OFFSET == 18


def test_mqtt() -> None:
    for size, encoded in [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
    ]:
        assert p.mqtt_packet(0x30, bytes(size))[1 : 1 + len(encoded)] == encoded
    connect = p.mqtt_connect("tt-101", 60, "sensor", "secret")
    assert connect[0] == 0x10
    assert connect[2:10] == b"\x00\x04MQTT\x04\xc2"
    packet, offset = p.mqtt_publish("plant/a/b", b"{}", qos=1)
    assert packet[0] == 0x32
    assert offset == 2 + 2 + len("plant/a/b")
    assert packet[offset : offset + 2] == b"\x00\x00"
    assert p.mqtt_publish("t", b"x")[1] == -1


def test_h264_bitstream_helpers() -> None:
    bits = p._BitWriter()
    for value in (0, 1, 2, 3):
        bits.ue(value)
    assert "".join(map(str, bits.bits)) == "1" + "010" + "011" + "00100"
    assert p.emulation_prevention(b"\x00\x00\x01\x00\x00\x04") == b"\x00\x00\x03\x01\x00\x00\x04"
    sps = p.h264_sps(1920, 1080)
    assert sps[:4] == bytes([0x67, 66, 0xC0, 40])
    assert len(p.h264_slice_header(True)) % 2 == 0
    assert p.fu_a(0x65, True, False) == bytes([0x7C, 0x85])
    assert p.fu_a(0x41, False, True) == bytes([0x5C, 0x41])


def test_dhcp_dns_ntp_parse_with_dpkt() -> None:
    mac = bytes.fromhex("0090e8112233")
    message = p.dhcp_message(1, 0xCAFE, mac, [(53, b"\x01"), (12, b"tt-101"), (60, b"Moxa")])
    assert len(message) == 300
    dhcp = dpkt.dhcp.DHCP(message)
    assert dhcp.xid == 0xCAFE
    assert dhcp.chaddr == mac
    assert dict(dhcp.opts)[12] == b"tt-101"
    query = dpkt.dns.DNS(p.dns_query(7, "historian.plant.local", p.DNS_A))
    assert query.qd[0].name == "historian.plant.local"
    answer = dpkt.dns.DNS(
        p.dns_response(7, "historian.plant.local", p.DNS_A, [(p.DNS_A, 600, bytes([10, 10, 3, 10]))])
    )
    assert answer.an[0].ip == bytes([10, 10, 3, 10])
    missing = dpkt.dns.DNS(
        p.dns_response(8, "wpad.plant.local", p.DNS_A, rcode=3, soa=("plant.local", "dc01.plant.local", 1))
    )
    assert missing.rcode == 3
    assert missing.ns[0].type == p.DNS_SOA
    request = p.ntp_client_request(1_767_225_600_250_000_000)
    reply = dpkt.ntp.NTP(
        p.ntp_server_reply(
            request, 1_767_225_600_251_000_000, 1_767_225_600_251_100_000, 0, b"\x0a\x0a\x03\x01"
        )
    )
    assert reply.mode == 4
    assert reply.originate_time == dpkt.ntp.NTP(request).transmit_time
    assert reply.stratum == 3
