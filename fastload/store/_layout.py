"""The layout rule of a store: its arrays, their chunks and their codecs.

One object answers every layout question for all three writers -- the serial
:class:`~fastload.store.StoreWriter`, the parallel
:class:`~fastload.store.ParallelStore` and the Dask driver built on it -- so a
store has the same chunk files whichever wrote it:

* per split, the sample chunk length (:meth:`StoreLayout.split_chunk_len`);
* per field, its arrays (:meth:`StoreLayout.arrays`): a dense field is one array
  chunked by samples; a ragged field is ``values`` chunked by rows
  (:meth:`StoreLayout.value_chunk_rows`, from the field's rows per event chunk
  where known) plus ``offsets`` chunked by
  :data:`~fastload.store._schema.OFFSETS_CHUNK_LEN`;
* per array, its shuffle (:meth:`StoreLayout.shuffle_for`, from its chunk 0 when
  ``shuffle="auto"``), its Blosc codec and the Zarr call that creates it
  (:meth:`StoreLayout.create_array`).

The writer options it holds are validated when it is built: a bad option is a
:class:`~fastload.errors.ConfigError` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import zarr

from fastload import _validate
from fastload.store._codecs import (
    SHUFFLE_OPTIONS,
    auto_shuffle,
    blosc_codec,
    codec_record,
    first_chunk_shuffles,
)
from fastload.store._schema import (
    CODECS,
    DEFAULT_CHUNK_BYTES,
    OFFSETS_CHUNK_LEN,
    FieldInfo,
    choose_chunk_len,
    value_chunk_len,
)
from fastload.store._shards import resolve_shard_chunks

#: dtype of a ragged field's offsets.
OFFSETS_DTYPE = np.dtype("<i8")
#: Bytes per sample counted for a split with only ragged fields and no row estimate.
_MIN_SAMPLE_BYTES = 8


@dataclass(frozen=True)
class ArrayLayout:
    """One Zarr array of a split.

    Attributes
    ----------
    key
        Path inside the store: ``"train/X"``, ``"train/hits/values"``, ``"train/hits/offsets"``.
    field
        The field it belongs to.
    part
        ``""`` for a dense field, ``"values"`` or ``"offsets"`` for a ragged one.
    row_shape, dtype
        Shape and dtype of one row (axis 0 is samples, or value rows for ``values``).
    chunk_len
        Rows per chunk along axis 0.
    """

    key: str
    field: str
    part: str
    row_shape: tuple[int, ...]
    dtype: np.dtype
    chunk_len: int

    @property
    def name(self) -> str:
        """The array's name inside its group (the field, or ``values`` / ``offsets``)."""
        return self.part or self.field

    @property
    def chunks(self) -> tuple[int, ...]:
        """The Zarr chunk shape (extents >= 1: zarr needs that even along an axis of length 0)."""
        return (self.chunk_len, *(max(1, s) for s in self.row_shape))


