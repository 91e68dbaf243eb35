"""fl.Feed / fl.attach: exact epochs for every consumer, disjoint splits, and no leak on any exit.

Consumers run as threads of the test process where only the batches matter (fast), and
as separate processes where a process must die (SIGKILL of a consumer, of the feed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leaks import shm_segments, wait_until

import fastload as fl
from fastload.errors import (
    ConfigError,
    FeedAccessError,
    FeedClosedError,
    FeedConfigError,
    FeedError,
    FeedNotFoundError,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def feed_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's feeds in a private directory (inherited by subprocesses through the env)."""
    path = tmp_path_factory.mktemp("feeds") / "d"
    monkeypatch.setenv("FASTLOAD_FEED_DIR", str(path))
    return path


def numbered(n: int, chunk_len: int) -> fl.MemorySplit:
    """Sample ``i`` has ``y = i`` and ``X = [i, -i]``: every batch says which samples it holds."""
    i = np.arange(n)
    return fl.from_arrays(
        {"X": np.stack([i, -i], axis=1).astype(np.float32), "y": i.astype(np.int64)},
        chunk_len=chunk_len,
    )


def loader_epochs(source, batch_size, epochs, **options) -> list[list[np.ndarray]]:
    with fl.Loader(source, batch_size, workers=0, **options) as loader:
        return [[b["y"].copy() for b in loader] for _ in range(epochs)]


def consume(name: str, epochs: int, out: dict, key: object, **attach) -> None:
    """Attach and record ``epochs`` epochs of ``y`` (checking X agrees), then detach."""
    try:
        with fl.attach(name, **attach) as consumer:
            got = []
            for _ in range(epochs):
                epoch = []
                for batch in consumer:
                    assert not batch["y"].flags.writeable
                    np.testing.assert_array_equal(batch["X"][:, 0], batch["y"])
                    epoch.append(batch["y"].copy())
                got.append(epoch)
            out[key] = (got, consumer.state_dict(), len(consumer))
    except BaseException as exc:  # reported by the test thread
        out[key] = exc


def run_threads(targets: list) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a consumer hung"


def assert_same_epochs(got: list[list[np.ndarray]], want: list[list[np.ndarray]]) -> None:
    assert len(got) == len(want)
    for e, (g, w) in enumerate(zip(got, want, strict=True)):
        assert len(g) == len(w), f"epoch {e}: {len(g)} batches, want {len(w)}"
        for k, (a, b) in enumerate(zip(g, w, strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"epoch {e} batch {k}")


# --------------------------------------------------------------------------- broadcast
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n=st.integers(1, 120),
    chunk_len=st.integers(1, 17),
    batch_size=st.integers(1, 40),
    n_consumers=st.integers(1, 3),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**16),
    ahead=st.integers(1, 40),
)
def test_broadcast_every_consumer_gets_every_epoch_exactly(
    n, chunk_len, batch_size, n_consumers, shuffle, drop_last, seed, ahead
):
    if drop_last and n < batch_size:
        drop_last = False
    source = numbered(n, chunk_len)
    options = {"shuffle": shuffle, "seed": seed, "drop_last": drop_last}
    want = loader_epochs(source, batch_size, 2, **options)
    out: dict = {}
    with fl.Feed(
        source,
        batch_size,
        name="scan",
        workers=0,
        min_consumers=n_consumers,
        ahead=ahead,
        **options,
    ) as feed:
        run_threads(
            [
                lambda i=i: consume("scan", 2, out, i, batch_size=batch_size, seed=seed)
                for i in range(n_consumers)
            ]
        )
        assert len(feed) == len(want[0])
    for i in range(n_consumers):
        assert not isinstance(out[i], BaseException), out[i]
        got, state, length = out[i]
        assert_same_epochs(got, want)
        assert length == len(want[0])
        assert state["epoch"] == 2
        assert state["batch"] == 0


