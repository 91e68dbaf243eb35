"""The protocol every contender of ``python -m bench.throughput`` implements.

A contender turns a generated dataset (:class:`bench._data.BenchData`) into
batches: ``dict[str, np.ndarray]`` with exactly the fields, dtypes and
per-sample shapes of :meth:`BenchData.batch_spec` and at most ``batch_size``
samples each (ragged fields padded to the dataset's longest sample plus
``<field>_len``).  Every batch must be freshly produced from the data — never
the same array object as the previous batch — because the consumer checks that.

Lifecycle, as driven by :mod:`bench._measure` (one contender per process):

1. :meth:`Contender.unavailable` — a printed note when a package is missing;
2. :meth:`Contender.prepare` — write the contender's own storage format (once,
   cached beside the dataset; timed separately, never part of a throughput);
3. :meth:`Contender.open` -> :class:`Session`; ``session.epoch(e)`` iterates
   epoch ``e``; ``session.close()`` must release every worker process, thread
   and shared-memory segment, also after an exception or an abandoned epoch.

Heavy frameworks are imported inside methods, so that importing the registry
(:mod:`bench.baselines`) stays cheap and a missing package skips only its
contender.
"""

from __future__ import annotations

import importlib
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ._data import BenchData

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class RunConfig:
    """What every contender is asked to do: the same batch size, workers and seed for all."""

    batch_size: int
    workers: int
    prefetch: int = 4
    seed: int = 0


class Session(ABC):
    """An opened contender: iterate epochs, then close (idempotently)."""

    @abstractmethod
    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Batches of one epoch (every sample once, in an order seeded by ``epoch``)."""

    def close(self) -> None:  # noqa: B027 - sessions without resources need nothing
        """Release worker processes, threads and shared memory."""

    def samples_by_design(self, epoch: int) -> int | None:
        """Samples ``epoch`` delivers when the contender documents fewer than all (else None)."""
        return None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Contender(ABC):
    """One way of feeding batches; subclasses live in :mod:`bench.baselines`."""

    #: unique short name used on the command line and in results.json
    key: ClassVar[str]
    #: human-readable name for tables and plots
    label: ClassVar[str]
    #: "reference" (in memory), "baseline" (what physicists write), "peer" (libraries), "fastload"
    family: ClassVar[str] = "baseline"
    #: importable modules (``"pkg.mod"``) or attributes (``"pkg:attr"``) it needs
    requires: ClassVar[tuple[str, ...]] = ()
    #: install hint printed when a requirement is missing
    install: ClassVar[str] = ""
    #: uses worker processes/threads (so ``--workers`` and the worker sweep apply)
    parallel: ClassVar[bool] = False
    #: part of the worker-count sweep by default
    sweep: ClassVar[bool] = False
    #: part of ``--quick``
    quick: ClassVar[bool] = False
    #: one line: format read, shuffling, parallelism (goes into the docs table)
    how: ClassVar[str] = ""

    def unavailable(self) -> str | None:
        """Why this contender cannot run here (a missing or broken package), or None."""
        for req in self.requires:
            module, _, attr = req.partition(":")
            try:
                mod = importlib.import_module(module)
                if attr and not hasattr(mod, attr):
                    return f"{module}.{attr} does not exist yet"
            except Exception as exc:  # broken installs raise more than ImportError
                hint = f" (install: {self.install})" if self.install else ""
                return f"cannot import {module}: {type(exc).__name__}: {exc}"[:300] + hint
        return None

    def not_applicable(self, data: BenchData, cfg: RunConfig) -> str | None:
        """Why this contender does not apply to ``data``/``cfg`` (e.g. no GPU for pinning), or None."""
        return None

    def prepare(self, data: BenchData) -> None:  # noqa: B027 - most read the shared files
        """Write this contender's own storage format (see :func:`ensure_format`)."""

    @abstractmethod
    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        """Start reading ``data`` (spawn workers, open files)."""


def format_dir(data: BenchData, key: str) -> Path:
    """Folder of the storage format ``key`` written beside the dataset."""
    return Path(data.folder) / key


def ensure_format(data: BenchData, key: str, write: Callable[[Path], None]) -> float:
    """Write format ``key`` with ``write(tmp_folder)`` unless complete already; seconds spent.

    The folder is written under a temporary name and renamed when ``write``
    returns, so an interrupted conversion is never mistaken for a finished one.
    """
    final = format_dir(data, key)
    if (final / ".complete").is_file():
        return 0.0
    t0 = time.perf_counter()
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        (tmp / ".complete").write_text("")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return time.perf_counter() - t0


def epoch_seed(cfg: RunConfig, epoch: int) -> np.random.SeedSequence:
    """Seed of epoch ``epoch`` for contenders that shuffle themselves."""
    return np.random.SeedSequence([cfg.seed, epoch])


__all__ = [
    "Batch",
    "Contender",
    "RunConfig",
    "Session",
    "ensure_format",
    "epoch_seed",
    "format_dir",
]
