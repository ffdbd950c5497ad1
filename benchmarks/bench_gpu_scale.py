#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Train-step cost of SISTA at the real model size on one CUDA GPU (numbers to report, not a test).

ViT-B/16 at 224 px + BERT-base (random weights built from their configs, nothing downloaded), bf16 autocast,
random data of MIMIC-CXR's shape (one image and one report of `--sequence_length` tokens per sample), AdamW.
Each case runs `--warmup` steps, then `--steps` timed steps:

1. `sista`: [`SistaModel`] with the SISTA objective (SIA + STA; random `report_embeds`);
2. `clip`: transformers' `VisionTextDualEncoderModel` CLIP step on the same encoders;
3. `sista_fsdp2`: case 1 sharded with FSDP2 (`fully_shard` per ViT/BERT layer, bf16 parameters, float32
   gradient reduction) in a 1-process group: the cost of FSDP2's machinery without communication.

Printed and written as JSON: median step time, peak memory (`torch.cuda.max_memory_allocated`), images/s, and the
SISTA/CLIP step-time ratio.

    python benchmarks/bench_gpu_scale.py [--batch_size 256] [--output bench_gpu_scale.json]
    python benchmarks/bench_gpu_scale.py --tiny --steps 2    # CPU smoke run with tiny encoders
"""

import argparse
import json
import statistics
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers import BertConfig, ViTConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.vit.modeling_vit import ViTLayer

from configuration_sista import SistaConfig
from modeling_sista import SistaModel


SPECIAL_TOKEN_IDS = [0, 100, 101, 102, 103]  # BERT's [PAD] [UNK] [CLS] [SEP] [MASK]


def encoder_configs(tiny: bool) -> tuple[ViTConfig, BertConfig]:
    """ViT-B/16 (224 px) and BERT-base, or tiny stand-ins for a CPU smoke run."""
    if tiny:
        vision = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8)  # fmt: skip
        text = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        return vision, text
    return ViTConfig(image_size=224, patch_size=16), BertConfig()


def default_batch_size(device: torch.device, tiny: bool) -> int:
    """256 per GPU, as the real runs use, where the GPU holds it; halved for smaller GPUs."""
    if tiny or device.type != "cuda":
        return 8
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return 256 if total_gib >= 70 else 128 if total_gib >= 35 else 64


def random_batch(vision, text, batch_size: int, sequence_length: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, text.vocab_size, (batch_size, sequence_length), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch_size, 3, vision.image_size, vision.image_size, generator=generator),
        "report_embeds": torch.randn(batch_size, 768, generator=generator),
    }
    return {key: value.to(device) for key, value in batch.items()}


def build_sista(vision, text, device: torch.device, projection_dim: int = 512) -> SistaModel:
    config = SistaConfig.from_vision_text_configs(
        vision, text, projection_dim=projection_dim, sta_ignore_token_ids=SPECIAL_TOKEN_IDS
    )
    return SistaModel(config).to(device).train()


def build_clip(vision, text, device: torch.device, projection_dim: int = 512) -> VisionTextDualEncoderModel:
    config = VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=projection_dim)
    return VisionTextDualEncoderModel(config).to(device).train()


def shard_with_fsdp2(model: SistaModel) -> SistaModel:
    """FSDP2 as accelerate applies it for `examples/accelerate_configs/fsdp.yaml`, with float32 reduction."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in model.modules():
        if isinstance(module, (ViTLayer, BertLayer)):
            fully_shard(module, mp_policy=policy)
    fully_shard(model.get_input_embeddings(), mp_policy=policy)
    return fully_shard(model, mp_policy=policy)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, batch: dict, steps: int, warmup: int, device: torch.device) -> dict:
    """Median train-step time (forward, backward, AdamW) after `warmup` steps, and the peak memory of the steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times = []
    for step in range(warmup + steps):
        synchronize(device)  # timing only: the step itself does not wait for the host
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= warmup:
            step_times.append(time.perf_counter() - start)
    step_time = statistics.median(step_times)
    batch_size = batch["pixel_values"].shape[0]
    return {
        "step_time_s": step_time,
        "images_per_s": batch_size / step_time,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "final_loss": loss.item(),
    }


def run(options) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not options.tiny else "cpu")
    vision, text = encoder_configs(options.tiny)
    batch_size = options.batch_size or default_batch_size(device, options.tiny)
    sequence_length = 16 if options.tiny else options.sequence_length
    batch = random_batch(vision, text, batch_size, sequence_length, device)
    clip_batch = {key: value for key, value in batch.items() if key != "report_embeds"}
    timing = {"steps": options.steps, "warmup": options.warmup, "device": device}

    torch.manual_seed(0)
    results = {"sista": time_steps(build_sista(vision, text, device), batch, **timing)}
    torch.manual_seed(0)
    results["clip"] = time_steps(build_clip(vision, text, device), clip_batch, **timing)

    if device.type == "cuda":
        device_id = torch.device("cuda", torch.cuda.current_device())
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1, device_id=device_id)
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        results["sista_fsdp2"] = time_steps(shard_with_fsdp2(build_sista(vision, text, device)), batch, **timing)
    finally:
        dist.destroy_process_group()

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "vision": "tiny ViT" if options.tiny else "ViT-B/16, 224 px",
        "text": "tiny BERT" if options.tiny else "BERT-base",
        "batch_size": batch_size,
        "sequence_length": sequence_length,
        "steps": options.steps,
        "warmup": options.warmup,
        "cases": results,
        "sista_clip_step_time_ratio": results["sista"]["step_time_s"] / results["clip"]["step_time_s"],
    }


def format_table(report: dict) -> str:
    lines = [
        f"{report['device']}, {report['vision']} + {report['text']}, batch {report['batch_size']}, "
        f"{report['sequence_length']} tokens, bf16 autocast, median of {report['steps']} steps",
        f"{'case':<12} {'step (s)':>9} {'images/s':>9} {'peak (GiB)':>11}",
    ]
    for name, case in report["cases"].items():
        peak = "-" if case["peak_memory_gib"] is None else f"{case['peak_memory_gib']:.2f}"
        lines.append(f"{name:<12} {case['step_time_s']:>9.4f} {case['images_per_s']:>9.1f} {peak:>11}")
    lines.append(f"SISTA / CLIP step time: {report['sista_clip_step_time_ratio']:.3f}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=None, help="default: 256 on a GPU of 70 GiB or more")
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny encoders on CPU: a smoke run of this script")
    parser.add_argument("--output", default="bench_gpu_scale.json")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    options = parse_args(argv)
    report = run(options)
    print(format_table(report))
    with open(options.output, "w") as file:
        json.dump(report, file, indent=2)
    return report


if __name__ == "__main__":
    main()
