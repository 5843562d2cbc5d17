"""MAC address vendor look-up in the IEEE MA-L registry, as shipped (and kept current) by netaddr.

The registry is a maintained data package, not a table typed by hand: upgrading ``netaddr`` brings
the IEEE's newer assignments. Locally administered addresses (randomised MACs of phones and
virtual machines) have no registered vendor and are reported as such.
"""

from __future__ import annotations

from functools import lru_cache

from netaddr import EUI
from netaddr.core import NotRegisteredError

LOCAL_BIT = 0x02
"""Second-least significant bit of the first octet: a locally administered address."""


class OuiRegistry:
    """``organisation(mac)``: the IEEE registrant of a MAC's OUI, or None."""

    def organisation(self, mac: str) -> str | None:
        text = mac.strip().lower()
        if len(text) != 17:
            return None
        try:
            first = int(text[:2], 16)
        except ValueError:
            return None
        if first & LOCAL_BIT or first & 0x01:
            return None
        return _lookup(text[:8])


@lru_cache(maxsize=65536)
def _lookup(prefix: str) -> str | None:
    try:
        org = EUI(prefix + ":00:00:00").oui.registration().org
    except (NotRegisteredError, ValueError, IndexError):
        return None
    text = " ".join(str(org).split())
    return text or None
