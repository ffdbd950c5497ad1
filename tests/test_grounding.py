"""Grounding: the pointing game and its oracle on synthetic heatmaps and masks with known answers, the text prior,
the shuffled-image control and BioViL's CNR against hand computations, word merging on known tokenisations, the
per-word PNG, SynthCXR finding targets, the script end to end, and errors on bad input."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from PIL import Image
from transformers import BertTokenizer

from conftest import load_script
from eval_test_utils import read_results, save_tiny_sista, tiny_synthcxr_test_split
from processing_sista import SistaImageProcessor
from sista_examples.data import synthcxr
from sista_examples.evaluation import grounding
from sista_examples.checkpoints import load_sista


visualize_grounding = load_script("examples/visualize_grounding.py")


@pytest.fixture(scope="module")
def sista_dir(tmp_path_factory):
    return save_tiny_sista(tmp_path_factory.mktemp("sista"))


NUM_PRIOR_STUDIES = 30


def tiny_synthcxr_train_split():
    """A small SynthCXR train split at the test split's size and seed: the text prior's training masks."""
    return synthcxr.generate_synthcxr(
        num_pretrain=0, num_train=NUM_PRIOR_STUDIES, num_validation=0, num_test=0, image_size=32, seed=0
    )["train"]


@pytest.fixture(scope="module")
def synthcxr_dir(tmp_path_factory):
    """The tiny test split with a train split beside it (the text prior's)."""
    directory = tmp_path_factory.mktemp("data") / "synthcxr"
    DatasetDict({"train": tiny_synthcxr_train_split(), "test": tiny_synthcxr_test_split()["test"]}).save_to_disk(
        str(directory)
    )
    return directory


# ---------------------------------------------------------------------------------------------------------------------
# Pointing game
# ---------------------------------------------------------------------------------------------------------------------


def test_pointing_game_on_a_synthetic_heatmap_with_a_known_peak():
    rows, columns = np.mgrid[0:20, 0:30]
    heatmap = np.exp(-((rows - 5) ** 2 + (columns - 21) ** 2) / 8.0)
    inside = np.zeros((20, 30), bool)
    inside[3:8, 18:25] = True
    assert grounding.pointing_game_hit(heatmap, inside) == (True, (5, 21))
    assert grounding.pointing_game_hit(heatmap, ~inside) == (False, (5, 21))
    assert grounding.random_point_baseline(inside) == pytest.approx(35 / 600)
    with pytest.raises(ValueError, match="one shape"):
        grounding.pointing_game_hit(heatmap, inside[:10])
    # float noise on a plateau does not move the peak: the first of the tied pixels wins
    plateau = np.zeros((4, 4))
    plateau[2:, 1] = 1.0
    plateau[3, 1] += 1e-9
    assert grounding.pointing_game_hit(plateau, plateau > 0) == (True, (2, 1))
    # a flat map points nowhere: a miss even where the mask covers the first pixel
    assert grounding.pointing_game_hit(np.full((4, 4), 0.3), np.ones((4, 4), bool)) == (False, None)


def test_fixed_point_baseline_is_the_pixel_inside_most_masks_of_each_finding():
    def box(top, left, size=2):
        mask = np.zeros((6, 6), bool)
        mask[top:top + size, left:left + size] = True
        return mask

    # heart masks overlap at (3, 3) in three of four studies; the nodule masks tie, the first pixel (0, 4) wins
    findings = ["heart"] * 4 + ["nodule"] * 2
    masks = [box(2, 2), box(3, 3), box(2, 3), box(0, 0), box(4, 4), box(0, 4)]
    naive = []
    for finding, mask in zip(findings, masks):  # oracle: count every pixel with a loop
        same = [other for name, other in zip(findings, masks) if name == finding]
        best = max(((row, col) for row in range(6) for col in range(6)),
                   key=lambda pixel: (sum(other[pixel] for other in same), -pixel[0], -pixel[1]))
        naive.append(bool(mask[best]))
    assert grounding.fixed_point_hits(findings, masks) == naive == [True, True, True, False, False, True]
    records = [{"finding": f, "hit": False, "mask_fraction": m.mean(), "fixed_point_hit": h}
               for f, m, h in zip(findings, masks, naive)]
    assert grounding.pointing_game_summary(records)["per_finding"]["heart"]["fixed_point_baseline"] == 0.75


def test_a_one_hot_patch_map_upsampled_peaks_inside_its_patch():
    patch_map = np.zeros((1, 16))
    patch_map[0, 1 * 4 + 2] = 1.0  # row 1, column 2 of a 4x4 grid
    heatmap = grounding.upsample_maps(patch_map, (4, 4), (32, 32))[0]
    assert heatmap.shape == (32, 32)
    patch = np.zeros((32, 32), bool)
    patch[8:16, 16:24] = True
    hit, (row, column) = grounding.pointing_game_hit(heatmap, patch)
    assert hit and 8 <= row < 16 and 16 <= column < 24
    neighbour = np.roll(patch, 8, axis=1)  # the patch to its right
    assert not grounding.pointing_game_hit(heatmap, neighbour)[0]


def test_summary_counts_hits_overall_and_per_finding():
    records = [
        {"finding": "nodule", "hit": True, "mask_fraction": 0.1},
        {"finding": "nodule", "hit": False, "mask_fraction": 0.3},
        {"finding": "effusion", "hit": True, "mask_fraction": 0.2},
    ]
    summary = grounding.pointing_game_summary(records)
    assert summary["overall"] == pytest.approx({"accuracy": 2 / 3, "random_baseline": 0.2, "num_findings": 3})
    assert summary["per_finding"]["nodule"] == pytest.approx(
        {"accuracy": 0.5, "random_baseline": 0.2, "num_findings": 2}
    )
    assert summary["per_finding"]["effusion"]["accuracy"] == 1.0
    # the oracle reference appears where every record carries its oracle hit
    with_oracle = [{**record, "oracle_hit": hit} for record, hit in zip(records, [True, True, False])]
    summary = grounding.pointing_game_summary(with_oracle)
    assert summary["overall"]["oracle"] == pytest.approx(2 / 3)
    assert summary["per_finding"]["nodule"]["oracle"] == 1.0 and summary["per_finding"]["effusion"]["oracle"] == 0.0
    assert "oracle" not in grounding.pointing_game_summary(with_oracle[:1] + records[1:])["overall"]
    with pytest.raises(ValueError, match="no finding"):
        grounding.pointing_game_summary([])


def test_oracle_pointing_matches_the_pointing_game_rule():
    """The oracle scores its pooled-mask map exactly as the pointing game scores a model's."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((64, 64), dtype=bool)
        top, left = rng.integers(0, 56, size=2)
        height, width = rng.integers(1, 24, size=2)
        mask[top : top + height, left : left + width] = True
        pooled = mask.reshape(8, 8, 8, 8).mean(axis=(1, 3))
        np.testing.assert_allclose(grounding.pool_mask_to_grid(mask, (8, 8)), pooled, atol=1e-6)
        heatmap = grounding.upsample_maps(pooled.reshape(1, -1), (8, 8), mask.shape)[0]
        expected, _ = grounding.pointing_game_hit(heatmap, mask)
        assert grounding.oracle_pointing_hit(mask, (8, 8)) == expected
    with pytest.raises(ValueError, match="`mask` must be a 2-D"):
        grounding.pool_mask_to_grid(np.zeros(4), (2, 2))
    with pytest.raises(ValueError, match="`grid` must be"):
        grounding.pool_mask_to_grid(np.zeros((4, 4)), (0, 2))
    # known answers at 8-px patches: a 4x4-patch box keeps its peak (the plateau starts at pixel 20, inside it); a
    # one-pixel lesion between patch centres loses it to the border plateau of its patch, which starts at (0, 0)
    box = np.zeros((64, 64), dtype=bool)
    box[16:48, 16:48] = True
    dot = np.zeros((64, 64), dtype=bool)
    dot[4, 4] = True
    assert grounding.oracle_pointing_hit(box, (8, 8)) and not grounding.oracle_pointing_hit(dot, (8, 8))


def naive_bilinear(grid_map: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a square grid map to `size` x `size` with half-pixel centres (align_corners=False),
    pixel by pixel: the oracle of `upsample_maps`."""
    cells = grid_map.shape[0]
    output = np.zeros((size, size))
    for row in range(size):
        for column in range(size):
            source = [min(max((pixel + 0.5) * cells / size - 0.5, 0.0), cells - 1) for pixel in (row, column)]
            low = [int(np.floor(value)) for value in source]
            high = [min(value + 1, cells - 1) for value in low]
            weight = [value - floor for value, floor in zip(source, low)]
            top = grid_map[low[0], low[1]] * (1 - weight[1]) + grid_map[low[0], high[1]] * weight[1]
            bottom = grid_map[high[0], low[1]] * (1 - weight[1]) + grid_map[high[0], high[1]] * weight[1]
            output[row, column] = top * (1 - weight[0]) + bottom * weight[0]
    return output


def naive_cnr(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """CNR by explicit sums over the pixel lists."""
    inside = [value for value, flag in zip(heatmap.ravel(), mask.ravel()) if flag]
    outside = [value for value, flag in zip(heatmap.ravel(), mask.ravel()) if not flag]
    mean_in, mean_out = sum(inside) / len(inside), sum(outside) / len(outside)
    var_in = sum((value - mean_in) ** 2 for value in inside) / len(inside)
    var_out = sum((value - mean_out) ** 2 for value in outside) / len(outside)
    return abs(mean_in - mean_out) / (var_in + var_out) ** 0.5


def test_contrast_to_noise_ratio_matches_a_hand_computation():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    # inside 4, 2, 2, 4: mean 3, variance 1; outside all 0: CNR = 3 / sqrt(1 + 0) = 3
    heatmap = np.zeros((4, 4))
    heatmap[1:3, 1:3] = [[4, 2], [2, 4]]
    assert grounding.contrast_to_noise_ratio(heatmap, mask) == pytest.approx(3.0)
    # six of the twelve outside pixels at 1: mean 0.5, variance 0.25; CNR = 2.5 / sqrt(1.25) = sqrt(5)
    heatmap[0, :] = 1
    heatmap[3, 1:3] = 1
    assert (~mask & (heatmap == 1)).sum() == 6
    assert grounding.contrast_to_noise_ratio(heatmap, mask) == pytest.approx(np.sqrt(5.0))
    assert grounding.contrast_to_noise_ratio(heatmap, mask) == pytest.approx(naive_cnr(heatmap, mask))
    # |.| makes it symmetric, and an affine rescaling of the map (BioViL's [0, 1] scaling, a sign flip) changes nothing
    assert grounding.contrast_to_noise_ratio(heatmap, ~mask) == pytest.approx(np.sqrt(5.0))
    assert grounding.contrast_to_noise_ratio(heatmap, ~mask, absolute=False) == pytest.approx(-np.sqrt(5.0))
    assert grounding.contrast_to_noise_ratio(heatmap, mask, absolute=False) == pytest.approx(np.sqrt(5.0))
    assert grounding.contrast_to_noise_ratio(7 - 3 * heatmap, mask) == pytest.approx(np.sqrt(5.0))
    minimum, maximum = heatmap.min(), heatmap.max()
    rescaled = (heatmap - minimum) / (maximum - minimum)
    assert grounding.contrast_to_noise_ratio(rescaled, mask) == pytest.approx(np.sqrt(5.0))
    # a flat map has no contrast; two flat sides that differ have no noise
    assert grounding.contrast_to_noise_ratio(np.full((4, 4), 0.3), mask) == 0.0
    assert grounding.contrast_to_noise_ratio(mask.astype(float), mask) == float("inf")
    with pytest.raises(ValueError, match="one shape"):
        grounding.contrast_to_noise_ratio(heatmap, mask[:2])
    with pytest.raises(ValueError, match="inside and outside"):
        grounding.contrast_to_noise_ratio(heatmap, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="inside and outside"):
        grounding.contrast_to_noise_ratio(heatmap, np.zeros((4, 4), bool))
    assert grounding.contrast_to_noise_ratio_or_zero(heatmap, np.ones((4, 4), bool)) == 0.0
    # random maps and masks against the explicit sums
    rng = np.random.default_rng(0)
    for _ in range(5):
        random_map, random_mask = rng.random((6, 5)), rng.random((6, 5)) < 0.4
        random_mask[0, 0], random_mask[-1, -1] = True, False
        expected = naive_cnr(random_map, random_mask)
        assert grounding.contrast_to_noise_ratio(random_map, random_mask) == pytest.approx(expected)


def quadrant(size: int, rows: slice, columns: slice) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[rows, columns] = True
    return mask


def test_text_prior_is_the_pooled_mean_training_mask_of_the_group_with_fallbacks():
    """Hand-made 8x8 training masks on a 2x2 grid; the prior maps, fallbacks and hits worked out by hand."""
    top_left = quadrant(8, slice(0, 4), slice(0, 4))  # pooled [[1, 0], [0, 0]]
    top_left_half = quadrant(8, slice(0, 2), slice(0, 4))  # pooled [[0.5, 0], [0, 0]]
    bottom_right = quadrant(8, slice(4, 8), slice(4, 8))  # pooled [[0, 0], [0, 1]]
    lower_band = quadrant(8, slice(4, 8), slice(0, 8))  # pooled [[0, 0], [1, 1]]
    training = [
        (("nodule", "left", "upper"), top_left),
        (("nodule", "left", "upper"), top_left_half),
        (("nodule", "right", "lower"), bottom_right),
        (("effusion", "left", "lower"), lower_band),
    ]
    prior = grounding.build_text_prior(training, (2, 2))
    np.testing.assert_allclose(prior.maps["nodule", "left", "upper"], [[0.75, 0], [0, 0]])
    np.testing.assert_allclose(prior.maps["nodule", "left"], [[0.75, 0], [0, 0]])
    np.testing.assert_allclose(prior.maps[("nodule",)], [[0.5, 0], [0, 1 / 3]])
    np.testing.assert_allclose(prior.maps["effusion", "left", "lower"], [[0, 0], [1, 1]])
    assert prior.counts[("nodule",)] == 3 and prior.counts["nodule", "left", "upper"] == 2
    # an unseen zone falls back to (finding, side), an unseen side to the finding, an unseen finding to nothing
    assert prior.lookup(("nodule", "left", "middle"))[1] == "finding+side"
    assert prior.lookup(("nodule", "bilateral", "lower"))[1] == "finding"
    assert prior.lookup(("atelectasis", "left", "upper")) == (None, "unseen")

    # scoring: [[0.75, 0], [0, 0]] upsampled to 8x8 is flat at its maximum on rows/columns 0-1: the peak is (0, 0)
    own_mask = quadrant(8, slice(0, 3), slice(0, 3))
    scores = grounding.text_prior_scores(prior, ("nodule", "left", "upper"), own_mask)
    expected_cnr = naive_cnr(naive_bilinear(np.array([[0.75, 0], [0, 0]]), 8), own_mask)
    assert scores == pytest.approx(
        {"text_prior_hit": True, "text_prior_cnr": expected_cnr, "text_prior_level": "finding+side+zone"}
    )
    assert not grounding.text_prior_scores(prior, ("nodule", "left", "upper"), bottom_right)["text_prior_hit"]
    # the finding-level map [[0.5, 0], [0, 1/3]] peaks in the top-left corner, not at the bottom right
    fallback = grounding.text_prior_scores(prior, ("nodule", "bilateral", "lower"), bottom_right)
    assert fallback["text_prior_level"] == "finding" and not fallback["text_prior_hit"]
    assert grounding.text_prior_scores(prior, ("nodule", "bilateral", "lower"), top_left)["text_prior_hit"]
    assert grounding.text_prior_scores(prior, ("effusion", "left", "lower"), lower_band)["text_prior_hit"]
    assert grounding.text_prior_scores(prior, ("atelectasis", "left", "upper"), top_left) == {
        "text_prior_hit": False, "text_prior_cnr": 0.0, "text_prior_level": "unseen"
    }
    # the prior of masks of different sizes is the mean of their pooled fractions
    small = grounding.build_text_prior([(("nodule", "left", "upper"), quadrant(4, slice(0, 2), slice(0, 2))),
                                        (("nodule", "left", "upper"), top_left_half)], (2, 2))
    np.testing.assert_allclose(small.maps["nodule", "left", "upper"], [[0.75, 0], [0, 0]])
    with pytest.raises(ValueError, match="empty"):
        grounding.build_text_prior([], (2, 2))
    with pytest.raises(ValueError, match=r"\(name, side, zone\)"):
        grounding.build_text_prior([(("nodule",), top_left)], (2, 2))


def test_shuffled_image_order_is_a_seeded_derangement():
    for num_studies in range(2, 12):
        for seed in range(3):
            order = grounding.shuffled_image_order(num_studies, seed)
            assert sorted(order.tolist()) == list(range(num_studies))
            assert all(order[index] != index for index in range(num_studies))
            assert np.array_equal(order, grounding.shuffled_image_order(num_studies, seed))
    assert not np.array_equal(grounding.shuffled_image_order(50, 0), grounding.shuffled_image_order(50, 1))
    with pytest.raises(ValueError, match="at least 2"):
        grounding.shuffled_image_order(1)


def test_shuffled_image_control_scores_the_other_image_maps_on_the_own_mask():
    """A report's words mapped on another image (hand-made patch maps on a 2x2 grid), scored on its own 8x8 mask."""
    shuffled = grounding.WordMaps(
        text="left apical nodule",
        words=["left", "apical", "nodule"],
        spans=[(0, 4), (5, 11), (12, 18)],
        maps=np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0.5, 0.5]]),
    )
    # words 1 and 2: mean [0, 0, 0.25, 0.75], whose upsampled peak is the bottom-right plateau, first pixel (6, 6)
    own_mask_top_left = quadrant(8, slice(0, 4), slice(0, 4))
    expected_map = naive_bilinear(np.array([[0, 0], [0.25, 0.75]]), 8)
    assert np.unravel_index(np.argmax(expected_map), expected_map.shape) == (6, 6)
    scores = grounding.shuffled_image_scores(shuffled, [1, 2], (2, 2), own_mask_top_left)
    assert scores == pytest.approx(
        {"shuffled_hit": False, "shuffled_cnr": naive_cnr(expected_map, own_mask_top_left)}
    )
    assert grounding.shuffled_image_scores(shuffled, [1, 2], (2, 2), quadrant(8, slice(4, 8), slice(4, 8)))[
        "shuffled_hit"
    ]
    assert grounding.shuffled_image_scores(shuffled, [0], (2, 2), own_mask_top_left)["shuffled_hit"]
    with pytest.raises(ValueError, match="word_indices"):
        grounding.shuffled_image_scores(shuffled, [3], (2, 2), own_mask_top_left)
    # the same words on the own image, for comparison: the score of a map that does not depend on the image is equal
    assert grounding.score_patch_map(shuffled.maps[[1, 2]].mean(0), (2, 2), own_mask_top_left)["hit"] is False


