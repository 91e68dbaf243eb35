"""Where a user's feeds listen: one private directory per user, one socket per feed.

The directory is ``$FASTLOAD_FEED_DIR`` if set, else ``$XDG_RUNTIME_DIR/fastload-feeds``
(a per-user tmpfs the login manager creates with mode 0700), else
``/tmp/fastload-feeds-<uid>``.  It is created with mode 0700 and, before it is
used, checked to be a real directory (not a link) owned by this user and closed
to everyone else: only the owner can connect to a socket inside, so no other
uid can attach.  Names are per user, so two users on one node never collide.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from fastload.errors import ConfigError, FeedAccessError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SOCKET_SUFFIX = ".sock"


def check_name(name: object) -> str:
    """A feed name: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting alphanumeric."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"feed name must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or "
            f"digit, got {name!r}"
        )
    return name


def feed_dir() -> Path:
    """This user's feed directory (not created)."""
    override = os.environ.get("FASTLOAD_FEED_DIR")
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.getuid():
        return Path(runtime) / "fastload-feeds"
    return Path("/tmp") / f"fastload-feeds-{os.getuid()}"


def check_dir(path: Path) -> None:
    """Refuse a directory that is not this user's own private one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise FeedAccessError(f"feed directory {path} is not a directory; remove it")
    if st.st_uid != uid:
        raise FeedAccessError(
            f"feed directory {path} belongs to uid {st.st_uid}, not to you (uid {uid}): feeds are "
            "private to the user who started them; start your own feed"
        )
    if st.st_mode & 0o077:
        raise FeedAccessError(
            f"feed directory {path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 700 {path}`"
        )


def ensure_dir() -> Path:
    """Create (mode 0700) and check this user's feed directory."""
    path = feed_dir()
    try:
        path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    check_dir(path)
    return path


def socket_path(name: str, directory: Path | None = None) -> Path:
    """The socket of feed ``name``."""
    return (directory or feed_dir()) / f"{check_name(name)}{SOCKET_SUFFIX}"


def listed() -> list[str]:
    """Names of the sockets in this user's feed directory (running or stale)."""
    path = feed_dir()
    try:
        check_dir(path)
        entries = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    return [e[: -len(SOCKET_SUFFIX)] for e in entries if e.endswith(SOCKET_SUFFIX)]
