"""
Tests of the field's benchmarks: the CheXpert 5x200 selection (against a naive loop and against MGCA's own pandas
code path), the hold-out lists the other preparers honour, the MS-CXR preparation (boxes scaled to the prepared
size), and the evaluation helpers (5-way accuracy and macro-F1, category precision@K, CNR, mIoU, pointing game).
Fixtures are written in the published layouts (CheXpert's train.csv header, MS-CXR's csv columns) in tmp dirs.
"""

import csv
import json

import numpy as np
import pandas as pd
import pytest

from conftest import load_script
from eval_test_utils import save_tiny_sista
from sista_examples.data.prepare import (
    CHEXPERT_5X200_CHECKED_OBSERVATIONS,
    CHEXPERT_COMPETITION_LABELS,
    EXCLUDED_IMAGES_FILE,
    Chexpert5x200Arguments,
    ChexpertArguments,
    MsCxrArguments,
    prepare_chexpert,
    prepare_chexpert_5x200,
    prepare_ms_cxr,
    read_csv_table,
    read_excluded_image_ids,
    select_chexpert_5x200,
)
from test_prepare_datasets import CHEXPERT_HEADER, chexpert_row, common_args, skipped_reasons, write_csv, write_jpeg


OBSERVATIONS = [name for name in CHEXPERT_HEADER[5:]]  # the 14 labels, in train.csv's column order


def write_chexpert_train_table(parent, num_rows=400, seed=0, with_images=True):
    """
    A CheXpert-v1.0-small `train.csv` of `num_rows` rows in the published header: frontal and lateral views, labels
    drawn from 1.0 / 0.0 / -1.0 / blank, and about half the rows made eligible for one finding (that finding 1.0,
    the others 0.0 or blank). Frontal images are written at CheXpert-small's size (320 px wide).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(num_rows):
        patient, view = 1 + index // 2, "Frontal" if index % 7 else "Lateral"
        name = "view1_frontal.jpg" if view == "Frontal" else "view2_lateral.jpg"
        path = f"CheXpert-v1.0-small/train/patient{patient:05d}/study{1 + index % 2}/{name}"
        labels = {label: rng.choice(["", "", "0.0", "1.0", "-1.0"]) for label in OBSERVATIONS}
        if rng.random() < 0.5:  # a clean single-finding row
            finding = CHEXPERT_COMPETITION_LABELS[rng.integers(5)]
            labels = {label: rng.choice(["", "0.0"]) for label in OBSERVATIONS}
            labels[finding] = "1.0"
            if rng.random() < 0.1:
                labels["Support Devices"] = "-1.0"  # uncertain elsewhere: not eligible
        rows.append(chexpert_row(path, view=view, **{key.replace(" ", "_"): value for key, value in labels.items()}))
        if with_images and view == "Frontal":
            write_jpeg(parent / path, rng.integers(0, 255, size=(390, 320), dtype=np.uint8))
    write_csv(parent / "CheXpert-v1.0-small" / "train.csv", CHEXPERT_HEADER, rows)
    return parent / "CheXpert-v1.0-small"


def naive_5x200(csv_path, per_class, seed):
    """The rule written out row by row, and MGCA's draw as numpy's legacy generator makes it."""
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))

    def value(row, name):
        return float(row[name]) if row[name].strip() else 0.0

    selected = {}
    for finding in CHEXPERT_COMPETITION_LABELS:
        eligible = []
        for row in rows:
            if row["Frontal/Lateral"] != "Frontal":
                continue
            others = [name for name in OBSERVATIONS if name not in (finding, "No Finding")]
            if value(row, finding) == 1 and all(value(row, name) == 0 for name in others):
                eligible.append(row["Path"])
        picks = np.random.RandomState(seed).choice(len(eligible), per_class, replace=False)
        selected[finding] = [eligible[index] for index in picks]
    return selected


def mgca_5x200(csv_path, per_class, seed):
    """MGCA's `preprocess_chexpert_5x200_data` path (numeric read, fillna(0), the 13 compared columns), re-stated."""
    table = pd.read_csv(csv_path)
    table[OBSERVATIONS] = table[OBSERVATIONS].fillna(0)  # MGCA fills every column; these are the ones compared
    table = table[table["Frontal/Lateral"] == "Frontal"]
    selected = {}
    for finding in CHEXPERT_COMPETITION_LABELS:
        condition = table[finding] == 1
        for name in CHEXPERT_5X200_CHECKED_OBSERVATIONS:
            if name != finding:
                condition &= table[name] == 0
        selected[finding] = table[condition].sample(n=per_class, random_state=seed)["Path"].tolist()
    return selected


