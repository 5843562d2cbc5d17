"""Every identity source of the inventory, from real bytes: packets built with scapy (or the
generator's protocol encoders, themselves checked against tshark) are analysed end to end and the
resulting device records are checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scapy.asn1.asn1 import ASN1_OID, ASN1_STRING
from scapy.contrib.cdp import CDPMsgDeviceID, CDPMsgPlatform, CDPMsgSoftwareVersion, CDPv2_HDR
from scapy.contrib.lldp import (
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUPortID,
    LLDPDUSystemCapabilities,
    LLDPDUSystemDescription,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, LLC, SNAP, Dot3, Ether
from scapy.layers.snmp import SNMP, SNMPget, SNMPresponse, SNMPvarbind
from scapy.packet import Packet, Raw

from fieldward.generator import protocols as p
from tests.inventory.helpers import device_for_ip, device_for_mac, inventory_of, tcp_session
from tests.protocols.test_tls import SNI

PLC = ("00:80:f4:11:22:33", "10.1.1.10")  # Telemecanique (Schneider Electric) OUI
HMI = ("18:66:da:44:55:66", "10.1.2.10")  # Dell OUI
SWITCH_MAC = "00:1b:1b:aa:bb:cc"  # Siemens OUI


def test_modbus_device_identification(tmp_path: Path) -> None:
    request = p.modbus_adu(7, 1, p.modbus_device_id_request())
    answer = p.modbus_adu(7, 1, p.modbus_device_id_response(["Schneider Electric", "BMEP582040", "V4.10"]))
    polls = [(True, p.modbus_adu(8 + i, 1, p.modbus_read_request(3, 0, 10))) for i in range(2)]
    devices = inventory_of(tmp_path, tcp_session(HMI, PLC, 502, [(True, request), (False, answer), *polls]))
    plc = device_for_ip(devices, PLC[1])
    assert (plc["vendor"], plc["product_code"], plc["firmware"]) == (
        "Schneider Electric",
        "BMEP582040",
        "V4.10",
    )
    assert plc["device_type"] == "plc"
    assert plc["purdue_level"] == 1
    assert {"protocol": "modbus", "role": "slave", "peers": 1} in plc["roles"]
    assert plc["attributes"]["vendor"]["confidence"] > 0.9  # device said it, and the OUI agrees
    sources = {e["source"] for e in plc["attributes"]["firmware"]["evidence"]}
    assert sources == {"modbus_device_id"}
    hmi = device_for_ip(devices, HMI[1])
    assert {"protocol": "modbus", "role": "master", "peers": 1} in hmi["roles"]
    assert hmi["vendor"] == "Dell"  # IEEE registry via netaddr
    assert hmi["attributes"]["vendor"]["evidence"][0]["source"] == "oui"


def test_cip_list_identity_and_s7_szl_from_the_generator_encoders(tmp_path: Path) -> None:
    from fieldward.generator.protocols import CipIdentity

    identity = CipIdentity(1, 14, 166, (33, 11), 0x1A2B3C4D, "1756-L83E/B")
    rockwell = ("00:1d:9c:01:02:03", "10.1.1.20")
    siemens = ("28:63:36:01:02:03", "10.1.1.30")
    list_identity = p.enip(p.ENIP_LIST_IDENTITY, 0)
    reply = p.enip_list_identity_reply(identity, bytes(int(x) for x in rockwell[1].split(".")))
    packets = tcp_session(HMI, rockwell, 44818, [(True, list_identity), (False, reply)])
    module = p.szl_module_identification("6ES7 515-2AM02-0AB0", (2, 9, 4))
    component = p.szl_component_identification("Line 3", "PLC-7", "S C-X4U421302009", "CPU 1515-2 PN")
    packets += tcp_session(
        HMI,
        siemens,
        102,
        [
            (True, p.cotp_connection_request(1, 0x0100, 0x0102)),
            (False, p.cotp_connection_confirm(1, 2, 0x0100, 0x0102)),
            (True, p.s7_setup_request(1)),
            (False, p.s7_setup_response(1)),
            (True, p.s7_szl_request(2, 0x0011, 0)),
            (False, p.s7_szl_response(2, 0x0011, 0, 28, module)),
            (True, p.s7_szl_request(3, 0x001C, 0)),
            (False, p.s7_szl_response(3, 0x001C, 0, 34, component)),
        ],
        cport=50200,
    )
    devices = inventory_of(tmp_path, packets)
    logix = device_for_ip(devices, rockwell[1])
    assert logix["vendor"] == "Rockwell Automation"
    assert (logix["model"], logix["firmware"], logix["serial"]) == ("1756-L83E/B", "33.11", "0x1a2b3c4d")
    assert logix["device_type"] == "plc"
    s7 = device_for_ip(devices, siemens[1])
    assert (s7["vendor"], s7["model"], s7["firmware"]) == ("Siemens", "CPU 1515-2 PN", "V2.9.4")
    assert (s7["serial"], s7["product_code"], s7["hostname"]) == (
        "S C-X4U421302009",
        "6ES7 515-2AM02-0AB0",
        "PLC-7",
    )
    assert s7["device_type"] == "plc"
    ews = device_for_ip(devices, HMI[1])
    assert "ot-engineering" in ews["facts"]["behaviour"]  # ListIdentity and SZL reads
    assert ews["device_type"] == "engineering_workstation"
    assert ews["purdue_level"] == 2


def lldp_frame() -> Packet:
    return (
        Ether(src=SWITCH_MAC, dst="01:80:c2:00:00:0e")
        / LLDPDUChassisID(subtype=4, id=SWITCH_MAC)
        / LLDPDUPortID(subtype=5, id=b"P1.3")
        / LLDPDUTimeToLive(ttl=120)
        / LLDPDUSystemName(system_name=b"sw-cell3")
        / LLDPDUSystemDescription(
            description=b"Siemens, SIMATIC NET, SCALANCE XC208, 6GK5 208-0BA00-2AC2, HW: 1, FW: V4.1"
        )
        / LLDPDUSystemCapabilities(mac_bridge_available=1, mac_bridge_enabled=1)
        / LLDPDUEndOfLLDPDU()
    )


def test_lldp_names_a_switch(tmp_path: Path) -> None:
    devices = inventory_of(tmp_path, [lldp_frame()])
    switch = device_for_mac(devices, SWITCH_MAC)
    assert switch["hostname"] == "sw-cell3"
    assert (switch["vendor"], switch["model"]) == ("Siemens", "SCALANCE XC208")
    assert switch["device_type"] == "network_device"
    assert "bridge" in switch["facts"]["lldp.capabilities"]


def test_cdp_names_a_cisco_switch(tmp_path: Path) -> None:
    mac = "00:1e:f6:73:59:81"
    frame = (
        Dot3(src=mac, dst="01:00:0c:cc:cc:cc")
        / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
        / SNAP(OUI=0x0C, code=0x2000)
        / CDPv2_HDR(
            msg=[
                CDPMsgDeviceID(val=b"core-sw1"),
                CDPMsgSoftwareVersion(val=b"Cisco IOS Software, C2960 Software, Version 15.0(2)SE11"),
                CDPMsgPlatform(val=b"cisco WS-C2960-24TT-L"),
            ]
        )
    )
    devices = inventory_of(tmp_path, [frame])
    switch = device_for_mac(devices, mac)
    assert (switch["hostname"], switch["vendor"], switch["model"]) == ("core-sw1", "Cisco", "WS-C2960-24TT-L")
    assert switch["device_type"] == "network_device"
    assert switch["os"] == "Cisco IOS"
    assert switch["firmware"] == "15.0(2)SE11"


def snmp_exchange(
    agent: tuple[str, str], manager: tuple[str, str], descr: bytes, name: bytes
) -> list[Packet]:
    request = SNMP(
        community="public", PDU=SNMPget(varbindlist=[SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"))])
    )
    response = SNMP(
        community="public",
        PDU=SNMPresponse(
            varbindlist=[
                SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"), value=ASN1_STRING(descr)),
                SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.5.0"), value=ASN1_STRING(name)),
            ]
        ),
    )
    return [
        Ether(src=manager[0], dst=agent[0])
        / IP(src=manager[1], dst=agent[1])
        / UDP(sport=40000, dport=161)
        / request,
        Ether(src=agent[0], dst=manager[0])
        / IP(src=agent[1], dst=manager[1])
        / UDP(sport=161, dport=40000)
        / response,
    ]


def test_snmp_sysdescr_and_sysname(tmp_path: Path) -> None:
    printer = ("00:17:c8:01:02:03", "10.1.3.50")
    devices = inventory_of(
        tmp_path,
        snmp_exchange(printer, HMI, b"HP ETHERNET MULTI-ENVIRONMENT,JETDIRECT,JD153", b"prn-office2"),
    )
    device = device_for_ip(devices, printer[1])
    assert device["hostname"] == "prn-office2"
    assert device["device_type"] == "printer"
    assert "JETDIRECT" in device["facts"]["snmp.sys_descr"][0]
    assert {"protocol": "snmp", "role": "server", "peers": 1} in device["roles"]


def test_dhcp_hostname_vendor_class_fingerprint_and_lease(tmp_path: Path) -> None:
    camera_mac = "ac:cc:8e:12:34:56"
    server = ("00:90:e8:00:00:01", "10.20.0.1")
    raw_mac = bytes.fromhex(camera_mac.replace(":", ""))
    request = (
        Ether(src=camera_mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=raw_mac, xid=7)
        / DHCP(
            options=[
                ("message-type", "request"),
                ("hostname", b"axis-accc8e123456"),
                ("vendor_class_id", b"AXIS,Network Camera,P1455-LE,10.12.199"),
                ("param_req_list", [1, 3, 6, 12, 15, 28, 42]),
                ("requested_addr", "10.20.0.77"),
                "end",
            ]
        )
    )
    ack = (
        Ether(src=server[0], dst=camera_mac)
        / IP(src=server[1], dst="10.20.0.77")
        / UDP(sport=67, dport=68)
        / BOOTP(op=2, chaddr=raw_mac, xid=7, yiaddr="10.20.0.77")
        / DHCP(
            options=[
                ("message-type", "ack"),
                ("server_id", server[1]),
                ("lease_time", 3600),
                ("router", server[1]),
                "end",
            ]
        )
    )
    devices = inventory_of(tmp_path, [request, ack])
    camera = device_for_mac(devices, camera_mac)
    assert camera["hostname"] == "axis-accc8e123456"
    assert (camera["vendor"], camera["device_type"], camera["os"]) == ("Axis", "ip_camera", "Linux (AXIS OS)")
    assert camera["ips"] == ["10.20.0.77"]  # bound by the server's ACK, before the camera sent from it
    assert camera["facts"]["dhcp.fingerprint"] == ["1,3,6,12,15,28,42"]
    router = device_for_ip(devices, server[1])
    assert any(r["protocol"] == "dhcp" and r["role"] == "server" for r in router["roles"])
    assert router["device_type"] == "network_device"  # the DHCP router option names it


def test_mdns_ssdp_http_ssh_and_tls_facts(tmp_path: Path) -> None:
    nas = ("00:11:32:aa:bb:cc", "10.1.3.20")  # Synology OUI
    mdns = (
        Ether(src=nas[0], dst="01:00:5e:00:00:fb")
        / IP(src=nas[1], dst="224.0.0.251", ttl=255)
        / UDP(sport=5353, dport=5353)
        / DNS(
            qr=1,
            aa=1,
            qd=[],
            an=DNSRR(rrname="diskstation.local", type="A", rdata=nas[1], ttl=120)
            / DNSRR(rrname="_ipp._tcp.local", type="PTR", rdata="Office Printer._ipp._tcp.local", ttl=120),
        )
    )
    ssdp = (
        Ether(src=nas[0], dst="01:00:5e:7f:ff:fa")
        / IP(src=nas[1], dst="239.255.255.250")
        / UDP(sport=1900, dport=1900)
        / Raw(
            b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
            b"USN: uuid:73796E6F-6473-6D00-0000-001132aabbcc::upnp:rootdevice\r\n"
            b"SERVER: Linux/4.4.302+, UPnP/1.0, Portable SDK for UPnP devices/1.6.22\r\n"
            b"LOCATION: http://10.1.3.20:5000/ssdp/desc-DSM-eth0.xml\r\nCACHE-CONTROL: max-age=1800\r\n\r\n"
        )
    )
    http = tcp_session(
        HMI,
        nas,
        80,
        [
            (
                True,
                b"GET / HTTP/1.1\r\nHost: nas\r\n"
                b"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\n\r\n",
            ),
            (False, b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n"),
        ],
        cport=50300,
    )
    ssh = tcp_session(
        HMI,
        nas,
        22,
        [(True, b"SSH-2.0-PuTTY_Release_0.81\r\n"), (False, b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3\r\n")],
        cport=50301,
    )
    devices = inventory_of(tmp_path, [mdns, ssdp, *http, *ssh])
    device = device_for_ip(devices, nas[1])
    assert device["hostname"] == "diskstation"
    assert device["facts"]["ssdp.server"] == [
        "Linux/4.4.302+, UPnP/1.0, Portable SDK for UPnP devices/1.6.22"
    ]
    assert device["facts"]["http.server"] == ["nginx"]
    assert device["facts"]["ssh.software"] == ["OpenSSH_8.4p1 Debian-5+deb11u3"]
    assert device["os"] == "Linux"
    client = device_for_ip(devices, HMI[1])
    assert client["facts"]["http.user_agent"] == ["Mozilla/5.0 (Windows NT 10.0; Win64; x64)"]
    assert client["facts"]["ssh.software"] == ["PuTTY_Release_0.81"]
    assert client["os"] == "Windows"
    served = {(s["transport"], s["port"], s["service"]) for s in device["services"]}
    assert {("tcp", 80, "http"), ("tcp", 22, "ssh")} <= served


def test_tls_fingerprints_and_certificate_names(
    tmp_path: Path, tls12_flights: list[tuple[bool, bytes]]
) -> None:
    web = ("00:0c:29:01:02:03", "10.1.3.40")
    devices = inventory_of(tmp_path, tcp_session(HMI, web, 443, tls12_flights, cport=50400))
    client = device_for_ip(devices, HMI[1])
    assert len(client["facts"]["tls.ja3"][0]) == 32
    assert client["facts"]["tls.ja4"][0].startswith("t12") or client["facts"]["tls.ja4"][0].startswith("t13")
    server = device_for_ip(devices, web[1])
    assert any(SNI in subject for subject in server["facts"]["tls.subject"])


def test_tcp_syn_fingerprint_gives_os_family(tmp_path: Path) -> None:
    linux = ("00:0c:29:0a:0b:0c", "10.1.3.60")
    windows = ("00:50:56:0a:0b:0c", "10.1.3.61")
    server = ("00:0c:29:0f:0f:0f", "10.1.3.62")
    linux_options = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    windows_options = [
        ("MSS", 1460),
        ("NOP", None),
        ("WScale", 8),
        ("NOP", None),
        ("NOP", None),
        ("SAckOK", b""),
    ]
    packets = tcp_session(linux, server, 8080, [], syn_options=linux_options, client_ttl=64)
    packets += tcp_session(
        windows, server, 8080, [], syn_options=windows_options, client_ttl=128, cport=50500
    )
    devices = inventory_of(tmp_path, packets)
    assert device_for_ip(devices, linux[1])["facts"]["tcp.syn"] == [
        "ttl=64,win=64240,mss=1460,ws=7,sack=1,ts=1"
    ]
    assert device_for_ip(devices, linux[1])["os"] == "Linux"
    assert device_for_ip(devices, windows[1])["os"] == "Windows"


def test_profinet_dcp_identify_response(tmp_path: Path) -> None:
    from tests.protocols.test_profinet_dcp import CONTROLLER, DEVICE, scapy_frames

    devices = inventory_of(tmp_path, scapy_frames())
    device = device_for_mac(devices, DEVICE)
    assert device["hostname"] == "plc-1"
    assert (device["vendor"], device["model"]) == ("Siemens", "S7-1500")
    assert "192.168.0.10" in device["ips"]  # the IP block of the answer binds it to the MAC
    assert device["device_type"] == "plc"  # device role 2: IO-Controller
    assert device_for_mac(devices, CONTROLLER)["device_type"] is None


def test_arp_and_address_reuse(tmp_path: Path) -> None:
    """One address used by two devices in turn (a DHCP lease handed over): two devices, each with
    the address in its history, and the evidence of each period on the right one."""
    first = ("74:fe:48:00:00:01", "10.20.0.50")
    second = ("00:30:af:00:00:02", "10.20.0.50")
    broker = ("00:90:e8:00:00:09", "10.20.0.10")
    packets: list[Any] = []
    for who, name in ((first, b"ft-1"), (second, b"pt-2")):
        packets.append(
            Ether(src=who[0], dst="ff:ff:ff:ff:ff:ff")
            / ARP(op=2, hwsrc=who[0], psrc=who[1], hwdst=who[0], pdst=who[1])
        )
        packets += tcp_session(who, broker, 1883, [(True, mqtt_connect(name))], cport=50600 + len(packets))
    devices = inventory_of(tmp_path, packets)
    one, two = device_for_mac(devices, first[0]), device_for_mac(devices, second[0])
    assert one["ips"] == two["ips"] == ["10.20.0.50"]
    assert one["facts"]["mqtt.client_id"] == ["ft-1"]
    assert two["facts"]["mqtt.client_id"] == ["pt-2"]
    assert one["vendor"] == "Advantech"
    assert two["vendor"] == "Honeywell"
    assert one["device_type"] == two["device_type"] == "iot_sensor"


def mqtt_connect(client_id: bytes) -> bytes:
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    return bytes([0x10, len(body)]) + body


def test_hosts_behind_a_router_are_keyed_by_ip(tmp_path: Path) -> None:
    """A router's MAC carries many addresses: the hosts behind it are devices of their own, not the router."""
    router = ("00:90:e8:77:77:77", "10.1.1.1")
    local = ("00:80:f4:01:01:01", "10.1.1.10")
    packets: list[Packet] = [
        Ether(src=router[0], dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=2, hwsrc=router[0], psrc=router[1], pdst=router[1])
    ]
    for n in range(6):
        remote = (router[0], f"10.9.0.{20 + n}")
        packets += tcp_session(
            remote,
            local,
            502,
            [(True, p.modbus_adu(n, 1, p.modbus_read_request(3, 0, 4)))],
            client_ttl=127,
            cport=51000 + n,
        )
    devices = inventory_of(tmp_path, packets)
    gateway = device_for_mac(devices, router[0])
    assert gateway["ips"] == [router[1]]
    assert gateway["router"]
    assert gateway["device_type"] == "network_device"
    for n in range(6):
        host = device_for_ip(devices, f"10.9.0.{20 + n}")
        assert host["id"] == f"ip:10.9.0.{20 + n}"
        assert host["mac"] is None
        assert host["local"] is False
        assert host["via"] == router[0]
        assert host["facts"]["hops"] == ["1"]
        assert any(r["protocol"] == "modbus" and r["role"] == "master" for r in host["roles"])
    plc = device_for_ip(devices, local[1])
    assert {"protocol": "modbus", "role": "slave", "peers": 6} in plc["roles"]


def test_a_device_that_changes_address_stays_one_device(tmp_path: Path) -> None:
    """DHCP gives a sensor a new lease: one device (its MAC), both addresses in its history, in order."""
    sensor_mac = "74:fe:48:0a:0b:0c"
    broker = ("00:90:e8:00:00:09", "10.20.0.10")
    packets: list[Any] = []
    for address, cport in (("10.20.0.31", 50700), ("10.20.0.32", 50701)):
        packets += tcp_session(
            (sensor_mac, address), broker, 1883, [(True, mqtt_connect(b"ft-9"))], cport=cport
        )
    devices = inventory_of(tmp_path, packets)
    sensor = device_for_mac(devices, sensor_mac)
    assert sensor["ips"] == ["10.20.0.31", "10.20.0.32"]
    history = sensor["address_history"]
    assert [h["ip"] for h in history] == ["10.20.0.31", "10.20.0.32"]
    assert history[0]["last_seen"] < history[1]["first_seen"]
    assert sum(1 for d in devices if "10.20.0.32" in d["ips"]) == 1
    broker_device = device_for_ip(devices, broker[1])
    assert {"protocol": "mqtt", "role": "server", "peers": 1} in broker_device["roles"]
