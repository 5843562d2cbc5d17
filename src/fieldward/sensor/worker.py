"""One capture worker process: its share of the interface's flows, analysed segment by segment.

A worker opens its own TPACKET_V3 ring in the sensor's fanout group (so it sees whole flows, both
directions), writes every packet to its evidence ring, and feeds the packets to a streaming
:class:`~fieldward.pipeline.Analysis`. A batch is whatever the kernel handed over since the last read
(at most ``batch_packets``; the kernel hands a partly filled block over after ``block_timeout_ms``),
so batches are small and frequent at low rates (alerts within a second) and large under load.

Commands from the main process (a queue): ``("cut", seq)`` finishes the current segment into
``OUT/segments/<seq>/worker-<k>`` and starts the next; ``("stop", seq)`` reads what is left in the
ring, finishes the segment and exits. SIGTERM to the worker itself acts like ``stop``, so nothing
analysed is lost whichever process systemd signals first.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import struct
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from fieldward.capture.batch import PacketBatch
from fieldward.capture.live import LiveCapture, LiveCaptureError, interface_state
from fieldward.detect.engine import DetectionContext
from fieldward.detect.knowledge import Knowledge
from fieldward.pipeline import Analysis, AnalysisOptions, fewer_collections
from fieldward.sensor.merge import ADDRESSES_FILE
from fieldward.sensor.metrics import Field, SharedCounters, WorkerState
from fieldward.sensor.ring import EvidenceRing

__all__ = ["WorkerConfig", "run_worker", "segment_dir"]

IDLE_FLUSH_S = 1.0
"""Without packets for this long, idle flows are expired against the wall clock."""
CHECK_S = 1.0
"""Kernel counters, ring metrics, the interface and the main process are looked at this often."""
RETRY_S = 1.0
"""Pause between attempts to open a missing or failing interface."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    index: int
    workers: int
    interface: str
    out: Path
    options: AnalysisOptions
    bpf: str | None = None
    fanout_group: int | None = None
    batch_packets: int = 65536
    block_size: int = 1 << 20
    block_count: int = 64
    block_timeout_ms: int = 100
    ring_bytes: int = 1 << 30
    ring_file_bytes: int = 64 * 1024**2
    ring_dir: Path | None = None
    """Folder of the evidence ring (default ``OUT/ring``): a disk of its own keeps a full ring from
    touching the analysis results."""


def segment_dir(out: Path, seq: int) -> Path:
    return out / "segments" / f"{seq:08d}"


def _baseline_path(config: WorkerConfig) -> Path:
    return config.out / "state" / f"worker-{config.index}.baseline.json"


