# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The one pointing-game rule of the project: word maps from STA's token-patch weights, SynthCXR's finding targets, the
upsampling of a patch map to the model's input frame, the hit rule, and the three references a model's accuracy is
read against: the random-point and fixed-point baselines (floors that look at no image) and the oracle (the ceiling
at the model's patch grid). `examples/visualize_grounding.py` and the grounding study in `research/grounding/` both
score with it.
"""

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import synthcxr


# Function words of English radiology reports and the section headers: they describe no region.
STOP_WORDS = frozenset(
    """a an the of and or but nor no not without with within is are was were be been being there this that these
    those it its to in on at by for from as into onto than then also both either any some all each other another
    has have had do does did may might can could should would will shall seen noted present identified again
    findings finding impression""".split()
)
SUBWORD_REDUCTIONS = ("mean", "sum")
PEAK_RELATIVE_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# Words and their maps
# ---------------------------------------------------------------------------------------------------------------------


def merge_subword_maps(
    word_ids: Sequence[int | None], token_maps: np.ndarray, reduce: str = "mean"
) -> tuple[list[int], np.ndarray]:
    """
    Merges the maps of the sub-tokens of each word.

    Args:
        word_ids (`Sequence[int | None]`): the word of each token (a fast tokenizer's `encoding.word_ids()`),
            `None` for special tokens and padding, which are dropped.
        token_maps (`np.ndarray` of shape `(num_tokens, num_patches)`): the tokens' grounding maps.
        reduce (`str`): `"mean"` or `"sum"` of the sub-token maps.

    Returns:
        `(words, word_maps)`: the word ids in order of first appearance and their maps `(num_words, num_patches)`.
    """
    token_maps = np.asarray(token_maps)
    if len(word_ids) != token_maps.shape[0]:
        raise ValueError(f"{len(word_ids)} word ids for {token_maps.shape[0]} token maps.")
    if reduce not in SUBWORD_REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {SUBWORD_REDUCTIONS}, got {reduce!r}.")
    tokens_of_word = defaultdict(list)
    for token_index, word_id in enumerate(word_ids):
        if word_id is not None:
            tokens_of_word[word_id].append(token_index)
    words = list(tokens_of_word)
    if not words:
        return [], np.zeros((0, token_maps.shape[1]), dtype=token_maps.dtype)
    reducer = np.mean if reduce == "mean" else np.sum
    return words, np.stack([reducer(token_maps[tokens_of_word[word]], axis=0) for word in words])


def word_spans(offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]) -> dict[int, tuple[int, int]]:
    """Character span `(start, end)` of each word in the text, from the tokens' offsets."""
    spans = {}
    for (start, end), word_id in zip(offsets, word_ids):
        if word_id is None:
            continue
        previous = spans.get(word_id)
        spans[word_id] = (start, end) if previous is None else (min(previous[0], start), max(previous[1], end))
    return spans


def is_content_word(word: str) -> bool:
    return word.lower() not in STOP_WORDS and any(character.isalnum() for character in word)


@dataclass
class WordMaps:
    """The words of one text with their spans and grounding maps (`(num_words, num_patches)`)."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]
    maps: np.ndarray

    def content_indices(self) -> list[int]:
        """Words that are content words and have a grounding map (not only STA-ignored tokens)."""
        return [index for index, word in enumerate(self.words) if is_content_word(word) and self.maps[index].sum() > 0]


def word_maps_from_encoding(text: str, encoding, token_maps: np.ndarray, reduce: str = "mean") -> WordMaps:
    """`WordMaps` of one text from its fast-tokenizer encoding (`encoding.word_ids()`, `encoding.offsets`)."""
    word_ids = encoding.word_ids
    word_ids = word_ids() if callable(word_ids) else word_ids
    words, maps = merge_subword_maps(word_ids, token_maps[: len(word_ids)], reduce)
    spans = word_spans(encoding.offsets, word_ids)
    return WordMaps(text, [text[slice(*spans[word])] for word in words], [spans[word] for word in words], maps)


# ---------------------------------------------------------------------------------------------------------------------
# The pointing game and its references
# ---------------------------------------------------------------------------------------------------------------------


def upsample_maps(maps: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """`(num_maps, num_patches)` patch maps -> `(num_maps, height, width)` images, bilinear (align_corners=False)."""
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32)).reshape(-1, 1, *grid)
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def pointing_game_hit(heatmap: np.ndarray, mask: np.ndarray) -> tuple[bool, tuple[int, int] | None]:
    """
    Whether the heatmap's peak lies in `mask`; returns `(hit, (row, col))`, or `(False, None)` for a flat map.

    The peak is the first pixel in row-major order within `PEAK_RELATIVE_TOLERANCE` of the maximum: bilinear
    upsampling makes plateaus (a whole border band shares the edge patch's value) whose pixels differ only by float
    noise, which would otherwise make the peak depend on batch padding. A map with every pixel that close to the
    maximum points nowhere, and counts as a miss.
    """
    heatmap, mask = np.asarray(heatmap), np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"`heatmap` {heatmap.shape} and `mask` {mask.shape} must have one shape.")
    maximum = float(heatmap.max())
    near_maximum = heatmap >= maximum - PEAK_RELATIVE_TOLERANCE * abs(maximum)
    if near_maximum.all():
        return False, None
    peak = np.unravel_index(int(np.argmax(near_maximum)), heatmap.shape)
    return bool(mask[peak]), (int(peak[0]), int(peak[1]))


def random_point_baseline(mask: np.ndarray) -> float:
    """Chance that a uniformly random point of the image lies in `mask`: the fraction of the image it covers."""
    return float(np.asarray(mask, dtype=bool).mean())


def fixed_point_hits(findings: list[str], masks: list[np.ndarray]) -> list[bool]:
    """
    For each (finding, mask), whether the finding's fixed point lies in the mask: the pixel inside the most masks of
    that finding (first in row-major order on ties). The hit rate is the best one fixed pixel per finding can do.
    """
    if len(findings) != len(masks):
        raise ValueError(f"`findings` and `masks` must have one length, got {len(findings)} and {len(masks)}.")
    counts = {}
    for finding, mask in zip(findings, masks):
        counts[finding] = counts.get(finding, 0) + np.asarray(mask, dtype=np.int64)
    points = {finding: np.unravel_index(int(np.argmax(count)), count.shape) for finding, count in counts.items()}
    return [bool(np.asarray(mask, dtype=bool)[points[finding]]) for finding, mask in zip(findings, masks)]


def pool_mask_to_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The fraction of each grid cell that `mask` covers, `(rows, columns)` (area pooling)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be a 2-D (height, width) array, got shape {mask.shape}.")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"`grid` must be (rows, columns) with both >= 1, got {grid}.")
    return F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], tuple(grid))[0, 0].numpy()


def oracle_pointing_hit(mask: np.ndarray, grid: tuple[int, int]) -> bool:
    """
    The pointing game's ceiling at a patch grid, for one finding: the oracle's map is the finding's own mask pooled
    to `grid`, scored by the rule a model's map is scored by (`upsample_maps`, then `pointing_game_hit`). A model at
    that grid can at best match it: lesions smaller than a patch, or lying between patch centres, lose their peak.
    """
    mask = np.asarray(mask, dtype=bool)
    grid_map = pool_mask_to_grid(mask, grid).reshape(1, -1)
    return pointing_game_hit(upsample_maps(grid_map, grid, mask.shape)[0], mask)[0]


def pointing_game_summary(records: list[dict]) -> dict:
    """
    Accuracy and references of `records`, overall and per finding: `random_baseline` from their `mask_fraction`,
    and `fixed_point_baseline` and `oracle` where every record carries `fixed_point_hit` and `oracle_hit`.
    """
    if not records:
        raise ValueError("The pointing game has no finding to score: no finding with a mask and words was found.")

    def summarise(group):
        summary = {
            "accuracy": float(np.mean([record["hit"] for record in group])),
            "random_baseline": float(np.mean([record["mask_fraction"] for record in group])),
            "num_findings": len(group),
        }
        for key, name in (("fixed_point_hit", "fixed_point_baseline"), ("oracle_hit", "oracle")):
            if all(key in record for record in group):
                summary[name] = float(np.mean([record[key] for record in group]))
        return summary

    by_finding = defaultdict(list)
    for record in records:
        by_finding[record["finding"]].append(record)
    return {
        "overall": summarise(records),
        "per_finding": {name: summarise(by_finding[name]) for name in sorted(by_finding)},
    }


# ---------------------------------------------------------------------------------------------------------------------
# SynthCXR targets: which words point at which mask
# ---------------------------------------------------------------------------------------------------------------------


def _vocabulary(*phrase_groups) -> set[str]:
    return {word for group in phrase_groups for phrase in group for word in phrase.lower().split()}


def finding_words(finding: dict) -> set[str]:
    """SynthCXR's words for a finding and its side and zone ("left", "apical", "pneumothorax", ...)."""
    side = finding.get("side", "none")
    sides = ("left", "right") if side == "bilateral" else (side,)
    return _vocabulary(
        synthcxr.FINDING_SYNONYMS.get(finding["name"], (finding["name"],)),
        *(synthcxr.SIDE_WORDS.get(name, ()) for name in (*sides, side)),
        synthcxr.ZONE_WORDS.get(finding.get("zone", "none"), ()),
    )


def locate_mention(text: str, mention: str) -> tuple[int, int] | None:
    """Span of `mention` in `text` (exact, else case- and whitespace-insensitive); `None` when absent."""
    if not mention:
        return None
    start = text.find(mention)
    if start >= 0:
        return start, start + len(mention)
    pattern = r"\s+".join(re.escape(part) for part in mention.split())
    match = re.search(pattern, text, flags=re.IGNORECASE)
    return match.span() if match else None


def synthcxr_finding_masks(example: dict, height: int, width: int) -> dict[int, np.ndarray]:
    """Union mask of each finding index of a SynthCXR example (its objects' masks), original image frame."""
    masks = {}
    objects = example["objects"]
    for rle, finding_index in zip(objects["mask"], objects["finding"]):
        mask = synthcxr.decode_mask(rle, height, width)
        masks[finding_index] = masks[finding_index] | mask if finding_index in masks else mask
    return masks


def finding_targets(example: dict, word_maps: WordMaps, skipped: Counter) -> list[dict]:
    """`[{"finding", "word_indices", "mask", "fallback"}]`: the findings of a SynthCXR example that can be scored."""
    width, height = example["image"].size
    masks = synthcxr_finding_masks(example, height, width)
    targets = []
    for finding_index, finding in enumerate(example["findings"]):
        if finding_index not in masks or not masks[finding_index].any():
            skipped["finding without a mask"] += 1
            continue
        span = locate_mention(word_maps.text, finding.get("mention", ""))
        if span is None:
            skipped["mention not found in the model's text (truncated or cleaned away)"] += 1
            continue
        content = [
            index
            for index in word_maps.content_indices()
            if span[0] <= word_maps.spans[index][0] and word_maps.spans[index][1] <= span[1]
        ]
        vocabulary = finding_words(finding)
        chosen = [index for index in content if word_maps.words[index].lower() in vocabulary]
        if not content:
            skipped["mention has no content word with a grounding map"] += 1
            continue
        targets.append(
            {
                "finding": finding["name"],
                "word_indices": chosen or content,
                "mask": masks[finding_index],
                "fallback": not chosen,
            }
        )
    return targets


# ---------------------------------------------------------------------------------------------------------------------
# The model's input frame
# ---------------------------------------------------------------------------------------------------------------------


def mask_to_model_frame(image_processor, mask: np.ndarray) -> np.ndarray:
    """A boolean mask resized, padded or cropped exactly as the image processor treats its image."""
    mask_image = np.asarray(mask, dtype=bool).astype(np.uint8) * 255
    processed = image_processor(mask_image, do_normalize=False, return_tensors="np")["pixel_values"][0, 0]
    return processed >= 0.5


def display_image(image_processor, image) -> np.ndarray:
    """The image as the model sees it (resized, padded), in [0, 1], for drawing."""
    return image_processor(image, do_normalize=False, return_tensors="np")["pixel_values"][0, 0]


__all__ = [
    "PEAK_RELATIVE_TOLERANCE",
    "STOP_WORDS",
    "SUBWORD_REDUCTIONS",
    "WordMaps",
    "display_image",
    "finding_targets",
    "finding_words",
    "fixed_point_hits",
    "is_content_word",
    "locate_mention",
    "mask_to_model_frame",
    "merge_subword_maps",
    "oracle_pointing_hit",
    "pointing_game_hit",
    "pointing_game_summary",
    "pool_mask_to_grid",
    "random_point_baseline",
    "synthcxr_finding_masks",
    "upsample_maps",
    "word_maps_from_encoding",
    "word_spans",
]