@pytest.mark.parametrize("per_class, seed", [(20, 0), (7, 3)])
def test_chexpert_5x200_selection_is_mgca_rule_and_draw(tmp_path, per_class, seed):
    root = write_chexpert_train_table(tmp_path, with_images=False)
    table = read_csv_table(root / "train.csv", ["Path"])
    selection = select_chexpert_5x200(table, per_class, seed)
    got = {finding: group["Path"].tolist() for finding, group in selection.groupby("finding", sort=False)}
    assert list(got) == list(CHEXPERT_COMPETITION_LABELS)
    assert got == naive_5x200(root / "train.csv", per_class, seed)
    assert got == mgca_5x200(root / "train.csv", per_class, seed)
    assert selection["Path"].is_unique


def test_chexpert_5x200_rule_details_and_errors(tmp_path):
    root = write_chexpert_train_table(tmp_path, with_images=False)
    table = read_csv_table(root / "train.csv", ["Path"])
    selection = select_chexpert_5x200(table, 10, 0)
    assert (selection["Frontal/Lateral"] == "Frontal").all()
    for _, row in selection.iterrows():
        assert row[row["finding"]] == "1.0"
        assert all(row[name] in ("", "0.0") for name in CHEXPERT_5X200_CHECKED_OBSERVATIONS if name != row["finding"])
    # another seed draws other images; asking for more than there are fails naming the finding
    assert select_chexpert_5x200(table, 10, 1)["Path"].tolist() != selection["Path"].tolist()
    with pytest.raises(ValueError, match="only \\d+ frontal images have Atelectasis"):
        select_chexpert_5x200(table, 10_000, 0)
    with pytest.raises(ValueError, match="Frontal/Lateral"):
        select_chexpert_5x200(table.drop(columns=["Frontal/Lateral"]), 10, 0)


def write_chexpert_valid(root):
    rows = []
    for patient in (64541, 64542):
        path = f"CheXpert-v1.0-small/valid/patient{patient}/study1/view1_frontal.jpg"
        write_jpeg(root.parent / path, np.full((390, 320), 128, dtype=np.uint8))
        rows.append(chexpert_row(path, ap_pa="PA", Atelectasis="1.0"))
    write_csv(root / "valid.csv", CHEXPERT_HEADER, rows)


def test_prepare_chexpert_5x200_and_the_hold_out_list_the_chexpert_preparer_honours(tmp_path):
    root = write_chexpert_train_table(tmp_path, num_rows=240)
    write_chexpert_valid(root)
    benchmark = tmp_path / "chexpert_5x200"
    dataset = prepare_chexpert_5x200(Chexpert5x200Arguments(**common_args(root, benchmark, per_class=3)))["test"]
    assert len(dataset) == 15 and list(dataset.features) == list(dataset[0])
    expected = naive_5x200(root / "train.csv", 3, 0)
    for finding_index, finding in enumerate(CHEXPERT_COMPETITION_LABELS):
        rows = dataset.select(range(3 * finding_index, 3 * finding_index + 3))
        assert ["CheXpert-v1.0-small/" + image_id for image_id in rows["image_id"]] == expected[finding]
        assert all(labels == [int(index == finding_index) for index in range(5)] for labels in rows["labels"])
    assert dataset[0]["image"].size == (26, 32)  # 320 x 390 -> longer side 32
    held_out = read_excluded_image_ids(str(benchmark))
    assert held_out == set(dataset["image_id"]) and (benchmark / EXCLUDED_IMAGES_FILE).read_text().startswith("#")
    metadata = json.loads((benchmark / "sista_dataset.json").read_text())
    assert metadata["num_rows"] == {"test": 15} and metadata["class_names"] == list(CHEXPERT_COMPETITION_LABELS)

    # The chexpert preparation with the list: none of the 15 images in any split, their count recorded.
    output_dir = tmp_path / "chexpert"
    without = prepare_chexpert(ChexpertArguments(**common_args(root, tmp_path / "all")))
    dataset_dict = prepare_chexpert(ChexpertArguments(**common_args(root, output_dir, exclude_images=str(benchmark))))
    kept = {image_id for split in dataset_dict.values() for image_id in split["image_id"]}
    assert not kept & held_out
    assert kept == {image_id for split in without.values() for image_id in split["image_id"]} - held_out
    recorded = json.loads((output_dir / "sista_dataset.json").read_text())["excluded_images"]
    assert recorded == {"lists": str(benchmark), "num_excluded": 15}
    with pytest.raises(FileNotFoundError, match="excluded_image_ids.txt"):
        ChexpertArguments(**common_args(root, tmp_path / "x", exclude_images=str(tmp_path / "nowhere")))


