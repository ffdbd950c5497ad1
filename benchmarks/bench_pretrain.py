#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Pre-training throughput on this machine (numbers to report, not a test).

1. model: training samples/s of the demo configuration (`--model_preset small`, 128 px, batch 32), forward +
   backward + AdamW, on SynthCXR reports;
2. model: seconds per step of the paper-size model (ViT-B/16 + BERT-base, 224 px, batch 8);
3. data: images/s of one loader process (decode + augmentation + image processor + tokenising collator) for the demo
   configuration, next to the model's consumption rate: the loader is not the bottleneck when one worker delivers
   at least 2x what the model consumes.

    python benchmarks/bench_pretrain.py [--skip_base] [--steps 10]

Timings are wall-clock medians; on a shared machine they are noisy, so the load average is printed with them.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
from transformers import BertConfig, ViTConfig

from configuration_sista import SistaConfig
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor
from sista_examples.data.synthcxr import generate_synthcxr
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import PretrainingDataset, normalize_pixel_values
from sista_examples.training.pretraining import PretrainingModelArguments, build_model
from sista_examples.training.run_config import resolve_run_config
from sista_examples.training.tokenizer import train_report_tokenizer


def demo_data(num_samples: int, image_size: int = 128):
    with tempfile.TemporaryDirectory() as cache_dir:
        dataset = generate_synthcxr(
            num_pretrain=num_samples, num_train=0, num_validation=0, num_test=0, image_size=image_size, seed=0,
            cache_dir=cache_dir,
        )["pretrain"]  # fmt: skip
        return dataset.flatten_indices()  # detach from the temporary cache


def train_step_seconds(model: SistaModel, batch: dict, steps: int, warmup: int = 2) -> float:
    """Median wall time of forward + backward + AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def demo_model_and_batch(dataset, batch_size: int, objective: str = "sista"):
    tokenizer = train_report_tokenizer(dataset["report"], vocab_size=3000)
    run_config, _ = resolve_run_config(PretrainingModelArguments(model_preset="small", objective=objective))
    model = build_model(run_config, tokenizer)
    image_processor = SistaImageProcessor(size=128)
    rows = PretrainingDataset(dataset, image_processor).__getitems__(list(range(batch_size)))
    batch = SistaDataCollator(tokenizer, max_length=128)(rows)
    batch.pop("return_loss")
    batch["pixel_values"] = normalize_pixel_values(
        batch["pixel_values"], image_processor.image_mean, image_processor.image_std, 3
    )
    batch["report_embeds"] = torch.nn.functional.normalize(torch.randn(batch_size, 256), dim=-1)
    return model, batch, tokenizer


def loader_images_per_second(dataset, tokenizer, batch_size: int = 32, num_batches: int = 8) -> float:
    """One process, as one DataLoader worker runs it: decode + augment + process + collate."""
    pipeline = PretrainingDataset(dataset, SistaImageProcessor(size=128), XRayAugmentation(), seed=0)
    collator = SistaDataCollator(tokenizer, max_length=128)
    collator(pipeline.__getitems__(list(range(batch_size))))  # warm-up
    start = time.perf_counter()
    for index in range(num_batches):
        indices = [(index * batch_size + offset) % len(dataset) for offset in range(batch_size)]
        collator(pipeline.__getitems__(indices))
    return num_batches * batch_size / (time.perf_counter() - start)


def base_model_step_seconds(steps: int) -> float:
    vision = ViTConfig(image_size=224, patch_size=16)  # ViT-B/16 sizes by default
    text = BertConfig()  # BERT-base sizes by default
    special_ids = [0, 100, 101, 102, 103]  # BERT-base's [PAD], [UNK], [CLS], [SEP], [MASK]
    config = SistaConfig.from_vision_text_configs(vision, text, projection_dim=512, sta_ignore_token_ids=special_ids)
    model = SistaModel(config)
    generator = torch.Generator().manual_seed(0)
    batch_size, length = 8, 96
    batch = {
        "input_ids": torch.randint(1000, 30000, (batch_size, length), generator=generator),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "pixel_values": torch.randn(batch_size, 3, 224, 224, generator=generator),
        "report_embeds": torch.nn.functional.normalize(torch.randn(batch_size, 256, generator=generator), dim=-1),
    }
    return train_step_seconds(model, batch, steps=steps, warmup=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the demo model")
    parser.add_argument("--base_steps", type=int, default=3, help="timed steps of the base model")
    parser.add_argument("--skip_base", action="store_true", help="skip the ViT-B/16 + BERT-base measurement")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")

    dataset = demo_data(512)
    batch_size = 32
    model, batch, tokenizer = demo_model_and_batch(dataset, batch_size)
    seconds = train_step_seconds(model, batch, steps=args.steps)
    model_rate = batch_size / seconds
    print(f"demo model (small preset, 128 px, batch {batch_size}, {batch['input_ids'].shape[1]} tokens): "
          f"{seconds:.3f} s/step, {model_rate:.1f} samples/s")

    loader_rate = loader_images_per_second(dataset, tokenizer, batch_size)
    print(f"data pipeline, one process (decode + augment + processor + collate): {loader_rate:.1f} images/s "
          f"= {loader_rate / model_rate:.1f}x the model's {model_rate:.1f} samples/s (target >= 2x)")

    if not args.skip_base:
        seconds = base_model_step_seconds(args.base_steps)
        print(f"ViT-B/16 + BERT-base, 224 px, batch 8, 96 tokens: {seconds:.2f} s/step ({8 / seconds:.2f} samples/s)")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
