# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The metadata file written beside a prepared dataset (class names, split and label rules, counts)."""

import json
from pathlib import Path


METADATA_FILE = "sista_dataset.json"


def write_dataset_metadata(dataset_dir: str | Path, metadata: dict) -> Path:
    """Writes `metadata` as `sista_dataset.json` into `dataset_dir`; returns its path."""
    path = Path(dataset_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    return path


def read_dataset_metadata(dataset_dir: str | Path) -> dict | None:
    """The `sista_dataset.json` beside a dataset, or `None` when there is none (SynthCXR, any other dataset)."""
    path = Path(dataset_dir) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None
