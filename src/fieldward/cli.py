"""The ``fieldward`` command line (typer + rich).

Every command turns a :class:`~fieldward.errors.FieldWardError` (or an OS error) into one line on
stderr and exit code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fieldward import __version__
from fieldward.errors import FieldWardError
from fieldward.generator.config import MAX_DEVICES, MAX_MINUTES
from fieldward.sensor.cli import sensor_app

app = typer.Typer(
    name="fieldward",
    help="FieldWard: passive security monitoring for IoT and OT networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEMO_DEVICES = 16
DEMO_MINUTES = 4.0
DEMO_SEED = 7
DEMO_LEARN_MINUTES = 2.0
"""The demo learns the plant's first two minutes, then judges the rest, where these attacks play."""
DEMO_ATTACKS = ("s7_plc_stop@2.2", "port_scan@2.5", "telnet_brute_force@3.1", "modbus_rogue_write@3.4")

_Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (sqlite:///FILE or postgresql+psycopg://...); default $FIELDWARD_DATABASE_URL "
        "or fieldward.db in the data folder ($FIELDWARD_HOME, ~/.local/share/fieldward).",
    ),
]

_To = Annotated[
    str | None, typer.Option("--to", help="Console URL (https://console:8443) to push results to.")
]
_TokenFile = Annotated[
    Path | None, typer.Option("--token-file", help="File holding the sensor's token (fws_...).")
]
_CaFile = Annotated[Path | None, typer.Option("--ca-file", help="CA certificate (PEM) of the console.")]
_Spool = Annotated[Path | None, typer.Option("--spool", help="Spool folder (default: in the data folder).")]
_RetryFor = Annotated[
    float, typer.Option("--retry-for", min=0.0, help="Seconds to keep retrying an unreachable console.")
]


def _stdout() -> Console:
    return Console(highlight=False)


def _fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"fieldward: error: {message}", markup=False)
    raise typer.Exit(code=2)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Map expected failures to one clear line and a non-zero exit."""
    try:
        yield
    except FieldWardError as exc:
        _fail(str(exc))
    except OSError as exc:
        target = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{target}{exc.strerror or exc}")
    except KeyboardInterrupt:
        _fail("interrupted")


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log weird events and progress.")] = False,
) -> None:
    """FieldWard: passive security monitoring for IoT and OT networks."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the FieldWard version."""
    typer.echo(__version__)


def _run_analysis(
    captures: list[Path],
    out: Path,
    quiet: bool,
    batch_packets: int,
    fingerprints: tuple[Path, ...] = (),
    learn: tuple[Path, ...] = (),
    learn_minutes: float = 0.0,
    baseline: Path | None = None,
    intel: tuple[Path, ...] = (),
    db: str | None = None,
    assess: bool = True,
) -> None:
    from fieldward.detect.knowledge import Knowledge
    from fieldward.detect.settings import DetectionSettings
    from fieldward.inventory import InventorySettings
    from fieldward.inventory.fingerprints import Fingerprints
    from fieldward.pipeline import AnalysisOptions, AnalysisResult, analyze

    console = _stdout()
    Fingerprints.load(fingerprints)  # a bad rule file fails now, not after the whole capture
    if baseline is not None:
        Knowledge.load(baseline)  # likewise a bad baseline file
    options = AnalysisOptions(
        batch_packets=batch_packets,
        inventory_settings=InventorySettings(fingerprint_files=fingerprints),
        detection=DetectionSettings(learn_minutes=learn_minutes, intel_files=intel),
        learn_captures=learn,
        baseline=baseline,
    )
    show_progress = console.is_terminal and not quiet
    result: AnalysisResult
    if show_progress:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(capture: str, done: int, total: int) -> None:
                if capture not in tasks:
                    tasks[capture] = int(bar.add_task(Path(capture).name, total=total))
                bar.update(tasks[capture], completed=done, total=total)  # type: ignore[arg-type]

            result = analyze(captures, out, options, progress)
    else:
        result = analyze(captures, out, options)
    if not quiet:
        _print_summary(console, result.summary(), out)
        if result.inventory is not None:
            records = [device.to_json() for device in result.inventory.devices]
            _print_devices(console, records, limit=INVENTORY_ROWS_SHOWN)
        if result.alerts:
            _print_alerts(console, [alert.to_json() for alert in result.alerts])
    if assess and result.inventory is not None:
        _run_assessment(out, db, quiet)


def _print_summary(console: Console, summary: dict[str, object], out: Path) -> None:
    overview = Table(title="FieldWard analysis", show_header=False, title_justify="left")
    overview.add_column("what", style="bold")
    overview.add_column("value", justify="right")
    for key, label in (
        ("packets", "packets"),
        ("wire_bytes", "bytes (on the wire)"),
        ("duration_s", "duration (s)"),
        ("flows", "flows"),
        ("hosts", "hosts (IP addresses)"),
        ("mac_addresses", "MAC addresses"),
        ("weird_total", "weird events"),
        ("elapsed_s", "analysis time (s)"),
    ):
        value = summary.get(key)
        overview.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(overview)

    by_bytes = summary.get("protocols_by_bytes")
    by_packets = summary.get("protocols_by_packets")
    if isinstance(by_bytes, dict) and isinstance(by_packets, dict) and by_bytes:
        protocols = Table(title="Protocols by bytes", title_justify="left")
        protocols.add_column("protocol")
        protocols.add_column("bytes", justify="right")
        protocols.add_column("packets", justify="right")
        for name, nbytes in by_bytes.items():
            protocols.add_row(str(name), f"{nbytes:,}", f"{by_packets.get(name, 0):,}")
        console.print(protocols)

    apps = summary.get("application_protocols_by_flows")
    if isinstance(apps, dict) and apps:
        dissected = Table(title="Application protocols (recognised by content)", title_justify="left")
        dissected.add_column("protocol")
        dissected.add_column("flows", justify="right")
        for name, count in apps.items():
            dissected.add_row(str(name), f"{count:,}")
        console.print(dissected)

    weird = summary.get("weird")
    if isinstance(weird, dict) and weird:
        weirds = Table(title="Weird events", title_justify="left")
        weirds.add_column("name")
        weirds.add_column("count", justify="right")
        for name, count in weird.items():
            weirds.add_row(str(name), f"{count:,}")
        console.print(weirds)
    console.print(
        f"Results written to [bold]{out}[/bold] "
        "(flows.parquet, events/, devices.json, communications.parquet, alerts.jsonl, summary.json)"
    )


