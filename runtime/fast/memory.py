"""Memory of the compiled plan: activation buffers and kernel workspaces (im2col columns, Winograd
tiles, padded inputs) placed by liveness in one arena.

Activation buffers: the first run with given input shapes takes fresh memory for each (dropped when
the last value viewing it dies) and records every take and give; its workspaces are arrays of each
thread's `Scratch`, dropped after the step, and each step's use of it is recorded as a buffer
living for that step only: the run holds what it needs at each step and no more (a best-fit pool
of flat buffers and scratch buffers sized to the largest step held more: lenet5@32's first run
peaked at 3.81 MiB for a 2.39 MiB arena, vgg_bn@32's at 41.8 for 36.3 with its weights; now 2.41
and 36.3). At its end the recorded lifetimes are packed into
one arena, largest first, each at the lowest offset free for its whole lifetime (greedy by size, or
by size x lifetime when that packs tighter); the pool is emptied and the threads' own scratch
buffers are dropped. The following runs with those shapes replay the same takes as views of the
arena, and each step's workspaces are views of its places there: the memory held is about the
largest, over steps, of the values live at once plus that step's workspaces (the pool alone held up
to twice the values, a request taking any free buffer up to twice its size, and scratch buffers
sized to the largest step came on top), and a run allocates nothing but its outputs (which the
caller keeps). Steps decide per run (a NormStep's fused PReLU before or after its pool by the
slopes' signs, threads splitting or not), so a run with recorded shapes may take, give and use
workspaces otherwise, with the same sizes: a replay checks each take (its place in the recorded
sequence, size, dtype), each give (the take the recorded run gave there) and the bounds of each
step with workspaces against the recorded run (a list index and a comparison each: LeNet@1's 20
pool calls took 0.35 us more, 0.3% of its run). At the first difference it takes the rest from
fresh memory (values from the best-fit pool): the values placed so far are where and as long
alive as in the recording, so no value gets a place another live one holds (checking sizes
alone, a run with the other PReLU decision wrote a pooled output over the values it read); the
next run with those shapes is recorded again. A step's workspaces past their places (threads
inline) are arrays of their own; `SPILLS_TO_RECORD` such runs in a row record again.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

ALIGN = 64
"""Arena offsets are multiples of this (a cache line: SIMD loads stay aligned)."""

MAX_LAYOUTS = 16
"""Input shapes whose arena layout a pool keeps (a new one past this replaces them all)."""

MAX_VIEWS = 256
"""Views a `Scratch` keeps for reuse (a view costs ~0.5 us to make; a step takes up to 5): past
this, the cache starts afresh, so a long-lived session seeing many batch sizes (each with its
own chunk sizes and places) holds a bounded number of them."""

_NONE = float("nan")
"""An event no take or give of a replay matches (equal to no index, not < 0)."""
_STEP = 0.5
"""The end of a step with workspaces in a recorded run's events (see `Pool`)."""
_NO_EVENTS = (_NONE,)

SPILLS_TO_RECORD = 16
"""Replayed runs in a row whose workspaces went past their places (each step's past ones in
fresh memory) before the layout is recorded anew. A split call runs inline, every slice on
scratch 0, while another thread's split holds the threads (two sessions running at once), so
scratch 0 then needs more than its recorded place: recording anew after each such run made
25 of 80 runs of two inception_bn@8 sessions in two threads record (a recording run took
7.5 ms where a replay took 5.5), none with 16. Two sessions in two threads (in-process,
interleaved rounds, time per run against recording after each spilling run): inception_bn@8
0.84x, resnet20@8 0.93x, norms_acts@8 0.88x (after 2 runs: 0.93x / 0.92x, 8: 0.82-0.92x /
0.97x, never: 0.87x / 0.85x). A session alone splits every run: none spills."""

