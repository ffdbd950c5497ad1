"""
Model cards for SISTA checkpoints, filled from the run's own files and the real results JSON files.

    python -m sista_examples.hub.model_card outputs/sista-synthcxr --results outputs/eval --repo_id me/sista-synthcxr \
        --revision v0.1.0 --output outputs/sista-synthcxr/README.md

The card is rendered by `huggingface_hub.ModelCard.from_template` from `model_cards/template.md` (Jinja2); its YAML
header (license, `library_name: transformers`, `pipeline_tag`, tags, datasets, metrics, `model-index`, `base_model`)
is a `ModelCardData`, so the Hub parses exactly what the tests parse. Nothing is invented: a section with no results
file is left out, a missing command is written as "not recorded". The results JSON shape is documented in
docs/hub_release.md ("Results files").
"""

import argparse
import json
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.metadata import read_dataset_metadata
from ..checkpoints import read_sista_config, read_training_image_size


logger = logging.getLogger(__name__)

RUN_ARGUMENTS_FILE = "run_arguments.json"
TEMPLATE_PATH = Path(__file__).resolve().parents[3] / "model_cards" / "template.md"
EXAMPLES_DIR = Path(__file__).resolve().parents[2]

ARXIV_ID = "2601.08165"
DEFAULT_LICENSE = "apache-2.0"
BASE_TAGS = ["sista", "medical", "radiology", "chest-x-ray", "vision-language", "contrastive-learning", "custom_code"]


@dataclass(frozen=True)
class TaskInfo:
    """How one kind of result is named on the card and in `model-index`."""

    title: str
    task_type: str
    script: str
    head_class: str | None = None  # the model class whose card this result belongs to; None for the base model


# Canonical task keys. `task_type` follows the Hub's pipeline tags where one exists; retrieval and grounding have
# none, so they get descriptive types (model-index accepts any string).
TASKS = {
    "zero-shot": TaskInfo("Zero-shot classification", "zero-shot-image-classification", "zero_shot.py"),
    "retrieval": TaskInfo("Image-report retrieval", "image-text-retrieval", "retrieval.py"),
    "grounding": TaskInfo("Word-to-region grounding", "phrase-grounding", "visualize_grounding.py"),
    "classification": TaskInfo(
        "Classification", "image-classification", "finetune_classification.py", "SistaForImageClassification"
    ),
    "segmentation": TaskInfo(
        "Segmentation", "image-segmentation", "finetune_segmentation.py", "SistaForSemanticSegmentation"
    ),
    "detection": TaskInfo("Detection", "object-detection", "finetune_detection.py", "SistaForObjectDetection"),
}
PRETRAINING = "pretraining"

TASK_ALIASES = {
    "zero-shot": (
        "zero_shot",
        "zero-shot",
        "zeroshot",
        "zero_shot_classification",
        "zero-shot-classification",
        "zero-shot-image-classification",
    ),
    "retrieval": ("retrieval", "image_text_retrieval", "image-text-retrieval"),
    "grounding": ("grounding", "visualize_grounding", "phrase_grounding", "phrase-grounding"),
    "classification": (
        "classification",
        "image_classification",
        "image-classification",
        "linear_probe",
        "finetune_classification",
    ),
    "segmentation": (
        "segmentation",
        "semantic_segmentation",
        "image-segmentation",
        "image_segmentation",
        "finetune_segmentation",
    ),
    "detection": ("detection", "object_detection", "object-detection", "finetune_detection"),
    PRETRAINING: (
        "pretraining",
        "pretrain",
        "pre-training",
        "pre_training",
        "train",
        "all",
        "train_results",
        "all_results",
    ),
}
ALIAS_TO_TASK = {alias: task for task, aliases in TASK_ALIASES.items() for alias in aliases}

PIPELINE_TAGS = {
    "SistaModel": "zero-shot-image-classification",
    "SistaForImageClassification": "image-classification",
    "SistaForSemanticSegmentation": "image-segmentation",
    "SistaForObjectDetection": "object-detection",
}

SYNTHETIC_DATASET = "synthcxr"


@dataclass(frozen=True)
class DataTerms:
    """The use terms of a dataset whose derived weights fall under them."""

    title: str
    license_name: str
    license_link: str
    terms: str
    credentialed: bool


