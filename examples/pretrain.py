#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Pre-train SISTA (SIA + STA) on chest X-ray image-report pairs with the Hugging Face `Trainer`.

The same script runs on one process or several (DDP, FSDP, DeepSpeed ZeRO-2) through `accelerate launch`:

    # SynthCXR is generated into --dataset_path when it does not exist yet
    python examples/pretrain.py --output_dir outputs/sista-small --model_preset small --num_train_epochs 2

    # 2 processes on CPU (gloo); on GPUs drop ACCELERATE_USE_CPU and use --config_file for FSDP/DeepSpeed
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 examples/pretrain.py --output_dir ...
    accelerate launch --config_file examples/accelerate_configs/fsdp.yaml examples/pretrain.py --output_dir ...

    # a prepared real dataset (datasets.load_from_disk) and two pre-trained backbones
    python examples/pretrain.py --dataset_path data/mimic_cxr --vision_model_name_or_path google/vit-base-patch16-224 \
        --text_model_name_or_path microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract --output_dir outputs/sista-base

The output directory holds the model, the processor (image processor + tokenizer) and the remote code, so it loads
with `SistaModel.from_pretrained(output_dir)` and `AutoModel/AutoProcessor.from_pretrained(output_dir,
trust_remote_code=True)`; plus TensorBoard logs under `runs/` and `loss_curve.png`.
"""

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BertConfig, HfArgumentParser, ViTConfig, set_seed

from configuration_sista import SistaConfig
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor, SistaProcessor
from push_to_hub import hub_push_request, push_after_training
from synthcxr import load_or_generate_synthcxr
from sista_trainer import (
    PretrainingDataset,
    SistaDataCollator,
    SistaTrainer,
    SistaTrainingArguments,
    XRayAugmentation,
    check_checkpoint_matches,
    resolve_checkpoint,
    train_report_tokenizer,
)


logger = logging.getLogger(__name__)

# Backbone sizes by preset; "base" is the paper-size ViT-B/16 + BERT-base.
MODEL_PRESETS = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "patch_size": 8, "image_size": 32, "projection_dim": 16},
    "small": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768,
              "patch_size": 16, "image_size": 128, "projection_dim": 128},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "patch_size": 16, "image_size": 224, "projection_dim": 512},
}
OBJECTIVES = ("clip", "sia", "sta", "sista")
# sia_threshold above 1 flags no false negative: SIA reduces exactly to the CLIP loss
NO_FALSE_NEGATIVES = 2.0
REQUIRED_COLUMNS = ("image", "report")


@dataclass
class ModelArguments:
    """Which model to pre-train and with which objective."""

    model_preset: str = field(
        default="small",
        metadata={"help": f"Backbone sizes when training from scratch: one of {tuple(MODEL_PRESETS)}.",
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
    image_size: int | None = field(default=None, metadata={"help": "Image side in pixels (default: the preset's)."})
    projection_dim: int | None = field(default=None, metadata={"help": "Shared embedding size (default: preset's)."})
    dropout: float = field(
        default=0.0,
        metadata={"help": "Hidden and attention dropout of preset backbones (0, as in CLIP pre-training)."},
    )
    vision_pooling: str | None = field(
        default=None,
        metadata={"help": "Global image feature: cls token or mean of patches (default: cls, or the checkpoint's).",
                  "choices": ("cls", "mean")},
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
    sia_threshold: float = field(
        default=0.44,
        metadata={
            "help": "Report similarity at or above which a pair is a false negative (sia/sista). The default is "
            "calibrated for the tfidf report encoder on SynthCXR (precision 0.95 against 'same label vector', "
            "docs/results/report_similarity.json); the same rule gives 0.92 for minilm."
        },
    )
    sia_mode: str = field(
        default="eliminate", metadata={"help": "eliminate or soft.", "choices": ("eliminate", "soft")}
    )
    sta_weight: float = field(default=1.0, metadata={"help": "Weight of STA for objectives sta and sista."})
    sta_temperature: float = field(default=0.1, metadata={"help": "Temperature of the STA token contrast."})
    max_length: int = field(default=128, metadata={"help": "Maximum report length in tokens (longer are truncated)."})


@dataclass
class DataArguments:
    """Which data to pre-train on and how to augment them."""

    dataset_path: str = field(
        default="data/synthcxr",
        metadata={"help": "A dataset saved with `save_to_disk` (DatasetDict or Dataset) with `image` and `report` "
                          "columns. If the path does not exist, SynthCXR is generated there."},
    )
    train_split: str = field(default="pretrain", metadata={"help": "Split of a DatasetDict to pre-train on."})
    eval_split: str | None = field(default="validation", metadata={"help": "Split evaluated with --do_eval."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training samples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation samples."})
    report_encoder: str = field(
        default="tfidf",
        metadata={"help": "Frozen encoder of the report-similarity embeddings for SIA, when the dataset has no "
                          "`report_embeds` column: tfidf (offline), minilm, or a local model path."},
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
    synthcxr_num_pretrain: int = field(default=4000, metadata={"help": "SynthCXR pretrain studies, if generated."})
    synthcxr_num_validation: int = field(default=500, metadata={"help": "SynthCXR validation studies, if generated."})
    synthcxr_num_train: int = field(default=1000, metadata={"help": "SynthCXR labelled train studies, if generated."})
    synthcxr_num_test: int = field(default=500, metadata={"help": "SynthCXR test studies, if generated."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for SynthCXR generation."}
    )


def check_output_dir_writable(output_dir: str) -> None:
    """A clear error now rather than a failed checkpoint after an hour of training."""
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir} is not writable: {error.strerror or error}.") from error


def load_or_generate_dataset(data_args: DataArguments, image_size: int, seed: int, training_args) -> DatasetDict:
    """Loads `dataset_path` with `load_from_disk`; generates SynthCXR there first when it does not exist."""
    dataset = load_or_generate_synthcxr(
        data_args.dataset_path,
        training_args,
        num_pretrain=data_args.synthcxr_num_pretrain,
        num_train=data_args.synthcxr_num_train,
        num_validation=data_args.synthcxr_num_validation,
        num_test=data_args.synthcxr_num_test,
        image_size=image_size,
        seed=seed,
        num_proc=data_args.preprocessing_num_workers,
    )
    if not isinstance(dataset, DatasetDict):
        dataset = DatasetDict({data_args.train_split: dataset})
    return dataset


def select_split(dataset: DatasetDict, split: str, max_samples: int | None, dataset_path: str):
    if split not in dataset:
        raise ValueError(f"Split {split!r} is not in {dataset_path}; it has {list(dataset)}.")
    split_dataset = dataset[split]
    missing = [column for column in REQUIRED_COLUMNS if column not in split_dataset.column_names]
    if missing:
        raise ValueError(
            f"Split {split!r} of {dataset_path} lacks the column(s) {missing}: pre-training needs "
            f"{list(REQUIRED_COLUMNS)} (an image and its report text); found {split_dataset.column_names}."
        )
    if max_samples is not None:
        split_dataset = split_dataset.select(range(min(max_samples, len(split_dataset))))
    return split_dataset


def build_tokenizer(model_args: ModelArguments, train_dataset, checkpoint: str | None, training_args):
    """A given tokenizer, the text backbone's, the one saved in the resumed checkpoint, or one built here."""
    name = model_args.tokenizer_name_or_path or model_args.text_model_name_or_path or model_args.model_name_or_path
    if name is not None:
        return AutoTokenizer.from_pretrained(name)
    if checkpoint is not None and (Path(checkpoint) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(checkpoint)
    # built once by the main process and read back by the others, so every process holds the same vocabulary
    tokenizer_dir = Path(training_args.output_dir)
    with training_args.main_process_first(desc="tokenizer"):
        if training_args.process_index == 0:
            logger.info(f"Building a WordPiece tokenizer from {len(train_dataset)} reports into {tokenizer_dir}.")
            return train_report_tokenizer(
                train_dataset["report"], vocab_size=model_args.tokenizer_vocab_size, save_directory=tokenizer_dir
            )
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def objective_config(model_args: ModelArguments) -> dict:
    """SistaConfig fields of the ablation chosen with --objective, and the pooling where given (else SistaConfig's
    default "cls", or a --model_name_or_path checkpoint's own)."""
    uses_sia = model_args.objective in ("sia", "sista")
    uses_sta = model_args.objective in ("sta", "sista")
    pooling = {"vision_pooling": model_args.vision_pooling, "text_pooling": model_args.text_pooling}
    return {
        "sia_weight": 1.0,
        "sia_threshold": model_args.sia_threshold if uses_sia else NO_FALSE_NEGATIVES,
        "sia_mode": model_args.sia_mode,
        "sta_weight": model_args.sta_weight if uses_sta else 0.0,
        "sta_temperature": model_args.sta_temperature,
        **{key: value for key, value in pooling.items() if value is not None},
    }


def starting_config(model_args: ModelArguments) -> SistaConfig:
    """
    The config of a --model_name_or_path checkpoint with this run's objective fields applied, after the checks that
    it is one this run can start from. Rebuilt through SistaConfig's constructor, so those fields are validated like
    a new config's.
    """
    if model_args.vision_model_name_or_path is not None or model_args.text_model_name_or_path is not None:
        raise ValueError(
            "--model_name_or_path (a whole SISTA checkpoint) excludes --vision_model_name_or_path and "
            f"--text_model_name_or_path (two backbones); got {model_args.model_name_or_path!r} with "
            f"{model_args.vision_model_name_or_path!r} and {model_args.text_model_name_or_path!r}."
        )
    try:
        config_dict, _ = SistaConfig.get_config_dict(model_args.model_name_or_path)
    except OSError as error:
        raise ValueError(f"--model_name_or_path {model_args.model_name_or_path!r} has no readable config: {error}")
    if config_dict.get("model_type") != SistaConfig.model_type:
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path!r} holds a {config_dict.get('model_type')!r} "
            "model, expected a 'sista' checkpoint (a SistaModel saved with save_pretrained)."
        )
    checkpoint_size = SistaConfig.from_dict(config_dict).vision_config.image_size
    if model_args.image_size is not None and model_args.image_size != checkpoint_size:
        raise ValueError(
            f"--image_size {model_args.image_size} differs from the {checkpoint_size} px of --model_name_or_path "
            f"{model_args.model_name_or_path!r}; leave --image_size out to use the checkpoint's."
        )
    return SistaConfig.from_dict({**config_dict, **objective_config(model_args)})


