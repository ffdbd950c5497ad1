# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The one macro AUROC of the evaluation (linear probe, zero-shot, the fine-tuning metric): scikit-learn's
`roc_auc_score` per class, averaged over the classes that can be scored.

The rule for classes that cannot be scored: a class is scored only when the rows hold both a positive and a negative
label for it (its AUROC is undefined otherwise). Such a class gets `None`, never NaN; the macro AUROC is the
unweighted mean over the scored classes, and `None` when no class can be scored.
"""

import numpy as np
from sklearn.metrics import roc_auc_score


def per_class_auroc(labels, scores) -> list[float | None]:
    """
    The AUROC of each class (column) of `scores` against the 0/1 `labels` of the same shape `(num_rows,
    num_classes)`; `None` for a class whose labels take one value only.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            f"`labels` and `scores` must both have shape (num_rows, num_classes), got {labels.shape} and {scores.shape}."
        )
    if labels.shape[0] == 0:
        raise ValueError("No row to score: AUROC over an empty set is undefined.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"`labels` must be 0 or 1 (multi-hot), got the values {sorted(set(labels.ravel().tolist()))}.")
    per_class = []
    for index in range(labels.shape[1]):
        column = labels[:, index]
        scorable = 0 < column.sum() < len(column)
        per_class.append(float(roc_auc_score(column, scores[:, index])) if scorable else None)
    return per_class


def macro_auroc(labels, scores) -> tuple[float | None, list[float | None]]:
    """`(macro AUROC, per-class AUROCs)` under the module's rule: the mean over the classes that can be scored."""
    per_class = per_class_auroc(labels, scores)
    scored = [value for value in per_class if value is not None]
    return (float(np.mean(scored)) if scored else None), per_class
