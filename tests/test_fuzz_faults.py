# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Fuzz suite of faults that used to crash deep, change a row's meaning or train silently: EXIF orientation, reports
without content or in another language at every stage (cleaner, preparer, labeler embeddings, collator, pretrain.py's
filter), report files that are no UTF-8, DICOMs of another modality, checkpoints cut while being written or
disagreeing with their config in every script, folders that are not what they claim, read-only output folders, and
the evaluation and precision settings. Each case gets the intended result (checked against an independent oracle), a
counted skip with its reason, or a clear error naming the file or argument.
"""

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor, BertConfig, ResNetConfig, RobertaConfig, ViTConfig

from conftest import build_tiny_tokenizer, load_script, tiny_sista_config
from configuration_sista import SistaConfig
from modeling_sista import SistaForImageClassification, SistaModel, check_text_inputs, false_negative_mask
from modeling_sista import text_max_positions
from processing_sista import SistaImageProcessor, SistaProcessor, clean_report, report_has_content
from sista_examples.data import prepare
from sista_examples.data.report_embeddings import embed_dataset
from sista_examples.data.report_labeler import OBSERVATIONS, SAME_FINDINGS_THRESHOLD, label_reports, labeler_can_read
from sista_examples import finetuning
from sista_examples.checkpoints import load_sista
from sista_examples.evaluation.common import embed_texts, report_sections
from sista_examples.training import trainer as trainer_module
from sista_examples.data.report_fitting import fit_report
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import open_encoded_image
from sista_examples.training.pretraining import drop_empty_reports
from sista_examples.training.trainer import SistaTrainingArguments, incomplete_checkpoint_reason, resolve_checkpoint
from test_fuzz_prepare import prepare_and_read, run_preparer
from test_prepare_datasets import read_skipped


# ---------------------------------------------------------------------------------------------------------------------
# Images: EXIF orientation, one reading rule
# ---------------------------------------------------------------------------------------------------------------------


def intended_image(height: int = 64, width: int = 48) -> Image.Image:
    """A portrait radiograph-like image that looks different under every flip and turn: a vertical ramp plus a
    bright block in the top-left corner."""
    rows = np.linspace(20, 200, height)[:, None].repeat(width, axis=1)
    rows[: height // 4, : width // 3] = 255
    return Image.fromarray(rows.astype(np.uint8))


# EXIF orientation -> the transpose that turns the intended image into the stored one (the inverse of what a viewer
# applies to display it).
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def write_oriented_jpeg(path: Path, orientation: int, image_format: str = "JPEG") -> Image.Image:
    intended = intended_image()
    stored = intended if STORED_AS.get(orientation) is None else intended.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, format=image_format, exif=exif, **({"quality": 95} if image_format == "JPEG" else {}))
    return intended


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(first, float).ravel(), np.asarray(second, float).ravel())[0, 1])


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_read_image_applies_the_exif_orientation(tmp_path, orientation):
    path = tmp_path / "xray.jpg"
    intended = write_oriented_jpeg(path, orientation)
    image, original_size = prepare.read_image(path, image_size=32)
    assert original_size == intended.size  # (48, 64) as displayed, whatever the stored orientation
    assert image.size == (24, 32)
    assert correlation(image, intended.resize(image.size, Image.Resampling.BICUBIC)) > 0.97


@pytest.mark.parametrize("orientation", [6, 3])
def test_a_png_with_an_exif_orientation_is_turned_too(tmp_path, orientation):
    intended = write_oriented_jpeg(tmp_path / "xray.png", orientation, image_format="PNG")
    image, original_size = prepare.read_image(tmp_path / "xray.png", image_size=32)
    assert original_size == intended.size
    assert correlation(image, intended.resize(image.size, Image.Resampling.BICUBIC)) > 0.97


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_an_orientation_outside_the_eight_is_read_as_stored(tmp_path, orientation):
    intended = write_oriented_jpeg(tmp_path / "xray.jpg", orientation)
    image, original_size = prepare.read_image(tmp_path / "xray.jpg", image_size=32)
    assert original_size == intended.size
    assert correlation(image, intended.resize(image.size, Image.Resampling.BICUBIC)) > 0.97


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_the_preparer_and_the_processor_read_a_file_alike(tmp_path, orientation):
    path = tmp_path / "xray.jpg"
    write_oriented_jpeg(path, orientation)
    prepared, _ = prepare.read_image(path, image_size=64)
    processor = SistaImageProcessor(size={"height": 64, "width": 48}, do_normalize=False)
    from_file = processor(str(path), return_tensors="np")["pixel_values"][0, 0]
    assert from_file.shape == (prepared.size[1], prepared.size[0])
    assert correlation(from_file, prepared) > 0.98


def test_pretraining_reads_an_exif_turned_image_of_a_users_dataset_upright(tmp_path):
    # a dataset not made by the preparers may store camera JPEGs with their EXIF tag
    intended = write_oriented_jpeg(tmp_path / "xray.jpg", orientation=6)
    image = open_encoded_image({"bytes": (tmp_path / "xray.jpg").read_bytes(), "path": None})
    assert image.size == intended.size
    assert correlation(image.convert("L"), intended) > 0.97
    decoded = Dataset.from_dict({"image": [str(tmp_path / "xray.jpg")]}).cast_column("image", ImageFeature())[0]
    assert correlation(decoded["image"].convert("L"), image.convert("L")) > 0.999  # as `datasets` decodes it


def test_covidx_keeps_an_exif_turned_jpeg_upright(tmp_path):
    prepare_function, args, ids, _ = run_preparer("covidx", tmp_path / "data", tmp_path / "out", ("ok", "ok"))
    # COVIDx names its files .png whatever they hold; Pillow reads the JPEG by its content
    intended = write_oriented_jpeg(tmp_path / "data" / "train" / ids[0], orientation=6)
    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids))
    assert skipped == []
    row = next(row for row in load_from_disk(str(tmp_path / "out"))["train"] if row["image_id"] == ids[0])
    assert row["image"].size == (12, 16)  # portrait, as displayed
    assert correlation(row["image"], intended.resize((12, 16), Image.Resampling.BICUBIC)) > 0.95


# ---------------------------------------------------------------------------------------------------------------------
# Reports: one notion of content, at every stage
# ---------------------------------------------------------------------------------------------------------------------

CONTENTLESS_REPORTS = {
    "NUL-filled file": "\x00" * 4097,
    "control characters": "\x01\x02\x1b[0m\x7f",
    "zero-width characters": "\u200b\u200c\u200d\ufeff",
    "soft hyphens and a word joiner": "\u00ad\u2060\u00ad",
    "a full stop": ".",
    "punctuation": " - ; ... ! ",
    "headers only": "FINDINGS: .\nIMPRESSION: \x00",
    "placeholders only": "FINDINGS: ___\nIMPRESSION: XXXX.",
    "bullets": "\u2022 \u2022 *",
}


@pytest.mark.parametrize("case", list(CONTENTLESS_REPORTS))
def test_clean_report_returns_no_text_for_a_report_without_content(case):
    cleaned = clean_report(CONTENTLESS_REPORTS[case])
    assert (cleaned.text, cleaned.source, cleaned.is_empty) == ("", "empty", True)
    assert (cleaned.findings, cleaned.impression) == ("", "")


def test_invisible_characters_leave_the_words_they_sat_in():
    # oracle: the same report typed without them
    assert clean_report("No\x00effusion.\u200b Lungs cle\u200bar.").text == "No effusion. Lungs clear."
    assert clean_report("FINDINGS: \x00\nIMPRESSION: No acute process.").text == "No acute process."


def test_content_counts_letters_and_digits_of_any_script():
    assert [report_has_content(text) for text in ("肺炎", "Derrame", "2", "\u00b2", ". , ;", None, float("nan"))] == [
        True, True, True, True, False, False, False,
    ]  # fmt: skip


def mimic_with_reports(tmp_path, reports: list[bytes]):
    prepare_function, args, ids, _ = run_preparer(
        "mimic_cxr", tmp_path / "data", tmp_path / "out", ("ok",) * len(reports)
    )
    report_files = sorted((tmp_path / "data" / "files").rglob("s*.txt"))
    for path, content in zip(report_files, reports):
        path.write_bytes(content)
    return prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids))


def test_mimic_skips_reports_without_content_and_undecodable_ones_with_a_count(tmp_path):
    good = b"FINDINGS: Lungs are clear.\nIMPRESSION: No acute process.\n"
    kept, skipped = mimic_with_reports(
        tmp_path,
        [
            good,
            b"\x00" * 4097,  # a crashed copy
            "FINDINGS: Derrame pleural peque\u00f1o.\n".encode("latin-1"),
            "\ufeffFINDINGS: Lungs are clear.\n".encode("utf-8"),  # a byte-order mark is no fault
            "\u200b\u200b\n".encode("utf-8"),
            "FINDINGS: Lungs are clear.\n".encode("utf-16"),
        ],
    )
    assert kept == ["d0", "d3"]
    assert skipped == [("d1", "empty_report"), ("d2", "undecodable_report"), ("d4", "empty_report"),
                       ("d5", "undecodable_report")]  # fmt: skip
    details = {row["image_id"]: row["detail"] for row in read_skipped(tmp_path / "out")}
    offset = len(b"FINDINGS: Derrame pleural peque")
    assert f"s50000002.txt: not UTF-8 (byte 0xf1 at offset {offset})" in details["d2"]
    prepared = load_from_disk(str(tmp_path / "out"))
    texts = {row["image_id"]: row["report"] for split in prepared.values() for row in split}
    assert texts["d3"] == "Lungs are clear."
    assert all("\ufffd" not in text for text in texts.values())


def test_read_report_file_decodes_strictly(tmp_path):
    path = tmp_path / "s1.txt"
    path.write_bytes("peque\u00f1o".encode("latin-1"))
    with pytest.raises(prepare.SkipExample) as skip:
        prepare.read_report_file(path)
    assert skip.value.reason == "undecodable_report"
    assert f"{path}: not UTF-8 (byte 0xf1 at offset {len(b'peque')})" in skip.value.detail
    path.write_bytes("peque\u00f1o".encode("utf-8"))
    assert prepare.read_report_file(path) == "peque\u00f1o"


def test_pretrain_filter_drops_every_report_without_content():
    reports = ["Small left effusion.", "", "   ", ".", "\x00\x00", "\u200b", None, "No pneumothorax."]
    kept = drop_empty_reports(Dataset.from_dict({"report": reports}), "train")
    assert kept["report"] == ["Small left effusion.", "No pneumothorax."]


@pytest.fixture(scope="module")
def collator():
    return SistaDataCollator(build_tiny_tokenizer(), max_length=16, text_config=tiny_sista_config().text_config)


def features(*reports, **columns):
    rows = []
    for index, report in enumerate(reports):
        row = {"report": report, "pixel_values": np.zeros((1, 32, 32), np.uint8)}
        row.update({name: values[index] for name, values in columns.items()})
        rows.append(row)
    return rows


@pytest.mark.parametrize("report", [".", " ; ", "\x00", "\u200b", "..."])
def test_collator_refuses_a_punctuation_only_report_naming_its_row(collator, report):
    with pytest.raises(ValueError, match=r"rows \[1\] of this batch have none"):
        collator(features("small left effusion.", report))


def test_fit_report_fits_a_raw_report_longer_than_its_sections():
    tokenizer = build_tiny_tokenizer()
    findings, impression = "small left effusion.", "no pneumothorax."
    raw = "the lungs are clear " * 20 + findings + " " + impression
    fitted = fit_report(tokenizer, raw, findings, impression, budget=14)
    # oracle: the whole findings fit in 14 - len(impression) tokens, so the sections come whole, impression last
    assert fitted == f"{findings} {impression}"
    assert len(tokenizer(fitted, add_special_tokens=False)["input_ids"]) <= 14
    shorter = fit_report(tokenizer, raw, findings, impression, budget=8)
    assert shorter.endswith(impression) and len(tokenizer(shorter, add_special_tokens=False)["input_ids"]) <= 8


def test_collator_trains_a_dataset_with_a_raw_report_beside_cleaned_sections(collator):
    raw = "the lungs are clear " * 20
    batch = collator(
        features(raw + "small left effusion. no pneumothorax.", "no effusion.",
                 findings=["small left effusion.", ""], impression=["no pneumothorax.", ""])
    )  # fmt: skip
    tokens = build_tiny_tokenizer().convert_ids_to_tokens(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert tokens[-4:] == ["no", "pneumothorax", ".", "[SEP]"]


def test_collator_names_a_row_whose_report_is_missing(collator):
    with pytest.raises(TypeError, match=r"`report` of row 1 of this batch must be a str, got NoneType"):
        collator(features("no effusion.", None))


# ---------------------------------------------------------------------------------------------------------------------
# Reports the labeler cannot read: "unlabelled", never No Finding
# ---------------------------------------------------------------------------------------------------------------------

NORMAL = "No acute cardiopulmonary process."
UNREADABLE = {
    "Spanish effusion": "Derrame pleural izquierdo moderado.",
    "Spanish cardiomegaly": "Cardiomegalia leve. Sin derrame.",
    "Spanish pneumonia": "Neumon\u00eda en el l\u00f3bulo inferior derecho.",
    "Spanish normal": "Sin hallazgos patol\u00f3gicos.",
    "Portuguese": "Sem altera\u00e7\u00f5es. Cora\u00e7\u00e3o normal.",
    "French": "Pas d'\u00e9panchement pleural. Silhouette cardiaque normale.",
    "German": "Kein Pleuraerguss. Herz normal gro\u00df.",
    "Chinese effusion": "\u53f3\u4fa7\u80f8\u8154\u79ef\u6db2\u3002",
    "Chinese cardiomegaly": "\u5fc3\u810f\u589e\u5927\u3002",
    "Russian": "\u041f\u043d\u0435\u0432\u043c\u043e\u043d\u0438\u044f \u0441\u043f\u0440\u0430\u0432\u0430.",
    "NUL-only": "\x00" * 64,
    "control characters": "\x01\x02\x03",
    "digits only": "12 34",
}


def test_the_labeler_reads_english_reports():
    # oracle: hand-written English reports, normal and abnormal, all readable
    english = [NORMAL, "Lungs are clear.", "Heart size normal.", "Small left pleural effusion.",
               "Status post median sternotomy and CABG with intact sternal wires.", "Normal chest x-.",
               "Interval placement of right internal jugular central venous catheter with tip in the SVC."]  # fmt: skip
    assert all(labeler_can_read(text) for text in english)


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_a_report_the_labeler_cannot_read_is_unlabelled_not_normal(case):
    labels = label_reports([NORMAL, UNREADABLE[case]])
    assert labels[0, OBSERVATIONS.index("No Finding")] == 1
    assert np.isnan(labels[1]).all()  # nothing known, No Finding included


def test_unlabelled_embeddings_match_nothing_and_are_recorded():
    reports = [NORMAL, "Lungs are clear. No effusion.", *UNREADABLE.values(), "", "."]
    dataset, record = embed_dataset(Dataset.from_dict({"report": reports}), encoder="labeler")
    embeddings = torch.tensor(dataset["report_embeds"])
    assert record["unlabelled"] == {"dataset": len(UNREADABLE) + 2}
    assert "labeler cannot read" in record["unlabelled_rule"]
    assert not embeddings[2:].any()
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] >= SAME_FINDINGS_THRESHOLD  # the two normal reports still match each other
    flagged = false_negative_mask(similarity, record["sia_threshold"], torch.arange(len(reports)))
    assert not flagged[2:].any() and not flagged[:, 2:].any()  # never a false negative, either way


def test_text_encoders_record_their_contentless_reports_too():
    _, record = embed_dataset(Dataset.from_dict({"report": ["No effusion.", "Small effusion.", "."]}), "tfidf")
    assert record["unlabelled"] == {"dataset": 1}


# ---------------------------------------------------------------------------------------------------------------------
# DICOMs of another modality
# ---------------------------------------------------------------------------------------------------------------------


def test_rsna_skips_ct_and_mr_dicoms_with_a_count(tmp_path):
    prepare_function, args, ids, _ = run_preparer("rsna_pneumonia", tmp_path / "data", tmp_path / "out", ("ok",) * 5)
    modalities = ["CR", "CT", "MR", "DX", None]
    for patient, modality in zip(ids, modalities):
        path = tmp_path / "data" / "stage_2_train_images" / f"{patient}.dcm"
        dicom = pydicom.dcmread(path)
        if modality is None:
            del dicom.Modality
        else:
            dicom.Modality = modality
        dicom.save_as(path)
    kept, skipped = prepare_and_read(prepare_function, args, tmp_path / "out", rows_in=len(ids))
    assert kept == sorted([ids[0], ids[3], ids[4]])
    assert skipped == sorted([(ids[1], "other_modality"), (ids[2], "other_modality")])


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints cut while being written
# ---------------------------------------------------------------------------------------------------------------------


def fake_checkpoint(folder: Path, step: int, state: str | None = "whole", weights: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if weights:
        save_file({"weight": torch.ones(64)}, path / "model.safetensors")
    contents = {"whole": json.dumps({"global_step": step}), "empty": "", "cut": json.dumps({"global_step": step})[:7],
                "list": "[]", "binary": "\x00\x00"}  # fmt: skip
    if state is not None:
        (path / "trainer_state.json").write_text(contents[state])
    return path


@pytest.mark.parametrize("state", ["empty", "cut", "list", "binary", None])
def test_resume_last_passes_over_a_half_written_checkpoint_and_says_so(tmp_path, state, caplog):
    fake_checkpoint(tmp_path, 10)
    newest = fake_checkpoint(tmp_path, 20, state=state)
    fake_checkpoint(tmp_path, 9)  # numbered, not sorted by name: 10 is newer than 9
    with caplog.at_level("WARNING"):
        assert resolve_checkpoint("last", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert "newest complete checkpoint" in caplog.text and "checkpoint-20" in caplog.text
    assert str(newest / "trainer_state.json") in caplog.text


def test_resume_last_passes_over_a_checkpoint_without_weights(tmp_path):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20, weights=False)
    assert resolve_checkpoint("true", str(tmp_path)) == str(tmp_path / "checkpoint-10")


def test_resume_last_passes_over_a_checkpoint_with_cut_weights(tmp_path):
    whole = fake_checkpoint(tmp_path, 10)
    cut = fake_checkpoint(tmp_path, 20)
    data = (whole / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert resolve_checkpoint("last", str(tmp_path)) == str(whole)
    assert "is not a complete safetensors file" in incomplete_checkpoint_reason(cut)


def test_resume_without_any_complete_checkpoint_names_each_one(tmp_path):
    fake_checkpoint(tmp_path, 10, state="empty")
    fake_checkpoint(tmp_path, 20, state=None)
    with pytest.raises(ValueError, match=r"no complete checkpoint.*checkpoint-20: .*missing.*checkpoint-10: .*JSON"):
        resolve_checkpoint("last", str(tmp_path))


def test_resume_from_a_named_half_written_checkpoint_names_the_file(tmp_path):
    path = fake_checkpoint(tmp_path, 20, state="empty")
    with pytest.raises(ValueError, match=rf"{path}.* not a complete checkpoint: .*trainer_state\.json is not readable"):
        resolve_checkpoint(str(path), str(tmp_path))
    assert incomplete_checkpoint_reason(fake_checkpoint(tmp_path, 30)) is None


def test_a_preparation_interrupted_while_writing_leaves_the_previous_output(tmp_path, monkeypatch):
    prepare_function, args, ids, _ = run_preparer("covidx", tmp_path / "data", tmp_path / "out", ("ok", "ok"))
    first = prepare_function(args)
    args.overwrite_output_dir = True
    write = prepare.DatasetDict.save_to_disk

    def killed_while_writing(self, path, **kwargs):
        write(DatasetDict({name: split.select([0]) for name, split in self.items()}), path, **kwargs)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(prepare.DatasetDict, "save_to_disk", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        prepare_function(args)
    dataset, metadata = prepare.load_prepared_dataset(tmp_path / "out")
    assert {name: len(split) for name, split in dataset.items()} == {name: len(split) for name, split in first.items()}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"]  # nothing half-written beside it
    # a kill -9 leaves its staging folder: the next run removes it
    monkeypatch.setattr(prepare.DatasetDict, "save_to_disk", write)
    (tmp_path / ".out.partial-killed").mkdir()
    (tmp_path / ".out.partial-killed" / "dataset_dict.json").write_text("{}")
    prepare_function(args)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"]


# ---------------------------------------------------------------------------------------------------------------------
# Folders that are not what they claim, checkpoints that disagree with their config
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_sista(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sista")
    torch.manual_seed(0)
    SistaModel(tiny_sista_config()).save_pretrained(folder)
    SistaProcessor(SistaImageProcessor(size=32), build_tiny_tokenizer(), model_max_length=64).save_pretrained(folder)
    return folder


def copy_of(folder: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(folder, target)
    return target


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("model_type", ["vit", "bert", "clip"])
def test_automodel_names_the_file_and_the_model_type(saved_sista, tmp_path, model_type):
    folder = copy_of(saved_sista, tmp_path / "c")
    edit_config(folder, lambda config: config.update(model_type=model_type))
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'} says model_type '{model_type}', expected 'sista'"):
        AutoModel.from_pretrained(folder, trust_remote_code=True)


def test_a_config_of_another_type_is_named_with_its_model_type():
    with pytest.raises(TypeError, match=r"model_type 'sista'\), got a ViTConfig with model_type 'vit'"):
        SistaModel(ViTConfig())


@pytest.mark.parametrize("loader", ["AutoProcessor", "SistaProcessor"])
def test_a_processor_without_tokenizer_files_names_them(saved_sista, tmp_path, loader):
    folder = copy_of(saved_sista, tmp_path / "p")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    load = AutoProcessor.from_pretrained if loader == "AutoProcessor" else SistaProcessor.from_pretrained
    with pytest.raises(OSError, match=r"holds a processor .* but no tokenizer: none of \['tokenizer\.json', 'vocab"):
        load(folder, trust_remote_code=loader == "AutoProcessor")


def mismatched(saved_sista, tmp_path) -> Path:
    """The vision config says 64-pixel images, the weights hold the position embeddings of 32-pixel ones."""
    folder = copy_of(saved_sista, tmp_path / "m")
    edit_config(folder, lambda config: config["vision_config"].update(image_size=64))
    return folder


MISMATCH = r"position_embeddings: checkpoint \(1, 17, 32\) vs config \(1, 65, 32\)"


def test_fine_tuning_refuses_vision_weights_of_another_shape(saved_sista, tmp_path):
    folder = mismatched(saved_sista, tmp_path)
    with pytest.raises(ValueError, match=rf"vision encoder weights disagree in shape.*{MISMATCH}"):
        finetuning.load_head(
            SistaForImageClassification, finetuning.FinetuningModelArguments(model_name_or_path=str(folder)), num_labels=2
        )


@pytest.mark.parametrize("script", ["linear_probe", "zero_shot", "retrieval", "visualize_grounding"])
def test_evaluation_scripts_refuse_weights_of_another_shape(saved_sista, tmp_path, script):
    folder = mismatched(saved_sista, tmp_path)
    # linear_probe reads its splits before the model: three one-row splits with labels
    rows = {"image": [Image.new("L", (32, 32))], "labels": [[1, 0]]}
    DatasetDict({name: Dataset.from_dict(rows) for name in ("train", "validation", "test")}).save_to_disk(
        str(tmp_path / "data")
    )
    main = load_script(f"examples/{script}.py").main
    class_names = ["--class_names", "a,b"] if script == "linear_probe" else []
    with pytest.raises(ValueError, match=rf"{folder}.*disagree in shape.*{MISMATCH}"):
        main(["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out"),
              "--dataset_dir", str(tmp_path / "data"), *class_names])  # fmt: skip


def test_pretraining_from_a_mismatched_checkpoint_is_refused(saved_sista, tmp_path):
    folder = mismatched(saved_sista, tmp_path)
    with pytest.raises(ValueError, match=MISMATCH):
        SistaModel.from_pretrained(folder)
    model, info = SistaModel.from_pretrained(saved_sista, output_loading_info=True)  # a whole checkpoint loads
    assert isinstance(model, SistaModel) and not info["mismatched_keys"]


@pytest.fixture(scope="module")
def resnet_without_processor(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resnet")
    vision = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1], layer_type="basic")
    text = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    SistaModel(SistaConfig.from_vision_text_configs(vision, text, vision_pooling="mean")).save_pretrained(folder)
    return folder


def test_a_checkpoint_without_a_recorded_size_needs_image_size(resnet_without_processor):
    arguments = finetuning.FinetuningModelArguments(model_name_or_path=str(resnet_without_processor))
    with pytest.raises(ValueError, match=r"--image_size is required: .*holds no image processor"):
        finetuning.encoder_image_size(arguments)
    arguments.image_size = 64
    assert finetuning.encoder_image_size(arguments) == 64
    config = SistaConfig.from_pretrained(resnet_without_processor)
    assert finetuning.load_image_processor(arguments, config).size["height"] == 64


def test_an_image_size_that_contradicts_the_checkpoint_is_refused(saved_sista):
    arguments = finetuning.FinetuningModelArguments(model_name_or_path=str(saved_sista), image_size=64)
    with pytest.raises(ValueError, match=r"--image_size 64 contradicts .*trained at 32 px according to its saved"):
        finetuning.encoder_image_size(arguments)


# ---------------------------------------------------------------------------------------------------------------------
# Output folders that cannot be written, in every script
# ---------------------------------------------------------------------------------------------------------------------

SCRIPTS_WITH_OUTPUT = {
    "examples/finetune_classification.py": ["--from_scratch"],
    "examples/finetune_segmentation.py": ["--from_scratch"],
    "examples/finetune_detection.py": ["--from_scratch"],
    "examples/linear_probe.py": ["--model_name_or_path", "unused"],
    "examples/zero_shot.py": ["--model_name_or_path", "unused"],
    "examples/retrieval.py": ["--model_name_or_path", "unused"],
    "examples/visualize_grounding.py": ["--model_name_or_path", "unused"],
}


def unwritable_folders(tmp_path) -> list[Path]:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    folders = [blocker / "out"]
    if os.geteuid() != 0:  # root writes into read-only folders
        read_only = tmp_path / "read_only"
        read_only.mkdir()
        read_only.chmod(0o555)
        folders.append(read_only)
    return folders


@pytest.mark.parametrize("script", list(SCRIPTS_WITH_OUTPUT))
def test_every_script_checks_its_output_dir_before_working(script, tmp_path):
    main = load_script(script).main
    for folder in unwritable_folders(tmp_path):
        with pytest.raises(ValueError, match=rf"--output_dir {folder} is not writable"):
            main([*SCRIPTS_WITH_OUTPUT[script], "--output_dir", str(folder), "--dataset_dir", str(tmp_path / "none")])


def test_preparation_checks_the_folder_it_stages_its_output_in(tmp_path):
    prepare_function, args, ids, _ = run_preparer("covidx", tmp_path / "data", tmp_path / "out", ("ok",))
    blocked = unwritable_folders(tmp_path)[0]
    args.output_dir = str(blocked / "covidx")
    with pytest.raises(ValueError, match=rf"--output_dir {blocked / 'covidx'}: its parent folder {blocked} is not"):
        prepare_function(args)


def test_report_embeddings_checks_the_folder_it_writes(tmp_path):
    Dataset.from_dict({"report": ["No effusion."]}).save_to_disk(str(tmp_path / "data"))
    blocked = unwritable_folders(tmp_path)[0]
    with pytest.raises(ValueError, match=rf"--output_dir {blocked} is not writable"):
        load_script("examples/report_embeddings.py").main(
            ["--dataset_dir", str(tmp_path / "data"), "--encoder", "tfidf", "--output_dir", str(blocked)]
        )


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation and precision settings
# ---------------------------------------------------------------------------------------------------------------------


def test_embed_texts_keeps_the_impression_when_it_truncates(saved_sista):
    model, processor = load_sista(saved_sista, "cpu")
    findings, impression = "the lungs are clear " * 30, "small left effusion."
    report = f"{findings.strip()}. {impression}"
    kept = embed_texts(model, processor, [report], max_length=16, sections=[(findings.strip() + ".", impression)])
    # oracle: the text pre-training would read, embedded without sections
    fitted = fit_report(processor.tokenizer, report, findings.strip() + ".", impression, 16 - 2)
    assert fitted.endswith(impression)
    expected = embed_texts(model, processor, [fitted], max_length=16)
    torch.testing.assert_close(kept, expected)
    cut = embed_texts(model, processor, [report], max_length=16)
    assert not torch.allclose(cut, expected)


def test_report_sections_come_from_the_cleaner_or_the_columns():
    dataset = Dataset.from_dict({"report": ["FINDINGS: Lungs clear.\nIMPRESSION: No effusion."],
                                 "findings": ["F"], "impression": ["I"]})  # fmt: skip
    assert report_sections(dataset, clean=True) == [("Lungs clear.", "No effusion.")]
    assert report_sections(dataset, clean=False) == [("F", "I")]
    assert report_sections(dataset.remove_columns(["findings"]), clean=False) is None


def roberta_config(max_position_embeddings: int = 12, pad_token_id: int = 1):
    return RobertaConfig(max_position_embeddings=max_position_embeddings, pad_token_id=pad_token_id, vocab_size=50)


@pytest.mark.parametrize("pad_token_id", [0, 1, 3])
def test_the_length_check_counts_robertas_position_offset(pad_token_id):
    config = roberta_config(pad_token_id=pad_token_id)
    usable = 12 - pad_token_id - 1
    assert text_max_positions(config) == usable
    assert text_max_positions(BertConfig(max_position_embeddings=12)) == 12
    check_text_inputs(torch.full((1, usable), 5), config)
    with pytest.raises(ValueError, match=rf"has {usable + 1} tokens, more than the text tower's {usable} positions"):
        check_text_inputs(torch.full((1, usable + 1), 5), config)
    # oracle: the tower itself accepts `usable` tokens and fails beyond them
    from transformers import RobertaModel

    tower = RobertaModel(RobertaConfig(max_position_embeddings=12, pad_token_id=pad_token_id, vocab_size=50,
                                       hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=8)).eval()  # fmt: skip
    tower(torch.full((1, usable), 5))
    with pytest.raises((IndexError, RuntimeError)):
        tower(torch.full((1, usable + 1), 5))


def test_evaluation_keeps_the_last_incomplete_batch(tmp_path):
    # 3 validation rows and an evaluation batch of 8: training drops incomplete batches, evaluation must not
    torch.manual_seed(0)
    model = SistaModel(tiny_sista_config(sia_mode="off"))
    tokenizer = build_tiny_tokenizer()
    rows = [{"pixel_values": torch.randn(3, 32, 32), "report": report}
            for report in ("small left effusion.", "no pneumothorax.", "the lungs are clear.")]  # fmt: skip
    collator = SistaDataCollator(tokenizer, max_length=16, text_config=model.config.text_config)
    args = SistaTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to="none",
                                  use_cpu=True, disable_tqdm=True)  # fmt: skip
    assert args.dataloader_drop_last  # training keeps its equal global batches
    processor = SistaProcessor(SistaImageProcessor(size=32), tokenizer, model_max_length=64)
    trainer = trainer_module.SistaTrainer(
        model=model, args=args, eval_dataset=rows, data_collator=collator, processing_class=processor
    )
    metrics = trainer.evaluate()
    # oracle: the model's loss on the one batch of all three rows
    with torch.no_grad():
        expected = model.eval()(**collator(rows)).loss.item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert args.dataloader_drop_last  # restored for training


@pytest.mark.parametrize(
    "capability, expected", [((7, 0), (False, True)), ((7, 5), (False, True)), ((8, 0), (True, False)),
                             ((9, 0), (True, False))],
)  # fmt: skip
def test_mixed_precision_follows_the_gpus_capability(monkeypatch, caplog, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    monkeypatch.setattr(torch.version, "hip", None)
    with caplog.at_level("INFO"):
        assert trainer_module.default_mixed_precision(fp16=False) == expected
    assert ("fp16, not bf16" if expected[1] else "bf16 (a test GPU") in caplog.text
    assert trainer_module.default_mixed_precision(fp16=True) == (False, True)  # --fp16 given: kept
    assert trainer_module.default_mixed_precision(fp16=False, use_cpu=True) == (False, False)


def test_no_mixed_precision_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU default")
    args = SistaTrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert (args.bf16, args.fp16) == (False, False)


@pytest.mark.parametrize("prompt", [".", "\x00", "\u200b", " "])
def test_zero_shot_refuses_a_prompt_without_content(prompt):
    class_prompts = load_script("examples/zero_shot.py").class_prompts
    with pytest.raises(ValueError, match=r"Class 'effusion' needs .* positive prompt strings, each with a letter"):
        class_prompts(["effusion"], {"effusion": {"positive": ["effusion.", prompt], "negative": ["no effusion."]}})
    assert class_prompts(["effusion"], {"effusion": {"positive": ["effusion."], "negative": ["no effusion."]}})
