# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Shared pieces of the evaluation scripts without labels to train on (`zero_shot.py`, `retrieval.py`,
`visualize_grounding.py`): their arguments, the evaluation split (SynthCXR generated in memory when the dataset folder
does not exist and generation is allowed), class names, and embedding images and reports in batches.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, load_from_disk
from tqdm.auto import tqdm

from modeling_sista import text_max_positions
from processing_sista import clean_report

from ..checkpoints import image_size_of
from ..data import synthcxr
from ..data.metadata import METADATA_FILE, read_dataset_metadata
from ..data.synthcxr import SynthCXRGenerationArguments
from ..data.report_fitting import SECTION_COLUMNS, fit_report


logger = logging.getLogger(__name__)

DEFAULT_DATASET_DIR = "data/synthcxr"


@dataclass
class EvaluationArguments(SynthCXRGenerationArguments):
    """
    Arguments shared by the evaluation scripts.

    Args:
        model_name_or_path (`str`):
            Folder of a SISTA checkpoint saved with `save_pretrained`, holding the model and its `SistaProcessor`
            (the output folder of `examples/pretrain.py`).
        output_dir (`str`, *optional*, defaults to `"outputs/evaluation"`):
            Where the results JSON, the markdown table (and figures) are written.
        dataset_dir (`str`, *optional*, defaults to `"data/synthcxr"`):
            A `DatasetDict` saved with `save_to_disk` (SynthCXR or a dataset prepared by
            `examples/prepare_datasets.py`). When the folder does not exist, a small SynthCXR split is generated in
            memory (nothing is written there) with `--generate_synthcxr`, or at the default path for a model
            pre-trained on SynthCXR (its `run_arguments.json` says so); otherwise it is an error.
        split (`str`, *optional*, defaults to `"test"`):
            The split to evaluate.
        max_samples (`int`, *optional*):
            Evaluate only the first `max_samples` rows of the split.
        batch_size (`int`, *optional*, defaults to 32):
            Images or reports per forward pass.
        clean_reports (`bool`, *optional*, defaults to `False`):
            Pass reports through `processing_sista.clean_report` before tokenising. Off by default because
            `examples/pretrain.py` reads the `report` column as stored (prepared real datasets store cleaned text).
        max_length (`int`, *optional*, defaults to 128):
            Maximum number of tokens of a report or prompt.
        class_names (`str`, *optional*):
            Comma-separated names of the `labels` entries; by default read from the dataset (SynthCXR's
            `CLASS_NAMES`, `class_names` in `sista_dataset.json`, or a `ClassLabel` feature).
        generate_synthcxr (`bool`), synthcxr_num_* (`int`), synthcxr_image_size (`int`, *optional*), synthcxr_seed:
            The SynthCXR split generated in memory when `dataset_dir` does not exist (`SynthCXRGenerationArguments`;
            the image size defaults to the processor's input height).
        device (`str`, *optional*):
            `"cpu"`, `"cuda"`, ...; defaults to CUDA when available.
    """

    model_name_or_path: str = field(metadata={"help": "Folder of a saved SISTA checkpoint with its processor."})
    output_dir: str = field(default="outputs/evaluation", metadata={"help": "Where results JSON/markdown go."})
    dataset_dir: str = field(
        default=DEFAULT_DATASET_DIR,
        metadata={"help": "Saved DatasetDict; if the folder does not exist, a small SynthCXR is generated in memory "
                          "with --generate_synthcxr (or at the default path for a model pre-trained on SynthCXR)."},
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first rows of the split."})
    batch_size: int = field(default=32, metadata={"help": "Images or reports per forward pass."})
    clean_reports: bool = field(
        default=False, metadata={"help": "Clean reports with clean_report first (pre-training reads them as stored)."}
    )
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per report or prompt."})
    class_names: str | None = field(
        default=None, metadata={"help": "Comma-separated names of the labels entries (default: from the dataset)."}
    )
    device: str | None = field(default=None, metadata={"help": "Torch device (default: cuda if available)."})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {self.batch_size}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"`max_samples` must be at least 1 when given, got {self.max_samples}.")


# ---------------------------------------------------------------------------------------------------------------------
# Model and processor
# ---------------------------------------------------------------------------------------------------------------------


