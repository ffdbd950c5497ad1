#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Why plain CLIP collapses in the reproduction study: the embedding spread along pre-training.

Runs exactly the study's pre-training of one (objective, seed) (`research/reproduce.py`'s `pretrain_arguments`
with its defaults: small preset, 128 px, mean pooling, batch 32, lr 1e-3, warmup 20, cosine, 6 epochs = 372 steps,
augmentation on) and, at the probe steps, embeds the first `--num_probe` test-split studies (eval mode, no
augmentation) and records:

* `img_mean_cos` / `txt_mean_cos`: mean pairwise cosine similarity of the L2-normalised image / report embeddings
  (1 = all equal, i.e. collapsed), and `img_spread` / `txt_spread` = 1 - |mean embedding|^2 (total variance of
  the normalised embeddings);
* `pair_gap`: mean cosine of matched image-report pairs minus that of unmatched pairs (the alignment signal);
* `clip_loss`: the symmetric CLIP loss over batches of 32 of those studies at the current logit scale, beside
  ln 32 (the loss of collapsed embeddings), and `clip_loss_at_scale`: the same embeddings scored at logit scales
  1, 5 and 1/0.07;
* `i2t_R@1` / `i2t_R@10`: paired image-to-report retrieval among the probe studies (chance 1/N, 10/N).

The Trainer's own training loss and gradient norm (logged every step) are stored beside them.

    python research/clip_collapse.py --objective clip                          # the study's CLIP (seed 0)
    python research/clip_collapse.py --objective sta                           # the study's STA, for comparison
    python research/clip_collapse.py --objective clip --logit_scale_init 0 --tag clip-scale1   # logit scale 1 at init
    python research/clip_collapse.py --objective clip --pretrain_extra_args "--no_augment" --tag clip-noaug

Each run writes `<output_dir>/diag_<tag>.json`; every run rebuilds `<output_dir>/mechanism_table.md` from all the
`diag_*.json` found there. The checkpoint and its pre-training record go to `<work_dir>/<tag>` in reproduce.py's
layout (git-ignored `outputs/`), so the downstream tasks of a variant run with

    python research/reproduce.py --work_dir outputs/clip_collapse/diag/<tag> --objectives <objective> --seeds 0 \
        --tasks classification,zero_shot,retrieval --label_fractions 0.1,1.0 --output_dir docs/results/clip_collapse/<tag>

