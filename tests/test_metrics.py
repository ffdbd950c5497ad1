"""The local `evaluate` metric modules (`sista_examples/evaluation/metrics`) against hand-computed cases."""

import evaluate
import pytest

from sista_examples.finetuning import METRICS_DIR


def load(name, config_name=None):
    return evaluate.load(str(METRICS_DIR / f"{name}.py"), config_name)


# --------------------------------------------------------------------------------------------------------------------
# AUROC and accuracy
# --------------------------------------------------------------------------------------------------------------------


def test_multilabel_auroc_hand_computed():
    # class 0: positives score 0.35 and 0.8, negatives 0.1 and 0.4 → 3 of 4 (positive, negative) pairs ranked right
    # class 1: every positive above every negative → 1
    results = load("multilabel_auroc").compute(
        predictions=[[0.1, 0.9], [0.4, 0.2], [0.35, 0.7], [0.8, 0.1]],
        references=[[0, 1], [0, 0], [1, 1], [1, 0]],
    )
    assert results["per_class_auroc"] == [0.75, 1.0]
    assert results["auroc"] == pytest.approx(0.875)
    # thresholded at 0.5: rows 1, 2 and 4 are exactly right, row 3 misses class 0 → 3/4; 7 of 8 labels right
    assert results["accuracy"] == 0.75 and results["label_accuracy"] == 0.875


def test_multilabel_auroc_leaves_out_classes_without_both_labels():
    results = load("multilabel_auroc").compute(
        predictions=[[0.1, 0.3], [0.9, 0.4]], references=[[0, 0], [1, 0]]
    )
    assert results["per_class_auroc"] == [1.0, None] and results["auroc"] == 1.0
    assert results["classes_without_both_labels"] == [1]


def test_multiclass_auroc_and_accuracy():
    results = load("multilabel_auroc", "multiclass").compute(
        predictions=[[0.9, 0.1], [0.6, 0.4], [0.35, 0.65], [0.2, 0.8]], references=[0, 1, 0, 1]
    )
    assert results["auroc"] == pytest.approx(0.75) and results["accuracy"] == 0.5


def test_auroc_of_nothing_is_an_error_not_nan():
    with pytest.raises(ValueError, match="undefined"):
        load("multilabel_auroc").compute(predictions=[[0.2], [0.7]], references=[[0], [0]])


# --------------------------------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------------------------------


def test_dice_perfect_and_half_overlap():
    dice = load("dice")
    mask = [0, 1, 1, 1, 1, 0, 0, 0]
    assert dice.compute(predictions=[mask], references=[mask])["dice"] == 1.0
    # prediction covers the 4 true pixels' half (2) plus 2 wrong ones: 2*2 / (4 + 4) = 0.5
    assert dice.compute(predictions=[[0, 1, 1, 0, 0, 1, 1, 0]], references=[mask])["dice"] == 0.5


def test_dice_pools_pixels_and_counts_empty_agreement_as_perfect():
    results = load("dice").compute(predictions=[[1, 1, 0, 0], [0, 0, 0, 0]], references=[[1, 0, 0, 0], [0, 0, 0, 0]])
    assert results["dice"] == pytest.approx(2 / 3)  # 2*1 / (2 + 1)
    assert results["mean_image_dice"] == pytest.approx((2 / 3 + 1) / 2)


def test_multiclass_dice_averages_foreground_classes():
    results = load("dice").compute(predictions=[[0, 1, 2, 2]], references=[[0, 1, 1, 2]], num_labels=3)
    assert results["per_class_dice"] == [pytest.approx(2 / 3), pytest.approx(2 / 3)]


# --------------------------------------------------------------------------------------------------------------------
# Detection mAP (pycocotools)
# --------------------------------------------------------------------------------------------------------------------


def test_detection_map_is_one_for_perfect_boxes():
    references = [
        {"boxes": [[0, 0, 10, 10], [20, 20, 40, 50]], "labels": [0, 1]},
        {"boxes": [[5, 5, 25, 15]], "labels": [1]},
    ]
    predictions = [{**reference, "scores": [0.9] * len(reference["labels"])} for reference in references]
    results = load("detection_map").compute(predictions=predictions, references=references)
    for name in ("map_40_75", "map", "map_50", "map_75"):
        assert results[name] == pytest.approx(1.0), name
    assert results["map_40_75_per_class"] == {"0": pytest.approx(1.0), "1": pytest.approx(1.0)}


def test_detection_map_partial_overlap_counts_the_thresholds_it_passes():
    # IoU = 62/100 = 0.62: a true positive at IoU thresholds 0.40..0.60 (5 of 8) and 0.50..0.60 (3 of 10)
    results = load("detection_map").compute(
        predictions=[{"boxes": [[0, 0, 10, 6.2]], "scores": [0.9], "labels": [0]}],
        references=[{"boxes": [[0, 0, 10, 10]], "labels": [0]}],
    )
    assert results["map_40_75"] == pytest.approx(5 / 8)
    assert results["map"] == pytest.approx(3 / 10)
    assert results["map_50"] == pytest.approx(1.0) and results["map_75"] == 0.0


def test_detection_map_per_class_and_wrong_class_detections():
    # class 0 found exactly; the class-1 box is detected as class 2 (no ground truth of its own): AP 1 and 0
    results = load("detection_map").compute(
        predictions=[{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "scores": [0.9, 0.8], "labels": [0, 2]}],
        references=[{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 1]}],
    )
    assert results["map_40_75_per_class"] == {"0": pytest.approx(1.0), "1": 0.0}
    assert results["map_40_75"] == pytest.approx(0.5)


def test_detection_map_without_detections_is_zero_and_without_ground_truth_an_error():
    metric = load("detection_map")
    empty = {"boxes": [], "scores": [], "labels": []}
    assert metric.compute(predictions=[empty], references=[{"boxes": [[0, 0, 5, 5]], "labels": [0]}])["map"] == 0.0
    with pytest.raises(ValueError, match="no box"):
        metric.compute(predictions=[empty], references=[{"boxes": [], "labels": []}])
