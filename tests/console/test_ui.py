"""End-to-end tests of the web UI in a real headless browser (Playwright driving Debian's chromium).

A real uvicorn server is started on a free port with a temporary SQLite database holding the demo
plant (``fieldward demo``, ingested with ``ingest_folder``) plus a device whose host name and vendor
are HTML/script injections. The tests log in, filter the inventory, open a device, set its
importance, walk the map, triage alerts and download evidence, check that hostile strings are shown
as text, and save a screenshot of every main page into the pytest tmp dir (copied to
``/tmp/fieldward-ui-shots/`` for review). They skip with the reason when chromium or the Python
``playwright`` package is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fieldward.console.security import SENSOR_PREFIX, hash_password, new_token
from fieldward.console.settings import ConsoleSettings
from fieldward.console.ui import ASSET_CACHE, STATIC_DIR, mount_ui
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_folder, ingest_records
from fieldward.store.models import Alert, Device, Sensor, User

CHROMIUM = os.environ.get("FIELDWARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS_COPY = Path("/tmp/fieldward-ui-shots")
HOSTILE_HOST = "<img src=x onerror=alert(1)>"
HOSTILE_VENDOR = "<script>alert(2)</script>Evil & Co"
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
}

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the Python 'playwright' package is not installed (pip install playwright)"
)
if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"chromium not found at {CHROMIUM} (Debian package 'chromium'; FIELDWARD_CHROMIUM overrides)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@dataclass
class Server:
    """The live console: its URL, database, the users' passwords and the OpenAPI operation ids."""

    url: str
    database: Database
    passwords: dict[str, str]
    operations: set[str]
    shots: Path

    @contextlib.contextmanager
    def api(self, username: str) -> Iterator[httpx.Client]:
        """An API client logged in as ``username`` (cookie + CSRF header)."""
        with httpx.Client(base_url=self.url, timeout=10) as client:
            response = client.post(
                "/api/v1/auth/login", json={"username": username, "password": self.passwords[username]}
            )
            response.raise_for_status()
            client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
            yield client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _hostile_device() -> dict[str, Any]:
    return {
        "id": "mac:02:00:00:00:66:66",
        "mac": "02:00:00:00:66:66",
        "ips": ["10.10.1.66"],
        "hostname": HOSTILE_HOST,
        "vendor": HOSTILE_VENDOR,
        "model": '"><svg onload=alert(3)>',
        "device_type": "hmi",
        "purdue_level": 2,
        "first_seen": "2026-01-01T00:00:01Z",
        "last_seen": "2026-01-01T00:03:00Z",
        "packets": 10,
        "protocols": ["modbus"],
        "confidence": {"hostname": 0.5},
        "attributes": {
            "hostname": {
                "value": HOSTILE_HOST,
                "confidence": 0.5,
                "evidence": [{"source": "dhcp", "ts": None, "flow_id": 3, "detail": "<b>bold</b> option 12"}],
                "alternatives": [],
            }
        },
    }


def _upload_evidence(url: str, database: Database, folder: Path) -> None:
    """Push the evidence captures of the demo's alerts as the sensor would (``ingest_evidence``)."""
    secret, digest = new_token(SENSOR_PREFIX)
    with database.session() as session:
        sensor = session.scalars(select(Sensor).where(Sensor.name == "plant")).one()
        sensor.credential_hash = digest
        alerts = session.scalars(select(Alert).where(Alert.evidence_pcap.is_not(None))).all()
        uploads = [(a.id, folder / str(a.evidence_pcap)) for a in alerts]
    sent = 0
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {secret}"}) as client:
        for alert_id, path in uploads:
            if path.is_file():
                response = client.post(
                    f"/api/v1/ingest/evidence/{alert_id}",
                    content=path.read_bytes(),
                    headers={"Content-Type": "application/vnd.tcpdump.pcap"},
                )
                response.raise_for_status()
                sent += 1
    assert sent > 0


