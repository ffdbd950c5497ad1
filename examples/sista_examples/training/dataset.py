# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The pre-training dataset: decode, augment (seeded per sample and epoch), run the image processor."""

from typing import Any

import numpy as np
import torch

from .augmentation import XRayAugmentation
from .collator import SECTION_COLUMNS


class PretrainingDataset(torch.utils.data.Dataset):
    r"""
    A `datasets.Dataset` of image-report pairs as model features: decodes the images, augments them (when
    `augmentation` is given) and runs the image processor; passes the reports and `report_embeds` through.

    Augmentation seeds are `(seed, epoch, sample index)`: the same sample gets new draws every epoch, and the draws
    do not depend on the number of processes or workers, on the loader's prefetching, or on a resume from a
    checkpoint (a global RNG would be restored one prefetched batch late). The `Trainer`'s dataloader calls
    `set_epoch` before each epoch.

    Items are dicts with `pixel_values` (a float tensor), `report` and, when present, `report_embeds` and the
    report's `findings` and `impression` texts.
    """

    def __init__(
        self,
        dataset,
        image_processor,
        augmentation: XRayAugmentation | None = None,
        seed: int = 0,
        image_column: str = "image",
        report_column: str = "report",
        report_embeds_column: str | None = "report_embeds",
    ):
        columns = [image_column, report_column]
        if report_embeds_column and report_embeds_column in dataset.column_names:
            columns.append(report_embeds_column)
        # a prepared dataset's report sections as text let the collator truncate the findings, not the impression
        self.section_columns = [
            name
            for name in SECTION_COLUMNS
            if getattr(dataset.features.get(name), "dtype", None) in ("string", "large_string")
        ]
        if len(self.section_columns) < len(SECTION_COLUMNS):
            self.section_columns = []
        # only these columns are decoded: masks and metadata stay out of the loader
        self.dataset = dataset.select_columns(columns + self.section_columns)
        self.image_processor = image_processor
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.image_column, self.report_column = image_column, report_column
        self.report_embeds_column = columns[2] if len(columns) > 2 else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        batch = self.dataset[list(indices)]
        images = batch[self.image_column]
        rngs = [np.random.default_rng([self.seed, self.epoch, int(index)]) for index in indices]
        if self.augmentation is not None:
            images = [self.augmentation.geometric(image, rng) for image, rng in zip(images, rngs)]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]
        features = []
        for position, rng in enumerate(rngs):
            image = pixel_values[position]
            if self.augmentation is not None:
                image = self.augmentation.photometric(
                    image, self.image_processor.image_mean, self.image_processor.image_std, rng
                )
            feature = {"pixel_values": image, "report": batch[self.report_column][position]}
            if self.report_embeds_column is not None:
                feature["report_embeds"] = batch[self.report_embeds_column][position]
            for name in self.section_columns:
                feature[name] = batch[name][position]
            features.append(feature)
        return features
