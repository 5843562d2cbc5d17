"""The simulated plant: roles, vendors (real OUIs), Purdue-level addressing, scaling."""

from __future__ import annotations

import numpy as np
import pytest

from fieldward.generator.plant import LEVEL, PLCS, Role, build_plant, role_sequence

# IEEE registry assignments (as listed in Wireshark's manuf file) per vendor of the catalog.
IEEE_OUIS = {
    "Siemens": {"28:63:36", "00:1B:1B", "AC:64:17", "00:0E:8C"},
    "Rockwell Automation": {"00:1D:9C", "E4:90:69", "F4:54:33", "5C:88:16", "00:00:BC"},
    "Schneider Electric": {"00:80:F4", "00:00:54"},
    "ABB": {"00:24:59", "00:0C:02"},
    "Honeywell": {"00:40:84", "00:30:AF"},
    "Moxa": {"00:90:E8"},
    "Axis": {"AC:CC:8E", "B8:A4:4F", "00:40:8C"},
    "Hikvision": {"44:19:B6", "BC:AD:28", "C0:56:E3"},
    "Dell": {"18:66:DA", "D4:BE:D9", "F8:BC:12", "B8:AC:6F", "EC:F4:BB"},
    "HP": {"3C:D9:2B", "9C:8E:99"},
    "Advantech": {"74:FE:48"},
}


def test_every_role_in_the_first_sixteen() -> None:
    assert set(role_sequence(16)) == set(Role)
    assert role_sequence(40)[:16] == role_sequence(16)


def test_mix_scales_proportionally() -> None:
    small = role_sequence(200)
    large = role_sequence(2000)
    for role in (Role.CAMERA, Role.SENSOR, Role.IO_ADAPTER, Role.PLC_SIEMENS):
        assert large.count(role) == pytest.approx(10 * small.count(role), rel=0.1)


def test_devices_use_real_vendor_ouis_and_unique_addresses() -> None:
    plant = build_plant(120, np.random.default_rng(5))
    assert len(plant.devices) == 120
    assert len({d.mac for d in plant.devices}) == 120
    assert len({d.ip for d in plant.devices}) == 120
    for device in plant.devices:
        oui = device.mac[:3].hex(":").upper()
        assert oui in IEEE_OUIS[device.vendor], (device.name, device.vendor, oui)
    vendors = {d.vendor for d in plant.devices}
    assert {"Siemens", "Rockwell Automation", "Schneider Electric", "ABB", "Honeywell", "Moxa"} <= vendors
    assert {"Axis", "Hikvision", "Dell", "HP"} <= vendors


def test_purdue_subnets() -> None:
    plant = build_plant(60, np.random.default_rng(1))
    expected = {"L1": (10, 10, 1), "L2": (10, 10, 2), "L3": (10, 10, 3), "IoT": (10, 20, 0)}
    for device in plant.devices:
        assert device.level == LEVEL.get(device.role, "L1")
        assert tuple(device.ip[:3]) == expected[device.level]
        assert device.ip[3] not in (0, 1, 255)
        assert device.subnet.gateway == device.ip[:3] + b"\x01"
    assert all(d.level == "L1" for d in plant.role(*PLCS))
    assert all(d.dhcp for d in plant.role(Role.SENSOR, Role.CAMERA))


def test_large_plants_continue_in_new_cells() -> None:
    plant = build_plant(1200, np.random.default_rng(2))
    level1 = {bytes(d.ip[:3]) for d in plant.devices if d.level == "L1"}
    assert bytes([10, 10, 1]) in level1
    assert bytes([10, 10, 11]) in level1
    assert len({d.ip for d in plant.devices}) == 1200
    assert len({s.router_mac for s in plant.subnets}) == len(plant.subnets)


def test_identities() -> None:
    plant = build_plant(40, np.random.default_rng(3))
    for device in plant.role(Role.PLC_ROCKWELL, Role.IO_ADAPTER):
        assert device.cip is not None
        assert device.cip.vendor_id == 1
        assert device.cip.product_name == device.model
    for device in plant.role(Role.PLC_SIEMENS):
        assert device.s7 is not None
        assert device.s7[0].startswith("6ES7")
    for device in plant.role(Role.RTU):
        assert device.dnp3_address >= 10


def test_same_generator_state_same_plant() -> None:
    a = build_plant(50, np.random.default_rng(9))
    b = build_plant(50, np.random.default_rng(9))
    assert a.devices == b.devices
