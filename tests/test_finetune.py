"""The fine-tuning scripts end to end on a tiny SynthCXR, and their clear errors before training."""

import json
import math

import pytest
import torch
from datasets import DatasetDict, load_from_disk
from transformers import BertConfig, BertModel

from conftest import load_script, tiny_sista_config
from modeling_sista import SistaForImageClassification, SistaModel
from sista_examples import finetuning
from sista_examples.data.label_fractions import select_label_fraction
from sista_examples.data.synthcxr import (
    SynthCXRGenerationArguments,
    generate_synthcxr,
    load_or_generate_dataset,
    save_synthcxr,
)


finetune_classification = load_script("examples/finetune_classification.py")
finetune_detection = load_script("examples/finetune_detection.py")
finetune_segmentation = load_script("examples/finetune_segmentation.py")


TINY_SCRATCH = [
    "--from_scratch", "--scratch_image_size", "32", "--scratch_patch_size", "8", "--scratch_hidden_size", "32",
    "--scratch_num_layers", "1", "--decoder_hidden_size", "32",
]  # fmt: skip
TRAINING = [
    "--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--report_to", "none", "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthcxr"
    dataset = generate_synthcxr(num_pretrain=0, num_train=24, num_validation=0, num_test=8, image_size=32)
    save_synthcxr(dataset, str(path))
    return path


def run(script, dataset_dir, output_dir, *extra):
    return script.main(["--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir), *TRAINING, *extra])


def test_classification_end_to_end_writes_results(dataset_dir, tmp_path):
    results = run(finetune_classification, dataset_dir, tmp_path, *TINY_SCRATCH, "--label_fraction", "0.1")
    written = json.loads((tmp_path / "classification_results.json").read_text())
    assert written["metrics"]["auroc"] == results["metrics"]["auroc"] and 0 <= written["metrics"]["auroc"] <= 1
    assert written["num_train_samples"] == 8  # 10% of 24 rounds up to 3, below the 8-sample minimum
    assert "AUROC" in (tmp_path / "classification_results.md").read_text()


def test_segmentation_end_to_end_writes_results(dataset_dir, tmp_path):
    results = run(finetune_segmentation, dataset_dir, tmp_path, *TINY_SCRATCH)
    assert 0 <= results["metrics"]["dice"] <= 1 and results["metrics"]["num_images"] == 8
    # one Dice per (test image, segmented lesion type), counted from the split's findings
    findings = load_from_disk(str(dataset_dir))["test"]["findings"]
    pairs = sum(len({finding["name"] for finding in row} - {"cardiomegaly"}) for row in findings)
    assert results["metrics"]["num_small"] + results["metrics"]["num_large"] == pairs
    assert all(results["metrics"][f"dice_{group}"] is None or 0 <= results["metrics"][f"dice_{group}"] <= 1
               for group in ("small", "large"))
    assert (tmp_path / "segmentation_results.md").is_file() and (tmp_path / "segmentation_results.json").is_file()


def test_detection_end_to_end_writes_results(dataset_dir, tmp_path):
    results = run(finetune_detection, dataset_dir, tmp_path, *TINY_SCRATCH)
    metrics = json.loads((tmp_path / "detection_results.json").read_text())["metrics"]
    assert metrics == results["metrics"] and 0 <= metrics["map_40_75"] <= 1 and metrics["num_ground_truth_boxes"] > 0


def test_linear_probe_from_a_pretrained_checkpoint_keeps_its_encoder(dataset_dir, tmp_path):
    torch.manual_seed(0)
    pretrained = SistaModel(tiny_sista_config())
    pretrained.save_pretrained(tmp_path / "pretrained")
    run(
        finetune_classification, dataset_dir, tmp_path / "probe",
        "--model_name_or_path", str(tmp_path / "pretrained"), "--freeze_encoder",
    )  # fmt: skip
    finetuned = SistaForImageClassification.from_pretrained(tmp_path / "probe").vision_model.state_dict()
    for name, value in pretrained.vision_model.state_dict().items():
        assert torch.equal(finetuned[name], value), name


# --------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before training
# --------------------------------------------------------------------------------------------------------------------


def test_checkpoint_of_another_architecture_is_refused(dataset_dir, tmp_path):
    bert_config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(bert_config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="'bert' checkpoint, not a SISTA one"):
        run(finetune_classification, dataset_dir, tmp_path / "out", "--model_name_or_path", str(tmp_path / "bert"))


def test_dataset_without_masks_or_boxes_is_refused(dataset_dir, tmp_path):
    load_from_disk(str(dataset_dir)).remove_columns(["mask", "objects"]).save_to_disk(str(tmp_path / "no_targets"))
    with pytest.raises(ValueError, match=r"Segmentation needs the column\(s\) \['mask'\]"):
        run(finetune_segmentation, tmp_path / "no_targets", tmp_path / "seg", *TINY_SCRATCH)
    with pytest.raises(ValueError, match=r"Detection needs the column\(s\) \['objects'\]"):
        run(finetune_detection, tmp_path / "no_targets", tmp_path / "det", *TINY_SCRATCH)


def test_empty_test_split_is_an_error_not_nan(dataset_dir):
    # `datasets` cannot reload a saved empty split, so the guard is checked on an in-memory DatasetDict
    dataset = load_from_disk(str(dataset_dir))
    empty = DatasetDict({"train": dataset["train"], "test": dataset["test"].select([])})
    with pytest.raises(ValueError, match="'test'.*is empty.*undefined"):
        finetuning.select_splits(empty, finetuning.FinetuningDataArguments(), ["image", "labels"], "Classification")


def test_out_of_range_label_fraction_and_model_choice_are_refused(dataset_dir, tmp_path):
    with pytest.raises(ValueError, match="label_fraction"):
        run(finetune_classification, dataset_dir, tmp_path, *TINY_SCRATCH, "--label_fraction", "1.5")
    with pytest.raises(ValueError, match="exactly one of --model_name_or_path"):
        run(finetune_classification, dataset_dir, tmp_path)


def test_label_fractions_are_nested_deterministic_and_keep_a_minimum(dataset_dir):
    train = load_from_disk(str(dataset_dir))["train"]
    subsets = {
        fraction: select_label_fraction(train, fraction, seed=0, min_samples=4)["study_id"]
        for fraction in (0.01, 0.5, 1.0)
    }
    assert len(subsets[0.01]) == 4 and len(subsets[0.5]) == 12 and len(subsets[1.0]) == 24
    assert set(subsets[0.01]) <= set(subsets[0.5]) <= set(subsets[1.0])
    assert select_label_fraction(train, 0.5, seed=0, min_samples=4)["study_id"] == subsets[0.5]
    assert select_label_fraction(train, 0.5, seed=1, min_samples=4)["study_id"] != subsets[0.5]


def test_boxes_follow_the_pad_resize_into_the_model_frame():
    from processing_sista import SistaImageProcessor

    # a 200×100 (width × height) image padded into 64×64: scale 0.32, 16 px of padding above and below
    boxes, kept = finetuning.boxes_to_model_frame(
        [[50, 25, 100, 50], [0, 0, 0, 5]], 200, 100, SistaImageProcessor(size=64)
    )
    assert kept == [0]
    torch.testing.assert_close(boxes, torch.tensor([[0.5, 0.5, 0.5, 0.25]]))


def test_augmentation_moves_boxes_with_the_image():
    args = finetuning.FinetuningDataArguments(intensity_jitter=0.0)
    image = torch.zeros(1, 1, 64, 64)
    image[:, :, 16:32, 24:40] = 1.0  # x 24..40, y 16..32
    box = torch.tensor([[32 / 64, 24 / 64, 16 / 64, 16 / 64]])
    torch.manual_seed(3)
    moved_image, _, (moved_box,) = finetuning.augmentation_of(args).augment_batch(image, boxes=[box])
    rows, columns = (moved_image[0, 0] > 0.5).nonzero(as_tuple=True)
    center = torch.tensor([(columns.float().mean() + 0.5) / 64, (rows.float().mean() + 0.5) / 64])
    torch.testing.assert_close(moved_box[0, :2], center, atol=1.5 / 64, rtol=0)


def test_the_fraction_reported_is_the_one_min_train_samples_left(dataset_dir, caplog):
    dataset = load_from_disk(str(dataset_dir))
    num_rows = len(dataset["train"])
    for fraction, min_samples, expected_rows in ((0.01, 8, 8), (0.5, 4, math.ceil(num_rows / 2))):
        data_args = finetuning.FinetuningDataArguments(label_fraction=fraction, min_train_samples=min_samples)
        with caplog.at_level("WARNING"):
            train, _ = finetuning.select_splits(dataset, data_args, ["image", "labels"], "Classification")
        assert len(train) == expected_rows
        assert data_args.requested_label_fraction == fraction
        # the oracle: rows trained on over rows in the split, unless the requested fraction already gave them
        expected = fraction if expected_rows == math.ceil(fraction * num_rows) else expected_rows / num_rows
        assert data_args.label_fraction == pytest.approx(expected)
    assert f"--min_train_samples 8 raised it to 8: the fraction used is {8 / num_rows:.4g}" in caplog.text


def test_one_loader_names_splits_of_a_single_dataset(tmp_path):
    """A folder holding one Dataset is the split pre-training names; a script that needs named splits refuses it."""
    from datasets import Dataset

    path = tmp_path / "single"
    Dataset.from_dict({"report": ["a", "b"]}).save_to_disk(str(path))
    loaded = load_or_generate_dataset(path, SynthCXRGenerationArguments(), 32, single_split="train")
    assert list(loaded) == ["train"] and loaded["train"]["report"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"--dataset_dir .*single.* holds a single Dataset"):
        load_or_generate_dataset(path, SynthCXRGenerationArguments(), 32, argument="--dataset_dir")
