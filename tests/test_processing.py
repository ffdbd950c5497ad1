# Copyright 2026 The SISTA Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests for processing_sista: report cleaning, the chest X-ray image processor and the processor."""

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertTokenizer
from transformers.image_utils import PILImageResampling

from processing_sista import (
    CleanedReport,
    SistaImageProcessor,
    SistaProcessor,
    clean_report,
    clean_reports,
    window_intensities,
)


REPOSITORY = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Report cleaning
# ---------------------------------------------------------------------------

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.  Clips project over the left lung,
 potentially within the breast. The imaged upper abdomen is unremarkable.
 Chronic deformity of the posterior left sixth and seventh ribs are noted.

 IMPRESSION:

 No acute cardiopulmonary process.
"""

MIMIC_REPORT_WITH_LIST = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 INDICATION:  ___ year old woman with dyspnea  // r/o pneumonia

 COMPARISON:  ___

 FINDINGS:

 Moderate cardiomegaly is stable.  There is a new left retrocardiac opacity,
 and a small left pleural effusion, compared to ___ .  No pneumothorax.

 IMPRESSION :

 1.  Left lower lobe opacity, concerning for pneumonia in the appropriate
 clinical setting
 2.  Small left pleural effusion.

 NOTIFICATION:  The findings were discussed with ___, M.D. by ___, M.D. on the
 telephone on ___ at 2:10 PM, 2 minutes after discovery of the findings.
"""

IU_XRAY_REPORT = (
    "Findings: The cardiomediastinal silhouette and pulmonary vasculature are within normal limits. There is no "
    "pneumothorax or pleural effusion. There are no focal areas of consolidation. Mild degenerative changes of the "
    "XXXX spine.\nImpression: No acute cardiopulmonary abnormality."
)

# IU X-ray fields concatenated on one line: the headers are found inside the line.
IU_XRAY_ONE_LINE = (
    "COMPARISON: XXXX. INDICATION: XXXX-year-old female with chest pain. FINDINGS: Heart size normal. Lungs are "
    "clear. No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses. IMPRESSION: Normal chest"
)

MIMIC_REPORT_WITHOUT_SECTIONS = """                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___

 COMPARISON:  Prior exam from ___.

 CLINICAL HISTORY:  Fever, question pneumonia.

 The lungs are clear.  Heart size is normal.
 There is no effusion.
"""


def test_clean_report_mimic_sections():
    cleaned = clean_report(MIMIC_REPORT)

    assert cleaned.findings == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities that most "
        "likely represent nipple shadows. The cardiomediastinal silhouette is normal. Clips project over the left "
        "lung, potentially within the breast. The imaged upper abdomen is unremarkable. Chronic deformity of the "
        "posterior left sixth and seventh ribs are noted."
    )
    assert cleaned.impression == "No acute cardiopulmonary process."
    assert cleaned.text == f"{cleaned.findings} {cleaned.impression}"
    assert cleaned.source == "sections"
    assert not cleaned.is_empty


def test_clean_report_flattens_numbered_list_and_removes_placeholders():
    cleaned = clean_report(MIMIC_REPORT_WITH_LIST)

    assert cleaned.findings == (
        "Moderate cardiomegaly is stable. There is a new left retrocardiac opacity, and a small left pleural "
        "effusion. No pneumothorax."
    )
    # The NOTIFICATION section after the impression is not part of it.
    assert cleaned.impression == (
        "Left lower lobe opacity, concerning for pneumonia in the appropriate clinical setting. "
        "Small left pleural effusion."
    )
    assert cleaned.source == "sections"


def test_clean_report_iu_xray():
    cleaned = clean_report(IU_XRAY_REPORT)

    assert cleaned.findings == (
        "The cardiomediastinal silhouette and pulmonary vasculature are within normal limits. There is no "
        "pneumothorax or pleural effusion. There are no focal areas of consolidation. Mild degenerative changes of "
        "the spine."
    )
    assert cleaned.impression == "No acute cardiopulmonary abnormality."
    assert cleaned.source == "sections"


