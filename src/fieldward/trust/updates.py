"""The repository side of signed updates: a TUF repository of firmware/application images (issue 8).

FieldWard hosts one repository (The Update Framework, written with python-tuf's Metadata API):

- top-level roles ``root`` (threshold of root keys; key rotation by new root versions signed by the
  old and the new keys), ``targets``, ``snapshot`` and ``timestamp`` (short-lived: one day by default,
  re-signed by :meth:`UpdateRepository.refresh_timestamp`);
- one delegated targets role per channel, ``channels/<name>`` (``stable``, ``beta``, ...), trusted for
  the paths ``<channel>/*/index.json`` and ``<channel>/*/*/*`` only;
- images published as ``<channel>/<model>/<version>/<file>`` with their length, sha256 and custom
  metadata (model, version, min_version, release notes, staged rollout), plus one signed release
  index per channel and model (``<channel>/<model>/index.json``) so that a client, whose TUF API
  only looks paths up, can list the releases;
- consistent snapshots: metadata files ``<version>.<role>.json`` (``timestamp.json`` unversioned),
  images stored as ``<dir>/<sha256>.<file>``, so readers never see a half-published state.

Private keys (ed25519) are PKCS#8 PEM files encrypted with the repository passphrase under
``keys/`` (mode 0600 in a 0700 directory); the passphrase is never logged or written.
:func:`tuf_router` serves the repository to devices over HTTP; the console mounts it.
Layout, rollout rules and the client's guarantees: docs/trust/updates.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib import parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]  # no __all__
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from fieldward.assess.versions import parse_version
from fieldward.files import atomic_write
from fieldward.trust.errors import TrustError
from fieldward.trust.update_client import ROLLOUT_BUCKETS, in_rollout, slug

__all__ = [
    "CHANNEL_PREFIX",
    "TOP_LEVEL_ROLES",
    "ExpiryPolicy",
    "Release",
    "UpdateRepository",
    "UpdateRepositoryError",
    "UpdateStatus",
    "tuf_router",
    "update_status",
]

logger = logging.getLogger(__name__)

TOP_LEVEL_ROLES: Final = ("root", "targets", "snapshot", "timestamp")
CHANNEL_PREFIX: Final = "channels/"
_VERSIONED = re.compile(r"^(\d{1,12})\.(.+)\.json$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}$")
_SERIALIZER = JSONSerializer(compact=False)


class UpdateRepositoryError(TrustError):
    """The update repository cannot do what was asked (bad input, unusable keys or files)."""


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid after it is signed."""

    root: dt.timedelta = dt.timedelta(days=365)
    targets: dt.timedelta = dt.timedelta(days=90)
    channels: dt.timedelta = dt.timedelta(days=90)
    snapshot: dt.timedelta = dt.timedelta(days=7)
    timestamp: dt.timedelta = dt.timedelta(days=1)

    def of(self, role: str) -> dt.timedelta:
        if role.startswith(CHANNEL_PREFIX):
            return self.channels
        value: dt.timedelta = getattr(self, role)
        return value


@dataclass(frozen=True, slots=True)
class Release:
    """One published image, as its signed target entry describes it."""

    channel: str
    model: str
    version: str
    min_version: str | None
    release_notes: str
    target_path: str
    length: int
    sha256: str
    published: str
    rollout: dict[str, Any] | None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode=mode)


