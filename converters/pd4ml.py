"""Convert the five pd4ml ``.npz`` releases (TopTagging, Spinodal, EOSL, Airshower, Belle).

Every pd4ml archive has the same layout: for each split ``s`` in ``train``
and ``test`` the inputs ``X_{s}_0``, ``X_{s}_1``, ... and the target
``y_{s}``; ``pd4ml.Dataset.load`` returns ``[X_{s}_0, X_{s}_1, ...], y_{s}``.
One code path converts them all, parametrised by a :class:`Pd4mlLayout` that
maps each archive member to a named store field (or, for detector geometry
that is the same for every event, to a store constant).

Members are streamed row block by row block from the zip archive (see
:class:`converters._npz.NpzArchive`), so memory stays at one block even
for the 2M-jet TopTagging archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastload.errors import ConfigError, SchemaError, SourceFileError

from ._common import (
    Block,
    ConversionReport,
    ConvertOptions,
    FieldDecl,
    StorePlan,
    block_ranges,
    check_dtype,
    check_equal_lengths,
    check_sample_shape,
    conform,
    finish,
    make_options,
    write_plan,
)
from ._npz import NpzArchive, NpzMember

VERSION = "1.0"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Member:
    """One pd4ml archive member per split: ``X_{split}_{index}``, or ``y_{split}`` when index is None.

    ``constant`` members (detector geometry) are stored once as a store
    constant named ``field`` instead of as a per-event field.
    """

    index: int | None
    field: str
    shape: tuple[int, ...]
    dtype: str
    role: str
    doc: str
    constant: bool = False

    def key(self, split: str) -> str:
        return f"y_{split}" if self.index is None else f"X_{split}_{self.index}"

    def decl(self) -> FieldDecl:
        return FieldDecl(self.field, self.shape, np.dtype(self.dtype), self.role, self.doc)


@dataclass(frozen=True)
class Pd4mlLayout:
    """A pd4ml dataset: archive name, task, class names and its members."""

    name: str
    filename: str
    task: str
    members: tuple[Member, ...]
    labels: tuple[str, ...] = ()
    source_url: str = ""

    @property
    def inputs(self) -> tuple[Member, ...]:
        """The ``X`` members in pd4ml's order."""
        return tuple(
            sorted((m for m in self.members if m.index is not None), key=lambda m: m.index or 0)
        )

    @property
    def target(self) -> Member:
        return next(m for m in self.members if m.index is None)


_ZENODO_PD4ML = "https://doi.org/10.5281/zenodo.6772776 (pd4ml, also `pip install pd4ml`)"

LAYOUTS: dict[str, Pd4mlLayout] = {
    "TopTagging": Pd4mlLayout(
        name="TopTagging",
        filename="1_top_tagging_2M.npz",
        task="classification",
        labels=("QCD", "top"),
        source_url=_ZENODO_PD4ML,
        members=(
            Member(
                0,
                "X",
                (200, 4),
                "float32",
                "input",
                "leading 200 jet constituents (E, px, py, pz) in GeV, pT-ordered, zero-padded",
            ),
            Member(
                1,
                "ttv",
                (),
                "int64",
                "aux",
                "origin in the original release: 0 train, 1 test, 2 validation",
            ),
            Member(None, "y", (), "int64", "label", "1 = top jet, 0 = QCD jet"),
        ),
    ),
    "Spinodal": Pd4mlLayout(
        name="Spinodal",
        filename="2_spinodal_29k.npz",
        task="classification",
        labels=("Maxwell", "Spinodal"),
        source_url=_ZENODO_PD4ML,
        members=(
            Member(
                0,
                "histogram",
                (20, 20),
                "float32",
                "input",
                "20x20 pion momentum histogram (px, py)",
            ),
            Member(None, "y", (), "int64", "label", "1 = spinodal, 0 = Maxwell"),
        ),
    ),
    "EOSL": Pd4mlLayout(
        name="EOSL",
        filename="3_EOSL_or_EOSQ_180k.npz",
        task="classification",
        labels=("EOSL", "EOSQ"),
        source_url=_ZENODO_PD4ML,
        members=(
            Member(
                0, "histogram", (24, 24), "float32", "input", "24x24 pion spectrum in (pT, phi)"
            ),
            Member(None, "y", (), "int64", "label", "1 = EOSQ (first order), 0 = EOSL (crossover)"),
        ),
    ),
    "Airshower": Pd4mlLayout(
        name="Airshower",
        filename="4_airshower_100k_regression.npz",
        task="regression",
        source_url=_ZENODO_PD4ML,
        members=(
            Member(
                0,
                "signal",
                (9, 9, 80),
                "float32",
                "input",
                "signal traces of 9x9 ground stations, 80 time bins; -1 = no signal",
            ),
            Member(
                1,
                "time",
                (9, 9, 1),
                "float32",
                "input",
                "arrival time of the first particles per station; -1 = no signal",
            ),
            Member(
                2,
                "stations",
                (81, 3),
                "float32",
                "aux",
                "x, y, z of the 81 stations (detector geometry)",
                constant=True,
            ),
            Member(
                None, "y", (), "float32", "label", "Xmax, the depth of the shower maximum (g/cm^2)"
            ),
        ),
    ),
    "Belle": Pd4mlLayout(
        name="Belle",
        filename="6_belle_selective_400k.npz",
        task="classification",
        labels=("fail", "pass"),
        source_url=_ZENODO_PD4ML,
        members=(
            Member(
                0,
                "features",
                (100, 9),
                "float32",
                "input",
                "100 particles (zero-padded) x (prodTime, energy, x, y, z, px, py, pz, PID)",
            ),
            Member(
                1,
                "mother",
                (100,),
                "int32",
                "input",
                "index of each particle's mother; -1 = none/padding",
            ),
            Member(None, "y", (), "int64", "label", "1 = event passes the downstream selection"),
        ),
    ),
}

