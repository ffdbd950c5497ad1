"""
Tests of `examples/prepare_datasets.py` and `sista_examples.data.prepare`.

Every dataset is prepared from a small fixture that the test writes in that dataset's real file
format (column names, value formats, folder layout; DICOMs with real tags and 8/12/16-bit pixel
data), with known pixel content, boxes, masks and labels, and a few broken rows.
"""

import csv
import gzip
import io
import json

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

import sista_examples.data.prepare as prepare_datasets
from conftest import load_script
from sista_examples.data.label_fractions import label_fraction_ranks, select_label_fraction
from sista_examples.data.prepare import (
    ChexpertArguments,
    CovidxArguments,
    MimicCxrArguments,
    ObjectCxrArguments,
    RsnaPneumoniaArguments,
    SiimPneumothoraxArguments,
    chexpert_label_vector,
    detect_covidx_classes,
    parse_object_cxr_shape,
    prepare_chexpert,
    prepare_covidx,
    prepare_mimic_cxr,
    prepare_object_cxr,
    prepare_rsna_pneumonia,
    prepare_siim_pneumothorax,
    resolve_chexpert_path,
    SkipExample,
    SkipLog,
    assign_group_splits,
    build_objects,
    clip_box,
    decode_siim_rle,
    load_prepared_dataset,
    read_image,
    read_image_or_skip,
    resized_size,
)


CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
QUADRANT_VALUES = (0, 80, 160, 240)  # top-left, top-right, bottom-left, bottom-right


# ---------------------------------------------------------------------------
# Fixture writers
# ---------------------------------------------------------------------------


