"""Enforcement at the MQTT broker: Mosquitto 2 with mutual TLS against the FieldWard CA and its
dynamic-security plugin, kept equal to what the access policy allows (issue 8, docs/trust/enforcement.md).

Three parts:

- :class:`MosquittoConfig` renders a ``mosquitto.conf``: a device listener with mutual TLS
  (``require_certificate``, ``use_identity_as_username`` so the MQTT username *is* the certificate's
  CN, i.e. the device id; ``crlfile`` for revocation), an admin listener bound to 127.0.0.1 whose
  one user authenticates with a password, the dynamic-security plugin, no anonymous access.
  :func:`prepare_broker` writes every file it needs (CA chain, broker certificate and key from the
  FieldWard CA, CRL, the plugin's initial JSON with the admin user), :func:`write_crl` refreshes the CRL
  and :func:`reload_broker` makes a running Mosquitto re-read it (SIGHUP).
- :class:`DynsecClient` drives the plugin over MQTT (``$CONTROL/dynamic-security/v1``, JSON commands)
  as the admin user.
- :meth:`DynsecClient.sync` makes the broker's FieldWard-managed clients and roles equal to the
  policy: :func:`desired_state` (policy -> per-device ACLs) and :func:`plan_sync` (current vs desired
  -> the commands of the difference) are pure functions; only the fetch and the send do I/O.

Only clients whose ``textName`` is :data:`MANAGED_TEXT` and roles named ``fw-device-<id>`` are ever
touched by a sync, so the admin user and anything an operator adds by hand survive it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import serialization

from fieldward.trust.context import DeviceContext
from fieldward.trust.errors import TrustError
from fieldward.trust.policy import Policy, PolicyEngine
from fieldward.trust.registry import DEVICE_ID_PATTERN

if TYPE_CHECKING:
    from fieldward.trust.ca import CertificateAuthority

__all__ = [
    "ADMIN_USERNAME",
    "CONTROL_TOPIC",
    "DEFAULT_PLUGIN",
    "MANAGED_TEXT",
    "RESPONSE_TOPIC",
    "BrokerClient",
    "BrokerError",
    "BrokerFiles",
    "BrokerState",
    "DynsecACL",
    "DynsecClient",
    "MosquittoConfig",
    "SyncReport",
    "desired_state",
    "dynsec_initial_config",
    "dynsec_password",
    "plan_sync",
    "prepare_broker",
    "reload_broker",
    "role_name",
    "to_dynsec_acls",
    "write_crl",
]

log = logging.getLogger(__name__)

DEFAULT_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
ADMIN_USERNAME = "_fieldward-admin"
"""The plugin's admin user. It starts with ``_``, which a device id (:data:`DEVICE_ID_PATTERN`, the
CN of every FieldWard certificate) cannot: on the mutual-TLS listener the username is the CN, so no
certificate the CA issues can ever name the admin."""
MANAGED_TEXT = "fieldward-managed device"
"""The ``textName`` of every client a sync creates; a sync deletes only clients carrying it."""
ROLE_PREFIX = "fw-device-"
DYNSEC_ITERATIONS = 101
"""PBKDF2 iterations the plugin of Mosquitto 2.0 uses for its own passwords (``mosquitto_ctrl``)."""

AclType = Literal[
    "publishClientSend",
    "publishClientReceive",
    "subscribeLiteral",
    "subscribePattern",
    "unsubscribeLiteral",
    "unsubscribePattern",
]
_ACTION_ACLTYPE: dict[str, AclType] = {"publish": "publishClientSend", "subscribe": "subscribePattern"}


class BrokerError(TrustError):
    """The broker could not be configured or driven (bad setting, unreachable, command refused)."""


# ------------------------------------------------------------------------------------------ config


def _config_value(name: str, value: object) -> str:
    """A value safe to put on one mosquitto.conf line (no line breaks or control characters)."""
    text = str(value)
    if not text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BrokerError(f"mosquitto setting {name} must be non-empty text without control characters")
    return text


def _port(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise BrokerError(f"{name} must be a TCP port (1-65535), not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class MosquittoConfig:
    """The settings of a FieldWard-managed Mosquitto 2; :meth:`render` is its ``mosquitto.conf``."""

    tls_port: int
    cafile: Path
    """The FieldWard CA chain (issuing CA then root): the only client certificates accepted."""
    certfile: Path
    """The broker's certificate (then the issuing CA), from the CA's console profile."""
    keyfile: Path
    crlfile: Path | None
    """The CA's CRL (PEM): revoked device certificates fail the TLS handshake."""
    dynsec_file: Path
    """The dynamic-security plugin's JSON (clients, roles, ACLs); the plugin rewrites it on change."""
    admin_port: int | None = None
    """The admin listener (127.0.0.1 only, password of :data:`ADMIN_USERNAME`); None: no admin listener."""
    bind_address: str = "0.0.0.0"  # noqa: S104 - the device listener serves the plant network
    plugin: Path = DEFAULT_PLUGIN
    tls_version: str = "tlsv1.2"
    """The lowest TLS version accepted (``tlsv1.2`` or ``tlsv1.3``)."""
    user: str | None = None
    """When Mosquitto is started as root it drops to this user (``mosquitto`` when unset)."""
    log_file: Path | None = None
    pid_file: Path | None = None

    def render(self) -> str:
        """The configuration text; :class:`BrokerError` on a bad port, address or path."""
        _port("tls_port", self.tls_port)
        if self.admin_port is not None:
            _port("admin_port", self.admin_port)
            if self.admin_port == self.tls_port:
                raise BrokerError("the admin and device listeners need different ports")
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise BrokerError(f"bind_address must be an IP address, not {self.bind_address!r}") from None
        if self.tls_version not in ("tlsv1.2", "tlsv1.3"):
            raise BrokerError("tls_version must be tlsv1.2 or tlsv1.3")
        lines = [
            "# Generated by FieldWard (docs/trust/enforcement.md); do not edit.",
            "per_listener_settings false",
            "allow_anonymous false",
            "persistence false",
            f"plugin {_config_value('plugin', self.plugin)}",
            f"plugin_opt_config_file {_config_value('dynsec_file', self.dynsec_file)}",
        ]
        if self.user is not None:
            lines.append(f"user {_config_value('user', self.user)}")
        if self.pid_file is not None:
            lines.append(f"pid_file {_config_value('pid_file', self.pid_file)}")
        if self.log_file is not None:
            lines += [
                f"log_dest file {_config_value('log_file', self.log_file)}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
            ]
        else:
            lines.append("log_dest stderr")
        if self.admin_port is not None:
            lines += [
                "",
                "# Admin listener: loopback only; the dynamic-security admin authenticates with a password.",
                f"listener {self.admin_port} 127.0.0.1",
            ]
        lines += [
            "",
            "# Device listener: mutual TLS against the FieldWard CA; the username is the certificate CN.",
            f"listener {self.tls_port} {self.bind_address}",
            f"cafile {_config_value('cafile', self.cafile)}",
            f"certfile {_config_value('certfile', self.certfile)}",
            f"keyfile {_config_value('keyfile', self.keyfile)}",
            "require_certificate true",
            "use_identity_as_username true",
            f"tls_version {self.tls_version}",
        ]
        if self.crlfile is not None:
            lines.append(f"crlfile {_config_value('crlfile', self.crlfile)}")
        return "\n".join(lines) + "\n"