@dataclass(frozen=True)
class StoreLayout:
    """The writer options that fix a store's layout, and the rules derived from them.

    Parameters
    ----------
    fields
        The store's fields (may be left empty until the first block has fixed them;
        see :meth:`with_fields`).
    codec
        Blosc compressor: ``"lz4"``, ``"zstd"``, ``"blosclz"`` or ``"zlib"``.
    clevel
        Compression level, 0-9.
    shuffle
        ``"auto"`` (per array, from its chunk 0; see docs/store-format.md), ``"byte"``,
        ``"bit"`` or ``"none"``.
    chunk_bytes
        Upper bound on the uncompressed bytes of a chunk when ``chunk_len`` is not given.
    chunk_len
        Samples per chunk: an int for every split, ``{split: int}`` for some, or ``None``.
    shard_chunks
        Chunks per shard file (Zarr v3 sharding): ``None`` (default) shards each array of
        more than :data:`~fastload.store._shards.SHARD_THRESHOLD` chunks by
        :data:`~fastload.store._shards.DEFAULT_SHARD_CHUNKS`; ``0`` never shards; ``N >= 1``
        shards every array by ``N``.
    value_chunk_len
        Rows per chunk of the ragged fields' ``values``: an int for every ragged field,
        ``{field: int}`` for some, or ``None`` (default) for the rule of
        :func:`~fastload.store._schema.value_chunk_len` from the field's mean rows per
        event chunk.  For a writer whose statistics would differ from another's (the
        converter's serial and Dask writers see different first blocks).

    Raises
    ------
    ConfigError
        An option is invalid; the message names it.
    """

    fields: Mapping[str, FieldInfo] = field(default_factory=dict)
    codec: str = "lz4"
    clevel: int = 5
    shuffle: str = "auto"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    chunk_len: int | Mapping[str, int] | None = None
    shard_chunks: int | None = None
    value_chunk_len: int | Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        # No owner in the messages: the names are create_store's parameters, and
        # create_store builds the layout inside _validate.on_behalf_of(...).
        _validate.choice(self.codec, CODECS, name="codec")
        _validate.choice(self.shuffle, SHUFFLE_OPTIONS, name="shuffle")
        clevel = _validate.integer(self.clevel, name="clevel", minimum=0, maximum=9)
        object.__setattr__(self, "clevel", clevel)
        chunk_bytes = _validate.integer(self.chunk_bytes, name="chunk_bytes", minimum=1)
        object.__setattr__(self, "chunk_bytes", chunk_bytes)
        chunk_len = self.chunk_len
        if isinstance(chunk_len, Mapping):
            chunk_len = {
                str(split): _validate.integer(value, name=f"chunk_len[{split!r}]", minimum=1)
                for split, value in chunk_len.items()
            }
        elif chunk_len is not None:
            chunk_len = _validate.integer(chunk_len, name="chunk_len", minimum=1)
        object.__setattr__(self, "chunk_len", chunk_len)
        value_len = self.value_chunk_len
        if isinstance(value_len, Mapping):
            value_len = {
                str(name): _validate.integer(value, name=f"value_chunk_len[{name!r}]", minimum=1)
                for name, value in value_len.items()
            }
        elif value_len is not None:
            value_len = _validate.integer(value_len, name="value_chunk_len", minimum=1)
        object.__setattr__(self, "value_chunk_len", value_len)
        if self.shard_chunks is not None:
            shard_chunks = _validate.integer(self.shard_chunks, name="shard_chunks", minimum=0)
            object.__setattr__(self, "shard_chunks", shard_chunks)
        object.__setattr__(self, "fields", dict(self.fields))

    def with_fields(self, fields: Mapping[str, FieldInfo]) -> StoreLayout:
        """The same options for a store of ``fields``."""
        return replace(self, fields=dict(fields))

    @property
    def codec_options(self) -> dict[str, Any]:
        """The Blosc settings as the schema's ``codec`` entry records them."""
        return {
            "name": "blosc",
            "cname": self.codec,
            "clevel": self.clevel,
            "shuffle": self.shuffle,
        }

    # ------------------------------------------------------------------ chunking
    def split_chunk_len(self, split: str, mean_rows: Mapping[str, float] | None = None) -> int:
        """Samples per chunk of ``split``, shared by all its dense fields.

        ``chunk_len`` if given (for this split); otherwise the largest power of two
        whose chunk of the largest sample fits ``chunk_bytes``.  A ragged field counts
        with ``mean_rows[field]`` rows per sample where known, so that an event chunk
        of hit-level data spans about ``chunk_bytes`` of values too.
        """
        if isinstance(self.chunk_len, Mapping):
            if split in self.chunk_len:
                return self.chunk_len[split]
        elif self.chunk_len is not None:
            return self.chunk_len
        per_sample = [f.spec.sample_nbytes for f in self.fields.values() if not f.ragged]
        for name, rows in (mean_rows or {}).items():
            info = self.fields[name]
            if info.ragged:
                per_sample.append(int(np.ceil(rows * info.spec.sample_nbytes)))
        return choose_chunk_len(max(per_sample, default=_MIN_SAMPLE_BYTES), self.chunk_bytes)

    def value_chunk_rows(self, name: str, rows_per_event_chunk: float | None = None) -> int:
        """Rows per chunk of ragged field ``name``'s ``values`` array.

        ``value_chunk_len`` if given (for this field); otherwise
        :func:`~fastload.store._schema.value_chunk_len` of ``chunk_bytes`` and
        ``rows_per_event_chunk`` (the field's mean value rows per event chunk; None:
        unknown, the rule of ``chunk_bytes`` alone).
        """
        if isinstance(self.value_chunk_len, Mapping):
            if name in self.value_chunk_len:
                return self.value_chunk_len[name]
        elif self.value_chunk_len is not None:
            return self.value_chunk_len
        return value_chunk_len(self.fields[name], self.chunk_bytes, rows_per_event_chunk)

    def arrays(
        self, split: str, chunk_len: int, event_chunk_rows: Mapping[str, float] | None = None
    ) -> list[ArrayLayout]:
        """Every array of ``split`` (field order; a ragged field's ``values`` then ``offsets``).

        ``chunk_len``: the split's samples per chunk; ``event_chunk_rows``: value rows per
        sample chunk of its ragged fields where known (they size the value chunks, see
        :meth:`value_chunk_rows`).
        """
        event_chunk_rows = event_chunk_rows or {}
        out = []
        for name, info in self.fields.items():
            if not info.ragged:
                out.append(
                    ArrayLayout(f"{split}/{name}", name, "", info.shape, info.dtype, chunk_len)
                )
                continue
            out.append(
                ArrayLayout(
                    f"{split}/{name}/values",
                    name,
                    "values",
                    info.shape,
                    info.dtype,
                    self.value_chunk_rows(name, event_chunk_rows.get(name)),
                )
            )
            out.append(
                ArrayLayout(
                    f"{split}/{name}/offsets", name, "offsets", (), OFFSETS_DTYPE, OFFSETS_CHUNK_LEN
                )
            )
        return out

    # ------------------------------------------------------------------ codecs
    def shuffle_for(self, array: ArrayLayout, first_chunk: np.ndarray) -> str:
        """The shuffle ``array`` is stored with; with ``"auto"``, chosen from its chunk 0 rows."""
        if self.shuffle != "auto":
            return self.shuffle
        return auto_shuffle(array.name, first_chunk, self.codec_options)

    def first_chunk_shuffles(
        self,
        blocks: Iterable[Mapping[str, Mapping[str, np.ndarray]]],
        chunk_lens: Mapping[str, int],
        event_chunk_rows: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, str]:
        """``shuffle="auto"`` choices of every array of the splits in ``chunk_lens``.

        For a writer that lays out its arrays before it writes any data (the parallel
        one): ``blocks`` are ``{split: {field: rows}}`` in store order, a ragged field as
        its value rows; they are read only until chunk 0 of every array is known, and
        each array gets the choice :meth:`shuffle_for` makes from that chunk.
        ``event_chunk_rows``: per split, what :meth:`arrays` sizes the value chunks by.
        """
        want = {
            array.key: (split, array.field, array.chunk_len)
            for split, n in chunk_lens.items()
            for array in self.arrays(split, int(n), (event_chunk_rows or {}).get(split))
            if array.part != "offsets"
        }
        return first_chunk_shuffles(
            blocks, fields=self.fields, arrays=want, codec=self.codec_options
        )

    def codec_record(
        self, chosen: Mapping[str, str], shards: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """The schema's ``codec`` entry: the options, what ``auto`` chose per array, and the
        chunks per shard of each sharded array (``shards``, recorded only when there is one)."""
        record = dict(codec_record(self.codec_options, chosen))
        if shards:
            record["shards"] = dict(sorted(shards.items()))
        return record

    # ------------------------------------------------------------------ sharding
    def shard_factor(self, array: ArrayLayout, n_rows: int) -> int:
        """Chunks per shard file of ``array`` once it holds ``n_rows`` rows; 0: not sharded.

        From ``shard_chunks`` and the array's chunk count
        (:func:`~fastload.store._shards.resolve_shard_chunks`).  An array with an axis
        of length 0 (no chunk files at all) is never sharded.
        """
        if any(s < 1 for s in array.row_shape):
            return 0
        return resolve_shard_chunks(self.shard_chunks, -(-int(n_rows) // array.chunk_len))

    def shard_factors(
        self, arrays: Iterable[ArrayLayout], rows: Mapping[str, int]
    ) -> dict[str, int]:
        """``{array key: chunks per shard}`` of the sharded ones of ``arrays`` (of one split).

        ``rows``: each array's final length by key (:attr:`ArrayLayout.key`).
        """
        out = {}
        for array in arrays:
            factor = self.shard_factor(array, rows.get(array.key, 0))
            if factor:
                out[array.key] = factor
        return out

    def create_array(
        self, group: zarr.Group, array: ArrayLayout, n_rows: int, shuffle: str
    ) -> zarr.Array:
        """Create ``array`` in ``group`` with ``n_rows`` rows and the resolved ``shuffle``."""
        return group.create_array(
            array.name,
            shape=(n_rows, *array.row_shape),
            chunks=array.chunks,
            dtype=array.dtype,
            compressors=blosc_codec(self.codec_options, shuffle, array.dtype),
            fill_value=0,
            # every chunk exists on disk, so readers can fetch chunk bytes directly
            config={"write_empty_chunks": True},
        )
