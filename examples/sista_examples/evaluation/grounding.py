# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The one pointing-game rule of the project: word maps from STA's token-patch weights, SynthCXR's finding targets, the
upsampling of a patch map to the model's input frame, the hit rule, the references a model's accuracy is read
against, and BioViL's contrast-to-noise ratio (CNR). The references are floors that look at no image (random point,
fixed point, and the text prior: the mean training mask of the (finding, side, zone) the report names), a control that
looks at the wrong image (each report's words mapped on another study's image), and the ceiling at the model's patch
grid (the oracle). A map that passes the pointing game without beating the text prior and its shuffled-image control
has not shown that it looks at the image. `examples/visualize_grounding.py` and the grounding study in
`research/grounding/` both score with it.
"""

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import synthcxr
from .common import text_max_length


# Function words of English radiology reports and the section headers: they describe no region.
STOP_WORDS = frozenset(
    """a an the of and or but nor no not without with within is are was were be been being there this that these
    those it its to in on at by for from as into onto than then also both either any some all each other another
    has have had do does did may might can could should would will shall seen noted present identified again
    findings finding impression""".split()
)
SUBWORD_REDUCTIONS = ("mean", "sum")
PEAK_RELATIVE_TOLERANCE = 1e-5
# The findings whose place a text prior cannot give away (small, or anywhere in a lung zone) are read apart from
# cardiomegaly (one place: the heart) and effusion (the lung base of the named side), which a prior nearly solves.
FINDING_GROUPS = {
    "small_or_ambiguous": ("consolidation", "nodule", "atelectasis", "pneumothorax"),
    "cardiomegaly_and_effusion": ("cardiomegaly", "effusion"),
}
OTHER_FINDING_GROUP = "other"
# The keys a text prior looks a finding up by, finest first: an unseen (finding, side, zone) falls back to coarser.
TEXT_PRIOR_LEVELS = ("finding+side+zone", "finding+side", "finding")
TEXT_PRIOR_UNSEEN = "unseen"


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


@torch.no_grad()
def token_patch_forward(model, processor, images: list, texts: list[str], max_length: int = 128):
    """
    One forward pass of `texts` with `images` that returns the word-to-patch maps: `(encoding, outputs)`, the fast
    tokenizer's `BatchEncoding` (its `encodings` give each token's word) and the model's output with
    `token_patch_weights` and `patch_grid_size`.
    """
    tokenizer = processor.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Grounding needs a fast tokenizer (word ids and offsets), got {type(tokenizer).__name__}; save the "
            "processor with a `PreTrainedTokenizerFast`."
        )
    encoding = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=text_max_length(model, max_length),
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    encoding.pop("offset_mapping")
    pixel_values = processor.image_processor(list(images), return_tensors="pt")["pixel_values"]
    inputs = {name: tensor.to(model.device) for name, tensor in encoding.items()}
    outputs = model(**inputs, pixel_values=pixel_values.to(model.device, model.dtype), output_token_patch_weights=True)
    return encoding, outputs


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


def contrast_to_noise_ratio(heatmap: np.ndarray, mask: np.ndarray, absolute: bool = True) -> float:
    """
    BioViL's contrast-to-noise ratio of a map between the inside `A` and the outside `Ā` of a region:

        CNR = |mean(A) - mean(Ā)| / sqrt(var(A) + var(Ā))

    with population variances (`ddof=0`) over the pixels of each side. It rewards a map whose whole inside stands out
    from its whole outside, not a single lucky peak, and needs no threshold.

    Follows BioViL (Boecking et al., ECCV 2022: the MS-CXR phrase-grounding metric, reported the same way by
    BioViL-T): the formula, the absolute value of the mean difference, population statistics over the pixels. Whether
    the map is normalised first does not matter: the ratio is invariant to any affine rescaling `a * map + b` with
    `a != 0` (a [0, 1] min-max scaling, a sign flip); only a non-linear one (a softmax) would change it.
    microsoft/hi-ml's `health_multimodal` ships BioViL's similarity map (patch-text cosine, Gaussian-smoothed with
    sigma 1.5 patches, upsampled) but no CNR code, so the definition is the paper's.

    Differs from BioViL in what it is given and in the degenerate cases: any map (an STA word map, a prior) scored
    inside vs outside a lesion *mask*, where MS-CXR scores the inside of a phrase's boxes (pass the union of the boxes
    as `mask`); no smoothing of its own; a flat map (every pixel within `PEAK_RELATIVE_TOLERANCE` of the maximum,
    the pointing game's flat-map rule, so float noise is not read as contrast), undefined (0 / 0) in the formula,
    scores 0, and a map constant on each side but different between them scores `inf`. With the absolute value a map
    lower inside the lesion than outside scores as high as one higher there; `absolute=False` keeps the sign.

    Args:
        heatmap (`np.ndarray` of shape `(height, width)`): the map, at the mask's resolution (`upsample_maps`).
        mask (`np.ndarray` of shape `(height, width)`): the region, boolean; it must leave pixels on both sides.
        absolute (`bool`, *optional*, defaults to `True`): BioViL's `|mean(A) - mean(Ā)|`; `False` gives the signed
            ratio (negative when the map is lower inside).

    Returns:
        `float`: the CNR (>= 0 when `absolute`).
    """
    heatmap, mask = np.asarray(heatmap, dtype=np.float64), np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"`heatmap` {heatmap.shape} and `mask` {mask.shape} must have one shape.")
    if not mask.any() or mask.all():
        raise ValueError(
            f"`mask` must have pixels inside and outside, got {int(mask.sum())} of {mask.size} inside."
        )
    maximum = float(heatmap.max())
    if float(heatmap.min()) >= maximum - PEAK_RELATIVE_TOLERANCE * abs(maximum):
        return 0.0
    inside, outside = heatmap[mask], heatmap[~mask]
    contrast = float(inside.mean()) - float(outside.mean())
    contrast = abs(contrast) if absolute else contrast
    noise = float(np.sqrt(inside.var() + outside.var()))
    return contrast / noise if noise > 0.0 else float(np.copysign(np.inf, contrast))


def contrast_to_noise_ratio_or_zero(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """`contrast_to_noise_ratio`, or 0 for a mask with no pixel inside or none outside (no region to contrast)."""
    mask = np.asarray(mask, dtype=bool)
    return contrast_to_noise_ratio(heatmap, mask) if mask.any() and not mask.all() else 0.0


def score_patch_map(patch_map: np.ndarray, grid: tuple[int, int], mask: np.ndarray) -> dict:
    """
    The pointing game and the CNR of one patch map against one mask, by the project's rule: the map upsampled to
    the mask's frame (`upsample_maps`), its peak tested (`pointing_game_hit`), its CNR inside vs outside the mask
    (`contrast_to_noise_ratio_or_zero`).

    Returns:
        `{"hit": bool, "peak": [row, col] | None, "cnr": float}`.
    """
    mask = np.asarray(mask, dtype=bool)
    heatmap = upsample_maps(np.asarray(patch_map).reshape(1, -1), grid, mask.shape)[0]
    hit, peak = pointing_game_hit(heatmap, mask)
    cnr = contrast_to_noise_ratio_or_zero(heatmap, mask)
    return {"hit": hit, "peak": None if peak is None else list(peak), "cnr": cnr}


def finding_group(finding: str) -> str:
    """The summary group of a finding name (`FINDING_GROUPS`), `OTHER_FINDING_GROUP` for a name in none."""
    return next((group for group, names in FINDING_GROUPS.items() if finding in names), OTHER_FINDING_GROUP)


# ---------------------------------------------------------------------------------------------------------------------
# The text prior: where the report's words alone say the finding is
# ---------------------------------------------------------------------------------------------------------------------


def finding_key(finding: dict) -> tuple[str, str, str]:
    """`(name, side, zone)` of a SynthCXR finding: what its sentence says about where it is."""
    return finding["name"], finding.get("side", "none"), finding.get("zone", "none")


def _prior_lookup_keys(key: Sequence[str]) -> list[tuple[str, ...]]:
    """The keys of `TEXT_PRIOR_LEVELS` for one `(name, side, zone)`, finest first."""
    name, side, zone = key
    return [(name, side, zone), (name, side), (name,)]


@dataclass
class TextPrior:
    """
    The mean lesion mask of each finding group, pooled to a patch grid: `maps[key]` is `(rows, columns)` for every
    key of the three levels of `TEXT_PRIOR_LEVELS` (`(name, side, zone)`, `(name, side)`, `(name,)`) seen in the
    masks it was built from, with `counts[key]` masks behind it. Built by `build_text_prior`.
    """

    grid: tuple[int, int]
    maps: dict[tuple[str, ...], np.ndarray]
    counts: dict[tuple[str, ...], int]

    def lookup(self, key: Sequence[str]) -> tuple[np.ndarray | None, str]:
        """`(grid map, level)` of the finest seen key of `(name, side, zone)`; `(None, "unseen")` when no level is."""
        if len(key) != 3:
            raise ValueError(f"A text-prior key is (name, side, zone), got {tuple(key)!r}.")
        for level, lookup_key in zip(TEXT_PRIOR_LEVELS, _prior_lookup_keys(key)):
            if lookup_key in self.maps:
                return self.maps[lookup_key], level
        return None, TEXT_PRIOR_UNSEEN


def build_text_prior(keyed_masks, grid: tuple[int, int]) -> TextPrior:
    """
    The text prior from `(key, mask)` pairs of a training split: each key `(name, side, zone)`'s masks pooled to
    `grid` (`pool_mask_to_grid`, area pooling, linear, so the mean of the pooled masks is the pooled mean mask even
    when the masks' sizes differ) and averaged, at each level of `TEXT_PRIOR_LEVELS`.

    Args:
        keyed_masks (iterable of `(tuple[str, str, str], np.ndarray)`): the group key of a finding and its mask in the
            frame the model sees (`mask_to_model_frame`).
        grid (`tuple[int, int]`): the model's patch grid.
    """
    grid = tuple(int(side) for side in grid)
    sums, counts = {}, Counter()
    for key, mask in keyed_masks:
        if len(key) != 3:
            raise ValueError(f"A text-prior key is (name, side, zone), got {tuple(key)!r}.")
        pooled = pool_mask_to_grid(mask, grid).astype(np.float64)
        for lookup_key in _prior_lookup_keys(key):
            sums[lookup_key] = sums[lookup_key] + pooled if lookup_key in sums else pooled
            counts[lookup_key] += 1
    if not sums:
        raise ValueError("`keyed_masks` is empty: the text prior needs at least one training finding with a mask.")
    return TextPrior(grid, {key: sums[key] / counts[key] for key in sums}, dict(counts))


def text_prior_scores(prior: TextPrior, key: Sequence[str], mask: np.ndarray) -> dict:
    """
    The text prior's pointing game for one finding: the prior map of its key (the finest level seen in training),
    scored against the finding's mask exactly as a model's map is (`score_patch_map`). A finding unseen at every level
    has no map and is a miss with CNR 0.

    Returns:
        `{"text_prior_hit": bool, "text_prior_cnr": float, "text_prior_level": one of TEXT_PRIOR_LEVELS or "unseen"}`.
    """
    prior_map, level = prior.lookup(key)
    if prior_map is None:
        return {"text_prior_hit": False, "text_prior_cnr": 0.0, "text_prior_level": level}
    scores = score_patch_map(prior_map, prior.grid, mask)
    return {"text_prior_hit": scores["hit"], "text_prior_cnr": scores["cnr"], "text_prior_level": level}


# ---------------------------------------------------------------------------------------------------------------------
# The shuffled-image control: the report's words on another study's image
# ---------------------------------------------------------------------------------------------------------------------


def shuffled_image_order(num_studies: int, seed: int = 0) -> np.ndarray:
    """
    A seeded derangement of `range(num_studies)`: `order[i]` is the study whose image report `i` is paired with,
    never `i` itself. A random permutation's elements are joined in one cycle (each sends its report to the next's
    image), so no study keeps its own image, whatever the seed.
    """
    if num_studies < 2:
        raise ValueError(f"The shuffled-image control needs at least 2 studies, got {num_studies}.")
    cycle = np.random.default_rng(seed).permutation(num_studies)
    order = np.empty(num_studies, dtype=np.int64)
    order[cycle] = np.roll(cycle, -1)
    return order


def shuffled_image_scores(shuffled_word_maps: WordMaps, word_indices: Sequence[int], grid, mask) -> dict:
    """
    The shuffled-image control of one finding: the mean map of its words (`word_indices`, as `finding_targets` chose
    them on the report's own image) computed with another study's image (`shuffled_word_maps`, the same report's
    `WordMaps` from that pass), scored against the report's *own* mask by the rule of `score_patch_map`. A model that
    looks at the image scores about the random-point baseline here; one that maps words to fixed places scores as much
    as on its own image.

    Returns:
        `{"shuffled_hit": bool, "shuffled_cnr": float}`.
    """
    word_indices = list(word_indices)
    if not word_indices or max(word_indices) >= len(shuffled_word_maps.words):
        raise ValueError(
            f"`word_indices` {word_indices} must be non-empty indices of the {len(shuffled_word_maps.words)} words of "
            "the shuffled pass (the same report, so the same words)."
        )
    patch_map = shuffled_word_maps.maps[word_indices].mean(axis=0)
    scores = score_patch_map(patch_map, grid, mask)
    return {"shuffled_hit": scores["hit"], "shuffled_cnr": scores["cnr"]}


# ---------------------------------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------------------------------

# (record key, summary key) of the references a group's accuracy is read against, reported where every record has them
SUMMARY_REFERENCES = (
    ("fixed_point_hit", "fixed_point_baseline"),
    ("oracle_hit", "oracle"),
    ("text_prior_hit", "text_prior_baseline"),
    ("shuffled_hit", "shuffled_image_accuracy"),
    ("cnr", "cnr"),
    ("shuffled_cnr", "shuffled_image_cnr"),
    ("text_prior_cnr", "text_prior_cnr"),
)


def pointing_game_summary(records: list[dict]) -> dict:
    """
    Accuracy and references of `records`, overall, per finding group (`FINDING_GROUPS`) and per finding:
    `random_baseline` from their `mask_fraction`, and, where every record of a group carries the record key,
    `fixed_point_baseline` (`fixed_point_hit`), `oracle` (`oracle_hit`), `text_prior_baseline` (`text_prior_hit`),
    `shuffled_image_accuracy` (`shuffled_hit`) and the mean CNRs `cnr`, `shuffled_image_cnr`, `text_prior_cnr`.
    Where records carry `text_prior_level`, each entry counts them per level in `text_prior_levels` (how often the
    prior fell back to a coarser key).
    """
    if not records:
        raise ValueError("The pointing game has no finding to score: no finding with a mask and words was found.")

    def summarise(group):
        summary = {
            "accuracy": float(np.mean([record["hit"] for record in group])),
            "random_baseline": float(np.mean([record["mask_fraction"] for record in group])),
            "num_findings": len(group),
        }
        for key, name in SUMMARY_REFERENCES:
            if all(key in record for record in group):
                summary[name] = float(np.mean([record[key] for record in group]))
        if all("text_prior_level" in record for record in group):
            levels = Counter(record["text_prior_level"] for record in group)
            summary["text_prior_levels"] = {level: levels[level] for level in (*TEXT_PRIOR_LEVELS, TEXT_PRIOR_UNSEEN)}
        return summary

    by_finding, by_group = defaultdict(list), defaultdict(list)
    for record in records:
        by_finding[record["finding"]].append(record)
        by_group[finding_group(record["finding"])].append(record)
    group_order = [*FINDING_GROUPS, OTHER_FINDING_GROUP]
    return {
        "overall": summarise(records),
        "per_group": {name: summarise(by_group[name]) for name in group_order if by_group[name]},
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


def synthcxr_keyed_masks(
    example: dict, size: tuple[int, int] | None = None
) -> list[tuple[tuple[str, str, str], np.ndarray]]:
    """`[(finding_key, mask)]` of the findings of a SynthCXR example with a non-empty mask: what `build_text_prior`
    averages (original image frame). `size` `(width, height)` spares decoding `example["image"]` for its size."""
    width, height = example["image"].size if size is None else size
    masks = synthcxr_finding_masks(example, height, width)
    return [
        (finding_key(finding), masks[index])
        for index, finding in enumerate(example["findings"])
        if index in masks and masks[index].any()
    ]


def finding_targets(example: dict, word_maps: WordMaps, skipped: Counter) -> list[dict]:
    """`[{"finding", "key", "word_indices", "mask", "fallback"}]`: the findings of a SynthCXR example that can be
    scored, `key` being the finding's `(name, side, zone)` (`finding_key`, what the text prior looks up)."""
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
                "key": finding_key(finding),
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


TEXT_PRIOR_COLUMNS = ("image", "findings", "objects")


def text_prior_splits(splits, names: Sequence[str], evaluated_split: str | None = None) -> tuple[dict, dict]:
    """
    The splits of `splits` (a `DatasetDict`) named in `names` that can make a text prior: SynthCXR's per-finding masks
    (`TEXT_PRIOR_COLUMNS`), never the evaluated split (a prior must come from data the evaluation does not score).

    Returns:
        `(usable, not_used)`: `{name: Dataset}` in the order of `names`, and `{name: reason}` for the others.
    """
    usable, not_used = {}, {}
    for name in names:
        if name == evaluated_split:
            not_used[name] = "the evaluated split"
        elif name not in splits:
            not_used[name] = f"absent (the splits are {sorted(splits)})"
        elif missing := sorted(set(TEXT_PRIOR_COLUMNS) - set(splits[name].column_names)):
            not_used[name] = f"lacks the per-finding mask columns {missing}"
        elif len(splits[name]) == 0:
            not_used[name] = "empty"
        else:
            usable[name] = splits[name]
    return usable, not_used


def synthcxr_text_prior(datasets, image_processor, grid: tuple[int, int]) -> TextPrior:
    """The text prior of one SynthCXR split, or of several together (`TEXT_PRIOR_COLUMNS`): each finding's mask brought
    into the model's frame as its image would be (`mask_to_model_frame`), then `build_text_prior`."""
    from datasets import Image as ImageFeature

    datasets = [datasets] if hasattr(datasets, "column_names") else list(datasets)
    keeps_frame = {}

    def model_frame(mask):
        # the processor's geometry depends only on the input size: where it gives a random mask back unchanged, it
        # changes no mask of that size, and the thousands of training masks skip it
        if mask.shape not in keeps_frame:
            probe = np.random.default_rng(0).random(mask.shape) < 0.5
            keeps_frame[mask.shape] = np.array_equal(mask_to_model_frame(image_processor, probe), probe)
        return mask if keeps_frame[mask.shape] else mask_to_model_frame(image_processor, mask)

    keyed_masks = (
        (key, model_frame(mask))
        for dataset in datasets
        # only the image's size is needed: its header, not the decoded pixels
        for example in dataset.select_columns(list(TEXT_PRIOR_COLUMNS)).cast_column("image", ImageFeature(decode=False))
        for key, mask in synthcxr_keyed_masks(example, _encoded_image_size(example["image"]))
    )
    return build_text_prior(keyed_masks, grid)


def _encoded_image_size(image: dict) -> tuple[int, int]:
    """`(width, height)` of an undecoded `datasets.Image` value (`{"bytes", "path"}`), from the file header."""
    import io

    from PIL import Image

    source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
    with Image.open(source) as opened:
        return opened.size


def display_image(image_processor, image) -> np.ndarray:
    """The image as the model sees it (resized, padded), in [0, 1], for drawing."""
    return image_processor(image, do_normalize=False, return_tensors="np")["pixel_values"][0, 0]


__all__ = [
    "FINDING_GROUPS",
    "OTHER_FINDING_GROUP",
    "PEAK_RELATIVE_TOLERANCE",
    "STOP_WORDS",
    "SUBWORD_REDUCTIONS",
    "SUMMARY_REFERENCES",
    "TEXT_PRIOR_COLUMNS",
    "TEXT_PRIOR_LEVELS",
    "TEXT_PRIOR_UNSEEN",
    "TextPrior",
    "WordMaps",
    "build_text_prior",
    "contrast_to_noise_ratio",
    "contrast_to_noise_ratio_or_zero",
    "display_image",
    "finding_group",
    "finding_key",
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
    "score_patch_map",
    "shuffled_image_order",
    "shuffled_image_scores",
    "synthcxr_finding_masks",
    "synthcxr_keyed_masks",
    "synthcxr_text_prior",
    "text_prior_scores",
    "text_prior_splits",
    "upsample_maps",
    "word_maps_from_encoding",
    "word_spans",
]
