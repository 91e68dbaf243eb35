"""Store format v1: the schema kept in the root group's attributes.

The schema is plain JSON (never pickled, never evaluated) under
``attrs["fastload"]`` of the root Zarr group; each split group carries its own
``attrs["fastload"] = {"n": ..., "chunk_len": ..., "max_len": {...}}``.  This
module turns that JSON into typed objects and back, and holds the rules that
choose chunk lengths and check data against a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastload import _validate
from fastload._spec import FieldSpec
from fastload.errors import NonFiniteError, SchemaError
from fastload.store._ragged import Ragged

FORMAT_VERSION = 1
#: The format of a store with at least one sharded array (format 1 plus Zarr v3 sharding,
#: see docs/store-format.md): a fastload that predates sharding refuses it with
#: UnsupportedFormatError instead of misreading its shard shape as a corrupt chunk length.
SHARDED_FORMAT_VERSION = 2
#: Format versions this fastload reads.
READ_FORMATS = (FORMAT_VERSION, SHARDED_FORMAT_VERSION)
ATTR_KEY = "fastload"
ROLES = ("input", "label", "aux")
TASKS = ("classification", "regression")
CODECS = ("lz4", "zstd", "blosclz", "zlib")
#: Writer option -> Blosc shuffle name in the arrays' Zarr metadata.
SHUFFLES = {"byte": "shuffle", "bit": "bitshuffle", "none": "noshuffle"}
#: numpy dtype kinds a field or constant may have: bool, int, uint, float, complex.
STORABLE_KINDS = "biufc"
#: Root-level group holding per-dataset constants; no split may take this name.
CONSTANTS_GROUP = "constants"

#: Uncompressed bytes aimed at per chunk: big enough that a read is one
#: sequential request and Blosc runs at full speed, small enough that a window
#: of chunks fits comfortably in the shared-memory cache.
DEFAULT_CHUNK_BYTES = 4 * 2**20
#: Entries per chunk of a ragged field's offsets (512 KiB of int64).
OFFSETS_CHUNK_LEN = 2**16
#: A ragged field's value chunks hold at most ``1 / VALUE_CHUNKS_PER_EVENT_CHUNK`` of the
#: mean rows of an event chunk, so reading an event chunk decodes at most
#: ``(k + 1) / k`` of its rows (docs/store-format.md, "Ragged fields").
VALUE_CHUNKS_PER_EVENT_CHUNK = 4
#: Smallest value chunk (uncompressed bytes) the statistics rule picks: smaller chunks
#: cost more per-chunk overhead (a file, a Blosc call) than the overread they save.
MIN_VALUE_CHUNK_BYTES = 2**19


@dataclass(frozen=True)
class FieldInfo:
    """One field of a store: per-sample shape and dtype, role, raggedness, doc."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    role: str = "input"
    ragged: bool = False
    doc: str = ""

    @property
    def spec(self) -> FieldSpec:
        """Per-sample spec (for a ragged field: one row of its values)."""
        return FieldSpec(self.shape, self.dtype)

    def conform(
        self, value: object, *, where: str, allow_nonfinite: bool = False
    ) -> np.ndarray | Ragged:
        """``value`` as this field stores it: checked, cast safely, a ragged one rebased.

        Parameters
        ----------
        value
            A dense array ``(m, *shape)``, or a :class:`~fastload.Ragged` for a ragged field.
        where
            Names the field, split and store in error messages.
        allow_nonfinite
            Accept NaN and inf in float and complex fields.

        Raises
        ------
        SchemaError
            Dense vs ragged, per-sample shape or dtype (no safe cast) disagree.
        NonFiniteError
            NaN or inf, and ``allow_nonfinite`` is not set.
        """
        if isinstance(value, Ragged) != self.ragged:
            kind = "ragged (fastload.Ragged)" if self.ragged else "a dense array"
            raise SchemaError(f"{where}: expected {kind}, got {type(value).__name__}")
        offsets = None
        if isinstance(value, Ragged):
            # only the block's own rows are checked and stored
            data, offsets = value.rebased()
        else:
            data = np.asarray(value)
        if data.shape[1:] != self.shape:
            raise SchemaError(
                f"{where}: per-sample shape {data.shape[1:]} != expected {self.shape}"
            )
        if data.dtype != self.dtype:
            if not np.can_cast(data.dtype, self.dtype, casting="safe"):
                raise SchemaError(
                    f"{where}: dtype {data.dtype} cannot be stored as {self.dtype} without loss; "
                    "cast it explicitly or declare the field's dtype"
                )
            data = data.astype(self.dtype)
        if not allow_nonfinite and data.dtype.kind in "fc" and data.size:
            finite = np.isfinite(data).reshape(len(data), -1).all(axis=1)
            if not finite.all():
                row = int(np.argmin(finite))
                sample = (
                    row if offsets is None else int(np.searchsorted(offsets, row, side="right") - 1)
                )
                raise NonFiniteError(
                    f"{where}: NaN or inf in sample {sample} of the block; clean the data or pass "
                    "allow_nonfinite=True (--allow-nonfinite) to store it as is"
                )
        return data if offsets is None else Ragged(data, offsets)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype.str,
            "role": self.role,
            "ragged": self.ragged,
            "doc": self.doc,
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> FieldInfo:
        return cls(
            name=name,
            shape=tuple(int(s) for s in d["shape"]),
            dtype=np.dtype(str(d["dtype"])),
            role=str(d.get("role", "input")),
            ragged=bool(d.get("ragged", False)),
            doc=str(d.get("doc", "")),
        )


