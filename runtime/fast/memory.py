"""Memory of the compiled plan: activation buffers placed by liveness, and a scratch arena for
kernel workspaces (im2col columns, Winograd tiles, padded inputs).

Activation buffers: the first run with given input shapes takes them from a best-fit pool of flat
buffers (a buffer goes back to the pool when the last value viewing it dies) and records every
take and give. At its end the recorded lifetimes are packed into one arena, largest first, each
at the lowest offset free for its whole lifetime (greedy by size), and the pool is emptied. The
following runs with those shapes replay the same takes as views of the arena: the memory held is
about the largest set of simultaneously live values (the pool alone held up to twice that, a
request taking any free buffer up to twice its size), and a run allocates nothing but its
outputs (which the caller keeps). A run whose takes differ from the record (sizes, count) takes
the rest from fresh memory and is recorded again.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

ALIGN = 64
"""Arena offsets are multiples of this (a cache line: SIMD loads stay aligned)."""

MAX_LAYOUTS = 16
"""Input shapes whose arena layout a pool keeps (a new one past this replaces them all)."""

__all__ = ["ALIGN", "MAX_LAYOUTS", "Pool", "Scratch"]


class Pool:
    """Flat buffers by dtype: `take` hands one out, `give` returns it. Between `begin(key)` and
    `end()` (one run), takes follow the arena layout recorded for `key` when there is one, else
    they come from the best-fit free lists and are recorded."""

    def __init__(self) -> None:
        self._free: dict[np.dtype, list[tuple[int, int, np.ndarray]]] = {}
        self._serial = 0
        self.allocated = 0  # bytes held by this pool (free lists and arena)
        self._layouts: dict = {}  # key -> [(offset, nbytes, dtype), ...] in take order
        self._arena = np.empty(0, np.uint8)
        self._replay: list | None = None  # the layout being replayed
        self._next = 0  # its next take
        self._trace: list | None = None  # while recording: [nbytes, dtype, take, give]
        self._open: dict[int, list] = {}  # id(buffer) -> its trace entry
        self._clock = 0
        self._key = None

    # ------------------------------------------------------------------ per run
    def begin(self, key) -> None:
        """A run with inputs described by `key` starts."""
        self._key, self._clock, self._next = key, 0, 0
        self._replay = self._layouts.get(key)
        self._trace = None if self._replay is not None else []
        self._open = {}

    def end(self) -> None:
        """The run finished: a recorded run becomes a layout (and the arena grows to it)."""
        trace, self._trace, self._replay = self._trace, None, None
        if trace is None or self._key is None:
            return
        if len(self._layouts) >= MAX_LAYOUTS:
            self._layouts.clear()
        layout, size = _pack(trace, self._clock + 1)
        self._layouts[self._key] = layout
        self._key = None
        # The free lists' buffers are no longer needed: replays use the arena.
        self.allocated -= sum(b.nbytes for lst in self._free.values() for _, _, b in lst)
        self._free.clear()
        self._open = {}
        if size > self._arena.nbytes:
            self.allocated += size - self._arena.nbytes
            self._arena = np.empty(size, np.uint8)

    def abort(self) -> None:
        """The run failed: record nothing."""
        self._trace = self._replay = self._key = None
        self._open = {}

    # ------------------------------------------------------------------ buffers
    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """(array of `shape`, the flat buffer behind it)."""
        need = 1
        for d in shape:
            need *= d
        self._clock += 1
        replay = self._replay
        if replay is not None:
            k = self._next
            if k < len(replay) and replay[k][1] == need * dtype.itemsize and replay[k][2] == dtype:
                self._next = k + 1
                off = replay[k][0]
                buf = self._arena[off : off + replay[k][1]].view(dtype)
                return buf.reshape(shape), buf
            # Not the recorded run (a shape computed from values?): no more arena views this
            # run (lifetimes unknown from here on); the next run with this key records anew.
            self._replay, self._trace = None, None
            self._layouts.pop(self._key, None)
        buf = self._take_free(need, dtype)
        if self._trace is not None:
            entry = [need * dtype.itemsize, dtype, self._clock, None]
            self._trace.append(entry)
            self._open[id(buf)] = entry
        return buf[:need].reshape(shape), buf

    def _take_free(self, need: int, dtype: np.dtype) -> np.ndarray:
        free = self._free.get(dtype)
        if free:
            i = bisect.bisect_left(free, (need, -1))
            if i < len(free) and free[i][0] <= 2 * need + 1024:
                return free.pop(i)[2]
        buf = np.empty(max(need, 1), dtype)
        self.allocated += buf.nbytes
        return buf

    def give(self, buf: np.ndarray) -> None:
        self._clock += 1
        if buf.base is self._arena:
            return  # an arena view: its place is the layout's
        entry = self._open.pop(id(buf), None)
        if entry is not None:
            entry[3] = self._clock
        self._serial += 1
        bisect.insort(self._free.setdefault(buf.dtype, []), (buf.size, self._serial, buf))

    def held(self) -> int:
        return sum(b.nbytes for lst in self._free.values() for _, _, b in lst) + self._arena.nbytes


def _pack(trace: list, end: int) -> tuple[list, int]:
    """Offsets for the recorded buffers ([nbytes, dtype, take, give or None]), in take order:
    largest first, each at the lowest aligned offset where no placed buffer whose lifetime
    overlaps its own sits (a buffer never given lives to `end`). Returns (layout, arena size)."""
    order = sorted(range(len(trace)), key=lambda k: -trace[k][0])
    placed: list[tuple[int, int, int, int]] = []  # (offset, nbytes, take, give)
    offsets = [0] * len(trace)
    size = 0
    for k in order:  # a loop over the run's buffers (tens to hundreds)
        nbytes, _, t0, t1 = trace[k]
        t1 = end if t1 is None else t1
        span = -(-nbytes // ALIGN) * ALIGN
        off = 0
        for p_off, p_span, *_ in sorted(p for p in placed if p[2] < t1 and t0 < p[3]):
            if p_off - off >= span:
                break
            off = max(off, p_off + p_span)
        placed.append((off, span, t0, t1))
        offsets[k] = off
        size = max(size, off + span)
    return [(offsets[k], trace[k][0], trace[k][1]) for k in range(len(trace))], size


class Scratch:
    """Workspaces of one thread: one flat byte buffer. Within a step, the first take of slot k
    (per dtype) places it after the slots the step placed before, at an aligned offset; later
    takes of it reuse that place when they fit (the data stays), else move it to the end (a
    step uses slots 0..4 at once, a larger take gets fresh contents as before). Steps run one
    at a time: `reset()` after each one frees every place. The buffer is sized to the largest
    step's total, where per-slot buffers held each slot's largest request over all steps
    (inception_bn@32: 2.0 MiB per thread for 3.0, lenet5@32 0.94 for 1.06). A take past the
    buffer during a step gets its own array, and the buffer grows at the next reset (views of
    it may be alive until then)."""

    def __init__(self) -> None:
        self._buf = np.empty(0, np.uint8)
        # (slot, dtype) -> (elements, the placed array): this step's places
        self._places: dict[tuple[int, Any], tuple[int, np.ndarray]] = {}
        self._end = 0  # bytes placed by this step (including arrays of their own)
        self._need = 0  # the largest step's total seen
        self._own = 0  # bytes of this step's arrays past the buffer
        self._views: dict[tuple[int, int, Any], np.ndarray] = {}  # (offset, elements, dtype)

    def take(self, slot: int, size: int, dtype: Any) -> np.ndarray:
        place = self._places.get((slot, dtype))
        if place is not None and place[0] >= size:  # taken again in this step: same memory
            return place[1][:size]
        n = max(size, 1)
        off = self._end
        arr = self._views.get((off, n, dtype))  # the view this place had in an earlier step
        if arr is not None:
            self._end = off + -(-arr.nbytes // ALIGN) * ALIGN
        else:
            dt = np.dtype(dtype)
            self._end = off + -(-(n * dt.itemsize) // ALIGN) * ALIGN
            self._need = max(self._need, self._end)
            if self._end <= self._buf.nbytes:
                arr = self._views[off, n, dtype] = self._buf[off : off + n * dt.itemsize].view(dt)
            else:  # past the buffer (it grows at the next reset): an array of its own
                arr = np.empty(n, dt)
                self._own += arr.nbytes
        self._places[slot, dtype] = (n, arr)
        return arr[:size]

    def reset(self) -> None:
        """The step is over: its places are free; the buffer grows to the largest total seen."""
        if self._places:  # (most steps take no scratch: nothing else to do)
            self._places.clear()
            self._end = self._own = 0
            if self._need > self._buf.nbytes:
                self._buf = np.empty(self._need, np.uint8)
                self._views.clear()

    def room(self, dtype: np.dtype) -> int:
        """Elements of `dtype` the buffer holds past this step's places: a step whose work
        can be chunked sizes its chunks to fit, adding no memory."""
        return max(0, self._buf.nbytes - self._end) // np.dtype(dtype).itemsize

    def held(self) -> int:
        return self._buf.nbytes + self._own
