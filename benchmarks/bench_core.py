#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Cost of the SISTA objectives on this machine (numbers to report, not a test).

1. SISTA / CLIP train-step time ratio at batch 64 with the demo encoders (`--model_preset small`, 128 px):
   forward + backward + AdamW with `--objective sista` against `--objective clip` (target <= 1.05);
2. SISTA against transformers' `VisionTextDualEncoderModel` CLIP step on identical encoders (the `small-vit` sizes:
   ViT 192 x 4 layers at 128 px, BERT 192 x 4 layers, projection 128), batch 64, 96 tokens, random data: one step of
   each in turn (`--clip_steps` pairs, the order alternating), the ratio of the median step times (target <= 1.03)
   with its 95% bootstrap interval over the pairs.
   `--profile` adds torch.profiler's self CPU time per operator for both steps and lists where SISTA spends more;
3. STA peak memory, forward + backward of `sta_loss` alone, for B=256, L=128, P=196, D=128 (target < 2 GB) and
   its scaling in B, L and P: the peak of the tensor memory the call allocates, replayed from torch.profiler's
   allocation events (its inputs excluded).

    python benchmarks/bench_core.py [--skip_ratio] [--skip_clip_ratio] [--skip_memory] [--profile] [--threads 1]
"""

import argparse
import os
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile


MEMORY_CASES = [  # (B, L, P, D): the target case, then one factor varied at a time
    (256, 128, 196, 128),
    (64, 128, 196, 128),
    (128, 128, 196, 128),
    (512, 128, 196, 128),
    (256, 32, 196, 128),
    (256, 64, 196, 128),
    (256, 256, 196, 128),
    (256, 128, 49, 128),
    (256, 128, 784, 128),
]


def peak_tensor_memory_mb(function) -> float:
    """Peak of the CPU tensor memory that `function` allocates, from torch.profiler's allocation events replayed in
    time order (inputs created before the call are not counted). Unlike the process's peak RSS, this does not
    depend on what the allocator or earlier imports left behind."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
    events = sorted((e for e in profiler.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def sta_memory_case(batch_size: int, num_tokens: int, num_patches: int, dim: int) -> dict:
    """Peak tensor memory and time of one STA forward + backward."""
    from modeling_sista import sta_loss

    torch.manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(batch_size, num_tokens, dim), dim=-1).requires_grad_()
    patches = torch.nn.functional.normalize(torch.randn(batch_size, num_patches, dim), dim=-1).requires_grad_()
    token_mask = torch.rand(batch_size, num_tokens) < 0.7

    def forward_backward():
        loss, _ = sta_loss(tokens, patches, token_mask)
        loss.backward()

    start = time.perf_counter()
    forward_backward()
    seconds = time.perf_counter() - start
    tokens.grad = patches.grad = None
    return {"peak_mb": peak_tensor_memory_mb(forward_backward), "seconds": seconds}


def sta_memory_table() -> list[dict]:
    return [
        {"B": case[0], "L": case[1], "P": case[2], "D": case[3], **sta_memory_case(*case)} for case in MEMORY_CASES
    ]


def objective_step_ratio(batch_size: int, steps: int) -> tuple[float, float]:
    """Median train-step seconds of the demo encoders with --objective clip and --objective sista."""
    from bench_pretrain import demo_data, demo_model_and_batch, train_step_seconds

    dataset = demo_data(batch_size)
    results = {}
    # interleaved rounds, so that a burst of load elsewhere on the machine hits both objectives
    models = {}
    for objective in ("clip", "sista"):
        torch.manual_seed(0)
        models[objective] = demo_model_and_batch(dataset, batch_size, objective=objective)[:2]
        results[objective] = []
    for _ in range(3):
        for objective, (model, batch) in models.items():
            results[objective].append(train_step_seconds(model, batch, steps=steps, warmup=1))
    return statistics.median(results["clip"]), statistics.median(results["sista"])


def transformers_clip_models_and_batch(batch_size: int = 64, sequence_length: int = 96):
    """`SistaModel` (SIA + STA) and transformers' `VisionTextDualEncoderModel` (CLIP) on the same `small-vit` encoder
    configs, with one random batch of MIMIC-CXR's shape for each (CLIP's without `report_embeds`)."""
    from bench_gpu_scale import build_clip, build_sista, random_batch
    from sista_examples.training.pretraining import MODEL_PRESETS
    from transformers import BertConfig, ViTConfig

    preset = MODEL_PRESETS["small-vit"]
    vision = ViTConfig(**preset["vision"], image_size=preset["image_size"])
    text = BertConfig(**preset["text"])
    device = torch.device("cpu")
    batch = random_batch(vision, text, batch_size, sequence_length, device)
    clip_batch = {key: value for key, value in batch.items() if key != "report_embeds"}
    torch.manual_seed(0)
    sista = build_sista(vision, text, device, projection_dim=preset["projection_dim"])
    torch.manual_seed(0)
    clip = build_clip(vision, text, device, projection_dim=preset["projection_dim"])
    return {"sista": (sista, batch), "clip": (clip, clip_batch)}


def _train_step(model, batch: dict, optimizer: torch.optim.Optimizer):
    loss = model(**batch, return_loss=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def transformers_clip_step_ratio(steps: int, warmup: int = 2) -> dict:
    """Interleaved steps of SISTA and transformers' CLIP: a burst of load elsewhere on the machine hits both."""
    cases = transformers_clip_models_and_batch()
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in cases.items()}
    times = {name: [] for name in cases}
    for step in range(warmup + steps):
        order = list(cases) if step % 2 == 0 else list(reversed(cases))
        for name in order:
            model, batch = cases[name]
            start = time.perf_counter()
            _train_step(model, batch, optimizers[name])
            if step >= warmup:
                times[name].append(time.perf_counter() - start)
    pair_ratios = [sista / clip for sista, clip in zip(times["sista"], times["clip"])]
    return {
        "clip_s": statistics.median(times["clip"]),
        "sista_s": statistics.median(times["sista"]),
        "ratio": statistics.median(times["sista"]) / statistics.median(times["clip"]),
        "median_pair_ratio": statistics.median(pair_ratios),
        "ratio_interval": bootstrap_ratio_interval(times["sista"], times["clip"]),
    }


def bootstrap_ratio_interval(sista: list[float], clip: list[float], resamples: int = 2000, seed: int = 0):
    """95% percentile-bootstrap interval of the ratio of median step times, resampling the step pairs (a pair shares
    the load of its moment). It says how precisely one run measures the ratio: a target is shown only when the
    interval's upper end is under it."""
    import numpy as np

    pairs = np.array([sista, clip])
    indices = np.random.default_rng(seed).integers(0, pairs.shape[1], size=(resamples, pairs.shape[1]))
    ratios = np.median(pairs[0][indices], axis=1) / np.median(pairs[1][indices], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def profile_against_transformers_clip(steps: int = 3, top: int = 15) -> str:
    """Self CPU time per operator over `steps` train steps of each model (after one warm-up step), profiled one step
    at a time, the two models in turn (so that load elsewhere hits both), and the operators where SISTA spends the
    most beyond CLIP, in ms per step."""
    cases = transformers_clip_models_and_batch()
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in cases.items()}
    per_operator = {name: {} for name in cases}
    for step in range(1 + steps):
        for name in list(cases) if step % 2 == 0 else list(reversed(cases)):
            model, batch = cases[name]
            if step == 0:
                _train_step(model, batch, optimizers[name])
                continue
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                _train_step(model, batch, optimizers[name])
            for event in profiler.key_averages():
                ms, calls = per_operator[name].get(event.key, (0.0, 0.0))
                ms, calls = ms + event.self_cpu_time_total / 1e3 / steps, calls + event.count / steps
                per_operator[name][event.key] = (ms, calls)
    totals = {name: sum(ms for ms, _ in table.values()) for name, table in per_operator.items()}
    operators = set(per_operator["sista"]) | set(per_operator["clip"])
    differences = sorted(
        operators,
        key=lambda op: per_operator["sista"].get(op, (0, 0))[0] - per_operator["clip"].get(op, (0, 0))[0],
        reverse=True,
    )
    lines = [
        f"self CPU time per step (torch.profiler, {steps} steps): SISTA {totals['sista']:.1f} ms, "
        f"CLIP {totals['clip']:.1f} ms, difference {totals['sista'] - totals['clip']:+.1f} ms",
        "| operator | SISTA ms/step | CLIP ms/step | difference | SISTA calls/step | CLIP calls/step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for op in differences[:top]:
        (sista_ms, sista_calls), (clip_ms, clip_calls) = (per_operator[n].get(op, (0, 0)) for n in ("sista", "clip"))
        lines.append(f"| `{op}` | {sista_ms:.2f} | {clip_ms:.2f} | {sista_ms - clip_ms:+.2f} | {sista_calls:.0f} | "
                     f"{clip_calls:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_ratio", action="store_true")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_clip_ratio", action="store_true", help="skip the transformers CLIP comparison")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round of the ratio measurement")
    parser.add_argument("--clip_steps", type=int, default=15, help="timed step pairs against transformers' CLIP")
    parser.add_argument("--profile", action="store_true", help="profile SISTA's and CLIP's steps per operator")
    parser.add_argument("--threads", type=int, default=None, help="torch compute threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    if not args.skip_ratio:
        clip_seconds, sista_seconds = objective_step_ratio(batch_size=64, steps=args.steps)
        print(f"batch 64, demo encoders: CLIP {clip_seconds:.3f} s/step, SISTA {sista_seconds:.3f} s/step, "
              f"ratio {sista_seconds / clip_seconds:.3f} (target <= 1.05)")
    if not args.skip_clip_ratio:
        result = transformers_clip_step_ratio(steps=args.clip_steps)
        print(f"against transformers' VisionTextDualEncoderModel (ViT 192x4 at 128 px, BERT 192x4, batch 64, 96 "
              f"tokens, {args.clip_steps} interleaved step pairs): CLIP {result['clip_s']:.3f} s/step, SISTA "
              f"{result['sista_s']:.3f} s/step, ratio {result['ratio']:.3f} (median of pair ratios "
              f"{result['median_pair_ratio']:.3f}; target <= 1.03); 95% bootstrap interval of the ratio "
              f"[{result['ratio_interval'][0]:.3f}, {result['ratio_interval'][1]:.3f}]")
    if args.profile:
        print(profile_against_transformers_clip())
    if not args.skip_memory:
        print("STA forward + backward, peak tensor memory (torch.profiler allocation events):")
        print("|   B |   L |   P |   D | peak MB | seconds |")
        print("|----:|----:|----:|----:|--------:|--------:|")
        for row in sta_memory_table():
            print(f"| {row['B']} | {row['L']} | {row['P']} | {row['D']} | {row['peak_mb']:.0f} | "
                  f"{row['seconds']:.2f} |")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
