#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Add report-similarity embeddings (the `report_embeds` column SIA reads) to a saved dataset, or compare encoders on
how well their similarities find reports with identical labels.

    python examples/report_embeddings.py --dataset_dir data/synthcxr --encoder tfidf
    python examples/report_embeddings.py --dataset_dir data/synthcxr --encoder minilm --output_dir data/synthcxr_minilm
    python examples/report_embeddings.py analyze --encoders tfidf minilm --num_studies 2000

The encoders and the empty-report rule are described in `sista_examples.data.report_embeddings`.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from datasets import DatasetDict, load_from_disk
from transformers import HfArgumentParser

from sista_examples.data.report_embeddings import (
    ENCODERS,
    add_report_embeddings,
    analyze_report_similarity,
    drop_column,
    replace_directory,
)
from sista_examples.data.synthcxr import generate_synthcxr
from sista_examples.utils import setup_logging


logger = logging.getLogger(__name__)


@dataclass
class EmbedArguments:
    """``python examples/report_embeddings.py --dataset_dir DIR [--output_dir OUT] ...``"""

    dataset_dir: str = field(metadata={"help": "A dataset saved with save_to_disk (Dataset or DatasetDict)."})
    output_dir: Optional[str] = field(default=None, metadata={"help": "Where to write; default: replace dataset_dir."})
    encoder: str = field(
        default="tfidf", metadata={"help": "'tfidf', 'minilm', or a checkpoint directory / Hub name."}
    )
    pooling: str = field(default="mean", metadata={"help": "'mean' or 'cls' (models only)."})
    batch_size: int = field(default=64)
    text_column: str = field(default="report")
    max_length: int = field(default=128, metadata={"help": "Token truncation length (models only)."})
    dim: Optional[int] = field(default=None, metadata={"help": "TF-IDF projection size (default 256)."})
    seed: int = field(default=0, metadata={"help": "TF-IDF projection seed."})
    output_column: str = field(default="report_embeds")
    overwrite_column: bool = field(default=False, metadata={"help": "Recompute an existing output_column."})


@dataclass
class AnalyzeArguments:
    """``python examples/report_embeddings.py analyze ...``"""

    dataset_dir: Optional[str] = field(
        default=None, metadata={"help": "A saved dataset with report and labels columns; default: generate SynthCXR."}
    )
    split: str = field(default="pretrain", metadata={"help": "Split of a DatasetDict to analyse."})
    num_studies: int = field(default=2000, metadata={"help": "Studies to analyse (the first N)."})
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS), metadata={"help": "Encoders to compare."})
    min_precision: float = field(default=0.95, metadata={"help": "Precision the suggested threshold must reach."})
    output_json: str = field(default="docs/results/report_similarity.json")
    output_png: str = field(default="docs/images/report_similarity.png")


def _embed_main(args):
    (arguments,) = HfArgumentParser(EmbedArguments).parse_args_into_dataclasses(args=args)
    dataset = load_from_disk(arguments.dataset_dir)
    if arguments.overwrite_column:
        dataset = drop_column(dataset, arguments.output_column)
    dataset = add_report_embeddings(
        dataset,
        encoder=arguments.encoder,
        pooling=arguments.pooling,
        batch_size=arguments.batch_size,
        text_column=arguments.text_column,
        max_length=arguments.max_length,
        dim=arguments.dim,
        seed=arguments.seed,
        output_column=arguments.output_column,
    )
    target = Path(arguments.output_dir or arguments.dataset_dir)
    replace_directory(dataset, target)
    logger.info(f"Wrote {arguments.output_column!r} ({arguments.encoder}) to {target}.")


def _analyze_main(args):
    (arguments,) = HfArgumentParser(AnalyzeArguments).parse_args_into_dataclasses(args=args)
    if arguments.dataset_dir:
        dataset = load_from_disk(arguments.dataset_dir)
        dataset = dataset[arguments.split] if isinstance(dataset, DatasetDict) else dataset
        dataset = dataset.select(range(min(arguments.num_studies, len(dataset))))
    else:
        # Images are not analysed: the smallest size keeps generation quick.
        dataset = generate_synthcxr(
            num_pretrain=arguments.num_studies, num_train=0, num_validation=0, num_test=0, image_size=32
        )["pretrain"]
    dataset = dataset.select_columns(["report", "labels"])
    analyze_report_similarity(
        dataset["report"],
        dataset["labels"],
        encoders=arguments.encoders,
        output_json=arguments.output_json,
        output_png=arguments.output_png,
        min_precision=arguments.min_precision,
    )


def main(args: Optional[list] = None):
    setup_logging()
    args = sys.argv[1:] if args is None else list(args)
    if args and args[0] == "analyze":
        _analyze_main(args[1:])
    else:
        _embed_main(args)


if __name__ == "__main__":
    main()