One run: ~5 min on 1 thread.
"""

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


ROOT = Path(__file__).resolve().parents[1]

SCALES = (1.0, 5.0, 1 / 0.07)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", default="clip", choices=("clip", "sia", "sta", "sista"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None, help="Name of the run (default: the objective).")
    parser.add_argument("--work_dir", default="outputs/clip_collapse/diag")
    parser.add_argument("--output_dir", default="docs/results/clip_collapse")
    parser.add_argument("--probe_steps", default="0,1,2,5,10,20,50,100,200")
    parser.add_argument("--num_probe", type=int, default=256)
    parser.add_argument("--logit_scale_init", type=float, default=None,
                        help="Initial log logit scale (the study: ln(1/0.07) = 2.659).")
    parser.add_argument("--pretrain_extra_args", default=None, help="Extra pretrain.py arguments (shell-quoted).")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def clip_loss(image_embeds, text_embeds, scale: float, batch_size: int = 32) -> float:
    losses = []
    for start in range(0, len(image_embeds) - batch_size + 1, batch_size):
        logits = scale * image_embeds[start:start + batch_size] @ text_embeds[start:start + batch_size].t()
        target = torch.arange(len(logits))
        losses.append(((F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2).item())
    return sum(losses) / len(losses)


def mean_offdiag(matrix) -> float:
    n = len(matrix)
    return ((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1))).item()


@torch.no_grad()
def probe(model, loader) -> dict:
    was_training = model.training
    model.eval()
    images, texts = [], []
    for batch in loader:
        outputs = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"), pixel_values=batch["pixel_values"],
        )
        images.append(outputs.image_embeds.float())
        texts.append(outputs.text_embeds.float())
    model.train(was_training)
    x, y = torch.cat(images), torch.cat(texts)
    cross = x @ y.t()
    n = len(x)
    rank = (cross > cross.diagonal()[:, None]).sum(dim=1)  # how many reports score above the paired one
    scale = model.logit_scale.exp().clamp(max=100).item()
    return {
        "img_mean_cos": mean_offdiag(x @ x.t()),
        "txt_mean_cos": mean_offdiag(y @ y.t()),
        "img_spread": 1 - x.mean(0).pow(2).sum().item(),
        "txt_spread": 1 - y.mean(0).pow(2).sum().item(),
        "pair_gap": cross.diagonal().mean().item() - mean_offdiag(cross),
        "logit_scale": scale,
        "clip_loss": clip_loss(x, y, scale),
        "clip_loss_at_scale": {f"{s:.3g}": clip_loss(x, y, s) for s in SCALES},
        "i2t_R@1": (rank < 1).float().mean().item(),
        "i2t_R@10": (rank < 10).float().mean().item(),
        "num_probe": n,
    }


def main(argv=None):
    options = parse(argv)
    torch.set_num_threads(options.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import reproduce
    from datasets import load_from_disk
    from torch.utils.data import DataLoader
    from transformers import TrainerCallback

    pretrain = reproduce.example_script("pretrain")
    tag = options.tag or options.objective
    study_argv = ["--work_dir", options.work_dir]
    if options.pretrain_extra_args:
        study_argv += ["--pretrain_extra_args", options.pretrain_extra_args]
    study_argv[1] = os.fspath(Path(options.work_dir) / tag)
    args = reproduce.parse_arguments(study_argv)
    data_path = reproduce.prepare_dataset(args)
    # the layout of reproduce.py, so that `reproduce.py --work_dir <work_dir>/<tag>` runs only the downstream tasks
    output_dir = reproduce.run_dir(args, options.objective, options.seed) / "pretrain"
    cli = reproduce.pretrain_arguments(args, options.objective, options.seed, output_dir) + ["--logging_steps", "1"]
    probe_steps = {int(step) for step in options.probe_steps.split(",")}
    trajectory: list[dict] = []

    class ProbeCallback(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer
            self.loader = None

        def _probe(self, step, model):
            if self.loader is None:
                test = load_from_disk(os.fspath(data_path))["test"]
                test = test.select(range(min(options.num_probe, len(test))))
                dataset = pretrain.PretrainingDataset(test, self.trainer.processing_class.image_processor, None)
                # the trainer's input step normalises the dataset's 8-bit images on the model's device
                collate = lambda rows: self.trainer._prepare_inputs(self.trainer.data_collator(rows))  # noqa: E731
                self.loader = DataLoader(dataset, batch_size=64, collate_fn=collate)
            record = {"step": step, **probe(model, self.loader)}
            trajectory.append(record)
            print(f"[probe] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                      if isinstance(v, float)), flush=True)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if 0 in probe_steps:
                self._probe(0, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in probe_steps or state.global_step == state.max_steps:
                self._probe(state.global_step, model)

    class ProbedTrainer(pretrain.SistaTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(ProbeCallback(self))

    pretrain.SistaTrainer = ProbedTrainer
    if options.logit_scale_init is not None:
        build_model = pretrain.build_model

        def build_model_with_scale(*args, **kwargs):
            model = build_model(*args, **kwargs)
            model.config.logit_scale_init_value = options.logit_scale_init
            with torch.no_grad():
                model.logit_scale.fill_(options.logit_scale_init)
            return model

        pretrain.build_model = build_model_with_scale

    start = time.time()
    trainer = pretrain.main(cli)
    wall = time.time() - start
    train_log = [{key: entry[key] for key in ("step", "loss", "loss_sia", "loss_sta", "grad_norm", "learning_rate")
                  if key in entry} for entry in trainer.state.log_history if "loss" in entry]
    payload = {
        "tag": tag, "objective": options.objective, "seed": options.seed,
        "logit_scale_init": options.logit_scale_init, "pretrain_extra_args": options.pretrain_extra_args,
        "command": shlex.join(["python", "research/clip_collapse.py", *(sys.argv[1:] if argv is None else argv)]),
        "pretrain_command": shlex.join(["python", "examples/pretrain.py", *cli]),
        "ln_batch": math.log(args.pretrain_batch_size), "wall_time_s": wall,
        "probes": trajectory, "train_log": train_log,
    }
    reproduce.write_record(reproduce.record_path(args, options.objective, options.seed, "pretrain", None), {
        "objective": options.objective, "seed": options.seed, "task": "pretrain", "label_fraction": None,
        "wall_time_s": wall, "global_step": trainer.state.global_step,
        "first_log": train_log[0] if train_log else None, "last_log": train_log[-1] if train_log else None,
        "logit_scale_init": options.logit_scale_init, "command": payload["pretrain_command"],
        "diagnostic_command": payload["command"],
    })
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"diag_{tag}.json").write_text(json.dumps(payload, indent=1) + "\n")
    write_table(out)
    return payload


def write_table(out: Path) -> None:
    lines = ["# Embedding spread along pre-training (seed 0, 256 test studies)", "",
             "Generated by `research/clip_collapse.py` from the `diag_*.json` here. mean cos: mean pairwise cosine "
             "of the normalised embeddings (1 = collapsed); pair gap: matched minus unmatched image-report cosine; "
             "CLIP loss on the probe studies in batches of 32 at the current logit scale (collapsed = ln 32 = "
             f"{math.log(32):.4f}) and at scale 1; train loss and grad norm: the Trainer's log at that step; "
             "R@10 chance = 10/256 = 0.039.", "",
             "| run | step | img mean cos | txt mean cos | pair gap | logit scale | CLIP loss | CLIP loss @ scale 1 "
             "| train loss | grad norm | i2t R@10 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("diag_*.json")):
        payload = json.loads(path.read_text())
        logs = {entry["step"]: entry for entry in payload["train_log"]}
        for record in payload["probes"]:
            log = logs.get(record["step"], {})
            train_loss = f"{log['loss']:.4f}" if "loss" in log else "—"
            grad = f"{log['grad_norm']:.4f}" if "grad_norm" in log else "—"
            lines.append(
                f"| {payload['tag']} | {record['step']} | {record['img_mean_cos']:.4f} | {record['txt_mean_cos']:.4f} "
                f"| {record['pair_gap']:.4f} | {record['logit_scale']:.2f} | {record['clip_loss']:.4f} "
                f"| {record['clip_loss_at_scale']['1']:.4f} | {train_loss} | {grad} | {record['i2t_R@10']:.3f} |"
            )
    (out / "mechanism_table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
