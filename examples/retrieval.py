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

With `--text_gallery` the run is instead GLoRIA's category retrieval on a one-of-N split such as CheXpert 5x200:
every image queries a gallery of texts that each carry a category, and precision@K (`--precision_at`) is the
fraction of the top K texts whose category is the image's, overall and per category, beside the chance level of a
random ranking. The gallery is `prompts` (the positive prompts of each class from `sista_examples.evaluation.prompts`)
or a CSV file with the columns `text` and `category` (e.g. the impressions of your copy of the images' reports).

Usage:

    python examples/retrieval.py --model_name_or_path outputs/sista --dataset_dir data/synthcxr \
        --output_dir outputs/evaluation
    python examples/retrieval.py --model_name_or_path outputs/sista --dataset_dir data/chexpert_5x200 \
        --text_gallery prompts --output_dir outputs/evaluation
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
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
    resolve_class_names,
)
from sista_examples.evaluation.prompts import CHEXPERT_CLASS_PROMPTS, DATASET_CLASS_PROMPTS, find_class_prompts
from sista_examples.evaluation.results import arguments_dict, command_line, markdown_table, write_results
from sista_examples.evaluation.retrieval import category_precision_at_k, ks_covering_gallery, retrieval_metrics
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
    text_gallery: str | None = field(
        default=None,
        metadata={
            "help": "Category retrieval (CheXpert 5x200): 'prompts' or a CSV with columns text,category; each image "
            "queries these texts and precision@K counts texts of the image's category."
        },
    )
    precision_at: str = field(default="1,5,10", metadata={"help": "Comma-separated K of precision@K (--text_gallery)."})

    def __post_init__(self):
        self.ks = parse_ks(self.recall_at, "recall_at")
        self.precision_ks = parse_ks(self.precision_at, "precision_at")


def parse_ks(text: str, argument: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise ValueError(f"`{argument}` must be comma-separated integers, got {text!r}.") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"`{argument}` must list integers >= 1, got {text!r}.")
    return ks


def text_gallery(source: str, class_names: list[str], dataset_name: str | None = None) -> tuple[list[str], list[str]]:
    """
    `(texts, categories)` of the category-retrieval gallery: `"prompts"` gives every class's positive prompts (the
    dataset's own set, else the CheXpert-14 set); otherwise `source` is a CSV with the columns `text` and `category`,
    whose rows of other categories or without text are left out with a warning.
    """
    if source == "prompts":
        texts, categories = [], []
        for name in class_names:
            prompts = DATASET_CLASS_PROMPTS.get(dataset_name or "", {}).get(name) or find_class_prompts(
                name, CHEXPERT_CLASS_PROMPTS
            )
            if prompts is None:
                raise ValueError(f"--text_gallery prompts: class {name!r} has no prompt set; pass a CSV gallery.")
            texts += prompts["positive"]
            categories += [name] * len(prompts["positive"])
        return texts, categories
    path = Path(source)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"--text_gallery {source!r} must be 'prompts' or a readable CSV file: {error}") from error
    missing = [column for column in ("text", "category") if column not in table.columns]
    if missing:
        raise ValueError(f"--text_gallery {source!r} lacks the column(s) {missing}; it has {list(table.columns)}.")
    usable = table["category"].isin(class_names) & (table["text"].str.strip() != "")
    if not usable.all():
        logger.warning(
            "--text_gallery: left out %d rows without text or of a category outside %s.", (~usable).sum(), class_names
        )
    if not usable.any():
        raise ValueError(f"--text_gallery {source!r} has no row with text and a category among {class_names}.")
    return table.loc[usable, "text"].tolist(), table.loc[usable, "category"].tolist()


def category_retrieval(model, processor, dataset, source: dict, eval_args, retrieval_args, cli_args) -> dict:
    """GLoRIA's image-to-text category retrieval (see the module docstring); writes and returns the results."""
    require_columns(dataset, ["image", "labels"], "Category retrieval (--text_gallery)")
    class_names = resolve_class_names(dataset, source, eval_args.class_names)
    labels = np.asarray(dataset["labels"])
    if labels.ndim != 2 or labels.shape[1] != len(class_names) or not (labels.sum(axis=1) == 1).all():
        raise ValueError(
            "Category retrieval needs exactly one positive label per image (a one-of-N split such as CheXpert 5x200)."
        )
    texts, categories = text_gallery(retrieval_args.text_gallery, class_names, source["metadata"].get("dataset"))
    image_embeds = embed_images(model, processor, LazyColumn(dataset, "image"), eval_args.batch_size).numpy()
    text_embeds = embed_texts(model, processor, texts, eval_args.batch_size, eval_args.max_length).numpy()
    query_categories = np.asarray(class_names)[labels.argmax(axis=1)]
    metrics = category_precision_at_k(
        image_embeds @ text_embeds.T, query_categories, np.asarray(categories), retrieval_args.precision_ks
    )
    above = [k for k in retrieval_args.precision_ks if k > len(texts)]
    if above:
        logger.warning("precision@%s: K exceeds the %d texts of the gallery (null).", above, len(texts))
    logger.info("Category retrieval: %s", ", ".join(f"{key} {value}" for key, value in metrics["overall"].items()))
    results = {
        "task": "retrieval",
        "protocol": "category image-to-text retrieval (GLoRIA): precision@K = share of the top K texts whose "
        "category is the image's; ties count against the query",
        "command": command_line("retrieval.py", cli_args),
        "model": eval_args.model_name_or_path,
        "dataset": source["dataset"],
        "split": source["split"],
        "num_images": len(dataset),
        "text_gallery": {"source": retrieval_args.text_gallery, "num_texts": len(texts), "texts": texts,
                         "categories": categories},  # fmt: skip
        "image_to_text": metrics,
        "arguments": arguments_dict(eval_args, retrieval_args),
    }
    ks = retrieval_args.precision_ks
    rows = [
        (name, *(entry[f"P@{k}"] for k in ks), entry["chance"], entry["num_queries"])
        for name, entry in [("**overall**", metrics["overall"]), *metrics["per_category"].items()]
    ]
    markdown = (
        f"## Category retrieval, image → text: {source['dataset']} / {source['split']} ({len(dataset)} images, "
        f"{len(texts)} texts from {retrieval_args.text_gallery})\n\n"
        + markdown_table(["category", *(f"P@{k}" for k in ks), "chance", "images"], rows)
    )
    write_results(eval_args.output_dir, "retrieval", results, markdown)
    return results


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
    if retrieval_args.text_gallery:
        return category_retrieval(model, processor, dataset, source, eval_args, retrieval_args, cli_args)
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
