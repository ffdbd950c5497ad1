#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Linear probe of a pre-trained SISTA image encoder, CLIP's protocol: scikit-learn logistic regression on frozen
features, its L2 regularisation chosen on the validation split, the macro AUROC reported on the test split, at each
label fraction of the training split.

    python examples/linear_probe.py --model_name_or_path outputs/sista-pretrain --dataset_dir data/synthcxr \
        --label_fractions 0.01,0.1,1.0 --output_dir outputs/linear-probe

Features are the vision tower's pooled output (before the projection), one pass per image, no augmentation,
standardised on the training subset. Every label (multi-label `labels` column) gets its own logistic regression;
for each `C` in `--c_values` the probe is fitted on the training subset and scored on the validation split, the best
`C` is refitted and scored on the test split. A label with one value among the training rows is predicted as that
constant. The macro AUROC is `sista_examples.evaluation.auroc`'s: the mean over the labels with both values among
the rows scored. The training subsets
are `select_label_fraction`'s, the same nested subsets the fine-tuning scripts use. Results go to
`{output_dir}/linear_probe_results.{json,md}`.
"""

import logging
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import DatasetDict, load_from_disk
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from modeling_sista import split_vision_states
from sista_examples.data.label_fractions import select_label_fraction
from sista_examples.data.metadata import read_dataset_metadata
from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.auroc import macro_auroc
from sista_examples.evaluation.common import batch_ranges, resolve_class_names
from sista_examples.evaluation.results import arguments_dict, command_line, markdown_table, write_results
from sista_examples.utils import check_output_dir_writable


logger = logging.getLogger(__name__)
TASK = "linear_probe"


@dataclass
class LinearProbeArguments:
    """Arguments of the linear probe (see the module docstring)."""

    model_name_or_path: str = field(metadata={"help": "Folder of a saved SISTA checkpoint with its processor."})
    dataset_dir: str = field(default="data/synthcxr", metadata={"help": "DatasetDict with a multi-hot `labels`."})
    output_dir: str = field(default="outputs/linear-probe", metadata={"help": "Where results JSON/markdown go."})
    train_split: str = field(default="train", metadata={"help": "Split the probes are fitted on."})
    validation_split: str = field(default="validation", metadata={"help": "Split that chooses `C`."})
    test_split: str = field(default="test", metadata={"help": "Split the reported AUROC is computed on."})
    label_fractions: str = field(default="0.01,0.1,1.0", metadata={"help": "Comma-separated label fractions."})
    label_fraction_seed: int = field(default=0, metadata={"help": "Seed of the label-fraction order."})
    min_train_samples: int = field(default=8, metadata={"help": "Smallest training subset, whatever the fraction."})
    c_values: str = field(
        default="0.001,0.01,0.1,1,10,100", metadata={"help": "Comma-separated inverse L2 strengths to choose from."}
    )
    max_iter: int = field(default=2000, metadata={"help": "lbfgs iterations per logistic regression."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Score only the first N test rows."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    class_names: str | None = field(default=None, metadata={"help": "Comma-separated names of the labels."})
    device: str | None = field(default=None, metadata={"help": "Torch device (default: cuda if available)."})

    def __post_init__(self):
        self.fraction_list = parse_floats(self.label_fractions, "label_fractions")
        self.c_list = parse_floats(self.c_values, "c_values")
        if any(not 0 < fraction <= 1 for fraction in self.fraction_list):
            raise ValueError(f"`label_fractions` must lie in (0, 1], got {self.label_fractions!r}.")
        if any(value <= 0 for value in self.c_list):
            raise ValueError(f"`c_values` must be positive, got {self.c_values!r}.")


def parse_floats(text: str, name: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"`{name}` must be comma-separated numbers, got {text!r}.") from None
    if not values:
        raise ValueError(f"`{name}` must name at least one number, got {text!r}.")
    return values


@torch.no_grad()
def pooled_image_features(model, processor, images, batch_size: int, desc: str) -> np.ndarray:
    """The vision tower's pooled output (before the projection) of each image, `(num_images, feature_size)`."""
    features = []
    for start, stop in tqdm(list(batch_ranges(len(images), batch_size)), desc=f"Features of {desc}"):
        pixel_values = processor(images=list(images[start:stop]), return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(model.device, model.dtype)
        vision_outputs = model.vision_model(pixel_values=pixel_values, return_dict=True)
        pooled, _, _ = split_vision_states(
            vision_outputs, pixel_values, model.config.vision_config, model.config.vision_pooling
        )
        features.append(pooled.float().cpu().numpy())
    return np.concatenate(features)


def fit_probe(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int):
    """One L2 logistic regression per label on standardised features (a constant label predicts its constant)."""
    scaler = StandardScaler().fit(features)
    classifier = OneVsRestClassifier(LogisticRegression(C=c, max_iter=max_iter))
    with warnings.catch_warnings():  # constant labels are expected at small fractions and counted by the caller
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        classifier.fit(scaler.transform(features), labels)
    return lambda x: classifier.predict_proba(scaler.transform(x))


def probe_fraction(features: dict, labels: dict, rows: list[int], args: LinearProbeArguments) -> dict:
    """Chooses `C` on validation for the training rows `rows`, then scores the test split."""
    train_x, train_y = features["train"][rows], labels["train"][rows]
    validation = {}
    for c in args.c_list:
        predict = fit_probe(train_x, train_y, c, args.max_iter)
        validation[c] = macro_auroc(labels["validation"], predict(features["validation"]))[0]
    scored = {c: value for c, value in validation.items() if value is not None}
    if not scored:
        raise ValueError(f"No label has both values in the {args.validation_split!r} split: AUROC cannot choose `C`.")
    best_c = max(scored, key=lambda c: (scored[c], -c))  # ties: the stronger regularisation
    predict = fit_probe(train_x, train_y, best_c, args.max_iter)
    test_auroc, per_label = macro_auroc(labels["test"], predict(features["test"]))
    return {
        "train_samples": len(rows),
        "labels_constant_in_training": int(sum(len(np.unique(column)) < 2 for column in train_y.T)),
        "best_c": best_c,
        "validation_auroc": scored[best_c],
        "validation_auroc_by_c": {f"{c:g}": value for c, value in validation.items()},
        "auroc": test_auroc,
        "per_label_auroc": per_label,
    }


def main(args: list[str] | None = None) -> dict:
    (probe_args,) = HfArgumentParser(LinearProbeArguments).parse_args_into_dataclasses(args)
    check_output_dir_writable(probe_args.output_dir)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    dataset = load_from_disk(probe_args.dataset_dir)
    if not isinstance(dataset, DatasetDict):
        raise ValueError(f"`dataset_dir` {probe_args.dataset_dir} must hold a DatasetDict with train, validation and "
                         "test splits, got a single Dataset.")
    splits = {"train": probe_args.train_split, "validation": probe_args.validation_split,
              "test": probe_args.test_split}
    for role, name in splits.items():
        if name not in dataset or len(dataset[name]) == 0 or "labels" not in dataset[name].column_names:
            raise ValueError(f"The {role} split {name!r} of {probe_args.dataset_dir} must exist with rows and a "
                             f"`labels` column; its splits are {sorted(dataset)}.")
    test = dataset[probe_args.test_split]
    if probe_args.max_test_samples is not None:
        test = test.select(range(min(probe_args.max_test_samples, len(test))))
    rows = {"train": dataset[probe_args.train_split], "validation": dataset[probe_args.validation_split],
            "test": test}
    class_names = resolve_class_names(
        rows["train"], {"metadata": read_dataset_metadata(probe_args.dataset_dir) or {}}, probe_args.class_names
    )

    model, processor = load_sista(probe_args.model_name_or_path, probe_args.device)
    image_processor = processor.image_processor
    features = {role: pooled_image_features(model, image_processor, split["image"], probe_args.batch_size, role)
                for role, split in rows.items()}  # fmt: skip
    labels = {role: np.asarray(split["labels"], dtype=np.int64) for role, split in rows.items()}

    by_fraction = {}
    indices = np.arange(len(rows["train"]))
    for fraction in probe_args.fraction_list:
        subset = select_label_fraction(
            rows["train"].add_column("_row", indices.tolist()),
            fraction,
            probe_args.label_fraction_seed,
            probe_args.min_train_samples,
        )
        result = probe_fraction(features, labels, subset["_row"], probe_args)
        by_fraction[f"{fraction:g}"] = result
        logger.info("Label fraction %g: %d rows (%d labels constant among them, predicted as that constant), C=%g "
                    "(validation AUROC %.4f), test macro AUROC %s.", fraction, result["train_samples"],
                    result["labels_constant_in_training"], result["best_c"], result["validation_auroc"], result["auroc"])
    results = {
        "task": TASK,
        "model": probe_args.model_name_or_path,
        "dataset": probe_args.dataset_dir,
        "features": "vision tower pooled output (before the projection), standardised on the training subset",
        "class_names": class_names,
        "test_samples": len(rows["test"]),
        "label_fractions": by_fraction,
        "arguments": arguments_dict(probe_args),
        "command": command_line("linear_probe.py", args),
    }
    table = markdown_table(
        ["label fraction", "train samples", "C (chosen on validation)", "validation AUROC", "test macro AUROC"],
        [[fraction, entry["train_samples"], entry["best_c"], entry["validation_auroc"], entry["auroc"]]
         for fraction, entry in by_fraction.items()],
    )
    write_results(probe_args.output_dir, TASK, results, f"# Linear probe\n\n{table}")
    print(table, flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or None)
