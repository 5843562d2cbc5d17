"""The FieldWard device agent: what runs on a device to join and stay in the zero-trust device plane.

A small library (:class:`DeviceAgent`) and a CLI (:func:`agent_main`, ``fieldward agent ...``):

- **enroll**: a new P-256 key, a PKCS#10 request with ``CN=<device id>``, EST ``simpleenroll``
  (RFC 7030) with a one-time enrollment token as ``Authorization: Bearer``; the CA chain from EST
  ``cacerts`` is kept too;
- **renew**: EST ``simplereenroll`` over mutual TLS with the current certificate and a new key (the
  service renews only after a fresh healthy attestation verdict);
- **attest**: ``POST /trust/attest/challenge`` -> nonce, claims (firmware digest, boot log and its
  aggregate, secure boot, OS and application versions, configuration digest) signed with the device
  key (``fieldward.trust.attestation.sign_evidence``), ``POST /trust/attest/evidence`` -> verdict;
- **updates**: TUF (``fieldward.trust.update_client.UpdateClient``) over the agent's own TLS
  connection; the trusted root is taken once from the service over verified TLS and pinned;
- **failure reports**: ``POST /trust/reports``, aggregated by the service per model, firmware and
  failure signature.

State lives in one directory (mode 0700): ``device.key`` (PKCS#8 PEM, mode 0600: the TLS stack must
read it, so it is protected by the file mode, as on any device without a secure element),
``device.pem`` (0600), ``ca-chain.pem``, ``tuf/`` (verified TUF metadata) and ``downloads/``. Files
are replaced atomically; the enrollment token is never written or logged.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import ssl
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient.fetcher import FetcherInterface

from fieldward.files import atomic_write
from fieldward.trust.attestation import boot_aggregate, sign_evidence
from fieldward.trust.errors import TrustError
from fieldward.trust.update_client import STATE_FILE as UPDATE_STATE_FILE
from fieldward.trust.update_client import UpdateClient, UpdateOffer

__all__ = [
    "AgentError",
    "DeviceAgent",
    "DeviceMeasurements",
    "HttpxFetcher",
    "agent_main",
    "load_measurements",
]

log = logging.getLogger(__name__)

KEY_FILE = "device.key"
CERT_FILE = "device.pem"
CHAIN_FILE = "ca-chain.pem"
ROOT_FILE = "tuf-root.json"
PEM = serialization.Encoding.PEM


class AgentError(TrustError):
    """The service refused a request (``status``: the HTTP status, 0 for a connection failure)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeviceMeasurements:
    """What the device measured at boot, the body of its attestation claims."""

    model: str
    firmware_version: str
    firmware_digest: str
    """SHA-256 (hex) of the running firmware image."""
    boot_log: tuple[str, ...] = ()
    """SHA-256 (hex) of each boot component in measurement order (bootloader, kernel, rootfs...)."""
    secure_boot: bool = True
    os_version: str = ""
    app_versions: Mapping[str, str] = field(default_factory=dict)
    config_digest: str = "0" * 64

    def claims(self, device_id: str, nonce: str, now: dt.datetime) -> dict[str, Any]:
        """The claims for one challenge (docs/trust/attestation.md)."""
        return {
            "device_id": device_id,
            "nonce": nonce,
            "model": self.model,
            "firmware_version": self.firmware_version,
            "firmware_digest": self.firmware_digest,
            "boot_log": list(self.boot_log),
            "boot_aggregate": boot_aggregate(self.boot_log),
            "secure_boot": self.secure_boot,
            "os_version": self.os_version,
            "app_versions": dict(self.app_versions),
            "config_digest": self.config_digest,
            "timestamp": now.astimezone(dt.UTC).replace(microsecond=0).isoformat(),
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_measurements(path: Path) -> DeviceMeasurements:
    """Measurements from a JSON file: the fields of :class:`DeviceMeasurements`; instead of
    ``firmware_digest`` a ``firmware_image`` path may be given (hashed here). ValueError when bad."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read measurements: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: measurements must be a JSON object")
    image = data.pop("firmware_image", None)
    if image is not None:
        data["firmware_digest"] = sha256_file(path.parent / str(image))
    known = set(DeviceMeasurements.__dataclass_fields__)
    if unknown := sorted(set(data) - known):
        raise ValueError(f"{path}: unknown measurement field(s): {', '.join(unknown)}")
    try:
        data["boot_log"] = tuple(data.get("boot_log", ()))
        return DeviceMeasurements(**data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None


class HttpxFetcher(FetcherInterface):
    """TUF's network interface over the agent's httpx client (our CA, our client certificate)."""

    def __init__(self, client: httpx.Client, chunk_size: int = 65536) -> None:
        self._client = client
        self._chunk_size = chunk_size

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self._client.send(self._client.build_request("GET", url), stream=True)
        if response.status_code >= 400:
            response.close()
            raise tuf_exceptions.DownloadHTTPError(
                f"HTTP error occurred with status {response.status_code}", response.status_code
            )
        return self._chunks(response)

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(self._chunk_size)
        finally:
            response.close()


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``data``."""
    atomic_write(path, data, mode=0o600, prefix=f".{path.name}-")


def _detail(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(value, dict) and isinstance(detail := value.get("detail"), str):
        return detail[:300]
    return text[:300]


def _csr(device_id: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def _certificate(response: httpx.Response) -> x509.Certificate:
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))
    except ValueError:
        raise AgentError("the EST answer is not a certs-only PKCS#7", response.status_code) from None
    if len(certificates) != 1:
        raise AgentError(f"the EST answer holds {len(certificates)} certificates, expected 1")
    return certificates[0]


class DeviceAgent:
    """One device's agent (module docstring).

    base_url: the FieldWard service, e.g. ``https://console.plant.local:8443``
    state_dir: where the key, certificate, CA chain and TUF metadata live
    server_ca: PEM file of the CA(s) that issued the service's TLS certificate; None: the CA chain
        kept from a previous enrollment, else the system's trust store
    """

    def __init__(
        self,
        base_url: str,
        state_dir: Path | str,
        *,
        server_ca: Path | str | None = None,
        timeout: float = 15.0,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        self.server_ca = Path(server_ca) if server_ca is not None else None
        self.timeout = timeout
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.last_report: dict[str, Any] | None = None
        """The console's answer to the last version report (the recorded update status)."""
        self.last_report_error: str | None = None
        """Why the last automatic version report failed (None: it was sent)."""

    def __repr__(self) -> str:
        return f"DeviceAgent({self.base_url!r}, {str(self.state_dir)!r})"

    # -- local state ------------------------------------------------------------------------------

    @property
    def key_path(self) -> Path:
        return self.state_dir / KEY_FILE

    @property
    def cert_path(self) -> Path:
        return self.state_dir / CERT_FILE

    @property
    def enrolled(self) -> bool:
        return self.key_path.is_file() and self.cert_path.is_file()

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except FileNotFoundError:
            raise AgentError("not enrolled: no device certificate (run enroll)") from None
        except ValueError:
            raise AgentError(f"{self.cert_path} is not a PEM certificate") from None

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except FileNotFoundError:
            raise AgentError("not enrolled: no device key (run enroll)") from None
        except (ValueError, TypeError):
            raise AgentError(f"{self.key_path} is not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AgentError("the device key is not an ECDSA key")
        return key

    @property
    def device_id(self) -> str:
        names = self.certificate().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or not isinstance(names[0].value, str):
            raise AgentError("the device certificate has no CN")
        return names[0].value

    def status(self) -> dict[str, Any]:
        """What the agent holds (no secrets): device id, certificate serial and validity."""
        if not self.enrolled:
            return {"enrolled": False}
        cert = self.certificate()
        return {
            "enrolled": True,
            "device_id": self.device_id,
            "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "expires_in_hours": round((cert.not_valid_after_utc - self._clock()).total_seconds() / 3600, 2),
        }

    def store_identity(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        if cert.public_key() != key.public_key():
            raise AgentError("the issued certificate does not certify the device key")
        _write_private(
            self.key_path,
            key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        _write_private(self.cert_path, cert.public_bytes(PEM))

    # -- HTTP ---------------------------------------------------------------------------------------

    def _context(self, client_cert: bool) -> ssl.SSLContext:
        chain = self.state_dir / CHAIN_FILE
        if self.server_ca is not None:
            context = ssl.create_default_context(cafile=str(self.server_ca))
        elif chain.is_file():
            context = ssl.create_default_context(cafile=str(chain))
        else:
            context = ssl.create_default_context()
        if client_cert:
            if not self.enrolled:
                raise AgentError("not enrolled: no device certificate (run enroll)")
            context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return context

    def client(self, *, client_cert: bool = True) -> httpx.Client:
        """An httpx client for the service (mutual TLS with the device certificate by default)."""
        verify: ssl.SSLContext | bool = True
        if self.base_url.startswith("https://"):
            verify = self._context(client_cert)
        return httpx.Client(base_url=self.base_url, verify=verify, timeout=self.timeout)

    def _call(
        self,
        method: str,
        path: str,
        *,
        client_cert: bool = True,
        expect: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            with self.client(client_cert=client_cert) as http:
                response = http.request(method, path, **kwargs)
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            raise AgentError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code not in expect:
            raise AgentError(
                f"{method} {path} refused ({response.status_code}): {_detail(response)}",
                response.status_code,
            )
        return response

    # -- enrollment ---------------------------------------------------------------------------------

    def enroll(self, device_id: str, token: str) -> x509.Certificate:
        """First enrollment with a one-time token (EST simpleenroll); stores key and certificate."""
        cacerts = self._call("GET", "/.well-known/est/cacerts", client_cert=False)
        chain = pkcs7.load_der_pkcs7_certificates(base64.b64decode(cacerts.content))
        (self.state_dir / CHAIN_FILE).write_bytes(b"".join(c.public_bytes(PEM) for c in chain))
        key = ec.generate_private_key(ec.SECP256R1())
        response = self._call(
            "POST",
            "/.well-known/est/simpleenroll",
            client_cert=False,
            content=_csr(device_id, key),
            headers={"Content-Type": "application/pkcs10", "Authorization": f"Bearer {token}"},
        )
        cert = _certificate(response)
        self.store_identity(key, cert)
        log.info("enrolled as %s (certificate %x)", device_id, cert.serial_number)
        return cert

    def renew(self) -> x509.Certificate:
        """Renewal (EST simplereenroll) over mutual TLS with a new key; stores the new identity."""
        device_id = self.device_id
        key = ec.generate_private_key(ec.SECP256R1())
        response = self._call(
            "POST",
            "/.well-known/est/simplereenroll",
            content=_csr(device_id, key),
            headers={"Content-Type": "application/pkcs10"},
        )
        cert = _certificate(response)
        self.store_identity(key, cert)
        log.info("renewed %s (certificate %x)", device_id, cert.serial_number)
        return cert

    # -- attestation --------------------------------------------------------------------------------

    def evidence(self, measurements: DeviceMeasurements, nonce: str) -> dict[str, Any]:
        """The signed evidence envelope answering ``nonce``."""
        claims = measurements.claims(self.device_id, nonce, self._clock())
        return sign_evidence(claims, self.private_key(), [self.certificate()])

    def attest(self, measurements: DeviceMeasurements) -> dict[str, Any]:
        """Challenge, signed evidence, verdict (``{"verdict": ..., "reasons": [...], ...}``)."""
        nonce = self._call("POST", "/trust/attest/challenge").json()["nonce"]
        envelope = self.evidence(measurements, nonce)
        verdict: dict[str, Any] = self._call("POST", "/trust/attest/evidence", json=envelope).json()
        return verdict

    def config(self) -> dict[str, Any]:
        """The service's view of this device: group, update channel, model, verdict."""
        value: dict[str, Any] = self._call("GET", "/trust/device").json()
        return value

    def decide(self, action: str, resource: str) -> dict[str, Any]:
        """Ask the policy decision API whether this device may ``action`` on ``resource``."""
        value: dict[str, Any] = self._call(
            "POST", "/trust/policy/decide", json={"action": action, "resource": resource}
        ).json()
        return value

    # -- updates ------------------------------------------------------------------------------------

    def trusted_root(self) -> bytes:
        """The pinned TUF root: the first one fetched over verified TLS, then never replaced here
        (newer roots are followed by TUF's client through the signed chain)."""
        path = self.state_dir / ROOT_FILE
        if path.is_file():
            return path.read_bytes()
        data = self._call("GET", "/updates/metadata/1.root.json").content
        try:
            json.loads(data)
        except ValueError:
            raise AgentError("the service's TUF root is not JSON") from None
        _write_private(path, data)
        return data

    def _update_client(
        self, http: httpx.Client, model: str | None, running_version: str | None
    ) -> UpdateClient:
        config = self.config()
        device_model = model or config.get("model")
        if not isinstance(device_model, str) or not device_model:
            raise AgentError("the device model is unknown (give --model or register it)")
        return UpdateClient(
            self.state_dir / "tuf",
            f"{self.base_url}/updates",
            self.trusted_root(),
            self.device_id,
            config.get("group"),
            device_model,
            channel=str(config.get("update_channel") or "stable"),
            download_dir=self.state_dir / "downloads",
            running_version=running_version,
            fetcher=HttpxFetcher(http),
        )

    def check_update(
        self, *, model: str | None = None, running_version: str | None = None
    ) -> UpdateOffer | None:
        """The newest image this device may install (verified TUF metadata), or None."""
        with self.client() as http:
            return self._update_client(http, model, running_version).check()

    def install_update(
        self,
        installer: Callable[[Path, UpdateOffer], None],
        *,
        model: str | None = None,
        running_version: str | None = None,
        report: bool = True,
    ) -> str | None:
        """Check, download (TUF verifies length and hashes), hand the image to ``installer``, record
        the new running version and, with ``report``, tell the console (``POST
        /trust/updates/report`` with the update client's :meth:`~UpdateClient.report`); the installed
        version, or None when up to date.

        A report that fails does not undo the installation: the error is logged (no secrets) and kept
        in :attr:`last_report_error`; the next :meth:`report_version` (``fieldward agent
        report-version``) sends it again."""
        with self.client() as http:
            updates = self._update_client(http, model, running_version)
            offer = updates.check()
            if offer is None:
                return None
            image = updates.download(offer)
            installer(image, offer)
            updates.mark_installed(offer.version)
            body = updates.report()
        if report:
            try:
                self.last_report = self._send_version(body)
                self.last_report_error = None
            except AgentError as exc:
                self.last_report_error = str(exc)
                log.warning("installed %s but could not report it: %s", offer.version, exc)
        return offer.version

    def installed_version(self) -> str | None:
        """The running version the update client recorded (``tuf/`` state), or None."""
        try:
            state = json.loads((self.state_dir / "tuf" / UPDATE_STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        value = state.get("installed_version") if isinstance(state, dict) else None
        return value if isinstance(value, str) and value else None

    def _send_version(self, body: Mapping[str, Any]) -> dict[str, Any]:
        clean = {k: v for k, v in body.items() if v is not None and k != "device_id"}
        if isinstance(clean.get("last_error"), str):
            clean["last_error"] = clean["last_error"][:1000]
        value: dict[str, Any] = self._call("POST", "/trust/updates/report", json=clean, expect=(202,)).json()
        return value

    def report_version(
        self, running_version: str | None = None, *, last_error: str | None = None
    ) -> dict[str, Any]:
        """Tell the console which version runs now (``POST /trust/updates/report``); the answer is
        the recorded update status (``outdated``, ``newest_version``, ``days_behind``, ...).
        ``running_version`` None: the version the update client recorded (:meth:`installed_version`);
        AgentError when there is none."""
        version = running_version if running_version is not None else self.installed_version()
        if not version:
            raise AgentError("no running version known: give one (--running-version) or install an update")
        body: dict[str, Any] = {"running_version": version}
        if last_error is not None:
            body["last_error"] = last_error
        value = self._send_version(body)
        self.last_report, self.last_report_error = value, None
        return value

    # -- failure reports ----------------------------------------------------------------------------

    def report_failure(
        self,
        kind: str,
        component: str,
        message: str,
        *,
        stack: Sequence[str] = (),
        count: int = 1,
        model: str | None = None,
        firmware: str | None = None,
    ) -> dict[str, Any]:
        """Send a crash/error report; the answer names its aggregate (signature, count)."""
        body: dict[str, Any] = {
            "kind": kind,
            "component": component,
            "message": message,
            "stack": list(stack),
            "count": count,
        }
        if model is not None:
            body["model"] = model
        if firmware is not None:
            body["firmware"] = firmware
        value: dict[str, Any] = self._call("POST", "/trust/reports", json=body, expect=(202,)).json()
        return value

    def report_exception(self, component: str, exc: BaseException) -> dict[str, Any]:
        """Report an exception as a crash: its type and message, frames as ``file:function``."""
        frames = [
            f"{Path(frame.filename).name}:{frame.name}"
            for frame in reversed(traceback.extract_tb(exc.__traceback__))
        ]
        return self.report_failure("crash", component, f"{type(exc).__name__}: {exc}", stack=frames)


# -- CLI ------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldward agent", description="FieldWard device agent")
    parser.add_argument("--server", required=True, help="FieldWard service URL (https://host:port)")
    parser.add_argument("--state-dir", type=Path, required=True, help="Key, certificate and metadata folder")
    parser.add_argument("--ca-file", type=Path, help="CA (PEM) of the service's TLS certificate")
    commands = parser.add_subparsers(dest="command", required=True)
    enroll = commands.add_parser("enroll", help="Enroll with a one-time token (EST)")
    enroll.add_argument("--device-id", required=True)
    enroll.add_argument(
        "--token-file", type=Path, help="File holding the token (else $FIELDWARD_ENROLL_TOKEN)"
    )
    commands.add_parser("renew", help="Renew the certificate (EST over mutual TLS)")
    attest = commands.add_parser("attest", help="Attest with measurements from a JSON file")
    attest.add_argument("--measurements", type=Path, required=True)
    update = commands.add_parser("update", help="Check for and fetch a signed update (TUF)")
    update.add_argument("--model")
    update.add_argument("--running-version")
    update.add_argument("--install-to", type=Path, help="Copy the verified image here and mark it installed")
    version = commands.add_parser(
        "report-version", help="Tell the console which version runs (default: the last installed update)"
    )
    version.add_argument("--running-version", help="The running version (else the installed update's)")
    version.add_argument("--last-error", help="The last update error to report with it")
    report = commands.add_parser("report", help="Send a failure report")
    report.add_argument("--kind", default="error", choices=["crash", "error", "watchdog", "update"])
    report.add_argument("--component", required=True)
    report.add_argument("--message", required=True)
    report.add_argument("--count", type=int, default=1)
    commands.add_parser("status", help="Show the enrollment state")
    return parser


def _token(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AgentError(f"cannot read the token file: {exc.strerror}") from None
    value = os.environ.get("FIELDWARD_ENROLL_TOKEN", "").strip()
    if not value:
        raise AgentError("no enrollment token: give --token-file or set FIELDWARD_ENROLL_TOKEN")
    return value


def _run(args: argparse.Namespace) -> dict[str, Any]:
    agent = DeviceAgent(args.server, args.state_dir, server_ca=args.ca_file)
    if args.command == "enroll":
        cert = agent.enroll(args.device_id, _token(args.token_file))
        return {"enrolled": args.device_id, "not_after": cert.not_valid_after_utc.isoformat()}
    if args.command == "renew":
        cert = agent.renew()
        return {"renewed": agent.device_id, "not_after": cert.not_valid_after_utc.isoformat()}
    if args.command == "attest":
        try:
            measurements = load_measurements(args.measurements)
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        return agent.attest(measurements)
    if args.command == "update":
        if args.install_to is None:
            offer = agent.check_update(model=args.model, running_version=args.running_version)
            return {"update": None if offer is None else offer.version}
        target: Path = args.install_to

        def install(image: Path, offer: UpdateOffer) -> None:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target / image.name)

        version = agent.install_update(install, model=args.model, running_version=args.running_version)
        result: dict[str, Any] = {"installed": version}
        if version is not None:
            result["reported"] = agent.last_report_error is None
            if agent.last_report is not None:
                result["status"] = agent.last_report
        return result
    if args.command == "report-version":
        return agent.report_version(args.running_version, last_error=args.last_error)
    if args.command == "report":
        return agent.report_failure(args.kind, args.component, args.message, count=args.count)
    return agent.status()


def agent_main(argv: Sequence[str] | None = None) -> int:
    """``fieldward agent``: prints one JSON object; exit 0, 1 when refused, 2 on bad usage."""
    args = _parser().parse_args(argv)
    try:
        result = _run(args)
    except TrustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True, default=str))
    return 0


def measurements_dict(measurements: DeviceMeasurements) -> dict[str, Any]:
    """``measurements`` as the JSON object :func:`load_measurements` reads."""
    data = asdict(measurements)
    data["boot_log"] = list(measurements.boot_log)
    data["app_versions"] = dict(measurements.app_versions)
    return data
