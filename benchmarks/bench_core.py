#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Cost of the SISTA objectives on this machine (numbers to report, not a test).

1. SISTA / CLIP train-step time ratio at batch 64 with the demo encoders (`--model_preset small`, 128 px):
   forward + backward + AdamW with `--objective sista` against `--objective clip` (target <= 1.05);
2. STA peak memory, forward + backward of `sta_loss` alone, for B=256, L=128, P=196, D=128 (target < 2 GB) and
   its scaling in B, L and P: the peak of the tensor memory the call allocates, replayed from torch.profiler's
   allocation events (its inputs excluded).

    python benchmarks/bench_core.py [--skip_ratio] [--skip_memory]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_ratio", action="store_true")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round of the ratio measurement")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    if not args.skip_ratio:
        clip_seconds, sista_seconds = objective_step_ratio(batch_size=64, steps=args.steps)
        print(f"batch 64, demo encoders: CLIP {clip_seconds:.3f} s/step, SISTA {sista_seconds:.3f} s/step, "
              f"ratio {sista_seconds / clip_seconds:.3f} (target <= 1.05)")
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
