# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Dice per lesion type and per lesion size, from a dataset's per-finding masks (SynthCXR's `objects.mask`).

A binary segmentation head predicts one lesion mask per image. Pooled over all test pixels, its Dice is dominated by
the lesions with the most pixels; the paper's fine-grained claim is about the small ones. So every (image, lesion
type) pair gets its own Dice: the predicted mask against the union of that type's masks, on the pixels that are not
another type's lesion (a prediction on an effusion is not a false positive of the nodule beside it; a prediction on
background is one of every lesion in the image). A group's Dice is the mean over its (image, type) pairs.

Sizes, from the median share of the image each SynthCXR lesion covers (128 px, 400 training studies): atelectasis
0.25%, nodule 0.29%, pneumothorax 0.99% (a thin pleural rim), consolidation 1.4% are *small*; effusion 2.6% is
*large*. Cardiomegaly (8%) is large too, but it is not a segmentation target: SynthCXR's `mask` leaves the heart
out, so it has no Dice.
"""

import numpy as np
from sklearn.metrics import f1_score


LESION_SIZES = {
    "nodule": "small",
    "atelectasis": "small",
    "consolidation": "small",
    "pneumothorax": "small",
    "effusion": "large",
}
SIZE_GROUPS = ("small", "large")


def has_lesion_masks(dataset) -> bool:
    """Whether `dataset` stores per-finding masks the way SynthCXR does (`objects.mask` and `objects.finding`)."""
    objects = dataset.features.get("objects")
    return isinstance(objects, dict) and {"mask", "finding"} <= set(objects) and "findings" in dataset.features


def lesion_type_masks(objects: dict, findings: list[dict], height: int, width: int) -> dict[str, np.ndarray]:
    """
    The union of the object masks of each segmented lesion type of one SynthCXR row (`objects` with COCO RLE `mask`
    strings and `finding` indices into `findings`), as boolean `(height, width)` arrays; types the row lacks, and
    findings that are no segmentation target (cardiomegaly), are left out.
    """
    from ..data.synthcxr import decode_mask

    masks: dict[str, np.ndarray] = {}
    for rle, finding in zip(objects["mask"], objects["finding"]):
        name = findings[finding]["name"]
        if name not in LESION_SIZES:
            continue
        mask = decode_mask(rle, height, width)
        masks[name] = masks[name] | mask if name in masks else mask
    return masks


def image_lesion_dice(prediction: np.ndarray, type_masks: dict[str, np.ndarray]) -> dict[str, float]:
    """
    Dice of each lesion type of one image: the predicted binary mask against the type's mask, on the pixels that are
    not another type's lesion (scikit-learn's F1 of the flattened pixels, which is Dice).
    """
    prediction = np.asarray(prediction).astype(bool)
    dice = {}
    for name, mask in type_masks.items():
        if mask.shape != prediction.shape:
            raise ValueError(f"The {name} mask is {mask.shape}, the predicted mask {prediction.shape}.")
        others = np.zeros_like(mask)
        for other, other_mask in type_masks.items():
            if other != name:
                others |= other_mask
        keep = ~(others & ~mask)
        dice[name] = float(f1_score(mask[keep], prediction[keep], zero_division=1.0))
    return dice


def summarize_lesion_dice(per_image: list[dict[str, float]]) -> dict:
    """
    Means over the (image, lesion type) pairs of `per_image` (one `image_lesion_dice` dict per test image):
    `dice_<type>` and `num_<type>` per type, `dice_small` / `dice_large` and `num_small` / `num_large` per size group
    (None and 0 where the test split has no such lesion).
    """
    summary: dict = {}
    pairs: dict[str, list[float]] = {group: [] for group in SIZE_GROUPS}
    for name, group in LESION_SIZES.items():
        values = [image[name] for image in per_image if name in image]
        summary[f"dice_{name}"] = float(np.mean(values)) if values else None
        summary[f"num_{name}"] = len(values)
        pairs[group] += values
    for group, values in pairs.items():
        summary[f"dice_{group}"] = float(np.mean(values)) if values else None
        summary[f"num_{group}"] = len(values)
    return summary
