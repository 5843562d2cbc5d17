"""Capture uploads through the real app: a generated plant capture is uploaded by an analyst, analysed
in the background, and its devices, alerts, flows and events land in the console; a file that is not
a capture fails with a clear error; sizes, names and roles are enforced. The jobs are rows of the
console's database: a second app on the same database (another worker process of ``fieldward serve
--workers N``) answers for them, and they outlive a restart. Both backends."""

from __future__ import annotations

import gzip
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from fieldward.cli import app as cli
from fieldward.console.app import create_app
from fieldward.console.jobs import STOPPED, UploadJob, UploadJobs, shared_store
from fieldward.console.security import hash_password
from fieldward.store.console_models import UploadJobRow
from fieldward.store.database import Database
from fieldward.store.models import Device, Sensor, User

from .conftest import BASE_URL, Console, start_console


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fieldward generate --devices 8 --minutes 0.5``: a real pcap of a small plant."""
    path = tmp_path_factory.mktemp("upload") / "plant.pcap"
    result = CliRunner().invoke(
        cli, ["generate", "--devices", "8", "--minutes", "0.5", "--seed", "11", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    return path


def _upload(console: Console, name: str, data: bytes, role: str = "analyst", **form: str) -> Any:
    return console.client.post(
        "/api/v1/uploads",
        files={"file": (name, data, "application/octet-stream")},
        data=form,
        headers=console.bearer(console.tokens[role]),
    )


def _wait(
    console: Console,
    upload_id: str,
    seconds: float = 120,
    client: TestClient | None = None,
    seen: list[str] | None = None,
) -> dict[str, Any]:
    """Poll the job through ``client`` (default: the console's) until it is done or failed; the
    states read are appended to ``seen``."""
    deadline = time.monotonic() + seconds
    while True:
        response = (client or console.client).get(
            f"/api/v1/uploads/{upload_id}", headers=console.bearer(console.tokens["analyst"])
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if seen is not None:
            seen.append(body["status"])
        if body["status"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, f"upload still {body['status']}"
        time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend (the apps started on it migrate it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'console.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_factory")
    return factory()


def _devices(console: Console, sensor: str) -> int:
    with console.database.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Device)
                .join(Sensor, Sensor.id == Device.sensor_id)
                .where(Sensor.name == sensor)
            )
            or 0
        )


def test_an_uploaded_capture_is_analysed_and_stored(any_console: Console, capture: Path) -> None:
    console = any_console
    answer = _upload(console, "plant.pcap.gz", gzip.compress(capture.read_bytes()), sensor="site-upload")
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] in ("queued", "running")
    assert job["sensor"] == "site-upload"
    assert job["filename"] == "plant.pcap.gz"
    done = _wait(console, job["id"])
    assert done["status"] == "done", done["error"]
    assert done["error"] is None
    devices = _devices(console, "site-upload")
    assert done["counts"]["devices"] == devices >= 8
    assert done["counts"]["packets"] > 1000
    assert done["counts"]["flows"] > 0
    store = shared_store(console.app)
    flows = store.flows(sensors=["site-upload"], limit=100_000)
    assert flows.num_rows == done["counts"]["flows"]
    assert "modbus" in store.event_logs()
    listed = console.client.get(
        "/api/v1/devices", params={"limit": 500}, headers=console.bearer(console.tokens["viewer"])
    )
    assert listed.status_code == 200
    assert listed.json()["total"] >= devices
    # the capture and its analysis are not kept on the server once stored
    assert list((console.app.state.settings.home() / "uploads").iterdir()) == []


def test_the_default_sensor_name_is_upload(any_console: Console, capture: Path) -> None:
    console = any_console
    answer = _upload(console, "plant.pcap", capture.read_bytes())
    assert answer.status_code == 202, answer.text
    done = _wait(console, answer.json()["id"])
    assert done["status"] == "done", done["error"]
    assert done["sensor"] == "upload"
    assert _devices(console, "upload") == done["counts"]["devices"] > 0


def test_a_file_that_is_not_a_capture_fails_with_a_clear_error(any_console: Console) -> None:
    console = any_console
    answer = _upload(console, "notes.pcap", b"these are meeting notes, not packets\n" * 20)
    assert answer.status_code == 202, answer.text
    failed = _wait(console, answer.json()["id"])
    assert failed["status"] == "failed"
    assert "not a pcap or pcapng capture" in failed["error"]
    assert "notes.pcap" in failed["error"]
    assert str(console.app.state.settings.home()) not in failed["error"], "no server path in errors"
    assert failed["counts"] == {}


def test_refusals(any_console: Console, capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = any_console
    data = capture.read_bytes()
    empty = _upload(console, "empty.pcap", b"")
    assert empty.status_code == 202, empty.text
    failed = _wait(console, empty.json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == "empty.pcap: not a pcap or pcapng capture (magic empty file)"
    viewer = _upload(console, "plant.pcap", data, role="viewer")
    assert viewer.status_code == 403
    live_sensor = _upload(console, "plant.pcap", data, sensor="sensor-1")  # has a push credential
    assert live_sensor.status_code == 409
    bad_name = _upload(console, "plant.pcap", data, sensor=" spaced ")
    assert bad_name.status_code == 422
    monkeypatch.setenv("FIELDWARD_MAX_UPLOAD_BYTES", "100000")
    too_big = _upload(console, "plant.pcap", data)
    assert too_big.status_code == 413
    assert "100000" in too_big.json()["detail"]
    unknown = console.client.get(
        "/api/v1/uploads/0123456789abcdef", headers=console.bearer(console.tokens["analyst"])
    )
    assert unknown.status_code == 404
    anonymous = console.new_client().get("/api/v1/uploads/0123456789abcdef")
    assert anonymous.status_code == 401


# --- the jobs live in the database: several worker processes, restarts -----------------------------


def test_a_second_app_on_the_same_database_answers_for_the_job(any_console: Console, capture: Path) -> None:
    """Two ``create_app`` on one database, as two worker processes of ``fieldward serve --workers 2``:
    a capture uploaded through the first is followed to its end through the second."""
    console = any_console
    other = create_app(console.app.state.settings)
    with TestClient(other, base_url=BASE_URL) as client:
        answer = _upload(console, "plant.pcap", capture.read_bytes(), sensor="two-workers")
        assert answer.status_code == 202, answer.text
        job = answer.json()
        seen: list[str] = []
        done = _wait(console, job["id"], client=client, seen=seen)
        assert done["status"] == "done", done["error"]
        assert seen[0] in ("queued", "running")
        assert {k: done[k] for k in ("id", "filename", "sensor", "size")} == {
            k: job[k] for k in ("id", "filename", "sensor", "size")
        }
        assert done["counts"]["devices"] == _devices(console, "two-workers") > 0
        assert done["created"] == job["created"]
        assert done["started"] is not None
        assert done["finished"] >= done["started"]
        # the first app answers the same, and the second one did not run the analysis
        assert _wait(console, job["id"]) == done
        assert other.state.upload_jobs._pending == set()
        headers = console.bearer(console.tokens["analyst"])
        unknown = client.get("/api/v1/uploads/" + "0" * 32, headers=headers)
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == "no such upload"
        for odd in ("%00" * 32, job["id"].upper(), job["id"] + "0"):  # no query for what is no id
            assert client.get(f"/api/v1/uploads/{odd}", headers=headers).status_code == 404


def test_finished_jobs_outlive_a_restart_and_stopped_ones_fail(
    database_url: str, tmp_path: Path, capture: Path
) -> None:
    """A new app on the same database (a restart) still answers for a finished job; a job still
    queued or running when its app stopped is ``failed`` with the reason."""
    first = cast(Generator[Console, None, None], start_console(database_url, tmp_path))
    console = next(first)
    failed = _wait(console, _upload(console, "notes.pcap", b"not packets\n" * 10).json()["id"])
    assert failed["status"] == "failed"
    cut = _upload(console, "plant.pcap", capture.read_bytes()).json()
    assert cut["status"] in ("queued", "running")
    token = console.tokens["analyst"]
    first.close()  # the lifespan ends: the running analysis is killed
    restarted = create_app(console.app.state.settings)
    with TestClient(restarted, base_url=BASE_URL) as client:
        headers = console.bearer(token)
        again = client.get(f"/api/v1/uploads/{failed['id']}", headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == failed
        stopped = client.get(f"/api/v1/uploads/{cut['id']}", headers=headers).json()
        assert stopped["status"] == "failed"
        assert stopped["error"] == STOPPED
        assert stopped["finished"] is not None
    assert list((tmp_path / "uploads").iterdir()) == []


def test_only_the_newest_finished_jobs_are_kept(console: Console) -> None:
    jobs = UploadJobs(console.app.state.settings, console.database, shared_store(console.app), keep=2)
    try:
        ids = []
        for n in range(4):
            job_id, path = jobs.new_path()
            path.write_bytes(b"not a capture")
            job = UploadJob(id=job_id, filename=f"f{n}", sensor="upload", size=13, created_by="t", path=path)
            jobs.submit(job)
            ids.append(job_id)
            deadline = time.monotonic() + 30
            while (found := jobs.get(job_id)) is None or found.status != "failed":
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        jobs.shutdown()
    with console.database.session() as session:
        kept = set(session.scalars(select(UploadJobRow.id)))
    # the fourth submit deleted the first job: the newest two finished when it came, and itself
    assert kept == set(ids[1:])
    assert jobs.get(ids[0]) is None


def test_a_job_whose_process_died_reads_failed(console: Console) -> None:
    """A job left running by a process that no longer exists (killed) reads failed; one of a
    process that exists, or of another host, keeps its state."""
    import subprocess
    import sys

    from fieldward.console.jobs import WORKER_GONE

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    rows = {
        "a" * 32: f"{host}:{dead.pid}",  # gone
        "b" * 32: f"{host}:{os.getpid()}",  # this process
        "c" * 32: f"another-host.example:{dead.pid}",  # not this host's to judge
        "d" * 32: f"{host}:1",  # exists (init): not ours, but alive
    }
    with console.database.session() as session:
        for job_id, worker in rows.items():
            session.add(
                UploadJobRow(
                    id=job_id,
                    filename="x.pcap",
                    sensor="upload",
                    size=1,
                    created_by="t",
                    status="running",
                    worker=worker,
                    counts={},
                )
            )
    headers = console.bearer(console.tokens["analyst"])
    states = {
        job_id: console.client.get(f"/api/v1/uploads/{job_id}", headers=headers).json() for job_id in rows
    }
    assert states["a" * 32]["status"] == "failed"
    assert states["a" * 32]["error"] == WORKER_GONE
    assert {states[k]["status"] for k in ("b" * 32, "c" * 32, "d" * 32)} == {"running"}
    with console.database.session() as session:
        stored = session.get(UploadJobRow, "a" * 32)
        assert stored is not None
        assert stored.status == "failed"
        assert stored.finished is not None


# --- the Upload page in a real headless browser (the pattern of test_ui.py) -------------------------

CHROMIUM = os.environ.get("FIELDWARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A uvicorn console on a free port with an analyst (password returned)."""
    import uvicorn

    from fieldward.console.app import create_app
    from fieldward.console.settings import ConsoleSettings

    url = f"sqlite:///{tmp_path / 'console.db'}"
    database = Database(url)
    database.upgrade()
    password = secrets.token_urlsafe(12)
    with database.session() as session:
        session.add(User(username="analyst", password_hash=hash_password(password), role="analyst"))
    database.dispose()
    app = create_app(ConsoleSettings(database_url=url, data_dir=tmp_path, secure_cookies=False))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", password
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_upload_page_uploads_polls_and_links_to_the_inventory(
    live: tuple[str, str], capture: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the Python 'playwright' package is not installed"
    )
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"chromium not found at {CHROMIUM} (Debian package 'chromium')")
    origin, password = live
    bad = tmp_path / "notes.pcap"
    bad.write_bytes(b"not a capture\n" * 10)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
            page.goto(origin + "/")
            page.fill("#username", "analyst")
            page.fill("#password", password)
            page.click("button[type=submit]")
            sync_api.expect(page.get_by_test_id("whoami")).to_contain_text("analyst")
            page.click("a[data-nav=upload]")
            page.set_input_files("#upload-file", str(capture))
            page.fill("#upload-sensor", "browser-upload")
            page.click("#upload-submit")
            sync_api.expect(page.get_by_test_id("upload-status")).to_have_text("done", timeout=120_000)
            sync_api.expect(page.locator("#upload-result")).to_contain_text("browser-upload")
            page.screenshot(path=str(tmp_path / "upload-done.png"), full_page=True)
            page.get_by_test_id("upload-inventory").click()
            sync_api.expect(page.locator("a[data-nav=inventory]")).to_have_attribute("aria-current", "page")

            page.click("a[data-nav=upload]")
            page.set_input_files("#upload-file", str(bad))
            page.click("#upload-submit")
            sync_api.expect(page.get_by_test_id("upload-status")).to_have_text("failed", timeout=120_000)
            sync_api.expect(page.get_by_test_id("upload-error")).to_contain_text(
                "not a pcap or pcapng capture"
            )
        finally:
            browser.close()
    assert errors == []