def test_summary_reports_every_reference_per_group_and_per_finding():
    def record(finding, hit, shuffled, prior, level, cnr):
        return {"finding": finding, "hit": hit, "mask_fraction": 0.1, "fixed_point_hit": True, "oracle_hit": True,
                "shuffled_hit": shuffled, "shuffled_cnr": cnr / 2, "text_prior_hit": prior, "text_prior_cnr": 1.0,
                "text_prior_level": level, "cnr": cnr}

    records = [
        record("nodule", True, False, False, "finding+side+zone", 2.0),
        record("consolidation", False, False, True, "finding+side", 1.0),
        record("cardiomegaly", True, True, True, "finding+side+zone", 3.0),
        record("effusion", True, True, True, "finding", 0.0),
        record("edema", False, True, False, "unseen", 4.0),
    ]
    summary = grounding.pointing_game_summary(records)
    assert list(summary["per_group"]) == ["small_or_ambiguous", "cardiomegaly_and_effusion", "other"]
    small = dict(summary["per_group"]["small_or_ambiguous"])
    assert small.pop("text_prior_levels") == {"finding+side+zone": 1, "finding+side": 1, "finding": 0, "unseen": 0}
    assert small == pytest.approx({
        "accuracy": 0.5, "random_baseline": 0.1, "num_findings": 2, "fixed_point_baseline": 1.0, "oracle": 1.0,
        "text_prior_baseline": 0.5, "shuffled_image_accuracy": 0.0, "cnr": 1.5, "shuffled_image_cnr": 0.75,
        "text_prior_cnr": 1.0,
    })
    large = summary["per_group"]["cardiomegaly_and_effusion"]
    assert (large["accuracy"], large["shuffled_image_accuracy"], large["text_prior_baseline"], large["cnr"]) == (
        1.0, 1.0, 1.0, 1.5
    )
    overall = summary["overall"]
    assert overall["accuracy"] == pytest.approx(0.6) and overall["shuffled_image_accuracy"] == pytest.approx(0.6)
    assert overall["text_prior_baseline"] == pytest.approx(0.6) and overall["cnr"] == pytest.approx(2.0)
    assert overall["text_prior_levels"] == {"finding+side+zone": 2, "finding+side": 1, "finding": 1, "unseen": 1}
    assert summary["per_finding"]["edema"]["shuffled_image_accuracy"] == 1.0
    assert grounding.finding_group("pneumothorax") == "small_or_ambiguous" and grounding.finding_group("x") == "other"
    # a reference missing from one record of a group is left out of that group, not averaged over fewer records
    without_control = {key: value for key, value in records[1].items() if key != "shuffled_hit"}
    partial = grounding.pointing_game_summary([records[0], without_control])
    assert "shuffled_image_accuracy" not in partial["overall"]
    assert "shuffled_image_accuracy" in partial["per_finding"]["nodule"]


