#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Reproduction study on SynthCXR: SISTA against CLIP and the SIA / STA ablations.

For every objective in `--objectives` and every seed in `--seeds`, with one identical pre-training budget:

1. pre-train with `examples/pretrain.py --objective {clip,sia,sta,sista}` (the demo's recipe: `small` ResNet preset,
   128 px, 8 x 8 grid, batch 32, AdamW lr 1e-3, warm-up 20, cosine, 6 epochs);
2. at each label fraction of a 10,000-study labelled pool (1% = 100 studies; nested subsets), on the frozen encoder:
   classification by `examples/linear_probe.py` (scikit-learn logistic regression, its regularisation chosen on the
   validation split, macro AUROC), segmentation (the field's U-Net over the ResNet's stages; Dice over all pixels and
   per lesion size) and detection (mAP@[.40:.75]) heads by `examples/finetune_{segmentation,detection}.py` with a
   step budget per fraction (capped in steps, not in studies), the validation split evaluated at every quarter of it
   and the head of the best step (segmentation: Dice; detection: loss) scored on the test split
   (`--load_best_model_at_end`);
3. zero-shot AUROC (`examples/zero_shot.py`), retrieval R@1/5/10 and the mean pairwise image cosine
   (`examples/retrieval.py`) and the grounding pointing game beside its random-point, fixed-point and oracle
   references (`examples/visualize_grounding.py`) on the test split.

One SynthCXR dataset (with `report_embeds` of the rule-based report labeler run on the report text, as a user of
MIMIC-CXR would compute them) is generated once into `<work_dir>/synthcxr` and shared by all runs.
Every run writes its own results JSON; a run whose JSON exists is skipped, so a stopped study continues where it
stopped. Each (objective, seed) runs in its own Python process (the example scripts are called through their
`main(args)`), and the aggregation at the end reads every results JSON it finds:

    docs/results/reproduce_results.json   every run's raw numbers, the protocol, versions, wall times
    docs/results/reproduce_table.md       mean ± std over seeds, and every objective's paired difference to CLIP
                                          with its 95% interval over seeds (paired Student t) and the exact
                                          sign-flip p
    docs/results/reproduce_*.png          metric against label fraction, one line per objective, std error bars

    python research/reproduce.py                       # the full study
    python research/reproduce.py --quick               # 1 seed, tiny data and budgets, every task (a pipeline check)
    python research/reproduce.py --objectives clip,sista --seeds 0,1 --output_dir /tmp/study
    python research/reproduce.py --aggregate_only      # rebuild table and plots from the runs found (a seed that
                                                       # not every objective finished is left out, with its reason)
    python research/reproduce.py --aggregate_only --seeds 0,1   # ... of these seeds only
