# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""AUROC and accuracy of image classification, from scikit-learn, as a local `evaluate` metric.

Load it offline with `evaluate.load("examples/sista_examples/evaluation/metrics/multilabel_auroc.py")` (multi-label, the default) or
`evaluate.load("examples/sista_examples/evaluation/metrics/multilabel_auroc.py", "multiclass")` (single-label).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score


_DESCRIPTION = """
Area under the ROC curve (scikit-learn `roc_auc_score`) and accuracy (`accuracy_score`).

* `multilabel`: `predictions` are per-class scores (probabilities or logits), `references` multi-hot labels. `auroc`
  is the macro average of the per-class AUROCs over the classes with both a positive and a negative sample (AUROC is
  undefined otherwise; those classes are listed in `classes_without_both_labels`). `accuracy` is the exact-match
  (subset) accuracy of `predictions >= threshold`; `label_accuracy` the accuracy over all (sample, class) pairs.
* `multiclass`: `predictions` are per-class probabilities (rows summing to 1), `references` class indices. `auroc`
  is the macro one-vs-rest AUROC and `accuracy` that of the arg-max class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of per-class score lists, shape (num_samples, num_classes).
    references: multi-hot lists (multilabel) or class indices (multiclass).
    threshold (`float`, defaults to 0.5): multilabel decision threshold on `predictions` (use 0 for logits).
Returns:
    dict with `auroc`, `accuracy`, `per_class_auroc` (None for undefined classes), `num_samples` (and multilabel
    `label_accuracy`, `classes_without_both_labels`).
Examples:
    >>> metric = evaluate.load("examples/sista_examples/evaluation/metrics/multilabel_auroc.py")
    >>> metric.compute(predictions=[[0.1], [0.4], [0.35], [0.8]], references=[[0], [0], [1], [1]])["auroc"]
    0.75
"""

_CITATION = """
@article{scikit-learn, title={Scikit-learn: Machine Learning in {P}ython}, author={Pedregosa, F. and others},
journal={Journal of Machine Learning Research}, volume={12}, pages={2825--2830}, year={2011}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultilabelAuroc(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "multilabel", "multiclass"):
            raise ValueError(f"config name must be 'multilabel' or 'multiclass', got {self.config_name!r}.")
        reference = (
            datasets.Value("int64") if self.config_name == "multiclass" else datasets.Sequence(datasets.Value("int64"))
        )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": reference}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, predictions, references, threshold: float = 0.5):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.shape[0] == 0:
            raise ValueError("No samples to score: AUROC and accuracy of an empty set are undefined.")
        if self.config_name == "multiclass":
            num_classes = scores.shape[1]
            per_class = []
            for class_index in range(num_classes):
                is_class = labels == class_index
                per_class.append(
                    float(roc_auc_score(is_class, scores[:, class_index])) if 0 < is_class.sum() < len(labels) else None
                )
            scored = sorted(set(labels.tolist()))
            if len(scored) < 2:
                raise ValueError(f"AUROC needs at least two classes among the references, got only {scored}.")
            if num_classes == 2:  # sklearn's binary form takes the positive class's score
                auroc = float(roc_auc_score(labels, scores[:, 1]))
            elif len(scored) == num_classes:
                auroc = float(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
            else:  # sklearn's multiclass AUROC needs every class present; average the defined one-vs-rest AUROCs
                auroc = float(np.mean([value for value in per_class if value is not None]))
            return {
                "auroc": auroc,
                "accuracy": float(accuracy_score(labels, scores.argmax(axis=1))),
                "per_class_auroc": per_class,
                "num_samples": int(len(labels)),
            }

        if scores.shape != labels.shape:
            raise ValueError(f"predictions {scores.shape} and references {labels.shape} must have the same shape.")
        has_both = [0 < labels[:, index].sum() < len(labels) for index in range(labels.shape[1])]
        per_class = [
            float(roc_auc_score(labels[:, index], scores[:, index])) if has_both[index] else None
            for index in range(labels.shape[1])
        ]
        defined = [value for value in per_class if value is not None]
        if not defined:
            raise ValueError("AUROC is undefined: no class has both a positive and a negative reference.")
        predicted = (scores >= threshold).astype(np.int64)
        return {
            "auroc": float(np.mean(defined)),
            "accuracy": float(accuracy_score(labels, predicted)),
            "label_accuracy": float(accuracy_score(labels.ravel(), predicted.ravel())),
            "per_class_auroc": per_class,
            "classes_without_both_labels": [index for index, both in enumerate(has_both) if not both],
            "num_samples": int(len(labels)),
        }