def test_grouped_announcements_give_consumers_of_different_speeds_the_exact_plan(monkeypatch):
    from fastload.feed import _server

    groups: list[int] = []
    send_now = _server.Feed._send_now

    def counting(conn):
        groups.append(conn.unsent)
        return send_now(conn)

    monkeypatch.setattr(_server.Feed, "_send_now", staticmethod(counting))
    source = numbered(2400, 40)
    want = loader_epochs(source, 8, 2, seed=4)
    out: dict = {}

    def slow(key: object, pause: float) -> None:
        try:
            with fl.attach("speeds") as consumer:
                got = []
                for _ in range(2):
                    epoch = []
                    for batch in consumer:
                        epoch.append(batch["y"].copy())
                        time.sleep(pause)
                    got.append(epoch)
                out[key] = got
        except BaseException as exc:
            out[key] = exc

    with fl.Feed(source, 8, name="speeds", workers=1, seed=4, ahead=16, min_consumers=3):
        run_threads(
            [lambda: slow("fast", 0.0), lambda: slow("mid", 0.0005), lambda: slow("slow", 0.002)]
        )
    for key in ("fast", "mid", "slow"):
        assert not isinstance(out[key], BaseException), out[key]
        assert_same_epochs(out[key], want)
    # the slow consumer lagged: its announcements went out several to one send
    assert max(groups) > 1


def test_broadcast_with_process_workers_and_a_store(split_a, no_leaks):
    want = loader_epochs(split_a, 8, 2, fields=["X", "y"], seed=5)
    out: dict = {}
    with fl.Feed(split_a, 8, name="store", workers=2, fields=["X", "y"], seed=5, min_consumers=2):
        run_threads(
            [lambda i=i: consume_store("store", 2, out, i) for i in range(2)],
        )
    for i in range(2):
        assert not isinstance(out[i], BaseException), out[i]
        assert_same_epochs(out[i], want)


def consume_store(name: str, epochs: int, out: dict, key: object) -> None:
    try:
        with fl.attach(name, fields=["X", "y"]) as consumer:
            out[key] = [[b["y"].copy() for b in consumer] for _ in range(epochs)]
    except BaseException as exc:
        out[key] = exc


def test_kept_batches_stay_correct_and_copies_past_the_share(recwarn):
    """A consumer that keeps every batch neither stalls the feed nor sees overwritten data."""
    source = numbered(400, 10)
    want = loader_epochs(source, 4, 1, seed=1)[0]
    with (
        fl.Feed(
            source, 4, name="keep", workers=0, seed=1, max_kept_bytes=1024, max_consumers=1, ahead=2
        ),
        fl.attach("keep") as consumer,
    ):
        kept = list(consumer)  # 100 batches; the ring keeps far fewer
    assert len(kept) == len(want)
    for a, b in zip(kept, want, strict=True):
        np.testing.assert_array_equal(a["y"], b)
    assert any("receives copies" in str(w.message) for w in recwarn.list)


def test_join_mid_epoch_starts_at_the_next_epoch():
    source = numbered(200, 5)
    want = loader_epochs(source, 10, 3, seed=2)
    with fl.Feed(source, 10, name="join", workers=0, seed=2, ahead=2) as feed:
        first = fl.attach("join")
        it = iter(first)
        got0 = [next(it)["y"].copy() for _ in range(3)]  # epoch 0 under way
        late = fl.attach("join")
        assert late.state_dict()["epoch"] == 1  # joined during epoch 0: starts with epoch 1
        got0 += [b["y"].copy() for b in it]
        assert_same_epochs([got0], want[:1])
        start = late.state_dict()["epoch"]
        out: dict = {}

        def one_epoch_then_detach() -> None:
            # an attached consumer that stops iterating holds everyone back: detach
            out["late"] = [[b["y"].copy() for b in late]]
            late.close()

        run_threads(
            [
                one_epoch_then_detach,
                lambda: out.setdefault("first", [[b["y"].copy() for b in first] for _ in range(2)]),
            ]
        )
        assert_same_epochs(out["late"], [want[start]])
        assert_same_epochs(out["first"], want[1:3])
        assert feed.epoch >= 2
        first.close()
        late.close()


