#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Generate SynthCXR (synthetic chest radiographs with reports and full ground truth) and save it with `save_to_disk`.

    python examples/generate_synthcxr.py --output_dir data/synthcxr --image_size 128 --num_pretrain 8000 \
        --num_train 1000 --num_validation 250 --num_test 500 --num_proc 2 \
        --plot_examples docs/images/synthcxr_grid.png

See docs/data_synthcxr.md for what the generator draws and writes.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from transformers import HfArgumentParser

from sista_examples.data.synthcxr import generate_synthcxr, plot_examples, save_synthcxr
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)


@dataclass
class SynthCXRArguments:
    """Arguments of ``python examples/generate_synthcxr.py``."""

    output_dir: str = field(
        default="data/synthcxr", metadata={"help": "Where to save the DatasetDict (save_to_disk)."}
    )
    image_size: int = field(default=224, metadata={"help": "Image height and width in pixels (>= 32)."})
    num_pretrain: int = field(default=10000, metadata={"help": "Studies in the `pretrain` split (image + report)."})
    num_train: int = field(default=2000, metadata={"help": "Studies in the labelled `train` split."})
    num_validation: int = field(default=500, metadata={"help": "Studies in the labelled `validation` split."})
    num_test: int = field(default=1000, metadata={"help": "Studies in the labelled `test` split."})
    seed: int = field(default=0, metadata={"help": "Dataset seed."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Worker processes (default: one)."})
    plot_examples: Optional[str] = field(
        default=None, metadata={"help": "If set, also write a PNG grid of examples to this path."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output_dir."})


def main(args: Optional[list] = None):
    setup_logging()
    (arguments,) = HfArgumentParser(SynthCXRArguments).parse_args_into_dataclasses(args=args)
    if Path(arguments.output_dir).exists() and not arguments.overwrite_output_dir:
        raise ValueError(
            f"`--output_dir` {arguments.output_dir!r} already exists; pass --overwrite_output_dir to replace it."
        )
    generation = {
        "num_pretrain": arguments.num_pretrain,
        "num_train": arguments.num_train,
        "num_validation": arguments.num_validation,
        "num_test": arguments.num_test,
        "image_size": arguments.image_size,
        "seed": arguments.seed,
    }
    dataset = generate_synthcxr(**generation, num_proc=arguments.num_proc)
    save_synthcxr(dataset, arguments.output_dir, overwrite=arguments.overwrite_output_dir, generation=generation)
    for split, data in dataset.items():
        labels = np.asarray(data["labels"])
        logger.info(f"{split}: {len(data)} studies, {np.mean(labels.sum(1) == 0):.1%} normal.")
    if arguments.plot_examples:
        plot_examples(
            dataset["train"] if "train" in dataset else next(iter(dataset.values())), arguments.plot_examples
        )


if __name__ == "__main__":
    main()