class _Worker:
    def __init__(self, config: WorkerConfig, seq: int, counters: SharedCounters, results: Any) -> None:
        self.config = config
        self.seq = seq
        self.counters = counters
        self.results = results
        self.stop_requested = False
        self.capture: LiveCapture | None = None
        self.capture_error = ""
        baseline = _baseline_path(config)
        given = config.options.baseline
        if baseline.is_file():
            self.knowledge = Knowledge.load(baseline)
        else:  # first run: start from --baseline, as ``analyze --baseline`` does
            self.knowledge = Knowledge.load(given) if given is not None else Knowledge()
        self.ring = EvidenceRing(
            (config.ring_dir or config.out / "ring") / f"worker-{config.index}",
            max_bytes=config.ring_bytes // config.workers,
            file_bytes=config.ring_file_bytes,
        )
        self.live_alerts = config.out / "alerts-live.jsonl"
        self._set(Field.STATE, WorkerState.STARTING)
        warm_up(config.options)  # compile the kernels before the ring fills with waiting packets
        self.analysis = self._new_analysis()
        self._open()
        self.last_packet = self.last_check = time.monotonic()
        self.flushed = True
        self.parent = os.getppid()

    def _new_analysis(self) -> Analysis:
        self.segment_started_ns = time.time_ns()
        folder = segment_dir(self.config.out, self.seq) / f"worker-{self.config.index}"
        context = DetectionContext(self.config.options.detection, self.knowledge)
        return Analysis(folder, self.config.options, context, label=f"live:{self.config.interface}")

    def _set(self, field: Field, value: int) -> None:
        self.counters.set(self.config.index, field, value)

    def _add(self, field: Field, value: int) -> None:
        self.counters.add(self.config.index, field, value)

    def report(self, kind: str, **data: Any) -> None:
        self.results.put((kind, self.config.index, data))

    # --- capture ---

    def _open(self) -> bool:
        c = self.config
        state = interface_state(c.interface)
        if state.exists and not state.up:  # a socket opens on a downed link, then every read fails
            message = f"interface {c.interface} is down ({state.operstate}): waiting for it to come up"
            if message != self.capture_error:
                self.capture_error = message
                self.report("error", message=message)
            self._set(Field.STATE, WorkerState.WAITING)
            return False
        try:
            self.capture = LiveCapture(
                c.interface,
                bpf=c.bpf,
                block_size=c.block_size,
                block_count=c.block_count,
                block_timeout_ms=c.block_timeout_ms,
                fanout_group=c.fanout_group,
            )
        except LiveCaptureError as exc:
            if str(exc) != self.capture_error:
                self.capture_error = str(exc)
                self.report("error", message=str(exc))
            self._set(Field.STATE, WorkerState.WAITING)
            return False
        if self.capture_error:
            self.report("recovered", message=f"capturing on {c.interface} again")
        self.capture_error = ""
        self._set(Field.STATE, WorkerState.CAPTURING)
        return True

    def _close_capture(self) -> None:
        if self.capture is not None:
            self._kernel_stats()
            self.capture.close()
            self.capture = None

    def _kernel_stats(self) -> None:
        if self.capture is None:
            return
        try:
            stats = self.capture.stats()
        except OSError:
            return
        self._add(Field.KERNEL_PACKETS, stats.packets)
        self._add(Field.KERNEL_DROPS, stats.drops)

    def _read_once(self, timeout: float) -> int:
        """Read and analyse one batch; the number of packets."""
        assert self.capture is not None
        try:
            batch = self.capture.read(self.config.batch_packets, timeout)
        except LiveCaptureError as exc:
            if str(exc) != self.capture_error:  # reported once, not once per retry
                self.report("error", message=str(exc))
            self.capture_error = str(exc)
            self._set(Field.STATE, WorkerState.WAITING)
            self._close_capture()
            return 0
        n = len(batch)
        if n == 0:
            return 0
        self.ring.write(batch)
        started = time.perf_counter_ns()
        try:
            self.analysis.feed(batch)
        except Exception:
            self._add(Field.SENSOR_DROPS, n)
            self.report("error", message="analysis failed on a batch:\n" + traceback.format_exc(limit=5))
        self._add(Field.ANALYSIS_NS, time.perf_counter_ns() - started)
        self._add(Field.PACKETS, n)
        self._add(Field.BYTES, batch.captured_bytes)
        self._add(Field.BATCHES, 1)
        self._set(Field.LAST_PACKET_NS, int(batch.ts_ns.max()))
        self._publish_alerts()
        self.last_packet = time.monotonic()
        self.flushed = False
        return n

    def _publish_alerts(self) -> None:
        fresh = self.analysis.new_alerts()
        if not fresh:
            return
        lines = b"".join(
            json.dumps({**a.to_json(), "worker": self.config.index, "segment": self.seq}).encode() + b"\n"
            for a in fresh
        )
        try:
            fd = os.open(self.live_alerts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        except OSError as exc:
            self.report("error", message=f"cannot append to {self.live_alerts}: {exc.strerror or exc}")
        self._add(Field.ALERTS, len(fresh))

    def _ring_metrics(self) -> None:
        stats = self.ring.stats
        self._set(Field.RING_BYTES, stats.bytes)
        self._set(Field.RING_FILES, stats.files)
        self._set(Field.RING_SKIPPED, stats.skipped_packets)

    # --- segments ---

    def cut(self, next_seq: int | None) -> None:
        """Finish the current segment (and start ``next_seq`` unless None)."""
        captures = self.ring.files_since(self.segment_started_ns)
        try:
            result = self.analysis.finish(captures)
            summary: dict[str, Any] = result.summary()
            ok = True
            if self.config.workers > 1 and result.out_dir is not None:  # distinct counts for the merge
                (result.out_dir / ADDRESSES_FILE).write_text(json.dumps(result.totals.address_sets()))
        except Exception:
            summary = {"error": traceback.format_exc(limit=5)}
            ok = False
        self._add(Field.EVENTS, sum(int(v) for v in summary.get("events", {}).values()) if ok else 0)
        baseline = _baseline_path(self.config)
        try:
            baseline.parent.mkdir(parents=True, exist_ok=True)
            tmp = baseline.with_suffix(".tmp")
            self.knowledge.save(tmp)
            tmp.replace(baseline)
        except OSError as exc:
            self.report("error", message=f"cannot save the baseline: {exc.strerror or exc}")
        self.report("segment", seq=self.seq, ok=ok, summary=summary)
        if next_seq is not None:
            self.seq = next_seq
            self.analysis = self._new_analysis()

    def drain(self) -> None:
        """Analyse what is still in the ring (after stop was asked)."""
        if self.capture is None:
            return
        self._read_once(0.2)  # a partly filled block is handed over after block_timeout_ms
        while self._read_once(0.0):
            pass
        self._kernel_stats()

    def run(self, commands: Any) -> None:
        while True:
            try:
                command, seq = commands.get_nowait()
            except queue.Empty:
                command, seq = (None, 0)
            if command == "cut":
                self._kernel_stats()
                self.cut(seq)
                continue
            if command == "stop" or self.stop_requested:
                self.drain()
                self._close_capture()
                self.cut(None)
                self.ring.close()
                self._ring_metrics()
                self._set(Field.STATE, WorkerState.STOPPED)
                return
            if self.capture is None and not self._open():
                time.sleep(RETRY_S)
                continue
            self._read_once(0.1)
            now = time.monotonic()
            if now - self.last_packet > IDLE_FLUSH_S and not self.flushed:
                self.analysis.flush(time.time_ns())
                self.flushed = True
            if now - self.last_check > CHECK_S:
                self.last_check = now
                self._kernel_stats()
                self._ring_metrics()
                self._check_interface()
                if os.getppid() != self.parent:
                    self.report("error", message="the main process is gone: finishing and exiting")
                    self.stop_requested = True
            self._set(Field.HEARTBEAT_NS, time.time_ns())

    def _check_interface(self) -> None:
        """A capture on a deleted or downed interface gets no error, only silence: look."""
        state = interface_state(self.config.interface)
        if not state.exists or not state.up:
            name = self.config.interface
            message = (
                f"interface {name} is gone: waiting for it to come back"
                if not state.exists
                else f"interface {name} is down ({state.operstate}): waiting for it to come up"
            )
            if message != self.capture_error:
                self.capture_error = message
                self.report("error", message=message)
            self._set(Field.STATE, WorkerState.WAITING)
            if not state.exists:
                self._close_capture()  # reopen when it is back (the old ifindex is dead)
        elif self.capture_error and self.capture is not None:
            self.capture_error = ""
            self.report("recovered", message=f"interface {self.config.interface} is up again")
            self._set(Field.STATE, WorkerState.CAPTURING)


def _frame(proto: int, transport: bytes, payload: bytes) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(transport) + len(payload),
        1,
        0,
        64,
        proto,
        0,
        bytes((10, 0, 0, 1)),
        bytes((10, 0, 0, 2)),
    )
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + transport + payload