def quadrant_pixels(width, height, values=QUADRANT_VALUES, dtype=np.uint8):
    """An image whose four quadrants have constant, distinct values, to check size and orientation."""
    pixels = np.empty((height, width), dtype=dtype)
    pixels[: height // 2, : width // 2], pixels[: height // 2, width // 2 :] = values[0], values[1]
    pixels[height // 2 :, : width // 2], pixels[height // 2 :, width // 2 :] = values[2], values[3]
    return pixels


def assert_quadrants(image, values=QUADRANT_VALUES, tolerance=0, margin=2):
    """Check the quadrant values away from the edges (resampling blurs a couple of pixels)."""
    pixels = np.asarray(image).astype(int)
    height, width = pixels.shape
    half_h, half_w = height // 2, width // 2
    regions = [
        pixels[margin : half_h - margin, margin : half_w - margin],
        pixels[margin : half_h - margin, half_w + margin : width - margin],
        pixels[half_h + margin : height - margin, margin : half_w - margin],
        pixels[half_h + margin : height - margin, half_w + margin : width - margin],
    ]
    for region, value in zip(regions, values):
        assert region.size and np.abs(region - value).max() <= tolerance, (region, value)


def write_jpeg(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def write_truncated_jpeg(path, size=(64, 64)):
    write_jpeg(path, quadrant_pixels(*size))
    path.write_bytes(path.read_bytes()[:300])


def write_dicom(
    path,
    pixels,
    photometric="MONOCHROME2",
    bits_stored=None,
    slope=None,
    intercept=None,
    window=None,
    patient_id="anonymous",
    sop_instance_uid=None,
    jpeg_baseline=False,
):
    """
    Write a single-frame CR DICOM with the tags a real radiograph carries: uncompressed, or 8-bit
    JPEG baseline as the RSNA and SIIM files are.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg_baseline else ExplicitVRLittleEndian
    dicom = DicomDataset()
    dicom.file_meta = meta
    dicom.SOPClassUID = CR_IMAGE_STORAGE
    dicom.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dicom.StudyInstanceUID, dicom.SeriesInstanceUID = generate_uid(), generate_uid()
    dicom.PatientID, dicom.PatientName = patient_id, patient_id
    dicom.Modality, dicom.BodyPartExamined, dicom.ViewPosition = "CR", "CHEST", "PA"
    dicom.Rows, dicom.Columns = pixels.shape
    dicom.SamplesPerPixel, dicom.PhotometricInterpretation = 1, photometric
    bits_allocated = pixels.dtype.itemsize * 8
    dicom.BitsAllocated, dicom.BitsStored = bits_allocated, bits_stored or bits_allocated
    dicom.HighBit, dicom.PixelRepresentation = dicom.BitsStored - 1, 0
    if slope is not None:
        dicom.RescaleSlope, dicom.RescaleIntercept, dicom.RescaleType = slope, intercept, "US"
    if window is not None:
        dicom.WindowCenter, dicom.WindowWidth = window
    if jpeg_baseline:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        dicom.PixelData = encapsulate([buffer.getvalue()])
        dicom["PixelData"].VR = "OB"
    else:
        dicom.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dicom.save_as(path, enforce_file_format=True)


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def read_skipped(output_dir):
    with open(output_dir / "skipped.csv", newline="") as file:
        return list(csv.DictReader(file))


def skipped_reasons(output_dir):
    return sorted((row["image_id"], row["reason"]) for row in read_skipped(output_dir))


def rows_by_id(dataset_dict):
    return {row["image_id"]: (split, row) for split, dataset in dataset_dict.items() for row in dataset}


def encode_siim_rle(mask):
    """Reference SIIM encoder, written from the format description: column-major pixels, pairs of
    (gap since the end of the previous run, run length)."""
    height, width = mask.shape
    pixels = [bool(mask[y, x]) for x in range(width) for y in range(height)]
    values, previous_end, index = [], 0, 0
    while index < len(pixels):
        if not pixels[index]:
            index += 1
            continue
        start = index
        while index < len(pixels) and pixels[index]:
            index += 1
        values += [start - previous_end, index - start]
        previous_end = index
    return " ".join(str(value) for value in values)


def common_args(data_dir, output_dir, **kwargs):
    return {"data_dir": str(data_dir), "output_dir": str(output_dir), "image_size": 32, **kwargs}


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, image_size, expected",
    [((1024, 1024), 512, (512, 512)), ((2000, 1000), 512, (512, 256)), ((300, 400), 512, (384, 512))],
)
def test_resized_size_keeps_aspect_ratio(size, image_size, expected):
    assert resized_size(size, image_size) == expected


def test_read_png_resizes_longer_side_and_keeps_content(tmp_path):
    write_png(tmp_path / "image.png", quadrant_pixels(96, 48))
    image, original_size = read_image(tmp_path / "image.png", 32)
    assert image.mode == "L" and image.size == (32, 16) and original_size == (96, 48)
    assert_quadrants(image)


def test_read_large_jpeg_uses_reduced_decoding_and_keeps_content(tmp_path):
    write_jpeg(tmp_path / "image.jpg", quadrant_pixels(800, 1200))
    image, original_size = read_image(tmp_path / "image.jpg", 64)
    assert image.size == (43, 64) and original_size == (800, 1200)
    assert_quadrants(image, tolerance=3)


def test_read_16_bit_png_is_scaled_not_clipped(tmp_path):
    write_png(tmp_path / "image.png", quadrant_pixels(40, 40, values=(0, 1000, 3000, 4000), dtype=np.uint16))
    image, _ = read_image(tmp_path / "image.png", 20)
    assert_quadrants(image, values=(0, 64, 191, 255), tolerance=1)


def linear_window(value, center, width, y_min, y_max):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR windowing, as a reference."""
    if value <= center - 0.5 - (width - 1) / 2:
        return y_min
    if value > center - 0.5 + (width - 1) / 2:
        return y_max
    return ((value - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_12_bit_applies_rescale_then_window_and_inverts_monochrome1(tmp_path, photometric):
    raw = (0, 1000, 1600, 4095)
    slope, intercept, center, width = 2.0, -1024.0, 2000.0, 2000.0
    write_dicom(
        tmp_path / "image.dcm",
        quadrant_pixels(64, 64, values=raw, dtype=np.uint16),
        photometric=photometric,
        bits_stored=12,
        slope=slope,
        intercept=intercept,
        window=(center, width),
    )
    y_min, y_max = intercept, 4095 * slope + intercept
    windowed = [linear_window(value * slope + intercept, center, width, y_min, y_max) for value in raw]
    expected = [round(255 * (value - min(windowed)) / (max(windowed) - min(windowed))) for value in windowed]
    if photometric == "MONOCHROME1":
        expected = [255 - value for value in expected]
    assert expected[2] not in (0, 255)  # the third quadrant falls inside the window only after rescaling

    image, original_size = read_image(tmp_path / "image.dcm", 32)
    assert image.size == (32, 32) and original_size == (64, 64)
    assert_quadrants(image, values=expected, tolerance=1)


def test_dicom_16_bit_monochrome1_without_window_is_inverted_min_max(tmp_path):
    write_dicom(
        tmp_path / "image.dcm",
        quadrant_pixels(48, 32, values=(100, 20000, 40000, 60100), dtype=np.uint16),
        photometric="MONOCHROME1",
    )
    image, _ = read_image(tmp_path / "image.dcm", 48)
    assert image.size == (48, 32)
    assert_quadrants(image, values=(255, 170, 85, 0), tolerance=1)


def test_bad_image_files_become_skips(tmp_path):
    write_truncated_jpeg(tmp_path / "truncated.jpg")
    (tmp_path / "garbage.dcm").write_bytes(b"not a dicom file" * 20)
    (tmp_path / "garbage.png").write_bytes(b"not a png file" * 20)
    write_dicom(tmp_path / "short.dcm", quadrant_pixels(32, 32, dtype=np.uint16), bits_stored=12)
    (tmp_path / "short.dcm").write_bytes((tmp_path / "short.dcm").read_bytes()[:-100])
    expected = {"missing.jpg": "missing_image", "truncated.jpg": "unreadable_image", "garbage.dcm": "unreadable_image"}
    expected.update({"garbage.png": "unreadable_image", "short.dcm": "unreadable_image"})
    for name, reason in expected.items():
        with pytest.raises(SkipExample) as skip:
            read_image_or_skip(tmp_path / name, 16)
        assert skip.value.reason == reason, name


# ---------------------------------------------------------------------------
# Boxes, masks, labels, splits
# ---------------------------------------------------------------------------


def test_siim_rle_decodes_column_major_relative_offsets():
    # 3x3 image: "0 2" covers column 0 rows 0-1; "4 1" starts 4 pixels after that run ends, at
    # column-major pixel 6 = column 2, row 0.
    expected = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(decode_siim_rle("0 2 4 1", 3, 3), expected)


def test_siim_rle_decode_inverts_reference_encoder():
    rng = np.random.default_rng(0)
    for height, width in [(7, 5), (16, 16), (9, 13)]:
        mask = rng.random((height, width)) > 0.6
        mask[-1, -1] = True  # a run ending on the last pixel
        assert decode_siim_rle(encode_siim_rle(mask), width, height).tolist() == mask.tolist()


@pytest.mark.parametrize("rle", ["1 2 3", "a b", "5 -1", "0 100", "", "1.5 2"])
def test_malformed_siim_rle_raises(rle):
    with pytest.raises(ValueError):
        decode_siim_rle(rle, 8, 8)


@pytest.mark.parametrize(
    "box, expected",
    [
        ((10, 20, 30, 40), ([10, 20, 30, 40], "")),
        ((-5, 90, 30, 130), ([0, 90, 30, 100], "")),
        ((120, 10, 150, 20), (None, "box_outside_image")),
        ((10, 10, 10, 40), (None, "degenerate_box")),
        ((float("nan"), 10, 20, 40), (None, "malformed_box")),
    ],
)
def test_clip_box_rules(box, expected):
    assert clip_box(box, (100, 100)) == expected


def test_build_objects_rescales_to_coco_on_resized_image_and_logs_dropped_boxes():
    skip_log = SkipLog()
    annotations = [
        {"id": 7, "category": 0, "box": [100, 50, 300, 150]},
        {"id": 8, "category": 0, "box": [900, 400, 1100, 600]},  # partly outside: clipped to 1000x500
        {"id": 9, "category": 0, "box": [2000, 0, 2100, 10]},
    ]
    objects = build_objects(annotations, (1000, 500), (100, 50), "image", "train", skip_log)
    assert objects["bbox"] == [[10, 5, 20, 10], [90, 40, 10, 10]]
    assert objects["area"] == [200, 100] and objects["id"] == [7, 8] and objects["category"] == [0, 0]
    assert [row[2] for row in skip_log.rows] == ["box_outside_image"]


def test_chexpert_label_policy_maps_every_value():
    classes, uncertain_ones = ("Atelectasis", "Cardiomegaly"), ("Atelectasis",)
    cases = {
        ("1.0", "1.0"): [1, 1],
        ("0.0", "0.0"): [0, 0],
        ("-1.0", "-1.0"): [1, 0],  # U-Ones for Atelectasis, U-Zeros for Cardiomegaly
        ("", ""): [0, 0],  # blank = not mentioned
        ("1", "-1"): [1, 0],
    }
    for (atelectasis, cardiomegaly), expected in cases.items():
        row = {"Atelectasis": atelectasis, "Cardiomegaly": cardiomegaly}
        assert chexpert_label_vector(row, classes, uncertain_ones) == expected
    with pytest.raises(ValueError, match="Cardiomegaly='2.0'"):
        chexpert_label_vector({"Atelectasis": "1.0", "Cardiomegaly": "2.0"}, classes, uncertain_ones)


def test_group_splits_are_deterministic_exact_and_independent_of_order():
    groups = [f"patient{index:05d}" for index in range(200)]
    split_of = assign_group_splits(groups, {"validation": 0.2, "test": 0.1}, seed=3)
    assert split_of == assign_group_splits(reversed(groups * 2), {"validation": 0.2, "test": 0.1}, seed=3)
    counts = {split: list(split_of.values()).count(split) for split in ("train", "validation", "test")}
    assert counts == {"train": 140, "validation": 40, "test": 20}
    assert split_of != assign_group_splits(groups, {"validation": 0.2, "test": 0.1}, seed=4)
    with pytest.raises(ValueError):
        assign_group_splits(groups, {"validation": 0.6, "test": 0.5}, seed=3)


def test_label_fractions_are_nested_and_sized():
    image_ids = [f"image{index}" for index in range(1000)]
    ranks = label_fraction_ranks(image_ids, seed=0)
    assert sorted(ranks) == list(range(1000)) and ranks == label_fraction_ranks(image_ids, seed=0)
    # Rows skipped after ranking leave gaps in the ranks: fractions must still be nested and sized.
    dataset = Dataset.from_dict({"image_id": image_ids, "label_fraction_rank": ranks}).select(range(0, 1000, 2))
    subsets = {fraction: set(select_label_fraction(dataset, fraction)["image_id"]) for fraction in (0.01, 0.1, 1.0)}
    assert [len(subsets[fraction]) for fraction in (0.01, 0.1, 1.0)] == [5, 50, 500]
    assert subsets[0.01] < subsets[0.1] < subsets[1.0]
    with pytest.raises(ValueError):
        select_label_fraction(dataset, 0)


# ---------------------------------------------------------------------------
# MIMIC-CXR-JPG
# ---------------------------------------------------------------------------

MIMIC_METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:
 The lungs are clear.  No pleural effusion.

 IMPRESSION:
 No acute cardiopulmonary process.
"""


def write_mimic_fixture(root):
    """Studies of 4 patients; images (dicom id, subject, study, view, split, file state, report)."""
    images = [
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", "train", "ok", "full"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", "train", "ok", "full"),
        ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "53189527", "AP", "train", "ok", "impression"),
        ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000764", "57375967", "AP", "validate", "ok", "full"),
        ("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "10000898", "50771383", "PA", "test", "ok", "empty"),
        ("b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f", "10000935", "51178377", "PA", "train", "missing", "full"),
        ("8959e402-2175d68d-edba5a6c-520c2f2f-ee29ebb5", "10000935", "51178377", "PA", "train", "truncated", "full"),
        ("cfd9a2b4-40c3c37b-e4ffd520-1cf5e7fd-f41c5e24", "10000935", "55697293", "PA", None, "ok", "full"),
        ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", "10000935", "58219844", "PA", "train", "ok", "missing"),
    ]
    reports = {
        "full": MIMIC_REPORT,
        "impression": "FINAL REPORT\n IMPRESSION:\n 1. Mild cardiomegaly.\n 2. No focal consolidation.\n",
        "empty": "FINAL REPORT\n FINDINGS:\n\n IMPRESSION:\n",
    }
    metadata_rows, split_rows = [], []
    for dicom_id, subject, study, view, split, state, report in images:
        metadata_rows.append(
            [dicom_id, subject, study, "CHEST (PA AND LAT)", view, 96, 64, 21800506, 213014.531, "", "", ""]
        )
        if split:
            split_rows.append([dicom_id, study, subject, split])
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        if state == "ok":
            write_jpeg(folder / f"s{study}" / f"{dicom_id}.jpg", quadrant_pixels(64, 96))
        elif state == "truncated":
            write_truncated_jpeg(folder / f"s{study}" / f"{dicom_id}.jpg")
        if report != "missing":
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"s{study}.txt").write_text(reports[report])

    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(MIMIC_METADATA_HEADER)
        writer.writerows(metadata_rows)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    labels = dict.fromkeys(prepare_datasets.CHEXPERT_OBSERVATIONS, "")
    label_rows = [
        {**labels, "subject_id": "10000032", "study_id": "50414267", "No Finding": "1.0"},
        {**labels, "subject_id": "10000032", "study_id": "53189527", "Cardiomegaly": "1.0", "Consolidation": "0.0",
         "Edema": "-1.0"},
        {**labels, "subject_id": "10000898", "study_id": "50771383", "Pneumonia": "-1.0"},
        {**labels, "subject_id": "10000935", "study_id": "51178377", "Edema": "maybe"},
    ]  # fmt: skip
    header = ["subject_id", "study_id", *prepare_datasets.CHEXPERT_OBSERVATIONS]
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", header, [[row[key] for key in header] for row in label_rows])


def test_prepare_mimic_cxr(tmp_path):
    write_mimic_fixture(tmp_path / "mimic")
    output_dir = tmp_path / "out"
    dataset_dict = prepare_mimic_cxr(MimicCxrArguments(**common_args(tmp_path / "mimic", output_dir)))

    # The only test image has an empty report: the split is left out.
    assert {split: len(dataset) for split, dataset in dataset_dict.items()} == {"train": 2, "validation": 1}
    rows = rows_by_id(dataset_dict)
    split, first = rows["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    assert split == "train" and first["report_source"] == "sections"
    assert first["report"] == "The lungs are clear. No pleural effusion. No acute cardiopulmonary process."
    assert first["study_id"] == "50414267" and first["patient_id"] == "10000032" and first["view_position"] == "PA"
    assert first["image"].mode == "L" and first["image"].size == (21, 32)
    assert_quadrants(first["image"], tolerance=4, margin=3)
    no_finding = prepare_datasets.CHEXPERT_OBSERVATIONS.index("No Finding")
    assert first["labels"] == [int(index == no_finding) for index in range(14)]

    _, impression_only = rows["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"]
    assert impression_only["report"] == "Mild cardiomegaly. No focal consolidation."
    assert impression_only["report_source"] == "impression" and impression_only["findings"] == ""
    cardiomegaly = prepare_datasets.CHEXPERT_OBSERVATIONS.index("Cardiomegaly")
    assert impression_only["labels"] == [int(index == cardiomegaly) for index in range(14)]  # Edema -1 -> 0
    # No labeler row for this study: kept for pre-training with all-zero labels.
    assert rows["68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"][0] == "validation"
    assert rows["68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"][1]["labels"] == [0] * 14

    assert skipped_reasons(output_dir) == sorted(
        [
            ("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "empty_report"),
            ("b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f", "unknown_label"),
            ("8959e402-2175d68d-edba5a6c-520c2f2f-ee29ebb5", "unknown_label"),
            ("cfd9a2b4-40c3c37b-e4ffd520-1cf5e7fd-f41c5e24", "missing_split"),
            ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", "missing_report"),
        ]
    )  # the lateral image is left out by design, not skipped
    _, metadata = load_prepared_dataset(output_dir)
    assert metadata["class_names"] == list(prepare_datasets.CHEXPERT_OBSERVATIONS)
    assert metadata["num_rows"] == {"train": 2, "validation": 1}
    assert metadata["skipped"] == {"empty_report": 1, "missing_report": 1, "missing_split": 1, "unknown_label": 2}


def set_mimic_views(root, views: dict[str, str]) -> None:
    """Rewrites the ViewPosition of the given dicom ids in the fixture's metadata csv."""
    path = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    with gzip.open(path, "rt", newline="") as file:
        rows = list(csv.reader(file))
    view_column = rows[0].index("ViewPosition")
    for row in rows[1:]:
        row[view_column] = views.get(row[0], row[view_column])
    with gzip.open(path, "wt", newline="") as file:
        csv.writer(file).writerows(rows)


@pytest.mark.parametrize("keep_missing", [False, True])
def test_prepare_mimic_cxr_writes_blank_and_other_view_positions_to_skipped(tmp_path, keep_missing):
    write_mimic_fixture(tmp_path / "mimic")
    blank, axial = "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"
    set_mimic_views(tmp_path / "mimic", {blank: "", axial: "AP AXIAL"})
    output_dir = tmp_path / "out"
    arguments = MimicCxrArguments(
        **common_args(tmp_path / "mimic", output_dir), keep_missing_view_position=keep_missing
    )
    dataset_dict = prepare_mimic_cxr(arguments)

    skipped = {row["image_id"]: row for row in read_skipped(output_dir)}
    assert skipped[axial]["reason"] == "other_view_position" and "AP AXIAL" in skipped[axial]["detail"]
    assert skipped[axial]["split"] == "validation"
    rows = rows_by_id(dataset_dict)
    if keep_missing:
        assert blank not in skipped and rows[blank][1]["view_position"] == ""
    else:
        assert skipped[blank]["reason"] == "missing_view_position" and skipped[blank]["split"] == "train"
        assert blank not in rows
    _, metadata = load_prepared_dataset(output_dir)
    assert metadata["skipped"].get("missing_view_position", 0) == (0 if keep_missing else 1)
    assert "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962" not in skipped  # lateral: left out by design


def test_prepare_mimic_cxr_skips_missing_and_truncated_images(tmp_path):
    write_mimic_fixture(tmp_path / "mimic")
    labels_path = tmp_path / "mimic" / "mimic-cxr-2.0.0-chexpert.csv"
    labels_path.write_text(labels_path.read_text().replace("maybe", "1.0"))
    output_dir = tmp_path / "out"
    prepare_mimic_cxr(MimicCxrArguments(**common_args(tmp_path / "mimic", output_dir)))
    reasons = dict(skipped_reasons(output_dir))
    assert reasons["b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f"] == "missing_image"
    assert reasons["8959e402-2175d68d-edba5a6c-520c2f2f-ee29ebb5"] == "unreadable_image"
    assert all(row["split"] for row in read_skipped(output_dir) if row["reason"].endswith("image"))

    # A previous output is replaced only when asked.
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        prepare_mimic_cxr(MimicCxrArguments(**common_args(tmp_path / "mimic", output_dir)))
    args = MimicCxrArguments(**common_args(tmp_path / "mimic", output_dir, image_size=16, overwrite_output_dir=True))
    assert prepare_mimic_cxr(args)["train"][0]["image"].size == (11, 16)


def test_wrong_folder_fails_before_any_work_naming_the_file(tmp_path):
    (tmp_path / "not_mimic").mkdir()
    args = MimicCxrArguments(**common_args(tmp_path / "not_mimic", tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-metadata.csv"):
        prepare_mimic_cxr(args)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="stage_2_train_labels.csv"):
        prepare_rsna_pneumonia(RsnaPneumoniaArguments(**common_args(tmp_path / "not_mimic", tmp_path / "out")))


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="split fractions"):
        RsnaPneumoniaArguments(**common_args(tmp_path, tmp_path / "out", validation_fraction=0.6, test_fraction=0.4))
    with pytest.raises(ValueError, match="Pneumonia"):
        ChexpertArguments(**common_args(tmp_path, tmp_path / "out", uncertain_ones="Atelectasis,Pneumonia"))
    with pytest.raises(ValueError, match="image_format"):
        CovidxArguments(**common_args(tmp_path, tmp_path / "out", image_format="tiff"))


def test_existing_output_dir_is_not_overwritten_without_flag(tmp_path):
    write_mimic_fixture(tmp_path / "mimic")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # even with the flag, a folder this script did not write is kept
        args = MimicCxrArguments(**common_args(tmp_path / "mimic", tmp_path / "out", overwrite_output_dir=overwrite))
        with pytest.raises(ValueError, match="out"):
            prepare_mimic_cxr(args)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------
# CheXpert
# ---------------------------------------------------------------------------

CHEXPERT_HEADER = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly",
    "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip


def chexpert_row(path, view="Frontal", ap_pa="AP", **labels):
    row = dict.fromkeys(CHEXPERT_HEADER, "")
    row.update(
        {
            "Path": path,
            "Sex": "Female",
            "Age": "68",
            "Frontal/Lateral": view,
            "AP/PA": ap_pa if view == "Frontal" else "",
        }
    )
    row.update({name.replace("_", " "): value for name, value in labels.items()})
    return [row[name] for name in CHEXPERT_HEADER]


def write_chexpert_fixture(parent):
    root = parent / "CheXpert-v1.0-small"
    train_rows = []
    for patient in range(1, 11):
        for study in (1, 2):
            path = f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/view1_frontal.jpg"
            write_jpeg(parent / path, quadrant_pixels(48, 40))
            train_rows.append(chexpert_row(path, Cardiomegaly="1.0", Edema="-1.0", Pleural_Effusion="0.0"))
    lateral = "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg"
    train_rows.append(chexpert_row(lateral, view="Lateral"))
    policy = "CheXpert-v1.0-small/train/patient00011/study1/view1_frontal.jpg"
    write_jpeg(parent / policy, quadrant_pixels(48, 40))
    train_rows.append(
        chexpert_row(
            policy, Atelectasis="-1.0", Cardiomegaly="-1.0", Consolidation="", Edema="1.0", Pleural_Effusion="-1.0"
        )
    )
    bad_label = "CheXpert-v1.0-small/train/patient00012/study1/view1_frontal.jpg"
    train_rows.append(chexpert_row(bad_label, Edema="yes"))
    train_rows.append(chexpert_row("CheXpert-v1.0-small/train/patient00013/study1/view1_frontal.jpg"))  # no file
    write_csv(root / "train.csv", CHEXPERT_HEADER, train_rows)

    valid_rows = []
    for patient in (64541, 64542):
        path = f"CheXpert-v1.0-small/valid/patient{patient}/study1/view1_frontal.jpg"
        write_jpeg(parent / path, quadrant_pixels(48, 40))
        valid_rows.append(chexpert_row(path, ap_pa="PA", Atelectasis="1.0", Edema="0.0"))
    write_csv(root / "valid.csv", CHEXPERT_HEADER, valid_rows)
    return root


def test_resolve_chexpert_path_drops_the_dataset_folder(tmp_path):
    path, image_id = resolve_chexpert_path(tmp_path, "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    assert path == tmp_path / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    assert image_id == "train/patient00001/study1/view1_frontal.jpg"
    assert resolve_chexpert_path(tmp_path, "valid/patient64541/study1/view1_frontal.jpg")[1].startswith("valid/")


def test_prepare_chexpert(tmp_path):
    root = write_chexpert_fixture(tmp_path)
    output_dir = tmp_path / "out"
    args = ChexpertArguments(**common_args(root, output_dir, validation_fraction=0.2))
    dataset_dict = prepare_chexpert(args)

    assert {split: len(dataset) for split, dataset in dataset_dict.items()} == {
        "train": 17,
        "validation": 4,
        "test": 2,
    }
    patients = {split: set(dataset["patient_id"]) for split, dataset in dataset_dict.items()}
    assert len(patients["validation"]) == 2 and not patients["train"] & patients["validation"]
    assert patients["test"] == {"patient64541", "patient64542"}
    rows = rows_by_id(dataset_dict)
    # Order: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion.
    assert rows["train/patient00001/study1/view1_frontal.jpg"][1]["labels"] == [0, 1, 0, 1, 0]
    # -1 -> 1 for Atelectasis (U-Ones), 0 for Cardiomegaly and Pleural Effusion (U-Zeros); blank -> 0.
    assert rows["train/patient00011/study1/view1_frontal.jpg"][1]["labels"] == [1, 0, 0, 1, 0]
    test_row = rows["valid/patient64541/study1/view1_frontal.jpg"][1]
    assert test_row["labels"] == [1, 0, 0, 0, 0] and test_row["view_position"] == "PA"
    assert test_row["study_id"] == "patient64541/study1" and test_row["image"].size == (32, 27)
    assert_quadrants(test_row["image"], tolerance=4, margin=3)
    assert skipped_reasons(output_dir) == [
        ("train/patient00012/study1/view1_frontal.jpg", "unknown_label"),
        ("train/patient00013/study1/view1_frontal.jpg", "missing_image"),
    ]
    assert json.loads((output_dir / "sista_dataset.json").read_text())["class_names"] == list(
        prepare_datasets.CHEXPERT_COMPETITION_LABELS
    )

    # Same seed, same splits and label-fraction ranks.
    again = prepare_chexpert(
        ChexpertArguments(**common_args(root, tmp_path / "again", validation_fraction=0.2, num_proc=2))
    )
    for split in dataset_dict:
        columns = ["image_id", "label_fraction_rank"]
        assert again[split].select_columns(columns).to_list() == dataset_dict[split].select_columns(columns).to_list()


# ---------------------------------------------------------------------------
# RSNA Pneumonia
# ---------------------------------------------------------------------------


def test_prepare_rsna_pneumonia(tmp_path):
    root = tmp_path / "rsna"
    patients = {
        "0004cfab-14fd-4e49-80ba-63a80b6bddd6": [("", "", "", "", "0")],
        "00436515-870c-4b36-a041-de91049b9ab4": [("10", "20", "20", "10", "1"), ("50", "40", "30", "40", "1")],
        "00704310-78a8-4b38-8475-49f4573b2dbb": [("70", "70", "10", "10", "1")],  # wholly outside the 64x64 image
        "00aecb01-a116-45a2-956c-08d2fa55433f": [("12", "12", "8", "8", "1"), ("nan?", "1", "2", "3", "1")],
        "00c0b293-48e7-4e16-ac76-9269ba535a62": [("", "", "", "", "0")],  # no DICOM file
        "00f08de1-517e-4652-a04f-d1dc9ee48593": [("", "", "", "", "2")],
    }
    rows = [[patient, *values] for patient, boxes in patients.items() for values in boxes]
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rows)
    for patient in patients:
        if patient != "00c0b293-48e7-4e16-ac76-9269ba535a62":
            path = root / "stage_2_train_images" / f"{patient}.dcm"
            write_dicom(path, quadrant_pixels(64, 64), patient_id=patient, jpeg_baseline=True)

    output_dir = tmp_path / "out"
    args = RsnaPneumoniaArguments(**common_args(root, output_dir, validation_fraction=0.25, test_fraction=0.25))
    rows = rows_by_id(prepare_rsna_pneumonia(args))

    assert sorted(rows) == ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4",
                            "00aecb01-a116-45a2-956c-08d2fa55433f"]  # fmt: skip
    _, two_boxes = rows["00436515-870c-4b36-a041-de91049b9ab4"]
    assert two_boxes["labels"] == [1] and two_boxes["image"].size == (32, 32)
    assert_quadrants(two_boxes["image"], tolerance=2)  # 8-bit data kept as stored, not stretched
    # 64 -> 32 pixels halves every coordinate; the second box is clipped at the image edge (64 -> 32).
    assert two_boxes["objects"]["bbox"] == [[5, 10, 10, 5], [25, 20, 7, 12]]
    assert two_boxes["objects"]["area"] == [50, 84] and two_boxes["objects"]["category"] == [0, 0]
    expected_mask = np.zeros((32, 32), dtype=np.uint8)
    expected_mask[10:15, 5:15] = expected_mask[20:32, 25:32] = 255
    np.testing.assert_array_equal(np.asarray(two_boxes["mask"]), expected_mask)

    _, negative = rows["0004cfab-14fd-4e49-80ba-63a80b6bddd6"]
    assert negative["labels"] == [0] and negative["objects"]["bbox"] == [] and not np.asarray(negative["mask"]).any()
    assert rows["00aecb01-a116-45a2-956c-08d2fa55433f"][1]["objects"]["bbox"] == [[6, 6, 4, 4]]
    assert skipped_reasons(output_dir) == sorted(
        [
            ("00704310-78a8-4b38-8475-49f4573b2dbb", "box_outside_image"),
            ("00704310-78a8-4b38-8475-49f4573b2dbb", "no_valid_box"),
            ("00aecb01-a116-45a2-956c-08d2fa55433f", "malformed_box"),
            ("00c0b293-48e7-4e16-ac76-9269ba535a62", "missing_image"),
            ("00f08de1-517e-4652-a04f-d1dc9ee48593", "unknown_label"),
        ]
    )


# ---------------------------------------------------------------------------
# SIIM-ACR Pneumothorax
# ---------------------------------------------------------------------------


def test_prepare_siim_pneumothorax(tmp_path):
    root, height, width = tmp_path / "siim", 48, 40
    first_part, second_part = np.zeros((height, width), bool), np.zeros((height, width), bool)
    first_part[8:24, 4:16] = True
    second_part[20:32, 12:28] = True
    image_ids = [f"1.2.276.0.7230010.3.1.4.8323329.{index}.1517875162.{index}" for index in range(5)]
    patients = ["17d405a3-a0d2-4901-b33a-63906aa48d9f", "17d405a3-a0d2-4901-b33a-63906aa48d9f",
                "4d4e6a3c-0b1d-4a7b-a4a4-2c4f2f6b7b8d", "8a2c6a3b-1f0e-4c1b-9e55-0b6cf3f5a3a1", "missing"]  # fmt: skip
    rle_rows = [
        (image_ids[0], encode_siim_rle(first_part)),
        (image_ids[0], encode_siim_rle(second_part)),
        (image_ids[1], "-1"),
        (image_ids[2], "12 5 7"),  # odd number of values
        (image_ids[3], "-1"),
        (image_ids[4], "-1"),  # no DICOM file
    ]
    # The real header and values carry a space after the comma.
    lines = ["ImageId, EncodedPixels"] + [f"{image_id}, {rle}" for image_id, rle in rle_rows]
    root.mkdir()
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    for image_id, patient in zip(image_ids[:4], patients):
        path = root / "dicom-images-train" / f"1.2.276.0.{image_id[-4:]}" / "1.2.276.0.7230010" / f"{image_id}.dcm"
        pixels = quadrant_pixels(width, height, values=(4095, 3000, 1000, 0), dtype=np.uint16)
        write_dicom(
            path, pixels, photometric="MONOCHROME1", bits_stored=12, patient_id=patient, sop_instance_uid=image_id
        )

    output_dir = tmp_path / "out"
    args = SiimPneumothoraxArguments(
        **common_args(root, output_dir, image_size=24, validation_fraction=0.3, test_fraction=0.3)
    )
    rows = rows_by_id(prepare_siim_pneumothorax(args))

    assert sorted(rows) == sorted([image_ids[0], image_ids[1], image_ids[3]])
    assert rows[image_ids[0]][0] == rows[image_ids[1]][0]  # same patient, same split
    _, positive = rows[image_ids[0]]
    assert positive["labels"] == [1] and positive["patient_id"] == patients[0] and positive["image"].size == (20, 24)
    # 12-bit (4095, 3000, 1000, 0) min-max scaled to (255, 187, 62, 0), then MONOCHROME1 inverted.
    assert_quadrants(positive["image"], values=(0, 68, 193, 255), tolerance=1)
    # Union of both RLE rows, resized 48x40 -> 24x20 with nearest-neighbour sampling.
    expected_mask = np.zeros((24, 20), dtype=np.uint8)
    expected_mask[4:12, 2:8] = expected_mask[10:16, 6:14] = 255
    np.testing.assert_array_equal(np.asarray(positive["mask"]), expected_mask)
    assert rows[image_ids[1]][1]["labels"] == [0] and not np.asarray(rows[image_ids[1]][1]["mask"]).any()
    assert skipped_reasons(output_dir) == sorted([(image_ids[2], "malformed_rle"), (image_ids[4], "missing_image")])


# ---------------------------------------------------------------------------
# COVIDx
# ---------------------------------------------------------------------------


def write_covidx_fixture(root):
    train_lines = []
    for index in range(10):
        name = f"MIDRC-RICORD-1C-419639-00{index}-46647-0.png"
        write_png(root / "train" / name, quadrant_pixels(48, 48))
        label = "positive" if index % 2 else "negative"
        train_lines.append(f"419639-00{index // 2} {name} {label} ricord")
    write_png(
        root / "train" / "sixteen-bit.png", quadrant_pixels(48, 48, values=(0, 1000, 3000, 4000), dtype=np.uint16)
    )
    train_lines.append("patient-16 sixteen-bit.png negative rsna")
    train_lines.append("patient-x maybe.png unsure rsna")
    train_lines.append("patient-y only-two-fields.png")
    train_lines.append("patient-z not-downloaded.jpg positive sirm")
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    write_jpeg(root / "test" / "rgb.jpg", np.stack([quadrant_pixels(48, 48)] * 3, axis=-1))
    (root / "test.txt").write_text("patient-t rgb.jpg Positive bimcv\n")


def test_prepare_covidx(tmp_path):
    root = tmp_path / "covidx"
    write_covidx_fixture(root)
    output_dir = tmp_path / "out"
    dataset_dict = prepare_covidx(CovidxArguments(**common_args(root, output_dir, validation_fraction=0.2)))

    _, metadata = load_prepared_dataset(output_dir)
    assert metadata["class_names"] == ["negative", "positive"]
    # 8 patients in train.txt (the malformed line has none): round(0.2 * 8) = 2 go to validation.
    patients = {split: set(dataset["patient_id"]) for split, dataset in dataset_dict.items()}
    assert len(patients["validation"]) == 2 and not patients["train"] & patients["validation"]
    assert len(dataset_dict["train"]) + len(dataset_dict["validation"]) == 11 and len(dataset_dict["test"]) == 1
    rows = rows_by_id(dataset_dict)
    assert rows["MIDRC-RICORD-1C-419639-001-46647-0.png"][1]["labels"] == [0, 1]  # one-hot
    assert rows["MIDRC-RICORD-1C-419639-000-46647-0.png"][1]["labels"] == [1, 0]
    assert rows["MIDRC-RICORD-1C-419639-001-46647-0.png"][1]["source"] == "ricord"
    assert_quadrants(rows["sixteen-bit.png"][1]["image"], values=(0, 64, 191, 255), tolerance=1)
    test_row = rows["rgb.jpg"][1]
    assert test_row["labels"] == [0, 1] and test_row["image"].mode == "L"
    assert_quadrants(test_row["image"], tolerance=4)
    assert skipped_reasons(output_dir) == sorted(
        [("maybe.png", "unknown_label"), ("not-downloaded.jpg", "missing_image"), ("train.txt:13", "malformed_line")]
    )


def test_detect_covidx_classes():
    assert detect_covidx_classes(["normal", "pneumonia", "COVID-19", "COVID-19"]) == (
        "normal",
        "pneumonia",
        "COVID-19",
    )
    assert detect_covidx_classes(["positive", "negative", "normal"]) == ("negative", "positive")
    with pytest.raises(ValueError, match="scheme"):
        detect_covidx_classes(["cat", "dog"])


def test_covidx_num_proc_does_not_change_the_output(tmp_path):
    root = tmp_path / "covidx"
    write_covidx_fixture(root)
    outputs = []
    for num_proc in (1, 2):
        output_dir = tmp_path / f"out{num_proc}"
        load_script("examples/prepare_datasets.py").main(
            ["covidx", "--data_dir", str(root), "--output_dir", str(output_dir), "--image_size", "16",
             "--num_proc", str(num_proc), "--num_shards", "2", "--image_format", "jpeg"]
        )  # fmt: skip
        dataset_dict, _ = load_prepared_dataset(output_dir)
        outputs.append({split: dataset.remove_columns("image").to_list() for split, dataset in dataset_dict.items()})
        assert (output_dir / "skipped.csv").read_text() == (tmp_path / "out1" / "skipped.csv").read_text()
        assert len(list((output_dir / "train").glob("*.arrow"))) == 2
    assert outputs[0] == outputs[1]


# ---------------------------------------------------------------------------
# Object-CXR
# ---------------------------------------------------------------------------


def test_parse_object_cxr_shapes():
    assert parse_object_cxr_shape("0 10 20 30 40") == [10, 20, 30, 40]
    assert parse_object_cxr_shape("1 30 40 10 20") == [10, 20, 30, 40]
    assert parse_object_cxr_shape("2 10 20 30 25 20 40") == [10, 20, 30, 40]
    for shape in ("3 1 2 3 4", "0 1 2 3", "2 1 2 3 4", "0 a b c d"):
        with pytest.raises(ValueError):
            parse_object_cxr_shape(shape)


def test_prepare_object_cxr(tmp_path):
    root = tmp_path / "object_cxr"
    train_rows = [
        ("08001.jpg", "0 10 20 30 40;1 100 60 140 100"),  # the ellipse's box is partly outside the 120x80 image
        ("08002.jpg", ""),
        ("08003.jpg", "2 10 10 20 30 40 20"),
        ("08004.jpg", "0 200 200 210 210"),  # wholly outside
        ("08005.jpg", "5 1 2 3 4;0 4 4 8 8"),  # unknown type next to a good box
        ("08006.jpg", ""),
    ]
    write_csv(root / "train.csv", ["image_name", "annotation"], train_rows)
    write_csv(root / "dev.csv", ["image_name", "annotation"], [("09001.jpg", "0 60 40 80 60")])
    for name, _ in train_rows:
        write_jpeg(root / "train" / name, quadrant_pixels(120, 80))
    write_jpeg(root / "dev" / "09001.jpg", quadrant_pixels(120, 80))

    output_dir = tmp_path / "out"
    args = ObjectCxrArguments(**common_args(root, output_dir, image_size=60, validation_fraction=0.2))
    dataset_dict = prepare_object_cxr(args)
    rows = rows_by_id(dataset_dict)

    assert len(dataset_dict["validation"]) == 1 and len(dataset_dict["test"]) == 1
    assert sorted(rows) == ["08001.jpg", "08002.jpg", "08003.jpg", "08005.jpg", "08006.jpg", "09001.jpg"]
    first = rows["08001.jpg"][1]
    assert first["image"].size == (60, 40) and first["labels"] == [1]
    assert first["objects"]["bbox"] == [[5, 10, 10, 10], [50, 30, 10, 10]]
    assert first["objects"]["id"] == [1, 2] and first["objects"]["area"] == [100, 100]
    assert rows["08003.jpg"][1]["objects"]["bbox"] == [[5, 5, 15, 10]]
    assert rows["08005.jpg"][1]["objects"]["bbox"] == [[2, 2, 2, 2]]
    assert rows["08002.jpg"][1]["labels"] == [0] and rows["08002.jpg"][1]["objects"]["bbox"] == []
    assert rows["09001.jpg"] == ("test", rows["09001.jpg"][1])
    assert rows["09001.jpg"][1]["objects"]["bbox"] == [[30, 20, 10, 10]]
    assert skipped_reasons(output_dir) == [
        ("08004.jpg", "box_outside_image"),
        ("08004.jpg", "no_valid_box"),
        ("08005.jpg", "malformed_annotation"),
    ]
    assert dataset_dict["train"].features["objects"]["category"].feature.names == ["foreign_object"]
