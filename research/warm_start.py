#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""CLIP vs SIA vs STA vs SISTA from one shared STA warm start (not from a near-collapsed random initialisation).

A from-scratch ViT collapses under plain CLIP at a small budget (`clip_collapse.py` probes it), so a study from a
random initialisation can compare STA against a collapsed model. Here every objective starts from the same encoders,
pre-trained briefly with `--objective sta`:

1. warm start: the study's pre-training (`reproduce.py`'s `pretrain_arguments`: small preset, 128 px, mean pooling,
   batch 32, lr 1e-3, warm-up 20, cosine) with `--objective sta --num_train_epochs <warm_epochs>` (1 epoch = 62
   steps), run through `clip_collapse.py` so its embedding spread is probed along the way;
2. its vision and text backbones are saved as standalone checkpoints (`<diag_dir>/backbones/{vision,text}`; reloaded
   and checked equal, tensor by tensor); its tokenizer is its pre-training folder (same vocabulary);
3. for every (objective, seed): the study's full pre-training budget (6 epochs = 372 steps) from those backbones
   (`--vision_model_name_or_path --text_model_name_or_path --tokenizer_name_or_path`; the projections and the logit
   scale are new, initialised as usual), again through `clip_collapse.py`, so every run's spread and CLIP loss vs
   ln 32 are probed at steps 0, 1, 2, 5, 10, 20, 50, 100, 200 and the last
   (`<output_dir>/probes/diag_warm-<objective>-seed<seed>.json`
   and `mechanism_table.md`); at most 2 runs at a time, 1 torch thread each;
4. those checkpoints are linked into `<work_dir>/runs/<objective>-seed<seed>` (reproduce.py's layout) and
   `reproduce.py` runs only the downstream tasks (the pre-training records exist) and writes its JSON, table and
   plots to `<output_dir>`.

    python research/warm_start.py                                   # seed 0, classification/zero-shot/retrieval
    python research/warm_start.py --seeds 0,1,2 --tasks classification,segmentation,detection,zero_shot,retrieval \
        --label_fractions 0.1,1.0                                     # every head at 10% and 100% labels
    python research/warm_start.py --warm_epochs 4 --objectives clip,sia,sta,sista --seeds 0 \
        --diag_dir outputs/warm_start4_diag --work_dir outputs/warm_start4 \
        --output_dir docs/results/warm_start/warm_start_4epochs        # a stronger warm start (248 STA steps)

Every step is skipped when its output exists, so a stopped run continues. Checkpoints stay under `outputs/`.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objectives", default="clip,sia,sta,sista")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--warm_epochs", type=float, default=1.0, help="STA warm-start epochs (1 = 62 steps).")
    parser.add_argument("--warm_seed", type=int, default=0)
    parser.add_argument("--tasks", default="classification,zero_shot,retrieval")
    parser.add_argument("--label_fractions", default="0.1,1.0")
    parser.add_argument("--diag_dir", default="outputs/warm_start_diag", help="Warm start and probed runs.")
    parser.add_argument("--work_dir", default="outputs/warm_start", help="reproduce.py's work_dir (links).")
    parser.add_argument("--output_dir", default="docs/results/warm_start")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--allow_dirty", action="store_true",
                        help="Passed to reproduce.py: record from a checkout with uncommitted changes.")
    return parser.parse_args(argv)


def run(command: list[str], log: Path) -> None:
    print("$ " + shlex.join(command), flush=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_OFFLINE": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        subprocess.run(command, cwd=ROOT, env=environment, stdout=handle, stderr=subprocess.STDOUT, check=True)


def share_dataset(diag_dir: Path, tag: str, dataset: Path) -> None:
    """Every probed run reads the one SynthCXR folder instead of generating its own copy."""
    target = diag_dir / tag / "synthcxr"
    if dataset.is_dir() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dataset.resolve(), target_is_directory=True)


