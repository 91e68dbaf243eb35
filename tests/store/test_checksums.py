"""The read path's CRC32C: the GIL-releasing ``crc32c`` and zarr's ``google_crc32c`` agree."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import fastload as fl
from fastload.errors import CorruptStoreError
from fastload.store import _decoder

google_crc32c = pytest.importorskip("google_crc32c")


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 65_537, 3 << 20])
def test_both_implementations_agree(size: int) -> None:
    body = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    body.flags.writeable = False  # what the decoder passes: a read-only view of the file bytes
    assert _decoder._crc32c()(body) == google_crc32c.value(body.tobytes())


def test_fallback_without_crc32c_still_detects_a_flipped_bit(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "crc32c", None)  # as if the package were not installed
    assert _decoder._crc32c() is google_crc32c.value
    X = np.arange(4096, dtype=np.float32).reshape(1024, 4)
    fl.write_arrays(tmp_path / "s.zarr", {"train": {"X": X}})
    chunk = tmp_path / "s.zarr" / "train" / "X" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="CRC32C"):
        fl.open_store(tmp_path / "s.zarr")["train"].read("X")


class _CountingCrc:
    def __init__(self) -> None:
        self.calls = 0
        self._crc = _decoder._crc32c()

    def __call__(self, body: object) -> int:
        self.calls += 1
        return self._crc(body)


def _settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every file look older than SETTLE_NS (as a store written earlier would be)."""
    from fastload.store import _files

    real = _files.time.time_ns
    monkeypatch.setattr(_files.time, "time_ns", lambda: real() + 10 * _files.SETTLE_NS)


def _decoder_of(path) -> tuple[_decoder.ChunkDecoder, _CountingCrc]:
    decoder = fl.open_store(path)["train"].decoder("X")
    counting = decoder._crc = _CountingCrc()
    return decoder, counting


def _store(tmp_path) -> tuple[object, np.ndarray]:
    X = np.random.default_rng(1).standard_normal((4096, 8)).astype(np.float32)
    fl.write_arrays(tmp_path / "s.zarr", {"train": {"X": X}}, chunk_len=1024)
    return tmp_path / "s.zarr", X


def test_an_unchanged_file_is_verified_once_per_decoder(tmp_path, monkeypatch) -> None:
    path, X = _store(tmp_path)
    _settled(monkeypatch)
    decoder, counting = _decoder_of(path)
    out = np.empty((1024, 8), np.float32)
    for _ in range(3):
        for chunk in range(4):
            decoder.decode_into(chunk, out)
            np.testing.assert_array_equal(out, X[chunk * 1024 : (chunk + 1) * 1024])
    assert counting.calls == 4
    # a worker's copy verifies what it reads itself
    import pickle

    copy = pickle.loads(pickle.dumps(decoder))
    copy._crc = again = _CountingCrc()
    copy.decode_into(0, out)
    assert again.calls == 1


def test_a_file_rewritten_in_place_is_verified_again(tmp_path, monkeypatch) -> None:
    import time

    path, _ = _store(tmp_path)
    _settled(monkeypatch)
    decoder, counting = _decoder_of(path)
    out = np.empty((1024, 8), np.float32)
    decoder.decode_into(2, out)
    time.sleep(0.05)  # past the kernel's coarse timestamp tick
    chunk = path / "train" / "X" / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0x01  # same size, same inode: only the timestamps tell
    with open(chunk, "r+b") as fh:
        fh.write(bytes(data))
    with pytest.raises(CorruptStoreError, match="CRC32C"):
        decoder.decode_into(2, out)
    assert counting.calls == 2


def test_freshly_written_files_are_verified_on_every_read(tmp_path) -> None:
    path, _ = _store(tmp_path)
    decoder, counting = _decoder_of(path)  # files younger than SETTLE_NS: no stamp
    out = np.empty((1024, 8), np.float32)
    for _ in range(3):
        decoder.decode_into(0, out)
    assert counting.calls == 3
