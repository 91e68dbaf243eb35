"""``python -m fastload status``: the feeds this user runs, their consumers, positions and lag."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from fastload.errors import FeedError
from fastload.feed import _paths, _wire

__all__ = ["feed_status"]


def _query(name: str, timeout_s: float) -> dict[str, Any]:
    path = _paths.socket_path(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        buffer = _wire.LineBuffer()
        sock.sendall(_wire.encode({"op": "status"}))
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise FeedError(f"feed {name!r} closed the connection")
            for message in buffer.feed(data):
                if message["op"] == "status":
                    return dict(message["status"])
                if message["op"] == "refused":
                    raise FeedError(str(message.get("message")))
    finally:
        with contextlib.suppress(OSError):
            sock.sendall(_wire.encode({"op": "bye"}))
        sock.close()


def feed_status(timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The state of every feed of this user (a stale socket, left by a dead feed, is removed).

    Each entry has ``name``, ``pid``, ``mode``, ``epoch``, ``batch`` (produced
    in that epoch), ``n_batches``, ``batch_size``, ``ragged`` (the fields
    delivered as values + offsets), ``memory_cache`` (None, or the ``chunks``
    kept decoded ``of`` all, how many are ``filled`` and their ``nbytes``),
    ``workers`` and ``consumers``: for each its
    ``id``, ``pid``, ``label``, ``rank`` (split), ``epoch``, ``batch`` (taken)
    and ``lag`` (batches announced to it and not taken yet).
    """
    out = []
    for name in _paths.listed():
        try:
            out.append(_query(name, timeout_s))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                _paths.socket_path(name).unlink()
        except (OSError, FeedError) as exc:
            out.append({"name": name, "error": str(exc)})
    return out