def text_max_length(model, requested: int) -> int:
    """`requested`, capped at the text backbone's number of positions (`modeling_sista.text_max_positions`: longer
    inputs cannot be encoded)."""
    limit = text_max_positions(model.config.text_config)
    return min(requested, limit) if limit else requested


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def load_evaluation_split(args: EvaluationArguments, processor=None) -> tuple[Dataset, dict]:
    """
    The split to evaluate and a description of where it came from (`{"dataset": ..., "split": ..., "generated":
    bool, "metadata": {...}}`).

    A missing `dataset_dir` gives a freshly generated SynthCXR split (logged) when `should_generate_synthcxr`
    allows it and a `FileNotFoundError` naming `--dataset_dir` otherwise; a missing split, or an empty one, raises a
    `ValueError` (an empty split has no metric to report).
    """
    source = {"dataset": args.dataset_dir, "split": args.split, "generated": False, "metadata": {}}
    if synthcxr.should_generate_synthcxr(args.dataset_dir, args, "--dataset_dir", model_dir=args.model_name_or_path):
        if args.split not in synthcxr.SPLITS:
            raise ValueError(f"`split` must be one of SynthCXR's {synthcxr.SPLITS}, got {args.split!r}.")
        processor_size = image_size_of(processor.image_processor.size) if processor else None
        default_size = processor_size[0] if processor_size else 224
        generate_kwargs = args.generation_kwargs(default_size, splits=(args.split,))
        if generate_kwargs[f"num_{args.split}"] < 1:
            raise ValueError(
                f"`synthcxr_num_{args.split}` must be at least 1 to generate the {args.split!r} split, got "
                f"{generate_kwargs[f'num_{args.split}']}."
            )
        logger.warning(
            "Dataset folder %s does not exist: generating a small SynthCXR %s split in memory (%d studies, %d px, "
            "seed %d). Run `python examples/generate_synthcxr.py --output_dir %s` to build the full dataset.",
            args.dataset_dir,
            args.split,
            generate_kwargs[f"num_{args.split}"],
            generate_kwargs["image_size"],
            generate_kwargs["seed"],
            args.dataset_dir,
        )
        dataset = synthcxr.generate_synthcxr(**generate_kwargs)[args.split]
        source.update(generated=True, dataset="SynthCXR (generated)", synthcxr_image_size=generate_kwargs["image_size"])
        source["metadata"] = {"class_names": list(synthcxr.CLASS_NAMES)}
    else:
        try:
            loaded = load_from_disk(str(args.dataset_dir))
        except (IndexError, FileNotFoundError) as error:
            # datasets 5 writes no shard for a 0-row split and then fails to read it back with an IndexError
            raise ValueError(
                f"`dataset_dir` {args.dataset_dir} could not be loaded with datasets.load_from_disk "
                f"({type(error).__name__}: {error}); a split saved with no rows cannot be read back: is a split empty?"
            ) from error
        source["metadata"] = read_dataset_metadata(args.dataset_dir) or {}
        if isinstance(loaded, DatasetDict):
            if args.split not in loaded:
                raise ValueError(
                    f"`split` {args.split!r} is not in {args.dataset_dir}; its splits are {sorted(loaded)}."
                )
            dataset = loaded[args.split]
        else:
            logger.info("%s holds a single Dataset, not a DatasetDict: evaluating all of it.", args.dataset_dir)
            dataset = loaded
    if len(dataset) == 0:
        raise ValueError(
            f"The {args.split!r} split of {source['dataset']} is empty: there is nothing to evaluate (a metric over "
            "no sample is undefined)."
        )
    if args.max_samples is not None and args.max_samples < len(dataset):
        dataset = dataset.select(range(args.max_samples))
    warn_if_synthcxr_for_another_model(args, source)
    logger.info("Evaluating %d rows of %s/%s.", len(dataset), source["dataset"], args.split)
    return dataset, source


def warn_if_synthcxr_for_another_model(args: EvaluationArguments, source: dict) -> None:
    """A loud warning when a SynthCXR folder is scored for a model that records pre-training on other data."""
    recorded = None if source["generated"] else synthcxr.holds_synthcxr(args.dataset_dir)
    # a folder without a record counts as SynthCXR when it is SynthCXR's default one
    scored_synthcxr = source["generated"] or recorded or (
        recorded is None and synthcxr.is_default_synthcxr_path(args.dataset_dir)
    )
    if scored_synthcxr and synthcxr.model_trained_on_synthcxr(args.model_name_or_path) is False:
        trained_on = synthcxr.training_data_of(args.model_name_or_path)["dataset_path"]
        logger.warning(
            "Scoring SynthCXR (%s) with a model pre-trained on %s: pass --dataset_dir to score the data it was made "
            "for.",
            source["dataset"],
            trained_on,
        )


def require_columns(dataset: Dataset, columns: Sequence[str], task: str) -> None:
    """Raises a `ValueError` naming the first missing column and the task that needs it."""
    for column in columns:
        if column not in dataset.column_names:
            raise ValueError(
                f"{task} needs the column {column!r}, which this dataset lacks (columns: {dataset.column_names})."
            )


