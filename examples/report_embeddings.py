#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Add report-similarity embeddings (the `report_embeds` column SIA reads) to a saved dataset and store their encoder
and SIA threshold in its `sista_dataset.json`, or measure on the dataset how well encoders find reports with the same
label vector and store the measurement (and, if asked, a new threshold) with the embeddings.

    python examples/report_embeddings.py --dataset_dir data/mimic_cxr                  # encoder auto: labels here
    python examples/report_embeddings.py --dataset_dir data/reports --encoder labeler --output_dir data/reports_sia
    python examples/report_embeddings.py --dataset_dir data/mimic_cxr --encoder labeler --num_proc 8  # 8 processes
    python examples/report_embeddings.py analyze --dataset_dir data/mimic_cxr --split train
    python examples/report_embeddings.py analyze --dataset_dir data/mimic_cxr --split train --sia_threshold suggested

`pretrain.py` uses the stored encoder and threshold unless given `--report_encoder` / `--sia_threshold`. The encoders,
their default thresholds and the empty-report rule are described in `sista_examples.data.report_embeddings`.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from datasets import DatasetDict, load_from_disk
from transformers import HfArgumentParser

from sista_examples.data.metadata import read_dataset_metadata, save_dataset, update_dataset_metadata
from sista_examples.data.report_embeddings import (
    AUTO_ENCODER,
    LABELS_COLUMN,
    analyze_report_similarity,
    check_sia_threshold,
    drop_column,
    embed_dataset,
    same_label_reference,
    similarity_precision_recall,
)
from sista_examples.data.report_labeler import OBSERVATIONS, label_reports
from sista_examples.data.synthcxr import generate_synthcxr
from sista_examples.utils import check_output_dir_writable, setup_logging


logger = logging.getLogger(__name__)
METADATA_KEY = "report_embeddings"
ANALYSIS_KEY = "report_similarity_analysis"


@dataclass
class EmbedArguments:
    """``python examples/report_embeddings.py --dataset_dir DIR [--output_dir OUT] ...``"""

    dataset_dir: str = field(metadata={"help": "A dataset saved with save_to_disk (Dataset or DatasetDict)."})
    output_dir: Optional[str] = field(
        default=None, metadata={"help": "Where to write (with a copy of the files beside the dataset); default: "
                                        "rewrite dataset_dir in place."}
    )
    encoder: str = field(
        default=AUTO_ENCODER,
        metadata={"help": "auto (labels when every split has a `labels` column, else labeler), labels, labeler, "
                          "tfidf, minilm, or a checkpoint directory / Hub name."},
    )
    sia_threshold: Optional[float] = field(
        default=None, metadata={"help": "SIA threshold stored with the embeddings; default: the encoder's calibrated "
                                        "one (0.99 labels/labeler, 0.44 tfidf, 0.92 minilm)."}
    )
    pooling: str = field(default="mean", metadata={"help": "'mean' or 'cls' (models only)."})
    batch_size: int = field(default=64)
    text_column: str = field(default="report")
    max_length: int = field(default=128, metadata={"help": "Token truncation length (models only)."})
    dim: Optional[int] = field(default=None, metadata={"help": "TF-IDF projection size (default 256)."})
    seed: int = field(default=0, metadata={"help": "TF-IDF projection seed."})
    output_column: str = field(default="report_embeds")
    num_proc: Optional[int] = field(
        default=None,
        metadata={"help": "Processes embedding the reports (labeler, tfidf and labels encoders; the rows keep their "
                          "order and embeddings); default: one."},
    )
    overwrite_column: bool = field(default=False, metadata={"help": "Recompute an existing output_column."})


