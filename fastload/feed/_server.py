"""``fl.Feed``: one loader's workers and batch ring, served to every consumer that attaches.

Threads
-------
The *producer* runs the engine of a :class:`~fastload.Loader` configuration
(its workers, its shared-memory arena) epoch after epoch and announces every
delivered batch to the consumers of its lane (a binary record, see
:mod:`fastload.feed._wire`: id, arena generation, slot, rows, epoch, batch
number), sending it itself and grouping announcements while a consumer surely
has batches queued (docs/feed.md, "Hot path").  The *control* thread accepts
connections, checks the peer's uid, handles the consumers' messages (join,
release reports, status) and sends what the producer could not.

Slot lifetime
-------------
The engine's :class:`SlotRing` keeps a delivered slot out of circulation while
a weak reference to it is alive, exactly as for a plain loader's consumer.
Here the referent is a *token*, one per announced batch, held in ``_pinned``
together with the set of consumers still holding the batch: a consumer's
release (or its disconnection) removes it from the set, the last one drops the
token, and the ring's next sweep returns the slot.  So a slot is recycled only
once every consumer released it; the slowest consumer sets the pace.  The
producer announces a batch only while (1) every consumer of its lane has fewer
than ``ahead`` batches it has not taken yet and (2) the ring has a kept slot
left; each consumer copies, instead of pinning, past its share of kept batches.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import selectors
import socket
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from fastload import _validate
from fastload.errors import ConfigError, FeedError
from fastload.feed import _paths, _wire
from fastload.feed._describe import describe_config, describe_specs
from fastload.feed._plans import epoch_work
from fastload.loader import Loader

__all__ = ["Feed"]

_log = logging.getLogger("fastload")

MODES = ("broadcast", "split")
#: how often the control thread checks that consumers' processes are alive
_LIVENESS_S = 1.0


class _Token:
    """The referent of a kept slot's weak reference: alive while a consumer holds the batch."""

    __slots__ = ("__weakref__",)


@dataclasses.dataclass(eq=False)
class _Conn:
    """The feed's record of one connection (a consumer once it joined)."""

    id: int
    sock: socket.socket
    pid: int
    outbox: bytearray = dataclasses.field(default_factory=bytearray)
    inbuf: _wire.LineBuffer = dataclasses.field(default_factory=_wire.LineBuffer)
    state: str = "new"  # new -> waiting (joined) -> member (in an epoch); gone
    lane: int | None = None
    label: str = ""
    held: set[int] = dataclasses.field(default_factory=set)
    sent: int = 0  # batch announcements sent (queued)
    unsent: int = 0  # of them, still in the outbox
    taken: int = 0  # of them, taken by the consumer (as it last reported)
    epoch: int | None = None  # epoch it is in (member) or last took from
    batch: int = 0  # batches of that epoch it took
    joined: float = 0.0
    events: int = 0  # what the control thread's selector watches for it (0: not registered)
    # guards outbox and the socket's sends; taken after the feed's lock, never before it
    wlock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def send(self, message: _wire.Message) -> None:
        self.queue(_wire.encode(message))

    def queue(self, data: bytes, announcement: bool = False) -> None:
        with self.wlock:
            self.outbox += data
            self.unsent += announcement


