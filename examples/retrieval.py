#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Image-report retrieval with a SISTA checkpoint: Recall@K in both directions on one split.

Every image of the split queries all of the split's reports (image→report), and every report queries all images
(report→image), ranked by the cosine similarity of the global embeddings. Two rules say what counts as a hit:

* **paired**: the retrieved item is the query's own pair (the usual protocol), or, when the split has a `study_id`
  column, any item of the query's study (two frontal images of one study share one report, so an image retrieving
  its study's report through the other image's row is a hit);
* **semantic** (the false-negative-aware view, as SIA sees the data): the retrieved item is the query's pair OR has
  a label vector identical to the query's (`labels` column, all classes equal; so two normal studies match each
  other, and so do two studies with exactly the same findings).

Recall@K is the fraction of queries with a hit among their top K, ranked by decreasing similarity. Ties count against
the query: a hit tied with a non-hit ranks after it. So a model that gives every item the same similarity (a collapsed
encoder) scores no better than its worst case, instead of whatever the gallery order happens to favour. A K at or
above the gallery size is flagged (log, results and table): its recall is 1 for any model.

Usage:

    python examples/retrieval.py --model_name_or_path outputs/sista --dataset_dir data/synthcxr \
        --output_dir outputs/evaluation
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

from processing_sista import report_has_content
from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.common import (
    EvaluationArguments,
    LazyColumn,
    embed_images,
    embed_texts,
    load_evaluation_split,
    report_sections,
    report_texts,
    require_columns,
)
from sista_examples.evaluation.results import arguments_dict, command_line, markdown_table, write_results
from sista_examples.evaluation.retrieval import ks_covering_gallery, retrieval_metrics
from sista_examples.utils import check_output_dir_writable, setup_logging


logger = logging.getLogger(__name__)


@dataclass
class RetrievalArguments:
    """
    Arguments of the retrieval evaluation.

    Args:
        recall_at (`str`, *optional*, defaults to `"1,5,10"`):
            Comma-separated K of Recall@K.
        semantic_positives (`bool`, *optional*, defaults to `True`):
            Also report the semantic view (identical label vectors count as hits); needs a `labels` column.
    """

    recall_at: str = field(default="1,5,10", metadata={"help": "Comma-separated K of Recall@K."})
    semantic_positives: bool = field(
        default=True, metadata={"help": "Also count items with an identical label vector as hits (needs labels)."}
    )

    def __post_init__(self):
        try:
            self.ks = sorted({int(k) for k in self.recall_at.split(",") if k.strip()})
        except ValueError:
            raise ValueError(f"`recall_at` must be comma-separated integers, got {self.recall_at!r}.") from None
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"`recall_at` must list integers >= 1, got {self.recall_at!r}.")


def results_markdown(metrics: dict, ks: list[int], source: dict, num_pairs: int, grouped: bool = False) -> str:
    rows = [
        (view, direction.replace("_", "→").replace("→to→", " → "), *(scores[f"R@{k}"] for k in ks))
        for view, directions in metrics.items()
        for direction, scores in directions.items()
    ]
    header = f"## Retrieval: {source['dataset']} / {source['split']} ({num_pairs} image-report pairs)\n\n"
    pair = "the query's own pair" + (" or any item of its study" if grouped else "")
    footer = (
        f"\npaired: a hit is {pair}. semantic: a hit is {pair} or any item whose label vector equals the query's.\n"
    )
    covering = ks_covering_gallery(ks, num_pairs)
    if covering:
        footer += (
            f"\nR@{', R@'.join(map(str, covering))}: K is at least the gallery size ({num_pairs}), so the recall is "
            "1 for any model.\n"
        )
    return header + markdown_table(["hits", "direction", *(f"R@{k}" for k in ks)], rows) + footer


def mean_pairwise_cosine(embeds: np.ndarray) -> float | None:
    """Mean cosine similarity over the distinct pairs of rows of L2-normalised `embeds` (None for a single row)."""
    count = len(embeds)
    if count < 2:
        return None
    total = embeds.sum(axis=0, dtype=np.float64)
    return float((total @ total - np.sum(embeds.astype(np.float64) ** 2)) / (count * (count - 1)))


def main(cli_args: list[str] | None = None) -> dict:
    setup_logging()
    parser = HfArgumentParser((EvaluationArguments, RetrievalArguments))
    eval_args, retrieval_args = parser.parse_args_into_dataclasses(args=cli_args)
    check_output_dir_writable(eval_args.output_dir)

    model, processor = load_sista(eval_args.model_name_or_path, eval_args.device)
    dataset, source = load_evaluation_split(eval_args, processor)
    require_columns(dataset, ["image", "report"], "Retrieval")
    if retrieval_args.semantic_positives:
        require_columns(dataset, ["labels"], "Retrieval with semantic positives (--semantic_positives, the default)")

    texts = report_texts(dataset["report"], eval_args.clean_reports)
    empty = [index for index, text in enumerate(texts) if not report_has_content(text)]
    if empty:
        logger.warning("Skipping %d studies whose report has no usable text (first: row %d).", len(empty), empty[0])
        keep = sorted(set(range(len(texts))) - set(empty))
        dataset, texts = dataset.select(keep), [texts[index] for index in keep]
    if len(dataset) == 0:
        raise ValueError("No study with a usable report is left: retrieval has nothing to rank.")

    image_embeds = embed_images(model, processor, LazyColumn(dataset, "image"), eval_args.batch_size).numpy()
    sections = report_sections(dataset, eval_args.clean_reports)  # the impression is kept when truncating
    text_embeds = embed_texts(
        model, processor, texts, eval_args.batch_size, eval_args.max_length, sections=sections
    ).numpy()
    labels = np.asarray(dataset["labels"]) if retrieval_args.semantic_positives else None
    study_ids = np.asarray(dataset["study_id"]) if "study_id" in dataset.column_names else None
    metrics = retrieval_metrics(image_embeds, text_embeds, retrieval_args.ks, labels, study_ids)
    for view, directions in metrics.items():
        for direction, scores in directions.items():
            logger.info("%s %s: %s", view, direction, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    grouped = study_ids is not None
    results = {
        "task": "retrieval",
        "command": command_line("retrieval.py", cli_args),
        "model": eval_args.model_name_or_path,
        "dataset": source["dataset"],
        "split": source["split"],
        "num_pairs": len(dataset),
        "num_studies": len(set(study_ids.tolist())) if study_ids is not None else len(dataset),
        "num_skipped_empty_reports": len(empty),
        "ks_covering_gallery": ks_covering_gallery(retrieval_args.ks, len(dataset)),
        "hit_rules": {
            "paired": "the retrieved item is the query's own pair" + (" or of its study" if grouped else ""),
            "semantic": "a paired hit, or an item with a label vector identical to the query's",
        },
        "ranking": "decreasing cosine similarity; a hit tied with a non-hit ranks after it",
        **metrics,
        # 1.0: every image (report) has the same embedding, the collapse that retrieval at chance can hide
        "mean_pairwise_cosine": {"image": mean_pairwise_cosine(image_embeds), "report": mean_pairwise_cosine(text_embeds)},
        "arguments": arguments_dict(eval_args, retrieval_args),
    }
    markdown = results_markdown(metrics, retrieval_args.ks, source, len(dataset), grouped)
    write_results(eval_args.output_dir, "retrieval", results, markdown)
    return results


if __name__ == "__main__":
    main()