# ---------------------------------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------------------------------


def test_subword_maps_are_merged_by_mean_or_sum_and_special_tokens_dropped():
    token_maps = np.array([[9, 9], [1, 0], [0.2, 0.8], [0.6, 0.4], [0, 1], [9, 9]], dtype=float)
    word_ids = [None, 0, 1, 1, 2, None]
    words, maps = grounding.merge_subword_maps(word_ids, token_maps)
    assert words == [0, 1, 2]
    assert np.allclose(maps, [[1, 0], [0.4, 0.6], [0, 1]])
    _, summed = grounding.merge_subword_maps(word_ids, token_maps, reduce="sum")
    assert np.allclose(summed[1], [0.8, 1.2])
    with pytest.raises(ValueError, match="word ids"):
        grounding.merge_subword_maps(word_ids[:-1], token_maps)


def test_word_pieces_of_a_real_tokenizer_become_one_word():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "small", "left", "pneumo", "##thorax", "the", "."]
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    text = "Small left pneumothorax, the."
    encoding = tokenizer(text)
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert tokens == ["[CLS]", "small", "left", "pneumo", "##thorax", "[UNK]", "the", ".", "[SEP]"]
    token_maps = np.zeros((len(tokens), 4))
    token_maps[1:8] = [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
        [0, 0, 0, 0],
        [0.5, 0.5, 0, 0],
        [1, 0, 0, 0],
    ]
    word_maps = grounding.word_maps_from_encoding(text, encoding.encodings[0], token_maps)
    assert word_maps.words == ["Small", "left", "pneumothorax", ",", "the", "."]
    assert np.allclose(word_maps.maps[2], [0, 0, 0.5, 0.5])
    assert word_maps.spans[2] == (11, 23)
    # "," has no letters, "the" is a stop word, "." neither: three content words
    assert [word_maps.words[index] for index in word_maps.content_indices()] == ["Small", "left", "pneumothorax"]
    # a word whose tokens STA ignores ([UNK]) has an all-zero map and no panel
    word_maps.maps[1] = 0
    assert [word_maps.words[index] for index in word_maps.content_indices()] == ["Small", "pneumothorax"]