INVENTORY_ROWS_SHOWN = 40
ALERT_ROWS_SHOWN = 30
_SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")


def _print_alerts(console: Console, alerts: list[dict[str, Any]]) -> None:
    """Alerts, most severe first (the rest are in alerts.jsonl)."""
    ranked = sorted(alerts, key=lambda a: (_SEVERITY_ORDER.index(a["severity"]), a["first_ts"]))
    table = Table(title=f"Alerts ({len(alerts):,})", title_justify="left")
    for column in ("severity", "alert", "source", "destination", "count", "first seen", "ATT&CK"):
        table.add_column(column, overflow="fold")
    for alert in ranked[:ALERT_ROWS_SHOWN]:
        table.add_row(
            alert["severity"],
            alert["title"],
            alert["src"],
            alert["dst"],
            f"{alert['count']:,}",
            alert["first_ts"][:19],
            ", ".join(alert["mitre"]),
        )
    console.print(table)
    if len(alerts) > ALERT_ROWS_SHOWN:
        console.print(f"... {len(alerts) - ALERT_ROWS_SHOWN:,} more in alerts.jsonl")


_BACKGROUND_PROTOCOLS = frozenset({"dns", "ntp", "dhcp", "arp", "ssdp", "mdns"})


def _role_rank(role: dict[str, Any]) -> tuple[bool, bool, str, str]:
    """Industrial and application roles before network background, servers before clients."""
    background = role["protocol"] in _BACKGROUND_PROTOCOLS
    client = role["role"] in ("client", "master")
    return (background, client, role["protocol"], role["role"])


def _print_devices(console: Console, devices: list[dict[str, Any]], limit: int | None = None) -> None:
    """The inventory as a table: one row per device, most important columns first."""
    shown = devices if limit is None else devices[:limit]
    noun = "device" if len(devices) == 1 else "devices"
    table = Table(title=f"Device inventory ({len(devices):,} {noun})", title_justify="left")
    for column in ("level", "type", "IP", "MAC", "vendor", "model", "firmware", "hostname", "roles"):
        table.add_column(column, overflow="fold")
    for device in shown:
        level = device.get("purdue_level")
        roles = [f"{r['protocol']} {r['role']}" for r in sorted(device.get("roles", ()), key=_role_rank)]
        table.add_row(
            "-" if level is None else str(level),
            str(device.get("device_type") or "unknown"),
            ", ".join(device.get("ips", [])[:2]) or "-",
            str(device.get("mac") or "-"),
            str(device.get("vendor") or "-"),
            str(device.get("model") or "-"),
            str(device.get("firmware") or "-"),
            str(device.get("hostname") or "-"),
            ", ".join(roles[:4]) or "-",
        )
    console.print(table)
    if limit is not None and len(devices) > limit:
        console.print(
            f"... {len(devices) - limit:,} more: fieldward devices DIR (with filters) shows them all"
        )


@app.command()
def analyze(
    captures: Annotated[
        list[Path], typer.Argument(help="pcap or pcapng files (optionally gzip-compressed).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("fieldward-out"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    batch_packets: Annotated[
        int, typer.Option(min=1, max=1_048_576, help="Packets per batch (memory vs. overhead).")
    ] = 65536,
    fingerprints: Annotated[
        list[Path] | None,
        typer.Option(
            "--fingerprints", help="Extra fingerprint rule file (YAML, docs/inventory.md); repeatable."
        ),
    ] = None,
    learn: Annotated[
        list[Path] | None,
        typer.Option("--learn", help="Capture of normal traffic to learn as the baseline first; repeatable."),
    ] = None,
    learn_minutes: Annotated[
        float,
        typer.Option(min=0.0, help="Learn the first N minutes of the analysed traffic as the baseline."),
    ] = 0.0,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="Baseline file (baseline.json of an earlier run) to start from."),
    ] = None,
    intel: Annotated[
        list[Path] | None,
        typer.Option("--intel", help="Threat-intelligence file (STIX 2.1 JSON or CSV); repeatable."),
    ] = None,
    db: _Db = None,
    assess: Annotated[
        bool, typer.Option(help="Assess vulnerabilities, configurations and risk after the analysis.")
    ] = True,
    to: _To = None,
    token_file: _TokenFile = None,
    ca_file: _CaFile = None,
    spool: _Spool = None,
) -> None:
    """Analyse capture files: flows, protocol events, inventory, alerts and risk, written to DIR."""
    with _clear_errors():
        _run_analysis(
            captures,
            out,
            quiet,
            batch_packets,
            tuple(fingerprints or ()),
            learn=tuple(learn or ()),
            learn_minutes=learn_minutes,
            baseline=baseline,
            intel=tuple(intel or ()),
            db=db,
            assess=assess,
        )
        if to is not None:
            if token_file is None:
                raise FieldWardError("--to needs --token-file (the sensor's token)")
            _push(out, to, token_file, ca_file, spool, 300.0, quiet)


