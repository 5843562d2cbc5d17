"""The analyst's workflow on the alerts of an analysis folder: status, comments, learn, mute.

``fieldward analyze`` writes ``DIR/alerts.jsonl``; the analyst's decisions go next to it:

- ``DIR/triage.json``: per alert id, the status (``new`` -> ``acknowledged`` -> ``closed``, and back
  to ``new`` when reopened), the history of every action (who, when, what) and the comments. Alert
  ids are stable across runs (a hash of type, source, destination, protocol), so the state of an
  alert carries over when a later run writes the same folder and the alert fires again.
- ``DIR/baseline.json`` (:class:`~fieldward.detect.knowledge.Knowledge`): *learn* adds the alert's
  rule ``(type, src, dst)`` to ``learned`` (and, for the baseline engine, the behaviour the alert
  carries in ``details["behaviour"]`` to ``behaviours``); *mute* adds a rule to ``mutes`` (per alert
  type and device pair; either side can be widened to ``*``). The next run with ``--baseline
  DIR/baseline.json`` no longer raises them: they are counted under ``alerts_suppressed``.

Both files are written atomically (a temporary file renamed over the old one) under an advisory
lock, so a crash or two analysts at once never leave half a file. Everything the analyst can get
wrong (an unknown id, a transition that does not exist, a corrupt file) is a :class:`TriageError`
with one clear sentence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fieldward.detect.knowledge import ANY, AlertRule, Knowledge, KnowledgeError
from fieldward.detect.model import Severity, Status
from fieldward.errors import FieldWardError

__all__ = [
    "ALERTS_FILE",
    "BASELINE_FILE",
    "TRIAGE_FILE",
    "AlertFolder",
    "AlertState",
    "Comment",
    "TriageError",
    "TriageStore",
    "analyst",
    "filter_alerts",
]

ALERTS_FILE = "alerts.jsonl"
TRIAGE_FILE = "triage.json"
BASELINE_FILE = "baseline.json"
FORMAT_VERSION = 1
MAX_COMMENT = 10_000
"""Characters in one comment at most (a comment is a note, not an attachment)."""
MIN_PREFIX = 4
"""Characters of an alert id a user must type at least (a unique prefix is enough)."""

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.ACKNOWLEDGED, Status.CLOSED}),
    Status.ACKNOWLEDGED: frozenset({Status.CLOSED, Status.NEW}),
    Status.CLOSED: frozenset({Status.NEW}),
}
"""Allowed status changes: acknowledge a new alert, close a new or acknowledged one, reopen."""


class TriageError(FieldWardError):
    """A triage action that cannot be done (unknown alert, bad transition, corrupt state file)."""


def analyst() -> str:
    """Who acts, when not said: the login name (``analyst`` when there is none)."""
    try:
        return os.environ.get("USER") or getpass.getuser() or "analyst"
    except (KeyError, OSError):
        return "analyst"


def _now() -> str:
    return dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Comment:
    who: str
    when: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"who": self.who, "when": self.when, "text": self.text}


@dataclass(slots=True)
class AlertState:
    """The analyst's state of one alert."""

    status: Status = Status.NEW
    history: list[dict[str, str]] = field(default_factory=list)
    """``{"when", "who", "action", "status"}`` of every action, oldest first."""
    comments: list[Comment] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "history": list(self.history),
            "comments": [c.to_json() for c in self.comments],
        }

    @classmethod
    def from_json(cls, data: Any) -> AlertState:
        if not isinstance(data, dict):
            raise ValueError("an alert state is an object")
        status = Status(str(data.get("status", Status.NEW.value)))
        history = [{str(k): str(v) for k, v in dict(item).items()} for item in _list(data.get("history", []))]
        comments = [
            Comment(str(dict(c)["who"]), str(dict(c)["when"]), str(dict(c)["text"]))
            for c in _list(data.get("comments", []))
        ]
        return cls(status, history, comments)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, not {type(value).__name__}")
    return value