@dataclass
class AnalyzeArguments:
    """``python examples/report_embeddings.py analyze ...``"""

    dataset_dir: Optional[str] = field(
        default=None, metadata={"help": "A saved dataset with a report column (labels used where present); default: "
                                        "generate SynthCXR and write nothing into a dataset."}
    )
    split: Optional[str] = field(
        default=None, metadata={"help": "Split of a DatasetDict to analyse; default: pretrain, else train, else the "
                                        "first."}
    )
    num_studies: int = field(default=2000, metadata={"help": "Studies to analyse (the first N)."})
    encoders: list[str] = field(
        default_factory=lambda: ["labeler", "tfidf"],
        metadata={"help": "Encoders to compare, besides the dataset's stored embeddings (labels, labeler, tfidf, "
                          "minilm or a model path)."},
    )
    min_precision: float = field(default=0.95, metadata={"help": "Precision the suggested threshold must reach."})
    sia_threshold: Optional[str] = field(
        default=None, metadata={"help": "Store a new SIA threshold with the dataset's embeddings: a number, or "
                                        "'suggested' (the analysis' suggestion for them)."}
    )
    output_json: Optional[str] = field(
        default=None,
        metadata={"help": "Default: report_similarity.json in dataset_dir, or in outputs/report_similarity/ for a "
                          "SynthCXR generated here."},
    )
    output_png: Optional[str] = field(
        default=None,
        metadata={"help": "Default: report_similarity.png in dataset_dir, or in outputs/report_similarity/ for a "
                          "SynthCXR generated here."},
    )


def _embed_main(args):
    (arguments,) = HfArgumentParser(EmbedArguments).parse_args_into_dataclasses(args=args)
    dataset = load_from_disk(arguments.dataset_dir)
    # before the labeler spends its hours: the dataset is rewritten in place unless --output_dir
    check_output_dir_writable(arguments.output_dir or arguments.dataset_dir,
                              "--output_dir" if arguments.output_dir else "--dataset_dir (written in place)")
    if arguments.overwrite_column:
        dataset = drop_column(dataset, arguments.output_column)
    metadata = read_dataset_metadata(arguments.dataset_dir) or {}
    dataset, record = embed_dataset(
        dataset,
        encoder=arguments.encoder,
        sia_threshold=arguments.sia_threshold,
        class_names=metadata.get("class_names"),
        output_column=arguments.output_column,
        pooling=arguments.pooling,
        batch_size=arguments.batch_size,
        text_column=arguments.text_column,
        max_length=arguments.max_length,
        dim=arguments.dim,
        seed=arguments.seed,
        num_proc=arguments.num_proc,
    )
    if arguments.sia_threshold is not None:
        record["threshold_source"] = "--sia_threshold of examples/report_embeddings.py"
    target = Path(arguments.output_dir or arguments.dataset_dir)
    # a new column replaces the stored analysis of the old one
    save_dataset(dataset, target, source_dir=arguments.dataset_dir, **{METADATA_KEY: record, ANALYSIS_KEY: None})
    logger.info(
        f"Wrote {arguments.output_column!r} (encoder {record['encoder']}, {record['dim']} dims) to {target}; "
        f"sia_threshold {record['sia_threshold']} ({record['threshold_source']}) stored in its sista_dataset.json."
    )


def _analysis_split(dataset, split: Optional[str]):
    if not isinstance(dataset, DatasetDict):
        return dataset, "dataset"
    split = split or next((name for name in ("pretrain", "train") if name in dataset), next(iter(dataset)))
    if split not in dataset:
        raise ValueError(f"`split` {split!r} is not in the dataset; its splits are {list(dataset)}.")
    return dataset[split], split


def _chosen_threshold(value: Optional[str], curve: Optional[dict]) -> Optional[float]:
    if value is None:
        return None
    if value == "suggested":
        if curve is None or curve["suggested_threshold"] is None:
            raise ValueError("`sia_threshold` 'suggested': the analysis found no threshold reaching --min_precision.")
        return float(curve["suggested_threshold"])
    try:
        return check_sia_threshold(float(value))
    except ValueError as error:
        raise ValueError(f"`sia_threshold` must be a number in [-1, 1] or 'suggested', got {value!r}.") from error


