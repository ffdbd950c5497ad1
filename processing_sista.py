# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""SISTA's processing: report cleaning, the chest X-ray image processor and `SistaProcessor`, which pairs it with a
tokenizer (what `AutoProcessor` loads beside a SISTA checkpoint)."""

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import AutoTokenizer
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
    is_pil_image,
    is_valid_image,
)
from transformers.processing_utils import ImagesKwargs, ProcessorMixin, Unpack
from transformers.tokenization_utils_base import BatchEncoding
from transformers.utils import TensorType


# ---------------------------------------------------------------------------
# Report cleaning
# ---------------------------------------------------------------------------

# Section headers of MIMIC-CXR and IU X-ray reports, as regex fragments. Each maps to the
# section it opens. "context" sections (exam name, indication, history, comparison, technique,
# notification) describe the request, not the image: their content is dropped everywhere. Of
# "other" sections only the label is dropped (their content survives in the whole-text fallback).
_SECTION_HEADERS = {
    r"FINDINGS[ \t]+AND[ \t]+IMPRESSIONS?": "findings",
    r"FINDINGS?": "findings",
    r"IMPRESSIONS?": "impression",
    r"CONCLUSIONS?": "impression",
    r"FINAL[ \t]+REPORT": "other",
    r"WET[ \t]+READ": "other",
    r"EXAMINATION": "context",
    r"TYPE[ \t]+OF[ \t]+EXAMINATION": "context",
    r"EXAM": "context",
    r"STUDY": "context",
    r"PROCEDURE": "context",
    r"(?:CLINICAL[ \t]+)?INDICATIONS?": "context",
    r"REASON[ \t]+FOR[ \t]+(?:EXAM|EXAMINATION|STUDY)": "context",
    r"TECHNIQUE": "context",
    r"COMPARISONS?": "context",
    r"(?:CLINICAL[ \t]+)?HISTORY": "context",
    r"CLINICAL[ \t]+INFORMATION": "context",
    r"NOTIFICATION": "context",
    r"RECOMMENDATION(?:S|\(S\))?": "other",
    r"ADDENDUM": "other",
}
_HEADER_NAMES = "|".join(f"(?:{name})" for name in _SECTION_HEADERS)
# A header is a known name followed by a colon, or alone on its line ("FINAL REPORT").
# At a line start any case is accepted; inside a line only upper case with a colon, which
# catches reports whose line breaks were lost ("... is clear. IMPRESSION: Normal.").
_HEADER_PATTERN = re.compile(
    rf"^[ \t]*(?P<line_start>(?i:{_HEADER_NAMES}))[ \t]*(?::|$)"
    rf"|(?<=\s)(?P<inline>{_HEADER_NAMES})[ \t]*:",
    flags=re.MULTILINE,
)
_COMPILED_HEADERS = [(re.compile(name, flags=re.IGNORECASE), kind) for name, kind in _SECTION_HEADERS.items()]

# De-identification placeholders: runs of underscores (MIMIC-CXR "___") and runs of two or
# more X as a token (IU X-ray "XXXX"); a hyphen gluing one to a word goes with it
# ("XXXX-year-old" -> "year-old").
_DEID_PATTERN = re.compile(r"_+-?|(?<![A-Za-z0-9])X{2,}(?![A-Za-z0-9])-?")
# "1. ", "2) ", "(3) " list markers; which of them really number a list is decided by their order.
_PLACEHOLDER = r"(?:_{2,}|(?<![A-Za-z0-9])X{2,}(?![A-Za-z0-9]))"
# A sentence that reports a phone call or page about the study ("Dr. ___ was paged at 10:15 on
# ___.") says nothing about the image once its names and dates are gone: it is dropped whole.
_COMMUNICATION_PATTERN = re.compile(
    r"\b(?:discuss|communicat|notif|paged|page\b|telephon|phone|called|convey|informed|left a message)", re.IGNORECASE
)
# Placeholders whose neighbours make no sense alone go with them: an age ("___-year-old", "___ F"),
# a doctor's title ("Dr. ___", "___, M.D."), and a preposition or comparison that introduced a date
# ("compared to ___", "on ___", "from ___").
_PLACEHOLDER_PHRASES = [
    re.compile(rf"{_PLACEHOLDER}[ \t-]*(?:years?|yrs?)[ \t-]*old\b[ \t]*", re.IGNORECASE),
    re.compile(rf"{_PLACEHOLDER}[ \t]*[MF]\b"),
    re.compile(rf"\b(?:Drs?\.?|Doctor)[ \t]*{_PLACEHOLDER}(?:,?[ \t]*M\.?D\.?)?", re.IGNORECASE),
    re.compile(rf"{_PLACEHOLDER},?[ \t]*M\.?D\.?"),
    re.compile(
        rf",?[ \t]*\b(?:(?:as[ \t]+)?compared[ \t]+(?:to|with)|in[ \t]+comparison[ \t]+(?:to|with)|dated|since|"
        rf"from|on|of|at|to|by|with)(?:[ \t]+(?:the|a|an))?[ \t]+{_PLACEHOLDER}(?=[ \t]*(?:[.,;:!?)]|$))",
        re.IGNORECASE,
    ),
]
# An exam title on its own line, all capitals ("CHEST (PORTABLE AP)", "PA AND LATERAL CHEST
# RADIOGRAPHS"): the name of the requested study, not a description of the image.
_EXAM_TITLE_PATTERN = re.compile(
    r"^[ \t]*[^a-z\n]*\b(?:CHEST|RADIOGRAPHS?|PORTABLE|X-?RAY|CXR)\b[^a-z\n]*$", flags=re.MULTILINE
)
_LIST_MARKER_PATTERN = re.compile(r"(?<!\S)\(?(\d{1,2})[.)][ \t]+")
_CLAUSE_END = (".", "!", "?", ":", ";")


# Characters that carry no text. Terminal escape sequences (text pasted from a log: "\x1b[0m") and C0/C1 controls
# other than line breaks and tabs (a NUL-filled file) separate words like a space; zero-width and format characters
# (zero-width space and joiners, direction marks, word joiner, byte-order mark, soft hyphen) sit inside words and are
# removed.
_CONTROL_PATTERN = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_ZERO_WIDTH_PATTERN = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def report_has_content(report) -> bool:
    """
    The one rule for "a report with content": a str holding at least one letter or digit (any script). A report of
    punctuation, whitespace, control or zero-width characters only, `None` or NaN has nothing to align or label.
    [`clean_report`] returns such a report as empty; the preparers, the report embeddings, the pre-training collator
    and `pretrain.py`'s filter use this same function.

    Example:

    ```python
    >>> [report_has_content(text) for text in ("No effusion.", " . ", "\x00\x00", "\u200b", None)]
    [True, False, False, False, False]

    ```
    """
    return isinstance(report, str) and any(character.isalnum() for character in report)


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """
    The one reading rule for image files: the pixels as the camera's EXIF orientation tag says to show them (a JPEG
    stored sideways with orientation 6 comes out upright, its width and height swapped). The image processor's file
    loading and the dataset preparers both read files through it, so pre-training and inference see the same image.
    """
    return ImageOps.exif_transpose(image)


@dataclass(frozen=True)
class CleanedReport:
    """
    A radiology report reduced to the text a vision-language model trains on.

    Args:
        findings (`str`):
            The cleaned FINDINGS section, `""` when the report has none.
        impression (`str`):
            The cleaned IMPRESSION section, `""` when the report has none.
        text (`str`):
            `findings` and `impression` joined as sentences; the whole cleaned report (header
            labels removed) when neither section has content; `""` when nothing is usable.
        source (`str`):
            Where `text` came from: `"sections"`, `"findings"`, `"impression"`, `"whole_text"`
            or `"empty"`.
    """

    findings: str
    impression: str
    text: str
    source: str

    @property
    def is_empty(self) -> bool:
        """Whether the report held no usable text ([`report_has_content`]; the caller decides whether to skip it)."""
        return not report_has_content(self.text)


def _header_kind(label: str) -> str:
    return next(kind for pattern, kind in _COMPILED_HEADERS if pattern.fullmatch(label))


def _split_sections(report: str) -> tuple[list[tuple[str, str]], str]:
    """Split a report into `(kind, raw content)` sections; also return the text before the first header."""
    report = report.replace("\r\n", "\n").replace("\r", "\n")
    matches = list(_HEADER_PATTERN.finditer(report))
    preamble = report[: matches[0].start()] if matches else report
    sections = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(report)
        label = match.group("line_start") or match.group("inline")
        kind, content = _header_kind(label), report[match.end() : end]
        if kind == "context":
            # a request section is one paragraph: the text after a blank line is the report's body
            content, _, rest = content.lstrip("\n").partition("\n\n")
            sections.append(("context", content))
            if rest.strip():
                sections.append(("other", rest))
            continue
        sections.append((kind, content))
    return sections, preamble


def _join_sentences(parts: Iterable[str]) -> str:
    """Join text pieces with spaces, ending each with a full stop unless it already ends a clause."""
    sentences = (part.strip() for part in parts)
    return " ".join(s if s.endswith(_CLAUSE_END) else f"{s}." for s in sentences if s)


def _flatten_numbered_list(text: str) -> str:
    """Turn "1. No effusion\\n2. No pneumothorax" into "No effusion. No pneumothorax."."""
    items, expected_number, item_start = [], 1, 0
    for marker in _LIST_MARKER_PATTERN.finditer(text):
        if int(marker.group(1)) != expected_number:
            continue
        # "grade 1. No effusion" is no list: item 1 must open the text, a line or a clause.
        if expected_number == 1 and text[: marker.start()].rstrip(" \t")[-1:] not in ("", "\n", *_CLAUSE_END):
            continue
        items.append(text[item_start : marker.start()])
        item_start, expected_number = marker.end(), expected_number + 1
    if expected_number == 1:
        return text
    # Items lose their line breaks later, so each must end its own sentence.
    return _join_sentences([*items, text[item_start:]])


def _tidy_punctuation(text: str) -> str:
    """Repair what removed placeholders leave behind: stray spaces, doubled or leading punctuation."""
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    text = re.sub(r"[,;:]+(?=[.!?])", "", text)
    text = re.sub(r"([,;:.])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"\.(?:\s*\.)+", ".", text)
    text = re.sub(r"(?<=[.!?])\s*[,;:]+", "", text)
    text = re.sub(r"^[\s,.;:!?-]+", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _drop_placeholder_phrases(text: str) -> str:
    """Remove de-identification placeholders with the words that only made sense with them."""
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(])", text)
    kept = [
        sentence
        for sentence in sentences
        if not (re.search(_PLACEHOLDER, sentence) and _COMMUNICATION_PATTERN.search(sentence))
    ]
    text = " ".join(kept)
    for pattern in _PLACEHOLDER_PHRASES:
        text = pattern.sub(" ", text)
    return text


def _clean_text(text: str) -> str:
    text = _flatten_numbered_list(text)
    text = _drop_placeholder_phrases(text)
    text = _DEID_PATTERN.sub(" ", text)
    text = re.sub(r"\s+", " ", text)
    text = _tidy_punctuation(text)
    # punctuation left alone ("." or "-" once the placeholders went) is no sentence
    return text if report_has_content(text) else ""


def clean_report(report: str) -> CleanedReport:
    """
    Clean a raw MIMIC-CXR or IU X-ray report and extract its FINDINGS and IMPRESSION.

    Headers (`FINDINGS:`, `IMPRESSION:`, `FINAL REPORT`, `EXAMINATION:`, `INDICATION:`,
    `TECHNIQUE:`, `COMPARISON:`, `HISTORY:`, ...) are recognised at a line start in any case
    (spaces before the colon allowed), and in upper case inside a line. `CONCLUSION:` counts as
    impression and `FINDINGS AND IMPRESSION:` as findings. The content of request sections
    (examination, indication, history, comparison, technique, notification) and exam titles on
    their own line ("CHEST (PORTABLE AP)") is dropped: it describes the request, not the image.
    De-identification placeholders (`___`, `XXXX`) are removed with the words that only made sense
    with them (an age, "Dr.", "compared to ___"), sentences about a call or page that named someone
    are dropped, numbered lists are flattened into sentences and whitespace collapsed. Control characters count as
    spaces and zero-width characters are removed; a section without a letter or digit ([`report_has_content`]) is
    empty.

    Args:
        report (`str`):
            The raw report text.

    Returns:
        [`CleanedReport`]: the cleaned sections and the training text. A report without usable
        text gives `text=""` and `source="empty"`; this function never raises for it.

    Example:

    ```python
    >>> clean_report("FINDINGS: Lungs are clear.\\nIMPRESSION:\\n1. No acute process\\n2. Stable XXXX.").text
    'Lungs are clear. No acute process. Stable.'

    ```
    """
    if not isinstance(report, str):
        raise TypeError(f"`report` must be a str, got {type(report).__name__}.")
    sections, preamble = _split_sections(_ZERO_WIDTH_PATTERN.sub("", _CONTROL_PATTERN.sub(" ", report)))
    findings = _join_sentences(_clean_text(content) for kind, content in sections if kind == "findings")
    impression = _join_sentences(_clean_text(content) for kind, content in sections if kind == "impression")

    if findings and impression:
        return CleanedReport(findings, impression, _join_sentences([findings, impression]), "sections")
    if findings:
        return CleanedReport(findings, "", findings, "findings")
    if impression:
        return CleanedReport("", impression, impression, "impression")
    body = [_EXAM_TITLE_PATTERN.sub("", content) for kind, content in sections if kind != "context"]
    whole_text = _join_sentences(_clean_text(part) for part in [_EXAM_TITLE_PATTERN.sub("", preamble), *body])
    return CleanedReport("", "", whole_text, "whole_text" if whole_text else "empty")


def clean_reports(reports: list[str]) -> list[CleanedReport]:
    """Apply [`clean_report`] to every report of a list."""
    return [clean_report(report) for report in reports]


# ---------------------------------------------------------------------------
# Detection post-processing (shared by the detection head and the image processor)
# ---------------------------------------------------------------------------


def center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """`(center_x, center_y, width, height)` → `(x_min, y_min, x_max, y_max)`."""
    center_x, center_y, width, height = boxes.unbind(-1)
    return torch.stack([center_x - width / 2, center_y - height / 2, center_x + width / 2, center_y + height / 2], -1)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of `(N, 4)` and `(M, 4)` corner boxes `(x_min, y_min, x_max, y_max)`: shape `(N, M)`."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp_min(0) * (boxes1[:, 3] - boxes1[:, 1]).clamp_min(0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp_min(0) * (boxes2[:, 3] - boxes2[:, 1]).clamp_min(0)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(dim=-1)
    union = area1[:, None] + area2[None, :] - intersection
    return intersection / union.clamp_min(torch.finfo(intersection.dtype).tiny)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    r"""
    Greedy non-maximum suppression within each class (torchvision's `batched_nms` semantics): a box is dropped when it
    overlaps a kept, higher-scoring box of the same class by IoU > `iou_threshold`.

    Args:
        boxes (`torch.Tensor` of shape `(N, 4)`): corner boxes. scores (`(N,)`). classes (`(N,)` integers).

    Returns:
        `torch.LongTensor`: indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    overlaps = box_iou(boxes[order], boxes[order])
    suppressible = (overlaps > iou_threshold) & (classes[order][:, None] == classes[order][None, :])
    keep = torch.ones(order.numel(), dtype=torch.bool, device=boxes.device)
    # greedy by construction; at most `detection_max_detections` boxes per image, so the loop is short
    for index in range(order.numel()):
        if keep[index]:
            keep[index + 1 :] &= ~suppressible[index, index + 1 :]
    return order[keep]


def decode_detections(
    heatmap_logits: torch.Tensor, box_sizes: torch.Tensor, box_offsets: torch.Tensor, max_detections: int = 100
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""
    CenterNet decoding: the heatmap's local maxima (3×3) are the detections; the `max_detections` best per image are
    returned with their boxes rebuilt from the cell, the predicted offset and the predicted size.

    Returns:
        `(scores, class_labels, boxes)` of shapes `(batch_size, K)`, `(batch_size, K)` and `(batch_size, K, 4)`, boxes
        normalised `(center_x, center_y, width, height)`, by decreasing score; `K = min(max_detections, cells ×
        classes)`.
    """
    batch_size, num_classes, grid_height, grid_width = heatmap_logits.shape
    probabilities = heatmap_logits.detach().float().sigmoid()
    is_peak = probabilities == F.max_pool2d(probabilities, kernel_size=3, stride=1, padding=1)
    peak_scores = (probabilities * is_peak).flatten(1)
    num_detections = min(max_detections, peak_scores.shape[1])
    scores, flat_index = peak_scores.topk(num_detections, dim=1)
    class_labels = flat_index // (grid_height * grid_width)
    cell = flat_index % (grid_height * grid_width)
    rows, columns = cell // grid_width, cell % grid_width
    offsets = box_offsets.detach().float().flatten(2).gather(2, cell[:, None].expand(-1, 2, -1))
    sizes = box_sizes.detach().float().flatten(2).gather(2, cell[:, None].expand(-1, 2, -1)).clamp_min(0)
    boxes = torch.stack(
        [
            (columns + offsets[:, 0]) / grid_width,
            (rows + offsets[:, 1]) / grid_height,
            sizes[:, 0] / grid_width,
            sizes[:, 1] / grid_height,
        ],
        dim=-1,
    )
    return scores, class_labels, boxes


def check_target_sizes(target_sizes, batch_size: int) -> None:
    """Check the `target_sizes` of a post-processing call: one positive `(height, width)` pair per image."""
    if len(target_sizes) != batch_size:
        raise ValueError(f"`target_sizes` must hold {batch_size} (height, width) pairs, got {len(target_sizes)}.")
    for index, target_size in enumerate(target_sizes):
        if len(target_size) != 2 or any(int(value) <= 0 for value in target_size):
            shown = target_size.tolist() if torch.is_tensor(target_size) else target_size
            raise ValueError(f"`target_sizes[{index}]` must be a positive (height, width) pair, got {shown}.")



def post_process_detections(
    outputs, threshold: float, nms_iou_threshold: float, target_sizes=None, to_pixels=None, drop_empty: bool = False
):
    """
    Shared by [`SistaForObjectDetection.post_process_object_detection`] and the image processor's: per image, the
    detections above `threshold`, as corners, mapped by `to_pixels(index, boxes)` (normalised xyxy → pixels; `None`
    keeps them normalised), with `drop_empty` the boxes left without area dropped (mapped into the padding and
    clipped), then class-wise NMS (`nms_iou_threshold` 1 disables it).
    """
    batch_size = outputs.scores.shape[0]
    if target_sizes is not None:
        check_target_sizes(target_sizes, batch_size)
    results = []
    for index in range(batch_size):
        keep = outputs.scores[index] > threshold
        scores, labels = outputs.scores[index][keep], outputs.pred_class_labels[index][keep]
        boxes = center_to_corners(outputs.pred_boxes[index][keep].float())
        if to_pixels is not None:
            boxes = to_pixels(index, boxes)
        if drop_empty:
            has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            scores, labels, boxes = scores[has_area], labels[has_area], boxes[has_area]
        if nms_iou_threshold < 1:
            kept = batched_nms(boxes, scores, labels, nms_iou_threshold)
            scores, labels, boxes = scores[kept], labels[kept], boxes[kept]
        results.append({"scores": scores, "labels": labels, "boxes": boxes})
    return results


# ---------------------------------------------------------------------------
# Image processing
# ---------------------------------------------------------------------------

# PIL modes that `np.array` turns into usable intensities; any other mode (palette, CMYK,
# YCbCr, ...) is converted to RGB (palette with alpha to RGBA) first.
_PIL_MODES_AS_ARRAYS = {"1", "L", "LA", "I", "F", "RGB", "RGBA"}
# ITU-R 601-2 luma weights, the ones PIL's own "RGB" -> "L" conversion uses.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
_RESIZE_MODES = ("pad", "crop")


class SistaImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    resize_mode (`str`, *optional*, defaults to `self.resize_mode`):
        `"pad"` fits the whole image inside `size` (longer side resized) and pads the rest with black;
        `"crop"` covers `size` (shorter side resized) and centre-crops the overflow.
    window (`tuple[float, float]`, *optional*, defaults to `self.window`):
        Lower and upper percentiles of an image's intensities mapped to 0 and 1 when the image is not 8-bit.
    num_channels (`int`, *optional*, defaults to `self.num_channels`):
        Number of identical channels the grayscale output is replicated to (1 or 3).
    """

    resize_mode: str | None
    window: tuple[float | int, float | int] | list[float | int] | None
    num_channels: int | None


def _validate_sista_image_kwargs(
    size: SizeDict | None = None,
    resize_mode: str | None = None,
    window: tuple[float, float] | None = None,
    num_channels: int | None = None,
    image_mean: float | tuple[float, ...] | None = None,
    image_std: float | tuple[float, ...] | None = None,
    **kwargs,
) -> None:
    """Check the arguments that the base class does not know or does not check."""
    if size is not None and not (size.height and size.width and size.height > 0 and size.width > 0):
        raise ValueError(f"`size` must give a positive height and width, got {dict(size)}.")
    if resize_mode is not None and resize_mode not in _RESIZE_MODES:
        raise ValueError(f"`resize_mode` must be one of {_RESIZE_MODES}, got {resize_mode!r}.")
    if window is not None and not (len(window) == 2 and 0 <= window[0] < window[1] <= 100):
        raise ValueError(f"`window` must be two percentiles (low, high) with 0 <= low < high <= 100, got {window}.")
    if num_channels is not None and num_channels not in (1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3, got {num_channels}.")
    for name, value in (("image_mean", image_mean), ("image_std", image_std)):
        if isinstance(value, tuple) and len(value) not in (1, num_channels):
            raise ValueError(f"`{name}` must have 1 or `num_channels`={num_channels} values, got {len(value)}.")
    if image_std is not None and np.any(np.asarray(image_std) <= 0):
        raise ValueError(f"`image_std` must be positive, got {image_std}.")


def _to_channels_last_array(image: ImageInput, input_data_format: ChannelDimension | str | None) -> np.ndarray:
    """Return the raw intensities of a PIL image, numpy array or torch tensor as an (H, W) or (H, W, C) array."""
    if is_pil_image(image):
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        elif image.mode not in _PIL_MODES_AS_ARRAYS and not image.mode.startswith("I;16"):
            image = image.convert("RGB")
        return np.array(image)
    array = image if isinstance(image, np.ndarray) else image.numpy(force=True)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`images` must hold real numbers (bool, integer or float), got an array of {array.dtype}.")
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise ValueError(f"`images` must be (H, W), (H, W, C) or (C, H, W) arrays, got shape {array.shape}.")
    if input_data_format is None:
        try:
            input_data_format = infer_channel_dimension_format(array, num_channels=(1, 2, 3, 4))
        except ValueError as error:
            raise ValueError(
                f"`images` holds an array of shape {array.shape} whose channel axis (1 to 4 channels, first or last) "
                "cannot be found; pass `input_data_format`."
            ) from error
    return np.moveaxis(array, 0, -1) if ChannelDimension(input_data_format) == ChannelDimension.FIRST else array


def _to_luminance(array: np.ndarray) -> np.ndarray:
    """Reduce (H, W[, C]) intensities to (H, W) float64: gray channels as they are, colour to luma, alpha dropped."""
    if array.ndim == 2:
        return array.astype(np.float64)
    num_channels = array.shape[-1]
    if num_channels in (1, 2):
        return array[..., 0].astype(np.float64)
    if num_channels in (3, 4):
        return array[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
    raise ValueError(f"`images` must have 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels, got {num_channels}.")


def window_intensities(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """
    Map the `window` percentiles of `image` to 0 and 1 and clip, as radiology viewers window a high-bit-depth image.

    Args:
        image (`np.ndarray`):
            Intensities of any numeric dtype.
        window (`tuple[float, float]`):
            Lower and upper percentiles (0 to 100) mapped to 0 and 1.

    Returns:
        `np.ndarray`: float intensities in [0, 1]. When the percentiles coincide (an almost constant image) the
        min-max range is used instead, and a constant image becomes all zeros rather than NaN.
    """
    low, high = np.percentile(image, window)
    if high <= low:
        low, high = image.min(), image.max()
    if high <= low:
        return np.zeros_like(image)
    with np.errstate(over="ignore"):
        span_overflows = not np.isfinite(high - low)
    if span_overflows:  # float64 extremes: halved (exactly) so that differences do not overflow
        image, low, high = image / 2, low / 2, high / 2
    windowed = (image - low) / (high - low)
    return np.clip(windowed, 0.0, 1.0, out=windowed)


def _rescale_intensities(
    luminance: np.ndarray, dtype: np.dtype, rescale_factor: float, window: tuple[float, float]
) -> np.ndarray:
    """Bring intensities to [0, 1] according to the bit depth of the source `dtype`."""
    if dtype == np.uint8:
        return luminance * rescale_factor
    if dtype == np.bool_:
        return luminance
    if np.issubdtype(dtype, np.floating) and luminance.min() >= 0.0 and luminance.max() <= 1.0:
        # Float images already in [0, 1] are taken as display intensities, not as raw detector values.
        return luminance
    return window_intensities(luminance, window)


def _resized_shape(height: int, width: int, size: SizeDict, resize_mode: str) -> tuple[int, int]:
    """Aspect-preserving target shape: inside `size` for "pad", covering `size` for "crop"."""
    scale_to_size = (size.height / height, size.width / width)
    scale = min(scale_to_size) if resize_mode == "pad" else max(scale_to_size)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    if resize_mode == "pad":
        return min(new_height, size.height), min(new_width, size.width)
    return max(new_height, size.height), max(new_width, size.width)


def _centre_crop_shift(frame: int, crop: int) -> int:
    """
    How far transformers' centre crop of a `frame`-long axis to `crop` moves a point: back by `(frame - crop) // 2`
    when it cuts, forward by the zero padding `ceil((crop - frame) / 2)` when the crop is larger.
    """
    padding = math.ceil((max(crop, frame) - frame) / 2)
    return padding - max(0, (frame - crop) // 2 + padding)


def _pad_centred(image: np.ndarray, size: SizeDict) -> np.ndarray:
    """Pad a (1, H, W) image with zeros (black) to `size`, the content in the centre."""
    height, width = image.shape[-2:]
    if height > size.height or width > size.width:
        raise ValueError(
            f"Cannot pad an image of size {(height, width)} to `size`={dict(size)}; set `do_resize=True`."
        )
    top, left = (size.height - height) // 2, (size.width - width) // 2
    padding = ((0, 0), (top, size.height - height - top), (left, size.width - width - left))
    return np.pad(image, padding, mode="constant", constant_values=0.0)


def _is_image_sequence(images) -> bool:
    """A list, tuple or other sequence of images (a `datasets` Column); a string, array or tensor is one image."""
    if isinstance(images, (list, tuple)):
        return True
    return (
        isinstance(images, (Sequence, Iterable))
        and hasattr(images, "__len__")
        and not isinstance(images, (str, bytes, os.PathLike, Mapping, np.ndarray, Image.Image))
        and not is_valid_image(images)
    )


def _decode(image: Image.Image, description: str) -> None:
    """Decode a lazily opened PIL image now, so a truncated or corrupt file fails here with its name."""
    try:
        image.load()
    except OSError as error:
        raise OSError(
            f"{description} cannot be decoded ({error}): the file is probably truncated or corrupt."
        ) from error


class SistaImageProcessor(PilBackend):
    r"""
    Chest X-ray image processor (PIL/NumPy, no torchvision).

    Every image becomes a float grayscale image in [0, 1]: 8-bit images are divided by 255, 16-bit and 32-bit
    integer images (and float images outside [0, 1]) are windowed between two intensity percentiles, colour images
    are reduced to luma (ITU-R 601-2) and alpha is dropped. The image is then resized without distortion, padded
    or cropped to `size`, replicated to `num_channels` and normalised.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize the image, keeping its aspect ratio (see `resize_mode`).
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 224, "width": 224}`):
            Output size; an int means a square.
        resize_mode (`str`, *optional*, defaults to `"pad"`):
            `"pad"` resizes the longer side to fit `size` and pads the rest with black, centred, so nothing of the
            chest is lost; `"crop"` resizes the shorter side and centre-crops the overflow.
        do_pad (`bool`, *optional*, defaults to `True`):
            Whether to pad to `size` in `"pad"` mode. Without padding, images keep their aspect ratio and a batch
            can only be stacked into a tensor when all images share one shape.
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BILINEAR`):
            Resampling filter used on the float image (PIL mode "F", so no 8-bit rounding).
        do_center_crop (`bool`, *optional*, defaults to `False`):
            Whether to centre-crop to `crop_size` after resizing.
        crop_size (`dict[str, int]`, *optional*, defaults to `None`):
            Output size of the centre crop when `do_center_crop=True`.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to bring intensities to [0, 1] (8-bit by `rescale_factor`, other bit depths by `window`).
            Without it the raw intensities are kept.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Factor applied to 8-bit images.
        window (`tuple[float, float]`, *optional*, defaults to `(0.5, 99.5)`):
            Percentiles of each high-bit-depth image mapped to 0 and 1 (values outside are clipped). The 0.5/99.5
            default ignores burnt-in text, markers and collimator edges that would otherwise compress the lung
            contrast; `(0, 100)` is a plain min-max window.
        num_channels (`int`, *optional*, defaults to 3):
            Number of identical channels in the output, 3 for backbones pre-trained on RGB images, 1 otherwise. It
            must match the vision config's `num_channels`.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with `image_mean` and `image_std`.
        image_mean (`float` or `list[float]`, *optional*, defaults to 0.5 per channel):
            Mean subtracted per channel. 0.5/0.5 maps [0, 1] to [-1, 1], the convention of the default ViT backbone
            (`IMAGENET_STANDARD_MEAN`); use the statistics of a backbone's own pre-training when they differ.
        image_std (`float` or `list[float]`, *optional*, defaults to 0.5 per channel):
            Standard deviation divided out per channel.

    Example:

    ```python
    >>> import numpy as np
    >>> from processing_sista import SistaImageProcessor

    >>> image_processor = SistaImageProcessor(size=64)
    >>> xray = np.random.default_rng(0).integers(0, 4096, size=(300, 240), dtype=np.uint16)
    >>> image_processor(xray, return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 64, 64])

    ```
    """

    valid_kwargs = SistaImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"height": 224, "width": 224}
    resize_mode = "pad"
    do_pad = True
    resample = PILImageResampling.BILINEAR
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    window = (0.5, 99.5)
    num_channels = 3
    do_normalize = True

    def __init__(self, **kwargs: Unpack[SistaImageProcessorKwargs]):
        # The per-channel default follows `num_channels`, so a 1-channel processor gets a 1-value mean.
        num_channels = kwargs.get("num_channels") or self.num_channels
        if kwargs.get("image_mean") is None:
            kwargs["image_mean"] = [IMAGENET_STANDARD_MEAN[0]] * num_channels
        if kwargs.get("image_std") is None:
            kwargs["image_std"] = [IMAGENET_STANDARD_STD[0]] * num_channels
        super().__init__(**kwargs)
        _validate_sista_image_kwargs(**{name: getattr(self, name) for name in self._valid_kwargs_names})

    def _standardize_kwargs(self, window: tuple[float, float] | list[float] | None = None, **kwargs) -> dict:
        kwargs = super()._standardize_kwargs(**kwargs)
        # JSON stores the window as a list; a tuple keeps a reloaded config identical to the saved one.
        kwargs["window"] = tuple(window) if window is not None else None
        return kwargs

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        _validate_sista_image_kwargs(**kwargs)

    # -- from the processed frame back to the original image --------------------------------------------------------

    def frame_geometry(self, height: int, width: int) -> dict[str, float]:
        """
        Where an image of `height` x `width` lands in the processed frame under this processor's resize, pad or crop:
        a point `(y, x)` of the image (pixel edges at integers) lies at `(y * scale_y + offset_y, x * scale_x +
        offset_x)` of a frame of `frame_height` x `frame_width` pixels.
        """
        size = self.size if isinstance(self.size, SizeDict) else SizeDict(**self.size)
        if self.do_resize:
            resized_height, resized_width = _resized_shape(height, width, size, self.resize_mode)
        else:
            resized_height, resized_width = height, width
        geometry = {
            "scale_y": resized_height / height,
            "scale_x": resized_width / width,
            "offset_y": 0.0,
            "offset_x": 0.0,
            "frame_height": resized_height,
            "frame_width": resized_width,
        }

        def crop_to(crop: SizeDict) -> None:
            geometry["offset_y"] += _centre_crop_shift(geometry["frame_height"], crop.height)
            geometry["offset_x"] += _centre_crop_shift(geometry["frame_width"], crop.width)
            geometry["frame_height"], geometry["frame_width"] = crop.height, crop.width

        if self.resize_mode == "crop":
            crop_to(size)
        elif self.do_pad:  # `_pad_centred`
            geometry["offset_y"] += (size.height - resized_height) // 2
            geometry["offset_x"] += (size.width - resized_width) // 2
            geometry["frame_height"], geometry["frame_width"] = size.height, size.width
        if self.do_center_crop:
            crop_to(self.crop_size if isinstance(self.crop_size, SizeDict) else SizeDict(**self.crop_size))
        return geometry

    def post_process_object_detection(
        self,
        outputs,
        threshold: float = 0.5,
        target_sizes=None,
        nms_iou_threshold: float = 0.5,
    ) -> list[dict]:
        r"""
        Detections of [`SistaForObjectDetection`] in the original images' pixels (transformers' object-detection
        convention, what `pipeline("object-detection")` calls).

        Args:
            outputs: the model's output (`scores`, `pred_class_labels`, `pred_boxes` normalised `(center_x, center_y,
                width, height)` in the processed frame).
            threshold (`float`, *optional*, defaults to 0.5): minimum score of a kept box.
            target_sizes (`torch.Tensor` of shape `(batch_size, 2)` or `list[tuple[int, int]]`, *optional*):
                `(height, width)` of each original image. Boxes are mapped back through this processor's resize
                and pad (or crop) and clipped to the image; a box left without area (it lay in the padding) is
                dropped. `None` keeps them normalised to [0, 1] in the processed frame.
            nms_iou_threshold (`float`, *optional*, defaults to 0.5): per-class non-maximum suppression; 1 disables
                it. The model's `config.detection_nms_iou_threshold` also defaults to 0.5; pass it here if you
                changed it (the pipeline cannot).

        Returns:
            `list[dict]`, one per image, with `scores`, `labels` and `boxes` (`(x_min, y_min, x_max, y_max)`), by
            decreasing score.
        """
        def to_image(index: int, boxes):
            height, width = (int(value) for value in target_sizes[index])
            geometry = self.frame_geometry(height, width)
            frame = [geometry["frame_width"], geometry["frame_height"]] * 2
            offset = [geometry["offset_x"], geometry["offset_y"]] * 2
            scale = [geometry["scale_x"], geometry["scale_y"]] * 2
            boxes = (boxes * boxes.new_tensor(frame) - boxes.new_tensor(offset)) / boxes.new_tensor(scale)
            return torch.minimum(boxes.clamp_min(0), boxes.new_tensor([width, height, width, height]))

        return post_process_detections(
            outputs, threshold, nms_iou_threshold, target_sizes, None if target_sizes is None else to_image,
            drop_empty=target_sizes is not None,
        )

    def post_process_semantic_segmentation(self, outputs, target_sizes=None) -> list:
        r"""
        Label maps of [`SistaForSemanticSegmentation`] (what `pipeline("image-segmentation")` calls).

        Args:
            outputs: the model's output, `logits` of shape `(batch_size, num_labels, frame_height, frame_width)`.
            target_sizes (`list[tuple[int, int]]`, *optional*): `(height, width)` of each original image; the logits
                are resampled (bilinear) from the processed frame back onto it through this processor's resize and
                pad (or crop). `None` keeps the processed frame.

        Returns:
            `list[torch.LongTensor]` of shape `(height, width)`: the arg-max class, or for one logit channel
            (binary segmentation) 1 where the sigmoid is at least 0.5 and 0 elsewhere. Pixels the model never saw
            (cropped away) are 0.
        """
        logits = outputs.logits.float()
        if target_sizes is not None:
            check_target_sizes(target_sizes, len(logits))
        maps = []
        for index, image_logits in enumerate(logits):
            seen = None
            if target_sizes is not None:
                height, width = (int(value) for value in target_sizes[index])
                geometry = self.frame_geometry(height, width)
                # each original pixel centre, in the frame, as grid_sample's [-1, 1] coordinates
                rows = (torch.arange(height, dtype=torch.float32) + 0.5) * geometry["scale_y"] + geometry["offset_y"]
                cols = (torch.arange(width, dtype=torch.float32) + 0.5) * geometry["scale_x"] + geometry["offset_x"]
                grid_y = 2 * rows / geometry["frame_height"] - 1  # the logits cover the frame at any resolution
                grid_x = 2 * cols / geometry["frame_width"] - 1
                grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1)[None]
                image_logits = F.grid_sample(
                    image_logits[None], grid.to(image_logits.device), mode="bilinear", align_corners=False
                )[0]
                seen = (grid.abs() <= 1).all(dim=-1)[0]
            labels = (image_logits[0] >= 0).long() if image_logits.shape[0] == 1 else image_logits.argmax(dim=0)
            maps.append(labels if seen is None else labels * seen.to(labels.device))
        return maps

    def fetch_images(self, image_url_or_urls):
        """
        Load image paths and URLs; unlike the base class, local files keep their bit depth instead of 8-bit RGB. Any
        sequence of images counts as a list (a `datasets` Column, what `dataset.select(indices)["image"]` returns).
        An entry that is no image, or that cannot be decoded (a truncated file), is named by its index.
        """
        if _is_image_sequence(image_url_or_urls):
            images = []
            for index, item in enumerate(image_url_or_urls):
                try:
                    images.append(self.fetch_images(item))
                except (OSError, TypeError, ValueError) as error:
                    error_type = next(kind for kind in (OSError, TypeError, ValueError) if isinstance(error, kind))
                    raise error_type(f"`images[{index}]`: {error}") from error
            return images
        if isinstance(image_url_or_urls, (str, os.PathLike)) and os.path.isfile(image_url_or_urls):
            image = Image.open(image_url_or_urls)
            _decode(image, f"the image file {os.fspath(image_url_or_urls)!r}")
            return apply_exif_orientation(image)
        if is_pil_image(image_url_or_urls):
            _decode(image_url_or_urls, "the PIL image")
            return image_url_or_urls
        if is_valid_image(image_url_or_urls) or isinstance(image_url_or_urls, (str, os.PathLike)):
            return super().fetch_images(image_url_or_urls)
        raise TypeError(
            "`images` must be PIL images, numpy arrays, torch tensors or image paths, got "
            f"{type(image_url_or_urls).__name__}."
        )

    def _prepare_images_structure(self, images: ImageInput, expected_ndims: int = 3) -> list:
        """Flatten `images` into a list; unlike the base class, 2-D grayscale arrays count as single images."""
        images = self.fetch_images(images)
        if isinstance(images, list):
            images = [image for item in images for image in (item if isinstance(item, list) else [item])]
        elif is_valid_image(images) and not is_pil_image(images) and images.ndim == 4:
            images = list(images)
        else:
            images = [images]
        if not images or not all(is_valid_image(image) for image in images):
            raise ValueError(
                "`images` must be a PIL image, numpy array or torch tensor, or a non-empty list of them, got "
                f"{[type(image).__name__ for image in images]}."
            )
        return images

    def process_image(
        self,
        image: ImageInput,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        window: tuple[float, float] | None = None,
        input_data_format: ChannelDimension | str | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Turn one raw image into a (1, H, W) float32 grayscale array, in [0, 1] when `do_rescale`."""
        array = _to_channels_last_array(image, input_data_format)
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"`images` must have a non-zero height and width, got an image of shape {array.shape}.")
        luminance = _to_luminance(array)
        if not np.all(np.isfinite(luminance)):
            raise ValueError("`images` must hold finite values, got an image with NaN or infinite pixels.")
        if do_rescale:
            luminance = _rescale_intensities(luminance, array.dtype, rescale_factor, window)
        return luminance.astype(np.float32)[None]

    def resize(
        self, image: np.ndarray, size: SizeDict, resample: PILImageResampling | None = None, **kwargs
    ) -> np.ndarray:
        """Resize a (1, H, W) float image to `(size.height, size.width)` in PIL's float mode, without rounding."""
        resized = Image.fromarray(image[0]).resize((size.width, size.height), resample=resample)
        return np.asarray(resized, dtype=np.float32)[None]

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resize_mode: str,
        do_pad: bool,
        resample: PILImageResampling | None,
        do_center_crop: bool,
        crop_size: SizeDict | None,
        num_channels: int,
        do_normalize: bool,
        image_mean: float | tuple[float, ...],
        image_std: float | tuple[float, ...],
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        processed_images = []
        for image in images:
            if do_resize:
                shape = _resized_shape(image.shape[-2], image.shape[-1], size, resize_mode)
                image = self.resize(image, SizeDict(height=shape[0], width=shape[1]), resample=resample)
            if resize_mode == "crop":
                image = self.center_crop(image, size)
            elif do_pad:
                image = _pad_centred(image, size)
            if do_center_crop:
                image = self.center_crop(image, crop_size)
            image = np.repeat(image, num_channels, axis=0)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed_images.append(image)
        shapes = sorted({image.shape[-2:] for image in processed_images})
        if return_tensors is not None and len(shapes) > 1:
            raise ValueError(
                f"`images` became frames of different sizes {shapes}, which `return_tensors={return_tensors!r}` "
                "cannot stack: keep `do_pad=True` (or `resize_mode='crop'`), or pass `return_tensors=None`."
            )
        return BatchFeature(data={"pixel_values": processed_images}, tensor_type=return_tensors)


# ---------------------------------------------------------------------------
# Processor
# ---------------------------------------------------------------------------


def _checked_reports(text) -> str | list[str]:
    """`text` as a str or a list of str, or a `TypeError`/`ValueError` naming what is wrong and where."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, Mapping, np.ndarray)) or not isinstance(text, (Sequence, Iterable)):
        raise TypeError(f"`text` must be a str or a list of str, got {type(text).__name__}.")
    reports = list(text)
    if not reports:
        raise ValueError("`text` must hold at least one report, got an empty list.")
    for index, report in enumerate(reports):
        if not isinstance(report, str):
            raise TypeError(
                f"`text[{index}]` must be a str, got {type(report).__name__}; a missing report (None or NaN) must be "
                "dropped or replaced first."
            )
    return reports


# Files a saved tokenizer is read from: a `tokenizers` serialization, or the vocabulary of a WordPiece, BPE or
# SentencePiece tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def _check_tokenizer_files(folder, subfolder: str | None = None) -> None:
    """A local processor folder without any tokenizer file is named with what it lacks, before transformers
    reports it as a missing sentencepiece or tiktoken package. Anything that is not a local folder (a Hub id) is left
    to transformers."""
    path = os.path.join(folder, subfolder) if subfolder else folder
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "processor_config.json")):
        return
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise OSError(
            f"{os.fspath(path)!r} holds a processor (processor_config.json) but no tokenizer: none of "
            f"{list(TOKENIZER_FILES)} is there (found {sorted(os.listdir(path))[:10]}). Save the processor with "
            "its tokenizer (`processor.save_pretrained(folder)`) or copy the tokenizer files beside it."
        )


class SistaProcessor(ProcessorMixin):
    r"""
    Wraps a [`SistaImageProcessor`] and any tokenizer into one processor for SISTA.

    Args:
        image_processor ([`SistaImageProcessor`], *optional*, defaults to `SistaImageProcessor()`):
            The image processor for the chest X-rays.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer of the text backbone (any `AutoTokenizer`); required.
        model_max_length (`int`, *optional*):
            The text tower's length, `config.text_config.max_position_embeddings`. It lowers the tokenizer's
            `model_max_length` to it (a tokenizer built from a vocabulary alone has no limit), so that reports are
            truncated to what the model takes, and `save_pretrained` stores it with the tokenizer (which is changed
            in place).

    Example:

    ```python
    >>> import numpy as np
    >>> from transformers import BertTokenizer
    >>> from processing_sista import SistaImageProcessor, SistaProcessor

    >>> tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "acute", "process", "."]
    >>> tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})
    >>> processor = SistaProcessor(SistaImageProcessor(size=64), tokenizer, model_max_length=128)
    >>> xray = np.zeros((300, 240), dtype=np.uint16)
    >>> inputs = processor(text=["No acute process."], images=[xray], return_tensors="pt")
    >>> sorted(inputs.keys())
    ['attention_mask', 'input_ids', 'pixel_values', 'token_type_ids']

    ```
    """

    def __init__(self, image_processor=None, tokenizer=None, model_max_length: int | None = None, **kwargs):
        if tokenizer is None:
            raise ValueError("`tokenizer` must be a tokenizer (e.g. from `AutoTokenizer.from_pretrained`), got None.")
        if model_max_length is not None:
            if not isinstance(model_max_length, int) or isinstance(model_max_length, bool) or model_max_length < 1:
                raise ValueError(f"`model_max_length` must be a positive int, got {model_max_length!r}.")
            tokenizer.model_max_length = min(tokenizer.model_max_length, model_max_length)
        image_processor = SistaImageProcessor() if image_processor is None else image_processor
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        r"""
        Loads the image processor and the tokenizer saved in `pretrained_model_name_or_path`.

        The base class looks the image processor up through `AutoImageProcessor`, which refuses a class outside
        transformers without `trust_remote_code=True`; this class knows its image processor, so it loads it directly
        and runs no code from the checkpoint. With `trust_remote_code=True` (the `AutoProcessor` path) the base
        class's loading is kept.
        """
        _check_tokenizer_files(pretrained_model_name_or_path, kwargs.get("subfolder"))
        if kwargs.get("trust_remote_code"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        kwargs.pop("trust_remote_code", None)
        image_processor = SistaImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, trust_remote_code=False, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: ImageInput | None = None,
        return_tensors: str | TensorType | None = None,
        padding: bool | str = True,
        truncation: bool | str = True,
        max_length: int | None = None,
        **kwargs,
    ) -> BatchEncoding | BatchFeature:
        """
        Tokenize `text` and process `images` for [`SistaModel`].

        Args:
            text (`str` or `list[str]`, *optional*):
                Report(s) to tokenize; clean raw reports with [`clean_report`] first. Any sequence of strings counts
                as a list (a `datasets` Column).
            images (`ImageInput`, *optional*):
                Chest X-ray(s): PIL images, numpy arrays, torch tensors or image paths, or a list (or other sequence,
                such as a `datasets` Column) of them. An image file that cannot be decoded raises an `OSError`
                naming its index in the list.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors, `"np"` for numpy arrays, `None` for lists.
            padding (`bool` or `str`, *optional*, defaults to `True`):
                Tokenizer padding (`True` pads to the longest report of the batch).
            truncation (`bool` or `str`, *optional*, defaults to `True`):
                Tokenizer truncation, to `max_length` or the tokenizer's `model_max_length` (see the
                `model_max_length` argument of this class).
            max_length (`int`, *optional*):
                Maximum number of tokens.
            kwargs (`dict[str, Any]`, *optional*):
                Arguments of [`SistaImageProcessor`] (e.g. `size`) go to the image processor, the rest to the
                tokenizer.

        Returns:
            [`BatchEncoding`] with `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes
            them) for `text`, plus `pixel_values` for `images`; a [`BatchFeature`] with `pixel_values` for images
            alone.
        """
        if text is None and images is None:
            raise ValueError("`text` and `images` are both None; pass reports, images or both.")
        image_kwarg_names = self.image_processor.valid_kwargs.__annotations__
        image_kwargs = {name: value for name, value in kwargs.items() if name in image_kwarg_names}
        text_kwargs = {name: value for name, value in kwargs.items() if name not in image_kwarg_names}

        if text is None and text_kwargs:
            raise TypeError(
                f"Unexpected keyword arguments {sorted(text_kwargs)} for images alone: the image processor takes "
                f"{sorted(image_kwarg_names)}."
            )
        image_features = None
        if images is not None:
            image_features = self.image_processor(images, return_tensors=return_tensors, **image_kwargs)
        if text is None:
            return image_features
        if not text_kwargs.get("is_split_into_words"):
            text = _checked_reports(text)
        min_length = self.tokenizer.num_special_tokens_to_add() + 1
        if max_length is not None and (not isinstance(max_length, int) or max_length < min_length):
            raise ValueError(
                f"`max_length` must be an int of at least {min_length} (the tokenizer's special tokens and one word), "
                f"got {max_length!r}."
            )
        encoding = self.tokenizer(
            text,
            return_tensors=return_tensors,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            **text_kwargs,
        )
        if image_features is not None:
            encoding["pixel_values"] = image_features["pixel_values"]
        return encoding


SistaImageProcessor.register_for_auto_class("AutoImageProcessor")
SistaProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "CleanedReport",
    "SistaImageProcessor",
    "SistaProcessor",
    "apply_exif_orientation",
    "clean_report",
    "clean_reports",
    "report_has_content",
    "window_intensities",
]
