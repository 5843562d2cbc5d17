"""Default credential lists, matched in memory by the login dissectors (Telnet, FTP, HTTP Basic, MQTT).

The dissectors see user name / password pairs in clear but never store a password. Each one asks
:meth:`DefaultCredentials.match` (or :meth:`DefaultCredentials.label`) once per login, while the pair
is in memory, and writes only the names of the lists that hold the pair (the event field
``default_credential``), the way the SNMP dissector writes ``default_community`` for ``public`` and
``private``. The assessment (``fieldward.assess.configs``) judges those names.

The lists are ``data/default_credentials.yaml`` (format in ``docs/assess/configs.md``); they are read
and indexed once per process (:meth:`DefaultCredentials.load` caches the built-in file), so a match is
one dictionary lookup. Nothing here logs or returns a password.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from fieldward.errors import FieldWardError

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (about 10x faster), else the pure-Python one."""

__all__ = ["CredentialFileError", "CredentialList", "DefaultCredentials"]

BUILT_IN = "data/default_credentials.yaml"
"""The built-in lists, inside the ``fieldward.protocols`` package."""
SEPARATOR = ","
"""Joins list names in the ``default_credential`` event field (a list name holds no comma)."""


class CredentialFileError(FieldWardError):
    """A default credential file cannot be read or is not in the documented format."""


def _key(value: str | bytes) -> bytes:
    """Pairs are compared as bytes: what crossed the wire (text lists are UTF-8)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class CredentialList:
    """One list of the default credential file (a botnet's dictionary or a vendor's defaults)."""

    name: str
    vendor: str | None
    source: str
    protocols: tuple[str, ...]
    credentials: tuple[tuple[str, str], ...]

    @property
    def users(self) -> frozenset[str]:
        return frozenset(user for user, _ in self.credentials)


@dataclass(frozen=True, slots=True)
class DefaultCredentials:
    """Default user name / password pairs, by list, indexed for one-lookup matching."""

    lists: tuple[CredentialList, ...]
    _pairs: dict[tuple[bytes, bytes], tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _labels: dict[tuple[bytes, bytes], str] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, CredentialList] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs: dict[tuple[bytes, bytes], list[str]] = {}
        for item in self.lists:
            for user, password in item.credentials:
                names = pairs.setdefault((_key(user), _key(password)), [])
                if item.name not in names:
                    names.append(item.name)
        object.__setattr__(self, "_pairs", {pair: tuple(names) for pair, names in pairs.items()})
        object.__setattr__(self, "_labels", {pair: SEPARATOR.join(names) for pair, names in pairs.items()})
        object.__setattr__(self, "_by_name", {item.name: item for item in self.lists})

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path | None = None) -> DefaultCredentials:
        """The built-in lists (read once per process, then shared), or those of ``path`` (same format).

        Raises :class:`CredentialFileError` for an unreadable or malformed file.
        """
        if path is None:
            return _built_in()
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialFileError(f"cannot read the default credential file {path}: {exc}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = "default credential file") -> DefaultCredentials:
        """Lists from the YAML text of a default credential file; ``where`` names it in errors."""
        try:
            document = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as exc:
            raise CredentialFileError(f"{where}: not valid YAML: {exc}") from exc
        if (
            not isinstance(document, dict)
            or document.get("format") != 1
            or not isinstance(document.get("lists"), list)
        ):
            raise CredentialFileError(f"{where}: not a default credential file (format: 1, lists: [...])")
        lists: list[CredentialList] = []
        seen: set[str] = set()
        for number, entry in enumerate(document["lists"], 1):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
                raise CredentialFileError(f"{where}: list {number} has no name")
            name = entry["name"]
            if SEPARATOR in name or name in seen:
                raise CredentialFileError(f"{where}: list name {name!r} is repeated or holds a comma")
            seen.add(name)
            pairs = entry.get("credentials")
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in pairs
            ):
                # The message never quotes the entries: they hold passwords.
                raise CredentialFileError(
                    f"{where}: list {name!r}: credentials must be [user, password] pairs"
                )
            vendor = entry.get("vendor")
            lists.append(
                CredentialList(
                    name=name,
                    vendor=vendor if isinstance(vendor, str) else None,
                    source=str(entry.get("source") or ""),
                    protocols=tuple(str(p) for p in entry.get("protocols") or ()),
                    credentials=tuple((user, password) for user, password in pairs),
                )
            )
        return cls(tuple(lists))

    # ------------------------------------------------------------------ matching

    def match(self, user: str | bytes, password: str | bytes) -> tuple[str, ...]:
        """Names of the lists holding exactly this pair (case-sensitive, byte for byte), in file order;
        empty when none does. The pair is only looked up, never kept."""
        return self._pairs.get((_key(user), _key(password)), ())

    def label(self, user: str | bytes, password: str | bytes) -> str | None:
        """:meth:`match` as the ``default_credential`` event value: the names joined by commas, or None."""
        return self._labels.get((_key(user), _key(password)))

    def lists_with_pair(self, user: str | bytes, password: str | bytes) -> tuple[CredentialList, ...]:
        return tuple(self._by_name[name] for name in self.match(user, password))

    def named(self, names: str) -> tuple[CredentialList, ...]:
        """The lists of a ``default_credential`` value (names joined by commas; unknown names skipped:
        an event written with another credential file)."""
        return tuple(self._by_name[n] for n in names.split(SEPARATOR) if n in self._by_name)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(user for item in self.lists for user, _ in item.credentials)

    def lists_with_user(self, user: str) -> tuple[CredentialList, ...]:
        return tuple(item for item in self.lists if user in item.users)


@functools.cache
def _built_in() -> DefaultCredentials:
    """The built-in lists, parsed once per process (immutable, so sharing them holds no state)."""
    try:
        text = resources.files("fieldward.protocols").joinpath(BUILT_IN).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialFileError(f"cannot read the built-in {BUILT_IN}: {exc}") from exc
    return DefaultCredentials.parse(text, f"built-in {BUILT_IN}")
