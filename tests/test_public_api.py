"""The public surface: each public module's ``__all__`` is exactly what docs/api.md documents.

docs/api.md has one section per public module (``## `fastload.store` ``) holding a
table whose rows start with the exported name (``| `open_store` | ... |``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import fastload as fl
import fastload.errors

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
#: public packages installed from outside fastload/ (setuptools package-dir)
EXTRA_PUBLIC = ("fastload.converters",)
#: modules that import an optional framework; skipped where it is not installed
FRAMEWORK_OF = {
    "fastload.adapters.torch": "torch",
    "fastload.adapters.tf": "tensorflow",
    "fastload.adapters.keras": "keras",
    "fastload.adapters.jax": "jax",
    "fastload.adapters.lightning": "lightning",
}


def documented() -> dict[str, list[str]]:
    """``{module: [names in table order]}`` parsed from docs/api.md."""
    tables: dict[str, list[str]] = {}
    module = None
    for line in API_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `([\w.]+)`", line.strip())
        if heading:
            module = heading.group(1)
            assert module not in tables, f"docs/api.md documents {module} twice"
            tables[module] = []
            continue
        row = re.match(r"\| `([^`]+)` \|", line)
        if row and module is not None:
            tables[module].append(row.group(1))
    return tables


def public_modules_in_tree() -> set[str]:
    """Every module of fastload/ whose dotted name has no part starting with ``_``."""
    found = set()
    for path in (ROOT / "fastload").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not any(p.startswith("_") for p in parts):
            found.add(".".join(parts))
    return found


def import_public(name: str):
    if name in FRAMEWORK_OF:
        pytest.importorskip(FRAMEWORK_OF[name])
    return importlib.import_module(name)


def test_docs_cover_exactly_the_public_modules():
    """A new public module needs a section in docs/api.md; a section needs a module."""
    assert set(documented()) == public_modules_in_tree() | set(EXTRA_PUBLIC)


@pytest.mark.parametrize("name", sorted(public_modules_in_tree() | set(EXTRA_PUBLIC)))
def test_all_matches_the_api_reference(name):
    module = import_public(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    names = documented()[name]
    assert len(names) == len(set(names)), f"docs/api.md lists a name of {name} twice"
    assert set(exported) == set(names), (
        f"{name}: exported but undocumented {sorted(set(exported) - set(names))}, "
        f"documented but not exported {sorted(set(names) - set(exported))}"
    )
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"


def test_errors_exports_only_exception_classes():
    """Helpers (closest, missing_dependency, imports) must not be importable from fastload.errors."""
    public = [n for n in vars(fastload.errors) if not n.startswith("_")]
    assert public, "fastload.errors exports nothing"
    for n in public:
        obj = getattr(fastload.errors, n)
        assert inspect.isclass(obj), f"fastload.errors.{n} is not a class"
        assert issubclass(obj, fastload.errors.FastloadError), f"fastload.errors.{n}"
    assert set(public) == set(fastload.errors.__all__)
    for helper in ("closest", "missing_dependency"):
        with pytest.raises(ImportError):
            exec(f"from fastload.errors import {helper}", {})


def test_dir_of_fastload_shows_only_the_api():
    """dir(fl) lists the API, not this package's imports or internal submodules."""
    for n in fl.__all__:  # lazy names: touching them attaches internal submodules too
        getattr(fl, n)
    stray = [n for n in dir(fl) if not n.startswith("_") and n not in fl.__all__]
    assert stray == []
    assert set(fl.__all__) <= set(dir(fl))
