"""The fleet simulator's MQTT side: a throw-away Mosquitto with FieldWard's configuration (mutual TLS
against the FieldWard CA, the dynamic-security plugin) and real paho-mqtt publishers.

- :func:`local_broker` starts ``mosquitto`` with :func:`~fieldward.trust.broker.prepare_broker`'s
  files on free ports of 127.0.0.1 and stops it afterwards;
- :func:`sync_from_service` makes the broker's clients and ACLs equal to what the service's policy
  grants the given devices now (:meth:`DynsecClient.sync` over :meth:`TrustService.context`);
- :func:`mqtt_publish` connects one device with its certificate (MQTT 5 over TLS) and publishes
  QoS 1 messages, returning each PUBACK's reason (``Success``, ``No matching subscribers``,
  ``Not authorized``) or ``refused: ...`` when the broker refuses the connection or the TLS handshake.

:func:`fieldward.trust.fleet.simulate` uses these when it is given a :class:`BrokerTarget`.
"""

from __future__ import annotations

import getpass
import os
import queue
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldward.trust.broker import DEFAULT_PLUGIN, BrokerError, DynsecClient, prepare_broker
from fieldward.trust.service import TrustService

__all__ = [
    "ACCEPTED",
    "BrokerTarget",
    "RunningBroker",
    "broker_available",
    "local_broker",
    "mqtt_publish",
    "sync_from_service",
]

ACCEPTED = ("Success", "No matching subscribers")
"""PUBACK reasons of a publish the broker accepted."""


@dataclass(frozen=True)
class BrokerTarget:
    """Where simulated devices publish, and how the broker is brought up to date before they do."""

    host: str
    port: int
    ca_file: Path
    """The CA chain the broker's server certificate chains to (FieldWard's)."""
    sync: Callable[[Sequence[str]], object]
    """Called with the simulated device ids after they attested, before they publish."""
    server_name: str = "localhost"

    def describe(self) -> str:
        return f"Mosquitto mqtts://{self.host}:{self.port} (mutual TLS, dynamic-security ACLs)"


@dataclass(frozen=True)
class RunningBroker:
    host: str
    tls_port: int
    admin_port: int
    ca_file: Path
    admin_password: str
    directory: Path

    def admin(self) -> DynsecClient:
        return DynsecClient(self.host, self.admin_port, password=self.admin_password).connect()


def broker_available(mosquitto: str | None = None) -> str | None:
    """Why a local broker cannot run here (None: it can)."""
    binary = mosquitto or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        return f"Mosquitto is not installed ({binary} missing)"
    if not DEFAULT_PLUGIN.exists():
        return f"the Mosquitto dynamic-security plugin is missing ({DEFAULT_PLUGIN})"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return "paho-mqtt is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_broker(
    service: TrustService, directory: Path, *, mosquitto: str | None = None, startup_timeout: float = 10.0
) -> Iterator[RunningBroker]:
    """Run Mosquitto with FieldWard's configuration (certificates from ``service.ca``) on free ports
    of 127.0.0.1; BrokerError when it cannot start. The admin password is random and stays in
    ``directory`` (mode 0600)."""
    reason = broker_available(mosquitto)
    if reason is not None:
        raise BrokerError(reason)
    binary = mosquitto or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    password = secrets.token_urlsafe(24)
    tls_port, admin_port = _free_port(), _free_port()
    files = prepare_broker(
        service.ca,
        directory,
        tls_port=tls_port,
        admin_port=admin_port,
        bind_address="127.0.0.1",
        admin_password=password,
        user=getpass.getuser() if os.geteuid() == 0 else None,
    )
    process = subprocess.Popen(  # noqa: S603 - our own binary and configuration
        [binary, "-c", str(files.config_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise BrokerError(f"mosquitto exited at start-up (status {process.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", admin_port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError("mosquitto did not open its admin listener") from None
                time.sleep(0.05)
        yield RunningBroker(
            "127.0.0.1", tls_port, admin_port, directory / "ca-chain.pem", password, directory
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sync_from_service(service: TrustService, broker: RunningBroker) -> Callable[[Sequence[str]], object]:
    """A :attr:`BrokerTarget.sync`: one admin connection, a ``sync`` with the devices' contexts now."""

    def sync(device_ids: Sequence[str]) -> object:
        with broker.admin() as admin:
            return admin.sync(
                service.engine,
                [service.context(device_id) for device_id in device_ids],
                now=service.now(),
                enrolled=lambda device_id: service.registry.device(device_id) is not None,
            )

    return sync


def mqtt_publish(
    target: BrokerTarget,
    client_id: str,
    cert_file: Path,
    key_file: Path,
    topics: Sequence[str],
    *,
    payload: bytes = b"{}",
    timeout: float = 5.0,
) -> list[str]:
    """Connect as ``client_id`` with its certificate and publish to each topic (QoS 1); the PUBACK
    reason per topic, or ``refused: <why>`` for every topic when the connection is refused."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    context = ssl.create_default_context(cafile=str(target.ca_file))
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        return [f"refused: client certificate unusable ({exc})"] * len(topics)
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
    )
    client.tls_set_context(context)
    client.on_connect = lambda c, u, f, reason, p: events.put(("connect", str(reason)))
    client.on_disconnect = lambda c, u, f, reason, p: events.put(("disconnect", str(reason)))
    client.on_publish = lambda c, u, mid, reason, p: events.put(("puback", mid, str(reason)))

    def wait(kinds: tuple[str, ...]) -> tuple[Any, ...] | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = events.get(timeout=remaining)
            except queue.Empty:
                return None
            if event[0] in kinds:
                return event
        return None

    try:
        client.connect(target.host, target.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:  # the TLS handshake itself refused (e.g. expired certificate)
        return [f"refused: {type(exc).__name__}: {exc}"] * len(topics)
    client.loop_start()
    try:
        event = wait(("connect", "disconnect"))
        if event is None or event[0] != "connect" or event[1] != "Success":
            why = "no answer" if event is None else f"{event[0]} {event[1]}"
            return [f"refused: {why}"] * len(topics)
        results: list[str] = []
        for topic in topics:
            info = client.publish(topic, payload, qos=1)
            event = wait(("puback", "disconnect"))
            if event is None:
                results.append("refused: no PUBACK")
            elif event[0] == "disconnect":
                results.append(f"refused: disconnected ({event[1]})")
                break
            else:
                results.append(str(event[2]) if event[1] == info.mid else "refused: unexpected PUBACK")
        results.extend(["refused: disconnected"] * (len(topics) - len(results)))
        return results
    finally:
        client.disconnect()
        client.loop_stop()