def test_png_has_one_panel_per_content_word(tmp_path):
    word_maps = grounding.WordMaps(
        text="No left effusion; right apical pneumothorax.",
        words=["No", "left", "effusion", ";", "right", "apical", "pneumothorax", "."],
        spans=[(0, 2)] * 8,
        maps=np.eye(8, 16),
    )
    path = tmp_path / "figure.png"
    image = np.random.default_rng(0).random((32, 32))
    words = visualize_grounding.plot_word_heatmaps(image, word_maps, (4, 4), path, title=word_maps.text, num_columns=3)
    expected = ["left", "effusion", "right", "apical", "pneumothorax"]
    assert words == expected
    with Image.open(path) as png:
        assert png.format == "PNG" and json.loads(png.text["Description"]) == expected
        width, height = png.size
    assert width > height  # 3 columns x 2 rows of panels
    two_panels = visualize_grounding.plot_word_heatmaps(image, word_maps, (4, 4), tmp_path / "two.png", max_panels=2)
    assert two_panels == expected[:2]


# ---------------------------------------------------------------------------------------------------------------------
# SynthCXR targets and the model frame
# ---------------------------------------------------------------------------------------------------------------------


def test_mask_follows_the_image_processor_geometry():
    processor = SistaImageProcessor(size=32)
    mask = np.zeros((32, 32), bool)
    mask[4:10, 20:30] = True
    assert np.array_equal(grounding.mask_to_model_frame(processor, mask), mask)
    wide = np.zeros((16, 32), bool)  # padded to 32x32: 8 black rows above and below
    wide[:, :16] = True
    framed = grounding.mask_to_model_frame(processor, wide)
    assert framed.shape == (32, 32) and not framed[:8].any() and not framed[24:].any()
    assert framed[8:24, :16].all() and not framed[8:24, 16:].any()


