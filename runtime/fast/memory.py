"""Memory of the compiled plan: a pool of activation buffers reused by liveness, and a scratch
arena for kernel workspaces (im2col columns, Winograd tiles, padded inputs).

The pool hands out flat buffers viewed in the requested shape. A value's buffer goes back to the
pool when the last value viewing it dies, so the next node (or the next run) reuses it: after the
first run, a run allocates no activation memory at all except its outputs (which the caller
keeps). A buffer is reused for a request of at least half its size (best fit), which keeps
fragmentation, and so the peak, close to the largest set of simultaneously live values.
"""

from __future__ import annotations

import bisect

import numpy as np

__all__ = ["Pool", "Scratch"]


class Pool:
    """Flat buffers by dtype, sorted by size; `take` best-fits, `give` returns."""

    def __init__(self) -> None:
        self._free: dict[np.dtype, list[tuple[int, int, np.ndarray]]] = {}
        self._serial = 0
        self.allocated = 0  # bytes ever allocated by this pool (held between runs)

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """(array of `shape`, the flat buffer behind it)."""
        need = 1
        for d in shape:
            need *= d
        free = self._free.get(dtype)
        if free:
            i = bisect.bisect_left(free, (need, -1))
            if i < len(free) and free[i][0] <= 2 * need + 1024:
                _, _, buf = free.pop(i)
                return buf[:need].reshape(shape), buf
        buf = np.empty(max(need, 1), dtype)
        self.allocated += buf.nbytes
        return buf[:need].reshape(shape), buf

    def give(self, buf: np.ndarray) -> None:
        self._serial += 1
        bisect.insort(self._free.setdefault(buf.dtype, []), (buf.size, self._serial, buf))

    def forget(self, nbytes: int) -> None:
        """A buffer left the pool for good (handed to the caller as an output)."""
        self.allocated -= nbytes

    def held(self) -> int:
        return sum(b.nbytes for lst in self._free.values() for _, _, b in lst)


class Scratch:
    """Workspaces: slot k is one flat buffer per dtype, grown to the largest request seen. Steps
    run one at a time, so every step shares the same slots (a step uses slots 0..4 at once)."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, np.dtype], np.ndarray] = {}

    def take(self, slot: int, size: int, dtype: np.dtype) -> np.ndarray:
        key = (slot, np.dtype(dtype))
        buf = self._slots.get(key)
        if buf is None or buf.size < size:
            buf = np.empty(max(size, 1), dtype)
            self._slots[key] = buf
        return buf[:size]

    def held(self) -> int:
        return sum(b.nbytes for b in self._slots.values())
