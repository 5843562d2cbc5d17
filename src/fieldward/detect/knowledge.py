"""What the sensor has been taught: the learned baseline and the analyst's decisions.

One JSON file (``baseline.json`` in the output folder of ``fieldward analyze``) carries:

- ``behaviours``: what the learning period saw, per category (device, communication pair, protocol
  between two devices, function code per pair, ...). The baseline engine fills it while learning and
  alerts on what is not in it afterwards.
- ``learned``: alerts the analyst marked as normal (``fieldward alerts DIR learn ID``): the same
  alert type between the same source and destination no longer alerts.
- ``mutes``: alert types silenced per device pair (``*`` matches any address); muted alerts are
  counted, not raised.
- ``models``: per-detector state that is not a set of keys (the anomaly engine's trained models).

The file is plain JSON (sorted, versioned) so it can be reviewed and kept under change control.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldward.errors import FieldWardError

FORMAT_VERSION = 1
ANY = "*"


class KnowledgeError(FieldWardError):
    """A baseline file that cannot be read."""


@dataclass(frozen=True, slots=True, order=True)
class AlertRule:
    """An alert type between a source and a destination; ``*`` matches any address."""

    alert_type: str
    src: str = ANY
    dst: str = ANY

    def matches(self, alert_type: str, src: str, dst: str) -> bool:
        return self.alert_type in (alert_type, ANY) and self.src in (src, ANY) and self.dst in (dst, ANY)

    def to_json(self) -> dict[str, str]:
        return {"type": self.alert_type, "src": self.src, "dst": self.dst}


@dataclass
class Knowledge:
    """The baseline and the analyst's decisions (see the module docstring)."""

    behaviours: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    learned: set[AlertRule] = field(default_factory=set)
    mutes: set[AlertRule] = field(default_factory=set)
    models: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    """What the baseline was learned from (capture names, analyst actions), oldest first."""

    # behaviours -----------------------------------------------------------------------------------
    def knows(self, category: str, key: tuple[str, ...]) -> bool:
        keys = self.behaviours.get(category)
        return keys is not None and key in keys

    def learn(self, category: str, key: tuple[str, ...]) -> bool:
        """Add a behaviour; True when it was new."""
        keys = self.behaviours.setdefault(category, set())
        if key in keys:
            return False
        keys.add(key)
        return True

    def category(self, name: str) -> set[tuple[str, ...]]:
        return self.behaviours.setdefault(name, set())

    # analyst decisions ----------------------------------------------------------------------------
    def is_learned(self, alert_type: str, src: str, dst: str) -> bool:
        return any(rule.matches(alert_type, src, dst) for rule in self.learned)

    def is_muted(self, alert_type: str, src: str, dst: str) -> bool:
        return any(rule.matches(alert_type, src, dst) for rule in self.mutes)

    @property
    def empty(self) -> bool:
        return not (any(self.behaviours.values()) or self.learned or self.mutes or self.models)

    # persistence ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "updated": dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sources": list(self.sources),
            "behaviours": {
                name: sorted(list(key) for key in keys) for name, keys in sorted(self.behaviours.items())
            },
            "learned": [rule.to_json() for rule in sorted(self.learned)],
            "mutes": [rule.to_json() for rule in sorted(self.mutes)],
            "models": self.models,
        }

    def save(self, path: Path) -> None:
        """Write atomically (a crash never leaves half a baseline)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: Any) -> Knowledge:
        if not isinstance(data, dict):
            raise KnowledgeError("a baseline file holds one JSON object")
        if data.get("format") != FORMAT_VERSION:
            raise KnowledgeError(
                f"unsupported baseline format {data.get('format')!r} (expected {FORMAT_VERSION})"
            )
        try:
            behaviours = {
                str(name): {tuple(str(part) for part in key) for key in keys}
                for name, keys in dict(data.get("behaviours", {})).items()
            }
            learned = set(_rules(data.get("learned", [])))
            mutes = set(_rules(data.get("mutes", [])))
            models = dict(data.get("models", {}))
            sources = [str(s) for s in data.get("sources", [])]
        except (TypeError, ValueError, KeyError) as exc:
            raise KnowledgeError(f"malformed baseline file: {exc}") from exc
        return cls(behaviours=behaviours, learned=learned, mutes=mutes, models=models, sources=sources)

    @classmethod
    def load(cls, path: Path) -> Knowledge:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise KnowledgeError(f"no baseline file at {path}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KnowledgeError(f"cannot read baseline file {path}: {exc}") from exc
        return cls.from_json(data)


def _rules(items: Iterable[Any]) -> Iterator[AlertRule]:
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ValueError(f"not an alert rule: {item!r}")
        yield AlertRule(str(item["type"]), str(item.get("src", ANY)), str(item.get("dst", ANY)))
