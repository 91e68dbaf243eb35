"""Synthetic benchmark datasets, written once in every format the contenders read.

The arrays are generated with numpy inside the benchmark (independent of
``fastload.synthetic``) with the shapes and dtypes of four physics datasets and
values built to compress like real ones: zero-padded point clouds with a
realistic occupancy, count-based spectra, sparse showers above a threshold,
hit lists on an integer cell grid.  Random noise alone would not compress and
all-zero arrays would compress absurdly well; either would make a Blosc store
look worse or better than it is.

Every dataset has two classes of equal size (so that a 0.5/0.5 mix of two
per-class stores covers exactly the same samples as the premixed store) and is
written in one pass, block by block (memory bounded), as

* ``source.h5``: a flat HDF5 file, one dataset per field (a ragged field as
  ``name/values`` + ``name/offsets``), uncompressed by default — the best case
  for the HDF5 baselines;
* ``premixed.zarr``: a fastload store (lz4) with both classes interleaved;
* ``class0.zarr``, ``class1.zarr``: one store per class without the label
  field ``y`` (``fl.Mix(..., label_field="y")`` adds it), for mixing on the fly;
* ``meta.json``: sizes, field specs and the epoch sums every contender must
  reproduce (written last: a folder without it is incomplete).

Peer libraries write their own formats into sub-folders of the same folder
(see :func:`bench._contender.format_dir`).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastload._spec import FieldSpec
from fastload.errors import ConfigError

#: Bump when the generated values or the stores' layout change, so cached folders are not reused
#: (3: stores written with shuffle="auto").
GENERATOR_VERSION = 3
#: dtype of the ``<field>_len`` arrays that accompany padded ragged fields.
LEN_DTYPE = np.dtype("int64")
#: The class label field of every dataset (int64, 0 or 1).
LABEL_FIELD = "y"
#: Uncompressed bytes generated and written per block.
_BLOCK_BYTES = 16 * 2**20

Block = dict[str, Any]  # field -> np.ndarray, or (values, counts) for a ragged field


@dataclass(frozen=True)
class FieldDef:
    """One stored field: per-sample shape (a ragged field: shape of one row), dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    ragged: bool = False


