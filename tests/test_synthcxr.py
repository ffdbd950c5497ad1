# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Tests of the SynthCXR generator (`sista_examples.data.synthcxr`, `examples/generate_synthcxr.py`): determinism, schema, ground-truth
consistency, report <-> label agreement, and that side-specific labels need location."""

import re
from collections import Counter

import numpy as np
import pytest
from datasets import load_from_disk

from conftest import load_script
from sista_examples.data import synthcxr
from sista_examples.data.synthcxr import (
    CLASS_NAMES,
    FINDING_SYNONYMS,
    NEGATION_WORDS,
    SIDE_WORDS,
    ZONE_WORDS,
    decode_mask,
    generate_study,
    generate_synthcxr,
    object_masks,
)


IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthcxr(
        num_pretrain=40,
        num_train=400,
        num_validation=30,
        num_test=30,
        image_size=IMAGE_SIZE,
        seed=0,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )


def _sentences(report: str) -> list:
    body = report.replace("FINDINGS:", " ").replace("IMPRESSION:", " ")
    # "1.8 cm" has no space after its dot, so it does not split.
    return [sentence for sentence in re.split(r"(?<=\.)\s+", body.strip()) if sentence]


def _names(text: str, vocabulary: dict) -> set:
    text = text.lower()
    return {
        key for key, words in vocabulary.items() if any(re.search(rf"\b{re.escape(word)}\b", text) for word in words)
    }


def _sides(text: str) -> set:
    named = _names(text, SIDE_WORDS)
    return {"right", "left"} if "bilateral" in named else named


def _label(name: str, side: str) -> str:
    return name if name == "cardiomegaly" else f"{side}_{name}"


def test_schema(dataset):
    assert list(dataset) == ["pretrain", "train", "validation", "test"]
    for split in dataset.values():
        assert split.features == synthcxr.synthcxr_features()
    example = dataset["train"][0]
    assert example["image"].mode == "L" and example["image"].size == (IMAGE_SIZE, IMAGE_SIZE)
    assert example["mask"].mode == "L" and example["mask"].size == (IMAGE_SIZE, IMAGE_SIZE)
    assert isinstance(example["report"], str) and example["report"].startswith("FINDINGS: ")
    assert " IMPRESSION: " in example["report"]
    assert len(example["labels"]) == len(CLASS_NAMES)
    assert dataset["train"].features["objects"]["category"].feature.names == list(CLASS_NAMES)


def test_splits_are_disjoint(dataset):
    study_ids = [set(split["study_id"]) for split in dataset.values()]
    assert sum(map(len, study_ids)) == len(set().union(*study_ids)) == sum(map(len, dataset.values()))
    images = [{image["bytes"] for image in split.data.table.column("image").to_pylist()} for split in dataset.values()]
    assert sum(map(len, images)) == len(set().union(*images)), "the same image appears twice"


def test_deterministic_and_independent_of_num_proc(tmp_path):
    kwargs = dict(num_pretrain=6, num_train=5, num_validation=0, num_test=3, image_size=IMAGE_SIZE, seed=3)
    one = generate_synthcxr(num_proc=None, cache_dir=str(tmp_path / "one"), **kwargs)
    two = generate_synthcxr(num_proc=2, cache_dir=str(tmp_path / "two"), **kwargs)
    assert list(one) == list(two) == ["pretrain", "train", "test"]
    for split in one:
        assert one[split].data.table.equals(two[split].data.table), split
    other_seed = generate_synthcxr(num_proc=None, cache_dir=str(tmp_path / "other"), **{**kwargs, "seed": 4})
    assert not one["train"].data.table.equals(other_seed["train"].data.table)


def test_generate_study_is_deterministic_and_resolution_independent():
    first = generate_study(np.random.default_rng([7, 1, 11]), 64)
    again = generate_study(np.random.default_rng([7, 1, 11]), 64)
    assert np.array_equal(first["image"], again["image"]) and first["report"] == again["report"]
    # Same seed at twice the size: same report, labels and findings at the same relative place.
    for index in range(20):
        small = generate_study(np.random.default_rng([0, 0, index]), 64)
        large = generate_study(np.random.default_rng([0, 0, index]), 128)
        assert small["report"] == large["report"] and small["labels"] == large["labels"]
        assert small["objects"]["category"] == large["objects"]["category"]
        for small_box, large_box in zip(small["objects"]["bbox"], large["objects"]["bbox"]):
            assert np.allclose(np.array(small_box) * 2, large_box, atol=4)


def test_masks_boxes_and_labels_agree(dataset):
    for example in dataset["train"]:
        objects = example["objects"]
        masks = object_masks(example)
        assert len(masks) == len(objects["bbox"]) == len(objects["category"]) == len(objects["area"])
        assert len(objects["id"]) == len(set(objects["id"]))
        expected_union = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        for mask, box, area, category in zip(masks, objects["bbox"], objects["area"], objects["category"]):
            rows, columns = np.nonzero(mask)
            assert rows.size > 0
            expected_box = [columns.min(), rows.min(), columns.max() - columns.min() + 1, rows.max() - rows.min() + 1]
            assert box == [float(value) for value in expected_box]
            assert area == mask.sum()
            if CLASS_NAMES[category] != "cardiomegaly":
                expected_union |= mask
            else:
                # The box is the heart: wide, around the midline.
                assert box[2] > 0.35 * IMAGE_SIZE and box[0] < IMAGE_SIZE / 2 < box[0] + box[2]
        union = np.asarray(example["mask"])
        assert set(np.unique(union)) <= {0, 255}
        assert np.array_equal(union == 255, expected_union)
        labels = np.zeros(len(CLASS_NAMES), dtype=int)
        labels[list(objects["category"])] = 1
        assert example["labels"] == labels.tolist()
        assert all(0 <= finding < len(example["findings"]) for finding in objects["finding"])


def test_rle_round_trip():
    mask = np.zeros((20, 30), dtype=bool)
    mask[3:7, 11:25] = True
    mask[15, 2] = True
    assert np.array_equal(decode_mask(synthcxr.encode_mask(mask), 20, 30), mask)


def test_reports_agree_with_labels(dataset):
    for example in dataset["train"]:
        positive = {CLASS_NAMES[index] for index, value in enumerate(example["labels"]) if value}
        described = set()
        for sentence in _sentences(example["report"]):
            findings = _names(sentence, FINDING_SYNONYMS)
            sides = _sides(sentence)
            if _names(sentence, {"negation": NEGATION_WORDS}):
                # A negated finding is not labelled (on the side named, or at all).
                for name in findings:
                    for side in sides or {"right", "left"}:
                        assert _label(name, side) not in positive, (sentence, example["report"])
            else:
                # A positive sentence names only labelled findings, on the labelled side.
                assert len(findings) <= 1, sentence
                for name in findings:
                    labelled = {_label(name, side) for side in sides} if name != "cardiomegaly" else {name}
                    assert labelled and labelled <= positive, (sentence, example["labels"])
                    described |= labelled
        assert described == positive, example["report"]


def test_findings_metadata(dataset):
    for example in dataset["train"]:
        report, masks = example["report"], object_masks(example)
        for index, finding in enumerate(example["findings"]):
            mention = finding["mention"]
            assert report[finding["mention_start"] : finding["mention_end"]] == mention
            assert report.index("IMPRESSION:") > finding["mention_end"], "mentions are FINDINGS sentences"
            assert _names(mention, FINDING_SYNONYMS) == {finding["name"]}
            regions = [masks[k] for k, owner in enumerate(example["objects"]["finding"]) if owner == index]
            if finding["name"] == "cardiomegaly":
                assert finding["side"] == "none" and len(regions) == 1
                continue
            assert _sides(mention) == ({"right", "left"} if finding["side"] == "bilateral" else {finding["side"]})
            if finding["name"] in ("consolidation", "nodule", "atelectasis"):
                assert finding["zone"] in _names(mention, ZONE_WORDS), mention
            # Radiological convention: the patient's left is on the image's right.
            centroid_sides = {
                "left" if np.nonzero(region)[1].mean() > IMAGE_SIZE / 2 else "right" for region in regions
            }
            assert centroid_sides == _sides(mention) and len(regions) == len(centroid_sides)


def test_zones_are_ordered_from_apex_to_base(dataset):
    heights = {zone: [] for zone in synthcxr.ZONES}
    for example in dataset["train"]:
        masks = object_masks(example)
        for mask, owner in zip(masks, example["objects"]["finding"]):
            finding = example["findings"][owner]
            if finding["name"] in ("consolidation", "nodule"):
                heights[finding["zone"]].append(np.nonzero(mask)[0].mean())
    upper, middle, lower = (np.array(heights[zone]) for zone in synthcxr.ZONES)
    assert min(map(len, (upper, middle, lower))) >= 10
    assert upper.max() < lower.min()
    assert upper.mean() + 5 < middle.mean() < lower.mean() - 5


def test_normal_fraction_and_repeated_normal_reports(dataset):
    examples = [example for split in dataset.values() for example in split.select_columns(["labels", "report"])]
    normal_reports = [example["report"] for example in examples if not any(example["labels"])]
    assert abs(len(normal_reports) / len(examples) - synthcxr.NORMAL_FRACTION) < 0.06
    counts = Counter(normal_reports)
    # Near-identical normal reports are the false negatives SIA is about: few distinct texts.
    assert len(counts) <= 24
    assert counts.most_common(1)[0][1] >= 0.1 * len(normal_reports)
    assert sum(count for count in counts.values() if count > 1) >= 0.9 * len(normal_reports)
    # Abnormal reports are far more varied.
    abnormal_reports = [example["report"] for example in examples if any(example["labels"])]
    assert len(set(abnormal_reports)) > 0.8 * len(abnormal_reports)


def _side_dataset(num_studies: int, image_size: int):
    """Images of studies whose lateralised findings are all on one side, and that side."""
    left = [index for index, name in enumerate(CLASS_NAMES) if name.startswith("left_")]
    right = [index for index, name in enumerate(CLASS_NAMES) if name.startswith("right_")]
    images, is_left = [], []
    for index in range(num_studies):
        study = generate_study(np.random.default_rng([0, 1, index]), image_size)
        labels = np.array(study["labels"])
        if labels[left].any() != labels[right].any():
            images.append(study["image"])
            is_left.append(int(labels[left].any()))
    return np.stack(images), np.array(is_left)


def _cross_validated_auroc(features, targets):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(classifier, features, targets, cv=5, method="predict_proba")[:, 1]
    return roc_auc_score(targets, scores)


def test_side_specific_labels_need_location():
    """A location-blind summary (global histogram) must not tell which side a finding is on;
    the same histograms taken per image half must."""
    pytest.importorskip("sklearn")
    images, is_left = _side_dataset(num_studies=1200, image_size=IMAGE_SIZE)
    assert len(is_left) > 300 and 0.4 < is_left.mean() < 0.6

    def histograms(pixels):
        bins = np.linspace(0, 256, 33)
        return np.stack([np.histogram(image, bins)[0] for image in pixels]) / pixels[0].size

    half = IMAGE_SIZE // 2
    blind = _cross_validated_auroc(histograms(images), is_left)
    by_half = _cross_validated_auroc(
        np.hstack([histograms(images[:, :, :half]), histograms(images[:, :, half:])]), is_left
    )
    assert blind < 0.6, f"global histogram predicts the side: AUROC {blind:.3f}"
    assert by_half > 0.8, f"per-half histograms do not find the side: AUROC {by_half:.3f}"


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        generate_synthcxr(num_train=-1)
    with pytest.raises(ValueError, match="image_size"):
        generate_synthcxr(image_size=16)
    with pytest.raises(ValueError, match="non-empty"):
        generate_synthcxr(num_pretrain=0, num_train=0, num_validation=0, num_test=0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        generate_study(42)
    with pytest.raises(ValueError, match="image_size"):
        generate_study(np.random.default_rng(0), image_size=20)


def test_cli_and_plot(tmp_path):
    output_dir, grid = tmp_path / "synthcxr", tmp_path / "grid.png"
    arguments = [
        "--output_dir",
        str(output_dir),
        "--image_size",
        "48",
        "--num_pretrain",
        "4",
        "--num_train",
        "12",
        "--num_validation",
        "2",
        "--num_test",
        "2",
        "--plot_examples",
        str(grid),
    ]
    load_script("examples/generate_synthcxr.py").main(arguments)
    loaded = load_from_disk(str(output_dir))
    assert {split: len(data) for split, data in loaded.items()} == {
        "pretrain": 4,
        "train": 12,
        "validation": 2,
        "test": 2,
    }
    assert loaded["train"][0]["image"].size == (48, 48)
    assert grid.stat().st_size > 10_000
    with pytest.raises(ValueError, match="already exists"):
        load_script("examples/generate_synthcxr.py").main(arguments)
    load_script("examples/generate_synthcxr.py").main(arguments + ["--overwrite_output_dir", "true", "--seed", "1"])
    assert load_from_disk(str(output_dir))["train"][0]["study_id"] == "train-1-0000000"