def _analyze_main(args):
    (arguments,) = HfArgumentParser(AnalyzeArguments).parse_args_into_dataclasses(args=args)
    metadata, stored = {}, None
    if arguments.dataset_dir:
        metadata = read_dataset_metadata(arguments.dataset_dir) or {}
        stored = metadata.get(METADATA_KEY)
        dataset, split = _analysis_split(load_from_disk(arguments.dataset_dir), arguments.split)
        dataset = dataset.select(range(min(arguments.num_studies, len(dataset))))
        output_json = arguments.output_json or str(Path(arguments.dataset_dir) / "report_similarity.json")
        output_png = arguments.output_png or str(Path(arguments.dataset_dir) / "report_similarity.png")
    else:
        if arguments.sia_threshold is not None:
            raise ValueError("`sia_threshold` stores a threshold in a dataset: it needs --dataset_dir.")
        # Images are not analysed: the smallest size keeps generation quick.
        dataset = generate_synthcxr(
            num_pretrain=arguments.num_studies, num_train=0, num_validation=0, num_test=0, image_size=32
        )["pretrain"]
        split = "pretrain"
        # outside docs/: results there come from a stated command (docs/data_synthcxr.md names its outputs)
        output_json = arguments.output_json or "outputs/report_similarity/report_similarity.json"
        output_png = arguments.output_png or "outputs/report_similarity/report_similarity.png"
    reports = dataset["report"]
    if LABELS_COLUMN in dataset.column_names:
        labels, class_names = np.asarray(dataset[LABELS_COLUMN], float), metadata.get("class_names")
        reference = "labels"
    else:
        labels, class_names, reference = label_reports(reports), OBSERVATIONS, "labeler"
    encoders = [name for name in arguments.encoders if name != "labels" or reference == "labels"]
    embeddings = {}
    if stored is not None and stored["column"] in dataset.column_names:
        embeddings[f"stored ({stored['encoder']})"] = np.asarray(dataset[stored["column"]], np.float32)
    summary = analyze_report_similarity(
        reports, labels, encoders=encoders, output_json=output_json, output_png=output_png,
        min_precision=arguments.min_precision, class_names=class_names, embeddings=embeddings,
    )  # fmt: skip
    if not arguments.dataset_dir:
        return summary
    stored_curve = summary["encoders"].get(f"stored ({stored['encoder']})") if stored else None
    threshold = _chosen_threshold(arguments.sia_threshold, stored_curve)
    if threshold is not None and stored is None:
        raise ValueError(
            f"`sia_threshold`: {arguments.dataset_dir} has no stored report embeddings to set it for; run "
            "`python examples/report_embeddings.py --dataset_dir ... --sia_threshold X` instead."
        )
    analysis = {
        "split": split,
        "num_studies": len(reports),
        "reference": "the dataset's labels column" if reference == "labels" else "the report labeler's labels",
        "min_precision_for_suggestion": arguments.min_precision,
        "output_json": output_json,
        "output_png": output_png,
        "encoders": {
            name: {key: curve.get(key) for key in ("default_threshold", "at_default_threshold", "suggested_threshold")}
            for name, curve in summary["encoders"].items()
        },
    }
    entries = {ANALYSIS_KEY: analysis}
    if stored is not None:
        if threshold is not None:
            source = "suggested by" if arguments.sia_threshold == "suggested" else "--sia_threshold of"
            stored = {**stored, "sia_threshold": threshold,
                      "threshold_source": f"{source} `report_embeddings.py analyze` on {split}"}  # fmt: skip
        if stored_curve is not None:
            at = similarity_precision_recall(
                embeddings[f"stored ({stored['encoder']})"], same_label_reference(labels, class_names),
                [stored["sia_threshold"]],
            )  # fmt: skip
            measured = {key: at[key][0] for key in ("precision", "recall", "fraction_of_pairs_flagged")}
            stored = {**stored, "measured": {"split": split, "num_studies": len(reports), "reference": reference,
                                             **measured}}  # fmt: skip
        entries[METADATA_KEY] = stored
    update_dataset_metadata(arguments.dataset_dir, **entries)
    logger.info(
        f"Stored the analysis{' and sia_threshold ' + str(stored['sia_threshold']) if threshold is not None else ''} "
        f"in {arguments.dataset_dir}/sista_dataset.json."
    )
    return summary


def main(args: Optional[list] = None):
    setup_logging()
    args = sys.argv[1:] if args is None else list(args)
    if args and args[0] == "analyze":
        return _analyze_main(args[1:])
    return _embed_main(args)


if __name__ == "__main__":
    main()
