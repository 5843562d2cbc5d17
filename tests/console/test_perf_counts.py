"""The totals' cache under concurrency: when a kept total expires, one request recounts it and the
others meanwhile answer with the expired figure instead of counting the same rows again."""

from __future__ import annotations

import threading
import time

from fieldward.console.api.deps import CountCache


def test_an_expired_total_is_recounted_once_while_others_get_the_last_figure() -> None:
    cache = CountCache(ttl=0.2, minimum=1000)
    assert cache.count("k", lambda: 5000) == 5000
    time.sleep(0.25)  # expired
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        started.set()
        assert release.wait(5)
        return 6000

    recount = threading.Thread(target=lambda: cache.count("k", slow))
    recount.start()
    assert started.wait(5)
    others: list[int] = []

    def other() -> int:
        others.append(1)
        return 7000

    assert [cache.count("k", other) for _ in range(3)] == [5000, 5000, 5000]
    assert others == []  # nobody else counted
    release.set()
    recount.join(5)
    assert calls == [1]
    assert cache.count("k", other) == 6000  # the recount's figure, kept for the ttl


def test_a_recount_that_takes_too_long_does_not_hold_the_others_on_an_old_figure() -> None:
    cache = CountCache(ttl=0.1, minimum=1000)
    assert cache.count("k", lambda: 5000) == 5000
    started, release = threading.Event(), threading.Event()
    time.sleep(0.12)

    def stuck() -> int:
        started.set()
        assert release.wait(5)
        return 1

    recount = threading.Thread(target=lambda: cache.count("k", stuck))
    recount.start()
    assert started.wait(5)
    assert cache.count("k", lambda: 9000) == 5000
    time.sleep(0.12)  # more than ttl past the expiry: count again
    assert cache.count("k", lambda: 9000) == 9000
    release.set()
    recount.join(5)


def test_a_failed_recount_lets_the_next_request_count() -> None:
    cache = CountCache(ttl=0.05, minimum=1000)
    assert cache.count("k", lambda: 5000) == 5000
    time.sleep(0.06)

    def broken() -> int:
        raise RuntimeError("database gone")

    try:
        cache.count("k", broken)
    except RuntimeError:
        pass
    else:  # pragma: no cover - the error must propagate
        raise AssertionError("the error was swallowed")
    assert cache.count("k", lambda: 8000) == 8000