def test_clean_report_finds_upper_case_headers_inside_a_line():
    cleaned = clean_report(IU_XRAY_ONE_LINE)

    assert cleaned.findings == (
        "Heart size normal. Lungs are clear. No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or "
        "masses."
    )
    assert cleaned.impression == "Normal chest."
    assert cleaned.text == f"{cleaned.findings} {cleaned.impression}"


def test_clean_report_falls_back_to_whole_text_without_labels():
    cleaned = clean_report(MIMIC_REPORT_WITHOUT_SECTIONS)

    assert cleaned == CleanedReport(
        findings="",
        impression="",
        text="The lungs are clear. Heart size is normal. There is no effusion.",
        source="whole_text",
    )


@pytest.mark.parametrize(
    "report, expected",
    [
        (
            "CHEST (PORTABLE AP)\n\nINDICATION: ___-year-old man status post CABG, evaluate for effusion.\n\n"
            "Small bilateral pleural effusions. Findings were discussed with Dr. ___ at 10:15 on ___ by telephone.",
            "Small bilateral pleural effusions.",
        ),
        (
            "PA AND LATERAL CHEST RADIOGRAPHS\nHISTORY: ___ F with new onset ascites\n\nThe lungs are clear.",
            "The lungs are clear.",
        ),
        (
            "FINDINGS: Stable cardiomegaly compared to ___. A ___-year-old patient with a new left effusion.\n"
            "IMPRESSION: Left effusion, new since ___. Dr. ___ was paged at 10:15 on ___.",
            "Stable cardiomegaly. A patient with a new left effusion. Left effusion, new.",
        ),
        (
            "FINDINGS: Mild degenerative changes of the XXXX spine. No XXXX edema.\nIMPRESSION: Normal chest.",
            "Mild degenerative changes of the spine. No edema. Normal chest.",
        ),
    ],
    ids=["exam-title-indication-and-call", "history-after-title", "dates-ages-and-pages", "iu-placeholders"],
)
def test_clean_report_drops_request_text_and_placeholder_phrases(report, expected):
    assert clean_report(report).text == expected


def test_clean_report_on_real_iu_xray_reports_leaves_no_placeholder_or_request_text():
    # the project's data folder sits beside the checkout (or beside the folder of worktrees)
    candidates = [folder / "shared" / "data" / "iu_xray_reports_dev.tgz" for folder in REPOSITORY.parents[:2]]
    archive = next((path for path in candidates if path.is_file()), None)
    if archive is None:
        pytest.skip(f"the IU X-ray development reports are not on this machine (looked for {candidates[0]})")
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".xml")), key=lambda m: m.name)[:300]
        documents = [ElementTree.parse(tar.extractfile(member)).getroot() for member in members]
    for root in documents:
        sections = {node.get("Label"): node.text or "" for node in root.iter("AbstractText")}
        raw = "\n".join(f"{label}: {text}" for label, text in sections.items())
        cleaned = clean_report(raw)
        indication = clean_report(f"FINDINGS: {sections.get('INDICATION', '')}").text
        assert "XX" not in cleaned.text and "  " not in cleaned.text
        if indication and cleaned.text:
            assert indication not in cleaned.text
        expected_impression = clean_report(f"IMPRESSION: {sections.get('IMPRESSION', '')}").impression
        assert cleaned.impression == expected_impression


