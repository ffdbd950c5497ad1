#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Word-to-region grounding with a SISTA checkpoint: per-word STA heatmaps and the pointing game.

The grounding map of a token is its row of the STA weights `token_patch_weights` (sparse, sums to 1 over the
patches; `SistaModel.forward(..., output_token_patch_weights=True)`), reshaped to the patch grid and upsampled
bilinearly to the model's input image.

Words: tokens are grouped into words by the fast tokenizer's `word_ids` (WordPiece "pneumo ##thorax" is one word);
a word's map is the mean of its sub-tokens' maps (`--subword_reduce sum` adds them instead), so a word map is again
a distribution over patches. A *content word* is a word that is not a special token, not a stop word
(`STOP_WORDS`: function words and the section headers "findings"/"impression"), holds a letter or digit, and has a
grounding map (tokens STA ignores, e.g. `[UNK]`, have none).

Pointing game (SynthCXR): for every finding of a report with a mask, the finding's heatmap is the mean of the maps of
its *finding and location words* -- the words of the sentence describing it (`findings[i].mention`) that are one of
SynthCXR's synonyms of the finding or of its side or zone (`FINDING_SYNONYMS`, `SIDE_WORDS`, `ZONE_WORDS`); when the
sentence has none, all its content words. A hit is the heatmap's peak (first maximum of the upsampled map, values
within a relative 1e-5 of it counting as ties) falling
inside the finding's mask (the union of its objects' masks, brought into the model's input frame by the image
processor's own resize/pad). A flat map (every pixel within that tolerance of the maximum) has no peak and is a
miss. Accuracy is reported overall and per finding, beside two baselines that look at no image: the random-point
baseline (the fraction of the image the mask covers, i.e. the chance that a uniformly random peak is a hit) and the
fixed-point baseline (the hit rate of the single pixel most often inside this finding's masks on the split: the best
one fixed pixel per finding can do, looking at neither the image nor the wording; a collapsed model whose maps always
peak on the heart scores about this much on cardiomegaly), and the oracle, the ceiling at the model's patch grid (the
hit rate of the finding's own mask pooled to the grid and scored by the same rule: lesions smaller than a patch or
between patch centres are lost at that grid).

Two more references expose maps that pass the pointing game without looking at the image. The *text prior*
(SynthCXR): for each (finding, side, zone) a report names, the mean lesion mask of that group on the training splits
(`--text_prior_splits`, default `pretrain,train`: every split the model may have seen, so the mean is well estimated),
pooled to the model's grid and scored by the same rule; a group unseen in training falls back to (finding, side),
then to the finding, and the fallbacks are counted. A dataset without those splits or without SynthCXR's per-finding
masks gets no text prior, with the reason written into the results. The
*shuffled-image control*: the report's words mapped on another study's image (a fixed seeded derangement,
`--shuffle_seed`), scored on the report's own mask; a model that looks at the image falls to about the random-point
baseline there. Beside each hit rate stands BioViL's contrast-to-noise ratio (CNR) of the map inside vs outside the
mask, for the own-image and shuffled-image maps and the text prior. Every number is given overall, per finding group
(small or ambiguous findings: consolidation, nodule, atelectasis, pneumothorax; cardiomegaly and effusion, which a
prior nearly solves) and per finding.

The words, targets, hit rule and references are `sista_examples.evaluation.grounding`'s, shared with the grounding
study in `research/grounding/`; this script adds the model pass, the figures and the results files.

Datasets without SynthCXR's `findings` metadata but with a union `mask` column are scored with one target per image:
the mean map of all content words of the report, or of `--grounding_text` (e.g. "pneumothorax" for SIIM-ACR) for
datasets without reports, on the images whose mask is not empty.

Usage:

    # pointing game and figures on a split
    python examples/visualize_grounding.py --model_name_or_path outputs/sista --dataset_dir data/synthcxr \
        --output_dir outputs/evaluation --num_figures 4
    # one figure for any image and report
    python examples/visualize_grounding.py --model_name_or_path outputs/sista --image_path xray.png \
        --report "Small left apical pneumothorax." --output_dir outputs/evaluation