@pytest.fixture(scope="module")
def server(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import uvicorn

    from fieldward.console.app import create_app

    tmp = tmp_path_factory.mktemp("ui-console")
    url = f"sqlite:///{tmp / 'console.db'}"
    database = Database(url)
    database.upgrade()
    report = ingest_folder(database, demo_folder, "plant")
    assert report.written["devices"] > 10
    ingest_records(database, "plant", "devices", [_hostile_device()])
    passwords = {name: secrets.token_urlsafe(12) for name in ("admin", "analyst", "viewer")}
    with database.session() as session:
        for name, password in passwords.items():
            session.add(User(username=name, password_hash=hash_password(password), role=name))

    app = create_app(ConsoleSettings(database_url=url, data_dir=tmp, secure_cookies=False))
    if not any(getattr(r, "name", None) == "ui-assets" for r in app.routes):
        mount_ui(app)  # until create_app mounts the UI itself
    operations = {
        op["operationId"]
        for item in app.openapi()["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    if "ingest_evidence" in operations:
        _upload_evidence(f"http://127.0.0.1:{port}", database, demo_folder)
    shots = tmp_path_factory.mktemp("ui-shots")
    try:
        yield Server(f"http://127.0.0.1:{port}", database, passwords, operations, shots)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        database.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Problems:
    """Page errors, console errors, dialogs (an alert() is an XSS) and requests leaving the server."""

    def __init__(self, page: Page, origin: str) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.external: list[str] = []
        self.expected = {401, 403, 404}
        """HTTP errors a test provokes on purpose (the browser logs each failed fetch as an error)."""
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("dialog", self._dialog)
        page.on(
            "request",
            lambda req: (
                None if req.url.startswith((origin, "data:", "blob:")) else self.external.append(req.url)
            ),
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def real_errors(self) -> list[str]:
        codes = "|".join(str(code) for code in sorted(self.expected))
        return [e for e in self.errors if not re.search(rf"status of ({codes})\b", e)]


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    problems = Problems(pg, server.url)
    pg.problems = problems  # type: ignore[attr-defined]
    try:
        yield pg
        assert problems.dialogs == [], f"a script ran (dialog opened): {problems.dialogs}"
        assert problems.external == [], f"requests left the console (not air-gapped): {problems.external}"
        assert problems.real_errors() == [], f"browser errors: {problems.real_errors()}"
    finally:
        context.close()


def login(page: Page, server: Server, username: str = "analyst", path: str = "/") -> None:
    page.goto(server.url + path)
    page.fill("#username", username)
    page.fill("#password", server.passwords[username])
    page.click("button[type=submit]")
    expect(page.get_by_test_id("whoami")).to_contain_text(username)


def shot(page: Page, server: Server, name: str) -> Path:
    """Save a full-page screenshot in the tmp dir and a copy in /tmp/fieldward-ui-shots."""
    page.wait_for_load_state("networkidle")
    path = server.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    try:
        SHOTS_COPY.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS_COPY / path.name)
    except OSError:
        pass
    return path


def needs(server: Server, *operations: str) -> None:
    missing = [op for op in operations if op not in server.operations]
    if missing:
        pytest.xfail(
            f"the API has no {', '.join(missing)} yet (alerts router not written); the lead finishes it"
        )


# ---- serving -------------------------------------------------------------------------------------


def test_assets_are_served_with_cache_and_security_headers(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        index = client.get("/devices/12")
        assert index.status_code == 200
        assert index.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in index.headers["content-security-policy"]
        assert "'unsafe-inline'" not in index.headers["content-security-policy"]
        assert index.headers["x-content-type-options"] == "nosniff"
        script = re.search(r'<script type="module" src="([^"]+)"', index.text)
        assert script is not None
        assert "<script>" not in index.text
        asset = client.get(script.group(1))
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == ASSET_CACHE
        assert "javascript" in asset.headers["content-type"]
        assert client.get("/api/v1/no-such-endpoint").status_code == 404
        assert client.get("/api/v1/no-such-endpoint").headers["content-type"].startswith("application/json")
        assert client.get("/favicon.ico").status_code == 404
        old = client.get(script.group(1).replace("/assets/", "/assets/0"))
        assert old.status_code == 404


def test_assets_reference_nothing_outside_the_console() -> None:
    files = [p for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert any(p.suffix == ".js" for p in files)
    assert any(p.suffix == ".css" for p in files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text)
        urls = [u for u in urls if "www.w3.org/2000/svg" not in u]
        assert urls == [], f"{path.name} references external URLs: {urls}"
        if path.suffix == ".js":
            # the DOM is built from text nodes only: no HTML parsing, no code from strings
            sinks = re.findall(
                r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(", text
            )
            assert sinks == [], f"{path.name} uses {sinks}"


# ---- pages ---------------------------------------------------------------------------------------


def test_login_logout_and_bad_password(page: Page, server: Server) -> None:
    page.goto(server.url + "/devices")
    expect(page.locator("form.login-form")).to_be_visible()
    shot(page, server, "01-login")
    page.fill("#username", "analyst")
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator(".login-message")).to_contain_text("Invalid username or password")
    page.fill("#password", server.passwords["analyst"])
    page.click("button[type=submit]")
    # back to the page asked for before logging in
    expect(page.locator("h1")).to_have_text("Inventory")
    assert page.url.endswith("/devices")
    page.click("#logout")
    expect(page.locator("form.login-form")).to_be_visible()
    me = page.request.get(server.url + "/api/v1/auth/me")
    assert me.status == 401


def test_dashboard(page: Page, server: Server) -> None:
    login(page, server, "viewer")
    with server.api("viewer") as api:
        total = api.get("/api/v1/devices", params={"limit": 1}).json()["total"]
        plcs = api.get("/api/v1/devices", params={"limit": 1, "type": "plc"}).json()["total"]
    types = page.locator("[data-card=types]")
    expect(types.locator(".big-number")).to_contain_text(str(total))
    plc_row = types.locator(".bar-row", has_text="plc")
    expect(plc_row.locator(".bar-value")).to_have_text(str(plcs))
    expect(page.locator("[data-card=levels] .bar-row").first).to_be_visible()
    expect(page.locator("[data-card=riskiest] tr").first).to_be_visible()
    if "alerts_list" in server.operations:
        with server.api("viewer") as api:
            open_alerts = api.get("/api/v1/alerts", params={"limit": 1, "status": "open"}).json()["total"]
            critical = api.get(
                "/api/v1/alerts", params={"limit": 1, "status": "open", "severity": "critical"}
            ).json()["total"]
        cards = page.locator("[data-card=alerts]")
        expect(cards.locator(".big-number")).to_contain_text(str(open_alerts))
        expect(cards.locator(".bar-row", has_text="critical").locator(".bar-value")).to_have_text(
            str(critical)
        )
    if "risk_site" in server.operations:
        with server.api("viewer") as api:
            score = api.get("/api/v1/risk").json()["score"]
        expect(page.locator("[data-card=risk] .gauge-text")).to_have_text(str(score))
    shot(page, server, "02-dashboard")


def test_inventory_filter_sort_and_search(page: Page, server: Server) -> None:
    login(page, server, "viewer", "/devices")
    rows = page.locator("table.data tbody tr")
    expect(rows.first).to_be_visible()
    with server.api("viewer") as api:
        plc_total = api.get("/api/v1/devices", params={"limit": 1, "type": "plc"}).json()["total"]
        level1 = api.get("/api/v1/devices", params={"limit": 1, "level": 1}).json()["total"]
    assert plc_total > 0
    page.select_option("select[data-filter=type]", "plc")
    expect(page.locator(".page-info")).to_contain_text(f"of {plc_total}")
    expect(rows).to_have_count(plc_total)
    for cell in rows.locator("td:nth-child(4)").all_inner_texts():
        assert cell == "PLC"
    assert "type=plc" in page.url
    page.select_option("select[data-filter=type]", "")
    page.select_option("select[data-filter=level]", "1")
    expect(page.locator(".page-info")).to_contain_text(f"of {level1}")
    page.select_option("select[data-filter=level]", "")
    # sort by risk, riskiest first
    page.click("th:has-text('Risk')")  # risk sorts riskiest first on the first click
    expect(page.locator("th:has-text('Risk')")).to_have_attribute("aria-sort", "descending")
    expect(page.locator(".table-wrap")).to_have_attribute("data-state", "ready")
    risks = [int(t) for t in rows.locator("td:nth-child(10)").all_inner_texts() if t.strip().isdigit()]
    assert risks
    assert risks == sorted(risks, reverse=True)
    # search by IP
    page.fill("input[data-filter=q]", "10.10.1.11")
    expect(rows.first.locator("td:nth-child(2)")).to_contain_text("10.10.1.11")
    page.fill("input[data-filter=q]", "")
    expect(page.locator(".page-info")).not_to_contain_text("of 1\u200b")
    shot(page, server, "03-inventory")


def test_open_a_device_and_set_importance(page: Page, server: Server) -> None:
    login(page, server, "analyst", "/devices?type=plc")
    first = page.locator("table.data tbody tr").first
    label = first.locator("td").first.inner_text()
    first.locator("a.device-link").click()
    expect(page.locator("h1")).to_have_text(label)
    device_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    # attributes with confidence and evidence
    attrs = page.locator("table.attrs tbody tr")
    expect(attrs.first).to_be_visible()
    expect(page.locator("table.attrs .conf-num").first).to_contain_text("%")
    expect(page.locator("table.attrs ul.evidence li").first).to_be_visible()
    shot(page, server, "04-device")
    page.click("button[role=tab]:has-text('Communications')")
    expect(page.locator(".tab-body table.data tbody tr").first).to_be_visible()
    # importance, a state change: works only with the CSRF header, which survives a reload
    page.reload()
    page.select_option("#importance", "critical")
    expect(page.locator(".toast-ok")).to_contain_text("critical")
    with server.database.session() as session:
        device = session.get(Device, device_id)
        assert device is not None
        assert device.importance == 4
    page.select_option("#importance", "")
    expect(page.locator(".toast-ok").last).to_contain_text("normal")
    with server.database.session() as session:
        device = session.get(Device, device_id)
        assert device is not None
        assert device.importance is None


def test_hostile_strings_are_rendered_as_text(page: Page, server: Server) -> None:
    login(page, server, "viewer", "/devices?q=10.10.1.66")
    link = page.locator("a.device-link")
    expect(link).to_have_count(1)
    expect(link).to_have_text(HOSTILE_HOST)
    assert page.locator("table.data img, table.data script, table.data svg").count() == 0
    expect(page.locator("table.data tbody td:nth-child(5)")).to_have_text(HOSTILE_VENDOR)
    link.click()
    expect(page.locator("h1")).to_have_text(HOSTILE_HOST)
    expect(page.locator("main")).to_contain_text('"><svg onload=alert(3)>')
    expect(page.locator("table.attrs ul.evidence")).to_contain_text("<b>bold</b> option 12")
    assert page.locator("main img, main script, main b").count() == 0
    shot(page, server, "05-hostile-device")
    page.goto(server.url + "/map")
    page.fill("input[aria-label='Highlight devices']", "Evil & Co")
    node = page.locator("g.node-match text.node-label")
    expect(node).to_have_count(1)
    expect(node).to_have_text(HOSTILE_HOST[:17] + "…")
    assert page.locator("svg.netmap img, svg.netmap script").count() == 0
    time.sleep(0.3)  # an onerror handler would have fired by now; the fixture checks for dialogs


def test_network_map(page: Page, server: Server) -> None:
    login(page, server, "viewer", "/map")
    with server.api("viewer") as api:
        graph = api.get("/api/v1/map").json()
    nodes = page.locator("svg.netmap g.node")
    expect(nodes).to_have_count(len(graph["nodes"]))
    expect(page.locator("svg.netmap path.edge").first).to_be_attached()
    lanes = page.locator("svg.netmap .lane-label").all_text_contents()
    assert lanes[0].startswith("L")
    assert any("Control" in lane for lane in lanes)
    # lanes top-down from the enterprise to the process: levels decrease
    levels = [int(m.group(1)) for lane in lanes if (m := re.match(r"L(\d)", lane))]
    assert levels == sorted(levels, reverse=True)
    before = page.locator("svg.netmap").get_attribute("viewBox")
    page.click("button[aria-label='Zoom in']")
    after = page.locator("svg.netmap").get_attribute("viewBox")
    assert before != after
    assert float(after.split()[2]) < float(before.split()[2])
    page.click("button:has-text('Fit')")
    # protocol colouring and filter
    modbus = page.locator(".legend input[data-proto=modbus]")
    if modbus.count():
        edges = page.locator("svg.netmap path.edge").count()
        modbus.uncheck()
        assert page.locator("svg.netmap path.edge").count() < edges
        modbus.check()
    strokes = set(
        page.locator("svg.netmap path.edge").evaluate_all("els => els.map(e => e.getAttribute('stroke'))")
    )
    assert len(strokes) > 2
    nodes.first.click()
    expect(page.locator(".map-info h3")).to_be_visible()
    shot(page, server, "06-map")


def test_alerts_acknowledge_and_learn(page: Page, server: Server) -> None:
    needs(server, "alerts_list", "alerts_get", "alerts_acknowledge", "alerts_learn")
    login(page, server, "analyst", "/alerts")
    rows = page.locator("table.data tbody tr.clickable")
    expect(rows.first).to_be_visible()
    shot(page, server, "07-alerts")
    rows.first.click()
    drawer = page.locator("aside.drawer")
    expect(drawer.locator("h2")).to_be_visible()
    alert_id = int(page.url.split("?")[0].rstrip("/").rsplit("/", 1)[1])
    drawer.locator("[data-action=acknowledge]").click()
    expect(drawer.locator(".badge.st-acknowledged")).to_be_visible()
    with server.database.session() as session:
        row = session.get(Alert, alert_id)
        assert row is not None
        assert row.status == "acknowledged"
    shot(page, server, "08-alert-detail")
    drawer.locator("[data-action=learn]").click()
    page.locator(".dialog-form button.primary").click()
    expect(page.locator(".toast-ok").last).to_contain_text("learned")
    with server.database.session() as session:
        row = session.get(Alert, alert_id)
        assert row is not None
        assert any(e.to_status == "closed" or (e.note or "").startswith("learn") for e in row.events) or (
            row.details or {}
        ).get("learned"), "learning the alert left no trace"


def test_download_evidence(page: Page, server: Server) -> None:
    needs(server, "alerts_list", "alerts_get")
    if not {"alerts_evidence", "alerts_get_evidence", "alerts_download_evidence"} & server.operations:
        pytest.xfail("the API has no evidence download yet (alerts router not written)")
    with server.database.session() as session:
        alert_id = session.scalars(
            select(Alert.id).where(Alert.evidence_pcap.is_not(None)).order_by(Alert.id)
        ).first()
    assert alert_id is not None
    login(page, server, "analyst", f"/alerts/{alert_id}?status=")
    link = page.locator("aside.drawer a[data-action=evidence]")
    expect(link).to_be_visible()
    with page.expect_download() as info:
        link.click()
    path = info.value.path()
    assert path is not None
    assert Path(path).read_bytes()[:4] in PCAP_MAGICS


def test_comment_is_text(page: Page, server: Server) -> None:
    needs(server, "alerts_list", "alerts_get", "alerts_comment")
    login(page, server, "analyst", "/alerts?status=")
    page.locator("table.data tbody tr.clickable").nth(1).click()
    page.fill("aside.drawer textarea", HOSTILE_HOST)
    page.click("aside.drawer [data-action=comment]")
    expect(page.locator("aside.drawer .comment-text").last).to_have_text(HOSTILE_HOST)
    assert page.locator("aside.drawer img").count() == 0


def test_session_expiry_returns_to_login(page: Page, server: Server) -> None:
    login(page, server, "viewer", "/devices")
    page.context.clear_cookies()  # as if the session had expired on the server
    page.click("a[data-nav=map]")
    expect(page.locator(".login-message")).to_contain_text("session has expired")
    page.fill("#username", "viewer")
    page.fill("#password", server.passwords["viewer"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Network map")


def test_viewer_has_no_triage_or_admin_controls(page: Page, server: Server) -> None:
    login(page, server, "viewer", "/settings")
    expect(page.locator("button[role=tab]")).to_have_count(1)  # only "My account"
    page.goto(server.url + "/devices")
    page.locator("a.device-link").first.click()
    expect(page.locator("h1")).to_be_visible()
    assert page.locator("#importance").count() == 0
    if "alerts_list" in server.operations:
        page.goto(server.url + "/alerts")
        page.locator("table.data tbody tr.clickable").first.click()
        expect(page.locator("aside.drawer")).to_contain_text("Triage needs the analyst role")
        assert page.locator("aside.drawer [data-action=acknowledge]").count() == 0


@pytest.mark.parametrize(
    ("path", "name", "ready"),
    [
        ("/vulnerabilities", "09-vulnerabilities", "main .card"),
        ("/sensors", "10-sensors", "table.data tbody tr"),
        ("/settings", "11-settings", "table.data tbody tr"),
    ],
)
def test_other_pages_render(page: Page, server: Server, path: str, name: str, ready: str) -> None:
    login(page, server, "admin", path)
    expect(page.locator(ready).first).to_be_visible()
    assert page.locator(".alert-box.error").count() == 0
    if path == "/sensors":
        expect(page.locator("table.data")).to_contain_text("plant")
    if path == "/settings":
        page.click("button[role=tab]:has-text('Users')")
        expect(page.locator("table.data")).to_contain_text("analyst")
        shot(page, server, f"{name}-users")
        page.click("button[role=tab]:has-text('My account')")
    shot(page, server, name)


def test_forwarding_and_retention_settings(page: Page, server: Server) -> None:
    needs(server, "settings_get", "settings_update")
    login(page, server, "admin", "/settings")
    page.click("button[role=tab]:has-text('Forwarding')")
    page.click("[data-action=edit-settings]")
    form = page.locator(".dialog-form")
    form.locator("input[name=enabled]").check()
    form.locator("input[name=target]").fill("tls://siem.plant.example:6514")
    form.locator("select[name=min_severity]").select_option("high")
    form.locator("input[name=retention_days]").fill("45")
    shot(page, server, "13-settings-dialog")
    form.locator("button.primary").click()
    expect(page.locator(".toast-ok")).to_contain_text("saved")
    expect(page.locator("dl.kv")).to_contain_text("45 days")
    with server.api("admin") as api:
        saved = api.get("/api/v1/settings").json()
    assert saved["forwarding"]["target"] == "tls://siem.plant.example:6514"
    assert saved["forwarding"]["enabled"] is True
    assert saved["forwarding"]["min_severity"] == "high"
    assert saved["retention_days"] == 45
    shot(page, server, "12-settings-forwarding")
    # a bad target is refused by the API and the reason is shown
    page.problems.expected.add(422)  # type: ignore[attr-defined]
    page.click("[data-action=edit-settings]")
    page.locator(".dialog-form input[name=target]").fill("http://nope")
    page.locator(".dialog-form button.primary").click()
    expect(page.locator(".toast-error")).to_contain_text("udp://, tcp:// or tls://")
