"""The control channel: JSON objects, one per line, over a Unix-domain stream socket.

Nothing that crosses it is unpickled: messages are plain JSON (numbers, strings,
lists, objects), at most :data:`MAX_LINE` bytes each.  The feed checks every
connecting peer's uid with ``SO_PEERCRED`` and refuses other users.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from fastload.errors import FeedError

#: protocol version; a consumer and a feed of different versions refuse each other
PROTOCOL = 1
#: longest message accepted (a status reply with many consumers stays far below)
MAX_LINE = 1 << 20

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    """One message as a line of compact JSON."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """Parse one line; anything but a JSON object is a protocol error."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise FeedError(f"malformed feed message ({exc}): {line[:80]!r}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise FeedError(f"malformed feed message (no 'op'): {line[:80]!r}")
    return message


class LineBuffer:
    """Bytes received so far, cut into complete messages."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._data += data
        out: list[Message] = []
        while True:
            end = self._data.find(b"\n")
            if end < 0:
                if len(self._data) > MAX_LINE:
                    raise FeedError(f"feed message longer than {MAX_LINE} bytes")
                return out
            line = bytes(self._data[:end])
            del self._data[: end + 1]
            out.append(decode(line))


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket (Linux)."""
    fmt = "3i"
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    pid, uid, gid = struct.unpack(fmt, raw)
    return pid, uid, gid