class TriageStore:
    """``DIR/triage.json``: the state of every alert the analyst touched."""

    def __init__(self, path: Path, states: dict[str, AlertState] | None = None) -> None:
        self.path = path
        self.states: dict[str, AlertState] = states if states is not None else {}

    @classmethod
    def load(cls, path: Path) -> TriageStore:
        """The store at ``path`` (empty when the file does not exist yet)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise TriageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
                raise ValueError(f"not a FieldWard triage file (format {FORMAT_VERSION} expected)")
            alerts = data.get("alerts", {})
            if not isinstance(alerts, dict):
                raise ValueError("'alerts' must be an object")
            states = {str(k): AlertState.from_json(v) for k, v in alerts.items()}
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise TriageError(f"{path} is corrupt ({exc}); repair it or remove it to start over") from exc
        return cls(path, states)

    def save(self) -> None:
        payload = {
            "format": FORMAT_VERSION,
            "updated": _now(),
            "alerts": {k: v.to_json() for k, v in sorted(self.states.items())},
        }
        _atomic_write(self.path, orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")

    def state(self, alert_id: str) -> AlertState:
        return self.states.get(alert_id) or AlertState()

    def _touch(self, alert_id: str) -> AlertState:
        return self.states.setdefault(alert_id, AlertState())

    def set_status(self, alert_id: str, status: Status, who: str, action: str | None = None) -> AlertState:
        """Change the status (TriageError when the transition does not exist)."""
        state = self._touch(alert_id)
        if status not in TRANSITIONS[state.status]:
            if status == state.status:
                raise TriageError(f"alert {alert_id} is already {status.value}")
            raise TriageError(
                f"alert {alert_id} is {state.status.value}: it cannot become {status.value} "
                f"(allowed: {', '.join(sorted(s.value for s in TRANSITIONS[state.status]))})"
            )
        state.status = status
        self.record(alert_id, who, action or status.value)
        return state

    def record(self, alert_id: str, who: str, action: str) -> None:
        state = self._touch(alert_id)
        state.history.append({"when": _now(), "who": who, "action": action, "status": state.status.value})

    def comment(self, alert_id: str, who: str, text: str) -> Comment:
        text = text.strip()
        if not text:
            raise TriageError("a comment needs some text")
        if len(text) > MAX_COMMENT:
            raise TriageError(f"a comment holds at most {MAX_COMMENT:,} characters, not {len(text):,}")
        comment = Comment(who, _now(), text)
        self._touch(alert_id).comments.append(comment)
        return comment


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An advisory lock on the folder's triage state for one read-modify-write (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: atomic replace still protects the files
        yield
        return
    with (folder / f".{TRIAGE_FILE}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class AlertFolder:
    """An analysis output folder seen by the analyst: ``alerts.jsonl`` merged with ``triage.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        if not folder.is_dir():
            raise TriageError(f"{folder} is not a folder (an output folder of fieldward analyze)")
        self.alerts_path = folder / ALERTS_FILE
        self.triage_path = folder / TRIAGE_FILE
        self.baseline_path = folder / BASELINE_FILE

    # reading -------------------------------------------------------------------------------------
    def raw_alerts(self) -> list[dict[str, Any]]:
        """The records of ``alerts.jsonl`` as analyze wrote them."""
        try:
            lines = self.alerts_path.read_bytes().split(b"\n")
        except FileNotFoundError as exc:
            raise TriageError(
                f"no {ALERTS_FILE} in {self.folder} (run fieldward analyze CAPTURE -o {self.folder})"
            ) from exc
        except OSError as exc:
            raise TriageError(f"cannot read {self.alerts_path}: {exc.strerror or exc}") from exc
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise TriageError(f"{self.alerts_path} line {number} is not JSON: {exc}") from exc
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise TriageError(f"{self.alerts_path} line {number} is not an alert record")
            records.append(record)
        return records

    def store(self) -> TriageStore:
        return TriageStore.load(self.triage_path)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert with its triage state (``status``, ``comments``, ``history``)."""
        store = self.store()
        return [merge(record, store.state(record["id"])) for record in self.raw_alerts()]

    def resolve(self, alert_id: str, records: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The alert whose id is ``alert_id`` or starts with it (at least 4 characters, unique)."""
        records = self.raw_alerts() if records is None else records
        wanted = alert_id.strip().lower()
        exact = [r for r in records if r["id"] == wanted]
        if exact:
            return exact[0]
        if len(wanted) >= MIN_PREFIX:
            found = [r for r in records if r["id"].startswith(wanted)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise TriageError(f"alert id {alert_id!r} is ambiguous: {len(found)} alerts start with it")
        raise TriageError(
            f"no alert {alert_id!r} in {self.folder} (fieldward alerts {self.folder} list shows the ids)"
        )

    def get(self, alert_id: str) -> dict[str, Any]:
        record = self.resolve(alert_id)
        return merge(record, self.store().state(record["id"]))

    # actions -------------------------------------------------------------------------------------
    def set_status(self, alert_id: str, status: Status | str, who: str | None = None) -> dict[str, Any]:
        try:
            wanted = Status(str(status).lower())
        except ValueError as exc:
            choices = ", ".join(s.value for s in Status)
            raise TriageError(f"unknown status {status!r} (one of {choices})") from exc
        record = self.resolve(alert_id)
        with _locked(self.folder):
            store = self.store()
            state = store.set_status(record["id"], wanted, who or analyst())
            store.save()
        return merge(record, state)

    def acknowledge(self, alert_id: str, who: str | None = None) -> dict[str, Any]:
        return self.set_status(alert_id, Status.ACKNOWLEDGED, who)

    def close(self, alert_id: str, who: str | None = None) -> dict[str, Any]:
        return self.set_status(alert_id, Status.CLOSED, who)

    def reopen(self, alert_id: str, who: str | None = None) -> dict[str, Any]:
        return self.set_status(alert_id, Status.NEW, who)

    def comment(self, alert_id: str, text: str, who: str | None = None) -> Comment:
        record = self.resolve(alert_id)
        with _locked(self.folder):
            store = self.store()
            comment = store.comment(record["id"], who or analyst(), text)
            store.save()
        return comment

    def learn(self, alert_id: str, who: str | None = None) -> AlertRule:
        """Mark the alert's behaviour as normal: its rule goes to ``learned`` in ``baseline.json``
        (and its baseline behaviour, if it carries one), and the alert is closed."""
        record = self.resolve(alert_id)
        rule = AlertRule(str(record["type"]), str(record["src"]), str(record["dst"]))
        who = who or analyst()
        with _locked(self.folder):
            knowledge = self._knowledge()
            knowledge.learned.add(rule)
            for category, key in behaviours_of(record):
                knowledge.learn(category, key)
            knowledge.sources.append(f"analyst {who} learned alert {record['id']} ({rule.alert_type})")
            knowledge.save(self.baseline_path)
            self._finish(record["id"], who, "learn")
        return rule

    def mute(
        self, alert_id: str, who: str | None = None, any_source: bool = False, any_destination: bool = False
    ) -> AlertRule:
        """Silence the alert type for the alert's device pair (``*`` for a widened side) in
        ``baseline.json`` ``mutes``, and close the alert."""
        record = self.resolve(alert_id)
        src = ANY if any_source else str(record["src"])
        dst = ANY if any_destination else str(record["dst"])
        rule = AlertRule(str(record["type"]), src, dst)
        who = who or analyst()
        with _locked(self.folder):
            knowledge = self._knowledge()
            knowledge.mutes.add(rule)
            knowledge.sources.append(f"analyst {who} muted {rule.alert_type} {src} -> {dst}")
            knowledge.save(self.baseline_path)
            self._finish(record["id"], who, f"mute {src} -> {dst}")
        return rule

    def _knowledge(self) -> Knowledge:
        if not self.baseline_path.exists():
            return Knowledge()
        try:
            return Knowledge.load(self.baseline_path)
        except KnowledgeError as exc:
            raise TriageError(str(exc)) from exc

    def _finish(self, alert_id: str, who: str, action: str) -> None:
        """Record an action that settles the alert: it is closed (if it was not already)."""
        store = self.store()
        if store.state(alert_id).status != Status.CLOSED:
            store.set_status(alert_id, Status.CLOSED, who, action)
        else:
            store.record(alert_id, who, action)
        store.save()


def merge(record: dict[str, Any], state: AlertState) -> dict[str, Any]:
    """An alert record with the analyst's state laid over it."""
    merged = dict(record)
    merged["status"] = state.status.value
    merged["comments"] = [c.to_json() for c in state.comments]
    merged["history"] = list(state.history)
    return merged


def behaviours_of(record: dict[str, Any]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """The baseline behaviours an alert carries, so that learning the alert teaches the baseline too.

    The baseline engine lists them in ``details["behaviours"]`` as ``[category, *key]`` lists (e.g.
    ``["pair", "10.0.0.5", "10.0.0.9"]``); ``{"category": str, "key": [str, ...]}`` objects (there or
    as ``details["behaviour"]``) are read as well, for detectors of other authors.
    """
    details = record.get("details")
    if not isinstance(details, dict):
        return
    items: list[Any] = []
    if isinstance(details.get("behaviour"), dict):
        items.append(details["behaviour"])
    if isinstance(details.get("behaviours"), list):
        items.extend(details["behaviours"])
    for item in items:
        if isinstance(item, list) and len(item) >= 2 and all(isinstance(p, str) for p in item):
            yield item[0], tuple(item[1:])
        elif isinstance(item, dict):
            category, key = item.get("category"), item.get("key")
            if isinstance(category, str) and isinstance(key, list) and key:
                yield category, tuple(str(part) for part in key)


def filter_alerts(
    records: Iterable[dict[str, Any]],
    status: Sequence[str] = (),
    severity: Sequence[str] = (),
    alert_type: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Records with one of the statuses, severities (``high+`` means high or worse) and types (an
    exact type, or an engine: ``recon`` matches ``recon.*``); an empty filter keeps everything."""
    statuses = {_choice(s, [v.value for v in Status], "status") for s in status}
    ranks: set[str] = set()
    for value in severity:
        text = value.strip().lower()
        at_least = text.endswith("+")
        name = _choice(text.rstrip("+"), [v.value for v in Severity], "severity")
        rank = Severity(name).rank
        ranks |= {s.value for s in Severity if (s.rank >= rank if at_least else s.rank == rank)}
    kinds = [t.strip() for t in alert_type]
    out = []
    for record in records:
        if statuses and record.get("status") not in statuses:
            continue
        if ranks and record.get("severity") not in ranks:
            continue
        kind = str(record.get("type", ""))
        if kinds and not any(kind == k or kind.startswith(k.rstrip(".") + ".") for k in kinds):
            continue
        out.append(record)
    return out


def _choice(value: str, choices: list[str], what: str) -> str:
    text = value.strip().lower()
    if text not in choices:
        raise TriageError(f"unknown {what} {value!r} (one of {', '.join(choices)})")
    return text


def dumps(records: Any) -> str:
    """Records as indented JSON for ``--json`` output."""
    return json.dumps(records, indent=1, ensure_ascii=False)
