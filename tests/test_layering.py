"""Imports point one way: a test that walks every import in the library.

Rules (docs/architecture.md, "Layers"):
- no module of ``fastload`` imports the top-level ``converters`` or ``bench`` checkout packages;
- no module imports a private module of *another* package: ``fastload.store._chunks`` is
  importable from inside ``fastload.store`` only; other packages use what ``fastload.store``
  exports (a private child of one's own package, e.g. ``fastload._engine`` from ``fastload``,
  is fine);
- the core layers never import the layers above them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "fastload"

# lower layers must not import the higher ones (module prefixes)
FORBIDDEN_UPWARD = {
    # the Source contract sits below everything that reads or implements it
    "fastload._source": (
        "fastload.store",
        "fastload._memory",
        "fastload._order",
        "fastload._engine",
        "fastload.loader",
        "fastload.mix",
        "fastload.adapters",
        "fastload.datasets",
        "fastload.testing",
    ),
    "fastload._memory": (
        "fastload.loader",
        "fastload._engine",
        "fastload.adapters",
        "fastload.mix",
        "fastload.datasets",
        "fastload.testing",
    ),
    "fastload.store": (
        "fastload.loader",
        "fastload._engine",
        "fastload._memory",
        "fastload.adapters",
        "fastload.mix",
        "fastload.datasets",
        "fastload.converters",
        "fastload.bench",
        "fastload.testing",
    ),
    "fastload._order": (
        "fastload.loader",
        "fastload._engine",
        "fastload.adapters",
        "fastload.store",
        "fastload.datasets",
    ),
    # the engine reads sources through the Source contract only (it imports the store
    # just to preload decoding in the zygote), never the in-memory split
    "fastload._engine": (
        "fastload._memory",
        "fastload.loader",
        "fastload.adapters",
        "fastload.mix",
        "fastload.datasets",
        "fastload.converters",
        "fastload.bench",
    ),
    "fastload.loader": (
        "fastload.adapters",
        "fastload.datasets",
        "fastload.converters",
        "fastload.bench",
    ),
    "fastload.mix": ("fastload.loader", "fastload.adapters", "fastload._engine", "fastload.store"),
    "fastload.transforms": ("fastload.loader", "fastload.adapters", "fastload._engine"),
}


# the one sanctioned upward reference: ``loader.torch()`` / ``.tf()`` / ``.jax()`` are conveniences
# that import their adapter inside the method, at call time (never when fastload is imported)
LAZY_CONVENIENCES = {
    ("fastload.loader", "fastload.adapters.torch"),
    ("fastload.loader", "fastload.adapters.tf"),
    ("fastload.loader", "fastload.adapters.jax"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(module, path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from pkg import _private_module` imports a module too
            found += [
                (node.lineno, f"{target}.{alias.name}")
                for alias in node.names
                if _is_module(f"{target}.{alias.name}")
            ]
    return found


def _is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "fastload":
        return False
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _private_of_other_package(importer_package: str, target: str) -> bool:
    """True when ``target`` reaches below a private component that is not the importer's own."""
    own = importer_package.split(".")
    parts = target.split(".")
    common = 0
    while common < min(len(own), len(parts)) and own[common] == parts[common]:
        common += 1
    # one private child of a shared ancestor is allowed (fastload -> fastload._engine);
    # anything private below that belongs to another package
    rest = parts[common + 1 :]
    return any(p.startswith("_") and not p.startswith("__") for p in rest)


MODULES = sorted(LIBRARY.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    module = _module_name(path)
    package = _package_of(module, path)
    problems = []
    for lineno, target in _imports(path, module):
        top = target.split(".")[0]
        if top in ("converters", "bench"):
            problems.append(f"line {lineno}: imports the checkout package {target!r}")
        if top == "fastload" and _private_of_other_package(package, target):
            problems.append(f"line {lineno}: imports {target!r}, private to another package")
        for layer, forbidden in FORBIDDEN_UPWARD.items():
            if module == layer or module.startswith(layer + "."):
                problems += [
                    f"line {lineno}: layer {layer} imports the higher layer {target!r}"
                    for prefix in forbidden
                    if (target == prefix or target.startswith(prefix + "."))
                    and (module, target) not in LAZY_CONVENIENCES
                ]
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_walker_sees_violations(tmp_path: Path) -> None:
    # the rule itself, on known cases (so the test above cannot pass vacuously)
    assert _private_of_other_package("fastload._engine", "fastload.store._chunks")
    assert _private_of_other_package("fastload", "fastload._engine._pool")
    assert not _private_of_other_package("fastload", "fastload._engine")
    assert not _private_of_other_package("fastload.store", "fastload.store._chunks")
    assert not _private_of_other_package("fastload.adapters", "fastload.adapters._select")
    assert len(MODULES) > 30
