#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Fine-tune a pre-trained SISTA encoder with a light progressive-upsampling decoder for lesion segmentation and report
Dice on the test split.

    python examples/finetune_segmentation.py --model_name_or_path outputs/sista-pretrain \
        --dataset_dir data/synthcxr --label_fraction 0.1 \
        --output_dir outputs/seg-10pct --num_train_epochs 20 --learning_rate 5e-4 --report_to none

The dataset's `mask` column is a binary lesion mask image (0 background, non-zero lesion; SynthCXR and SIIM-ACR
store 0/255). Masks follow the images through resizing and augmentation. Results go to
`{output_dir}/segmentation_results.{json,md}`: `dice` over all test pixels and `mean_image_dice`; on a dataset with
per-finding masks (SynthCXR's `objects.mask`), also the Dice of each lesion type and of small and large lesions,
per image (`sista_examples.evaluation.lesion_dice`).
"""

import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import HfArgumentParser, TrainingArguments, set_seed

from sista_examples import finetuning
from modeling_sista import SistaForSemanticSegmentation
from sista_examples.evaluation.lesion_dice import (
    has_lesion_masks,
    image_lesion_dice,
    lesion_type_masks,
    summarize_lesion_dice,
)
from sista_examples.evaluation.results import arguments_dict, write_results
from sista_examples.hub.release import hub_push_request, push_after_training
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)
TASK = "segmentation"


@dataclass
class SegmentationArguments:
    segmentation_decoder: str | None = field(
        default=None,
        metadata={"help": "Decoder of the head: 'unet' over the tower's stages (ResNet, ConvNeXt, Swin), 'setr_pup' on "
                          "the last patch grid, or 'auto' (the U-Net where the tower has stages); default: the "
                          "checkpoint's config ('auto' unless it says otherwise).",
                  "choices": ["auto", "setr_pup", "unet"]},
    )


def check_masks(dataset, split_name: str) -> None:
    """Every row has a mask image of its image's size (checked before training, not at step 100)."""
    # one row at a time: the whole column of a real dataset does not fit in memory
    for index, row in enumerate(dataset.select_columns(["image", "mask"])):
        image, mask = row["image"], row["mask"]
        if mask is None:
            raise ValueError(f"Row {index} of split {split_name!r} has no `mask`: segmentation needs one per image.")
        if mask.size != image.size:
            raise ValueError(
                f"Row {index} of split {split_name!r}: the mask is {mask.size} pixels, its image {image.size}."
            )


def main(args: list[str] | None = None):
    parser = HfArgumentParser((finetuning.FinetuningModelArguments, finetuning.FinetuningDataArguments, SegmentationArguments, TrainingArguments))
    model_args, data_args, task_args, training_args = parser.parse_args_into_dataclasses(args)
    setup_logging(training_args)
    finetuning.check_arguments(model_args, data_args, training_args)
    hub_push = hub_push_request(training_args)

    dataset = finetuning.load_task_dataset(data_args, model_args, training_args)
    train_dataset, test_dataset = finetuning.select_splits(dataset, data_args, ["image", "mask"], "Segmentation")
    validation_dataset = finetuning.select_validation(
        dataset, data_args, ["image", "mask"], "Segmentation", training_args, loss_only=False
    )
    check_masks(train_dataset, data_args.train_split)
    check_masks(test_dataset, data_args.test_split)

    set_seed(training_args.seed)  # the head's initial weights follow --seed, whatever ran before in the process
    decoder = {} if task_args.segmentation_decoder is None else {"segmentation_decoder": task_args.segmentation_decoder}
    model = finetuning.load_head(
        SistaForSemanticSegmentation, model_args, num_labels=1, id2label={0: "lesion"}, label2id={"lesion": 0},
        **decoder,
    )
    logger.info(f"Segmentation decoder: {model.decoder_type} (config `segmentation_decoder`="
                f"{model.config.segmentation_decoder!r}).")
    image_processor = finetuning.load_image_processor(model_args, model.config)
    image_height, image_width = finetuning.image_processor_size(image_processor)

    def transform(batch):
        return {
            "pixel_values": finetuning.process_images(image_processor, batch["image"]),
            "labels": finetuning.process_masks(image_processor, batch["mask"]),
        }

    augmentation = finetuning.augmentation_of(data_args)

    def collate(examples, augment):
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        masks = torch.stack([example["labels"] for example in examples])
        if augment:
            pixel_values, masks, _ = augmentation.augment_batch(pixel_values, masks=masks)
        batch = {"pixel_values": pixel_values, "labels": masks}
        if "lesion_masks" in examples[0]:
            batch["lesion_masks"] = [example["lesion_masks"] for example in examples]
        return batch

    with_lesion_types = has_lesion_masks(test_dataset)
    if not with_lesion_types:
        logger.info("The test split has no per-finding masks (`objects.mask`, `findings`): no Dice per lesion type.")

    def test_transform(batch):
        """`transform`, plus each lesion type's mask in the model's frame: `{type: (height, width) 0/1}` per row."""
        processed = transform(batch)
        if with_lesion_types:
            processed["lesion_masks"] = []
            for image, objects, findings in zip(batch["image"], batch["objects"], batch["findings"]):
                by_type = lesion_type_masks(objects, findings, image.size[1], image.size[0])
                resized = finetuning.process_masks(
                    image_processor, [Image.fromarray(mask.astype(np.uint8) * 255) for mask in by_type.values()]
                ) if by_type else []
                processed["lesion_masks"].append(dict(zip(by_type, resized)))
        return processed

    def binarize(logits, labels):  # what the Trainer keeps of each validation batch: the predicted mask
        logits = logits[0] if isinstance(logits, tuple) else logits
        return (logits[:, 0] > 0).to(torch.int8)

    def validation_dice(prediction):
        """`eval_dice` and `eval_mean_image_dice`, for `--metric_for_best_model dice` (the test split's metric)."""
        dice = finetuning.load_metric("dice")
        return dice.compute(
            predictions=[mask.reshape(-1) for mask in prediction.predictions.astype(np.int16)],
            references=[mask.reshape(-1) for mask in prediction.label_ids.astype(np.int16)],
        )

    metric = finetuning.load_metric("dice")
    lesion_dice = []  # one {lesion type: Dice} per test image

    def step(model, batch):
        predicted = (model(pixel_values=batch["pixel_values"]).logits[:, 0] > 0).to(torch.int16).cpu()
        references = batch["labels"].to(torch.int16).cpu()
        metric.add_batch(
            predictions=[mask.flatten().numpy() for mask in predicted],
            references=[mask.flatten().numpy() for mask in references],
        )
        for prediction, by_type in zip(predicted, batch.get("lesion_masks", [])):
            lesion_dice.append(image_lesion_dice(
                prediction.numpy(), {name: mask.numpy().astype(bool) for name, mask in by_type.items()}
            ))
        return int(references.sum())

    foreground = finetuning.train_and_predict(
        model, training_args, image_processor, transform, collate, train_dataset, validation_dataset, test_dataset,
        step, augment=data_args.augment, test_transform=test_transform,
        compute_metrics=validation_dice if validation_dataset is not None else None,
        preprocess_logits_for_metrics=binarize if validation_dataset is not None else None,
    )
    if foreground is None:  # not the main process
        return None
    metrics = metric.compute()
    if with_lesion_types:
        metrics.update(summarize_lesion_dice(lesion_dice))
    results = {
        "task": TASK,
        **finetuning.run_description(
            model_args, data_args, len(train_dataset), len(test_dataset), "finetune_segmentation.py", args
        ),
        "metrics": {**metrics, "test_foreground_fraction": float(np.sum(foreground)) / (
            len(test_dataset) * image_height * image_width)},
        "decoder": model.decoder_type,
    }
    headline = {
        "label fraction": data_args.label_fraction,
        "encoder": "frozen" if model_args.freeze_encoder else "fine-tuned",
        "decoder": model.decoder_type,
        "train samples": len(train_dataset),
        "test samples": len(test_dataset),
        "Dice": metrics["dice"],
        "mean image Dice": metrics["mean_image_dice"],
    }
    if with_lesion_types:
        headline.update({"Dice small lesions": metrics["dice_small"], "Dice large lesions": metrics["dice_large"]})
    results["arguments"] = arguments_dict(model_args, data_args, task_args)
    write_results(training_args.output_dir, TASK, results, finetuning.headline_markdown(TASK, headline))
    push_after_training(hub_push, training_args.output_dir, model_args.model_name_or_path)
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or None)
