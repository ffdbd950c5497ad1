# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The pre-training collator: tokenises the reports and stacks images and report embeddings."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class SistaDataCollator:
    r"""
    Tokenises the reports of a batch (padded to the longest, truncated to `max_length`) and stacks `pixel_values`
    and `report_embeds`. Adds `return_loss=True` so that `Trainer` also computes the loss during evaluation.
    """

    tokenizer: Any
    max_length: int = 128
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(
            self.tokenizer(
                [feature["report"] for feature in features],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors="pt",
            )
        )
        batch["pixel_values"] = torch.stack([torch.as_tensor(feature["pixel_values"]) for feature in features])
        if "report_embeds" in features[0]:
            batch["report_embeds"] = torch.tensor(
                np.asarray([feature["report_embeds"] for feature in features]), dtype=torch.float32
            )
        batch["return_loss"] = True
        return batch