@pytest.mark.parametrize(
    "report, expected",
    [
        (
            "FINDINGS:\nThere is a 1.5 cm nodule in the right upper lobe, grade 1. No effusion (XX).",
            CleanedReport(
                findings="There is a 1.5 cm nodule in the right upper lobe, grade 1. No effusion.",
                impression="",
                text="There is a 1.5 cm nodule in the right upper lobe, grade 1. No effusion.",
                source="findings",
            ),
        ),
        (
            "clinical history: Cough.\nConclusion :\n(1) No pneumonia (2) Stable cardiomegaly",
            CleanedReport(
                findings="",
                impression="No pneumonia. Stable cardiomegaly.",
                text="No pneumonia. Stable cardiomegaly.",
                source="impression",
            ),
        ),
        (
            "Impression: Fracture of the left rib 7. The lungs are clear",
            CleanedReport(
                findings="",
                impression="Fracture of the left rib 7. The lungs are clear.",
                text="Fracture of the left rib 7. The lungs are clear.",
                source="impression",
            ),
        ),
    ],
    ids=["findings-only", "conclusion-as-impression", "number-ending-a-sentence-is-no-list"],
)
def test_clean_report_single_section(report, expected):
    assert clean_report(report) == expected


@pytest.mark.parametrize(
    "report",
    ["", "   \n\t ", "___ XXXX ___", "FINAL REPORT\nFINDINGS:\n___\nIMPRESSION: XXXX.", "COMPARISON: ___."],
)
def test_clean_report_empty(report):
    cleaned = clean_report(report)

    assert cleaned == CleanedReport(findings="", impression="", text="", source="empty")
    assert cleaned.is_empty


def test_clean_report_leaves_no_gaps_or_dangling_punctuation():
    reports = [MIMIC_REPORT, MIMIC_REPORT_WITH_LIST, IU_XRAY_REPORT, IU_XRAY_ONE_LINE, MIMIC_REPORT_WITHOUT_SECTIONS]
    for cleaned in clean_reports(reports):
        for text in (cleaned.findings, cleaned.impression, cleaned.text):
            assert "  " not in text and " ," not in text and " ." not in text and "\n" not in text
            assert "_" not in text and "XX" not in text


@pytest.mark.parametrize("report", [None, b"FINDINGS: clear", ["FINDINGS: clear"]])
def test_clean_report_rejects_non_strings(report):
    with pytest.raises(TypeError, match="`report`"):
        clean_report(report)


# ---------------------------------------------------------------------------
# Image processor
# ---------------------------------------------------------------------------


def intensity_only_processor(**kwargs) -> SistaImageProcessor:
    """A processor that only converts intensities, so values can be compared pixel by pixel."""
    defaults = {"do_resize": False, "do_pad": False, "do_normalize": False, "num_channels": 1}
    return SistaImageProcessor(**{**defaults, **kwargs})


def test_16_bit_image_percentile_window():
    # 0..999 shuffled: linear-interpolation percentiles are p / 100 * 999, so the 0.5/99.5 window is known.
    values = np.random.default_rng(0).permutation(1000).astype(np.uint16).reshape(25, 40)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    low, high = 0.005 * 999, 0.995 * 999
    expected = np.clip((values - low) / (high - low), 0, 1)

    pixel_values = intensity_only_processor()(image, return_tensors="np")["pixel_values"]

    assert pixel_values.shape == (1, 1, 25, 40)
    np.testing.assert_allclose(pixel_values[0, 0], expected, atol=1e-6)


def test_16_bit_image_min_max_window_and_int32():
    values = np.array([[100, 300], [500, 4195]], dtype=np.uint16)
    expected = (values - 100.0) / 4095.0

    processor = intensity_only_processor(window=(0, 100))
    np.testing.assert_allclose(processor(values, return_tensors="np")["pixel_values"][0, 0], expected, atol=1e-6)
    int32_image = Image.fromarray(values.astype(np.int32))
    assert int32_image.mode == "I"
    np.testing.assert_allclose(processor(int32_image, return_tensors="np")["pixel_values"][0, 0], expected, atol=1e-6)