@dataclass(frozen=True)
class SplitInfo:
    """Sample count, shared chunk length and ragged maxima of one split."""

    name: str
    n: int
    chunk_len: int
    max_len: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "chunk_len": self.chunk_len, "max_len": dict(self.max_len)}

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> SplitInfo:
        return cls(
            name=name,
            n=int(d["n"]),
            chunk_len=int(d["chunk_len"]),
            max_len={str(k): int(v) for k, v in dict(d.get("max_len", {})).items()},
        )


@dataclass(frozen=True)
class Schema:
    """Everything a reader needs to know about a store before touching arrays."""

    format: int
    name: str
    task: str
    fields: dict[str, FieldInfo]
    splits: dict[str, SplitInfo]
    labels: list[str]
    source: dict[str, Any]
    complete: bool
    codec: dict[str, Any]
    #: Random id given to each store when it is written (empty for stores written
    #: before it existed): two stores at the same path have different ids.
    store_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "task": self.task,
            "fields": {k: f.to_json() for k, f in self.fields.items()},
            "splits": {k: s.to_json() for k, s in self.splits.items()},
            "labels": list(self.labels),
            "source": self.source,
            "complete": self.complete,
            "codec": self.codec,
            **({"store_id": self.store_id} if self.store_id else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Schema:
        return cls(
            format=int(d["format"]),
            name=str(d.get("name", "")),
            task=str(d.get("task", "classification")),
            fields={k: FieldInfo.from_json(k, v) for k, v in dict(d.get("fields", {})).items()},
            splits={k: SplitInfo.from_json(k, v) for k, v in dict(d.get("splits", {})).items()},
            labels=[str(x) for x in d.get("labels", [])],
            source=dict(d.get("source", {})),
            complete=bool(d.get("complete", False)),
            codec=dict(d.get("codec", {})),
            store_id=str(d.get("store_id", "")),
        )


def check_task(task: object) -> str:
    """``task`` if it is one of :data:`TASKS`; a :class:`ConfigError` naming it otherwise."""
    return str(_validate.choice(task, TASKS, name="task"))


def new_store_id() -> str:
    """A fresh random store id (128 bits, hex)."""
    import secrets

    return secrets.token_hex(16)


def value_chunk_len(
    info: FieldInfo,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rows_per_event_chunk: float | None = None,
) -> int:
    """Rows per chunk of a ragged field's ``values`` array (chunked by rows, not by samples).

    Without statistics (``rows_per_event_chunk`` None or 0): the largest power of two
    of rows within ``chunk_bytes``, the rule of stores written before the statistics
    were used.  With the mean value rows of one event chunk ``R``: the largest power
    of two ``<= R / VALUE_CHUNKS_PER_EVENT_CHUNK``, raised to
    :data:`MIN_VALUE_CHUNK_BYTES` worth of rows and capped by ``chunk_bytes``.  An
    event chunk then overlaps at most ``R / C + 1`` value chunks where the rule of
    ``chunk_bytes`` alone (``C`` of ~``R``) made it read about twice its rows.

    Deterministic in its arguments (integer arithmetic after one floor), so writers
    given the same statistics lay out the same chunks.
    """
    row_bytes = info.spec.sample_nbytes
    cap = choose_chunk_len(row_bytes, chunk_bytes)
    if rows_per_event_chunk is None or not rows_per_event_chunk > 0:
        return cap
    target = int(float(rows_per_event_chunk) // VALUE_CHUNKS_PER_EVENT_CHUNK)
    by_stats = 1 << max(0, target.bit_length() - 1)
    floor = choose_chunk_len(row_bytes, MIN_VALUE_CHUNK_BYTES)
    return min(cap, max(floor, by_stats))


def choose_chunk_len(sample_nbytes: int, target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Samples per chunk: the largest power of two whose chunk stays within ``target_bytes``.

    Parameters
    ----------
    sample_nbytes
        Uncompressed bytes of one sample (of the largest field); 0 counts as 1.
    target_bytes
        Upper bound on the uncompressed bytes of one chunk.

    Returns
    -------
    int
        A power of two ``C >= 1`` with ``C * sample_nbytes <= target_bytes``, or 1
        when a single sample is already larger than ``target_bytes``.
    """
    per_sample = max(1, int(sample_nbytes))
    if int(target_bytes) < 1:
        raise ValueError(f"target_bytes must be at least 1, got {target_bytes!r}")
    # integer arithmetic: a float log2 can round up at exact powers of two
    return 1 << max(0, (int(target_bytes) // per_sample).bit_length() - 1)
