#!/usr/bin/env python
"""
Checks that SISTA releases built with this project's transformers load, and compute the same outputs, under
another transformers installation (another venv's interpreter):

    python tests/compat/check_transformers_version.py --python /tmp/sista-compat-5.20.0/bin/python

Builds the releases (pre-trained model and each task head, tiny random weights) with the current environment,
computes their reference outputs here, loads every release in a clean interpreter of `--python` through the Auto
classes with `trust_remote_code=True` (`examples/sista_examples/hub/load_check.py`) and compares. Prints one line per release and
exits 0 when all load and match (`torch.equal`, or within `--atol` when the two transformers differ in kernels).
tests/compat/check_transformers_version.sh VERSION creates the venv and runs this.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertTokenizer, ViTConfig

import modeling_sista
from configuration_sista import SistaConfig
from processing_sista import SistaImageProcessor, SistaProcessor
from sista_examples.hub.load_check import CHECK_TEXTS, MODEL_INPUTS, check_images
from sista_examples.hub.release import ReleaseError, check_release_folders, prepare_release_folder


IMAGE_SIZE = 32
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
    set(" ".join(CHECK_TEXTS).split()) | {"nodule", "normal", "right", "opacity"}
)
AUTO_CLASSES = {
    "SistaModel": ("AutoModel", "AutoModelForZeroShotImageClassification"),
    "SistaForImageClassification": ("AutoModelForImageClassification",),
    "SistaForSemanticSegmentation": ("AutoModelForSemanticSegmentation",),
    "SistaForObjectDetection": ("AutoModelForObjectDetection",),
}


def tiny_config(**kwargs) -> SistaConfig:
    vision = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    text = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=len(VOCAB),
        max_position_embeddings=64,
    )
    return SistaConfig.from_vision_text_configs(
        vision, text, projection_dim=16, sta_ignore_token_ids=[0, 1, 2, 3, 4], **kwargs
    )


def build_releases(root: Path) -> list[tuple[str, Path, dict[str, torch.Tensor]]]:
    """`(class_name, release_folder, reference_outputs)` for the base model and every head modeling_sista has."""
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(VOCAB)}, do_lower_case=True)
    processor = SistaProcessor(SistaImageProcessor(size=IMAGE_SIZE), tokenizer)
    inputs = processor(text=CHECK_TEXTS, images=check_images(IMAGE_SIZE), return_tensors="pt", padding=True)
    torch.set_num_threads(1)
    releases = []
    for seed, class_name in enumerate(AUTO_CLASSES):
        model_class = getattr(modeling_sista, class_name, None)
        if model_class is None:
            print(f"{class_name}: not in modeling_sista, skipped")
            continue
        torch.manual_seed(seed)
        config = tiny_config() if class_name == "SistaModel" else tiny_config(num_labels=3)
        model = model_class(config).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        saved = root / class_name
        model.save_pretrained(saved)
        processor.save_pretrained(saved)
        release = prepare_release_folder(saved, root / f"{class_name}-release", results=[])

        accepted = set(model.forward.__code__.co_varnames)
        model_inputs = {key: inputs[key] for key in MODEL_INPUTS if key in accepted and key in inputs}
        if "output_token_patch_weights" in accepted:
            model_inputs["output_token_patch_weights"] = True
        reference = {f"processor.{key}": value for key, value in inputs.items()}
        with torch.no_grad():
            outputs = model(**model_inputs)
        for auto_class in AUTO_CLASSES[class_name]:
            reference |= {f"{auto_class}.{key}": value for key, value in outputs.items() if torch.is_tensor(value)}
        releases.append((class_name, release, reference))
    return releases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--python", required=True, help="interpreter of the transformers installation to check")
    parser.add_argument("--atol", type=float, default=1e-5, help="tolerance when outputs are not bit-identical")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sista-compat-") as scratch:
        releases = build_releases(Path(scratch))
        output_files = [Path(scratch) / f"{class_name}.safetensors" for class_name, _, _ in releases]
        try:
            summaries = check_release_folders(
                [release for _, release, _ in releases], output_files, python=args.python
            )
        except ReleaseError as error:
            print(f"FAIL: {error}")
            return 1
        failures = 0
        for (class_name, _, reference), summary, output_file in zip(releases, summaries, output_files, strict=True):
            remote = load_file(output_file)
            missing = sorted(set(reference) - set(remote))
            differences = {
                key: (reference[key].double() - remote[key].double()).abs().max().item()
                for key in reference
                if key in remote and reference[key].numel()
            }
            identical = all(torch.equal(reference[key], remote[key]) for key in reference if key in remote)
            worst = max(differences.values(), default=0.0)
            ok = not missing and (identical or worst <= args.atol)
            failures += not ok
            verdict = "identical outputs" if identical else f"max abs difference {worst:.3g}"
            print(
                f"{'OK' if ok else 'FAIL'}: {class_name} under transformers {summary['transformers']} "
                f"(torch {summary['torch']}): loads through {', '.join(AUTO_CLASSES[class_name])}, {verdict}"
                + (f"; missing outputs {missing}" if missing else "")
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