def test_16_bit_file_keeps_its_bit_depth(tmp_path):
    values = np.random.default_rng(7).integers(0, 4096, size=(30, 20), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "xray.png")
    processor = SistaImageProcessor(size=16)

    from_path = processor([str(tmp_path / "xray.png"), tmp_path / "xray.png"], return_tensors="np")["pixel_values"]

    expected = processor(values, return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(from_path, np.stack([expected, expected]))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_constant_image_is_black_not_nan(dtype):
    image = np.full((20, 30), 1234, dtype=dtype)

    pixel_values = SistaImageProcessor(size=8)(image, return_tensors="np")["pixel_values"]

    assert np.isfinite(pixel_values).all()
    np.testing.assert_array_equal(pixel_values, np.full((1, 3, 8, 8), -1.0, dtype=np.float32))


def test_8_bit_and_float_intensities():
    values = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    processor = intensity_only_processor()

    np.testing.assert_allclose(processor(values, return_tensors="np")["pixel_values"][0, 0], values / 255.0)
    binary = Image.fromarray(values > 60)
    assert binary.mode == "1"
    np.testing.assert_array_equal(processor(binary, return_tensors="np")["pixel_values"][0, 0], [[0, 0], [1, 1]])
    # Float images already in [0, 1] are kept; others are windowed like raw detector values.
    in_range = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    np.testing.assert_allclose(processor(in_range, return_tensors="np")["pixel_values"][0, 0], in_range)
    out_of_range = np.array([[-10.0, 0.0], [10.0, 30.0]], dtype=np.float32)
    np.testing.assert_allclose(
        intensity_only_processor(window=(0, 100))(out_of_range, return_tensors="np")["pixel_values"][0, 0],
        [[0.0, 0.25], [0.5, 1.0]],
    )


def test_same_content_in_every_mode_gives_the_same_pixel_values():
    gray = np.random.default_rng(1).integers(0, 256, size=(24, 18), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgba = np.concatenate([rgb, np.random.default_rng(2).integers(0, 256, size=(24, 18, 1), dtype=np.uint8)], -1)
    palette = Image.fromarray(gray, mode="P")
    palette.putpalette([value for level in range(256) for value in (level, level, level)])
    images = {
        "L": Image.fromarray(gray),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(rgba),
        "LA": Image.fromarray(rgba[..., [0, 3]]),
        "P": palette,
        "numpy HxW": gray,
        "numpy HxWx3": rgb,
        "numpy 3xHxW": np.moveaxis(rgb, -1, 0),
        "torch HxWx4": torch.from_numpy(rgba),
    }
    processor = SistaImageProcessor(size=16)
    reference = processor(images["L"], return_tensors="np")["pixel_values"]

    for name, image in images.items():
        pixel_values = processor(image, return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(pixel_values, reference, atol=1e-6, err_msg=name)


def test_colour_is_reduced_to_luma():
    red = np.zeros((5, 6, 3), dtype=np.uint8)
    red[..., 0] = 255

    pixel_values = intensity_only_processor()(red, return_tensors="np")["pixel_values"]

    np.testing.assert_allclose(pixel_values, np.full((1, 1, 5, 6), 0.299), atol=1e-6)


def tall_striped_image() -> np.ndarray:
    """A 64x32 (height x width) image, white in columns 8 to 23 and black elsewhere."""
    image = np.zeros((64, 32), dtype=np.uint8)
    image[:, 8:24] = 255
    return image


def test_pad_mode_keeps_aspect_ratio_and_centres_the_content():
    processor = SistaImageProcessor(
        size=16, resample=PILImageResampling.NEAREST, image_mean=0.2, image_std=0.4, num_channels=1
    )

    pixel_values = processor(tall_striped_image(), return_tensors="np")["pixel_values"][0, 0]

    # 64x32 -> 16x8 (nearest takes source column 4j + 2), padded by 4 black columns on each side.
    background, white, padding = (0 - 0.2) / 0.4, (1 - 0.2) / 0.4, (0 - 0.2) / 0.4
    expected_content = np.where((np.arange(8) * 4 + 2 >= 8) & (np.arange(8) * 4 + 2 < 24), white, background)
    expected = np.full((16, 16), padding)
    expected[:, 4:12] = expected_content
    np.testing.assert_allclose(pixel_values, expected, atol=1e-6)


def test_pad_mode_pads_rows_of_a_wide_image():
    wide = np.full((20, 40), 255, dtype=np.uint8)

    pixel_values = SistaImageProcessor(size=20, num_channels=1)(wide, return_tensors="np")["pixel_values"][0, 0]

    # 20x40 -> 10x20, 5 rows of padding above and below.
    np.testing.assert_allclose(pixel_values[5:15], 1.0, atol=1e-6)
    np.testing.assert_array_equal(pixel_values[:5], -1.0)
    np.testing.assert_array_equal(pixel_values[15:], -1.0)


def test_crop_mode_resizes_the_shorter_side_and_crops_the_centre():
    processor = SistaImageProcessor(size=16, resize_mode="crop", resample=PILImageResampling.NEAREST, num_channels=1)

    pixel_values = processor(tall_striped_image(), return_tensors="np")["pixel_values"][0, 0]

    # 64x32 -> 32x16 (nearest takes source column 2j + 1), rows 8 to 23 kept.
    expected_row = np.where((np.arange(16) * 2 + 1 >= 8) & (np.arange(16) * 2 + 1 < 24), 1.0, -1.0)
    np.testing.assert_allclose(pixel_values, np.tile(expected_row, (16, 1)), atol=1e-6)


def test_num_channels_replicates_the_grayscale_image():
    image = np.random.default_rng(3).integers(0, 4096, size=(30, 20), dtype=np.uint16)
    one_channel = SistaImageProcessor(size=12, num_channels=1)
    three_channels = SistaImageProcessor(size=12)

    single = one_channel(image, return_tensors="pt")["pixel_values"]
    triple = three_channels(image, return_tensors="pt")["pixel_values"]

    assert one_channel.image_mean == (0.5,) and three_channels.image_mean == (0.5, 0.5, 0.5)
    assert single.shape == (1, 1, 12, 12) and triple.shape == (1, 3, 12, 12)
    for channel in range(3):
        torch.testing.assert_close(triple[:, channel], single[:, 0], rtol=0, atol=0)


def test_return_tensors_and_mixed_batch():
    images = [
        Image.new("L", (40, 30), 128),
        np.zeros((50, 20), dtype=np.uint16),
        Image.new("RGBA", (10, 10), (255, 0, 0, 0)),
    ]
    processor = SistaImageProcessor(size=8)

    as_torch = processor(images, return_tensors="pt")["pixel_values"]
    as_numpy = processor(images, return_tensors="np")["pixel_values"]
    as_list = processor(images)["pixel_values"]

    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    assert as_torch.shape == (3, 3, 8, 8)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert isinstance(as_list, list) and len(as_list) == 3
    np.testing.assert_array_equal(as_numpy, as_torch.numpy())
    np.testing.assert_array_equal(np.stack(as_list), as_numpy)


def test_call_arguments_override_the_configuration():
    image = np.random.default_rng(4).integers(0, 4096, size=(30, 20), dtype=np.uint16)
    processor = SistaImageProcessor(size=12)

    overridden = processor(
        image, size=8, window=[0, 100], num_channels=1, image_mean=0.5, image_std=0.5, return_tensors="np"
    )["pixel_values"]
    configured = SistaImageProcessor(size=8, window=(0, 100), num_channels=1)(image, return_tensors="np")

    np.testing.assert_array_equal(overridden, configured["pixel_values"])


def test_image_processor_save_and_load_round_trip(tmp_path):
    processor = SistaImageProcessor(size={"height": 24, "width": 16}, resize_mode="crop", window=(1, 99))
    image = np.random.default_rng(5).integers(0, 65535, size=(40, 30), dtype=np.uint16)

    processor.save_pretrained(tmp_path)
    reloaded = SistaImageProcessor.from_pretrained(tmp_path)

    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["window"] == [1, 99] and saved["resize_mode"] == "crop" and saved["num_channels"] == 3
    assert reloaded.to_dict() == processor.to_dict()
    np.testing.assert_array_equal(
        reloaded(image, return_tensors="np")["pixel_values"], processor(image, return_tensors="np")["pixel_values"]
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_channels": 2}, "num_channels"),
        ({"size": 0}, "size"),
        ({"size": {"shortest_edge": 32}}, "size"),
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"window": (99, 1)}, "window"),
        ({"window": (0, 101)}, "window"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"image_std": 0.0}, "image_std"),
    ],
)
def test_image_processor_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        SistaImageProcessor(**kwargs)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        SistaImageProcessor()(np.zeros((8, 8), dtype=np.uint8), **kwargs)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((0, 10), dtype=np.uint8),
        Image.new("L", (10, 0)),
        np.zeros((10, 10, 5), dtype=np.uint8),
        np.full((4, 4), np.nan, dtype=np.float32),
        [],
    ],
    ids=["zero-height", "zero-height-pil", "five-channels", "nan", "empty-list"],
)
def test_image_processor_rejects_bad_images(images):
    with pytest.raises(ValueError, match="`images`"):
        SistaImageProcessor()(images)


