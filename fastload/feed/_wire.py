"""The control channel: messages over a Unix-domain stream socket.

Control messages are JSON objects, one per line (they start with ``{``).  The
two hot ones, sent once per batch, are fixed-layout binary records instead
(they start with a tag byte that JSON text never contains):

* ``TAG_BATCH`` + ``<q i i i q q``: batch announcement ``{"op": "b", "i": id,
  "g": arena generation, "s": slot, "n": rows, "e": epoch, "k": batch}``;
* ``TAG_RELEASE`` + ``<q q q I`` + ``count`` x ``<q``: release report ``{"op":
  "r", "t": taken, "at": [epoch, batch], "i": [released ids]}`` (epoch -1: None).

Both decode to the same dicts as their JSON form would.  Nothing that crosses
the channel is unpickled: JSON is plain data, records are integers, each
message at most :data:`MAX_LINE` bytes.  The feed checks every connecting
peer's uid with ``SO_PEERCRED`` and refuses other users.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from fastload.errors import FeedError

#: protocol version; a consumer and a feed of different versions refuse each other
PROTOCOL = 3
#: longest message accepted (a status reply with many consumers stays far below)
MAX_LINE = 1 << 20

Message = dict[str, Any]

TAG_BATCH = 1
TAG_RELEASE = 2
_BATCH = struct.Struct("<qiiiqq")
_RELEASE = struct.Struct("<qqqI")
_ID = struct.Struct("<q")
#: most ids one release record carries
MAX_IDS = (MAX_LINE - _RELEASE.size - 1) // _ID.size


def encode_batch(lid: int, gen: int, slot: int, n: int, epoch: int, k: int) -> bytes:
    """A batch announcement as a binary record."""
    return bytes((TAG_BATCH,)) + _BATCH.pack(lid, gen, slot, n, epoch, k)


def encode_release(released: list[int], taken: int, at: list[Any]) -> bytes:
    """A release report as binary records (several when many ids are released at once)."""
    epoch = -1 if at[0] is None else int(at[0])
    out = bytearray()
    for start in range(0, max(1, len(released)), MAX_IDS):
        ids = released[start : start + MAX_IDS]
        out.append(TAG_RELEASE)
        out += _RELEASE.pack(taken, epoch, int(at[1]), len(ids))
        out += struct.pack(f"<{len(ids)}q", *ids)
    return bytes(out)


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
    """Bytes received so far, cut into complete messages (JSON lines and binary records)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._data += data
        buf = self._data
        out: list[Message] = []
        pos, size = 0, len(buf)
        try:
            while pos < size:
                tag = buf[pos]
                if tag == TAG_BATCH:
                    end = pos + 1 + _BATCH.size
                    if end > size:
                        break
                    lid, gen, slot, n, epoch, k = _BATCH.unpack_from(buf, pos + 1)
                    out.append(
                        {"op": "b", "i": lid, "g": gen, "s": slot, "n": n, "e": epoch, "k": k}
                    )
                elif tag == TAG_RELEASE:
                    head = pos + 1 + _RELEASE.size
                    if head > size:
                        break
                    taken, epoch, batch, count = _RELEASE.unpack_from(buf, pos + 1)
                    if count > MAX_IDS:
                        raise FeedError(f"feed release record of {count} ids (at most {MAX_IDS})")
                    end = head + count * _ID.size
                    if end > size:
                        break
                    ids = list(struct.unpack_from(f"<{count}q", buf, head))
                    at = [None if epoch < 0 else epoch, batch]
                    out.append({"op": "r", "i": ids, "t": taken, "at": at})
                else:
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        if size - pos > MAX_LINE:
                            raise FeedError(f"feed message longer than {MAX_LINE} bytes")
                        break
                    end = nl + 1
                    out.append(decode(bytes(buf[pos:nl])))
                pos = end
        finally:
            del buf[:pos]
        return out


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket (Linux)."""
    fmt = "3i"
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    pid, uid, gid = struct.unpack(fmt, raw)
    return pid, uid, gid
