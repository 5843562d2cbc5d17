"""Vectorized L2-L4 decoding of PacketBatch objects, IP fragment reassembly, flows, TCP streams."""

from fieldward.decode.columns import DecodedBatch

__all__ = ["DecodedBatch"]
