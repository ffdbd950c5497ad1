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
