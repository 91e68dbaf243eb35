"""Write one store from many tasks at once (Dask workers, processes, machines).

The serial :class:`~fastload.store.StoreWriter` appends blocks in order; here
the final size of every array is known in advance (a counting pass), so the
arrays are created at full size and each task writes the rows of its own block
at their final position.

Invariants
----------
* The layout (array shapes, chunks, codecs, ``write_empty_chunks``, fill value,
  the sample-chunk length rule, ragged value and offsets chunks) comes from the
  same :class:`~fastload.store.StoreLayout` as the serial writer's, so a store
  written here has the same chunk bytes as one written serially from the same
  data; ``shuffle="auto"`` choices are made beforehand from each array's chunk 0
  (:meth:`StoreLayout.first_chunk_shuffles`).
* No two tasks write the same chunk.  A task writes only the chunks that lie
  entirely inside its row range; the rows it holds of a chunk it shares with a
  neighbour (block edges, ragged values, offsets) are saved as a *fragment*
  file, and :meth:`ParallelStore.assemble` later writes each shared chunk from
  its fragments, once.
* A finished block leaves a marker (``done/BLOCK.json`` with its results) in a
  work directory beside the store; a rerun with ``resume=True`` and the same
  plan id skips finished blocks.  Rewriting a block is idempotent.
* A local store is built under ``.NAME.fastload-tmp-parallel`` and moved into
  place by :meth:`ParallelStore.commit` after the schema is written with
  ``complete=True``, with the serial writer's install protocol
  (:mod:`fastload.store._placement`: a commit lock, one winner among racing
  writers); a remote store (fsspec URL) is written in place and stays marked
  incomplete until then.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fastload._messages import missing_dependency
from fastload._version import __version__
from fastload.errors import (
    ConfigError,
    CorruptStoreError,
    SchemaError,
    StoreExistsError,
    StoreWriteError,
)
from fastload.store._codecs import SHUFFLES
from fastload.store._layout import ArrayLayout, StoreLayout
from fastload.store._paths import TMP_MARK, is_remote, local_path
from fastload.store._placement import (
    Identity,
    install,
    refuse_existing,
    require_fsspec,
    store_identity,
)
from fastload.store._provenance import now_iso
from fastload.store._ragged import Ragged
from fastload.store._schema import (
    ATTR_KEY,
    FORMAT_VERSION,
    SHARDED_FORMAT_VERSION,
    Schema,
    SplitInfo,
    check_task,
    new_store_id,
)
from fastload.store._shards import finish, is_staged, n_shards, pack_shard, stage

_TMP_NAME = "parallel"  # no pid@host: the serial writer's stale-temporary sweep leaves it alone
_WORK_SUFFIX = ".work"


@dataclass(frozen=True)
class SplitSize:
    """Final size of one split: ``n`` samples and, per ragged field, its total value rows."""

    n: int
    rows: dict[str, int] = field(default_factory=dict)

    def mean_rows(self) -> dict[str, float]:
        """Mean value rows per sample of each ragged field."""
        return {f: r / self.n for f, r in self.rows.items()} if self.n else {}


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ModuleNotFoundError:
        raise missing_dependency("fsspec", "s3" if is_remote(url) else "dask") from None
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root


def _building_url(text: str) -> str:
    """Where the store is built: in place for a URL, else a fixed hidden sibling (resumable)."""
    if is_remote(text):
        return text.rstrip("/")
    target = local_path(text)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreWriteError(
            f"cannot create the directory {str(target.parent)!r} for store {text!r}: {exc}"
        ) from exc
    return str(target.parent / f".{target.name}{TMP_MARK}{_TMP_NAME}")


def _auto_choices(
    layout: StoreLayout,
    sizes: Mapping[str, SplitSize],
    shuffles: Mapping[str, str] | None,
    path: str,
) -> dict[str, str]:
    """With ``shuffle="auto"``, the given choice of every array, checked to be complete."""
    if layout.shuffle != "auto":
        return {}
    keys = [a.key for split in sizes for a in layout.arrays(split, 1)]
    missing = [k for k in keys if (shuffles or {}).get(k) not in SHUFFLES]
    if missing:
        raise ConfigError(
            f"shuffle='auto' for {path!r} needs the choice of every array, made from its "
            f"first chunk; missing or invalid for {missing}: compute them with "
            "StoreLayout.first_chunk_shuffles, or pick a fixed shuffle"
        )
    return {k: str((shuffles or {})[k]) for k in keys}


class ParallelStore:
    """A store being written by many tasks; picklable (paths and metadata only).

    Create it with :meth:`create` in the coordinating process, ship it to tasks that
    call :meth:`write` and :meth:`mark_done`, then :meth:`assemble` the shared chunks
    and :meth:`commit`.
    """

    def __init__(
        self,
        *,
        path: str,
        url: str,
        layout: StoreLayout,
        sizes: Mapping[str, SplitSize],
        chunk_lens: Mapping[str, int],
        shuffles: Mapping[str, str],
        meta: Mapping[str, Any],
        allow_nonfinite: bool,
        seen: Identity = None,
    ) -> None:
        self.path = path
        self.url = url
        self.work = url + _WORK_SUFFIX
        self.layout = layout
        self.fields = dict(layout.fields)
        self.sizes = dict(sizes)
        self.chunk_lens = dict(chunk_lens)
        self.shuffles = dict(shuffles)
        self.meta = dict(meta)
        self.allow_nonfinite = allow_nonfinite
        self._seen = seen
        # array key -> chunks per shard of each array to shard (local stores; see _shards.py)
        self.shards: dict[str, int] = {}
        if not is_remote(url):
            for split, size in self.sizes.items():
                rows = {}
                arrays = self._arrays_of(split)
                for array in arrays:
                    part = {"": size.n, "values": size.rows.get(array.field, 0)}
                    rows[array.key] = part.get(array.part, size.n + 1)
                self.shards |= layout.shard_factors(arrays, rows)
        elif layout.shard_chunks:
            raise ConfigError(
                f"shard_chunks={layout.shard_chunks} for {path!r}: sharding is done on a local "
                "store only; write the store locally and upload it, or pass shard_chunks=0"
            )
        self._arrays: dict[str, zarr.Array] = {}
        self._fs_root: tuple[Any, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        state["_fs_root"] = None
        return state

    # ------------------------------------------------------------------ setup
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        layout: StoreLayout,
        sizes: Mapping[str, SplitSize],
        plan_id: str,
        shuffles: Mapping[str, str] | None = None,
        name: str | None = None,
        task: str = "classification",
        labels: Sequence[str] = (),
        converter: str | None = None,
        converter_version: str | None = None,
        overwrite: bool = False,
        resume: bool = False,
        allow_nonfinite: bool = False,
    ) -> ParallelStore:
        """Lay out a store of known final size (or reopen an interrupted one to resume).

        Parameters
        ----------
        path
            Target directory or fsspec URL.
        layout
            Fields and layout options (codec, level, shuffle, chunk bytes and length);
            each split's chunk length is ``layout.split_chunk_len`` and its value chunks
            ``layout.arrays``' with the split's mean ragged rows.
        sizes
            Per split: samples and ragged value rows (splits with no samples are left out).
        plan_id
            Identifies the conversion plan; ``resume`` only reuses work with the same id.
        shuffles
            With ``shuffle="auto"``: the choice for every array path (``split/field``,
            ``split/field/values``, ``split/field/offsets``), from the data of its first
            chunk, which this writer never sees before laying out the arrays; compute it
            with :meth:`StoreLayout.first_chunk_shuffles`.
        name, task, labels, converter, converter_version, overwrite, allow_nonfinite
            As for :func:`fastload.create_store`.
        resume
            Reuse the arrays and finished-block markers of an interrupted run with the same
            ``plan_id``; without it any leftover of an earlier run is discarded.

        Raises
        ------
        ConfigError
            An option is invalid, a ``shuffles`` choice is missing, or ``resume`` meets
            the leftover of a different plan.
        SchemaError
            No split has a sample.
        StoreExistsError
            As for :func:`fastload.create_store`.
        """
        from fastload.store._reader import probe_store

        text = os.fspath(path)
        check_task(task)
        sizes = {k: v for k, v in sizes.items() if v.n}
        if not sizes:
            raise SchemaError(f"no samples to write to {text!r}; refusing to create an empty store")
        require_fsspec(text)
        refuse_existing(probe_store(text), text, overwrite=overwrite)
        store = cls(
            path=text,
            url=_building_url(text),
            layout=layout,
            sizes=sizes,
            chunk_lens={k: layout.split_chunk_len(k, v.mean_rows()) for k, v in sizes.items()},
            shuffles=_auto_choices(layout, sizes, shuffles, text),
            meta={
                "name": name or Path(text.rstrip("/")).name.removesuffix(".zarr"),
                "task": task,
                "labels": [str(x) for x in labels],
                "converter": converter,
                "converter_version": converter_version,
                "plan_id": plan_id,
                "overwrite": overwrite,
                "store_id": new_store_id(),
            },
            allow_nonfinite=allow_nonfinite,
            seen=None if is_remote(text) else store_identity(local_path(text)),
        )
        store._start(plan_id, resume)
        return store

    def _start(self, plan_id: str, resume: bool) -> None:
        """Reuse an interrupted run of the same plan (``resume``), or lay out afresh."""
        recorded = self._recorded_plan()
        if resume and recorded == plan_id:
            return
        if resume and recorded is not None:
            raise ConfigError(
                f"cannot resume {self.path!r}: the interrupted run in {self.url!r} used a "
                "different spec, sources or layout; run again without --resume to start over"
            )
        self._discard()
        self._layout_arrays()
        self._put(f"{self.work}/plan.json", json.dumps({"plan_id": plan_id}).encode())

    def _arrays_of(self, split: str) -> list[ArrayLayout]:
        """The arrays of ``split``: its chunk length, value chunks from its mean rows
        (``chunk_len`` times the split's mean rows per sample; the serial writer counts
        the rows of sample chunk 0 instead, so converters pass ``value_chunk_len``)."""
        n = self.chunk_lens[split]
        rows = {f: n * r for f, r in self.sizes[split].mean_rows().items()}
        return self.layout.arrays(split, n, rows)

    def _layout_arrays(self) -> None:
        root = zarr.open_group(self.url, mode="w")
        root.attrs[ATTR_KEY] = self._schema({}, [], complete=False).to_json()
        for split, size in self.sizes.items():
            group = root.create_group(split)
            for array in self._arrays_of(split):
                n = {"": size.n, "values": size.rows.get(array.field, 0), "offsets": size.n + 1}
                parent = group if not array.part else group.require_group(array.field)
                shuffle = self.shuffles.get(array.key, self.layout.shuffle)
                self.layout.create_array(parent, array, n[array.part], shuffle)

    # ------------------------------------------------------------------ side files
    @property
    def _fsroot(self) -> tuple[Any, str]:
        if self._fs_root is None:
            self._fs_root = _fs(self.work)
        return self._fs_root

    def _side(self, rel: str) -> str:
        root = self._fsroot[1]
        return f"{root}/{rel}" if rel else root

    def _put(self, url: str, data: bytes) -> None:
        fs, _ = self._fsroot
        path = self._side(url[len(self.work) + 1 :])
        if not is_remote(self.work):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # a killed task never leaves a half-written marker or fragment
        else:
            fs.pipe_file(path, data)

    def _recorded_plan(self) -> str | None:
        fs, _ = self._fsroot
        try:
            return str(json.loads(fs.cat_file(self._side("plan.json")))["plan_id"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _discard(self) -> None:
        fs, _ = self._fsroot
        if fs.exists(self._side("")):
            fs.rm(self._side(""), recursive=True)
        if not is_remote(self.url):
            shutil.rmtree(self.url, ignore_errors=True)

    # ------------------------------------------------------------------ writing (tasks)
    def _array(self, key: str) -> zarr.Array:
        if key not in self._arrays:
            arr = zarr.open_array(f"{self.url}/{key}", mode="r+")
            # like the serial writer: every chunk exists on disk, even an all-zero one
            self._arrays[key] = arr.with_config({"write_empty_chunks": True})
        return self._arrays[key]

    def write(
        self,
        split: str,
        start: int,
        block: Mapping[str, np.ndarray | Ragged],
        value_starts: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Write a block of samples at sample position ``start`` of ``split``.

        Parameters
        ----------
        split, start
            Where the block's first sample goes.
        block
            Every field: arrays ``(m, *shape)`` or :class:`~fastload.Ragged`.
        value_starts
            For each ragged field, the value row where this block's rows begin.

        Returns
        -------
        dict
            The longest sample of each ragged field in this block (for the split's ``max_len``).
        """
        if split not in self.sizes:
            raise SchemaError(
                f"split {split!r} is not in the layout of {self.path!r} (splits: {list(self.sizes)})"
            )
        size = self.sizes[split]
        missing = set(self.fields) - set(block)
        extra = set(block) - set(self.fields)
        if missing or extra:
            raise SchemaError(
                f"block for {self.path!r} lacks fields {sorted(missing)} / has unexpected {sorted(extra)}"
            )
        lengths = {len(v) if isinstance(v, Ragged) else int(np.shape(v)[0]) for v in block.values()}
        if len(lengths) != 1:
            raise SchemaError(
                f"split {split!r}: fields of a block have unequal lengths {sorted(lengths)}"
            )
        m = lengths.pop()
        if start < 0 or start + m > size.n:
            raise SchemaError(
                f"split {split!r}: rows {start}..{start + m} exceed its {size.n} samples"
            )
        max_len: dict[str, int] = {}
        for fname, info in self.fields.items():
            data = info.conform(
                block[fname],
                where=f"field {fname!r} of split {split!r} in {self.path!r}",
                allow_nonfinite=self.allow_nonfinite,
            )
            if not isinstance(data, Ragged):
                self._write_rows(f"{split}/{fname}", start, data)
                continue
            values, offsets = data.values, data.offsets  # rebased: offsets start at 0
            v0 = int((value_starts or {})[fname])
            if v0 + len(values) > size.rows.get(fname, 0):
                raise SchemaError(
                    f"field {fname!r} of split {split!r} in {self.path!r}: value rows "
                    f"{v0}..{v0 + len(values)} exceed the {size.rows.get(fname, 0)} counted"
                )
            self._write_rows(f"{split}/{fname}/values", v0, values)
            ends = (offsets[1:] + v0).astype(np.int64)
            if start == 0:  # the block that holds the offsets' leading 0
                self._write_rows(f"{split}/{fname}/offsets", 0, np.concatenate([[0], ends]))
            else:
                self._write_rows(f"{split}/{fname}/offsets", start + 1, ends)
            max_len[fname] = int(np.diff(offsets).max(initial=0))
        return max_len

    def _write_rows(self, key: str, r0: int, data: np.ndarray) -> None:
        """Write rows ``[r0, r0+len)``: whole chunks directly, shared edge chunks as fragments."""
        if len(data) == 0:
            return
        arr = self._array(key)
        total, chunk = int(arr.shape[0]), int(arr.chunks[0])
        r1 = r0 + len(data)
        first, last = r0 // chunk, (r1 - 1) // chunk
        own_lo = first if r0 == first * chunk else first + 1
        own_hi = last + 1 if r1 == min((last + 1) * chunk, total) else last
        if own_lo < own_hi:
            a, b = own_lo * chunk, min(own_hi * chunk, total)
            arr[a:b] = data[a - r0 : b - r0]
        for c in sorted({first, last}):
            if own_lo <= c < own_hi:
                continue
            lo, hi = max(r0, c * chunk), min(r1, (c + 1) * chunk)
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(data[lo - r0 : hi - r0]), allow_pickle=False)
            self._put(f"{self.work}/frag/{key}/{c:012d}-{lo:020d}.npy", buf.getvalue())

    def mark_done(self, block_id: str, result: Mapping[str, Any]) -> None:
        """Record that block ``block_id`` is fully written, with its JSON-able results."""
        self._put(f"{self.work}/done/{block_id}.json", json.dumps(dict(result)).encode())

    def finished_blocks(self) -> dict[str, dict[str, Any]]:
        """Results of every block marked done (by this run or an interrupted one)."""
        fs, _ = self._fsroot
        found: dict[str, dict[str, Any]] = {}
        for path in fs.glob(self._side("done/*.json")):
            try:
                found[Path(path).stem] = json.loads(fs.cat_file(path))
            except (ValueError, FileNotFoundError):
                continue  # a marker cut short by a kill: the block is redone
        return found

    # ------------------------------------------------------------------ finishing
    def _fragments(self) -> dict[tuple[str, int], list[tuple[int, str]]]:
        """``{(array key, chunk): [(first row, path), ...]}`` of every saved fragment."""
        fs, _ = self._fsroot
        base = self._side("frag")
        if not fs.exists(base):
            return {}
        found: dict[tuple[str, int], list[tuple[int, str]]] = {}
        for path in fs.find(base):
            key, _, name = path[len(base) + 1 :].rpartition("/")
            chunk, _, start = name.removesuffix(".npy").partition("-")
            if name.endswith(".npy") and chunk.isdigit() and start.isdigit():
                found.setdefault((key, int(chunk)), []).append((int(start), path))
        return found

    def pending_chunks(self) -> list[tuple[str, int]]:
        """Shared chunks ``(array key, chunk index)`` to assemble from fragments once all blocks are done."""
        return sorted(self._fragments())

    def assemble(self, chunks: Sequence[tuple[str, int]]) -> None:
        """Write each shared chunk from its fragments (after every block is done, before :meth:`commit`).

        Fragments stay until :meth:`commit` removes the work directory, so assembling
        again after an interruption is harmless.
        """
        fs, _ = self._fsroot
        fragments = self._fragments()
        for key, c in chunks:
            if key in self.shards and is_staged(Path(self.url) / key):
                continue  # [shards] assembled before packing began (a resumed run)
            arr = self._array(key)
            total, chunk = int(arr.shape[0]), int(arr.chunks[0])
            lo, hi = c * chunk, min((c + 1) * chunk, total)
            parts, row = [], lo
            for start, path in sorted(fragments.get((key, c), [])):
                if start != row:
                    break
                part = np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False)
                parts.append(part)
                row += len(part)
            if row != hi:
                raise CorruptStoreError(
                    f"chunk {c} of {key!r} in {self.url!r}: fragments cover rows {lo}..{row} of {lo}..{hi}; "
                    "a block is missing -- rerun the conversion with resume"
                )
            arr[lo:hi] = np.concatenate(parts) if len(parts) > 1 else parts[0]

    # ------------------------------------------------------------------ sharding
    def pending_shards(self) -> list[tuple[str, int]]:
        """Shard files ``(array key, shard index)`` to pack, after :meth:`assemble`, before :meth:`commit`.

        Moves each sharded array's chunk files aside first (idempotent), so packing
        tasks never meet a shard file and a chunk file at the same path.
        """
        jobs = []
        for key, factor in sorted(self.shards.items()):
            stage(Path(self.url) / key)
            jobs += [(key, k) for k in range(n_shards(Path(self.url) / key, factor))]
        return jobs

    def pack(self, shards: Sequence[tuple[str, int]]) -> None:
        """Write each shard file from its chunk files (any order, any task; idempotent)."""
        for key, k in shards:
            pack_shard(Path(self.url) / key, k, self.shards[key])

    def _schema(
        self,
        max_len: Mapping[str, Mapping[str, int]],
        sources: Sequence[Mapping[str, Any]],
        *,
        complete: bool,
    ) -> Schema:
        m = self.meta
        splits = {
            k: SplitInfo(
                k,
                s.n,
                self.chunk_lens[k],
                {f: int(max_len.get(k, {}).get(f, 0)) for f, i in self.fields.items() if i.ragged},
            )
            for k, s in self.sizes.items()
        }
        source = {
            "converter": m["converter"],
            "converter_version": m["converter_version"],
            "fastload_version": __version__,
            "files": [dict(s) for s in sources],
            "created": now_iso(),
        }
        return Schema(
            format=SHARDED_FORMAT_VERSION if self.shards else FORMAT_VERSION,
            name=m["name"],
            task=m["task"],
            fields=self.fields,
            splits=splits,
            labels=list(m["labels"]),
            source=source,
            complete=complete,
            codec=self.layout.codec_record(self.shuffles, self.shards),
            store_id=m["store_id"],
        )

    def commit(
        self, *, max_len: Mapping[str, Mapping[str, int]], sources: Sequence[Mapping[str, Any]] = ()
    ) -> str:
        """Mark the store complete and move it into place; returns its path.

        Call it after every block is written and :meth:`assemble` has run on
        :meth:`pending_chunks`.

        ``max_len`` is ``{split: {ragged field: longest sample}}`` gathered from the blocks.

        Raises
        ------
        StoreExistsError
            Another writer put a store at the path meanwhile (see
            :func:`fastload.create_store`); this store is discarded.
        """
        for key, factor in self.shards.items():  # [shards] packs what pending_shards left
            stage(Path(self.url) / key)
            finish(Path(self.url) / key, factor)
        root = zarr.open_group(self.url, mode="r+")
        for split in self.sizes:
            info = self._schema(max_len, sources, complete=True).splits[split]
            root[split].attrs[ATTR_KEY] = info.to_json()
        root.attrs[ATTR_KEY] = self._schema(max_len, sources, complete=True).to_json()
        fs, _ = self._fsroot
        if fs.exists(self._side("")):
            fs.rm(self._side(""), recursive=True)
        if is_remote(self.path):
            return self.path
        try:
            install(
                Path(self.url),
                local_path(self.path),
                self.path,
                overwrite=bool(self.meta["overwrite"]),
                seen=self._seen,
            )
        except StoreExistsError:
            self.abort()  # another writer won: leave no temporary
            raise
        return self.path

    def abort(self) -> None:
        """Discard the partial store and its work files (an interrupted run then cannot resume)."""
        if is_remote(self.url):
            with contextlib.suppress(Exception):
                zarr.open_group(self.url, mode="w")
        self._discard()
