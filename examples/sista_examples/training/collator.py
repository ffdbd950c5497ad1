# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The pre-training collator: tokenises the reports (the impression kept whole) and stacks images and embeddings."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


# Columns of a prepared dataset (examples/prepare_datasets.py) that hold a report's two sections as text.
SECTION_COLUMNS = ("findings", "impression")


def fit_report(tokenizer, report: str, findings: str | None, impression: str | None, budget: int) -> str:
    """
    `report`, or, when it is longer than `budget` tokens (special tokens excluded) and has an impression, the
    findings' first words that fit followed by the whole impression: the impression is the report's conclusion and
    its most important sentence, so truncation cuts the findings, never it.
    """
    if not impression or not findings or len(tokenizer(report, add_special_tokens=False)["input_ids"]) <= budget:
        return report
    impression_length = len(tokenizer(impression, add_special_tokens=False)["input_ids"])
    findings_budget = budget - impression_length
    if findings_budget <= 0:
        return impression
    offsets = tokenizer(findings, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return f"{findings[: offsets[findings_budget - 1][1]]} {impression}"


def count_truncated_reports(tokenizer, reports, max_length: int) -> int:
    """How many of `reports` exceed `max_length` tokens (special tokens included), so lose words in training."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    lengths = (len(ids) for ids in tokenizer(list(reports), add_special_tokens=False)["input_ids"])
    return sum(length > budget for length in lengths)


@dataclass
class SistaDataCollator:
    r"""
    Tokenises the reports of a batch (padded to the longest, at most `max_length` tokens) and stacks `pixel_values`
    and `report_embeds`. Features that carry `findings` and `impression` texts (prepared MIMIC-CXR) are truncated
    by [`fit_report`]: the findings are cut, the impression is kept. Adds `return_loss=True` so that
    `Trainer` also computes the loss during evaluation.
    """

    tokenizer: Any
    max_length: int = 128
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        reports = [
            fit_report(self.tokenizer, feature["report"], feature.get("findings"), feature.get("impression"), budget)
            for feature in features
        ]
        batch = dict(
            self.tokenizer(
                reports,
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