@app.command()
def devices(
    folder: Annotated[Path, typer.Argument(help="An analysis output folder (with devices.json).")],
    device_type: Annotated[
        str | None, typer.Option("--type", help="Only this device type (plc, hmi, rtu, ...).")
    ] = None,
    vendor: Annotated[str | None, typer.Option(help="Only vendors containing this text.")] = None,
    level: Annotated[int | None, typer.Option(min=0, max=5, help="Only this Purdue level.")] = None,
    search: Annotated[
        str | None, typer.Option(help="Only devices whose IP, MAC, hostname or model contains this.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matching records as JSON.")] = False,
) -> None:
    """Show the device inventory of an analysis folder, with filters."""
    import json

    with _clear_errors():
        path = folder / "devices.json"
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            records: list[dict[str, Any]] = list(payload["devices"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FieldWardError(f"{path}: not a FieldWard devices.json ({exc})") from exc
        if device_type is not None:
            records = [r for r in records if str(r.get("device_type")) == device_type.lower()]
        if vendor is not None:
            records = [r for r in records if vendor.lower() in str(r.get("vendor") or "").lower()]
        if level is not None:
            records = [r for r in records if r.get("purdue_level") == level]
        if search is not None:
            needle = search.lower()
            records = [
                r
                for r in records
                if any(
                    needle in str(value).lower()
                    for value in (*r.get("ips", []), r.get("mac"), r.get("hostname"), r.get("model"))
                )
            ]
        if as_json:
            sys.stdout.write(json.dumps(records, indent=1) + "\n")
            return
        _print_devices(_stdout(), records)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="pcap file to write (.gz to compress).")],
    devices: Annotated[int, typer.Option(min=1, max=MAX_DEVICES, help="Field devices and hosts.")] = 40,
    minutes: Annotated[float, typer.Option(min=0.01, max=MAX_MINUTES, help="Capture duration.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same file.")] = 1,
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Also write the devices' ground truth (identity, type, Purdue level) as JSON; with attacks "
            "it holds their labels too (key 'attacks')."
        ),
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            help="Mix in an attack scenario: NAME or NAME@MINUTE (repeatable; see docs/generator.md).",
        ),
    ] = None,
    attacks: Annotated[
        str | None,
        typer.Option("--attacks", help="'all' scenarios, or a comma-separated list of NAME or NAME@MINUTE."),
    ] = None,
    attack_truth: Annotated[
        Path | None,
        typer.Option(help="Write the attacks' ground truth (time, devices, technique, alert types) as JSON."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Generate a realistic, deterministic plant-network capture (optionally with attack scenarios)."""
    from fieldward.generator import GeneratorConfig, generate_capture
    from fieldward.generator.attacks import ALL, write_attack_truth
    from fieldward.generator.truth import write_truth

    with _clear_errors():
        chosen = list(attack or [])
        if attacks is not None:
            listed = [a.strip() for a in attacks.split(",") if a.strip()]
            chosen += list(ALL) if listed == ["all"] else listed
        config = GeneratorConfig(devices=devices, minutes=minutes, seed=seed, attacks=tuple(chosen))
        stats = generate_capture(out, config)
        if truth is not None:
            write_truth(truth, config)
            if config.attacks and attack_truth is None:
                write_attack_truth(truth, config, merge=True)
        if attack_truth is not None:
            write_attack_truth(attack_truth, config)
        if not quiet:
            _stdout().print(f"wrote {out}: {stats.packets:,} packets, {stats.bytes:,} bytes")
            if config.attacks:
                _stdout().print(f"with {len(config.attacks)} attack scenario(s)")


@app.command()
def protocols() -> None:
    """List the installed protocol dissectors (built-in and plugins)."""
    from fieldward.protocols.registry import Registry

    with _clear_errors():
        registry = Registry.default()
        table = Table(title="Protocol dissectors", title_justify="left")
        for column in ("name", "transports", "ports / EtherTypes", "events", "origin"):
            table.add_column(column, no_wrap=column in ("name", "transports", "origin"))
        table.add_column("description", ratio=1)
        for entry in registry:
            d = entry.dissector
            selectors = _port_ranges(d.ports)
            selectors += [f"0x{t:04x}" for t in sorted(d.ethertypes)]
            selectors += [f"SNAP {oui:06x}/{pid:04x}" for oui, pid in sorted(d.snap)]
            table.add_row(
                d.name,
                ",".join(sorted(t.value for t in d.transports)),
                ", ".join(selectors),
                ", ".join(sorted({e.log for e in d.event_types})),
                entry.origin,
                d.description,
            )
        console = _stdout()
        console.print(table)
        for failure in registry.failures:
            console.print(f"[yellow]not loaded[/yellow] {failure.origin}: {failure.error}")


def _port_ranges(ports: frozenset[int]) -> list[str]:
    """Ports as short text: runs of consecutive ports collapse to ``first-last``."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return [str(a) if a == b else f"{a}-{b}" for a, b in runs]


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("fieldward-demo"),
) -> None:
    """Generate the bundled sample plant capture and analyse it (no input needed).

    The sample is a 16-device plant whose first two minutes are learned as its baseline; four attacks
    (an S7 PLC stop, a port scan, a telnet brute force, Modbus writes from a rogue laptop) follow.
    The devices are then assessed against a bundled sample of real NVD records (DIR/fieldward.db).
    """
    from fieldward.generator import GeneratorConfig, generate_capture

    with _clear_errors():
        out.mkdir(parents=True, exist_ok=True)
        sample = out / "sample-plant.pcap"
        config = GeneratorConfig(
            devices=DEMO_DEVICES, minutes=DEMO_MINUTES, seed=DEMO_SEED, attacks=DEMO_ATTACKS
        )
        stats = generate_capture(sample, config)
        _stdout().print(
            f"Sample capture {sample}: {stats.packets:,} packets from a generated plant network; "
            f"the first {DEMO_LEARN_MINUTES:g} minutes are learned, then {len(DEMO_ATTACKS)} attacks play"
        )
        db = f"sqlite:///{out.resolve() / 'fieldward.db'}"
        feeds = sorted((Path(__file__).parent / "data" / "feeds").glob("demo-*.json"))
        imported = _vulndb(db).import_documents(feeds, strict=True)
        _stdout().print(
            f"Vulnerability knowledge {out / 'fieldward.db'}: {imported.total.total:,} real NVD records "
            "bundled for the demo (import full feeds with `fieldward feeds import`)"
        )
        _run_analysis(
            [sample], out, quiet=False, batch_packets=65536, learn_minutes=DEMO_LEARN_MINUTES, db=db
        )


# ------------------------------------------------------------------ alerts: triage, evidence, export

alerts_app = typer.Typer(
    help="Triage the alerts of an analysis folder: list, show, ack, close, reopen, comment, learn, "
    "mute, evidence, export (fieldward alerts DIR COMMAND).",
    no_args_is_help=True,
)
app.add_typer(alerts_app, name="alerts")

_By = Annotated[str | None, typer.Option("--by", help="Who acts (default: the login name).")]
_AlertId = Annotated[str, typer.Argument(help="Alert id (or a unique prefix of at least 4 characters).")]
_StatusFilter = Annotated[
    list[str] | None,
    typer.Option("--status", help="Only this status (new, acknowledged, closed); repeatable."),
]
_SeverityFilter = Annotated[
    list[str] | None,
    typer.Option("--severity", help="Only this severity (info ... critical; 'high+' for high or worse)."),
]
_TypeFilter = Annotated[
    list[str] | None, typer.Option("--type", help="Only this alert type or engine (recon, recon.ping_sweep).")
]


def _alert_folder(ctx: typer.Context) -> Any:
    from fieldward.detect.triage import AlertFolder

    return AlertFolder(ctx.obj)


@alerts_app.callback()
def _alerts(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="An analysis output folder (with alerts.jsonl).")],
) -> None:
    """Triage the alerts of an analysis folder (state in DIR/triage.json, decisions in DIR/baseline.json)."""
    ctx.obj = folder


