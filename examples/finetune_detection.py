#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Fine-tune a pre-trained SISTA encoder with an anchor-free CenterNet head for lesion detection and report
mAP@[0.40:0.75] (MGCA's protocol) and COCO mAP on the test split.

    python examples/finetune_detection.py --model_name_or_path outputs/sista-pretrain \
        --dataset_dir data/synthcxr --label_fraction 0.1 \
        --output_dir outputs/det-10pct --num_train_epochs 30 --learning_rate 5e-4 --report_to none

The dataset's `objects` column follows the Hugging Face object-detection convention: a dict of lists with `bbox`
(COCO `[x_min, y_min, width, height]` in pixels) and `category` (a `ClassLabel`). Boxes follow the images through
resizing and augmentation and reach the model as DETR-style `labels` (normalised `(center_x, center_y, width,
height)`). `--categories` keeps a subset of the classes (e.g. the lesions of SynthCXR without cardiomegaly).
Results go to `{output_dir}/detection_results.{json,md}`.
"""

import logging
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed

from sista_examples import finetuning
from modeling_sista import SistaForObjectDetection
from processing_sista import center_to_corners
from sista_examples.evaluation.results import arguments_dict, write_results
from sista_examples.hub.release import hub_push_request, push_after_training
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)
TASK = "detection"


@dataclass
class DetectionArguments:
    categories: str | None = field(
        default=None,
        metadata={"help": "Comma-separated category names to detect (others are dropped); default: all."},
    )
    score_threshold: float = field(
        default=0.001, metadata={"help": "Lowest score kept for mAP (COCO evaluates ranked detections)."}
    )
    upsample_factor: int | None = field(
        default=None, metadata={"help": "detection_upsample_factor of the head (output stride = patch / factor)."}
    )


def category_names_of(dataset) -> list[str]:
    feature = dataset.features["objects"]["category"]
    inner = getattr(feature, "feature", feature)
    names = getattr(inner, "names", None)
    if not names:
        raise ValueError(
            "`objects.category` must be a ClassLabel feature (its names are the detection classes), got "
            f"{feature!r}."
        )
    return list(names)


def check_objects(dataset, split_name: str, num_categories: int) -> int:
    """Boxes are 4 positive numbers and categories in range; returns the number of boxes."""
    num_boxes = 0
    for index, objects in enumerate(dataset["objects"]):
        if len(objects["bbox"]) != len(objects["category"]):
            raise ValueError(f"Row {index} of {split_name!r}: {len(objects['bbox'])} boxes but "
                             f"{len(objects['category'])} categories.")
        for box, category in zip(objects["bbox"], objects["category"]):
            if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
                raise ValueError(f"Row {index} of {split_name!r}: box {box} is not a COCO [x, y, width, height] box "
                                 "with a positive size.")
            if not 0 <= category < num_categories:
                raise ValueError(f"Row {index} of {split_name!r}: category {category} is outside [0, "
                                 f"{num_categories - 1}].")
        num_boxes += len(objects["bbox"])
    return num_boxes


def main(args: list[str] | None = None):
    parser = HfArgumentParser((
        finetuning.FinetuningModelArguments, finetuning.FinetuningDataArguments, DetectionArguments, TrainingArguments
    ))
    model_args, data_args, task_args, training_args = parser.parse_args_into_dataclasses(args)
    setup_logging(training_args)
    finetuning.check_arguments(model_args, data_args, training_args)
    hub_push = hub_push_request(training_args)

    dataset = finetuning.load_task_dataset(data_args, model_args, training_args)
    train_dataset, test_dataset = finetuning.select_splits(dataset, data_args, ["image", "objects"], "Detection")
    validation_dataset = finetuning.select_validation(
        dataset, data_args, ["image", "objects"], "Detection", training_args
    )
    all_names = category_names_of(train_dataset)
    if task_args.categories:
        names = [name.strip() for name in task_args.categories.split(",") if name.strip()]
        unknown = [name for name in names if name not in all_names]
        if unknown:
            raise ValueError(f"--categories {unknown} are not among the dataset's categories {all_names}.")
    else:
        names = all_names
    category_map = {all_names.index(name): index for index, name in enumerate(names)}
    for split, split_name in ((train_dataset, data_args.train_split), (test_dataset, data_args.test_split)):
        if check_objects(split, split_name, len(all_names)) == 0:
            raise ValueError(f"Split {split_name!r} has no box at all: detection cannot be trained or scored on it.")

    head_kwargs = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                   "label2id": {name: index for index, name in enumerate(names)}}
    if task_args.upsample_factor is not None:
        head_kwargs["detection_upsample_factor"] = task_args.upsample_factor
    set_seed(training_args.seed)  # the head's initial weights follow --seed, whatever ran before in the process
    model = finetuning.load_head(SistaForObjectDetection, model_args, **head_kwargs)
    image_processor = finetuning.load_image_processor(model_args, model.config)
    image_size = finetuning.image_processor_size(image_processor)

    def transform(batch):
        targets = []
        for image, objects in zip(batch["image"], batch["objects"]):
            chosen = [index for index, category in enumerate(objects["category"]) if category in category_map]
            boxes, kept = finetuning.boxes_to_model_frame(
                [objects["bbox"][index] for index in chosen], image.size[0], image.size[1], image_processor
            )
            class_labels = torch.tensor([category_map[objects["category"][chosen[index]]] for index in kept],
                                        dtype=torch.long)
            targets.append({"class_labels": class_labels, "boxes": boxes})
        return {"pixel_values": finetuning.process_images(image_processor, batch["image"]), "labels": targets}

    augmentation = finetuning.augmentation_of(data_args)

    def collate(examples, augment):
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        labels = [example["labels"] for example in examples]
        if augment:
            pixel_values, _, boxes = augmentation.augment_batch(pixel_values, boxes=[t["boxes"] for t in labels])
            labels = [
                {"class_labels": target["class_labels"][(moved[:, 2:] > 0).all(dim=1)],
                 "boxes": moved[(moved[:, 2:] > 0).all(dim=1)]}
                for target, moved in zip(labels, boxes)
            ]
        return {"pixel_values": pixel_values, "labels": labels}

    metric = finetuning.load_metric("detection_map")
    scale = torch.tensor([image_size[1], image_size[0]] * 2, dtype=torch.float32)

    def step(model, batch):
        outputs = model(pixel_values=batch["pixel_values"])
        detections = model.post_process_object_detection(
            outputs, threshold=task_args.score_threshold, target_sizes=[image_size] * batch["pixel_values"].shape[0]
        )
        predictions = [{key: value.cpu().tolist() for key, value in detection.items()} for detection in detections]
        references = [
            {"boxes": (center_to_corners(target["boxes"]) * scale).tolist(), "labels": target["class_labels"].tolist()}
            for target in batch["labels"]
        ]
        metric.add_batch(predictions=predictions, references=references)
        return sum(len(target["labels"]) for target in references)

    num_boxes = finetuning.train_and_predict(
        model, training_args, image_processor, transform, collate, train_dataset, validation_dataset, test_dataset,
        step, augment=data_args.augment,
    )
    if num_boxes is None:  # not the main process
        return None
    if sum(num_boxes) == 0:
        raise ValueError("The test split has no box of the chosen categories: mAP is undefined.")
    metrics = metric.compute()
    metrics["map_40_75_per_class"] = {
        names[int(label)]: value for label, value in metrics["map_40_75_per_class"].items()
    }
    results = {
        "task": TASK,
        **finetuning.run_description(
            model_args, data_args, len(train_dataset), len(test_dataset), "finetune_detection.py", args
        ),
        "categories": names,
        "metrics": metrics,
    }
    headline = {
        "label fraction": data_args.label_fraction,
        "encoder": "frozen" if model_args.freeze_encoder else "fine-tuned",
        "train samples": len(train_dataset),
        "test samples": len(test_dataset),
        "mAP@[.40:.75]": metrics["map_40_75"],
        "mAP@[.50:.95]": metrics["map"],
        "AP50": metrics["map_50"],
    }
    results["arguments"] = arguments_dict(model_args, data_args, task_args)
    write_results(training_args.output_dir, TASK, results, finetuning.headline_markdown(TASK, headline))
    push_after_training(hub_push, training_args.output_dir, model_args.model_name_or_path)
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or None)
