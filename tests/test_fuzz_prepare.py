# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Fuzz suite of dataset preparation (`sista_examples.data.prepare`) and of the scripts' dataset paths.

For each of the six preparers: bad folders and tables (missing, empty, malformed, without a needed column) give a
clear error naming the folder or file; bad images (missing, zero bytes, garbage, truncated, a folder in place of a
file, DICOMs with a cut JPEG frame, no pixel data, colour or several frames) and bad rows (labels, boxes, RLE,
duplicate ids) are counted skips written to `skipped.csv`, with rows in = rows out + rows skipped. Then the rule of
the SynthCXR fallback: a missing dataset path becomes SynthCXR only at the default path or when asked.
"""

import json
import logging
import os
from collections import Counter

import numpy as np
import pytest
from datasets import DatasetDict, load_from_disk
from PIL import Image
from pydicom.encaps import encapsulate

from conftest import load_script
from sista_examples.data import prepare
from sista_examples.data.metadata import write_dataset_metadata
from sista_examples.data.synthcxr import (
    DEFAULT_SYNTHCXR_PATH,
    SynthCXRGenerationArguments,
    generate_synthcxr,
    load_or_generate_synthcxr,
    save_synthcxr,
    should_generate_synthcxr,
)
from sista_examples.evaluation.common import EvaluationArguments, load_evaluation_split
from test_prepare_datasets import (
    CHEXPERT_HEADER,
    MIMIC_METADATA_HEADER,
    MIMIC_REPORT,
    chexpert_row,
    common_args,
    quadrant_pixels,
    read_skipped,
    write_csv,
    write_dicom,
    write_jpeg,
    write_png,
)


# Reasons that count boxes or annotations of a kept image, not rows.
BOX_REASONS = {"malformed_box", "degenerate_box", "box_outside_image", "malformed_annotation"}
IMAGE_SIZE = 32


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------


def write_good_image(path):
    if path.suffix == ".dcm":
        write_dicom(path, quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE), jpeg_baseline=True)
    elif path.suffix == ".png":
        write_png(path, quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE))
    else:
        write_jpeg(path, quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE))


def write_dicom_with_cut_jpeg_frame(path):
    """A valid DICOM (JPEG baseline) whose one encapsulated frame is cut in half: pydicom's RuntimeError on decode."""
    write_dicom(path, quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE), jpeg_baseline=True)
    import pydicom

    dicom = pydicom.dcmread(path)
    frame = next(pydicom.encaps.generate_frames(dicom.PixelData, number_of_frames=1))
    dicom.PixelData = encapsulate([frame[: len(frame) // 2]])
    dicom.save_as(path, enforce_file_format=True)


def write_dicom_without_pixels(path):
    import pydicom

    write_dicom(path, quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE))
    dicom = pydicom.dcmread(path)
    del dicom.PixelData
    dicom.save_as(path, enforce_file_format=True)


def write_bad_image(path, kind):
    """Write the bad file `kind` at `path` (nothing for "missing"); `write_good_image` for "ok"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "ok":
        write_good_image(path)
    elif kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        write_good_image(path)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "folder":
        path.mkdir()
    elif kind == "cut_jpeg_frame":
        write_dicom_with_cut_jpeg_frame(path)
    elif kind == "no_pixel_data":
        write_dicom_without_pixels(path)
    elif kind == "colour":
        write_dicom(path, np.stack([quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE)] * 3, axis=-1).reshape(IMAGE_SIZE, -1))
        import pydicom

        dicom = pydicom.dcmread(path)
        dicom.Columns, dicom.SamplesPerPixel, dicom.PhotometricInterpretation = IMAGE_SIZE, 3, "RGB"
        dicom.PlanarConfiguration = 0
        dicom.save_as(path, enforce_file_format=True)
    elif kind == "two_frames":
        write_dicom(path, np.concatenate([quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE)] * 2))
        import pydicom

        dicom = pydicom.dcmread(path)
        dicom.Rows, dicom.NumberOfFrames = IMAGE_SIZE, 2
        dicom.save_as(path, enforce_file_format=True)
    elif kind != "missing":
        raise ValueError(kind)


PICTURE_KINDS = ("ok", "missing", "zero_byte", "garbage", "truncated", "folder")
DICOM_KINDS = PICTURE_KINDS + ("cut_jpeg_frame", "no_pixel_data", "colour", "two_frames")


def expected_reason(kind):
    return {"ok": None, "missing": "missing_image"}.get(kind, "unreadable_image")


# ---------------------------------------------------------------------------
# One small dataset folder per preparer, each image in a given state
# ---------------------------------------------------------------------------


def build_mimic(root, kinds):
    images = [(f"d{index}", f"1{index:07d}", f"5{index:07d}", kind) for index, kind in enumerate(kinds)]
    write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv",
        MIMIC_METADATA_HEADER,
        [[dicom, subject, study, "", "PA", 32, 32, "", "", "", "", ""] for dicom, subject, study, _ in images],
    )
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[dicom, study, subject, "train"] for dicom, subject, study, _ in images],
    )
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *prepare.CHEXPERT_OBSERVATIONS], [])
    for dicom, subject, study, kind in images:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        write_bad_image(folder / f"s{study}" / f"{dicom}.jpg", kind)
        (folder / f"s{study}.txt").write_text(MIMIC_REPORT)
    ids = [dicom for dicom, *_ in images]
    return prepare.MimicCxrArguments, prepare.prepare_mimic_cxr, ids, root / "mimic-cxr-2.0.0-metadata.csv"


def build_chexpert(root, kinds):
    parent, root = root, root / "CheXpert-v1.0-small"
    paths = [f"CheXpert-v1.0-small/train/patient{index:05d}/study1/view1_frontal.jpg" for index in range(len(kinds))]
    for path, kind in zip(paths, kinds):
        write_bad_image(parent / path, kind)
    write_csv(root / "train.csv", CHEXPERT_HEADER, [chexpert_row(path, Edema="1.0") for path in paths])
    valid = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"
    write_good_image(parent / valid)
    write_csv(root / "valid.csv", CHEXPERT_HEADER, [chexpert_row(valid)])
    ids = [path.split("/", 1)[1] for path in [*paths, valid]]
    return prepare.ChexpertArguments, prepare.prepare_chexpert, ids, root / "train.csv"


def build_rsna(root, kinds):
    ids = [f"{index:08d}-0000-4000-8000-000000000000" for index in range(len(kinds))]
    write_csv(
        root / "stage_2_train_labels.csv",
        ["patientId", "x", "y", "width", "height", "Target"],
        [[patient, "", "", "", "", "0"] for patient in ids],
    )
    for patient, kind in zip(ids, kinds):
        write_bad_image(root / "stage_2_train_images" / f"{patient}.dcm", kind)
    (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    return prepare.RsnaPneumoniaArguments, prepare.prepare_rsna_pneumonia, ids, root / "stage_2_train_labels.csv"


def build_siim(root, kinds):
    ids = [f"1.2.276.0.7230010.3.1.4.{index}" for index in range(len(kinds))]
    write_csv(root / "train-rle.csv", ["ImageId", "EncodedPixels"], [[image_id, "-1"] for image_id in ids])
    for image_id, kind in zip(ids, kinds):
        write_bad_image(root / "dicom-images-train" / "study" / "series" / f"{image_id}.dcm", kind)
    (root / "dicom-images-train").mkdir(parents=True, exist_ok=True)
    return prepare.SiimPneumothoraxArguments, prepare.prepare_siim_pneumothorax, ids, root / "train-rle.csv"


def build_covidx(root, kinds):
    names = [f"image-{index}.png" for index in range(len(kinds))]
    for name, kind in zip(names, kinds):
        write_bad_image(root / "train" / name, kind)
    labels = ("negative", "positive")
    lines = [f"patient-{index} {name} {labels[index % 2]} source" for index, name in enumerate(names)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    write_good_image(root / "test" / "test-0.png")
    (root / "test.txt").write_text("patient-t test-0.png positive source\n")
    (root / "train").mkdir(parents=True, exist_ok=True)
    return prepare.CovidxArguments, prepare.prepare_covidx, [*names, "test-0.png"], root / "train.txt"


def build_object_cxr(root, kinds):
    names = [f"0{8000 + index}.jpg" for index in range(len(kinds))]
    for name, kind in zip(names, kinds):
        write_bad_image(root / "train" / name, kind)
    write_csv(root / "train.csv", ["image_name", "annotation"], [[name, "0 4 4 12 12"] for name in names])
    write_good_image(root / "dev" / "09001.jpg")
    write_csv(root / "dev.csv", ["image_name", "annotation"], [["09001.jpg", ""]])
    (root / "train").mkdir(parents=True, exist_ok=True)
    return prepare.ObjectCxrArguments, prepare.prepare_object_cxr, [*names, "09001.jpg"], root / "train.csv"


BUILDERS = {
    "mimic_cxr": (build_mimic, PICTURE_KINDS),
    "chexpert": (build_chexpert, PICTURE_KINDS),
    "rsna_pneumonia": (build_rsna, DICOM_KINDS),
    "siim_pneumothorax": (build_siim, DICOM_KINDS),
    "covidx": (build_covidx, PICTURE_KINDS),
    "object_cxr": (build_object_cxr, PICTURE_KINDS),
}
# Held-out fractions of 0 keep every image of a tiny folder in one split; validation carved from train needs none.
NO_HELD_OUT = {
    "mimic_cxr": {},
    "chexpert": {"validation_fraction": 0.0},
    "rsna_pneumonia": {"validation_fraction": 0.0, "test_fraction": 0.0},
    "siim_pneumothorax": {"validation_fraction": 0.0, "test_fraction": 0.0},
    "covidx": {"validation_fraction": 0.0},
    "object_cxr": {"validation_fraction": 0.0},
}


def run_preparer(name, root, output_dir, kinds=None):
    build, default_kinds = BUILDERS[name]
    arguments_class, prepare_function, ids, table = build(root, kinds or default_kinds)
    args = arguments_class(**common_args(root if name != "chexpert" else root / "CheXpert-v1.0-small", output_dir,
                                         image_size=16, **NO_HELD_OUT[name]))
    return prepare_function, args, ids, table


def assert_rows_conserved(output_dir, dataset_dict, rows_in):
    """rows in = rows out + rows skipped, and the counts in sista_dataset.json agree with skipped.csv."""
    skipped = read_skipped(output_dir)
    row_skips = [row for row in skipped if row["reason"] not in BOX_REASONS]
    rows_out = sum(len(dataset) for dataset in dataset_dict.values())
    assert rows_out + len(row_skips) == rows_in, (rows_out, row_skips)
    metadata = json.loads((output_dir / "sista_dataset.json").read_text())
    assert sum(metadata["num_rows"].values()) == rows_out
    assert metadata["skipped"] == dict(Counter(row["reason"] for row in skipped))
    return skipped


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_bad_image_is_a_counted_skip_naming_the_file(name, tmp_path):
    kinds = BUILDERS[name][1]
    prepare_function, args, ids, _ = run_preparer(name, tmp_path / "data", tmp_path / "out")
    dataset_dict = prepare_function(args)

    skipped = assert_rows_conserved(tmp_path / "out", dataset_dict, len(ids))
    reason_of = {row["image_id"]: row for row in skipped}
    kept = {row["image_id"] for dataset in dataset_dict.values() for row in dataset}
    for image_id, kind in zip(ids, kinds):
        reason = expected_reason(kind)
        if reason is None:
            assert image_id in kept, kind
            continue
        assert image_id not in kept, kind
        assert reason_of[image_id]["reason"] == reason, (kind, reason_of[image_id])
        # the detail names the file, so that it can be found and fixed
        assert image_id.rsplit("/", 1)[-1] in reason_of[image_id]["detail"], reason_of[image_id]


def test_rsna_dicom_with_a_cut_jpeg_frame_is_skipped_not_a_lost_run(tmp_path):
    """The reported case: pydicom's RuntimeError ("Unable to decode ... truncated") used to stop the whole run."""
    write_dicom_with_cut_jpeg_frame(tmp_path / "cut.dcm")
    import pydicom

    with pytest.raises(RuntimeError, match="Unable to decode"):
        pydicom.dcmread(tmp_path / "cut.dcm").pixel_array
    with pytest.raises(prepare.SkipExample) as skip:
        prepare.read_image_or_skip(tmp_path / "cut.dcm", 16)
    assert skip.value.reason == "unreadable_image"
    assert "cut.dcm" in skip.value.detail and "RuntimeError" in skip.value.detail

    kinds = ("ok", "cut_jpeg_frame", "ok")
    prepare_function, args, ids, _ = run_preparer("rsna_pneumonia", tmp_path / "data", tmp_path / "out", kinds)
    dataset_dict = prepare_function(args)
    skipped = assert_rows_conserved(tmp_path / "out", dataset_dict, 3)
    assert [(row["image_id"], row["reason"]) for row in skipped] == [(ids[1], "unreadable_image")]


def test_decoder_errors_outside_oserror_are_skips(tmp_path, monkeypatch):
    """Pillow's DecompressionBombError is no OSError; it is a skip like any other decode failure."""
    write_png(tmp_path / "bomb.png", quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(prepare.SkipExample) as skip:
        prepare.read_image_or_skip(tmp_path / "bomb.png", 16)
    assert skip.value.reason == "unreadable_image" and "DecompressionBombError" in skip.value.detail

    kinds = ("ok", "ok")
    prepare_function, args, ids, _ = run_preparer("covidx", tmp_path / "data", tmp_path / "out", kinds)
    dataset_dict = prepare_function(args)
    skipped = assert_rows_conserved(tmp_path / "out", dataset_dict, 3)
    assert sorted(row["image_id"] for row in skipped) == sorted(ids)  # all images, test split included
    assert sum(len(dataset) for dataset in dataset_dict.values()) == 0


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_a_skip(tmp_path):
    write_jpeg(tmp_path / "locked.jpg", quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE))
    (tmp_path / "locked.jpg").chmod(0)
    with pytest.raises(prepare.SkipExample) as skip:
        prepare.read_image_or_skip(tmp_path / "locked.jpg", 16)
    assert skip.value.reason == "unreadable_image" and "locked.jpg" in skip.value.detail


def test_permission_error_is_an_unreadable_image_not_a_missing_one(tmp_path, monkeypatch):
    write_jpeg(tmp_path / "locked.jpg", quadrant_pixels(IMAGE_SIZE, IMAGE_SIZE))

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(prepare.SkipExample) as skip:
        prepare.read_image_or_skip(tmp_path / "locked.jpg", 16)
    assert skip.value.reason == "unreadable_image"
    assert "locked.jpg" in skip.value.detail and "Permission denied" in skip.value.detail


def test_an_unexpected_error_while_building_a_row_names_the_row(tmp_path):
    def broken_example(record, options, skip_log):
        raise KeyError("labels")

    prepare_function, args, ids, _ = run_preparer("object_cxr", tmp_path / "data", tmp_path / "out", ("ok",))
    records = prepare.build_object_cxr_records(args, prepare.SkipLog())
    with pytest.raises(Exception) as error:
        prepare.write_dataset_dict(
            "object_cxr", records, broken_example, prepare.OBJECT_CXR_FEATURES, args, prepare.SkipLog(), {}
        )
    chain, cause = [], error.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert any(ids[0] in message and "KeyError" in message for message in chain), chain


# ---------------------------------------------------------------------------
# Bad folders and tables
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_data_dir_names_the_folder(name, tmp_path):
    arguments_class, prepare_function, _ = prepare.DATASETS[name]
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match="no_such_folder.* is not a folder"):
        prepare_function(arguments_class(**common_args(missing, tmp_path / "out")))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_table_names_the_file(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    table.unlink()
    with pytest.raises(FileNotFoundError, match=table.name.replace(".", r"\.")):
        prepare_function(args)


def rewrite_header(table, replace):
    lines = table.read_text().splitlines()
    table.write_text("\n".join([replace(lines[0]), *lines[1:]]) + "\n")


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"covidx"}))
def test_table_without_a_needed_column_names_the_column_and_the_file(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    first_column = table.read_text().split(",", 1)[0]
    rewrite_header(table, lambda header: header.replace(first_column, "renamed", 1))
    with pytest.raises(ValueError, match=rf"{table.name}.*{first_column}"):
        prepare_function(args)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_empty_table_file_names_the_file(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    table.write_text("")
    with pytest.raises(ValueError, match=table.name.replace(".", r"\.")):
        prepare_function(args)


# MIMIC-CXR's metadata is read with `usecols`, for which pandas ignores extra fields (the row is then a skip).
@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"covidx", "mimic_cxr"}))
def test_csv_row_with_extra_fields_names_the_file_and_the_line(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    with open(table, "a") as file:
        file.write(",".join(["extra"] * 40) + "\n")
    with pytest.raises(ValueError, match=rf"{table.name.replace('.', r'[.]')}.*ParserError.*line 3"):
        prepare_function(args)


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"covidx"}))
def test_csv_with_an_unclosed_quote_names_the_file_and_the_row(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    with open(table, "a") as file:
        file.write('"unclosed,quote\n')
    with pytest.raises(ValueError, match=rf"{table.name.replace('.', r'[.]')}.*ParserError.*row 2"):
        prepare_function(args)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_binary_table_names_the_file(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    table.write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.raises(ValueError, match=table.name.replace(".", r"\.")):
        prepare_function(args)


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"covidx"}))
def test_tables_without_rows_are_an_error_not_an_empty_dataset(name, tmp_path):
    prepare_function, args, _, table = run_preparer(name, tmp_path / "data", tmp_path / "out", ("ok",))
    for csv_path in table.parent.glob("*.csv"):
        csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="list no image"):
        prepare_function(args)