# Datasets (by their prepared name, sista_dataset.json's "dataset") whose use agreement reaches derived weights.
RESTRICTED_DATA = {
    "mimic_cxr": DataTerms(
        "MIMIC-CXR",
        "physionet-credentialed-health-data-license-1.5.0",
        "https://physionet.org/content/mimic-cxr-jpg/view-license/2.1.0/",
        "PhysioNet Credentialed Health Data License 1.5.0 and Data Use Agreement: credentialed data, for "
        "credentialed users who completed the required training and signed the agreement; no re-identification, "
        "no sharing with anyone who has not",
        True,
    ),
    "chexpert": DataTerms(
        "CheXpert",
        "stanford-chexpert-research-use-agreement",
        "https://stanfordmlgroup.github.io/competitions/chexpert/",
        "Stanford University School of Medicine CheXpert Dataset Research Use Agreement: personal, "
        "non-commercial research use",
        False,
    ),
}

# Keys of a results file that describe the run rather than measure it.
DESCRIPTIVE_KEYS = {
    "task",
    "dataset_dir",
    "encoder",
    "freeze_encoder",
    "problem_type",
    "rule",
    "model",
    "model_name_or_path",
    "dataset",
    "dataset_name",
    "split",
    "command",
    "argv",
    "script",
    "arguments",
    "args",
    "prompts",
    "pipeline_example",
    "hit_rules",
    "ranking",
    "class_names",
    "labels",
    "notes",
    "metadata",
    "source",
    "seed",
    "label_fraction",
    "requested_label_fraction",
    "ks_covering_gallery",
    "skipped",
    "date",
    "version",
}
# Numeric leaves that are bookkeeping, not metrics (Trainer's `eval_runtime`, counts, ...).
BOOKKEEPING = re.compile(
    r"(^|_)(runtime|samples_per_second|steps_per_second|epoch|step|global_step|total_flos|seed)$|^(num|n)_|_count$"
)
# a reference a model's number is read against (a pointing game's baselines and oracle, a chance level), or its
# bookkeeping: not the model's own number
REFERENCE = re.compile(r"baseline|oracle|text_prior|shuffled|random_point|fixed_point|chance")
METRIC_TYPES = {
    "auroc": "roc_auc",
    "auc": "roc_auc",
    "roc_auc": "roc_auc",
    "macro_auroc": "roc_auc",
    "mean_auroc": "roc_auc",
    "accuracy": "accuracy",
    "acc": "accuracy",
    "dice": "dice",
    "mean_dice": "dice",
    "iou": "iou",
    "miou": "mean_iou",
    "mean_iou": "mean_iou",
    "map": "map",
    "f1": "f1",
    "pointing_game": "pointing_game",
}
# Files in a run folder that are never results.
NOT_RESULTS = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "processor_config.json",
    "preprocessor_config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "trainer_state.json",
    "training_args.json",
    "added_tokens.json",
    "vocab.json",
    "sista_dataset.json",
}

# Training arguments worth a line on the card, in this order (whatever the run saved among them).
TRAINING_ARGUMENT_KEYS = (
    "dataset_path",
    "model_preset",
    "objective",
    "dataset_name",
    "dataset_dir",
    "train_file",
    "data_dir",
    "max_train_samples",
    "image_size",
    "max_length",
    "vision_model_name_or_path",
    "text_model_name_or_path",
    "report_encoder",
    "report_embeds_model",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "optim",
    "bf16",
    "fp16",
    "seed",
    "label_fraction",
    "freeze_backbone",
    "linear_probe",
)
# Config fields each head reads (besides num_labels, id2label and freeze_encoder), by prefix or name.
HEAD_CONFIG_FIELDS = {
    "SistaForImageClassification": ("classifier_", "problem_type"),
    "SistaForSemanticSegmentation": ("decoder_", "semantic_"),
    "SistaForObjectDetection": ("decoder_", "detection_"),
}
SISTA_OBJECTIVE_KEYS = (
    "projection_dim",
    "vision_pooling",
    "text_pooling",
    "sia_weight",
    "sia_threshold",
    "sia_mode",
    "sia_soft_target",
    "sia_similarity_source",
    "sta_weight",
    "sta_sparsity_threshold",
    "sta_temperature",
)


# ---------------------------------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """One evaluation read from a results file: the numbers, what they were measured on and how."""

    task: str
    metrics: dict[str, float]
    dataset_name: str
    dataset_type: str
    dataset_split: str | None = None
    command: str | None = None
    command_reconstructed: bool = False
    source: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> TaskInfo:
        return TASKS[self.task]


