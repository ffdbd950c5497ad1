# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
What the wording alone scores in the pointing game, with no model: on every finding of a SynthCXR test split that has
a mask, the text prior (the mean training mask of the finding's (finding, side, zone), pooled to the grid), beside
the random point, the fixed point and the oracle, overall, per finding group and per finding, all scored by
`sista_examples.evaluation.grounding` at the grid a model would have.

    python research/grounding/text_prior.py --data_dir data/synthcxr128 --grid 8 --splits pretrain,train
    # without a folder: SynthCXR generated in memory (the same studies as a folder generated with that seed)
    python research/grounding/text_prior.py --image_size 128 --num_prior 2000 --splits pretrain
"""

import argparse
import json

from processing_sista import SistaImageProcessor
from sista_examples.data import synthcxr
from sista_examples.evaluation import grounding


COLUMNS = (
    ("text_prior_baseline", "text prior"),
    ("text_prior_cnr", "CNR text prior"),
    ("random_baseline", "random point"),
    ("fixed_point_baseline", "fixed point"),
    ("oracle", "oracle"),
    ("num_findings", "findings"),
)


def text_prior_records(test, prior_splits, image_processor, grid) -> list[dict]:
    """One record per test finding with a mask, in the model's frame: text prior, oracle and fixed-point hits."""
    prior = grounding.synthcxr_text_prior(prior_splits, image_processor, grid)
    records, masks = [], []
    for example in test:
        for key, mask in grounding.synthcxr_keyed_masks(example):
            mask = grounding.mask_to_model_frame(image_processor, mask)
            record = {"finding": key[0], "hit": False, "mask_fraction": grounding.random_point_baseline(mask),
                      "oracle_hit": grounding.oracle_pointing_hit(mask, grid)}  # fmt: skip
            record.update(grounding.text_prior_scores(prior, key, mask))
            records.append(record)
            masks.append(mask)
    for record, hit in zip(records, grounding.fixed_point_hits([r["finding"] for r in records], masks)):
        record["fixed_point_hit"] = hit
    return records


def markdown(summary: dict) -> str:
    rows = [("**overall**", summary["overall"]),
            *((f"*{name.replace('_', ' ')}*", entry) for name, entry in summary["per_group"].items()),
            *summary["per_finding"].items()]  # fmt: skip
    lines = ["| finding | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, entry in rows:
        cells = [f"{entry[key]:.3f}" if isinstance(entry[key], float) else str(entry[key]) for key, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="A SynthCXR folder (generate_synthcxr.py); generated in memory if absent.")
    parser.add_argument("--splits", default="pretrain,train", help="Comma-separated splits the prior is taken from.")
    parser.add_argument("--image_size", type=int, default=128, help="The model's input size.")
    parser.add_argument("--grid", type=int, default=8, help="The model's patch grid (rows = columns).")
    parser.add_argument("--num_test", type=int, default=500)
    parser.add_argument("--num_prior", type=int, default=None, help="At most this many studies of each prior split.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of a generated SynthCXR.")
    parser.add_argument("--output_json", help="Write the summary here.")
    args = parser.parse_args(argv)
    names = [name for name in args.splits.split(",") if name]
    if args.data_dir:
        from datasets import load_from_disk

        splits = load_from_disk(args.data_dir)
    else:
        sizes = {f"num_{name}": (args.num_prior or 1000) if name in names else 0 for name in synthcxr.SPLITS}
        sizes["num_test"] = args.num_test
        splits = synthcxr.generate_synthcxr(**sizes, image_size=args.image_size, seed=args.seed)
    test = splits["test"].select(range(min(args.num_test, len(splits["test"]))))
    prior_splits, not_used = grounding.text_prior_splits(splits, names, evaluated_split="test")
    if not prior_splits:
        raise ValueError(f"No split to take the text prior from: {not_used}.")
    if args.num_prior:
        prior_splits = {name: split.select(range(min(args.num_prior, len(split))))
                        for name, split in prior_splits.items()}  # fmt: skip
    image_processor = SistaImageProcessor(size={"height": args.image_size, "width": args.image_size}, num_channels=3)
    grid = (args.grid, args.grid)
    records = text_prior_records(test, list(prior_splits.values()), image_processor, grid)
    summary = grounding.pointing_game_summary(records)
    summary["prior_splits"] = {name: len(split) for name, split in prior_splits.items()}
    print(f"Text prior from {summary['prior_splits']} at the {args.grid}×{args.grid} grid, {len(test)} test studies:")
    print(markdown(summary))
    if args.output_json:
        with open(args.output_json, "w") as file:
            json.dump(summary, file, indent=1)
    return summary


if __name__ == "__main__":
    main()