def export_backbones(warm_dir: Path, backbone_dir: Path) -> dict:
    """Saves the warm start's vision and text backbones standalone and checks that they reload equal."""
    import torch
    from transformers import AutoModel

    from modeling_sista import SistaModel, pooling_layer_kwargs

    model = SistaModel.from_pretrained(warm_dir)
    report = {}
    for name, module in (("vision", model.vision_model), ("text", model.text_model)):
        path = backbone_dir / name
        module.save_pretrained(path)
        # reloaded as SistaModel.from_vision_text_pretrained does: without a (random) pooler where there is one
        reloaded = AutoModel.from_pretrained(path, **pooling_layer_kwargs(module.config, keep_pooler=False))
        original, loaded = module.state_dict(), reloaded.state_dict()
        equal = original.keys() == loaded.keys() and all(torch.equal(original[k], loaded[k]) for k in original)
        if not equal:
            raise RuntimeError(f"The {name} backbone saved to {path} does not reload equal.")
        report[name] = {"path": os.fspath(path), "class": type(reloaded).__name__, "num_tensors": len(original),
                        "reloads_equal": equal}
    return report


def main(argv=None):
    options = parse(argv)
    diag_dir, work_dir = Path(options.diag_dir), Path(options.work_dir)
    probes_dir = Path(options.output_dir) / "probes"
    python = sys.executable
    dataset = diag_dir / "synthcxr"

    # 1. the STA warm start (the first clip_collapse run generates the shared dataset)
    warm_tag = "warm-sta"
    warm_dir = diag_dir / warm_tag / "runs" / f"sta-seed{options.warm_seed}" / "pretrain"
    if not (warm_dir / "model.safetensors").is_file():
        share_dataset(diag_dir, warm_tag, dataset)
        run([python, "research/clip_collapse.py", "--objective", "sta", "--seed", str(options.warm_seed),
             "--tag", warm_tag, "--work_dir", os.fspath(diag_dir), "--output_dir", os.fspath(probes_dir),
             "--probe_steps", "0,10,20,40,62",
             "--pretrain_extra_args", f"--num_train_epochs {options.warm_epochs:g}"], diag_dir / f"{warm_tag}.log")
    if not dataset.exists():
        dataset.symlink_to((diag_dir / warm_tag / "synthcxr").resolve(), target_is_directory=True)

    # 2. standalone backbones
    backbone_dir = diag_dir / "backbones"
    if not (backbone_dir / "text" / "config.json").is_file():
        report = export_backbones(warm_dir, backbone_dir)
        Path(options.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(options.output_dir) / "backbones.json").write_text(json.dumps(report, indent=1) + "\n")
    extra = (f"--vision_model_name_or_path {backbone_dir / 'vision'} --text_model_name_or_path {backbone_dir / 'text'} "
             f"--tokenizer_name_or_path {warm_dir}")

    # 3. probed pre-training of every (objective, seed) from the warm start
    objectives = [item for item in options.objectives.split(",") if item]
    seeds = [int(item) for item in options.seeds.split(",") if item]
    jobs = []
    for seed in seeds:
        for objective in objectives:
            tag = f"warm-{objective}-seed{seed}"
            if (diag_dir / tag / "runs" / f"{objective}-seed{seed}" / "records" / "pretrain.json").is_file():
                continue
            share_dataset(diag_dir, tag, dataset)
            jobs.append(([python, "research/clip_collapse.py", "--objective", objective, "--seed", str(seed),
                          "--tag", tag, "--work_dir", os.fspath(diag_dir), "--output_dir", os.fspath(probes_dir),
                          "--pretrain_extra_args", extra], diag_dir / f"{tag}.log"))
    with ThreadPoolExecutor(max_workers=max(options.parallel, 1)) as pool:
        for future in [pool.submit(run, *job) for job in jobs]:
            future.result()

    # 4. downstream tasks with reproduce.py on the linked checkpoints
    (work_dir / "runs").mkdir(parents=True, exist_ok=True)
    if not (work_dir / "synthcxr").exists():
        (work_dir / "synthcxr").symlink_to(dataset.resolve(), target_is_directory=True)
    for seed in seeds:
        for objective in objectives:
            link = work_dir / "runs" / f"{objective}-seed{seed}"
            if not link.exists():
                tag = f"warm-{objective}-seed{seed}"
                link.symlink_to((diag_dir / tag / "runs" / f"{objective}-seed{seed}").resolve(), target_is_directory=True)
    run([python, "research/reproduce.py", "--objectives", ",".join(objectives), "--seeds", options.seeds,
         "--tasks", options.tasks, "--label_fractions", options.label_fractions, "--parallel", str(options.parallel),
         "--work_dir", os.fspath(work_dir), "--output_dir", options.output_dir, "--pretrain_extra_args", extra,
         *(["--allow_dirty"] if options.allow_dirty else [])],
        diag_dir / "reproduce.log")


if __name__ == "__main__":
    main()
