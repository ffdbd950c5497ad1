# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The fine-tuning helpers shared by `finetune_classification.py`, `finetune_segmentation.py` and
`finetune_detection.py`: arguments, the dataset (SynthCXR generated when absent), the label-fraction training subset,
loading a pre-trained SISTA encoder into a task head (checked, not silently re-initialised), image/mask/box
preprocessing, the augmentation built from the arguments, the test-split prediction loop and the results table.
"""

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from tqdm.auto import tqdm
from transformers import BertConfig, ResNetConfig, ViTConfig
from transformers.image_utils import PILImageResampling

from configuration_sista import SistaConfig
from processing_sista import SistaImageProcessor

from .checkpoints import image_size_of, read_sista_config, read_training_image_size, saved_image_processor
from .data import synthcxr
from .data.label_fractions import select_label_fraction
from .data.metadata import read_dataset_metadata
from .data.synthcxr import SynthCXRGenerationArguments, load_or_generate_dataset
from .evaluation.results import command_line, markdown_table
from .training.augmentation import XRayAugmentation
from .training.trainer import CheckpointTrainer
from .utils import check_output_dir_writable


logger = logging.getLogger(__name__)

METRICS_DIR = Path(__file__).resolve().parent / "evaluation" / "metrics"
LABEL_FRACTIONS = (0.01, 0.1, 1.0)
SCRATCH_BACKBONES = ("vit", "resnet")


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class FinetuningModelArguments:
    """Which encoder to fine-tune and how."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A pre-trained SISTA folder (output of examples/pretrain.py or a saved SISTA head)."},
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Train a small randomly initialised encoder instead (baseline, tests)."}
    )
    scratch_vision_backbone: str = field(
        default="vit",
        metadata={"help": "Family of the --from_scratch encoder: a ViT (hidden size, layers, patch size below) or a "
                          "basic-block ResNet of three stages (hidden/4, hidden/2, hidden channels; stride 16).",
                  "choices": SCRATCH_BACKBONES},
    )
    scratch_image_size: int = field(default=128, metadata={"help": "Image side of the --from_scratch encoder."})
    image_size: int | None = field(
        default=None,
        metadata={"help": "Image side a --model_name_or_path encoder was trained at, for a checkpoint saved without "
                          "its processor (processor_config.json) whose config records none (ResNet, ConvNeXt). "
                          "Default: the saved processor's size, else the vision config's image_size."},
    )
    scratch_patch_size: int = field(default=16, metadata={"help": "Patch size of the --from_scratch ViT."})
    scratch_hidden_size: int = field(default=192, metadata={"help": "Hidden size of the --from_scratch encoder."})
    scratch_num_layers: int = field(default=4, metadata={"help": "Layers of the --from_scratch ViT."})
    freeze_encoder: bool = field(
        default=False, metadata={"help": "Freeze the encoder and train the head only (linear probing)."}
    )
    decoder_hidden_size: int | None = field(
        default=None, metadata={"help": "Channels of the segmentation decoder / detection head (config default)."}
    )


