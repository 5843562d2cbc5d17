"""The fleet simulator: 20 devices, including tampered, expired and overreaching ones, against a real
trust service over TLS; every device ends with the outcome its behaviour calls for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldward.trust.fleet import (
    ServiceProvisioner,
    fleet_main,
    local_service,
    plan_fleet,
    simulate,
)
from fieldward.trust.fleet_broker import BrokerTarget, broker_available, local_broker, sync_from_service
from fieldward.trust.service import RunningServer, TrustService, serve_tls


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustService]:
    svc = local_service(tmp_path_factory.mktemp("fleet-service") / "service")
    yield svc
    svc.database.dispose()


@pytest.fixture(scope="module")
def server(service: TrustService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve_tls(service, tmp_path_factory.mktemp("fleet-tls")) as running:
        yield running


def test_twenty_devices_with_misbehaving_ones(server: RunningServer, service: TrustService) -> None:
    report = simulate(
        server.url,
        20,
        provisioner=ServiceProvisioner(service),
        misbehaving={"tampered": 3, "expired": 2, "overreach": 4},
        server_ca=server.ca_file,
        workers=4,
        prefix="fleet",
    )
    assert report.unexpected == [], report.to_dict()
    counts = report.counts
    assert counts["healthy"] == 11
    assert counts["compromised"] == 3
    assert counts["expired_refused"] == 2
    assert counts["overreach_denied"] == 4
    assert counts["enrolled"] == 18
    assert counts["verdict_healthy"] == 15
    assert counts["verdict_compromised"] == 3
    assert counts["telemetry_allowed"] == 15
    assert counts["telemetry_denied"] == 3
    assert counts["overreach_denied_decisions"] == 4
    assert "overreach_allowed" not in counts
    # the service saw the same: verdicts per device, no certificate for the expired ones renewed
    by_behaviour = {o.device_id: o.behaviour for o in report.outcomes}
    for device_id, behaviour in by_behaviour.items():
        verdict = service.context(device_id).verdict
        expected = {"healthy": "healthy", "overreach": "healthy", "tampered": "compromised", "expired": None}
        assert verdict == expected[behaviour], device_id
        if behaviour == "expired":
            assert len(service.registry.certificates(device_id)) == 1
    expired_steps = [o.steps for o in report.outcomes if o.behaviour == "expired"]
    assert all(step.endswith("refused (TLS)") or "403" in step for steps in expired_steps for step in steps)


def test_plan_spreads_the_misbehaving_devices() -> None:
    plan = plan_fleet(10, {"tampered": 1, "expired": 1, "overreach": 1})
    assert plan.count("healthy") == 7
    assert sorted(b for b in plan if b != "healthy") == ["expired", "overreach", "tampered"]
    assert plan.index("tampered") == 0
    with pytest.raises(ValueError, match="at most the fleet size"):
        plan_fleet(2, {"tampered": 3})
    with pytest.raises(ValueError, match="unknown misbehaviour"):
        plan_fleet(5, {"sneaky": 1})


def test_fleet_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert fleet_main(["--devices", "3", "--tampered", "5"]) == 2
    assert "at most the fleet size" in capsys.readouterr().err
    assert fleet_main(["--devices", "4", "--tampered", "1", "--expired", "1", "--overreach", "1"]) == 0
    out = capsys.readouterr().out
    assert '"compromised": 1' in out
    assert '"expired_refused": 1' in out
    assert '"unexpected": []' in out


def test_the_fleet_publishes_through_a_real_mosquitto(
    server: RunningServer, service: TrustService, tmp_path: Path
) -> None:
    missing = broker_available()
    if missing is not None:
        pytest.skip(missing)
    with local_broker(service, tmp_path / "broker") as broker:
        target = BrokerTarget(
            broker.host, broker.tls_port, broker.ca_file, sync_from_service(service, broker)
        )
        report = simulate(
            server.url,
            8,
            provisioner=ServiceProvisioner(service),
            misbehaving={"tampered": 2, "expired": 1, "overreach": 2},
            server_ca=server.ca_file,
            workers=4,
            prefix="mqtt",
            broker=target,
        )
        with broker.admin() as admin:
            managed = {c.username for c in admin.state().clients.values()}
    assert report.unexpected == [], report.to_dict()
    assert report.telemetry_via.startswith("Mosquitto mqtts://127.0.0.1:")
    counts = report.counts
    # healthy and overreaching devices publish their own telemetry; tampered and expired ones cannot
    assert (counts["mqtt_own_accepted"], counts["mqtt_own_refused"]) == (5, 3)
    assert counts["mqtt_overreach_refused"] == 2
    assert "mqtt_overreach_accepted" not in counts
    by_behaviour = {o.device_id: o.behaviour for o in report.outcomes}
    assert managed >= {d for d, b in by_behaviour.items() if b in ("healthy", "overreach")}
    assert not managed & {d for d, b in by_behaviour.items() if b in ("tampered", "expired")}
    steps = {o.behaviour: o.steps[-1] for o in report.outcomes}
    assert "Not authorized" in steps["tampered"]
    assert "Not authorized" in steps["overreach"]
    assert "refused" in steps["expired"]
