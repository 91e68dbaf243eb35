"""One shared-memory segment holding every buffer of a loader, page-aligned.

Layout
------
The arena is a single segment carved into named regions (one per output field
of the batch slots, the staging slots of a transform, the plan rows).  Every
region starts on a 4096-byte boundary, so
every array handed to the consumer is 64-byte aligned (TensorFlow and DLPack
require that) and its pages are reused epoch after epoch: writing into fresh
shared memory runs at ~1 GB/s because of page faults, into reused pages at
20-60 GB/s.  Pages are allocated only when first written, so slots reserved
for batches the consumer keeps (see ``_slots.py``) cost nothing until used.

Ownership
---------
Only the creating process unlinks the segment.  Workers attach by mapping the
``/dev/shm`` entry directly instead of through ``SharedMemory(create=False)``,
because on Python < 3.13 that registers the segment with the resource tracker
of the worker, which then unlinks it (or warns) when the worker exits.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import secrets
from dataclasses import dataclass, field
from multiprocessing import shared_memory

import numpy as np

ALIGN = 4096
SHM_PREFIX = "fastload-"


def _round_up(n: int, align: int = ALIGN) -> int:
    return -(-n // align) * align


@dataclass(frozen=True)
class Region:
    """An array of ``shape`` and ``dtype`` at byte ``offset`` of the arena."""

    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass
class Layout:
    """Named regions of an arena; picklable, sent to workers."""

    regions: dict[str, Region] = field(default_factory=dict)
    size: int = 0

    def add(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> Region:
        region = Region(self.size, tuple(int(s) for s in shape), np.dtype(dtype).str)
        self.regions[name] = region
        self.size += _round_up(max(region.nbytes, 1))
        return region


class Arena:
    """A mapped arena; ``arena[name]`` is a numpy view of a region."""

    def __init__(
        self, layout: Layout, buffer: memoryview | bytearray | mmap.mmap, owner: object
    ) -> None:
        self.layout = layout
        self._buffer = buffer
        self._owner = owner  # keeps the mapping alive while views exist
        self._views: dict[str, np.ndarray] = {}
        # per region: dtype, bytes per slot, row shape, offset (slot_array runs per batch)
        self._slot_geometry: dict[str, tuple[np.dtype, int, tuple[int, ...], int]] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        view = self._views.get(name)
        if view is None:
            r = self.layout.regions[name]
            view = np.ndarray(
                r.shape, dtype=np.dtype(r.dtype), buffer=self._buffer, offset=r.offset
            )
            self._views[name] = view
        return view

    def slot_array(self, name: str, slot: int, n: int) -> np.ndarray:
        """A new read-only array over the first ``n`` rows of slot ``slot`` of region ``name``.

        Its base is the mapping itself, not a cached view: every view derived
        from it (and every tensor made from one) keeps *this* array alive, so a
        weak reference to it tells when nothing reads the slot any more.
        """
        geometry = self._slot_geometry.get(name)
        if geometry is None:
            r = self.layout.regions[name]
            geometry = (np.dtype(r.dtype), r.nbytes // r.shape[0], r.shape[2:], r.offset)
            self._slot_geometry[name] = geometry
        dtype, stride, row_shape, offset = geometry
        root = np.ndarray(
            (n, *row_shape), dtype=dtype, buffer=self._buffer, offset=offset + slot * stride
        )
        root.flags.writeable = False
        return root

    def release(self) -> None:
        """Drop cached views (the mapping closes once no consumer view is left)."""
        self._views.clear()


class SharedArena(Arena):
    """The owner's side: creates, and finally unlinks, the shared-memory segment.

    ``SharedMemory`` creates the segment and registers it with the resource
    tracker (which unlinks it if this process is killed), but the arena maps it
    a second time with its own ``mmap`` and closes ``SharedMemory``'s mapping at
    once.  numpy views do not pin the mapping they point into, so closing it
    while the consumer still holds a batch would unmap memory under that batch
    (a segfault on its next read).  The arena's own mapping is never closed
    explicitly: it is unmapped when the arena and the last view are collected.
    """

    def __init__(self, layout: Layout) -> None:
        name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        size = max(layout.size, ALIGN)
        self.shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        try:
            mm = _map(self.shm.name, size)
        except BaseException:
            self.shm.close()
            self.shm.unlink()
            raise
        self.shm.close()  # nothing refers to this mapping: closing it is safe
        super().__init__(layout, mm, mm)
        self.name = self.shm.name

    def destroy(self) -> None:
        """Unlink the segment; the memory is freed when the last mapping goes away."""
        self.release()
        with contextlib.suppress(FileNotFoundError):
            self.shm.unlink()


def _map(name: str, size: int) -> mmap.mmap:
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def attach(name: str, layout: Layout) -> Arena:
    """Map an existing arena in a worker without involving the resource tracker."""
    mm = _map(name, max(layout.size, ALIGN))
    return Arena(layout, mm, mm)


class LocalArena(Arena):
    """Process-private arena for the thread backend (same layout, anonymous memory)."""

    def __init__(self, layout: Layout) -> None:
        mm = mmap.mmap(-1, max(layout.size, ALIGN))
        super().__init__(layout, mm, mm)
        self.name = ""

    def destroy(self) -> None:
        self.release()
