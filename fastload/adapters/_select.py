"""Which batch fields form a framework's element: ``x``, ``y`` and ``sample_weight``.

Framework-free, shared by the tf.data and Keras adapters.  A *template* is a
field name (one tensor), a tuple/list of templates (a tuple) or a dict of
templates (a dict, e.g. Keras inputs by name), nested as deep as wanted.
Filling a template replaces every field name by that field's value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastload._messages import closest
from fastload._spec import FieldSpec
from fastload.errors import ConfigError, FieldNotFoundError

Template = Any  # str | tuple[Template, ...] | dict[str, Template]


def _normalise(template: Any, role: str) -> Template:
    """Lists become tuples; anything that is not a str, sequence or mapping is refused."""
    if isinstance(template, str):
        return template
    if isinstance(template, Mapping):
        if not template:
            raise ConfigError(f"{role}= is an empty mapping; name at least one field")
        return {str(k): _normalise(v, role) for k, v in template.items()}
    if isinstance(template, (tuple, list)):
        if not template:
            raise ConfigError(f"{role}= is empty; name at least one field")
        return tuple(_normalise(v, role) for v in template)
    raise ConfigError(
        f"{role}= must be a field name, a tuple/list of them or a dict of them, got {template!r}"
    )


def leaves(template: Template) -> list[str]:
    """Field names of a template, depth first, in order (repeats kept)."""
    if isinstance(template, str):
        return [template]
    values = template.values() if isinstance(template, dict) else template
    return [name for value in values for name in leaves(value)]


def fill(template: Template, value_of: Callable[[str], Any]) -> Any:
    """The template with every field name replaced by ``value_of(name)``."""
    if isinstance(template, str):
        return value_of(template)
    if isinstance(template, dict):
        return {k: fill(v, value_of) for k, v in template.items()}
    return tuple(fill(v, value_of) for v in template)


def _hint(name: str, known: list[str]) -> str:
    """``"; closest: ..."``, trying case-insensitive matches first (``'Y'`` -> ``'y'``)."""
    same = [k for k in known if k.lower() == name.lower()]
    if same:
        return "; closest: " + ", ".join(repr(k) for k in same)
    return closest(name, known)


@dataclass(frozen=True)
class Selection:
    """The element template and the fields it reads.

    ``template`` is the whole element: the dict of every field when neither
    ``x`` nor ``y`` was given, ``x`` alone when only ``x`` was given, else
    ``(x, y)`` or ``(x, y, sample_weight)`` — the structures ``model.fit``
    accepts.
    """

    template: Template
    fields: tuple[str, ...]

    def build(self, value_of: Callable[[str], Any]) -> Any:
        """The element with each field's value from ``value_of``."""
        return fill(self.template, value_of)


def select(
    specs: Mapping[str, FieldSpec],
    x: Any = None,
    y: Any = None,
    sample_weight: Any = None,
    *,
    where: str = "the loader",
) -> Selection:
    """Validate ``x``/``y``/``sample_weight`` against a loader's output fields.

    Parameters
    ----------
    specs : Mapping[str, FieldSpec]
        ``loader.output_specs``.
    x, y, sample_weight : template or None
        Field name, tuple/list or dict of field names (nested as wanted).
    where : str
        What the fields belong to, for error messages.

    Returns
    -------
    Selection

    Raises
    ------
    ConfigError
        ``y`` without ``x``, ``sample_weight`` without ``y``, or a malformed template.
    FieldNotFoundError
        A named field is not produced by the loader.
    """
    if x is None and (y is not None or sample_weight is not None):
        raise ConfigError("y= or sample_weight= given without x=; name the input field(s) with x=")
    if sample_weight is not None and y is None:
        raise ConfigError("sample_weight= given without y=; Keras expects (x, y, sample_weight)")
    if x is None:
        template: Template = {name: name for name in specs}
    else:
        parts = [_normalise(x, "x")]
        if y is not None:
            parts.append(_normalise(y, "y"))
        if sample_weight is not None:
            parts.append(_normalise(sample_weight, "sample_weight"))
        template = parts[0] if len(parts) == 1 else tuple(parts)
    names = leaves(template)
    known = list(specs)
    for name in names:
        if name not in specs:
            raise FieldNotFoundError(
                f"field {name!r} is not among the output fields of {where} {known}{_hint(name, known)}; "
                "name fields as they come out of the loader's transform"
            )
    return Selection(template=template, fields=tuple(dict.fromkeys(names)))