"""

import importlib.util
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

logger = logging.getLogger("reproduce")

OBJECTIVES = ("clip", "sia", "sta", "sista")
FINETUNE_TASKS = ("classification", "segmentation", "detection")
EVAL_TASKS = ("zero_shot", "retrieval", "grounding")
ALL_TASKS = FINETUNE_TASKS + EVAL_TASKS

# (task, headline metric key inside the run record, label shown in tables)
HEADLINE_METRICS = {
    "classification": [("auroc", "linear-probe AUROC")],
    "segmentation": [("dice", "Dice"), ("dice_small", "Dice, small lesions"), ("dice_large", "Dice, large lesions")],
    "detection": [("map_40_75", "mAP@[.40:.75]")],
    "zero_shot": [("macro_auroc", "zero-shot AUROC")],
    "retrieval": [
        ("i2r_R@1", "image→report R@1"),
        ("i2r_R@5", "image→report R@5"),
        ("i2r_R@10", "image→report R@10"),
        ("sem_i2r_R@1", "image→report R@1 (semantic)"),
        ("image_mean_cosine", "mean pairwise image cosine"),
    ],
    "grounding": [
        ("pointing_accuracy", "pointing game"),
        ("pointing_shuffled_image", "pointing game, another study's image"),
        ("pointing_small_accuracy", "pointing game, small/ambiguous findings"),
        ("pointing_cnr", "pointing CNR"),
        ("pointing_shuffled_cnr", "pointing CNR, another study's image"),
    ],
}
# what a metric is read against, shown beside it (from the same records)
REFERENCES = {
    ("retrieval", "i2r_R@1"): "chance_R@1",
    ("retrieval", "i2r_R@5"): "chance_R@5",
    ("retrieval", "i2r_R@10"): "chance_R@10",
    ("retrieval", "sem_i2r_R@1"): "sem_chance_R@1",
    ("grounding", "pointing_accuracy"): "pointing_random_baseline,pointing_fixed_point_baseline,pointing_text_prior,"
    "pointing_oracle",
    # a map that looks at the image falls to the random point on another study's image
    ("grounding", "pointing_shuffled_image"): "pointing_random_baseline",
    ("grounding", "pointing_small_accuracy"): "pointing_small_text_prior,pointing_small_oracle",
    ("grounding", "pointing_cnr"): "pointing_text_prior_cnr",
}


# the heads' step budgets per label fraction: at 1% (100 studies, about 100 boxes) a few dozen epochs, at 100% a cap
# in steps (see REPRODUCE.md for what they cost)
FULL_SEGMENTATION_STEPS = "0.01:200,1:800"
FULL_DETECTION_STEPS = "0.01:200,1:800"


@dataclass
class ReproduceArguments:
    """
    Arguments of the reproduction study.

    Args:
        output_dir (`str`, *optional*, defaults to `"docs/results"`):
            Where the aggregated JSON, the markdown table and the plots go.
        work_dir (`str`, *optional*, defaults to `"outputs/reproduce"`):
            Dataset, checkpoints and every run's results JSON (the resumable state of the study).
        objectives (`str`, *optional*, defaults to `"clip,sia,sta,sista"`):
            Comma-separated pre-training objectives.
        seeds (`str`, *optional*, defaults to `"0,1,2,3,4"`):
            Comma-separated seeds (pre-training and fine-tuning seed). Five give the paired Student t interval 4
            degrees of freedom (t = 2.78; three give 2, t = 4.30).
        tasks (`str`, *optional*):
            Comma-separated tasks among classification, segmentation, detection, zero_shot, retrieval, grounding
            (default: all).
        label_fractions (`str`, *optional*):
            Comma-separated label fractions (default 0.01,0.1,1.0; `--quick`: 0.1,1.0).
        num_train (`int`, *optional*):
            The labelled pool (default 10,000: its 1% is 100 studies); the 1%, 10% and 100% subsets are nested.
        segmentation_steps, detection_steps (`str`, *optional*):
            `fraction:max_steps` pairs: the label fractions of the head's runs (among `label_fractions`) and the step
            budget of each; the validation split is evaluated at every quarter of it and the head of the best step
            (segmentation: Dice; detection: loss) is scored. The budget caps the steps, not the pool: a 100% head
            draws its batches from all 10,000 studies but sees `max_steps × finetune_batch_size` of them.
        quick (`bool`, *optional*, defaults to `False`):
            One seed, tiny data and budgets (heads at 100% only): checks the pipeline end to end, every task.
        aggregate_only (`bool`, *optional*, defaults to `False`):
            Run nothing; rebuild the JSON, table and plots from the runs found in `work_dir` (of the seeds that every
            objective has finished).
        allow_dirty (`bool`, *optional*, defaults to `False`):
            Run and record from a checkout with uncommitted changes (listed in the record); refused otherwise, since
            the recorded commit would not hold the code that made the numbers.
        pretrain_extra_args (`str`, *optional*):
            Extra `pretrain.py` arguments as one shell-quoted string, appended after the study's own (so a repeated
            option wins), e.g. `"--no_augment --warmup_steps 50"` or two pre-trained backbones.
    """

    output_dir: str = field(default="docs/results", metadata={"help": "Aggregated JSON, table and plots."})
    work_dir: str = field(default="outputs/reproduce", metadata={"help": "Dataset, checkpoints and per-run JSON."})
    objectives: str = field(default="clip,sia,sta,sista", metadata={"help": "Comma-separated objectives."})
    seeds: str = field(default="0,1,2,3,4", metadata={"help": "Comma-separated seeds to run and to aggregate."})
    tasks: str | None = field(default=None, metadata={"help": f"Comma-separated subset of {','.join(ALL_TASKS)}."})
    label_fractions: str | None = field(default=None, metadata={"help": "Comma-separated label fractions."})
    quick: bool = field(default=False, metadata={"help": "1 seed, tiny data and budgets: a pipeline check."})
    aggregate_only: bool = field(default=False, metadata={"help": "Only rebuild table and plots from work_dir."})
    allow_dirty: bool = field(
        default=False, metadata={"help": "Record from a checkout with uncommitted changes (listed in the record)."}
    )
    # data (shared by every run)
    image_size: int = field(
        default=128, metadata={"help": "SynthCXR image side (pixels); 128 gives the `small` preset an 8 x 8 grid."}
    )
    num_pretrain: int | None = field(default=None, metadata={"help": "Pre-training studies (default 2000)."})
    num_train: int | None = field(
        default=None, metadata={"help": "Labelled training pool (default 10000: 1% is 100 studies)."}
    )
    num_validation: int | None = field(default=None, metadata={"help": "Validation studies (default 200)."})
    num_test: int | None = field(default=None, metadata={"help": "Test studies (default 300)."})
    report_encoder: str = field(
        default="labeler", metadata={"help": "Report embeddings of SIA (examples/report_embeddings.py --encoder)."}
    )
    data_seed: int = field(default=0, metadata={"help": "SynthCXR seed (the same data for every run)."})
    # pre-training budget (identical for every objective)
    model_preset: str = field(default="small", metadata={"help": "pretrain.py --model_preset."})
    pretrain_epochs: float | None = field(default=None, metadata={"help": "Pre-training epochs (default 6)."})
    pretrain_batch_size: int = field(default=32, metadata={"help": "Pre-training batch size (SIA's B)."})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Pre-training peak learning rate."})
    sia_threshold: float | None = field(
        default=None, metadata={"help": "SIA threshold for sia/sista (default: pretrain.py's own default)."}
    )
    pretrain_extra_args: str | None = field(
        default=None,
        metadata={"help": "Extra pretrain.py arguments, one shell-quoted string appended last (a repeated option "
                          "overrides the study's value), e.g. \"--no_augment --warmup_steps 50\"."},
    )
    # downstream budgets (identical for every objective)
    segmentation_steps: str | None = field(
        default=None, metadata={"help": f"fraction:max_steps of the segmentation head (default {FULL_SEGMENTATION_STEPS})."}
    )
    detection_steps: str | None = field(
        default=None, metadata={"help": f"fraction:max_steps of the detection head (default {FULL_DETECTION_STEPS})."}
    )
    finetune_batch_size: int = field(default=32, metadata={"help": "Fine-tuning batch size."})
    segmentation_learning_rate: float = field(default=3e-3, metadata={"help": "Segmentation head learning rate."})
    detection_learning_rate: float = field(default=1e-3, metadata={"help": "Detection head learning rate."})
    decoder_hidden_size: int = field(default=64, metadata={"help": "Segmentation decoder / detection head width."})
    segmentation_decoder: str = field(
        default="auto",
        metadata={"help": "finetune_segmentation.py --segmentation_decoder: 'auto' (U-Net over the stages of the "
                          "ResNet, SETR-PUP for a plain ViT), 'unet' or 'setr_pup'.",
                  "choices": ["auto", "setr_pup", "unet"]},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N test rows."})
    threads: int = field(
        default=1,
        metadata={"help": "torch threads per worker (1: two threads on 2 busy cores were 6x slower per step here)."},
    )
    parallel: int = field(default=2, metadata={"help": "(objective, seed) workers run at the same time."})
    worker_run: str | None = field(default=None, metadata={"help": "Internal: run one OBJECTIVE:SEED and exit."})

    def __post_init__(self):
        quick_defaults = {
            "num_pretrain": (2000, 400),
            "num_train": (10000, 200),
            "num_validation": (200, 50),
            "num_test": (300, 100),
            "pretrain_epochs": (6.0, 1.0),
            "segmentation_steps": (FULL_SEGMENTATION_STEPS, "1:12"),
            "detection_steps": (FULL_DETECTION_STEPS, "1:12"),
        }
        for name, (full, quick) in quick_defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, quick if self.quick else full)
        if self.quick and self.seeds == "0,1,2,3,4":
            self.seeds = "0"
        if self.tasks is None:
            self.tasks = ",".join(ALL_TASKS)
        if self.label_fractions is None:
            self.label_fractions = "0.1,1.0" if self.quick else "0.01,0.1,1.0"
        self.objective_list = parse_list(self.objectives, str, "objectives")
        self.seed_list = parse_list(self.seeds, int, "seeds")
        self.task_list = parse_list(self.tasks, str, "tasks")
        self.fraction_list = parse_list(self.label_fractions, float, "label_fractions")
        unknown = [name for name in self.objective_list if name not in OBJECTIVES]
        if unknown:
            raise ValueError(f"`objectives` must be among {OBJECTIVES}, got {unknown}.")
        unknown = [name for name in self.task_list if name not in ALL_TASKS]
        if unknown:
            raise ValueError(f"`tasks` must be among {ALL_TASKS}, got {unknown}.")
        bad = [fraction for fraction in self.fraction_list if not 0 < fraction <= 1]
        if bad:
            raise ValueError(f"`label_fractions` must lie in (0, 1], got {bad}.")
        self.step_budgets = {
            task: parse_budgets(getattr(self, f"{task}_steps"), f"{task}_steps", self.fraction_list)
            for task in ("segmentation", "detection")
        }


def parse_budgets(text: str, name: str, fractions: list[float]) -> dict[float, int]:
    """`"0.01:30,1:120"` -> `{0.01: 30, 1.0: 120}`, each fraction among the study's `label_fractions`."""
    try:
        budgets = {float(key): int(value) for key, value in (item.split(":") for item in text.split(",") if item)}
    except ValueError:
        raise ValueError(f"`{name}` must be comma-separated fraction:max_steps pairs, got {text!r}.") from None
    unknown = [fraction for fraction in budgets if fraction not in fractions]
    if unknown or not budgets or any(steps < 1 for steps in budgets.values()):
        raise ValueError(f"`{name}` must give positive step budgets to label fractions among {fractions}, got "
                         f"{text!r}.")
    return budgets