@dataclass(frozen=True)
class DatasetDef:
    """How to generate one benchmark dataset."""

    name: str
    title: str
    description: str
    fields: tuple[FieldDef, ...]
    labels: tuple[str, str]
    default_n: int
    quick_n: int
    #: per-sample scalars drawn up front for all samples: ``(rng, y) -> {name: array}``
    make_meta: Callable[[np.random.Generator, np.ndarray], dict[str, np.ndarray]]
    #: one block of samples: ``(rng, y, meta_rows) -> Block``
    make_block: Callable[[np.random.Generator, np.ndarray, dict[str, np.ndarray]], Block]

    @property
    def sample_nbytes(self) -> int:
        """Stored bytes of one sample (ragged fields counted at 64 rows, for block sizing)."""
        total = 0
        for f in self.fields:
            rows = 64 if f.ragged else 1
            total += rows * int(np.prod(f.shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize
        return total


# --------------------------------------------------------------------------- generators
def _no_meta(rng: np.random.Generator, y: np.ndarray) -> dict[str, np.ndarray]:
    return {}


def _toptagging(rng: np.random.Generator, y: np.ndarray, meta: dict[str, np.ndarray]) -> Block:
    """Jets of up to 200 constituents (E, px, py, pz), pT-ordered, zero-padded.

    Top jets (class 1) have more and wider-spread constituents than QCD jets;
    the mean multiplicity (35 / 55) gives the ~4x zero padding of the real set.
    """
    n, cap = len(y), 200
    mult = np.clip(rng.poisson(np.where(y == 1, 55.0, 35.0)), 2, cap)
    present = np.arange(cap)[None, :] < mult[:, None]
    frac = np.where(present, rng.exponential(1.0, (n, cap)) ** 2, 0.0)
    frac = -np.sort(-frac, axis=1)
    frac /= frac.sum(axis=1, keepdims=True)
    pt = rng.uniform(550.0, 650.0, n)[:, None] * frac
    spread = np.where(y == 1, 0.35, 0.2)[:, None]
    eta = rng.uniform(-2.0, 2.0, n)[:, None] + spread * rng.standard_normal((n, cap))
    phi = rng.uniform(-np.pi, np.pi, n)[:, None] + spread * rng.standard_normal((n, cap))
    x = np.stack(
        [pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1
    )
    x[~present] = 0.0
    return {"X": x.astype(np.float32), "y": y.astype(np.int64)}


def _eos(rng: np.random.Generator, y: np.ndarray, meta: dict[str, np.ndarray]) -> Block:
    """24x24 (pT, phi) pion spectra: Poisson counts of a Boltzmann-like source with flow.

    The two classes differ in temperature (crossover vs first-order EoS in the
    original).  Values are counts divided by the multiplicity, so every image
    holds few distinct values, as a normalised histogram does.
    """
    n = len(y)
    pt = (np.arange(24) + 0.5) / 24 * 2.0
    phi = (np.arange(24) + 0.5) / 24 * 2 * np.pi
    temp = np.where(y == 1, 0.16, 0.13) * rng.uniform(0.95, 1.05, n)
    v2 = rng.uniform(0.0, 0.1, n)
    psi = rng.uniform(0.0, np.pi, n)
    mult = rng.uniform(800.0, 1600.0, n)
    shape_pt = pt[None, :] * np.exp(-pt[None, :] / temp[:, None])
    flow = 1 + 2 * v2[:, None] * np.cos(2 * (phi[None, :] - psi[:, None]))
    lam = shape_pt[:, :, None] * flow[:, None, :]
    lam *= (mult / lam.sum(axis=(1, 2)))[:, None, None]
    counts = rng.poisson(lam)
    return {"X": (counts / mult[:, None, None]).astype(np.float32), "y": y.astype(np.int64)}


def _shower(
    rng: np.random.Generator,
    energy: np.ndarray,
    grid: tuple[int, int, int],
    *,
    depth: float,
    radius: np.ndarray,
    centres: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    threshold: float,
) -> np.ndarray:
    """Energy deposits of showers on an (x, y, z) grid, zeroed below ``threshold`` x E."""
    nx, ny, nz = grid
    n = len(energy)
    # longitudinal gamma-function profile t^3 exp(-3 t / depth), peaking at layer ``depth``
    t = np.arange(nz) + 0.5
    long = t**3 * np.exp(-3.0 * t / depth)
    long /= long.sum()
    xs, ys = np.arange(nx)[None, :, None], np.arange(ny)[None, None, :]
    trans = np.zeros((n, nx, ny))
    for cx, cy, weight in centres:
        r = np.hypot(xs - cx[:, None, None], ys - cy[:, None, None])
        t = np.exp(-r / radius[:, None, None])
        trans += weight[:, None, None] * t / t.sum(axis=(1, 2), keepdims=True)
    cells = energy[:, None, None, None] * trans[..., None] * long[None, None, None, :]
    cells *= rng.lognormal(0.0, 0.4, cells.shape)
    cells[cells < threshold * energy[:, None, None, None]] = 0.0
    return cells.astype(np.float32)


def _lcd_meta(rng: np.random.Generator, y: np.ndarray) -> dict[str, np.ndarray]:
    return {"energy": rng.uniform(10.0, 510.0, len(y))}


def _lcd(rng: np.random.Generator, y: np.ndarray, meta: dict[str, np.ndarray]) -> Block:
    """ECAL 25x25x25 and HCAL 5x5x60 cell energies of photons (0) and pi0 (1).

    A pi0 is two close photon showers; a small random fraction of the energy
    leaks into the HCAL.  Cells below a threshold are zero (~30% occupancy).
    """
    n = len(y)
    energy = meta["energy"]
    cx, cy = 12 + rng.normal(0, 0.5, n), 12 + rng.normal(0, 0.5, n)
    split = np.where(y == 1, rng.uniform(1.0, 3.5, n), 0.0)
    share = np.where(y == 1, rng.uniform(0.3, 0.7, n), 1.0)
    ecal = _shower(
        rng,
        energy,
        (25, 25, 25),
        depth=8.0,
        radius=rng.uniform(0.8, 1.4, n),
        centres=[(cx - split / 2, cy, share), (cx + split / 2, cy, 1 - share)],
        threshold=2e-5,
    )
    leak = energy * rng.uniform(0.001, 0.05, n)
    hcal = _shower(
        rng,
        leak,
        (5, 5, 60),
        depth=20.0,
        radius=rng.uniform(0.5, 1.0, n),
        centres=[(np.full(n, 2.0), np.full(n, 2.0), np.ones(n))],
        threshold=1e-4,
    )
    return {"ECAL": ecal, "HCAL": hcal, "y": y.astype(np.int64)}


_AHCAL_MAX_HITS = 800


def _ahcal_meta(rng: np.random.Generator, y: np.ndarray) -> dict[str, np.ndarray]:
    energy = rng.uniform(10.0, 80.0, len(y))
    mean = np.where(y == 1, 60 + 5 * energy, 40 + 2.5 * energy)
    counts = np.clip(rng.poisson(mean), 1, _AHCAL_MAX_HITS)
    return {"energy": energy, "counts": counts}


def _ahcal(rng: np.random.Generator, y: np.ndarray, meta: dict[str, np.ndarray]) -> Block:
    """Hit lists (x, y, z in mm on the 30x30 mm tile grid of 38 layers, E in MIP) of e (0) / pi (1).

    Electrons shower early and narrow, pions late and wide; positions are
    multiples of the cell pitch, as in the detector, energies are continuous.
    """
    counts = meta["counts"].astype(np.int64)
    owner = np.repeat(np.arange(len(y)), counts)
    pion = y[owner] == 1
    total = int(counts.sum())
    depth = np.where(pion, rng.gamma(2.0, 7.0, total), rng.gamma(2.0, 2.5, total))
    width = np.where(pion, 4.0, 1.5)
    ix = np.clip(np.rint(11.5 + width * rng.standard_normal(total)), 0, 23)
    iy = np.clip(np.rint(11.5 + width * rng.standard_normal(total)), 0, 23)
    iz = np.clip(np.floor(depth), 0, 37)
    e_mip = rng.lognormal(0.3, 0.6, total)
    hits = np.stack([ix * 30.0 - 345.0, iy * 30.0 - 345.0, iz * 26.1, e_mip], axis=-1).astype(
        np.float32
    )
    return {
        "hits": (hits, counts),
        "y": y.astype(np.int64),
        "energy": meta["energy"].astype(np.float32),
    }


DATASETS: dict[str, DatasetDef] = {
    d.name: d
    for d in (
        DatasetDef(
            "toptagging",
            "TopTagging",
            "jets as 200 constituents x (E, px, py, pz), float32",
            (FieldDef("X", (200, 4), "float32"), FieldDef("y", (), "int64")),
            ("qcd", "top"),
            default_n=32_768,
            quick_n=4_096,
            make_meta=_no_meta,
            make_block=_toptagging,
        ),
        DatasetDef(
            "eos",
            "EoS",
            "24x24 (pT, phi) pion spectra, float32",
            (FieldDef("X", (24, 24), "float32"), FieldDef("y", (), "int64")),
            ("eosq", "eosl"),
            default_n=49_152,
            quick_n=4_096,
            make_meta=_no_meta,
            make_block=_eos,
        ),
        DatasetDef(
            "lcd",
            "LCD calorimeter",
            "ECAL 25x25x25 + HCAL 5x5x60 cell energies, float32",
            (
                FieldDef("ECAL", (25, 25, 25), "float32"),
                FieldDef("HCAL", (5, 5, 60), "float32"),
                FieldDef("y", (), "int64"),
            ),
            ("gamma", "pi0"),
            default_n=1_536,
            quick_n=512,
            make_meta=_lcd_meta,
            make_block=_lcd,
        ),
        DatasetDef(
            "ahcal",
            "AHCAL",
            "ragged hit lists (x, y, z, E), float32, padded to the longest event",
            (
                FieldDef("hits", (4,), "float32", ragged=True),
                FieldDef("y", (), "int64"),
                FieldDef("energy", (), "float32"),
            ),
            ("e", "pi"),
            default_n=16_384,
            quick_n=4_096,
            make_meta=_ahcal_meta,
            make_block=_ahcal,
        ),
    )
}


# --------------------------------------------------------------------------- on-disk dataset
@dataclass
class BenchData:
    """A generated dataset on disk: paths, field specs and the reference epoch sums.

    JSON-serialisable (``to_json``/``from_json``), so benchmark cells running in
    their own processes receive it as a plain file.
    """

    name: str
    title: str
    folder: str
    n: int
    labels: list[str]
    fields: list[dict[str, Any]]
    max_len: dict[str, int]
    chunk_len: int
    sums: dict[str, float]
    abs_sums: dict[str, float]
    sample_nbytes: int
    raw_nbytes: int
    sizes_bytes: dict[str, int] = field(default_factory=dict)
    generation_s: float = 0.0
    seed: int = 0
    hdf5_compression: str = "none"
    generator_version: int = GENERATOR_VERSION

    @property
    def hdf5(self) -> str:
        return str(Path(self.folder) / "source.h5")

    @property
    def store(self) -> str:
        return str(Path(self.folder) / "premixed.zarr")

    @property
    def class_stores(self) -> list[str]:
        return [str(Path(self.folder) / f"class{k}.zarr") for k in range(len(self.labels))]

    @property
    def field_defs(self) -> list[FieldDef]:
        return [
            FieldDef(f["name"], tuple(f["shape"]), f["dtype"], bool(f["ragged"]))
            for f in self.fields
        ]

    @property
    def block_len(self) -> int:
        """Samples per read block for chunk-wise readers: the store's chunk length, at most ~4 MiB."""
        stored = self.raw_nbytes / max(1, self.n)
        by_bytes = 1 << max(0, int(np.floor(np.log2(max(1.0, 4 * 2**20 / stored)))))
        return max(1, min(self.chunk_len, by_bytes))

    def batch_spec(self) -> dict[str, FieldSpec]:
        """Per-sample spec of every array in a delivered batch (ragged: padded + ``_len``)."""
        spec: dict[str, FieldSpec] = {}
        for f in self.field_defs:
            if f.ragged:
                spec[f.name] = FieldSpec((self.max_len[f.name], *f.shape), f.dtype)
                spec[f"{f.name}_len"] = FieldSpec((), LEN_DTYPE)
            else:
                spec[f.name] = FieldSpec(f.shape, f.dtype)
        return spec

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchData:
        return cls(**d)


def pad_ragged(
    values: np.ndarray, offsets: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad samples ``values[offsets[i]:offsets[i+1]]`` into ``(B, max_len, *row)`` plus lengths.

    ``offsets`` may start anywhere (a slice of a larger offsets array); values
    are indexed relative to ``offsets[0]``.  Samples longer than ``max_len``
    are truncated.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    n = counts.size
    out = np.zeros((n, max_len, *values.shape[1:]), dtype=values.dtype)
    kept = np.minimum(counts, max_len)
    if kept.sum():
        owner = np.repeat(np.arange(n), kept)
        starts = np.repeat(offsets[:-1] - offsets[0], kept)
        pos = np.arange(owner.size) - np.repeat(np.cumsum(kept) - kept, kept)
        out[owner, pos] = values[starts + pos]
    return out, kept.astype(LEN_DTYPE)


def _folder_name(ddef: DatasetDef, n: int, seed: int, compression: str) -> str:
    return f"{ddef.name}-n{n}-seed{seed}-h5{compression}-v{GENERATOR_VERSION}"


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dataset_def(name: str) -> DatasetDef:
    """The definition of dataset ``name`` (``ConfigError`` listing the known ones otherwise)."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown benchmark dataset {name!r}; choose from {sorted(DATASETS)}"
        ) from None


def build_dataset(
    name: str,
    n: int,
    root: str | Path,
    *,
    seed: int = 0,
    hdf5_compression: str = "none",
    progress: bool = True,
) -> BenchData:
    """Generate dataset ``name`` with ``n`` samples under ``root`` (reused when already there).

    Parameters
    ----------
    name
        One of :data:`DATASETS`.
    n
        Number of samples; rounded up to an even number (two equal classes).
    root
        Folder holding one sub-folder per generated dataset.
    seed
        Seed of the generator; the same seed gives the same bytes.
    hdf5_compression
        ``"none"`` (default), ``"gzip"`` or ``"lzf"`` for ``source.h5``.
    progress
        Show a tqdm progress bar.
    """
    ddef = dataset_def(name)
    if n < 2:
        raise ConfigError(f"dataset {name!r}: need at least 2 samples, got {n}")
    if hdf5_compression not in ("none", "gzip", "lzf"):
        raise ConfigError(f"hdf5 compression {hdf5_compression!r}: choose none, gzip or lzf")
    n += n % 2
    folder = Path(root) / _folder_name(ddef, n, seed, hdf5_compression)
    if (folder / "meta.json").is_file():
        return BenchData.from_json(json.loads((folder / "meta.json").read_text()))
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        data = _generate(ddef, n, tmp, seed=seed, compression=hdf5_compression, progress=progress)
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier attempt
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    data.folder = str(folder)
    (folder / "meta.json").write_text(json.dumps(data.to_json(), indent=1))
    return data


def _block_ranges(n: int, block: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, block):
        yield start, min(n, start + block)


def _generate(
    ddef: DatasetDef, n: int, folder: Path, *, seed: int, compression: str, progress: bool
) -> BenchData:
    import h5py
    from tqdm import tqdm

    import fastload as fl

    t0 = time.perf_counter()
    root_seq = np.random.SeedSequence([seed, GENERATOR_VERSION, *ddef.name.encode()])
    meta_seq, label_seq, block_seq = root_seq.spawn(3)
    # balanced classes in a random premixed order: a 0.5/0.5 mix of the two
    # class stores then covers exactly the samples of the premixed store
    y_all = np.random.default_rng(label_seq).permutation(np.repeat(np.arange(2), n // 2))
    meta_all = ddef.make_meta(np.random.default_rng(meta_seq), y_all)
    ragged = [f for f in ddef.fields if f.ragged]
    totals = {f.name: int(meta_all["counts"].sum()) for f in ragged}
    max_len = {f.name: int(meta_all["counts"].max()) for f in ragged}
    block = max(64, _BLOCK_BYTES // max(1, ddef.sample_nbytes))
    block += block % 2

    sums = {name: 0.0 for name in _delivered_names(ddef)}
    abs_sums = dict(sums)
    h5_opts: dict[str, Any] = {} if compression == "none" else {"compression": compression}
    store_opts = {"task": "classification", "codec": "lz4", "labels": list(ddef.labels)}
    writers = [
        fl.create_store(folder / "premixed.zarr", name=f"{ddef.title} (premixed)", **store_opts),
        *(
            fl.create_store(
                folder / f"class{k}.zarr", name=f"{ddef.title} ({ddef.labels[k]})", **store_opts
            )
            for k in range(2)
        ),
    ]
    value_pos = dict.fromkeys(totals, 0)
    try:
        with h5py.File(folder / "source.h5", "w") as h5:
            for f in ddef.fields:
                if f.ragged:
                    g = h5.create_group(f.name)
                    g.create_dataset(
                        "values", shape=(totals[f.name], *f.shape), dtype=f.dtype, **h5_opts
                    )
                    g.create_dataset("offsets", shape=(n + 1,), dtype="int64")
                    g["offsets"][0] = 0
                else:
                    h5.create_dataset(f.name, shape=(n, *f.shape), dtype=f.dtype, **h5_opts)
            h5.attrs["labels"] = list(ddef.labels)
            bar = tqdm(
                total=n,
                desc=f"generate {ddef.name}",
                unit="samples",
                disable=not progress,
                leave=False,
            )
            with bar:
                ranges = list(_block_ranges(n, block))
                for (start, stop), seq in zip(ranges, block_seq.spawn(len(ranges)), strict=True):
                    rng = np.random.default_rng(seq)
                    y = y_all[start:stop]
                    rows = {k: v[start:stop] for k, v in meta_all.items()}
                    data = ddef.make_block(rng, y, rows)
                    _write_h5_block(h5, ddef, data, start, stop, value_pos)
                    _accumulate(ddef, data, sums, abs_sums)
                    _append_stores(writers, ddef, data, y)
                    bar.update(stop - start)
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    chunk_len = fl.open_store(folder / "premixed.zarr")["train"].chunk_len
    spec_bytes = 0
    for f in ddef.fields:
        row = int(np.prod(f.shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize
        spec_bytes += (row * max_len[f.name] + LEN_DTYPE.itemsize) if f.ragged else row
    raw = sum(
        (totals[f.name] if f.ragged else n)
        * int(np.prod(f.shape, dtype=np.int64))
        * np.dtype(f.dtype).itemsize
        for f in ddef.fields
    )
    sizes = {p.name: _dir_bytes(p) for p in sorted(folder.iterdir())}
    return BenchData(
        name=ddef.name,
        title=ddef.title,
        folder=str(folder),
        n=n,
        labels=list(ddef.labels),
        fields=[
            {"name": f.name, "shape": list(f.shape), "dtype": f.dtype, "ragged": f.ragged}
            for f in ddef.fields
        ],
        max_len=max_len,
        chunk_len=chunk_len,
        sums=sums,
        abs_sums=abs_sums,
        sample_nbytes=spec_bytes,
        raw_nbytes=raw,
        sizes_bytes=sizes,
        generation_s=time.perf_counter() - t0,
        seed=seed,
        hdf5_compression=compression,
    )


def _delivered_names(ddef: DatasetDef) -> list[str]:
    names = []
    for f in ddef.fields:
        names.append(f.name)
        if f.ragged:
            names.append(f"{f.name}_len")
    return names


def _write_h5_block(
    h5: Any, ddef: DatasetDef, data: Block, start: int, stop: int, pos: dict[str, int]
) -> None:
    for f in ddef.fields:
        if f.ragged:
            values, counts = data[f.name]
            a = pos[f.name]
            h5[f.name]["values"][a : a + len(values)] = values
            h5[f.name]["offsets"][start + 1 : stop + 1] = a + np.cumsum(counts)
            pos[f.name] = a + len(values)
        else:
            h5[f.name][start:stop] = data[f.name]


def _accumulate(
    ddef: DatasetDef, data: Block, sums: dict[str, float], abs_sums: dict[str, float]
) -> None:
    for f in ddef.fields:
        if f.ragged:
            values, counts = data[f.name]
            parts = {f.name: values, f"{f.name}_len": counts}
        else:
            parts = {f.name: data[f.name]}
        for key, arr in parts.items():
            sums[key] += float(arr.sum(dtype=np.float64))
            abs_sums[key] += float(np.abs(arr).sum(dtype=np.float64))


def _append_stores(writers: list[Any], ddef: DatasetDef, data: Block, y: np.ndarray) -> None:
    from fastload import Ragged

    def as_store_block(mask: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in ddef.fields:
            if mask is not None and f.name == LABEL_FIELD:
                continue  # a per-class store's label is its position in the mix
            if f.ragged:
                values, counts = data[f.name]
                if mask is None:
                    out[f.name] = Ragged.from_counts(values, counts)
                else:
                    rows = np.repeat(mask, counts)
                    out[f.name] = Ragged.from_counts(values[rows], counts[mask])
            else:
                out[f.name] = data[f.name] if mask is None else data[f.name][mask]
        return out

    writers[0].append("train", as_store_block(None))
    for k in range(2):
        mask = y == k
        if mask.any():
            writers[1 + k].append("train", as_store_block(mask))


def default_events(name: str, *, quick: bool) -> int:
    """Default sample count of dataset ``name`` (full run or ``--quick``)."""
    d = dataset_def(name)
    return d.quick_n if quick else d.default_n


__all__ = [
    "DATASETS",
    "GENERATOR_VERSION",
    "LABEL_FIELD",
    "LEN_DTYPE",
    "BenchData",
    "DatasetDef",
    "FieldDef",
    "build_dataset",
    "dataset_def",
    "default_events",
    "pad_ragged",
]