def test_covidx_without_rows_names_the_split_file(tmp_path):
    prepare_function, args, _, table = run_preparer("covidx", tmp_path / "data", tmp_path / "out", ("ok",))
    table.write_text("\n")
    with pytest.raises(ValueError, match="train.txt"):
        prepare_function(args)


def test_gzip_that_is_not_gzip_names_the_file(tmp_path):
    prepare_function, args, _, table = run_preparer("mimic_cxr", tmp_path / "data", tmp_path / "out", ("ok",))
    table.rename(table.with_suffix(".csv.gz"))
    with pytest.raises(ValueError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\.gz"):
        prepare_function(args)


# ---------------------------------------------------------------------------
# Bad rows: labels, boxes, RLE, duplicate ids
# ---------------------------------------------------------------------------


def prepare_and_read(prepare_function, args, output_dir, rows_in):
    dataset_dict = prepare_function(args)
    skipped = assert_rows_conserved(output_dir, dataset_dict, rows_in)
    kept = sorted(row["image_id"] for dataset in dataset_dict.values() for row in dataset)
    return kept, sorted((row["image_id"], row["reason"]) for row in skipped)


def test_mimic_bad_rows(tmp_path):
    root = tmp_path / "data"
    prepare_function, args, ids, table = run_preparer("mimic_cxr", root, tmp_path / "out", ("ok",) * 6)
    metadata = table.read_text().splitlines()
    table.write_text("\n".join([*metadata, metadata[1]]) + "\n")  # d0 listed twice
    split_path = root / "mimic-cxr-2.0.0-split.csv"
    split_path.write_text(split_path.read_text().replace("d1,50000001,10000001,train", "d1,50000001,10000001,val"))
    split_path.write_text(split_path.read_text().replace("d2,50000002,10000002,train\n", ""))
    labels = dict.fromkeys(prepare.CHEXPERT_OBSERVATIONS, "")
    header = ["subject_id", "study_id", *prepare.CHEXPERT_OBSERVATIONS]
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", header,
              [[{**labels, "subject_id": "10000003", "study_id": "50000003", "Edema": "2.0"}[key] for key in header]])
    report_dir = root / "files" / "p10"
    (report_dir / "p10000004" / "s50000004.txt").write_text("FINDINGS:\n\nIMPRESSION:\n")
    (report_dir / "p10000005" / "s50000005.txt").unlink()
    (report_dir / "p10000005" / "s50000005.txt").mkdir()  # a folder where the report should be

    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids) + 1)
    assert kept == ["d0"]
    assert skipped == [("d0", "duplicate_image"), ("d1", "unknown_split"), ("d2", "missing_split"),
                       ("d3", "unknown_label"), ("d4", "empty_report"), ("d5", "unreadable_report")]  # fmt: skip