def _alert_rank(alert: dict[str, Any]) -> tuple[int, str]:
    """Most severe first, then oldest first (a record with an odd severity goes last)."""
    severity = alert.get("severity")
    rank = _SEVERITY_ORDER.index(severity) if severity in _SEVERITY_ORDER else len(_SEVERITY_ORDER)
    return rank, str(alert.get("first_ts"))


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    status: _StatusFilter = None,
    severity: _SeverityFilter = None,
    alert_type: _TypeFilter = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matching records as JSON.")] = False,
) -> None:
    """List the alerts with their triage status, most severe first."""
    from fieldward.detect.triage import dumps, filter_alerts

    with _clear_errors():
        records = filter_alerts(_alert_folder(ctx).alerts(), status or (), severity or (), alert_type or ())
        ranked = sorted(records, key=_alert_rank)
        if as_json:
            sys.stdout.write(dumps(ranked) + "\n")
            return
        table = Table(title=f"Alerts ({len(ranked):,})", title_justify="left")
        table.add_column("id", no_wrap=True)
        for column in ("severity", "status", "alert", "source", "destination", "count", "notes", "last seen"):
            table.add_column(column, overflow="fold")
        for a in ranked:
            table.add_row(
                a["id"],
                str(a.get("severity")),
                a["status"],
                str(a.get("title")),
                str(a.get("src")),
                str(a.get("dst")),
                str(a.get("count")),
                str(len(a["comments"])),
                str(a.get("last_ts"))[:19],
            )
        _stdout().print(table)


@alerts_app.command("show")
def alerts_show(
    ctx: typer.Context,
    alert_id: _AlertId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show one alert: why it fired, what to do, evidence, status history and comments."""
    from fieldward.detect.triage import dumps

    with _clear_errors():
        a = _alert_folder(ctx).get(alert_id)
        if as_json:
            sys.stdout.write(dumps(a) + "\n")
            return
        console = _stdout()
        table = Table(title=f"{a.get('title')} ({a['id']})", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key in ("type", "severity", "status", "src", "dst", "src_device", "dst_device", "protocol"):
            table.add_row(key, str(a.get(key) if a.get(key) is not None else "-"))
        table.add_row("count", str(a.get("count")))
        table.add_row("seen", f"{a.get('first_ts')} .. {a.get('last_ts')}")
        table.add_row("why", str(a.get("explanation")))
        table.add_row("what to do", str(a.get("recommendation")))
        table.add_row("ATT&CK", ", ".join(str(t) for t in a.get("mitre") or []) or "-")
        table.add_row("evidence", str(a.get("evidence_pcap") or "-"))
        table.add_row("details", str(a.get("details") or "-"))
        console.print(table)
        for entry in a["history"]:
            console.print(f"{entry.get('when')} {entry.get('who')}: {entry.get('action')}", markup=False)
        for comment in a["comments"]:
            console.print(f"{comment['when']} {comment['who']} wrote: {comment['text']}", markup=False)


def _status_command(ctx: typer.Context, alert_id: str, status: str, by: str | None) -> None:
    with _clear_errors():
        a = _alert_folder(ctx).set_status(alert_id, status, by)
        _stdout().print(f"alert {a['id']} is {a['status']}", markup=False)


@alerts_app.command("ack")
def alerts_ack(ctx: typer.Context, alert_id: _AlertId, by: _By = None) -> None:
    """Acknowledge a new alert (someone is on it)."""
    _status_command(ctx, alert_id, "acknowledged", by)


@alerts_app.command("close")
def alerts_close(ctx: typer.Context, alert_id: _AlertId, by: _By = None) -> None:
    """Close an alert (handled)."""
    _status_command(ctx, alert_id, "closed", by)


@alerts_app.command("reopen")
def alerts_reopen(ctx: typer.Context, alert_id: _AlertId, by: _By = None) -> None:
    """Set an acknowledged or closed alert back to new."""
    _status_command(ctx, alert_id, "new", by)


@alerts_app.command("comment")
def alerts_comment(
    ctx: typer.Context,
    alert_id: _AlertId,
    text: Annotated[str, typer.Argument(help="The comment.")],
    by: _By = None,
) -> None:
    """Add a comment to an alert."""
    with _clear_errors():
        comment = _alert_folder(ctx).comment(alert_id, text, by)
        _stdout().print(f"comment by {comment.who} added", markup=False)


@alerts_app.command("learn")
def alerts_learn(ctx: typer.Context, alert_id: _AlertId, by: _By = None) -> None:
    """Learn the alert's behaviour as normal (DIR/baseline.json) and close it."""
    with _clear_errors():
        rule = _alert_folder(ctx).learn(alert_id, by)
        _stdout().print(
            f"learned {rule.alert_type} {rule.src} -> {rule.dst}; analyse with --baseline "
            f"{ctx.obj / 'baseline.json'} to stop alerting on it",
            markup=False,
        )


@alerts_app.command("mute")
def alerts_mute(
    ctx: typer.Context,
    alert_id: _AlertId,
    by: _By = None,
    any_source: Annotated[bool, typer.Option("--any-source", help="Mute from every source.")] = False,
    any_destination: Annotated[
        bool, typer.Option("--any-destination", help="Mute towards every destination.")
    ] = False,
) -> None:
    """Mute the alert type for the alert's device pair (DIR/baseline.json) and close it."""
    with _clear_errors():
        rule = _alert_folder(ctx).mute(alert_id, by, any_source, any_destination)
        _stdout().print(
            f"muted {rule.alert_type} {rule.src} -> {rule.dst}; analyse with --baseline "
            f"{ctx.obj / 'baseline.json'} to apply it",
            markup=False,
        )


@alerts_app.command("evidence")
def alerts_evidence(
    ctx: typer.Context,
    alert_id: _AlertId,
    out: Annotated[Path, typer.Option("--out", "-o", help="pcap file to write.")],
    capture: Annotated[
        list[Path] | None,
        typer.Option("--capture", help="Capture to cut from (default: those in DIR/summary.json)."),
    ] = None,
    before: Annotated[float | None, typer.Option(min=0.0, help="Seconds before each trigger.")] = None,
    after: Annotated[float | None, typer.Option(min=0.0, help="Seconds after each trigger.")] = None,
    max_packets: Annotated[int | None, typer.Option(min=1, help="Packets at most.")] = None,
) -> None:
    """Write the packets that triggered an alert to a pcap file."""
    from fieldward.detect.evidence import EvidenceSettings, cut_evidence

    with _clear_errors():
        folder = _alert_folder(ctx)
        record = folder.resolve(alert_id)
        settings = None
        if before is not None or after is not None or max_packets is not None:
            default = EvidenceSettings()
            settings = EvidenceSettings(
                before_s=default.before_s if before is None else before,
                after_s=default.after_s if after is None else after,
                max_packets=default.max_packets if max_packets is None else max_packets,
            )
        count = cut_evidence(folder.folder, record, out, tuple(capture or ()), settings)
        _stdout().print(f"wrote {out}: {count:,} packets of alert {record['id']}", markup=False)


@alerts_app.command("export")
def alerts_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="cef, leef or json (JSON lines).")] = "json",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write.")] = None,
    syslog: Annotated[
        str | None,
        typer.Option(help="Syslog server: udp://host:514, tcp://host:601 or tls://host:6514."),
    ] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificates (PEM) that sign the TLS server.")] = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (PEM) for TLS.")] = None,
    key: Annotated[Path | None, typer.Option(help="Private key of the client certificate.")] = None,
    framing: Annotated[
        str, typer.Option(help="TCP framing: octet (RFC 6587 octet counting) or newline.")
    ] = "octet",
    status: _StatusFilter = None,
    severity: _SeverityFilter = None,
    alert_type: _TypeFilter = None,
) -> None:
    """Export the alerts as CEF, LEEF 2.0 or JSON lines to a file, stdout or syslog."""
    from fieldward.detect.export import ExportSettings, export_alerts
    from fieldward.detect.triage import filter_alerts

    with _clear_errors():
        if framing not in ("octet", "newline"):
            raise FieldWardError(f"unknown framing {framing!r} (octet or newline)")
        records = filter_alerts(_alert_folder(ctx).alerts(), status or (), severity or (), alert_type or ())
        target: Any = out
        if out is None and syslog is None:
            target = sys.stdout.buffer
        count = export_alerts(
            records,
            fmt,
            out=target,
            syslog=syslog,
            ca=ca,
            cert=cert,
            key=key,
            settings=ExportSettings(framing=framing),
        )
        if out is not None or syslog is not None:
            where = " and ".join(str(w) for w in (out, syslog) if w is not None)
            Console(stderr=True, highlight=False).print(f"exported {count:,} alerts to {where}", markup=False)


