"""The trust service's state in the database (revision 0006): attestation verdicts, failure report
aggregates and running versions, so that a restart or a second console worker sees the same state.

- :class:`DatabaseVerdictStore` implements the verifier's ``VerdictStore`` (the newest verdict per
  device, ``trust_verdicts``);
- :class:`DatabaseFailureReports` has the interface of the in-memory
  :class:`fieldward.trust.service.FailureReports` (``add``, ``aggregates``, ``overflow``): the count is
  incremented in SQL (``count = count + :n``), each distinct device of an aggregate is a
  ``trust_failure_devices`` row, so counts stay exact under concurrent writers;
- :class:`VersionBook` records each device's running version (``trust_device_versions``) from its
  update client's report or its attested firmware version, with the update status against the TUF
  repository (:func:`fieldward.trust.updates.update_status`);
- :class:`DatabaseNonceStore` implements the verifier's ``NonceStore`` (``trust_challenges``,
  revision 0009): a challenge issued by one console worker or process can be answered at another,
  and a nonce is spent by one conditional UPDATE, so it is accepted at most once even when two
  processes receive the same evidence at the same moment.

Each method runs in its own short transaction and returns plain records.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldward.store.database import Database
from fieldward.store.trust_models import (
    TrustChallenge,
    TrustDeviceVersion,
    TrustFailureDevice,
    TrustFailureReport,
    TrustVerdict,
)
from fieldward.trust.attestation import AttestationResult, NonceStatus, Verdict
from fieldward.trust.errors import TrustError

__all__ = [
    "DatabaseFailureReports",
    "DatabaseNonceStore",
    "DatabaseVerdictStore",
    "FailureRow",
    "VersionBook",
    "VersionRecord",
]

VERSION_SOURCES = ("update", "attestation")
_SHOWN_DEVICES = 100
"""Device ids listed per failure aggregate (the device count is exact regardless)."""


def _utc(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# -- verdicts -------------------------------------------------------------------------------------


def _result(row: TrustVerdict) -> AttestationResult:
    return AttestationResult(
        device_id=row.device_id,
        verdict=Verdict(row.verdict),
        reasons=tuple(str(r) for r in row.reasons or []),
        verified_at=_utc(row.verified_at),
        model=row.model,
        firmware_version=row.firmware_version,
        authentic=bool(row.authentic),
        tpm_quote=bool(row.tpm_quote),
        notes=tuple(str(n) for n in row.notes or []),
    )


class DatabaseVerdictStore:
    """The newest verdict per device in ``trust_verdicts`` (a ``VerdictStore``).

    ``latest`` answers from a per-process cache for ``cache_seconds`` (policy decisions read it on
    every call); a verdict recorded by this process is in its cache at once, one recorded by another
    worker is seen within ``cache_seconds``. 0 disables the cache.
    """

    def __init__(self, database: Database, *, cache_seconds: float = 2.0, cache_size: int = 100_000) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[AttestationResult | None, float]] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _remember(self, device_id: str, result: AttestationResult | None) -> None:
        if self.cache_seconds <= 0:
            return
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[device_id] = (result, time.monotonic())

    def record(self, result: AttestationResult) -> None:
        values: dict[str, Any] = {
            "verdict": str(result.verdict),
            "reasons": [r[:1000] for r in result.reasons[:50]],
            "notes": [n[:1000] for n in result.notes[:50]],
            "verified_at": _utc(result.verified_at),
            "model": None if result.model is None else result.model[:128],
            "firmware_version": None if result.firmware_version is None else result.firmware_version[:128],
            "authentic": result.authentic,
            "tpm_quote": result.tpm_quote,
        }
        for _attempt in range(3):
            try:
                with self.database.session() as session:
                    row = session.get(TrustVerdict, result.device_id)
                    if row is None:
                        session.add(TrustVerdict(device_id=result.device_id, **values))
                    elif _utc(row.verified_at) <= values["verified_at"]:  # never replace a newer one
                        for key, value in values.items():
                            setattr(row, key, value)
                    else:
                        result = _result(row)
                self._remember(result.device_id, result)
                return
            except IntegrityError:  # the first verdict of the device written concurrently: update it
                continue

    def latest(self, device_id: str) -> AttestationResult | None:
        if self.cache_seconds > 0:
            with self._lock:
                cached = self._cache.get(device_id)
            if cached is not None and time.monotonic() - cached[1] < self.cache_seconds:
                return cached[0]
        with self.database.sessionmaker() as session:
            row = session.get(TrustVerdict, device_id)
            result = None if row is None else _result(row)
        self._remember(device_id, result)
        return result

    def verdicts(
        self, *, verdict: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[AttestationResult], int]:
        """A page of verdicts (newest first) and the total, optionally of one verdict only."""
        where = [] if verdict is None else [TrustVerdict.verdict == verdict]
        with self.database.sessionmaker() as session:
            total = int(session.scalar(select(func.count()).select_from(TrustVerdict).where(*where)) or 0)
            rows = session.scalars(
                select(TrustVerdict)
                .where(*where)
                .order_by(TrustVerdict.verified_at.desc(), TrustVerdict.device_id)
                .limit(limit)
                .offset(offset)
            )
            return [_result(row) for row in rows], total


# -- attestation challenges -----------------------------------------------------------------------


class DatabaseNonceStore:
    """Single-use attestation nonces in ``trust_challenges`` (a ``NonceStore``).

    ``consume`` is one ``UPDATE ... SET used = :now WHERE nonce = :n AND device_id = :d AND used IS
    NULL AND expires > :now``: the database serialises concurrent updates of the row (PostgreSQL
    re-checks the condition after a concurrent writer commits, SQLite holds its write lock), so
    exactly one caller sees a changed row. Only when nothing changed is the row read, to say why
    (unknown, another device's, replayed, expired). Spent nonces stay until they expire so a replay
    is reported as one; rows expired for more than ``keep`` are deleted, at most every
    ``purge_seconds`` per process. A device may hold at most ``max_per_device`` open challenges
    (TrustError beyond: a device, or a stolen certificate, cannot fill the table).
    """

    def __init__(
        self,
        database: Database,
        *,
        max_per_device: int = 32,
        keep: dt.timedelta = dt.timedelta(hours=1),
        purge_seconds: float = 60.0,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.database = database
        self.max_per_device = max_per_device
        self.keep = keep
        self.purge_seconds = purge_seconds
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._last_purge = float("-inf")
        self._lock = threading.Lock()

    def issue(self, device_id: str, nonce: str, expires_at: dt.datetime) -> None:
        now = _utc(self._clock())
        self._maybe_purge(now)
        with self.database.session() as session:
            open_now = int(
                session.scalar(
                    select(func.count())
                    .select_from(TrustChallenge)
                    .where(
                        TrustChallenge.device_id == device_id,
                        TrustChallenge.used.is_(None),
                        TrustChallenge.expires > now,
                    )
                )
                or 0
            )
            if open_now >= self.max_per_device:
                raise TrustError(f"too many outstanding attestation challenges for device {device_id}")
            session.add(TrustChallenge(nonce=nonce, device_id=device_id, expires=_utc(expires_at)))

    def consume(self, device_id: str, nonce: str, now: dt.datetime) -> NonceStatus:
        moment = _utc(now)
        if not nonce or len(nonce) > 64:
            return NonceStatus.UNKNOWN
        with self.database.session() as session:
            spent = session.execute(
                update(TrustChallenge)
                .where(
                    TrustChallenge.nonce == nonce,
                    TrustChallenge.device_id == device_id,
                    TrustChallenge.used.is_(None),
                    TrustChallenge.expires > moment,
                )
                .values(used=moment)
                .execution_options(synchronize_session=False)
            )
            if getattr(spent, "rowcount", 0) == 1:
                return NonceStatus.OK
        with self.database.session() as session:
            row = session.get(TrustChallenge, nonce)
            if row is None:
                return NonceStatus.UNKNOWN
            if row.device_id != device_id:
                return NonceStatus.WRONG_DEVICE
            if row.used is not None:
                return NonceStatus.REPLAYED
            row.used = moment  # expired: spent too, so a later answer is a replay
            return NonceStatus.EXPIRED

    def _maybe_purge(self, now: dt.datetime) -> None:
        with self._lock:
            if time.monotonic() - self._last_purge < self.purge_seconds:
                return
            self._last_purge = time.monotonic()
        self.purge(now)

    def purge(self, now: dt.datetime | None = None) -> int:
        """Delete challenges expired for more than ``keep``; how many."""
        limit = _utc(now if now is not None else self._clock()) - self.keep
        with self.database.session() as session:
            result = session.execute(
                delete(TrustChallenge)
                .where(TrustChallenge.expires < limit)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def outstanding(self, device_id: str | None = None) -> int:
        """Challenges not yet answered (expired ones included until purged)."""
        where: list[ColumnElement[bool]] = [TrustChallenge.used.is_(None)]
        if device_id is not None:
            where.append(TrustChallenge.device_id == device_id)
        with self.database.sessionmaker() as session:
            return int(session.scalar(select(func.count()).select_from(TrustChallenge).where(*where)) or 0)


# -- failure reports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One stored aggregate (``to_dict`` as the in-memory ``FailureAggregate``)."""

    model: str | None
    firmware: str | None
    signature: str
    kind: str
    component: str
    message: str
    count: int
    devices: int
    device_ids: tuple[str, ...]
    first_seen: dt.datetime
    last_seen: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "firmware": self.firmware,
            "signature": self.signature,
            "kind": self.kind,
            "component": self.component,
            "message": self.message,
            "count": self.count,
            "devices": self.devices,
            "device_ids": list(self.device_ids),
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


class DatabaseFailureReports:
    """Failure reports aggregated in ``trust_failure_reports`` (see the module docstring)."""

    def __init__(self, database: Database, max_signatures: int = 10_000) -> None:
        self.database = database
        self._max = max_signatures
        self._lock = threading.Lock()
        self.overflow = 0
        """Reports dropped (counted only, in this process) because ``max_signatures`` aggregates exist."""

    def add(
        self,
        device_id: str,
        *,
        model: str | None,
        firmware: str | None,
        kind: str,
        component: str,
        message: str,
        stack: Sequence[str] = (),
        count: int = 1,
        now: dt.datetime | None = None,
    ) -> FailureRow | None:
        """Count ``count`` occurrences; None when the table is full (counted in ``overflow``)."""
        from fieldward.trust.service import failure_signature  # the one definition of a signature

        moment = _utc(now)
        signature = failure_signature(kind, component, message, stack)
        key = ((model or "")[:128], (firmware or "")[:128], signature)
        for _attempt in range(3):
            try:
                with self.database.session() as session:
                    report_id = self._increment(session, key, count, moment)
                    if report_id is None:
                        total = int(session.scalar(select(func.count()).select_from(TrustFailureReport)) or 0)
                        if total >= self._max:
                            with self._lock:
                                self.overflow += count
                            return None
                        row = TrustFailureReport(
                            model=key[0],
                            firmware=key[1],
                            signature=signature,
                            kind=kind,
                            component=component,
                            message=message[:500],
                            count=count,
                            first_seen=moment,
                            last_seen=moment,
                        )
                        session.add(row)
                        session.flush()
                        report_id = row.id
                    if session.get(TrustFailureDevice, (report_id, device_id)) is None:
                        session.add(TrustFailureDevice(report_id=report_id, device_id=device_id))
                        session.flush()
                return self._row(report_id)
            except IntegrityError:  # a concurrent writer created the aggregate or the device row
                continue
        return None

    @staticmethod
    def _increment(
        session: Session, key: tuple[str, str, str], count: int, moment: dt.datetime
    ) -> int | None:
        report_id = session.scalar(
            select(TrustFailureReport.id).where(
                TrustFailureReport.model == key[0],
                TrustFailureReport.firmware == key[1],
                TrustFailureReport.signature == key[2],
            )
        )
        if report_id is None:
            return None
        session.execute(
            update(TrustFailureReport)
            .where(TrustFailureReport.id == report_id)
            .values(count=TrustFailureReport.count + count, last_seen=moment)
        )
        return int(report_id)

    def _row(self, report_id: int) -> FailureRow | None:
        rows = self._rows([report_id])
        return rows[0] if rows else None

    def _rows(self, ids: Sequence[int] | None = None, limit: int = 1000, offset: int = 0) -> list[FailureRow]:
        with self.database.sessionmaker() as session:
            query = select(TrustFailureReport)
            if ids is not None:
                query = query.where(TrustFailureReport.id.in_(list(ids)))
            reports = list(
                session.scalars(
                    query.order_by(TrustFailureReport.count.desc(), TrustFailureReport.signature)
                    .limit(limit)
                    .offset(offset)
                )
            )
            if not reports:
                return []
            keys = [r.id for r in reports]
            counts = dict(
                session.execute(
                    select(TrustFailureDevice.report_id, func.count())
                    .where(TrustFailureDevice.report_id.in_(keys))
                    .group_by(TrustFailureDevice.report_id)
                ).all()
            )
            shown: dict[int, list[str]] = {}
            for report_id, device_id in session.execute(
                select(TrustFailureDevice.report_id, TrustFailureDevice.device_id)
                .where(TrustFailureDevice.report_id.in_(keys))
                .order_by(TrustFailureDevice.report_id, TrustFailureDevice.device_id)
            ):
                listed = shown.setdefault(report_id, [])
                if len(listed) < _SHOWN_DEVICES:
                    listed.append(device_id)
            return [
                FailureRow(
                    model=r.model or None,
                    firmware=r.firmware or None,
                    signature=r.signature,
                    kind=r.kind,
                    component=r.component,
                    message=r.message,
                    count=int(r.count),
                    devices=int(counts.get(r.id, 0)),
                    device_ids=tuple(shown.get(r.id, [])),
                    first_seen=_utc(r.first_seen),
                    last_seen=_utc(r.last_seen),
                )
                for r in reports
            ]

    def aggregates(self, limit: int = 1000, offset: int = 0) -> list[FailureRow]:
        """Aggregates, most frequent first."""
        return self._rows(None, limit, offset)

    def total(self) -> int:
        with self.database.sessionmaker() as session:
            return int(session.scalar(select(func.count()).select_from(TrustFailureReport)) or 0)


# -- running versions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionRecord:
    device_id: str
    running_version: str | None
    source: str
    channel: str | None
    newest_version: str | None
    releases_behind: int
    days_behind: int | None
    outdated: bool
    reported_at: dt.datetime
    details: Mapping[str, Any]

    def update_field(self) -> dict[str, Any]:
        """The ``device["update"]`` mapping :mod:`fieldward.assess.risk` reads."""
        return {
            "outdated": self.outdated,
            "days_behind": self.days_behind,
            "releases_behind": self.releases_behind,
            "running_version": self.running_version,
            "newest_version": self.newest_version,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "running_version": self.running_version,
            "source": self.source,
            "channel": self.channel,
            "newest_version": self.newest_version,
            "releases_behind": self.releases_behind,
            "days_behind": self.days_behind,
            "outdated": self.outdated,
            "reported_at": self.reported_at.isoformat(),
        }


def _version(row: TrustDeviceVersion) -> VersionRecord:
    return VersionRecord(
        row.device_id,
        row.running_version,
        row.source,
        row.channel,
        row.newest_version,
        int(row.releases_behind or 0),
        row.days_behind,
        bool(row.outdated),
        _utc(row.reported_at),
        dict(row.details or {}),
    )


class VersionBook:
    """Running versions per device (``trust_device_versions``)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(
        self,
        device_id: str,
        *,
        running_version: str | None,
        source: str,
        channel: str | None,
        newest_version: str | None,
        releases_behind: int,
        days_behind: int | None,
        outdated: bool,
        details: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Store the device's version; returns it and whether its ``outdated`` state or version changed."""
        if source not in VERSION_SOURCES:
            raise ValueError(f"source must be one of {', '.join(VERSION_SOURCES)}")
        values: dict[str, Any] = {
            "running_version": None if running_version is None else running_version[:128],
            "source": source,
            "channel": None if channel is None else channel[:64],
            "newest_version": None if newest_version is None else newest_version[:128],
            "releases_behind": max(0, releases_behind),
            "days_behind": days_behind,
            "outdated": outdated,
            "details": dict(details or {}),
            "reported_at": _utc(now),
        }
        for _attempt in range(3):
            try:
                with self.database.session() as session:
                    row = session.get(TrustDeviceVersion, device_id)
                    if row is None:
                        row = TrustDeviceVersion(device_id=device_id, **values)
                        session.add(row)
                        changed = True
                    else:
                        changed = (row.outdated, row.running_version, row.days_behind) != (
                            values["outdated"],
                            values["running_version"],
                            values["days_behind"],
                        )
                        for key, value in values.items():
                            setattr(row, key, value)
                    session.flush()
                    return _version(row), changed
            except IntegrityError:
                continue
        raise RuntimeError(f"could not record the version of {device_id}")

    def get(self, device_id: str) -> VersionRecord | None:
        with self.database.sessionmaker() as session:
            row = session.get(TrustDeviceVersion, device_id)
            return None if row is None else _version(row)

    def of(self, device_ids: Sequence[str]) -> dict[str, VersionRecord]:
        if not device_ids:
            return {}
        with self.database.sessionmaker() as session:
            rows = session.scalars(
                select(TrustDeviceVersion).where(TrustDeviceVersion.device_id.in_(list(device_ids)))
            )
            return {row.device_id: _version(row) for row in rows}
