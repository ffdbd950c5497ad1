#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""False negatives that SIA flags on SynthCXR, at the default threshold of examples/pretrain.py.

Reads the `report_embeds` column the pre-training runs used (the study's shared dataset) and the encoder and threshold
stored with it in its `sista_dataset.json`, then:

1. **in-batch view**: draws shuffled batches of `--batch_size` studies (as the Trainer's random sampler does) and
   counts, among the off-diagonal pairs `(i, j)` of each batch, the fraction flagged (`<e_i, e_j> >= threshold`),
   the fraction of rows with at least one flag, and the precision / recall of the flags against "same label vector";
2. **all-pairs curve**: precision, recall and flagged fraction over thresholds 0..0.99, from
   `report_embeddings.similarity_precision_recall` (and `suggest_threshold` at precision >= 0.95), which justifies
   (or not) the default.

    python research/fn_analysis.py --dataset_dir outputs/reproduce/synthcxr --batch_size 32
Writes outputs/fn_analysis/fn_analysis.json and outputs/fn_analysis/fn_analysis.png (`--output_json`, `--output_png`).
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger("fn_analysis")


def report_embeddings_record(dataset_dir: str, threshold: float | None) -> tuple[str, float]:
    """
    `(encoder, threshold)`: those stored with the dataset's report embeddings, which examples/pretrain.py uses on
    `dataset_dir` (read, not copied), the threshold replaced by `threshold` when given. Without a stored record a
    threshold must be given, as pre-training would stop too.
    """
    from sista_examples.data.metadata import METADATA_FILE, read_dataset_metadata

    stored = (read_dataset_metadata(dataset_dir) or {}).get("report_embeddings") or {}
    if threshold is None and not stored:
        raise ValueError(
            f"{dataset_dir} records no encoder and threshold for its report_embeds ({METADATA_FILE}): pass "
            f"--threshold, or embed it with `python examples/report_embeddings.py --dataset_dir {dataset_dir}`."
        )
    return stored.get("encoder", "unrecorded"), stored["sia_threshold"] if threshold is None else threshold


@dataclass
class FalseNegativeArguments:
    dataset_dir: str = field(
        default="outputs/reproduce/synthcxr", metadata={"help": "Saved DatasetDict with report_embeds and labels."}
    )
    split: str = field(default="pretrain", metadata={"help": "Split pre-training used."})
    batch_size: int = field(default=32, metadata={"help": "Per-step batch size (the study's)."})
    num_batches: int = field(default=500, metadata={"help": "Random batches drawn for the in-batch view."})
    threshold: float | None = field(
        default=None, metadata={"help": "Default: the threshold stored with the dataset's report embeddings."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the batch draws."})
    output_json: str = field(default="outputs/fn_analysis/fn_analysis.json", metadata={"help": "Results JSON."})
    output_png: str = field(default="outputs/fn_analysis/fn_analysis.png", metadata={"help": "Curve plot."})


def label_ids_of(labels: np.ndarray) -> np.ndarray:
    """One integer per distinct label vector."""
    _, ids = np.unique(np.asarray(labels), axis=0, return_inverse=True)
    return ids.reshape(-1)


def in_batch_flags(
    embeddings: np.ndarray, label_ids: np.ndarray, threshold: float, batch_size: int, num_batches: int, seed: int = 0
) -> dict:
    """Statistics of SIA's false-negative mask over random batches (off-diagonal pairs, both directions)."""
    if batch_size < 2 or batch_size > len(embeddings):
        raise ValueError(f"`batch_size` must lie in [2, {len(embeddings)}], got {batch_size}.")
    rng = np.random.default_rng(seed)
    off_diagonal = ~np.eye(batch_size, dtype=bool)
    flagged_fraction, rows_with_flag, true_pos, flagged_total, same_total = [], [], 0, 0, 0
    for _ in range(num_batches):
        index = rng.choice(len(embeddings), size=batch_size, replace=False)
        similarity = embeddings[index] @ embeddings[index].T
        flagged = (similarity >= threshold) & off_diagonal
        same = (label_ids[index][:, None] == label_ids[index][None, :]) & off_diagonal
        flagged_fraction.append(flagged.sum() / off_diagonal.sum())
        rows_with_flag.append(flagged.any(axis=1).mean())
        true_pos += int((flagged & same).sum())
        flagged_total += int(flagged.sum())
        same_total += int(same.sum())
    return {
        "batch_size": batch_size,
        "num_batches": num_batches,
        "threshold": threshold,
        "fraction_of_pairs_flagged_mean": float(np.mean(flagged_fraction)),
        "fraction_of_pairs_flagged_std": float(np.std(flagged_fraction)),
        "fraction_of_rows_with_a_flag": float(np.mean(rows_with_flag)),
        "flags_per_row_mean": float(np.mean(flagged_fraction) * (batch_size - 1)),
        "fraction_of_pairs_same_label": same_total / (num_batches * off_diagonal.sum()),
        "precision": true_pos / flagged_total if flagged_total else None,
        "recall": true_pos / same_total if same_total else None,
    }


def plot_curve(curve: dict, threshold: float, suggested: float | None, output_png: str, encoder: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    axis.plot(curve["thresholds"], curve["precision"], label="precision (same label vector)")
    axis.plot(curve["thresholds"], curve["recall"], label="recall")
    axis.plot(curve["thresholds"], curve["fraction_of_pairs_flagged"], label="fraction of pairs flagged")
    axis.axvline(threshold, color="k", linestyle="--", label=f"pretrain.py default {threshold:g}")
    if suggested is not None and suggested != threshold:
        axis.axvline(suggested, color="gray", linestyle=":", label=f"suggested (precision ≥ 0.95) {suggested:g}")
    axis.set_xlabel("SIA threshold on report similarity (cosine)")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left")
    axis.set_title(f"SynthCXR pre-training reports, report_embeds of the {encoder} encoder")
    figure.tight_layout()
    Path(output_png).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_png, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    from datasets import load_from_disk
    from transformers import HfArgumentParser

    from sista_examples.data.report_embeddings import similarity_precision_recall, suggest_threshold

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    (args,) = HfArgumentParser(FalseNegativeArguments).parse_args_into_dataclasses(args=argv)
    encoder, threshold = report_embeddings_record(args.dataset_dir, args.threshold)
    dataset = load_from_disk(args.dataset_dir)[args.split]
    missing = {"report_embeds", "labels"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"{args.dataset_dir}[{args.split}] needs columns {sorted(missing)}; has {dataset.column_names}.")
    embeddings = np.asarray(dataset["report_embeds"], dtype=np.float32)
    labels = np.asarray(dataset["labels"])
    label_ids = label_ids_of(labels)

    batch_view = in_batch_flags(embeddings, label_ids, threshold, args.batch_size, args.num_batches, args.seed)
    thresholds = np.round(np.arange(0.0, 0.995, 0.01), 2)
    curve = similarity_precision_recall(embeddings, labels, thresholds)
    suggested = suggest_threshold(curve, 0.95)
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(curve["precision"], curve["recall"])]
    at_default = int(np.argmin(np.abs(thresholds - threshold)))
    results = {
        "dataset_dir": args.dataset_dir,
        "split": args.split,
        "num_studies": len(dataset),
        "num_distinct_label_vectors": int(label_ids.max() + 1),
        "num_distinct_reports": len(set(dataset["report"])),
        "report_encoder": encoder,
        "sia_threshold_default": threshold,
        "in_batch": batch_view,
        "all_pairs_at_default": {
            "precision": curve["precision"][at_default],
            "recall": curve["recall"][at_default],
            "f1": f1[at_default],
            "fraction_of_pairs_flagged": curve["fraction_of_pairs_flagged"][at_default],
        },
        "suggested_threshold_precision_0.95": suggested,
        "best_f1_threshold": curve["thresholds"][int(np.argmax(f1))],
        "curve": {key: curve[key] for key in ("thresholds", "precision", "recall", "fraction_of_pairs_flagged")}
        | {"f1": f1, "num_pairs": curve["num_pairs"], "num_same_label_pairs": curve["num_same_label_pairs"]},
    }
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n")
    plot_curve(curve, threshold, suggested, args.output_png, encoder)
    logger.info("In-batch (B=%d) at %.2f: %s", args.batch_size, threshold, json.dumps(batch_view))
    logger.info("All pairs at default: %s; suggested %s; best F1 at %s", results["all_pairs_at_default"], suggested,
                results["best_f1_threshold"])
    return results


if __name__ == "__main__":
    main()
