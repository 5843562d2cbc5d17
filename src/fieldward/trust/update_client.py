"""The device side of signed updates: find, verify and fetch an image with TUF's client (issue 8).

The future device agent (``fieldward.agent``) drives an :class:`UpdateClient`: ``check()`` refreshes
the TUF metadata of FieldWard's update repository (``trust/updates.py``) through
``tuf.ngclient.Updater`` and picks the newest image of the device's model in its channel that the
device may install (its rollout plan admits it, its ``min_version`` is met, it is newer than what
runs); ``download()`` fetches the image and lets TUF verify its length and hashes against the signed
metadata; ``mark_installed()`` records what now runs. Every protection comes from TUF and is mapped
here to one :class:`UpdateRefusedError` (a ``TrustError``) with a ``kind``:

- ``rollback``: metadata older than what the device has seen, or an image older than the running one;
- ``freeze``: expired metadata (a repository or a man in the middle replaying an old, frozen view);
- ``mix-and-match``: a metadata file whose hash or length differs from what the snapshot/timestamp list;
- ``tampered``: an image whose hash or length differs from its signed target entry;
- ``untrusted-signature``: metadata not signed by a threshold of the keys the trusted root names;
- ``download``, ``invalid``, ``storage``: the repository cannot be reached, sends garbage, or the
  device cannot write its cache.

This module also holds the pure rules both sides share: path names (``slug``) and the staged-rollout
decision (``in_rollout``), so the repository can preview exactly what a device will decide.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import urllib3.exceptions
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]  # re-exported without __all__
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from fieldward.assess.versions import FirmwareVersion, parse_version
from fieldward.trust.errors import TrustError

__all__ = [
    "ROLLOUT_BUCKETS",
    "UpdateClient",
    "UpdateOffer",
    "UpdateRefusedError",
    "in_rollout",
    "index_path",
    "rollout_bucket",
    "slug",
]

logger = logging.getLogger(__name__)

ROLLOUT_BUCKETS: Final = 10_000
"""Shares of a staged rollout are in basis points: 2500 = 25 % of a group's devices."""

STATE_FILE: Final = "fieldward-update-state.json"
"""The device's update state, kept beside TUF's metadata cache (no TUF role has this name)."""

_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")
_MAX_INDEX = 4_000_000


def slug(text: str) -> str:
    """``text`` as one safe path component: lower case, runs of other characters as ``-``.

    ``"CPU 1215C DC/DC/DC"`` -> ``"cpu-1215c-dc-dc-dc"``. Raises ``TrustError`` when nothing is left.
    """
    value = _SLUG_BAD.sub("-", text.strip().lower()).strip("-.")
    if not value or len(value) > 120:
        raise TrustError(f"{text!r} cannot name an update path (empty or longer than 120 characters)")
    return value


def index_path(channel: str, model: str) -> str:
    """The target path of the signed release index of ``model`` in ``channel``."""
    return f"{slug(channel)}/{slug(model)}/index.json"


