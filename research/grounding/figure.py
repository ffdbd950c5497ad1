# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The grounding figure: for a few test studies, the image with the finding's mask outlined, then the finding words' STA
map of each model given, with the report's own image, with another study's image (a map that looks at the image
changes; the mask drawn is the report's own) and with a blank image (no anatomy, so whatever a map shows there comes
from the tower, e.g. its zero padding). The cross marks the map's peak.

    python research/grounding/figure.py --data_dir data/synthcxr128 --output research/grounding/grounding.png \
        --model "SPARC contrast=outputs/grounding/resnet_sista_tokens/model" \
        --model "image contrast=outputs/grounding/resnet_sista_images/model"
"""

import argparse

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from datasets import load_from_disk  # noqa: E402
from PIL import Image  # noqa: E402

import testbed  # noqa: E402
from modeling_sista import SistaModel  # noqa: E402
from probe import finding_word_map  # noqa: E402
from processing_sista import SistaProcessor  # noqa: E402
from sista_examples.evaluation import grounding  # noqa: E402


def pick_studies(test, wanted=("effusion", "pneumothorax", "consolidation", "cardiomegaly")) -> list[int]:
    """The first test study whose first finding is each wanted one (and has a mask)."""
    chosen = []
    for name in wanted:
        for index, example in enumerate(test):
            findings = example["findings"]
            if findings and findings[0]["name"] == name and index not in chosen and len(example["objects"]["mask"]):
                chosen.append(index)
                break
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="label=model_dir")
    parser.add_argument("--data_dir", default="data/synthcxr128", help="A SynthCXR folder (generate_synthcxr.py).")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    test = load_from_disk(args.data_dir)["test"]
    studies = test.select(pick_studies(test))
    columns = []
    for spec in args.model:
        label, model_dir = spec.split("=", 1)
        model = SistaModel.from_pretrained(model_dir).eval()
        processor = SistaProcessor.from_pretrained(model_dir)
        own = testbed.encode_test(model, processor, studies)
        blank_value = int(np.mean([np.asarray(image).mean() for image in studies["image"]]))
        blank = testbed.encode_test(
            model, processor, studies, images=[Image.new("L", studies[0]["image"].size, blank_value)] * len(studies)
        )
        other_images = studies["image"][1:] + studies["image"][:1]
        other = testbed.encode_test(model, processor, studies, images=other_images)
        columns.append((f"{label}\nown image", own, processor))
        columns.append((f"{label}\nanother study's image", other, processor))
        columns.append((f"{label}\nblank image", blank, processor))

    figure, axes = plt.subplots(len(studies), len(columns) + 1, figsize=(1.9 * (len(columns) + 1), 2.0 * len(studies)))
    image_processor = columns[0][2].image_processor
    for row, example in enumerate(studies):
        image = grounding.display_image(image_processor, example["image"])
        targets = finding_word_map(example, columns[0][1]["pairs"][row], image_processor)
        finding, _, mask = targets[0]
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 0].contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        axes[row, 0].set_title(finding, fontsize=8)
        for column, (label, encoded, processor) in enumerate(columns, start=1):
            _, word_map, _ = finding_word_map(example, encoded["pairs"][row], processor.image_processor)[0]
            heatmap = grounding.upsample_maps(word_map[None], encoded["grid"], mask.shape)[0]
            axes[row, column].imshow(image, cmap="gray")
            axes[row, column].imshow(heatmap, cmap="jet", alpha=0.45)
            axes[row, column].contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
            peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
            axes[row, column].plot(peak[1], peak[0], "w+", markersize=9, markeredgewidth=2)
            if row == 0:
                axes[row, column].set_title(label, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(args.output, dpi=70)


if __name__ == "__main__":
    main()
