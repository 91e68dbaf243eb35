"""Read-ahead of the chunk files a reader decodes next, inside a byte window.

A loader worker learns which chunks it decodes next (the tasks queued for it,
in the epoch plan's order) and tells its decoders; each decoder hands the chunk
files to the :class:`ReadAhead` of its store (:class:`~.StoreFiles` owns one per
process or thread), which starts reading them while the worker decodes:

local files
    ``posix_fadvise(POSIX_FADV_WILLNEED)`` on each file: the kernel queues the
    reads at once and keeps the pages in the page cache, where the worker's
    ordinary read finds them.  No thread, no copy; a few read requests per
    worker in flight instead of one.
remote stores (fsspec)
    a small pool of I/O threads issues the bounded GETs concurrently and keeps
    the bytes until the decoder asks for them.

Every local file is advised, however small: a cold one read only when its turn
comes would cost the worker a whole device latency (TopTagging's 800-byte
label chunks, one per 750 kB feature chunk, cost ~20% of the cold rate before).
A local file whose last page is already in the page cache (a one-byte
``preadv(RWF_NOWAIT)``, ~10 µs) is taken as cached and not advised: advising a
cached file walks all its pages (~80 µs for 800 kB), which a warm epoch would
pay for nothing.

Either way at most ``window_bytes`` of compressed bytes are held ahead at any
time: a local file counts its size from the advice until it is read, a remote
one its upper bound (the chunk's size limit) from the request until its bytes
are received, then its real size until it is read.  A file that does not fit is
not read ahead now (it is read as before when its turn comes).  Nothing changes
what is decoded: the decoder reads and verifies the bytes exactly as without
read-ahead (a failed read-ahead is forgotten and the file read again, so its
error is the one a direct read raises).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastload.store._files import StoreFiles

logger = logging.getLogger(__name__)

#: Concurrent GETs per worker for a remote store.
REMOTE_THREADS = 8
#: Local files held open between their advice and their read, at most.
MAX_LOCAL_FILES = 64


class ReadAhead:
    """Reads files of one store ahead of their use, never holding more than ``window_bytes``.

    Attributes
    ----------
    window_bytes
        The byte window (compressed bytes).
    held_bytes
        Bytes held ahead now (see the module docstring for how they count).
    max_held_bytes
        The most ever held at once (instrumentation: tests check it against the window).
    started
        Files whose read-ahead was started.
    """

    def __init__(self, files: StoreFiles, window_bytes: int) -> None:
        self.files = files
        self.window_bytes = int(window_bytes)
        self.held_bytes = 0
        self.max_held_bytes = 0
        self.started = 0
        self._held: dict[str, int] = {}  # key -> bytes counted for it
        self._futures: dict[str, Future[Any]] = {}  # remote: key -> its GET
        self._fds: dict[str, int] = {}  # local: key -> the descriptor it was advised through
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ---------------------------------------------------------------- requests
    def want(self, key: str, limit: int, base: str | None = None) -> bool:
        """Start reading file ``key`` (at most ``limit`` bytes) ahead; False when the window is full.

        A file already held ahead is not read twice (True).  Errors are not
        raised here: the decoder's own read reports them.
        """
        if self._closed:
            return False
        with self._lock:
            if key in self._held:
                return True
        if self.files.remote:
            return self._want_remote(key, limit, base)
        # small files too: a cold one read when its turn comes costs the worker a whole device
        # latency, advised it is one more request in the queue (a cached one is skipped below)
        return self._want_local(key, limit, base)

    def _reserve(self, key: str, nbytes: int) -> bool:
        with self._lock:
            if self.held_bytes + nbytes > self.window_bytes:
                return False
            self._held[key] = nbytes
            self.held_bytes += nbytes
            self.max_held_bytes = max(self.max_held_bytes, self.held_bytes)
            self.started += 1
            return True

    def _release(self, key: str) -> None:
        with self._lock:
            self.held_bytes -= self._held.pop(key, 0)

    def _want_local(self, key: str, limit: int, base: str | None) -> bool:
        if len(self._fds) >= MAX_LOCAL_FILES:
            return False
        try:
            fd = self.files._open_local(key, base)
        except Exception:  # damage: the decoder's read says what it is
            return True
        if fd is None:
            return True
        keep = False
        try:
            st = os.fstat(fd)
            if not _regular(st.st_mode) or st.st_size > limit or _cached(fd, st.st_size):
                return True
            if not self._reserve(key, st.st_size):
                return False
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError as exc:  # a filesystem without fadvise: nothing is read ahead
                logger.debug("no read-ahead for %s: %s", self.files.where(key), exc)
                self._release(key)
                return True
            with self._lock:
                self._fds[key] = fd  # the read uses it: no second path walk
            keep = True
            return True
        finally:
            if not keep:
                os.close(fd)

    def _want_remote(self, key: str, limit: int, base: str | None) -> bool:
        if not self._reserve(key, limit):
            return False
        if self._pool is None:
            self._pool = ThreadPoolExecutor(REMOTE_THREADS, thread_name_prefix="fastload-readahead")
        future = self._pool.submit(self.files._fetch, key, limit, base)  # through the chunk cache
        with self._lock:
            self._futures[key] = future
        future.add_done_callback(lambda f, key=key: self._received(key, f))
        return True

    def _received(self, key: str, future: Future[Any]) -> None:
        """A GET finished: count its real size instead of its bound."""
        try:
            data = future.result()
        except BaseException:
            return  # kept (counted at its bound) until taken: take() reads it again
        size = 0 if data is None else len(data)
        with self._lock:
            if key in self._held and self._held[key] > size:
                self.held_bytes -= self._held[key] - size
                self._held[key] = size

    # ------------------------------------------------------------------- reads
    def take_fd(self, key: str) -> int | None:
        """The open descriptor of local file ``key`` read ahead (the caller closes it), else None."""
        with self._lock:
            fd = self._fds.pop(key, None)
            self.held_bytes -= self._held.pop(key, 0)
        return fd

    def take(self, key: str) -> tuple[bool, bytes | None]:
        """``(True, bytes)`` of a remote file read ahead (waiting for its GET), else ``(False, None)``.

        A local file read ahead only stops counting: its bytes are in the page cache.
        """
        with self._lock:
            future = self._futures.pop(key, None)
        if future is None:
            self._release(key)
            return False, None
        try:
            data = future.result()
        except Exception:  # read it again: the direct read raises (or recovers) as usual
            return False, None
        finally:
            self._release(key)
        return True, data

    def close(self) -> None:
        """Forget everything held ahead and stop the I/O threads (idempotent)."""
        self._closed = True
        with self._lock:
            futures, self._futures = list(self._futures.values()), {}
            fds, self._fds = list(self._fds.values()), {}
            self._held.clear()
            self.held_bytes = 0
        for fd in fds:
            os.close(fd)
        pool, self._pool = self._pool, None
        for future in futures:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _cached(fd: int, size: int) -> bool:
    """Whether the file's last byte is in the page cache (then, read in order, the file is).

    A read with ``RWF_NOWAIT`` fails instead of waiting for the disk (and the
    kernel starts reading the file then, as the advice would).  Where it is not
    supported the answer is False: the file is advised, as before the check.
    """
    if size <= 0 or _NOWAIT is None:
        return False
    try:
        return os.preadv(fd, [bytearray(1)], size - 1, _NOWAIT) == 1
    except OSError:  # BlockingIOError: not cached; EOPNOTSUPP and the like: cannot tell
        return False


_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


def _regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
