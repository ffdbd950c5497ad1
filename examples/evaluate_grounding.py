#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
MS-CXR phrase grounding with a SISTA checkpoint: each radiologist phrase is mapped onto its image by two routes and
scored inside vs outside its boxes, per category, beside baselines that do not look at the image.

Routes (one forward pass of the phrase with its image gives both):

* **word-to-patch** (SISTA's own): the STA weights `token_patch_weights` of the phrase's content words, sub-tokens
  merged into words, averaged (`sista_examples.evaluation.grounding`, the pointing game's maps);
* **phrase-to-patch** (BioViL's reading): the cosine of each projected patch embedding with the projected phrase
  embedding, smoothed by a Gaussian of `--smoothing_sigma` patches (1.5, hi-ml's value).

Each patch map is upsampled bilinearly to the model's input frame, where the union of the phrase's boxes is the mask
(`mask_to_model_frame`), and scored by: the **pointing game** (peak inside the boxes), BioViL's **CNR**
(`contrast_to_noise_ratio`) and **mIoU** (the map min-max scaled per image, thresholded at `--miou_thresholds`, IoU
with the boxes, averaged). The references: the **shuffled-image control** (the phrase mapped on another image, scored
on its own boxes), the **text prior** (the mean box mask of the phrase's (category, side, zone) key, fitted on the
other half of the patients, two folds), the **random point** (box area / image area) and the **oracle** (the boxes
pooled to the patch grid, the pointing ceiling at that grid). Results are per category, averaged over categories
(as the MS-CXR papers report) and over phrases.

Usage:

    python examples/evaluate_grounding.py --model_name_or_path outputs/sista --dataset_dir data/ms_cxr \
        --split test --output_dir outputs/evaluation
"""

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.common import (
    EvaluationArguments,
    batch_ranges,
    load_evaluation_split,
    require_columns,
)
from sista_examples.evaluation.grounding import (
    SUBWORD_REDUCTIONS,
    TEXT_PRIOR_UNSEEN,
    build_text_prior,
    contrast_to_noise_ratio,
    contrast_to_noise_ratio_or_zero,
    mask_to_model_frame,
    oracle_pointing_hit,
    pointing_game_hit,
    random_point_baseline,
    shuffled_image_order,
    token_patch_forward,
    upsample_maps,
    word_maps_from_encoding,
)
from sista_examples.evaluation.phrase_grounding import (
    BIOVIL_SMOOTHING_SIGMA,
    DEFAULT_MIOU_THRESHOLDS,
    ROUTES,
    mean_iou,
    phrase_embedding_map,
    phrase_prior_key,
    summarise_phrases,
    two_fold,
)
from sista_examples.evaluation.results import arguments_dict, command_line, markdown_table, write_results
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)


@dataclass
class PhraseGroundingArguments:
    """
    Arguments of the MS-CXR phrase grounding evaluation.

    Args:
        miou_thresholds (`str`, *optional*, defaults to `"0.1,0.2,0.3,0.4,0.5"`):
            Comma-separated thresholds of the min-max scaled map whose IoUs with the boxes are averaged.
        smoothing_sigma (`float`, *optional*, defaults to 1.5):
            Gaussian smoothing of the phrase-to-patch map, in patches (BioViL's value; 0 turns it off).
        subword_reduce (`str`, *optional*, defaults to `"mean"`):
            How the STA maps of a word's sub-tokens are merged: `"mean"` or `"sum"`.
        shuffle_seed (`int`, *optional*, defaults to 0):
            Seed of the shuffled-image pairing and of the text prior's two patient folds.
    """

    miou_thresholds: str = field(
        default=",".join(map(str, DEFAULT_MIOU_THRESHOLDS)),
        metadata={"help": "Comma-separated thresholds of the min-max scaled map for mIoU."},
    )
    smoothing_sigma: float = field(
        default=BIOVIL_SMOOTHING_SIGMA, metadata={"help": "Gaussian smoothing (patches) of the phrase-to-patch map."}
    )
    subword_reduce: str = field(default="mean", metadata={"help": "Merge sub-token STA maps by 'mean' or 'sum'."})
    shuffle_seed: int = field(default=0, metadata={"help": "Seed of the shuffled-image pairing and prior folds."})

    def __post_init__(self):
        try:
            self.thresholds = [float(value) for value in self.miou_thresholds.split(",") if value.strip()]
        except ValueError:
            raise ValueError(f"`miou_thresholds` must be comma-separated numbers, got {self.miou_thresholds!r}.")
        if not self.thresholds or not all(0 < value <= 1 for value in self.thresholds):
            raise ValueError(f"`miou_thresholds` must be numbers in (0, 1], got {self.miou_thresholds!r}.")
        if self.smoothing_sigma < 0:
            raise ValueError(f"`smoothing_sigma` must be >= 0, got {self.smoothing_sigma}.")
        if self.subword_reduce not in SUBWORD_REDUCTIONS:
            raise ValueError(f"`subword_reduce` must be one of {SUBWORD_REDUCTIONS}, got {self.subword_reduce!r}.")


@torch.no_grad()
def phrase_maps(model, processor, images: list, phrases: list[str], args, grounding_args) -> tuple[list, tuple]:
    """
    One forward pass of phrases with images. Returns `([{route: patch map or None}], grid)`: the word-to-patch map is
    `None` for a phrase without a content word that STA maps.
    """
    encoding, outputs = token_patch_forward(model, processor, images, phrases, args.max_length)
    grid = tuple(int(side) for side in outputs.patch_grid_size)
    weights = outputs.token_patch_weights.float().cpu().numpy()
    patch_embeds = outputs.image_patch_embeds.float().cpu().numpy()
    phrase_embeds = outputs.text_embeds.float().cpu().numpy()
    maps = []
    for index, phrase in enumerate(phrases):
        words = word_maps_from_encoding(
            phrase, encoding.encodings[index], weights[index], grounding_args.subword_reduce
        )
        content = words.content_indices()
        maps.append(
            {
                "word_to_patch": words.maps[content].mean(axis=0) if content else None,
                "phrase_to_patch": phrase_embedding_map(
                    patch_embeds[index], phrase_embeds[index], grid, grounding_args.smoothing_sigma
                ),
            }
        )
    return maps, grid


def score_map(patch_map, grid, mask, thresholds) -> dict:
    """
    Pointing hit, CNR (BioViL's, with |.|), signed CNR (positive only for a map higher inside the boxes), both `None`
    when infinite (a map constant on each side), and mIoU of one patch map against a mask with pixels on both sides.
    """
    if patch_map is None:
        return {"hit": False, "cnr": 0.0, "signed_cnr": 0.0, "miou": 0.0}
    heatmap = upsample_maps(np.asarray(patch_map).reshape(1, -1), grid, mask.shape)[0]
    cnr = contrast_to_noise_ratio_or_zero(heatmap, mask)
    signed_cnr = contrast_to_noise_ratio(heatmap, mask, absolute=False)
    return {
        "hit": pointing_game_hit(heatmap, mask)[0],
        "cnr": cnr if np.isfinite(cnr) else None,
        "signed_cnr": signed_cnr if np.isfinite(signed_cnr) else None,
        "miou": mean_iou(heatmap, mask, thresholds),
    }


def run_maps(model, processor, dataset, image_rows: np.ndarray, args, grounding_args, desc: str):
    """Maps of every phrase, each paired with the image of row `image_rows[i]`."""
    maps, grid = [], None
    phrases = dataset["phrase"]
    for start, stop in tqdm(list(batch_ranges(len(dataset), args.batch_size)), desc=desc):
        images = [dataset[int(row)]["image"] for row in image_rows[start:stop]]
        batch_maps, grid = phrase_maps(model, processor, images, phrases[start:stop], args, grounding_args)
        maps += batch_maps
    return maps, grid


def evaluate_phrase_grounding(model, processor, dataset, args, grounding_args) -> dict:
    category_names = dataset.features["category"].names
    categories = [category_names[index] for index in dataset["category"]]
    phrases = dataset["phrase"]
    image_processor = processor.image_processor
    masks = [mask_to_model_frame(image_processor, np.asarray(mask) > 0) for mask in dataset["mask"]]

    own_maps, grid = run_maps(model, processor, dataset, np.arange(len(dataset)), args, grounding_args, "MS-CXR")
    # The shuffled-image control pairs each phrase with another *image* (not only another row: one image carries
    # several phrases), a seeded derangement of the distinct images.
    dicom_ids = dataset["dicom_id"] if "dicom_id" in dataset.column_names else dataset["image_id"]
    distinct = list(dict.fromkeys(dicom_ids))
    first_row = {dicom_id: dicom_ids.index(dicom_id) for dicom_id in distinct}
    image_order = shuffled_image_order(len(distinct), grounding_args.shuffle_seed)
    position = {dicom_id: index for index, dicom_id in enumerate(distinct)}
    shuffled_rows = np.array([first_row[distinct[image_order[position[dicom_id]]]] for dicom_id in dicom_ids])
    shuffled_maps, _ = run_maps(model, processor, dataset, shuffled_rows, args, grounding_args, "MS-CXR, shuffled")

    # Text prior: two folds by patient, each scored with the prior fitted on the other fold.
    keys = [phrase_prior_key(category, phrase) for category, phrase in zip(categories, phrases)]
    patients = dataset["patient_id"] if "patient_id" in dataset.column_names else list(dicom_ids)
    folds = two_fold(patients, grounding_args.shuffle_seed)
    priors = {}
    for fold in (0, 1):
        training = [(keys[row], masks[row]) for row in range(len(dataset)) if folds[row] != fold]
        priors[fold] = build_text_prior(training, grid) if training else None

    image_ids = dataset["image_id"]
    records, skipped = [], Counter()
    for row in range(len(dataset)):
        mask = masks[row]
        if not mask.any() or mask.all():
            skipped["boxes cover none or all of the model's input frame"] += 1
            continue
        record = {"index": row, "image_id": image_ids[row], "category": categories[row],
                  "phrase": phrases[row]}  # fmt: skip
        for route in ROUTES:
            if own_maps[row][route] is None:
                skipped[f"{route}: phrase has no content word with a map"] += 1
            # "baseline" in a name keeps it out of the model's own metrics on a model card
            for prefix, maps in ((route, own_maps), (f"{route}_shuffled_image_baseline", shuffled_maps)):
                scores = score_map(maps[row][route], grid, mask, grounding_args.thresholds)
                record.update({f"{prefix}_{name}": value for name, value in scores.items()})
        prior = priors[int(folds[row])]
        prior_map, prior_level = prior.lookup(keys[row]) if prior is not None else (None, TEXT_PRIOR_UNSEEN)
        record["text_prior_level"] = prior_level  # which key level the prior fell back to ("unseen": no map, a miss)
        prior_scores = score_map(prior_map, grid, mask, grounding_args.thresholds)
        record.update({f"text_prior_baseline_{name}": value for name, value in prior_scores.items()})
        record["random_point_baseline"] = random_point_baseline(mask)
        record["oracle_hit"] = oracle_pointing_hit(mask, grid)
        records.append(record)
    summary = summarise_phrases(records)
    summary.update(
        patch_grid_size=list(grid),
        skipped=dict(sorted(skipped.items())),
        text_prior_levels=dict(Counter(record["text_prior_level"] for record in records)),
        records=records,
    )
    return summary


def results_markdown(summary: dict, source: dict, thresholds: list[float]) -> str:
    header = f"## MS-CXR phrase grounding: {source['dataset']} / {source['split']}\n\n"
    entries = [("**category average**", summary["category_average"]), ("all phrases", summary["overall"]),
               *summary["per_category"].items()]  # fmt: skip
    text = header
    for route, title in (("word_to_patch", "word-to-patch (SISTA's STA maps)"),
                         ("phrase_to_patch", "phrase-to-patch (BioViL's phrase-embedding map)")):  # fmt: skip
        rows = [
            (name, entry[f"{route}_cnr"], entry[f"{route}_signed_cnr"], entry[f"{route}_shuffled_image_baseline_cnr"],
             entry[f"{route}_miou"],
             entry[f"{route}_shuffled_image_baseline_miou"], entry[f"{route}_hit"],
             entry[f"{route}_shuffled_image_baseline_hit"],
             entry.get("num_phrases", ""))
            for name, entry in entries
        ]  # fmt: skip
        text += f"### {title}\n\n" + markdown_table(
            ["category", "CNR", "signed CNR", "CNR, shuffled image", "mIoU", "mIoU, shuffled image", "pointing",
             "pointing, shuffled image", "phrases"],
            rows,
        )  # fmt: skip
        text += "\n"
    rows = [
        (name, entry["text_prior_baseline_cnr"], entry["text_prior_baseline_miou"], entry["text_prior_baseline_hit"],
         entry["random_point_baseline"],
         entry["oracle_hit"])
        for name, entry in entries
    ]  # fmt: skip
    grid = "{}×{}".format(*summary["patch_grid_size"])
    text += "### References that look at no image\n\n" + markdown_table(
        ["category", "text prior CNR", "text prior mIoU", "text prior pointing", "random point",
         f"oracle pointing ({grid} grid)"],
        rows,
    )  # fmt: skip
    text += f"\nmIoU thresholds (map min-max scaled per image): {', '.join(map(str, thresholds))}.\n"
    levels = ", ".join(f"{level} {count}" for level, count in sorted(summary["text_prior_levels"].items()))
    text += f"Text prior key level used (finest seen on the other patient fold): {levels}.\n"
    skipped = "".join(f"* {count}: {reason}\n" for reason, count in summary["skipped"].items())
    return text + (f"\nNot scored or scored as a miss:\n{skipped}" if skipped else "")


def main(cli_args: list[str] | None = None) -> dict:
    setup_logging()
    parser = HfArgumentParser((EvaluationArguments, PhraseGroundingArguments))
    eval_args, grounding_args = parser.parse_args_into_dataclasses(args=cli_args)
    model, processor = load_sista(eval_args.model_name_or_path, eval_args.device)
    dataset, source = load_evaluation_split(eval_args, processor)
    require_columns(dataset, ["image", "phrase", "mask", "category"], "MS-CXR phrase grounding (prepare ms_cxr)")
    if len(dataset) < 2:
        raise ValueError("MS-CXR phrase grounding needs at least 2 phrases (the shuffled-image control pairs them).")

    summary = evaluate_phrase_grounding(model, processor, dataset, eval_args, grounding_args)
    average = summary["category_average"]
    logger.info(
        "MS-CXR (category average): word-to-patch CNR %s mIoU %.4f; phrase-to-patch CNR %s mIoU %.4f; "
        "text prior CNR %s.",
        average["word_to_patch_cnr"],
        average["word_to_patch_miou"],
        average["phrase_to_patch_cnr"],
        average["phrase_to_patch_miou"],
        average["text_prior_baseline_cnr"],
    )
    results = {
        "task": "phrase_grounding",
        "command": command_line("evaluate_grounding.py", cli_args),
        "model": eval_args.model_name_or_path,
        "dataset": source["dataset"],
        "split": source["split"],
        "num_phrases": len(dataset),
        "rule": "maps upsampled bilinearly to the model's input frame; pointing = peak inside the union of the "
        "phrase's boxes; CNR = |mean_in - mean_out| / sqrt(var_in + var_out); mIoU = mean over thresholds of the IoU "
        "of (min-max scaled map >= threshold) with the boxes; shuffled image = the phrase on another image, scored on "
        "its own boxes; text prior = mean box mask of the (category, side, zone) key on the other patient fold",
        "miou_thresholds": grounding_args.thresholds,
        **summary,
        "arguments": arguments_dict(eval_args, grounding_args),
    }
    markdown = results_markdown(summary, source, grounding_args.thresholds)
    write_results(eval_args.output_dir, "phrase_grounding", results, markdown)
    return results


if __name__ == "__main__":
    main()