def test_window_intensities():
    image = np.array([0.0, 10.0, 20.0, 30.0, 40.0])

    np.testing.assert_allclose(window_intensities(image, (25, 75)), [0.0, 0.0, 0.5, 1.0, 1.0])
    # 99 zeros and one bright pixel: the percentiles coincide, so the min-max range is used.
    sparse = np.zeros(100)
    sparse[0] = 8.0
    np.testing.assert_allclose(window_intensities(sparse, (0.5, 99.5)), sparse / 8.0)


# ---------------------------------------------------------------------------
# Processor
# ---------------------------------------------------------------------------

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "acute", "process", "the", "lungs", "are", "clear"]
VOCABULARY += [".", ","]
REPORTS = ["No acute process.", "The lungs are clear, no acute process."]


@pytest.fixture(scope="module")
def tokenizer():
    # transformers 5 ignores `vocab_file=`; the vocabulary goes in through `vocab`.
    return BertTokenizer(vocab={token: index for index, token in enumerate(VOCABULARY)})


@pytest.fixture
def processor(tokenizer):
    return SistaProcessor(image_processor=SistaImageProcessor(size=16), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def xrays():
    rng = np.random.default_rng(6)
    return [rng.integers(0, 4096, size=(40, 30), dtype=np.uint16), rng.integers(0, 256, size=(20, 30), dtype=np.uint8)]


def test_processor_text_and_images(processor, tokenizer, xrays):
    inputs = processor(text=REPORTS, images=xrays, return_tensors="pt")

    expected_text = tokenizer(REPORTS, padding=True, truncation=True, return_tensors="pt")
    expected_pixels = processor.image_processor(xrays, return_tensors="pt")["pixel_values"]
    assert set(inputs.keys()) == {"input_ids", "token_type_ids", "attention_mask", "pixel_values"}
    torch.testing.assert_close(inputs["input_ids"], expected_text["input_ids"])
    torch.testing.assert_close(inputs["attention_mask"], expected_text["attention_mask"])
    torch.testing.assert_close(inputs["pixel_values"], expected_pixels)
    # [CLS] no acute process . [SEP], padded to the longer report.
    assert inputs["input_ids"][0, :6].tolist() == [2, 5, 6, 7, 12, 3]
    assert inputs["attention_mask"][0].tolist() == [1] * 6 + [0] * (inputs["input_ids"].shape[1] - 6)


def test_processor_single_modality_and_kwargs_routing(processor, xrays):
    text_only = processor(text=REPORTS, max_length=4, return_tensors="np")
    images_only = processor(images=xrays, size=8, resize_mode="crop", return_tensors="np")

    assert "pixel_values" not in text_only and text_only["input_ids"].shape == (2, 4)
    assert set(images_only.keys()) == {"pixel_values"} and images_only["pixel_values"].shape == (2, 3, 8, 8)


def test_processor_errors(tokenizer):
    with pytest.raises(ValueError, match="`tokenizer`"):
        SistaProcessor(image_processor=SistaImageProcessor())
    with pytest.raises(ValueError, match="`text`"):
        SistaProcessor(tokenizer=tokenizer)()


def test_processor_decode_and_input_names(processor):
    input_ids = processor(text=REPORTS)["input_ids"]

    assert processor.batch_decode(input_ids, skip_special_tokens=True) == [
        "no acute process.",
        "the lungs are clear, no acute process.",
    ]
    assert processor.decode(input_ids[0], skip_special_tokens=True) == "no acute process."
    assert set(processor.model_input_names) == {"input_ids", "token_type_ids", "attention_mask", "pixel_values"}
    assert isinstance(SistaProcessor(tokenizer=processor.tokenizer).image_processor, SistaImageProcessor)


def test_auto_classes_load_the_saved_processor_in_a_fresh_process(processor, xrays, tmp_path):
    save_directory = tmp_path / "checkpoint"
    processor.save_pretrained(save_directory)
    expected = processor(text=REPORTS, images=xrays, return_tensors="np")
    np.save(tmp_path / "xray_0.npy", xrays[0])
    np.save(tmp_path / "xray_1.npy", xrays[1])

    saved_config = json.loads((save_directory / "processor_config.json").read_text())
    assert (save_directory / "processing_sista.py").is_file()
    assert saved_config["auto_map"]["AutoProcessor"] == "processing_sista.SistaProcessor"
    assert saved_config["image_processor"]["auto_map"]["AutoImageProcessor"] == "processing_sista.SistaImageProcessor"

    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        assert "processing_sista" not in sys.modules
        xrays = [np.load({str(tmp_path / "xray_0.npy")!r}), np.load({str(tmp_path / "xray_1.npy")!r})]
        processor = AutoProcessor.from_pretrained({str(save_directory)!r}, trust_remote_code=True)
        image_processor = AutoImageProcessor.from_pretrained({str(save_directory)!r}, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained({str(save_directory)!r})
        inputs = processor(text={REPORTS!r}, images=xrays, return_tensors="np")
        np.savez(
            {str(tmp_path / "reloaded.npz")!r},
            input_ids=inputs["input_ids"],
            pixel_values=inputs["pixel_values"],
            image_processor_pixel_values=image_processor(xrays, return_tensors="np")["pixel_values"],
            tokenizer_input_ids=tokenizer({REPORTS!r}, padding=True, return_tensors="np")["input_ids"],
            classes=np.array([type(processor).__name__, type(image_processor).__name__]),
        )
        """
    )
    # Outside the repository and without its path, so only the copied remote code can be imported.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=outside, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

    reloaded = np.load(tmp_path / "reloaded.npz")
    assert reloaded["classes"].tolist() == ["SistaProcessor", "SistaImageProcessor"]
    np.testing.assert_array_equal(reloaded["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(reloaded["pixel_values"], expected["pixel_values"])
    np.testing.assert_array_equal(reloaded["image_processor_pixel_values"], expected["pixel_values"])
    np.testing.assert_array_equal(reloaded["tokenizer_input_ids"], expected["input_ids"])


def test_processor_class_loads_its_checkpoint_without_remote_code(processor, xrays, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = SistaProcessor.from_pretrained(tmp_path)
    assert type(reloaded.image_processor) is SistaImageProcessor
    expected = processor(text=REPORTS, images=xrays, return_tensors="np")
    got = reloaded(text=REPORTS, images=xrays, return_tensors="np")
    np.testing.assert_array_equal(got["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(got["pixel_values"], expected["pixel_values"])
