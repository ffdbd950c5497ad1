# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The pieces of `examples/pretrain.py`: its arguments, the splits, the report tokenizer, the model (from presets, two
backbones or a whole SISTA checkpoint, with the chosen objective), report embeddings for SIA with the threshold that
belongs to them, the loss curve and the end-of-run retrieval check. The run's settings are resolved once, by
`run_config.resolve_run_config`.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BertConfig, ResNetConfig, ViTConfig

from configuration_sista import SistaConfig
from modeling_sista import SistaModel
from processing_sista import report_has_content

from ..data.metadata import METADATA_FILE, read_dataset_metadata
from ..data.report_embeddings import check_sia_threshold, default_threshold, drop_column, embed_dataset, resolve_encoder
from ..data.synthcxr import SynthCXRGenerationArguments
from ..evaluation.retrieval import recall_at_k, retrieval_positives
from .dataset import normalize_pixel_values
from .tokenizer import train_report_tokenizer


logger = logging.getLogger(__name__)

# Backbones by preset: the vision family and its sizes, the BERT text tower, the image side, the projection size and
# the global image feature. "small" is the CPU recipe (a ResNet learns from scratch where the ViT of "small-vit"
# collapses under the CLIP loss); "base" is the paper-size ViT-B/16 + BERT-base. docs/pretraining.md has the table.
TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
SMALL_TEXT = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768}
BASE_TEXT = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
MODEL_PRESETS = {
    "tiny": {"vision_backbone": "vit", "vision": {**TINY_TEXT, "patch_size": 8}, "text": TINY_TEXT,
             "image_size": 32, "projection_dim": 16, "vision_pooling": None},
    "tiny-resnet": {"vision_backbone": "resnet",
                    "vision": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
                    "text": TINY_TEXT, "image_size": 32, "projection_dim": 16, "vision_pooling": "mean"},
    "small": {"vision_backbone": "resnet",
              "vision": {"embedding_size": 32, "hidden_sizes": [48, 96, 192], "depths": [1, 1, 1],
                         "layer_type": "basic"},
              "text": SMALL_TEXT, "image_size": 128, "projection_dim": 128, "vision_pooling": "mean"},
    "small-vit": {"vision_backbone": "vit", "vision": {**SMALL_TEXT, "patch_size": 16}, "text": SMALL_TEXT,
                  "image_size": 128, "projection_dim": 128, "vision_pooling": None},
    "base": {"vision_backbone": "vit", "vision": {**BASE_TEXT, "patch_size": 16}, "text": BASE_TEXT,
             "image_size": 224, "projection_dim": 512, "vision_pooling": None},
}  # fmt: skip
VISION_POOLINGS = ("cls", "mean", "pooler")
OBJECTIVES = ("clip", "sia", "sta", "sista")
# STA options passed on to SistaConfig when given (else SistaConfig's default or the checkpoint's own)
STA_OPTION_FIELDS = (
    "sta_negatives", "sta_sparsity", "sta_top_k", "sta_center_patches", "sta_start_step", "sta_warmup_steps",
    "sta_token_unit",
)
REPORT_EMBEDS_COLUMN = "report_embeds"
REPORT_EMBEDDINGS_KEY = "report_embeddings"  # the record examples/report_embeddings.py stores in sista_dataset.json
REQUIRED_COLUMNS = ("image", "report")
# The split pre-training reads when --train_split is not given: SynthCXR's own, else a prepared dataset's.
PRETRAINING_SPLITS = ("pretrain", "train")
DEFAULT_EVAL_SPLIT = "validation"


