# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The one results writer of every task: `{task}_results.json` plus a markdown table, and the command behind them."""

import json
import logging
import math
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)


def format_value(value: Any, digits: int = 4) -> str:
    """Markdown cell text: floats rounded, `None` as an em dash (a metric that was not computed, never NaN)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(format_value(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(output_dir: str | os.PathLike, task: str, results: dict, markdown: str) -> tuple[Path, Path]:
    """Writes `{task}_results.json` and `{task}_results.md` into `output_dir`; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = output_dir / f"{task}_results.json", output_dir / f"{task}_results.md"
    json_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    markdown_path.write_text(markdown)
    logger.info("Wrote %s and %s", json_path, markdown_path)
    return json_path, markdown_path


def command_line(script: str, cli_args: list[str] | None) -> str:
    """The command that reproduces this run (`cli_args`, or the process's own arguments)."""
    return shlex.join(["python", f"examples/{script}", *(sys.argv[1:] if cli_args is None else cli_args)])


def _is_json(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def arguments_dict(*dataclasses) -> dict:
    """The fields of the arguments dataclasses that JSON can hold, merged (a later dataclass wins)."""
    merged = {}
    for arguments in dataclasses:
        merged.update({key: value for key, value in asdict(arguments).items() if _is_json(value)})
    return merged


def source_provenance(root: str | os.PathLike, allow_dirty: bool = False) -> dict:
    """
    The commit a study or benchmark record is made from: `{"git_commit", "git_dirty_files"}` of the checkout at
    `root`. A tree with uncommitted changes is refused (a `RuntimeError` listing them) unless `allow_dirty`, since
    the record would name a commit that does not hold the code that made it; with `allow_dirty` the changed files
    are recorded. Outside a git checkout both are `None`.
    """
    import subprocess

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain").splitlines()
    except (OSError, subprocess.CalledProcessError):
        logger.warning("%s is not a git checkout: the record names no commit.", root)
        return {"git_commit": None, "git_dirty_files": None}
    if dirty and not allow_dirty:
        listed = "; ".join(line.strip() for line in dirty[:5]) + ("; ..." if len(dirty) > 5 else "")
        raise RuntimeError(
            f"The checkout {root} has {len(dirty)} uncommitted change(s) ({listed}): a record made now would name "
            f"commit {commit[:12]} without the code that made it. Commit or stash them, or pass --allow_dirty (the "
            "record then lists the changed files)."
        )
    return {"git_commit": commit, "git_dirty_files": dirty}