def test_finding_targets_use_the_finding_and_location_words_of_its_sentence(sista_dir):
    dataset = tiny_synthcxr_test_split()["test"]
    model, processor = load_sista(sista_dir, "cpu")
    checked = 0
    for example in dataset:
        if not example["findings"]:
            continue
        (word_maps,), grid = visualize_grounding.grounding_maps(
            model, processor, [example["image"]], [example["report"]], 64
        )
        assert grid == (4, 4)
        skipped = Counter()
        targets = grounding.finding_targets(example, word_maps, skipped)
        masks = grounding.synthcxr_finding_masks(example, 32, 32)
        for target in targets:
            finding = next(f for f in example["findings"] if f["name"] == target["finding"])
            start, end = finding["mention_start"], finding["mention_end"]
            vocabulary = grounding.finding_words(finding)
            for index in target["word_indices"]:
                word_start, word_end = word_maps.spans[index]
                assert start <= word_start and word_end <= end
                assert target["fallback"] or word_maps.words[index].lower() in vocabulary
            assert any(np.array_equal(target["mask"], mask) for mask in masks.values())
            checked += 1
    assert checked >= 5


def test_finding_words_cover_side_zone_and_synonyms():
    words = grounding.finding_words({"name": "pneumothorax", "side": "left", "zone": "upper"})
    assert {"left", "pneumothorax", "apical", "upper"} <= words and "right" not in words
    bilateral = grounding.finding_words({"name": "effusion", "side": "bilateral", "zone": "lower"})
    assert {"left", "right", "bilateral", "effusions", "base"} <= bilateral
    assert grounding.locate_mention("FINDINGS: Small  LEFT effusion.", "small left effusion.") == (10, 31)
    assert grounding.locate_mention("abc", "xyz") is None


