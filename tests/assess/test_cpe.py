"""CPE 2.3 candidates from inventory devices: the mapping file, templates, fallback and confidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fieldward.assess.cpe import (
    CpeMapError,
    candidates,
    escape,
    load_cpe_map,
)
from fieldward.assess.model import split_cpe


def device(**attributes: Any) -> dict[str, Any]:
    confidence = {k: 0.9 for k, v in attributes.items() if v is not None and k != "facts"}
    return {"id": "mac:00:1b:1b:30:89:24", **attributes, "confidence": confidence}


def names(found: list[Any]) -> set[str]:
    return {c.cpe for c in found}


S7_1515 = device(
    vendor="Siemens", model="CPU 1515-2 PN", product_code="6ES7 515-2AM02-0AB0", firmware="V2.9.4"
)


def test_siemens_s7_1500_firmware_and_hardware_names() -> None:
    found = candidates(S7_1515)
    assert {
        "cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:2.9.4:*:*:*:*:*:*:*",
        "cpe:2.3:h:siemens:simatic_s7-1500_cpu_1515-2_pn:*:*:*:*:*:*:*:*",
        "cpe:2.3:o:siemens:6es7515-2am02-0ab0_firmware:2.9.4:*:*:*:*:*:*:*",
    } <= names(found)
    firmware = next(c for c in found if "simatic_s7-1500_cpu_firmware" in c.cpe)
    assert firmware.version == "2.9.4"
    assert firmware.basis["firmware"] == "V2.9.4"
    assert firmware.basis["rule"] == "siemens-s7-1500"
    # vendor x model x firmware x mapping certainty
    assert firmware.confidence == pytest.approx(0.9 * 0.9 * 0.9 * 0.9)
    hardware = next(c for c in found if c.cpe.startswith("cpe:2.3:h:siemens:simatic_s7-1500_cpu_1515"))
    assert hardware.confidence == pytest.approx(0.9 * 0.9 * 0.9)  # no firmware in a hardware name


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"vendor": "Siemens", "model": "CPU 1214C DC/DC/DC", "firmware": "V4.5.2"},
            "cpe:2.3:h:siemens:simatic_s7-1200_cpu_1214c_dc\\/dc\\/dc:*:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Siemens", "model": "CPU 315-2 PN/DP", "firmware": "V3.2.17"},
            "cpe:2.3:o:siemens:simatic_s7-300_cpu_315-2_pn\\/dp_firmware:3.2.17:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Siemens", "model": "CPU 416-3 PN/DP", "firmware": "V8.2"},
            "cpe:2.3:o:siemens:simatic_s7-400_cpu_firmware:8.2:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Rockwell Automation", "model": "1756-L83E/B", "firmware": "33.11"},
            "cpe:2.3:o:rockwellautomation:controllogix_5580_firmware:33.11:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Rockwell Automation", "model": "1756-L83E/B", "firmware": "33.11"},
            "cpe:2.3:h:rockwellautomation:1756-l83e:*:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Rockwell Automation", "model": "1769-L33ER/A", "firmware": "32.11"},
            "cpe:2.3:o:rockwellautomation:compactlogix_5370_l3_firmware:32.11:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Rockwell Automation", "model": "1794-AENTR/A", "firmware": "2.1"},
            "cpe:2.3:o:rockwellautomation:1794-aentr_firmware:2.1:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Rockwell Automation", "model": "1734-AENTR/B", "firmware": "6.12"},
            "cpe:2.3:o:rockwellautomation:1734-aentr_firmware:6.12:*:*:*:*:*:*:*",
        ),
        (
            {
                "vendor": "Schneider Electric",
                "model": "BMXP342020",
                "product_code": "BMXP342020",
                "firmware": "V3.50",
            },
            "cpe:2.3:o:schneider-electric:modicon_m340_firmware:3.50:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Schneider Electric", "model": "BMEP582040", "firmware": "V4.10"},
            "cpe:2.3:o:schneider-electric:modicon_m580_bmep582040_firmware:4.10:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Schneider Electric", "model": "TSXP574634M", "firmware": "V3.2"},
            "cpe:2.3:o:schneider-electric:modicon_premium_firmware:3.2:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Moxa", "model": "MGate MB3270", "firmware": "V4.3"},
            "cpe:2.3:o:moxa:mgate_mb3270_firmware:4.3:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Moxa", "model": "NPort 5110", "firmware": "2.10"},
            "cpe:2.3:o:moxa:nport_5110_firmware:2.10:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Moxa", "model": "EDS-405A", "firmware": "3.8"},
            "cpe:2.3:o:moxa:eds-405a_firmware:3.8:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "ABB", "model": "PM583-ETH", "firmware": "V3.5.0"},
            "cpe:2.3:o:abb:pm583-eth_firmware:3.5.0:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Phoenix Contact", "model": "AXC F 2152", "firmware": "2022.0.4"},
            "cpe:2.3:o:phoenixcontact:axc_f_2152_firmware:2022.0.4:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "WAGO", "model": "PFC200 750-8202", "firmware": "03.10.08"},
            "cpe:2.3:o:wago:750-8202_firmware:03.10.08:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Hikvision", "model": "DS-2CD2032-I", "firmware": "V5.4.5"},
            "cpe:2.3:o:hikvision:ds-2cd2032-i_firmware:5.4.5:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Axis", "os": "Linux (AXIS OS)", "firmware": "10.12.182"},
            "cpe:2.3:o:axis:axis_os:10.12.182:*:*:*:*:*:*:*",
        ),
        (
            {"vendor": "Cisco", "os": "Cisco IOS", "firmware": "15.2(4)M7"},
            "cpe:2.3:o:cisco:ios:15.2\\(4\\)m7:*:*:*:*:*:*:*",
        ),
    ],
)
def test_families_fieldward_identifies(attributes: dict[str, Any], expected: str) -> None:
    assert expected in names(candidates(device(**attributes)))


def test_banners_give_software_names_whatever_the_vendor() -> None:
    record = device(vendor="Raspberry Pi")
    record["facts"] = {
        "ssh.software": ["OpenSSH_7.4p1 Raspbian-10+deb9u7"],
        "http.server": ["Apache/2.4.41 (Ubuntu)", "nginx/1.18.0"],
        "ftp.banner": ["(vsFTPd 3.0.3)"],
    }
    found = {c.cpe: c for c in candidates(record)}
    ssh = found["cpe:2.3:a:openbsd:openssh:7.4:p1:*:*:*:*:*:*"]
    assert ssh.version == "7.4p1"
    assert ssh.basis["ssh.software"].startswith("OpenSSH_7.4p1")
    assert "cpe:2.3:a:apache:http_server:2.4.41:*:*:*:*:*:*:*" in found
    assert "cpe:2.3:a:f5:nginx:1.18.0:*:*:*:*:*:*:*" in found
    assert "cpe:2.3:a:nginx:nginx:1.18.0:*:*:*:*:*:*:*" in found
    assert "cpe:2.3:a:beasts:vsftpd:3.0.3:*:*:*:*:*:*:*" in found


def test_nothing_for_an_unidentified_device() -> None:
    assert candidates({"id": "ip:10.0.0.9", "vendor": None, "confidence": {}}) == []
    assert candidates(device(vendor="Dell", os="Windows")) == []


def test_other_vendor_does_not_take_a_rule() -> None:
    # a Moxa-looking model under another vendor is not a Moxa product
    assert not any(":moxa:" in c.cpe for c in candidates(device(vendor="Advantech", model="MGate MB3270")))


def test_unknown_firmware_gives_any_version() -> None:
    found = candidates(device(vendor="Moxa", model="MGate MB3270"))
    firmware = next(c for c in found if "mgate_mb3270_firmware" in c.cpe)
    assert split_cpe(firmware.cpe)[5] == "*"
    assert firmware.version is None


class Catalog:
    def __init__(self, products: dict[str, list[str]]) -> None:
        self.products = products
        self.asked: list[str] = []

    def products_of(self, vendor: str) -> list[str]:
        self.asked.append(vendor)
        return self.products.get(vendor, [])


def test_fallback_picks_feed_names_by_model_number_at_lower_confidence() -> None:
    catalog = Catalog(
        {
            "siemens": [
                "simatic_s7-1500_cpu_1515-2_pn_firmware",
                "simatic_s7-1500_cpu_1518-4_pn\\/dp_firmware",  # a sibling model: not this device
                "simatic_s7-1500_software_controller",
                "scalance_x200_firmware",
                "simatic_s7-1500_cpu_firmware",  # already from the rules
            ]
        }
    )
    found = candidates(
        device(vendor="Siemens", model="CPU 1515-2 PN", firmware="V2.9.4"), catalog, load_cpe_map()
    )
    assert catalog.asked == ["siemens"]
    fallback = [c for c in found if c.basis["rule"].startswith("fallback")]
    assert [c.cpe for c in fallback] == []  # 1515-2_pn_firmware is already a rule name
    catalog.products["siemens"].append("simatic_s7-1500_1515-2_pn_firmware")
    found = candidates(
        device(vendor="Siemens", model="CPU 1515-2 PN", firmware="V2.9.4"), catalog, load_cpe_map()
    )
    fallback = [c for c in found if c.basis["rule"].startswith("fallback")]
    assert [c.cpe for c in fallback] == [
        "cpe:2.3:o:siemens:simatic_s7-1500_1515-2_pn_firmware:2.9.4:*:*:*:*:*:*:*"
    ]
    best_rule = max(c.confidence for c in found if not c.basis["rule"].startswith("fallback"))
    assert fallback[0].confidence < best_rule


def test_fallback_for_a_model_without_rule() -> None:
    catalog = Catalog({"honeywell": ["experion_c300_firmware", "experion_pks", "c200_firmware"]})
    found = candidates(device(vendor="Honeywell", model="Experion C300", firmware="R511.2"), catalog)
    assert [c.cpe for c in found] == ["cpe:2.3:o:honeywell:experion_c300_firmware:511.2:*:*:*:*:*:*:*"]
    assert found[0].confidence < 0.9 * 0.9 * 0.9 * 0.6 + 1e-9


def test_user_mapping_file_comes_first(tmp_path: Path) -> None:
    extra = tmp_path / "site.yaml"
    extra.write_text(
        "vendors:\n  Acme Controls: [acme_controls]\n"
        "products:\n"
        "  - name: acme-plc\n    vendor: acme_controls\n    certainty: 0.5\n"
        "    match: {model: '^AC(?P<n>\\d+)'}\n    cpes: ['o:ac{n}_plc_firmware']\n"
    )
    cpe_map = load_cpe_map([extra])
    found = candidates(device(vendor="Acme Controls", model="AC300", firmware="1.2"), None, cpe_map)
    assert [c.cpe for c in found] == ["cpe:2.3:o:acme_controls:ac300_plc_firmware:1.2:*:*:*:*:*:*:*"]
    assert found[0].confidence == pytest.approx(0.5 * 0.9**3)
    assert cpe_map.cpe_vendors("Siemens") == ("siemens",)  # built-ins still there


@pytest.mark.parametrize(
    "text",
    [
        "products: [{vendor: x, match: {model: '('}, cpes: ['o:y']}]",
        "products: [{vendor: x, match: {colour: 'red'}, cpes: ['o:y']}]",
        "products: [{vendor: x, match: {model: 'a'}, cpes: ['q:y']}]",
        "products: [{vendor: x, match: {model: 'a'}}]",
        "vendors: {Acme: 3}",
        "- just a list",
    ],
)
def test_bad_mapping_files_say_what_is_wrong(tmp_path: Path, text: str) -> None:
    extra = tmp_path / "bad.yaml"
    extra.write_text(text)
    with pytest.raises(CpeMapError, match=r"bad\.yaml"):
        load_cpe_map([extra])


def test_escaping() -> None:
    assert escape("pn/dp") == "pn\\/dp"
    assert split_cpe("cpe:2.3:o:siemens:simatic_s7-300_cpu_315-2_pn\\/dp_firmware:*")[4] == (
        "simatic_s7-300_cpu_315-2_pn\\/dp_firmware"
    )
    assert len(split_cpe("cpe:2.3:o:a:b")) == 13
