# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The metadata file written beside a prepared dataset (class names, split and label rules, counts, the report
embeddings and their SIA threshold), and the one way to rewrite a saved dataset without losing what lies beside it."""

import json
import shutil
import tempfile
from pathlib import Path


METADATA_FILE = "sista_dataset.json"
# Written by `save_to_disk` itself; everything else in a dataset folder (sista_dataset.json, skipped.csv, ...) is
# carried over when the dataset is rewritten.
DATASETS_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")


def write_dataset_metadata(dataset_dir: str | Path, metadata: dict) -> Path:
    """Writes `metadata` as `sista_dataset.json` into `dataset_dir`; returns its path."""
    path = Path(dataset_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    return path


def read_dataset_metadata(dataset_dir: str | Path) -> dict | None:
    """The `sista_dataset.json` beside a dataset, or `None` when there is none (SynthCXR, any other dataset)."""
    path = Path(dataset_dir) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def update_dataset_metadata(dataset_dir: str | Path, **entries) -> Path:
    """Sets `entries` in the `sista_dataset.json` of `dataset_dir` (created when there is none), keeping the rest;
    an entry whose value is `None` is removed."""
    metadata = {**(read_dataset_metadata(dataset_dir) or {}), **entries}
    return write_dataset_metadata(dataset_dir, {key: value for key, value in metadata.items() if value is not None})


def _side_entries(dataset_dir: Path, dataset) -> list[Path]:
    """What lies in `dataset_dir` besides the saved `dataset` itself (its split folders and datasets' own files)."""
    splits = set(dataset) if hasattr(dataset, "keys") else set()
    return [
        entry
        for entry in sorted(dataset_dir.iterdir())
        if entry.name not in DATASETS_FILES
        and entry.name not in splits
        and not entry.name.startswith(("data-", "cache-", "."))
    ]


def save_dataset(dataset, target_dir: str | Path, source_dir: str | Path | None = None, **metadata_entries) -> Path:
    """
    Saves `dataset` (`Dataset` or `DatasetDict`) to `target_dir` with `save_to_disk`, keeping what lay beside the
    dataset it came from: the files and folders of `source_dir` (default: `target_dir`, rewritten in place) that
    `save_to_disk` does not write, `sista_dataset.json` and `skipped.csv` among them, with `metadata_entries` set in
    `sista_dataset.json`. Written beside `target_dir` first and swapped in, so a failed write leaves it intact.
    """
    target_dir = Path(target_dir)
    source_dir = Path(source_dir) if source_dir is not None else target_dir
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}-", dir=target_dir.parent))
    try:
        dataset.save_to_disk(str(staging))
        if source_dir.is_dir():
            for entry in _side_entries(source_dir, dataset):
                if entry.is_dir():
                    shutil.copytree(entry, staging / entry.name)
                else:
                    shutil.copy2(entry, staging / entry.name)
        if metadata_entries:
            update_dataset_metadata(staging, **metadata_entries)
        if target_dir.exists():
            backup = target_dir.with_name(f".{target_dir.name}-old")
            target_dir.rename(backup)
            staging.rename(target_dir)
            shutil.rmtree(backup)
        else:
            staging.rename(target_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target_dir
