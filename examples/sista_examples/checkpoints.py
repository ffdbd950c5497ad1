# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""The one rule for "is this folder a SISTA checkpoint?", and loading one for evaluation."""

import json
import logging
import os
from pathlib import Path

import torch

from configuration_sista import SistaConfig


logger = logging.getLogger(__name__)

SISTA_MODEL_TYPE = SistaConfig.model_type


def read_sista_config(model_dir: str | os.PathLike, argument: str = "--model_name_or_path") -> dict:
    """
    The `config.json` of a SISTA checkpoint folder (a `SistaModel` or a head saved with `save_pretrained`); a
    `ValueError` naming `argument` and `model_dir` when the folder is missing, holds no config.json, or holds
    another model.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError(
            f"{argument} {str(model_dir)!r} is not a folder: pass the output folder of examples/pretrain.py (or of "
            "`SistaModel.save_pretrained`)."
        )
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{argument} {str(model_dir)!r} is not a SISTA checkpoint: it holds no config.json.")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type != SISTA_MODEL_TYPE:
        raise ValueError(
            f"{argument} {str(model_dir)!r} is not a SISTA checkpoint: it holds a {model_type!r} model, expected a "
            f"{SISTA_MODEL_TYPE!r} checkpoint (saved with save_pretrained); a {model_type!r} checkpoint, not a "
            "SISTA one, cannot be used here."
        )
    return config


def image_size_of(size) -> tuple[int, int] | None:
    """
    `(height, width)` of an image processor's `size`: `{"height", "width"}`, `{"shortest_edge"}` (square), a side in
    pixels, or transformers' `SizeDict`; `None` when it gives no side.
    """
    if isinstance(size, int):
        return size, size
    if not isinstance(size, dict):
        size = {key: getattr(size, key, None) for key in ("height", "width", "shortest_edge")}
    height = size.get("height") or size.get("shortest_edge")
    width = size.get("width") or size.get("shortest_edge")
    return (int(height), int(width)) if height and width else None


def saved_image_processor(model_dir: str | os.PathLike) -> dict | None:
    """
    The image processor settings saved in a checkpoint folder: those of a whole `SistaProcessor`
    (`processor_config.json`), else of an image processor saved alone (`preprocessor_config.json`, as the fine-tuning
    heads save it); `None` when the folder holds neither.
    """
    path = Path(model_dir)
    if (path / "processor_config.json").is_file():
        return json.loads((path / "processor_config.json").read_text()).get("image_processor")
    if (path / "preprocessor_config.json").is_file():
        return json.loads((path / "preprocessor_config.json").read_text())
    return None


def read_training_image_size(model_dir: str | os.PathLike, argument: str = "--model_name_or_path") -> int | None:
    """
    The one reader of the image side a SISTA checkpoint was trained at: its saved image processor's size (the one
    place pre-training records it), else the vision config's `image_size` (a checkpoint saved without a processor;
    ResNet and ConvNeXt configs have none, then `None`).
    """
    config = read_sista_config(model_dir, argument)
    size = image_size_of((saved_image_processor(model_dir) or {}).get("size"))
    if size is not None:
        return size[0]
    return config.get("vision_config", {}).get("image_size")


def check_sista_checkpoint(model_dir: str | os.PathLike) -> dict:
    """`read_sista_config`, and a `ValueError` when the folder holds no processor to evaluate with."""
    config = read_sista_config(model_dir, argument="`model_name_or_path`")
    if not (Path(model_dir) / "processor_config.json").is_file():
        raise ValueError(
            f"{str(model_dir)!r} holds a SISTA model but no processor (processor_config.json): save the "
            "SistaProcessor beside the model with `processor.save_pretrained(model_dir)`."
        )
    return config


def load_sista(model_dir: str | os.PathLike, device: str | torch.device | None = None):
    """
    Loads a SISTA checkpoint folder as `(model, processor)`, the model in eval mode on `device`.

    The installed `modeling_sista`/`processing_sista` are used when importable (`pip install -e .`); otherwise the
    copies saved in the checkpoint are loaded as remote code.
    """
    check_sista_checkpoint(model_dir)
    try:
        from transformers import AutoTokenizer

        from modeling_sista import SistaModel, text_max_positions
        from processing_sista import SistaImageProcessor, SistaProcessor

        model = SistaModel.from_pretrained(model_dir)
        # built from its parts: `SistaProcessor.from_pretrained` resolves the image processor through its auto_map,
        # which asks for trust_remote_code even though the class is importable here
        # (and AutoTokenizer would ask for it to read config.json, unless given the config)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, config=model.config, trust_remote_code=False)
        processor = SistaProcessor(
            SistaImageProcessor.from_pretrained(model_dir),
            tokenizer,
            model_max_length=text_max_positions(model.config.text_config),
        )
    except ImportError:
        from transformers import AutoModel, AutoProcessor

        logger.info("modeling_sista is not importable: loading the code saved in %s (trust_remote_code).", model_dir)
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor
