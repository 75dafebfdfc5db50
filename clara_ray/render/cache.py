"""A thread-safe least-recently-used cache bounded by the bytes of what it holds.

The caller states each value's size (an array's ``nbytes``, a PNG's
``len``): the cache never inspects values, so it holds volumes, images and
encoded bytes alike.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["ByteLRUCache"]


class ByteLRUCache:
    """Holds values up to ``max_bytes`` in total, evicting the least recently used first."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value under ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> bool:
        """Store ``value`` of ``nbytes`` under ``key``; False (and not stored) if it exceeds the bound.

        A value replaces what ``key`` held (an oversized one drops it); the least
        recently used entries are evicted until all fit.
        """
        if nbytes < 0:
            raise ValueError(f"cache nbytes must be >= 0, got {nbytes}")
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if nbytes > self.max_bytes:
                return False
            self._items[key] = (value, nbytes)
            self._nbytes += nbytes
            while self._nbytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._nbytes -= evicted
            return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Total size of the values held."""
        with self._lock:
            return self._nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0