# ------------------------------------------------- assessment: feeds, vulnerabilities, risk, report

feeds_app = typer.Typer(
    help="Vulnerability knowledge from offline feed files: NVD CVE JSON 2.0, CISA KEV (JSON/CSV), CSAF 2.0.",
    no_args_is_help=True,
)
app.add_typer(feeds_app, name="feeds")


def _vulndb(url: str | None) -> Any:
    from fieldward.store.database import default_url
    from fieldward.store.vulndb import VulnerabilityDatabase

    return VulnerabilityDatabase(url or default_url())


def _existing_vulndb(url: str | None) -> Any | None:
    """The feed database to match against: the one named, else the default one if it exists."""
    from sqlalchemy.engine import make_url

    from fieldward.store.database import default_url

    chosen = url or default_url()
    parsed = make_url(chosen)
    if url is None and parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or not Path(database).expanduser().is_file():
            return None
    return _vulndb(chosen)


def _feed_files(folder: Path) -> Iterator[Path]:
    """The feed-looking files of a folder tree (JSON or CSV, optionally gzip); READMEs and the rest stay."""
    for path in folder.rglob("*"):
        name = path.name.lower().removesuffix(".gz")
        if path.is_file() and name.endswith((".json", ".csv")):
            yield path


@feeds_app.command("import")
def feeds_import(
    files: Annotated[
        list[Path], typer.Argument(help="Feed files (optionally .gz) or folders of them: NVD, KEV or CSAF.")
    ],
    db: _Db = None,
    force: Annotated[bool, typer.Option(help="Parse files again even when already imported.")] = False,
    strict: Annotated[bool, typer.Option(help="Stop at the first file that is not a feed.")] = False,
) -> None:
    """Import feed files (incremental and idempotent; the feeds' own dates are kept)."""
    with _clear_errors():
        database = _vulndb(db)
        expanded = [
            found for path in files for found in (sorted(_feed_files(path)) if path.is_dir() else [path])
        ]
        report = database.import_documents(expanded, strict=strict, force=force)
        table = Table(title=f"Feed import into {database.url.render_as_string(hide_password=True)}")
        for column in ("file", "source", "added", "updated", "unchanged", "skipped", "note"):
            table.add_column(column, overflow="fold")
        for item in report.files:
            counts = item.counts
            table.add_row(
                str(item.path),
                str(item.source or "-"),
                f"{counts.added:,}",
                f"{counts.updated:,}",
                f"{counts.unchanged:,}",
                f"{counts.skipped:,}",
                item.error or ("already imported" if item.identical else ""),
            )
        console = _stdout()
        console.print(table)
        total = report.total
        console.print(
            f"{total.added:,} added, {total.updated:,} updated, {total.unchanged:,} unchanged, "
            f"{total.skipped:,} skipped in {report.seconds:.1f} s",
            markup=False,
        )
        if report.errors:
            _fail(f"{len(report.errors)} file(s) could not be imported")


@feeds_app.command("status")
def feeds_status(db: _Db = None) -> None:
    """What the vulnerability knowledge holds: records per source and the feeds' dates."""
    with _clear_errors():
        status = _vulndb(db).status()
        table = Table(title="Vulnerability knowledge", title_justify="left")
        for column in ("source", "records", "newest record", "feed date", "feed version"):
            table.add_column(column)
        for source, info in status["sources"].items():
            table.add_row(
                source,
                f"{info['records']:,}",
                str(info["newest"] or "-"),
                str(info["feed_date"] or "-"),
                str(info["feed_version"] or "-"),
            )
        console = _stdout()
        console.print(table)
        console.print(f"last import {status['last_import'] or 'never'}; {status['marks']} analyst mark(s)")