def rollout_bucket(salt: str, device_id: str) -> int:
    """The device's fixed bucket in ``[0, ROLLOUT_BUCKETS)`` for one release (salted by the release).

    The bucket depends only on the release's salt and the device id, so raising a share from 10 % to
    50 % keeps every device that was already in, and each release samples different devices.
    """
    digest = hashlib.sha256(f"{salt}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % ROLLOUT_BUCKETS


def in_rollout(rollout: Mapping[str, Any] | None, device_id: str, group: str | None) -> bool:
    """Whether a device of ``group`` may install a release whose signed rollout is ``rollout``.

    ``rollout`` is the ``custom.rollout`` of the release's target entry (docs/trust/updates.md):
    ``None`` admits everyone; otherwise ``{"salt": str, "groups": {name: rule}}`` where a rule is
    ``{"share": basis points}`` or ``{"devices": [device ids]}``, and the group ``"*"`` stands for every
    group not named. A malformed rollout admits nobody.
    """
    if rollout is None:
        return True
    groups = rollout.get("groups")
    salt = rollout.get("salt")
    if not isinstance(groups, Mapping) or not isinstance(salt, str):
        return False
    rule = groups.get(group) if group is not None and group in groups else groups.get("*")
    if not isinstance(rule, Mapping):
        return False
    devices = rule.get("devices")
    if isinstance(devices, list):
        return device_id in devices
    share = rule.get("share")
    if isinstance(share, int) and not isinstance(share, bool):
        return rollout_bucket(salt, device_id) < share
    return False


class UpdateRefusedError(TrustError):
    """An update was refused or could not be verified; ``kind`` names the reason (module docstring)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class UpdateOffer:
    """An image the device may install, as its signed target entry describes it."""

    channel: str
    model: str
    version: str
    min_version: str | None
    release_notes: str
    target_path: str
    length: int
    sha256: str
    target: TargetFile


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UpdateClient:
    """One device's view of the update repository (see the module docstring).

    metadata_dir: where TUF keeps its verified metadata cache (and this client its state file)
    base_url: the repository's base, e.g. ``https://console:8443/updates`` (metadata under
        ``/metadata/``, images under ``/targets/``)
    trusted_root_bytes: the root metadata shipped with the device; newer roots are followed from it
    running_version: what runs now, when the agent knows it (overrides the stored state)
    """

    def __init__(
        self,
        metadata_dir: Path | str,
        base_url: str,
        trusted_root_bytes: bytes,
        device_id: str,
        group: str | None,
        model: str,
        *,
        channel: str = "stable",
        download_dir: Path | str | None = None,
        running_version: str | None = None,
        fetcher: FetcherInterface | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        if not device_id:
            raise TrustError("an update client needs a device id")
        self.metadata_dir = Path(metadata_dir)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir = Path(download_dir) if download_dir else self.metadata_dir.parent / "downloads"
        base = base_url.rstrip("/")
        self._metadata_url = f"{base}/metadata/"
        self._targets_url = f"{base}/targets/"
        self._trusted_root = trusted_root_bytes
        self.device_id = device_id
        self.group = group
        self.model = model
        self.channel = slug(channel)
        self._model_slug = slug(model)
        self._fetcher = fetcher
        self._clock = clock
        self._updater: Updater | None = None
        self._state = self._load_state()
        if running_version is not None:
            self._state["installed_version"] = running_version
            self._save_state()

    # state -----------------------------------------------------------------------------------------

    @property
    def installed_version(self) -> str | None:
        value = self._state.get("installed_version")
        return value if isinstance(value, str) else None

    def mark_installed(self, version: str) -> None:
        """Record that ``version`` now runs (the agent calls this after a successful install)."""
        self._state["installed_version"] = version
        self._save_state()

    def report(self) -> dict[str, Any]:
        """What the console needs to know: {device_id, running_version, channel, last_check, last_error}."""
        return {
            "device_id": self.device_id,
            "running_version": self.installed_version,
            "channel": self.channel,
            "last_check": self._state.get("last_check"),
            "last_error": self._state.get("last_error"),
        }

    def _load_state(self) -> dict[str, Any]:
        path = self.metadata_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.info("update state %s unreadable (%s); starting afresh", path, type(exc).__name__)
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        path = self.metadata_dir / STATE_FILE
        fd, tmp = tempfile.mkstemp(dir=self.metadata_dir, prefix=".state-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self._state, handle, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # TUF -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tuf(self, stage: str) -> Iterator[None]:
        """Map TUF's exceptions (and transport errors) to ``UpdateRefusedError``; record the last error."""
        try:
            yield
        except UpdateRefusedError as exc:
            self._fail(exc)
        except tuf_exceptions.ExpiredMetadataError as exc:
            self._fail(
                UpdateRefusedError(
                    "freeze",
                    f"refused: {exc} (stale metadata: a freeze attack or a repository not re-signed)",
                ),
                exc,
            )
        except tuf_exceptions.BadVersionNumberError as exc:
            self._fail(
                UpdateRefusedError("rollback", f"refused: {exc} (metadata older than already trusted)"),
                exc,
            )
        except tuf_exceptions.UnsignedMetadataError as exc:
            self._fail(
                UpdateRefusedError(
                    "untrusted-signature", f"refused: {exc} (not signed by a threshold of trusted keys)"
                ),
                exc,
            )
        except (tuf_exceptions.LengthOrHashMismatchError, tuf_exceptions.DownloadLengthMismatchError) as exc:
            if stage == "image":
                refusal = UpdateRefusedError(
                    "tampered", f"refused: the image does not match its signed length and hashes ({exc})"
                )
            else:
                refusal = UpdateRefusedError(
                    "mix-and-match",
                    f"refused: metadata does not match the signed snapshot/timestamp listing ({exc})",
                )
            self._fail(refusal, exc)
        except tuf_exceptions.RepositoryError as exc:
            self._fail(UpdateRefusedError("invalid", f"refused: invalid repository metadata ({exc})"), exc)
        except (tuf_exceptions.DownloadError, urllib3.exceptions.HTTPError) as exc:
            self._fail(UpdateRefusedError("download", f"cannot download {stage}: {exc}"), exc)
        except OSError as exc:
            self._fail(UpdateRefusedError("storage", f"cannot store {stage} locally: {exc}"), exc)

    def _fail(self, refusal: UpdateRefusedError, cause: BaseException | None = None) -> None:
        self._state["last_error"] = {"kind": refusal.kind, "message": str(refusal)}
        self._save_state()
        logger.warning("update %s: %s", refusal.kind, refusal)
        raise refusal from cause

    def _new_updater(self) -> Updater:
        return Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=self._metadata_url,
            target_dir=str(self.download_dir),
            target_base_url=self._targets_url,
            fetcher=self._fetcher,
            bootstrap=self._trusted_root,
        )

    def check(self) -> UpdateOffer | None:
        """Refresh the metadata and return the newest image this device may install, or None.

        Raises ``UpdateRefusedError`` when TUF refuses the repository's metadata.
        """
        self._state["last_check"] = self._clock().isoformat()
        self._state["last_error"] = None
        self._save_state()
        with self._tuf("metadata"):
            self._updater = updater = self._new_updater()  # an Updater refreshes once: one per check
            updater.refresh()
            index_info = updater.get_targetinfo(f"{self.channel}/{self._model_slug}/index.json")
        if index_info is None:
            return None
        with self._tuf("release index"):
            self.download_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.download_dir, prefix=".index-")
            os.close(fd)
            try:
                updater.download_target(index_info, filepath=tmp)
                releases = _read_index(Path(tmp))
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        installed = parse_version(self.installed_version) if self.installed_version else None
        with self._tuf("metadata"):
            for version, path in releases:
                if installed is not None and version <= installed:
                    return None  # releases are newest first: nothing newer may be installed
                offer = self._offer(updater, path, installed)
                if offer is not None:
                    return offer
        return None

    def _offer(self, updater: Updater, path: str, installed: FirmwareVersion | None) -> UpdateOffer | None:
        info = updater.get_targetinfo(path)
        if info is None or not isinstance(info.custom, dict):
            return None
        custom: dict[str, Any] = info.custom
        model, version = custom.get("model"), custom.get("version")
        if not isinstance(model, str) or not isinstance(version, str):
            return None
        if _SLUG_BAD.sub("-", model.strip().lower()).strip("-.") != self._model_slug:
            return None
        min_version = custom.get("min_version")
        if isinstance(min_version, str) and min_version:
            floor = parse_version(min_version)
            if floor is not None and (installed is None or installed < floor):
                logger.info("release %s needs %s first; skipped", version, min_version)
                return None
        rollout = custom.get("rollout")
        if rollout is not None and not isinstance(rollout, Mapping):
            return None  # malformed plan: admits nobody
        if not in_rollout(rollout, self.device_id, self.group):
            logger.info("release %s not yet rolled out to this device", version)
            return None
        notes = custom.get("release_notes")
        return UpdateOffer(
            channel=self.channel,
            model=model,
            version=version,
            min_version=min_version if isinstance(min_version, str) else None,
            release_notes=notes if isinstance(notes, str) else "",
            target_path=info.path,
            length=info.length,
            sha256=info.hashes.get("sha256", ""),
            target=info,
        )

    def download(self, offer: UpdateOffer) -> Path:
        """Download ``offer``'s image, verified by TUF against its signed length and hashes."""
        if self._updater is None:
            raise TrustError("call check() before download()")
        installed = parse_version(self.installed_version) if self.installed_version else None
        wanted = parse_version(offer.version)
        if installed is not None and (wanted is None or wanted <= installed):
            self._fail(
                UpdateRefusedError(
                    "rollback",
                    f"refused: image version {offer.version} is not newer than the running "
                    f"{self.installed_version}",
                )
            )
        with self._tuf("image"):
            self.download_dir.mkdir(parents=True, exist_ok=True)
            name = offer.target_path.rsplit("/", 1)[-1]
            destination = self.download_dir / f"{offer.sha256[:16]}-{slug(name)}"
            return Path(self._updater.download_target(offer.target, filepath=str(destination)))

    def update(self) -> Path | None:
        """``check()`` then ``download()``: the verified image's path, or None when up to date."""
        offer = self.check()
        return None if offer is None else self.download(offer)


def _read_index(path: Path) -> list[tuple[FirmwareVersion, str]]:
    """The (version, target path) pairs of a verified release index, newest first."""
    if path.stat().st_size > _MAX_INDEX:
        raise UpdateRefusedError("invalid", "release index too large")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UpdateRefusedError("invalid", f"release index is not JSON: {exc}") from exc
    rows = data.get("releases") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UpdateRefusedError("invalid", "release index has no list of releases")
    releases: list[tuple[FirmwareVersion, str]] = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        version = parse_version(row.get("version"))
        target = row.get("path")
        if version is not None and isinstance(target, str):
            releases.append((version, target))
    releases.sort(key=lambda pair: pair[0], reverse=True)
    return releases