__all__ = ["ALIGN", "MAX_LAYOUTS", "MAX_VIEWS", "SPILLS_TO_RECORD", "Pool", "Scratch"]


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class Scratch:
    """Workspaces of one thread for one step at a time. Within a step, the first take of slot k
    (per dtype) places it after the slots the step placed before, at an aligned offset; later
    takes of it reuse that place when they fit (the data stays), else move it to the end (a
    step uses slots 0..4 at once, a larger take gets fresh contents as before), or grow it
    where it is when it is the last place (nothing placed after it: a step's first take of a
    slot another computation of the step took before, e.g. Winograd's weight transform, wastes
    no room). `reset()` after each step frees every place.

    The places are in the region of a `Pool`'s arena the step is bound to (`bind`, by a
    replayed run), else in the scratch's own buffer, sized to the largest step's total (where
    per-slot buffers held each slot's largest request over all steps: inception_bn@32 2.0 MiB
    per thread for 3.0). A take past the region or buffer gets an array of its own; the own
    buffer grows at the next reset (views of it may be alive until then), except in a pooled
    run (`lean`): a recording run's workspaces stay arrays of their own, dropped at each
    reset (the recording holds each step's workspaces during that step only)."""

    def __init__(self) -> None:
        self._buf = np.empty(0, np.uint8)
        # (slot, dtype) -> (elements, the placed array, its first and end offsets): this step's
        # places
        self._places: dict[tuple[int, Any], tuple[int, np.ndarray, int, int]] = {}
        self._end = 0  # bytes placed by this step (including arrays of their own)
        self._need = 0  # the largest step's total seen (own buffer)
        self._own = 0  # bytes of this step's arrays past the buffer or region
        self._views: dict[tuple[int, int, Any], np.ndarray] = {}  # (offset, elements, dtype)
        # the bound region: (arena, its first byte, its bytes), or no arena
        self._arena: np.ndarray | None = None
        self._base = self._size = 0
        self._arena_views: dict[tuple[int, int, Any], np.ndarray] = {}  # offsets in the arena
        self.lean = False  # room() is 0 (a pooled run: a step takes no more than it must)

    def take(self, slot: int, size: int, dtype: Any) -> np.ndarray:
        place = self._places.get((slot, dtype))
        if place is not None and place[0] >= size:  # taken again in this step: same memory
            return place[1][:size]
        n = max(size, 1)
        off = self._end
        if place is not None and place[3] == off:  # the last place: it grows where it is
            off = place[2]
        if self._arena is not None:
            src, views, limit, key = self._arena, self._arena_views, self._size, self._base + off
        else:
            src, views, limit, key = self._buf, self._views, self._buf.nbytes, off
        arr = views.get((key, n, dtype))  # the view this place had in an earlier step
        if arr is not None:
            end = off - (-arr.nbytes // ALIGN) * ALIGN  # (_aligned, inline: every step calls)
            if end > limit:  # (an arena view another step's larger region held)
                arr = None
        if arr is None:
            dt = np.dtype(dtype)
            end = off + _aligned(n * dt.itemsize)
            if src is self._buf:
                self._need = max(self._need, end)
            if end <= limit:
                if len(views) >= MAX_VIEWS:
                    views.clear()
                arr = views[key, n, dtype] = src[key : key + n * dt.itemsize].view(dt)
            else:  # past the buffer or region: an array of its own
                arr = np.empty(n, dt)
                self._own += arr.nbytes
        self._places[slot, dtype] = (n, arr, off, end)
        self._end = end
        return arr if n == size else arr[:size]  # (a slice is a new view: ~0.2 us)

    def reset(self) -> None:
        """The step is over: its places are free (and the scratch bound to no region); the own
        buffer grows to the largest total seen."""
        self._arena = None
        if self._places:  # (most steps take no scratch: nothing else to do)
            self._places.clear()
            self._end = self._own = 0
            if self._need > self._buf.nbytes and not self.lean:  # (see Pool.take)
                self._buf = np.empty(self._need, np.uint8)
                self._views.clear()

    def bind(self, arena: np.ndarray, offset: int, nbytes: int) -> None:
        """This step's places are `arena[offset : offset + nbytes]` (until `reset`). The pool
        `release`s the scratch before it replaces its arena: cached views are of this one."""
        self._arena, self._base, self._size = arena, offset, nbytes

    def region(self) -> tuple[np.ndarray, int, int] | None:
        """(arena, first byte, bytes) of the region this step's places are in, when every take
        so far was placed there (no array of its own); else None."""
        if self._arena is None or self._own:
            return None
        return self._arena, self._base, self._size

    def in_region(self, region: tuple[np.ndarray, int, int]) -> bool:
        """Whether this step is bound to `region` (a `region()` of an earlier run): the places
        the step's takes would get, in the order it took them then, are the same memory, and
        the layout gives the step that memory now (a layout recorded anew in the same arena
        may place the step elsewhere, or give it a region of another size)."""
        return self._arena is region[0] and self._base == region[1] and self._size == region[2]

    def used(self) -> int:
        """Bytes this step has placed so far (the region it needs)."""
        return self._end

    def release(self) -> None:
        """Drop the own buffer and every cached view (a pool's arena now holds the places)."""
        self._buf = np.empty(0, np.uint8)
        self._need = 0
        self._views.clear()
        self._arena_views.clear()

    def room(self, dtype: np.dtype) -> int:
        """Elements of `dtype` the region or buffer holds past this step's places: a step whose
        work can be chunked sizes its chunks to fit, adding no memory. 0 while `lean`, i.e. in
        every pooled run (the default inference plan): there a chunk size must follow from the
        shapes alone, so a replay asks for exactly what its recording took; the room is used
        only by runs outside the pool (keep_all, reuse=False, training)."""
        if self.lean:
            return 0
        limit = self._size if self._arena is not None else self._buf.nbytes
        return max(0, limit - self._end) // np.dtype(dtype).itemsize

    def held(self) -> int:
        return self._buf.nbytes + self._own


class Pool:
    """Flat buffers by dtype: `take` hands one out, `give` returns it. Between `begin(key)` and
    `end()` (one run), takes follow the arena layout recorded for `key` when there is one, else
    they are fresh arrays, recorded (a replay that departs from the recorded run's events, see
    `_leave`, takes the rest from the best-fit free lists); `step_begin(k)` / `step_end(k)`
    around step k bind the threads' `scratch` to the step's places in the arena (replay) or
    record what they used (recording). `allocated` counts the bytes the pool holds or has
    handed out to a recorded run; a run outside begin/end (keep_all: every buffer goes to the
    caller) takes fresh arrays that are none of the pool's."""

    def __init__(self, scratch: list[Scratch] | None = None) -> None:
        self._free: dict[np.dtype, list[tuple[int, int, np.ndarray]]] = {}
        self._serial = 0
        self.allocated = 0  # bytes held: free lists, arena, a recording run's live fresh takes
        self._out = self._spare = 0  # bytes of this run's takes not given back, of free lists
        self.scratch: list[Scratch] = scratch if scratch is not None else []
        self._layouts: dict = {}  # key -> [[offset, nbytes, dtype, ...], ...] in take order
        self._workspaces: dict = {}  # key -> {step: [(offset, nbytes) per scratch]}
        self._arena = np.empty(0, np.uint8)
        self._replay: list | None = None  # the layout being replayed
        self._ws_replay: dict = {}  # its workspaces
        self._next = 0  # its next take
        # key -> the recorded run's events: [_NONE, then per take or give in order: take k
        # as k, the give of take k as ~k, _STEP where a step with workspaces ended, _NONE for
        # a give of none of the run's takes; _NONE past the end]. A replay checks each of its
        # own against them (its clock counts them) and leaves the arena at the first that
        # differs.
        self._events: dict = {}
        self._expect: Sequence = _NO_EVENTS  # the replayed run's
        self._trace_events: list = [_NONE]  # while recording
        self._ev0 = 0  # while recording: the events before the step
        self._ws_open = False  # in a replay: the step's workspaces are bound
        self._spilled = False  # in a replay: a step's workspaces went past their places
        self._spills: dict = {}  # key -> its replayed runs in a row that spilled
        self._trace: list | None = None  # while recording: [nbytes, dtype, take, give]
        self._ws_trace: list = []  # while recording: [nbytes, None, begin, end, step, scratch]
        self._open: dict[int, tuple[list, int]] = {}  # id(buffer) -> (its trace entry, index)
        self._clock = 0
        self._t0 = 0
        self._starts: list[tuple[int, int]] = []  # while recording: (clock, step) per step
        self._ws_starts: dict[int, int] = {}  # while recording: step -> the events before it
        # key -> (step, bytes of values, bytes of workspaces) where the recorded run's live
        # bytes peaked (benchmarks/memory_breakdown.py: what sets the arena)
        self.peaks: dict = {}
        self._key = None

    @property
    def arena(self) -> np.ndarray:
        """The arena (replaced by a larger one when a recorded layout needs more)."""
        return self._arena

    @property
    def replaying(self) -> bool:
        """Whether this run replays its recorded layout (so far): a step's arrays (values and
        workspaces) are the views the previous replay handed out."""
        return self._replay is not None

    # ------------------------------------------------------------------ per run
    def begin(self, key) -> None:
        """A run with inputs described by `key` starts."""
        self._key, self._clock, self._next, self._out = key, 0, 0, 0
        self._spilled = False
        self._replay = self._layouts.get(key)
        self._ws_replay = self._workspaces.get(key, {})
        self._expect = self._events.get(key, _NO_EVENTS)
        self._ws_open = False
        if self._replay is None:
            self._trace, self._trace_events, self._ws_starts = [], [_NONE], {}
        else:
            self._trace = None
        self._ws_trace = []
        self._open = {}
        self._starts = []
        for s in self.scratch:  # chunk sizes from the shapes alone: a replay takes what the
            s.lean = True  # recording took (room left by alignment could add a chunk's item)

    def step_begin(self, k: int) -> None:
        """Step k starts: in a replay that has followed its recording so far, its workspaces
        are bound to their places."""
        if self._trace is not None:
            self._clock += 1
            self._t0 = self._clock
            self._starts.append((self._clock, k))
            self._ev0 = len(self._trace_events) - 1
        elif self._ws_replay:
            places = self._ws_replay.get(k)
            if places is not None:
                if self._clock != places[1]:  # (the events before it: the recorded ones)
                    self._leave()
                    return
                self._ws_open = True
                for s, (off, nbytes) in zip(self.scratch, places[0], strict=False):
                    if nbytes:
                        s.bind(self._arena, off, nbytes)

    def step_end(self, k: int) -> None:
        """Step k is over: record (or check) what its workspaces used; free their places."""
        if self._trace is not None:
            used = [s.used() for s in self.scratch]
            if any(used):
                self._clock += 1
                for i, nbytes in enumerate(used):
                    if nbytes:
                        self._ws_trace.append([nbytes, None, self._t0, self._clock, k, i])
                self._trace_events.append(_STEP)  # (a replay's takes stay in the step)
                self._ws_starts[k] = self._ev0
        elif self._ws_open:
            self._ws_open = False
            self._clock += 1
            if self._replay is not None and self._expect[self._clock] is not _STEP:
                self._leave()
        spilled = False
        for s in self.scratch:  # (per step: plain attribute reads, no calls)
            if s._places or s._arena is not None:  # (else nothing to reset)
                spilled = spilled or s._own > 0
                s.reset()
        if spilled and self._replay is not None:
            # Past its places (threads inline, see `SPILLS_TO_RECORD`, or a size computed from
            # values?): right, but in fresh memory
            self._spilled = True

    def _forget(self) -> None:
        """The layout of this run's key is dropped: the next run with it records anew."""
        self._layouts.pop(self._key, None)
        self._workspaces.pop(self._key, None)
        self._events.pop(self._key, None)
        self._spills.pop(self._key, None)

    def _leave(self) -> None:
        """The replayed run differs from its recording at this event (a step's per-run decision
        took other buffers, or gave them in another order: equal sizes would hand a value a
        place another live one holds): no more arena places this run (the values placed so
        far are where the recording had them, their lifetimes the recording's up to here),
        the rest from the free lists; the next run with this key records anew."""
        self._replay, self._trace, self._ws_replay = None, None, {}
        self._expect, self._ws_open = _NO_EVENTS, False
        self._forget()

    def end(self) -> None:
        """The run finished: a recorded run becomes a layout (and the arena grows to it)."""
        trace, self._trace, self._replay = self._trace, None, None
        ws_trace, self._ws_trace, self._ws_replay = self._ws_trace, [], {}
        for s in self.scratch:
            s.lean = False
        if trace is None or self._key is None:
            if self._spilled and self._key in self._layouts:
                n = self._spills.get(self._key, 0) + 1
                if n >= SPILLS_TO_RECORD:
                    self._forget()  # the next run with this key records anew
                else:
                    self._spills[self._key] = n
            elif self._spills:
                self._spills.pop(self._key, None)  # (runs in a row)
            self._key = None
            return
        if len(self._layouts) >= MAX_LAYOUTS:
            self._layouts.clear()
            self._workspaces.clear()
            self._events.clear()
            self._spills.clear()  # (counts of layouts gone: a new one starts from none)
        self._spills.pop(self._key, None)
        layout, size = _pack(trace + ws_trace, self._clock + 1)
        if len(self.peaks) >= MAX_LAYOUTS:
            self.peaks.clear()
        self.peaks[self._key] = _peak(trace, ws_trace, self._clock + 1, self._starts)
        # [offset, nbytes, dtype, then (shape, dtype), array, buffer of its last take]: a
        # replay hands out the same views of the arena again (making them took ~2 us a take)
        self._layouts[self._key] = [[*e, None, None, None] for e in layout[: len(trace)]]
        places: dict[int, list[tuple[int, int]]] = {}
        for (off, nbytes, _), entry in zip(layout[len(trace) :], ws_trace, strict=True):
            row = places.setdefault(entry[4], [(0, 0)] * len(self.scratch))
            row[entry[5]] = (off, nbytes)
        self._workspaces[self._key] = {k: (row, self._ws_starts[k]) for k, row in places.items()}
        self._events[self._key] = [*self._trace_events, _NONE]
        self._trace_events = [_NONE]
        self._ws_starts = {}
        self._key = None
        # The free lists' buffers and the threads' own scratch are no longer needed: replays
        # use the arena.
        self.allocated -= self._spare
        self._free.clear()
        self._spare = 0
        self._open = {}
        for s in self.scratch:
            s.release()
        if size > self._arena.nbytes:
            self.allocated += size - self._arena.nbytes
            self._arena = np.empty(size, np.uint8)
            for kept in self._layouts.values():  # their views are of the former arena: drop
                for entry in kept:  # them (they would keep it alive) and make them anew
                    entry[3:] = None, None, None

    def abort(self) -> None:
        """The run failed: record nothing. Its takes not given back go with the run's values
        (no longer the pool's: `allocated` drops them)."""
        live = sum(max(e[0], e[1].itemsize) for e, _ in self._open.values())
        self.allocated -= live + max(self._out, 0)
        self._out = 0
        self._trace = self._replay = self._key = None
        self._ws_trace, self._ws_replay, self._expect = [], {}, _NO_EVENTS
        self._ws_open, self._trace_events, self._ws_starts = False, [_NONE], {}
        self._open = {}
        for s in self.scratch:
            s.lean = False
            s.reset()

    # ------------------------------------------------------------------ buffers
    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """(array of `shape`, the flat buffer behind it)."""
        self._clock += 1
        replay = self._replay
        if replay is not None:
            k = self._next
            if self._expect[self._clock] == k:  # take k where the recorded run took it
                entry = replay[k]
                view = (shape, dtype)
                if entry[3] == view:  # the arrays this take returned in the previous replay
                    self._next = k + 1
                    return entry[4], entry[5]
                need = _size(shape)
                if entry[1] == need * dtype.itemsize and entry[2] == dtype:
                    self._next = k + 1
                    off = entry[0]
                    buf = self._arena[off : off + entry[1]].view(dtype)
                    arr = buf.reshape(shape)
                    entry[3:] = view, arr, buf
                    return arr, buf
            # Not the recorded run (a shape computed from values?): no more arena views this
            # run (lifetimes unknown from here on); the next run with this key records anew.
            self._leave()
        need = _size(shape)
        if self._key is None:  # not a pooled run (keep_all): the caller keeps every buffer
            buf = np.empty(max(need, 1), dtype)
            return buf[:need].reshape(shape), buf
        if self._trace is not None:  # recording: fresh memory, dropped at its give
            buf = np.empty(max(need, 1), dtype)
            self.allocated += buf.nbytes
            entry = [need * dtype.itemsize, dtype, self._clock, None]
            self._trace_events.append(len(self._trace))
            self._open[id(buf)] = entry, len(self._trace)
            self._trace.append(entry)
        else:
            buf = self._take_free(need, dtype)
        return buf[:need].reshape(shape), buf

    def _take_free(self, need: int, dtype: np.dtype) -> np.ndarray:
        free = self._free.get(dtype)
        if free:
            i = bisect.bisect_left(free, (need, -1))
            if i < len(free) and free[i][0] <= 2 * need + 1024:
                buf = free.pop(i)[2]
                self._spare -= buf.nbytes
                self._out += buf.nbytes
                return buf
        buf = np.empty(max(need, 1), dtype)
        self.allocated += buf.nbytes
        self._out += buf.nbytes
        return buf

    def give(self, buf: np.ndarray) -> None:
        self._clock += 1
        if self._replay is not None:
            code = self._expect[self._clock]
            if code < 0 and self._replay[~code][5] is buf:
                return  # the take the recorded run gave here: its place is the layout's
            self._leave()
        elif self._trace is not None:
            hit = self._open.pop(id(buf), None)
            if hit is not None:  # a recorded take: only its lifetime matters (see `take`)
                hit[0][3] = self._clock
                self._trace_events.append(~hit[1])
                self.allocated -= buf.nbytes
                return
            self._trace_events.append(_NONE)  # (none of this run's takes: never replayed)
        if buf.base is self._arena:
            return  # an arena view: its place is the layout's
        if self._key is None:
            return  # not a pooled run: dropped
        self._serial += 1
        free = self._free.setdefault(buf.dtype, [])
        bisect.insort(free, (buf.size, self._serial, buf))
        self._out -= buf.nbytes
        self._spare += buf.nbytes
        # The free lists keep at most as many bytes as the run's takes still hold: past that,
        # the largest spare buffers are dropped. They held each size's own peak until the end
        # of a recorded run (buffers of the early, large activations, too large for the later
        # takes): vgg_bn@32's first run peaked at 69 MiB, now 53 (a replay: 36).
        while self._spare > self._out and free:
            self._spare -= free[-1][2].nbytes
            self.allocated -= free.pop()[2].nbytes

    def held(self) -> int:
        return sum(b.nbytes for lst in self._free.values() for _, _, b in lst) + self._arena.nbytes


def _size(shape: tuple[int, ...]) -> int:
    need = 1
    for d in shape:  # (a loop over the axes: math.prod goes through Python's number protocol)
        need *= d
    return need


def _peak(trace: list, ws_trace: list, end: int, starts: list) -> tuple[int, int, int]:
    """(Step, bytes of values, bytes of workspaces) at the recorded run's peak of live bytes
    (the arena's lower bound; `_pack` places them at most as high): a sweep over the takes
    and gives, a buffer alive over [take, give)."""
    events: dict[int, list[int]] = {}
    for entries, kind in ((trace, 0), (ws_trace, 1)):
        for e in entries:
            t1 = end if e[3] is None else e[3]
            events.setdefault(e[2], [0, 0])[kind] += e[0]
            events.setdefault(t1, [0, 0])[kind] -= e[0]
    live = [0, 0]
    best = (-1, 0, 0)
    for t in sorted(events):  # a loop over the run's takes and gives
        live[0] += events[t][0]
        live[1] += events[t][1]
        if live[0] + live[1] > best[1] + best[2]:
            best = (t, live[0], live[1])
    i = bisect.bisect_right(starts, (best[0], len(starts) + 1)) - 1
    return (starts[i][1] if i >= 0 else -1), best[1], best[2]


def _pack(trace: list, end: int) -> tuple[list, int]:
    """Offsets for the recorded buffers ([nbytes, dtype, take, give or None, ...]), in order,
    and the arena size: `_pack_in` with the buffers taken largest first, and again largest
    (bytes x lifetime) first; the smaller arena wins (lenet5@32: 2.53 MiB by size, 2.39 by
    bytes x lifetime, its largest set alive at once; the other suite models pack as well or
    better by size)."""

    def life(k: int) -> int:
        return (end if trace[k][3] is None else trace[k][3]) - trace[k][2]

    by_size = _pack_in(trace, end, sorted(range(len(trace)), key=lambda k: -trace[k][0]))
    by_area = _pack_in(trace, end, sorted(range(len(trace)), key=lambda k: -trace[k][0] * life(k)))
    return by_area if by_area[1] < by_size[1] else by_size


def _pack_in(trace: list, end: int, order: list[int]) -> tuple[list, int]:
    """Offsets for the recorded buffers placed in `order`: each at the lowest aligned offset
    where no placed buffer whose lifetime overlaps its own sits (a buffer never given lives
    to `end`). Returns (layout in trace order, arena size)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, nbytes, take, give)
    offsets = [0] * len(trace)
    size = 0
    for k in order:  # a loop over the run's buffers (tens to hundreds)
        nbytes, _, t0, t1 = trace[k][:4]
        t1 = end if t1 is None else t1
        span = _aligned(nbytes)
        off = 0
        for p_off, p_span, *_ in sorted(p for p in placed if p[2] < t1 and t0 < p[3]):
            if p_off - off >= span:
                break
            off = max(off, p_off + p_span)
        placed.append((off, span, t0, t1))
        offsets[k] = off
        size = max(size, off + span)
    return [(offsets[k], trace[k][0], trace[k][1]) for k in range(len(trace))], size
