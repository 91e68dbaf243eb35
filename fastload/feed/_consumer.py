"""``fl.attach(name)``: a consumer of a running feed, iterated exactly as a ``fl.Loader``.

Each batch is a dict of read-only numpy arrays over a slot of the feed's
shared-memory arena, mapped read-only here.  The consumer keeps a weak
reference to the root array of every field it lent (the idea of the engine's
``SlotRing``): once all of a batch's arrays and views are garbage, the consumer
tells the feed, which recycles the slot when every consumer did.  Past its
share of kept batches the consumer delivers copies (and warns once), so a
training that keeps every batch cannot stall the feed.

The training's thread reads the socket itself while it waits for a batch; a
watcher thread reads it while the training does not, and returns released
batches every 50 ms.  Releases are reported in groups (every ``ahead // 4``
batches).  End of file on the socket (the feed closed, or its process died,
even by SIGKILL) ends the iteration with
:class:`~fastload.errors.FeedClosedError` at once.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import select
import socket
import stat
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import numpy as np

from fastload._engine import Arena, Layout, Region, copied_batch, slot_batch
from fastload._spec import FieldSpec
from fastload.errors import (
    ConfigError,
    FeedAccessError,
    FeedClosedError,
    FeedConfigError,
    FeedError,
    FeedNotFoundError,
)
from fastload.feed import _paths, _wire
from fastload.feed._describe import COMPARED as _COMPARED
from fastload.feed._describe import check_request, read_specs

__all__ = ["FeedConsumer", "attach"]

_log = logging.getLogger("fastload")
_SHM_NAME = re.compile(r"fastload-\d+-[0-9a-f]+")
#: how often the reader thread returns released slots while the consumer is not iterating
_SWEEP_S = 0.05
#: longest single wait of the training's thread on the socket (then it reports releases again)
_WAIT_S = 0.25
_EOF = object()

Batch = dict[str, np.ndarray]


def _map_readonly(name: str, size: int, layout: Layout) -> Arena:
    """Map a feed's arena read-only, after checking it is this user's segment."""
    if not _SHM_NAME.fullmatch(name):
        raise FeedError(f"feed announced an arena with an unexpected name {name!r}")
    fd = os.open(f"/dev/shm/{name}", os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode) or st.st_size < size:
            raise FeedAccessError(f"shared memory /dev/shm/{name} is not this user's feed arena")
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return Arena(layout, mm, mm)


def _connect(name: str, timeout_s: float) -> socket.socket:
    path = _paths.socket_path(name)
    try:
        _paths.check_dir(path.parent)
    except FileNotFoundError:
        raise FeedNotFoundError(
            f"no feed named {name!r}: {path.parent} does not exist. Start one with "
            f"fl.Feed(source, ..., name={name!r}) or `python -m fastload serve STORE SPLIT "
            f"--name {name}`"
        ) from None
    except PermissionError as exc:
        raise FeedAccessError(
            f"cannot reach feed {name!r} in {path.parent} ({exc.strerror}): feeds are private to "
            "the user who started them; start your own feed"
        ) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        running = ", ".join(_paths.listed()) or "none"
        raise FeedNotFoundError(
            f"no feed named {name!r} is running for this user (running: {running}); start it "
            f"with fl.Feed(source, ..., name={name!r}) or `python -m fastload serve ... --name "
            f"{name}`"
        ) from None
    except ConnectionRefusedError:
        sock.close()
        raise FeedNotFoundError(
            f"feed {name!r} is not running: {path} is left from a feed that died; start the "
            "feed again (that replaces the stale socket)"
        ) from None
    except PermissionError as exc:
        sock.close()
        raise FeedAccessError(
            f"cannot connect to feed {name!r} at {path} ({exc.strerror}): feeds are private "
            "to the user who started them"
        ) from None
    return sock


class _Channel:
    """The consumer's end of the control socket: a reader thread and a locked sender."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        # messages received and not yet handed to the consumer; ``_read_lock`` guards it,
        # the line buffer and ``_ended`` (the training's thread and the watcher both read)
        self._inbox: deque[Any] = deque()
        self._read_lock = threading.Lock()
        self._ended = False
        self._send_lock = threading.Lock()
        self._buffer = _wire.LineBuffer()
        self.closed = False
        self.leaving = False
        self._thread: threading.Thread | None = None
        # batches lent to the training: (id, weak refs to the root arrays); kept here, not in
        # the consumer, so that a consumer closed or collected while the training still holds
        # batches keeps them pinned until they are garbage (or the process exits)
        self.lent: deque[tuple[int, tuple[weakref.ref, ...]]] = deque()
        self.lock = threading.Lock()
        self.released: list[int] = []
        self.taken = 0
        self.at: list[Any] = [None, 0]
        self._reported = -1
        self.every = 1  # batches taken between coalesced reports (set from the feed's ahead)

    def recv_now(self, timeout_s: float) -> _wire.Message:
        """One message, read synchronously (during the handshake, before the thread starts)."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = getattr(self, "_pending", None)
            if pending:
                return pending.popleft()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FeedError(f"feed {self.name!r} did not answer within {timeout_s:.0f}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise FeedClosedError(f"feed {self.name!r} closed the connection")
            self._pending = deque(self._buffer.feed(data))

    def start(self) -> None:
        self._inbox.extend(getattr(self, "_pending", ()))
        self._pending = deque()
        self.sock.setblocking(False)  # waits are polls: a recv never blocks under the lock
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        self._thread = threading.Thread(
            target=self._watch, name=f"fastload-feed-reader-{self.name}", daemon=True
        )
        self._thread.start()

    def _take_in(self, data: bytes | None) -> None:
        """Parse what one ``recv`` returned (the caller holds ``_read_lock``)."""
        if data is None or self._ended:
            return
        if data == b"":
            self._ended = True
            self._inbox.append(_EOF)
            return
        try:
            self._inbox.extend(self._buffer.feed(data))
        except Exception as exc:  # a malformed message: end the stream with it
            self._ended = True
            self._inbox.extend((exc, _EOF))

    def _recv(self) -> bytes | None:
        """One non-blocking ``recv``: None when nothing is ready, b"" at end of file."""
        try:
            return self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def get(self, timeout_s: float) -> Any:
        """The next message (or ``_EOF``, or the exception that ended the stream); None: none yet.

        The training's thread reads the socket itself while it waits for a batch
        (no hand-over through another thread on the hot path); the watcher thread
        reads it only while the training does not.
        """
        with self._read_lock:
            wait_ms = max(1, int(min(timeout_s, _WAIT_S) * 1000))
            if not self._inbox and not self._ended and self._poll.poll(wait_ms):
                while not self._ended:  # everything that arrived, without waiting
                    data = self._recv()
                    if data is None:
                        break
                    self._take_in(data)
            if self._inbox:
                message = self._inbox.popleft()
                if message is _EOF:
                    self._inbox.appendleft(_EOF)  # every later call sees the end too
                return message
        return None

    def _watch(self) -> None:
        """While the training is not asking for batches: release what it dropped, notice EOF."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while not self.closed:
                ready = poller.poll(_SWEEP_S * 1000)
                if ready and not self._ended:
                    if self._read_lock.acquire(blocking=False):
                        try:
                            self._take_in(self._recv())
                        finally:
                            self._read_lock.release()
                    else:  # the training is reading: it takes the data
                        time.sleep(_SWEEP_S)
                # between messages: free what the training dropped while it is not asking for
                # batches (validation, checkpointing)
                self.report()
                if self._ended:
                    break
                if self.leaving and not self.lent:
                    break
        finally:
            if self.leaving:
                self.close()

    def sweep(self) -> None:
        """Move the ids of lent batches whose arrays are all dead to ``released``."""
        with self.lock:
            lent = self.lent
            for _ in range(len(lent)):
                lid, roots = lent[0]
                if any(root() is not None for root in roots):
                    lent.rotate(-1)
                else:
                    lent.popleft()
                    self.released.append(lid)

    def report_if_due(self) -> None:
        """Report once ``every`` batches were taken or released since the last report.

        Coalesced: the feed announces up to ``ahead`` (> ``every``) batches
        beyond the last reported one, so it has more on the way when a report
        is sent; a feed waiting on this consumer has announced ``ahead``
        batches, and once the training took them a report is due, so it never
        waits for one held back.  The watcher thread reports whatever is left
        every ``_SWEEP_S`` while the training is slow or idle.
        """
        if self.taken - self._reported < self.every and len(self.released) < self.every:
            return
        self.report()

    def report(self) -> None:
        """Tell the feed which batches were released and how many were taken."""
        self.sweep()
        with self.lock:
            released, self.released = self.released, []
            taken = self.taken
            changed = released or taken != self._reported
            self._reported = taken
        if changed:
            self.send_raw(_wire.encode_release(released, taken, list(self.at)))

    def leave(self) -> None:
        """Detach; batches the training still holds stay pinned until they are garbage."""
        self.sweep()
        if not self.lent or self._thread is None:
            self.close()
            return
        self.report()
        with self.lock:
            still = [lid for lid, _ in self.lent]
        self.send({"op": "leave", "keep": still})
        self.leaving = True  # the reader thread closes the socket once nothing is lent
        if not self._thread.is_alive():  # the feed went away already: nothing to wait for
            self.close()

    def send(self, message: _wire.Message) -> None:
        self.send_raw(_wire.encode(message))

    def send_raw(self, data: bytes) -> None:
        with self._send_lock:
            if self.closed:
                return
            with contextlib.suppress(OSError):  # the feed is gone: the reader reports it
                self._send_all(data)

    def _send_all(self, data: bytes) -> None:
        """``sendall`` that also works on the non-blocking socket (the caller holds the lock)."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except (BlockingIOError, InterruptedError):  # the feed reads slowly: wait for room
                select.select([], [self.sock], [], 1.0)

    def close(self) -> None:
        with self._send_lock:
            if self.closed:
                return
            with contextlib.suppress(OSError):
                self._send_all(_wire.encode({"op": "bye"}))
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.sock.close()


class FeedConsumer:
    """One training's view of a feed: iterate it exactly like a :class:`~fastload.Loader`.

    Made by :func:`attach`.  ``len()``, ``epoch``, ``set_epoch()``,
    ``state_dict()``, ``load_state_dict()``, ``output_specs``, ``batch_size``,
    ``.torch()``, ``.tf()`` and ``.jax()`` behave as the loader's.  The state is
    a loader state: it resumes a plain ``fl.Loader`` of the same configuration (same rank and
    world size for a split feed's consumer) at the same batch.
    """

    def __init__(
        self,
        name: str,
        *,
        rank: int | None = None,
        copy: bool = False,
        timeout_s: float = 300.0,
        label: str = "",
        consumer_transform: Any = None,
        start: str = "epoch",
        **expected: Any,
    ) -> None:
        _paths.check_name(name)
        if start not in ("epoch", "now"):
            raise ConfigError(
                f"fl.attach: start must be 'epoch' (the next epoch boundary) or 'now' (the "
                f"rest of the epoch being produced), got {start!r}"
            )
        unknown = sorted(set(expected) - set(_COMPARED))
        if unknown:
            raise ConfigError(
                f"fl.attach: unknown setting(s) {unknown}; the settings a feed checks are "
                f"{sorted(_COMPARED)}"
            )
        self.name = name
        self.copy = bool(copy)
        self.timeout_s = float(timeout_s)
        sock = _connect(name, min(self.timeout_s, 30.0))
        channel = _Channel(sock, name)
        try:
            info = channel.recv_now(30.0)
            _refused(name, info)
            if info.get("op") != "info" or info.get("protocol") != _wire.PROTOCOL:
                raise FeedError(
                    f"feed {name!r} speaks protocol {info.get('protocol')!r}, this fastload "
                    f"{_wire.PROTOCOL}; use the same fastload version for the feed and its consumers"
                )
            check_request(name, info, expected)
            if rank is not None and info["mode"] != "split":
                raise FeedConfigError(
                    f"feed {name!r} broadcasts every batch to every consumer; rank= applies to "
                    "a split feed (mode='split')"
                )
            if start == "now" and info["mode"] != "broadcast":
                raise FeedConfigError(
                    f"feed {name!r} splits each epoch among its ranks, which all start together; "
                    "start='now' applies to a broadcast feed"
                )
            channel.send({"op": "join", "rank": rank, "label": label, "now": start == "now"})
            joined = channel.recv_now(30.0)
            _refused(name, joined)
        except BaseException:
            channel.close()
            raise
        self._info = info
        self.mode: str = info["mode"]
        self.rank: int | None = joined["lane"] if self.mode == "split" else None
        self.id: int = joined["id"]
        self._fingerprint: str = joined["fingerprint"]
        self._position: dict[str, Any] = dict(joined.get("position", {}))
        self._n_batches: int = info["n_batches"]
        self._feed_specs = read_specs(info["specs"])
        self._specs = _checked_transform(consumer_transform, self._feed_specs, channel)
        self._consumer_transform = consumer_transform
        self._keep_limit: int = int(info["keep"])
        channel.every = max(1, int(info["report_every"]))
        self._channel = channel
        self._arenas: dict[int, Arena] = {}
        self._pending: deque[Any] = deque()  # messages looked at before iterating
        self.epoch: int = int(joined["epoch"])  # the first epoch the feed gives this consumer
        self._started: int | None = None
        self._delivered = 0
        self._target: tuple[int, int] | None = None
        self._in_epoch = False
        self._closed = False
        self._failure: BaseException | None = None
        self._warned_kept = False
        #: [epoch, first, end]: batches first..end-1 of epoch that this consumer did not receive
        #: (it attached with start="now" while the feed was producing that epoch)
        self._missed: list[list[int]] = []
        channel.start()
        self._finalizer = weakref.finalize(self, channel.leave)

    # ------------------------------------------------------------------ info
    @property
    def batch_size(self) -> int:
        return int(self._info["config"]["batch_size"])

    @property
    def drop_last(self) -> bool:
        return bool(self._info["config"]["drop_last"])

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._info["config"]["fields"])

    @property
    def output_specs(self) -> dict[str, FieldSpec]:
        """Per-sample shape and dtype of every field of a batch."""
        return dict(self._specs)

    @property
    def config(self) -> dict[str, Any]:
        """The feed's configuration, as compared by :func:`attach`."""
        return dict(self._info["config"])

    def __len__(self) -> int:
        """Batches per epoch of this consumer."""
        return self._n_batches

    def __repr__(self) -> str:
        rank = f" rank={self.rank}" if self.rank is not None else ""
        return (
            f"<fastload.FeedConsumer of {self.name!r} mode={self.mode!r}{rank} "
            f"batch_size={self.batch_size} epoch={self.epoch}>"
        )

    # ------------------------------------------------------------------ state
    def _first_epoch(self) -> int:
        """The epoch this consumer receives next."""
        return self.epoch

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` next: the consumer skips the feed's epochs before it (never back)."""
        if self._in_epoch:
            raise ConfigError(
                "set_epoch() called during an iteration; finish or break out of the loop first"
            )
        self.load_state_dict({"epoch": int(epoch), "batch": 0, "fingerprint": self._fingerprint})

    def state_dict(self) -> dict[str, Any]:
        """Where this consumer stands: a loader state (epoch, next unseen batch, fingerprint)."""
        if self._target is not None:
            epoch, batch = self._target
        elif self._in_epoch:
            epoch, batch = self._first_epoch(), self._delivered
        else:
            epoch, batch = self._first_epoch(), 0
        state = {
            "epoch": epoch,
            "batch": batch,
            "fingerprint": self._fingerprint,
            **self._position,
            "elastic": [],
        }
        if self._missed:
            state["missed"] = [list(m) for m in self._missed]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``: batches of the feed before it are skipped (not delivered).

        The feed does not go back: a state before the feed's position is a
        :class:`~fastload.errors.FeedConfigError` (resume it in a plain
        ``fl.Loader``, or start a feed at that epoch with ``fl.Feed(..., epoch=E)``).
        """
        if self._in_epoch:
            raise ConfigError("load_state_dict() called during an iteration")
        if state.get("fingerprint") != self._fingerprint:
            raise ConfigError(
                "the saved loader state was made with a different configuration (sources, batch "
                "size, seed, shuffle, window, ranks or mix); it would not resume the same batches"
            )
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if not 0 <= batch <= self._n_batches:
            raise ConfigError(
                f"saved batch {batch} out of range for epoch {epoch} ({self._n_batches} batches)"
            )
        if batch == self._n_batches:
            epoch, batch = epoch + 1, 0
        current = self._first_epoch()
        if epoch < current:
            raise FeedConfigError(
                f"feed {self.name!r} delivers epoch {current} next; it cannot go back to epoch "
                f"{epoch}. Resume that state in a plain fl.Loader, or start a feed with "
                f"fl.Feed(..., epoch={epoch})"
            )
        self._target = (epoch, batch) if (epoch, batch) != (current, 0) else None
        if epoch > current or batch:
            self.epoch = epoch

    # -------------------------------------------------------------- messages
    def _receive(self, deadline: float) -> Any:
        if self._pending:
            return self._pending.popleft()
        if self._failure is not None:
            raise self._failure
        while True:
            self._send_releases()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FeedError(
                    f"no batch from feed {self.name!r} for {self.timeout_s:.0f}s (timeout_s); "
                    "`python -m fastload status` shows its consumers and their lag"
                )
            message = self._channel.get(remaining)
            if message is None:
                continue
            if message is _EOF or isinstance(message, Exception):
                detail = f" ({message})" if isinstance(message, Exception) else ""
                self._failure = FeedClosedError(
                    f"feed {self.name!r} went away{detail}: it was closed or its process died. "
                    f"Batches already received stay valid; restart the feed and attach again"
                )
                raise self._failure
            op = message.get("op")
            if op == "failed":
                self._failure = _failed(message)
                raise self._failure
            if op == "closed":
                self._failure = FeedClosedError(
                    f"{message.get('message', 'the feed closed')}; attach again once it runs"
                )
                raise self._failure
            if op == "arena":
                self._map_arena(message)
                continue
            return message

    def _map_arena(self, message: _wire.Message) -> None:
        layout = Layout(
            regions={
                name: Region(int(offset), tuple(shape), dtype)
                for name, (offset, shape, dtype) in message["regions"].items()
            },
            size=int(message["size"]),
        )
        gen = int(message["g"])
        self._arenas = {g: a for g, a in self._arenas.items() if g >= gen - 1}
        try:
            self._arenas[gen] = _map_readonly(message["shm"], max(layout.size, 4096), layout)
        except FileNotFoundError:
            self._failure = FeedClosedError(
                f"feed {self.name!r} went away: its shared memory is gone (it closed or died); "
                "restart the feed and attach again"
            )
            raise self._failure from None

    def _send_releases(self) -> None:
        channel = self._channel
        channel.at = [self.epoch, self._delivered]
        channel.report_if_due()

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise ConfigError("this FeedConsumer is closed")
        if self._in_epoch:
            raise ConfigError(
                "a FeedConsumer supports one iteration at a time; finish or break the previous loop"
            )
        return self._iterate()

    def _skip(self, message: _wire.Message) -> None:
        channel = self._channel
        with channel.lock:
            channel.released.append(int(message["i"]))
            channel.taken += 1

    def _iterate(self) -> Iterator[Batch]:
        self._in_epoch = True
        self._delivered = 0
        started = False
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:  # to the start of the epoch to deliver
                message = self._receive(deadline)
                op = message["op"]
                if op == "b":  # the rest of an abandoned epoch
                    self._skip(message)
                elif op == "epoch":
                    epoch = int(message["e"])
                    target = self._target
                    if target is not None and epoch < target[0]:
                        continue  # its batches are skipped as leftovers
                    if target is not None and epoch > target[0]:
                        raise FeedConfigError(
                            f"feed {self.name!r} is at epoch {epoch}, past the requested epoch "
                            f"{target[0]}"
                        )
                    start = target[1] if target is not None else 0
                    self._target = None
                    self.epoch = epoch
                    started = True
                    # joined with start="now": the first batch it gets may be a later one
                    expected = None if message.get("now") else start
                    break
            self._delivered = start
            deadline = time.monotonic() + self.timeout_s
            while True:
                message = self._receive(deadline)
                op = message["op"]
                if op == "end":
                    if expected is None:  # joined "now" after the epoch's last batch
                        if start < self._n_batches:
                            self._missed.append([epoch, start, self._n_batches])
                        self._delivered = self._n_batches
                    elif expected != self._n_batches:  # never end an epoch short silently
                        self._failure = FeedError(
                            f"feed {self.name!r} ended epoch {epoch} after batch {expected - 1} "
                            f"of {self._n_batches}; this is a bug, please report it"
                        )
                        raise self._failure
                    break
                if op != "b":
                    continue
                k = int(message["k"])
                if k < start:
                    self._skip(message)
                    continue
                if expected is None:
                    if k > start:
                        self._missed.append([epoch, start, k])
                    expected = k
                if k != expected:  # never deliver a gap silently
                    self._skip(message)
                    self._failure = FeedError(
                        f"feed {self.name!r} sent batch {k} of epoch {epoch} where batch "
                        f"{expected} was due; this is a bug, please report it"
                    )
                    raise self._failure
                expected = k + 1
                batch = self._batch(message)
                if self._consumer_transform is not None:
                    batch = self._consumer_transform(batch)
                self._delivered = k + 1
                yield batch
                del batch  # this frame must not pin the slot while the next is awaited
                deadline = time.monotonic() + self.timeout_s
        finally:
            self._in_epoch = False
            if started:
                self.epoch += 1
            self._delivered = 0

    def _batch(self, message: _wire.Message) -> Batch:
        channel = self._channel
        with channel.lock:
            channel.taken += 1
        lid, slot, n = int(message["i"]), int(message["s"]), int(message["n"])
        arena = self._arenas[int(message["g"])]
        keep = not self.copy
        if keep and len(channel.lent) >= self._keep_limit:
            channel.sweep()
            if len(channel.lent) >= self._keep_limit:
                keep = False
                self._warn_kept()
        if not keep:
            batch = copied_batch(arena, self._feed_specs, slot, n)
            with channel.lock:
                channel.released.append(lid)
            return batch
        batch, roots = slot_batch(arena, self._feed_specs, slot, n)
        with channel.lock:
            channel.lent.append((lid, tuple(roots)))
        return batch

    def _warn_kept(self) -> None:
        if self._warned_kept:
            return
        self._warned_kept = True
        message = (
            f"this consumer keeps {self._keep_limit} batches of feed {self.name!r} (its share of "
            "the feed's max_kept_bytes): until some are released it receives copies, which is "
            "slower. Copy what you keep, or start the feed with a larger max_kept_bytes or a "
            "smaller max_consumers"
        )
        _log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=4)

    # --------------------------------------------------------------- adapters
    def torch(self, device: Any = None, pin_memory: bool | None = None, **options: Any) -> Any:
        """Batches as dicts of torch tensors; see :func:`fastload.adapters.torch.to_torch`."""
        from fastload.adapters.torch import to_torch

        return to_torch(self, device=device, pin_memory=pin_memory, **options)

    def tf(self, **options: Any) -> Any:
        """A ``tf.data.Dataset`` of this consumer's batches; see :func:`fastload.adapters.tf.to_tf`."""
        from fastload.adapters.tf import to_tf

        return to_tf(self, **options)

    def jax(self, **options: Any) -> Any:
        """Batches as ``jax.Array`` s; see :func:`fastload.adapters.jax.to_jax`.

        On the CPU the arrays alias the feed's shared memory (zero-copy): a
        kept array holds its slot as a kept numpy batch does.
        """
        from fastload.adapters.jax import to_jax

        return to_jax(self, **options)

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Detach: the feed releases this consumer's slots (batches held stay readable)."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> FeedConsumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _checked_transform(
    transform: Any, feed_specs: dict[str, FieldSpec], channel: _Channel
) -> dict[str, FieldSpec]:
    """The consumer's output specs: the feed's, through ``transform`` when there is one."""
    if transform is None:
        return dict(feed_specs)
    try:
        if not callable(transform):
            raise ConfigError(
                f"fl.attach: consumer_transform={transform!r} is not callable; pass a "
                "fastload.transforms transform (or any object with __call__ and output_spec)"
            )
        try:
            output_spec = transform.output_spec
        except AttributeError:
            raise ConfigError(
                f"fl.attach: consumer_transform {transform!r} has no output_spec(); see "
                "fastload.transforms"
            ) from None
        return dict(output_spec(feed_specs))
    except BaseException:
        channel.close()
        raise


def _failed(message: _wire.Message) -> FeedClosedError:
    """The error of a feed whose producer failed: its cause named, rebuilt as ``__cause__``.

    The feed sends the failure's class name, text and notes (``_server._failure_message``);
    a :mod:`fastload.errors` class is rebuilt by name (e.g. the ``ConfigError`` of a batch
    above a ragged field's ``ragged_rows=`` bound, a transform's ``RaggedBoundError``), so
    ``except FeedClosedError`` still catches it and ``exc.__cause__`` is what a plain
    Loader of the configuration raises.
    """
    import fastload.errors as errors

    text = str(message.get("message", "the feed failed"))
    error = FeedClosedError(
        f"{text}. The feed stopped producing; batches already received stay valid: fix "
        "its configuration, restart it and attach again"
    )
    cause = message.get("cause")
    if isinstance(cause, dict):
        kind = getattr(errors, str(cause.get("type")), None)
        if isinstance(kind, type) and issubclass(kind, errors.FastloadError):
            with contextlib.suppress(Exception):
                rebuilt = kind(str(cause.get("message", "")))
                for note in cause.get("notes", ()):
                    rebuilt.add_note(str(note))
                error.__cause__ = rebuilt
    return error


def _refused(name: str, message: _wire.Message) -> None:
    if message.get("op") != "refused":
        return
    text = str(message.get("message", "refused"))
    kind = message.get("error")
    if kind == "access":
        raise FeedAccessError(text)
    if kind == "config":
        raise FeedConfigError(text)
    raise FeedError(text)


def attach(
    name: str,
    *,
    rank: int | None = None,
    copy: bool = False,
    timeout_s: float = 300.0,
    label: str = "",
    consumer_transform: Any = None,
    start: str = "epoch",
    **expected: Any,
) -> FeedConsumer:
    """Attach to the running feed ``name`` of this user; iterate the result like a Loader.

    Parameters
    ----------
    name : str
        The feed's name (``fl.Feed(..., name=...)`` or ``python -m fastload serve --name``).
    rank : int | None
        Split feeds: this consumer's rank among the feed's ``consumers`` (default:
        the lowest free one).
    copy : bool
        Deliver copies instead of read-only arrays over the feed's shared memory.
    timeout_s : float
        Longest wait for one batch (a feed that dies is reported at once, not after this).
    label : str
        A name for this consumer in ``python -m fastload status``.
    consumer_transform : Transform | None
        A :mod:`fastload.transforms` transform (anything with ``__call__`` and
        ``output_spec``) run in *this* process on every batch, after the feed's own
        ``transform`` ran in its workers; ``output_specs`` are its output's.  Its input
        arrays are read-only views of the feed's shared memory (transforms never write
        into their input).  Not compared with the feed (``transform=`` is).
    start : {"epoch", "now"}
        ``"epoch"`` (default): begin with the next epoch boundary, so every epoch
        iterated is whole.  ``"now"`` (broadcast feeds): join the epoch being produced
        at its next batch; ``state_dict()["missed"]`` then lists
        ``[epoch, first, end]``: batches ``first..end-1`` it did not receive.
    **expected
        Settings the training relies on (``source``, ``batch_size``, ``shuffle``,
        ``seed``, ``window_chunks``, ``drop_last``, ``fields``, ``transform``,
        ``pad``, ``ragged``, ``mode``): each is compared with the feed's.

    Raises
    ------
    FeedNotFoundError
        No feed of that name runs for this user.
    FeedConfigError
        A setting differs from the feed's (the message names it).
    FeedAccessError
        The feed belongs to another user.
    """
    return FeedConsumer(
        name,
        rank=rank,
        copy=copy,
        timeout_s=timeout_s,
        label=label,
        consumer_transform=consumer_transform,
        start=start,
        **expected,
    )