def test_chexpert_bad_rows(tmp_path):
    parent = tmp_path / "data"
    prepare_function, args, ids, table = run_preparer("chexpert", parent, tmp_path / "out", ("ok",) * 4)
    rows = table.read_text().splitlines()
    paths = [f"CheXpert-v1.0-small/train/patient{index:05d}/study1/view1_frontal.jpg" for index in range(4)]
    rows[2] = ",".join(chexpert_row(paths[1], Edema="2.0"))
    rows[3] = ",".join(chexpert_row(paths[2], Cardiomegaly="yes"))
    rows.append(",".join(chexpert_row("CheXpert-v1.0-small/train/no_patient_here.jpg")))
    rows.append(rows[4])  # patient 3 twice
    table.write_text("\n".join(rows) + "\n")

    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids) + 2)
    assert kept == [ids[0], ids[3], ids[4]]
    assert skipped == sorted([(ids[1], "unknown_label"), (ids[2], "unknown_label"), (ids[3], "duplicate_image"),
                              ("CheXpert-v1.0-small/train/no_patient_here.jpg", "malformed_path")])  # fmt: skip


def test_rsna_bad_labels_and_boxes(tmp_path):
    root = tmp_path / "data"
    prepare_function, args, ids, table = run_preparer("rsna_pneumonia", root, tmp_path / "out", ("ok",) * 8)
    boxes = {
        ids[0]: [("4", "4", "8", "8", "1"), ("nan", "4", "8", "8", "1")],  # one good box, one NaN box
        ids[1]: [("inf", "4", "8", "8", "1")],
        ids[2]: [("4", "4", "-8", "8", "1")],  # negative width
        ids[3]: [("40", "40", "8", "8", "1")],  # wholly outside the 32x32 image
        ids[4]: [("", "", "", "", "1")],  # Target 1 without a box
        ids[5]: [("", "", "", "", "2")],
        ids[6]: [("", "", "", "", "0"), ("4", "4", "8", "8", "1")],
        ids[7]: [("", "", "", "", "")],
    }
    write_csv(table, ["patientId", "x", "y", "width", "height", "Target"],
              [[patient, *values] for patient, rows in boxes.items() for values in rows])  # fmt: skip

    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids))
    assert kept == [ids[0]]
    assert skipped == sorted(
        [(ids[0], "malformed_box"), (ids[1], "malformed_box"), (ids[1], "no_valid_box"),
         (ids[2], "degenerate_box"), (ids[2], "no_valid_box"), (ids[3], "box_outside_image"),
         (ids[3], "no_valid_box"), (ids[4], "malformed_box"), (ids[4], "no_valid_box"), (ids[5], "unknown_label"),
         (ids[6], "conflicting_labels"), (ids[7], "unknown_label")]
    )  # fmt: skip


