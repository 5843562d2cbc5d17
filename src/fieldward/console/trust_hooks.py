"""The console's side of the zero-trust device plane (docs/trust/console.md).

With ``ConsoleSettings.trust`` on, :func:`build_trust` makes one :class:`ConsoleTrust` per app: the
:class:`~fieldward.trust.service.TrustService` (CA, EST, attestation, policy, TUF, failure reports),
the :class:`~fieldward.trust.quarantine.QuarantineService` (rules from ``trust_quarantine_file``,
audit in the console's ``audit_log``, Mosquitto's dynamic-security plugin when configured) and the
links between device identities and the inventory (:class:`~fieldward.trust.response.TrustLinks`).
:func:`mount_trust` includes the service's routers at the root of the app (``/.well-known/est``,
``/trust``, ``/updates``; outside the ``/api/v1`` OpenAPI document: devices speak EST and the trust
API with their certificates, not the console's tokens).

Two joins with the sensor's data:

- :func:`after_ingest` (called by the ingest route after a batch is applied): an ``alerts`` batch
  is checked for open high/critical alerts on inventory devices linked to a device identity, each
  handed to :meth:`QuarantineService.on_alert` (the rules decide); a ``risk`` batch is followed by
  re-applying the update contribution of outdated devices (the sensor's rows overwrite it);
- a ``devices`` batch, when the response settings allow automatic links (``links.auto``), is
  checked for serial numbers and MACs that match device identities' attributes
  (:class:`~fieldward.trust.autolink.LinkProposals`), as is every new enrollment;
- :func:`apply_update_risk`: an outdated device identity (``trust_device_versions``) adds the risk
  model's ``update.outdated`` contribution (``device["update"]``, :mod:`fieldward.assess.risk`) to
  the risk of its linked inventory devices: the console re-scores them with the same model it uses
  for the site score and the plan (:func:`fieldward.console.api.routes.risk.load_site`) and writes
  ``device_risks`` and ``devices.risk_score``. A device that became current is re-scored without it.

Nothing here may fail an ingestion: errors are logged (type only) and counted on the app state.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from fieldward.console.api.cache import bump_data_version
from fieldward.console.jobs import JobLock
from fieldward.console.settings import ConsoleSettings
from fieldward.store.console_models import ConsoleSetting
from fieldward.store.database import Database
from fieldward.store.models import Alert, AlertEvent, AuditLog, Device, DeviceRisk, utcnow
from fieldward.store.trust_models import TrustDevice, TrustDeviceLink, TrustDeviceVersion
from fieldward.trust.autolink import LinkProposals
from fieldward.trust.broker import BrokerError, DynsecClient, SyncReport
from fieldward.trust.ca import load_passphrase
from fieldward.trust.context import SEVERITIES, DeviceContext
from fieldward.trust.errors import TrustError
from fieldward.trust.est import ESTSettings, load_manufacturers
from fieldward.trust.policy import PolicyEngine
from fieldward.trust.quarantine import (
    QuarantineOutcome,
    QuarantineService,
    QuarantineSettings,
    database_audit,
    load_quarantine_settings,
)
from fieldward.trust.response import (
    LinkRecord,
    TrustLinks,
    alerts_to_quarantine,
    normalise_link,
    open_alert_severity,
)
from fieldward.trust.service import TrustService, TrustServiceSettings
from fieldward.trust.state import VersionRecord

__all__ = [
    "ConsoleTrust",
    "LazyBroker",
    "after_ingest",
    "apply_update_risk",
    "build_trust",
    "mount_trust",
    "serve_overrides",
    "trust_of",
]

log = logging.getLogger(__name__)

RESPONSE_WATERMARK = "trust.response.alert_event_id"
"""``console_settings`` row: the last ``alert_events`` id the alert response has considered."""
RESPONSE_GRACE_SECONDS = 5.0
"""Alert events younger than this wait for the next round (a concurrent ingest may still commit a
lower id)."""
RESPONSE_ACTOR = "fieldward:response"


class LazyBroker:
    """The dynamic-security admin connection, opened on first use (the console starts without the
    broker; a quarantine while it is down is audited as ``failed`` and applied by the next sync)."""

    def __init__(self, host: str, port: int, password: str | None) -> None:
        self._host, self._port, self._password = host, port, password
        self._client: DynsecClient | None = None
        self._lock = threading.Lock()

    def _connected(self) -> DynsecClient:
        with self._lock:
            if self._client is None:
                client = DynsecClient(self._host, self._port, password=self._password)
                client.connect()
                self._client = client
            return self._client

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._connected(), name)(*args, **kwargs)
        except (BrokerError, OSError):
            with self._lock:
                if self._client is not None:
                    self._client.close()
                self._client = None
            raise

    def disable_client(self, username: str) -> None:
        self._call("disable_client", username)

    def enable_client(self, username: str) -> None:
        self._call("enable_client", username)

    def remove_client_role(self, username: str, rolename: str) -> None:
        self._call("remove_client_role", username, rolename)

    def add_client_role(self, username: str, rolename: str, priority: int = 1) -> None:
        self._call("add_client_role", username, rolename, priority)

    def get_client(self, username: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("get_client", username)
        return result

    def get_role(self, rolename: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("get_role", rolename)
        return result

    def sync(self, engine: PolicyEngine, contexts: Sequence[DeviceContext], now: dt.datetime) -> SyncReport:
        report: SyncReport = self._call("sync", engine, contexts, now=now)
        return report

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None


@dataclass
class ConsoleTrust:
    """The device plane of one console app."""

    settings: ConsoleSettings
    database: Database
    service: TrustService
    quarantine: QuarantineService
    links: TrustLinks
    broker: LazyBroker | None = None
    errors: dict[str, int] = field(default_factory=dict)
    """Hook failures by kind (``response``, ``risk``, ``broker``, ``link``), for diagnostics; never
    raised to the sensor."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: JobLock | None = None
    _responder: threading.Thread | None = None
    _response_lock: JobLock | None = None
    _response_mutex: threading.Lock = field(default_factory=threading.Lock)

    def count_error(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        log.warning("trust %s hook failed: %s", kind, type(exc).__name__)

    @property
    def proposals(self) -> LinkProposals:
        """Device attributes and the inventory links they propose (and make, where allowed)."""
        return self.service.link_proposals

    def auto_link(
        self, device_ids: Sequence[str] | None = None, *, values: Iterable[tuple[str, str]] | None = None
    ) -> list[LinkRecord]:
        """The automatic links the response settings allow (``links.auto``), each audited; the risk of
        the newly linked inventory devices is re-scored with their identity's update status. Never
        raises: errors are logged and counted (``link``)."""
        if not self.proposals.settings.auto:
            return []
        try:
            made = self.proposals.auto_link(device_ids, values=values)
            if made:
                apply_update_risk(self.database, sorted({link.device_id for link in made}))
        except (SQLAlchemyError, TrustError) as exc:
            self.count_error("link", exc)
            return []
        return made

    def sync_broker(self) -> SyncReport | None:
        """Make the broker's clients and ACLs equal to what the policy grants every device identity
        now (:meth:`DynsecClient.sync`); None without a broker. BrokerError/OSError when unreachable."""
        if self.broker is None:
            return None
        with self.database.sessionmaker() as session:
            ids = list(session.scalars(select(TrustDevice.device_id).order_by(TrustDevice.device_id)))
        contexts = [self.service.context(device_id) for device_id in ids]
        return self.broker.sync(self.service.engine, contexts, self.service.now())

    def respond_to_stored_alerts(
        self, *, limit: int = 5000, grace: float = RESPONSE_GRACE_SECONDS
    ) -> list[QuarantineOutcome]:
        """The response to alerts stored by any path (HTTPS ingest, NATS JetStream workers, a
        dead-letter retry): every new or reopened alert that a sensor stored since the last round
        (its ``alert_events`` row by ``sensor:<name>``, older than
        :data:`RESPONSE_GRACE_SECONDS` so that a transaction still open cannot be passed over) goes
        to the quarantine rules. The round's position is kept in ``console_settings``
        (:data:`RESPONSE_WATERMARK`), so alerts stored while the console was down are answered after
        it starts. An alert that already quarantined a device never does so again (after an
        analyst's release, say). One process per database runs it (job lock ``alert-response``)."""
        with self._response_mutex:
            if self._response_lock is not None and not self._response_lock.acquire():
                return []
            outcomes: list[QuarantineOutcome] = []
            while True:
                cutoff = utcnow() - dt.timedelta(seconds=grace)
                with self.database.sessionmaker() as session:
                    mark = session.get(ConsoleSetting, RESPONSE_WATERMARK)
                    after = int(mark.value) if mark is not None and isinstance(mark.value, int) else 0
                    rows = session.execute(
                        select(AlertEvent.id, Alert.sensor_id, Alert.alert_key)
                        .join(Alert, Alert.id == AlertEvent.alert_id)
                        .where(AlertEvent.id > after, AlertEvent.at < cutoff, AlertEvent.by.like("sensor:%"))
                        .order_by(AlertEvent.id)
                        .limit(limit)
                    ).all()
                if not rows:
                    return outcomes
                keys_by_sensor: dict[int, set[str]] = {}
                for _, sensor_id, key in rows:
                    keys_by_sensor.setdefault(int(sensor_id), set()).add(str(key))
                for sensor_id, keys in sorted(keys_by_sensor.items()):
                    outcomes.extend(respond_to_alerts(self, sensor_id, keys, once=True))
                self._set_watermark(int(rows[-1][0]))
                if len(rows) < limit:
                    return outcomes

    def answered_pairs(self, pairs: Sequence[tuple[Alert, str]]) -> set[tuple[str, str]]:
        """The (alert key, device identity) pairs that already quarantined that device (audit log)."""
        devices = sorted({device_id for _, device_id in pairs})
        if not devices:
            return set()
        with self.database.sessionmaker() as session:
            entries = session.execute(
                select(AuditLog.target, AuditLog.details).where(
                    AuditLog.action == "trust.quarantine", AuditLog.target.in_(devices)
                )
            ).all()
        return {
            (str(details.get("alert_id")), str(target))
            for target, details in entries
            if isinstance(details, dict) and details.get("alert_id") is not None
        }

    def _begin_watermark(self) -> None:
        """The first start of the device plane answers only alerts stored from now on: alerts that
        were stored before it was switched on quarantine nothing."""
        with self.database.sessionmaker() as session:
            if session.get(ConsoleSetting, RESPONSE_WATERMARK) is not None:
                return
            latest = session.scalar(select(func.max(AlertEvent.id)))
        self._set_watermark(int(latest or 0))

    def _set_watermark(self, value: int) -> None:
        with self.database.sessionmaker() as session:
            mark = session.get(ConsoleSetting, RESPONSE_WATERMARK)
            if mark is None:
                session.add(ConsoleSetting(name=RESPONSE_WATERMARK, value=value, updated_by=RESPONSE_ACTOR))
            else:
                mark.value = value
                mark.updated = utcnow()
            session.commit()

    def start(self) -> None:
        """Start the background jobs: the alert response every ``trust_response_seconds`` and, with
        a broker, the broker sync every ``trust_broker_sync_seconds`` (daemon threads)."""
        if self._responder is None:
            self._response_lock = JobLock(self.database.engine, "alert-response")
            self._begin_watermark()

            def respond() -> None:
                while not self._stop.wait(self.settings.trust_response_seconds):
                    try:
                        self.respond_to_stored_alerts()
                    except (SQLAlchemyError, TrustError, OSError) as exc:
                        self.count_error("response", exc)

            self._responder = threading.Thread(target=respond, name="fieldward-alert-response", daemon=True)
            self._responder.start()
        if self.broker is None or self._thread is not None:
            return
        interval = self.settings.trust_broker_sync_seconds
        # one process per database syncs (fieldward serve --workers N); the others skip their rounds
        self._lock = JobLock(self.database.engine, "broker-sync")

        def run() -> None:
            while not self._stop.is_set():
                try:
                    if self._lock is None or self._lock.acquire():
                        self.sync_broker()
                except (BrokerError, OSError, SQLAlchemyError, TrustError) as exc:
                    self.count_error("broker", exc)
                self._stop.wait(interval)

        self._thread = threading.Thread(target=run, name="fieldward-broker-sync", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._responder):
            if thread is not None:
                thread.join(timeout=10)
        self._thread = self._responder = None
        for lock in (self._lock, self._response_lock):
            if lock is not None:
                lock.release()
        if self.broker is not None:
            self.broker.close()


def build_trust(
    settings: ConsoleSettings, database: Database, *, clock: Callable[[], dt.datetime] | None = None
) -> ConsoleTrust | None:
    """The device plane for ``settings`` (None when ``settings.trust`` is off). Migrates the database
    first (the CA records its certificates in the registry). Raises TrustError (e.g. no passphrase)."""
    if not settings.trust:
        return None
    database.upgrade()
    public = settings.trust_public_url.rstrip("/") if settings.trust_public_url else None
    links = TrustLinks(database)
    service = TrustService(
        TrustServiceSettings(
            data_dir=settings.home(),
            passphrase_file=settings.trust_passphrase_file,
            policy_file=settings.trust_policy_file,
            reference_values_file=settings.trust_reference_values_file,
            crl_url=None if public is None else f"{public}/trust/crl",
            ocsp_url=None if public is None else f"{public}/trust/ocsp",
            device_validity=dt.timedelta(hours=settings.trust_device_validity_hours),
            est=ESTSettings(
                manufacturers=load_manufacturers(settings.trust_manufacturers_file)
                if settings.trust_manufacturers_file is not None
                else ()
            ),
        ),
        database,
        alert_severity=open_alert_severity(database, links),
        clock=clock,
    )
    rules = (
        load_quarantine_settings(settings.trust_quarantine_file)
        if settings.trust_quarantine_file is not None
        else QuarantineSettings()
    )
    broker: LazyBroker | None = None
    if settings.trust_broker_host:
        password = (
            load_passphrase(settings.trust_broker_password_file).decode()
            if settings.trust_broker_password_file is not None
            else None
        )
        broker = LazyBroker(settings.trust_broker_host, settings.trust_broker_port, password)
    quarantine = QuarantineService(service.registry, rules, database_audit(database), broker=broker)
    service.link_proposals = LinkProposals(database, links, rules.links, database_audit(database))
    trust = ConsoleTrust(settings, database, service, quarantine, links, broker)
    if broker is not None:
        quarantine.resync = trust.sync_broker  # a release restores the device's ACLs from the policy

    def on_version(record: VersionRecord, changed: bool) -> None:
        if not changed:
            return
        try:
            apply_update_risk(database, [record.device_id])
        except SQLAlchemyError as exc:
            trust.count_error("risk", exc)

    service.version_listeners.append(on_version)

    def on_enrolled(device_id: str) -> None:
        trust.auto_link([device_id])

    service.enrollment_listeners.append(on_enrolled)
    return trust


SERVE_CONFIG_KEYS = (
    "passphrase_file",
    "policy_file",
    "reference_values_file",
    "quarantine_file",
    "manufacturers_file",
    "public_url",
    "broker_host",
    "broker_port",
    "broker_password_file",
    "broker_sync_seconds",
    "response_seconds",
    "device_validity_hours",
    "quarantine_ends",
)
"""Keys of ``fieldward serve --trust-config FILE``: each is the ``ConsoleSettings`` field
``trust_<key>`` (docs/trust/console.md); keys ending in ``_file`` are paths relative to FILE."""


def serve_overrides(trust: bool | None, config: Path | None) -> dict[str, object]:
    """The ``ConsoleSettings`` overrides of ``fieldward serve --trust/--no-trust --trust-config FILE``
    (they win over the ``FIELDWARD_TRUST*`` environment). ``--trust-config`` implies ``--trust``
    unless ``--no-trust`` is given. TrustError names an unreadable file, an unknown key or a bad
    value."""
    import yaml
    from pydantic import ValidationError

    values: dict[str, object] = {}
    if config is not None:
        try:
            document = yaml.safe_load(config.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TrustError(f"{config}: cannot read the trust settings: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise TrustError(f"{config}: not valid YAML: {exc}") from None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise TrustError(f"{config}: expected a mapping of trust settings")
        if unknown := sorted(str(k) for k in set(document) - set(SERVE_CONFIG_KEYS)):
            raise TrustError(
                f"{config}: unknown key(s) {', '.join(unknown)}; known: {', '.join(SERVE_CONFIG_KEYS)}"
            )
        for key, value in document.items():
            if key.endswith("_file") and isinstance(value, str) and value:
                value = str((config.parent / Path(value).expanduser()).resolve())
            values[f"trust_{key}"] = value
        values["trust"] = True if trust is None else trust
    elif trust is not None:
        values["trust"] = trust
    try:
        ConsoleSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']).removeprefix('trust_')}: {error['msg']}"
            for error in exc.errors()
        )
        raise TrustError(f"{config if config is not None else '--trust'}: {problems}") from None
    return values


def mount_trust(app: FastAPI, trust: ConsoleTrust) -> None:
    """Include the device plane's routers (root paths, not in the console's OpenAPI document)."""
    app.state.trust = trust
    for router in trust.service.routers():
        app.include_router(router, include_in_schema=False)


def trust_of(app: FastAPI) -> ConsoleTrust | None:
    trust = getattr(app.state, "trust", None)
    return trust if isinstance(trust, ConsoleTrust) else None


# -- the response to alerts -----------------------------------------------------------------------


def respond_to_alerts(
    trust: ConsoleTrust, sensor_id: int, alert_keys: Iterable[str], *, once: bool = False
) -> list[QuarantineOutcome]:
    """Hand the batch's open alerts on linked devices to the quarantine rules; the outcomes. With
    ``once``, an alert that has already quarantined a device is not handed on for that device."""
    rules = trust.quarantine.settings.rules
    if not rules:
        return []
    floor = min((rule.min_severity for rule in rules), key=SEVERITIES.index)
    pairs = alerts_to_quarantine(
        trust.database, sensor_id, alert_keys, min_severity=floor, ends=trust.settings.trust_quarantine_ends
    )
    answered = trust.answered_pairs(pairs) if once else set()
    outcomes = []
    for alert, device_id in pairs:
        if (alert.alert_key, device_id) in answered:
            continue
        try:
            outcomes.append(trust.quarantine.on_alert(alert, device_id))
        except TrustError as exc:  # the identity vanished in between
            trust.count_error("response", exc)
    return outcomes


def after_ingest(app: FastAPI, sensor_id: int, kind: str, records: Sequence[Any]) -> None:
    """The ingest route's hook, after a batch is applied and committed (no-op without trust)."""
    trust = trust_of(app)
    if trust is None:
        return
    try:
        if kind == "alerts":
            keys = [r.get("id") for r in records if isinstance(r, Mapping)]
            respond_to_alerts(trust, sensor_id, (str(k) for k in keys if isinstance(k, str | int)))
        elif kind == "risk":  # a sensor's risk rows replace the console's re-scored ones
            apply_update_risk(trust.database, None, sensor_id=sensor_id)
        elif kind == "devices" and trust.proposals.settings.auto:  # new serials/MACs may match
            values = _inventory_values(records)
            if values:
                trust.auto_link(values=values)
    except (SQLAlchemyError, TrustError, OSError) as exc:
        trust.count_error("response" if kind == "alerts" else "risk", exc)


def _inventory_values(records: Sequence[Any]) -> list[tuple[str, str]]:
    """The (kind, value) pairs an inventory batch reports, normalised as attributes are."""
    found: set[tuple[str, str]] = set()
    for record in records:
        if not isinstance(record, Mapping):
            continue
        for kind in ("serial", "mac"):
            value = record.get(kind)
            if isinstance(value, str) and value:
                try:
                    found.add((kind, normalise_link(kind, value)))
                except TrustError:
                    continue  # not a usable serial or MAC: it matches no attribute
    return sorted(found)


# -- running versions in the risk score ----------------------------------------------------------


def apply_update_risk(
    database: Database,
    device_ids: Sequence[str] | None,
    *,
    sensor_id: int | None = None,
    released: Iterable[int] = (),
) -> int:
    """Re-score the inventory devices linked to ``device_ids`` (None: to every outdated identity)
    with their update status; returns how many ``device_risks`` rows were written.

    ``sensor_id`` limits the work to that sensor's inventory rows (after its batch); ``released``
    inventory rows (no longer linked) are re-scored without an update status unless another
    outdated identity is still linked to them."""
    from fieldward.assess.risk import score_devices
    from fieldward.console.api.routes.risk import load_site

    with database.sessionmaker() as session:
        query = select(TrustDeviceVersion)
        if device_ids is None:
            linked = select(TrustDeviceLink.device_id)
            query = query.where(
                TrustDeviceVersion.outdated.is_(True), TrustDeviceVersion.device_id.in_(linked)
            )
        else:
            query = query.where(TrustDeviceVersion.device_id.in_(list(device_ids)))
        versions = {row.device_id: row for row in session.scalars(query)}
    wanted: dict[int, dict[str, Any]] = {i: {"outdated": False, "days_behind": None} for i in released}
    if not versions and not wanted:
        return 0
    inventory = TrustLinks(database).inventory_of(sorted(versions)) if versions else {}
    for device_id, ids in inventory.items():
        row = versions[device_id]
        status = {
            "outdated": bool(row.outdated),
            "days_behind": row.days_behind,
            "releases_behind": row.releases_behind,
            "running_version": row.running_version,
            "newest_version": row.newest_version,
        }
        for inventory_id in ids:
            known = wanted.get(inventory_id)
            # two identities on one inventory device: the one further behind counts
            if known is None or (status["outdated"], status["days_behind"] or 0) > (
                known["outdated"],
                known["days_behind"] or 0,
            ):
                wanted[inventory_id] = status
    if not wanted:
        return 0
    written = 0
    with database.session() as session:
        sensors = {
            int(s)
            for (s,) in session.execute(select(Device.sensor_id).where(Device.id.in_(sorted(wanted)))).all()
            if sensor_id is None or int(s) == sensor_id
        }
        for sensor in sorted(sensors):
            data = load_site(session, sensor, all_devices=True)
            targets = {data.keys[i]: status for i, status in wanted.items() if i in data.keys}
            if not targets:
                continue
            devices = [{**d, "update": targets[d["id"]]} if d["id"] in targets else d for d in data.devices]
            risks = score_devices(devices, data.findings, data.configs, data.alerts, data.importance)
            now = utcnow()
            for risk in risks:
                if risk.device_id not in targets:
                    continue
                row_id = data.ids[risk.device_id]
                values = {
                    "score": risk.score,
                    "exploitability": risk.exploitability,
                    "exposure": risk.exposure,
                    "criticality": risk.criticality,
                    "behaviour": risk.behaviour,
                    "priority": risk.priority.value,
                    "contributors": [
                        {"factor": c.factor, "points": c.points, "detail": c.detail, "reference": c.reference}
                        for c in risk.contributors
                    ],
                    "updated": now,
                }
                stored = session.get(DeviceRisk, row_id)
                if stored is None:
                    session.add(DeviceRisk(device_id=row_id, **values))
                else:
                    for key, value in values.items():
                        setattr(stored, key, value)
                device = session.get(Device, row_id)
                if device is not None:
                    device.risk_score = risk.score
                written += 1
    if written:  # committed: the inventory's kept pages show old risk scores (api/cache.py)
        bump_data_version(database)
    return written
