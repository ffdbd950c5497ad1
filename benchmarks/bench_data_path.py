#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""How many loader workers a GPU needs: images/s of one worker against the GPU's training step.

A small SynthCXR pre-training split is generated at 512 px and saved with `save_to_disk` as PNG and as JPEG
(quality 95), the two `--image_format`s of `examples/prepare_datasets.py`, then read back. One process, as one
DataLoader worker runs it, turns batches of it into model inputs at 224 px:

* `one warp, uint8` (what pre-training does): decode (JPEG at 1/2 scale), augmentation composed with the resize into
  one warp to 224 px, brightness/contrast on 8 bits, tokenising collator; 1-channel uint8 batches;
* `two warps, float32` (the former path, for comparison): augmentation warped at the stored 512 px, the image
  processor's resize and normalisation, 3-channel float32 batches.

A worker's batch also crosses to the training process (shared memory) and is pinned and copied to the GPU; the
bytes per batch are printed for both. The GPU side is an argument: `--gpu_step_seconds` at `--gpu_batch_size` (the
default, 0.1698 s at batch 256, is SISTA's ViT-B/16 + BERT-base bf16 step on one H200, from
`benchmarks/bench_gpu_scale.py`). The number of workers a GPU needs is its images/s over one worker's, rounded up,
plus `--headroom` (default 25%) for decode-time spread between images and for the training process's own work.

    python benchmarks/bench_data_path.py [--num_images 128] [--batch_size 32] [--num_batches 4]
        [--gpu_step_seconds 0.1698 --gpu_batch_size 256]
"""

import argparse
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset, Features, Image, Value, load_from_disk

from processing_sista import SistaImageProcessor
from sista_examples.data.prepare import encode_image
from sista_examples.data.synthcxr import generate_synthcxr
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import PretrainingDataset
from sista_examples.training.tokenizer import train_report_tokenizer


def prepared_datasets(directory: str, num_images: int, stored_size: int) -> dict:
    """SynthCXR's pre-training split at `stored_size` px, saved as PNG and as JPEG and read back as prepared
    datasets are."""
    generated = generate_synthcxr(
        num_pretrain=num_images, num_train=0, num_validation=0, num_test=0, image_size=stored_size, seed=0,
        cache_dir=os.path.join(directory, "cache"),
    )["pretrain"]  # fmt: skip
    features = Features({"image": Image(), "report": Value("string")})
    prepared = {}
    for image_format in ("png", "jpeg"):
        images = [encode_image(image, image_format) for image in generated["image"]]
        path = os.path.join(directory, image_format)
        Dataset.from_dict({"image": images, "report": generated["report"]}, features=features).save_to_disk(path)
        prepared[image_format] = load_from_disk(path)
    return prepared


def two_warp_features(dataset, indices, image_processor, augmentation, seed: int = 0) -> list[dict]:
    """The former path: the augmentation at the stored size, then the processor's resize and normalisation."""
    batch = dataset[list(indices)]
    rngs = [np.random.default_rng([seed, 0, int(index)]) for index in indices]
    images = [augmentation.geometric(image, rng) for image, rng in zip(batch["image"], rngs)]
    pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
    return [
        {
            "pixel_values": augmentation.photometric(image, image_processor.image_mean, image_processor.image_std, rng),
            "report": report,
        }
        for image, rng, report in zip(pixel_values, rngs, batch["report"])
    ]


def images_per_second(make_batch, num_images: int, batch_size: int, num_batches: int, repeats: int = 3) -> float:
    """Median over `repeats` of `num_batches` batches; sample indices run through the dataset."""
    make_batch(list(range(batch_size)))  # warm-up
    rates = []
    for repeat in range(repeats):
        start = time.perf_counter()
        for index in range(num_batches):
            first = (repeat * num_batches + index) * batch_size
            make_batch([(first + offset) % num_images for offset in range(batch_size)])
        rates.append(num_batches * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def workers_needed(gpu_images_per_second: float, worker_images_per_second: float, headroom: float) -> int:
    return math.ceil(gpu_images_per_second * (1 + headroom) / worker_images_per_second)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=128, help="images in the prepared dataset")
    parser.add_argument("--stored_size", type=int, default=512, help="side of the prepared images")
    parser.add_argument("--image_size", type=int, default=224, help="the model's input side")
    parser.add_argument("--batch_size", type=int, default=32, help="images per timed loader batch")
    parser.add_argument("--num_batches", type=int, default=4, help="batches per timed repeat")
    parser.add_argument("--gpu_step_seconds", type=float, default=0.1698, help="the GPU's training step (s)")
    parser.add_argument("--gpu_batch_size", type=int, default=256, help="per-GPU batch of that step")
    parser.add_argument("--headroom", type=float, default=0.25, help="spare loader capacity asked for")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker = one core
    print(f"torch {torch.__version__}, 1 thread, load average {tuple(round(x, 2) for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        prepared = prepared_datasets(directory, args.num_images, args.stored_size)
        elapsed = time.perf_counter() - start
        print(f"prepared {args.num_images} SynthCXR images at {args.stored_size} px (PNG, JPEG) in {elapsed:.0f} s")
        tokenizer = train_report_tokenizer(prepared["png"]["report"], vocab_size=3000)
        image_processor = SistaImageProcessor(size=args.image_size)
        augmentation = XRayAugmentation()
        collator = SistaDataCollator(tokenizer, max_length=128, pad_to_multiple_of=8)

        rates = {}
        for image_format, dataset in prepared.items():
            one_warp = PretrainingDataset(dataset, image_processor, augmentation, seed=0, report_embeds_column=None)
            rates[("one warp, uint8", image_format)] = images_per_second(
                lambda indices: collator(one_warp.__getitems__(indices)), len(dataset), args.batch_size,
                args.num_batches,
            )  # fmt: skip
            rates[("two warps, float32", image_format)] = images_per_second(
                lambda indices: collator(two_warp_features(dataset, indices, image_processor, augmentation)),
                len(dataset), args.batch_size, args.num_batches,
            )  # fmt: skip
    batch_bytes = {
        "one warp, uint8": args.gpu_batch_size * args.image_size**2,
        "two warps, float32": args.gpu_batch_size * 3 * args.image_size**2 * 4,
    }

    gpu_rate = args.gpu_batch_size / args.gpu_step_seconds
    print(
        f"GPU: {args.gpu_step_seconds} s per step at batch {args.gpu_batch_size} = {gpu_rate:.0f} images/s "
        f"(headroom {args.headroom:.0%})"
    )
    print("| path | stored as | images/s per worker | ms per image | MiB per GPU batch | workers per GPU |")
    print("|---|---|---:|---:|---:|---:|")
    for (path, image_format), rate in rates.items():
        print(
            f"| {path} | {image_format.upper()} {args.stored_size} px | {rate:.0f} | {1000 / rate:.2f} | "
            f"{batch_bytes[path] / 2**20:.0f} | {workers_needed(gpu_rate, rate, args.headroom)} |"
        )


if __name__ == "__main__":
    main()
