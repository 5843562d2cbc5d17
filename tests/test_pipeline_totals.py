"""TrafficTotals' distinct addresses: the uint64 shortcut finds what a 16-byte comparison finds."""

from __future__ import annotations

import numpy as np
import pytest

from fieldward.pipeline import _distinct_addresses


def _reference(addresses: np.ndarray) -> set[bytes]:
    return {u.tobytes() for u in np.unique(np.ascontiguousarray(addresses).view(np.dtype((np.void, 16))))}


@pytest.mark.parametrize("ipv6_share", [0.0, 0.1, 0.9, 1.0])
@pytest.mark.parametrize("seed", [1, 2])
def test_distinct_addresses_match_a_16_byte_unique(ipv6_share: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = np.zeros((400, 16), np.uint8)
    pool[:, 10:12] = 0xFF  # IPv4-mapped
    pool[:, 12:] = rng.integers(0, 256, (400, 4))
    v6 = rng.random(400) < ipv6_share
    pool[v6] = rng.integers(0, 256, (int(v6.sum()), 16))
    pool[v6, 0] = 0x20
    pool[-1, 8:] = pool[0, 8:]  # same lower half as the first, other upper half (when IPv6)
    pool[-1, 0] ^= 0x01
    addresses = pool[rng.integers(0, 400, 5000)]
    assert _distinct_addresses(addresses) == _reference(addresses)
    assert _distinct_addresses(addresses[:1]) == {addresses[0].tobytes()}
