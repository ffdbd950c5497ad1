# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Probes of why STA word maps do or do not ground, on a checkpoint written by `testbed.py`:

* image dependence: the finding words' maps with the report's own image against the same report paired with another
  image (a random permutation of the test studies); a map that does not look at the image barely changes, and its
  pointing game scored against the true image's mask stays the same;
* word prior: the pointing game of each word's mean map over the test studies (one fixed map per word);
* border: where the maps peak (the outer ring of the grid holds 28 of 64 cells) against where the masks lie, and the
  maps of a blank image (no anatomy: any structure comes from the tower's zero padding);
* position code: the share of the patch embeddings' variance that their grid position explains;
* sparsity: how many patches `A` keeps per token;
* grid mapping: the centroid of each grid cell's input gradient (its effective receptive field) against the patch
  centre the pointing game assumes.

    python research/grounding/probe.py --data_dir data/synthcxr128 --model_dir outputs/grounding/x/model \
        --output_json outputs/grounding/x/probe.json
"""

import argparse
import json
import logging

import numpy as np
import torch
from datasets import load_from_disk
from PIL import Image

import testbed
from modeling_sista import SistaModel
from processing_sista import SistaProcessor
from sista_examples.evaluation import grounding


logger = logging.getLogger(__name__)


def border_cells(grid: tuple[int, int]) -> np.ndarray:
    rows, columns = np.indices(grid)
    return ((rows == 0) | (columns == 0) | (rows == grid[0] - 1) | (columns == grid[1] - 1)).reshape(-1)


def finding_word_map(example, pair, image_processor, kind="sta_weights"):
    """`[(finding, word map (num_patches,), mask in the model frame)]` of one study, as the pointing game builds
    them."""
    from collections import Counter

    maps = grounding.word_maps_from_encoding(example["report"], pair["encoding"], testbed.MAP_KINDS[kind](pair, 0.1))
    return [
        (
            target["finding"],
            maps.maps[target["word_indices"]].mean(axis=0),
            grounding.mask_to_model_frame(image_processor, target["mask"]),
        )
        for target in grounding.finding_targets(example, maps, Counter())
    ]


def hit(word_map, grid, mask) -> bool:
    return grounding.pointing_game_hit(grounding.upsample_maps(word_map[None], grid, mask.shape)[0], mask)[0]


def position_variance_share(patch_embeds: np.ndarray) -> float:
    """Share of the patch embeddings' total variance explained by the grid position (mean over images per cell)."""
    total = ((patch_embeds - patch_embeds.mean(axis=(0, 1))) ** 2).sum(axis=-1).mean()
    per_position = patch_embeds.mean(axis=0)
    between = ((per_position - per_position.mean(axis=0)) ** 2).sum(axis=-1).mean()
    return float(between / total)


def receptive_field_offsets(model, image_size: int, grid: tuple[int, int]) -> dict:
    """Centroid of |d feature(cell) / d input| per cell against the cell centre `(index + 0.5) * stride`, in pixels."""
    model.eval()
    pixel_values = torch.randn(1, 3, image_size, image_size, requires_grad=True)
    _, _, patch_features, _ = model.encode_image(pixel_values)
    stride = image_size / grid[1]
    offsets = []
    rows, columns = np.indices((image_size, image_size))
    for cell in range(grid[0] * grid[1]):
        gradient = torch.autograd.grad(patch_features[0, cell].norm(), pixel_values, retain_graph=True)[0]
        weight = gradient[0].abs().sum(dim=0).numpy()
        weight = weight / weight.sum()
        centre_row, centre_column = (weight * rows).sum(), (weight * columns).sum()
        expected_row = ((cell // grid[1]) + 0.5) * stride - 0.5
        expected_column = ((cell % grid[1]) + 0.5) * stride - 0.5
        offsets.append((centre_row - expected_row, centre_column - expected_column))
    offsets = np.array(offsets)
    interior = ~border_cells(grid)
    return {
        "mean_offset_px_interior": offsets[interior].mean(axis=0).round(2).tolist(),
        "max_abs_offset_px_interior": float(np.abs(offsets[interior]).max().round(2)),
        "mean_abs_offset_px_border": float(np.abs(offsets[~interior]).mean().round(2)),
        "stride_px": stride,
    }


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", default="data/synthcxr128", help="A SynthCXR folder (generate_synthcxr.py).")
    parser.add_argument("--num_test", type=int, default=500)
    parser.add_argument("--output_json", required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = SistaModel.from_pretrained(args.model_dir).eval()
    processor = SistaProcessor.from_pretrained(args.model_dir)
    image_processor = processor.image_processor
    test = load_from_disk(args.data_dir)["test"]
    test = test.select(range(min(args.num_test, len(test))))
    permutation = np.random.default_rng(0).permutation(len(test))
    shuffled_images = test.select_columns(["image"]).select(permutation)["image"]

    encoded = testbed.encode_test(model, processor, test)
    grid = encoded["grid"]
    mismatched = testbed.encode_test(model, processor, test, images=shuffled_images)
    blank_value = int(np.mean([np.asarray(image).mean() for image in test.select(range(min(50, len(test))))["image"]]))
    blank_image = Image.new("L", test[0]["image"].size, blank_value)
    blank = testbed.encode_test(model, processor, test, images=[blank_image] * len(test))

    ring = border_cells(grid)
    results = {"model_dir": args.model_dir, "grid": grid, "num_test": len(test)}
    rows = []
    word_maps_by_finding = {}
    for index, example in enumerate(test):
        own = finding_word_map(example, encoded["pairs"][index], image_processor)
        other = finding_word_map(example, mismatched["pairs"][index], image_processor)
        empty = finding_word_map(example, blank["pairs"][index], image_processor)
        for (finding, own_map, mask), (_, other_map, _), (_, blank_map, _) in zip(own, other, empty):
            rows.append(
                {
                    "finding": finding,
                    "own_hit": hit(own_map, grid, mask),
                    "other_image_hit": hit(other_map, grid, mask),
                    "blank_image_hit": hit(blank_map, grid, mask),
                    "own_other_correlation": float(np.corrcoef(own_map, other_map)[0, 1]),
                    "own_peak_on_border": bool(ring[int(np.argmax(own_map))]),
                    "blank_peak_on_border": bool(ring[int(np.argmax(blank_map))]),
                    "mask_centre_on_border": bool(ring[int(np.argmax(grounding.pool_mask_to_grid(mask, grid)))]),
                    "map": own_map,
                    "mask": mask,
                }
            )
            word_maps_by_finding.setdefault(finding, []).append(own_map)
    priors = {finding: np.mean(maps, axis=0) for finding, maps in word_maps_by_finding.items()}
    for row in rows:
        row["prior_hit"] = hit(priors[row["finding"]], grid, row["mask"])
    mean = lambda key: float(np.mean([row[key] for row in rows]))  # noqa: E731
    results["pointing_game"] = {
        key: mean(key) for key in ("own_hit", "other_image_hit", "blank_image_hit", "prior_hit")
    }
    results["own_vs_other_image_map_correlation"] = mean("own_other_correlation")
    results["peak_on_border"] = {
        "own_image": mean("own_peak_on_border"),
        "blank_image": mean("blank_peak_on_border"),
        "mask_centre": mean("mask_centre_on_border"),
        "uniform": float(ring.mean()),
    }
    patch_embeds = np.stack([pair["patch_embeds"] for pair in encoded["pairs"]])
    blank_patches = blank["pairs"][0]["patch_embeds"]
    blank_similarity = blank_patches @ blank_patches.T
    results["position_variance_share"] = position_variance_share(patch_embeds)
    results["blank_image_patch_cosine"] = {
        "interior_interior": float(blank_similarity[np.ix_(~ring, ~ring)].mean()),
        "border_interior": float(blank_similarity[np.ix_(ring, ~ring)].mean()),
    }
    kept = [
        float((pair["weights"][pair["weights"].sum(-1) > 0] > 0).mean()) for pair in encoded["pairs"]
    ]
    results["sta_kept_patch_fraction"] = float(np.mean(kept))
    if getattr(model.config.vision_config, "model_type", "") == "resnet":
        results["receptive_field"] = receptive_field_offsets(model, image_processor.size["height"], grid)
    per_finding = {}
    for finding in sorted(priors):
        group = [row for row in rows if row["finding"] == finding]
        per_finding[finding] = {
            key: float(np.mean([row[key] for row in group]))
            for key in ("own_hit", "other_image_hit", "prior_hit", "own_other_correlation", "own_peak_on_border")
        }
        per_finding[finding]["count"] = len(group)
    results["per_finding"] = per_finding
    with open(args.output_json, "w") as handle:
        json.dump(results, handle, indent=1)
    logger.info(json.dumps({key: value for key, value in results.items() if key != "per_finding"}, indent=1))
    return results


if __name__ == "__main__":
    main()