def build_model(model_args: ModelArguments, tokenizer, start_config: SistaConfig | None = None) -> SistaModel:
    """The model to pre-train; `start_config` is `starting_config(model_args)` when the caller already read it."""
    sista_kwargs = objective_config(model_args)
    sista_kwargs["sta_ignore_token_ids"] = sorted(set(tokenizer.all_special_ids))
    if model_args.model_name_or_path is not None:
        config = start_config if start_config is not None else starting_config(model_args)
        config.sta_ignore_token_ids = sista_kwargs["sta_ignore_token_ids"]
        return SistaModel.from_pretrained(model_args.model_name_or_path, config=config)
    if (model_args.vision_model_name_or_path is None) != (model_args.text_model_name_or_path is None):
        raise ValueError(
            "--vision_model_name_or_path and --text_model_name_or_path go together (two pre-trained backbones); "
            f"got {model_args.vision_model_name_or_path!r} and {model_args.text_model_name_or_path!r}."
        )
    preset = MODEL_PRESETS[model_args.model_preset]
    projection_dim = model_args.projection_dim or preset["projection_dim"]
    if model_args.vision_model_name_or_path is not None:
        return SistaModel.from_vision_text_pretrained(
            model_args.vision_model_name_or_path,
            model_args.text_model_name_or_path,
            tokenizer=tokenizer,
            projection_dim=projection_dim,
            **sista_kwargs,
        )
    size_keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    sizes = {key: preset[key] for key in size_keys}
    dropout = {"hidden_dropout_prob": model_args.dropout, "attention_probs_dropout_prob": model_args.dropout}
    vision_config = ViTConfig(
        **sizes, **dropout, patch_size=preset["patch_size"], image_size=model_args.image_size or preset["image_size"]
    )
    text_config = BertConfig(
        **sizes,
        **dropout,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(model_args.max_length, 64),
        pad_token_id=tokenizer.pad_token_id,
    )
    config = SistaConfig.from_vision_text_configs(
        vision_config, text_config, projection_dim=projection_dim, **sista_kwargs
    )
    return SistaModel(config)


