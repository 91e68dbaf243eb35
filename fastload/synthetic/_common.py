"""Machinery shared by the synthetic generators.

Role: seeding, argument checks, block iteration, atomic output files, a
byte-deterministic streaming ``.npz`` writer and the optional progress bar.

Invariants
----------
* Every block of events draws from its own generator, seeded from
  ``(seed, dataset tag, split, block index)``.  Output therefore depends only
  on the seed and the event counts, never on timing or on how many blocks were
  already written, and two splits never share random numbers.
* Output files appear under their final name only when complete: they are
  written to a hidden temporary name beside the target and renamed.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import _validate
from .._messages import missing_dependency
from ..errors import SchemaError

# Zip members get a fixed timestamp so that the same seed gives the same bytes
# (np.savez stamps the wall-clock time, which would change every checksum).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def check_count(name: str, value: Any, *, minimum: int = 1, owner: str | None = None) -> int:
    """Return ``value`` as an int, or raise ConfigError if it is not a count >= minimum."""
    return _validate.integer(value, name=name, minimum=minimum, owner=owner)


def check_seed(seed: Any, *, owner: str | None = None) -> int:
    """Return ``seed`` as a non-negative int, or raise ConfigError."""
    return _validate.integer(seed, name="seed", minimum=0, owner=owner)


def block_rng(seed: int, tag: str, split: str, index: int) -> np.random.Generator:
    """Independent generator for one block of one split of one dataset."""
    words = [seed, zlib.crc32(tag.encode()), zlib.crc32(split.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(words))


def iter_blocks(n: int, block: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(index, start, stop)`` covering ``range(n)`` in blocks of ``block``."""
    for index, start in enumerate(range(0, n, block)):
        yield index, start, min(start + block, n)


def out_directory(out_dir: str | os.PathLike[str]) -> Path:
    """Create (if needed) and return the output directory."""
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``path`` only on success."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar counting events, or a do-nothing stand-in when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ev", disable=not enabled, leave=False)


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or raise the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise missing_dependency(module, extra) from exc


class NpzWriter:
    """Write a NumPy ``.npz`` archive member by member, streaming large arrays.

    ``np.load`` reads the result like any ``np.savez`` output.  Members are
    stored uncompressed with a fixed timestamp, so equal arrays give equal
    bytes.  A large array is written block by block through
    :meth:`stream`, so it never has to exist in memory as a whole.
    """

    def __init__(self, path: Path) -> None:
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def write(self, key: str, array: np.ndarray) -> None:
        """Store one complete array under ``key``."""
        array = np.ascontiguousarray(array)
        with self.stream(key, array.shape, array.dtype) as put:
            put(array)

    @contextlib.contextmanager
    def stream(self, key: str, shape: tuple[int, ...], dtype: np.dtype | type) -> Iterator[Any]:
        """Open member ``key`` for an array of ``shape``; yield ``put(block)``.

        Blocks are consecutive slices along axis 0.  Leaving the context with
        fewer or more elements than ``shape`` holds raises SchemaError.
        """
        dtype = np.dtype(dtype)
        info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        expected = int(np.prod(shape, dtype=np.int64))
        written = 0
        with self._zip.open(info, "w", force_zip64=True) as member:
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": tuple(int(s) for s in shape),
            }
            np.lib.format.write_array_header_1_0(member, header)

            def put(block: np.ndarray) -> None:
                nonlocal written
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != tuple(shape[1:]):
                    raise SchemaError(
                        f"npz member {key!r}: block of shape {block.shape} does not "
                        f"fit an array of shape {tuple(shape)}"
                    )
                written += block.size
                if written > expected:
                    raise SchemaError(f"npz member {key!r}: more than {shape[0]} rows were written")
                member.write(memoryview(block).cast("B"))

            yield put
        if written != expected:
            raise SchemaError(
                f"npz member {key!r}: wrote {written} of {expected} elements of shape {shape}"
            )
