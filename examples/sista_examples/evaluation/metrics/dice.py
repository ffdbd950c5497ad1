# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Dice of segmentation masks as a local `evaluate` metric: scikit-learn's F1 of flattened masks, which is Dice.

Load it offline with `evaluate.load("examples/sista_examples/evaluation/metrics/dice.py")`.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score


_DESCRIPTION = """
Dice = 2 |P ∩ G| / (|P| + |G|), computed as scikit-learn's `f1_score` of the flattened masks (F1 of a binary pixel
classification is exactly Dice).

* `dice`: over all pixels of all images together (the dataset-level Dice).
* `mean_image_dice`: the mean over images of each image's Dice; an image where prediction and ground truth are both
  empty scores 1.
With `num_labels > 1` (multi-class masks of class indices, 0 = background) the Dice of each foreground class is
computed the same way and `dice` is their mean (`per_class_dice` lists them).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of flattened predicted masks (0/1, or class indices).
    references: list of flattened ground-truth masks, same lengths.
    num_labels (`int`, *optional*): number of classes of multi-class masks; binary when None or 1 or 2.
    ignore_index (`int`, *optional*): reference value of pixels left out.
Returns:
    dict with `dice`, `mean_image_dice`, `num_images` (and `per_class_dice` for multi-class masks).
Examples:
    >>> metric = evaluate.load("examples/sista_examples/evaluation/metrics/dice.py")
    >>> metric.compute(predictions=[[1, 1, 0, 0]], references=[[1, 0, 0, 0]])["dice"]
    0.6666666666666666
"""


class Dice(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int16")),
                    "references": datasets.Sequence(datasets.Value("int16")),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, num_labels: int | None = None, ignore_index: int | None = None):
        if len(predictions) == 0:
            raise ValueError("No masks to score: the Dice of an empty set is undefined.")
        multiclass = num_labels is not None and num_labels > 2
        foreground = list(range(1, num_labels)) if multiclass else [1]
        image_dice, all_predictions, all_references = [], [], []
        for prediction, reference in zip(predictions, references):
            prediction, reference = np.asarray(prediction), np.asarray(reference)
            if prediction.shape != reference.shape:
                raise ValueError(f"a predicted mask has {prediction.size} pixels, its reference {reference.size}.")
            if ignore_index is not None:
                keep = reference != ignore_index
                prediction, reference = prediction[keep], reference[keep]
            all_predictions.append(prediction)
            all_references.append(reference)
            image_dice.append(self._dice(reference, prediction, foreground))
        per_class = [
            float(value)
            for value in np.atleast_1d(
                f1_score(
                    np.concatenate(all_references),
                    np.concatenate(all_predictions),
                    labels=foreground,
                    average=None,
                    zero_division=1.0,
                )
            )
        ]
        results = {
            "dice": float(np.mean(per_class)),
            "mean_image_dice": float(np.mean(image_dice)),
            "num_images": len(image_dice),
        }
        if multiclass:
            results["per_class_dice"] = per_class
        return results

    @staticmethod
    def _dice(reference, prediction, foreground) -> float:
        # zero_division=1: an image with neither predicted nor true foreground is a perfect match
        return float(f1_score(reference, prediction, labels=foreground, average="macro", zero_division=1.0))
