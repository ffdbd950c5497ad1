# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The pre-training collator: tokenises the reports (the impression kept whole), checks the batch on the CPU, stacks
images and embeddings."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from modeling_sista import check_report_embeds, check_text_inputs
from processing_sista import report_has_content

from ..data.report_fitting import SECTION_COLUMNS, fit_report


def check_reports_have_content(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_token_ids: list[int], reports: list[str]
) -> None:
    """
    Raises a `ValueError` naming the reports of a tokenised batch that have no content: no letter or digit
    (`processing_sista.report_has_content`: punctuation alone is no report), or no token besides special ones. The
    model skips such value checks in a training step on an accelerator (reading values there would wait for the
    device), so the loader checks each batch on the CPU instead.
    """
    content = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_token_ids, dtype=input_ids.dtype))
    no_token = set((~content.any(dim=1)).nonzero().flatten().tolist())
    empty_rows = [row for row, report in enumerate(reports) if row in no_token or not report_has_content(report)]
    if empty_rows:
        examples = ", ".join(f"{row}: {reports[row]!r}" for row in empty_rows[:3])
        raise ValueError(
            f"`report` must hold a letter or digit and a word token for pre-training; rows {empty_rows} of this batch "
            f"have none ({examples}). Drop reports without content from the dataset (pretrain.py does)."
        )


def content_word_ids(encoding, text: str, stop_words=ENGLISH_STOP_WORDS) -> list[int]:
    """
    For one tokenised report (a fast tokenizer's `Encoding` of `text`), the content word of each token: 0, 1, ... in
    reading order, -1 for special tokens, padding, punctuation and numbers (words with no letter) and stop words
    (scikit-learn's English list, which holds "no" and "not": STA aligns what a word names, not its negation). The
    subword tokens of one word share its id, for `SistaConfig(sta_token_unit="words")`.
    """
    content_index, ids = {}, []
    for word_index in encoding.word_ids:
        if word_index is None:
            ids.append(-1)
            continue
        if word_index not in content_index:
            start, end = encoding.word_to_chars(word_index)
            word = text[start:end].lower()
            is_content = any(character.isalpha() for character in word) and word not in stop_words
            content_index[word_index] = sum(value >= 0 for value in content_index.values()) if is_content else -1
        ids.append(content_index[word_index])
    return ids


# Columns of a prepared dataset (examples/prepare_datasets.py) that hold a report's two sections as text.
@dataclass
class SistaDataCollator:
    r"""
    Tokenises the reports of a batch (padded to the longest, rounded up to `pad_to_multiple_of` so that batches come
    in few shapes, at most `max_length` tokens) and stacks `pixel_values` (as they come: `uint8` from
    [`PretrainingDataset`]) and `report_embeds` (float32). Features that carry `findings` and `impression` texts
    (prepared MIMIC-CXR) are truncated by [`fit_report`]: the findings are cut, the impression is kept. Adds
    `return_loss=True` so that `Trainer` also computes the loss during evaluation. With `content_word_ids`, adds
    `word_ids` ([`content_word_ids`]) for `SistaConfig(sta_token_unit="words")`.

    Every batch is checked here, on the CPU, because the model skips its value checks in accelerator training steps:
    every report keeps a word token ([`check_reports_have_content`]), `report_embeds` are finite
    ([`check_report_embeds`]) and, given the model's `text_config`, the ids and positions fit the text tower
    ([`check_text_inputs`]).
    """

    tokenizer: Any
    max_length: int = 128
    pad_to_multiple_of: int | None = None
    text_config: Any = None
    content_word_ids: bool = False

    def __post_init__(self):
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of <= 0:
            raise ValueError(f"`pad_to_multiple_of` must be a positive integer or None, got {self.pad_to_multiple_of}.")
        self.special_token_ids = sorted(set(self.tokenizer.all_special_ids))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        reports = [self._fitted_report(row, feature, budget) for row, feature in enumerate(features)]
        encoded = self.tokenizer(
            reports,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        batch = dict(encoded)
        if self.content_word_ids:
            batch["word_ids"] = torch.tensor(
                [content_word_ids(encoded.encodings[row], report) for row, report in enumerate(reports)]
            )
        check_reports_have_content(batch["input_ids"], batch["attention_mask"], self.special_token_ids, reports)
        if self.text_config is not None:
            check_text_inputs(
                batch["input_ids"], self.text_config, batch["attention_mask"], batch.get("token_type_ids")
            )
        batch["pixel_values"] = torch.stack([torch.as_tensor(feature["pixel_values"]) for feature in features])
        if "report_embeds" in features[0]:
            batch["report_embeds"] = torch.tensor(
                np.asarray([feature["report_embeds"] for feature in features]), dtype=torch.float32
            )
            check_report_embeds(batch["report_embeds"], len(features))
        batch["return_loss"] = True
        return batch

    def _fitted_report(self, row: int, feature: dict[str, Any], budget: int) -> str:
        """[`fit_report`] of one row, or an error naming the row and the columns it read."""
        report = feature.get("report")
        if not isinstance(report, str):
            raise TypeError(
                f"`report` of row {row} of this batch must be a str, got {type(report).__name__}: drop rows without a "
                "report from the dataset."
            )
        findings, impression = (feature.get(column) for column in SECTION_COLUMNS)
        try:
            return fit_report(self.tokenizer, report, findings, impression, budget)
        except Exception as error:
            raise ValueError(
                f"Row {row} of this batch: cannot fit its `report` ({len(report)} characters) to {budget} tokens from "
                f"its `findings` and `impression` columns ({type(error).__name__}: {error})."
            ) from error
