# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Markdown tables of the testbed runs (`results.json`) and probes (`probe.json`) under an outputs folder: the STA map's
pointing game beside its shuffled-image control, the text prior and the other references, with the CNRs, overall, per
finding group and per finding ("-" where a run predates a column).

    python research/grounding/tables.py outputs/grounding
"""

import json
import sys
from pathlib import Path


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
    main(sys.argv[1])
