# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Fitting a report into a text tower's token budget: the findings are cut, the impression is kept."""

from processing_sista import report_has_content


SECTION_COLUMNS = ("findings", "impression")


def fit_report(tokenizer, report: str, findings: str | None, impression: str | None, budget: int) -> str:
    """
    `report`, or, when it is longer than `budget` tokens (special tokens excluded) and has an impression, the
    findings' first words that fit followed by the whole impression: the impression is the report's conclusion and
    its most important sentence, so truncation cuts the findings, never it. A report column longer than its two
    sections (a raw report beside cleaned ones) fits as its sections: the whole findings when they fit, then the
    impression.
    """
    has_sections = report_has_content(findings) and report_has_content(impression)
    if not has_sections or len(tokenizer(report, add_special_tokens=False)["input_ids"]) <= budget:
        return report
    impression_length = len(tokenizer(impression, add_special_tokens=False)["input_ids"])
    findings_budget = budget - impression_length
    if findings_budget <= 0:
        return impression
    offsets = tokenizer(findings, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if findings_budget >= len(offsets):
        return f"{findings} {impression}"
    return f"{findings[: offsets[findings_budget - 1][1]]} {impression}"


def count_truncated_reports(tokenizer, reports, max_length: int) -> int:
    """How many of `reports` exceed `max_length` tokens (special tokens included), so lose words in training."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    lengths = (len(ids) for ids in tokenizer(list(reports), add_special_tokens=False)["input_ids"])
    return sum(length > budget for length in lengths)
