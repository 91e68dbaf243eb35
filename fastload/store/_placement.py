"""Where a local store is written before it appears, and how it is put in place.

Both writers build a local store under a hidden sibling of its target and move
it into place only when it is complete (:func:`install`).  This module owns the
writer side of that protocol:

* **Temporaries** are named ``.NAME.zarr.fastload-tmp-PID@HOST-HEX`` (a store
  being replaced is moved aside as ``...-PID@HOST-oldHEX``).  A later writer
  removes a temporary whose writer is gone: one of *this* host whose process no
  longer exists, or one of another host (or of a fastload version that did not
  record the host) in which nothing has been modified for
  :data:`FOREIGN_TEMPORARY_IDLE_S` (a week).  Process ids mean nothing across
  hosts, so on a shared filesystem (Lustre, EOS, NFS) a live writer on another
  node is never taken for a dead one.  The parallel writer's
  ``...-fastload-tmp-parallel`` is never swept (a Dask run resumes from it).
* **Installing** happens under a commit lock (a file ``.NAME.zarr.fastload-lock``
  created with an atomic hard link, so it works on network filesystems too): a
  writer checks, renames and releases within milliseconds, so two writers
  finishing at the same moment are serialised.  With ``overwrite=True`` a
  writer replaces only the store it saw when it started; if another writer
  replaced it (or put one where there was none) meanwhile, the later one gets
  :class:`~fastload.errors.StoreExistsError` and its temporary is discarded:
  one winner, nothing half-written.  A lock left by a dead process (this host)
  or older than :data:`LOCK_STALE_S` is broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fastload._messages import missing_dependency
from fastload.errors import StoreExistsError, StoreWriteError
from fastload.store._paths import TMP_MARK, is_remote, leftover_temporaries
from fastload.store._schema import ATTR_KEY

#: A temporary of another host (or of unknown host) is removed once nothing in it
#: has changed for this long: no writer pauses a week between two chunks.
FOREIGN_TEMPORARY_IDLE_S = 7 * 24 * 3600
#: A commit lock this old is abandoned (its holder needs milliseconds).
LOCK_STALE_S = 60.0
#: How long a writer waits for another writer's commit before giving up.
LOCK_WAIT_S = 120.0
_LOCK_MARK = ".fastload-lock"
#: ``PID@HOST-HEX`` (this version) or ``PID-HEX`` (earlier versions, no host); HEX may
#: start with ``old``.  :func:`host_tag` keeps ``-`` out of HOST.
_OWNER = re.compile(r"(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9._]+))?-(?:old)?[0-9a-f]{8}")

#: What identifies the store at a target: (device, inode, store_id), or None.
Identity = tuple[int, int, str] | None


def require_fsspec(path: str) -> None:
    """Raise the missing-dependency error naming ``fastload[s3]`` for a URL without fsspec."""
    if not is_remote(path):
        return
    try:
        import fsspec  # noqa: F401
    except ModuleNotFoundError:
        raise missing_dependency("fsspec", "s3") from None


def host_tag() -> str:
    """This host's name as it appears in temporaries (characters safe in a file name)."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname()) or "unknown"


def temporary_path(target: Path, *, suffix: str = "") -> Path:
    """A fresh hidden sibling of ``target`` owned by this process on this host."""
    return target.parent / (
        f".{target.name}{TMP_MARK}{os.getpid()}@{host_tag()}-{suffix}{uuid.uuid4().hex[:8]}"
    )


def _owner(entry: Path, target: Path) -> tuple[int, str | None] | None:
    """(pid, host) from a temporary's name; host None for names without one; None if not ours."""
    match = _OWNER.fullmatch(entry.name[len(f".{target.name}{TMP_MARK}") :])
    if match is None:
        return None
    return int(match["pid"]), match["host"]


def _idle_s(entry: Path, now: float) -> float:
    """Seconds since anything in ``entry`` was modified (stops early at a recent change)."""
    newest = entry.lstat().st_mtime
    if entry.is_dir() and not entry.is_symlink():
        for folder, dirs, files in os.walk(entry):
            for name in (*dirs, *files):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            if now - newest < FOREIGN_TEMPORARY_IDLE_S:
                break
    return now - newest


def _is_stale(entry: Path, target: Path, now: float) -> bool:
    import psutil

    owner = _owner(entry, target)
    if owner is None:
        return False
    pid, host = owner
    if host == host_tag():
        return not psutil.pid_exists(pid)
    return _idle_s(entry, now) > FOREIGN_TEMPORARY_IDLE_S


