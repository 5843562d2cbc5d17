"""Console benchmark: the worker CPU of one list request, in-process, old code against new.

    python benchmarks/bench_console_cpu.py [--old-src DIR] [--requests N] [--rounds N]
                                           [--devices N] [--alerts N] [--url URL]

Creates a small scratch PostgreSQL database (``fieldward_console_cpu_<pid>``, filled by
``bench_console.fill``; dropped at the end), then runs child processes that create the console app
in-process (``httpx.ASGITransport`` on the child's event loop, lifespan entered) and measure
``time.process_time`` around ``N`` requests
of each kind, after a warm-up:

- ``devices miss`` / ``alerts miss``: every request another page (``bench_console.busting`` of the
  UI's request mix) with the response cache off (``list_cache_seconds=0``): what a page nobody asked
  for before costs;
- ``devices hit`` / ``alerts hit``: the UI's mix repeated with the cache on;
- ``auth/me``: the credential check alone.

With ``--old-src DIR`` (e.g. ``git worktree add /tmp/wt-old HEAD`` then ``/tmp/wt-old/src``) the
children alternate between the old code (``PYTHONPATH=DIR``) and the current one, ``--rounds``
times each, interleaved, and the ratio new/old of the median is printed. The process CPU includes
the in-process client's own (the same in both), not PostgreSQL's. Pinned with ``taskset -c 1`` when
available. ``--inline`` runs the app's thread hops inline (``run_read``, FastAPI's thread pool):
the request's Python work without the hand-offs between threads, steadier on a busy machine.
A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("devices miss", "alerts miss", "devices hit", "alerts hit", "auth/me")


def _inline_threads() -> None:
    """Run the app's thread hops (``run_read``, FastAPI's thread pool) inline on the event loop: the
    request's own Python work without the thread hand-offs, whose CPU varies with the machine's load."""
    import anyio.to_thread
    import starlette.concurrency

    import fieldward.console.api.deps as deps

    async def run_sync(func: Any, *args: Any, **_options: Any) -> Any:
        return func(*args)

    async def run_in_threadpool(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]
    starlette.concurrency.run_in_threadpool = run_in_threadpool
    deps.run_in_threadpool = run_in_threadpool  # type: ignore[attr-defined]


def child(url: str, requests: int, first_device: int, devices: int, token: str, inline: bool) -> None:
    """Measure in this process; print one JSON line: kind -> ms of CPU per request."""
    sys.path.insert(0, str(Path(__file__).parent))
    import asyncio

    if inline:
        _inline_threads()

    import httpx

    from bench_console import busting, pages
    from fieldward.console.app import create_app
    from fieldward.console.settings import ConsoleSettings

    mix = pages(first_device, devices)
    headers = {"Authorization": f"Bearer {token}"}
    home = Path(tempfile.mkdtemp(prefix="fieldward-console-cpu-"))
    results: dict[str, float] = {}

    async def measure(client: httpx.AsyncClient, name: str, warm: list[str], measured: list[str]) -> None:
        for path in warm:
            (await client.get(path, headers=headers)).raise_for_status()
        started = time.process_time()
        for path in measured:
            (await client.get(path, headers=headers)).raise_for_status()
        results[name] = (time.process_time() - started) * 1000 / len(measured)

    async def run() -> None:
        for cache_seconds, suffix in ((0.0, "miss"), (60.0, "hit")):
            settings = ConsoleSettings(
                database_url=url,
                data_dir=home,
                secure_cookies=False,
                ui=False,
                list_cache_seconds=cache_seconds,
            )
            app = create_app(settings)
            # The ASGI app on this event loop (no test-client thread between), lifespan entered;
            # the routes' own thread hops (run_read) are real.
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
            ):
                for page, name in (("inventory", "devices"), ("alerts", "alerts")):
                    if suffix == "miss":  # distinct pages; the warm-up on other offsets
                        paths = busting(mix[page], requests + 40)
                        warm, measured = paths[requests:], paths[:requests]
                    else:
                        warm = mix[page] * 3
                        measured = (mix[page] * (requests // len(mix[page]) + 1))[:requests]
                    await measure(client, f"{name} {suffix}", warm, measured)
                if suffix == "hit":
                    me = ["/api/v1/auth/me"] * requests
                    await measure(client, "auth/me", me[:20], me)

    try:
        asyncio.run(run())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(results))


def run_child(src: str | None, args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, float]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    command = [
        sys.executable, __file__, "--child", "--url", setup["url"], "--requests", str(args.requests),
        "--first-device", str(setup["first_device"]), "--devices", str(setup["devices"]),
        "--token", setup["token"], *(["--profile"] if args.profile else []),
        *(["--inline"] if args.inline else []),
    ]  # fmt: skip
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    if args.profile:
        print(done.stderr)
    out = done.stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--devices", type=int, default=5_000)
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old-src", help="the old code's src folder (a git worktree)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-device", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--inline", action="store_true", help="run the app's thread hops inline (steadier figures)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one child (new code) to stderr")
    args = parser.parse_args()
    if args.child:
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(
                child, args.url, args.requests, args.first_device, args.devices, args.token, args.inline
            )
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(45)
            return
        child(args.url, args.requests, args.first_device, args.devices, args.token, args.inline)
        return

    import psycopg
    from sqlalchemy.engine import make_url

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_console import _users, fill
    from fieldward.store.database import Database

    base = make_url(args.url)
    name = f"fieldward_console_cpu_{os.getpid()}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        db = Database(url)
        db.upgrade()
        token, _sensors, plant = _users(db)
        fill(url, plant, args.devices, args.alerts)
        with db.session() as session:
            from sqlalchemy import func, select

            from fieldward.store.models import Device

            first = int(session.scalar(select(func.min(Device.id))) or 1)
        db.engine.dispose()
        setup = {"url": url, "first_device": first, "devices": args.devices, "token": token}
        print(f"{args.devices:,} devices, {args.alerts:,} alerts; {args.requests} requests per kind")
        print(f"load before {os.getloadavg()}")
        runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for round_ in range(args.rounds):
            pair = [("old", args.old_src), ("new", None)]
            for label, src in pair if round_ % 2 == 0 else pair[::-1]:  # which runs first alternates
                if label == "old" and not args.old_src:
                    continue
                runs[label].append(run_child(src, args, setup))
                print(f"  {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[label][-1].items()))
        print(f"load after {os.getloadavg()}")
        print(f"{'ms CPU per request (median)':<28} {'old':>7} {'new':>7} {'new/old':>8}")
        for kind in KINDS:
            new = statistics.median(r[kind] for r in runs["new"])
            if runs["old"]:
                old = statistics.median(r[kind] for r in runs["old"])
                print(f"{kind:<28} {old:7.2f} {new:7.2f} {new / old:8.2f}")
            else:
                print(f"{kind:<28} {'':>7} {new:7.2f}")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
