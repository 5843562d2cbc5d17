"""Finding dissectors: built-in modules of this package and third-party entry points.

Built-in dissectors register themselves by existing: every public module of
``fieldward.protocols`` other than the SDK's own (``base``, ``registry``, ``engine``) is imported
and each concrete :class:`~fieldward.protocols.base.Dissector` subclass defined in it is registered,
so adding a protocol is adding one file. Third-party packages register theirs, with the same API,
under the entry-point group ``fieldward.protocols`` (the value names a Dissector subclass or a module
holding some). A plugin that fails to load is reported and skipped; it never stops the sensor.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

from fieldward.protocols.base import Dissector

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fieldward.protocols"
SDK_MODULES = frozenset({"base", "registry", "engine"})


@dataclass(frozen=True, slots=True)
class RegisteredDissector:
    dissector: type[Dissector]
    origin: str
    """``builtin`` or ``plugin:<distribution or entry point>``."""

    @property
    def name(self) -> str:
        return self.dissector.name


@dataclass(frozen=True, slots=True)
class LoadFailure:
    origin: str
    error: str


def _dissectors_in(module: ModuleType) -> list[type[Dissector]]:
    found = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, Dissector) and obj.__module__ == module.__name__ and not inspect.isabstract(obj):
            found.append(obj)
    return found


class Registry:
    """The ordered set of dissectors one run uses."""

    def __init__(self, dissectors: list[RegisteredDissector] | None = None) -> None:
        self.entries: list[RegisteredDissector] = []
        self.failures: list[LoadFailure] = []
        for entry in dissectors or []:
            self.add(entry.dissector, entry.origin)

    def add(self, dissector: type[Dissector], origin: str = "builtin") -> None:
        if any(e.name == dissector.name for e in self.entries):
            message = f"dissector name {dissector.name!r} already registered; {origin} ignored"
            self.failures.append(LoadFailure(origin, message))
            logger.warning("%s", message)
            return
        self.entries.append(RegisteredDissector(dissector, origin))

    def __iter__(self) -> Iterator[RegisteredDissector]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> type[Dissector]:
        for entry in self.entries:
            if entry.name == name:
                return entry.dissector
        raise KeyError(name)

    @classmethod
    def default(cls, plugins: bool = True) -> Registry:
        """Built-in dissectors, then (unless ``plugins`` is False) installed plugins."""
        registry = cls()
        package = importlib.import_module("fieldward.protocols")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name in SDK_MODULES or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"fieldward.protocols.{info.name}")
            for dissector in _dissectors_in(module):
                registry.add(dissector, "builtin")
        if plugins:
            registry.load_entry_points()
        return registry

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"plugin:{ep.dist.name if ep.dist else ep.name}"
            try:
                target = ep.load()
            except Exception as exc:  # a broken plugin must not stop the sensor
                self._failed(origin, f"cannot load entry point {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            if inspect.isclass(target) and issubclass(target, Dissector) and not inspect.isabstract(target):
                self.add(target, origin)
            elif inspect.ismodule(target) and _dissectors_in(target):
                for dissector in _dissectors_in(target):
                    self.add(dissector, origin)
            else:
                self._failed(
                    origin, f"entry point {ep.value!r} is not a Dissector subclass or module of them"
                )

    def _failed(self, origin: str, error: str) -> None:
        self.failures.append(LoadFailure(origin, error))
        logger.warning("%s: %s", origin, error)