@dataclass
class PretrainingModelArguments:
    """Which model to pre-train and with which objective."""

    model_preset: str = field(
        default="small",
        metadata={"help": f"Backbones when training from scratch: one of {tuple(MODEL_PRESETS)} (small: the ResNet "
                          "CPU recipe; small-vit: a ViT of the same width; base: ViT-B/16 + BERT-base).",
                  "choices": tuple(MODEL_PRESETS)},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A SISTA checkpoint (folder or Hub id) to continue pre-training from: backbones, "
                          "projections, logit scale and tokenizer; this run's --objective and SIA/STA options "
                          "replace the checkpoint's, its pooling and image size are kept unless given."},
    )
    vision_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pre-trained vision backbone (with --text_model_name_or_path); else preset."}
    )
    text_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pre-trained text backbone (with --vision_model_name_or_path); else preset."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer path or Hub id. Default: the text backbone's tokenizer, or, from scratch, a "
                          "WordPiece tokenizer built from the training reports (no download)."},
    )
    tokenizer_vocab_size: int = field(default=3000, metadata={"help": "Vocabulary size of a tokenizer built here."})
    image_size: int | None = field(
        default=None,
        metadata={"help": "Training image side in pixels, saved with the image processor (default: the checkpoint's, "
                          "the vision backbone's, or the preset's)."},
    )
    projection_dim: int | None = field(
        default=None,
        metadata={"help": "Shared embedding size (default: the preset's; with pre-trained backbones the narrower of "
                          "their widths)."},
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "Hidden and attention dropout of preset transformer backbones (0, as in CLIP pre-training)."},
    )
    vision_pooling: str | None = field(
        default=None,
        metadata={"help": "Global image feature: cls token, mean of patches, or the backbone's own pooled output "
                          "(default: the preset's, or cls, or the checkpoint's).",
                  "choices": VISION_POOLINGS},
    )
    text_pooling: str | None = field(
        default=None,
        metadata={"help": "Global report feature: cls token or mean of tokens (default: cls, or the checkpoint's).",
                      "choices": ("cls", "mean")},
    )
    objective: str = field(
        default="sista",
        metadata={"help": "clip: CLIP loss only; sia: SIA only; sta: CLIP + STA; sista: SIA + STA.",
                  "choices": OBJECTIVES},
    )
    sia_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Report similarity at or above which a pair is a false negative (sia/sista). Default: the "
            "threshold stored with the dataset's report embeddings (sista_dataset.json, written by "
            "examples/report_embeddings.py), else the report encoder's calibrated one (0.99 for labels and labeler, "
            "the SistaConfig default; 0.44 tfidf, 0.92 minilm)."
        },
    )
    sia_mode: str = field(
        default="eliminate", metadata={"help": "eliminate or soft.", "choices": ("eliminate", "soft")}
    )
    sta_weight: float = field(default=1.0, metadata={"help": "Weight of STA for objectives sta and sista."})
    sta_temperature: float = field(default=0.1, metadata={"help": "Temperature of the STA token contrast."})
    sta_negatives: str | None = field(
        default=None,
        metadata={"help": "STA's negatives (SistaConfig.sta_negatives): tokens (the design), images or "
                          "tokens+images. Default: SistaConfig's, or a --model_name_or_path checkpoint's own.",
                  "choices": ("tokens", "images", "tokens+images")},
    )
    sta_sparsity: str | None = field(
        default=None,
        metadata={"help": "SistaConfig.sta_sparsity: threshold (the design), top_k, softmax or max (FILIP). Default: "
                          "SistaConfig's, or a --model_name_or_path checkpoint's own (so for the fields below).",
                  "choices": ("threshold", "top_k", "softmax", "max")},
    )
    sta_top_k: int | None = field(default=None, metadata={"help": "SistaConfig.sta_top_k (with --sta_sparsity top_k)."})
    sta_center_patches: bool | None = field(
        default=None, metadata={"help": "SistaConfig.sta_center_patches: remove each grid cell's mean patch for STA."}
    )
    sta_start_step: int | None = field(default=None, metadata={"help": "SistaConfig.sta_start_step (warm start)."})
    sta_warmup_steps: int | None = field(default=None, metadata={"help": "SistaConfig.sta_warmup_steps (ramp)."})
    sta_token_unit: str | None = field(
        default=None,
        metadata={"help": "SistaConfig.sta_token_unit: tokens (the design) or words (content words).",
                  "choices": ("tokens", "words")},
    )
    max_length: int = field(default=128, metadata={"help": "Maximum report length in tokens (longer are truncated)."})
    pad_to_multiple_of: int | None = field(
        default=8,
        metadata={"help": "Pad each batch's reports to a multiple of this many tokens (few batch shapes for "
                          "compiled or CUDA-graph steps; --max_length for one shape); must divide --max_length. "
                          "None: to the longest report."},
    )

    def __post_init__(self):
        if self.pad_to_multiple_of is not None and (
            self.pad_to_multiple_of <= 0 or self.max_length % self.pad_to_multiple_of
        ):
            raise ValueError(
                f"--pad_to_multiple_of must be a positive divisor of --max_length {self.max_length} (padding may not "
                f"pass the longest length), got {self.pad_to_multiple_of}."
            )


