"""pd4ml-style one-line loading: the :class:`Dataset` base class and the registry.

``Name.load(split, path)`` looks under ``path`` for, in this order:

1. a converted store ``<path>/<Name>.zarr``: it is opened and read;
2. the original files in one of the layouts of ``Name.originals``: they are
   converted once into ``<path>/<Name>.zarr`` (the converter reports what it
   does), then read;
3. otherwise :class:`~fastload.errors.DatasetNotFoundError` says where the
   data can be obtained and how to generate synthetic stand-ins.

The converters are imported only when a conversion is needed, so
``import fastload.datasets`` stays light.  A conversion runs serially in the
calling process (never a Dask cluster: a one-liner often sits in a script
without an ``if __name__ == "__main__":`` guard, which worker processes
would re-run) and is reported on the ``fastload.datasets`` logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fastload._messages import closest
from fastload.errors import ConfigError, DatasetNotFoundError

logger = logging.getLogger(__name__)

#: every Dataset subclass, by name
REGISTRY: dict[str, type[Dataset]] = {}


@dataclass(frozen=True)
class Original:
    """One layout in which a dataset's original files can sit under a directory.

    Parameters
    ----------
    label
        Human name of the release, e.g. ``"pd4ml release 1_top_tagging_2M.npz"``.
    candidates
        Paths relative to the data directory, ``{name}`` standing for the
        dataset name; the first that :attr:`present` accepts is used.
    convert
        ``convert(src, dst)`` writes the store ``dst`` from the original at ``src``.
    present
        Whether a candidate path holds this release (default: the path exists).
    """

    label: str
    candidates: tuple[str, ...]
    convert: Callable[[Path, Path], Any]
    present: Callable[[Path], bool] = os.path.exists

    def locate(self, path: Path, name: str) -> Path | None:
        """The first candidate under ``path`` that holds this release, or None."""
        for rel in self.candidates:
            candidate = path / rel.format(name=name) if rel not in ("", ".") else path
            if self.present(candidate):
                return candidate
        return None

    def describe(self, path: Path, name: str) -> str:
        return " or ".join(str(path / rel.format(name=name)) for rel in self.candidates)


class Dataset:
    """Base class of the pd4ml-style datasets; subclasses are registered by ``name``.

    Class attributes
    ----------------
    name
        Dataset name; the store is ``<path>/<name>.zarr``.
    inputs
        Store fields returned as ``X`` by :meth:`load`, in pd4ml's order;
        ``"constant:<name>"`` takes a store constant instead (same for every
        event); empty: every field of role ``input``.
    target
        Store field returned as ``y``; empty: the first field of role ``label``.
    originals
        Layouts of the original files that :meth:`load` converts automatically.
    obtain
        Where the originals can be downloaded.
    synthetic
        Name of the generator in :mod:`fastload.synthetic`, or ``""``.
    """

    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    target: ClassVar[str] = "y"
    originals: ClassVar[tuple[Original, ...]] = ()
    obtain: ClassVar[str] = ""
    synthetic: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    # ---------------------------------------------------------------- lookup
    @classmethod
    def store_path(cls, path: str | os.PathLike[str] = "./datasets") -> Path:
        """Where the converted store lives (or will live): ``<path>/<name>.zarr``."""
        return Path(os.path.expanduser(os.fspath(path))) / f"{cls.name}.zarr"

    @classmethod
    def find_original(
        cls, path: str | os.PathLike[str] = "./datasets"
    ) -> tuple[Original, Path] | None:
        """The first original layout present under ``path`` and its location, or None."""
        base = Path(os.path.expanduser(os.fspath(path)))
        for original in cls.originals:
            found = original.locate(base, cls.name)
            if found is not None:
                return original, found
        return None

    @classmethod
    def prepare(cls, path: str | os.PathLike[str] = "./datasets", *, verbose: bool = True) -> Path:
        """Make sure ``<path>/<name>.zarr`` exists, converting the originals if needed; return it.

        Raises
        ------
        DatasetNotFoundError
            Neither the store nor any original layout is under ``path``.
        """
        store = cls.store_path(path)
        if store.exists():
            return store
        found = cls.find_original(path)
        if found is None:
            raise DatasetNotFoundError(
                cls._not_found_message(Path(os.path.expanduser(os.fspath(path))))
            )
        original, src = found
        if verbose:
            logger.info(
                "%s: no store at %r; converting the %s at %r (one time only)",
                cls.name,
                str(store),
                original.label,
                str(src),
            )
        original.convert(src, store)
        return store

    @classmethod
    def _not_found_message(cls, base: Path) -> str:
        looked = "; ".join(f"{o.label}: {o.describe(base, cls.name)}" for o in cls.originals)
        lines = [
            f"{cls.name} not found under {str(base)!r}: no converted store {str(cls.store_path(base))!r}"
            + (f" and no original files ({looked})." if looked else "."),
        ]
        if cls.obtain:
            lines.append(f"Obtain the data: {cls.obtain}.")
        if cls.synthetic:
            target = base / cls.name
            lines.append(
                f"Or generate synthetic stand-in data: `python -m fastload.synthetic {cls.synthetic} "
                f"{target}` (or fastload.synthetic.generate({cls.synthetic!r}, {str(target)!r}))."
            )
        return " ".join(lines)

    # --------------------------------------------------------------- reading
    @classmethod
    def open(cls, path: str | os.PathLike[str] = "./datasets", *, verbose: bool = True) -> Any:
        """The dataset's :class:`fastload.Store` (converting the originals first if needed)."""
        import fastload as fl

        return fl.open_store(cls.prepare(path, verbose=verbose))

    @classmethod
    def load(
        cls,
        split: str = "train",
        path: str | os.PathLike[str] = "./datasets",
        force_download: bool = False,
        *,
        verbose: bool = True,
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Load one split into memory, shaped as ``pd4ml``'s ``Dataset.load`` returns it.

        The signature is pd4ml's, ``load(split, path, force_download)``, positionally too.

        Parameters
        ----------
        split
            ``"train"``, ``"test"`` (and ``"val"`` where the store has one).
        path
            Data directory holding ``<name>.zarr`` or the original files.
        force_download
            Accepted for pd4ml compatibility.  fastload never downloads: the data are read
            from ``path`` as usual, and a warning on the ``fastload.datasets`` logger says
            so (delete ``<path>/<name>.zarr`` to convert the originals again).
        verbose
            Report a conversion when one is needed (INFO on the ``fastload.datasets`` logger).

        Returns
        -------
        X : list of numpy.ndarray
            The inputs in pd4ml's order (see the class's ``inputs``).
        y : numpy.ndarray
            The target, shape ``(n,)`` (or ``(n, k)``).

        Ragged (variable-length) fields, such as AHCAL hits, come back as
        :class:`fastload.Ragged` (``values`` plus ``offsets``).
        """
        if force_download:
            logger.warning(
                "%s.load(force_download=True): fastload does not download datasets; reading %r "
                "(or converting the originals under %r); delete that store to convert again",
                cls.name,
                str(cls.store_path(path)),
                os.fspath(path),
            )
        store = cls.open(path, verbose=verbose)
        part = store[split]
        X = [cls._input(store, part, name, split) for name in cls.input_names(store)]
        return X, part.read(cls.target_name(store))

    @classmethod
    def load_fields(
        cls,
        split: str = "train",
        path: str | os.PathLike[str] = "./datasets",
        fields: Sequence[str] | None = None,
        *,
        verbose: bool = True,
    ) -> dict[str, Any]:
        """Every field (or the selected ``fields``) of one split by store field name."""
        store = cls.open(path, verbose=verbose)
        part = store[split]
        names = list(fields) if fields is not None else list(store.fields)
        return {name: part.read(name) for name in names}

    @classmethod
    def input_names(cls, store: Any) -> tuple[str, ...]:
        """``inputs``, or when empty every field of role ``input`` in store order."""
        return cls.inputs or tuple(k for k, f in store.fields.items() if f.role == "input")

    @classmethod
    def target_name(cls, store: Any) -> str:
        """``target``, or when empty the store's first field of role ``label``."""
        if cls.target:
            return cls.target
        labels = [k for k, f in store.fields.items() if f.role == "label"]
        if not labels:
            raise ConfigError(f"store {store.path!r} has no field with role 'label' to return as y")
        return labels[0]

    @classmethod
    def _input(cls, store: Any, part: Any, name: str, split: str) -> Any:
        if not name.startswith("constant:"):
            return part.read(name)
        const = name.removeprefix("constant:")
        constants = store.constants
        for key in (f"{const}_{split}", const):
            if key in constants:
                return constants[key]
        raise ConfigError(
            f"store {store.path!r} has no constant {const!r} (has {sorted(constants)})"
        )

    @classmethod
    def print_description(cls) -> None:
        """Print the dataset's description (as pd4ml does)."""
        print(cls.__doc__)


def get(name: str) -> type[Dataset]:
    """The dataset class called ``name`` (case-insensitive)."""
    for key, cls in REGISTRY.items():
        if key.lower() == name.lower():
            return cls
    raise ConfigError(
        f"unknown dataset {name!r}{closest(name, list(REGISTRY))}; known: {sorted(REGISTRY)}"
    )
