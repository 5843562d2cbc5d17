"""Schemas of the network map graph."""

from __future__ import annotations

from pydantic import Field

from fieldward.console.api.schemas import OutputModel

__all__ = ["MapEdge", "MapNode", "MapPublic"]


class MapNode(OutputModel):
    id: int
    label: str
    type: str | None
    level: int | None
    vendor: str | None
    risk: int | None


class MapEdge(OutputModel):
    source: int
    target: int
    protocols: list[str]
    packets: int
    bytes: int


class MapPublic(OutputModel):
    nodes: list[MapNode]
    edges: list[MapEdge]
    truncated: bool = Field(description="True when the node limit left devices out")
