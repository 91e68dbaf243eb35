"""Mixing several sources (e.g. one store per particle class) into every batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastload import _validate
from fastload._order import POLICIES, MixConfig
from fastload._remainder import REMAINDERS
from fastload._source import Source, check_source, describe
from fastload.errors import ConfigError

__all__ = ["Mix", "check_field_agreement"]

_OWNER = "fl.Mix"


class Mix:
    """Compose every batch from several sources in exact proportions.

    Parameters
    ----------
    sources : Mapping[str, Source]
        Source name -> split (any :class:`~fastload.Source`), e.g.
        ``{"gamma": fl.open_store("gamma.zarr")["train"], ...}``.
        Sources may differ in size and chunking but must agree on the selected
        fields' shapes and dtypes.
    weights : Mapping[str, float] | Sequence[float] | None
        Share of each source in every batch (normalised, finite, > 0).  Default:
        proportional to the sources' sizes (``len(split)``), so that the sources
        run out together and an epoch delivers every sample once, in the data's
        own proportions (up to less than a batch per source).  Give weights to
        rebalance, e.g. ``{"gamma": 1, "pi0": 1}`` for equal shares (the larger
        source is then only partly used per epoch with ``"first_exhausted"``).
        Each batch holds exactly ``batch_size`` samples: ``floor(batch_size * w_s)``
        of source ``s`` and the samples left over as ``remainder`` says.
    label_field : str | None
        Name of an int64 field added to every batch: the source's index in
        ``sources`` (its order), i.e. the class label of a per-class layout.
    policy : {"first_exhausted", "cycle"}
        ``"first_exhausted"``: the epoch ends when a source cannot fill its share of
        the next batch; no sample repeats.  ``"cycle"``: the epoch has ``num_samples``
        samples and sources that run out start a new pass (new permutation).
    num_samples : int | None
        Samples per epoch with ``policy="cycle"``, counted over all ranks together.
    remainder : {"largest", "random"}
        Who gets the samples left over by the floors.  ``"largest"`` (default): the
        sources with the largest fractional parts of ``batch_size * w_s``, the same
        in every batch (:func:`fastload._order.mix_counts`; with equal weights the
        lower source ids).  ``"random"``: distinct sources drawn anew for every
        batch (seeded by the loader's seed, epoch and rank), each with probability
        equal to its fractional part, so every source's expected count is
        ``batch_size * w_s``: LArIAT's "batch size // classes each, the remainder
        to random classes" (docs/order.md).
    fields : Sequence[str] | None
        Fields to check for agreement now (the loader checks its selection again).
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        weights: Mapping[str, float] | Sequence[float] | None = None,
        *,
        label_field: str | None = "label",
        policy: str = "first_exhausted",
        num_samples: int | None = None,
        fields: Sequence[str] | None = None,
        remainder: str = "largest",
    ) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise ConfigError(
                f"fl.Mix: sources must be a non-empty mapping name -> source (a store split, "
                f"fl.from_arrays(...)), got {sources!r}"
            )
        for name, split in sources.items():
            check_source(split, owner=_OWNER, what=f"sources[{name!r}]")
        self.sources: dict[str, Source] = dict(sources)
        self.weights = _resolve_weights(self.sources, weights)
        _validate.choice(policy, POLICIES, name="policy", owner=_OWNER)
        if policy == "cycle":
            if num_samples is None:
                raise ConfigError(
                    "fl.Mix: policy='cycle' needs num_samples (samples per epoch, all ranks "
                    "together): cycling has no natural epoch end"
                )
            num_samples = _validate.integer(
                num_samples, name="num_samples", minimum=1, owner=_OWNER
            )
        elif num_samples is not None:
            raise ConfigError(
                f"fl.Mix: num_samples={num_samples!r} only applies to policy='cycle'; "
                "with 'first_exhausted' the smallest source ends the epoch"
            )
        _validate.choice(remainder, REMAINDERS, name="remainder", owner=_OWNER)
        if label_field is not None and (not isinstance(label_field, str) or not label_field):
            raise _validate.problem(_OWNER, "label_field", "a field name or None", label_field)
        self.label_field = label_field
        self.policy = policy
        self.num_samples = num_samples
        self.remainder = remainder
        self.check_fields(tuple(fields) if fields is not None else self.common_fields())

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def order_config(self) -> MixConfig:
        """The order layer's view of this mix: weights, policy, ``num_samples``, remainder."""
        return MixConfig(
            weights=self.weights,
            policy=self.policy,
            num_samples=self.num_samples,
            remainder=self.remainder,
        )

    def common_fields(self) -> tuple[str, ...]:
        """Fields present in every source, in the first source's order."""
        splits = list(self.sources.values())
        return tuple(f for f in splits[0].fields if all(f in s.fields for s in splits[1:]))

    def check_fields(self, fields: Sequence[str]) -> None:
        """Raise :class:`ConfigError` unless every source has ``fields`` with equal specs."""
        check_field_agreement(self.sources, fields, self.label_field)

    def __repr__(self) -> str:
        total = sum(self.weights)
        parts = ", ".join(
            f"{n}={w / total:.4g}" for n, w in zip(self.names, self.weights, strict=True)
        )
        extra = f", remainder={self.remainder!r}" if self.remainder != "largest" else ""
        return f"Mix({parts}, policy={self.policy!r}{extra}, label_field={self.label_field!r})"


def _resolve_weights(
    sources: Mapping[str, Source], weights: Mapping[str, float] | Sequence[float] | None
) -> tuple[float, ...]:
    """One finite weight > 0 per source, in source order (default: the sources' sizes)."""
    names = list(sources)
    if weights is None:
        empty = [name for name, split in sources.items() if len(split) == 0]
        if empty:
            raise ConfigError(
                f"fl.Mix: source(s) {empty} have no samples; leave them out of the Mix"
            )
        return tuple(float(len(split)) for split in sources.values())
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        missing = set(names) - set(weights)
        if unknown or missing:
            raise ConfigError(
                f"fl.Mix: weights must name every source exactly: unknown {sorted(unknown)}, "
                f"missing {sorted(missing)}"
            )
        given = [(n, weights[n]) for n in names]
    elif isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ConfigError(
            f"fl.Mix: weights must be a mapping source -> weight or a sequence of weights, got {weights!r}"
        )
    else:
        if len(weights) != len(names):
            raise ConfigError(f"fl.Mix: got {len(weights)} weights for {len(names)} sources")
        given = list(zip(names, weights, strict=True))
    hint = "; leave a source out of the Mix instead of giving it weight 0"
    return tuple(
        _validate.number(w, name=f"weights[{name!r}]", above=0, owner=_OWNER, hint=hint)
        for name, w in given
    )


def check_field_agreement(
    sources: Mapping[str, Source], fields: Sequence[str], label_field: str | None = None
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
                    f"field {fname!r} is missing from Mix source {name!r} ({describe(split)})"
                )
            a, b = first.fields[fname], split.fields[fname]
            if (a.shape, a.dtype, a.ragged) != (b.shape, b.dtype, b.ragged):
                raise ConfigError(
                    f"field {fname!r} differs between Mix sources: {first_name!r} has {a.dtype}{a.shape}"
                    f"{' ragged' if a.ragged else ''}, {name!r} has {b.dtype}{b.shape}{' ragged' if b.ragged else ''}"
                )
