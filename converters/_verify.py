"""Verification of a written store against digests taken while the source streamed past."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fastload.errors import VerificationError

Block = dict[str, np.ndarray]


def _sample_rows(n: int, k: int, split: str) -> np.ndarray:
    """Sorted, seeded sample of ``k`` row indices of ``range(n)``, always with the first and last."""
    if n <= k + 2:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([0x5A3E, zlib.crc32(split.encode())]))
    picked = rng.choice(n, size=k, replace=False)
    return np.unique(np.concatenate([[0, n - 1], picked])).astype(np.int64)


@dataclass
class Expectation:
    """What a store must hold: counts, per-field digests of sampled rows, constants."""

    counts: dict[str, int]
    rows: dict[str, np.ndarray]
    digests: dict[tuple[str, str], str]
    constants: dict[str, str]


class SampleDigest:
    """Digests of a seeded sample of rows per split and field, fed block by block."""

    def __init__(self, counts: Mapping[str, int], fields: Sequence[str], k: int) -> None:
        self.rows = {s: _sample_rows(n, k, s) for s, n in counts.items()}
        self.fields = list(fields)
        self._hash = {(s, f): hashlib.sha256() for s in counts for f in self.fields}
        self.seen = dict.fromkeys(counts, 0)

    def update(self, split: str, block: Block) -> None:
        offset = self.seen[split]
        m = len(next(iter(block.values())))
        rows = self.rows[split]
        lo, hi = np.searchsorted(rows, [offset, offset + m])
        local = rows[lo:hi] - offset
        if local.size:
            for f in self.fields:
                self._hash[(split, f)].update(np.ascontiguousarray(block[f][local]).tobytes())
        self.seen[split] = offset + m

    def expectation(self, constants: Mapping[str, np.ndarray]) -> Expectation:
        return Expectation(
            counts=dict(self.seen),
            rows=dict(self.rows),
            digests={k: h.hexdigest() for k, h in self._hash.items()},
            constants={k: _digest(np.asarray(v)) for k, v in constants.items()},
        )


def _digest(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    return hashlib.sha256(
        arr.dtype.str.encode() + repr(arr.shape).encode() + arr.tobytes()
    ).hexdigest()


def verify_store(path: str | os.PathLike[str], expected: Expectation) -> None:
    """Re-open a written store and compare it with what was read from the source.

    Raises
    ------
    VerificationError
        A split is missing or has another count, a sampled row digest or a
        constant differs.
    """
    import fastload as fl

    store = fl.open_store(path)
    where = f"store {os.fspath(path)!r}"
    if set(store.splits) != set(expected.counts):
        raise VerificationError(
            f"{where} has splits {list(store.splits)}, the source has {list(expected.counts)}"
        )
    for split, n in expected.counts.items():
        sp = store[split]
        if len(sp) != n:
            raise VerificationError(
                f"{where}: split {split!r} holds {len(sp)} events, the source has {n}"
            )
        rows = expected.rows[split]
        chunks = rows // sp.chunk_len
        for fname in {f for s, f in expected.digests if s == split}:
            digest = hashlib.sha256()
            for chunk in np.unique(chunks):
                data = sp.read_chunk(fname, int(chunk))
                local = rows[chunks == chunk] - int(chunk) * sp.chunk_len
                digest.update(np.ascontiguousarray(data[local]).tobytes())
            if digest.hexdigest() != expected.digests[(split, fname)]:
                raise VerificationError(
                    f"{where}: field {fname!r} of split {split!r} differs from the source in "
                    f"a sample of {rows.size} rows (sha256 mismatch)"
                )
    for name, want in expected.constants.items():
        have = store.constants.get(name)
        if have is None or _digest(have) != want:
            raise VerificationError(f"{where}: constant {name!r} differs from the source")
