"""Mixing several sources (e.g. one store per particle class) into every batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastload._order import POLICIES
from fastload.errors import ConfigError
from fastload.store import Split


class Mix:
    """Compose every batch from several splits in exact proportions.

    Parameters
    ----------
    sources : Mapping[str, Split]
        Source name -> split, e.g. ``{"gamma": fl.open_store("gamma.zarr")["train"], ...}``.
        Sources may differ in size and chunking but must agree on the selected
        fields' shapes and dtypes.
    weights : Mapping[str, float] | Sequence[float] | None
        Share of each source in every batch (normalised); equal shares by default.
        Each batch holds exactly ``batch_size`` samples, split by largest-remainder
        rounding (see :func:`fastload._order.mix_counts`).
    label_field : str | None
        Name of an int64 field added to every batch: the source's index in
        ``sources`` (its order), i.e. the class label of a per-class layout.
    policy : {"first_exhausted", "cycle"}
        ``"first_exhausted"``: the epoch ends when a source cannot fill its share of
        the next batch; no sample repeats.  ``"cycle"``: the epoch has ``num_samples``
        samples and sources that run out start a new pass (new permutation).
    num_samples : int | None
        Samples per epoch and rank with ``policy="cycle"``.
    fields : Sequence[str] | None
        Fields to check for agreement now (the loader checks its selection again).
    """

    def __init__(
        self,
        sources: Mapping[str, Split],
        weights: Mapping[str, float] | Sequence[float] | None = None,
        *,
        label_field: str | None = "label",
        policy: str = "first_exhausted",
        num_samples: int | None = None,
        fields: Sequence[str] | None = None,
    ) -> None:
        if not sources:
            raise ConfigError("Mix needs at least one source")
        for name, split in sources.items():
            if not isinstance(split, Split):
                raise ConfigError(
                    f"Mix source {name!r} must be a store split (store['train']), got {type(split).__name__}"
                )
        self.sources: dict[str, Split] = dict(sources)
        names = list(self.sources)
        if weights is None:
            self.weights = tuple(1.0 for _ in names)
        elif isinstance(weights, Mapping):
            unknown = set(weights) - set(names)
            missing = set(names) - set(weights)
            if unknown or missing:
                raise ConfigError(
                    f"Mix weights must name every source exactly: unknown {sorted(unknown)}, missing {sorted(missing)}"
                )
            self.weights = tuple(float(weights[n]) for n in names)
        else:
            if len(weights) != len(names):
                raise ConfigError(f"Mix got {len(weights)} weights for {len(names)} sources")
            self.weights = tuple(float(w) for w in weights)
        if any(not (w > 0) for w in self.weights):
            raise ConfigError(
                f"Mix weights must be > 0, got {dict(zip(names, self.weights, strict=True))}"
            )
        if policy not in POLICIES:
            raise ConfigError(f"Mix policy must be one of {POLICIES}, got {policy!r}")
        if policy == "cycle" and not num_samples:
            raise ConfigError("Mix(policy='cycle') needs num_samples (samples per epoch and rank)")
        self.label_field = label_field
        self.policy = policy
        self.num_samples = num_samples
        self.check_fields(tuple(fields) if fields is not None else self.common_fields())

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def common_fields(self) -> tuple[str, ...]:
        """Fields present in every source, in the first source's order."""
        splits = list(self.sources.values())
        return tuple(f for f in splits[0].fields if all(f in s.fields for s in splits[1:]))

    def check_fields(self, fields: Sequence[str]) -> None:
        """Raise :class:`ConfigError` unless every source has ``fields`` with equal specs."""
        check_field_agreement(self.sources, fields, self.label_field)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={w:g}" for n, w in zip(self.names, self.weights, strict=True))
        return f"Mix({parts}, policy={self.policy!r}, label_field={self.label_field!r})"


def check_field_agreement(
    sources: Mapping[str, Split], fields: Sequence[str], label_field: str | None = None
) -> None:
    """Raise :class:`ConfigError` unless every source has ``fields`` with equal specs.

    What a mix of ``sources`` (or a premixed store written from them) needs:
    each field present everywhere with one shape, dtype and raggedness, and no
    stored field named like the ``label_field`` that will be added.
    """
    first_name, first = next(iter(sources.items()))
    for fname in fields:
        if label_field is not None and fname == label_field:
            raise ConfigError(
                f"Mix label_field {label_field!r} collides with a stored field; choose another label_field"
            )
        for name, split in sources.items():
            if fname not in split.fields:
                raise ConfigError(
                    f"field {fname!r} is missing from Mix source {name!r} ({split.store.path!r})"
                )
            a, b = first.fields[fname], split.fields[fname]
            if (a.shape, a.dtype, a.ragged) != (b.shape, b.dtype, b.ragged):
                raise ConfigError(
                    f"field {fname!r} differs between Mix sources: {first_name!r} has {a.dtype}{a.shape}"
                    f"{' ragged' if a.ragged else ''}, {name!r} has {b.dtype}{b.shape}{' ragged' if b.ragged else ''}"
                )