# --------------------------------------------------------------------------- split
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(6, 150),
    chunk_len=st.integers(1, 13),
    batch_size=st.integers(1, 12),
    n_consumers=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_split_consumers_are_disjoint_cover_and_equal(n, chunk_len, batch_size, n_consumers, seed):
    source = numbered(n, chunk_len)
    if (n // n_consumers) // batch_size == 0:
        batch_size = max(1, n // n_consumers)
    out: dict = {}
    with fl.Feed(
        source,
        batch_size,
        name="ddp",
        mode="split",
        consumers=n_consumers,
        workers=0,
        seed=seed,
        drop_last=True,
    ):
        run_threads(
            [
                lambda r=r: consume("ddp", 1, out, r, rank=r, drop_last=True)
                for r in range(n_consumers)
            ]
        )
    seen = []
    counts = set()
    for r in range(n_consumers):
        assert not isinstance(out[r], BaseException), out[r]
        got, _, _ = out[r]
        want = loader_epochs(
            source, batch_size, 1, seed=seed, rank=r, world_size=n_consumers, drop_last=True
        )
        assert_same_epochs(got, want)
        counts.add(len(got[0]))
        seen.extend(np.concatenate(got[0]).tolist())
    assert len(counts) == 1  # DDP: the same number of batches on every rank
    assert len(seen) == len(set(seen))  # disjoint
    expected = n_consumers * ((n // n_consumers) // batch_size) * batch_size
    assert len(seen) == expected


def test_split_without_drop_last_covers_the_epoch_exactly():
    source = numbered(48, 5)
    out: dict = {}
    with fl.Feed(source, 4, name="cover", mode="split", consumers=3, workers=0):
        run_threads([lambda r=r: consume("cover", 2, out, r) for r in range(3)])
    for e in range(2):
        seen = sorted(int(v) for r in range(3) for batch in out[r][0][e] for v in batch)
        assert seen == list(range(48))


def test_split_with_unequal_shards_asks_for_drop_last():
    with pytest.raises(ConfigError, match="drop_last=True"):
        fl.Feed(numbered(50, 5), 4, name="uneq", mode="split", consumers=3, workers=0)


# --------------------------------------------------------------------------- errors
def test_attach_to_a_missing_feed():
    with pytest.raises(FeedNotFoundError, match="no feed named 'nope'"):
        fl.attach("nope")


@pytest.mark.parametrize(
    ("setting", "value"),
    [("batch_size", 16), ("seed", 1), ("shuffle", False), ("fields", ["y"]), ("mode", "split")],
)
def test_attach_with_another_configuration_names_the_setting(setting, value):
    with fl.Feed(numbered(60, 6), 8, name="cfg", workers=0, seed=0):
        with pytest.raises(FeedConfigError, match=f"has {setting}="):
            fl.attach("cfg", **{setting: value})
        with fl.attach("cfg", batch_size=8, seed=0, shuffle=True, fields=["X", "y"]) as c:
            assert len(c) == 8


def test_a_second_feed_of_the_same_name_is_refused():
    source = numbered(20, 5)
    with (
        fl.Feed(source, 4, name="twice", workers=0),
        pytest.raises(FeedError, match="already running"),
    ):
        fl.Feed(source, 4, name="twice", workers=0)


def test_resume_a_consumer_state_in_a_plain_loader():
    source = numbered(300, 7)
    with fl.Feed(source, 16, name="resume", workers=0, seed=9), fl.attach("resume") as c:
        it = iter(c)
        for _ in range(5):
            next(it)
        state = c.state_dict()
        rest_feed = [b["y"].copy() for b in it]
    assert state["epoch"] == 0
    assert state["batch"] == 5
    with fl.Loader(source, 16, workers=0, seed=9) as loader:
        loader.load_state_dict(state)
        rest = [b["y"].copy() for b in loader]
    assert_same_epochs([rest], [rest_feed])


@pytest.mark.tf
def test_consumer_tf_dataset_gives_the_plans_batches():
    """``consumer.tf()``: a tf.data.Dataset of the feed's batches, one epoch per iteration."""
    tf = pytest.importorskip("tensorflow")
    source = numbered(203, 7)
    want = loader_epochs(source, 16, 2, seed=4, drop_last=True)
    with (
        fl.Feed(source, 16, name="tfeed", workers=1, seed=4, drop_last=True),
        fl.attach("tfeed") as consumer,
    ):
        ds = consumer.tf(x="X", y="y")
        x_spec, y_spec = ds.element_spec
        assert x_spec.shape == (16, 2)
        assert y_spec == tf.TensorSpec((16,), tf.int64, name="y")
        got = []
        for _ in range(2):
            epoch = []
            for x, y in ds:
                np.testing.assert_array_equal(x.numpy()[:, 0], y.numpy())
                epoch.append(y.numpy())
            got.append(epoch)
    assert_same_epochs(got, want)


def test_consumer_skips_to_a_later_state():
    source = numbered(100, 5)
    want = loader_epochs(source, 10, 3, seed=4)
    with fl.Feed(source, 10, name="skip", workers=0, seed=4), fl.attach("skip") as c:
        c.load_state_dict({"epoch": 1, "batch": 3, "fingerprint": c.state_dict()["fingerprint"]})
        assert_same_epochs([[b["y"].copy() for b in c]], [want[1][3:]])
        c.set_epoch(2)
        assert_same_epochs([[b["y"].copy() for b in c]], [want[2]])
        with pytest.raises(FeedConfigError, match="cannot go back"):
            c.set_epoch(0)


# --------------------------------------------------------------------------- processes
CONSUMER = textwrap.dedent(
    """
    import sys, time
    import fastload as fl
    c = fl.attach(sys.argv[1])
    held = []
    for i, batch in enumerate(c):
        held.append(batch)          # pins its slots until the process dies
        print(i, flush=True)
        time.sleep(0.01)
    time.sleep(600)
    """
)

DROPPER = textwrap.dedent(
    """
    import os, signal, sys
    import fastload as fl
    c = fl.attach(sys.argv[1])
    for i, batch in enumerate(c):
        del batch  # released here, but not reported yet: reports are coalesced
        if i == 5:
            channel = c._channel
            channel.sweep()
            print(channel.taken - channel._reported, len(channel.released), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_of_a_consumer_holding_unreported_releases_leaks_no_slot(no_leaks):
    source = numbered(3000, 30)
    want = loader_epochs(source, 10, 2, seed=6)
    with fl.Feed(source, 10, name="drop", workers=1, seed=6, min_consumers=2) as feed:
        victim = spawn(DROPPER, "drop")
        out: dict = {}
        survivor = threading.Thread(target=consume, args=("drop", 2, out, "s"))
        survivor.start()
        try:
            assert victim.stdout is not None
            line = victim.stdout.readline()
            assert line, victim.stderr.read() if victim.stderr else ""
            unreported_taken, unreported_released = map(int, line.split())
            assert unreported_taken > 0  # the case under test: taken, released, not reported
            assert unreported_released > 0
            assert victim.wait(10) == -signal.SIGKILL
            assert wait_until(lambda: len(feed.consumers()) <= 1, 5.0), feed.consumers()
            survivor.join(120)
            assert not survivor.is_alive()
            # both gone: nothing of either stays pinned
            assert wait_until(lambda: feed.status()["pinned"] == 0, 5.0), feed.status()
        finally:
            with contextlib.suppress(ProcessLookupError):
                victim.kill()
            victim.wait()
            for stream in (victim.stdout, victim.stderr):
                if stream:
                    stream.close()
    assert not isinstance(out["s"], BaseException), out["s"]
    assert_same_epochs(out["s"][0], want)


FEED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import fastload as fl
    i = np.arange(4000)
    src = fl.from_arrays({"X": np.stack([i, -i], 1).astype(np.float32), "y": i}, chunk_len=50)
    with fl.Feed(src, 20, name=sys.argv[1], workers=int(sys.argv[2]), seed=3) as feed:
        print("ready", flush=True)
        try:
            feed.wait()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """
)


def spawn(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigkill_of_a_consumer_releases_its_slots(no_leaks):
    source = numbered(3000, 30)
    want = loader_epochs(source, 10, 2, seed=6)
    with fl.Feed(source, 10, name="kill", workers=1, seed=6, ahead=4, min_consumers=2) as feed:
        victim = spawn(CONSUMER, "kill")
        out: dict = {}
        survivor = threading.Thread(target=consume, args=("kill", 2, out, "s"))
        survivor.start()
        try:
            assert victim.stdout is not None
            for _ in range(5):  # the victim is inside epoch 0, holding batches
                assert victim.stdout.readline(), victim.stderr.read() if victim.stderr else ""
            victim.kill()
            victim.wait()
            assert wait_until(lambda: len(feed.consumers()) <= 1, 5.0), feed.consumers()
            survivor.join(120)
            assert not survivor.is_alive()
        finally:
            with contextlib.suppress(ProcessLookupError):
                victim.kill()
            victim.wait()
            if victim.stdout:
                victim.stdout.close()
            if victim.stderr:
                victim.stderr.close()
    assert not isinstance(out["s"], BaseException), out["s"]
    assert_same_epochs(out["s"][0], want)


def test_sigkill_of_the_feed_is_reported_within_seconds(feed_dir):
    feed = spawn(FEED, "doomed", "1")
    try:
        assert feed.stdout is not None
        assert feed.stdout.readline().strip() == "ready", feed.stderr.read() if feed.stderr else ""
        status = {s["name"]: s for s in fl.feed.feed_status()}["doomed"]
        workers = status["workers"]
        assert workers
        with fl.attach("doomed") as consumer:
            it = iter(consumer)
            next(it)
            feed.kill()
            feed.wait()
            start = time.monotonic()
            with pytest.raises(FeedClosedError, match="went away"):
                for _ in it:
                    pass
            assert time.monotonic() - start < 5.0
    finally:
        with contextlib.suppress(ProcessLookupError):
            feed.kill()
        feed.wait()
        for stream in (feed.stdout, feed.stderr):
            if stream:
                stream.close()
    # the resource tracker unlinks the arena, the workers follow their parent
    assert wait_until(lambda: not shm_segments(feed.pid), 10.0), shm_segments(feed.pid)
    assert wait_until(lambda: not any(_alive(p) for p in workers), 10.0)
    with pytest.raises(FeedNotFoundError, match="left from a feed that died"):
        fl.attach("doomed")
    assert fl.feed.feed_status() == []  # status removes the stale socket
    assert not list(feed_dir.iterdir())


def test_ctrl_c_in_the_feed_process_leaves_nothing(feed_dir):
    feed = spawn(FEED, "intr", "1")
    try:
        assert feed.stdout is not None
        assert feed.stdout.readline().strip() == "ready"
        workers = {s["name"]: s for s in fl.feed.feed_status()}["intr"]["workers"]
        consumer = fl.attach("intr")
        next(iter(consumer))
        feed.send_signal(signal.SIGINT)
        assert feed.wait(30) == 0, feed.stderr.read() if feed.stderr else ""
        with pytest.raises(FeedClosedError):
            list(consumer)
        consumer.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            feed.kill()
        feed.wait()
        for stream in (feed.stdout, feed.stderr):
            if stream:
                stream.close()
    assert not shm_segments(feed.pid)
    assert not any(_alive(p) for p in workers)
    assert not list(feed_dir.iterdir())


def test_close_with_attached_consumers_leaves_nothing(no_leaks):
    source = numbered(500, 10)
    feed = fl.Feed(source, 10, name="closing", workers=2)
    consumers = [fl.attach("closing") for _ in range(2)]
    batch = next(iter(consumers[0]))
    feed.close()
    with pytest.raises(FeedClosedError):
        list(consumers[1])
    assert batch["y"].shape == (10,)  # a held batch stays readable after the feed closed
    for c in consumers:
        c.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- isolation
_NOBODY = textwrap.dedent(
    """
    import os, socket, sys
    import fastload as fl
    import fastload.feed._consumer  # imported while root: uid 65534 may not read the install
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    {action}
    try:
        message, code = action(*sys.argv[1:]), 0
    except BaseException as exc:
        message, code = f"{{type(exc).__name__}}: {{exc}}", 1
    sys.stdout.write(message[:4000])
    sys.exit(code)
    """
)


def _as_nobody(action: str, *args: str) -> tuple[int, str]:
    """Run ``action(*args)`` (the source of a function of that name) under uid 65534.

    In a fresh interpreter (a subprocess), never a fork of this one: a fork of a
    process that imported JAX (or any library running threads) is unsafe, and
    pytest reports JAX's at-fork handler (tests/test_jax.py before this file).
    The child imports fastload's feed modules as root (uid 65534 may not read the
    installation, as a forked child did not need to), then drops to uid/gid 65534;
    it inherits the environment (``FASTLOAD_FEED_DIR``).  Returns its exit code
    (0: ``action`` returned, 1: it raised) and its message (the return value, or
    ``"ExceptionType: message"``).
    """
    script = _NOBODY.format(action=textwrap.dedent(action).strip())
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to another uid")
def test_another_user_cannot_attach():
    with fl.Feed(numbered(40, 5), 4, name="mine", workers=0):
        code, message = _as_nobody(
            """
            def action() -> str:
                fl.attach("mine", timeout_s=5)
                return "attached"
            """
        )
    assert code == 1
    assert message.startswith(FeedAccessError.__name__), message


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to another uid")
def test_feed_refuses_another_uid_even_through_an_open_socket(monkeypatch):
    """Should the directory be opened to others, the feed still checks the peer's uid."""
    directory = Path(tempfile.mkdtemp(prefix="fastload-feedtest-"))
    monkeypatch.setenv("FASTLOAD_FEED_DIR", str(directory / "feeds"))
    try:
        with fl.Feed(numbered(40, 5), 4, name="open", workers=0) as feed:
            directory.chmod(0o755)
            (directory / "feeds").chmod(0o711)
            feed.path.chmod(0o777)
            code, message = _as_nobody(
                """
                def action(path: str) -> str:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(5)
                    sock.connect(path)
                    return sock.recv(65536).decode()
                """,
                str(feed.path),
            )
            assert code == 0, message
            assert '"op":"refused"' in message
            assert "uid 65534 may not attach" in message
            assert feed.consumers() == []
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- consumer transforms
class AddField(fl.transforms.Transform):
    """Adds ``new = old * factor + offset`` (module level: feed workers unpickle it)."""

    def __init__(self, old: str, new: str, factor: int, offset: int = 0) -> None:
        self.old, self.new, self.factor, self.offset = old, new, factor, offset

    def output_spec(self, inputs):
        return {**inputs, self.new: inputs[self.old]}

    def __call__(self, batch):
        return {**batch, self.new: batch[self.old] * self.factor + self.offset}


def test_consumer_transform_runs_after_the_feed_transform():
    """The feed's transform runs in its workers, the consumer's in the consumer, in that order;
    output_specs are the consumer transform's, the batches those of the plain Loader."""
    source = numbered(300, 20)
    want = loader_epochs(source, 16, 1, seed=2)
    feed_t = AddField("y", "y2", 2)
    with fl.Feed(source, 16, name="ct", workers=0, seed=2, transform=feed_t):
        with fl.attach("ct", consumer_transform=AddField("y2", "y3", 1, offset=1)) as consumer:
            assert set(consumer.output_specs) == {"X", "y", "y2", "y3"}
            got = []
            for batch in consumer:
                np.testing.assert_array_equal(batch["y2"], 2 * batch["y"])
                np.testing.assert_array_equal(batch["y3"], 2 * batch["y"] + 1)
                got.append(batch["y"].copy())
        assert_same_epochs([got], want)
        with fl.attach("ct") as plain:
            assert set(plain.output_specs) == {"X", "y", "y2"}


def test_a_bad_consumer_transform_is_refused_and_detaches(no_leaks):
    with fl.Feed(numbered(100, 10), 10, name="badct", workers=0) as feed:
        with pytest.raises(ConfigError, match="not callable"):
            fl.attach("badct", consumer_transform=object())
        with pytest.raises(ConfigError, match="no output_spec"):
            fl.attach("badct", consumer_transform=lambda b: b)
        assert wait_until(lambda: feed.consumers() == [], 5.0), feed.consumers()


# --------------------------------------------------------------------------- start="now"
def test_start_now_joins_the_running_epoch_and_says_what_it_missed():
    """A consumer attached with start="now" mid-epoch gets the rest of that epoch (the plan's
    batches from some k on), its state lists batches 0..k-1 as missed and resumes a plain
    Loader at the right batch; later epochs are whole.  The default consumer is unaffected."""
    source = numbered(1000, 20)
    want = loader_epochs(source, 10, 2, seed=8)
    with fl.Feed(source, 10, name="now", workers=0, seed=8, ahead=4):
        first = fl.attach("now")
        it = iter(first)
        early = [next(it)["y"].copy() for _ in range(30)]
        late = fl.attach("now", start="now")
        assert late.epoch == 0
        out: dict = {}

        def run_late() -> None:
            try:
                got0, state1 = [], None
                for batch in late:
                    got0.append(batch["y"].copy())
                    if state1 is None:
                        state1 = late.state_dict()
                got1 = [b["y"].copy() for b in late]
                out["late"] = (got0, state1, late.state_dict(), got1)
            except BaseException as exc:
                out["late"] = exc

        thread = threading.Thread(target=run_late)
        thread.start()
        rest = [b["y"].copy() for b in it]
        second = [b["y"].copy() for b in first]
        thread.join(60)
        assert not thread.is_alive()
        first.close()
        late.close()
    assert_same_epochs([early + rest, second], want)
    assert not isinstance(out["late"], BaseException), out["late"]
    got0, state1, state_end, got1 = out["late"]
    k = len(want[0]) - len(got0)
    assert k >= 30  # it joined after the first consumer took 30 batches
    assert_same_epochs([got0, got1], [want[0][k:], want[1]])
    assert state1["epoch"] == 0
    assert state1["batch"] == k + 1
    assert state1["missed"] == [[0, 0, k]]
    assert state_end["missed"] == [[0, 0, k]]
    assert (state_end["epoch"], state_end["batch"]) == (2, 0)
    with fl.Loader(source, 10, workers=0, seed=8) as loader:  # resumes after its first batch
        loader.load_state_dict(state1)
        assert_same_epochs([[b["y"].copy() for b in loader]], [want[0][k + 1 :]])


def test_start_now_between_epochs_and_in_split_mode():
    source = numbered(200, 20)
    with (
        fl.Feed(source, 10, name="nowsplit", mode="split", consumers=2, workers=0),
        pytest.raises(FeedConfigError, match="start='now' applies to a broadcast"),
    ):
        fl.attach("nowsplit", start="now")
    with pytest.raises(ConfigError, match="start must be"):
        fl.attach("nowsplit", start="later")
    want = loader_epochs(source, 10, 1)
    with (
        fl.Feed(source, 10, name="idle", workers=0),  # no epoch running: start="now" is whole
        fl.attach("idle", start="now") as consumer,
    ):
        assert_same_epochs([[b["y"].copy() for b in consumer]], want)
        assert "missed" not in consumer.state_dict()


# --------------------------------------------------------------------------- worker faults
class Slow:
    """Sleeps ``seconds`` per batch, so the feed's workers die holding tasks."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        time.sleep(self.seconds)
        return dict(batch)


@pytest.mark.timeout(60)
def test_sigkill_of_a_feed_worker_is_recovered_and_every_consumer_gets_the_plan(split_a, no_leaks):
    """A feed worker SIGKILLed mid-epoch is replaced as in a Loader (warned, tasks re-run): both
    consumers still get exactly the plan's batches, in order, both epochs."""
    values = split_a.read("X")
    with fl.Loader(split_a, 3, workers=0, seed=4, fields=["X", "y"]) as loader:
        plans = [loader.plan(e) for e in (0, 1)]
    options = {
        "workers": 2,
        "prefetch": 2,
        "seed": 4,
        "fields": ["X", "y"],
        "transform": Slow(0.02),
    }
    died = r"worker \d \(pid \d+\) died \(exit code -9 \(SIGKILL\)\) while running: .*restarting"
    with pytest.warns(RuntimeWarning, match=died):
        out = _two_consumers_killing_a_worker(split_a, options)
    for key in (0, 1):
        assert not isinstance(out[key], BaseException), out[key]
        for epoch, plan in enumerate(plans):
            got = out[key][epoch]
            assert len(got) == plan.n_batches
            for k, x in enumerate(got):
                np.testing.assert_array_equal(x, values[plan.batch(k)[1]], err_msg=f"{epoch}/{k}")


def _two_consumers_killing_a_worker(split: fl.Split, options: dict) -> dict:
    """Two consumers take two epochs (copies) while worker 0 of the feed is SIGKILLed."""
    out: dict = {}

    def take(key: int) -> None:
        try:
            with fl.attach("wkill", copy=True) as consumer:
                out[key] = [[b["X"] for b in consumer] for _ in range(2)]
        except BaseException as exc:
            out[key] = exc

    with fl.Feed(split, 3, name="wkill", min_consumers=2, ahead=2, **options) as feed:
        threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: feed.status()["batch"] >= 2, 20.0)
        victim = feed.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(45)
            assert not t.is_alive()
        assert victim not in feed.worker_pids()
        assert len(feed.worker_pids()) == 2
    return out


def test_closing_mid_epoch_is_an_error_never_a_short_epoch():
    """A feed closed while its consumer is inside an epoch: the iteration raises, it does not
    end early as if the epoch were complete."""
    feed = fl.Feed(numbered(400, 20), 16, name="short", workers=1, seed=3, ahead=4)
    with fl.attach("short") as consumer:
        assert len(list(consumer)) == 25
        assert wait_until(lambda: feed.status()["batch"] >= 4, 10.0)
        feed.close()
        got = []
        with pytest.raises(FeedClosedError):
            got.extend(consumer)
        assert len(got) < 25