def _run_assessment(folder: Path, db: str | None, quiet: bool, use_feeds: bool = True) -> Any:
    from fieldward.assessment import assess_folder, write_assessment

    database = _existing_vulndb(db) if use_feeds else None
    if database is None:
        assessment = assess_folder(folder)
    else:
        assessment = assess_folder(folder, database, database.marks(), feeds=database.status())
    write_assessment(folder, assessment)
    if not quiet:
        _print_assessment(_stdout(), assessment, folder)
    return assessment


_PRIORITY_STYLE = {"now": "bold red", "next": "yellow", "later": "green"}


def _print_assessment(console: Console, assessment: Any, folder: Path) -> None:
    from fieldward.assess.risk import device_label

    labels = {d["id"]: device_label(d) for d in assessment.devices}
    site = assessment.site
    console.print(
        f"[bold]Site risk {site.score}/100[/bold]: "
        + ", ".join(f"{n} {p}" for p, n in site.by_priority.items())
        + f" of {site.devices} devices"
    )
    if assessment.feeds is None:
        console.print(
            "no vulnerability feeds: import NVD/KEV/CSAF files with `fieldward feeds import` "
            "to match CVEs (configurations, alerts and criticality were assessed)"
        )
    risky = [r for r in assessment.risks if r.score > 0][:10]
    if risky:
        table = Table(title="Riskiest devices", title_justify="left")
        for column in ("score", "priority", "device", "top reasons"):
            table.add_column(column, overflow="fold")
        for risk in risky:
            reasons = "; ".join(c.detail for c in risk.contributors[:2])
            table.add_row(
                str(risk.score),
                f"[{_PRIORITY_STYLE[risk.priority.value]}]{risk.priority.value}[/]",
                labels.get(risk.device_id, risk.device_id),
                reasons,
            )
        console.print(table)
    findings = assessment.open_findings
    if findings:
        table = Table(title=f"Vulnerabilities ({len(findings)})", title_justify="left")
        for column in ("device", "CVE", "severity", "CVSS", "KEV", "why"):
            table.add_column(column, overflow="fold")
        for finding in sorted(findings, key=_finding_rank)[:15]:
            table.add_row(
                labels.get(finding.device_id, finding.device_id),
                finding.vulnerability_id,
                finding.severity.value,
                f"{finding.cvss.base_score:.1f}" if finding.cvss else "-",
                "yes" if finding.kev else "",
                finding.reason,
            )
        console.print(table)
    configs = assessment.config_findings
    if configs:
        table = Table(title=f"Insecure configurations ({len(configs)})", title_justify="left")
        for column in ("device", "severity", "finding", "port", "peers"):
            table.add_column(column, overflow="fold")
        for config in configs[:15]:
            table.add_row(
                labels.get(config.device_id, config.device_id),
                config.severity.value,
                config.title,
                str(config.port or "-"),
                ", ".join(config.peers[:3]),
            )
        console.print(table)
    if assessment.plan:
        table = Table(title="Remediation plan (first 10)", title_justify="left")
        for column in ("priority", "device", "action", "why"):
            table.add_column(column, overflow="fold")
        for item in assessment.plan[:10]:
            table.add_row(
                f"[{_PRIORITY_STYLE[item.priority.value]}]{item.priority.value}[/]",
                labels.get(item.device_id, item.device_id),
                item.action,
                item.reason,
            )
        console.print(table)
    console.print(
        f"Assessment written to [bold]{folder}[/bold] "
        "(vulnerabilities.json, configurations.json, risk.json); "
        f"`fieldward report {folder} --format pdf` writes the report"
    )


_SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "none": 4}


def _finding_rank(finding: Any) -> tuple[bool, int, float, str]:
    score = finding.cvss.base_score if finding.cvss else 0.0
    return (not finding.kev, _SEVERITY_RANK.get(finding.severity.value, 5), -score, finding.vulnerability_id)


