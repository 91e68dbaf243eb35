"""A local on-disk cache of remote chunk bytes, shared by every process of a node.

``fl.open_store("s3://...", cache_dir=..., cache_bytes=...)`` gives the store's
:class:`~fastload.store._files.StoreFiles` a :class:`ChunkCache`; the handle
(and every copy a worker process unpickles) looks a remote chunk up here before
it issues a GET, and stores what it fetched.  Metadata (``zarr.json``) is never
cached: it is read fresh whenever a store is opened.

Keys
    An entry's name is the SHA-256 of the store URL, the chunk's key (and byte
    range, for a chunk inside a shard) and the object's version as the store
    lists it (the ETag and size on S3; size and modification time where there is
    no ETag).  A changed remote object has another version, so another name: it
    is fetched again, never served stale.  The version comes from one listing
    of the array's chunk prefix per handle (refreshed after
    :data:`LISTING_TTL_S`), not from a request per chunk.  A fetched object whose
    size (or, for an S3 MD5 ETag, whose MD5) disagrees with the listing changed
    after it was listed: it is returned but not cached.

Entries
    ``entries/<2 hex>/<name>``: a header (magic, payload length, the payload's
    CRC32C, the name's digest) and the chunk's bytes exactly as the store holds
    them.  An entry is written to ``tmp/`` and renamed into ``entries/``, so a
    killed process never leaves a half-written entry where readers look (it
    leaves a temporary, which the next eviction removes once it is
    :data:`STALE_TMP_S` old).  A read opens the entry with ``O_NOFOLLOW`` and
    reads only a regular file of the expected size whose header, digest and
    checksum match; anything else is logged, evicted and fetched again.  The
    bytes then go through the decoder's size and CRC32C checks exactly as fresh
    bytes do: the cache's own checksum catches damage to the cache, the
    decoder's catches damage to the store.

Size and eviction
    ``<cache_dir>/lock`` is locked with ``fcntl.flock`` around every change to
    the entries and holds the bytes they occupy (a ledger).  A writer counts its
    entry in the ledger before renaming it into place (a writer killed in
    between over-counts, which the next eviction corrects); when an entry would
    take the ledger past ``cache_bytes``, the writer scans the entries and deletes
    the least recently used (a read sets an entry's mtime) until they fill at
    most :data:`LOW_WATER` of the limit.  Entries in flight (``tmp/``, at most
    one chunk per I/O thread) are not counted.  Deleting an entry another
    process is reading is safe: an open descriptor survives ``unlink`` on POSIX.

Safety
    The cache directory is created with mode 0700 and must be owned by the user
    and closed to others (a writable cache is a way to feed a training job data).
    A full disk while writing an entry (``ENOSPC``, ``EDQUOT``) raises
    :class:`~fastload.errors.CacheFullError` naming the directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastload.errors import CacheError, CacheFullError, ConfigError

logger = logging.getLogger(__name__)

#: Default size limit of a cache (``cache_bytes``).
DEFAULT_CACHE_BYTES = 10 * 2**30
#: An eviction deletes entries until they fill at most this fraction of the limit.
LOW_WATER = 0.9
#: A temporary this old (seconds) was left by a killed writer: the next eviction deletes it.
STALE_TMP_S = 300.0
#: A handle lists an array's objects (their versions) again after this many seconds.
LISTING_TTL_S = 30.0

_MAGIC = b"FLCACHE1"
#: magic, payload length, CRC32C of the payload, 4 bytes of padding, SHA-256 of the name.
_HEADER = struct.Struct("<8sQI4x32s")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FULL = (errno.ENOSPC, errno.EDQUOT)


def entry_name(url: str, key: str, version: str, span: tuple[int, int] | None = None) -> str:
    """The name of the entry holding ``key`` of the store at ``url`` at ``version``.

    ``span``: ``(offset, nbytes)`` of a byte range inside the object (a chunk of a shard).
    """
    where = "" if span is None else f"{span[0]}+{span[1]}"
    text = "\0".join((url.rstrip("/"), key, version, where))
    return hashlib.sha256(text.encode()).hexdigest()


def _crc32c() -> Any:
    from fastload.store._decoder import _crc32c as crc

    return crc()


class ChunkCache:
    """Entries of at most ``max_bytes`` in total under ``directory`` (see the module docstring).

    Pickles as its directory and limit; each process opens the directory itself.

    Attributes
    ----------
    hits, misses, writes, evicted, rejected
        Counts of this process (instrumentation): entries served, looked up and
        not found, written, deleted to stay under the limit, and found damaged
        (deleted and fetched again).
    """

    def __init__(
        self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"cache_bytes must be a positive int of bytes, not {max_bytes!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_bytes = max_bytes
        self.hits = self.misses = self.writes = self.evicted = self.rejected = 0
        self._ready = False
        self._lock_fd: int | None = None
        self._thread_lock = threading.Lock()
        self._crc: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"], state["max_bytes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<fastload ChunkCache {self.directory!r} max_bytes={self.max_bytes}>"

    def __del__(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            try:  # noqa: SIM105 (not contextlib: this may run at interpreter exit)
                os.close(fd)
            except Exception:
                pass

    # ------------------------------------------------------------ directory
    def prepare(self) -> None:
        """Create (or check) the cache directory; open its lock (once per process)."""
        if self._ready:
            return
        with self._thread_lock:
            if self._ready:
                return
            root = self.directory
            try:
                os.makedirs(os.path.dirname(root), exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(root, 0o700)
                st = os.stat(root)
            except OSError as exc:
                raise self._error("cannot create the chunk cache directory", exc) from exc
            if not stat.S_ISDIR(st.st_mode):
                raise CacheError(
                    f"the chunk cache directory {root!r} is not a directory; pass another cache_dir"
                )
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise CacheError(
                    f"the chunk cache directory {root!r} is owned by uid {st.st_uid} with mode "
                    f"{stat.S_IMODE(st.st_mode):o}; it must be yours and closed to others (a "
                    f"shared cache could feed your job other data): run `chmod 700 {root}` or pass "
                    "a new cache_dir"
                )
            try:
                for sub in ("entries", "tmp"):
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(os.path.join(root, sub), 0o700)
                self._lock_fd = os.open(
                    os.path.join(root, "lock"),
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            except OSError as exc:
                raise self._error("cannot set up the chunk cache", exc) from exc
            self._ready = True

    def _error(self, what: str, exc: OSError) -> CacheError:
        if exc.errno in _FULL:
            return CacheFullError(
                f"the disk holding the chunk cache {self.directory!r} is full "
                f"({errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}) — {what}; free "
                "space there, pass a smaller cache_bytes, or pass a cache_dir on a disk with room "
                "(or open the store without cache_dir)"
            )
        return CacheError(
            f"{what} in {self.directory!r}: {exc}; check the directory or pass another cache_dir"
        )

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, "entries", name[:2], name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The lock fd, held exclusively (threads of this process and other processes alike)."""
        with self._thread_lock:
            fd = self._lock_fd
            assert fd is not None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- reads
    def get(self, name: str, limit: int) -> bytes | None:
        """The bytes of entry ``name`` (at most ``limit``), or None when it is absent or damaged."""
        self.prepare()
        path = self._path(name)
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:  # a symlink (ELOOP) or worse planted in the cache
            self._reject(path, None, f"cannot be opened ({exc})")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._reject(path, None, "is not a regular file")
                return None
            size = st.st_size
            if size < _HEADER.size or size - _HEADER.size > limit:
                self._reject(path, st, f"has {size} bytes, not a chunk of at most {limit}")
                return None
            raw = bytearray(size)
            view = memoryview(raw)
            got = 0
            while got < size:
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
            problem = self._check(name, view[:got], size)
            if problem is not None:
                self._reject(path, st, problem)
                return None
            with contextlib.suppress(OSError):
                os.utime(fd)  # least recently used goes first
        finally:
            os.close(fd)
        self.hits += 1
        return bytes(view[_HEADER.size :])

    def _check(self, name: str, raw: memoryview, size: int) -> str | None:
        if len(raw) != size:
            return f"ended after {len(raw)} of {size} bytes"
        magic, length, crc, digest = _HEADER.unpack_from(raw)
        if magic != _MAGIC or length != size - _HEADER.size or digest != bytes.fromhex(name):
            return "has a damaged header"
        if self._crc is None:
            self._crc = _crc32c()
        if self._crc(bytes(raw[_HEADER.size :])) != crc:
            return "fails its CRC32C checksum"
        return None

    def _reject(self, path: str, st: os.stat_result | None, problem: str) -> None:
        self.rejected += 1
        self.misses += 1
        logger.warning(
            "chunk cache entry %s %s: deleting it, the chunk is fetched again", path, problem
        )
        with self._locked() as fd:
            try:
                now = os.lstat(path)
            except OSError:
                return
            if st is not None and (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return  # replaced meanwhile by a good entry
            if stat.S_ISDIR(now.st_mode):
                return  # not ours to remove; it reads as a miss every time
            with contextlib.suppress(OSError):
                os.unlink(path)
                if stat.S_ISREG(now.st_mode):
                    _write_ledger(fd, max(0, (_read_ledger(fd) or 0) - now.st_size))

    # --------------------------------------------------------------- writes
    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store ``data`` as entry ``name`` (atomically; evicting to stay under the limit).

        Raises :class:`~fastload.errors.CacheFullError` when the disk is full.
        """
        self.prepare()
        size = _HEADER.size + len(data)
        if size > self.max_bytes:
            return  # larger than the whole cache: never cached
        if self._crc is None:
            self._crc = _crc32c()
        header = _HEADER.pack(_MAGIC, len(data), self._crc(bytes(data)), bytes.fromhex(name))
        path = self._path(name)
        tmp = os.path.join(
            self.directory, "tmp", f"{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise self._error("cannot create a cache entry", exc) from exc
        try:
            try:
                _write_all(fd, header, data)
            finally:
                os.close(fd)
            with self._locked() as lock:
                if os.path.lexists(path):
                    return  # another process cached it meanwhile
                used = _read_ledger(lock)
                if used is None or used + size > self.max_bytes:
                    used = self._evict(int(self.max_bytes * LOW_WATER) - size)
                _write_ledger(lock, used + size)  # before the rename: a kill over-counts
                with contextlib.suppress(FileExistsError):
                    os.mkdir(os.path.dirname(path), 0o700)
                os.rename(tmp, path)
                tmp = ""
                self.writes += 1
        except OSError as exc:
            raise self._error(f"cannot write the cache entry of {len(data)} bytes", exc) from exc
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _evict(self, target: int) -> int:
        """(Locked.) Delete the least recently used entries until they fill at most ``target`` bytes.

        Also deletes stale temporaries.  Returns the bytes the entries fill.
        """
        found: list[tuple[int, int, str]] = []
        entries = os.path.join(self.directory, "entries")
        for sub in _scan(entries):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for item in _scan(sub.path):
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append((st.st_mtime_ns, st.st_size, item.path))
                elif stat.S_ISLNK(st.st_mode):
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
        total = sum(size for _, size, _ in found)
        found.sort()
        for _, size, path in found:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                self.evicted += 1
            total -= size
        stale = time.time() - STALE_TMP_S
        for item in _scan(os.path.join(self.directory, "tmp")):
            with contextlib.suppress(OSError):
                if item.stat(follow_symlinks=False).st_mtime < stale:
                    os.unlink(item.path)
        return max(total, 0)

    # ------------------------------------------------------------ inspection
    def usage(self) -> int:
        """Bytes the entries fill now (a scan; for tests and reports)."""
        self.prepare()
        total = 0
        for sub in _scan(os.path.join(self.directory, "entries")):
            for item in _scan(sub.path):
                with contextlib.suppress(OSError):
                    st = item.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
        return total

    def names(self) -> list[str]:
        """Names of the entries present now."""
        self.prepare()
        return sorted(
            item.name
            for sub in _scan(os.path.join(self.directory, "entries"))
            for item in _scan(sub.path)
        )

    def verify(self, name: str) -> str | None:
        """What is wrong with entry ``name`` on disk, or None when it is intact (tests)."""
        path = self._path(name)
        with open(path, "rb") as fh:
            raw = fh.read()
        return self._check(name, memoryview(raw), len(raw))


def _scan(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_ledger(fd: int) -> int | None:
    raw = os.pread(fd, 8, 0)
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def _write_ledger(fd: int, value: int) -> None:
    os.pwrite(fd, int(value).to_bytes(8, "little"), 0)


def _write_all(fd: int, *parts: bytes | memoryview) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            n = os.write(fd, view)
            view = view[n:]
