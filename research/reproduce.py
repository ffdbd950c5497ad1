#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Reproduction study on SynthCXR: SISTA against CLIP and the SIA / STA ablations.

For every objective in `--objectives` and every seed in `--seeds`, with one identical pre-training budget:

1. pre-train with `examples/pretrain.py --objective {clip,sia,sta,sista}`;
2. linear-probe classification (macro AUROC), segmentation (Dice) and detection (mAP@[.40:.75]) on a frozen encoder
   at each label fraction, with `examples/finetune_{classification,segmentation,detection}.py`;
3. zero-shot AUROC (`examples/zero_shot.py`), retrieval R@1/5/10 (`examples/retrieval.py`) and the grounding pointing
   game (`examples/visualize_grounding.py`) on the test split.

One SynthCXR dataset (with TF-IDF `report_embeds`) is generated once into `<work_dir>/synthcxr` and shared by all runs.
Every run writes its own results JSON; a run whose JSON exists is skipped, so a stopped study continues where it
stopped. Each (objective, seed) runs in its own Python process (the example scripts are called through their
`main(args)`), and the aggregation at the end reads every results JSON it finds:

    docs/results/reproduce_results.json   every run's raw numbers, the protocol, versions, wall times
    docs/results/reproduce_table.md       mean ± std over seeds
    docs/results/reproduce_*.png          metric against label fraction, one line per objective, std error bars

    python research/reproduce.py                       # the full study
    python research/reproduce.py --quick               # 1 seed, tiny budgets, a subset of tasks (minutes)
    python research/reproduce.py --objectives clip,sista --seeds 0,1 --output_dir /tmp/study
    python research/reproduce.py --aggregate_only      # rebuild table and plots from the runs found
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
    "segmentation": [("dice", "Dice")],
    "detection": [("map_40_75", "mAP@[.40:.75]")],
    "zero_shot": [("macro_auroc", "zero-shot AUROC")],
    "retrieval": [
        ("i2r_R@1", "image→report R@1"),
        ("i2r_R@5", "image→report R@5"),
        ("i2r_R@10", "image→report R@10"),
        ("sem_i2r_R@1", "image→report R@1 (semantic)"),
    ],
    "grounding": [("pointing_accuracy", "pointing game")],
}


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
        seeds (`str`, *optional*, defaults to `"0,1,2"`):
            Comma-separated seeds (pre-training and fine-tuning seed).
        tasks (`str`, *optional*):
            Comma-separated tasks among classification, segmentation, detection, zero_shot, retrieval, grounding
            (default: all; `--quick`: classification, zero_shot, retrieval, grounding).
        label_fractions (`str`, *optional*):
            Comma-separated label fractions (default 0.01,0.1,1.0; `--quick`: 0.1,1.0).
        quick (`bool`, *optional*, defaults to `False`):
            One seed, tiny budgets, a subset of tasks and fractions: checks the pipeline end to end in minutes.
        aggregate_only (`bool`, *optional*, defaults to `False`):
            Run nothing; rebuild the JSON, table and plots from the runs found in `work_dir`.
        pretrain_extra_args (`str`, *optional*):
            Extra `pretrain.py` arguments as one shell-quoted string, appended after the study's own (so a repeated
            option wins), e.g. `"--no_augment --warmup_steps 50"` or two pre-trained backbones.
    """

    output_dir: str = field(default="docs/results", metadata={"help": "Aggregated JSON, table and plots."})
    work_dir: str = field(default="outputs/reproduce", metadata={"help": "Dataset, checkpoints and per-run JSON."})
    objectives: str = field(default="clip,sia,sta,sista", metadata={"help": "Comma-separated objectives."})
    seeds: str = field(default="0,1,2", metadata={"help": "Comma-separated seeds."})
    tasks: str | None = field(default=None, metadata={"help": f"Comma-separated subset of {','.join(ALL_TASKS)}."})
    label_fractions: str | None = field(default=None, metadata={"help": "Comma-separated label fractions."})
    quick: bool = field(default=False, metadata={"help": "1 seed, tiny budgets, subset of tasks (minutes)."})
    aggregate_only: bool = field(default=False, metadata={"help": "Only rebuild table and plots from work_dir."})
    # data (shared by every run)
    image_size: int = field(
        default=128, metadata={"help": "SynthCXR image side (pixels); 128 gives the `small` preset an 8 x 8 grid."}
    )
    num_pretrain: int | None = field(default=None, metadata={"help": "Pre-training studies (default 2000)."})
    num_train: int | None = field(default=None, metadata={"help": "Labelled training studies (default 1000)."})
    num_test: int | None = field(default=None, metadata={"help": "Test studies (default 300)."})
    data_seed: int = field(default=0, metadata={"help": "SynthCXR seed (the same data for every run)."})
    # pre-training budget (identical for every objective)
    model_preset: str = field(default="small", metadata={"help": "pretrain.py --model_preset."})
    pretrain_epochs: float | None = field(default=None, metadata={"help": "Pre-training epochs (default 4)."})
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
    # downstream budgets (identical for every objective and label fraction)
    finetune_steps: int | None = field(default=None, metadata={"help": "Optimizer steps per fine-tune (default 40)."})
    finetune_batch_size: int = field(default=32, metadata={"help": "Fine-tuning batch size."})
    classification_learning_rate: float = field(default=1e-2, metadata={"help": "Linear-probe learning rate."})
    dense_learning_rate: float = field(default=1e-3, metadata={"help": "Segmentation/detection head learning rate."})
    decoder_hidden_size: int = field(default=64, metadata={"help": "Segmentation decoder / detection head width."})
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
            "num_train": (1000, 200),
            "num_test": (300, 100),
            "pretrain_epochs": (4.0, 1.0),
            "finetune_steps": (40, 20),
        }
        for name, (full, quick) in quick_defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, quick if self.quick else full)
        if self.quick and self.seeds == "0,1,2":
            self.seeds = "0"
        if self.tasks is None:
            self.tasks = "classification,zero_shot,retrieval,grounding" if self.quick else ",".join(ALL_TASKS)
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
        num_validation=0,
        num_test=args.num_test,
        image_size=args.image_size,
        seed=args.data_seed,
        num_proc=min(2, os.cpu_count() or 1),
    )
    dataset, record = embed_dataset(dataset, encoder="tfidf", seed=args.data_seed)
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
    learning_rate = args.classification_learning_rate if task == "classification" else args.dense_learning_rate
    cli = [
        "--model_name_or_path", os.fspath(model_dir),
        "--dataset_dir", os.fspath(dataset_dir(args)),
        "--freeze_encoder", "true",
        "--label_fraction", str(fraction),
        "--output_dir", os.fspath(output_dir),
        "--max_steps", str(args.finetune_steps),
        "--per_device_train_batch_size", str(args.finetune_batch_size),
        "--per_device_eval_batch_size", "64",
        "--learning_rate", str(learning_rate),
        "--warmup_steps", "5",
        "--lr_scheduler_type", "cosine",
        "--seed", str(seed),
        "--logging_steps", "20",
        "--save_strategy", "no",
        "--report_to", "none",
        "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
    ]
    if task != "classification":
        cli += ["--decoder_hidden_size", str(args.decoder_hidden_size)]
    if args.max_eval_samples:
        cli += ["--max_test_samples", str(args.max_eval_samples)]
    return cli


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
    if task in FINETUNE_TASKS:
        metrics = results["metrics"]
        keys = {"classification": ("auroc", "accuracy"), "segmentation": ("dice", "mean_image_dice"),
                "detection": ("map_40_75", "map", "map_50")}[task]
        return {key: metrics.get(key) for key in keys}
    if task == "zero_shot":
        return {"macro_auroc": results["macro_auroc"]}
    if task == "retrieval":
        headline = {}
        for view, prefix in (("paired", ""), ("semantic", "sem_")):
            for direction, short in (("image_to_report", "i2r"), ("report_to_image", "r2i")):
                for k, value in results.get(view, {}).get(direction, {}).items():
                    headline[f"{prefix}{short}_{k}"] = value
        return headline
    if task == "grounding":
        overall = results["overall"]
        return {
            "pointing_accuracy": overall["accuracy"],
            "pointing_random_baseline": overall["random_baseline"],
            "pointing_num_findings": overall["num_findings"],
        }
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

    jobs = [(task, fraction) for task in args.task_list if task in FINETUNE_TASKS for fraction in args.fraction_list]
    jobs += [(task, None) for task in args.task_list if task in EVAL_TASKS]
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
        except Exception as error:  # a failing script is reported in the study, with its exact error
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc()
            logger.error("%s %s seed %d failed: %s", name, objective, seed, record["error"])
        record["wall_time_s"] = time.time() - start
        if "error" not in record:
            write_record(path, record)
        else:
            write_record(path.with_name(path.stem + ".error.json"), record)
        logger.info("%s %s seed %d: %s (%.0f s)", name, objective, seed, record.get("metrics"), record["wall_time_s"])


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation: raw records -> mean ± std table and plots
# ---------------------------------------------------------------------------------------------------------------------


def collect_records(work_dir: str | os.PathLike) -> list[dict]:
    records = []
    for path in sorted(Path(work_dir).glob("runs/*/records/*.json")):
        records.append(json.loads(path.read_text()))
    return records


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


def markdown_table(summary: dict, objectives: list[str]) -> str:
    """One row per (task, metric, label fraction), one column per objective: mean ± std over seeds."""
    lines = ["| task | metric | labels | " + " | ".join(objectives) + " |",
             "|---|---|---|" + "---|" * len(objectives)]
    for task, metrics in HEADLINE_METRICS.items():
        for metric, label in metrics:
            by_fraction = summary.get(task, {}).get(metric)
            if not by_fraction:
                continue
            for fraction in sorted(by_fraction, key=_fraction_key):
                labels = "—" if fraction == "-" else f"{float(fraction) * 100:g}%"
                cells = [format_mean_std(by_fraction[fraction].get(objective)) for objective in objectives]
                lines.append(f"| {task} | {label} | {labels} | " + " | ".join(cells) + " |")
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


def versions() -> dict:
    import importlib.metadata as metadata

    found = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for package in ("torch", "transformers", "datasets", "accelerate", "evaluate", "scikit-learn", "numpy",
                    "pycocotools", "matplotlib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        found["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        found["git_dirty_files"] = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        found["git_commit"] = None
    return found


def aggregate(args: ReproduceArguments, command: str, wall_time_s: float | None = None) -> dict:
    records = collect_records(args.work_dir)
    errors = [json.loads(path.read_text()) for path in sorted(Path(args.work_dir).glob("runs/*/records/*.error.json"))]
    summary = summarize(records)
    objectives = [name for name in OBJECTIVES if any(r["objective"] == name for r in records)]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    prefix = "reproduce_quick" if args.quick else "reproduce"
    table = markdown_table(summary, objectives)
    seeds = sorted({r["seed"] for r in records})
    pretrain_walls = [r["wall_time_s"] for r in records if r["task"] == "pretrain"]
    header = (
        f"# SISTA reproduction on SynthCXR{' (--quick)' if args.quick else ''}\n\n"
        f"Mean ± sample std (ddof=1) over seeds {seeds}; `n=1` marks a single seed. Linear probe / frozen encoder "
        f"for the three fine-tuning tasks. Command: `{command}`.\n\n"
    )
    (output_dir / f"{prefix}_table.md").write_text(header + table)
    plots = [
        plot_label_fraction_curves(summary, objectives, output_dir / f"{prefix}_label_fractions.png"),
        plot_no_label_tasks(summary, objectives, output_dir / f"{prefix}_no_label_tasks.png"),
    ]
    payload = {
        "command": command,
        "protocol": {key: value for key, value in asdict(args).items() if key != "worker_run"},
        "versions": versions(),
        "wall_time_s": wall_time_s,
        "pretrain_wall_time_s_total": float(sum(pretrain_walls)),
        "downstream_wall_time_s_total": float(sum(r.get("wall_time_s", 0.0) for r in records if r["task"] != "pretrain")),
        "num_records": len(records),
        "errors": [{key: error.get(key) for key in ("objective", "seed", "task", "label_fraction", "error")}
                   for error in errors],
        "summary": summary,
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
    if args.aggregate_only:
        return aggregate(args, command)
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
            aggregate(args, command, time.time() - start)
    return aggregate(args, command, time.time() - start)


if __name__ == "__main__":
    main()