def test_siim_bad_rle(tmp_path):
    root = tmp_path / "data"
    prepare_function, args, ids, table = run_preparer("siim_pneumothorax", root, tmp_path / "out", ("ok",) * 7)
    rles = ["-1", "a b", "1 2 3", "0 99999", "5 -1", "", "1.5 2"]
    write_csv(table, ["ImageId", "EncodedPixels"], [[image_id, rle] for image_id, rle in zip(ids, rles)])
    (root / "dicom-images-train" / "other").mkdir()
    write_good_image(root / "dicom-images-train" / "other" / "unlisted.dcm")  # no row: not used, not a skip

    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids))
    assert kept == [ids[0]]
    assert skipped == sorted((image_id, "malformed_rle") for image_id in ids[1:])


def test_covidx_bad_lines_and_duplicates(tmp_path):
    root = tmp_path / "data"
    prepare_function, args, ids, table = run_preparer("covidx", root, tmp_path / "out", ("ok",) * 4)
    lines = table.read_text().splitlines()
    lines[1] = "patient-1 image-1.png unsure source"
    lines[2] = "patient-2 image-2.png"
    lines.append(lines[3])  # image-3 twice
    table.write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("patient-t test-0.png positive source\npatient-0 image-0.png negative source\n")

    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids) + 2)
    assert kept == ["image-0.png", "image-3.png", "test-0.png"]
    assert skipped == sorted([("image-0.png", "duplicate_image"), ("image-1.png", "unknown_label"),
                              ("image-3.png", "duplicate_image"), ("train.txt:3", "malformed_line")])  # fmt: skip


