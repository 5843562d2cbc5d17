"""Sensors (``/api/v1/sensors``): registration by an administrator, list, credential rotation, removal.

A sensor's push credential (``fws_...``) is returned once, at creation or rotation, and stored only as
its SHA-256. Deleting a sensor deletes everything it reported (the store's cascades).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldward.console.api.cache import bump_data_version
from fieldward.console.api.deps import CurrentUser, IdPath, PagingDep, SessionDep, access, audit
from fieldward.console.api.schemas import Message, Page
from fieldward.console.api.schemas.sensors import SensorCreate, SensorCreated, SensorPublic
from fieldward.console.security import SENSOR_PREFIX, new_token
from fieldward.store.models import Sensor

__all__ = ["router"]

router = APIRouter(prefix="/sensors", tags=["sensors"])


def _public(sensor: Sensor, secret: str | None = None) -> SensorPublic:
    values: dict[str, object] = {
        "id": sensor.id,
        "name": sensor.name,
        "created": sensor.created,
        "last_seen": sensor.last_seen,
        "version": sensor.version,
        "description": sensor.description,
        "has_credential": sensor.credential_hash is not None,
    }
    if secret is not None:
        return SensorCreated.model_validate({**values, "token": secret})
    return SensorPublic.model_validate(values)


def _get(session: Session, sensor_id: int) -> Sensor:
    sensor = session.get(Sensor, sensor_id)
    if sensor is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such sensor")
    return sensor


@router.get("", operation_id="sensors_list", response_model=Page[SensorPublic], **access("viewer"))
def list_sensors(session: SessionDep, paging: PagingDep) -> Page[SensorPublic]:
    total = int(session.scalar(select(func.count()).select_from(Sensor)) or 0)
    rows = session.scalars(select(Sensor).order_by(Sensor.name).limit(paging.limit).offset(paging.offset))
    return Page[SensorPublic](
        items=[_public(s) for s in rows], total=total, limit=paging.limit, offset=paging.offset
    )


@router.post(
    "",
    operation_id="sensors_create",
    response_model=SensorCreated,
    status_code=status.HTTP_201_CREATED,
    **access("admin", 409),
)
def create_sensor(body: SensorCreate, user: CurrentUser, session: SessionDep) -> SensorPublic:
    name = body.name
    if session.scalar(select(Sensor.id).where(Sensor.name == name)) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="a sensor with this name exists")
    secret, digest = new_token(SENSOR_PREFIX)
    sensor = Sensor(name=name, credential_hash=digest, description=body.description)
    session.add(sensor)
    session.flush()
    audit(session, user.username, "sensor.create", f"sensor:{sensor.id}", name=name)
    session.commit()
    return _public(sensor, secret)


@router.get("/{sensor_id}", operation_id="sensors_get", response_model=SensorPublic, **access("viewer", 404))
def get_sensor(sensor_id: IdPath, session: SessionDep) -> SensorPublic:
    return _public(_get(session, sensor_id))


@router.post(
    "/{sensor_id}/token",
    operation_id="sensors_rotate_token",
    response_model=SensorCreated,
    summary="Issue a new push credential (the old one stops working)",
    **access("admin", 404),
)
def rotate_token(sensor_id: IdPath, user: CurrentUser, session: SessionDep) -> SensorPublic:
    sensor = _get(session, sensor_id)
    secret, digest = new_token(SENSOR_PREFIX)
    sensor.credential_hash = digest
    audit(session, user.username, "sensor.rotate_token", f"sensor:{sensor.id}", name=sensor.name)
    session.commit()
    return _public(sensor, secret)


@router.delete(
    "/{sensor_id}",
    operation_id="sensors_delete",
    response_model=Message,
    summary="Remove a sensor and everything it reported",
    **access("admin", 404),
)
def delete_sensor(sensor_id: IdPath, user: CurrentUser, session: SessionDep) -> Message:
    sensor = _get(session, sensor_id)
    audit(session, user.username, "sensor.delete", f"sensor:{sensor.id}", name=sensor.name)
    session.delete(sensor)
    session.commit()
    bump_data_version(session)  # its devices and alerts are gone: the list pages' kept answers are stale
    return Message(detail="sensor deleted")