@dataclass
class PretrainingDataArguments(SynthCXRGenerationArguments):
    """Which data to pre-train on (SynthCXR generated at the default folder, or when asked) and how to augment them."""

    dataset_path: str = field(
        default="data/synthcxr",
        metadata={"help": "A dataset saved with `save_to_disk` (DatasetDict or Dataset) with `image` and `report` "
                          "columns. If the path does not exist, SynthCXR is generated there only at the default "
                          "path or with --generate_synthcxr; any other missing path is an error."},
    )
    train_split: str | None = field(
        default=None,
        metadata={"help": f"Split to pre-train on. Default: the dataset's pre-training split, the first of "
                          f"{PRETRAINING_SPLITS} it has (SynthCXR: pretrain; a prepared MIMIC-CXR: train)."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": f"Split evaluated at the end (losses and retrieval; off with --do_eval False). Default: "
                          f"{DEFAULT_EVAL_SPLIT!r} when the dataset has it."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training samples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation samples."})
    report_encoder: str | None = field(
        default=None,
        metadata={"help": "Encoder of the report-similarity embeddings for SIA: labels, labeler, tfidf, minilm or a "
                          "model path. Default: the one stored with the dataset's `report_embeds`, else auto (labels "
                          "when the dataset has a `labels` column, else labeler). Embeddings it lacks are computed on "
                          "every split, as examples/report_embeddings.py does."},
    )
    augment: bool = field(default=True, metadata={"help": "Apply training augmentations."})
    crop_scale_min: float = field(default=0.8, metadata={"help": "Smallest area fraction of the random crop."})
    rotation_degrees: float = field(default=10.0, metadata={"help": "Largest rotation in degrees."})
    translate: float = field(default=0.05, metadata={"help": "Largest translation, fraction of the image side."})
    brightness: float = field(default=0.1, metadata={"help": "Largest brightness shift (intensities in [0, 1])."})
    contrast: float = field(default=0.1, metadata={"help": "Largest relative contrast change."})
    horizontal_flip: bool = field(
        default=False, metadata={"help": "Random horizontal flips. Off: reports name the patient's side."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for SynthCXR generation and the report embeddings computed here."}
    )


def resolve_splits(dataset: DatasetDict, data_args: PretrainingDataArguments, do_eval: bool) -> tuple[str, str | None]:
    """
    The training and evaluation split names: those given, else the dataset's pre-training split (the first of
    `PRETRAINING_SPLITS` it has) and its `validation` split when it has one (no evaluation otherwise).
    """
    train_split = data_args.train_split
    if train_split is None:
        train_split = next((name for name in PRETRAINING_SPLITS if name in dataset), None)
        if train_split is None:
            raise ValueError(
                f"--train_split: {data_args.dataset_path} has none of the pre-training splits {PRETRAINING_SPLITS}; "
                f"it has {list(dataset)}. Pass --train_split with one of them."
            )
    eval_split = data_args.eval_split if do_eval else None
    if do_eval and eval_split is None and DEFAULT_EVAL_SPLIT in dataset:
        eval_split = DEFAULT_EVAL_SPLIT
    origin = "given" if data_args.train_split else "found"
    logger.info(
        f"Pre-training on split {train_split!r} of {data_args.dataset_path} ({origin}); "
        + (f"evaluating on {eval_split!r}." if eval_split else "no evaluation split (none given or found).")
    )
    return train_split, eval_split


def check_split(dataset: DatasetDict, split: str, dataset_path: str) -> None:
    """A clear error when `split` is missing from `dataset` or lacks a column pre-training needs."""
    if split not in dataset:
        raise ValueError(f"Split {split!r} is not in {dataset_path}; it has {list(dataset)}.")
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset[split].column_names]
    if missing:
        raise ValueError(
            f"Split {split!r} of {dataset_path} lacks the column(s) {missing}: pre-training needs "
            f"{list(REQUIRED_COLUMNS)} (an image and its report text); found {dataset[split].column_names}."
        )


def select_split(dataset: DatasetDict, split: str, max_samples: int | None, dataset_path: str):
    check_split(dataset, split, dataset_path)
    split_dataset = dataset[split]
    if max_samples is not None:
        split_dataset = split_dataset.select(range(min(max_samples, len(split_dataset))))
    return drop_empty_reports(split_dataset, split)


def drop_empty_reports(dataset, split: str):
    """Rows whose report has no content (missing, or no letter or digit: `processing_sista.report_has_content`) have
    nothing to align: they are dropped, with their count logged."""
    # in memory: no cache file written beside a dataset that may be read-only or read by several processes at once
    kept = dataset.filter(
        report_has_content, input_columns="report", keep_in_memory=True, desc=f"Dropping empty reports ({split})"
    )
    if len(kept) == len(dataset):
        return dataset  # without an indices mapping in front of every read
    logger.warning(
        f"Split {split!r}: dropped {len(dataset) - len(kept)} of {len(dataset)} rows whose report has no content "
        "(missing, or no letter or digit)."
    )
    return kept


def build_tokenizer(model_args: PretrainingModelArguments, train_dataset, checkpoint: str | None, training_args):
    """A given tokenizer, the text backbone's, the one saved in the resumed checkpoint, or one built here."""
    name = model_args.tokenizer_name_or_path or model_args.text_model_name_or_path or model_args.model_name_or_path
    if name is not None:
        return AutoTokenizer.from_pretrained(name)
    if checkpoint is not None and (Path(checkpoint) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(checkpoint)
    # built once by the global main process and read back by the others (on every node, once it is written), so
    # every process holds the same vocabulary
    tokenizer_dir = Path(training_args.output_dir)
    with training_args.main_process_first(local=False, desc="tokenizer"):
        if training_args.process_index == 0:
            logger.info(f"Building a WordPiece tokenizer from {len(train_dataset)} reports into {tokenizer_dir}.")
            return train_report_tokenizer(
                train_dataset["report"], vocab_size=model_args.tokenizer_vocab_size, save_directory=tokenizer_dir
            )
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def preset_configs(run_config, vocab_size: int, pad_token_id: int | None):
    """The vision and text configs of the run's preset at its image size (ViT position embeddings depend on it)."""
    preset = MODEL_PRESETS[run_config.model_preset]
    dropout = {"hidden_dropout_prob": run_config.dropout, "attention_probs_dropout_prob": run_config.dropout}
    if preset["vision_backbone"] == "resnet":
        vision_config = ResNetConfig(**preset["vision"])
    else:
        vision_config = ViTConfig(**preset["vision"], **dropout, image_size=run_config.image_size)
    text_config = BertConfig(
        **preset["text"],
        **dropout,
        vocab_size=vocab_size,
        max_position_embeddings=max(run_config.max_length, 64),
        pad_token_id=pad_token_id,
    )
    return vision_config, text_config


def build_model(run_config, tokenizer) -> SistaModel:
    """
    The model to pre-train, as the run configuration (`run_config.resolve_run_config`) says: a whole SISTA checkpoint
    with this run's objective fields, two pre-trained backbones, or the preset from scratch.
    """
    sista_kwargs = run_config.sista_config_fields()
    sista_kwargs["sta_ignore_token_ids"] = sorted(set(tokenizer.all_special_ids))
    if run_config.model_name_or_path is not None:
        # rebuilt through SistaConfig's constructor, so this run's fields are validated like a new config's
        config = SistaConfig.from_dict({**run_config.checkpoint_config, **sista_kwargs})
        return SistaModel.from_pretrained(run_config.model_name_or_path, config=config)
    if run_config.vision_model_name_or_path is not None:
        return SistaModel.from_vision_text_pretrained(
            run_config.vision_model_name_or_path,
            run_config.text_model_name_or_path,
            tokenizer=tokenizer,
            projection_dim=run_config.projection_dim,
            **sista_kwargs,
        )
    vision_config, text_config = preset_configs(run_config, len(tokenizer), tokenizer.pad_token_id)
    config = SistaConfig.from_vision_text_configs(
        vision_config, text_config, projection_dim=run_config.projection_dim, **sista_kwargs
    )
    return SistaModel(config)


def report_embeddings_plan(dataset: DatasetDict, dataset_path: str, report_encoder: str | None,
                           sia_threshold: float | None) -> dict:
    """
    Which report embeddings and SIA threshold this run uses, and where each comes from: the `report_embeds` column
    and the threshold stored with it in `sista_dataset.json`, unless `--report_encoder` asks for another encoder (then
    computed here) or `--sia_threshold` for another threshold. Without a column, the embeddings are computed with
    `--report_encoder` (default auto) and the threshold defaults to that encoder's calibrated one. `encoder_source`
    and `sia_threshold_source` say which of the run configuration's sources (given, dataset, default) each came from.
    """
    stored = (read_dataset_metadata(dataset_path) or {}).get(REPORT_EMBEDDINGS_KEY)
    has_column = all(REPORT_EMBEDS_COLUMN in split.column_names for split in dataset.values())
    if report_encoder is not None:
        report_encoder = resolve_encoder(dataset, report_encoder)
    if sia_threshold is not None:
        check_sia_threshold(sia_threshold)
    if has_column and report_encoder is None and stored is None:
        if sia_threshold is None:
            raise ValueError(
                f"{dataset_path} has a {REPORT_EMBEDS_COLUMN!r} column but no record of its encoder and threshold in "
                f"{METADATA_FILE}: pass --sia_threshold for it, or recompute it with `python "
                f"examples/report_embeddings.py --dataset_dir {dataset_path} --overwrite_column true`."
            )
        return {"encoder": "unrecorded", "compute": False, "sia_threshold": float(sia_threshold),
                "embeddings_from": f"{dataset_path} ({REPORT_EMBEDS_COLUMN})", "threshold_from": "--sia_threshold",
                "encoder_source": "dataset", "sia_threshold_source": "given"}
    if has_column and stored is not None and report_encoder in (None, stored["encoder"]):
        plan = {**stored, "compute": False, "embeddings_from": f"{dataset_path}/{METADATA_FILE}",
                "encoder_source": "dataset" if report_encoder is None else "given", "sia_threshold_source": "dataset"}
        where = f"{dataset_path}/{METADATA_FILE} ({stored.get('threshold_source', 'stored')})"
    else:
        encoder = report_encoder or resolve_encoder(dataset, "auto")
        plan = {"encoder": encoder, "compute": True, "embeddings_from": "computed by this run on every split",
                "sia_threshold": default_threshold(encoder), "sia_threshold_source": "default",
                "encoder_source": "default" if report_encoder is None else "given"}  # fmt: skip
        where = f"the calibrated default of the {encoder!r} encoder"
        if sia_threshold is None and plan["sia_threshold"] is None:
            raise ValueError(f"--sia_threshold is required for --report_encoder {encoder!r}, which has no calibrated "
                             "default (choose one with `python examples/report_embeddings.py analyze`).")
    if sia_threshold is not None:
        plan["sia_threshold"], where = float(sia_threshold), "--sia_threshold"
        plan["sia_threshold_source"] = "given"
    plan["threshold_from"] = where
    return plan


def prepare_report_embeddings(dataset: DatasetDict, run_config, data_args: PretrainingDataArguments,
                              training_args) -> tuple[DatasetDict, dict]:
    """
    The report embeddings SIA needs on every split of `dataset`, as `run_config.report_embeddings` plans them, and the
    record of what they are (encoder, threshold and where both came from; logged, and saved in run_arguments.json).
    Embeddings the dataset lacks are computed by the same step, with the same defaults, as
    `examples/report_embeddings.py` (`embed_dataset`: TF-IDF fitted on every split, projection seed 0 whatever the
    training seed), cached by `datasets`.
    """
    plan = dict(run_config.report_embeddings)  # the plan the run configuration resolved
    if plan.pop("compute"):
        dataset, record = embed_dataset_once(dataset, plan, data_args, training_args)
        plan = {**record, **plan}
    logger.info(
        f"SIA report embeddings: encoder {plan['encoder']} ({plan['embeddings_from']}); "
        f"sia_threshold={plan['sia_threshold']} from {plan['threshold_from']}."
    )
    return dataset, plan


def embed_dataset_once(dataset: DatasetDict, plan: dict, data_args: PretrainingDataArguments, training_args) -> tuple:
    r"""
    `embed_dataset` run by the global main process only: with several processes it writes the columns and the record
    to `output_dir/report_embeds/`, and the others (on every node) read them after a global barrier instead of
    refitting the encoder.
    """
    shared_dir = Path(training_args.output_dir) / "report_embeds"
    dataset = drop_column(dataset, REPORT_EMBEDS_COLUMN)
    with training_args.main_process_first(local=False, desc="report embeddings"):
        if training_args.process_index == 0:
            dataset, record = embed_dataset(
                dataset, encoder=plan["encoder"], sia_threshold=plan["sia_threshold"],
                class_names=(read_dataset_metadata(data_args.dataset_path) or {}).get("class_names"),
                num_proc=data_args.preprocessing_num_workers,
            )
            if training_args.world_size > 1:
                shared_dir.mkdir(parents=True, exist_ok=True)
                for name, split in dataset.items():
                    embeds = split.select_columns([REPORT_EMBEDS_COLUMN]).with_format("numpy")[:][REPORT_EMBEDS_COLUMN]
                    np.save(shared_dir / f"{name}.npy", np.asarray(embeds, dtype=np.float32))
                (shared_dir / "record.json").write_text(json.dumps(record, indent=2) + "\n")
            return dataset, record
    record = json.loads((shared_dir / "record.json").read_text())
    dataset = DatasetDict({
        name: split.add_column(REPORT_EMBEDS_COLUMN, list(np.load(shared_dir / f"{name}.npy")))
        for name, split in dataset.items()
    })  # fmt: skip
    return dataset, record


def backbone_width(config) -> int:
    """The width of a backbone's last hidden state from its config: `hidden_size`, else the last `hidden_sizes`."""
    hidden_sizes = getattr(config, "hidden_sizes", None)
    return int(hidden_sizes[-1]) if hidden_sizes else int(config.hidden_size)


def save_loss_curve(log_history: list[dict], path: Path) -> None:
    """loss, loss_sia and loss_sta against the optimizer step, from `trainer.state.log_history`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for key in ("loss", "loss_sia", "loss_sta", "eval_loss"):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o", markersize=3, label=key)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title("SISTA pre-training")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@torch.no_grad()
def retrieval_sanity(
    model: SistaModel,
    dataset,
    collator,
    labels: list[list[int]] | None = None,
    batch_size: int = 64,
    study_ids: list[str] | None = None,
) -> dict[str, float]:
    """Image-to-report top-1 on `dataset`: the exact pair (any report of the image's study, given `study_ids`) and,
    given multi-hot `labels`, a report with the same labels (near-identical reports count as hits), beside the
    chance rate of the latter."""
    model.eval()
    image_processor = dataset.image_processor
    image_embeds, text_embeds = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        token_type_ids = batch.get("token_type_ids")
        pixel_values = normalize_pixel_values(
            batch["pixel_values"].to(model.device),
            image_processor.image_mean,
            image_processor.image_std,
            model.config.vision_config.num_channels,
            model.dtype,
        )
        outputs = model(
            input_ids=batch["input_ids"].to(model.device),
            attention_mask=batch["attention_mask"].to(model.device),
            token_type_ids=None if token_type_ids is None else token_type_ids.to(model.device),
            pixel_values=pixel_values,
        )
        image_embeds.append(outputs.image_embeds.float().cpu())
        text_embeds.append(outputs.text_embeds.float().cpu())
    similarity = (torch.cat(image_embeds) @ torch.cat(text_embeds).t()).numpy()
    # the evaluation's retrieval rule: a hit tied with a non-hit ranks after it
    study_ids = None if study_ids is None else np.asarray(study_ids)
    paired = retrieval_positives(len(similarity), study_ids=study_ids)
    results = {"retrieval_exact_top1": recall_at_k(similarity, paired, [1])["R@1"]}
    if labels is not None:
        same = retrieval_positives(len(similarity), np.asarray(labels), study_ids)
        results["retrieval_same_labels_top1"] = recall_at_k(similarity, same, [1])["R@1"]
        results["retrieval_same_labels_chance"] = float(same.mean())
    return results
