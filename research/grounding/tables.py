# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Markdown tables of the testbed runs (`results.json`) and probes (`probe.json`) under an outputs folder: the STA map's
pointing game beside its shuffled-image control, the text prior and the other references, with the CNRs, overall, per
finding group and per finding ("-" where a run predates a column).

    python research/grounding/tables.py outputs/grounding
    python research/grounding/tables.py outputs/grounding --by_variant   # runs named <variant>_s<seed>: mean ± std

"""

import json
import re
import sys
from pathlib import Path

import numpy as np


def fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


CONTROL_COLUMNS = (
    ("sta_weights", "pointing (A)"),
    ("sta_weights_shuffled", "A on another image"),
    ("text_prior", "text prior"),
    ("random_point", "random point"),
    ("fixed_point", "fixed point"),
    ("oracle", "oracle"),
    ("sta_weights_cnr", "CNR (A)"),
    ("sta_weights_shuffled_cnr", "CNR (A, another image)"),
    ("text_prior_cnr", "CNR text prior"),
    ("num_findings", "findings"),
)


def control_cells(entry: dict) -> list:
    return [entry.get(key, "-") for key, _ in CONTROL_COLUMNS]


# (label, how a run's results.json gives it)
VARIANT_COLUMNS = (
    ("pointing (A)", lambda r: r["pointing_game"]["overall"]["sta_weights"]),
    ("A on another image", lambda r: r["pointing_game"]["overall"]["sta_weights_shuffled"]),
    ("text prior", lambda r: r["pointing_game"]["overall"]["text_prior"]),
    ("CNR (A)", lambda r: r["pointing_game"]["overall"]["sta_weights_cnr"]),
    ("CNR (A, another image)", lambda r: r["pointing_game"]["overall"]["sta_weights_shuffled_cnr"]),
    ("S centred (evaluation only)", lambda r: r["pointing_game"]["overall"]["similarity_centred"]),
    ("S centred, another image", lambda r: r["pointing_game"]["overall"]["similarity_centred_shuffled"]),
    ("small/ambiguous: A", lambda r: r["pointing_groups"]["small_or_ambiguous"]["sta_weights"]),
    ("small/ambiguous: another image", lambda r: r["pointing_groups"]["small_or_ambiguous"]["sta_weights_shuffled"]),
    ("cardiomegaly+effusion: A", lambda r: r["pointing_groups"]["cardiomegaly_and_effusion"]["sta_weights"]),
    ("consolidation: A", lambda r: r["pointing_game"]["consolidation"]["sta_weights"]),
    ("nodule: A", lambda r: r["pointing_game"]["nodule"]["sta_weights"]),
    ("i2t R@10", lambda r: r["i2t_R@10"]),
    ("mean image cosine", lambda r: r["mean_image_cosine"]),
)
# the references of the pointing game, the same for every run on one test split
REFERENCE_COLUMNS = (
    ("random point", lambda r: r["pointing_game"]["overall"]["random_point"]),
    ("fixed point", lambda r: r["pointing_game"]["overall"]["fixed_point"]),
    ("text prior", lambda r: r["pointing_game"]["overall"]["text_prior"]),
    ("CNR text prior", lambda r: r["pointing_game"]["overall"]["text_prior_cnr"]),
    ("oracle", lambda r: r["pointing_game"]["overall"]["oracle"]),
    ("consolidation: text prior", lambda r: r["pointing_game"]["consolidation"]["text_prior"]),
    ("consolidation: oracle", lambda r: r["pointing_game"]["consolidation"]["oracle"]),
    ("nodule: text prior", lambda r: r["pointing_game"]["nodule"]["text_prior"]),
    ("nodule: oracle", lambda r: r["pointing_game"]["nodule"]["oracle"]),
    ("chance R@10", lambda r: r["chance_R@10"]),
    ("findings", lambda r: r["pointing_game"]["overall"]["num_findings"]),
)


def mean_and_spread(values: list[float]) -> str:
    """`mean ± sample std` over seeds; the mean alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def variant_tables(root: str) -> str:
    """One row per variant (runs `<variant>_s<seed>`): every column's mean ± std over its seeds; the references of
    the first run below (they do not depend on the model)."""
    variants = {}
    for path in sorted(Path(root).glob("*/results.json")):
        match = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        results = json.loads(path.read_text())
        if match and "pointing_groups" in results:
            variants.setdefault(match.group(1), []).append(results)
    rows = []
    for name, runs in variants.items():
        steps = sorted({run["arguments"]["steps"] for run in runs})
        rows.append(
            [name, len(runs), "/".join(map(str, steps)),
             *(mean_and_spread([column(run) for run in runs]) for _, column in VARIANT_COLUMNS)]
        )
    lines = [table(["variant", "seeds", "steps", *(label for label, _ in VARIANT_COLUMNS)], rows)]
    if variants:
        first = next(iter(variants.values()))[0]
        lines += ["", table([label for label, _ in REFERENCE_COLUMNS], [[column(first) for _, column in REFERENCE_COLUMNS]])]
    return "\n".join(lines)