def ensure_report_embeds(splits: DatasetDict, data_args: DataArguments, training_args) -> DatasetDict:
    """Adds the frozen report-similarity embeddings SIA needs, one encoder for all `splits` (cached by `datasets`)."""
    if all("report_embeds" in split.column_names for split in splits.values()):
        return splits
    from report_embeddings import add_report_embeddings

    with training_args.main_process_first(desc="report embeddings"):
        logger.info(f"Computing report_embeds of {list(splits)} with the {data_args.report_encoder!r} encoder.")
        return add_report_embeddings(splits, encoder=data_args.report_encoder, seed=training_args.seed)


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
            axis.plot(steps, values, marker="o" if key == "eval_loss" else None, markersize=3, label=key)
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
    model: SistaModel, dataset, collator, labels: list[list[int]] | None = None, batch_size: int = 64
) -> dict[str, float]:
    """Image-to-report top-1 on `dataset`: the exact pair and, given multi-hot `labels`, a report with the same
    labels (near-identical reports count as hits), beside the chance rate of the latter."""
    model.eval()
    image_embeds, text_embeds = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        token_type_ids = batch.get("token_type_ids")
        outputs = model(
            input_ids=batch["input_ids"].to(model.device),
            attention_mask=batch["attention_mask"].to(model.device),
            token_type_ids=None if token_type_ids is None else token_type_ids.to(model.device),
            pixel_values=batch["pixel_values"].to(model.device, model.dtype),
        )
        image_embeds.append(outputs.image_embeds.float().cpu())
        text_embeds.append(outputs.text_embeds.float().cpu())
    top1 = (torch.cat(image_embeds) @ torch.cat(text_embeds).t()).argmax(dim=1)
    results = {"retrieval_exact_top1": (top1 == torch.arange(len(top1))).float().mean().item()}
    if labels is not None:
        labels = torch.tensor(labels)
        same = (labels[:, None] == labels[None]).all(dim=-1).float()
        results["retrieval_same_labels_top1"] = same[torch.arange(len(top1)), top1].mean().item()
        results["retrieval_same_labels_chance"] = same.mean().item()
    return results