# ---------------------------------------------------------------------------------------------------------------------
# MS-CXR
# ---------------------------------------------------------------------------------------------------------------------

MS_CXR_HEADER = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height",
                 "split"]  # fmt: skip


def write_ms_cxr_fixture(root, image_size=(2544, 3056)):
    """
    A MIMIC-CXR-JPG `files/` tree with four images at a MIMIC size (2544 x 3056, one landscape) and an MS-CXR csv in
    the published columns: a phrase with two boxes, two phrases on one image, a box partly outside the image, an
    image whose size differs from the table's, and a row whose image is missing.
    """
    images = {
        "d0000001-aaaaaaaa-bbbbbbbb-cccccccc-00000001": ("10000001", "50000001", image_size),
        "d0000002-aaaaaaaa-bbbbbbbb-cccccccc-00000002": ("10000002", "50000002", image_size[::-1]),
        "d0000003-aaaaaaaa-bbbbbbbb-cccccccc-00000003": ("10000003", "50000003", (2000, 2000)),  # table says 2544x3056
        "d0000004-aaaaaaaa-bbbbbbbb-cccccccc-00000004": ("10000004", "50000004", None),  # no file
    }
    paths = {}
    for dicom_id, (subject, study, size) in images.items():
        relative = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
        paths[dicom_id] = relative
        if size is not None:
            write_jpeg(root / relative, np.full(size[::-1], 100, dtype=np.uint8))
    first, second, third, fourth = images
    rows = [
        [first, "Pleural Effusion", "small left pleural effusion", paths[first], 1800, 2400, 500, 400, 2544, 3056, "test"],
        [first, "Pleural Effusion", "small left pleural effusion", paths[first], 300, 2300, 400, 300, 2544, 3056, "test"],
        [first, "Cardiomegaly", "cardiomegaly", paths[first], 700, 1500, 1300, 1000, 2544, 3056, "test"],
        [second, "Pneumothorax", "right apical pneumothorax", paths[second], 2900, 100, 400, 300, 3056, 2544, "val"],
        [third, "Consolidation", "left lower lobe consolidation", paths[third], 10, 10, 50, 50, 2544, 3056, "train"],
        [fourth, "Edema", "mild pulmonary edema", paths[fourth], 10, 10, 50, 50, 2544, 3056, "train"],
    ]  # fmt: skip
    write_csv(root / "MS_CXR_Local_Alignment_v1.1.0.csv", MS_CXR_HEADER, rows)
    return root / "MS_CXR_Local_Alignment_v1.1.0.csv", images