"""

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from processing_sista import apply_exif_orientation, report_has_content
from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.common import (
    EvaluationArguments,
    batch_ranges,
    load_evaluation_split,
    report_texts,
    require_columns,
)
from sista_examples.evaluation.grounding import (
    SUBWORD_REDUCTIONS,
    WordMaps,
    contrast_to_noise_ratio_or_zero,
    display_image,
    finding_targets,
    fixed_point_hits,
    mask_to_model_frame,
    oracle_pointing_hit,
    pointing_game_hit,
    pointing_game_summary,
    random_point_baseline,
    shuffled_image_order,
    shuffled_image_scores,
    synthcxr_text_prior,
    text_prior_scores,
    text_prior_splits,
    token_patch_forward,
    upsample_maps,
    word_maps_from_encoding,
)
from sista_examples.evaluation.results import (
    arguments_dict,
    command_line,
    format_value,
    markdown_table,
    write_results,
)
from sista_examples.utils import check_output_dir_writable, setup_logging


logger = logging.getLogger(__name__)


@dataclass
class GroundingArguments:
    """
    Arguments of the grounding evaluation.

    Args:
        image_path (`str`, *optional*):
            Draw the heatmaps of one image file with `--report` instead of evaluating a split.
        report (`str`, *optional*):
            The report of `--image_path`.
        num_figures (`int`, *optional*, defaults to 4):
            Figures drawn from the split (the first studies with a finding), written to `output_dir/grounding/`.
        subword_reduce (`str`, *optional*, defaults to `"mean"`):
            How the maps of a word's sub-tokens are merged: `"mean"` or `"sum"`.
        grounding_text (`str`, *optional*):
            For datasets with a `mask` but no reports: the text whose content words are pointed with (e.g.
            "pneumothorax").
        max_panels (`int`, *optional*, defaults to 24):
            At most this many word panels per figure (the first content words).
        text_prior_splits (`str`, *optional*, defaults to `"pretrain,train"`):
            Comma-separated splits of `--dataset_dir` whose per-finding masks make the text prior (those present and
            with SynthCXR's `findings`/`objects` are used; never `--split`).
        max_text_prior_samples (`int`, *optional*):
            Build the text prior from the first this many studies of each of those splits only.
        shuffle_seed (`int`, *optional*, defaults to 0):
            Seed of the derangement that pairs each report with another study's image (the shuffled-image control).
    """

    image_path: str | None = field(default=None, metadata={"help": "Draw one image's heatmaps (with --report)."})
    report: str | None = field(default=None, metadata={"help": "The report of --image_path."})
    num_figures: int = field(default=4, metadata={"help": "Figures drawn from the split into output_dir/grounding/."})
    subword_reduce: str = field(default="mean", metadata={"help": "Merge sub-token maps by 'mean' or 'sum'."})
    grounding_text: str | None = field(
        default=None, metadata={"help": "Text pointed with on datasets with a mask but no reports."}
    )
    max_panels: int = field(default=24, metadata={"help": "At most this many word panels per figure."})
    text_prior_splits: str = field(
        default="pretrain,train",
        metadata={"help": "Comma-separated splits of --dataset_dir whose finding masks make the text prior."},
    )
    max_text_prior_samples: int | None = field(
        default=None, metadata={"help": "Build the text prior from the first studies of that split only."}
    )
    shuffle_seed: int = field(default=0, metadata={"help": "Seed of the shuffled-image control's pairing."})

    def __post_init__(self):
        if self.subword_reduce not in SUBWORD_REDUCTIONS:
            raise ValueError(f"`subword_reduce` must be one of {SUBWORD_REDUCTIONS}, got {self.subword_reduce!r}.")
        if (self.image_path is None) != (self.report is None):
            raise ValueError("`image_path` and `report` go together: pass both to draw one image, or neither.")
        if self.num_figures < 0 or self.max_panels < 1:
            raise ValueError(
                f"`num_figures` must be >= 0 and `max_panels` >= 1, got {self.num_figures}, {self.max_panels}."
            )
        if self.max_text_prior_samples is not None and self.max_text_prior_samples < 1:
            raise ValueError(f"`max_text_prior_samples` must be >= 1 when given, got {self.max_text_prior_samples}.")


# ---------------------------------------------------------------------------------------------------------------------
# Targets of datasets with a union mask only (SynthCXR's per-finding targets: `finding_targets`)
# ---------------------------------------------------------------------------------------------------------------------


def whole_text_target(example: dict, word_maps: WordMaps, skipped: Counter, name: str = "lesion") -> list[dict]:
    """One target per image for datasets with a union `mask` only: all content words of the text."""
    mask = np.asarray(example["mask"]) > 0
    if not mask.any():
        skipped["empty mask (no lesion to point at)"] += 1
        return []
    content = word_maps.content_indices()
    if not content:
        skipped["text has no content word with a grounding map"] += 1
        return []
    return [{"finding": name, "word_indices": content, "mask": mask, "fallback": True}]


# ---------------------------------------------------------------------------------------------------------------------
# The text prior's training split
# ---------------------------------------------------------------------------------------------------------------------


def load_text_prior_splits(eval_args, grounding_args, source: dict) -> tuple[dict, dict, str | None]:
    """
    The splits whose per-finding masks make the text prior: `--text_prior_splits` of `--dataset_dir`
    (`text_prior_splits`), each cut to `--max_text_prior_samples`. Returns `(usable, not_used, reason)`: `{name:
    Dataset}`, `{name: why not}`, and why there is no prior at all (`None` when some split is usable).
    """
    from datasets import DatasetDict, load_from_disk

    names = [name.strip() for name in grounding_args.text_prior_splits.split(",") if name.strip()]
    if not names:
        return {}, {}, "--text_prior_splits names no split"
    if source["generated"]:
        return {}, {}, "the evaluated split was generated in memory: no saved training split to take the prior from"
    loaded = load_from_disk(str(eval_args.dataset_dir))
    if not isinstance(loaded, DatasetDict):
        return {}, {}, f"{eval_args.dataset_dir} holds a single Dataset, no training split"
    usable, not_used = text_prior_splits(loaded, names, evaluated_split=eval_args.split)
    if grounding_args.max_text_prior_samples is not None:
        usable = {
            name: split.select(range(min(grounding_args.max_text_prior_samples, len(split))))
            for name, split in usable.items()
        }
    reason = None
    if not usable:
        reason = "no usable training split: " + "; ".join(f"{name}: {why}" for name, why in not_used.items())
    return usable, not_used, reason


# ---------------------------------------------------------------------------------------------------------------------
# Model passes
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def grounding_maps(model, processor, images: list, texts: list[str], max_length: int = 128, reduce: str = "mean"):
    """
    One forward pass for a batch of image-report pairs.

    Returns:
        `(word_maps, grid)`: a `WordMaps` per pair and the `(rows, columns)` patch grid.
    """
    encoding, outputs = token_patch_forward(model, processor, images, texts, max_length)
    weights = outputs.token_patch_weights.float().cpu().numpy()
    grid = tuple(int(side) for side in outputs.patch_grid_size)
    word_maps = [
        word_maps_from_encoding(text, encoding.encodings[index], weights[index], reduce)
        for index, text in enumerate(texts)
    ]
    return word_maps, grid


# ---------------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------------


def plot_word_heatmaps(
    image: np.ndarray,
    word_maps: WordMaps,
    grid: tuple[int, int],
    output_path: str | Path,
    title: str | None = None,
    max_panels: int = 24,
    mask: np.ndarray | None = None,
    num_columns: int = 6,
) -> list[str]:
    """
    Writes a PNG with one panel per content word: the word's upsampled map (scaled to its own maximum) over the
    image, the optional `mask` outlined. The PNG's `Description` metadata holds the JSON list of panel words.

    Returns:
        `list[str]`: the words drawn, in order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = word_maps.content_indices()[:max_panels]
    words = [word_maps.words[index] for index in indices]
    if not words:
        raise ValueError(f"No content word with a grounding map in {word_maps.text!r}: nothing to draw.")
    heatmaps = upsample_maps(word_maps.maps[indices], grid, image.shape[-2:])
    num_columns = min(num_columns, len(words))
    num_rows = -(-len(words) // num_columns)
    figure, axes = plt.subplots(num_rows, num_columns, figsize=(2.4 * num_columns, 2.6 * num_rows), squeeze=False)
    for axis in axes.flat[len(words) :]:
        figure.delaxes(axis)
    for axis, word, heatmap in zip(axes.flat, words, heatmaps):
        axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        axis.imshow(heatmap / max(float(heatmap.max()), 1e-12), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        if mask is not None and mask.any():
            axis.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
        axis.set_title(word, fontsize=10)
        axis.axis("off")
    if title:
        import textwrap

        figure.suptitle("\n".join(textwrap.wrap(title, 30 * num_columns)), fontsize=8)
    figure.tight_layout()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_path, dpi=100, metadata={"Description": json.dumps(words)})
    plt.close(figure)
    return words


def plot_findings_overview(studies: list[dict], output_path: str | Path, max_findings: int = 3) -> None:
    """
    Writes one PNG with a row per study: the image as the model sees it, then per finding the heat map of its finding
    and location words (the pointing game's map, scaled to its own maximum) with the finding's mask outlined in white
    and the map's peak marked (a green cross for a hit, red for a miss).

    Args:
        studies (`list[dict]`): `{"study_id", "image", "findings": [{"finding", "words", "heatmap", "mask", "hit",
            "peak"}]}` per study, as `evaluate_pointing_game` collects them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not studies:
        raise ValueError("`studies` is empty: the overview figure needs at least one study with a scored finding.")
    num_columns = 1 + min(max_findings, max(len(study["findings"]) for study in studies))
    figure, axes = plt.subplots(
        len(studies), num_columns, figsize=(2.4 * num_columns, 2.6 * len(studies)), squeeze=False
    )
    for row, study in zip(axes, studies):
        row[0].imshow(study["image"], cmap="gray", vmin=0.0, vmax=1.0)
        row[0].set_title(f"study {study['study_id']}", fontsize=9)
        for axis, finding in zip(row[1:], study["findings"][:max_findings]):
            heatmap = finding["heatmap"]
            axis.imshow(study["image"], cmap="gray", vmin=0.0, vmax=1.0)
            axis.imshow(heatmap / max(float(heatmap.max()), 1e-12), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            axis.contour(finding["mask"], levels=[0.5], colors="white", linewidths=0.8)
            if finding["peak"] is not None:
                axis.plot(finding["peak"][1], finding["peak"][0], "x", color="lime" if finding["hit"] else "red",
                          markersize=9, markeredgewidth=2)  # fmt: skip
            axis.set_title(f"{finding['finding']}: \"{' '.join(finding['words'])}\"", fontsize=8)
        for axis in row:
            axis.axis("off")
    figure.suptitle("STA word maps (mask outlined; x = peak, green hit, red miss)", fontsize=9)
    figure.tight_layout()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


def evaluate_pointing_game(
    model, processor, dataset, texts: list[str], eval_args, grounding_args, text_prior_data=None
) -> dict:
    """
    Runs the pointing game over `dataset` (with `texts` as the model's reports) beside its references and the
    shuffled-image control, and draws the figures. `text_prior_data` (datasets with SynthCXR's per-finding masks)
    gives the text prior; without it, or on targets without a (finding, side, zone) key, the prior is left out.
    """
    use_findings = {"findings", "objects"} <= set(dataset.column_names)
    image_processor = processor.image_processor
    records, masks, skipped, figures, overview_studies = [], [], Counter(), [], []
    # the control needs another study to take the image from
    shuffled_order = shuffled_image_order(len(dataset), grounding_args.shuffle_seed) if len(dataset) > 1 else None
    figure_dir = Path(eval_args.output_dir) / "grounding"
    for start, stop in tqdm(list(batch_ranges(len(dataset), eval_args.batch_size)), desc="Pointing game"):
        batch = dataset.select(range(start, stop))
        examples = [batch[index] for index in range(len(batch))]
        batch_texts = texts[start:stop]
        usable = [index for index, text in enumerate(batch_texts) if report_has_content(text)]
        if len(usable) < len(examples):
            skipped["empty report"] += len(examples) - len(usable)
        if not usable:
            continue
        word_maps, grid = grounding_maps(
            model,
            processor,
            [examples[index]["image"] for index in usable],
            [batch_texts[index] for index in usable],
            eval_args.max_length,
            grounding_args.subword_reduce,
        )
        shuffled_word_maps, partner_ids = [None] * len(usable), [None] * len(usable)
        if shuffled_order is not None:
            partner_indices = [int(shuffled_order[start + index]) for index in usable]
            partners = dataset.select(partner_indices)
            partner_ids = partners["study_id"] if "study_id" in partners.column_names else partner_indices
            shuffled_word_maps, _ = grounding_maps(
                model,
                processor,
                [partners[position]["image"] for position in range(len(partners))],
                [batch_texts[index] for index in usable],
                eval_args.max_length,
                grounding_args.subword_reduce,
            )
        for index, maps, shuffled_maps, partner_id in zip(usable, word_maps, shuffled_word_maps, partner_ids):
            example = examples[index]
            targets = (
                finding_targets(example, maps, skipped) if use_findings else whole_text_target(example, maps, skipped)
            )
            if not targets:
                continue
            study_id = str(example.get("study_id", start + index))
            framed_masks = [mask_to_model_frame(image_processor, target["mask"]) for target in targets]
            overview_findings = []
            for target, mask in zip(targets, framed_masks):
                heatmap = upsample_maps(
                    maps.maps[target["word_indices"]].mean(axis=0, keepdims=True), grid, mask.shape
                )[0]
                hit, peak = pointing_game_hit(heatmap, mask)
                record = {
                    "study_id": study_id,
                    "finding": target["finding"],
                    "words": [maps.words[word] for word in target["word_indices"]],
                    "fallback_to_content_words": target["fallback"],
                    "hit": hit,
                    "peak": None if peak is None else list(peak),
                    "cnr": contrast_to_noise_ratio_or_zero(heatmap, mask),
                    "mask_fraction": random_point_baseline(mask),
                    "oracle_hit": oracle_pointing_hit(mask, grid),
                }
                if "key" in target:
                    record["key"] = list(target["key"])
                if shuffled_maps is not None:
                    record.update(shuffled_image_scores(shuffled_maps, target["word_indices"], grid, mask))
                    record["shuffled_with_study"] = str(partner_id)
                records.append(record)
                masks.append(mask)
                overview_findings.append({**records[-1], "heatmap": heatmap, "mask": mask})
            if len(overview_studies) < grounding_args.num_figures:
                overview_studies.append(
                    {
                        "study_id": study_id,
                        "image": display_image(image_processor, example["image"]),
                        "findings": overview_findings,
                    }
                )
            if len(figures) < grounding_args.num_figures:
                image_frame = display_image(image_processor, example["image"])
                union = np.logical_or.reduce(framed_masks)
                path = figure_dir / f"{study_id}.png"
                plot_word_heatmaps(image_frame, maps, grid, path, maps.text, grounding_args.max_panels, union)
                figures.append(str(path))
    if not records:
        reasons = (
            ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) or "the split has no finding"
        )
        raise ValueError(f"The pointing game has no finding to score in {len(dataset)} studies ({reasons}).")
    for record, fixed_hit in zip(records, fixed_point_hits([record["finding"] for record in records], masks)):
        record["fixed_point_hit"] = fixed_hit
    references_skipped = {}
    if shuffled_order is None:
        references_skipped["shuffled_image_control"] = "the split has one study: no other image to pair it with"
    if not text_prior_data:
        references_skipped["text_prior"] = "no training split with per-finding masks was given"
    elif not all("key" in record for record in records):
        references_skipped["text_prior"] = "the targets name no (finding, side, zone) (not SynthCXR's findings)"
    else:
        prior = synthcxr_text_prior(text_prior_data, image_processor, grid)
        for record, mask in zip(records, masks):
            record.update(text_prior_scores(prior, record["key"], mask))
    if overview_studies:
        overview_path = figure_dir / "overview.png"
        plot_findings_overview(overview_studies, overview_path)
    summary = pointing_game_summary(records)
    summary.update(
        patch_grid_size=list(grid),
        skipped=dict(sorted(skipped.items())),
        references_skipped=references_skipped,
        figures=figures,
        records=records,
    )
    if overview_studies:
        summary["overview_figure"] = str(overview_path)
    return summary


# (summary key, column header) of the pointing game's table and printout, in reading order
POINTING_COLUMNS = (
    ("accuracy", "own image"),
    ("shuffled_image_accuracy", "shuffled image"),
    ("text_prior_baseline", "text prior"),
    ("random_baseline", "random point"),
    ("fixed_point_baseline", "fixed point"),
    ("oracle", "oracle"),
    ("cnr", "CNR own image"),
    ("shuffled_image_cnr", "CNR shuffled image"),
    ("text_prior_cnr", "CNR text prior"),
    ("num_findings", "findings"),
)


def pointing_rows(summary: dict, markdown: bool = True) -> list[tuple[str, dict]]:
    """`(label, entry)` for the overall entry, each finding group, and each finding (groups in italics, or in
    brackets in plain text)."""
    bold, italic = ("**{}**", "*{}*") if markdown else ("{}", "[{}]")
    return [
        (bold.format("overall"), summary["overall"]),
        *((italic.format(name.replace("_", " ")), entry) for name, entry in summary.get("per_group", {}).items()),
        *summary["per_finding"].items(),
    ]


def results_markdown(summary: dict, source: dict) -> str:
    columns = [(key, label) for key, label in POINTING_COLUMNS if key in summary["overall"]]
    rows = [(name, *(entry.get(key, "—") for key, _ in columns)) for name, entry in pointing_rows(summary)]
    labels = [label if key != "oracle" else "oracle ({}×{} grid)".format(*summary["patch_grid_size"])
              for key, label in columns]  # fmt: skip
    header = f"## Pointing game: {source['dataset']} / {source['split']}\n\n"
    table = markdown_table(["finding", *labels], rows)
    notes = "".join(f"* skipped {count}: {reason}\n" for reason, count in summary["skipped"].items() if count)
    notes += "".join(
        f"* no {name.replace('_', ' ')}: {reason}\n" for name, reason in summary["references_skipped"].items()
    )
    levels = summary["overall"].get("text_prior_levels")
    if levels:
        notes += "* text prior keys used: " + ", ".join(f"{level} {count}" for level, count in levels.items()) + "\n"
    return header + table + ("\n" + notes if notes else "")


def pointing_game_lines(summary: dict) -> list[str]:
    """The printed block: every entry's numbers beside its baselines, overall, per group and per finding."""
    columns = [(key, label) for key, label in POINTING_COLUMNS if key in summary["overall"]]
    rows = pointing_rows(summary, markdown=False)
    width = max(len(name) for name, _ in rows)
    lines = [
        "Pointing game at the {}×{} grid ({} findings):".format(*summary["patch_grid_size"],
                                                               summary["overall"]["num_findings"]),
        "  " + "".ljust(width) + "".join(f"  {label:>{max(len(label), 7)}}" for _, label in columns),
    ]
    for name, entry in rows:
        cells = "".join(
            f"  {format_value(entry.get(key), 3 if key != 'num_findings' else 0):>{max(len(label), 7)}}"
            for key, label in columns
        )
        lines.append("  " + name.ljust(width) + cells)
    for name, reason in summary["references_skipped"].items():
        lines.append(f"  no {name.replace('_', ' ')}: {reason}")
    return lines


def draw_single(model, processor, eval_args, grounding_args) -> dict:
    image = Image.open(grounding_args.image_path)
    image.load()
    image = apply_exif_orientation(image)  # as the processor reads a file
    text = report_texts([grounding_args.report], eval_args.clean_reports)[0]
    if not report_has_content(text):
        raise ValueError(f"`report` has no usable text after cleaning: {grounding_args.report!r}.")
    (word_maps,), grid = grounding_maps(
        model, processor, [image], [text], eval_args.max_length, grounding_args.subword_reduce
    )
    path = Path(eval_args.output_dir) / "grounding" / f"{Path(grounding_args.image_path).stem}.png"
    frame = display_image(processor.image_processor, image)
    words = plot_word_heatmaps(frame, word_maps, grid, path, text, grounding_args.max_panels)
    logger.info("Wrote %s (%d word panels).", path, len(words))
    return {"figure": str(path), "words": words, "text": text}


def main(cli_args: list[str] | None = None) -> dict:
    setup_logging()
    parser = HfArgumentParser((EvaluationArguments, GroundingArguments))
    eval_args, grounding_args = parser.parse_args_into_dataclasses(args=cli_args)
    check_output_dir_writable(eval_args.output_dir)
    model, processor = load_sista(eval_args.model_name_or_path, eval_args.device)
    if grounding_args.image_path:
        return draw_single(model, processor, eval_args, grounding_args)

    dataset, source = load_evaluation_split(eval_args, processor)
    task = "The pointing game"
    require_columns(dataset, ["image"], task)
    if not {"findings", "objects"} <= set(dataset.column_names):
        require_columns(dataset, ["mask"], f"{task} (without SynthCXR's per-finding `findings`/`objects` columns)")
    if grounding_args.grounding_text:
        texts = [grounding_args.grounding_text] * len(dataset)
    else:
        require_columns(dataset, ["report"], f"{task} (or pass --grounding_text)")
        texts = report_texts(dataset["report"], eval_args.clean_reports)

    prior_splits, not_used, prior_reason = {}, {}, None
    if {"findings", "objects"} <= set(dataset.column_names) and not grounding_args.grounding_text:
        prior_splits, not_used, prior_reason = load_text_prior_splits(eval_args, grounding_args, source)
    else:
        prior_reason = "the dataset has no per-finding (finding, side, zone) targets"
    summary = evaluate_pointing_game(
        model, processor, dataset, texts, eval_args, grounding_args, list(prior_splits.values())
    )
    if prior_reason:
        summary["references_skipped"]["text_prior"] = prior_reason
    summary["text_prior_source"] = {
        "dataset": eval_args.dataset_dir,
        "splits": {name: len(split) for name, split in prior_splits.items()},
        "not_used": not_used,
    }
    for line in pointing_game_lines(summary):
        logger.info(line)
    results = {
        "task": "grounding",
        "command": command_line("visualize_grounding.py", cli_args),
        "model": eval_args.model_name_or_path,
        "dataset": source["dataset"],
        "split": source["split"],
        "num_studies": len(dataset),
        "rule": "hit = peak of the mean upsampled STA map of the finding's finding/location words lies in its mask; "
        "random baseline = mask area / image area; fixed-point baseline = hit rate of the pixel inside most of the "
        "finding's masks on this split; oracle = hit rate of the finding's own mask area-pooled to the model's patch "
        "grid and scored by the same rule (the ceiling at that grid); text prior = hit rate of the mean training mask "
        "of the finding's (finding, side, zone), pooled to the grid and scored by the same rule (coarser keys when "
        "unseen); shuffled image = hit rate of the same words' map computed on another study's image, scored on the "
        "report's own mask; CNR = |mean inside - mean outside| / sqrt(var inside + var outside) of the upsampled map "
        "(BioViL); a flat map is a miss",
        **summary,
        "arguments": arguments_dict(eval_args, grounding_args),
    }
    write_results(eval_args.output_dir, "grounding", results, results_markdown(summary, source))
    return results


if __name__ == "__main__":
    main()
