"""The agent reports its running version to a real trust service (uvicorn, TLS, TUF): automatically
after ``install_update`` and on demand (``DeviceAgent.report_version``, ``fieldward agent
report-version``); the service records it with its update status (``trust_device_versions``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldward.trust.agent import AgentError, DeviceAgent, agent_main
from fieldward.trust.fleet import SIM_MODEL, ServiceProvisioner, local_service, simulated_image
from fieldward.trust.service import RunningServer, TrustService, serve_tls
from fieldward.trust.update_client import UpdateOffer


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustService]:
    svc = local_service(tmp_path_factory.mktemp("versions-service") / "service")
    folder = tmp_path_factory.mktemp("images")
    for version in ("2.5.0", "2.6.0"):
        image = folder / f"fw-{version}.bin"
        image.write_bytes(simulated_image(version))
        svc.updates.publish(image, SIM_MODEL, version, "stable", release_notes=f"release {version}")
    yield svc
    svc.database.dispose()


@pytest.fixture(scope="module")
def server(service: TrustService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve_tls(service, tmp_path_factory.mktemp("versions-tls")) as running:
        yield running


def _enrolled(server: RunningServer, service: TrustService, tmp_path: Path, device_id: str) -> DeviceAgent:
    agent = DeviceAgent(server.url, tmp_path / device_id, server_ca=server.ca_file)
    agent.enroll(device_id, ServiceProvisioner(service).token(device_id))
    return agent


def _copy(image: Path, offer: UpdateOffer) -> None:
    assert image.read_bytes() == simulated_image(offer.version)


def test_install_update_reports_the_new_running_version(
    server: RunningServer, service: TrustService, tmp_path: Path
) -> None:
    agent = _enrolled(server, service, tmp_path, "ver-auto")
    assert service.versions.get("ver-auto") is None
    assert agent.install_update(_copy, running_version="2.4.1") == "2.6.0"
    recorded = service.versions.get("ver-auto")
    assert recorded is not None
    assert (recorded.running_version, recorded.source, recorded.outdated) == ("2.6.0", "update", False)
    assert recorded.newest_version == "2.6.0"
    assert "last_check" in recorded.details  # the update client's report, not just the version
    assert agent.last_report_error is None
    assert agent.last_report is not None
    assert agent.last_report["running_version"] == "2.6.0"
    assert agent.installed_version() == "2.6.0"


def test_without_report_nothing_is_sent_and_report_version_sends_it_later(
    server: RunningServer, service: TrustService, tmp_path: Path
) -> None:
    agent = _enrolled(server, service, tmp_path, "ver-later")
    assert agent.install_update(_copy, running_version="2.5.0", report=False) == "2.6.0"
    assert service.versions.get("ver-later") is None
    answer = agent.report_version()  # the installed update's version
    assert answer["running_version"] == "2.6.0"
    assert answer["outdated"] is False
    stored = service.versions.get("ver-later")
    assert stored is not None
    assert stored.running_version == "2.6.0"
    behind = agent.report_version("2.5.0", last_error="flash write failed")
    assert (behind["running_version"], behind["outdated"], behind["releases_behind"]) == ("2.5.0", True, 1)
    stored = service.versions.get("ver-later")
    assert stored is not None
    assert stored.details.get("last_error") == "flash write failed"


def test_report_version_needs_a_version(server: RunningServer, service: TrustService, tmp_path: Path) -> None:
    agent = _enrolled(server, service, tmp_path, "ver-none")
    with pytest.raises(AgentError, match="no running version"):
        agent.report_version()
    with pytest.raises(AgentError) as refused:
        agent.report_version("x" * 200)
    assert refused.value.status == 422


def test_agent_cli_update_and_report_version(
    server: RunningServer, service: TrustService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(ServiceProvisioner(service).token("ver-cli"))
    common = [
        "--server",
        server.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--ca-file",
        str(server.ca_file),
    ]
    assert agent_main([*common, "report-version", "--running-version", "2.5.0"]) == 1  # not enrolled yet
    assert "not enrolled" in capsys.readouterr().err
    assert agent_main([*common, "enroll", "--device-id", "ver-cli", "--token-file", str(token_file)]) == 0
    capsys.readouterr()
    assert agent_main([*common, "report-version"]) == 1  # nothing installed and no version given
    assert "no running version" in capsys.readouterr().err
    assert agent_main([*common, "report-version", "--running-version", "2.5.0"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["running_version"], first["outdated"]) == ("2.5.0", True)
    installed = tmp_path / "installed"
    assert agent_main([*common, "update", "--install-to", str(installed)]) == 0
    update = json.loads(capsys.readouterr().out)
    assert update["installed"] == "2.6.0"
    assert update["reported"] is True
    assert update["status"]["outdated"] is False
    assert [p.read_bytes() for p in installed.iterdir()] == [simulated_image("2.6.0")]
    stored = service.versions.get("ver-cli")
    assert stored is not None
    assert (stored.running_version, stored.outdated) == ("2.6.0", False)
    assert agent_main([*common, "report-version"]) == 0  # default: the installed update
    assert json.loads(capsys.readouterr().out)["running_version"] == "2.6.0"
