"""The Blosc codec of each array, and the data-driven choice behind ``shuffle="auto"``.

Why ``auto`` is the default: the loader's cost per batch is dominated by
decoding, and Blosc's byte-unshuffle pass more than doubles LZ4's decode time
(3.2 MB chunk of TopTagging-shaped float32: 0.37 ms with byte shuffle, 0.15 ms
without, on the development machine).  Shuffle pays where the bytes of
neighbouring values differ mostly in their low bytes (smooth physics floats:
CMS NanoAOD ``Jet_pt`` compresses 1.5x with it and not at all without), and
barely at all on zero-padded arrays such as constituent lists (TopTagging:
4.41x vs 4.10x).  So each array trial-compresses its first chunk both ways and
keeps the shuffle only when it makes the chunk more than
:data:`AUTO_SHUFFLE_GAIN` smaller (10% with LZ4; any gain with the slow codecs).

The first chunk is a property of the data, not of how it was cut into blocks,
so the choice (and every chunk file) is the same for any block sizes and for
the serial and the parallel writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec

from fastload.store._schema import SHUFFLES, FieldInfo

#: Values the writers accept for ``shuffle``: a fixed choice, or ``"auto"`` per array.
SHUFFLE_OPTIONS = (*SHUFFLES, "auto")
#: ``auto`` keeps byte shuffle only if it shrinks the first chunk by more than this fraction.
#: Unshuffling costs ~0.2 ms per 3.2 MB: more than LZ4's (or BloscLZ's) whole decode, but only
#: 10-20% of zstd's or zlib's, so with those slow codecs any size gain keeps the shuffle.
AUTO_SHUFFLE_GAIN = {"lz4": 0.10, "blosclz": 0.10, "zstd": 0.0, "zlib": 0.0}


def choose_shuffle(first_chunk: np.ndarray, cname: str, clevel: int) -> str:
    """``"byte"`` or ``"none"``: what ``shuffle="auto"`` stores an array with.

    Parameters
    ----------
    first_chunk
        The rows of the array's chunk 0, exactly as they are written.
    cname, clevel
        The store's Blosc compressor and level.
    """
    import numcodecs

    data = np.ascontiguousarray(first_chunk)
    if data.nbytes == 0 or data.dtype.itemsize == 1:
        return "none"  # nothing to shuffle: one byte per item
    sizes = {
        name: len(
            numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=flag).encode(data.reshape(-1))
        )
        for name, flag in (("byte", numcodecs.Blosc.SHUFFLE), ("none", numcodecs.Blosc.NOSHUFFLE))
    }
    gain = AUTO_SHUFFLE_GAIN.get(cname, 0.0)
    return "byte" if sizes["byte"] < (1 - gain) * sizes["none"] else "none"


def auto_shuffle(array_name: str, first_chunk: np.ndarray, codec: Mapping[str, object]) -> str:
    """What ``shuffle="auto"`` stores array ``array_name`` with.

    A ragged field's ``offsets`` always keep byte shuffle: increasing int64
    values are its best case, and offsets are read once per loader, never per
    batch, so their decode speed does not matter.
    """
    if array_name == "offsets":
        return "byte"
    return choose_shuffle(first_chunk, str(codec["cname"]), int(codec["clevel"]))  # type: ignore[call-overload]


def first_chunk_shuffles(
    blocks: Iterable[Mapping[str, Mapping[str, np.ndarray]]],
    *,
    fields: Mapping[str, FieldInfo],
    arrays: Mapping[str, tuple[str, str, int]],
    codec: Mapping[str, object],
) -> dict[str, str]:
    """``auto`` choices of every array of a store written from ``blocks`` (in store order).

    For a writer that creates arrays before it sees data (the parallel one): reads
    blocks (``{split: {field: rows}}``; a ragged field as its value rows, in order)
    only until chunk 0 of every array is known, and chooses as the serial writer
    does when it writes that chunk.  ``arrays``: ``{array path: (split, field, rows
    per chunk)}`` of each dense array and ragged ``values`` array (the offsets follow
    their values).
    """
    want = dict(arrays)  # array path -> (split, field, rows of chunk 0)
    parts: dict[str, list[np.ndarray]] = {path: [] for path in want}
    have = dict.fromkeys(want, 0)
    for block in blocks:
        for path, (split, fname, rows) in want.items():
            data = block.get(split, {}).get(fname)
            if data is None or have[path] >= rows:
                continue
            values = np.asarray(data)[: rows - have[path]].astype(fields[fname].dtype, copy=False)
            parts[path].append(values)
            have[path] += len(values)
        if all(have[p] >= want[p][2] for p in want):
            break
    chosen = {}
    for path, (_, fname, _) in want.items():
        info = fields[fname]
        first = (
            np.concatenate(parts[path])
            if parts[path]
            else np.empty((0, *info.shape), dtype=info.dtype)
        )
        chosen[path] = auto_shuffle(path.rsplit("/", 1)[-1], first, codec)
        if info.ragged:  # its offsets: a fixed rule, no data needed
            offsets = path.removesuffix("/values") + "/offsets"
            chosen[offsets] = auto_shuffle("offsets", first, codec)
    return chosen


def blosc_codec(
    codec: Mapping[str, object], shuffle: str, dtype: np.dtype
) -> tuple[BloscCodec, Crc32cCodec]:
    """The compressors of one array: Blosc (the store's ``codec``, a resolved ``shuffle``), then CRC32C.

    The ``crc32c`` codec (Zarr v3's standard checksum) appends the CRC32C of
    each encoded chunk, so any reader — fastload's decoder or zarr-python —
    detects a changed byte instead of decoding it to wrong values.
    """
    return (
        BloscCodec(
            cname=str(codec["cname"]),
            clevel=int(codec["clevel"]),  # type: ignore[call-overload]
            shuffle=SHUFFLES[shuffle],
            typesize=dtype.itemsize,
        ),
        Crc32cCodec(),
    )


def codec_record(codec: Mapping[str, object], chosen: Mapping[str, str]) -> dict[str, object]:
    """The schema's ``codec`` entry: the writer options, plus what ``auto`` chose per array."""
    record = dict(codec)
    if codec["shuffle"] == "auto":
        record["arrays"] = dict(sorted(chosen.items()))
    return record
