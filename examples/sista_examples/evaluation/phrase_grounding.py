# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Phrase grounding on MS-CXR: the two maps of a phrase (SISTA's word-to-patch STA route and BioViL's
phrase-embedding-to-patch route), mIoU over thresholds, the MS-CXR text-prior keys, and the per-category summary.
The pointing game, CNR, text prior and shuffled-image control are `sista_examples.evaluation.grounding`'s;
`examples/evaluate_grounding.py` runs them on a prepared `ms_cxr` split.
"""

import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


# BioViL's `ImageTextInferenceEngine._get_similarity_map_from_embeddings` smooths the patch-text cosine map with a
# Gaussian of this many patches (hi-ml-multimodal, health_multimodal/vlp/inference_engine.py).
BIOVIL_SMOOTHING_SIGMA = 1.5
DEFAULT_MIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
ROUTES = ("word_to_patch", "phrase_to_patch")
SIDE_PATTERNS = (("bilateral", r"\b(bilateral|bibasilar|both)\b"), ("left", r"\bleft\b"), ("right", r"\bright\b"))
ZONE_PATTERNS = (
    ("upper", r"\b(upper|apical|apex|apices)\b"),
    ("lower", r"\b(lower|basilar|bibasilar|base|bases|basal)\b"),
    ("middle", r"\b(mid|middle|lingula|lingular|perihilar|hilar)\b"),
)


def phrase_embedding_map(
    patch_embeds: np.ndarray, phrase_embed: np.ndarray, grid: tuple[int, int], sigma: float = BIOVIL_SMOOTHING_SIGMA
) -> np.ndarray:
    """
    BioViL's phrase-embedding-to-patch map: the cosine of each L2-normalised projected patch embedding with the
    L2-normalised projected phrase embedding, on the patch grid, smoothed by a Gaussian of `sigma` patches
    (`scipy.ndimage.gaussian_filter`, its default `reflect` border, as hi-ml calls it; `sigma=0` skips it).

    Args:
        patch_embeds (`np.ndarray` of shape `(num_patches, dim)`), phrase_embed (`np.ndarray` of shape `(dim,)`).

    Returns:
        `np.ndarray` of shape `(num_patches,)`, the grid row by row.
    """
    patch_embeds, phrase_embed = np.asarray(patch_embeds, np.float64), np.asarray(phrase_embed, np.float64)
    if patch_embeds.ndim != 2 or patch_embeds.shape[0] != grid[0] * grid[1] or phrase_embed.shape != (
        patch_embeds.shape[1],
    ):
        raise ValueError(
            f"`patch_embeds` must be ({grid[0] * grid[1]}, dim) and `phrase_embed` (dim,), got {patch_embeds.shape} "
            f"and {phrase_embed.shape}."
        )
    patch_embeds = patch_embeds / np.linalg.norm(patch_embeds, axis=1, keepdims=True).clip(min=1e-12)
    phrase_embed = phrase_embed / max(float(np.linalg.norm(phrase_embed)), 1e-12)
    similarity = (patch_embeds @ phrase_embed).reshape(grid)
    if sigma > 0:
        similarity = ndimage.gaussian_filter(similarity, sigma=(sigma, sigma), order=0)
    return similarity.reshape(-1)


def mean_iou(heatmap: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] = DEFAULT_MIOU_THRESHOLDS) -> float:
    """
    Mean over `thresholds` of the IoU between the region where the map, min-max scaled to [0, 1] on this image,
    reaches the threshold and the box mask. The per-image scaling makes maps of different ranges comparable (an STA
    word map sums to 1 over the patches; a cosine map lies in [-1, 1]); a flat map covers nothing and scores 0.
    """
    heatmap, mask = np.asarray(heatmap, np.float64), np.asarray(mask, bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"`heatmap` {heatmap.shape} and `mask` {mask.shape} must have one shape.")
    if not thresholds:
        raise ValueError("`thresholds` is empty.")
    low, high = float(heatmap.min()), float(heatmap.max())
    if high <= low:
        return 0.0
    scaled = (heatmap - low) / (high - low)
    ious = []
    for threshold in thresholds:
        region = scaled >= threshold
        union = np.logical_or(region, mask).sum()
        ious.append(float(np.logical_and(region, mask).sum() / union) if union else 0.0)
    return float(np.mean(ious))


def phrase_prior_key(category: str, phrase: str) -> tuple[str, str, str]:
    """The text prior's `(finding, side, zone)` key of an MS-CXR phrase: its category and the side and zone words."""
    text = phrase.lower()
    side = next((name for name, pattern in SIDE_PATTERNS if re.search(pattern, text)), "none")
    zone = next((name for name, pattern in ZONE_PATTERNS if re.search(pattern, text)), "none")
    return category, side, zone


def two_fold(groups: Sequence[str], seed: int = 0) -> np.ndarray:
    """A seeded 0/1 fold per item, constant within a group (patient), so a text prior is never fit on its own image."""
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {group: int(rank % 2) for group, rank in zip(unique, order)}
    return np.array([fold_of[group] for group in groups], dtype=np.int64)


def summarise_phrases(records: list[dict]) -> dict:
    """
    Means of every numeric score of `records` (pointing hits, CNRs, mIoUs of both routes and of the baselines),
    overall, averaged over categories (the MS-CXR papers' "average": each category weighs the same), and per category.
    """
    if not records:
        raise ValueError("No MS-CXR phrase was scored.")
    keys = [
        key
        for key, value in records[0].items()
        if (value is None or isinstance(value, (bool, int, float))) and key != "index"
    ]

    def mean_of(group):
        # `None` (a CNR without noise, infinite) is left out of its mean
        means = {}
        for key in keys:
            values = [record[key] for record in group if record[key] is not None]
            means[key] = float(np.mean(values)) if values else None
        return means | {"num_phrases": len(group)}

    by_category = defaultdict(list)
    for record in records:
        by_category[record["category"]].append(record)
    per_category = {name: mean_of(by_category[name]) for name in sorted(by_category)}
    category_average = {}
    for key in keys:
        values = [entry[key] for entry in per_category.values() if entry[key] is not None]
        category_average[key] = float(np.mean(values)) if values else None
    return {"overall": mean_of(records), "category_average": category_average, "per_category": per_category}


__all__ = [
    "BIOVIL_SMOOTHING_SIGMA",
    "DEFAULT_MIOU_THRESHOLDS",
    "ROUTES",
    "mean_iou",
    "phrase_embedding_map",
    "phrase_prior_key",
    "summarise_phrases",
    "two_fold",
]
