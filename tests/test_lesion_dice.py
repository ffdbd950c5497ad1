"""Dice per lesion type and size (`sista_examples.evaluation.lesion_dice`) against hand computations and SynthCXR."""

import numpy as np
import pytest

from sista_examples.data.synthcxr import generate_study, generate_synthcxr
from sista_examples.evaluation.lesion_dice import (
    LESION_SIZES,
    has_lesion_masks,
    image_lesion_dice,
    lesion_type_masks,
    summarize_lesion_dice,
)


def box(top, left, bottom, right, size=6):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_image_lesion_dice_matches_a_hand_computation():
    nodule = box(0, 0, 2, 2)  # 4 pixels
    effusion = box(3, 0, 6, 6)  # 18 pixels
    prediction = box(0, 0, 1, 2) | box(2, 4, 3, 6) | box(3, 0, 5, 6)
    # nodule, on the pixels outside the effusion: 2 of its 4 pixels predicted, 2 background pixels predicted
    # (row 2, columns 4-5), the 12 predicted effusion pixels not counted: Dice = 2*2 / (4 + 4) = 0.5
    # effusion, outside the nodule (whose 2 predicted pixels are not counted): 12 of its 18 pixels predicted, plus the
    # 2 background pixels: Dice = 2*12 / (14 + 18) = 0.75
    dice = image_lesion_dice(prediction, {"nodule": nodule, "effusion": effusion})
    assert dice == pytest.approx({"nodule": 0.5, "effusion": 0.75})


def test_overlapping_pixels_count_for_both_types():
    nodule = box(0, 0, 2, 2)
    consolidation = box(1, 1, 3, 3)  # shares pixel (1, 1) with the nodule
    prediction = nodule.copy()
    dice = image_lesion_dice(prediction, {"nodule": nodule, "consolidation": consolidation})
    assert dice["nodule"] == pytest.approx(1.0)
    # consolidation: its 4 pixels, plus the nodule's 3 pixels outside it are left out; predicted: (1, 1) only
    assert dice["consolidation"] == pytest.approx(2 * 1 / (1 + 4))


def test_no_prediction_and_a_lesion_scores_zero_and_a_perfect_one_scores_one():
    effusion = box(3, 0, 6, 6)
    assert image_lesion_dice(np.zeros((6, 6), dtype=bool), {"effusion": effusion}) == {"effusion": 0.0}
    assert image_lesion_dice(effusion, {"effusion": effusion}) == {"effusion": 1.0}
    with pytest.raises(ValueError, match="effusion mask"):
        image_lesion_dice(np.zeros((5, 5)), {"effusion": effusion})


def test_summary_means_over_image_type_pairs():
    per_image = [{"nodule": 0.2, "effusion": 0.9}, {"nodule": 0.4, "atelectasis": 0.3}, {}, {"effusion": 0.5}]
    summary = summarize_lesion_dice(per_image)
    assert summary["dice_nodule"] == pytest.approx(0.3) and summary["num_nodule"] == 2
    assert summary["dice_small"] == pytest.approx((0.2 + 0.4 + 0.3) / 3) and summary["num_small"] == 3
    assert summary["dice_large"] == pytest.approx(0.7) and summary["num_large"] == 2
    assert summary["dice_pneumothorax"] is None and summary["num_pneumothorax"] == 0


def test_synthcxr_type_masks_split_its_lesion_mask():
    for index in range(30):
        study = generate_study(np.random.default_rng([0, 1, index]), image_size=64)
        by_type = lesion_type_masks(study["objects"], study["findings"], 64, 64)
        expected_types = {finding["name"] for finding in study["findings"]} - {"cardiomegaly"}
        assert set(by_type) == expected_types
        union = np.zeros((64, 64), dtype=bool)
        for mask in by_type.values():
            union |= mask
        # the per-type masks are exactly the study's lesion mask (which leaves the heart out)
        assert np.array_equal(union, study["mask"] > 0)


def test_dataset_detection_and_every_segmented_type_has_a_size():
    dataset = generate_synthcxr(num_pretrain=0, num_train=0, num_validation=0, num_test=2, image_size=32)["test"]
    assert has_lesion_masks(dataset)
    assert not has_lesion_masks(dataset.remove_columns(["objects"]))
    assert set(LESION_SIZES.values()) == {"small", "large"} and "cardiomegaly" not in LESION_SIZES
