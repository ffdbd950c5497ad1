# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Preparation of the real chest X-ray datasets (MIMIC-CXR-JPG, CheXpert, RSNA Pneumonia, SIIM-ACR Pneumothorax,
COVIDx, Object-CXR, and the CheXpert 5x200 and MS-CXR benchmarks with their hold-out lists) as
`datasets.DatasetDict`s on disk; `examples/prepare_datasets.py` is its command line.

The first part is dataset-agnostic: reading radiographs (JPEG/PNG with Pillow, DICOM with
pydicom) at the working size, boxes and SIIM run-length masks, seeded patient-level splits and
label-fraction ranks, the log of skipped rows, and the sharded writer that turns per-split
record lists into a `datasets.DatasetDict` on disk without holding the images in memory. The
second part reads each dataset as its provider distributes it (`DATASETS` maps a name to its
arguments and preparation function); docs/data_real.md documents the files, splits and labels.
"""

import csv
import hashlib
import io
import json
import logging
import math
import re
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pydicom
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value, load_from_disk
from datasets import Image as ImageFeature
from PIL import ExifTags, Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from tqdm.auto import tqdm

from processing_sista import apply_exif_orientation, clean_report

from ..utils import check_output_dir_writable
from .label_fractions import label_fraction_ranks, seeded_order_key
from .metadata import METADATA_FILE, read_dataset_metadata, write_dataset_metadata
from .report_labeler import OBSERVATIONS as CHEXPERT_OBSERVATIONS  # MIMIC-CXR's chexpert csv column order


logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
SKIPPED_FILE = "skipped.csv"
SKIPPED_COLUMNS = ("split", "image_id", "reason", "detail")
DICOM_SUFFIXES = (".dcm", ".dicom")
# DICOM modalities of a projection radiograph (computed and digital radiography; OT/SC: radiographs exported as
# "other" or secondary captures). A CT or MR frame decodes as one grey image too, but is no chest X-ray; a file
# without the Modality tag is kept.
# EXIF orientations (5 to 8) that turn the stored image by a quarter turn, so swap its width and height.
QUARTER_TURN_ORIENTATIONS = (5, 6, 7, 8)
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT", "SC")
IMAGE_FORMATS = ("png", "jpeg")
# Rows per Arrow record batch while generating: ~100 encoded 512-px images keep each worker's
# memory in the tens of MB whatever the dataset size.
WRITER_BATCH_SIZE = 100


# ---------------------------------------------------------------------------
# Arguments shared by every dataset
# ---------------------------------------------------------------------------


@dataclass
class PrepareArguments:
    """
    Arguments shared by every dataset preparation.

    Args:
        data_dir (`str`):
            Folder holding the files downloaded from the dataset's provider (see `docs/data_real.md`).
        output_dir (`str`):
            Where the `DatasetDict` is saved (`save_to_disk` layout), with `sista_dataset.json` and `skipped.csv`.
        image_size (`int`, *optional*, defaults to 512):
            Length of the longer image side after resizing; the aspect ratio is kept.
        image_format (`str`, *optional*, defaults to `"png"`):
            Encoding of the stored images: `"png"` (lossless) or `"jpeg"` (quality 95, about half the size).
            Masks are always PNG.
        num_proc (`int`, *optional*, defaults to 1):
            Processes decoding and resizing images in parallel.
        seed (`int`, *optional*, defaults to 42):
            Seed of the patient-level splits and of the label-fraction ranks.
        max_shard_size (`str`, *optional*, defaults to `"500MB"`):
            Largest Arrow shard written to `output_dir`.
        num_shards (`int`, *optional*):
            Number of Arrow shards per split instead of `max_shard_size` (capped at the split's rows).
        cache_dir (`str`, *optional*):
            Folder for the intermediate Arrow files (needs about the size of the output; removed at the end).
            Defaults to a temporary folder beside `output_dir`.
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Replace a previous SISTA output in `output_dir`.
        exclude_images (`str`, *optional*):
            Comma-separated hold-out lists: files with one image id per line, or folders holding
            `excluded_image_ids.txt` (what the `chexpert_5x200` and `ms_cxr` benchmarks write). Their images are
            left out of every split of this dataset, so a benchmark's images never reach pre-training or
            fine-tuning.
    """

    data_dir: str = field(metadata={"help": "Folder holding the downloaded dataset files (see docs/data_real.md)."})
    output_dir: str = field(metadata={"help": "Where the prepared DatasetDict is saved (save_to_disk layout)."})
    image_size: int = field(default=512, metadata={"help": "Longer image side after resizing (aspect ratio kept)."})
    image_format: str = field(
        default="png",
        metadata={"help": "Stored image encoding: 'png' (lossless) or 'jpeg' (quality 95, ~half the size)."},
    )
    num_proc: int = field(default=1, metadata={"help": "Processes decoding and resizing images in parallel."})
    seed: int = field(default=42, metadata={"help": "Seed of the patient-level splits and label-fraction ranks."})
    max_shard_size: str = field(default="500MB", metadata={"help": "Largest Arrow shard written to output_dir."})
    num_shards: int | None = field(
        default=None,
        metadata={"help": "Arrow shards per split instead of max_shard_size (capped at the split's rows)."},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for intermediate Arrow files (about the output's size); defaults beside output_dir."
        },
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a previous SISTA output in output_dir."}
    )
    exclude_images: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated hold-out lists (files of image ids, or prepared benchmark folders holding "
            "excluded_image_ids.txt, e.g. data/chexpert_5x200): their images are left out of every split."
        },
    )

    def __post_init__(self):
        if self.exclude_images:
            # Read now so that a wrong path fails before any work.
            self.excluded_image_ids = read_excluded_image_ids(self.exclude_images)
        if self.image_size < 1:
            raise ValueError(f"`image_size` must be a positive integer, got {self.image_size}.")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"`image_format` must be one of {IMAGE_FORMATS}, got {self.image_format!r}.")
        if self.num_proc < 1:
            raise ValueError(f"`num_proc` must be at least 1, got {self.num_proc}.")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"`num_shards` must be at least 1 when given, got {self.num_shards}.")
        # The held-out split fractions of the dataset-specific subclasses, checked before any work.
        fractions = {item.name: getattr(self, item.name) for item in fields(self) if item.name.endswith("_fraction")}
        if any(value < 0 for value in fractions.values()) or sum(fractions.values()) >= 1:
            raise ValueError(f"split fractions must be non-negative and sum to less than 1, got {fractions}.")


@dataclass(frozen=True)
class ImageOptions:
    """What the workers need to know to turn a source file into a stored image."""

    image_size: int
    image_format: str


# ---------------------------------------------------------------------------
# Skipped rows
# ---------------------------------------------------------------------------


class SkipExample(Exception):
    """Raised by an example builder when a row cannot be used; the writer logs it and moves on."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipLog:
    """Rows (or boxes) left out of the output, each with its reason; written as `skipped.csv`."""

    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, reason: str, image_id: str, split: str = "", detail: str = "") -> None:
        self.rows.append((split, str(image_id), reason, detail))

    def counts(self) -> Counter:
        return Counter(reason for _, _, reason, _ in self.rows)

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(SKIPPED_COLUMNS)
            writer.writerows(self.rows)

    def read_csv(self, path: str | Path) -> None:
        with open(path, newline="") as file:
            self.rows.extend(tuple(row) for row in list(csv.reader(file))[1:])


def format_counts(counts: Counter) -> str:
    return ", ".join(f"{reason}={count}" for reason, count in sorted(counts.items())) or "none"


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


def find_required_file(data_dir: Path, candidates: Sequence[str], dataset_name: str) -> Path:
    """Return the first of `candidates` present in `data_dir`, or raise naming the missing folder or file."""
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir} is not a folder: expected the files of {dataset_name} there. "
            "See docs/data_real.md for the expected files."
        )
    for name in candidates:
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(
        f"{data_dir} does not look like {dataset_name}: missing {' or '.join(candidates)}. "
        "See docs/data_real.md for the expected files."
    )


def read_csv_table(path: Path, required_columns: Sequence[str], **kwargs) -> pd.DataFrame:
    """
    Read a CSV as strings (blank cells stay `""`, never NaN) and check its columns.

    Column names are stripped because some official files carry stray spaces (SIIM's `" EncodedPixels"`).
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as error:
        # pandas' messages name the line but not the file; gzip and encoding errors name neither.
        raise ValueError(f"{path} could not be read as a CSV table: {type(error).__name__}: {error}") from error
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required_columns if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {list(table.columns)}.")
    return table


def iter_rows(table: pd.DataFrame) -> Iterator[dict]:
    """The rows of `table` as dicts, one at a time (no list of ~400k dicts for MIMIC-CXR's metadata)."""
    columns = list(table.columns)
    for values in table.itertuples(index=False, name=None):
        yield dict(zip(columns, values))


def check_output_dir(args: PrepareArguments) -> None:
    """Refuse to write into a non-empty folder unless it holds a previous SISTA output to replace, or into a folder
    whose parent (where the output is staged) cannot be written."""
    output_dir = Path(args.output_dir)
    check_output_dir_writable(str(output_dir.parent), argument=f"--output_dir {output_dir}: its parent folder")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not args.overwrite_output_dir:
        raise ValueError(f"{output_dir} exists and is not empty; pass --overwrite_output_dir to replace it.")
    if not (output_dir / METADATA_FILE).exists():
        # Never wipe a folder this script did not write.
        raise ValueError(f"{output_dir} is not empty and holds no {METADATA_FILE}; refusing to overwrite it.")


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def resized_size(size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(width, height) after resizing so that the longer side is `image_size`, aspect ratio kept."""
    width, height = size
    scale = image_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Min-max scale intensities to 0..255 (a flat image becomes black)."""
    pixels = pixels.astype(np.float64)
    low, high = pixels.min(), pixels.max()
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - low) * (255.0 / (high - low))).astype(np.uint8)


class OtherModalityError(ValueError):
    """A DICOM of another modality than a radiograph (`RADIOGRAPH_MODALITIES`): a counted `other_modality` skip."""