def resolve_class_names(dataset: Dataset, source: dict, class_names: str | None = None) -> list[str]:
    """Names of the `labels` entries: `--class_names`, then the dataset's metadata, then a `ClassLabel` feature."""
    require_columns(dataset, ["labels"], "Resolving class names")
    num_labels = len(dataset[0]["labels"])
    if class_names:
        names = [name.strip() for name in class_names.split(",") if name.strip()]
        origin = "--class_names"
    elif source.get("metadata", {}).get("class_names"):
        names, origin = list(source["metadata"]["class_names"]), "the dataset metadata"
    else:
        feature = dataset.features["labels"]
        inner = getattr(feature, "feature", None)
        if isinstance(inner, ClassLabel):
            names, origin = list(inner.names), "the labels feature"
        elif {"findings", "objects"} <= set(dataset.column_names):
            names, origin = list(synthcxr.CLASS_NAMES), "SynthCXR's CLASS_NAMES"
        else:
            raise ValueError(
                "The class names of `labels` are unknown: pass --class_names (comma-separated) or add `class_names` "
                f"to {METADATA_FILE} beside the dataset."
            )
    if len(names) != num_labels:
        raise ValueError(f"{len(names)} class names from {origin} ({names}) for label vectors of length {num_labels}.")
    return names


def report_texts(reports: Sequence[str], clean: bool) -> list[str]:
    """The texts the model reads: cleaned with `clean_report` (as in pre-training) or as stored."""
    if not clean:
        return list(reports)
    return [clean_report(report).text for report in reports]


def report_sections(dataset: Dataset, clean: bool) -> list[tuple[str | None, str | None]] | None:
    """
    `(findings, impression)` of every report of `dataset`, so that [`embed_texts`] truncates a long report as
    pre-training does (the findings are cut, the impression kept): from `clean_report` when the reports are cleaned
    here, else the dataset's `findings` and `impression` columns (a prepared MIMIC-CXR); `None` without them.
    """
    if clean:
        return [(report.findings, report.impression) for report in map(clean_report, dataset["report"])]
    if all(column in dataset.column_names for column in SECTION_COLUMNS):
        return list(zip(*(dataset[column] for column in SECTION_COLUMNS)))
    return None


def batch_ranges(num_items: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, num_items, batch_size):
        yield start, min(start + batch_size, num_items)


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def embed_images(model, processor, images: Sequence, batch_size: int = 32, desc: str = "images") -> torch.Tensor:
    """L2-normalised global image embeddings, `(num_images, projection_dim)`, float32 on the CPU."""
    embeds = []
    for start, stop in tqdm(list(batch_ranges(len(images), batch_size)), desc=f"Embedding {desc}"):
        pixel_values = processor(images=list(images[start:stop]), return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixel_values=pixel_values.to(model.device, model.dtype)).pooler_output
        embeds.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(embeds)


@torch.no_grad()
def embed_texts(
    model,
    processor,
    texts: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
    desc: str = "reports",
    sections: Sequence[tuple[str | None, str | None]] | None = None,
) -> torch.Tensor:
    """
    L2-normalised global report (or prompt) embeddings, `(num_texts, projection_dim)`, float32 on the CPU. With
    `sections` (`(findings, impression)` per text, [`report_sections`]) a report longer than `max_length` tokens is
    fitted as in pre-training ([`fit_report`]: the findings are cut, the impression kept whole); without them the
    tokenizer cuts its end.
    """
    max_length = text_max_length(model, max_length)
    if sections is not None:
        if len(sections) != len(texts):
            raise ValueError(f"`sections` must hold one (findings, impression) per text: {len(sections)} for "
                             f"{len(texts)} texts.")
        budget = max_length - processor.tokenizer.num_special_tokens_to_add(pair=False)
        texts = [
            fit_report(processor.tokenizer, text, findings, impression, budget)
            for text, (findings, impression) in zip(texts, sections)
        ]
    embeds = []
    batches = list(batch_ranges(len(texts), batch_size))
    for start, stop in tqdm(batches, desc=f"Embedding {desc}", disable=len(batches) < 2):
        inputs = processor(
            text=list(texts[start:stop]),
            return_tensors="pt",
            padding=True,
            max_length=max_length,
        )
        inputs = {name: tensor.to(model.device) for name, tensor in inputs.items()}
        features = model.get_text_features(**inputs).pooler_output
        embeds.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(embeds)


class LazyColumn:
    """A dataset column read slice by slice, so that a split's images are never all decoded at once."""

    def __init__(self, dataset: Dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int | slice):
        return self.dataset[index][self.column]