def warm_up(options: AnalysisOptions) -> None:
    """Run a throw-away analysis over a few synthetic frames (TCP handshake, UDP, ARP), so the
    compiled kernels are ready before the first captured packet waits for them."""
    syn = struct.pack("!HHIIBBHHH", 40000, 502, 1, 0, 0x50, 0x02, 8192, 0, 0)
    ack = struct.pack("!HHIIBBHHH", 502, 40000, 7, 2, 0x50, 0x12, 8192, 0, 0)
    udp = struct.pack("!HHHH", 40001, 53, 8 + 12, 0)
    arp = (
        b"\xff" * 6
        + b"\x02\x00\x00\x00\x00\x01\x08\x06"
        + bytes.fromhex("0001080006040001")
        + b"\x02\x00\x00\x00\x00\x01"
        + bytes((10, 0, 0, 1))
        + bytes(6)
        + bytes((10, 0, 0, 2))
    )
    frames = [_frame(6, syn, b""), _frame(6, ack, b""), _frame(17, udp, bytes(12)), arp]
    now = time.time_ns()
    batch = PacketBatch.from_packets(frames, ts_ns=[now + i * 1000 for i in range(len(frames))])
    analysis = Analysis(None, options)
    analysis.feed(batch)
    analysis.finish()


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the main process dies (Linux ``PR_SET_PDEATHSIG``), so a
    killed sensor leaves no capture process behind; the loop also checks its parent every second."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def run_worker(config: WorkerConfig, seq: int, counters: SharedCounters, commands: Any, results: Any) -> None:
    """Process entry point of a capture worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides (Ctrl-C reaches the group)
    _die_with_parent()
    worker: _Worker | None = None

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        if worker is not None:
            worker.stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        with fewer_collections():
            worker = _Worker(config, seq, counters, results)
            worker.run(commands)
    except Exception:
        counters.set(config.index, Field.STATE, WorkerState.FAILED)
        results.put(("fatal", config.index, {"message": traceback.format_exc(limit=8)}))
        raise SystemExit(1) from None
