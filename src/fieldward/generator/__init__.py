"""Deterministic plant-network traffic generator: a realistic OT/IoT capture at any scale.

``generate_capture(path, GeneratorConfig(devices=40, minutes=10, seed=1))`` writes a time-ordered
pcap of a simulated plant (PLCs polled by HMIs and a historian over Modbus/TCP, S7comm and
EtherNet/IP, CIP I/O, DNP3 RTUs, MQTT sensors, IP cameras streaming RTP, and the DHCP/DNS/NTP/ARP
background). The same configuration always gives the same bytes. See ``docs/generator.md``.
"""

from fieldward.generator.config import GeneratorConfig, GeneratorStats
from fieldward.generator.run import estimate_packets, generate_capture

__all__ = ["GeneratorConfig", "GeneratorStats", "estimate_packets", "generate_capture"]
