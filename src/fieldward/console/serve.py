"""``fieldward serve``: run the console with uvicorn, after printing the first admin's password once.

The database is migrated and the first administrator created *before* uvicorn starts (so the password
can be printed to stdout exactly once, and never through a logger); the application's own start-up
then finds the user and creates nothing.

With the device plane on (``ConsoleSettings.trust``, ``FIELDWARD_TRUST=1``) the server always speaks
TLS and asks for, without requiring, a client certificate (``CERT_OPTIONAL``) verified against the
FieldWard chain and the IDevID manufacturers' CAs; :class:`~fieldward.trust.est.TLSExtensionH11Protocol`
hands the verified chain to the routes (EST ``simplereenroll``, IDevID ``simpleenroll``, the ``/trust``
device API). Browsers and tokens work as before: no certificate is asked of them. Without ``--cert``
the console's own server certificate is issued by the FieldWard CA (``console`` profile) into
``<data dir>/trust/console-tls/`` and reissued 30 days before it expires.

With ``workers`` > 1 uvicorn starts that many worker processes, each building its own application
with ``create_app`` (an import string and ``factory=True``: uvicorn cannot copy an application object
into other processes). The parent hands them its settings, device plane included, through a JSON file
of mode 0600 named by ``$FIELDWARD_CONSOLE_SETTINGS_FILE`` (the file may hold a database URL with its
password, so never the environment itself), removed when the server stops.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from fieldward.console.app import bootstrap, create_app
from fieldward.console.settings import SETTINGS_FILE_ENV, ConsoleSettings
from fieldward.console.trust_hooks import ConsoleTrust, trust_of
from fieldward.store.database import Database

__all__ = [
    "announce_first_admin",
    "console_tls_files",
    "serve",
    "uvicorn_options",
    "worker_settings_file",
]

RENEW_BEFORE = dt.timedelta(days=30)
"""The console's own certificate is reissued when it expires sooner than this."""


def announce_first_admin(settings: ConsoleSettings, password: str, out: TextIO) -> None:
    out.write(
        f"First start: created the administrator {settings.first_admin!r} with the password\n\n"
        f"    {password}\n\n"
        "It is shown only this once; log in and change it (POST /api/v1/auth/password).\n"
    )
    out.flush()


def _server_names(host: str) -> tuple[list[str], list[str]]:
    dns, ips = ["localhost"], ["127.0.0.1", "::1"]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host not in dns:
            dns.append(host)
    else:
        if not address.is_unspecified and str(address) not in ips:
            ips.append(str(address))
    name = socket.gethostname()
    if name and name not in dns:
        dns.append(name)
    return dns, ips


def console_tls_files(
    trust: ConsoleTrust,
    directory: Path,
    host: str,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[str, str, str]:
    """``(certfile, keyfile, client CA file)`` of a console serving the device plane.

    Without ``ssl_certfile`` the server certificate comes from the FieldWard CA (kept in
    ``directory``, key mode 0600, reissued within :data:`RENEW_BEFORE` of its expiry). The client CA
    file holds the FieldWard chain and every manufacturer CA (IDevID bootstrap)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    ca = trust.service.ca
    client_cas = directory / "client-cas.pem"
    anchors = [c for m in trust.service.settings.est.manufacturers for c in m.certificates]
    client_cas.write_bytes(ca.chain_pem() + b"".join(c.public_bytes(pem) for c in anchors))
    if ssl_certfile is not None:
        if ssl_keyfile is None:
            raise ValueError("a TLS certificate needs its key")
        return ssl_certfile, ssl_keyfile, str(client_cas)
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    moment = now or dt.datetime.now(dt.UTC)
    current: x509.Certificate | None = None
    if cert_file.is_file() and key_file.is_file():
        try:
            current = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except ValueError:
            current = None
    dns, ips = _server_names(host)
    if (
        current is None
        or current.not_valid_after_utc - moment < RENEW_BEFORE
        or current.issuer != ca.issuing.subject
    ):
        cert, key = ca.issue_keypair(
            "console", f"console-{socket.gethostname() or 'fieldward'}"[:64], dns_names=dns, ip_addresses=ips
        )
        key_file.touch(mode=0o600)
        key_file.chmod(0o600)
        key_file.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        cert_file.write_bytes(cert.public_bytes(pem) + ca.issuing.public_bytes(pem))
    return str(cert_file), str(key_file), str(client_cas)


def uvicorn_options(
    app: FastAPI,
    settings: ConsoleSettings,
    host: str,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> dict[str, Any]:
    """The uvicorn options of the console: TLS as given, or, with the device plane, TLS with optional
    client certificates and the protocol that exposes them (module docstring)."""
    options: dict[str, Any] = {
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
        "proxy_headers": False,
        "server_header": False,
    }
    trust = trust_of(app)
    if trust is None:
        return options
    from fieldward.trust.est import TLSExtensionH11Protocol

    cert, key, client_cas = console_tls_files(
        trust,
        settings.home() / "trust" / "console-tls",
        host,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    options.update(
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_ca_certs=client_cas,
        http=TLSExtensionH11Protocol,
    )
    return options


def serve(
    settings: ConsoleSettings,
    host: str = "127.0.0.1",
    port: int = 8443,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    out: TextIO | None = None,
    workers: int = 1,
) -> None:
    """Migrate, create the first admin when there is no user (printing its password once), and serve
    the console on ``host:port`` with ``workers`` processes until interrupted."""
    import uvicorn

    if workers < 1:
        raise ValueError("workers must be at least 1")

    database = Database(settings.url())
    try:
        password = bootstrap(database, settings)
    finally:
        database.dispose()
    if password is not None:
        announce_first_admin(settings, password, out if out is not None else sys.stdout)
    del password
    app = create_app(settings)
    options = uvicorn_options(app, settings, host, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="info", **options)
        return
    # The parent only supervises: its application was built for the TLS options (the device plane's
    # server certificate); each worker builds its own from the settings file.
    trust = trust_of(app)
    if trust is not None:
        trust.close()
    app.state.database.dispose()
    del app
    with worker_settings_file(settings):
        uvicorn.run(
            "fieldward.console.app:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            **options,
        )


@contextmanager
def worker_settings_file(settings: ConsoleSettings) -> Iterator[Path]:
    """Write ``settings`` to a private JSON file (mode 0600) and name it in
    ``$FIELDWARD_CONSOLE_SETTINGS_FILE`` for the worker processes; both are removed on exit."""
    handle, name = tempfile.mkstemp(prefix="fieldward-console-", suffix=".json")
    path = Path(name)
    previous = os.environ.get(SETTINGS_FILE_ENV)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(settings.model_dump_json().encode("utf-8"))
        os.environ[SETTINGS_FILE_ENV] = name
        yield path
    finally:
        if previous is None:
            os.environ.pop(SETTINGS_FILE_ENV, None)
        else:
            os.environ[SETTINGS_FILE_ENV] = previous
        path.unlink(missing_ok=True)