def normalize_task(name: str | None) -> str | None:
    if not name:
        return None
    key = str(name).strip().lower().replace(" ", "_")
    return ALIAS_TO_TASK.get(key) or ALIAS_TO_TASK.get(key.replace("-", "_"))


def task_from_filename(path: Path) -> str | None:
    stem = path.stem.lower()
    for suffix in ("_results", "_metrics", "-results", "-metrics"):
        stem = stem.removesuffix(suffix)
    if stem in ("eval", "test", "eval_results", "test_results"):
        return None  # Trainer's generic files: the task must be in the file
    task = normalize_task(stem)
    if task is None:  # e.g. "finetune_classification_10pct"
        task = next((t for alias, t in ALIAS_TO_TASK.items() if alias in stem and len(alias) > 5), None)
    return task


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def flatten_metrics(values: Mapping[str, Any], prefix: str = "", top_level: bool = True) -> dict[str, float]:
    """Numeric leaves of a (nested) mapping as `{"view/direction/R@1": value}`; run descriptions are left out."""
    metrics = {}
    for key, value in values.items():
        key = str(key)
        if top_level and key in DESCRIPTIVE_KEYS:
            continue
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            metrics.update(flatten_metrics(value, name, top_level=False))
        elif is_number(value):
            leaf = re.sub(r"^(eval|test)_", "", key.lower())
            if BOOKKEEPING.search(leaf) or key in DESCRIPTIVE_KEYS or REFERENCE.search(name.lower()):
                continue
            metrics[re.sub(r"^(eval|test)_", "", name) if not prefix else name] = float(value)
    return metrics


def metric_type(name: str) -> str:
    """`"paired/image_to_report/R@1"` -> `"recall@1"`, `"macro_auroc"` -> `"roc_auc"`: the leaf, normalised."""
    leaf = name.rsplit("/", 1)[-1].strip().lower()
    recall = re.fullmatch(r"r(?:ecall)?@(\d+)", leaf)
    if recall:
        return f"recall@{recall.group(1)}"
    return METRIC_TYPES.get(leaf, re.sub(r"[^a-z0-9@.]+", "_", leaf).strip("_"))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unspecified"


