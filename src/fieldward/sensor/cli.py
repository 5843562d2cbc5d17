"""``fieldward sensor run`` and ``fieldward sensor status`` (registered in :mod:`fieldward.cli`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["sensor_app"]

sensor_app = typer.Typer(
    help="Live sensor: capture from a network interface continuously (see docs/sensor.md).",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"fieldward: error: {message}\n")
    raise typer.Exit(code=code)


@sensor_app.command("run")
def run(
    interface: Annotated[
        str, typer.Option("--interface", "-i", help="Interface to capture from (SPAN/TAP port).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Sensor folder: segments, evidence ring, state, status.json.")
    ] = Path("/var/lib/fieldward/sensor"),
    bpf: Annotated[
        str | None,
        typer.Option(
            "--bpf",
            envvar="FIELDWARD_SENSOR_BPF",
            help="Capture filter (tcpdump syntax); also read from FIELDWARD_SENSOR_BPF, spaces and all "
            "(the systemd unit's environment file). Empty: no filter.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", "-w", min=1, max=64, help="Capture processes (AF_PACKET fanout by flow)."),
    ] = 1,
    segment_seconds: Annotated[
        float, typer.Option("--segment-seconds", min=1.0, help="Seconds per published result segment.")
    ] = 60.0,
    batch_packets: Annotated[
        int, typer.Option("--batch-packets", min=1, help="Largest micro-batch (packets).")
    ] = 65536,
    batch_ms: Annotated[
        int,
        typer.Option(
            "--batch-ms", min=1, max=1000, help="Longest wait before a partly filled batch is analysed (ms)."
        ),
    ] = 100,
    ring_mb: Annotated[
        int, typer.Option("--capture-ring-mb", min=1, help="Kernel capture ring per worker (MiB).")
    ] = 64,
    evidence_gb: Annotated[
        float, typer.Option("--evidence-gb", min=0.001, help="Disk for the raw-packet evidence ring (GB).")
    ] = 1.0,
    evidence_dir: Annotated[
        Path | None, typer.Option("--evidence-dir", help="Folder of the evidence ring (default OUT/ring).")
    ] = None,
    keep_segments: Annotated[
        int, typer.Option("--keep-segments", min=1, help="Segment folders kept on disk.")
    ] = 1000,
    console: Annotated[
        str | None,
        typer.Option(
            "--console",
            help="Where to publish results: a console URL (https://console:8443) or NATS JetStream "
            "(nats://sensor-a@nats:4222, tls://...; --token-file then holds the NATS password).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the sensor's token (fws_...).")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA certificate (PEM) of the console.")
    ] = None,
    spool: Annotated[Path | None, typer.Option("--spool", help="Spool folder (default OUT/spool).")] = None,
    spool_gb: Annotated[float, typer.Option("--spool-gb", min=0.001, help="Spool size cap (GB).")] = 2.0,
    metrics_address: Annotated[
        str, typer.Option("--metrics-address", help="Address of the /metrics and /healthz endpoint.")
    ] = "127.0.0.1",
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", min=0, max=65535, help="Port of /metrics (0: any free port).")
    ] = 9108,
    no_metrics: Annotated[bool, typer.Option("--no-metrics", help="Serve no metrics endpoint.")] = False,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="baseline.json of an earlier analysis to start from.")
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once when the interface does not exist.")
    ] = False,
) -> None:
    """Capture from INTERFACE until SIGTERM; analyse, keep evidence, publish segments."""
    from fieldward.capture.live import LiveCaptureError
    from fieldward.console.sensor_client import SensorClient, SensorError, load_token
    from fieldward.errors import FieldWardError
    from fieldward.pipeline import AnalysisOptions
    from fieldward.sensor.runner import SensorRunner, SensorSettings
    from fieldward.sensor.sink import HttpsSink, LocalSink, NatsSink, ResultSink
    from fieldward.sensor.worker import WorkerConfig

    bpf = bpf if bpf and bpf.strip() else None
    if (console is None) != (token_file is None):
        _fail("--console and --token-file go together")
    block_size = 1 << 20
    options = AnalysisOptions(baseline=baseline)
    template = WorkerConfig(
        index=0,
        workers=workers,
        interface=interface,
        out=out,
        options=options,
        batch_packets=batch_packets,
        block_size=block_size,
        block_count=max(ring_mb * 1024 * 1024 // block_size, 2),
        block_timeout_ms=batch_ms,
        ring_bytes=int(evidence_gb * 1e9),
        ring_dir=evidence_dir,
    )
    settings = SensorSettings(
        interface=interface,
        out=out,
        workers=workers,
        bpf=bpf,
        segment_seconds=segment_seconds,
        keep_segments=keep_segments,
        metrics_address=metrics_address,
        metrics_port=None if no_metrics else metrics_port,
        wait_for_interface=not no_wait,
        worker=template,
    )
    sink: ResultSink = LocalSink()
    try:
        if console is not None and token_file is not None and _is_nats(console):
            from fieldward.console.jetstream import JetStreamSensorClient

            sink = NatsSink(
                JetStreamSensorClient(
                    console,
                    spool or out / "spool",
                    secret_file=token_file,
                    ca_file=ca_file,
                    max_spool_bytes=int(spool_gb * 1e9),
                )
            )
        elif console is not None and token_file is not None:
            client = SensorClient(
                console,
                load_token(token_file),
                spool or out / "spool",
                ca_file=ca_file,
                max_spool_bytes=int(spool_gb * 1e9),
            )
            sink = HttpsSink(client)
        code = SensorRunner(settings, sink, stream=sys.stderr).run()
    except LiveCaptureError as exc:
        sink.close()
        _fail(str(exc), code=3)
    except (FieldWardError, SensorError) as exc:
        sink.close()
        _fail(str(exc))
    raise typer.Exit(code=code)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


@sensor_app.command("status")
def status(
    out: Annotated[Path, typer.Option("--out", "-o", help="The sensor folder.")] = Path(
        "/var/lib/fieldward/sensor"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print status.json as it is.")] = False,
) -> None:
    """Is the sensor running and healthy? Exit 0 healthy, 1 degraded, 3 not running."""
    from fieldward.sensor.status import read_status, sensor_alive

    data = read_status(out)
    if data is None:
        _fail(f"no sensor status in {out} (has `fieldward sensor run --out {out}` ever run?)", code=3)
    alive = sensor_alive(data)
    if as_json:
        sys.stdout.write(json.dumps({**data, "alive": alive}, indent=2) + "\n")
    else:
        _print_status(data, alive)
    if not alive:
        raise typer.Exit(code=3)
    raise typer.Exit(code=0 if data.get("healthy") else 1)


def _print_status(data: dict[str, Any], alive: bool) -> None:
    iface = data.get("interface", {})
    totals = data.get("totals", {})
    state = data.get("state", "?") if alive else f"not running (last state: {data.get('state', '?')})"
    age = _age(time.time() - float(data.get("updated", 0)))
    drops = f"kernel {totals.get('kernel_drops', 0):,}, interface {data.get('interface_drops', 0):,}"
    lines = [
        f"sensor      {state}, pid {data.get('pid')}, updated {age} ago",
        f"interface   {iface.get('name')}: {'up' if iface.get('up') else iface.get('operstate', 'down')}",
        f"packets     {totals.get('packets', 0):,} ({totals.get('bytes', 0):,} bytes), "
        f"alerts {totals.get('alerts', 0):,}",
        f"drops       {drops}, sensor {totals.get('sensor_drops', 0):,}",
        f"segments    current {data.get('segment')}, finished {data.get('segments_finished', 0)}, "
        f"published {data.get('segments_published', 0)} via {data.get('sink')}, "
        f"{data.get('publish_pending_batches', 0)} batch(es) pending",
        f"evidence    {totals.get('ring_bytes', 0) / 1e9:.2f} GB in the ring, "
        f"{totals.get('ring_skipped', 0):,} packets not written",
    ]
    for worker in data.get("workers", []):
        lines.append(
            f"  worker    {worker.get('state')}{'' if worker.get('alive') else ' (exited)'}: "
            f"{worker.get('packets', 0):,} packets, {worker.get('kernel_drops', 0):,} dropped"
        )
    for name, message in sorted(data.get("errors", {}).items()):
        lines.append(f"problem     {name}: {message}")
    if data.get("metrics"):
        lines.append(f"metrics     {data['metrics']}")
    sys.stdout.write("\n".join(lines) + "\n")


def _is_nats(url: str) -> bool:
    """A NATS JetStream URL (``nats://`` or ``tls://``) rather than a console's HTTPS URL."""
    return url.split("://", 1)[0].lower() in ("nats", "tls")
