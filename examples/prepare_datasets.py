#!/usr/bin/env python
# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Prepare the real chest X-ray datasets for SISTA as `datasets.DatasetDict`s on disk.

One sub-command per dataset reads the files as the provider distributes them, resizes every image
to the working size on the way (in `--num_proc` processes; the dataset is never held in memory)
and writes sharded Arrow files plus two files beside them: `sista_dataset.json` (class names,
split and label rules, row and skip counts) and `skipped.csv` (every row left out, with its reason).

    python examples/prepare_datasets.py mimic_cxr --data_dir mimic-cxr-jpg/2.1.0 --output_dir data/mimic_cxr \
        --image_size 512 --num_proc 8

Datasets: mimic_cxr, chexpert, rsna_pneumonia, siim_pneumothorax, covidx, object_cxr, and the benchmarks
chexpert_5x200 and ms_cxr, which also write the list of their images that `--exclude_images` keeps out of the
training preparations. The files each one needs, its splits, label policy and output columns are documented in
docs/data_real.md.
"""

import argparse
import logging
import sys
from dataclasses import fields

from datasets import DatasetDict
from transformers import HfArgumentParser

from sista_examples.data.prepare import DATASETS, PrepareArguments
from sista_examples.utils import LOG_FORMAT


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> tuple[str, PrepareArguments]:
    """Parse `<dataset> --data_dir ... --output_dir ...` into the dataset's name and arguments dataclass."""
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0], epilog="Details per dataset: docs/data_real.md"
    )
    subparsers = parser.add_subparsers(dest="dataset", required=True, parser_class=HfArgumentParser)
    for name, (arguments_class, _, help_text) in DATASETS.items():
        subparsers.add_parser(name, dataclass_types=[arguments_class], help=help_text, description=help_text)
    namespace = parser.parse_args(argv)
    arguments_class = DATASETS[namespace.dataset][0]
    values = {item.name: getattr(namespace, item.name) for item in fields(arguments_class)}
    return namespace.dataset, arguments_class(**values)


def main(argv=None) -> DatasetDict:
    logging.basicConfig(
        format=LOG_FORMAT,
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=logging.INFO,
    )
    name, args = parse_args(argv)
    logger.info("Preparing %s with %s", name, args)
    return DATASETS[name][1](args)


if __name__ == "__main__":
    main()