#: CLI names of the pd4ml converters
CLI_NAMES = {
    "toptagging": "TopTagging",
    "spinodal": "Spinodal",
    "eosl": "EOSL",
    "airshower": "Airshower",
    "belle": "Belle",
}


def resolve_layout(dataset: str) -> Pd4mlLayout:
    """The layout for a dataset or CLI name (case-insensitive)."""
    by_lower = {k.lower(): v for k, v in LAYOUTS.items()}
    layout = by_lower.get(dataset.lower()) or by_lower.get(
        CLI_NAMES.get(dataset.lower(), "").lower()
    )
    if layout is None:
        raise ConfigError(f"unknown pd4ml dataset {dataset!r}; known: {sorted(LAYOUTS)}")
    return layout


def locate_archive(src: str | os.PathLike[str], layout: Pd4mlLayout) -> Path:
    """The archive itself, or ``src/<filename>``, or pd4ml's own ``src/<Name>/<filename>``."""
    p = Path(src)
    if p.is_dir():
        for candidate in (p / layout.filename, p / layout.name / layout.filename):
            if candidate.is_file():
                return candidate
        raise SourceFileError(
            f"no {layout.filename!r} in directory {str(p)!r} (nor in {str(p / layout.name)!r}); download it "
            f"from {layout.source_url} or pass the file itself"
        )
    if not p.exists():
        raise SourceFileError(
            f"{layout.name} archive {str(p)!r} does not exist; download {layout.filename!r} from {layout.source_url}"
        )
    return p


def _constant_name(member: Member, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One constant if every split holds the same array, else one per split (``name_split``)."""
    first = next(iter(arrays.values()))
    if all(a.shape == first.shape and np.array_equal(a, first) for a in arrays.values()):
        return {member.field: first}
    return {f"{member.field}_{split}": a for split, a in arrays.items()}


def build_plan(layout: Pd4mlLayout, archive: NpzArchive, options: ConvertOptions) -> StorePlan:
    """Check every member's presence, length, shape and dtype; return the streaming plan."""
    per_event = [m for m in layout.members if not m.constant]
    members: dict[str, dict[str, NpzMember]] = {}
    counts: dict[str, int] = {}
    constants: dict[str, np.ndarray] = {}
    const_values: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        members[split] = {}
        for m in layout.members:
            member = archive.member(m.key(split))
            decl = m.decl()
            check_dtype(member.dtype, decl, member.where)
            if m.constant:
                check_sample_shape((0, *member.shape), decl, member.where)
                const_values.setdefault(m.field, {})[split] = conform(
                    member.read_all()[None],
                    decl,
                    member.where,
                    allow_nonfinite=options.allow_nonfinite,
                )[0]
                continue
            if not member.shape:
                raise SchemaError(f"{member.where} is a scalar; expected one row per event")
            check_sample_shape(member.shape, decl, member.where)
            members[split][m.field] = member
        lengths = {members[split][m.field].key: len(members[split][m.field]) for m in per_event}
        counts[split] = check_equal_lengths(lengths, f"split {split!r} of {str(archive.path)!r}")
    for m in layout.members:
        if m.constant:
            constants.update(_constant_name(m, const_values[m.field]))
    decls = {m.field: m.decl() for m in per_event}

    def stream(block_events: int) -> Iterator[tuple[str, Block]]:
        for split in SPLITS:
            for start, stop in block_ranges(counts[split], block_events):
                yield (
                    split,
                    {
                        name: conform(
                            member.read(start, stop),
                            decls[name],
                            member.where,
                            first_row=start,
                            allow_nonfinite=options.allow_nonfinite,
                        )
                        for name, member in members[split].items()
                    },
                )
            for member in members[split].values():
                member.close()

    return StorePlan(
        name=layout.name,
        task=layout.task,
        fields=decls,
        counts=counts,
        stream=stream,
        sources=[archive.path],
        converter=f"converters.pd4ml ({layout.name})",
        converter_version=VERSION,
        labels=layout.labels,
        constants=constants,
        origins={s: f"split {s!r} of {str(archive.path)!r}" for s in SPLITS},
    )


def convert_pd4ml(
    dataset: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    *,
    options: ConvertOptions | None = None,
    **overrides: object,
) -> ConversionReport:
    """Convert one pd4ml ``.npz`` archive to a store with splits ``train`` and ``test``.

    Parameters
    ----------
    dataset
        ``"TopTagging"``, ``"Spinodal"``, ``"EOSL"``, ``"Airshower"`` or ``"Belle"``
        (case-insensitive; the CLI names work too).
    src
        The archive, or a directory holding it (directly or in pd4ml's ``<Name>/`` folder).
    dst
        The store to write, e.g. ``datasets/TopTagging.zarr``.
    options, **overrides
        :class:`~converters._common.ConvertOptions` and/or its fields as keywords.

    Returns
    -------
    ConversionReport
        Counts, sizes, time and whether the store was verified.
    """
    opts = make_options(options, overrides)
    layout = resolve_layout(dataset)
    archive = NpzArchive(locate_archive(src, layout))
    try:
        plan = build_plan(layout, archive, opts)
        report = write_plan(plan, dst, opts)
    finally:
        archive.close()
    return finish(report, opts)