def read_dicom_pixels(path: str | Path) -> np.ndarray:
    """
    Read a single-frame grayscale DICOM as uint8 with the radiograph's intended contrast; an
    [`OtherModalityError`] for a file whose `Modality` is no radiograph's (CT, MR, ...).

    The modality LUT (RescaleSlope/RescaleIntercept) and the VOI LUT or window are applied
    first, then intensities are min-max scaled to 0..255 (8-bit data that no LUT changed is kept
    as stored), and MONOCHROME1 images (where high values are dark) are inverted so that bone is
    always bright.
    """
    dicom = pydicom.dcmread(path)
    modality = str(dicom.get("Modality", "") or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise OtherModalityError(
            f"Modality {modality!r} is not a radiograph's (expected one of {RADIOGRAPH_MODALITIES})"
        )
    try:
        pixels = dicom.pixel_array
    except AttributeError as error:  # pydicom's way of saying the pixel data or its description is missing
        raise ValueError(f"no decodable pixel data ({error})") from error
    if pixels.ndim != 2:
        raise ValueError(f"expected one grayscale frame, got pixel data of shape {pixels.shape}")
    pixels = apply_voi_lut(apply_modality_lut(pixels, dicom), dicom)
    if pixels.dtype != np.uint8:
        # Only wider or transformed data needs scaling; stretching 8-bit data would change its contrast.
        pixels = to_uint8(pixels)
    if dicom.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels


def _pil_to_grayscale(image: Image.Image) -> Image.Image:
    """8-bit grayscale; 16-bit and float images are min-max scaled rather than clipped at 255."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.fromarray(to_uint8(np.asarray(image)))
    return image.convert("L")


def read_image(path: str | Path, image_size: int) -> tuple[Image.Image, tuple[int, int]]:
    """
    Read a radiograph as a grayscale image whose longer side is `image_size`, turned as its EXIF orientation says
    (`processing_sista.apply_exif_orientation`, the image processor's reading rule).

    Returns:
        The resized `PIL.Image.Image` (mode "L") and the original `(width, height)` as displayed (after the EXIF
        orientation), which is what box coordinates of the source annotations refer to.

    Raises:
        `FileNotFoundError` for a missing file; for files that cannot be used, `OSError` (including
        `PIL.UnidentifiedImageError` and truncated files), `pydicom.errors.InvalidDicomError`, `ValueError`, or
        whatever a pixel-data decoder raises (pydicom's `RuntimeError` for a truncated JPEG frame).
    """
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        image = Image.fromarray(read_dicom_pixels(path))
        original_size = image.size
    else:
        with Image.open(path) as source:
            # JPEG decodes directly at 1/2, 1/4 or 1/8 scale (never below the target size):
            # several times faster on 3000-pixel radiographs, and no full-resolution array in memory.
            # The draft size is in stored orientation: a 90-degree turn swaps both sides alike.
            stored_size = source.size
            turned = source.getexif().get(ExifTags.Base.Orientation, 1) in QUARTER_TURN_ORIENTATIONS
            original_size = stored_size[::-1] if turned else stored_size
            source.draft("L", resized_size(stored_size, image_size))
            image = _pil_to_grayscale(apply_exif_orientation(source))
    target_size = resized_size(original_size, image_size)
    if image.size != target_size:
        image = image.resize(target_size, Image.Resampling.BICUBIC)
    return image, original_size


def read_image_or_skip(path: str | Path, image_size: int) -> tuple[Image.Image, tuple[int, int]]:
    """
    [`read_image`], turning a missing file into a `missing_image` [`SkipExample`] and any failure to read or decode
    it into an `unreadable_image` one naming the file and the error.

    Every exception is caught because the decoders behind Pillow and pydicom raise many types for a bad file
    (pydicom's `RuntimeError` for a truncated JPEG frame, `DecompressionBombError`, `struct.error`, ...), and one
    bad file must not stop the preparation of the others.
    """
    try:
        return read_image(path, image_size)
    except FileNotFoundError as error:
        raise SkipExample("missing_image", str(path)) from error
    except OtherModalityError as error:
        raise SkipExample("other_modality", f"{path}: {error}") from error
    except Exception as error:
        raise SkipExample("unreadable_image", f"{path}: {type(error).__name__}: {error}") from error


def encode_image(image: Image.Image, image_format: str = "png") -> dict:
    """Encode a PIL image into the `{"bytes", "path"}` form a `datasets.Image` column stores."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def encode_mask(mask: np.ndarray) -> dict:
    """Encode a boolean mask as an 8-bit PNG with values 0 and 255."""
    return encode_image(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)), "png")


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean (height, width) mask to `size` = (width, height) with nearest-neighbour sampling."""
    image = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    return np.asarray(image.resize(size, Image.Resampling.NEAREST)) > 127


# ---------------------------------------------------------------------------
# Boxes and masks
# ---------------------------------------------------------------------------


def clip_box(box: Sequence[float], image_size: tuple[int, int]) -> tuple[list[float] | None, str]:
    """
    Clip an `(x_min, y_min, x_max, y_max)` box to an image of `(width, height)`.

    Returns:
        `(clipped_box, "")`, or `(None, reason)` with reason `"malformed_box"` (not finite),
        `"degenerate_box"` (no width or height before clipping) or `"box_outside_image"`
        (nothing left after clipping). A box partly outside the image is clipped and kept.
    """
    x_min, y_min, x_max, y_max = (float(value) for value in box)
    if not all(math.isfinite(value) for value in (x_min, y_min, x_max, y_max)):
        return None, "malformed_box"
    if x_max <= x_min or y_max <= y_min:
        return None, "degenerate_box"
    width, height = image_size
    clipped = [max(x_min, 0.0), max(y_min, 0.0), min(x_max, float(width)), min(y_max, float(height))]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, "box_outside_image"
    return clipped, ""


def build_objects(
    annotations: Iterable[dict],
    original_size: tuple[int, int],
    new_size: tuple[int, int],
    image_id: str,
    split: str,
    skip_log: SkipLog,
) -> dict:
    """
    Turn source boxes into the `objects` column, in COCO convention on the resized image.

    Args:
        annotations: dicts with `id` (int), `category` (int) and `box` = `(x_min, y_min, x_max, y_max)` in
            original pixels.
        original_size, new_size: `(width, height)` of the source and of the resized image.

    Boxes that cannot be used are left out and logged in `skip_log`; partly outside boxes are clipped.
    Returns `{"bbox": [[x_min, y_min, width, height], ...], "category", "area", "id"}`.
    """
    scale_x, scale_y = new_size[0] / original_size[0], new_size[1] / original_size[1]
    objects = {"bbox": [], "category": [], "area": [], "id": []}
    for annotation in annotations:
        clipped, reason = clip_box(annotation["box"], original_size)
        if clipped is None:
            skip_log.add(reason, image_id, split, f"box id {annotation['id']}: {list(annotation['box'])}")
            continue
        x_min, y_min = clipped[0] * scale_x, clipped[1] * scale_y
        width, height = (clipped[2] - clipped[0]) * scale_x, (clipped[3] - clipped[1]) * scale_y
        objects["bbox"].append([x_min, y_min, width, height])
        objects["category"].append(annotation["category"])
        objects["area"].append(width * height)
        objects["id"].append(annotation["id"])
    return objects


def boxes_to_mask(boxes: Iterable[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """Fill COCO `[x_min, y_min, width, height]` boxes into a boolean (height, width) mask, rounding edges."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for x_min, y_min, width, height in boxes:
        mask[round(y_min) : round(y_min + height), round(x_min) : round(x_min + width)] = True
    return mask


def decode_siim_rle(rle: str, width: int, height: int) -> np.ndarray:
    """
    Decode one SIIM-ACR run-length encoding into a boolean (height, width) mask.

    The SIIM format lists pairs `(offset, length)` where each offset counts from the end of the
    previous run, over the pixels in column-major order (the competition's `rle2mask(...).T`).

    Raises:
        `ValueError` for a non-integer token, an odd number of values, a negative value or a run
        that ends past the last pixel.
    """
    try:
        values = [int(token) for token in rle.split()]
    except ValueError as error:
        raise ValueError(f"non-integer value in RLE ({error})") from error
    if not values or len(values) % 2:
        raise ValueError(f"RLE needs (offset, length) pairs, got {len(values)} value(s)")
    flat = np.zeros(width * height, dtype=bool)
    position = 0
    for offset, length in zip(values[0::2], values[1::2]):
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length ({offset}, {length}) in RLE")
        start, position = position + offset, position + offset + length
        if position > flat.size:
            raise ValueError(f"run ends at pixel {position}, past the {width}x{height} image")
        flat[start:position] = True
    return flat.reshape(width, height).T


# ---------------------------------------------------------------------------
# Splits and label fractions
# ---------------------------------------------------------------------------


def assign_group_splits(groups: Iterable[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """
    Assign every group (patient) to a split, so that no patient is in two splits.

    Groups are ordered by the SHA-256 of `"<seed>:<group>"`; the first `round(fraction * n)` go to the
    first split of `fractions`, the next to the second, and all others to `"train"`.

    Example:

    ```python
    >>> split_of = assign_group_splits(["p1", "p2", "p3", "p4"], {"validation": 0.25, "test": 0.25}, seed=0)
    >>> sorted(split_of.values())
    ['test', 'train', 'train', 'validation']
    ```
    """
    if any(fraction < 0 for fraction in fractions.values()) or sum(fractions.values()) >= 1:
        raise ValueError(f"split fractions must be non-negative and sum to less than 1, got {fractions}.")
    ordered = sorted(set(groups), key=lambda group: seeded_order_key(seed, group))
    split_of, start = {}, 0
    for split, fraction in fractions.items():
        stop = start + round(fraction * len(ordered))
        split_of.update((group, split) for group in ordered[start:stop])
        start = stop
    split_of.update((group, "train") for group in ordered[start:])
    return split_of


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------


def multi_hot_feature(num_classes: int) -> List:
    """One 0/1 entry per class, as SynthCXR's `labels`."""
    return List(Value("int64"), length=num_classes)


def objects_feature(category_names: Sequence[str]) -> dict:
    """COCO-style boxes of one image: `bbox` as `[x_min, y_min, width, height]` in resized pixels."""
    return {
        "bbox": List(List(Value("float32"), length=4)),
        "category": List(ClassLabel(names=list(category_names))),
        "area": List(Value("float32")),
        "id": List(Value("int64")),
    }


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _generate_examples(
    shards: list[list[dict]], build_example: Callable, options: ImageOptions, skip_dir: str
) -> Iterator[dict]:
    """Generator run by `Dataset.from_generator`, once per worker with its share of `shards`."""
    skip_log, processed, kept = SkipLog(), 0, 0
    try:
        for shard in shards:
            for record in shard:
                processed += 1
                try:
                    example = build_example(record, options, skip_log)
                except SkipExample as skip:
                    skip_log.add(skip.reason, record["image_id"], record["split"], skip.detail)
                    continue
                except Exception as error:
                    # `datasets` reports only "An error occurred while generating the dataset": name the row.
                    raise RuntimeError(
                        f"Preparing {record['image_id']!r} ({record.get('image_path', 'no image path')}) failed: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                kept += 1
                yield example
    finally:
        # One file per worker: workers are separate processes and cannot share the main SkipLog.
        name = uuid.uuid4().hex
        skip_log.write_csv(Path(skip_dir) / f"{name}.csv")
        (Path(skip_dir) / f"{name}.json").write_text(json.dumps({"processed": processed, "kept": kept}))


def _fingerprint(dataset_name: str, split: str, options: ImageOptions, records: list[dict]) -> str:
    # Passing a fingerprint spares `datasets` from pickling and hashing every record itself.
    payload = json.dumps([dataset_name, split, options.image_size, options.image_format, records], default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _generate_split(
    dataset_name: str,
    split: str,
    records: list[dict],
    build_example: Callable,
    features: Features,
    args: PrepareArguments,
    cache_dir: Path,
) -> Dataset | None:
    """Generate one split into `cache_dir`; `None` when every record was skipped."""
    options = ImageOptions(args.image_size, args.image_format)
    num_jobs = max(1, min(args.num_proc, len(records)))
    # Contiguous shards, one per process: the output keeps the record order whatever num_proc is.
    bounds = [round(job * len(records) / num_jobs) for job in range(num_jobs + 1)]
    shards = [records[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
    skip_dir = cache_dir / "skipped" / split
    skip_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Dataset.from_generator(
            _generate_examples,
            features=features,
            cache_dir=str(cache_dir / "arrow"),
            gen_kwargs={
                "shards": shards,
                "build_example": build_example,
                "options": options,
                "skip_dir": str(skip_dir),
            },
            num_proc=num_jobs if num_jobs > 1 else None,
            split=split,
            fingerprint=_fingerprint(dataset_name, split, options, records),
            writer_batch_size=WRITER_BATCH_SIZE,
        )
    except ValueError:
        # `datasets` cannot build a split from generators that yielded nothing. That is no error
        # when every record was processed and skipped (and logged): the split is then empty.
        counts = [json.loads(path.read_text()) for path in skip_dir.glob("*.json")]
        if sum(count["processed"] for count in counts) < len(records) or any(count["kept"] for count in counts):
            raise
        logger.warning("%s: every image of the %s split was skipped; the split is left out.", dataset_name, split)
        return None


def drop_duplicate_images(records_per_split: dict[str, list[dict]], skip_log: SkipLog) -> dict[str, list[dict]]:
    """
    Keep the first record of each `image_id` (splits in `SPLIT_NAMES` order, then file order); the others are
    logged as `duplicate_image`, since two rows of one image would count it twice and could put it in two splits.
    """
    split_of, kept = {}, {}
    for split in SPLIT_NAMES:
        kept[split] = []
        for record in records_per_split.get(split, []):
            image_id = record["image_id"]
            if image_id in split_of:
                skip_log.add("duplicate_image", image_id, split, f"listed again after a row in {split_of[image_id]}")
                continue
            split_of[image_id] = split
            kept[split].append(record)
    return kept


def write_dataset_dict(
    dataset_name: str,
    records_per_split: dict[str, list[dict]],
    build_example: Callable,
    features: Features,
    args: PrepareArguments,
    skip_log: SkipLog,
    metadata: dict,
) -> DatasetDict:
    """
    Build every split from its records, in parallel shards, and save the `DatasetDict` to `args.output_dir`.

    Each record is a small dict of paths and labels (`image_id` required); `build_example(record,
    options, skip_log)` turns it into a row in a worker process, raising [`SkipExample`] for a row
    that cannot be used. Every split gets a `label_fraction_rank` (see [`select_label_fraction`]).
    Beside the dataset, `skipped.csv` lists every skipped row with its reason and `sista_dataset.json`
    holds `metadata` (class names, split and label rules) with the row and skip counts.

    Everything is written into a hidden staging folder beside `args.output_dir` (`.<name>.partial-*`), which
    replaces `args.output_dir` only once complete: a run killed while writing leaves the previous output as it was,
    never a half-written dataset that loads; the next run removes what a killed one left.
    """
    if not any(records_per_split.values()) and not skip_log.rows:
        raise ValueError(
            f"{dataset_name}: the files in {args.data_dir} list no image to prepare (no rows, or only rows left out "
            "by design such as lateral views)."
        )
    records_per_split, excluded = drop_excluded_images(records_per_split, getattr(args, "excluded_image_ids", None))
    if excluded:
        metadata = {**metadata, "excluded_images": {"lists": args.exclude_images, "num_excluded": excluded}}
    records_per_split = drop_duplicate_images(records_per_split, skip_log)
    final_dir = Path(args.output_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final_dir.parent.glob(f".{final_dir.name}.partial-*"):
        logger.warning("Removing %s, left by a preparation that was interrupted while writing.", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    output_dir = final_dir.parent / f".{final_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    cache_root = Path(args.cache_dir) if args.cache_dir else final_dir.parent
    cache_root.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix=".sista-prepare-", dir=cache_root))
    try:
        splits = {}
        for split in (name for name in SPLIT_NAMES if records_per_split.get(name)):
            records = records_per_split[split]
            ranks = label_fraction_ranks([record["image_id"] for record in records], args.seed)
            records = [dict(record, split=split, label_fraction_rank=rank) for record, rank in zip(records, ranks)]
            logger.info("Preparing %s split %s: %d images", dataset_name, split, len(records))
            dataset = _generate_split(dataset_name, split, records, build_example, features, args, cache_dir)
            if dataset is not None:
                dataset.info.description = json.dumps({"dataset": dataset_name, **metadata})
                splits[split] = dataset
        for path in sorted((cache_dir / "skipped").glob("*/*.csv")):
            skip_log.read_csv(path)

        dataset_dict = DatasetDict(splits)
        num_shards = (
            {split: min(args.num_shards, max(1, len(dataset))) for split, dataset in splits.items()}
            if args.num_shards
            else None
        )
        # A plain copy of already encoded rows, so one process: `save_to_disk(num_proc=...)` would
        # spawn fresh interpreters that re-import everything, slower than the copy itself.
        dataset_dict.save_to_disk(
            str(output_dir), max_shard_size=None if num_shards else args.max_shard_size, num_shards=num_shards
        )
        skip_log.rows.sort()
        skip_log.write_csv(output_dir / SKIPPED_FILE)
        num_rows = {split: len(dataset) for split, dataset in splits.items()}
        summary = {
            "dataset": dataset_name,
            **metadata,
            "image_size": args.image_size,
            "image_format": args.image_format,
            "seed": args.seed,
            "num_rows": num_rows,
            "skipped": dict(sorted(skip_log.counts().items())),
        }
        write_dataset_metadata(output_dir, summary)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    if final_dir.exists():
        shutil.rmtree(final_dir)  # check_output_dir() has already made sure this is an old SISTA output
    output_dir.rename(final_dir)
    output_dir = final_dir
    logger.info(
        "%s: kept %d images (%s); skipped %d (%s); see %s",
        dataset_name,
        sum(num_rows.values()),
        ", ".join(f"{split}={count}" for split, count in num_rows.items()),
        len(skip_log.rows),
        format_counts(skip_log.counts()),
        output_dir / SKIPPED_FILE,
    )
    return load_from_disk(str(output_dir))


def load_prepared_dataset(path: str | Path) -> tuple[DatasetDict, dict]:
    """Load a prepared dataset and its `sista_dataset.json` (class names, split and label rules, counts)."""
    path = Path(path)
    metadata = read_dataset_metadata(path)
    if metadata is None:
        raise FileNotFoundError(f"{path} holds no {METADATA_FILE}; was it written by examples/prepare_datasets.py?")
    return load_from_disk(str(path)), metadata


LABEL_FRACTION_RULE = (
    "select_label_fraction(split, f) keeps the ceil(f * n) rows with the lowest label_fraction_rank, the order "
    "of SHA-256('<seed>:<image_id>'); subsets are nested (1% in 10% in 100%)"
)
# The 5 observations of the CheXpert competition, evaluated by every paper that reports CheXpert AUROC.
CHEXPERT_COMPETITION_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def chexpert_label_vector(row: dict, class_names, uncertain_ones) -> list[int]:
    """
    Multi-hot labels from CheXpert-labeler values: 1 -> 1, 0 -> 0, blank (not mentioned) -> 0,
    -1 (uncertain) -> 1 for the classes in `uncertain_ones` ("U-Ones") and 0 for the others ("U-Zeros").

    Raises:
        `ValueError` naming the column for any other value.
    """
    labels = []
    for name in class_names:
        value = row[name].strip()
        if not value:
            labels.append(0)
            continue
        try:
            number = float(value)
        except ValueError:
            number = None
        if number == 1:
            labels.append(1)
        elif number == 0:
            labels.append(0)
        elif number == -1:
            labels.append(int(name in uncertain_ones))
        else:
            raise ValueError(f"{name}={row[name]!r}")
    return labels


def parse_label_names(names: str, allowed, argument: str) -> tuple[str, ...]:
    """Split comma-separated label names ("" for none) and check each is one of `allowed`."""
    parsed = tuple(name.strip() for name in names.split(",") if name.strip())
    unknown = sorted(set(parsed) - set(allowed))
    if unknown:
        raise ValueError(f"`{argument}` names unknown label(s) {unknown}; known labels are {list(allowed)}.")
    return parsed


def _log_filtered(dataset_name: str, filtered: Counter) -> None:
    if filtered:
        logger.info("%s: left out by design (not in skipped.csv): %s", dataset_name, format_counts(filtered))


# ---------------------------------------------------------------------------
# MIMIC-CXR-JPG
# ---------------------------------------------------------------------------

MIMIC_CXR_SPLITS = {"train": "train", "validate": "validation", "test": "test"}
FRONTAL_VIEWS = ("PA", "AP")
# Lateral projections are left out by design (logged); any other ViewPosition, blank included, is a skip.
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "XTABLE LATERAL")


@dataclass
class MimicCxrArguments(PrepareArguments):
    """
    [`PrepareArguments`] for MIMIC-CXR-JPG, plus:

    Args:
        report_dir (`str`, *optional*):
            Folder holding the reports' `files/pXX/pXXXXXXXX/sXXXXXXXX.txt` tree (mimic-cxr-reports.zip);
            defaults to `data_dir`.
        uncertain_ones (`str`, *optional*, defaults to `""`):
            Comma-separated observations whose uncertain (-1) labels count as positive; the others count
            as negative.
        keep_missing_view_position (`bool`, *optional*, defaults to `False`):
            Keep images whose `ViewPosition` is blank (most are frontal radiographs without the DICOM tag);
            by default they are skipped (`missing_view_position` in skipped.csv).
    """

    report_dir: str | None = field(
        default=None, metadata={"help": "Folder holding the reports' files/pXX/... tree; defaults to data_dir."}
    )
    uncertain_ones: str = field(
        default="",
        metadata={"help": "Comma-separated observations whose uncertain (-1) labels count as positive (others: 0)."},
    )
    keep_missing_view_position: bool = field(
        default=False,
        metadata={"help": "Keep images with a blank ViewPosition (skipped as missing_view_position by default)."},
    )

    def __post_init__(self):
        super().__post_init__()
        self.uncertain_one_labels = parse_label_names(self.uncertain_ones, CHEXPERT_OBSERVATIONS, "uncertain_ones")


def build_mimic_cxr_records(args: MimicCxrArguments, skip_log: SkipLog) -> dict[str, list[dict]]:
    """Index the frontal images of MIMIC-CXR-JPG by official split; images and reports are read later."""
    data_dir = Path(args.data_dir)
    report_dir = Path(args.report_dir or args.data_dir)
    name = "MIMIC-CXR-JPG"
    metadata_path = find_required_file(
        data_dir, ["mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv"], name
    )
    split_path = find_required_file(data_dir, ["mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"], name)
    labels_path = find_required_file(
        data_dir, ["mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv"], name
    )
    find_required_file(data_dir, ["files"], name)
    find_required_file(report_dir, ["files"], "the MIMIC-CXR reports (mimic-cxr-reports.zip)")

    metadata_columns = ["dicom_id", "subject_id", "study_id", "ViewPosition"]
    metadata = read_csv_table(metadata_path, metadata_columns, usecols=lambda column: column in metadata_columns)
    split_table = read_csv_table(split_path, ["dicom_id", "split"], usecols=["dicom_id", "split"])
    labels_table = read_csv_table(labels_path, ["subject_id", "study_id", *CHEXPERT_OBSERVATIONS])
    split_of = dict(zip(split_table["dicom_id"], split_table["split"]))
    # Label vectors per study, computed once (MIMIC-CXR has ~227k studies for ~377k images).
    labels_of, label_errors = {}, {}
    for row in iter_rows(labels_table):
        study_key = (row["subject_id"], row["study_id"])
        try:
            labels_of[study_key] = chexpert_label_vector(row, CHEXPERT_OBSERVATIONS, args.uncertain_one_labels)
        except ValueError as error:
            label_errors[study_key] = str(error)

    records = {split: [] for split in MIMIC_CXR_SPLITS.values()}
    filtered, studies_without_labels = Counter(), set()
    for row in iter_rows(metadata):
        dicom_id, subject_id, study_id, view = (row[column] for column in metadata_columns)
        if view in LATERAL_VIEWS:
            filtered[f"view_{view}"] += 1
            continue
        if dicom_id not in split_of:
            skip_log.add("missing_split", dicom_id, detail=f"not in {split_path.name}")
            continue
        split = MIMIC_CXR_SPLITS.get(split_of[dicom_id])
        if split is None:
            skip_log.add("unknown_split", dicom_id, detail=f"split={split_of[dicom_id]!r}")
            continue
        if not view.strip() and not args.keep_missing_view_position:
            skip_log.add("missing_view_position", dicom_id, split, "blank ViewPosition (--keep_missing_view_position)")
            continue
        if view.strip() and view not in FRONTAL_VIEWS:
            skip_log.add("other_view_position", dicom_id, split, f"ViewPosition={view!r}")
            continue
        if (subject_id, study_id) in label_errors:
            skip_log.add("unknown_label", dicom_id, split, label_errors[subject_id, study_id])
            continue
        if (subject_id, study_id) not in labels_of:
            # Reports, not labels, are what pre-training needs: keep the image with all-zero labels.
            studies_without_labels.add(study_id)
        study_folder = Path("files", f"p{subject_id[:2]}", f"p{subject_id}")
        records[split].append(
            {
                "image_id": dicom_id,
                "study_id": study_id,
                "patient_id": subject_id,
                "view_position": view,
                "labels": labels_of.get((subject_id, study_id), [0] * len(CHEXPERT_OBSERVATIONS)),
                "image_path": str(data_dir / study_folder / f"s{study_id}" / f"{dicom_id}.jpg"),
                "report_path": str(report_dir / study_folder / f"s{study_id}.txt"),
            }
        )
    _log_filtered(name, filtered)
    if studies_without_labels:
        logger.warning(
            "%s: %d frontal studies have no row in %s; their labels are all 0.",
            name,
            len(studies_without_labels),
            labels_path.name,
        )
    return records


def read_report_file(path: str | Path) -> str:
    """
    The text of a report file, decoded strictly as UTF-8 (a byte-order mark is dropped). A file that is no UTF-8
    (Latin-1, Windows-1252) is a counted `undecodable_report` skip naming the file and the first bad byte, never
    text with replacement characters: guessing another encoding could read any bytes as some text.
    `missing_report` and `unreadable_report` skips for a file that is not there or cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as error:
        raise SkipExample("missing_report", str(path)) from error
    except OSError as error:
        raise SkipExample("unreadable_report", f"{path}: {error}") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SkipExample(
            "undecodable_report",
            f"{path}: not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}); re-encode it to UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8`",
        ) from error


def build_mimic_cxr_example(record: dict, options, skip_log: SkipLog) -> dict:
    """Read and clean the study's report (skip when it has no content), then read and resize the image."""
    report = clean_report(read_report_file(record["report_path"]))
    if report.is_empty:
        raise SkipExample("empty_report", record["report_path"])
    image, _ = read_image_or_skip(record["image_path"], options.image_size)
    return {
        "image": encode_image(image, options.image_format),
        "report": report.text,
        "findings": report.findings,
        "impression": report.impression,
        "report_source": report.source,
        "labels": record["labels"],
        "image_id": record["image_id"],
        "study_id": record["study_id"],
        "patient_id": record["patient_id"],
        "view_position": record["view_position"],
        "label_fraction_rank": record["label_fraction_rank"],
    }


MIMIC_CXR_FEATURES = Features(
    {
        "image": ImageFeature(mode="L"),
        "report": Value("string"),
        "findings": Value("string"),
        "impression": Value("string"),
        "report_source": Value("string"),
        "labels": multi_hot_feature(len(CHEXPERT_OBSERVATIONS)),
        "image_id": Value("string"),
        "study_id": Value("string"),
        "patient_id": Value("string"),
        "view_position": Value("string"),
        "label_fraction_rank": Value("int64"),
    }
)


def prepare_mimic_cxr(args: MimicCxrArguments) -> DatasetDict:
    """Prepare MIMIC-CXR-JPG (frontal images with their cleaned reports) for pre-training."""
    check_output_dir(args)
    skip_log = SkipLog()
    records = build_mimic_cxr_records(args, skip_log)
    uncertain = ", ".join(args.uncertain_one_labels) or "none"
    return write_dataset_dict(
        "mimic_cxr",
        records,
        build_mimic_cxr_example,
        MIMIC_CXR_FEATURES,
        args,
        skip_log,
        metadata={
            "task": "pretraining",
            "class_names": list(CHEXPERT_OBSERVATIONS),
            "split_rule": "official mimic-cxr-2.0.0-split.csv (validate -> validation); frontal (PA/AP) views only"
            + ("; blank ViewPosition kept" if args.keep_missing_view_position else ""),
            "label_policy": f"CheXpert labeler: 1 -> 1; 0, blank -> 0; -1 -> 1 for {uncertain}, else 0; "
            "studies without a labeler row -> all 0",
            "report_rule": "processing_sista.clean_report: findings + impression, impression alone when findings "
            "are missing, the cleaned body (no exam title, indication, history, comparison, technique) without "
            "sections; empty reports skipped",
            "label_fraction_rule": LABEL_FRACTION_RULE,
        },
    )


# ---------------------------------------------------------------------------
# CheXpert
# ---------------------------------------------------------------------------

CHEXPERT_SPLIT_FOLDERS = ("train", "valid", "test")
CHEXPERT_STUDY_PATTERN = re.compile(r"(patient\d+)/(study\d+)/")


@dataclass
class ChexpertArguments(PrepareArguments):
    """
    [`PrepareArguments`] for CheXpert, plus:

    Args:
        validation_fraction (`float`, *optional*, defaults to 0.05):
            Fraction of the patients of `train.csv` held out as the validation split.
        uncertain_ones (`str`, *optional*, defaults to `"Atelectasis,Edema"`):
            Comma-separated competition labels whose uncertain (-1) labels count as positive (U-Ones);
            the others count as negative (U-Zeros). `""` gives U-Zeros for all.
        frontal_only (`bool`, *optional*, defaults to `True`):
            Keep frontal images only (lateral ones are left out and counted in the log).
    """

    validation_fraction: float = field(
        default=0.05, metadata={"help": "Fraction of train.csv patients held out as the validation split."}
    )
    uncertain_ones: str = field(
        default="Atelectasis,Edema",
        metadata={"help": "Comma-separated labels whose uncertain (-1) values count as positive (U-Ones); others 0."},
    )
    frontal_only: bool = field(default=True, metadata={"help": "Keep frontal images only."})

    def __post_init__(self):
        super().__post_init__()
        self.uncertain_one_labels = parse_label_names(
            self.uncertain_ones, CHEXPERT_COMPETITION_LABELS, "uncertain_ones"
        )


def resolve_chexpert_path(data_dir: Path, csv_path: str) -> tuple[Path, str]:
    """
    Locate an image listed in CheXpert's csv files.

    The csv paths start with the dataset's own folder ("CheXpert-v1.0-small/train/patient00001/...");
    that first part is dropped so that the folder may be renamed or be the full-resolution version.
    Returns the file path and the path relative to `data_dir` ("train/patient00001/...").
    """
    parts = PurePosixPath(csv_path.strip()).parts
    if parts and parts[0] not in CHEXPERT_SPLIT_FOLDERS:
        parts = parts[1:]
    return data_dir.joinpath(*parts), "/".join(parts)


def _read_chexpert_csv(
    path: Path, data_dir: Path, args: ChexpertArguments, split: str, skip_log: SkipLog, filtered: Counter
) -> list[dict]:
    """Records of one CheXpert csv file (`split` is only used to log skips)."""
    table = read_csv_table(path, ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_COMPETITION_LABELS])
    records = []
    for row in iter_rows(table):
        image_path, image_id = resolve_chexpert_path(data_dir, row["Path"])
        study = CHEXPERT_STUDY_PATTERN.search(image_id)
        if study is None:
            skip_log.add("malformed_path", row["Path"], split, f"no patientNNNNN/studyN/ in {path.name}")
            continue
        if args.frontal_only and row["Frontal/Lateral"] != "Frontal":
            filtered[f"view_{row['Frontal/Lateral'] or 'missing'}"] += 1
            continue
        try:
            labels = chexpert_label_vector(row, CHEXPERT_COMPETITION_LABELS, args.uncertain_one_labels)
        except ValueError as error:
            skip_log.add("unknown_label", image_id, split, str(error))
            continue
        records.append(
            {
                "image_id": image_id,
                "study_id": f"{study.group(1)}/{study.group(2)}",
                "patient_id": study.group(1),
                "view_position": row["AP/PA"] or row["Frontal/Lateral"],
                "labels": labels,
                "image_path": str(image_path),
            }
        )
    return records


def build_chexpert_records(args: ChexpertArguments, skip_log: SkipLog) -> dict[str, list[dict]]:
    """Index CheXpert: `train.csv` split by patient into train/validation, `valid.csv` as test."""
    data_dir = Path(args.data_dir)
    train_csv = find_required_file(data_dir, ["train.csv"], "CheXpert (the CheXpert-v1.0[-small] folder)")
    valid_csv = find_required_file(data_dir, ["valid.csv"], "CheXpert (the CheXpert-v1.0[-small] folder)")
    filtered = Counter()
    train_records = _read_chexpert_csv(train_csv, data_dir, args, "", skip_log, filtered)
    test_records = _read_chexpert_csv(valid_csv, data_dir, args, "test", skip_log, filtered)
    _log_filtered("CheXpert", filtered)

    split_of = assign_group_splits(
        (record["patient_id"] for record in train_records), {"validation": args.validation_fraction}, args.seed
    )
    records = {"train": [], "validation": [], "test": test_records}
    for record in train_records:
        records[split_of[record["patient_id"]]].append(record)
    return records


def build_chexpert_example(record: dict, options, skip_log: SkipLog) -> dict:
    image, _ = read_image_or_skip(record["image_path"], options.image_size)
    example = {key: record[key] for key in ("labels", "image_id", "study_id", "patient_id", "view_position")}
    return {
        "image": encode_image(image, options.image_format),
        **example,
        "label_fraction_rank": record["label_fraction_rank"],
    }


CHEXPERT_FEATURES = Features(
    {
        "image": ImageFeature(mode="L"),
        "labels": multi_hot_feature(len(CHEXPERT_COMPETITION_LABELS)),
        "image_id": Value("string"),
        "study_id": Value("string"),
        "patient_id": Value("string"),
        "view_position": Value("string"),
        "label_fraction_rank": Value("int64"),
    }
)


def prepare_chexpert(args: ChexpertArguments) -> DatasetDict:
    """Prepare CheXpert for 5-label classification."""
    check_output_dir(args)
    skip_log = SkipLog()
    records = build_chexpert_records(args, skip_log)
    uncertain_zeros = [name for name in CHEXPERT_COMPETITION_LABELS if name not in args.uncertain_one_labels]
    return write_dataset_dict(
        "chexpert",
        records,
        build_chexpert_example,
        CHEXPERT_FEATURES,
        args,
        skip_log,
        metadata={
            "task": "classification",
            "class_names": list(CHEXPERT_COMPETITION_LABELS),
            "split_rule": f"train.csv split by patient: {args.validation_fraction:g} of patients -> validation "
            "(SHA-256 seeded order); valid.csv (official validation) -> test"
            + ("; frontal images only" if args.frontal_only else ""),
            "label_policy": f"1 -> 1; 0 and blank -> 0; -1 -> 1 (U-Ones) for {list(args.uncertain_one_labels)}, "
            f"-1 -> 0 (U-Zeros) for {uncertain_zeros}",
            "label_fraction_rule": LABEL_FRACTION_RULE,
        },
    )


# ---------------------------------------------------------------------------
# RSNA Pneumonia
# ---------------------------------------------------------------------------

RSNA_CLASS_NAMES = ("Lung Opacity",)


@dataclass
class RsnaPneumoniaArguments(PrepareArguments):
    """
    [`PrepareArguments`] for RSNA Pneumonia, plus:

    Args:
        validation_fraction (`float`, *optional*, defaults to 0.2):
            Fraction of the patients held out as the validation split.
        test_fraction (`float`, *optional*, defaults to 0.2):
            Fraction of the patients held out as the test split (the stage-2 test labels are not public).
    """

    validation_fraction: float = field(default=0.2, metadata={"help": "Fraction of patients in validation."})
    test_fraction: float = field(default=0.2, metadata={"help": "Fraction of patients in test."})


def build_rsna_pneumonia_records(args: RsnaPneumoniaArguments, skip_log: SkipLog) -> dict[str, list[dict]]:
    """Group the rows of `stage_2_train_labels.csv` by image (one image per patient) and split by patient."""
    data_dir = Path(args.data_dir)
    labels_path = find_required_file(data_dir, ["stage_2_train_labels.csv"], "RSNA Pneumonia")
    image_dir = find_required_file(data_dir, ["stage_2_train_images"], "RSNA Pneumonia")
    table = read_csv_table(labels_path, ["patientId", "x", "y", "width", "height", "Target"])

    rows_of = {}
    for line_number, row in enumerate(iter_rows(table), start=2):  # line 1 is the header
        rows_of.setdefault(row["patientId"].strip(), []).append((line_number, row))

    images = []
    for patient_id, rows in rows_of.items():
        targets = {row["Target"].strip() for _, row in rows}
        if not targets <= {"0", "1"}:
            skip_log.add("unknown_label", patient_id, detail=f"Target values {sorted(targets)}")
            continue
        if len(targets) > 1:
            skip_log.add("conflicting_labels", patient_id, detail="rows with Target 0 and 1")
            continue
        target = int(targets.pop())
        annotations = []
        # Target 0 rows carry no box (blank x, y, width, height).
        for line_number, row in rows if target == 1 else []:
            try:
                x, y, width, height = (float(row[key]) for key in ("x", "y", "width", "height"))
            except ValueError:
                box = [row[key] for key in ("x", "y", "width", "height")]
                skip_log.add("malformed_box", patient_id, detail=f"{labels_path.name} line {line_number}: {box}")
                continue
            # The csv line number is a stable, unique annotation id.
            annotations.append({"id": line_number, "category": 0, "box": [x, y, x + width, y + height]})
        if target and not annotations:
            skip_log.add("no_valid_box", patient_id, detail="Target 1 without a usable box")
            continue
        images.append(
            {
                "image_id": patient_id,
                "patient_id": patient_id,
                "target": target,
                "annotations": annotations,
                "image_path": str(image_dir / f"{patient_id}.dcm"),
            }
        )

    split_of = assign_group_splits(
        rows_of.keys(), {"validation": args.validation_fraction, "test": args.test_fraction}, args.seed
    )
    records = {"train": [], "validation": [], "test": []}
    for image in images:
        records[split_of[image["patient_id"]]].append(image)
    return records


def build_rsna_pneumonia_example(record: dict, options, skip_log: SkipLog) -> dict:
    """Read the DICOM, rescale and clip the boxes to the resized image, and paint them into a mask."""
    image, original_size = read_image_or_skip(record["image_path"], options.image_size)
    objects = build_objects(
        record["annotations"], original_size, image.size, record["image_id"], record["split"], skip_log
    )
    if record["target"] and not objects["bbox"]:
        raise SkipExample("no_valid_box", "every box of this Target 1 image lies outside it or is degenerate")
    return {
        "image": encode_image(image, options.image_format),
        "mask": encode_mask(boxes_to_mask(objects["bbox"], image.size)),
        "labels": [record["target"]],
        "objects": objects,
        "image_id": record["image_id"],
        "patient_id": record["patient_id"],
        "label_fraction_rank": record["label_fraction_rank"],
    }


RSNA_PNEUMONIA_FEATURES = Features(
    {
        "image": ImageFeature(mode="L"),
        "mask": ImageFeature(mode="L"),
        "labels": multi_hot_feature(len(RSNA_CLASS_NAMES)),
        "objects": objects_feature(RSNA_CLASS_NAMES),
        "image_id": Value("string"),
        "patient_id": Value("string"),
        "label_fraction_rank": Value("int64"),
    }
)


def prepare_rsna_pneumonia(args: RsnaPneumoniaArguments) -> DatasetDict:
    """Prepare RSNA Pneumonia for classification, detection (boxes) and segmentation (masks from boxes)."""
    check_output_dir(args)
    skip_log = SkipLog()
    records = build_rsna_pneumonia_records(args, skip_log)
    return write_dataset_dict(
        "rsna_pneumonia",
        records,
        build_rsna_pneumonia_example,
        RSNA_PNEUMONIA_FEATURES,
        args,
        skip_log,
        metadata={
            "task": "classification, detection, segmentation",
            "class_names": list(RSNA_CLASS_NAMES),
            "category_names": list(RSNA_CLASS_NAMES),
            "split_rule": f"stage_2_train_labels.csv split by patientId: {args.validation_fraction:g} -> "
            f"validation, {args.test_fraction:g} -> test, rest -> train (SHA-256 seeded order)",
            "label_policy": "labels = [Target]; objects = the Target 1 boxes, COCO [x_min, y_min, w, h] on the "
            "resized image, clipped to it (boxes wholly outside or without area skipped); mask = union of the boxes",
            "label_fraction_rule": LABEL_FRACTION_RULE,
        },
    )


# ---------------------------------------------------------------------------
# SIIM-ACR Pneumothorax
# ---------------------------------------------------------------------------

SIIM_CLASS_NAMES = ("Pneumothorax",)
SIIM_NO_MASK = "-1"


@dataclass
class SiimPneumothoraxArguments(PrepareArguments):
    """
    [`PrepareArguments`] for SIIM-ACR Pneumothorax, plus:

    Args:
        validation_fraction (`float`, *optional*, defaults to 0.15):
            Fraction of the patients held out as the validation split.
        test_fraction (`float`, *optional*, defaults to 0.15):
            Fraction of the patients held out as the test split.
    """

    validation_fraction: float = field(default=0.15, metadata={"help": "Fraction of patients in validation."})
    test_fraction: float = field(default=0.15, metadata={"help": "Fraction of patients in test."})


def _read_patient_id(path: Path) -> str:
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    return str(header.get("PatientID", ""))


def build_siim_pneumothorax_records(args: SiimPneumothoraxArguments, skip_log: SkipLog) -> dict[str, list[dict]]:
    """Group the RLE rows by image, find each DICOM and read its PatientID for a patient-level split."""
    data_dir = Path(args.data_dir)
    rle_path = find_required_file(data_dir, ["train-rle.csv"], "SIIM-ACR Pneumothorax")
    dicom_dir = find_required_file(data_dir, ["dicom-images-train"], "SIIM-ACR Pneumothorax")
    table = read_csv_table(rle_path, ["ImageId", "EncodedPixels"])
    rles_of = {}
    for row in iter_rows(table):
        rles_of.setdefault(row["ImageId"].strip(), []).append(row["EncodedPixels"].strip())

    # The DICOMs sit in <study>/<series>/<ImageId>.dcm folders; only the file name matters.
    path_of = {path.stem: path for path in sorted(dicom_dir.rglob("*.dcm"))}
    unlabeled = len(path_of.keys() - rles_of.keys())
    if unlabeled:
        logger.info("SIIM-ACR: %d DICOMs have no row in %s and are not used.", unlabeled, rle_path.name)

    images = []
    for image_id, rles in tqdm(rles_of.items(), desc="Reading DICOM headers"):
        if image_id not in path_of:
            skip_log.add("missing_image", image_id, detail=f"no {image_id}.dcm under {dicom_dir.name}/")
            continue
        try:
            patient_id = _read_patient_id(path_of[image_id])
        except Exception as error:  # as in read_image_or_skip: a bad header must not stop the run
            skip_log.add("unreadable_image", image_id, detail=f"{path_of[image_id]}: {type(error).__name__}: {error}")
            continue
        images.append(
            {
                "image_id": image_id,
                # An anonymised file without PatientID is its own patient.
                "patient_id": patient_id or image_id,
                "rles": rles,
                "image_path": str(path_of[image_id]),
            }
        )

    split_of = assign_group_splits(
        (image["patient_id"] for image in images),
        {"validation": args.validation_fraction, "test": args.test_fraction},
        args.seed,
    )
    records = {"train": [], "validation": [], "test": []}
    for image in images:
        records[split_of[image["patient_id"]]].append(image)
    return records


def build_siim_pneumothorax_example(record: dict, options, skip_log: SkipLog) -> dict:
    """Read the DICOM, decode and merge (union) its RLE rows at full size, then resize the mask."""
    image, (width, height) = read_image_or_skip(record["image_path"], options.image_size)
    mask = np.zeros((height, width), dtype=bool)
    for rle in record["rles"]:
        if rle == SIIM_NO_MASK:
            continue
        try:
            mask |= decode_siim_rle(rle, width, height)
        except ValueError as error:
            raise SkipExample("malformed_rle", str(error)) from error
    return {
        "image": encode_image(image, options.image_format),
        "mask": encode_mask(resize_mask(mask, image.size)),
        "labels": [int(mask.any())],
        "image_id": record["image_id"],
        "patient_id": record["patient_id"],
        "label_fraction_rank": record["label_fraction_rank"],
    }


SIIM_PNEUMOTHORAX_FEATURES = Features(
    {
        "image": ImageFeature(mode="L"),
        "mask": ImageFeature(mode="L"),
        "labels": multi_hot_feature(len(SIIM_CLASS_NAMES)),
        "image_id": Value("string"),
        "patient_id": Value("string"),
        "label_fraction_rank": Value("int64"),
    }
)


def prepare_siim_pneumothorax(args: SiimPneumothoraxArguments) -> DatasetDict:
    """Prepare SIIM-ACR Pneumothorax for segmentation (and image-level classification)."""
    check_output_dir(args)
    skip_log = SkipLog()
    records = build_siim_pneumothorax_records(args, skip_log)
    return write_dataset_dict(
        "siim_pneumothorax",
        records,
        build_siim_pneumothorax_example,
        SIIM_PNEUMOTHORAX_FEATURES,
        args,
        skip_log,
        metadata={
            "task": "segmentation, classification",
            "class_names": list(SIIM_CLASS_NAMES),
            "split_rule": f"train-rle.csv images split by DICOM PatientID: {args.validation_fraction:g} -> "
            f"validation, {args.test_fraction:g} -> test, rest -> train (SHA-256 seeded order)",
            "label_policy": "mask = union of the image's RLE rows ('-1' = none), decoded at full size then resized "
            "(nearest); labels = [mask not empty]",
            "label_fraction_rule": LABEL_FRACTION_RULE,
        },
    )


# ---------------------------------------------------------------------------
# COVIDx
# ---------------------------------------------------------------------------

# COVIDx CXR-3 and later are binary; v1 to v8 have three classes.
COVIDX_CLASS_SCHEMES = (("negative", "positive"), ("normal", "pneumonia", "COVID-19"))
COVIDX_SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
COVIDX_IMAGE_FOLDERS = {"train": "train", "validation": "val", "test": "test"}


@dataclass
class CovidxArguments(PrepareArguments):
    """
    [`PrepareArguments`] for COVIDx, plus:

    Args:
        validation_fraction (`float`, *optional*, defaults to 0.1):
            Fraction of the patients of `train.txt` held out as validation when there is no `val.txt`.
    """

    validation_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of train.txt patients held out as validation when no val.txt."}
    )


def read_covidx_split_file(path: Path, split: str, skip_log: SkipLog) -> list[dict]:
    """Parse a COVIDx split file: `patient_id filename class [source]` per line, space-separated."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a text file of `patient_id filename class [source]` lines: {error}") from error
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 3:
            skip_log.add("malformed_line", f"{path.name}:{line_number}", split, line)
            continue
        # Class and source are the last two fields, so a file name with spaces still parses.
        if len(tokens) >= 4:
            filename, label, source = " ".join(tokens[1:-2]), tokens[-2], tokens[-1]
        else:
            filename, label, source = tokens[1], tokens[2], ""
        rows.append({"patient_id": tokens[0], "filename": filename, "label": label, "source": source})
    return rows


def detect_covidx_classes(labels) -> tuple[str, ...]:
    """The COVIDx class scheme (binary or 3-class) that matches most of `labels`, compared case-insensitively."""
    counts = Counter(label.lower() for label in labels)
    matches = {scheme: sum(counts[name.lower()] for name in scheme) for scheme in COVIDX_CLASS_SCHEMES}
    best = max(COVIDX_CLASS_SCHEMES, key=matches.get)
    if not matches[best]:
        raise ValueError(f"train.txt classes {sorted(counts)} match no known COVIDx scheme {COVIDX_CLASS_SCHEMES}.")
    return best


def build_covidx_records(args: CovidxArguments, skip_log: SkipLog) -> tuple[dict[str, list[dict]], tuple]:
    """Index COVIDx from its official split files; without `val.txt`, carve validation from train by patient."""
    data_dir = Path(args.data_dir)
    for split in ("train", "test"):
        find_required_file(data_dir, [COVIDX_SPLIT_FILES[split]], "COVIDx")
        find_required_file(data_dir, [COVIDX_IMAGE_FOLDERS[split]], "COVIDx")
    splits = [split for split, name in COVIDX_SPLIT_FILES.items() if (data_dir / name).exists()]
    rows_of = {
        split: read_covidx_split_file(data_dir / COVIDX_SPLIT_FILES[split], split, skip_log) for split in splits
    }
    class_names = detect_covidx_classes(row["label"] for row in rows_of["train"])
    class_index = {name.lower(): index for index, name in enumerate(class_names)}

    records = {"train": [], "validation": [], "test": []}
    for split, rows in rows_of.items():
        for row in rows:
            label = class_index.get(row["label"].lower())
            if label is None:
                skip_log.add("unknown_label", row["filename"], split, f"class {row['label']!r} not in {class_names}")
                continue
            records[split].append(
                {
                    "image_id": row["filename"],
                    "patient_id": row["patient_id"],
                    "source": row["source"],
                    # One-hot, like every other `labels` column: single-label with exactly one 1.
                    "labels": [int(index == label) for index in range(len(class_names))],
                    "image_path": str(data_dir / COVIDX_IMAGE_FOLDERS[split] / row["filename"]),
                }
            )
    if "validation" not in rows_of:
        split_of = assign_group_splits(
            (row["patient_id"] for row in rows_of["train"]), {"validation": args.validation_fraction}, args.seed
        )
        train_records, records["train"] = records["train"], []
        for record in train_records:
            records[split_of[record["patient_id"]]].append(record)
    return records, class_names


def build_covidx_example(record: dict, options, skip_log: SkipLog) -> dict:
    image, _ = read_image_or_skip(record["image_path"], options.image_size)
    example = {key: record[key] for key in ("labels", "image_id", "patient_id", "source", "label_fraction_rank")}
    return {"image": encode_image(image, options.image_format), **example}


def prepare_covidx(args: CovidxArguments) -> DatasetDict:
    """Prepare COVIDx for single-label classification (`labels` is one-hot: exactly one 1 per row)."""
    check_output_dir(args)
    skip_log = SkipLog()
    records, class_names = build_covidx_records(args, skip_log)
    features = Features(
        {
            "image": ImageFeature(mode="L"),
            "labels": multi_hot_feature(len(class_names)),
            "image_id": Value("string"),
            "patient_id": Value("string"),
            "source": Value("string"),
            "label_fraction_rank": Value("int64"),
        }
    )
    validation_rule = (
        "val.txt -> validation"
        if (Path(args.data_dir) / COVIDX_SPLIT_FILES["validation"]).exists()
        else f"{args.validation_fraction:g} of train.txt patients -> validation (SHA-256 seeded order)"
    )
    return write_dataset_dict(
        "covidx",
        records,
        build_covidx_example,
        features,
        args,
        skip_log,
        metadata={
            "task": "classification (single label)",
            "class_names": list(class_names),
            "split_rule": f"official train.txt -> train, test.txt -> test; {validation_rule}",
            "label_policy": "labels = one-hot over class_names of the split file's class (case-insensitive; "
            "exactly one 1 per row: single-label); other classes skipped",
            "label_fraction_rule": LABEL_FRACTION_RULE,
        },
    )


# ---------------------------------------------------------------------------
# Object-CXR
# ---------------------------------------------------------------------------

OBJECT_CXR_CLASS_NAMES = ("foreign_object",)
OBJECT_CXR_RECTANGLE, OBJECT_CXR_ELLIPSE, OBJECT_CXR_POLYGON = "0", "1", "2"


@dataclass
class ObjectCxrArguments(PrepareArguments):
    """
    [`PrepareArguments`] for Object-CXR, plus:

    Args:
        validation_fraction (`float`, *optional*, defaults to 0.2):
            Fraction of the images of `train.csv` held out as the validation split.
    """

    validation_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of train.csv images held out as the validation split."}
    )


def parse_object_cxr_shape(shape: str) -> list[float]:
    """
    Bounding box `(x_min, y_min, x_max, y_max)` of one Object-CXR annotation.

    `"0 x1 y1 x2 y2"` is a rectangle and `"1 x1 y1 x2 y2"` an ellipse given by its bounding box
    (corners in either order); `"2 x1 y1 x2 y2 x3 y3 ..."` is a polygon of at least 3 points.

    Raises:
        `ValueError` for an unknown type, a non-numeric coordinate or a wrong number of them.
    """
    kind, *tokens = shape.split()
    coordinates = [float(token) for token in tokens]
    if kind in (OBJECT_CXR_RECTANGLE, OBJECT_CXR_ELLIPSE):
        if len(coordinates) != 4:
            raise ValueError(f"type {kind} needs 4 coordinates, got {len(coordinates)}")
    elif kind == OBJECT_CXR_POLYGON:
        if len(coordinates) < 6 or len(coordinates) % 2:
            raise ValueError(f"a polygon needs 3 or more x y pairs, got {len(coordinates)} values")
    else:
        raise ValueError(f"unknown annotation type {kind!r}")
    xs, ys = coordinates[0::2], coordinates[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def build_object_cxr_records(args: ObjectCxrArguments, skip_log: SkipLog) -> dict[str, list[dict]]:
    """Index Object-CXR: `train.csv` split by image into train/validation, `dev.csv` as test."""
    data_dir = Path(args.data_dir)
    tables = {}
    for csv_name, folder, split in (("train.csv", "train", ""), ("dev.csv", "dev", "test")):
        csv_path = find_required_file(data_dir, [csv_name], "Object-CXR")
        tables[split] = (read_csv_table(csv_path, ["image_name", "annotation"]), data_dir / folder)
        find_required_file(data_dir, [folder], "Object-CXR")

    next_id, images = 0, {"": [], "test": []}
    for split, (table, image_dir) in tables.items():
        for row in iter_rows(table):
            image_id, annotation = row["image_name"].strip(), row["annotation"].strip()
            annotations = []
            for shape in filter(None, (part.strip() for part in annotation.split(";"))):
                next_id += 1  # ids count every source annotation, usable or not, so they never change
                try:
                    annotations.append({"id": next_id, "category": 0, "box": parse_object_cxr_shape(shape)})
                except ValueError as error:
                    skip_log.add("malformed_annotation", image_id, split, f"{shape!r}: {error}")
            if annotation and not annotations:
                skip_log.add("no_valid_box", image_id, split, "no usable annotation")
                continue
            images[split].append(
                {
                    "image_id": image_id,
                    "labels": [int(bool(annotation))],
                    "annotations": annotations,
                    "image_path": str(image_dir / image_id),
                }
            )

    # Object-CXR gives no patient ids, so validation is carved out by image.
    split_of = assign_group_splits(
        (image["image_id"] for image in images[""]), {"validation": args.validation_fraction}, args.seed
    )
    records = {"train": [], "validation": [], "test": images["test"]}
    for image in images[""]:
        records[split_of[image["image_id"]]].append(image)
    return records


def build_object_cxr_example(record: dict, options, skip_log: SkipLog) -> dict:
    image, original_size = read_image_or_skip(record["image_path"], options.image_size)
    objects = build_objects(
        record["annotations"], original_size, image.size, record["image_id"], record["split"], skip_log
    )
    if record["annotations"] and not objects["bbox"]:
        raise SkipExample("no_valid_box", "every box of this image lies outside it or is degenerate")
    return {
        "image": encode_image(image, options.image_format),
        "labels": record["labels"],
        "objects": objects,
        "image_id": record["image_id"],
        "label_fraction_rank": record["label_fraction_rank"],
    }


OBJECT_CXR_FEATURES = Features(
    {
        "image": ImageFeature(mode="L"),
        "labels": multi_hot_feature(len(OBJECT_CXR_CLASS_NAMES)),
        "objects": objects_feature(OBJECT_CXR_CLASS_NAMES),
        "image_id": Value("string"),
        "label_fraction_rank": Value("int64"),
    }
)


def prepare_object_cxr(args: ObjectCxrArguments) -> DatasetDict:
    """Prepare Object-CXR for foreign-object detection (and image-level classification)."""
    check_output_dir(args)
    skip_log = SkipLog()
    records = build_object_cxr_records(args, skip_log)
    return write_dataset_dict(
        "object_cxr",
        records,
        build_object_cxr_example,
        OBJECT_CXR_FEATURES,
        args,
        skip_log,
        metadata={
            "task": "detection, classification",
            "class_names": list(OBJECT_CXR_CLASS_NAMES),
            "category_names": list(OBJECT_CXR_CLASS_NAMES),
            "split_rule": f"train.csv split by image (no patient ids): {args.validation_fraction:g} -> validation "
            "(SHA-256 seeded order); dev.csv (official development set) -> test",
            "label_policy": "rectangles, ellipses (their box) and polygons (their bounding box) -> one "
            "foreign_object box each, COCO [x_min, y_min, w, h] on the resized image, clipped to it (boxes "
            "wholly outside or without area skipped); labels = [annotation not empty]",
            "label_fraction_rule": LABEL_FRACTION_RULE,
        },
    )


# ---------------------------------------------------------------------------
# Benchmark hold-outs: lists of images no training split may use
# ---------------------------------------------------------------------------

EXCLUDED_IMAGES_FILE = "excluded_image_ids.txt"


def read_excluded_image_ids(lists: str) -> frozenset[str]:
    """
    The image ids of comma-separated hold-out lists: a file with one id per line (blank lines and `#` comments
    ignored), or a folder holding `excluded_image_ids.txt` (a prepared benchmark such as `data/chexpert_5x200`).

    Raises:
        `FileNotFoundError` naming a list that is neither.
    """
    image_ids = set()
    for entry in filter(None, (part.strip() for part in lists.split(","))):
        path = Path(entry)
        if path.is_dir():
            path = path / EXCLUDED_IMAGES_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"--exclude_images {entry!r}: expected a file of image ids or a folder holding {EXCLUDED_IMAGES_FILE} "
                "(written by the chexpert_5x200 and ms_cxr preparations), found neither."
            )
        lines = (line.strip() for line in path.read_text().splitlines())
        image_ids.update(line for line in lines if line and not line.startswith("#"))
    return frozenset(image_ids)


def write_excluded_image_ids(output_dir: str | Path, image_ids: Iterable[str], source: str) -> Path:
    """Write the hold-out list of a benchmark beside it (sorted, one id per line, a comment naming its source)."""
    path = Path(output_dir) / EXCLUDED_IMAGES_FILE
    path.write_text(f"# {source}\n" + "".join(f"{image_id}\n" for image_id in sorted(set(image_ids))))
    return path


def drop_excluded_images(
    records_per_split: dict[str, list[dict]], excluded_image_ids: frozenset[str] | None
) -> tuple[dict[str, list[dict]], int]:
    """Leave out the records whose `image_id` is in a hold-out list (by design: counted, not logged as skips)."""
    if not excluded_image_ids:
        return records_per_split, 0
    kept = {
        split: [record for record in records if record["image_id"] not in excluded_image_ids]
        for split, records in records_per_split.items()
    }
    excluded = sum(len(records) for records in records_per_split.values()) - sum(map(len, kept.values()))
    logger.info("Left out %d images listed in the hold-out lists (--exclude_images).", excluded)
    return kept, excluded


# ---------------------------------------------------------------------------
# CheXpert 5x200 (zero-shot classification and retrieval benchmark)
# ---------------------------------------------------------------------------

# MGCA's and GLoRIA's rule compares these 13 observations: all 14 but "No Finding" (which the CheXpert labeler
# leaves blank whenever a finding is positive, so the 14-column rule selects the same rows on the real table).
CHEXPERT_5X200_CHECKED_OBSERVATIONS = tuple(name for name in CHEXPERT_OBSERVATIONS if name != "No Finding")


@dataclass
class Chexpert5x200Arguments(PrepareArguments):
    """
    [`PrepareArguments`] for the CheXpert 5x200 benchmark (built from `train.csv`), plus:

    Args:
        per_class (`int`, *optional*, defaults to 200):
            Images drawn for each of the 5 competition findings.
        sample_seed (`int`, *optional*, defaults to 0):
            Seed of the draw: `DataFrame.sample(n=per_class, random_state=sample_seed)` per finding, as MGCA's
            `preprocess_chexpert_5x200_data` (seed 0) draws it.
    """

    per_class: int = field(default=200, metadata={"help": "Images drawn per finding (MGCA: 200)."})
    sample_seed: int = field(
        default=0, metadata={"help": "random_state of the per-finding DataFrame.sample (MGCA: 0)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.per_class < 1:
            raise ValueError(f"`per_class` must be a positive integer, got {self.per_class}.")


def select_chexpert_5x200(table: pd.DataFrame, per_class: int = 200, seed: int = 0) -> pd.DataFrame:
    """
    MGCA's CheXpert 5x200 selection from CheXpert's `train.csv` (read as strings, as `read_csv_table` does).

    Frontal images only; blank cells read as 0; an image is eligible for a competition finding when that finding is
    exactly 1 and the other 12 observations of `CHEXPERT_5X200_CHECKED_OBSERVATIONS` are exactly 0 (so uncertain
    -1 rows are out, and a row is eligible for one finding at most). For each finding in
    `CHEXPERT_COMPETITION_LABELS` order, `per_class` eligible rows are drawn with
    `DataFrame.sample(n=per_class, random_state=seed)` from the eligible rows in file order, which is exactly MGCA's
    draw (`np.random.RandomState(seed).choice(len(eligible), per_class, replace=False)`).

    Returns:
        The drawn rows (finding by finding, in draw order) with a `finding` column.

    Raises:
        `ValueError` when a finding has fewer than `per_class` eligible images.
    """
    missing = [name for name in ("Path", "Frontal/Lateral", *CHEXPERT_5X200_CHECKED_OBSERVATIONS) if name not in table]
    if missing:
        raise ValueError(f"the CheXpert table lacks the column(s) {missing}; it has {list(table.columns)}.")
    frontal = table[table["Frontal/Lateral"].str.strip() == "Frontal"]
    # Blank -> 0 as MGCA's fillna(0); a value that is no number is NaN and so neither 0 nor 1: never eligible.
    values = frontal[list(CHEXPERT_5X200_CHECKED_OBSERVATIONS)].apply(
        lambda column: pd.to_numeric(column.str.strip().replace("", "0"), errors="coerce")
    )
    drawn = []
    for finding in CHEXPERT_COMPETITION_LABELS:
        others = [name for name in CHEXPERT_5X200_CHECKED_OBSERVATIONS if name != finding]
        eligible = frontal[(values[finding] == 1) & (values[others] == 0).all(axis=1)]
        if len(eligible) < per_class:
            raise ValueError(
                f"CheXpert 5x200: only {len(eligible)} frontal images have {finding} = 1 and every other observation "
                f"0; {per_class} are needed (--per_class)."
            )
        drawn.append(eligible.sample(n=per_class, random_state=seed).assign(finding=finding))
    return pd.concat(drawn)


def build_chexpert_5x200_records(args: Chexpert5x200Arguments, skip_log: SkipLog) -> dict[str, list[dict]]:
    """The 5 x `per_class` drawn images as one `test` split, with one-hot labels over the 5 findings."""
    data_dir = Path(args.data_dir)
    train_csv = find_required_file(data_dir, ["train.csv"], "CheXpert (the CheXpert-v1.0[-small] folder)")
    table = read_csv_table(train_csv, ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_5X200_CHECKED_OBSERVATIONS])
    records = []
    for row in iter_rows(select_chexpert_5x200(table, args.per_class, args.sample_seed)):
        image_path, image_id = resolve_chexpert_path(data_dir, row["Path"])
        study = CHEXPERT_STUDY_PATTERN.search(image_id)
        if study is None:
            skip_log.add("malformed_path", row["Path"], "test", f"no patientNNNNN/studyN/ in {train_csv.name}")
            continue
        records.append(
            {
                "image_id": image_id,
                "study_id": f"{study.group(1)}/{study.group(2)}",
                "patient_id": study.group(1),
                "view_position": row["AP/PA"] or row["Frontal/Lateral"],
                "labels": [int(name == row["finding"]) for name in CHEXPERT_COMPETITION_LABELS],
                "image_path": str(image_path),
            }
        )
    return {"test": records}


def prepare_chexpert_5x200(args: Chexpert5x200Arguments) -> DatasetDict:
    """
    Prepare CheXpert 5x200 (MGCA's and GLoRIA's zero-shot benchmark) as a `test` split, and write its hold-out list
    `excluded_image_ids.txt` for `--exclude_images` of the `chexpert` preparation.
    """
    check_output_dir(args)
    skip_log = SkipLog()
    records = build_chexpert_5x200_records(args, skip_log)
    dataset_dict = write_dataset_dict(
        "chexpert_5x200",
        records,
        build_chexpert_example,
        CHEXPERT_FEATURES,
        args,
        skip_log,
        metadata={
            "task": "zero-shot classification (5-way), image-text retrieval",
            "benchmark": "CheXpert 5x200",
            "class_names": list(CHEXPERT_COMPETITION_LABELS),
            "split_rule": f"test only: {args.per_class} frontal train.csv images per competition finding, "
            f"DataFrame.sample(n={args.per_class}, random_state={args.sample_seed}) per finding (MGCA's draw)",
            "label_policy": "eligible for a finding: that finding exactly 1 and the 12 other observations (all but "
            "No Finding) exactly 0, blank read as 0; labels = one-hot over the 5 findings",
            "hold_out_list": EXCLUDED_IMAGES_FILE,
        },
    )
    write_excluded_image_ids(
        args.output_dir,
        (record["image_id"] for record in records["test"]),
        f"CheXpert 5x200 (per_class={args.per_class}, sample_seed={args.sample_seed}): CheXpert image ids",
    )
    return dataset_dict


# ---------------------------------------------------------------------------
# MS-CXR (phrase grounding benchmark on MIMIC-CXR-JPG images)
# ---------------------------------------------------------------------------

# The columns of MS_CXR_Local_Alignment_v1.*.csv that are read (v1.1.0 adds `split`, kept when present).
MS_CXR_COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height")


@dataclass
class MsCxrArguments(PrepareArguments):
    """
    [`PrepareArguments`] for MS-CXR, where `data_dir` is the MIMIC-CXR-JPG folder (holding `files/`), plus:

    Args:
        ms_cxr_file (`str`):
            The MS-CXR annotation table `MS_CXR_Local_Alignment_v1.1.0.csv` (or v1.0.0) from PhysioNet.
    """

    ms_cxr_file: str | None = field(
        default=None, metadata={"help": "MS_CXR_Local_Alignment_v1.*.csv from PhysioNet (required)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.ms_cxr_file:
            raise ValueError("`ms_cxr_file` is required: the path of MS_CXR_Local_Alignment_v1.*.csv.")
        if not Path(self.ms_cxr_file).is_file():
            raise FileNotFoundError(f"--ms_cxr_file {self.ms_cxr_file!r} is not a file: expected the MS-CXR csv.")


def build_ms_cxr_records(args: MsCxrArguments, skip_log: SkipLog) -> tuple[dict[str, list[dict]], list[str]]:
    """
    One record per phrase: the rows of one `(dicom_id, label_text)` are the boxes of that phrase (box `x, y, w, h`
    in pixels of the original `image_width` x `image_height` JPEG). Every phrase goes to `test` (a zero-shot
    benchmark); the table's own `split` (v1.1.0) is kept as `ms_cxr_split`.
    """
    data_dir = Path(args.data_dir)
    find_required_file(data_dir, ["files"], "MIMIC-CXR-JPG (the folder holding files/p10/...)")
    table = read_csv_table(Path(args.ms_cxr_file), MS_CXR_COLUMNS)
    category_names = sorted({name.strip() for name in table["category_name"]})
    phrases = {}
    for line_number, row in enumerate(iter_rows(table), start=2):  # line 1 is the header
        key = (row["dicom_id"].strip(), row["label_text"].strip())
        try:
            x, y, width, height = (float(row[name]) for name in ("x", "y", "w", "h"))
            size = (int(float(row["image_width"])), int(float(row["image_height"])))
        except ValueError:
            values = [row[name] for name in ("x", "y", "w", "h", "image_width", "image_height")]
            skip_log.add("malformed_box", key[0], "test", f"line {line_number}: {values}")
            continue
        phrase = phrases.setdefault(
            key,
            {
                "dicom_id": key[0],
                "phrase": key[1],
                "category_name": row["category_name"].strip(),
                "ms_cxr_split": row.get("split", "").strip(),
                "annotated_size": size,
                "path": row["path"].strip(),
                "annotations": [],
            },
        )
        # The line number is a stable, unique box id.
        box = {"id": line_number, "category": category_names.index(row["category_name"].strip())}
        phrase["annotations"].append({**box, "box": [x, y, x + width, y + height]})

    records = []
    for index, phrase in enumerate(phrases.values()):
        # `path` is `files/p10/p10xxxxxx/s5xxxxxxx/<dicom_id>.jpg`, relative to the MIMIC-CXR-JPG folder.
        parts = PurePosixPath(phrase.pop("path")).parts
        study = next((part[1:] for part in parts if re.fullmatch(r"s\d+", part)), "")
        patient = next((part[1:] for part in parts if re.fullmatch(r"p\d{8}", part)), "")
        records.append(
            {
                **phrase,
                # One row per phrase: an image with two phrases is two rows, so the row id names the phrase.
                "image_id": f"{phrase['dicom_id']}/{index:04d}",
                "study_id": study,
                "patient_id": patient,
                "image_path": str(data_dir.joinpath(*parts)),
            }
        )
    return {"test": records}, category_names


def build_ms_cxr_example(record: dict, options, skip_log: SkipLog) -> dict:
    """Read the image, check it has the size the boxes refer to, then scale and clip the boxes to the resized image."""
    image, original_size = read_image_or_skip(record["image_path"], options.image_size)
    if tuple(original_size) != tuple(record["annotated_size"]):
        raise SkipExample(
            "image_size_mismatch",
            f"{record['image_path']} is {original_size[0]}x{original_size[1]}, the boxes refer to "
            f"{record['annotated_size'][0]}x{record['annotated_size'][1]}",
        )
    objects = build_objects(
        record["annotations"], original_size, image.size, record["image_id"], record["split"], skip_log
    )
    if not objects["bbox"]:
        raise SkipExample("no_valid_box", "every box of this phrase lies outside the image or is degenerate")
    example = {key: record[key] for key in ("phrase", "image_id", "dicom_id", "study_id", "patient_id")}
    return {
        "image": encode_image(image, options.image_format),
        "mask": encode_mask(boxes_to_mask(objects["bbox"], image.size)),
        "objects": objects,
        "category": record["category_name"],
        "ms_cxr_split": record["ms_cxr_split"],
        **example,
        "label_fraction_rank": record["label_fraction_rank"],
    }


def prepare_ms_cxr(args: MsCxrArguments) -> DatasetDict:
    """
    Prepare MS-CXR phrase grounding (one row per phrase: its image, boxes and their union mask on the resized
    image) as a `test` split, and write its hold-out list of MIMIC-CXR dicom_ids for `--exclude_images` of the
    `mimic_cxr` preparation.
    """
    check_output_dir(args)
    skip_log = SkipLog()
    records, category_names = build_ms_cxr_records(args, skip_log)
    features = Features(
        {
            "image": ImageFeature(mode="L"),
            "mask": ImageFeature(mode="L"),
            "objects": objects_feature(category_names),
            "category": ClassLabel(names=category_names),
            "ms_cxr_split": Value("string"),
            "phrase": Value("string"),
            "image_id": Value("string"),
            "dicom_id": Value("string"),
            "study_id": Value("string"),
            "patient_id": Value("string"),
            "label_fraction_rank": Value("int64"),
        }
    )
    dataset_dict = write_dataset_dict(
        "ms_cxr",
        records,
        build_ms_cxr_example,
        features,
        args,
        skip_log,
        metadata={
            "task": "phrase grounding (benchmark)",
            "benchmark": "MS-CXR",
            "class_names": category_names,
            "category_names": category_names,
            "split_rule": "test only: every phrase of the MS-CXR table (its own split, v1.1.0, kept as ms_cxr_split)",
            "label_policy": "one row per (dicom_id, label_text) phrase; objects = its boxes (x, y, w, h in the "
            "original image's pixels) clipped and scaled to the resized image, COCO [x_min, y_min, w, h]; mask = "
            "union of the boxes; an image whose size differs from the table's image_width x image_height is "
            "skipped (image_size_mismatch)",
            "hold_out_list": EXCLUDED_IMAGES_FILE,
        },
    )
    write_excluded_image_ids(
        args.output_dir,
        (record["dicom_id"] for record in records["test"]),
        f"MS-CXR ({Path(args.ms_cxr_file).name}): MIMIC-CXR dicom_ids",
    )
    return dataset_dict


# ---------------------------------------------------------------------------
# Datasets by name
# ---------------------------------------------------------------------------

DATASETS = {
    "mimic_cxr": (MimicCxrArguments, prepare_mimic_cxr, "MIMIC-CXR-JPG images + reports (pre-training)"),
    "chexpert": (ChexpertArguments, prepare_chexpert, "CheXpert, 5 competition labels (classification)"),
    "rsna_pneumonia": (RsnaPneumoniaArguments, prepare_rsna_pneumonia, "RSNA Pneumonia (class., detection, masks)"),
    "siim_pneumothorax": (SiimPneumothoraxArguments, prepare_siim_pneumothorax, "SIIM-ACR Pneumothorax (masks)"),
    "covidx": (CovidxArguments, prepare_covidx, "COVIDx (single-label classification)"),
    "object_cxr": (ObjectCxrArguments, prepare_object_cxr, "Object-CXR foreign objects (detection)"),
    "chexpert_5x200": (Chexpert5x200Arguments, prepare_chexpert_5x200, "CheXpert 5x200 benchmark (zero-shot)"),
    "ms_cxr": (MsCxrArguments, prepare_ms_cxr, "MS-CXR phrase grounding benchmark on MIMIC-CXR-JPG"),
}
