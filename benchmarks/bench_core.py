#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Cost of the SISTA objectives on this machine (numbers to report, not a test).

1. SISTA / CLIP train-step time ratio at batch 64 with the demo encoders (`--model_preset small`, 128 px):
   forward + backward + AdamW with `--objective sista` against `--objective clip` (target <= 1.05);
2. STA peak memory, forward + backward of `sta_loss` alone, for B=256, L=128, P=196, D=128 (target < 2 GB) and
   its scaling in B, L and P. Each case runs in a fresh subprocess and reports the growth of its peak resident
   memory (`resource.getrusage` max RSS) over the baseline taken after its inputs exist.

    python benchmarks/bench_core.py [--skip_ratio] [--skip_memory]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


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


def sta_peak_memory_case(batch_size: int, num_tokens: int, num_patches: int, dim: int) -> dict:
    """Runs in a subprocess: peak RSS growth of one STA forward + backward, in MB."""
    from modeling_sista import sta_loss

    torch.manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(batch_size, num_tokens, dim), dim=-1).requires_grad_()
    patches = torch.nn.functional.normalize(torch.randn(batch_size, num_patches, dim), dim=-1).requires_grad_()
    token_mask = torch.rand(batch_size, num_tokens) < 0.7
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    start = time.perf_counter()
    loss, _ = sta_loss(tokens, patches, token_mask)
    loss.backward()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_growth_mb": peak_mb - baseline_mb, "seconds": seconds}


def sta_memory_table() -> list[dict]:
    rows = []
    for case in MEMORY_CASES:
        command = [sys.executable, __file__, "--memory_case", json.dumps(case)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append({"B": case[0], "L": case[1], "P": case[2], "D": case[3], **json.loads(output)})
    return rows


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
    parser.add_argument("--memory_case", help=argparse.SUPPRESS)  # internal: one subprocess measurement
    parser.add_argument("--skip_ratio", action="store_true")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round of the ratio measurement")
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(sta_peak_memory_case(*json.loads(args.memory_case))))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    if not args.skip_ratio:
        clip_seconds, sista_seconds = objective_step_ratio(batch_size=64, steps=args.steps)
        print(f"batch 64, demo encoders: CLIP {clip_seconds:.3f} s/step, SISTA {sista_seconds:.3f} s/step, "
              f"ratio {sista_seconds / clip_seconds:.3f} (target <= 1.05)")
    if not args.skip_memory:
        print("STA forward + backward, peak RSS growth (fresh process per case):")
        print("|   B |   L |   P |   D | peak MB | seconds |")
        print("|----:|----:|----:|----:|--------:|--------:|")
        for row in sta_memory_table():
            print(f"| {row['B']} | {row['L']} | {row['P']} | {row['D']} | {row['peak_growth_mb']:.0f} | "
                  f"{row['seconds']:.2f} |")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