def main(root: str):
    runs = sorted(Path(root).glob("*/results.json"))
    learning, pointing, controls, per_group, per_finding = [], [], [], [], []
    for path in runs:
        results = json.loads(path.read_text())
        name = path.parent.name
        loss = results["final_loss"]
        learning.append(
            [name, results["arguments"]["steps"], loss["loss"], results["i2t_R@1"], results["i2t_R@10"],
             results["chance_R@10"], results["mean_image_cosine"], round(results["train_seconds"])]
        )
        overall = results["pointing_game"]["overall"]
        pointing.append(
            [name, overall["sta_weights"], overall["similarity"], overall.get("similarity_centred", "-"),
             overall.get("sta_weights_receptive_field", "-"),
             overall["random_point"], overall["fixed_point"], overall["oracle"], overall["num_findings"]]
        )
        controls.append([name, *control_cells(overall)])
        for group, entry in results.get("pointing_groups", {}).items():
            per_group.append([name, group.replace("_", " "), *control_cells(entry)])
        for finding, entry in results["pointing_game"].items():
            if finding != "overall":
                per_finding.append([name, finding, *control_cells(entry)])
    print(table(["run", "steps", "final loss", "i2t R@1", "i2t R@10", "chance R@10", "mean image cosine", "train s"],
                learning))
    print()
    print(table(["run", "pointing (A)", "pointing (raw S)", "pointing (S centred)", "pointing (A, receptive-field centres)", "random point",
                 "fixed point", "oracle", "findings"], pointing))
    labels = [label for _, label in CONTROL_COLUMNS]
    print()
    print(table(["run", *labels], controls))
    if per_group:
        print()
        print(table(["run", "finding group", *labels], per_group))
    print()
    print(table(["run", "finding", *labels], per_finding))
    probes = sorted(Path(root).glob("*/probe.json"))
    rows = []
    for path in probes:
        probe = json.loads(path.read_text())
        game, border = probe["pointing_game"], probe["peak_on_border"]
        rows.append(
            [path.parent.name, game["own_hit"], game["other_image_hit"], game["blank_image_hit"], game["prior_hit"],
             probe["own_vs_other_image_map_correlation"], border["own_image"], border["blank_image"],
             border["mask_centre"], probe["position_variance_share"], probe["sta_kept_patch_fraction"]]
        )
    if rows:
        print()
        print(table(["run", "pointing own image", "with another image", "with a blank image", "word prior map",
                     "corr(own, other image)", "peak on border", "blank: peak on border", "mask centre on border",
                     "position share of patch variance", "patches kept by A"], rows))


if __name__ == "__main__":
    if "--by_variant" in sys.argv[2:]:
        print(variant_tables(sys.argv[1]))
    else:
        main(sys.argv[1])
