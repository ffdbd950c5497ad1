# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The one retrieval rule of the project: Recall@K from a similarity matrix and a matrix of hits, where a hit tied with
a non-hit ranks after it (ties count against the query, so a collapsed model that scores everything alike gets no
credit). Items of one study (several images sharing one report) are hits for each other. The retrieval evaluation
and pre-training's end-of-run check both use it.
"""

import logging

import numpy as np
from scipy.special import gammaln


logger = logging.getLogger(__name__)


def retrieval_positives(
    num_items: int, labels: np.ndarray | None = None, study_ids: np.ndarray | None = None
) -> np.ndarray:
    """
    `(num_items, num_items)` boolean matrix of hits for paired queries and galleries: the diagonal (each query's own
    pair); with `study_ids`, every item of the query's study (two frontal images of one study share its report, so
    either image retrieving that report is a hit); with `labels`, every pair of items with identical label vectors.
    Symmetric, so it serves both directions.
    """
    positives = np.eye(num_items, dtype=bool)
    if study_ids is not None:
        study_ids = np.asarray(study_ids)
        if study_ids.shape != (num_items,):
            raise ValueError(f"`study_ids` must hold {num_items} ids, got shape {study_ids.shape}.")
        positives |= study_ids[:, None] == study_ids[None, :]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape[0] != num_items:
            raise ValueError(f"`labels` must have {num_items} rows, got {labels.shape[0]}.")
        positives |= (labels[:, None, :] == labels[None, :, :]).all(axis=-1)
    return positives


def first_hit_ranks(similarity: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """
    0-based rank of each query's best-ranked hit (`inf` for a query with no hit): the number of non-hits whose
    similarity is at least that of the query's most similar hit, so ties count against the query.
    """
    similarity, positives = np.asarray(similarity), np.asarray(positives, dtype=bool)
    if similarity.ndim != 2 or similarity.shape != positives.shape:
        raise ValueError(
            f"`similarity` and `positives` must be 2-D of one shape, got {similarity.shape} and {positives.shape}."
        )
    if similarity.size == 0:
        raise ValueError(f"Retrieval needs at least one query and one gallery item, got shape {similarity.shape}.")
    if not np.isfinite(similarity).all():
        raise ValueError("`similarity` holds NaN or infinite values.")
    best_hit = np.where(positives, similarity, -np.inf).max(axis=1, keepdims=True)
    rank = ((similarity >= best_hit) & ~positives).sum(axis=1)
    return np.where(positives.any(axis=1), rank, np.inf)


def ks_covering_gallery(ks: list[int], gallery_size: int) -> list[int]:
    """The K of `ks` at or above `gallery_size`: their Recall@K is 1 for any model (every query has a hit)."""
    return [k for k in ks if k >= gallery_size]


def recall_at_k(similarity: np.ndarray, positives: np.ndarray, ks: list[int]) -> dict[str, float]:
    """`{"R@k": fraction of queries with a hit among their top k}` (k larger than the gallery means all of it)."""
    ranks = first_hit_ranks(similarity, positives)
    return {f"R@{k}": float(np.mean(ranks < k)) for k in ks}


def chance_recall_at_k(positives: np.ndarray, ks: list[int]) -> dict[str, float]:
    """
    Expected Recall@K of a ranking drawn uniformly at random, from the matrix of hits: a query with `p` hits among
    `n` gallery items has one in its top `k` with probability `1 - C(n - p, k) / C(n, k)` (hypergeometric).
    """
    positives = np.asarray(positives, dtype=bool)
    if positives.ndim != 2 or positives.size == 0:
        raise ValueError(f"`positives` must be a non-empty 2-D matrix, got shape {positives.shape}.")
    num_gallery = positives.shape[1]
    num_hits = positives.sum(axis=1)

    def log_choose(n, k):
        return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)

    chance = {}
    for k in ks:
        top = min(k, num_gallery)
        # C(n - p, k) is 0 when fewer than k non-hits exist: then a hit is certain
        num_misses = num_gallery - num_hits
        miss_all = np.where(
            num_misses >= top,
            np.exp(log_choose(np.maximum(num_misses, top), top) - log_choose(num_gallery, top)),
            0.0,
        )
        chance[f"R@{k}"] = float(np.mean(1.0 - miss_all))
    return chance


def retrieval_metrics(
    image_embeds: np.ndarray,
    text_embeds: np.ndarray,
    ks: list[int],
    labels: np.ndarray | None = None,
    study_ids: np.ndarray | None = None,
) -> dict:
    """
    Recall@K image→report and report→image, paired (grouped by `study_ids` when given) and (with `labels`)
    semantic, from normalised embeddings, each view with the `chance` Recall@K of a random ranking. A K at or above
    the gallery size is logged: its recall is 1 by construction.
    """
    similarity = np.asarray(image_embeds) @ np.asarray(text_embeds).T
    covering = ks_covering_gallery(ks, len(similarity))
    if covering:
        logger.warning(
            "Recall@%s covers the whole gallery of %d items: it is 1.0 for any model.",
            ",".join(map(str, covering)),
            len(similarity),
        )
    views = {"paired": retrieval_positives(len(similarity), study_ids=study_ids)}
    if labels is not None:
        views["semantic"] = retrieval_positives(len(similarity), labels, study_ids)
    return {
        view: {
            "image_to_report": recall_at_k(similarity, positives, ks),
            "report_to_image": recall_at_k(similarity.T, positives.T, ks),
            "chance": chance_recall_at_k(positives, ks),
        }
        for view, positives in views.items()
    }


def category_precision_at_k(
    similarity: np.ndarray, query_categories: np.ndarray, gallery_categories: np.ndarray, ks: list[int]
) -> dict:
    """
    Category precision@K of GLoRIA's image-to-text retrieval on CheXpert 5x200: each query (image) ranks the gallery
    (texts) by decreasing similarity, and precision@K is the fraction of its top K whose category is the query's,
    averaged over the queries, overall and per query category. Ties count against the query (among equal
    similarities, texts of other categories rank first), as in [`first_hit_ranks`]. A K above the gallery size has
    no precision (`None`). `chance` is the precision of a random ranking: the share of the query's category in the
    gallery.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    query_categories, gallery_categories = np.asarray(query_categories), np.asarray(gallery_categories)
    if similarity.shape != (len(query_categories), len(gallery_categories)) or similarity.size == 0:
        raise ValueError(
            f"`similarity` must have shape (num_queries, num_texts) = ({len(query_categories)}, "
            f"{len(gallery_categories)}) and not be empty, got {similarity.shape}."
        )
    if not np.isfinite(similarity).all():
        raise ValueError("`similarity` holds NaN or infinite values.")
    hits = query_categories[:, None] == gallery_categories[None, :]
    # lexsort sorts by the last key first: decreasing similarity, then non-hits before hits on ties
    order = np.stack([np.lexsort((hits[row], -similarity[row])) for row in range(len(similarity))])
    ranked_hits = np.take_along_axis(hits, order, axis=1)
    categories = sorted(set(query_categories.tolist()))

    def summarise(rows: np.ndarray) -> dict:
        precision = {
            f"P@{k}": float(ranked_hits[rows, :k].mean()) if k <= hits.shape[1] else None for k in ks
        }
        precision["chance"] = float(hits[rows].mean())
        precision["num_queries"] = int(rows.sum())
        return precision

    return {
        "overall": summarise(np.ones(len(query_categories), dtype=bool)),
        "per_category": {str(name): summarise(query_categories == name) for name in categories},
    }
