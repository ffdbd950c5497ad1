#!/usr/bin/env python
"""
Loads a SISTA release folder the way a Hub user does, through the Auto classes and `trust_remote_code=True`, and
runs it on fixed inputs. Meant to run in a clean interpreter that has transformers but not this project:

    python -I examples/sista_examples/hub/load_check.py RELEASE_FOLDER [RELEASE_FOLDER ...] --outputs outputs.safetensors ...

`-I` keeps the current folder, the script's folder and PYTHONPATH off the import path; on top of that the project's
module names are blocked, so an editable install of the project cannot stand in for the folder's own code. Every
class that comes back must live in `transformers_modules` (the copy of the folder's code).

Prints one JSON line per folder: the transformers version and the class of every object loaded. With `--outputs`
(one file per folder), writes the processor's outputs on fixed inputs and every model's outputs on them
(`{auto_class}.{field}`, and `pipeline.scores` for the zero-shot pipeline) to a safetensors file, so that a caller
can compare them with the original model's. Several folders in one call share one interpreter start.
"""

import argparse
import importlib.abc
import inspect
import json
import sys


PROJECT_MODULES = ("configuration_sista", "modeling_sista", "processing_sista")
CHECK_TEXTS = ["small left pleural effusion .", "no acute cardiopulmonary process ."]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


class BlockProjectModules(importlib.abc.MetaPathFinder):
    """Fails any import of the project's flat modules by their top-level name."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in PROJECT_MODULES:
            raise ImportError(f"{fullname} must come from the release folder (transformers_modules), not the project")
        return None


def check_images(image_size: int):
    """Two fixed grayscale 8-bit images, not square, so that the processor's resizing and padding take part."""
    import numpy as np

    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, size=(image_size + 9, image_size + 3), dtype=np.uint8) for _ in range(2)]


def check_folder(folder: str, outputs: str | None) -> dict:
    """Loads one release folder through the Auto classes; returns the summary, writes the outputs if asked."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer

    load = {"trust_remote_code": True}
    config = AutoConfig.from_pretrained(folder, **load)
    processor = AutoProcessor.from_pretrained(folder, **load)
    image_processor = AutoImageProcessor.from_pretrained(folder, **load)
    tokenizer = AutoTokenizer.from_pretrained(folder, **load)
    loaded = {"AutoConfig": config, "AutoProcessor": processor, "AutoImageProcessor": image_processor}

    auto_classes = sorted(key for key in (config.auto_map or {}) if key.startswith("AutoModel"))
    if not auto_classes:
        raise RuntimeError(f"config.json's auto_map has no AutoModel* entry: {config.auto_map}")
    models = {name: getattr(transformers, name).from_pretrained(folder, **load).eval() for name in auto_classes}
    loaded |= models

    # the training size lives in the saved image processor (ResNet/ConvNeXt configs have no image_size)
    size = image_processor.size["height"]
    inputs = processor(text=CHECK_TEXTS, images=check_images(size), return_tensors="pt", padding=True)
    tensors = {f"processor.{key}": value for key, value in inputs.items()}
    with torch.no_grad():
        for auto_class_name, model in models.items():
            accepted = inspect.signature(model.forward).parameters
            model_inputs = {key: inputs[key] for key in MODEL_INPUTS if key in accepted and key in inputs}
            if "output_token_patch_weights" in accepted:
                model_inputs["output_token_patch_weights"] = True
            for key, value in model(**model_inputs).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{auto_class_name}.{key}"] = value.contiguous()

    if "AutoModelForZeroShotImageClassification" in models:
        from PIL import Image
        from transformers import pipeline

        classifier = pipeline("zero-shot-image-classification", model=folder, **load)
        image = Image.fromarray(check_images(size)[0])
        predictions = classifier(image, candidate_labels=CHECK_TEXTS, hypothesis_template="{}")
        scores = {prediction["label"]: prediction["score"] for prediction in predictions}
        tensors["pipeline.scores"] = torch.tensor([scores[label] for label in CHECK_TEXTS])
        loaded["pipeline.model"] = classifier.model

    foreign = {
        name: type(obj).__module__
        for name, obj in loaded.items()
        if not type(obj).__module__.startswith("transformers_modules.")
    }
    if foreign:
        raise RuntimeError(f"classes not loaded from the release folder's code: {foreign}")
    if outputs:
        from safetensors.torch import save_file

        save_file(tensors, outputs)
    return {
        "folder": folder,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "classes": {name: f"{type(obj).__module__}.{type(obj).__name__}" for name, obj in loaded.items()},
        "tokenizer": type(tokenizer).__name__,
        "outputs": sorted(tensors),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Load SISTA release folders through the Auto classes.")
    parser.add_argument("folders", nargs="+", help="release folders, checked one after the other")
    parser.add_argument("--outputs", nargs="*", default=None, help="one safetensors file per folder for the outputs")
    parser.add_argument("--num_threads", type=int, default=1, help="torch threads (fixed, for reproducible sums)")
    args = parser.parse_args(argv)
    if args.outputs is not None and len(args.outputs) != len(args.folders):
        parser.error(f"--outputs needs one file per folder: {len(args.folders)} folders, {len(args.outputs)} files")

    sys.meta_path.insert(0, BlockProjectModules())
    import torch

    torch.set_num_threads(args.num_threads)
    for index, folder in enumerate(args.folders):
        print(json.dumps(check_folder(folder, args.outputs[index] if args.outputs else None)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