def describe_dataset(entry: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """`(name, type, split)` from `dataset` (a string or `{"name", "type", "split"}`) and `split`."""
    dataset = entry.get("dataset") or entry.get("dataset_name")
    if not dataset and entry.get("dataset_dir"):  # the downstream scripts record the folder they read
        dataset = Path(str(entry["dataset_dir"])).name
    split = entry.get("split")
    if isinstance(dataset, Mapping):
        split = dataset.get("split", split)
        name = dataset.get("name") or dataset.get("type")
        dataset_type = dataset.get("type") or (slug(str(name)) if name else None)
    else:
        name, dataset_type = dataset, None
    if not name:
        logger.warning("A result has no `dataset`: it is written as 'unspecified' (add `dataset` to the JSON).")
        name = "unspecified"
    name = plain_dataset_name(str(name))
    if dataset_type is None:
        # a local path says where the data was, not what it was: keep its last component for the type
        dataset_type = slug(Path(name).name if os.sep in name or "/" in name else name)
    return name, str(dataset_type), (str(split) if split is not None else None)


def command_of(entry: Mapping[str, Any], task: str) -> tuple[str | None, bool]:
    """The exact command (`command`, or `argv`) or, failing that, one rebuilt from `script` + `arguments`."""
    command = entry.get("command")
    if isinstance(command, list | tuple):
        command = shlex.join(str(part) for part in command)
    if command:
        return str(command), False
    if isinstance(entry.get("argv"), list | tuple):
        return "python " + shlex.join(str(part) for part in entry["argv"]), False
    arguments = entry.get("arguments")
    script = entry.get("script") or (TASKS[task].script if task in TASKS else None)
    if isinstance(arguments, Mapping) and script:
        script_path = Path(script) if "/" in script else EXAMPLES_DIR / script
        if script_path.is_file() or "script" in entry:
            parts = ["python", f"examples/{script_path.name}"]
            for key, value in arguments.items():
                if value is None:
                    continue
                if isinstance(value, list | tuple):
                    parts += [f"--{key}", *(str(item) for item in value)]
                else:
                    parts += [f"--{key}", str(value)]
            return shlex.join(parts), True
    return None, False


def result_entries(payload: Any) -> list[Mapping[str, Any]]:
    if isinstance(payload, Mapping) and isinstance(payload.get("results"), list):
        return [entry for entry in payload["results"] if isinstance(entry, Mapping)]
    if isinstance(payload, list):
        return [entry for entry in payload if isinstance(entry, Mapping)]
    if isinstance(payload, Mapping):
        return [payload]
    return []


def expand_result_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the `*.json` files of folders (non-recursive, plus a `results/` sub-folder)."""
    expanded = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            candidates = sorted(path.glob("*.json")) + sorted((path / "results").glob("*.json"))
            expanded += [candidate for candidate in candidates if candidate.name not in NOT_RESULTS]
        elif path.is_file():
            expanded.append(path)
        else:
            raise FileNotFoundError(f"Results path {str(path)!r} does not exist (expected a JSON file or a folder).")
    return expanded


def display_path(path: Path) -> str:
    """The path relative to the working folder when inside it, else the file name: no local paths on a card."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def load_results(paths: Iterable[str | os.PathLike]) -> tuple[list[TaskResult], list[dict]]:
    """
    Reads evaluation results and pre-training summaries from JSON files.

    Returns:
        `(results, training_summaries)`: one [`TaskResult`] per evaluation entry, and the raw entries whose task is
        pre-training (Trainer's `all_results.json`/`train_results.json` included). Entries without a known task or
        without a number are skipped with a log line saying why.
    """
    results, training_summaries = [], []
    for path in expand_result_paths(paths):
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"Results file {str(path)!r} is not valid JSON: {error}.") from None
        entries = result_entries(payload)
        if not entries:
            logger.info("Skipping %s: no result object in it.", path)
        for entry in entries:
            task = normalize_task(entry.get("task")) or task_from_filename(path)
            if task is None:
                logger.info('Skipping %s: cannot tell its task (add a `task` key, e.g. "retrieval").', path)
                continue
            if task == PRETRAINING:
                training_summaries.append({"source": str(path), **entry})
                continue
            raw_metrics = entry["metrics"] if isinstance(entry.get("metrics"), Mapping) else entry
            metrics = flatten_metrics(raw_metrics)
            if not metrics:
                logger.info("Skipping a %s entry of %s: it holds no finite number.", task, path)
                continue
            name, dataset_type, split = describe_dataset(entry)
            command, reconstructed = command_of(entry, task)
            details = {
                key: entry[key]
                for key in ("label_fraction", "freeze_encoder", "num_images", "num_pairs", "model", "dataset_dir",
                            "encoder")
                if key in entry
            }  # fmt: skip
            results.append(
                TaskResult(
                    task, metrics, name, dataset_type, split, command, reconstructed, display_path(path), details
                )
            )
    return results, training_summaries


def eval_results_for(results: Sequence[TaskResult]) -> list[EvalResult]:
    """`model-index` entries: one `EvalResult` per metric, named by its full path so that none collide."""
    eval_results = []
    for result in results:
        fraction, frozen = result.details.get("label_fraction"), result.details.get("freeze_encoder")
        qualifiers = [{True: "linear probe", False: "fine-tuned"}.get(frozen)] if isinstance(frozen, bool) else []
        qualifiers += [f"{fraction:g} of the labels"] if is_number(fraction) else []
        task_name = result.info.title + (f" ({', '.join(qualifiers)})" if qualifiers else "")
        for name, value in result.metrics.items():
            eval_results.append(
                EvalResult(
                    task_type=result.info.task_type,
                    task_name=task_name,
                    dataset_type=result.dataset_type,
                    dataset_name=result.dataset_name,
                    dataset_split=result.dataset_split,
                    metric_type=metric_type(name),
                    metric_name=name,
                    metric_value=value,
                )
            )
    return eval_results


# ---------------------------------------------------------------------------------------------------------------------
# The run: config, weights, training arguments
# ---------------------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}.") from None


def count_parameters(model_dir: Path) -> int | None:
    """Parameters in the safetensors files, from their headers (nothing is loaded)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as weights:
            for key in weights.keys():
                total += math.prod(weights.get_slice(key).get_shape())
    return total


def load_training_arguments(run_dir: Path) -> dict[str, Any]:
    """
    The run's training arguments: `training_args.json` when the run wrote one, else `training_args.bin` (a pickle the
    Trainer writes: it is unpickled, so only read runs you made yourself), updated with the script's own arguments
    from `run_arguments.json` when present. Empty when none can be read.
    """
    arguments = read_json(run_dir / "training_args.json") or read_pickled_arguments(run_dir / "training_args.bin")
    # the script's own (model, data) arguments, when the run wrote them: `{"data": {...}, ...}` or flat
    script_arguments = read_json(run_dir / RUN_ARGUMENTS_FILE) or {}
    # pre-training's resolved run configuration, `{"run": {name: {"value", "source"}}}`: the values used, which win
    # over the parsed arguments (left None where the dataset or checkpoint supplied them)
    resolved = script_arguments.pop("run", None) or {}
    for key, value in script_arguments.items():
        if isinstance(value, Mapping):
            arguments.update(value)
        else:
            arguments[key] = value
    arguments.update({name: entry["value"] for name, entry in resolved.items() if isinstance(entry, Mapping)})
    return arguments


def read_pickled_arguments(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        import torch

        arguments = torch.load(path, weights_only=False)
    except Exception as error:  # an unpicklable custom class must not stop the card: it is only left out
        logger.warning(
            "Could not read %s (%s: %s); training arguments are left out.", path, type(error).__name__, error
        )
        return {}
    return arguments.to_dict() if hasattr(arguments, "to_dict") else dict(vars(arguments))


def trainer_summary(run_dir: Path) -> dict[str, Any]:
    """Steps, epochs, batch size and the last logged losses from `trainer_state.json`."""
    state = read_json(run_dir / "trainer_state.json")
    if not state:
        return {}
    summary = {key: state[key] for key in ("global_step", "epoch", "train_batch_size", "max_steps") if key in state}
    history = state.get("log_history") or []
    for key in ("loss", "loss_sia", "loss_sta", "train_loss", "eval_loss"):
        logged = [entry[key] for entry in history if is_number(entry.get(key))]
        if logged:
            summary[f"last {key}"] = logged[-1]
    return summary


def head_rows(config: Mapping[str, Any], architecture: str) -> list[tuple[str, Any]]:
    """The head's own settings: its labels in index order, whether the encoder was frozen, its fields."""
    if architecture not in HEAD_CONFIG_FIELDS:
        return []
    rows = []
    id2label = config.get("id2label") or {}
    if id2label:
        labels = [id2label[key] for key in sorted(id2label, key=lambda index: int(index))]
        rows.append(("labels", ", ".join(str(label) for label in labels)))
    rows += [(key, config[key]) for key in ("num_labels", "freeze_encoder") if key in config]
    rows += sorted((key, value) for key, value in config.items() if key.startswith(HEAD_CONFIG_FIELDS[architecture]))
    return rows


def plain_dataset_name(name: str) -> str:
    """
    A dataset name fit for a card: a prepared dataset folder gives the name in its `sista_dataset.json`, another
    local path its last component; a Hub id or a plain name is kept.
    """
    path = Path(name)
    if path.is_dir():
        return str((read_dataset_metadata(path) or {}).get("dataset") or path.resolve().name)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        return path.name
    return name


def parse_dataset_names(entries: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """
    `--datasets` entries: `NAME` (a Hub id or a plain name for the card) or `LOCAL=NAME` (the name that replaces
    the dataset a result or the training read, given by its folder or prepared name). Returns the names and the
    renaming.
    """
    names, renaming = [], {}
    for entry in entries or []:
        local, _, name = entry.rpartition("=")
        if not name.strip() or (local and not local.strip()):
            raise ValueError(f"--datasets entries are NAME or LOCAL=NAME, got {entry!r}.")
        if plain_dataset_name(name) != name:
            raise ValueError(f"--datasets names a dataset by a Hub id or a plain name, not a local path; got {name!r}.")
        names.append(name)
        if local:
            renaming[local] = renaming[plain_dataset_name(local)] = name
    return names, renaming


def training_datasets(run_dir: Path, training_arguments: Mapping[str, Any], results: Sequence) -> list[str]:
    """
    Plain names of the data the weights were trained on: the pre-training `dataset_path`, or a head's fine-tuning
    `dataset_dir` plus the data of the SISTA encoder it started from (when that folder is here to read).
    """
    folders = [training_arguments.get("dataset_path")]
    for result in results:
        folders += [result.details.get("dataset_dir")]
        encoder = result.details.get("encoder")
        if encoder and encoder != "scratch" and Path(str(encoder)).is_dir():
            encoder_arguments = load_training_arguments(Path(str(encoder)))
            folders.append(encoder_arguments.get("dataset_path"))
    names = []
    for folder in folders:
        if folder and plain_dataset_name(str(folder)) not in names:
            names.append(plain_dataset_name(str(folder)))
    return names


def is_hub_id(name: Any) -> bool:
    return (
        isinstance(name, str)
        and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None
        and not Path(name).exists()
        and not name.startswith(("/", "."))
    )


# Size fields of the transformer (ViT, BERT), convolutional (ResNet, ConvNeXt) and hierarchical (Swin) families
BACKBONE_SIZE_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "embedding_size", "embed_dim", "hidden_sizes", "depths",
    "num_heads", "layer_type", "window_size", "patch_size", "vocab_size",
)  # fmt: skip


