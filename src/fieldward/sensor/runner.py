"""The live sensor's main process: workers, segments, publishing, status, metrics, signals.

``SensorRunner.run`` starts ``workers`` capture processes in one AF_PACKET fanout group, cuts a
segment every ``segment_seconds`` (each worker finishes its analysis into
``OUT/segments/<seq>/worker-<k>``, the main process merges them into ``OUT/segments/<seq>`` and hands
the folder to the :class:`~fieldward.sensor.sink.ResultSink`), writes ``OUT/status.json`` every
second and serves ``/metrics`` (Prometheus text format) and ``/healthz``.

With several workers the detectors that correlate across flows run in the main process over each
merged segment (:mod:`fieldward.sensor.correlate`); the workers run the per-flow ones, which alert
live. One worker runs every detector itself.

On SIGTERM or SIGINT the workers read what is left in their rings, finish the segment, and the main
process merges and publishes it before exiting 0: nothing analysed is lost. ``OUT/state.json`` keeps
the next segment number and each worker's learned baseline stays under ``OUT/state``, so a restart
resumes where the last run stopped. A worker that dies is restarted; a missing or downed interface is
waited for (the state says so) instead of ending the sensor.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fieldward import __version__
from fieldward.capture.live import LiveCapture, LiveCaptureError, compile_bpf, interface_state
from fieldward.detect.knowledge import Knowledge
from fieldward.errors import ConfigError, FieldWardError
from fieldward.pipeline import AnalysisOptions
from fieldward.sensor.correlate import apply_correlation, correlate_segment
from fieldward.sensor.merge import merge_segment
from fieldward.sensor.metrics import Field, SensorCollector, SharedCounters, WorkerState, make_registry
from fieldward.sensor.ring import ring_files_since
from fieldward.sensor.sink import LocalSink, PublishOutcome, ResultSink
from fieldward.sensor.status import write_status
from fieldward.sensor.worker import WorkerConfig, run_worker, segment_dir

__all__ = ["SensorRunner", "SensorSettings"]

log = logging.getLogger("fieldward.sensor")

RESTART_S = 5.0
"""Least time between two restarts of one worker (a worker failing at start does not spin)."""
RING_MARGIN_NS = 5_000_000_000
"""Evidence ring files that started up to this long before a segment are searched too (a worker's
segment starts a little before the main process's clock says)."""
STOP_TIMEOUT_S = 120.0
"""How long the main process waits for the workers' last segment on shutdown."""


@dataclass(frozen=True, slots=True)
class SensorSettings:
    interface: str
    out: Path
    workers: int = 1
    bpf: str | None = None
    segment_seconds: float = 60.0
    keep_segments: int = 1000
    """Published segment folders kept on disk (oldest deleted first)."""
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = 9108
    wait_for_interface: bool = True
    """A missing interface at start: wait for it (True) or fail (False)."""
    worker: WorkerConfig | None = None
    """Template of the workers' settings (index, workers, interface and out are filled in)."""


@dataclass
class _Segment:
    seq: int
    started: float
    done: dict[int, dict[str, Any]] = field(default_factory=dict)


def _fanout_group() -> int:
    return (os.getpid() & 0x7FFF) or 1


class SensorRunner:
    """Runs a live sensor until SIGTERM/SIGINT (or :meth:`request_stop`)."""

    def __init__(
        self, settings: SensorSettings, sink: ResultSink | None = None, stream: TextIO | None = None
    ) -> None:
        if settings.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if settings.segment_seconds <= 0:
            raise ConfigError("--segment-seconds must be positive")
        self.settings = settings
        self.sink: ResultSink = sink if sink is not None else LocalSink()
        self.stream = stream
        self.out = settings.out
        self._stop = threading.Event()
        self._ctx = multiprocessing.get_context("fork")
        self.counters = SharedCounters(settings.workers, self._ctx)
        self._results: Any = self._ctx.Queue()
        self._commands: list[Any] = []
        self._procs: list[Any] = []
        self._errors: dict[str, str] = {}
        self._messages: list[dict[str, Any]] = []
        self._publish_queue: queue.Queue[tuple[int, int, dict[str, Any]] | None] = queue.Queue()
        self._knowledge: Knowledge | None = None
        self._correlated_alerts = 0
        self._published = 0
        self._publish_failures = 0
        self._pending = 0
        self._last_publish: PublishOutcome | None = None
        self._segments_done = 0
        self._started = time.time()
        self._lock_file: Any = None
        self._http: ThreadingHTTPServer | None = None
        self._restarted: dict[int, float] = {}

    # --- messages ---

    def _say(self, level: int, message: str) -> None:
        self._messages = [
            *self._messages[-19:],
            {"ts": time.time(), "level": logging.getLevelName(level), "message": message},
        ]
        if self.stream is not None:
            self.stream.write(
                f"{time.strftime('%H:%M:%S')} {logging.getLevelName(level).lower()}: {message}\n"
            )
            self.stream.flush()
        else:
            log.log(level, message)

    def request_stop(self) -> None:
        self._stop.set()

    # --- state ---

    def _state_path(self) -> Path:
        return self.out / "state.json"

    def _load_seq(self) -> int:
        try:
            return int(json.loads(self._state_path().read_text()).get("next_segment", 1))
        except (OSError, ValueError):
            return 1

    def _save_seq(self, seq: int) -> None:
        tmp = self.out / "state.json.tmp"
        tmp.write_text(json.dumps({"next_segment": seq, "interface": self.settings.interface}) + "\n")
        tmp.replace(self._state_path())

    def _lock(self) -> None:
        self._lock_file = (self.out / "sensor.lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another sensor is running with --out {self.out}") from None
        self._lock_file.truncate(0)
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    # --- checks before starting ---

    def _preflight(self) -> None:
        s = self.settings
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"cannot write to the output folder {self.out}: {exc.strerror or exc}"
            ) from None
        state = interface_state(s.interface)
        if not state.exists and not s.wait_for_interface:
            raise LiveCaptureError(f"no such interface: {s.interface} (see `ip link`)")
        if s.bpf:
            compile_bpf(s.bpf)  # a bad filter is reported now, even while waiting for the interface
        if state.exists:
            # open (and close) one small ring: a permission problem is reported now, not per worker
            LiveCapture(s.interface, block_size=1 << 16, block_count=2).close()
            if not state.up:
                self._say(
                    logging.WARNING,
                    f"interface {s.interface} is down ({state.operstate}): waiting for it to come up",
                )
        else:
            self._say(logging.WARNING, f"interface {s.interface} does not exist yet: waiting for it")

    # --- workers ---

    def _template(self) -> WorkerConfig:
        s = self.settings
        return s.worker or WorkerConfig(0, s.workers, s.interface, self.out, AnalysisOptions())

    def _worker_config(self, index: int, group: int) -> WorkerConfig:
        s = self.settings
        template = self._template()
        options = template.options
        if s.workers > 1 and options.detect:  # the cross-flow detectors run here, over merged segments
            options = replace(options, detectors="per_flow")
        return WorkerConfig(
            index=index,
            workers=s.workers,
            interface=s.interface,
            out=self.out,
            options=options,
            bpf=s.bpf,
            fanout_group=group if s.workers > 1 else None,
            batch_packets=template.batch_packets,
            block_size=template.block_size,
            block_count=template.block_count,
            block_timeout_ms=template.block_timeout_ms,
            ring_bytes=template.ring_bytes,
            ring_file_bytes=template.ring_file_bytes,
            ring_dir=template.ring_dir,
        )

    def _start_worker(self, index: int, seq: int) -> None:
        config = self._worker_config(index, self._group)
        commands = self._ctx.Queue()
        proc = self._ctx.Process(
            target=run_worker,
            args=(config, seq, self.counters, commands, self._results),
            name=f"fieldward-sensor-w{index}",
            daemon=False,
        )
        proc.start()
        if index < len(self._procs):
            self._procs[index], self._commands[index] = proc, commands
        else:
            self._procs.append(proc)
            self._commands.append(commands)

    # --- publishing (a thread: a slow console never stalls the capture) ---

    def _correlator_state(self) -> Path:
        return self.out / "state" / "correlator.baseline.json"

    def _correlator_knowledge(self) -> Knowledge:
        if self._knowledge is None:
            path, given = self._correlator_state(), self._template().options.baseline
            if path.is_file():
                self._knowledge = Knowledge.load(path)
            elif given is not None:
                self._knowledge = Knowledge.load(given)
            else:
                self._knowledge = Knowledge()
        return self._knowledge

    def _correlate(self, seq: int, started_ns: int, folder: Path) -> None:
        """The cross-flow detectors over the merged segment ``folder`` (several workers only)."""
        options = self._template().options
        knowledge = self._correlator_knowledge()
        result = correlate_segment(
            folder,
            knowledge,
            settings=options.detection,
            flow_config=options.flows,
            plugins=options.plugins,
        )
        ring = self._template().ring_dir or self.out / "ring"
        captures = [
            p
            for index in range(self.settings.workers)
            for p in ring_files_since(ring / f"worker-{index}", started_ns - RING_MARGIN_NS)
        ]
        fresh = apply_correlation(folder, result, captures)
        knowledge.save(folder / "baseline.json")
        state = self._correlator_state()
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        knowledge.save(tmp)
        tmp.replace(state)
        if fresh:
            lines = b"".join(
                json.dumps({**record, "worker": None, "segment": seq}).encode() + b"\n" for record in fresh
            )
            with (self.out / "alerts-live.jsonl").open("ab") as handle:
                handle.write(lines)
            self._correlated_alerts += len(fresh)

    def _merge(self, seq: int, started_ns: int, meta: dict[str, Any]) -> Path | None:
        s = self.settings
        folder = segment_dir(self.out, seq)
        finish = None
        if s.workers > 1 and self._template().options.detect:

            def finish(target: Path) -> None:
                try:
                    self._correlate(seq, started_ns, target)
                except Exception as exc:  # a detector bug must not lose the merged segment
                    self._errors["correlate"] = f"segment {seq}: {exc!r}"
                    self._say(logging.ERROR, f"segment {seq}: cross-flow detection failed: {exc!r}")
                else:
                    self._errors.pop("correlate", None)

        try:
            merge_segment(folder, [folder / f"worker-{i}" for i in range(s.workers)], meta, finish)
        except (OSError, ValueError, FieldWardError) as exc:
            self._errors["merge"] = f"segment {seq}: {exc}"
            self._say(logging.ERROR, f"cannot merge segment {seq}: {exc}")
            return None
        self._errors.pop("merge", None)
        self._segments_done += 1
        return folder

    def _publisher(self) -> None:
        while True:
            item = self._publish_queue.get()
            if item is None:
                return
            seq, started_ns, meta = item
            merged = self._merge(seq, started_ns, meta)
            if merged is None:
                continue
            folder = merged
            try:
                outcome = self.sink.publish(folder)
            except FieldWardError as exc:
                outcome = PublishOutcome(delivered=False, detail=f"{self.sink.name}: {exc}")
                self._errors["publish"] = outcome.detail
                self._say(logging.ERROR, f"segment {seq}: cannot publish: {exc}")
            except Exception as exc:
                outcome = PublishOutcome(delivered=False, detail=f"{self.sink.name}: {exc!r}")
                self._errors["publish"] = outcome.detail
                self._say(logging.ERROR, f"segment {seq}: publishing failed: {exc!r}")
            self._last_publish = outcome
            self._pending = outcome.pending
            if outcome.delivered:
                self._published += 1
                self._errors.pop("publish", None)
            else:
                self._publish_failures += 1
                if outcome.detail:
                    self._errors["publish"] = outcome.detail
                    self._say(
                        logging.WARNING,
                        f"segment {seq}: {outcome.detail} (kept, retried with the next segment)",
                    )
            self._prune()

    def _prune(self) -> None:
        root = self.out / "segments"
        if not root.is_dir():
            return
        done = sorted(p for p in root.iterdir() if (p / "segment.json").is_file())
        for old in done[: max(len(done) - self.settings.keep_segments, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    # --- metrics and status ---

    def _extra_metrics(self) -> dict[str, float]:
        return {
            "segments_finished": float(self._segments_done),
            "segments_published": float(self._published),
            "alerts_correlated": float(self._correlated_alerts),
            "publish_failures": float(self._publish_failures),
            "publish_pending_batches": float(self._pending),
            "uptime_seconds": time.time() - self._started,
            "workers_alive": float(sum(1 for p in self._procs if p.is_alive())),
        }

    def _serve_metrics(self, collector: SensorCollector) -> None:
        port = self.settings.metrics_port
        if port is None:
            return
        registry = make_registry(collector)
        runner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, kind, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/healthz"):
                    status = runner.status()
                    code = 200 if status["healthy"] else 503
                    body, kind = (json.dumps(status) + "\n").encode(), "application/json"
                else:
                    body, kind, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._http = ThreadingHTTPServer((self.settings.metrics_address, port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.settings.metrics_address}:{port}: {exc.strerror or exc} "
                "(--metrics-port 0 picks a free port, --no-metrics turns it off)"
            ) from None
        self.metrics_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="sensor-metrics", daemon=True).start()

    def status(self) -> dict[str, Any]:
        iface = interface_state(self.settings.interface)
        workers: list[dict[str, Any]] = []
        for index in range(self.settings.workers):
            row: dict[str, Any] = dict(self.counters.row(index))
            row["state"] = WorkerState(row["state"]).name.lower()
            row["alive"] = index < len(self._procs) and self._procs[index].is_alive()
            workers.append(row)
        capturing = all(w["state"] == "capturing" and w["alive"] for w in workers)
        healthy = capturing and iface.up and "publish" not in self._errors
        return {
            "version": __version__,
            "pid": os.getpid(),
            "state": "stopping" if self._stop.is_set() else ("running" if capturing else "degraded"),
            "healthy": healthy,
            "updated": time.time(),
            "started": self._started,
            "interface": {
                "name": self.settings.interface,
                "exists": iface.exists,
                "up": iface.up,
                "operstate": iface.operstate,
                "rx_dropped": iface.rx_dropped,
            },
            "sink": self.sink.name,
            "segment": self._seq,
            "segments_finished": self._segments_done,
            "segments_published": self._published,
            "alerts_correlated": self._correlated_alerts,
            "publish_pending_batches": self._pending,
            "last_publish": None
            if self._last_publish is None
            else {"delivered": self._last_publish.delivered, "detail": self._last_publish.detail},
            "totals": {
                f.name.lower(): self.counters.total(f)
                for f in (
                    Field.PACKETS,
                    Field.BYTES,
                    Field.KERNEL_DROPS,
                    Field.SENSOR_DROPS,
                    Field.ALERTS,
                    Field.RING_BYTES,
                    Field.RING_SKIPPED,
                )
            },
            "interface_drops": iface.rx_dropped,
            "workers": workers,
            "errors": dict(self._errors),
            "messages": self._messages[-10:],
            "metrics": None
            if self._http is None
            else f"http://{self.settings.metrics_address}:{self.metrics_port}/metrics",
        }

    # --- the loop ---

    def _handle(
        self, message: tuple[str, int, dict[str, Any]], current: _Segment, finishing: dict[int, _Segment]
    ) -> None:
        kind, index, data = message
        if kind == "segment":
            segment = finishing.get(data["seq"]) or (current if current.seq == data["seq"] else None)
            if segment is not None:
                segment.done[index] = data
            if not data["ok"]:
                self._say(
                    logging.ERROR,
                    f"worker {index}: segment {data['seq']} failed: {data['summary'].get('error')}",
                )
        elif kind == "error":
            self._errors[f"worker{index}"] = data["message"]
            self._say(logging.ERROR, f"worker {index}: {data['message']}")
        elif kind == "recovered":
            self._errors.pop(f"worker{index}", None)
            self._say(logging.INFO, f"worker {index}: {data['message']}")
        elif kind == "fatal":
            self._errors[f"worker{index}"] = data["message"].strip().splitlines()[-1]
            self._say(logging.ERROR, f"worker {index} failed:\n{data['message']}")

    def _finish_segment(self, segment: _Segment) -> None:
        """Hand a segment every worker has finished to the publishing thread (merge, cross-flow
        detection, publish: none of it stalls the main loop)."""
        s = self.settings
        meta = {
            "sensor_version": __version__,
            "interface": s.interface,
            "segment": segment.seq,
            "started": _iso(segment.started),
            "ended": _iso(time.time()),
            "workers": s.workers,
            "failed_workers": sorted(i for i, d in segment.done.items() if not d["ok"]),
        }
        self._publish_queue.put((segment.seq, int(segment.started * 1e9), meta))

    def run(self) -> int:
        s = self.settings
        self._preflight()
        self._lock()
        seq = self._seq = self._load_seq()
        self._save_seq(seq + 1)  # a crash never reuses a segment number
        self._group = _fanout_group()
        for index in range(s.workers):
            self._start_worker(index, seq)
        publisher = threading.Thread(target=self._publisher, name="sensor-publish", daemon=True)
        publisher.start()
        self._serve_metrics(SensorCollector(self.counters, s.interface, self._extra_metrics))

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._stop.set()

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self._say(logging.INFO, f"sensor on {s.interface}: {s.workers} worker(s), output {self.out}")
        current = _Segment(seq, time.time())
        finishing: dict[int, _Segment] = {}
        try:
            while not self._stop.is_set():
                self._pump(current, finishing, 0.5)
                for index, proc in enumerate(self._procs):
                    if not proc.is_alive() and time.monotonic() - self._restarted.get(index, 0.0) > RESTART_S:
                        self._say(logging.ERROR, f"worker {index} exited ({proc.exitcode}): restarting it")
                        self._restarted[index] = time.monotonic()
                        current.done.pop(index, None)
                        self._start_worker(index, current.seq)
                for segment in finishing.values():  # a worker that died cannot finish older segments
                    for index, proc in enumerate(self._procs):
                        if not proc.is_alive() and index not in segment.done:
                            segment.done[index] = {
                                "ok": False,
                                "seq": segment.seq,
                                "summary": {"error": "worker died"},
                            }
                if time.time() - current.started >= s.segment_seconds:
                    finishing[current.seq] = current
                    self._seq = current.seq + 1
                    self._save_seq(self._seq + 1)
                    for commands in self._commands:
                        commands.put(("cut", self._seq))
                    current = _Segment(self._seq, time.time())
                self._complete(finishing)
                write_status(self.out, self.status())
            self._say(logging.INFO, "stopping: finishing the last segment")
            write_status(self.out, self.status())
            for commands in self._commands:
                commands.put(("stop", current.seq))
            finishing[current.seq] = current
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while finishing and time.monotonic() < deadline:
                self._pump(current, finishing, 0.2)
                for segment in finishing.values():
                    for index, proc in enumerate(self._procs):
                        if not proc.is_alive() and index not in segment.done:
                            segment.done[index] = {
                                "ok": False,
                                "seq": segment.seq,
                                "summary": {"error": "worker exited"},
                            }
                self._complete(finishing)
            for proc in self._procs:
                proc.join(timeout=10)
            self._publish_queue.put(None)
            publisher.join(timeout=STOP_TIMEOUT_S)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            for proc in self._procs:
                if proc.is_alive():
                    proc.kill()
            if self._http is not None:
                self._http.shutdown()
            self.sink.close()
            status = self.status()
            status["state"] = "stopped"
            status["healthy"] = False
            write_status(self.out, status)
        self._say(
            logging.INFO, f"stopped after {self._segments_done} segment(s), {self._published} published"
        )
        return 0

    def _pump(self, current: _Segment, finishing: dict[int, _Segment], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = (
                    self._results.get(timeout=max(remaining, 0.01))
                    if remaining > 0
                    else self._results.get_nowait()
                )
            except queue.Empty:
                return
            self._handle(message, current, finishing)

    def _complete(self, finishing: dict[int, _Segment]) -> None:
        for seq in sorted(finishing):
            segment = finishing[seq]
            if len(segment.done) < self.settings.workers:
                break
            del finishing[seq]
            self._finish_segment(segment)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