def dynsec_password(
    password: str, *, salt: bytes | None = None, iterations: int = DYNSEC_ITERATIONS
) -> dict[str, Any]:
    """The plugin's stored form of a password: PBKDF2-HMAC-SHA512 over a 12-byte salt, base64."""
    if len(password) < 12:
        raise BrokerError("the broker admin password must have at least 12 characters")
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def dynsec_initial_config(admin_password: str, admin_username: str = ADMIN_USERNAME) -> dict[str, Any]:
    """The plugin's first JSON: one admin user who may only use the dynamic-security control topics,
    no device clients, and default deny for publishing and subscribing."""
    control = "$CONTROL/dynamic-security/#"
    return {
        "clients": [
            {
                "username": admin_username,
                "textName": "FieldWard broker admin",
                **dynsec_password(admin_password),
                "roles": [{"rolename": "fieldward-admin"}],
            }
        ],
        "roles": [
            {
                "rolename": "fieldward-admin",
                "acls": [
                    {"acltype": "publishClientSend", "topic": control, "allow": True},
                    {"acltype": "publishClientReceive", "topic": control, "allow": True},
                    {"acltype": "subscribePattern", "topic": control, "allow": True},
                ],
            }
        ],
        "groups": [],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What :func:`prepare_broker` wrote."""

    config: MosquittoConfig
    config_file: Path
    admin_password_file: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically (a temporary file renamed over it) with ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_crl(ca: CertificateAuthority, path: Path, now: dt.datetime | None = None) -> Path:
    """Write the CA's current CRL (PEM) to ``path`` atomically; follow with :func:`reload_broker`."""
    _write(path, ca.crl(now).public_bytes(serialization.Encoding.PEM), 0o644)
    return path


def prepare_broker(
    ca: CertificateAuthority,
    directory: Path,
    *,
    tls_port: int,
    admin_port: int,
    broker_name: str = "mqtt-broker",
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    bind_address: str = "0.0.0.0",  # noqa: S104
    plugin: Path = DEFAULT_PLUGIN,
    admin_password: str | None = None,
    user: str | None = None,
) -> BrokerFiles:
    """Write a broker's files into ``directory`` (created 0700) and return its configuration.

    The broker certificate is issued by ``ca`` with the console profile (serverAuth). The admin
    password (random unless given) goes to ``admin-password`` (mode 0600) and, hashed, into the
    plugin's JSON; it is never logged. An existing plugin JSON is kept (it holds the synced state).
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    cert, key = ca.issue_keypair("console", broker_name, dns_names=dns_names, ip_addresses=ip_addresses)
    cafile = directory / "ca-chain.pem"
    certfile = directory / "broker.pem"
    keyfile = directory / "broker.key"
    _write(cafile, ca.chain_pem(), 0o644)
    _write(certfile, cert.public_bytes(pem) + ca.issuing.public_bytes(pem), 0o644)
    _write(
        keyfile,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    crlfile = write_crl(ca, directory / "crl.pem")
    password_file = directory / "admin-password"
    dynsec_file = directory / "dynamic-security.json"
    if not dynsec_file.exists():
        password = admin_password if admin_password is not None else secrets.token_urlsafe(24)
        _write(password_file, password.encode() + b"\n", 0o600)
        _write(dynsec_file, json.dumps(dynsec_initial_config(password), indent=2).encode(), 0o600)
    config = MosquittoConfig(
        tls_port=tls_port,
        admin_port=admin_port,
        cafile=cafile,
        certfile=certfile,
        keyfile=keyfile,
        crlfile=crlfile,
        dynsec_file=dynsec_file,
        bind_address=bind_address,
        plugin=plugin,
        user=user,
        log_file=directory / "mosquitto.log",
        pid_file=directory / "mosquitto.pid",
    )
    config_file = directory / "mosquitto.conf"
    _write(config_file, config.render().encode(), 0o600)
    return BrokerFiles(config, config_file, password_file)


def reload_broker(pid: int) -> None:
    """Ask a running Mosquitto to re-read its configuration, certificates and CRL (SIGHUP)."""
    if pid <= 1:
        raise BrokerError(f"not a broker process id: {pid}")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise BrokerError(f"cannot signal the broker (pid {pid}): {exc.strerror}") from None


# ------------------------------------------------------------------------------------------ desired state


@dataclass(frozen=True, slots=True, order=True)
class DynsecACL:
    """One ACL of a dynamic-security role; a larger ``priority`` is checked first."""

    acltype: str
    topic: str
    allow: bool
    priority: int = 0

    def command(self, role: str) -> dict[str, Any]:
        return {
            "command": "addRoleACL",
            "rolename": role,
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


def role_name(device_id: str) -> str:
    return ROLE_PREFIX + device_id


def to_dynsec_acls(entries: Iterable[tuple[str, str, str]]) -> tuple[DynsecACL, ...]:
    """The policy's ACL list (:func:`fieldward.trust.policy.mqtt_acl`: filter, allow|deny,
    publish|subscribe, in decision order) as role ACLs whose priorities keep that order (the first
    entry gets the highest priority, so every deny is checked before every allow)."""
    rows = list(entries)
    out: list[DynsecACL] = []
    seen: set[tuple[str, str]] = set()
    for index, (topic, effect, action) in enumerate(rows):
        if effect not in ("allow", "deny") or action not in _ACTION_ACLTYPE:
            raise BrokerError(f"unexpected policy ACL entry {(topic, effect, action)!r}")
        acltype = _ACTION_ACLTYPE[action]
        if (acltype, topic) in seen:  # the plugin keys an ACL by (type, topic): the first one decides
            continue
        seen.add((acltype, topic))
        out.append(DynsecACL(acltype, topic, effect == "allow", len(rows) - index))
    return tuple(out)


def desired_state(
    policy: Policy | PolicyEngine,
    contexts: Iterable[DeviceContext],
    *,
    now: dt.datetime | None = None,
    verdicts: Sequence[str] = ("healthy",),
    enrolled: Callable[[str], bool] | None = None,
    quarantined: Callable[[str], bool] | None = None,
) -> tuple[dict[str, tuple[DynsecACL, ...]], dict[str, str]]:
    """(device id -> role ACLs for every device that gets broker access, device id -> why not for
    the others).

    A device gets access when it is enrolled (``enrolled``, when given), its verdict is in
    ``verdicts``, it is not quarantined (its context or ``quarantined``) and the policy allows it at
    least one publish or subscribe.
    """
    engine = policy if isinstance(policy, PolicyEngine) else PolicyEngine(policy)
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    granted: dict[str, tuple[DynsecACL, ...]] = {}
    refused: dict[str, str] = {}
    for context in contexts:
        device = context.device_id
        if not DEVICE_ID_PATTERN.fullmatch(device):
            refused[device] = "not a valid device id"
        elif enrolled is not None and not enrolled(device):
            refused[device] = "not enrolled"
        elif context.quarantined or (quarantined is not None and quarantined(device)):
            refused[device] = "quarantined"
        elif context.verdict not in verdicts:
            refused[device] = f"attestation verdict {context.verdict or 'none'}"
        else:
            acls = to_dynsec_acls(engine.mqtt_acl(context, moment))
            if any(acl.allow for acl in acls):
                granted[device] = acls
            else:
                refused[device] = "the policy allows nothing"
    return granted, refused


# ------------------------------------------------------------------------------------------ diff


@dataclass(frozen=True, slots=True)
class BrokerClient:
    username: str
    text_name: str | None
    roles: tuple[str, ...]
    disabled: bool


@dataclass(frozen=True, slots=True)
class BrokerState:
    """The managed part of what the plugin holds: clients and roles with their ACLs."""

    clients: Mapping[str, BrokerClient] = field(default_factory=dict)
    roles: Mapping[str, frozenset[DynsecACL]] = field(default_factory=dict)


def plan_sync(current: BrokerState, desired: Mapping[str, Sequence[DynsecACL]]) -> list[dict[str, Any]]:
    """The dynamic-security commands turning ``current`` into ``desired`` (empty when equal).

    Only managed clients (``textName`` :data:`MANAGED_TEXT`) and ``fw-device-*`` roles are deleted.
    ACLs are compared as (type, topic, allow, priority); a changed one is removed and re-added.
    """
    commands: list[dict[str, Any]] = []
    for username, client in sorted(current.clients.items()):
        if client.text_name == MANAGED_TEXT and username not in desired:
            commands.append({"command": "deleteClient", "username": username})
    for role in sorted(current.roles):
        if role.startswith(ROLE_PREFIX) and role[len(ROLE_PREFIX) :] not in desired:
            commands.append({"command": "deleteRole", "rolename": role})
    for device in sorted(desired):
        role = role_name(device)
        wanted = frozenset(desired[device])
        have = current.roles.get(role)
        if have is None:
            commands.append({"command": "createRole", "rolename": role, "textName": MANAGED_TEXT})
            have = frozenset()
        for acl in sorted(have - wanted):
            commands.append(
                {"command": "removeRoleACL", "rolename": role, "acltype": acl.acltype, "topic": acl.topic}
            )
        for acl in sorted(wanted - have, key=lambda a: -a.priority):
            commands.append(acl.command(role))
        existing = current.clients.get(device)
        if existing is None:
            commands.append({"command": "createClient", "username": device, "textName": MANAGED_TEXT})
            commands.append({"command": "addClientRole", "username": device, "rolename": role, "priority": 1})
            continue
        if existing.text_name != MANAGED_TEXT:
            commands.append({"command": "modifyClient", "username": device, "textName": MANAGED_TEXT})
        for other in existing.roles:
            if other != role:
                commands.append({"command": "removeClientRole", "username": device, "rolename": other})
        if role not in existing.roles:
            commands.append({"command": "addClientRole", "username": device, "rolename": role, "priority": 1})
        if existing.disabled:
            commands.append({"command": "enableClient", "username": device})
    return commands


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync did: the devices with access, those refused (and why), the commands sent."""

    granted: tuple[str, ...]
    refused: Mapping[str, str]
    commands: tuple[dict[str, Any], ...]

    @property
    def changed(self) -> bool:
        return bool(self.commands)