def test_object_cxr_bad_annotations_and_duplicates(tmp_path):
    root = tmp_path / "data"
    prepare_function, args, ids, table = run_preparer("object_cxr", root, tmp_path / "out", ("ok",) * 6)
    annotations = ["0 4 4 12 12;5 1 2 3 4", "2 1 2 3 4 5", "0 nan 4 12 12", "0 a b c d", "0 40 40 50 50", "0 5 5 5 9"]
    rows = [[name, annotation] for name, annotation in zip(ids, annotations)]
    write_csv(table, ["image_name", "annotation"], rows + [rows[0]])

    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids) + 1)
    assert kept == [ids[0], ids[-1]]
    assert skipped == sorted(
        [(ids[0], "duplicate_image"), (ids[0], "malformed_annotation"), (ids[0], "malformed_annotation"),
         (ids[1], "malformed_annotation"), (ids[1], "no_valid_box"), (ids[2], "malformed_box"),
         (ids[2], "no_valid_box"), (ids[3], "malformed_annotation"), (ids[3], "no_valid_box"),
         (ids[4], "box_outside_image"), (ids[4], "no_valid_box"), (ids[5], "degenerate_box"),
         (ids[5], "no_valid_box")]
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Missing dataset paths: SynthCXR only where it is meant
# ---------------------------------------------------------------------------

TINY_GENERATION = {
    "synthcxr_num_pretrain": 4, "synthcxr_num_train": 2, "synthcxr_num_validation": 2, "synthcxr_num_test": 2,
    "synthcxr_image_size": 32,
}  # fmt: skip


def generation_arguments(**overrides):
    return SynthCXRGenerationArguments(**{**TINY_GENERATION, **overrides})


def test_a_mistyped_path_is_an_error_naming_the_argument(tmp_path):
    typo = tmp_path / "data" / "mimic_cxx"
    with pytest.raises(FileNotFoundError, match=r"--dataset_path .*mimic_cxx does not exist.*--generate_synthcxr"):
        load_or_generate_synthcxr(typo, generation_arguments(), image_size=32)
    assert not typo.exists()


def test_explicit_generation_writes_synthcxr_with_its_generation_arguments(tmp_path):
    path = tmp_path / "anywhere"
    dataset = load_or_generate_synthcxr(path, generation_arguments(generate_synthcxr=True), image_size=64)
    expected = generate_synthcxr(num_pretrain=4, num_train=2, num_validation=2, num_test=2, image_size=32, seed=0)
    sizes = {split: len(data) for split, data in dataset.items()}
    assert sizes == {"pretrain": 4, "train": 2, "validation": 2, "test": 2}
    assert dataset["test"]["report"] == expected["test"]["report"]
    metadata = json.loads((path / "sista_dataset.json").read_text())
    assert metadata["dataset"] == "synthcxr"
    assert metadata["generation"] == {"num_pretrain": 4, "num_train": 2, "num_validation": 2, "num_test": 2,
                                      "image_size": 32, "seed": 0}  # fmt: skip


def test_the_default_path_is_generated_without_a_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert should_generate_synthcxr(DEFAULT_SYNTHCXR_PATH, generation_arguments(), "--dataset_path")
    assert should_generate_synthcxr(f"./{DEFAULT_SYNTHCXR_PATH}/", generation_arguments(), "--dataset_path")
    dataset = load_or_generate_synthcxr(DEFAULT_SYNTHCXR_PATH, generation_arguments(), image_size=32)
    assert len(dataset["pretrain"]) == 4 and (tmp_path / DEFAULT_SYNTHCXR_PATH / "sista_dataset.json").is_file()
    # an existing folder is read, never generated again
    assert not should_generate_synthcxr(DEFAULT_SYNTHCXR_PATH, generation_arguments(), "--dataset_path")


def test_synthcxr_generated_with_other_arguments_is_detected(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    load_or_generate_synthcxr(DEFAULT_SYNTHCXR_PATH, generation_arguments(), image_size=32)
    with pytest.raises(ValueError, match=r"generated with seed=0 \(asked: 3\)"):
        load_or_generate_synthcxr(
            DEFAULT_SYNTHCXR_PATH, generation_arguments(generate_synthcxr=True, synthcxr_seed=3), image_size=32
        )
    with caplog.at_level(logging.WARNING):
        dataset = load_or_generate_synthcxr(DEFAULT_SYNTHCXR_PATH, generation_arguments(synthcxr_seed=3), 32)
    assert "generated with seed=0 (asked: 3)" in caplog.text and len(dataset["pretrain"]) == 4
    # the same arguments reuse the folder quietly
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_or_generate_synthcxr(DEFAULT_SYNTHCXR_PATH, generation_arguments(generate_synthcxr=True), 32)
    assert "generated with" not in caplog.text


def test_generation_asked_for_a_folder_of_real_data_is_refused(tmp_path):
    real = tmp_path / "chexpert"
    DatasetDict({"train": generate_synthcxr(num_pretrain=0, num_train=2, num_validation=0, num_test=0,
                                            image_size=32)["train"]}).save_to_disk(str(real))  # fmt: skip
    write_dataset_metadata(real, {"dataset": "chexpert"})
    with pytest.raises(ValueError, match="already holds the dataset 'chexpert'"):
        load_or_generate_synthcxr(real, generation_arguments(generate_synthcxr=True), image_size=32)
    assert len(load_or_generate_synthcxr(real, generation_arguments(), image_size=32)["train"]) == 2


def test_generate_synthcxr_script_records_its_arguments(tmp_path):
    load_script("examples/generate_synthcxr.py").main(
        ["--output_dir", str(tmp_path / "s"), "--image_size", "32", "--num_pretrain", "2", "--num_train", "0",
         "--num_validation", "0", "--num_test", "1", "--seed", "5"]
    )  # fmt: skip
    generation = json.loads((tmp_path / "s" / "sista_dataset.json").read_text())["generation"]
    assert generation == {"num_pretrain": 2, "num_train": 0, "num_validation": 0, "num_test": 1, "image_size": 32,
                          "seed": 5}  # fmt: skip
    assert len(load_from_disk(str(tmp_path / "s"))["test"]) == 1


def test_pretrain_with_a_mistyped_dataset_path_fails_before_training(tmp_path):
    pretrain = load_script("examples/pretrain.py")
    typo = tmp_path / "mimic_cxx"
    with pytest.raises(FileNotFoundError, match="--dataset_path .*mimic_cxx does not exist"):
        pretrain.main(["--dataset_path", str(typo), "--output_dir", str(tmp_path / "out"), "--model_preset", "tiny",
                       "--report_to", "none", "--max_steps", "1"])  # fmt: skip
    assert not typo.exists() and not (tmp_path / "out" / "model.safetensors").exists()


def test_finetune_with_a_mistyped_dataset_dir_fails_before_training(tmp_path):
    finetune = load_script("examples/finetune_classification.py")
    with pytest.raises(FileNotFoundError, match="--dataset_dir .*chexpret does not exist"):
        finetune.main(["--dataset_dir", str(tmp_path / "chexpret"), "--output_dir", str(tmp_path / "out"),
                       "--from_scratch", "--report_to", "none", "--use_cpu"])  # fmt: skip
    assert not (tmp_path / "chexpret").exists()


def write_model_dir(path, dataset_path):
    path.mkdir(parents=True)
    (path / "run_arguments.json").write_text(json.dumps({"model": {}, "data": {"dataset_path": dataset_path}}))
    return path


def evaluation_arguments(model_dir, dataset_dir, **overrides):
    return EvaluationArguments(model_name_or_path=str(model_dir), dataset_dir=str(dataset_dir),
                               **{**TINY_GENERATION, **overrides})  # fmt: skip


def test_evaluation_never_scores_synthcxr_for_a_mistyped_or_missing_dataset_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mimic_model = write_model_dir(tmp_path / "sista-mimic", "data/mimic_cxr")
    with pytest.raises(FileNotFoundError, match="--dataset_dir .*mimic_cxx does not exist"):
        load_evaluation_split(evaluation_arguments(mimic_model, "data/mimic_cxx"))
    # the default path is not SynthCXR's to fill for a model trained on other data...
    with pytest.raises(FileNotFoundError, match="pre-trained on data/mimic_cxr"):
        load_evaluation_split(evaluation_arguments(mimic_model, DEFAULT_SYNTHCXR_PATH))
    unknown_model = tmp_path / "hub-model"
    unknown_model.mkdir()
    with pytest.raises(FileNotFoundError, match="records no training data"):
        load_evaluation_split(evaluation_arguments(unknown_model, DEFAULT_SYNTHCXR_PATH))
    # ...unless asked
    dataset, source = load_evaluation_split(
        evaluation_arguments(mimic_model, DEFAULT_SYNTHCXR_PATH, generate_synthcxr=True)
    )
    assert source["generated"] and len(dataset) == 2
    assert not (tmp_path / DEFAULT_SYNTHCXR_PATH).exists()  # generated in memory


def test_evaluation_of_a_synthcxr_model_generates_at_the_default_path(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    synthcxr_model = write_model_dir(tmp_path / "sista-demo", DEFAULT_SYNTHCXR_PATH)
    with caplog.at_level(logging.WARNING):
        dataset, source = load_evaluation_split(evaluation_arguments(synthcxr_model, DEFAULT_SYNTHCXR_PATH))
    assert source["generated"] and len(dataset) == 2
    assert "generating a small SynthCXR test split in memory" in caplog.text


def test_scoring_a_saved_synthcxr_with_a_model_of_other_data_is_a_loud_warning(tmp_path, caplog):
    saved = tmp_path / "synth"
    save_synthcxr(generate_synthcxr(num_pretrain=0, num_train=0, num_validation=0, num_test=2, image_size=32),
                  str(saved), generation={"seed": 0})  # fmt: skip
    mimic_model = write_model_dir(tmp_path / "sista-mimic", "data/mimic_cxr")
    with caplog.at_level(logging.WARNING):
        dataset, source = load_evaluation_split(evaluation_arguments(mimic_model, saved))
    assert len(dataset) == 2 and not source["generated"]
    assert "Scoring SynthCXR" in caplog.text and "pre-trained on data/mimic_cxr" in caplog.text
