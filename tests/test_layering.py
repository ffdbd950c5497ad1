# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The layering of the example package, read from the source (ast), not from what happens to be importable: scripts →
`sista_examples` → the three library modules, and inside `sista_examples` only the directions of `ALLOWED`.
"""

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "sista_examples"
LIBRARY = ("configuration_sista", "modeling_sista", "processing_sista")
SCRIPTS = tuple(path.stem for path in (ROOT / "examples").glob("*.py"))

# part of sista_examples -> the parts it may import (besides itself and the library modules). Base parts first:
# logging and file checks (utils) import no other part, data and checkpoint reading only utils; evaluation reads them; pre-training may use the
# evaluation's metrics; fine-tuning builds on both; the hub release reads checkpoints and dataset metadata only.
BASE = {"data", "checkpoints", "utils"}
ALLOWED = {
    "data": {"utils"},
    "checkpoints": {"utils"},
    "utils": set(),
    "evaluation": BASE,
    "training": BASE | {"evaluation"},
    "finetuning": BASE | {"evaluation", "training"},
    "hub": BASE,
}


def part_of(path: Path) -> str:
    """The part of sista_examples a file belongs to: `training` for training/trainer.py, `utils` for utils.py."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """
    `(line, absolute module name)` of every import in `path` (or in `source`, read as if it were `path`), relative
    imports resolved against its package.
    """
    package = ["sista_examples", *path.relative_to(PACKAGE).parent.parts] if PACKAGE in path.parents else []
    modules = []
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level and not package:  # the library's Hub-package form
            modules.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if not base:
                raise ValueError(f"{path}:{node.lineno}: a relative import above sista_examples")
            if node.module:
                modules.append((node.lineno, ".".join([*base, node.module])))
            else:  # `from . import finetuning` imports modules
                modules += [(node.lineno, ".".join([*base, alias.name])) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append((node.lineno, node.module))
    return modules


def package_files() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def test_every_part_has_a_stated_direction():
    parts = {part_of(path) for path in package_files()} - {"__init__"}
    assert parts == set(ALLOWED), f"parts of sista_examples without a stated layer: {parts ^ set(ALLOWED)}"


@pytest.mark.parametrize("path", package_files(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_package_imports_point_down(path):
    part = part_of(path)
    allowed = ALLOWED.get(part, set()) | {part}
    crossings = []
    for line, module in imported_modules(path):
        top, *rest = module.split(".")
        if top in SCRIPTS:
            crossings.append(f"line {line}: the script {module!r}")
        elif top == "sista_examples" and rest and rest[0] not in allowed:
            crossings.append(f"line {line}: {module!r} (a {part!r} module may import {sorted(allowed)})")
    assert not crossings, f"{path.relative_to(ROOT)} crosses the layering: " + "; ".join(crossings)


@pytest.mark.parametrize("name", LIBRARY)
def test_library_modules_import_no_example_code(name):
    modules = [module for _, module in imported_modules(ROOT / f"{name}.py")]
    assert not [module for module in modules if module.split(".")[0] in ("sista_examples", *SCRIPTS)], modules


def test_relative_imports_resolve_to_the_part_they_name():
    """The checker itself, against hand-resolved names: the crossing the fine-tuning helpers once made is caught."""
    path = PACKAGE / "evaluation" / "probe.py"
    source = "from ..training.augmentation import XRayAugmentation\nfrom .results import table\nfrom .. import utils\n"
    assert [module for _, module in imported_modules(path, source)] == [
        "sista_examples.training.augmentation", "sista_examples.evaluation.results", "sista_examples.utils"
    ]
    assert "training" not in ALLOWED["evaluation"]
