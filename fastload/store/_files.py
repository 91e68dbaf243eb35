"""Reads of the files inside one store: regular files under the store root only, local or remote.

A store on disk is untrusted input.  Locally, the root directory is opened once
and every file is opened from it one path component at a time with
``O_NOFOLLOW`` (and ``O_NONBLOCK``), then ``fstat``-ed: only regular files are
read, each up to a size the caller bounds.  So a symlink anywhere inside the
store (to a file outside it, to ``/dev/zero``), a FIFO, a device or a socket in
place of a chunk is refused with a :class:`~fastload.errors.CorruptStoreError`
naming it, instead of being followed, blocking forever or reading until memory
runs out.  The root itself may be reached through symlinks (``/data`` ->
``/mnt/...``): only what is inside it is checked.

Holding the root open also pins the store being read.  A writer replacing a
store (``overwrite=True``) renames a new directory into place and deletes the
old one, so a reader never reads the new store's files through its old handle:
it reads the old files while they exist and then finds them gone, and the
root's identity (``st_dev``, ``st_ino``) tells that apart from damage
(:class:`~fastload.errors.StoreChangedError`).  A handle pickles as its URL and
identity; the copy in a worker process re-opens the root and refuses a
different directory.

Remote stores (fsspec URLs) are read with fsspec directly, each file with one
bounded request.  A remote handle may carry a :class:`~fastload.store._cache.ChunkCache`
(``open_store(url, cache_dir=...)``): chunk reads look there first and store
what they fetch, keyed by the object's version from one listing of its array
(see :mod:`fastload.store._cache`); metadata is always read fresh.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from typing import Any

from fastload._messages import missing_dependency
from fastload.errors import (
    CorruptStoreError,
    StoreChangedError,
    StoreError,
    StoreNotFoundError,
)
from fastload.store._paths import is_remote, local_path

logger = logging.getLogger(__name__)

#: Largest metadata file (``zarr.json``) fastload reads; real ones are a few KiB.
MAX_METADATA_BYTES = 16 * 2**20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}

#: Which version of a local file was read: dev, inode, size, mtime and ctime (ns).
FileStamp = tuple[int, int, int, int, int]
#: A file changed less than this long ago gets no stamp: kernel timestamps come
#: from a coarse clock (a few ms), so a rewrite right after a read could keep them.
SETTLE_NS = 2_000_000_000


def _stamp(st: os.stat_result) -> FileStamp | None:
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < SETTLE_NS:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _replaced_message(url: str) -> str:
    return (
        f"the store at {url!r} was replaced or removed while it was being read; "
        "re-open it (fl.open_store) and create a new Loader"
    )


class StoreFiles:
    """Bounded reads of regular files inside the store at ``url``.

    Parameters
    ----------
    url
        Local path, ``file://`` URL or fsspec URL of the store root.
    identity
        ``(st_dev, st_ino)`` the local root must have; None opens the root now
        and records it.
    cache
        A :class:`~fastload.store._cache.ChunkCache` for a remote store's chunks, or None.
    """

    def __init__(
        self, url: str, identity: tuple[int, int] | None = None, cache: Any = None
    ) -> None:
        self.url = url
        self.cache = cache if is_remote(url) else None
        self._listings: dict[str, tuple[float, dict[str, tuple[str, int, str | None]]]] = {}
        self._list_lock = threading.Lock()
        self.remote = is_remote(url)
        self.identity = identity
        self._root_path = None if self.remote else str(local_path(url))
        self._fd: int | None = None
        self._fs: Any = None
        self._fs_root = ""
        self._dirs: dict[str, int] = {}  # directory fds by key, e.g. "train/X/c"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ahead: Any = None  # the ReadAhead of this handle, once asked for
        if not self.remote and identity is None:
            self._root()  # pin the store now: later reads see this directory or fail

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "identity": self.identity, "cache": self.cache}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["identity"], state.get("cache"))  # type: ignore[misc]

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Release the root directory descriptor (reads re-open it, checking its identity)."""
        self.close_read_ahead()
        fd, self._fd = getattr(self, "_fd", None), None
        dirs, self._dirs = getattr(self, "_dirs", {}), {}
        # a plain try, not contextlib.suppress: __del__ may run at interpreter exit, when
        # module globals (contextlib, even os) may already be torn down
        try:
            for held in (*dirs.values(), *([] if fd is None else [fd])):
                os.close(held)
        except Exception:  # nothing to report to at exit
            pass

    # ------------------------------------------------------------ read-ahead
    def read_ahead(self, window_bytes: int) -> Any:
        """This handle's :class:`~fastload.store._readahead.ReadAhead` with a window of ``window_bytes``.

        Created on first use; reads of files it holds ahead take their bytes from it.
        """
        ahead = self._ahead
        if ahead is None or ahead.window_bytes != window_bytes:
            from fastload.store._readahead import ReadAhead

            if ahead is not None:
                ahead.close()
            ahead = self._ahead = ReadAhead(self, window_bytes)
        return ahead

    def close_read_ahead(self) -> None:
        """Stop reading ahead: forget what is held and stop its I/O threads (idempotent)."""
        ahead, self._ahead = getattr(self, "_ahead", None), None
        if ahead is not None:
            # not contextlib.suppress: see close(), this runs from __del__ at exit too
            try:  # noqa: SIM105
                ahead.close()
            except Exception:  # at interpreter exit there is no one to tell
                pass

    # -------------------------------------------------------------- locations
    def where(self, key: str) -> str:
        """Full path or URL of ``key`` (for messages)."""
        return f"{self.url.rstrip('/')}/{key}"

    def _root(self) -> int:
        fd = self._fd
        if fd is not None:
            return fd
        with self._lock:
            if self._fd is None:
                assert self._root_path is not None
                try:
                    fd = os.open(self._root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if self.identity is not None:
                        raise StoreChangedError(_replaced_message(self.url)) from None
                    raise StoreNotFoundError(f"no store at {self.url!r}") from None
                except OSError as exc:
                    raise StoreError(
                        f"cannot open the store directory {self.url!r}: {exc}"
                    ) from exc
                st = os.fstat(fd)
                found = (st.st_dev, st.st_ino)
                if self.identity is not None and found != self.identity:
                    os.close(fd)
                    raise StoreChangedError(_replaced_message(self.url))
                self.identity = found
                self._fd = fd
            return self._fd

    def _changed(self) -> bool:
        """True when the path no longer holds the directory this handle read from."""
        if self.remote or self.identity is None:
            return False
        try:
            st = os.stat(self._root_path)  # type: ignore[arg-type]
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    # ------------------------------------------------------------------ reads
    def read(self, key: str, limit: int, *, base: str | None = None) -> memoryview | bytes | None:
        """The bytes of file ``key`` (``"train/X/c/0/0"``), or None when it does not exist.

        See :meth:`read_stamped`, which also says which version of the file was read.
        """
        return self.read_stamped(key, limit, base=base)[0]

    def read_stamped(
        self, key: str, limit: int, *, base: str | None = None
    ) -> tuple[memoryview | bytes | None, FileStamp | None]:
        """The bytes of file ``key`` and the stamp of the local file they came from.

        The stamp (``st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns`` of the
        open descriptor) changes whenever the file is replaced, rewritten or
        touched — ``st_ctime`` cannot be set back from user space — so equal
        stamps mean the same, unmodified file.  It is None for remote stores and
        for files changed within :data:`SETTLE_NS` (coarse kernel clocks could
        give a rewrite the same timestamps).

        The local result is a view of a per-thread buffer, valid until this
        thread's next read.  Raises :class:`CorruptStoreError` for anything that
        is not a regular file of at most ``limit`` bytes, and
        :class:`StoreChangedError` when the file is gone because the store was
        replaced.  ``base``, a directory prefix of ``key`` (``"train/X/c"``), is
        opened once and kept: later reads walk only the rest of the path.
        """
        ahead = self._ahead
        held: int | None = None
        if ahead is not None and self.remote:
            found, data = ahead.take(key)
            if found:
                if data is not None and len(data) > limit:
                    raise CorruptStoreError(
                        f"{self.where(key)} is larger than the {limit} bytes it can hold; the "
                        "store is damaged, re-convert it"
                    )
                return data, None
        elif ahead is not None:
            held = ahead.take_fd(key)  # opened (and checked) the same way for its advice
        if self.remote:
            return self._fetch(key, limit, base), None
        fd = held if held is not None else self._open_local(key, base)
        if fd is None:
            if self._changed():
                raise StoreChangedError(_replaced_message(self.url))
            return None, None
        try:
            st = self._check_regular(key, fd)
            size = st.st_size
            if size > limit:
                raise CorruptStoreError(
                    f"{self.where(key)} is {size} bytes, more than the {limit} it can hold; "
                    "the store is damaged, re-convert it"
                )
            buf = getattr(self._local, "buf", None)
            if buf is None or len(buf) < size:
                # one reused buffer per thread: a fresh bytes object per chunk costs page faults
                buf = self._local.buf = bytearray(max(size, 2 * len(buf or b"")))
            view = memoryview(buf)[:size]
            got = 0
            while got < size:
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
            return view[:got], _stamp(st)
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        """True when ``key`` is a regular file inside the store (nothing is read)."""
        if self.remote:
            fs, root = self._filesystem()
            try:
                return bool(fs.isfile(f"{root}/{key}"))
            except Exception as exc:
                raise _remote_error(self.where(key), exc) from exc
        fd = self._open_local(key)
        if fd is None:
            if self._changed():
                raise StoreChangedError(_replaced_message(self.url))
            return False
        try:
            self._check_regular(key, fd)
        finally:
            os.close(fd)
        return True

    def _check_regular(self, key: str, fd: int) -> os.stat_result:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise CorruptStoreError(
                f"{self.where(key)} is {kind}, not a regular file; fastload reads only "
                "regular files inside a store — the store is damaged or tampered with, "
                "re-convert it"
            )
        return st

    def _base(self, base: str) -> int | None:
        fd = self._dirs.get(base)
        if fd is None:
            with self._lock:
                fd = self._dirs.get(base)
                if fd is None:
                    fd = self._open_local(base + "/")
                    if fd is None:
                        return None
                    self._dirs[base] = fd
        return fd

    def _open_local(self, key: str, base: str | None = None) -> int | None:
        """An fd of ``key`` (a directory when it ends in ``/``), or None when it does not exist."""
        parts = key.split("/")
        directory = parts[-1] == ""
        if directory:
            parts.pop()
        if any(p in ("", ".", "..") for p in parts):
            raise CorruptStoreError(f"{self.where(key)}: not a plain path inside the store")
        root = self._root()
        prefix: list[str] = []
        if base is not None and key.startswith(base + "/"):
            held = self._base(base)
            if held is None:
                return None
            root, prefix, parts = held, base.split("/"), key[len(base) + 1 :].split("/")
        dirfd = root
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1 and not directory
                try:
                    fd = os.open(part, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=dirfd)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    inner = "/".join([*prefix, *parts[: i + 1]])
                    if exc.errno in (errno.ELOOP, errno.EMLINK):
                        what = "a symbolic link"
                    elif exc.errno == errno.ENOTDIR:
                        what = "not a directory (or a symbolic link)"
                    else:
                        raise StoreError(f"cannot read {self.where(inner)}: {exc}") from exc
                    raise CorruptStoreError(
                        f"{self.where(inner)} is {what}; fastload follows no links inside a "
                        "store — the store is damaged or tampered with, re-convert it"
                    ) from None
                if dirfd != root:
                    os.close(dirfd)
                dirfd = fd
            return dirfd
        except BaseException:
            if dirfd != root:
                os.close(dirfd)
            raise

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            try:
                import fsspec
            except ImportError:
                raise missing_dependency("fsspec", "s3") from None
            try:
                fs, root = fsspec.core.url_to_fs(self.url)
            except ImportError as exc:  # the protocol's own package, e.g. s3fs
                module = getattr(exc, "name", None) or "s3fs"
                raise missing_dependency(module, "s3") from exc
            except (ValueError, TypeError) as exc:
                raise StoreError(f"cannot open the store URL {self.url!r}: {exc}") from exc
            self._fs, self._fs_root = fs, root.rstrip("/")
        return self._fs, self._fs_root

    def _read_remote(self, key: str, limit: int) -> bytes | None:
        fs, root = self._filesystem()
        try:
            # one bounded request: a byte more than the limit tells "too large" apart
            data = fs.cat_file(f"{root}/{key}", start=0, end=limit + 1)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise StoreError(f"no permission to read {self.where(key)}: {exc}") from exc
        except Exception as exc:  # network stacks raise their own types (botocore, aiohttp)
            raise _remote_error(self.where(key), exc) from exc
        if len(data) > limit:
            raise CorruptStoreError(
                f"{self.where(key)} is larger than the {limit} bytes it can hold; the store is "
                "damaged, re-convert it"
            )
        return bytes(data)

    # ------------------------------------------------------------ chunk cache
    def _fetch(self, key: str, limit: int, base: str | None = None) -> bytes | None:
        """Remote file ``key`` of array chunk prefix ``base``: from the chunk cache, else a GET.

        Without a cache, or without ``base`` (metadata), or when the store lists
        no version for the file, this is :meth:`_read_remote`.  What a GET
        returns is cached when it matches the listed version (size; MD5 for an
        S3 MD5 ETag): an object that changed after the listing is not.
        """
        cache = self.cache
        listed = None if cache is None or base is None else self._listed(key, base)
        if listed is None:
            return self._read_remote(key, limit)
        from fastload.store._cache import entry_name

        version, size, md5 = listed
        name = entry_name(self.url, key, version)
        data = cache.get(name, limit)
        if data is not None:
            return data
        data = self._read_remote(key, limit)
        if data is not None and _matches(data, size, md5):
            cache.put(name, data)
        return data

    def fetch_range(self, key: str, offset: int, nbytes: int, base: str) -> bytes:
        """Bytes ``[offset, offset + nbytes)`` of remote file ``key`` (a chunk in a shard), cached."""
        fs, root = self._filesystem()
        cache = self.cache
        listed = None if cache is None else self._listed(key, base)
        name = None
        if listed is not None:
            from fastload.store._cache import entry_name

            name = entry_name(self.url, key, listed[0], (offset, nbytes))
            data = cache.get(name, nbytes)
            if data is not None and len(data) == nbytes:
                return data
        try:
            data = bytes(fs.cat_file(f"{root}/{key}", start=offset, end=offset + nbytes))
        except FileNotFoundError:
            raise
        except Exception as exc:  # network stacks raise their own types (botocore, aiohttp)
            raise _remote_error(self.where(key), exc) from exc
        if name is not None and len(data) == nbytes:
            cache.put(name, data)
        return data

    def _listed(self, key: str, base: str) -> tuple[str, int, str | None] | None:
        """``(version, size, md5)`` of remote file ``key`` as the listing of ``base`` says, or None.

        One listing per array prefix and handle (``fs.find``: one request per
        1000 objects on S3), taken again after ``LISTING_TTL_S``.
        """
        from fastload.store._cache import LISTING_TTL_S

        fs, root = self._filesystem()
        held = self._listings.get(base)
        if held is None or time.monotonic() - held[0] > LISTING_TTL_S:
            with self._list_lock:
                held = self._listings.get(base)
                if held is None or time.monotonic() - held[0] > LISTING_TTL_S:
                    try:
                        found = fs.find(f"{root}/{base}", detail=True)
                    except Exception as exc:  # no listing: read without the cache
                        logger.info(
                            "cannot list %s (%s: %s): its chunks are read without the cache",
                            self.where(base),
                            type(exc).__name__,
                            exc,
                        )
                        found = {}
                    versions = {}
                    for path, info in found.items():
                        version = _version(info)
                        if version is not None:
                            versions[str(path).strip("/")] = version
                    held = (time.monotonic(), versions)
                    self._listings[base] = held
        return held[1].get(f"{root}/{key}".strip("/"))


def _version(info: dict[str, Any]) -> tuple[str, int, str | None] | None:
    """``(version, size, md5)`` of a listed object: its ETag and size, else its size and mtime."""
    size = info.get("size")
    if not isinstance(size, int) or info.get("type", "file") != "file":
        return None
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if etag:
        plain = str(etag).strip('"').lower()
        md5 = plain if len(plain) == 32 and all(c in "0123456789abcdef" for c in plain) else None
        return f"etag={etag};size={size}", size, md5
    for field in ("LastModified", "mtime", "updated", "created"):
        if info.get(field) is not None:
            return f"{field}={info[field]};size={size}", size, None
    return None


def _matches(data: bytes, size: int, md5: str | None) -> bool:
    """True when fetched ``data`` is the listed version (its size, and its MD5 when known)."""
    if len(data) != size:
        return False
    return md5 is None or hashlib.md5(data, usedforsecurity=False).hexdigest() == md5


def _remote_error(url: str, exc: Exception) -> StoreError:
    name = type(exc).__name__
    if isinstance(exc, ConnectionError | TimeoutError) or "Connect" in name or "Timeout" in name:
        return StoreError(
            f"cannot read {url}: the endpoint is unreachable ({name}: {exc}); check the URL, "
            "the endpoint setting (e.g. AWS_ENDPOINT_URL) and the network"
        )
    return StoreError(f"cannot read {url}: {name}: {exc}")
