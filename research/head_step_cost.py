#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Seconds per training step of the study's frozen-encoder heads: the U-Net and SETR-PUP segmentation decoders and the
detection head on the `small` preset's ResNet (48/96/192, 128 px), batch 32, one thread, AdamW.

The heads run in turn, round after round, so that the load of a shared machine hits each alike; the ratios are what
carries over to another load (research/reproduce.py's step budgets times the study's own seconds per step).

    python research/head_step_cost.py --rounds 4
"""

import argparse
import time

import torch
from transformers import BertConfig, ResNetConfig

from configuration_sista import SistaConfig
from modeling_sista import SistaForObjectDetection, SistaForSemanticSegmentation


def head(model_class, **kwargs):
    vision = ResNetConfig(embedding_size=32, hidden_sizes=[48, 96, 192], depths=[1, 1, 1], layer_type="basic")
    text = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = SistaConfig.from_vision_text_configs(
        vision, text, vision_pooling="mean", freeze_encoder=True, decoder_hidden_size=64, **kwargs
    )
    return model_class(config).train()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="Timed rounds (one untimed warm-up round before).")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {
        "segmentation (unet)": head(SistaForSemanticSegmentation, num_labels=1, segmentation_decoder="unet"),
        "segmentation (setr_pup)": head(SistaForSemanticSegmentation, num_labels=1, segmentation_decoder="setr_pup"),
        "detection": head(SistaForObjectDetection, num_labels=11),
    }
    optimizers = {name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
                  for name, model in models.items()}
    pixel_values = torch.randn(args.batch_size, 3, 128, 128)
    masks = (torch.rand(args.batch_size, 128, 128) > 0.9).long()
    boxes = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.5, 0.2, 0.2]])}] * args.batch_size
    seconds = {name: [] for name in models}
    for round_index in range(args.rounds + 1):
        for name, model in models.items():
            start = time.time()
            model(pixel_values, labels=boxes if name == "detection" else masks).loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            if round_index:  # the first round warms up
                seconds[name].append(time.time() - start)
    reference = sorted(seconds["segmentation (setr_pup)"])[args.rounds // 2]
    for name, values in seconds.items():
        median = sorted(values)[args.rounds // 2]
        print(f"{name}: median {median:.2f} s/step ({median / reference:.2f} × SETR-PUP); rounds "
              + ", ".join(f"{value:.2f}" for value in values))


if __name__ == "__main__":
    main()