def _meta_file(version: int, data: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def _rollout_record(plan: Mapping[str, Any] | None, salt: str) -> dict[str, Any] | None:
    """The signed form of a rollout plan ``{group: percentage | [device ids]}`` (None: everyone)."""
    if plan is None:
        return None
    if not isinstance(plan, Mapping) or not plan:
        raise UpdateRepositoryError("a rollout plan maps group names to a percentage or a list of device ids")
    groups: dict[str, Any] = {}
    for group, rule in plan.items():
        if not isinstance(group, str) or not group:
            raise UpdateRepositoryError(f"rollout group names must be non-empty strings, not {group!r}")
        if isinstance(rule, bool):
            raise UpdateRepositoryError(f"rollout of group {group!r}: a percentage or a list, not {rule!r}")
        if isinstance(rule, int | float):
            if not 0 <= rule <= 100:
                raise UpdateRepositoryError(f"rollout of group {group!r}: {rule} is not a percentage 0-100")
            # canonical JSON (what TUF signs) has no floats: shares are basis points
            groups[group] = {"share": round(rule * ROLLOUT_BUCKETS / 100)}
        elif isinstance(rule, Sequence) and not isinstance(rule, str):
            devices = list(rule)
            if not all(isinstance(d, str) and d for d in devices):
                raise UpdateRepositoryError(f"rollout of group {group!r}: device ids must be strings")
            groups[group] = {"devices": sorted(set(devices))}
        else:
            raise UpdateRepositoryError(f"rollout of group {group!r}: a percentage or a list, not {rule!r}")
    return {"salt": salt, "groups": groups}


class UpdateRepository:
    """A TUF repository on disk under ``root_dir`` (created on first use, reopened afterwards).

    passphrase: encrypts the signing keys at rest (read it from a file or a secret store; it is
        never logged)
    channels: the channels (delegated roles) a new repository starts with
    root_keys, root_threshold: how many root keys a new repository has and how many must sign
    clock: the time new expiry dates count from (tests move it)
    """

    def __init__(
        self,
        root_dir: Path | str,
        passphrase: bytes,
        *,
        channels: Sequence[str] = ("stable", "beta"),
        root_keys: int = 1,
        root_threshold: int = 1,
        expiry: ExpiryPolicy | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        if not isinstance(passphrase, bytes) or not passphrase:
            raise UpdateRepositoryError("the update repository needs a non-empty passphrase (bytes)")
        self.root_dir = Path(root_dir)
        self.metadata_dir = self.root_dir / "metadata"
        self.targets_dir = self.root_dir / "targets"
        self.keys_dir = self.root_dir / "keys"
        self.expiry = expiry or ExpiryPolicy()
        self._passphrase = passphrase
        self._clock = clock
        self._lock = threading.RLock()
        self._md: dict[str, Metadata[Any]] = {}
        self._signers: dict[str, CryptoSigner] = {}
        if (self.metadata_dir / "timestamp.json").is_file():
            self._load()
        else:
            if not 1 <= root_threshold <= root_keys:
                raise UpdateRepositoryError("need 1 <= root_threshold <= root_keys")
            self._create([slug(c) for c in channels], root_keys, root_threshold)

    def __repr__(self) -> str:
        return f"UpdateRepository({str(self.root_dir)!r})"

    # keys ------------------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC).replace(microsecond=0)

    def _new_signer(self, role: str) -> CryptoSigner:
        private = Ed25519PrivateKey.generate()
        signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        keyid = signer.public_key.keyid
        _write_atomic(self.keys_dir / f"{role.replace('/', '-')}.{keyid[:16]}.pem", pem, 0o600)
        self._signers[keyid] = signer
        return signer

    def _load_keys(self) -> None:
        for path in sorted(self.keys_dir.glob("*.pem")):
            try:
                private = serialization.load_pem_private_key(path.read_bytes(), self._passphrase)
            except (ValueError, TypeError) as exc:
                raise UpdateRepositoryError(
                    f"cannot decrypt update signing key {path.name}: wrong passphrase or damaged file"
                ) from exc
            except OSError as exc:
                raise UpdateRepositoryError(f"cannot read update signing key {path.name}: {exc}") from exc
            if not isinstance(private, Ed25519PrivateKey):
                raise UpdateRepositoryError(f"update signing key {path.name} is not an ed25519 key")
            signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
            self._signers[signer.public_key.keyid] = signer

    def _forget_key(self, keyid: str) -> None:
        """Destroy a retired key: an old root key that leaked could still sign for stale clients."""
        self._signers.pop(keyid, None)
        for path in self.keys_dir.glob(f"*.{keyid[:16]}.pem"):
            path.unlink()

    def _role_keyids(self, role: str) -> list[str]:
        if role in TOP_LEVEL_ROLES:
            return list(self._root.roles[role].keyids)
        delegations = self._targets.delegations
        if delegations is None or delegations.roles is None or role not in delegations.roles:
            raise UpdateRepositoryError(f"no such role: {role}")
        return list(delegations.roles[role].keyids)

    def _signers_for(self, role: str) -> list[CryptoSigner]:
        signers = [self._signers[k] for k in self._role_keyids(role) if k in self._signers]
        if not signers:
            raise UpdateRepositoryError(f"no signing key available for role {role}")
        return signers

    # metadata --------------------------------------------------------------------------------------

    @property
    def _root(self) -> Root:
        signed: Root = self._md["root"].signed
        return signed

    @property
    def _targets(self) -> Targets:
        signed: Targets = self._md["targets"].signed
        return signed

    def _channel_md(self, channel: str) -> Metadata[Targets]:
        role = CHANNEL_PREFIX + slug(channel)
        if role not in self._md:
            raise UpdateRepositoryError(
                f"no such channel: {channel!r} (channels: {', '.join(self.channels)})"
            )
        md: Metadata[Targets] = self._md[role]
        return md

    @property
    def channels(self) -> list[str]:
        """The channel names, in delegation order."""
        delegations = self._targets.delegations
        roles = delegations.roles if delegations is not None and delegations.roles is not None else {}
        return [name.removeprefix(CHANNEL_PREFIX) for name in roles]

    def _file_for(self, role: str, version: int) -> Path:
        if role == "timestamp":
            return self.metadata_dir / "timestamp.json"
        return self.metadata_dir / f"{version}.{parse.quote(role, '')}.json"

    def _sign_and_write(self, role: str, extra: Iterable[CryptoSigner] = ()) -> bytes:
        md = self._md[role]
        md.signatures.clear()
        signers = {s.public_key.keyid: s for s in [*self._signers_for(role), *extra]}
        for signer in signers.values():
            md.sign(signer, append=True)
        data = md.to_bytes(_SERIALIZER)
        _write_atomic(self._file_for(role, md.signed.version), data)
        return data

    def _bump(self, role: str) -> None:
        signed = self._md[role].signed
        signed.version += 1
        signed.expires = self._now() + self.expiry.of(role)

    def _commit(self, changed: Sequence[str]) -> None:
        """Re-sign ``changed`` targets roles (delegated first), then a new snapshot and timestamp."""
        snapshot: Snapshot = self._md["snapshot"].signed
        ordered = [r for r in changed if r != "targets"] + (["targets"] if "targets" in changed else [])
        for role in ordered:
            self._bump(role)
            data = self._sign_and_write(role)
            snapshot.meta[f"{role}.json"] = _meta_file(self._md[role].signed.version, data)
        self._bump("snapshot")
        data = self._sign_and_write("snapshot")
        timestamp: Timestamp = self._md["timestamp"].signed
        timestamp.snapshot_meta = _meta_file(snapshot.version, data)
        self._bump("timestamp")
        self._sign_and_write("timestamp")

    def _create(self, channels: list[str], root_keys: int, root_threshold: int) -> None:
        for directory in (self.metadata_dir, self.targets_dir):
            directory.mkdir(parents=True, exist_ok=True)
        now = self._now()
        root = Root(expires=now + self.expiry.root, consistent_snapshot=True)
        for _ in range(root_keys):
            root.add_key(self._new_signer("root").public_key, "root")
        root.roles["root"].threshold = root_threshold
        for role in ("targets", "snapshot", "timestamp"):
            root.add_key(self._new_signer(role).public_key, role)
        targets = Targets(expires=now + self.expiry.targets, delegations=Delegations(keys={}, roles={}))
        self._md = {"root": Metadata(root), "targets": Metadata(targets)}
        snapshot = Snapshot(expires=now + self.expiry.snapshot)
        for channel in dict.fromkeys(channels):
            role = CHANNEL_PREFIX + channel
            assert targets.delegations is not None
            assert targets.delegations.roles is not None
            targets.delegations.roles[role] = DelegatedRole(
                name=role,
                keyids=[],
                threshold=1,
                terminating=True,
                paths=[f"{channel}/*/index.json", f"{channel}/*/*/*"],
            )
            targets.add_key(self._new_signer(role).public_key, role)
            self._md[role] = Metadata(Targets(expires=now + self.expiry.channels))
            snapshot.meta[f"{role}.json"] = _meta_file(1, self._sign_and_write(role))
        self._sign_and_write("root")
        snapshot.meta["targets.json"] = _meta_file(1, self._sign_and_write("targets"))
        self._md["snapshot"] = Metadata(snapshot)
        snapshot_bytes = self._sign_and_write("snapshot")
        self._md["timestamp"] = Metadata(
            Timestamp(expires=now + self.expiry.timestamp, snapshot_meta=_meta_file(1, snapshot_bytes))
        )
        self._sign_and_write("timestamp")
        logger.info("created update repository %s with channels %s", self.root_dir, ", ".join(channels))

    def _load(self) -> None:
        self._load_keys()
        latest: dict[str, tuple[int, Path]] = {}
        for path in self.metadata_dir.glob("*.json"):
            found = _VERSIONED.match(path.name)
            if found is None:
                continue
            role, version = parse.unquote(found.group(2)), int(found.group(1))
            if role not in latest or version > latest[role][0]:
                latest[role] = (version, path)
        latest["timestamp"] = (0, self.metadata_dir / "timestamp.json")
        try:
            for role, (_, path) in latest.items():
                self._md[role] = Metadata.from_file(str(path))
        except Exception as exc:  # python-tuf raises its own tree and plain ValueError/KeyError
            raise UpdateRepositoryError(f"update repository metadata unreadable: {exc}") from exc
        missing = [r for r in TOP_LEVEL_ROLES if r not in self._md]
        missing += [CHANNEL_PREFIX + c for c in self.channels if CHANNEL_PREFIX + c not in self._md]
        if missing:
            raise UpdateRepositoryError(f"update repository incomplete: no metadata for {', '.join(missing)}")

    # public API ------------------------------------------------------------------------------------

    def root_bytes(self, version: int | None = None) -> bytes:
        """Root metadata to ship with a device as its trusted root (the current one by default)."""
        with self._lock:
            wanted = self._root.version if version is None else version
            path = self._file_for("root", wanted)
            if not path.is_file():
                raise UpdateRepositoryError(f"no root metadata version {wanted}")
            return path.read_bytes()

    def role_version(self, role: str) -> int:
        """The current version of ``role``'s metadata."""
        with self._lock:
            if role not in self._md:
                raise UpdateRepositoryError(f"no such role: {role}")
            version: int = self._md[role].signed.version
            return version

    def role_keyids(self, role: str) -> list[str]:
        """The key ids that may sign ``role`` now."""
        with self._lock:
            return self._role_keyids(role)

    def publish(
        self,
        image_path: Path | str,
        model: str,
        version: str,
        channel: str = "stable",
        *,
        min_version: str | None = None,
        release_notes: str = "",
        rollout: Mapping[str, Any] | None = None,
    ) -> Release:
        """Publish an image of ``model`` at ``version`` to ``channel``; versions are immutable.

        rollout: ``{group: percentage | [device ids]}`` (``"*"`` = every other group); None = everyone.
        """
        image = Path(image_path)
        if not image.is_file():
            raise UpdateRepositoryError(f"image {image} is not a readable file")
        if parse_version(version) is None:
            raise UpdateRepositoryError(f"version {version!r} has no numeric release; it cannot be ordered")
        if min_version is not None and parse_version(min_version) is None:
            raise UpdateRepositoryError(f"min_version {min_version!r} has no numeric release")
        with self._lock:
            md = self._channel_md(channel)
            channel_name, model_slug = slug(channel), slug(model)
            for release in self._releases(channel_name, model_slug):
                if parse_version(release.version) == parse_version(version):
                    raise UpdateRepositoryError(
                        f"{model} {version} is already published in {channel_name} ({release.version});"
                        " publish a new version instead"
                    )
            target_path = f"{channel_name}/{model_slug}/{slug(version)}/{slug(image.name)}"
            target = TargetFile.from_file(target_path, str(image), ["sha256"])
            target.unrecognized_fields["custom"] = {
                "model": model,
                "version": version,
                "min_version": min_version,
                "release_notes": release_notes,
                "channel": channel_name,
                "published": self._now().isoformat(),
                "rollout": _rollout_record(rollout, f"{model_slug}/{version}"),
            }
            self._store_blob(target, image.read_bytes())
            md.signed.targets[target_path] = target
            self._write_index(md.signed, channel_name, model_slug)
            self._commit([CHANNEL_PREFIX + channel_name])
            logger.info("published %s %s to %s (%d bytes)", model, version, channel_name, target.length)
            return _release(target)

    def set_rollout(self, channel: str, model: str, version: str, plan: Mapping[str, Any] | None) -> Release:
        """Change the rollout plan of a published release (None: everyone); signed like the rest."""
        with self._lock:
            md = self._channel_md(channel)
            target = self._find(md.signed, slug(channel), slug(model), version)
            custom = dict(target.unrecognized_fields["custom"])
            custom["rollout"] = _rollout_record(plan, f"{slug(model)}/{custom['version']}")
            target.unrecognized_fields["custom"] = custom
            self._commit([CHANNEL_PREFIX + slug(channel)])
            return _release(target)

    def releases(self, channel: str, model: str | None = None) -> list[Release]:
        """The releases of ``channel`` (of one ``model``), newest version first."""
        with self._lock:
            self._channel_md(channel)
            return self._releases(slug(channel), slug(model) if model is not None else None)

    def newest(self, channel: str, model: str) -> Release | None:
        """The channel's newest release of ``model`` (whatever its rollout), or None."""
        found = self.releases(channel, model)
        return found[0] if found else None

    def rotate_key(self, role: str, keyid: str | None = None) -> str:
        """Replace one signing key of ``role`` (the first one by default); returns the new key id.

        Top-level roles: a new root version lists the new key, signed by the old and the new root
        keys, so clients holding the old root follow the chain. Channels: the targets role re-delegates.
        The retired key is destroyed.
        """
        with self._lock:
            old_ids = self._role_keyids(role)
            old = keyid or old_ids[0]
            if old not in old_ids:
                raise UpdateRepositoryError(f"key {old[:16]}... does not sign {role}")
            if role in TOP_LEVEL_ROLES:
                old_root_signers = self._signers_for("root")
                new = self._new_signer(role)
                self._root.revoke_key(old, role)
                self._root.add_key(new.public_key, role)
                self._bump("root")
                self._sign_and_write("root", extra=old_root_signers)
                self._commit(["targets"] if role == "targets" else [])
                still_used = any(old in r.keyids for r in self._root.roles.values())
            elif role.startswith(CHANNEL_PREFIX):
                new = self._new_signer(role)
                self._targets.revoke_key(old, role)
                self._targets.add_key(new.public_key, role)
                self._commit([role, "targets"])
                delegations = self._targets.delegations
                assert delegations is not None
                assert delegations.roles is not None
                still_used = any(old in r.keyids for r in delegations.roles.values())
            else:
                raise UpdateRepositoryError(f"no such role: {role}")
            if not still_used:
                self._forget_key(old)
            logger.info("rotated a %s key (new key id %s...)", role, new.public_key.keyid[:16])
            return new.public_key.keyid

    def refresh_timestamp(self) -> int:
        """Re-sign the timestamp with a fresh expiry (run at least daily); returns its new version."""
        with self._lock:
            self._bump("timestamp")
            self._sign_and_write("timestamp")
            return self.role_version("timestamp")

    def refresh_expiring(self, within: dt.timedelta = dt.timedelta(days=2)) -> list[str]:
        """Re-sign every role whose metadata expires within ``within``; returns the roles re-signed."""
        with self._lock:
            limit = self._now() + within
            expiring = [r for r, md in self._md.items() if md.signed.expires <= limit]
            if "root" in expiring:
                self._bump("root")
                self._sign_and_write("root")
            changed = [r for r in expiring if r.startswith(CHANNEL_PREFIX) or r == "targets"]
            if changed or "snapshot" in expiring:
                self._commit(changed)
            elif "timestamp" in expiring:
                self.refresh_timestamp()
            return sorted(expiring)

    # files served ----------------------------------------------------------------------------------

    def metadata_file(self, name: str) -> Path | None:
        """The file behind ``/updates/metadata/<name>`` (``<version>.<role>.json`` or
        ``timestamp.json``), or None; only roles of this repository are served."""
        name = parse.unquote(name)
        if name == "timestamp.json":
            path = self.metadata_dir / "timestamp.json"
        else:
            found = _VERSIONED.match(name)
            if found is None or found.group(2) not in self._md or found.group(2) == "timestamp":
                return None
            path = self._file_for(found.group(2), int(found.group(1)))
        return path if path.is_file() else None

    def target_file(self, name: str) -> Path | None:
        """The file behind ``/updates/targets/<name>`` (hash-prefixed image or index), or None."""
        parts = name.split("/")
        if not parts or not all(_SEGMENT.match(p) and p not in {".", ".."} for p in parts):
            return None
        base = self.targets_dir.resolve()
        path = base.joinpath(*parts).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
        return path

    # helpers ---------------------------------------------------------------------------------------

    def _store_blob(self, target: TargetFile, data: bytes) -> None:
        directory, _, basename = target.path.rpartition("/")
        _write_atomic(self.targets_dir / directory / f"{target.hashes['sha256']}.{basename}", data)

    def _releases(self, channel: str, model_slug: str | None) -> list[Release]:
        md: Metadata[Targets] = self._md[CHANNEL_PREFIX + channel]
        found = [
            _release(t)
            for path, t in md.signed.targets.items()
            if not path.endswith("/index.json") and (model_slug is None or path.split("/")[1] == model_slug)
        ]
        found.sort(key=lambda r: (r.model, parse_version(r.version) or parse_version("0")), reverse=True)
        if model_slug is not None:
            return found
        return sorted(found, key=lambda r: r.model)

    def _find(self, signed: Targets, channel: str, model_slug: str, version: str) -> TargetFile:
        wanted = parse_version(version)
        for path, target in signed.targets.items():
            custom = target.custom
            if (
                path.startswith(f"{channel}/{model_slug}/")
                and isinstance(custom, dict)
                and parse_version(custom.get("version")) == wanted
            ):
                return target
        raise UpdateRepositoryError(f"no release {version} of {model_slug} in {channel}")

    def _write_index(self, signed: Targets, channel: str, model_slug: str) -> None:
        rows = [{"version": r.version, "path": r.target_path} for r in self._releases(channel, model_slug)]
        data = json.dumps({"channel": channel, "model": model_slug, "releases": rows}, indent=1).encode()
        path = f"{channel}/{model_slug}/index.json"
        target = TargetFile.from_data(path, data, ["sha256"])
        self._store_blob(target, data)
        signed.targets[path] = target


def _release(target: TargetFile) -> Release:
    custom: dict[str, Any] = target.custom if isinstance(target.custom, dict) else {}
    return Release(
        channel=str(custom.get("channel", target.path.split("/")[0])),
        model=str(custom.get("model", "")),
        version=str(custom.get("version", "")),
        min_version=custom.get("min_version"),
        release_notes=str(custom.get("release_notes", "")),
        target_path=target.path,
        length=target.length,
        sha256=target.hashes["sha256"],
        published=str(custom.get("published", "")),
        rollout=custom.get("rollout"),
    )


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    """How far a device is behind its channel (the input the risk model would read)."""

    device_id: str
    channel: str
    model: str
    running_version: str | None
    newest_version: str | None
    """The channel's newest release for the model, whatever its rollout."""
    newest_offered: str | None
    """The newest release the device is admitted to (rollout), which it should be running."""
    releases_behind: int
    days_behind: int | None
    """Days since the oldest release newer than the running one was published (None: up to date)."""
    outdated: bool
    """Running older than the channel's newest release (or running an unknown version)."""


def update_status(
    repo: UpdateRepository,
    report: Mapping[str, Any],
    model: str,
    group: str | None = None,
    now: dt.datetime | None = None,
) -> UpdateStatus:
    """A device's :class:`UpdateStatus` from its client ``report()`` and the repository's releases."""
    device_id, channel = str(report.get("device_id", "")), str(report.get("channel") or "stable")
    running_text = report.get("running_version")
    running = parse_version(running_text)
    releases = repo.releases(channel, model) if slug(channel) in repo.channels else []
    newer = [r for r in releases if running is None or (parse_version(r.version) or running) > running]
    offered = next((r for r in releases if in_rollout(r.rollout, device_id, group)), None)
    days: int | None = None
    if newer:
        moment = now or _utcnow()
        with contextlib.suppress(ValueError):
            days = max(0, (moment - dt.datetime.fromisoformat(newer[-1].published)).days)
    return UpdateStatus(
        device_id=device_id,
        channel=slug(channel),
        model=model,
        running_version=running_text if isinstance(running_text, str) else None,
        newest_version=releases[0].version if releases else None,
        newest_offered=offered.version if offered else None,
        releases_behind=len(newer),
        days_behind=days,
        outdated=bool(newer),
    )


def tuf_router(repo: UpdateRepository) -> APIRouter:
    """Serve ``repo`` to devices: ``/updates/metadata/{version}.{role}.json``, ``timestamp.json`` and
    ``/updates/targets/{dir}/{sha256}.{file}``. Anonymous by design: TUF's signatures, not the
    transport, protect what is served (the console may still put TLS and a device certificate in front)."""
    router = APIRouter(prefix="/updates", tags=["updates"])

    @router.get("/metadata/{name:path}", operation_id="updates_metadata")
    def metadata(name: str) -> Response:
        path = repo.metadata_file(name)
        if path is None:
            raise HTTPException(status_code=404, detail="no such metadata")
        cache = "no-cache" if path.name == "timestamp.json" else "public, max-age=31536000, immutable"
        return Response(path.read_bytes(), media_type="application/json", headers={"Cache-Control": cache})

    @router.get("/targets/{name:path}", operation_id="updates_target")
    def target(name: str) -> FileResponse:
        path = repo.target_file(name)
        if path is None:
            raise HTTPException(status_code=404, detail="no such target")
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    return router