# ---------------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pointing_game_run(sista_dir, synthcxr_dir, tmp_path_factory):
    """`(results, output_dir)` of the script's pointing game on the tiny SynthCXR test split."""
    output_dir = tmp_path_factory.mktemp("pointing_game")
    results = visualize_grounding.main(
        [
            "--model_name_or_path",
            str(sista_dir),
            "--dataset_dir",
            str(synthcxr_dir),
            "--output_dir",
            str(output_dir),
            "--batch_size",
            "8",
            "--num_figures",
            "2",
        ]
    )
    return results, output_dir


def test_script_scores_every_finding_and_writes_figures(sista_dir, pointing_game_run):
    results, output_dir = pointing_game_run
    assert results == read_results(output_dir, "grounding")
    records = results["records"]
    dataset = tiny_synthcxr_test_split()["test"]
    num_findings = sum(len(findings) for findings in dataset["findings"])
    assert len(records) + sum(results["skipped"].values()) == num_findings
    assert results["overall"]["num_findings"] == len(records) >= 5
    assert results["overall"]["accuracy"] == pytest.approx(np.mean([record["hit"] for record in records]))
    assert results["overall"]["random_baseline"] == pytest.approx(np.mean([r["mask_fraction"] for r in records]))
    assert results["overall"]["fixed_point_baseline"] == pytest.approx(
        np.mean([record["fixed_point_hit"] for record in records])
    )
    assert sum(entry["num_findings"] for entry in results["per_finding"].values()) == len(records)
    assert set(results["per_finding"]) <= set(synthcxr.FINDING_NAMES)
    assert len(results["figures"]) == 2 and all(Image.open(path).format == "PNG" for path in results["figures"])

    # one record recomputed from the model's own STA weights
    record = records[0]
    example = next(example for example in dataset if example["study_id"] == record["study_id"])
    model, processor = load_sista(sista_dir, "cpu")
    with torch.no_grad():
        inputs = processor(text=[example["report"]], images=[example["image"]], return_tensors="pt", max_length=64)
        weights = model(**inputs, output_token_patch_weights=True).token_patch_weights[0].numpy()
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    finding = next(f for f in example["findings"] if f["name"] == record["finding"])
    mention = processor.tokenizer(finding["mention"], add_special_tokens=False)["input_ids"]
    ids = inputs["input_ids"][0].tolist()
    start = next(i for i in range(len(ids)) if ids[i : i + len(mention)] == mention)
    chosen = [i for i in range(start, start + len(mention)) if tokens[i] in [w.lower() for w in record["words"]]]
    heatmap = grounding.upsample_maps(weights[chosen].mean(0, keepdims=True), (4, 4), (32, 32))[0]
    masks = grounding.synthcxr_finding_masks(example, 32, 32)
    mask = masks[example["findings"].index(finding)]
    peak = np.unravel_index(np.argmax(heatmap >= heatmap.max() * (1 - 1e-5)), heatmap.shape)  # first near-maximum
    assert record["hit"] == bool(mask[peak]) and record["peak"] == [int(peak[0]), int(peak[1])]
    assert record["mask_fraction"] == pytest.approx(mask.mean())


def naive_finding_mask(example: dict, finding_index: int, size: int = 32) -> np.ndarray:
    """The union of the masks of the objects of one finding, decoded object by object."""
    mask = np.zeros((size, size), bool)
    for rle, owner in zip(example["objects"]["mask"], example["objects"]["finding"]):
        if owner == finding_index:
            mask |= synthcxr.decode_mask(rle, size, size)
    return mask