def test_prepare_ms_cxr_scales_boxes_to_the_prepared_size(tmp_path):
    csv_path, images = write_ms_cxr_fixture(tmp_path)
    output_dir = tmp_path / "ms_cxr"
    args = MsCxrArguments(**common_args(tmp_path, output_dir, image_size=64, ms_cxr_file=str(csv_path)))
    dataset = prepare_ms_cxr(args)["test"]
    first, second, third, fourth = images
    assert dataset["phrase"] == ["small left pleural effusion", "cardiomegaly", "right apical pneumothorax"]
    categories = dataset.features["category"].names
    assert [categories[index] for index in dataset["category"]] == ["Pleural Effusion", "Cardiomegaly", "Pneumothorax"]
    assert dataset["dicom_id"] == [first, first, second] and dataset["ms_cxr_split"] == ["test", "test", "val"]
    assert dataset["study_id"] == ["50000001", "50000001", "50000002"] and dataset["patient_id"][2] == "10000002"

    # 2544 x 3056 -> 53 x 64: x scales by 53/2544, y by 64/3056; COCO [x_min, y_min, w, h]
    effusion = dataset[0]
    assert effusion["image"].size == (53, 64)
    scale_x, scale_y = 53 / 2544, 64 / 3056
    expected = [[1800 * scale_x, 2400 * scale_y, 500 * scale_x, 400 * scale_y],
                [300 * scale_x, 2300 * scale_y, 400 * scale_x, 300 * scale_y]]  # fmt: skip
    np.testing.assert_allclose(effusion["objects"]["bbox"], expected, rtol=1e-5)
    mask = np.asarray(effusion["mask"]) > 0
    expected_mask = np.zeros((64, 53), dtype=bool)
    for x, y, width, height in expected:
        expected_mask[round(y) : round(y + height), round(x) : round(x + width)] = True
    np.testing.assert_array_equal(mask, expected_mask)
    # landscape 3056 x 2544 -> 64 x 53; the box is clipped at the right edge (2900 + 400 > 3056)
    pneumothorax = dataset[2]
    assert pneumothorax["image"].size == (64, 53)
    np.testing.assert_allclose(
        pneumothorax["objects"]["bbox"], [[2900 * 64 / 3056, 100 * 53 / 2544, 156 * 64 / 3056, 300 * 53 / 2544]],
        rtol=1e-5,
    )
    assert skipped_reasons(output_dir) == [
        (f"{third}/0003", "image_size_mismatch"),
        (f"{fourth}/0004", "missing_image"),
    ]
    assert read_excluded_image_ids(str(output_dir)) == set(images)
    with pytest.raises(ValueError, match="ms_cxr_file"):
        MsCxrArguments(**common_args(tmp_path, tmp_path / "y"))


# ---------------------------------------------------------------------------------------------------------------------
# Zero-shot (5-way, binary) and category retrieval
# ---------------------------------------------------------------------------------------------------------------------

zero_shot = load_script("examples/zero_shot.py")
retrieval = load_script("examples/retrieval.py")


