"""The byte-bounded LRU cache."""

from __future__ import annotations

import threading

import pytest

from clara_ray.render.cache import ByteLRUCache


def test_evicts_least_recently_used_beyond_the_bound() -> None:
    cache = ByteLRUCache(100)
    assert cache.put("a", "A", 40)
    assert cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # "b" is now the least recently used
    assert cache.put("c", "C", 40)
    assert "b" not in cache
    assert cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.nbytes == 80 and len(cache) == 2


def test_eviction_order_is_by_use() -> None:
    cache = ByteLRUCache(30)
    for key in "xyz":
        cache.put(key, key, 10)
    cache.get("x")
    cache.put("w", "w", 20)  # evicts y then z, keeps the recently read x
    assert [k for k in "xyzw" if k in cache] == ["x", "w"]


def test_oversized_value_is_not_cached() -> None:
    cache = ByteLRUCache(50)
    cache.put("small", 1, 10)
    assert cache.put("big", 2, 51) is False
    assert "big" not in cache and cache.get("small") == 1
    assert cache.nbytes == 10


def test_replacing_a_key_updates_its_size() -> None:
    cache = ByteLRUCache(50)
    cache.put("k", 1, 30)
    cache.put("k", 2, 20)
    assert cache.get("k") == 2 and cache.nbytes == 20 and len(cache) == 1
    cache.put("k", 3, 60)  # too big: the key no longer holds a stale value either
    assert cache.get("k", "missing") == "missing" and cache.nbytes == 0


def test_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match=r"cache max_bytes must be >= 0, got -1"):
        ByteLRUCache(-1)
    with pytest.raises(ValueError, match=r"cache nbytes must be >= 0, got -5"):
        ByteLRUCache(10).put("k", 1, -5)


def test_concurrent_puts_keep_the_bound() -> None:
    cache = ByteLRUCache(1000)

    def worker(n: int) -> None:
        for i in range(500):
            cache.put((n, i), i, 7)
            cache.get((n, i - 3))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes <= 1000 and cache.nbytes == 7 * len(cache)