def backbone_description(sub_config: Mapping[str, Any] | None) -> str:
    if not sub_config:
        return "unknown"
    sizes = ", ".join(f"{key} {sub_config[key]}" for key in BACKBONE_SIZE_KEYS if key in sub_config)
    return f"`{sub_config.get('model_type', 'unknown')}` ({sizes})"


# ---------------------------------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    if is_number(value) and isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def build_model_card(
    model_dir: str | os.PathLike,
    results: Sequence[str | os.PathLike] | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    run_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    license: str | None = None,
    datasets: Sequence[str] | None = None,
    model_name: str | None = None,
) -> ModelCard:
    r"""
    Builds the model card of a saved SISTA checkpoint (the pre-trained model or a task head).

    Args:
        model_dir: the `save_pretrained` folder (its `config.json` and safetensors are read).
        results: results JSON files or folders holding them. `None` reads the `*.json` results in `model_dir` and
            `run_dir`. A task head's card keeps only its own task's results.
        repo_id, revision: where the model will live; the usage code pins `revision`.
        run_dir: where the Trainer wrote `training_args.bin`/`trainer_state.json` (defaults to `model_dir`).
        base_model: the Hub id this model was trained from (a head: the pre-trained SISTA). Defaults to the
            backbones' Hub ids recorded by the run, for the pre-trained model; local paths are never written.
        license: the weights' licence. `None`: apache-2.0, or, for weights trained on data under a use agreement
            (MIMIC-CXR, CheXpert: `RESTRICTED_DATA`), `other` with that agreement's name and link.
        datasets: names for the card, never local paths (see [`parse_dataset_names`]): `NAME` entries are the
            card's datasets, `LOCAL=NAME` entries rename the datasets that results and training read. Default: the
            results' datasets, by their plain names.
        model_name: the card's title.

    The card's limitations follow the data: the synthetic-data caveat for SynthCXR, the real-data caveats for
    real datasets, and the use terms of every restricted dataset the weights derive from.
    """
    model_dir = Path(model_dir)
    run_dir = Path(run_dir) if run_dir is not None else model_dir
    config = read_sista_config(model_dir, argument="model_dir")
    architecture = (config.get("architectures") or ["SistaModel"])[0]
    pipeline_tag = PIPELINE_TAGS.get(architecture)
    is_head = architecture != "SistaModel"

    result_paths = list(results) if results is not None else sorted({model_dir, run_dir})
    task_results, training_summaries = load_results(result_paths)
    if is_head:
        kept = [result for result in task_results if result.info.head_class == architecture]
        for result in task_results:
            if result not in kept:
                logger.info(
                    "Leaving %s out of the %s card: it is a %s result.", result.source, architecture, result.task
                )
        task_results = kept
    task_results = sorted(task_results, key=lambda result: list(TASKS).index(result.task))
    results_by_task = {}
    for result in task_results:
        results_by_task.setdefault(result.task, []).append(result)

    training_arguments = load_training_arguments(run_dir)
    training_rows = [(key, training_arguments[key]) for key in TRAINING_ARGUMENT_KEYS if key in training_arguments]
    trainer_rows = list(trainer_summary(run_dir).items())
    seen = {(key.removeprefix("last "), value) for key, value in trainer_rows}
    for summary in training_summaries:
        for key, value in flatten_metrics(summary).items():
            if (key, value) not in seen:  # all_results.json repeats train_results.json and the last log
                seen.add((key, value))
                trainer_rows.append((f"{key} ({Path(summary['source']).name})", value))

    if base_model is None and not is_head:
        backbones = [training_arguments.get(key) for key in ("vision_model_name_or_path", "text_model_name_or_path")]
        base_model = [name for name in backbones if is_hub_id(name)] or None
    elif base_model is None and is_hub_id(config.get("_name_or_path")):
        base_model = config["_name_or_path"]

    given_names, renaming = parse_dataset_names(datasets)
    for result in task_results:
        result.dataset_name = renaming.get(result.dataset_name, result.dataset_name)
        if result.dataset_name in renaming.values() and is_hub_id(result.dataset_name):
            result.dataset_type = result.dataset_name
    dataset_names = given_names or sorted({result.dataset_name for result in task_results})
    trained_on = training_datasets(run_dir, training_arguments, task_results)
    evaluated_on = {name for result in task_results for name in (result.dataset_type, result.dataset_name)}
    data_used = set(trained_on) | evaluated_on
    synthetic = any(SYNTHETIC_DATASET in slug(name) for name in data_used)
    restricted = [terms for name, terms in RESTRICTED_DATA.items() if name in trained_on]
    if license is None:
        license = "other" if restricted else DEFAULT_LICENSE
    license_terms = {}
    if license == "other" and restricted:
        license_terms = {"license_name": restricted[0].license_name, "license_link": restricted[0].license_link}
    metric_types = sorted({metric_type(name) for result in task_results for name in result.metrics})
    tags = BASE_TAGS + [tag for tag in (pipeline_tag, "zero-shot-classification" if not is_head else None) if tag]
    card_data = ModelCardData(
        license=license,
        **license_terms,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=dataset_names or None,
        metrics=metric_types or None,
        base_model=base_model,
        model_name=model_name or (repo_id.split("/")[-1] if repo_id else f"sista-{slug(architecture)}"),
        eval_results=eval_results_for(task_results) or None,
    )
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=card_data.model_name,
        repo_id=repo_id or "path/to/this/folder",
        revision=revision,
        architecture=architecture,
        is_head=is_head,
        head_auto_class={
            "SistaForImageClassification": "AutoModelForImageClassification",
            "SistaForSemanticSegmentation": "AutoModelForSemanticSegmentation",
            "SistaForObjectDetection": "AutoModelForObjectDetection",
        }.get(architecture, "AutoModel"),
        vision_backbone=backbone_description(vision),
        text_backbone=backbone_description(text),
        image_size=read_training_image_size(model_dir),
        num_parameters=count_parameters(model_dir),
        objective_rows=[(key, config[key]) for key in SISTA_OBJECTIVE_KEYS if key in config],
        head_rows=head_rows(config, architecture),
        training_rows=[(key, format_value(value)) for key, value in training_rows],
        trainer_rows=[(key, format_value(value)) for key, value in trainer_rows],
        results_by_task={task: {"info": TASKS[task], "results": entries} for task, entries in results_by_task.items()},
        format_value=format_value,
        arxiv_id=ARXIV_ID,
        license_terms=license_terms,
        training_datasets=[renaming.get(name, name) for name in trained_on],
        synthetic_data=synthetic,
        real_data=any(SYNTHETIC_DATASET not in slug(name) for name in trained_on) or not synthetic,
        restricted_data=restricted,
    )
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("model_dir", help="the save_pretrained folder of a SISTA model or task head")
    parser.add_argument(
        "--results", nargs="*", default=None, help="results JSON files or folders (default: model_dir)"
    )
    parser.add_argument("--run_dir", default=None, help="folder with training_args.bin / trainer_state.json")
    parser.add_argument("--repo_id", default=None)
    parser.add_argument("--revision", default=None, help="branch, tag or commit the usage code pins")
    parser.add_argument("--base_model", default=None, help="Hub id of the model this one was trained from")
    parser.add_argument(
        "--license", default=None, help="default: apache-2.0, or the data's terms for weights from restricted data"
    )
    parser.add_argument("--datasets", nargs="*", default=None, help="NAME or LOCAL=NAME (Hub id or plain name)")
    parser.add_argument("--output", default=None, help="where to write the card (default: stdout)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s - %(message)s", level=logging.INFO)
    try:
        card = build_model_card(
            args.model_dir, args.results, args.repo_id, args.revision, args.run_dir, args.base_model, args.license,
            args.datasets,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(str(card))
        logger.info("Wrote %s", args.output)
    else:
        print(card)
    return 0


__all__ = ["TASKS", "TaskResult", "build_model_card", "eval_results_for", "load_results", "metric_type"]

if __name__ == "__main__":
    sys.exit(main())