def test_oracle_entry_is_the_oracle_hit_rate_over_the_scored_findings(pointing_game_run):
    """The `oracle` reference, overall and per finding, against a naive loop of `oracle_pointing_hit` at the model's
    4x4 grid over the findings the script scored, their masks decoded here (32-px images: the model's own frame)."""
    results, _ = pointing_game_run
    assert results["patch_grid_size"] == [4, 4]
    examples = {str(example["study_id"]): example for example in tiny_synthcxr_test_split()["test"]}
    taken, hits_by_finding = Counter(), {}
    for record in results["records"]:
        example = examples[record["study_id"]]
        assert example["image"].size == (32, 32)
        masks = [
            naive_finding_mask(example, index)
            for index, finding in enumerate(example["findings"])
            if finding["name"] == record["finding"]
        ]
        masks = [mask for mask in masks if mask.any()]
        mask = masks[taken[record["study_id"], record["finding"]]]
        taken[record["study_id"], record["finding"]] += 1
        hit = grounding.oracle_pointing_hit(mask, (4, 4))
        assert record["oracle_hit"] == hit
        hits_by_finding.setdefault(record["finding"], []).append(hit)
    all_hits = [hit for hits in hits_by_finding.values() for hit in hits]
    assert len(all_hits) == results["overall"]["num_findings"]
    assert results["overall"]["oracle"] == pytest.approx(np.mean(all_hits))
    assert {name: entry["oracle"] for name, entry in results["per_finding"].items()} == pytest.approx(
        {name: np.mean(hits) for name, hits in hits_by_finding.items()}
    )
    with open(pointing_game_run[1] / "grounding_results.md") as markdown:
        assert "oracle (4×4 grid)" in markdown.read()


def test_script_reports_the_text_prior_shuffled_control_and_cnr(pointing_game_run):
    """The new references of the script's records and summary: present, in range, and the text prior of every record
    recomputed here from the train split by a naive loop (masks decoded object by object, pooled by block means,
    upsampled pixel by pixel)."""
    results, output_dir = pointing_game_run
    records = results["records"]
    overall = results["overall"]
    for key in ("shuffled_image_accuracy", "text_prior_baseline", "fixed_point_baseline", "oracle"):
        assert 0.0 <= overall[key] <= 1.0
    for key in ("cnr", "shuffled_image_cnr", "text_prior_cnr"):
        assert np.isfinite(overall[key]) and overall[key] >= 0.0
    assert sum(overall["text_prior_levels"].values()) == overall["num_findings"]
    assert results["references_skipped"] == {}
    assert results["text_prior_source"]["splits"] == {"train": NUM_PRIOR_STUDIES}
    assert results["text_prior_source"]["not_used"] == {"pretrain": "absent (the splits are ['test', 'train'])"}
    groups = results["per_group"]
    assert set(groups) <= {"small_or_ambiguous", "cardiomegaly_and_effusion", "other"}
    assert sum(entry["num_findings"] for entry in groups.values()) == len(records)
    small = [r for r in records if r["finding"] in ("consolidation", "nodule", "atelectasis", "pneumothorax")]
    assert groups["small_or_ambiguous"]["text_prior_baseline"] == pytest.approx(
        np.mean([r["text_prior_hit"] for r in small])
    )
    assert overall["shuffled_image_accuracy"] == pytest.approx(np.mean([r["shuffled_hit"] for r in records]))
    assert overall["cnr"] == pytest.approx(np.mean([r["cnr"] for r in records]))

    # each report is paired with the image of the study the seeded derangement names, never its own
    study_ids = [str(study_id) for study_id in tiny_synthcxr_test_split()["test"]["study_id"]]
    order = grounding.shuffled_image_order(len(study_ids), 0)
    for record in records:
        assert record["shuffled_with_study"] == study_ids[order[study_ids.index(record["study_id"])]]
        assert record["shuffled_with_study"] != record["study_id"]

    # the text prior by a naive loop over the train split
    sums, counts = {}, Counter()
    for example in tiny_synthcxr_train_split():
        for index, finding in enumerate(example["findings"]):
            mask = naive_finding_mask(example, index)
            if not mask.any():
                continue
            pooled = mask.reshape(4, 8, 4, 8).mean(axis=(1, 3))
            name, side, zone = finding["name"], finding["side"], finding["zone"]
            for key in ((name, side, zone), (name, side), (name,)):
                sums[key] = sums.get(key, 0) + pooled
                counts[key] += 1
    examples = {str(example["study_id"]): example for example in tiny_synthcxr_test_split()["test"]}
    taken = Counter()
    levels = ("finding+side+zone", "finding+side", "finding")
    for record in records:
        example = examples[record["study_id"]]
        candidates = [
            (index, finding) for index, finding in enumerate(example["findings"])
            if finding["name"] == record["finding"] and naive_finding_mask(example, index).any()
        ]
        index, finding = candidates[taken[record["study_id"], record["finding"]]]
        taken[record["study_id"], record["finding"]] += 1
        mask = naive_finding_mask(example, index)
        assert record["key"] == [finding["name"], finding["side"], finding["zone"]]
        name, side, zone = record["key"]
        level, key = next(
            (level, key) for level, key in zip(levels, ((name, side, zone), (name, side), (name,))) if key in counts
        )
        assert record["text_prior_level"] == level
        heatmap = naive_bilinear(sums[key] / counts[key], 32)
        peak = np.unravel_index(np.argmax(heatmap >= heatmap.max() * (1 - 1e-5)), heatmap.shape)
        assert record["text_prior_hit"] == bool(mask[peak])
        assert record["text_prior_cnr"] == pytest.approx(naive_cnr(heatmap, mask), rel=1e-4)
    markdown = (output_dir / "grounding_results.md").read_text()
    for column in ("shuffled image", "text prior", "CNR own image", "*small or ambiguous*"):
        assert column in markdown