def remove_stale_temporaries(target: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporaries of ``target`` whose writer is gone (see the module doc); return them."""
    removed = []
    now = time.time() if now is None else now
    for entry in leftover_temporaries(target):
        with contextlib.suppress(FileNotFoundError):  # another writer may sweep at the same time
            if not _is_stale(entry, target, now):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def store_identity(target: Path) -> Identity:
    """What is at ``target`` now: changes whenever another store is moved into place."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    store_id = ""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        meta = json.loads((target / "zarr.json").read_bytes())
        store_id = str(meta["attributes"][ATTR_KEY].get("store_id", ""))
    return (st.st_dev, st.st_ino, store_id)


def refuse_existing(state: str, path: str, *, overwrite: bool) -> None:
    """Refuse a complete store (unless ``overwrite``) and anything that is not a store."""
    if state == "complete" and not overwrite:
        raise StoreExistsError(
            f"a complete store already exists at {path!r}; pass overwrite=True "
            "(--overwrite on the command line) to replace it"
        )
    if state == "foreign":
        # overwrite=True replaces stores, never other data: a mistyped path must not
        # cost someone a directory of their files
        raise StoreExistsError(
            f"{path!r} exists and is not a fastload store; refusing to write over it "
            "even with overwrite=True (choose another path, or remove it yourself)"
        )


# ---------------------------------------------------------------------- commit lock
def _lock_is_stale(lock: Path) -> bool:
    import psutil

    try:
        age = time.time() - lock.lstat().st_mtime
        owner = json.loads(lock.read_bytes())
        pid, host = int(owner["pid"]), str(owner["host"])
    except FileNotFoundError:
        return False  # released meanwhile: just try again
    except (OSError, ValueError, KeyError, TypeError):
        return age > LOCK_STALE_S
    if host == host_tag() and not psutil.pid_exists(pid):
        return True
    return age > LOCK_STALE_S


def _break_lock(lock: Path) -> None:
    """Remove an abandoned lock; put it back if another writer re-took it meanwhile."""
    try:
        judged = lock.lstat().st_ino
        trash = lock.with_name(f"{lock.name}-broken-{uuid.uuid4().hex[:8]}")
        os.rename(lock, trash)
    except FileNotFoundError:
        return
    if trash.lstat().st_ino != judged:  # we took a fresh lock: give it back
        with contextlib.suppress(FileExistsError):
            os.link(trash, lock)
    trash.unlink(missing_ok=True)


@contextlib.contextmanager
def commit_lock(target: Path) -> Iterator[None]:
    """Hold the commit lock of ``target`` (see the module doc)."""
    lock = target.parent / f".{target.name}{_LOCK_MARK}"
    mine = target.parent / f".{target.name}{_LOCK_MARK}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mine.write_text(json.dumps({"pid": os.getpid(), "host": host_tag(), "time": time.time()}))
    deadline = time.monotonic() + LOCK_WAIT_S
    try:
        while True:
            try:
                os.link(mine, lock)  # atomic, fails if held: also on NFS, unlike O_EXCL
                break
            except FileExistsError:
                if _lock_is_stale(lock):
                    _break_lock(lock)
                    continue
                if time.monotonic() > deadline:
                    raise StoreWriteError(
                        f"another writer has held the commit lock {str(lock)!r} for more than "
                        f"{LOCK_WAIT_S:.0f} s; if no writer of {str(target)!r} is running, "
                        "remove that file"
                    ) from None
                time.sleep(0.002)
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def install(tmp: Path, target: Path, path: str, *, overwrite: bool, seen: Identity) -> None:
    """Move the complete store ``tmp`` to ``target`` (see the module doc).

    ``seen`` is :func:`store_identity` of ``target`` when the writer started: with
    ``overwrite`` only that store is replaced.

    Raises
    ------
    StoreExistsError
        A complete store is at ``target`` and ``overwrite`` is not set; another writer
        replaced the store meanwhile; or ``target`` holds something that is not a store.
    """
    from fastload.store._reader import probe_store

    aside = None
    with commit_lock(target):
        refuse_existing(probe_store(target), path, overwrite=overwrite)
        now = store_identity(target)
        if now is not None and now != seen:
            raise StoreExistsError(
                f"another writer put a store at {path!r} while this one was writing; "
                "it is kept and this writer's result was discarded (write again to replace it)"
            )
        if now is None:
            os.rename(tmp, target)
        else:
            # the old store is moved aside only now that the new one is complete; the aside
            # name is a temporary of this process, so a crash here leaves nothing a later
            # writer would not clean up
            aside = temporary_path(target, suffix="old")
            os.rename(target, aside)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(aside, target)
                raise
    if aside is not None:  # outside the lock: deleting a large store takes a while
        shutil.rmtree(aside, ignore_errors=True)
