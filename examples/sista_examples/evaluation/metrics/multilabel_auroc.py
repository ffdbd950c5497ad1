# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""AUROC and accuracy of image classification, from scikit-learn, as a local `evaluate` metric.

Load it offline with `evaluate.load("examples/sista_examples/evaluation/metrics/multilabel_auroc.py")` (multi-label, the default) or
`evaluate.load("examples/sista_examples/evaluation/metrics/multilabel_auroc.py", "multiclass")` (single-label).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score

from sista_examples.evaluation.auroc import macro_auroc


_DESCRIPTION = """
Area under the ROC curve (scikit-learn `roc_auc_score`) and accuracy (`accuracy_score`).

* `multilabel`: `predictions` are per-class scores (probabilities or logits), `references` multi-hot labels. `auroc`
  is `sista_examples.evaluation.auroc.macro_auroc`: the mean of the per-class AUROCs over the classes with both a
  positive and a negative sample (AUROC is undefined otherwise; those classes are listed in
  `classes_without_both_labels`). `accuracy` is the exact-match
  (subset) accuracy of `predictions >= threshold`; `label_accuracy` the accuracy over all (sample, class) pairs.
* `multiclass`: `predictions` are per-class probabilities (rows summing to 1), `references` class indices. `auroc`
  is the macro one-vs-rest AUROC under the same rule and `accuracy` that of the arg-max class.
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
            # one-vs-rest: each class against the others, under the same rule as the multi-label AUROC
            auroc, per_class = macro_auroc(labels[:, None] == np.arange(scores.shape[1]), scores)
            if auroc is None:
                raise ValueError(
                    f"AUROC needs at least two classes among the references, got only {sorted(set(labels.tolist()))}."
                )
            return {
                "auroc": auroc,
                "accuracy": float(accuracy_score(labels, scores.argmax(axis=1))),
                "per_class_auroc": per_class,
                "num_samples": int(len(labels)),
            }

        if scores.shape != labels.shape:
            raise ValueError(f"predictions {scores.shape} and references {labels.shape} must have the same shape.")
        auroc, per_class = macro_auroc(labels, scores)
        if auroc is None:
            raise ValueError("AUROC is undefined: no class has both a positive and a negative reference.")
        predicted = (scores >= threshold).astype(np.int64)
        return {
            "auroc": auroc,
            "accuracy": float(accuracy_score(labels, predicted)),
            "label_accuracy": float(accuracy_score(labels.ravel(), predicted.ravel())),
            "per_class_auroc": per_class,
            "classes_without_both_labels": [index for index, value in enumerate(per_class) if value is None],
            "num_samples": int(len(labels)),
        }
