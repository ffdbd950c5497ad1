# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
What a pre-trained model learned, in one block: the zero-shot, retrieval and pointing-game results that
`zero_shot.py`, `retrieval.py` and `visualize_grounding.py` wrote into one folder, each beside the score a model that
learned nothing gets (AUROC 0.5, the chance Recall@K of a random ranking, the random-point and fixed-point baselines);
the pointing game also beside what a map scores without looking at the image (the text prior, the same words on
another study's image), its ceiling (the oracle at the model's patch grid), on the small or ambiguous findings apart,
and with BioViL's contrast-to-noise ratio beside the same two controls.
"""

import json
import os
from pathlib import Path

from .results import format_value


RESULT_FILES = {"zero_shot": "zero_shot_results.json", "retrieval": "retrieval_results.json",
                "grounding": "grounding_results.json"}  # fmt: skip


def read_evaluation_results(evaluation_dir: str | os.PathLike) -> dict[str, dict]:
    """The three results files of `evaluation_dir`; a `ValueError` naming the missing ones and the script to run."""
    directory = Path(evaluation_dir)
    missing = [name for name in RESULT_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise ValueError(
            f"`evaluation_dir` {str(directory)!r} lacks {missing}: run zero_shot.py, retrieval.py and "
            "visualize_grounding.py with --output_dir there first."
        )
    return {task: json.loads((directory / name).read_text()) for task, name in RESULT_FILES.items()}


def learned_metrics_rows(
    results: dict[str, dict], recall_keys: tuple[str, ...] = ("R@1", "R@10")
) -> list[tuple[str, float | None, float | None, str]]:
    """`(metric, model's value, reference, what the reference is)` rows from `read_evaluation_results`' dict."""
    zero_shot, retrieval, grounding = results["zero_shot"], results["retrieval"], results["grounding"]
    rows = [("zero-shot macro AUROC", zero_shot["macro_auroc"], 0.5, "chance")]
    views = (("paired", "paired"), ("semantic", "same-label"))
    for view, name in views:
        if view not in retrieval:
            continue
        for k in recall_keys:
            if k in retrieval[view]["image_to_report"]:
                value, chance = retrieval[view]["image_to_report"][k], retrieval[view]["chance"][k]
                rows.append((f"{name} image→report {k}", value, chance, "chance"))
    overall = grounding["overall"]
    rows.append(("pointing game", overall["accuracy"], overall["random_baseline"], "random point"))
    rows.append(("pointing game", overall["accuracy"], overall.get("fixed_point_baseline"), "fixed point"))
    rows.append(("pointing game", overall["accuracy"], overall.get("text_prior_baseline"), "text prior"))
    rows.append(("pointing game", overall["accuracy"], overall.get("shuffled_image_accuracy"), "shuffled image"))
    rows.append(("pointing game", overall["accuracy"], overall.get("oracle"), "oracle at the model's grid"))
    small = grounding.get("per_group", {}).get("small_or_ambiguous")
    if small:
        name = f"pointing game, small/ambiguous ({small['num_findings']})"
        rows.append((name, small["accuracy"], small.get("text_prior_baseline"), "text prior"))
        rows.append((name, small["accuracy"], small.get("shuffled_image_accuracy"), "shuffled image"))
    if "cnr" in overall:
        rows.append(("pointing CNR", overall["cnr"], overall.get("text_prior_cnr"), "text prior"))
        rows.append(("pointing CNR", overall["cnr"], overall.get("shuffled_image_cnr"), "shuffled image"))
    return rows


def learned_metrics_block(results: dict[str, dict]) -> str:
    """A plain-text table of `learned_metrics_rows`, headed by the split and its size."""
    retrieval = results["retrieval"]
    rows = learned_metrics_rows(results)
    width = max(len(row[0]) for row in rows)
    lines = [
        f"What the model learned ({retrieval['dataset']} / {retrieval['split']}, {retrieval['num_pairs']} studies; "
        f"pointing game over {results['grounding']['overall']['num_findings']} findings):",
        f"  {'metric'.ljust(width)}  {'model':>7}  {'reference':>9}",
    ]
    for metric, value, reference, reference_name in rows:
        lines.append(
            f"  {metric.ljust(width)}  {format_value(value, 3):>7}  {format_value(reference, 3):>9}  ({reference_name})"
        )
    return "\n".join(lines)
