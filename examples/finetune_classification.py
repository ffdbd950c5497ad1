#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Fine-tune (or linearly probe) a pre-trained SISTA encoder for chest X-ray classification and report AUROC and
accuracy on the test split.

    python examples/finetune_classification.py --model_name_or_path outputs/sista-pretrain \
        --dataset_dir data/synthcxr --label_fraction 0.1 --freeze_encoder \
        --output_dir outputs/cls-linear-10pct --num_train_epochs 20 --learning_rate 1e-3 --report_to none

`labels` of the dataset are multi-hot lists (SynthCXR, CheXpert): multi-label with a BCE loss and macro AUROC. With
`--problem_type single_label_classification` each row must have exactly one positive (COVIDx, RSNA as classes):
cross-entropy, one-vs-rest AUROC and accuracy. Results go to `{output_dir}/classification_results.{json,md}`.
"""

import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed

from sista_examples import finetuning
from modeling_sista import SistaForImageClassification
from sista_examples.evaluation.results import arguments_dict, write_results
from sista_examples.hub.release import hub_push_request, push_after_training
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)
TASK = "classification"
PROBLEM_TYPES = ("multi_label_classification", "single_label_classification")


@dataclass
class ClassificationArguments:
    problem_type: str = field(
        default="multi_label_classification",
        metadata={"help": "multi_label_classification (multi-hot labels) or single_label_classification.",
                  "choices": PROBLEM_TYPES},
    )


def labels_tensor(labels: list, problem_type: str) -> torch.Tensor:
    """Multi-hot rows as floats (multi-label) or the index of the single positive (single-label)."""
    multi_hot = torch.tensor(labels, dtype=torch.long)
    if problem_type == "multi_label_classification":
        return multi_hot.float()
    positives = multi_hot.sum(dim=1)
    if (positives != 1).any():
        row = int((positives != 1).nonzero()[0])
        raise ValueError(
            f"single_label_classification needs exactly one positive label per row; a row has {int(positives[row])} "
            f"({labels[row]}). Use --problem_type multi_label_classification."
        )
    return multi_hot.argmax(dim=1)


def check_labels(dataset, num_labels: int, problem_type: str) -> None:
    """Every row has `num_labels` entries in {0, 1} (a clear error before training, not a failed step)."""
    labels = list(dataset["labels"])
    lengths = {len(row) for row in labels}
    if lengths != {num_labels}:
        raise ValueError(f"`labels` rows must all have {num_labels} entries, got lengths {sorted(lengths)}.")
    values = set(np.unique(np.asarray(labels)).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"`labels` must be multi-hot (0/1 per class), got values {sorted(values)}.")
    labels_tensor(labels, problem_type)


def main(args: list[str] | None = None):
    parser = HfArgumentParser((
        finetuning.FinetuningModelArguments, finetuning.FinetuningDataArguments, ClassificationArguments,
        TrainingArguments,
    ))
    model_args, data_args, task_args, training_args = parser.parse_args_into_dataclasses(args)
    setup_logging(training_args)
    finetuning.check_arguments(model_args, data_args, training_args)
    hub_push = hub_push_request(training_args)

    dataset = finetuning.load_task_dataset(data_args, model_args, training_args)
    train_dataset, test_dataset = finetuning.select_splits(dataset, data_args, ["image", "labels"], "Classification")
    validation_dataset = finetuning.select_validation(
        dataset, data_args, ["image", "labels"], "Classification", training_args
    )
    num_labels = len(train_dataset[0]["labels"])
    for split in (train_dataset, test_dataset):
        check_labels(split, num_labels, task_args.problem_type)
    class_names = finetuning.class_names_of(train_dataset, data_args, num_labels)

    set_seed(training_args.seed)  # the head's initial weights follow --seed, whatever ran before in the process
    model = finetuning.load_head(
        SistaForImageClassification,
        model_args,
        num_labels=num_labels,
        problem_type=task_args.problem_type,
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
    )
    image_processor = finetuning.load_image_processor(model_args, model.config)

    def transform(batch):
        return {
            "pixel_values": finetuning.process_images(image_processor, batch["image"]),
            "labels": labels_tensor(batch["labels"], task_args.problem_type),
        }

    augmentation = finetuning.augmentation_of(data_args)

    def collate(examples, augment):
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        if augment:
            pixel_values, _, _ = augmentation.augment_batch(pixel_values)
        return {"pixel_values": pixel_values, "labels": torch.stack([example["labels"] for example in examples])}

    def step(model, batch):
        return model(pixel_values=batch["pixel_values"]).logits.float().cpu(), batch["labels"].cpu()

    outputs = finetuning.train_and_predict(
        model, training_args, image_processor, transform, collate, train_dataset, validation_dataset, test_dataset,
        step, augment=data_args.augment,
    )
    if outputs is None:  # not the main process
        return None
    logits = torch.cat([logit for logit, _ in outputs])
    references = torch.cat([label for _, label in outputs])
    if task_args.problem_type == "multi_label_classification":
        metric = finetuning.load_metric("multilabel_auroc", "multilabel")
        metrics = metric.compute(
            predictions=logits.sigmoid().tolist(), references=references.long().tolist(), threshold=0.5
        )
    else:
        metric = finetuning.load_metric("multilabel_auroc", "multiclass")
        metrics = metric.compute(predictions=logits.softmax(dim=1).tolist(), references=references.tolist())
    per_class = dict(zip(class_names, metrics["per_class_auroc"]))
    results = {
        "task": TASK,
        **finetuning.run_description(
            model_args, data_args, len(train_dataset), len(test_dataset), "finetune_classification.py", args
        ),
        "problem_type": task_args.problem_type,
        "metrics": {**metrics, "per_class_auroc": per_class},
    }
    headline = {
        "label fraction": data_args.label_fraction,
        "encoder": "frozen (linear probe)" if model_args.freeze_encoder else "fine-tuned",
        "train samples": len(train_dataset),
        "test samples": len(test_dataset),
        "AUROC (macro)": metrics["auroc"],
    }
    if task_args.problem_type == "multi_label_classification":
        # Exact-match accuracy at 0.5 is often the all-negative rate for an under-trained probe: give both views.
        headline["exact-match accuracy (p >= 0.5)"] = metrics["accuracy"]
        headline["per-label accuracy (p >= 0.5)"] = metrics["label_accuracy"]
    else:
        headline["accuracy (arg-max)"] = metrics["accuracy"]
    results["arguments"] = arguments_dict(model_args, data_args, task_args)
    write_results(training_args.output_dir, TASK, results, finetuning.headline_markdown(TASK, headline))
    push_after_training(hub_push, training_args.output_dir, model_args.model_name_or_path)
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or None)