@app.command()
def assess(
    folder: Annotated[Path, typer.Argument(help="An analysis output folder (fieldward analyze --out).")],
    db: _Db = None,
    no_feeds: Annotated[bool, typer.Option("--no-feeds", help="Do not match vulnerabilities.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Assess an analysis folder: vulnerabilities, insecure configurations, risk scores and a fix plan."""
    with _clear_errors():
        _run_assessment(folder, db, quiet, use_feeds=not no_feeds)


vulns_app = typer.Typer(
    help="The vulnerability findings of an analysis folder: list, show, not-applicable, applicable.",
    no_args_is_help=True,
)
app.add_typer(vulns_app, name="vulns")


@vulns_app.callback()
def _vulns(ctx: typer.Context, folder: Annotated[Path, typer.Argument(help="An analysis folder.")]) -> None:
    ctx.obj = folder


def _load_assessment(folder: Path) -> Any:
    from fieldward.assessment import load_assessment

    return load_assessment(folder)


@vulns_app.command("list")
def vulns_list(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option(help="Only this device (id, IP or host name).")] = None,
    kev: Annotated[bool, typer.Option("--kev", help="Only known exploited (CISA KEV).")] = False,
    include_not_applicable: Annotated[
        bool, typer.Option("--all", help="Include findings marked not applicable.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List vulnerability findings, known-exploited and most severe first."""
    import json

    from fieldward.assess.importance import resolve_device
    from fieldward.assess.risk import device_label

    with _clear_errors():
        assessment = _load_assessment(ctx.obj)
        findings = assessment.findings if include_not_applicable else assessment.open_findings
        if device is not None:
            wanted = resolve_device(ctx.obj, device)
            findings = [f for f in findings if f.device_id == wanted]
        if kev:
            findings = [f for f in findings if f.kev]
        findings = sorted(findings, key=_finding_rank)
        if as_json:
            sys.stdout.write(json.dumps([f.to_json() for f in findings], indent=1) + "\n")
            return
        labels = {d["id"]: device_label(d) for d in assessment.devices}
        table = Table(title=f"Vulnerability findings ({len(findings)})", title_justify="left")
        for column in ("device", "CVE", "severity", "CVSS", "KEV", "confidence", "sources", "why"):
            table.add_column(column, overflow="fold")
        for f in findings:
            table.add_row(
                labels.get(f.device_id, f.device_id),
                f.vulnerability_id + (" (n/a)" if f.not_applicable else ""),
                f.severity.value,
                f"{f.cvss.base_score:.1f}" if f.cvss else "-",
                "yes" if f.kev else "",
                f"{f.confidence:.2f}",
                ", ".join(f.sources),
                f.reason,
            )
        _stdout().print(table)


def _finding(folder: Path, device: str, vulnerability: str) -> Any:
    from fieldward.assess.importance import resolve_device

    wanted = resolve_device(folder, device)
    for finding in _load_assessment(folder).findings:
        if finding.device_id == wanted and finding.vulnerability_id.lower() == vulnerability.lower():
            return finding
    raise FieldWardError(f"no finding {vulnerability} on {device} in {folder / 'vulnerabilities.json'}")


@vulns_app.command("show")
def vulns_show(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(help="Device id, IP address or host name.")],
    vulnerability: Annotated[str, typer.Argument(help="CVE id.")],
) -> None:
    """Show one finding: why it matched, its score, KEV status and the fix."""
    with _clear_errors():
        f = _finding(ctx.obj, device, vulnerability)
        table = Table(title=f"{f.vulnerability_id} on {f.device_id}", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("severity", f.severity.value)
        table.add_row("CVSS", f"{f.cvss.base_score} {f.cvss.vector} (v{f.cvss.version})" if f.cvss else "-")
        table.add_row("known exploited", f"yes, CISA due {f.kev_due_date}" if f.kev else "no")
        table.add_row("ransomware", "known" if f.known_ransomware else "-")
        table.add_row("why it matched", f.reason)
        table.add_row("device CPE", f.cpe)
        table.add_row("feed criterion", f.criteria)
        table.add_row("confidence", f"{f.confidence:.2f}")
        table.add_row("sources", ", ".join(f.sources))
        table.add_row("description", f.description or "-")
        table.add_row("fix", f.remediation or "-")
        if f.not_applicable:
            table.add_row("marked", f"not applicable: {f.not_applicable_reason}")
        _stdout().print(table)


@vulns_app.command("not-applicable")
def vulns_not_applicable(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(help="Device id, IP address or host name.")],
    vulnerability: Annotated[str, typer.Argument(help="CVE id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it does not apply (kept with the mark).")],
    by: _By = None,
    db: _Db = None,
) -> None:
    """Mark a finding not applicable: the mark is kept in the database across feed re-imports."""
    import getpass

    with _clear_errors():
        finding = _finding(ctx.obj, device, vulnerability)
        _vulndb(db).mark_not_applicable(
            finding.device_id, finding.vulnerability_id, reason, by or getpass.getuser()
        )
        _run_assessment(ctx.obj, db, quiet=True)
        _stdout().print(
            f"{finding.vulnerability_id} on {finding.device_id} marked not applicable", markup=False
        )


@vulns_app.command("applicable")
def vulns_applicable(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(help="Device id, IP address or host name.")],
    vulnerability: Annotated[str, typer.Argument(help="CVE id.")],
    db: _Db = None,
) -> None:
    """Remove a not-applicable mark."""
    with _clear_errors():
        finding = _finding(ctx.obj, device, vulnerability)
        if not _vulndb(db).clear_mark(finding.device_id, finding.vulnerability_id):
            raise FieldWardError(f"{finding.vulnerability_id} on {finding.device_id} was not marked")
        _run_assessment(ctx.obj, db, quiet=True)
        _stdout().print(f"{finding.vulnerability_id} on {finding.device_id} applies again", markup=False)


assets_app = typer.Typer(
    help="Analyst-set importance of devices (critical, high, normal, low), used by the risk score.",
    no_args_is_help=True,
)
app.add_typer(assets_app, name="assets")


@assets_app.callback()
def _assets(ctx: typer.Context, folder: Annotated[Path, typer.Argument(help="An analysis folder.")]) -> None:
    ctx.obj = folder


@assets_app.command("list")
def assets_list(ctx: typer.Context) -> None:
    """Devices with an importance other than normal."""
    from fieldward.assess.importance import load_importance

    with _clear_errors():
        table = Table(title="Device importance", title_justify="left")
        table.add_column("device")
        table.add_column("importance")
        for device_id, level in sorted(load_importance(ctx.obj).items()):
            table.add_row(device_id, level.value)
        _stdout().print(table)


@assets_app.command("set")
def assets_set(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(help="Device id, IP address or host name.")],
    level: Annotated[str, typer.Argument(help="critical, high, normal or low.")],
    db: _Db = None,
) -> None:
    """Set a device's importance and assess the folder again."""
    from fieldward.assess.importance import set_importance

    with _clear_errors():
        device_id, _ = set_importance(ctx.obj, device, level)
        _run_assessment(ctx.obj, db, quiet=True)
        _stdout().print(f"{device_id} is of {level.lower()} importance", markup=False)


@assets_app.command("clear")
def assets_clear(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(help="Device id, IP address or host name.")],
    db: _Db = None,
) -> None:
    """Set a device back to normal importance."""
    from fieldward.assess.importance import clear_importance

    with _clear_errors():
        device_id = clear_importance(ctx.obj, device)
        _run_assessment(ctx.obj, db, quiet=True)
        _stdout().print(f"{device_id} is of normal importance", markup=False)


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="An assessed analysis folder.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="html or pdf.")] = "html",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File (default DIR/report.FORMAT).")] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "OT/IoT risk assessment",
) -> None:
    """Write the risk assessment report (inventory, risks, vulnerabilities, configurations, alerts, fixes)."""
    from fieldward.assess.report import ReportError, render_report
    from fieldward.assessment import AssessmentError

    with _clear_errors():
        if fmt not in ("html", "pdf"):
            raise ReportError(f"unknown report format {fmt!r} (html or pdf)")
        try:
            assessment = _load_assessment(folder)
        except AssessmentError:
            assessment = _run_assessment(folder, None, quiet=True)
        dest = out or folder / f"report.{fmt}"
        render_report(
            folder,
            "pdf" if fmt == "pdf" else "html",
            dest,
            findings=assessment.findings,
            config_findings=assessment.config_findings,
            risks=assessment.risks,
            site=assessment.site,
            plan=assessment.plan,
            devices=assessment.devices,
            alerts=assessment.alerts,
            title=title,
        )
        _stdout().print(f"wrote {dest}", markup=False)