# ------------------------------------------------------------------------------------------ client


class DynsecClient:
    """A synchronous admin connection to the dynamic-security plugin.

    Connects (paho-mqtt, MQTT 5) to the admin listener with the admin password, or with ``tls`` (an
    :class:`ssl.SSLContext`, e.g. carrying a client certificate) to a TLS listener. Commands are sent
    in batches to :data:`CONTROL_TOPIC`; each carries a ``correlationData`` matched to its answer on
    :data:`RESPONSE_TOPIC`. A refused command raises :class:`BrokerError` naming the command and the
    plugin's error text (never the password).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        username: str = ADMIN_USERNAME,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = _port("port", port)
        self.username = username
        self._password = password
        self._tls = tls
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Condition()
        self._answers: dict[str, dict[str, Any]] = {}
        self._connected = False
        self._connect_error: str | None = None

    def __repr__(self) -> str:
        return f"DynsecClient({self.host}:{self.port} as {self.username!r})"

    # -- connection --

    def connect(self) -> DynsecClient:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:  # pragma: no cover - paho-mqtt is a dependency of the broker integration
            raise BrokerError("paho-mqtt is needed to drive the broker (pip install paho-mqtt)") from None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fieldward-dynsec-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(
                f"cannot reach the broker admin listener {self.host}:{self.port}: {exc}"
            ) from None
        client.loop_start()
        self._client = client
        with self._lock:
            answered = self._lock.wait_for(lambda: self._connected or self._connect_error, self.timeout)
            error = self._connect_error
        # close() joins paho's network thread, whose callbacks take the lock: never call it holding it.
        if not answered:
            self.close()
            raise BrokerError(f"the broker at {self.host}:{self.port} did not answer CONNECT")
        if error:
            self.close()
            raise BrokerError(f"the broker refused the admin connection: {error}")
        result, _ = client.subscribe(RESPONSE_TOPIC, qos=1)
        if result != 0:
            self.close()
            raise BrokerError("cannot subscribe to the dynamic-security responses")
        # A round trip proves the subscription is in place before the first command.
        self.execute([{"command": "getDefaultACLAccess"}])
        return self

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._connected = False

    def __enter__(self) -> DynsecClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            if getattr(reason, "is_failure", False):
                self._connect_error = str(reason)
            else:
                self._connected = True
            self._lock.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._connected = False
            self._lock.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            document = json.loads(message.payload)
            responses = document["responses"]
        except (ValueError, KeyError, TypeError):
            log.info("ignored a malformed dynamic-security response (%d bytes)", len(message.payload))
            return
        with self._lock:
            for response in responses if isinstance(responses, list) else []:
                if isinstance(response, dict) and isinstance(response.get("correlationData"), str):
                    self._answers[response["correlationData"]] = response
            self._lock.notify_all()

    # -- commands --

    def execute(self, commands: Sequence[Mapping[str, Any]], *, check: bool = True) -> list[dict[str, Any]]:
        """Send ``commands`` in one message; their responses in order. With ``check``, the first
        refused command raises :class:`BrokerError`."""
        if not commands:
            return []
        client = self._client
        if client is None:
            raise BrokerError("the dynamic-security client is not connected")
        tagged: list[dict[str, Any]] = []
        for command in commands:
            entry = dict(command)
            entry["correlationData"] = secrets.token_hex(8)
            tagged.append(entry)
        keys = [entry["correlationData"] for entry in tagged]
        info = client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode(), qos=1)
        if info.rc != 0:
            raise BrokerError(f"cannot publish to {CONTROL_TOPIC} (rc {info.rc})")
        with self._lock:
            if not self._lock.wait_for(lambda: all(k in self._answers for k in keys), self.timeout):
                missing = [e["command"] for e in tagged if e["correlationData"] not in self._answers]
                for key in keys:
                    self._answers.pop(key, None)
                raise BrokerError(f"no answer from the dynamic-security plugin to {', '.join(missing)}")
            answers = [self._answers.pop(key) for key in keys]
        if check:
            for entry, answer in zip(tagged, answers, strict=True):
                if answer.get("error"):
                    target = entry.get("username") or entry.get("rolename") or ""
                    raise BrokerError(f"dynamic-security {entry['command']} {target}: {answer['error']}")
        return answers

    def command(self, name: str, **arguments: Any) -> dict[str, Any]:
        """One command; its ``data`` (empty when it returns none)."""
        answer = self.execute([{"command": name, **arguments}])[0]
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def create_client(self, username: str, *, text_name: str | None = None) -> None:
        self.command("createClient", username=username, **({"textName": text_name} if text_name else {}))

    def delete_client(self, username: str) -> None:
        self.command("deleteClient", username=username)

    def enable_client(self, username: str) -> None:
        self.command("enableClient", username=username)

    def disable_client(self, username: str) -> None:
        """Disable a client; the plugin also disconnects its open sessions (Mosquitto 2.0 kicks it)."""
        self.command("disableClient", username=username)

    def get_client(self, username: str) -> dict[str, Any] | None:
        answer = self.execute([{"command": "getClient", "username": username}], check=False)[0]
        if answer.get("error"):
            return None
        client = answer.get("data", {}).get("client")
        return client if isinstance(client, dict) else None

    def list_clients(self) -> list[dict[str, Any]]:
        data = self.command("listClients", verbose=True, count=-1, offset=0)
        clients = data.get("clients", [])
        return [c for c in clients if isinstance(c, dict)]

    def create_role(self, rolename: str, *, text_name: str | None = None) -> None:
        self.command("createRole", rolename=rolename, **({"textName": text_name} if text_name else {}))

    def delete_role(self, rolename: str) -> None:
        self.command("deleteRole", rolename=rolename)

    def get_role(self, rolename: str) -> dict[str, Any] | None:
        answer = self.execute([{"command": "getRole", "rolename": rolename}], check=False)[0]
        if answer.get("error"):
            return None
        role = answer.get("data", {}).get("role")
        return role if isinstance(role, dict) else None

    def list_roles(self) -> list[dict[str, Any]]:
        data = self.command("listRoles", verbose=True, count=-1, offset=0)
        roles = data.get("roles", [])
        return [r for r in roles if isinstance(r, dict)]

    def add_role_acl(self, rolename: str, acl: DynsecACL) -> None:
        self.execute([acl.command(rolename)])

    def remove_role_acl(self, rolename: str, acltype: str, topic: str) -> None:
        self.command("removeRoleACL", rolename=rolename, acltype=acltype, topic=topic)

    def add_client_role(self, username: str, rolename: str, priority: int = 1) -> None:
        self.command("addClientRole", username=username, rolename=rolename, priority=priority)

    def remove_client_role(self, username: str, rolename: str) -> None:
        self.command("removeClientRole", username=username, rolename=rolename)

    # -- sync --

    def state(self) -> BrokerState:
        """The plugin's clients (managed or not, so name clashes are seen) and its managed roles."""
        clients: dict[str, BrokerClient] = {}
        for entry in self.list_clients():
            username = entry.get("username")
            if not isinstance(username, str) or username == self.username:
                continue
            client_roles = tuple(
                r["rolename"] for r in entry.get("roles", []) if isinstance(r, dict) and "rolename" in r
            )
            # Mosquitto 2.0 lists "textname"; getClient and later versions say "textName".
            text = entry.get("textName", entry.get("textname"))
            clients[username] = BrokerClient(
                username, text if isinstance(text, str) else None, client_roles, bool(entry.get("disabled"))
            )
        roles: dict[str, frozenset[DynsecACL]] = {}
        for entry in self.list_roles():
            name = entry.get("rolename")
            if not isinstance(name, str) or not name.startswith(ROLE_PREFIX):
                continue
            roles[name] = frozenset(
                DynsecACL(str(a["acltype"]), str(a["topic"]), bool(a.get("allow")), int(a.get("priority", 0)))
                for a in entry.get("acls", [])
                if isinstance(a, dict) and "acltype" in a and "topic" in a
            )
        return BrokerState(clients, roles)

    def sync(
        self,
        policy: Policy | PolicyEngine,
        contexts: Iterable[DeviceContext],
        *,
        now: dt.datetime | None = None,
        verdicts: Sequence[str] = ("healthy",),
        enrolled: Callable[[str], bool] | None = None,
        quarantined: Callable[[str], bool] | None = None,
    ) -> SyncReport:
        """Make the broker's managed clients, roles and ACLs equal to what ``policy`` allows each of
        ``contexts`` (see :func:`desired_state`); idempotent: a second call sends nothing.

        A device that loses access has its client deleted, which also disconnects it.
        """
        granted, refused = desired_state(
            policy, contexts, now=now, verdicts=verdicts, enrolled=enrolled, quarantined=quarantined
        )
        commands = plan_sync(self.state(), granted)
        if commands:
            self.execute(commands)
            log.info(
                "broker sync: %d device(s) with access, %d without, %d command(s)",
                len(granted),
                len(refused),
                len(commands),
            )
        return SyncReport(tuple(sorted(granted)), dict(refused), tuple(commands))