def test_multiclass_metrics_against_a_hand_count():
    labels = np.eye(3, dtype=int)[[0, 0, 0, 1, 1, 2]]
    logits = np.array([[3, 1, 0], [0, 2, 1], [2, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    # predicted 0, 1, 0, 1, 0, 2 against true 0, 0, 0, 1, 1, 2: 4 of 6 right
    metrics = zero_shot.multiclass_metrics(labels, logits, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # class a: tp 2, fp 1, fn 1 -> F1 2/3; b: tp 1, fp 1, fn 1 -> 1/2; c: tp 1 -> 1
    assert metrics["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="exactly one positive"):
        zero_shot.multiclass_metrics(np.array([[1, 1, 0]]), np.zeros((1, 3)), ["a", "b", "c"])
    assert zero_shot.binary_accuracy([1, 0, 1, 0], [0.7, 0.2, 0.4, 0.5]) == 0.5


def test_rsna_gets_the_pneumonia_vs_normal_prompts():
    from sista_examples.evaluation.prompts import RSNA_PNEUMONIA_PROMPTS

    assert zero_shot.class_prompts(["Lung Opacity"], dataset_name="rsna_pneumonia") == RSNA_PNEUMONIA_PROMPTS
    assert zero_shot.class_prompts(["Lung Opacity"]) != RSNA_PNEUMONIA_PROMPTS  # CheXpert's opacity set elsewhere


def naive_precision_at_k(similarity, query_categories, gallery_categories, k):
    """Rank each query's texts one by one: higher similarity first, on ties texts of other categories first."""
    total = 0.0
    for row, category in enumerate(query_categories):
        ranked = sorted(
            range(len(gallery_categories)),
            key=lambda column: (-similarity[row][column], gallery_categories[column] == category),
        )
        total += sum(gallery_categories[column] == category for column in ranked[:k]) / k
    return total / len(query_categories)


def test_category_precision_at_k_against_a_naive_ranking():
    from sista_examples.evaluation.retrieval import category_precision_at_k

    rng = np.random.default_rng(0)
    similarity = rng.integers(0, 4, size=(12, 9)).astype(float)  # many ties
    queries = np.array(list("abc") * 4)
    gallery = np.array(list("aabbbcccc"))
    metrics = category_precision_at_k(similarity, queries, gallery, [1, 3, 9, 10])
    for k in (1, 3, 9):
        assert metrics["overall"][f"P@{k}"] == pytest.approx(naive_precision_at_k(similarity, queries, gallery, k))
    assert metrics["overall"]["P@10"] is None  # K above the gallery
    assert metrics["overall"]["chance"] == pytest.approx(np.mean([(gallery == q).mean() for q in queries]))
    rows = queries == "b"
    assert metrics["per_category"]["b"]["P@3"] == pytest.approx(
        naive_precision_at_k(similarity[rows], queries[rows], gallery, 3)
    )
    # a collapsed model (all similarities equal) gets the worst case, not the gallery order's luck
    assert category_precision_at_k(np.zeros((3, 9)), np.array(list("abc")), gallery, [2])["overall"]["P@2"] == 0


@pytest.fixture(scope="module")
def sista_dir(tmp_path_factory):
    return save_tiny_sista(tmp_path_factory.mktemp("sista"))


@pytest.fixture(scope="module")
def benchmark_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert")
    write_chexpert_train_table(root, num_rows=240)
    output_dir = root / "chexpert_5x200"
    prepare_chexpert_5x200(Chexpert5x200Arguments(**common_args(root / "CheXpert-v1.0-small", output_dir, per_class=4)))
    return output_dir


def test_zero_shot_and_retrieval_on_chexpert_5x200(sista_dir, benchmark_dir, tmp_path):
    common = ["--model_name_or_path", str(sista_dir), "--dataset_dir", str(benchmark_dir), "--split", "test",
              "--output_dir", str(tmp_path), "--batch_size", "8"]  # fmt: skip
    results = zero_shot.main([*common, "--pipeline_example", "False"])
    multiclass = results["multiclass"]
    assert 0 <= multiclass["accuracy"] <= 1 and 0 <= multiclass["macro_f1"] <= 1
    assert np.asarray(multiclass["confusion_matrix"]).sum() == 20 and np.trace(multiclass["confusion_matrix"]) == (
        round(multiclass["accuracy"] * 20)
    )
    assert list(results["prompts"]) == list(CHEXPERT_COMPETITION_LABELS)
    assert "One-of-5 classification" in (tmp_path / "zero_shot_results.md").read_text()

    results = retrieval.main([*common, "--text_gallery", "prompts", "--precision_at", "1,5,100"])
    assert results["text_gallery"]["num_texts"] == len(results["text_gallery"]["texts"]) == 20
    overall = results["image_to_text"]["overall"]
    assert 0 <= overall["P@1"] <= 1 and overall["P@100"] is None and overall["chance"] == pytest.approx(0.2)
    assert set(results["image_to_text"]["per_category"]) == set(CHEXPERT_COMPETITION_LABELS)

    gallery = tmp_path / "gallery.csv"
    write_csv(gallery, ["text", "category"], [["small left pleural effusion.", "Pleural Effusion"],
                                              ["cardiomegaly.", "Cardiomegaly"], ["", "Edema"], ["x", "Unknown"]])  # fmt: skip
    results = retrieval.main([*common, "--text_gallery", str(gallery), "--precision_at", "1,2"])
    assert results["text_gallery"]["categories"] == ["Pleural Effusion", "Cardiomegaly"]


# ---------------------------------------------------------------------------------------------------------------------
# MS-CXR phrase grounding
# ---------------------------------------------------------------------------------------------------------------------


def test_mean_iou_against_a_hand_count():
    from sista_examples.evaluation.phrase_grounding import mean_iou

    heatmap = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])  # scaled: k / 7
    mask = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    # threshold 0.5 keeps 4..7 (4 pixels; 2 in the mask, union 6) -> 1/3; 0.9 keeps 7 -> 1/4
    assert mean_iou(heatmap, mask, [0.5]) == pytest.approx(2 / 6)
    assert mean_iou(heatmap, mask, [0.5, 0.9]) == pytest.approx((2 / 6 + 1 / 4) / 2)
    assert mean_iou(np.ones((2, 4)), mask) == 0.0  # a flat map covers nothing
    # affine rescaling of the map changes nothing (per-image min-max)
    assert mean_iou(3 * heatmap - 5, mask, [0.3]) == pytest.approx(mean_iou(heatmap, mask, [0.3]))


def test_contrast_to_noise_ratio_against_a_hand_computation():
    from sista_examples.evaluation.grounding import contrast_to_noise_ratio

    heatmap = np.array([[1.0, 3.0, 0.0], [0.0, 2.0, 1.0]])
    mask = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    # inside 1, 3: mean 2, variance 1; outside 0, 0, 2, 1: mean 0.75, variance (0.5625*2 + 1.5625 + 0.0625) / 4
    outside_variance = (0.5625 * 2 + 1.5625 + 0.0625) / 4
    assert contrast_to_noise_ratio(heatmap, mask) == pytest.approx(1.25 / np.sqrt(1 + outside_variance))


def test_phrase_embedding_map_is_biovils_cosine_then_gaussian():
    from scipy import ndimage

    from sista_examples.evaluation.phrase_grounding import phrase_embedding_map

    rng = np.random.default_rng(0)
    patches, phrase = rng.normal(size=(12, 5)), rng.normal(size=5)
    cosine = np.array([p @ phrase / (np.linalg.norm(p) * np.linalg.norm(phrase)) for p in patches])
    np.testing.assert_allclose(phrase_embedding_map(patches, phrase, (3, 4), sigma=0), cosine)
    smoothed = ndimage.gaussian_filter(cosine.reshape(3, 4), sigma=1.5)
    np.testing.assert_allclose(phrase_embedding_map(patches, phrase, (3, 4)), smoothed.reshape(-1))
    with pytest.raises(ValueError, match="patch_embeds"):
        phrase_embedding_map(patches, phrase, (4, 4))


def test_phrase_prior_keys_and_patient_folds():
    from sista_examples.evaluation.phrase_grounding import phrase_prior_key, two_fold

    assert phrase_prior_key("Pneumothorax", "Small right apical pneumothorax") == ("Pneumothorax", "right", "upper")
    assert phrase_prior_key("Atelectasis", "bibasilar atelectasis") == ("Atelectasis", "bilateral", "lower")
    assert phrase_prior_key("Cardiomegaly", "cardiomegaly") == ("Cardiomegaly", "none", "none")
    folds = two_fold(["p1", "p2", "p1", "p3", "p2", "p4"], seed=0)
    assert folds[0] == folds[2] and folds[1] == folds[4] and set(folds) == {0, 1}


def test_evaluate_grounding_on_a_prepared_ms_cxr(sista_dir, tmp_path):
    csv_path, images = write_ms_cxr_fixture(tmp_path, image_size=(254, 305))
    # the fixture's table refers to 2544 x 3056 images: rewrite it for these smaller ones (sizes and boxes / 10)
    table = pd.read_csv(csv_path)
    table[["x", "y", "w", "h", "image_width", "image_height"]] //= 10
    table.loc[table["dicom_id"] == list(images)[2], ["image_width", "image_height"]] = [200, 200]
    table.to_csv(csv_path, index=False)
    data_dir = tmp_path / "ms_cxr"
    prepare_ms_cxr(MsCxrArguments(**common_args(tmp_path, data_dir, image_size=32, ms_cxr_file=str(csv_path))))
    evaluate_grounding = load_script("examples/evaluate_grounding.py")
    results = evaluate_grounding.main(
        ["--model_name_or_path", str(sista_dir), "--dataset_dir", str(data_dir), "--split", "test",
         "--output_dir", str(tmp_path / "out"), "--batch_size", "2"]  # fmt: skip
    )
    assert results["num_phrases"] == 3 and len(results["records"]) == 3
    assert set(results["per_category"]) <= {"Pleural Effusion", "Cardiomegaly", "Pneumothorax", "Consolidation"}
    average = results["category_average"]
    for route in ("word_to_patch", "phrase_to_patch"):
        for suffix in ("hit", "miou", "shuffled_image_baseline_hit", "shuffled_image_baseline_miou"):
            assert 0 <= average[f"{route}_{suffix}"] <= 1
    assert 0 < average["random_point_baseline"] < 1 and 0 <= average["oracle_hit"] <= 1
    table = (tmp_path / "out" / "phrase_grounding_results.md").read_text()
    assert "phrase-to-patch (BioViL" in table and "text prior CNR" in table