# ------------------------------------------------------------------------- console and sensors


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8443,
    db: _Db = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (evidence captures, the default SQLite database).")
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) to serve HTTPS.")] = None,
    key: Annotated[Path | None, typer.Option(help="Private key of the TLS certificate.")] = None,
    insecure_cookies: Annotated[
        bool, typer.Option(help="Send the session cookie without Secure (plain-HTTP development only).")
    ] = False,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the API only.")] = False,
    trust: Annotated[
        bool | None,
        typer.Option("--trust/--no-trust", help="Mount the zero-trust device plane (else $FIELDWARD_TRUST)."),
    ] = None,
    trust_config: Annotated[
        Path | None,
        typer.Option(help="Device plane settings (YAML, docs/trust/console.md); implies --trust."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes (about one per core).")] = 1,
) -> None:
    """Run the console (REST API and web UI); the first start creates an admin, printing its password once."""
    from fieldward.console.serve import serve as run_console
    from fieldward.console.settings import ConsoleSettings

    with _clear_errors():
        if (cert is None) != (key is None):
            raise FieldWardError("--cert and --key go together")
        overrides: dict[str, Any] = {"secure_cookies": not insecure_cookies, "ui": not no_ui}
        if db is not None:
            overrides["database_url"] = db
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if trust is not None or trust_config is not None:  # docs/trust/console.md
            from fieldward.console.trust_hooks import serve_overrides

            overrides.update(serve_overrides(trust, trust_config))
        settings = ConsoleSettings.from_env(**overrides)
        run_console(
            settings,
            host,
            port,
            ssl_certfile=str(cert) if cert is not None else None,
            ssl_keyfile=str(key) if key is not None else None,
            workers=workers,
        )


def _default_spool(url: str) -> Path:
    from urllib.parse import urlsplit

    from fieldward.store.database import data_dir

    host = urlsplit(url).hostname or "console"
    return data_dir() / "spool" / "".join(c if c.isalnum() or c in ".-" else "_" for c in host)


def _push(
    folder: Path | None,
    to: str,
    token_file: Path,
    ca_file: Path | None,
    spool: Path | None,
    retry_for: float,
    quiet: bool,
) -> None:
    """Push an analysis folder (or only the spool) to a console; exit 3 while batches stay pending,
    4 when batches were rejected or corrupt."""
    from fieldward.console.sensor_client import SensorClient, load_token

    if to.split("://", 1)[0].lower() in ("nats", "tls"):  # JetStream (docs/console/jetstream.md)
        from fieldward.console.jetstream import push_cli

        push_cli(folder, to, token_file, ca_file, spool or _default_spool(to), retry_for, quiet)
        return
    with SensorClient(to, load_token(token_file), spool or _default_spool(to), ca_file=ca_file) as client:
        report = (
            client.push_folder(folder, retry_for=retry_for)
            if folder is not None
            else client.drain(retry_for=retry_for)
        )
    if not quiet:
        _stdout().print(
            f"pushed to {to}: {report.applied} batch(es) applied, {report.duplicates} already there, "
            f"{sum(report.written.values()):,} records written, {report.pending} pending in the spool, "
            f"{len(report.rejected)} rejected",
            markup=False,
        )
    if report.rejected or report.corrupt:
        raise typer.Exit(code=4)
    if report.pending:
        raise typer.Exit(code=3)


@app.command()
def push(
    folder: Annotated[
        Path | None, typer.Argument(help="Analysis folder to push (none: only send what is spooled).")
    ] = None,
    to: _To = None,
    token_file: _TokenFile = None,
    ca_file: _CaFile = None,
    spool: _Spool = None,
    retry_for: _RetryFor = 300.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Send an analysis folder's results to a console as a sensor (spooled to disk until acknowledged)."""
    with _clear_errors():
        if to is None or token_file is None:
            raise FieldWardError("--to URL and --token-file FILE are required")
        _push(folder, to, token_file, ca_file, spool, retry_for, quiet)


# ------------------------------------------------------------------- zero trust: policy decisions

policy_app = typer.Typer(
    help="Least-privilege access policies of the zero-trust device plane.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")


@policy_app.command("test")
def policy_test_command(
    policy: Annotated[Path, typer.Argument(help="Policy file (YAML, docs/trust/policy.md).")],
    device: Annotated[
        str, typer.Argument(help="The device: a JSON file or inline JSON (DeviceContext fields).")
    ],
    action: Annotated[str, typer.Argument(help="publish, subscribe or connect.")],
    resource: Annotated[str, typer.Argument(help="MQTT topic (filter) or destination.")],
) -> None:
    """Explain the decision the policy takes for a device, an action and a resource (exit 1 when denied)."""
    from fieldward.trust.policy import policy_test

    with _clear_errors():
        explanation = policy_test(policy, device, action, resource)
        _stdout().print(explanation, markup=False)
        if not explanation.splitlines()[0].strip().lower().endswith("allow"):
            raise typer.Exit(code=1)


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def agent(ctx: typer.Context) -> None:
    """Device agent: enroll, renew, attest, update, report, status (fieldward agent --help)."""
    from fieldward.trust.agent import agent_main

    raise typer.Exit(code=agent_main(ctx.args))


@app.command("ingest-worker", context_settings=_PASS_THROUGH, add_help_option=False)
def ingest_worker(ctx: typer.Context) -> None:
    """Console ingest worker for the JetStream transport (fieldward ingest-worker --help)."""
    from fieldward.console.jetstream_worker import worker_main

    raise typer.Exit(code=worker_main(ctx.args))


fleet_app = typer.Typer(help="Simulated device fleets for the zero-trust plane.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")
app.add_typer(sensor_app, name="sensor")


@fleet_app.command("simulate", context_settings=_PASS_THROUGH, add_help_option=False)
def fleet_simulate(ctx: typer.Context) -> None:
    """Run N simulated devices, some misbehaving, against a trust service (see --help)."""
    from fieldward.trust.fleet import fleet_main

    raise typer.Exit(code=fleet_main(ctx.args))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
