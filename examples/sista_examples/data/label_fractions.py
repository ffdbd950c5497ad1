# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Label-fraction subsets (1% / 10% / 100% of a training split): deterministic and nested, the 1% rows among the 10%
rows, which are among the 100%.
"""

import hashlib
import logging
import math
from collections.abc import Sequence

import numpy as np


logger = logging.getLogger(__name__)

RANK_COLUMN = "label_fraction_rank"


def seeded_order_key(seed: int, key: str) -> str:
    """The sort key of `key` under `seed`."""
    # A hash rather than a random permutation: the order of an id depends on nothing but the seed
    # and the id itself, so it is the same on every machine, NumPy version and row order.
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def label_fraction_ranks(image_ids: Sequence[str], seed: int) -> list[int]:
    """Rank of each image in the seeded order that label fractions are taken from (0 = first in)."""
    order = sorted(range(len(image_ids)), key=lambda index: seeded_order_key(seed, image_ids[index]))
    ranks = [0] * len(image_ids)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks


def select_label_fraction(dataset, fraction: float, seed: int = 0, min_samples: int = 1):
    """
    The `max(ceil(fraction * N), min_samples)` rows (at most N) that come first in a seeded order, kept in the
    split's order.

    The order is the dataset's `label_fraction_rank` column when it has one (datasets prepared by
    examples/prepare_datasets.py fix their subsets at preparation time, so `seed` is not used), otherwise a seeded
    hash of each row's `study_id` (or of its index).

    Example:

    ```python
    >>> train = load_from_disk("data/chexpert")["train"]
    >>> train_1pct = select_label_fraction(train, 0.01)
    ```
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must lie in (0, 1], got {fraction}.")
    num_rows = len(dataset)
    if RANK_COLUMN in dataset.column_names:
        # re-ranking here would break the documented 1%/10%/100% subsets shared by every run
        if seed != 0:
            logger.warning(
                f"`label_fraction_seed={seed}` is not used: the dataset's `{RANK_COLUMN}` column fixes the "
                "subsets (prepare the dataset again with another --seed for other subsets)."
            )
        ranks = np.asarray(dataset.with_format("numpy")[RANK_COLUMN][:])
    else:
        keys = list(dataset["study_id"]) if "study_id" in dataset.column_names else [str(i) for i in range(num_rows)]
        ranks = np.asarray(label_fraction_ranks(keys, seed))
    num_kept = min(num_rows, max(math.ceil(fraction * num_rows), min_samples))
    return dataset.select(np.sort(np.argsort(ranks, kind="stable")[:num_kept]))