def test_single_image_mode_writes_one_panel_per_content_word(sista_dir, tmp_path):
    image_path = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 32), dtype=np.uint8)).save(image_path)
    result = visualize_grounding.main(
        [
            "--model_name_or_path",
            str(sista_dir),
            "--image_path",
            str(image_path),
            "--report",
            "Small left pleural effusion. No pneumothorax.",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert result["words"] == ["Small", "left", "pleural", "effusion", "pneumothorax"]
    with Image.open(result["figure"]) as png:
        assert json.loads(png.text["Description"]) == result["words"]


def test_missing_mask_and_report_columns_are_named(sista_dir, tmp_path):
    bare = DatasetDict({"test": tiny_synthcxr_test_split()["test"].remove_columns(["findings", "objects", "mask"])})
    bare.save_to_disk(str(tmp_path / "bare"))
    arguments = ["--model_name_or_path", str(sista_dir), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="pointing game.*needs the column 'mask'"):
        visualize_grounding.main(arguments + ["--dataset_dir", str(tmp_path / "bare")])
    masks_only = DatasetDict(
        {"test": tiny_synthcxr_test_split()["test"].remove_columns(["findings", "objects", "report"])}
    )
    masks_only.save_to_disk(str(tmp_path / "masks_only"))
    with pytest.raises(ValueError, match="needs the column 'report'"):
        visualize_grounding.main(arguments + ["--dataset_dir", str(tmp_path / "masks_only")])
    # with a text for every image (e.g. SIIM-ACR: "pneumothorax") the union mask is pointed at
    results = visualize_grounding.main(
        arguments
        + [
            "--dataset_dir",
            str(tmp_path / "masks_only"),
            "--grounding_text",
            "left lung opacity",
            "--num_figures",
            "0",
        ]
    )
    num_with_lesion = sum(np.asarray(mask).any() for mask in masks_only["test"]["mask"])
    assert results["overall"]["num_findings"] == num_with_lesion
    assert results["per_finding"].keys() == {"lesion"}
    # no (finding, side, zone) to look a prior up by: the prior is left out with its reason; the control stays
    assert "text_prior_baseline" not in results["overall"] and "text_prior" in results["references_skipped"]
    assert 0.0 <= results["overall"]["shuffled_image_accuracy"] <= 1.0


def test_text_prior_is_skipped_with_a_reason_without_a_train_split(sista_dir, tmp_path):
    tiny_synthcxr_test_split().save_to_disk(str(tmp_path / "test_only"))
    results = visualize_grounding.main(
        ["--model_name_or_path", str(sista_dir), "--output_dir", str(tmp_path / "out"), "--num_figures", "0",
         "--dataset_dir", str(tmp_path / "test_only"), "--max_samples", "6"]
    )
    assert results["references_skipped"]["text_prior"] == (
        "no usable training split: pretrain: absent (the splits are ['test']); train: absent (the splits are ['test'])"
    )
    assert "text_prior_baseline" not in results["overall"] and results["text_prior_source"]["splits"] == {}
    assert "no text prior: no usable training split" in (tmp_path / "out" / "grounding_results.md").read_text()


def test_text_prior_splits_are_the_named_training_splits_with_masks():
    test = tiny_synthcxr_test_split()["test"]
    splits = DatasetDict({"pretrain": test.select(range(3)), "train": test.select(range(4)), "test": test,
                          "bare": test.remove_columns(["objects"])})  # fmt: skip
    usable, not_used = grounding.text_prior_splits(splits, ["pretrain", "train", "test", "bare", "x"], "test")
    assert {name: len(split) for name, split in usable.items()} == {"pretrain": 3, "train": 4}
    assert not_used == {
        "test": "the evaluated split",
        "bare": "lacks the per-finding mask columns ['objects']",
        "x": "absent (the splits are ['bare', 'pretrain', 'test', 'train'])",
    }
    # two splits make one prior: the same as the prior of their masks together
    processor = SistaImageProcessor(size=32)
    both = grounding.synthcxr_text_prior(list(usable.values()), processor, (4, 4))
    studies = [*test.select(range(3)), *test.select(range(4))]  # the pretrain and train rows, in order
    pairs = [pair for example in studies for pair in grounding.synthcxr_keyed_masks(example)]
    expected = grounding.build_text_prior(pairs, (4, 4))
    assert both.counts == expected.counts
    for key, prior_map in expected.maps.items():
        np.testing.assert_allclose(both.maps[key], prior_map, atol=1e-6)
    # a processor that resizes (32 -> 24 px) brings every mask into its frame first
    resizing = SistaImageProcessor(size=24)
    framed = grounding.synthcxr_text_prior(usable["train"], resizing, (4, 4))
    pairs = [(key, grounding.mask_to_model_frame(resizing, mask))
             for example in test.select(range(4)) for key, mask in grounding.synthcxr_keyed_masks(example)]  # fmt: skip
    assert pairs[0][1].shape == (24, 24)
    expected = grounding.build_text_prior(pairs, (4, 4))
    for key, prior_map in expected.maps.items():
        np.testing.assert_allclose(framed.maps[key], prior_map, atol=1e-6)
