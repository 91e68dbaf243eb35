"""Argument checks shared by the public constructors.

Each check returns the value normalised (``int``, ``float``, ``bool``) or raises
:class:`~fastload.errors.ConfigError` whose message names the public parameter,
its owner and what is allowed::

    fl.Loader: batch_size must be an integer >= 1, got 0

``bool`` is an ``int`` in Python, but ``batch_size=True`` is a mistake, so the
integer and number checks refuse it; numpy scalars (``np.int64(4)``, what
arithmetic on arrays returns) are accepted.  The predicates :func:`is_integer`
and :func:`is_number` serve callers that raise their own error type (the
converter spec files name the file and line).
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np

from fastload.errors import ConfigError


def is_integer(value: object) -> bool:
    """True for ``int`` and numpy integers (anything with ``__index__``), never for bools."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def is_number(value: object) -> bool:
    """True for real numbers (Python or numpy ints and floats), never for bools."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, float, np.integer, np.floating))


def problem(
    owner: str | None, name: str, allowed: str, value: object, hint: str = ""
) -> ConfigError:
    """The error for ``value`` of parameter ``name``: ``"{owner}: {name} must be {allowed}, got …"``."""
    prefix = f"{owner}: " if owner else ""
    return ConfigError(f"{prefix}{name} must be {allowed}, got {value!r}{hint}")


def _bounds(minimum: float | None, maximum: float | None, above: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum} and {maximum}"
    if above is not None:
        return f" > {above}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def integer(
    value: object,
    *,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    owner: str | None = None,
) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]``, else :class:`ConfigError`."""
    allowed = "an integer" + _bounds(minimum, maximum, None)
    if not is_integer(value):
        raise problem(owner, name, allowed, value)
    as_int = operator.index(value)  # type: ignore[arg-type]
    if (minimum is not None and as_int < minimum) or (maximum is not None and as_int > maximum):
        raise problem(owner, name, allowed, as_int)
    return int(as_int)


def optional_integer(
    value: object, *, name: str, minimum: int | None = None, owner: str | None = None
) -> int | None:
    """``None``, or ``value`` checked as by :func:`integer`."""
    if value is None:
        return None
    try:
        return integer(value, name=name, minimum=minimum, owner=owner)
    except ConfigError:
        allowed = "an integer" + _bounds(minimum, None, None) + " or None"
        raise problem(owner, name, allowed, value) from None


def number(
    value: object,
    *,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    owner: str | None = None,
    hint: str = "",
) -> float:
    """``value`` as a finite ``float`` within the bounds (``above``: strictly greater)."""
    allowed = "a finite number" + _bounds(minimum, maximum, above)
    if not is_number(value):
        raise problem(owner, name, allowed, value, hint)
    as_float = float(value)  # type: ignore[arg-type]
    if (
        not math.isfinite(as_float)
        or (minimum is not None and as_float < minimum)
        or (maximum is not None and as_float > maximum)
        or (above is not None and as_float <= above)
    ):
        raise problem(owner, name, allowed, value, hint)
    return as_float


def flag(value: object, *, name: str, owner: str | None = None) -> bool:
    """``value`` as a ``bool``; only ``True``/``False`` (or numpy bools) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise problem(owner, name, "True or False", value)
    return bool(value)


def choice(value: Any, options: Collection[Any], *, name: str, owner: str | None = None) -> Any:
    """``value`` if it is one of ``options``, else :class:`ConfigError` listing them."""
    try:
        known = value in options
    except TypeError:  # an unhashable value asked of a set
        known = False
    if not known:
        raise problem(owner, name, f"one of {tuple(options)}", value)
    return value


@contextlib.contextmanager
def on_behalf_of(owner: str) -> Iterator[None]:
    """Prefix ``owner`` to the :class:`ConfigError` of a check done by an internal object.

    For internal configs (``OrderConfig``) built from a public signature whose
    parameter names they share: the message then names the public owner.
    """
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"{owner}: {exc}") from None