def main(args: list[str] | None = None):
    parser = HfArgumentParser((ModelArguments, DataArguments, SistaTrainingArguments))
    if args is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # this script's own progress messages on the main process, whatever the libraries' level
    script_log_level = min(log_level, logging.INFO) if training_args.should_log else log_level
    for name in (__name__, "sista_trainer", "synthcxr", "report_embeddings"):
        logging.getLogger(name).setLevel(script_log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.warning(
        f"Process {training_args.process_index}/{training_args.world_size}, device {training_args.device}, "
        f"distributed: {training_args.parallel_mode.value}"
    )

    # every bad input fails here, before any training
    check_output_dir_writable(training_args.output_dir)
    hub_push = hub_push_request(training_args)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    set_seed(training_args.seed)
    preset = MODEL_PRESETS[model_args.model_preset]
    image_size = model_args.image_size or preset["image_size"]
    start_config = None
    if model_args.model_name_or_path is not None:
        start_config = starting_config(model_args)
        image_size = start_config.vision_config.image_size

    raw_dataset = load_or_generate_dataset(data_args, image_size, training_args.seed, training_args)
    path = data_args.dataset_path
    train_dataset = select_split(raw_dataset, data_args.train_split, data_args.max_train_samples, path)
    eval_dataset = None
    if training_args.do_eval and data_args.eval_split:
        eval_dataset = select_split(raw_dataset, data_args.eval_split, data_args.max_eval_samples, path)

    tokenizer = build_tokenizer(model_args, train_dataset, checkpoint, training_args)
    set_seed(training_args.seed)  # same initial weights whatever the steps above drew
    model = build_model(model_args, tokenizer, start_config)
    if checkpoint is not None:
        check_checkpoint_matches(model, checkpoint)
    logger.info(
        f"SISTA ({model_args.objective}): {model.num_parameters() / 1e6:.1f}M parameters, "
        f"sia_threshold={model.config.sia_threshold}, sta_weight={model.config.sta_weight}"
    )

    needs_report_embeds = model.config.sia_threshold <= 1 and model.config.sia_similarity_source == "report_embeds"
    if needs_report_embeds:
        splits = DatasetDict({"train": train_dataset, **({"eval": eval_dataset} if eval_dataset is not None else {})})
        splits = ensure_report_embeds(splits, data_args, training_args)
        train_dataset, eval_dataset = splits["train"], splits.get("eval")

    vision_config = model.config.vision_config
    image_processor = SistaImageProcessor(
        size={"height": vision_config.image_size, "width": vision_config.image_size},
        num_channels=vision_config.num_channels,
    )
    processor = SistaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    augmentation = None
    if data_args.augment:
        augmentation = XRayAugmentation(
            crop_scale=(data_args.crop_scale_min, 1.0),
            rotation_degrees=data_args.rotation_degrees,
            translate=data_args.translate,
            brightness=data_args.brightness,
            contrast=data_args.contrast,
            horizontal_flip=data_args.horizontal_flip,
        )
    report_embeds_column = "report_embeds" if needs_report_embeds else None
    train_dataset = PretrainingDataset(
        train_dataset,
        image_processor,
        augmentation,
        seed=training_args.seed,
        report_embeds_column=report_embeds_column,
    )
    eval_labels = None
    if eval_dataset is not None:
        eval_labels = eval_dataset["labels"] if "labels" in eval_dataset.column_names else None
        eval_dataset = PretrainingDataset(eval_dataset, image_processor, report_embeds_column=report_embeds_column)
    collator = SistaDataCollator(tokenizer, max_length=model_args.max_length)

    trainer = SistaTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
    )
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # model, config, remote code, and the processor with its tokenizer
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        # one process runs the whole model: not possible while FSDP/DeepSpeed shard the weights
        if trainer.is_world_process_zero() and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
            sista = trainer.accelerator.unwrap_model(trainer.model)
            metrics.update(retrieval_sanity(sista, eval_dataset, collator, eval_labels))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir).resolve()
        # the script's own arguments beside the Trainer's training_args.bin (read by examples/model_card.py)
        run_arguments = {"model": asdict(model_args), "data": asdict(data_args)}
        (output_dir / "run_arguments.json").write_text(json.dumps(run_arguments, indent=2, default=str) + "\n")
        curve = output_dir / "loss_curve.png"
        save_loss_curve(trainer.state.log_history, curve)
        first = next((entry for entry in trainer.state.log_history if "loss" in entry), {})
        last = next((entry for entry in reversed(trainer.state.log_history) if "loss" in entry), {})
        summary = " ".join(
            f"{key} {first[key]:.3f} -> {last[key]:.3f}" for key in ("loss", "loss_sia", "loss_sta") if key in first
        )
        print(
            f"\nSISTA pre-training finished ({trainer.state.global_step} steps; {summary}).\n"
            f"  model + processor : {output_dir}  (SistaModel.from_pretrained / AutoModel + trust_remote_code=True)\n"
            f"  TensorBoard logs  : {output_dir / 'runs'}  (tensorboard --logdir {output_dir / 'runs'})\n"
            f"  loss curve        : {curve}\n"
            f"  metrics           : {output_dir}/*_results.json",
            flush=True,
        )
        push_after_training(hub_push, output_dir)
    return trainer


def finish(trainer) -> None:
    """Leaves a multi-process run without gloo's sometimes-failing teardown at interpreter exit."""
    if trainer is not None and trainer.accelerator.num_processes > 1:
        trainer.accelerator.wait_for_everyone()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    finish(main())