@dataclass
class FinetuningDataArguments(SynthCXRGenerationArguments):
    """Which data to fine-tune and test on (SynthCXR generated at the default folder, or when asked, if absent)."""

    dataset_dir: str = field(
        default="data/synthcxr",
        metadata={"help": "A DatasetDict saved with `save_to_disk` with train and test splits (SynthCXR or a dataset "
                          "prepared by examples/prepare_datasets.py). If absent, SynthCXR is generated there only "
                          "at the default path or with --generate_synthcxr; any other missing path is an error."},
    )
    train_split: str = field(default="train", metadata={"help": "Split to fine-tune on."})
    test_split: str = field(default="test", metadata={"help": "Split the metrics are computed on."})
    validation_split: str | None = field(
        default=None,
        metadata={"help": "Split the Trainer evaluates during fine-tuning (`eval_loss`; segmentation adds `eval_dice`), "
                          "e.g. `validation` with `--eval_strategy steps --load_best_model_at_end "
                          "--metric_for_best_model eval_loss` (or `dice`): the test metrics are then those of the best "
                          "validation step. Default: no evaluation during fine-tuning."},
    )
    label_fraction: float = field(
        default=1.0,
        metadata={"help": "Fraction of the training split with labels, e.g. 0.01, 0.1 or 1.0. Subsets are "
                          "deterministic and nested (the 1%% rows are among the 10%% rows)."},
    )
    label_fraction_seed: int = field(default=0, metadata={"help": "Seed of the label-fraction order."})
    min_train_samples: int = field(
        default=8, metadata={"help": "Smallest training subset, whatever the fraction (a 1%% subset of 100 images "
                                     "would otherwise be one image)."}
    )
    max_test_samples: int | None = field(default=None, metadata={"help": "Test only the first N rows (quick runs)."})
    augment: bool = field(default=True, metadata={"help": "Mild training augmentation (no flips: sides matter)."})
    scale_range: float = field(default=0.05, metadata={"help": "Largest relative zoom of the augmentation."})
    translate: float = field(default=0.04, metadata={"help": "Largest shift, fraction of the image side."})
    intensity_jitter: float = field(default=0.1, metadata={"help": "Largest brightness/contrast change."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for generation."})


def check_arguments(model_args: FinetuningModelArguments, data_args: FinetuningDataArguments, training_args) -> None:
    """Clear errors for argument combinations that cannot run, before anything is loaded."""
    if not 0 < data_args.label_fraction <= 1:
        raise ValueError(f"--label_fraction must lie in (0, 1] (e.g. 0.01, 0.1, 1.0), got {data_args.label_fraction}.")
    if data_args.min_train_samples < 1:
        raise ValueError(f"--min_train_samples must be >= 1, got {data_args.min_train_samples}.")
    if model_args.from_scratch == (model_args.model_name_or_path is not None):
        raise ValueError("Pass exactly one of --model_name_or_path (a pre-trained SISTA folder) and --from_scratch.")
    if training_args.push_to_hub and not (
        model_args.model_name_or_path is not None
        and (Path(model_args.model_name_or_path) / "processor_config.json").is_file()
    ):
        raise ValueError(
            "--push_to_hub releases the head with the processor (tokenizer included) of the pre-trained SISTA folder "
            "it was fine-tuned from: --model_name_or_path must be such a folder with a processor_config.json, got "
            f"{'--from_scratch' if model_args.from_scratch else repr(model_args.model_name_or_path)}."
        )
    check_output_dir_writable(training_args.output_dir)
    # the transforms add columns the model needs and Trainer would otherwise drop
    training_args.remove_unused_columns = False


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def load_task_dataset(
    data_args: FinetuningDataArguments, model_args: FinetuningModelArguments, training_args
) -> DatasetDict:
    """
    `--dataset_dir` through the one loader (`load_or_generate_dataset`): SynthCXR is generated there first when the
    folder does not exist (at the default folder or with `--generate_synthcxr`, see `should_generate_synthcxr`), at
    the encoder's input size unless `--synthcxr_image_size` says otherwise.
    """
    image_size = encoder_image_size(model_args)
    return load_or_generate_dataset(
        data_args.dataset_dir, data_args, image_size, training_args, num_proc=data_args.preprocessing_num_workers,
        argument="--dataset_dir", model_dir=model_args.model_name_or_path,
    )


def select_splits(dataset: DatasetDict, data_args: FinetuningDataArguments, required_columns: list[str], task: str):
    """The training subset (label fraction) and the test split; clear errors for missing or empty ones."""
    for split in (data_args.train_split, data_args.test_split):
        if split not in dataset:
            raise ValueError(f"Split {split!r} is not in {data_args.dataset_dir}; its splits are {sorted(dataset)}.")
        missing = [column for column in required_columns if column not in dataset[split].column_names]
        if missing:
            raise ValueError(
                f"{task} needs the column(s) {missing}, which split {split!r} of {data_args.dataset_dir} lacks "
                f"(columns: {dataset[split].column_names})."
            )
        if len(dataset[split]) == 0:
            raise ValueError(
                f"Split {split!r} of {data_args.dataset_dir} is empty: there is nothing to "
                f"{'train on' if split == data_args.train_split else 'test (a metric over no sample is undefined)'}."
            )
    train = select_label_fraction(
        dataset[data_args.train_split],
        data_args.label_fraction,
        data_args.label_fraction_seed,
        data_args.min_train_samples,
    )
    test = dataset[data_args.test_split]
    if data_args.max_test_samples is not None:
        test = test.select(range(min(data_args.max_test_samples, len(test))))
    used_fraction = used_label_fraction(len(train), len(dataset[data_args.train_split]), data_args)
    logger.info(f"{task}: {len(train)} training rows ({used_fraction:g} of {data_args.train_split}), "
                f"{len(test)} test rows.")
    return train, test


def select_validation(dataset: DatasetDict, data_args: FinetuningDataArguments, required_columns: list[str], task: str,
                      training_args, loss_only: bool = True):
    """
    The `--validation_split` the Trainer evaluates during fine-tuning (None without one). With `loss_only` only its
    loss is computed (`prediction_loss_only`): the detection metrics need the test loop's post-processing.
    """
    name = data_args.validation_split
    if name is None:
        return None
    if name not in dataset:
        raise ValueError(f"`--validation_split` {name!r} is not in {data_args.dataset_dir}; its splits are "
                         f"{sorted(dataset)}.")
    missing = [column for column in required_columns if column not in dataset[name].column_names]
    if missing or len(dataset[name]) == 0:
        raise ValueError(f"`--validation_split` {name!r} must hold rows with the column(s) {required_columns}; it has "
                         f"{len(dataset[name])} rows and lacks {missing}.")
    training_args.prediction_loss_only = loss_only
    logger.info(f"{task}: evaluating on {len(dataset[name])} rows of {name!r} during fine-tuning.")
    return dataset[name]


def used_label_fraction(num_selected: int, num_rows: int, data_args: FinetuningDataArguments) -> float:
    """
    The fraction of the training split actually trained on. When `--min_train_samples` raised the subset above
    `ceil(label_fraction * rows)`, `data_args.label_fraction` becomes that fraction (with a warning), so logs, tables
    and results files all state the one used; `requested_label_fraction` keeps the one asked for.
    """
    requested = data_args.label_fraction
    data_args.requested_label_fraction = requested
    if num_selected <= math.ceil(requested * num_rows):
        return requested
    used = num_selected / num_rows
    logger.warning(
        f"--label_fraction {requested:g} of {num_rows} rows is {math.ceil(requested * num_rows)} row(s); "
        f"--min_train_samples {data_args.min_train_samples} raised it to {num_selected}: the fraction used is "
        f"{used:.4g}."
    )
    data_args.label_fraction = used
    return used


def class_names_of(
    dataset, data_args: FinetuningDataArguments, num_labels: int, kind: str = "class_names"
) -> list[str]:
    """Class names from the prepared dataset's metadata, SynthCXR's CLASS_NAMES, or generic names."""
    names = (read_dataset_metadata(data_args.dataset_dir) or {}).get(kind)
    if names and len(names) == num_labels:
        return list(names)
    if len(synthcxr.CLASS_NAMES) == num_labels and "findings" in dataset.column_names:
        return list(synthcxr.CLASS_NAMES)
    return [f"LABEL_{index}" for index in range(num_labels)]


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def scratch_config(model_args: FinetuningModelArguments, **head_kwargs) -> SistaConfig:
    """A small ViT or ResNet SISTA config (the text tower is never built by a head)."""
    hidden_size = model_args.scratch_hidden_size
    if model_args.scratch_vision_backbone == "resnet":
        if hidden_size % 4:
            raise ValueError(f"--scratch_hidden_size must be a multiple of 4 for a ResNet, got {hidden_size}.")
        vision_config = ResNetConfig(
            embedding_size=hidden_size // 6 or 1,
            hidden_sizes=[hidden_size // 4, hidden_size // 2, hidden_size],
            depths=[1, 1, 1],
            layer_type="basic",
        )
        head_kwargs.setdefault("vision_pooling", "mean")  # no class token
    else:
        vision_config = ViTConfig(
            hidden_size=hidden_size,
            num_hidden_layers=model_args.scratch_num_layers,
            num_attention_heads=max(hidden_size // 64, 1),
            intermediate_size=4 * hidden_size,
            image_size=model_args.scratch_image_size,
            patch_size=model_args.scratch_patch_size,
        )
    text_config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return SistaConfig.from_vision_text_configs(vision_config, text_config, **head_kwargs)


def load_head(model_class, model_args: FinetuningModelArguments, **head_kwargs):
    """
    The task head with a pre-trained SISTA encoder (`--model_name_or_path`) or a random one (`--from_scratch`).

    A checkpoint of another architecture is refused, and every encoder weight must come from the checkpoint: a
    missing `vision_model.*` key is an error, not a silently random encoder.
    """
    head_kwargs["freeze_encoder"] = model_args.freeze_encoder
    if model_args.decoder_hidden_size is not None:
        head_kwargs["decoder_hidden_size"] = model_args.decoder_hidden_size
    if model_args.from_scratch:
        return model_class(scratch_config(model_args, **head_kwargs))

    path = Path(model_args.model_name_or_path)
    read_sista_config(path)
    model, loading_info = model_class.from_pretrained(
        str(path), output_loading_info=True, ignore_mismatched_sizes=True, **head_kwargs
    )
    missing_encoder = sorted(key for key in loading_info["missing_keys"] if key.startswith("vision_model."))
    if missing_encoder:
        raise ValueError(
            f"{str(path)!r} lacks {len(missing_encoder)} vision encoder weights (e.g. {missing_encoder[:3]}): the "
            "encoder would be random. Is it a SISTA checkpoint with a vision tower?"
        )
    # ignore_mismatched_sizes lets a head of another size load; an encoder weight of another shape would be
    # re-initialised at random instead
    mismatched_encoder = [
        f"{key}: checkpoint {tuple(saved)} vs config {tuple(expected)}"
        for key, saved, expected in loading_info.get("mismatched_keys", [])
        if key.startswith("vision_model.")
    ]
    if mismatched_encoder:
        raise ValueError(
            f"{str(path)!r}: {len(mismatched_encoder)} vision encoder weights disagree in shape with its config.json "
            f"({'; '.join(mismatched_encoder[:3])}{' ...' if len(mismatched_encoder) > 3 else ''}): they would be "
            "re-initialised at random. Was config.json edited, or the weights copied from another model?"
        )
    logger.info(f"Loaded the SISTA encoder from {path}; new head weights: {sorted(loading_info['missing_keys'])}")
    return model


def load_image_processor(model_args: FinetuningModelArguments, config: SistaConfig) -> SistaImageProcessor:
    """
    The checkpoint's image processor when it saved one (its size is the size the encoder was trained at); else a
    default one at the checkpoint's training size, or at --scratch_image_size for a --from_scratch encoder.
    """
    path = Path(model_args.model_name_or_path) if model_args.model_name_or_path else None
    if path is not None and saved_image_processor(path) is not None:
        image_processor = SistaImageProcessor.from_pretrained(str(path))
        encoder_image_size(model_args)  # a conflicting --image_size is an error
        return image_processor
    side = encoder_image_size(model_args)
    if path is not None:
        logger.warning(f"{path} holds no image processor: using SistaImageProcessor defaults at {side} px.")
    return SistaImageProcessor(size={"height": side, "width": side}, num_channels=config.vision_config.num_channels)


def encoder_image_size(model_args: FinetuningModelArguments) -> int:
    """
    The image side the encoder takes: --scratch_image_size for --from_scratch; for a checkpoint, its saved
    processor's size, else its vision config's image_size, else --image_size. A checkpoint that records no size (a
    ResNet or ConvNeXt saved without its processor) needs --image_size rather than a default it was not trained at;
    an --image_size that contradicts what the checkpoint records is refused.
    """
    if model_args.model_name_or_path is None:
        return model_args.scratch_image_size
    path = Path(model_args.model_name_or_path)
    recorded = read_training_image_size(path)
    source = "its saved processor" if saved_image_processor(path) is not None else "its config.json (vision_config.image_size)"
    if recorded is None:
        if model_args.image_size is None:
            raise ValueError(
                f"--image_size is required: {str(path)!r} holds no image processor (processor_config.json) and its "
                "vision config records no image size, so the side it was trained at is unknown; pass --image_size "
                "with that side (or save the pre-training processor beside the model)."
            )
        return model_args.image_size
    if model_args.image_size is not None and model_args.image_size != recorded:
        raise ValueError(
            f"--image_size {model_args.image_size} contradicts {str(path)!r}, trained at {recorded} px according to "
            f"{source}; leave --image_size out."
        )
    return recorded


def image_processor_size(image_processor: SistaImageProcessor) -> tuple[int, int]:
    """`(height, width)` of the images `image_processor` produces: the frame of the model's masks and boxes."""
    size = image_size_of(image_processor.size)
    if size is None:
        raise ValueError(f"The image processor's `size` must give a height and a width, got {image_processor.size!r}.")
    return size


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing and augmentation
# ---------------------------------------------------------------------------------------------------------------------


def process_images(image_processor: SistaImageProcessor, images) -> torch.Tensor:
    return image_processor(images, return_tensors="pt")["pixel_values"]


def process_masks(image_processor: SistaImageProcessor, masks) -> torch.Tensor:
    """Masks through the same geometry as the images (nearest neighbour), as `(batch, height, width)` 0/1 longs."""
    processed = image_processor(
        [mask.convert("L") for mask in masks],
        return_tensors="pt",
        do_normalize=False,
        num_channels=1,
        image_mean=[0.0],  # unused without normalisation, but validated against num_channels
        image_std=[1.0],
        resample=PILImageResampling.NEAREST,
    )["pixel_values"]
    return (processed[:, 0] > 0.5).long()


def boxes_to_model_frame(boxes_xywh, image_width: int, image_height: int, image_processor: SistaImageProcessor):
    """
    COCO `[x_min, y_min, width, height]` pixel boxes of a source image → normalised `(center_x, center_y, width,
    height)` boxes of the processed image, through the processor's own resize and pad or crop
    (`SistaImageProcessor.frame_geometry`, which its `post_process_object_detection` inverts). Boxes cut away
    entirely are dropped; returns `(boxes, kept_indices)`.
    """
    geometry = image_processor.frame_geometry(image_height, image_width)
    frame_width, frame_height = geometry["frame_width"], geometry["frame_height"]
    boxes, kept = [], []
    for index, (x_min, y_min, width, height) in enumerate(boxes_xywh):
        left, right = (x * geometry["scale_x"] + geometry["offset_x"] for x in (x_min, x_min + width))
        top, bottom = (y * geometry["scale_y"] + geometry["offset_y"] for y in (y_min, y_min + height))
        left, right = np.clip([left, right], 0, frame_width)
        top, bottom = np.clip([top, bottom], 0, frame_height)
        if right - left <= 0 or bottom - top <= 0:
            continue
        boxes.append([(left + right) / 2 / frame_width, (top + bottom) / 2 / frame_height,
                      (right - left) / frame_width, (bottom - top) / frame_height])
        kept.append(index)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), kept


def augmentation_of(data_args: FinetuningDataArguments) -> XRayAugmentation:
    """
    The augmentation of the fine-tuning heads, drawn per batch: small zoom and shift (masks and boxes follow) and
    intensity jitter. No flips and no rotation: the patient's side is part of several labels.
    """
    return XRayAugmentation(
        zoom=data_args.scale_range,
        translate=data_args.translate,
        brightness=data_args.intensity_jitter,
        contrast=data_args.intensity_jitter,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Test-split predictions and results
# ---------------------------------------------------------------------------------------------------------------------


def train_and_predict(model, training_args, image_processor, transform, collate, train_dataset, validation_dataset,
                      test_dataset, step, augment: bool, test_transform=None, **trainer_kwargs):
    """
    The run every fine-tuning script shares: `CheckpointTrainer` trains `model` on `train_dataset` (augmented by
    `collate(examples, augment)`, evaluating `validation_dataset` when there is one), saves it with `image_processor`,
    and on the main process runs `step(model, batch)` over the whole `test_dataset` (`predict`), returning its
    results; `None` on the other processes. `transform` turns a batch of rows into model inputs; `test_transform`, when
    given, does so for the test split (which may carry more than the model's inputs).
    """
    trainer = CheckpointTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset.with_transform(transform),
        eval_dataset=None if validation_dataset is None else validation_dataset.with_transform(transform),
        data_collator=lambda examples: collate(examples, augment),
        eval_data_collator=lambda examples: collate(examples, False),
        **trainer_kwargs,
    )
    trainer.train()
    trainer.save_model()
    if not trainer.is_world_process_zero():
        return None
    image_processor.save_pretrained(training_args.output_dir)
    return predict(
        trainer.model,
        test_dataset.with_transform(test_transform or transform),
        lambda examples: collate(examples, False),
        training_args.per_device_eval_batch_size,
        step,
    )


@torch.no_grad()
def predict(model, dataset, collate, batch_size: int, step, desc: str = "Testing"):
    """
    Runs `step(model, batch)` over the whole `dataset` in eval mode with a progress bar and returns the results. A
    plain DataLoader, not Trainer's: under multi-process training each process would see a shard of the test split,
    so the scripts test on the main process only, on every row.
    """
    model.eval()
    device = next(model.parameters()).device
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    results = []
    for batch in tqdm(dataloader, desc=desc):
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        results.append(step(model, batch))
    return results


def load_metric(name: str, config_name: str | None = None):
    import evaluate

    return evaluate.load(str(METRICS_DIR / f"{name}.py"), config_name)


def headline_markdown(task: str, headline: dict) -> str:
    """The one-row markdown table of a fine-tuning run's headline metrics."""
    return f"# SISTA {task}\n\n" + markdown_table(list(headline), [list(headline.values())])


def run_description(
    model_args: FinetuningModelArguments,
    data_args: FinetuningDataArguments,
    num_train: int,
    num_test: int,
    script: str,
    argv,
) -> dict:
    """What the results describe (read by `sista_examples.hub.model_card`): encoder, data, split, fraction, the command."""
    return {
        "command": command_line(script, argv),
        "encoder": "scratch" if model_args.from_scratch else os.fspath(model_args.model_name_or_path),
        "split": data_args.test_split,
        "freeze_encoder": model_args.freeze_encoder,
        "dataset_dir": data_args.dataset_dir,
        "label_fraction": data_args.label_fraction,
        "requested_label_fraction": getattr(data_args, "requested_label_fraction", data_args.label_fraction),
        "num_train_samples": num_train,
        "num_test_samples": num_test,
    }
