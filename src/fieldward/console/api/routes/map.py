"""The network map (``/api/v1/map``): devices as nodes, their communications merged per device pair.

Nodes are the riskiest and busiest devices first, up to ``limit``; edges join only nodes on the map
and are aggregated in SQL (one ``GROUP BY`` per source, destination and protocol), so the answer size
is bounded by the node limit whatever the number of edge rows.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, func, select

from fieldward.console.api.deps import SessionDep, access
from fieldward.console.api.routes.devices import device_label
from fieldward.console.api.schemas import NO_NUL
from fieldward.console.api.schemas.map import MapEdge, MapNode, MapPublic
from fieldward.store.models import Communication, Device

__all__ = ["router"]

router = APIRouter(prefix="/map", tags=["map"])
MAX_NODES = 5000


@router.get(
    "",
    operation_id="map_get",
    response_model=MapPublic,
    summary="The network map graph (nodes and merged edges)",
    **access("viewer"),
)
def get_map(
    session: SessionDep,
    level_min: Annotated[int | None, Query(ge=0, le=5, description="Lowest Purdue level shown")] = None,
    level_max: Annotated[int | None, Query(ge=0, le=5, description="Highest Purdue level shown")] = None,
    protocol: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Only edges of this protocol")
    ] = None,
    sensor: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Sensor id")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_NODES, description="Most nodes on the map")] = 500,
) -> MapPublic:
    filters: list[ColumnElement[bool]] = []
    if level_min is not None:
        filters.append(Device.purdue_level >= level_min)
    if level_max is not None:
        filters.append(Device.purdue_level <= level_max)
    if sensor is not None:
        filters.append(Device.sensor_id == sensor)
    chosen = (
        select(Device.id)
        .where(*filters)
        .order_by(Device.risk_score.desc().nulls_last(), Device.packets.desc(), Device.id)
        .limit(limit)
    )
    rows = session.execute(
        select(
            Device.id,
            Device.hostname,
            Device.ips,
            Device.mac,
            Device.device_key,
            Device.device_type,
            Device.purdue_level,
            Device.vendor,
            Device.risk_score,
        )
        .where(Device.id.in_(chosen.scalar_subquery()))
        .order_by(Device.id)
    ).all()
    total = int(session.scalar(select(func.count()).select_from(Device).where(*filters)) or 0)
    nodes = {
        row.id: MapNode(
            id=row.id,
            label=device_label(row.hostname, row.ips, row.mac, row.device_key),
            type=row.device_type,
            level=row.purdue_level,
            vendor=row.vendor,
            risk=row.risk_score,
        )
        for row in rows
    }
    edge_filters: list[ColumnElement[bool]] = [
        Communication.src_device_id.in_(chosen.scalar_subquery()),
        Communication.dst_device_id.in_(chosen.scalar_subquery()),
    ]
    if protocol is not None:
        edge_filters.append(Communication.protocol == protocol)
    grouped = session.execute(
        select(
            Communication.src_device_id,
            Communication.dst_device_id,
            Communication.protocol,
            func.sum(Communication.src_packets + Communication.dst_packets),
            func.sum(Communication.src_bytes + Communication.dst_bytes),
        )
        .where(*edge_filters)
        .group_by(Communication.src_device_id, Communication.dst_device_id, Communication.protocol)
    ).all()
    merged: dict[tuple[int, int], tuple[set[str], int, int]] = {}
    for src, dst, name, packets, size in grouped:
        protocols, total_packets, total_bytes = merged.get((src, dst), (set(), 0, 0))
        if name:
            protocols.add(name)
        merged[(src, dst)] = (protocols, total_packets + int(packets or 0), total_bytes + int(size or 0))
    edges = [
        MapEdge(source=src, target=dst, protocols=sorted(protocols), packets=packets, bytes=size)
        for (src, dst), (protocols, packets, size) in sorted(merged.items())
    ]
    if protocol is not None:  # only the devices that speak it
        used = {e.source for e in edges} | {e.target for e in edges}
        nodes = {key: node for key, node in nodes.items() if key in used}
    return MapPublic(nodes=list(nodes.values()), edges=edges, truncated=total > len(rows))