class Feed:
    """Serve one loader configuration's batches to every training that attaches by name.

    Runs in the calling process, in two background threads, until :meth:`close`
    (or the end of a ``with`` block); the workers and the shared-memory ring are
    the engine's, as for a :class:`~fastload.Loader` built with the same
    arguments.  Consumers attach with :func:`fastload.attach` (other
    processes, or this one).

    Parameters
    ----------
    source, batch_size, shuffle, seed, workers, prefetch, fields, transform, drop_last,
    window_chunks, backend, pad, ragged, ragged_rows, timeout_s, max_worker_restarts,
    max_kept_bytes, readahead_bytes, memory_cache
        As for :class:`~fastload.Loader`; they define the batches (a ragged field with
        ``ragged={f: "offsets"}`` reaches consumers as :class:`~fastload.Ragged`).
        ``memory_cache=True`` keeps the decoded chunks in the feed's arena, one copy
        for every consumer: from the second epoch on the feed reads and decodes
        nothing (consumers need not, and cannot, ask for it: it changes no batch).
    name : str
        What consumers attach to (per user: two users' feeds never collide).
    mode : {"broadcast", "split"}
        ``"broadcast"``: every consumer receives every batch of every epoch, in
        the plan's order, exactly once per epoch.  ``"split"``: ``consumers``
        consumers, one per rank, receive disjoint batches that together are the
        epoch (the order layer's rank sharding), equal counts each.
    consumers : int | None
        ``"split"`` only: how many consumers share each epoch (required there).
    min_consumers : int
        Broadcast: consumers attached before the first epoch starts (so a scan's
        trainings all begin with epoch 0).  Later epochs start with whoever is
        attached.  Split: every rank must be attached before each epoch.
    rank, world_size : int | None
        This feed's shard of every epoch (one feed per node of a multi-node
        job): split consumers get ranks ``rank * consumers + i`` of
        ``world_size * consumers``; broadcast consumers all get ``rank``'s plan.
    ahead : int
        Batches a consumer may have queued and not taken yet (as last
        reported: consumers report every ``ahead // 4`` batches); the fastest
        consumer is at most this far ahead of the slowest one.
    max_consumers : int
        Consumers attached at once; each may keep (pin) its share of
        ``max_kept_bytes`` of delivered batches before it receives copies.
    epoch : int
        The first epoch the feed produces.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        *,
        name: str = "feed",
        mode: str = "broadcast",
        consumers: int | None = None,
        min_consumers: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
        ahead: int = 32,
        max_consumers: int = 16,
        epoch: int = 0,
        **options: Any,
    ) -> None:
        owner = "fl.Feed"
        self.name = _paths.check_name(name)
        self.mode = _validate.choice(mode, MODES, name="mode", owner=owner)
        if mode == "split":
            if consumers is None:
                raise ConfigError(
                    "fl.Feed: mode='split' needs consumers=N (how many trainings share each epoch)"
                )
            lanes = _validate.integer(consumers, name="consumers", minimum=1, owner=owner)
        else:
            if consumers is not None:
                raise ConfigError(
                    "fl.Feed: consumers= applies to mode='split'; a broadcast feed serves any "
                    "number (see min_consumers and max_consumers)"
                )
            lanes = 1
        self.min_consumers = _validate.integer(
            min_consumers, name="min_consumers", minimum=1, owner=owner
        )
        self.ahead = _validate.integer(ahead, name="ahead", minimum=1, owner=owner)
        self.max_consumers = _validate.integer(
            max_consumers, name="max_consumers", minimum=1, owner=owner
        )
        self._first_epoch = _validate.integer(epoch, name="epoch", minimum=0, owner=owner)
        if "rank" in options or "world_size" in options:
            raise ConfigError("fl.Feed: pass rank= and world_size= by keyword")  # pragma: no cover
        node = 0 if rank is None else rank
        nodes = 1 if world_size is None else world_size
        node = _validate.integer(node, name="rank", minimum=0, owner=owner)
        nodes = _validate.integer(nodes, name="world_size", minimum=1, owner=owner)
        if node >= nodes:
            raise ConfigError(f"fl.Feed: rank must be in [0, world_size={nodes}), got {node}")
        self.rank, self.world_size = node, nodes
        self._lanes = [
            Loader(
                source,
                batch_size,
                rank=node * lanes + i,
                world_size=nodes * lanes,
                **options,
            )
            for i in range(lanes)
        ]
        for lane in self._lanes:
            lane._spec = dataclasses.replace(lane._spec, shared=True)
        counts = [len(lane) for lane in self._lanes]
        # once: a lane loader's len() is its plan of *its* epoch (never advanced here), which
        # the planner forgets after a few epochs and would recompute on every call
        self._n_batches = counts[0]
        if len(set(counts)) > 1:
            raise ConfigError(
                f"fl.Feed: split among {lanes} consumers, epochs have {min(counts)} to "
                f"{max(counts)} batches per consumer; DDP needs equal counts: pass "
                "drop_last=True (every consumer then gets the same number of full batches)"
            )
        self._config = describe_config(self._lanes[0], source, options)
        self._closed = False
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._pinned: dict[int, tuple[_Token, set[int]]] = {}
        self._lending = itertools.count(1)
        self._engine: Any = None
        self._gen = 0
        self._epoch = self._first_epoch  # the epoch being produced (or next)
        self._produced = 0  # batches of it announced
        self._started_any = False
        self._producing = False  # inside an epoch: a consumer joining now gets the next one
        self._members: list[_Conn] = []  # the running epoch's members (start="now" joins it)
        self._epoch_sent = False  # whether they were told the running epoch started
        self._error: BaseException | None = None
        self._error_epoch = self._first_epoch  # the epoch the producer failed in
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel: selectors.BaseSelector | None = None
        self._path: Path | None = None
        try:
            self._prepare_engine()
            self._listen()
        except BaseException:
            self._release()
            raise
        self._start_threads()
        _open_feeds.add(self)

    # ------------------------------------------------------------------ setup
    def _prepare_engine(self) -> None:
        plan, table = epoch_work(self._lanes, self._first_epoch)
        self._engine = self._lanes[0]._engine_for(plan, table)
        self._gen = 1
        # a batch above a ragged field's ragged_rows= bound: refused here, not by the producer
        self._engine.check_plan(plan)
        keep = self._engine.slots.keep_limit
        share = (keep - len(self._lanes) * self.ahead - 1) // self.max_consumers
        if share < 1:
            raise ConfigError(
                f"fl.Feed: the ring keeps {keep} batches, too few for max_consumers="
                f"{self.max_consumers} consumers {self.ahead} batches ahead; raise max_kept_bytes "
                "or lower max_consumers or ahead"
            )
        self._keep_share = share
        # consumers report every `_report_every` batches taken (a quarter of `ahead`: the
        # feed's view of a consumer's queue is at most that stale); announcements are held
        # back while the consumer surely has batches queued, and sent in groups (_run_epoch)
        every = self._report_every = max(1, self.ahead // 4)
        self._hold_above = every + 2
        self._group = max(1, (self.ahead - self._hold_above) // 2)

    def _listen(self) -> None:
        directory = _paths.ensure_dir()
        path = _paths.socket_path(self.name, directory)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(2.0)
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a stale socket: its feed died
            except OSError:
                pass
            else:
                raise FeedError(
                    f"a feed named {self.name!r} is already running ({path}); attach to it with "
                    f"fl.attach({self.name!r}) or start this one under another name"
                )
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file: the owner only, whatever the directory
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        listener.listen(64)
        listener.setblocking(False)
        self._listener, self._path = listener, path

    def _start_threads(self) -> None:
        for target, role in ((self._control, "control"), (self._produce, "producer")):
            thread = threading.Thread(
                target=target, name=f"fastload-feed-{role}-{self.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    # --------------------------------------------------------------- info
    @property
    def path(self) -> Path:
        """The feed's socket."""
        assert self._path is not None
        return self._path

    @property
    def epoch(self) -> int:
        """The epoch being produced, or the next one while waiting for consumers."""
        return self._epoch

    def __len__(self) -> int:
        """Batches per epoch of each consumer."""
        return self._n_batches

    def worker_pids(self) -> list[int]:
        """PIDs of the feed's worker processes."""
        return self._engine.worker_pids() if self._engine is not None else []

    def __repr__(self) -> str:
        return (
            f"<fastload.Feed {self.name!r} mode={self.mode!r} batch_size="
            f"{self._lanes[0].batch_size} epoch={self._epoch} consumers={len(self.consumers())}>"
        )

    def consumers(self) -> list[dict[str, Any]]:
        """Attached consumers: id, pid, rank (split), epoch, batch, lag (batches queued)."""
        with self._cond:
            return [self._describe_conn(c) for c in self._conns.values() if c.state != "new"]

    def _describe_conn(self, c: _Conn) -> dict[str, Any]:
        return {
            "id": c.id,
            "pid": c.pid,
            "label": c.label,
            "rank": c.lane if self.mode == "split" else None,
            "state": c.state,
            "epoch": c.epoch,
            "batch": c.batch,
            "lag": c.sent - c.taken,
            "held": len(c.held),
        }

    def status(self) -> dict[str, Any]:
        """The feed's state as ``python -m fastload status`` shows it."""
        with self._cond:
            return {
                "name": self.name,
                "pid": os.getpid(),
                "mode": self.mode,
                "lanes": len(self._lanes),
                "epoch": self._epoch,
                "batch": self._produced // len(self._lanes),
                "n_batches": len(self),
                "batch_size": self._lanes[0].batch_size,
                # fields delivered as values + offsets (ragged={f: "offsets"}); others padded
                "ragged": sorted(self._config["ragged"]),
                "workers": self.worker_pids(),
                "pinned": len(self._pinned),
                "shared_nbytes": int(self._engine.nbytes) if self._engine is not None else 0,
                "memory_cache": self._cache_status(),
                "consumers": [
                    self._describe_conn(c) for c in self._conns.values() if c.state != "new"
                ],
                "error": None if self._error is None else repr(self._error),
            }

    def _cache_status(self) -> dict[str, int] | None:
        """Chunks kept decoded (planned, and filled so far) and their bytes; None: no cache."""
        engine = self._engine
        if engine is None or not engine.cache.active:
            return None
        return {
            "chunks": sum(engine.cache.chunks),
            "of": sum(s.n_chunks for s in engine.spec.sources),
            "filled": engine.cached_chunks_filled,
            "nbytes": int(engine.cache.nbytes),
        }

    def _info(self) -> dict[str, Any]:
        lanes = self._lanes
        return {
            "op": "info",
            "protocol": _wire.PROTOCOL,
            "name": self.name,
            "pid": os.getpid(),
            "mode": self.mode,
            "lanes": len(lanes),
            "config": self._config,
            "fingerprints": [lane._fingerprint for lane in lanes],
            "n_batches": len(self),
            "specs": describe_specs(lanes[0].output_specs),
            "keep": self._keep_share,
            "ahead": self.ahead,
            "report_every": self._report_every,
            "epoch": self._epoch,
        }

    def _arena_message(self) -> dict[str, Any]:
        engine = self._engine
        layout = engine.layout
        return {
            "op": "arena",
            "g": self._gen,
            "shm": engine.arena.name,
            "size": layout.size,
            "regions": {
                name: [r.offset, list(r.shape), r.dtype]
                for name, r in layout.regions.items()
                if name.startswith("batch/")
            },
        }

    # ------------------------------------------------------------ producer
    def _produce(self) -> None:
        try:
            epoch = self._first_epoch
            while not self._stop.is_set():
                members = self._wait_for_members()
                if members is None:
                    break
                self._run_epoch(epoch, members)
                epoch += 1
                with self._cond:
                    self._epoch = epoch
                    self._producing = False
        except BaseException as exc:  # reported to the consumers, re-raised by close()
            if not self._stop.is_set():
                self._error, self._error_epoch = exc, epoch
                _log.error("fastload feed %r stopped in epoch %d: %r", self.name, epoch, exc)
                # nothing more will be produced: stop the workers now rather than at close()
                # (a notebook's feed may stay open for long); consumers keep the batches they
                # hold, their mappings outlive the segment's name
                for lane in self._lanes:
                    with contextlib.suppress(Exception):
                        lane.close()
        finally:
            self._stop.set()
            self._wake()

    def _wait_for_members(self) -> list[_Conn] | None:
        with self._cond:
            while not self._stop.is_set():
                ready = [c for c in self._conns.values() if c.state in ("waiting", "member")]
                if self.mode == "split":
                    ok = len({c.lane for c in ready}) == len(self._lanes)
                else:
                    need = 1 if self._started_any else self.min_consumers
                    ok = len(ready) >= need
                if ok:
                    for c in ready:
                        c.state = "member"
                    self._started_any = True
                    self._producing = True
                    self._members, self._epoch_sent = ready, False
                    return ready
                self._cond.wait(0.5)
        return None

    def _run_epoch(self, epoch: int, members: list[_Conn]) -> None:
        lanes = self._lanes
        plan, table = epoch_work(lanes, epoch)
        engine = lanes[0]._engine_for(plan, table)
        with self._cond:
            if engine is not self._engine:  # a larger ring: consumers map the new arena
                self._engine = engine
                self._gen += 1
                self._pinned.clear()
                for c in self._conns.values():
                    c.held.clear()
                    if c.state in ("waiting", "member"):
                        c.send(self._arena_message())
            for lane in lanes:
                lane._prepare_ahead(epoch + 1)
            self._produced = 0
            self._members = members
            for c in members:
                c.epoch, c.batch = epoch, 0
                c.send({"op": "epoch", "e": epoch, "n": len(self)})
            self._epoch_sent = True
        self._wake()
        slots = engine.slots
        n_lanes = len(lanes)
        # the engine's own run of slots (ragged fields' offsets written into each), as a
        # Loader's; its batches are read back by the consumers with the same slot_batch
        run = engine.produce(plan, table, 0)
        complete = False
        try:
            for j, (slot, n) in enumerate(run):
                lane, k = j % n_lanes, j // n_lanes
                holders = self._wait_for_room(slots, members, lane)
                if holders is None:  # closing, or every member left: abandon the epoch
                    slots.release(slot)
                    break
                with self._cond:  # again: a consumer that joined "now" since gets this batch
                    holders = [c for c in members if c.state == "member" and c.lane == lane]
                if not holders:  # the consumer of this lane left: nobody reads it
                    slots.release(slot)
                    continue
                token = _Token()
                slots.keep(slot, [weakref.ref(token)])
                with self._cond:
                    lid = next(self._lending)
                    self._pinned[lid] = (token, {c.id for c in holders})
                    data = _wire.encode_batch(lid, self._gen, slot, n, epoch, k)
                    for c in holders:
                        c.held.add(lid)
                        c.sent += 1
                        c.queue(data, announcement=True)
                    self._produced += 1
                    # grouped: held back while the consumer surely has batches queued, sent
                    # once `group` wait.  Sure: more than every + 2 were *sent* beyond its last
                    # report, and it reports again after taking `every` of them, so it still
                    # has 2 when its report wakes the control thread, which flushes outboxes
                    due = [
                        c
                        for c in holders
                        if c.unsent >= self._group
                        or c.sent - c.unsent - c.taken <= self._hold_above
                    ]
                del token
                # sent from this thread, outside the feed's lock (the control thread reads
                # releases meanwhile); a full socket is left to the control thread
                if not all([self._send_now(c) for c in due]):
                    self._wake()
            else:
                complete = True
        finally:
            run.close()  # an abandoned epoch drains its tasks before the slots are reused
        with self._cond:
            # an abandoned epoch (the feed closing) has no end: its consumers get "closed",
            # never a short epoch that looks whole
            for c in members if complete else ():
                if c.state == "member":
                    c.send({"op": "end", "e": epoch})
            # from here a consumer that joins (even with start="now") gets the next epoch
            self._epoch, self._producing = epoch + 1, False
        self._wake()

    def _wait_for_room(self, slots: Any, members: list[_Conn], lane: int) -> list[_Conn] | None:
        """The lane's live members once they have room (None: stop the epoch)."""
        while True:
            # a few kept slots per batch, as a loader's engine does; all of them at the limit
            slots.sweep(slots.kept if slots.kept >= slots.keep_limit else 4)
            with self._cond:
                if self._stop.is_set():
                    return None
                live = [c for c in members if c.state == "member"]
                if not live:
                    return None
                holders = [c for c in live if c.lane == lane]
                room = slots.kept < slots.keep_limit and all(
                    c.sent - c.taken < self.ahead for c in holders
                )
                if room:
                    return holders
                waiting = list(holders)
            # nothing held back while the producer waits
            if not all([self._send_now(c) for c in waiting]):
                self._wake()
            with self._cond:
                if self._stop.is_set():
                    return None
                self._cond.wait(0.05)

    # ------------------------------------------------------------- control
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _control(self) -> None:
        sel = self._sel = selectors.DefaultSelector()
        assert self._listener is not None
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        last_check = time.monotonic()
        try:
            while True:
                for key, mask in sel.select(timeout=0.25):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                    else:
                        conn = key.data
                        if mask & selectors.EVENT_READ:
                            self._read(conn)
                        if mask & selectors.EVENT_WRITE and conn.state != "gone":
                            self._flush(conn)
                stopping = self._stop.is_set()
                if stopping:
                    self._say_goodbye()
                with self._cond:
                    conns = list(self._conns.values())
                for conn in conns:
                    self._flush(conn)
                    if conn.state == "gone":
                        continue
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
                    if conn.events != events:
                        if conn.events:
                            sel.modify(conn.sock, events, conn)
                        else:
                            sel.register(conn.sock, events, conn)
                        conn.events = events
                if stopping:
                    break
                if time.monotonic() - last_check > _LIVENESS_S:
                    last_check = time.monotonic()
                    for conn in conns:
                        if conn.state != "gone" and not _alive(conn.pid):
                            self._drop(conn, "its process exited")
        finally:
            for conn in list(self._conns.values()):
                self._drop(conn, "the feed closed")
            sel.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            pid, uid, _gid = _wire.peer_credentials(sock)
            if uid != os.getuid():
                _log.warning(
                    "fastload feed %r refused a connection from uid %d (pid %d)",
                    self.name,
                    uid,
                    pid,
                )
                with contextlib.suppress(OSError):
                    sock.sendall(
                        _wire.encode(
                            {
                                "op": "refused",
                                "error": "access",
                                "message": f"feed {self.name!r} belongs to uid {os.getuid()}; uid "
                                f"{uid} may not attach (feeds are private to their user)",
                            }
                        )
                    )
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(id=next(self._ids), sock=sock, pid=pid)
            conn.send(self._info())
            with self._cond:
                self._conns[conn.id] = conn

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn, "it disconnected")
            return
        try:
            messages = conn.inbuf.feed(data)
        except FeedError as exc:
            self._drop(conn, str(exc))
            return
        for message in messages:
            self._handle(conn, message)

    def _handle(self, conn: _Conn, message: _wire.Message) -> None:
        op = message["op"]
        if op == "r":
            with self._cond:
                for lid in message.get("i", ()):
                    if isinstance(lid, int) and lid in conn.held:
                        conn.held.discard(lid)
                        self._unpin(lid, conn.id)
                taken = message.get("t")
                if isinstance(taken, int):
                    conn.taken = taken
                at = message.get("at")
                if isinstance(at, list) and len(at) == 2:
                    conn.epoch, conn.batch = at
                self._cond.notify_all()
        elif op == "join":
            self._join(conn, message)
        elif op == "status":
            conn.send({"op": "status", "status": self.status()})
        elif op == "leave":  # detached, but holds batches: they stay pinned until released
            with self._cond:
                if conn.state in ("waiting", "member"):
                    conn.state = "left"
                keep = {lid for lid in message.get("keep", ()) if isinstance(lid, int)}
                for lid in conn.held - keep:  # announced but never taken: free them now
                    self._unpin(lid, conn.id)
                conn.held &= keep
                self._cond.notify_all()
        elif op == "bye":
            self._drop(conn, "it detached")

    def _join(self, conn: _Conn, message: _wire.Message) -> None:
        with self._cond:
            joined = [c for c in self._conns.values() if c.state in ("waiting", "member")]
            if len(joined) >= self.max_consumers:
                conn.send(
                    _refusal(
                        "full",
                        f"feed {self.name!r} already serves "
                        f"max_consumers={self.max_consumers} consumers",
                    )
                )
                return
            lane = 0
            if self.mode == "split":
                taken = {c.lane for c in joined}
                wanted = message.get("rank")
                free = [r for r in range(len(self._lanes)) if r not in taken]
                if wanted is None:
                    if not free:
                        conn.send(
                            _refusal(
                                "full",
                                f"every rank of split feed {self.name!r} "
                                f"({len(self._lanes)} consumers) is attached",
                            )
                        )
                        return
                    lane = free[0]
                elif not isinstance(wanted, int) or not 0 <= wanted < len(self._lanes):
                    conn.send(
                        _refusal(
                            "config",
                            f"rank={wanted!r} is not in [0, "
                            f"{len(self._lanes)}) for split feed {self.name!r}",
                        )
                    )
                    return
                elif wanted in taken:
                    conn.send(
                        _refusal(
                            "config",
                            f"rank {wanted} of split feed {self.name!r} is already attached",
                        )
                    )
                    return
                else:
                    lane = wanted
            conn.lane = lane
            conn.state = "waiting"
            conn.label = str(message.get("label", ""))[:64]
            conn.joined = time.monotonic()
            now = bool(message.get("now")) and self.mode == "broadcast" and self._producing
            first = self._epoch + (1 if self._producing and not now else 0)
            conn.send(
                {
                    "op": "joined",
                    "id": conn.id,
                    "lane": lane,
                    "epoch": first,
                    "fingerprint": self._lanes[lane]._fingerprint,
                    # what a plain Loader's state adds to (epoch, batch, fingerprint), so a
                    # consumer's state resumes in one of this configuration
                    "position": _position_fields(self._lanes[lane].state_dict()),
                }
            )
            conn.send(self._arena_message())
            if now:  # into the running epoch, from its next announced batch
                conn.state = "member"
                conn.epoch, conn.batch = self._epoch, 0
                self._members.append(conn)
                if self._epoch_sent:  # else the epoch's start reaches it with the others
                    conn.send({"op": "epoch", "e": self._epoch, "n": len(self), "now": True})
            self._cond.notify_all()

    def _unpin(self, lid: int, cid: int) -> None:
        entry = self._pinned.get(lid)
        if entry is not None:
            entry[1].discard(cid)
            if not entry[1]:
                del self._pinned[lid]  # the token dies: the ring's next sweep frees the slot

    @staticmethod
    def _send_now(conn: _Conn) -> bool:
        """Send what ``conn``'s outbox holds; False if some is left (full socket, or failed).

        The producer announces batches so, without waking the control thread: a
        socket that is full or failed is left to the control thread (which waits
        for it to be writable, or drops the consumer).
        """
        with conn.wlock:
            if not conn.outbox or conn.state == "gone":
                return True
            try:
                sent = conn.sock.send(conn.outbox)
            except OSError:  # full (BlockingIOError), or failed: for the control thread
                return False
            del conn.outbox[:sent]
            if conn.outbox:
                return False
            conn.unsent = 0
            return True

    def _flush(self, conn: _Conn) -> None:
        if not conn.outbox:  # (unlocked: whoever queues more sends it or wakes this thread)
            return
        with conn.wlock:
            if not conn.outbox or conn.state == "gone":
                return
            try:
                sent = conn.sock.send(conn.outbox)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                sent = -1
            if sent >= 0:
                del conn.outbox[:sent]
                if not conn.outbox:
                    conn.unsent = 0
                return
        self._drop(conn, "its socket failed")

    def _drop(self, conn: _Conn, why: str) -> None:
        with self._cond:
            if conn.state == "gone":
                return
            if conn.state in ("waiting", "member", "left"):
                _log.info(
                    "fastload feed %r: consumer %d (pid %d) left: %s",
                    self.name,
                    conn.id,
                    conn.pid,
                    why,
                )
            conn.state = "gone"
            # while the feed stops, the engine may still write into freed slots: pins stay
            # until the engine is closed (a batch held after close stays as it was)
            for lid in () if self._stop.is_set() else conn.held:
                self._unpin(lid, conn.id)
            conn.held.clear()
            self._conns.pop(conn.id, None)
            self._cond.notify_all()
        if conn.events and self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(conn.sock)
            conn.events = 0
        with conn.wlock, contextlib.suppress(OSError):  # not while the producer sends on it
            conn.sock.close()

    def _say_goodbye(self) -> None:
        error = self._error
        message = (
            {"op": "closed", "message": f"feed {self.name!r} closed"}
            if error is None
            else _failure_message(self.name, self._error_epoch, error)
        )
        with self._cond:
            conns = list(self._conns.values())
        for conn in conns:
            with self._cond:
                conn.send(message)
            # best effort, bounded: a consumer that does not read is not waited for
            with conn.wlock, contextlib.suppress(OSError):
                conn.sock.setblocking(True)
                conn.sock.settimeout(0.5)
                conn.sock.sendall(bytes(conn.outbox))
                conn.outbox.clear()

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop serving: consumers get :class:`~fastload.errors.FeedClosedError`; free everything."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._wake()
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._release()
        _open_feeds.discard(self)
        error, self._error = self._error, None
        if error is not None:
            raise FeedError(
                f"feed {self.name!r} failed in epoch {self._error_epoch}: {error}"
            ) from error

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            if self._listener is not None:
                self._listener.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        self._listener = None
        for lane in self._lanes:
            lane.close()
        self._engine = None
        self._pinned.clear()  # only now: the engine wrote its last batch
        for s in (self._wake_r, self._wake_w):
            s.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the feed stops (closed, or failed); True if it did."""
        return self._stop.wait(timeout)

    def __enter__(self) -> Feed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: longest error text a "failed" message carries (the wire's messages are at most 1 MiB)
_CAUSE_CHARS = 16_384


def _failure_message(name: str, epoch: int, error: BaseException) -> dict[str, Any]:
    """What the consumers receive when the producer failed: the error's class, text and notes.

    JSON, never a pickle: the consumer rebuilds a :mod:`fastload.errors` class by name
    (a slot's row bound exceeded in a later epoch: the engine's ``ConfigError`` naming
    the field, the rows needed and the bound; a transform's ``RaggedBoundError``) as
    the ``__cause__`` of its :class:`~fastload.errors.FeedClosedError`.  The notes a
    worker's error carries (which worker, chunk or batch) travel too; its traceback
    stays in the feed's process (``close()`` re-raises the error itself).
    """
    text = str(error)[:_CAUSE_CHARS]
    notes = [
        str(note)[:_CAUSE_CHARS]
        for note in getattr(error, "__notes__", ())
        if not str(note).startswith("worker traceback")
    ]
    kind = type(error).__name__
    return {
        "op": "failed",
        "message": f"feed {name!r} failed in epoch {epoch}: {kind}: {text}",
        "cause": {"type": kind, "message": text, "notes": notes[:8]},
        "epoch": epoch,
    }


def _refusal(error: str, message: str) -> dict[str, Any]:
    return {"op": "refused", "error": error, "message": message}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_open_feeds: weakref.WeakSet[Feed] = weakref.WeakSet()


@atexit.register
def _close_open_feeds() -> None:
    for feed in list(_open_feeds):
        with contextlib.suppress(Exception):
            feed.close()


def _position_fields(state: dict[str, Any]) -> dict[str, Any]:
    """The rank, world and configuration fields of a lane loader's state, for its consumers."""
    return {key: state[key] for key in ("rank", "world_size", "config") if key in state}