def parse_list(text: str, kind, name: str) -> list:
    try:
        values = [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"`{name}` must be a comma-separated list of {kind.__name__}, got {text!r}.") from None
    if not values:
        raise ValueError(f"`{name}` must name at least one value, got {text!r}.")
    return values


def parse_arguments(argv: list[str] | None = None) -> ReproduceArguments:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(ReproduceArguments).parse_args_into_dataclasses(args=argv)
    return args


# ---------------------------------------------------------------------------------------------------------------------
# Paths and the shared dataset
# ---------------------------------------------------------------------------------------------------------------------


def dataset_dir(args: ReproduceArguments) -> Path:
    return Path(args.work_dir) / "synthcxr"


def run_dir(args: ReproduceArguments, objective: str, seed: int) -> Path:
    return Path(args.work_dir) / "runs" / f"{objective}-seed{seed}"


def pretrain_done(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "processor_config.json").is_file()


def record_path(args: ReproduceArguments, objective: str, seed: int, task: str, fraction: float | None) -> Path:
    name = task if fraction is None else f"{task}-{fraction:g}"
    return run_dir(args, objective, seed) / "records" / f"{name}.json"


def prepare_dataset(args: ReproduceArguments) -> Path:
    """Generates SynthCXR with `report_embeds` once; every run of the study reads this folder."""
    path = dataset_dir(args)
    if (path / "dataset_dict.json").is_file():
        logger.info("Dataset found at %s (reused).", path)
        return path
    from sista_examples.data.metadata import update_dataset_metadata
    from sista_examples.data.report_embeddings import embed_dataset
    from sista_examples.data.synthcxr import generate_synthcxr, save_synthcxr

    start = time.time()
    dataset = generate_synthcxr(
        num_pretrain=args.num_pretrain,
        num_train=args.num_train,
        num_validation=args.num_validation,
        num_test=args.num_test,
        image_size=args.image_size,
        seed=args.data_seed,
        num_proc=min(2, os.cpu_count() or 1),
    )
    dataset, record = embed_dataset(dataset, encoder=args.report_encoder, seed=args.data_seed)
    save_synthcxr(dataset, os.fspath(path), overwrite=True)
    update_dataset_metadata(path, report_embeddings=record)  # the encoder and threshold pretrain.py reads
    logger.info("Generated SynthCXR with report_embeds in %.0f s: %s", time.time() - start, path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# One (objective, seed): pre-training, then every downstream task
# ---------------------------------------------------------------------------------------------------------------------


def pretrain_arguments(args: ReproduceArguments, objective: str, seed: int, output_dir: Path) -> list[str]:
    cli = [
        "--dataset_path", os.fspath(dataset_dir(args)),
        "--model_preset", args.model_preset,
        "--image_size", str(args.image_size),
        "--objective", objective,
        "--vision_pooling", "mean",
        "--text_pooling", "mean",
        "--output_dir", os.fspath(output_dir),
        "--seed", str(seed),
        "--num_train_epochs", str(args.pretrain_epochs),
        "--per_device_train_batch_size", str(args.pretrain_batch_size),
        "--learning_rate", str(args.pretrain_learning_rate),
        "--warmup_steps", "20",
        "--weight_decay", "0.05",
        "--lr_scheduler_type", "cosine",
        "--logging_steps", "5",
        "--save_strategy", "no",
        "--eval_strategy", "no",
        "--do_eval", "false",
        "--report_to", "none",
        "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
    ]
    if args.sia_threshold is not None:
        cli += ["--sia_threshold", str(args.sia_threshold)]
    if args.pretrain_extra_args:
        cli += shlex.split(args.pretrain_extra_args)
    return cli


def finetune_arguments(args, task: str, model_dir: Path, output_dir: Path, fraction: float, seed: int) -> list[str]:
    """A frozen-encoder head trained for the fraction's step budget; the validation split picks its step."""
    max_steps = args.step_budgets[task][fraction]
    every = max(max_steps // 4, 1)
    cli = [
        "--model_name_or_path", os.fspath(model_dir),
        "--dataset_dir", os.fspath(dataset_dir(args)),
        "--freeze_encoder", "true",
        "--label_fraction", str(fraction),
        "--output_dir", os.fspath(output_dir),
        "--max_steps", str(max_steps),
        "--per_device_train_batch_size", str(args.finetune_batch_size),
        "--per_device_eval_batch_size", "64",
        "--learning_rate", str(getattr(args, f"{task}_learning_rate")),
        "--warmup_steps", str(max(max_steps // 10, 1)),
        "--lr_scheduler_type", "cosine",
        "--seed", str(seed),
        "--logging_steps", str(every),
        "--validation_split", "validation",
        "--eval_strategy", "steps",
        "--eval_steps", str(every),
        "--save_strategy", "steps",
        "--save_steps", str(every),
        "--save_total_limit", "1",
        "--load_best_model_at_end", "true",
        "--metric_for_best_model", SELECTION_METRIC[task],
        "--report_to", "none",
        "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
        "--decoder_hidden_size", str(args.decoder_hidden_size),
    ]
    if task == "segmentation":
        cli += ["--segmentation_decoder", args.segmentation_decoder]
    if args.max_eval_samples:
        cli += ["--max_test_samples", str(args.max_eval_samples)]
    return cli


# what picks a head's step on the validation split: segmentation's own metric (a head whose lesion logits stay just
# below 0 has a low validation loss and a Dice of 0), detection's loss (its mAP needs the test loop's post-processing)
SELECTION_METRIC = {"segmentation": "dice", "detection": "eval_loss"}


def linear_probe_arguments(args, model_dir: Path, output_dir: Path) -> list[str]:
    cli = [
        "--model_name_or_path", os.fspath(model_dir),
        "--dataset_dir", os.fspath(dataset_dir(args)),
        "--output_dir", os.fspath(output_dir),
        "--label_fractions", ",".join(f"{fraction:g}" for fraction in args.fraction_list),
        "--device", "cpu",
    ]
    if args.max_eval_samples:
        cli += ["--max_test_samples", str(args.max_eval_samples)]
    return cli


def best_step(output_dir: Path) -> dict:
    """The step the validation split picked (from the last checkpoint's trainer state); checkpoints removed."""
    import shutil

    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[-1]))
    found = {}
    if checkpoints:
        state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
        best = state.get("best_model_checkpoint")
        found = {"best_step": int(best.rsplit("-", 1)[-1]) if best else None,
                 "best_validation_metric": state.get("best_metric"), "max_steps": state.get("max_steps")}
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint)
    return found


def evaluation_arguments(args, model_dir: Path, output_dir: Path, task: str) -> list[str]:
    cli = [
        "--model_name_or_path", os.fspath(model_dir),
        "--dataset_dir", os.fspath(dataset_dir(args)),
        "--output_dir", os.fspath(output_dir),
        "--split", "test",
        "--batch_size", "64",
        "--device", "cpu",
    ]
    if args.max_eval_samples:
        cli += ["--max_samples", str(args.max_eval_samples)]
    if task == "zero_shot":
        cli += ["--pipeline_example", "false"]
    if task == "grounding":
        cli += ["--num_figures", "1"]
    return cli


def headline_from_results(task: str, results: dict) -> dict:
    """The numbers the study compares, read from a script's results dict."""
    if task in ("segmentation", "detection"):
        metrics = results["metrics"]
        if task == "detection":
            return {key: metrics.get(key) for key in ("map_40_75", "map", "map_50")}
        # Dice over all pixels, per image, and per (image, lesion type) pair by type and by size
        return {key: value for key, value in metrics.items()
                if key in ("dice", "mean_image_dice") or key.startswith(("dice_", "num_"))}
    if task == "zero_shot":
        return {"macro_auroc": results["macro_auroc"]}
    if task == "retrieval":
        headline = {}
        for view, prefix in (("paired", ""), ("semantic", "sem_")):
            for direction, short in (("image_to_report", "i2r"), ("report_to_image", "r2i")):
                for k, value in results.get(view, {}).get(direction, {}).items():
                    headline[f"{prefix}{short}_{k}"] = value
            for k, value in results.get(view, {}).get("chance", {}).items():
                headline[f"{prefix}chance_{k}"] = value
        headline["image_mean_cosine"] = results["mean_pairwise_cosine"]["image"]
        headline["report_mean_cosine"] = results["mean_pairwise_cosine"]["report"]
        return headline
    if task == "grounding":
        overall = results["overall"]
        small = results.get("per_group", {}).get("small_or_ambiguous", {})
        headline = {
            "pointing_accuracy": overall["accuracy"],
            "pointing_random_baseline": overall["random_baseline"],
            "pointing_fixed_point_baseline": overall["fixed_point_baseline"],
            "pointing_oracle": overall["oracle"],
            "pointing_num_findings": overall["num_findings"],
            "pointing_text_prior": overall.get("text_prior_baseline"),
            "pointing_shuffled_image": overall.get("shuffled_image_accuracy"),
            "pointing_cnr": overall.get("cnr"),
            "pointing_shuffled_cnr": overall.get("shuffled_image_cnr"),
            "pointing_text_prior_cnr": overall.get("text_prior_cnr"),
            "pointing_small_accuracy": small.get("accuracy"),
            "pointing_small_text_prior": small.get("text_prior_baseline"),
            "pointing_small_oracle": small.get("oracle"),
        }
        # a reference the run could not compute (no training split for the prior) is left out, not stored as None
        return {key: value for key, value in headline.items() if value is not None}
    raise ValueError(f"Unknown task {task!r}.")


def script_hash(relative_path: str) -> str:
    """Which version of a script produced a record (the code may change while a study runs)."""
    import hashlib

    return hashlib.sha1((ROOT / relative_path).read_bytes()).hexdigest()[:12]


def example_script(name: str):
    """`examples/<name>.py` loaded as a module (not run as `__main__`), for its `main`."""
    spec = importlib.util.spec_from_file_location(f"sista_script_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_record(path: Path, record: dict) -> None:
    """One run's record, with the commit that made it (a study's seeds may run on several machines)."""
    from sista_examples.evaluation.results import source_provenance

    record = {**record, "source": source_provenance(ROOT, allow_dirty=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False, default=str) + "\n")
    tmp.replace(path)


def run_one(args: ReproduceArguments, objective: str, seed: int) -> None:
    """Pre-training and downstream runs of one (objective, seed); skips every run whose record exists."""
    import torch

    torch.set_num_threads(args.threads)
    base = run_dir(args, objective, seed)
    model_dir = base / "pretrain"
    pretrain_record = record_path(args, objective, seed, "pretrain", None)
    jobs = [(task, fraction) for task in args.task_list if task in ("segmentation", "detection")
            for fraction in args.step_budgets[task]]
    jobs += [(task, None) for task in args.task_list if task in EVAL_TASKS]
    expected = [pretrain_record, *(record_path(args, objective, seed, task, fraction) for task, fraction in jobs)]
    if "classification" in args.task_list:
        expected += [record_path(args, objective, seed, "classification", fraction) for fraction in args.fraction_list]
    if all(path.is_file() for path in expected):
        # records copied from another machine come without the checkpoint: nothing is left to run
        logger.info("%s seed %d: all %d records found in %s; nothing to run.", objective, seed, len(expected), base)
        return
    if not (pretrain_record.is_file() and pretrain_done(model_dir)):
        cli = pretrain_arguments(args, objective, seed, model_dir)
        start = time.time()
        trainer = example_script("pretrain").main(cli)
        wall = time.time() - start
        history = [entry for entry in trainer.state.log_history if "loss" in entry]
        write_record(pretrain_record, {
            "objective": objective, "seed": seed, "task": "pretrain", "label_fraction": None,
            "wall_time_s": wall, "global_step": trainer.state.global_step,
            "first_log": history[0] if history else None, "last_log": history[-1] if history else None,
            "sia_threshold": trainer.model.config.sia_threshold, "sta_weight": trainer.model.config.sta_weight,
            "command": shlex.join(["python", "examples/pretrain.py", *cli]),
            "script_sha1": {name: script_hash(name) for name in ("examples/pretrain.py",
                                                                 "examples/sista_examples/training/trainer.py",
                                                                 "modeling_sista.py")},
        })
        del trainer
        logger.info("Pre-trained %s seed %d in %.0f s.", objective, seed, wall)

    if "classification" in args.task_list:
        linear_probe(args, objective, seed, model_dir, base / "linear_probe")
    for task, fraction in jobs:
        path = record_path(args, objective, seed, task, fraction)
        if path.is_file():
            continue
        name = task if fraction is None else f"{task}-{fraction:g}"
        output_dir = base / name
        if task in FINETUNE_TASKS:
            module_name = f"finetune_{task}"
            cli = finetune_arguments(args, task, model_dir, output_dir, fraction, seed)
        else:
            module_name = {"zero_shot": "zero_shot", "retrieval": "retrieval", "grounding": "visualize_grounding"}[task]
            cli = evaluation_arguments(args, model_dir, output_dir, task)
        record = {"objective": objective, "seed": seed, "task": task, "label_fraction": fraction,
                  "command": shlex.join(["python", f"examples/{module_name}.py", *cli]),
                  "script_sha1": script_hash(f"examples/{module_name}.py")}
        start = time.time()
        try:
            results = example_script(module_name).main(cli)
            record["metrics"] = headline_from_results(task, results)
            if task in FINETUNE_TASKS:
                record["step_selection"] = best_step(output_dir)
            if task == "segmentation":
                record["decoder"] = results.get("decoder")
        except Exception as error:  # a failing script is reported in the study, with its exact error
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc()
            logger.error("%s %s seed %d failed: %s", name, objective, seed, record["error"])
        record["wall_time_s"] = time.time() - start
        error_path = path.with_name(path.stem + ".error.json")
        if "error" not in record:
            write_record(path, record)
            error_path.unlink(missing_ok=True)  # an earlier failure of this run is no longer the study's
        else:
            write_record(error_path, record)
        logger.info("%s %s seed %d: %s (%.0f s)", name, objective, seed, record.get("metrics"), record["wall_time_s"])


def linear_probe(args: ReproduceArguments, objective: str, seed: int, model_dir: Path, output_dir: Path) -> None:
    """`examples/linear_probe.py` once for every label fraction; one record per fraction."""
    paths = {fraction: record_path(args, objective, seed, "classification", fraction) for fraction in args.fraction_list}
    if all(path.is_file() for path in paths.values()):
        return
    cli = linear_probe_arguments(args, model_dir, output_dir)
    start = time.time()
    results = example_script("linear_probe").main(cli)
    wall = time.time() - start
    for fraction, path in paths.items():
        entry = results["label_fractions"][f"{fraction:g}"]
        write_record(path, {
            "objective": objective, "seed": seed, "task": "classification", "label_fraction": fraction,
            "command": shlex.join(["python", "examples/linear_probe.py", *cli]),
            "script_sha1": script_hash("examples/linear_probe.py"),
            "metrics": {"auroc": entry["auroc"], "validation_auroc": entry["validation_auroc"], "best_c": entry["best_c"],
                        "train_samples": entry["train_samples"]},
            "wall_time_s": wall / len(paths),
        })
    logger.info("linear probe %s seed %d: %s (%.0f s)", objective, seed,
                {fraction: results["label_fractions"][f"{fraction:g}"]["auroc"] for fraction in paths}, wall)


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation: raw records -> mean ± std table and plots
# ---------------------------------------------------------------------------------------------------------------------


def collect_records(work_dir: str | os.PathLike, seeds: list[int]) -> tuple[list[dict], list[dict]]:
    """`(records, errors)` of the given seeds: finished runs' records, and failed runs' `*.error.json`."""
    records, errors = [], []
    for path in sorted(Path(work_dir).glob("runs/*/records/*.json")):
        record = json.loads(path.read_text())
        if record["seed"] in seeds:
            (errors if path.name.endswith(".error.json") else records).append(record)
    return records, errors


def unfinished_seeds(records: list[dict], errors: list[dict]) -> dict[int, str]:
    """
    `{seed: reason}` for each seed that some objective of the study has not finished: at that seed it has neither a
    record nor an error for a run (task and label fraction) that another objective finished. A study stopped mid-seed
    leaves such a seed, and its means would mix objectives over different seeds, so `aggregate` leaves it out. A
    failed run counts as finished: its error is reported, not hidden by dropping its seed.
    """
    def runs(rows: list[dict]) -> dict[tuple[int, str], set]:
        found: dict = {}
        for row in rows:
            entry = found.setdefault((row["seed"], row["objective"]), set())
            if row["task"] != "pretrain":  # no metric of its own; the runs after it show it finished
                entry.add((row["task"], row.get("label_fraction")))
        return found

    finished, attempted = runs(records), runs(records + errors)
    objectives = sorted({objective for _, objective in attempted})
    reasons = {}
    for seed in sorted({seed for seed, _ in attempted}):
        expected = set().union(*(found for (at, _), found in finished.items() if at == seed))
        missing = {objective: len(expected - attempted.get((seed, objective), set())) for objective in objectives}
        missing = {objective: count for objective, count in missing.items() if count}
        if missing:
            reasons[seed] = "unfinished: " + ", ".join(
                f"{objective} lacks {count} of {len(expected)} runs" for objective, count in missing.items()
            )
    return reasons


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    values = [float(value) for value in values]
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean, std


def summarize(records: list[dict]) -> dict:
    """`{task: {metric: {fraction_or_'-': {objective: {"mean", "std", "n", "values", "seeds"}}}}}`."""
    grouped: dict = {}
    for record in records:
        if "metrics" not in record or record["task"] == "pretrain":
            continue
        fraction = "-" if record.get("label_fraction") is None else f"{float(record['label_fraction']):g}"
        for metric, value in record["metrics"].items():
            if value is None or isinstance(value, (dict, list)):
                continue
            slot = grouped.setdefault(record["task"], {}).setdefault(metric, {}).setdefault(fraction, {})
            entry = slot.setdefault(record["objective"], {"values": [], "seeds": []})
            entry["values"].append(float(value))
            entry["seeds"].append(record["seed"])
    for task in grouped.values():
        for metric in task.values():
            for fraction in metric.values():
                for entry in fraction.values():
                    entry["mean"], entry["std"] = mean_std(entry["values"])
                    entry["n"] = len(entry["values"])
    return grouped


def format_mean_std(entry: dict | None, digits: int = 3) -> str:
    if entry is None:
        return "—"
    if entry["std"] is None:
        return f"{entry['mean']:.{digits}f} (n=1)"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def _fraction_key(fraction: str) -> float:
    return -1.0 if fraction == "-" else float(fraction)


def reference_text(summary: dict, task: str, metric: str, fraction: str) -> str:
    """The chance level or baselines a metric is read against, from the same records ("—" when none)."""
    names = REFERENCES.get((task, metric))
    if not names:
        return "—"
    texts = []
    for name in names.split(","):
        entries = summary.get(task, {}).get(name, {}).get(fraction, {})
        if entries:
            value = float(np.mean([entry["mean"] for entry in entries.values()]))
            label = name.replace("pointing_", "").replace("_baseline", "").replace("sem_", "").replace("_", " ")
            texts.append(f"{label} {value:.3f}")
    return "; ".join(texts) or "—"


def markdown_table(summary: dict, objectives: list[str]) -> str:
    """One row per (task, metric, label fraction), one column per objective: mean ± std over seeds."""
    lines = ["| task | metric | labels | " + " | ".join(objectives) + " | reference |",
             "|---|---|---|" + "---|" * (len(objectives) + 1)]
    for task, metrics in HEADLINE_METRICS.items():
        for metric, label in metrics:
            by_fraction = summary.get(task, {}).get(metric)
            if not by_fraction:
                continue
            for fraction in sorted(by_fraction, key=_fraction_key):
                labels = "—" if fraction == "-" else f"{float(fraction) * 100:g}%"
                cells = [format_mean_std(by_fraction[fraction].get(objective)) for objective in objectives]
                reference = reference_text(summary, task, metric, fraction)
                lines.append(f"| {task} | {label} | {labels} | " + " | ".join(cells) + f" | {reference} |")
    return "\n".join(lines) + "\n"


def sign_flip_p_value(differences: list[float]) -> float | None:
    """
    Exact two-sided p-value of the paired sign-flip permutation test of a zero mean difference (scipy's
    `permutation_test` over all 2^n sign patterns): no normality assumed, but its smallest value is 2 / 2^n (0.0625
    at 5 seeds, 0.031 at 6), so below 6 seeds it cannot reach 0.05. None for one value.
    """
    from scipy import stats

    if len(differences) < 2:
        return None
    result = stats.permutation_test(
        (np.asarray(differences, dtype=float),), lambda values, axis: np.mean(values, axis=axis),
        permutation_type="samples", vectorized=True, n_resamples=np.inf, alternative="two-sided",
    )
    return float(result.pvalue)


def difference_entry(differences: list[float]) -> dict:
    """
    Mean, sample std, the 95% interval of the mean (Student t, n - 1 degrees of freedom; None for one value) and the
    exact sign-flip p-value (`sign_flip_p_value`).
    """
    from scipy import stats

    mean, std = mean_std(differences)
    interval = None
    if std is not None:
        half = float(stats.t.ppf(0.975, len(differences) - 1)) * std / np.sqrt(len(differences))
        interval = [mean - half, mean + half]
    return {"mean": mean, "std": std, "ci95": interval, "n": len(differences), "differences": differences,
            "sign_flip_p": sign_flip_p_value(differences)}


def paired_difference(summary: dict, task: str, metric: str, fraction: str, objective: str, baseline: str):
    """
    `objective - baseline` over the seeds both have: mean, sample std, the 95% interval of the mean (Student t,
    n - 1 degrees of freedom; None for one seed) and the per-seed differences. None when a side is missing.
    """
    entries = summary.get(task, {}).get(metric, {}).get(fraction, {})
    if objective not in entries or baseline not in entries:
        return None
    base = dict(zip(entries[baseline]["seeds"], entries[baseline]["values"]))
    differences = [value - base[seed] for seed, value in zip(entries[objective]["seeds"], entries[objective]["values"])
                   if seed in base]
    return difference_entry(differences) if differences else None


def format_difference(entry: dict | None) -> str:
    if entry is None:
        return "—"
    if entry["ci95"] is None:
        return f"{entry['mean']:+.3f} (n=1)"
    low, high = entry["ci95"]
    mark = " ▲" if low > 0 else " ▼" if high < 0 else ""
    return f"{entry['mean']:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def difference_table(summary: dict, objectives: list[str], baseline: str = "clip") -> str:
    """Each objective minus the baseline, paired by seed, with its 95% interval (▲/▼: the interval excludes 0)."""
    others = [objective for objective in objectives if objective != baseline]
    lines = ["| task | metric | labels | " + " | ".join(f"{name} − {baseline}" for name in others) + " |",
             "|---|---|---|" + "---|" * len(others)]
    for task, metrics in HEADLINE_METRICS.items():
        for metric, label in metrics:
            for fraction in sorted(summary.get(task, {}).get(metric, {}), key=_fraction_key):
                labels = "—" if fraction == "-" else f"{float(fraction) * 100:g}%"
                cells = [format_difference(paired_difference(summary, task, metric, fraction, name, baseline))
                         for name in others]
                lines.append(f"| {task} | {label} | {labels} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DOWNSTREAM = [("classification", "auroc", "linear-probe AUROC"), ("segmentation", "dice", "Dice"),
              ("segmentation", "dice_small", "Dice, small lesions"), ("detection", "map_40_75", "mAP@[.40:.75]")]


def stopped_at_first_evaluation(records: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    """
    `{(task, fraction): (runs whose validation picked the first evaluation, head runs)}`: a head picked at its first
    evaluation (step `max_steps // 4`) learned nothing the validation split could see after it.
    """
    counts: dict = {}
    for record in records:
        selection = record.get("step_selection") or {}
        if selection.get("best_step") is None or not selection.get("max_steps"):
            continue
        key = (record["task"], f"{float(record['label_fraction']):g}")
        first, runs = counts.get(key, (0, 0))
        counts[key] = (first + (selection["best_step"] <= max(selection["max_steps"] // 4, 1)), runs + 1)
    return counts


def claim_verdicts(summary: dict, first_evaluation: dict | None = None) -> list[dict]:
    """
    The paper's claims, each checked on the study's numbers: a comparison holds when the 95% interval of the paired
    difference lies above 0, is contradicted when it lies below 0, and is not shown otherwise. A head row where the
    validation split picked the first evaluation in more than half of the runs (`stopped_at_first_evaluation`) is
    "not tested": its heads compare noise.
    """

    def verdict(entry, task=None, fraction=None):
        first, runs = (first_evaluation or {}).get((task, fraction), (0, 0))
        if runs and first > runs / 2:
            return f"not tested (first evaluation picked in {first} of {runs} runs)"
        if entry is None or entry["ci95"] is None:
            return "not tested"
        low, high = entry["ci95"]
        return "holds" if low > 0 else "contradicted" if high < 0 else "not shown"

    claims = []
    comparisons = [("SIA helps", "sia", "clip"), ("STA helps", "sta", "clip"), ("SISTA beats CLIP", "sista", "clip"),
                   ("SISTA beats SIA", "sista", "sia"), ("SISTA beats STA", "sista", "sta")]
    for claim, objective, baseline in comparisons:
        for task, metric, label in DOWNSTREAM:
            for fraction in sorted(summary.get(task, {}).get(metric, {}), key=_fraction_key):
                entry = paired_difference(summary, task, metric, fraction, objective, baseline)
                if entry is not None:
                    claims.append({"claim": claim, "comparison": f"{objective} − {baseline}", "task": task,
                                   "metric": label, "labels": f"{float(fraction) * 100:g}%", "difference": entry,
                                   "verdict": verdict(entry, task, fraction)})
    for task, metric, label in DOWNSTREAM:
        fractions = sorted(summary.get(task, {}).get(metric, {}), key=_fraction_key)
        if len(fractions) < 2:
            continue
        smallest, largest = fractions[0], fractions[-1]
        gains = [paired_difference(summary, task, metric, fraction, "sista", "clip") for fraction in (smallest, largest)]
        if None in gains:
            continue
        entry = difference_entry([low - high for low, high in zip(gains[0]["differences"], gains[1]["differences"])])
        claims.append({"claim": "gains largest with the fewest labels",
                       "comparison": f"(sista − clip at {float(smallest) * 100:g}%) − (at {float(largest) * 100:g}%)",
                       "task": task, "metric": label, "labels": "—", "difference": entry,
                       "verdict": verdict(entry, task, smallest)})
    pointing = summary.get("grounding", {})
    for objective in ("sta", "sista"):
        entry = pointing.get("pointing_accuracy", {}).get("-", {}).get(objective)
        if entry is None:
            continue
        reference = {name: float(np.mean([e["mean"] for e in pointing.get(key, {}).get("-", {}).values()]))
                     for name, key in (("random", "pointing_random_baseline"),
                                       ("fixed", "pointing_fixed_point_baseline"), ("oracle", "pointing_oracle"),
                                       ("text prior", "pointing_text_prior"))
                     if pointing.get(key, {}).get("-")}  # fmt: skip
        low = min(entry["values"])
        checks = {"above the random point": low > reference.get("random", np.inf),
                  "above the fixed point": low > reference.get("fixed", np.inf),
                  "at least 80% of the oracle": low >= 0.8 * reference.get("oracle", np.inf)}
        if "text prior" in reference:
            checks["above the text prior"] = low > reference["text prior"]
        shuffled = pointing.get("pointing_shuffled_image", {}).get("-", {}).get(objective)
        if shuffled is not None:
            own = dict(zip(entry["seeds"], entry["values"]))
            checks["shuffled-image control at most half of it, every seed"] = all(
                value <= 0.5 * own[seed] for seed, value in zip(shuffled["seeds"], shuffled["values"]) if seed in own
            )
        for check, passed in checks.items():
            claims.append({"claim": f"{objective.upper()} grounds", "comparison": f"pointing game {check}",
                           "task": "grounding", "metric": "pointing game", "labels": "—",
                           "difference": {"mean": entry["mean"], "lowest_seed": low, "reference": reference},
                           "verdict": "holds" if passed else "not shown"})
    return claims


def claims_markdown(claims: list[dict]) -> str:
    lines = ["| claim | comparison | task | labels | value [95% interval] | sign-flip p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for claim in claims:
        value = claim["difference"]
        if "ci95" in value:
            text = format_difference(value)
        else:
            text = f"{value['mean']:.3f} (lowest seed {value['lowest_seed']:.3f})"
        p_value = value.get("sign_flip_p")
        p_text = "—" if p_value is None else f"{p_value:.3f}"
        lines.append(f"| {claim['claim']} | {claim['comparison']} | {claim['task']} ({claim['metric']}) | "
                     f"{claim['labels']} | {text} | {p_text} | {claim['verdict']} |")
    return "\n".join(lines) + "\n"


def plot_label_fraction_curves(summary: dict, objectives: list[str], output_path: str | os.PathLike) -> Path | None:
    """Metric against label fraction, one line per objective, std over seeds as error bars; one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, metric, label) for task in FINETUNE_TASKS for metric, label in HEADLINE_METRICS[task]
              if summary.get(task, {}).get(metric)]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (task, metric, label) in zip(axes[0], panels):
        by_fraction = summary[task][metric]
        fractions = sorted((f for f in by_fraction if f != "-"), key=float)
        for objective in objectives:
            points = [(float(f) * 100, by_fraction[f][objective]) for f in fractions if objective in by_fraction[f]]
            if not points:
                continue
            xs = [x for x, _ in points]
            means = [entry["mean"] for _, entry in points]
            stds = [entry["std"] or 0.0 for _, entry in points]
            axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=objective)
        axis.set_xscale("log")
        axis.set_xlabel("labelled training data (%)")
        axis.set_ylabel(label)
        axis.set_title(task)
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    return save_figure(figure, output_path)


def save_figure(figure, output_path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_path, dpi=100)
    plt.close(figure)
    return output_path


def plot_no_label_tasks(summary: dict, objectives: list[str], output_path: str | os.PathLike) -> Path | None:
    """Bar chart of the label-free tasks (zero-shot, retrieval, grounding), mean ± std per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(task, metric, label) for task in EVAL_TASKS for metric, label in HEADLINE_METRICS[task]
            if summary.get(task, {}).get(metric, {}).get("-")]
    if not bars:
        return None
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(bars)), 3.6))
    width = 0.8 / max(len(objectives), 1)
    for index, objective in enumerate(objectives):
        entries = [summary[task][metric]["-"].get(objective) for task, metric, _ in bars]
        xs = [position + index * width for position in range(len(bars))]
        means = [entry["mean"] if entry else np.nan for entry in entries]
        stds = [(entry["std"] or 0.0) if entry else 0.0 for entry in entries]
        axis.bar(xs, means, width, yerr=stds, capsize=2, label=objective)
    axis.set_xticks([position + width * (len(objectives) - 1) / 2 for position in range(len(bars))])
    axis.set_xticklabels([label for _, _, label in bars], rotation=20, ha="right", fontsize=8)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return save_figure(figure, output_path)


def versions(allow_dirty: bool = False) -> dict:
    import importlib.metadata as metadata

    from sista_examples.evaluation.results import source_provenance

    found = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for package in ("torch", "transformers", "datasets", "accelerate", "evaluate", "scikit-learn", "numpy",
                    "pycocotools", "matplotlib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return {**found, **source_provenance(ROOT, allow_dirty)}


def step_selection_text(records: list[dict]) -> str:
    """
    How often the validation split picked a step of the last quarter of a head's budget (its last evaluation or the
    final step; a sign the budget is short), per task and label fraction.
    """
    late, runs = {}, {}
    for record in records:
        selection = record.get("step_selection") or {}
        if selection.get("best_step") is None:
            continue
        key = (record["task"], record["label_fraction"])
        runs[key] = runs.get(key, 0) + 1
        late[key] = late.get(key, 0) + (selection["best_step"] > 3 * (selection["max_steps"] // 4))
    if not runs:
        return ""
    parts = ", ".join(f"{task} {fraction:.0%}: {late[task, fraction]} of {count}" for (task, fraction), count in
                      sorted(runs.items()))
    return (f"The validation split picked a step in the last quarter of the budget in {sum(late.values())} of "
            f"{sum(runs.values())} head runs ({parts}).")


def aggregate(args: ReproduceArguments, command: str, wall_time_s: float | None = None,
              provenance: dict | None = None) -> dict:
    """
    Table, plots and results JSON from the records under `work_dir` of the seeds in `--seeds`; a seed that not every
    objective has finished (`unfinished_seeds`) is left out, with its reason in the log, table and JSON.
    `provenance` (`versions()`) is taken before anything is written, since outputs inside the checkout (the default
    `docs/results`) make it dirty.
    """
    provenance = versions(args.allow_dirty) if provenance is None else provenance
    records, errors = collect_records(args.work_dir, args.seed_list)
    left_out = unfinished_seeds(records, errors)
    for seed, reason in left_out.items():
        logger.warning("Seed %d left out of the table (%s).", seed, reason)
    records = [record for record in records if record["seed"] not in left_out]
    errors = [error for error in errors if error["seed"] not in left_out]
    summary = summarize(records)
    objectives = [name for name in OBJECTIVES if any(r["objective"] == name for r in records)]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    prefix = "reproduce_quick" if args.quick else "reproduce"
    table = markdown_table(summary, objectives)
    if "clip" in objectives and len(objectives) > 1:
        table += ("\n## Paired differences to CLIP\n\nEach objective minus CLIP, seed by seed, mean and 95% interval "
                  "(Student t over seeds); ▲ / ▼: the interval lies above / below 0.\n\n")
        table += difference_table(summary, objectives)
    claims = claim_verdicts(summary, stopped_at_first_evaluation(records))
    if claims:
        table += ("\n## The paper's claims on SynthCXR\n\nA comparison holds when its 95% interval (paired Student t over "
                  "seeds) lies above 0; the exact sign-flip p beside it assumes no normality (its smallest value is "
                  "2 / 2^seeds); grounding is checked on the lowest seed.\n\n") + claims_markdown(claims)
    seeds = sorted({r["seed"] for r in records})
    pretrain_walls = [r["wall_time_s"] for r in records if r["task"] == "pretrain"]
    selection = step_selection_text(records)
    selection = f"{selection} " if selection else ""
    left_out_text = "".join(f" Seed {seed} left out ({reason})." for seed, reason in left_out.items())
    header = (
        f"# SISTA reproduction on SynthCXR{' (--quick)' if args.quick else ''}\n\n"
        f"Mean ± sample std (ddof=1) over seeds {seeds}; `n=1` marks a single seed.{left_out_text} Frozen encoders: "
        f"scikit-learn logistic regression for classification (C chosen on validation), heads for segmentation and "
        f"detection (step chosen on the validation Dice / loss). {selection}Command: `{command}`.\n\n"
    )
    (output_dir / f"{prefix}_table.md").write_text(header + table)
    plots = [
        plot_label_fraction_curves(summary, objectives, output_dir / f"{prefix}_label_fractions.png"),
        plot_no_label_tasks(summary, objectives, output_dir / f"{prefix}_no_label_tasks.png"),
    ]
    payload = {
        "command": command,
        "protocol": {key: value for key, value in asdict(args).items() if key != "worker_run"},
        "versions": provenance,
        "wall_time_s": wall_time_s,
        "pretrain_wall_time_s_total": float(sum(pretrain_walls)),
        "downstream_wall_time_s_total": float(sum(r.get("wall_time_s", 0.0) for r in records if r["task"] != "pretrain")),
        "num_records": len(records),
        "seeds_left_out": {str(seed): reason for seed, reason in left_out.items()},
        "errors": [{key: error.get(key) for key in ("objective", "seed", "task", "label_fraction", "error")}
                   for error in errors],
        "summary": summary,
        "claims": claims,
        "records": records,
        "plots": [os.fspath(plot) for plot in plots if plot],
    }
    (output_dir / f"{prefix}_results.json").write_text(json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n")
    print(header + table, flush=True)
    return payload


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_arguments(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO, handlers=[logging.StreamHandler(sys.stdout)])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker_run:
        objective, seed = args.worker_run.split(":")
        run_one(args, objective, int(seed))
        return None

    command = shlex.join(["python", "research/reproduce.py", *argv])
    provenance = versions(args.allow_dirty)  # a dirty checkout stops the study now, not after hours of runs
    if args.aggregate_only:
        return aggregate(args, command, provenance=provenance)
    start = time.time()
    prepare_dataset(args)
    # seed-major order: a study stopped early still has every objective at the seeds it finished
    pending = [(objective, seed) for seed in args.seed_list for objective in args.objective_list]
    running: dict = {}
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    while pending or running:
        while pending and len(running) < max(args.parallel, 1):
            objective, seed = pending.pop(0)
            worker = [sys.executable, os.fspath(Path(__file__).resolve()), *argv, "--worker_run", f"{objective}:{seed}"]
            running[(objective, seed)] = (subprocess.Popen(worker, cwd=ROOT, env=environment), time.time())
        time.sleep(2)
        for (objective, seed), (process, run_start) in list(running.items()):
            if process.poll() is None:
                continue
            del running[(objective, seed)]
            logger.info("%s seed %d: rc %d in %.0f s (study so far %.0f s).", objective, seed, process.returncode,
                        time.time() - run_start, time.time() - start)
            if process.returncode != 0:
                logger.error("Worker %s:%d exited with %d; its finished runs are kept.", objective, seed,
                             process.returncode)
            aggregate(args, command, time.time() - start, provenance)
    return aggregate(args, command, time.time() - start, provenance)


if __name__ == "__main__":
    main()
