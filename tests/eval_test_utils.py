"""Shared builders of the zero-shot, retrieval and grounding tests: a saved tiny SISTA and a saved tiny SynthCXR."""

import json
from functools import lru_cache
from pathlib import Path

import torch

from conftest import build_tiny_tokenizer, tiny_sista_config
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor, SistaProcessor


NUM_TEST_STUDIES = 20
IMAGE_SIZE = 32


def save_tiny_sista(directory: Path, seed: int = 0) -> Path:
    """A random tiny SISTA (32-px images, patch 8, 4x4 grid) saved with its processor, as pretrain.py leaves it."""
    torch.manual_seed(seed)
    model = SistaModel(tiny_sista_config()).eval()
    processor = SistaProcessor(SistaImageProcessor(size=IMAGE_SIZE), build_tiny_tokenizer())
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@lru_cache(maxsize=1)
def tiny_synthcxr_test_split():
    from sista_examples.data import synthcxr

    return synthcxr.generate_synthcxr(
        num_pretrain=0, num_train=0, num_validation=0, num_test=NUM_TEST_STUDIES, image_size=IMAGE_SIZE, seed=0
    )


def save_tiny_synthcxr(directory: Path) -> Path:
    tiny_synthcxr_test_split().save_to_disk(str(directory))
    return directory


def read_results(output_dir: Path, task: str) -> dict:
    assert (output_dir / f"{task}_results.md").read_text().startswith("## ")
    return json.loads((output_dir / f"{task}_results.json").read_text())
