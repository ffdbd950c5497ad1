#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Zero-shot multi-label classification with a SISTA checkpoint: no label is used for training.

Every class gets positive prompts ("small left pleural effusion.") and negative prompts ("no left pleural
effusion."): SynthCXR's classes and the 14 CheXpert observations (MIMIC-CXR, CheXpert) have their own sets
(`sista_examples.evaluation.prompts`), other classes get generic templates, and `--prompts_file` replaces any of
them. Each prompt is embedded by the text tower and L2-normalised; the embeddings of a class's positive
templates are averaged and renormalised (likewise the negative ones). An image's score for a class is the softmax
over the two logits (positive, negative), i.e. `sigmoid(logit_pos - logit_neg)`, with the model's logit scale. AUROC
per class comes from `sklearn.metrics.roc_auc_score` under the one rule of `sista_examples.evaluation.auroc`: a class
whose labels in the split take one value only has no AUROC and is reported as skipped with the reason; the macro
AUROC averages the classes that have one.

Usage:

    python examples/zero_shot.py --model_name_or_path outputs/sista --dataset_dir data/synthcxr \
        --output_dir outputs/evaluation

The same checkpoint also works in the Transformers pipeline (one softmax over all candidate labels):

    >>> from transformers import pipeline
    >>> classifier = pipeline("zero-shot-image-classification", model="outputs/sista", trust_remote_code=True)
    >>> classifier(image, candidate_labels=["left pleural effusion", "no pleural effusion"], hypothesis_template="{}.")
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from transformers import HfArgumentParser

from processing_sista import report_has_content
from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.auroc import macro_auroc
from sista_examples.evaluation.common import (
    EvaluationArguments,
    LazyColumn,
    embed_images,
    embed_texts,
    load_evaluation_split,
    require_columns,
    resolve_class_names,
)
from sista_examples.evaluation.prompts import CHEXPERT_CLASS_PROMPTS, DATASET_CLASS_PROMPTS, find_class_prompts
from sista_examples.evaluation.results import arguments_dict, command_line, markdown_table, write_results
from sista_examples.utils import check_output_dir_writable, setup_logging


logger = logging.getLogger(__name__)

# Generic templates for classes without their own prompts; "{}" is the class name with "_" turned into spaces. No
# size adjective: "small no finding." or "large support devices." is no sentence a radiologist writes.
GENERIC_POSITIVE_TEMPLATES = ("{}.", "there is {}.", "findings consistent with {}.")
GENERIC_NEGATIVE_TEMPLATES = ("no {}.", "there is no {}.", "no evidence of {}.")

# Prompts for SynthCXR's lateralised classes, in the wording of its reports; "{side}" is "left" or "right".
_LATERAL_PROMPTS = {
    "consolidation": (
        (
            "{side} lung opacity.",
            "{side} consolidation.",
            "{side} airspace opacity, concerning for pneumonia.",
            "there is consolidation in the {side} lung.",
            "patchy {side} lower lobe opacity.",
            "{side} upper lobe consolidation.",
        ),
        ("no {side} consolidation.", "the {side} lung is clear.", "no focal consolidation in the {side} lung."),
    ),
    "nodule": (
        (
            "{side} lung nodule.",
            "there is a nodule in the {side} lung.",
            "{side} upper lobe nodule.",
            "{side} lung mass.",
        ),
        ("no {side} lung nodule.", "the {side} lung is clear.", "no nodule or mass in the {side} lung."),
    ),
    "effusion": (
        ("small {side} pleural effusion.", "moderate {side} pleural effusion.", "large {side} pleural effusion."),
        (
            "no {side} pleural effusion.",
            "there is no {side} pleural effusion.",
            "no evidence of {side} pleural effusion.",
        ),
    ),
    "pneumothorax": (
        ("small {side} pneumothorax.", "moderate {side} pneumothorax.", "large {side} apical pneumothorax."),
        ("no {side} pneumothorax.", "there is no {side} pneumothorax.", "no evidence of {side} pneumothorax."),
    ),
    "atelectasis": (
        (
            "{side} basilar atelectasis.",
            "mild {side} lower lobe atelectasis.",
            "there is atelectasis at the {side} base.",
        ),
        ("no {side} atelectasis.", "the {side} lung is clear.", "no {side} basilar atelectasis."),
    ),
}
SYNTHCXR_CLASS_PROMPTS = {
    "cardiomegaly": {
        "positive": [
            "cardiomegaly.",
            "mild cardiomegaly.",
            "the heart is enlarged.",
            "the cardiac silhouette is enlarged.",
        ],
        "negative": ["heart size is normal.", "no cardiomegaly.", "the cardiac silhouette is within normal limits."],
    },
    **{
        f"{side}_{finding}": {
            "positive": [template.format(side=side) for template in positive],
            "negative": [template.format(side=side) for template in negative],
        }
        for finding, (positive, negative) in _LATERAL_PROMPTS.items()
        for side in ("right", "left")
    },
}


@dataclass
class ZeroShotArguments:
    """
    Arguments of the zero-shot classification.

    Args:
        prompts_file (`str`, *optional*):
            JSON file `{class_name: {"positive": [...], "negative": [...]}}` replacing the built-in prompts of the
            classes it names.
        pipeline_example (`bool`, *optional*, defaults to `True`):
            Also run `pipeline("zero-shot-image-classification", trust_remote_code=True)` on the first image, with
            every class's first positive prompt as a candidate label, and store its answer in the results.
    """

    prompts_file: str | None = field(
        default=None,
        metadata={"help": "JSON {class: {positive: [...], negative: [...]}} overriding built-in prompts."},
    )
    pipeline_example: bool = field(
        default=True, metadata={"help": "Also run the transformers zero-shot pipeline on the first image."}
    )
    multiclass: str = field(
        default="auto",
        metadata={
            "help": "Also score one-of-N classification (accuracy, macro-F1: argmax of the positive-prompt logits): "
            "'auto' (when every row has exactly one positive label, e.g. CheXpert 5x200), 'true' or 'false'."
        },
    )

    def __post_init__(self):
        if self.multiclass not in ("auto", "true", "false"):
            raise ValueError(f"`multiclass` must be 'auto', 'true' or 'false', got {self.multiclass!r}.")


def read_prompts_file(path: str) -> dict:
    """The `--prompts_file` JSON: `{"class name": {"positive": [...], "negative": [...]}, ...}`."""
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--prompts_file {path!r} must be a readable JSON file: {error}") from error
    if not isinstance(overrides, dict):
        raise ValueError(
            f"--prompts_file {path!r} must hold a JSON object of class name -> {{\"positive\": [...], "
            f"\"negative\": [...]}}, got a {type(overrides).__name__}."
        )
    return overrides


def class_prompts(
    class_names: list[str], overrides: dict | None = None, dataset_name: str | None = None
) -> dict[str, dict[str, list[str]]]:
    """
    Positive and negative prompts of every class: `overrides`, then the prompt set of the prepared dataset
    `dataset_name` (`DATASET_CLASS_PROMPTS`: RSNA Pneumonia's pneumonia-vs-normal set), then SynthCXR's wording, then
    the CheXpert-14 prompt set (MIMIC-CXR and CheXpert class names, any case), then the generic templates applied to
    the class name (`"pleural_effusion"` -> `"no pleural effusion."`).
    """
    overrides = overrides or {}
    dataset_prompts = DATASET_CLASS_PROMPTS.get(dataset_name or "", {})
    prompts = {}
    for name in class_names:
        chexpert = find_class_prompts(name, CHEXPERT_CLASS_PROMPTS)
        if name in overrides:
            chosen = overrides[name]
        elif name in dataset_prompts:
            chosen = dataset_prompts[name]
        elif name in SYNTHCXR_CLASS_PROMPTS:
            chosen = SYNTHCXR_CLASS_PROMPTS[name]
        elif chexpert is not None:
            chosen = chexpert
        else:
            phrase = name.replace("_", " ").lower()
            chosen = {
                "positive": [template.format(phrase) for template in GENERIC_POSITIVE_TEMPLATES],
                "negative": [template.format(phrase) for template in GENERIC_NEGATIVE_TEMPLATES],
            }
        for polarity in ("positive", "negative"):
            texts = chosen.get(polarity) if isinstance(chosen, dict) else None
            if not texts or not all(report_has_content(text) for text in texts):
                raise ValueError(
                    f"Class {name!r} needs a non-empty list of {polarity} prompt strings, each with a letter or digit, "
                    f"got {texts!r}."
                )
        prompts[name] = {"positive": list(chosen["positive"]), "negative": list(chosen["negative"])}
    return prompts


def average_prompt_embeddings(prompt_embeds: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Mean of consecutive groups of L2-normalised prompt embeddings (one group per class), renormalised."""
    groups = torch.split(prompt_embeds, counts)
    return torch.nn.functional.normalize(torch.stack([group.mean(dim=0) for group in groups]), dim=-1)


def embed_class_prompts(model, processor, prompts: dict, batch_size: int = 32, max_length: int = 128):
    """`(positive_embeds, negative_embeds)`, each `(num_classes, projection_dim)`, template-averaged."""
    class_embeds = []
    for polarity in ("positive", "negative"):
        texts = [text for class_prompts_ in prompts.values() for text in class_prompts_[polarity]]
        counts = [len(class_prompts_[polarity]) for class_prompts_ in prompts.values()]
        embeds = embed_texts(model, processor, texts, batch_size, max_length, desc=f"{polarity} prompts")
        class_embeds.append(average_prompt_embeddings(embeds, counts))
    return tuple(class_embeds)


def zero_shot_scores(
    image_embeds: torch.Tensor, positive_embeds: torch.Tensor, negative_embeds: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """
    Probability of each class: softmax over its (positive, negative) logits `logit_scale * <image, prompt>`.

    Returns:
        `torch.Tensor` of shape `(num_images, num_classes)` in [0, 1].
    """
    logits = logit_scale * torch.stack(
        [image_embeds @ positive_embeds.t(), image_embeds @ negative_embeds.t()], dim=-1
    )
    return logits.softmax(dim=-1)[..., 0]


def per_class_auroc(labels: np.ndarray, scores: np.ndarray, class_names: list[str]) -> dict:
    """
    AUROC per class and their macro average (`sista_examples.evaluation.auroc`: scikit-learn's `roc_auc_score`).

    A class whose labels take one value only is skipped with the reason (its AUROC is undefined); the macro average
    covers the other classes and is `None` when no class has an AUROC. Never NaN.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 2 or labels.shape[1] != len(class_names):
        raise ValueError(f"`labels` must have shape (num_images, {len(class_names)}), got {labels.shape}.")
    macro, aurocs = macro_auroc(labels, scores)
    per_class = {}
    for name, auroc, column in zip(class_names, aurocs, labels.T):
        num_positive = int(column.sum())
        skipped = None
        if auroc is None:
            skipped = f"only {'negative' if num_positive == 0 else 'positive'} labels in the split"
        per_class[name] = {
            "auroc": auroc, "num_positive": num_positive, "num_negative": len(column) - num_positive, "skipped": skipped
        }
    evaluated = [auroc for auroc in aurocs if auroc is not None]
    return {
        "macro_auroc": macro,
        "num_classes_evaluated": len(evaluated),
        "num_classes_skipped": len(class_names) - len(evaluated),
        "per_class": per_class,
    }


def is_one_of_n(labels: np.ndarray) -> bool:
    """Whether every row has exactly one positive label among two or more classes (CheXpert 5x200, COVIDx)."""
    labels = np.asarray(labels)
    return labels.ndim == 2 and labels.shape[1] > 1 and bool((labels.sum(axis=1) == 1).all())


def multiclass_metrics(labels: np.ndarray, class_logits: np.ndarray, class_names: list[str]) -> dict:
    """
    One-of-N zero-shot classification as GLoRIA, MedCLIP and MGCA score CheXpert 5x200: the predicted class is the
    argmax of the image's logits against each class's positive prompts; accuracy, macro-F1 (unweighted mean over the
    classes of `sklearn.metrics.f1_score`) and the confusion matrix (rows: true class, columns: predicted).

    Raises:
        `ValueError` when a row does not have exactly one positive label.
    """
    labels, class_logits = np.asarray(labels), np.asarray(class_logits)
    if labels.shape != class_logits.shape or labels.shape[1] != len(class_names):
        raise ValueError(
            f"`labels` and `class_logits` must both have shape (num_images, {len(class_names)}), got {labels.shape} "
            f"and {class_logits.shape}."
        )
    if not is_one_of_n(labels):
        raise ValueError("One-of-N classification needs exactly one positive label per row (--multiclass).")
    true, predicted = labels.argmax(axis=1), class_logits.argmax(axis=1)
    indices = list(range(len(class_names)))
    per_class_f1 = f1_score(true, predicted, labels=indices, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(true, predicted)),
        "macro_f1": float(f1_score(true, predicted, labels=indices, average="macro", zero_division=0)),
        "per_class_f1": {name: float(value) for name, value in zip(class_names, per_class_f1)},
        "confusion_matrix": confusion_matrix(true, predicted, labels=indices).tolist(),
        "rule": "predicted class = argmax over classes of logit_scale * <image, mean positive prompt embedding>",
    }


def binary_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Accuracy of `score >= 0.5` for one class: the positive prompts closer to the image than the negative ones."""
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores).reshape(-1)
    return float(np.mean((scores >= 0.5) == (labels == 1)))


def pipeline_example(model_dir: str, image, candidate_labels: list[str], device=None) -> list[dict]:
    """`pipeline("zero-shot-image-classification")` on one image; candidate labels are used verbatim."""
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=model_dir, trust_remote_code=True, device=device)
    return classifier(image.convert("RGB"), candidate_labels=candidate_labels, hypothesis_template="{}")


def results_markdown(metrics: dict, source: dict, num_images: int) -> str:
    rows = [
        (name, entry["auroc"], entry["num_positive"], entry["num_negative"], entry["skipped"] or "")
        for name, entry in metrics["per_class"].items()
    ]
    rows.append(("**macro**", metrics["macro_auroc"], "", "", f"{metrics['num_classes_skipped']} classes skipped"))
    header = f"## Zero-shot classification: {source['dataset']} / {source['split']} ({num_images} images)\n\n"
    text = header + markdown_table(["class", "AUROC", "positives", "negatives", "note"], rows)
    if "accuracy" in metrics:
        text += f"\nAccuracy ({metrics['accuracy_rule']}): {metrics['accuracy']:.4f}\n"
    if "multiclass" in metrics:
        multiclass = metrics["multiclass"]
        text += (
            f"\n### One-of-{len(metrics['per_class'])} classification\n\n"
            + markdown_table(["accuracy", "macro-F1"], [(multiclass["accuracy"], multiclass["macro_f1"])])
            + f"\n{multiclass['rule']}.\n"
        )
    return text


def evaluate_zero_shot(
    model, processor, dataset, class_names: list[str], prompts: dict, args, multiclass: str = "false"
) -> dict:
    image_embeds = embed_images(model, processor, LazyColumn(dataset, "image"), args.batch_size)
    positive_embeds, negative_embeds = embed_class_prompts(model, processor, prompts, args.batch_size, args.max_length)
    logit_scale = float(model.logit_scale.detach().exp().clamp(max=100))
    scores = zero_shot_scores(image_embeds, positive_embeds, negative_embeds, logit_scale).numpy()
    labels = np.asarray(dataset["labels"])
    metrics = per_class_auroc(labels, scores, class_names)
    if len(class_names) == 1:
        metrics["accuracy"] = binary_accuracy(labels, scores)
        metrics["accuracy_rule"] = "score >= 0.5: the positive prompts closer to the image than the negative ones"
    if multiclass == "true" or (multiclass == "auto" and is_one_of_n(labels)):
        class_logits = (logit_scale * image_embeds @ positive_embeds.t()).numpy()
        metrics["multiclass"] = multiclass_metrics(labels, class_logits, class_names)
    return metrics


def main(cli_args: list[str] | None = None) -> dict:
    setup_logging()
    parser = HfArgumentParser((EvaluationArguments, ZeroShotArguments))
    eval_args, zero_shot_args = parser.parse_args_into_dataclasses(args=cli_args)
    check_output_dir_writable(eval_args.output_dir)

    model, processor = load_sista(eval_args.model_name_or_path, eval_args.device)
    dataset, source = load_evaluation_split(eval_args, processor)
    require_columns(dataset, ["image", "labels"], "Zero-shot classification")
    class_names = resolve_class_names(dataset, source, eval_args.class_names)
    overrides = read_prompts_file(zero_shot_args.prompts_file) if zero_shot_args.prompts_file else None
    prompts = class_prompts(class_names, overrides, source["metadata"].get("dataset"))

    metrics = evaluate_zero_shot(
        model, processor, dataset, class_names, prompts, eval_args, zero_shot_args.multiclass
    )
    if "multiclass" in metrics:
        logger.info(
            "One-of-%d zero-shot: accuracy %.4f, macro-F1 %.4f.",
            len(class_names),
            metrics["multiclass"]["accuracy"],
            metrics["multiclass"]["macro_f1"],
        )
    if metrics["macro_auroc"] is not None:
        logger.info(
            "Zero-shot macro AUROC %.4f over %d classes.", metrics["macro_auroc"], metrics["num_classes_evaluated"]
        )
    for name, entry in metrics["per_class"].items():
        if entry["skipped"]:
            logger.warning("Class %s skipped: %s.", name, entry["skipped"])

    results = {
        "task": "zero-shot",
        "command": command_line("zero_shot.py", cli_args),
        "model": eval_args.model_name_or_path,
        "dataset": source["dataset"],
        "split": source["split"],
        "num_images": len(dataset),
        **metrics,
        "prompts": prompts,
        "arguments": arguments_dict(eval_args, zero_shot_args),
    }
    if zero_shot_args.pipeline_example:
        candidate_labels = [prompts[name]["positive"][0] for name in class_names]
        results["pipeline_example"] = {
            "image_index": 0,
            "labels": dataset[0]["labels"],
            "predictions": pipeline_example(
                eval_args.model_name_or_path, dataset[0]["image"], candidate_labels, model.device
            ),
        }
        top = results["pipeline_example"]["predictions"][0]
        logger.info("Pipeline on image 0: top label %r (score %.3f).", top["label"], top["score"])
    write_results(eval_args.output_dir, "zero_shot", results, results_markdown(metrics, source, len(dataset)))
    return results


if __name__ == "__main__":
    main()
