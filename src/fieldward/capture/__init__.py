"""Packet sources: capture files (pcap, pcapng, gzip) read into columnar PacketBatch objects."""

from fieldward.capture.batch import InterfaceInfo, PacketBatch
from fieldward.capture.reader import CaptureReader, open_capture

__all__ = ["CaptureReader", "InterfaceInfo", "PacketBatch", "open_capture"]
