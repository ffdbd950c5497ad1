# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Shared helpers of the real-dataset preparation script (`prepare_datasets.py`).

Everything here is dataset-agnostic: reading radiographs (JPEG/PNG with Pillow, DICOM with
pydicom) at the working size, boxes and SIIM run-length masks, seeded patient-level splits and
label-fraction ranks, the log of skipped rows, and the sharded writer that turns per-split
record lists into a `datasets.DatasetDict` on disk without holding the images in memory.
"""

import csv
import hashlib
import io
import json
import logging
import math
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value, load_from_disk
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut


logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
METADATA_FILE = "sista_dataset.json"
SKIPPED_FILE = "skipped.csv"
SKIPPED_COLUMNS = ("split", "image_id", "reason", "detail")
DICOM_SUFFIXES = (".dcm", ".dicom")
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

    def __post_init__(self):
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
    """Return the first of `candidates` present in `data_dir`, or raise naming the missing file."""
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
    table = pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)
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
    """Refuse to write into a non-empty folder unless it holds a previous SISTA output to replace."""
    output_dir = Path(args.output_dir)
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


def read_dicom_pixels(path: str | Path) -> np.ndarray:
    """
    Read a single-frame grayscale DICOM as uint8 with the radiograph's intended contrast.

    The modality LUT (RescaleSlope/RescaleIntercept) and the VOI LUT or window are applied
    first, then intensities are min-max scaled to 0..255 (8-bit data that no LUT changed is kept
    as stored), and MONOCHROME1 images (where high values are dark) are inverted so that bone is
    always bright.
    """
    dicom = pydicom.dcmread(path)
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
    Read a radiograph as a grayscale image whose longer side is `image_size`.

    Returns:
        The resized `PIL.Image.Image` (mode "L") and the original `(width, height)`, which is what
        box coordinates of the source annotations refer to.

    Raises:
        `FileNotFoundError`, `OSError` (including `PIL.UnidentifiedImageError` and truncated files),
        `pydicom.errors.InvalidDicomError` or `ValueError` for files that cannot be used.
    """
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        image = Image.fromarray(read_dicom_pixels(path))
        original_size = image.size
    else:
        with Image.open(path) as source:
            original_size = source.size
            # JPEG decodes directly at 1/2, 1/4 or 1/8 scale (never below the target size):
            # several times faster on 3000-pixel radiographs, and no full-resolution array in memory.
            source.draft("L", resized_size(original_size, image_size))
            image = _pil_to_grayscale(source)
    target_size = resized_size(original_size, image_size)
    if image.size != target_size:
        image = image.resize(target_size, Image.Resampling.BICUBIC)
    return image, original_size


def read_image_or_skip(path: str | Path, image_size: int) -> tuple[Image.Image, tuple[int, int]]:
    """[`read_image`], turning a missing or unreadable file into a [`SkipExample`]."""
    try:
        return read_image(path, image_size)
    except FileNotFoundError as error:
        raise SkipExample("missing_image", str(path)) from error
    except (OSError, UnidentifiedImageError, InvalidDicomError, ValueError) as error:
        raise SkipExample("unreadable_image", f"{path}: {error}") from error


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


def _seeded_order_key(seed: int, key: str) -> str:
    # A hash rather than a random permutation: the order of an id depends on nothing but the seed
    # and the id itself, so it is the same on every machine, NumPy version and row order.
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


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
    ordered = sorted(set(groups), key=lambda group: _seeded_order_key(seed, group))
    split_of, start = {}, 0
    for split, fraction in fractions.items():
        stop = start + round(fraction * len(ordered))
        split_of.update((group, split) for group in ordered[start:stop])
        start = stop
    split_of.update((group, "train") for group in ordered[start:])
    return split_of


def label_fraction_ranks(image_ids: Sequence[str], seed: int) -> list[int]:
    """Rank of each image in the seeded order that label fractions are taken from (0 = first in)."""
    order = sorted(range(len(image_ids)), key=lambda index: _seeded_order_key(seed, image_ids[index]))
    ranks = [0] * len(image_ids)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks


def select_label_fraction(dataset: Dataset, fraction: float) -> Dataset:
    """
    Keep the `fraction` of a prepared split with the lowest `label_fraction_rank` (at least one row).

    Subsets are nested: the 1% rows are among the 10% rows, which are among the 100%. The order of
    the kept rows is the split's order.

    Example:

    ```python
    >>> train = load_from_disk("data/chexpert")["train"]
    >>> train_1pct = select_label_fraction(train, 0.01)
    ```
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
    if "label_fraction_rank" not in dataset.column_names:
        raise ValueError(f"the dataset has no `label_fraction_rank` column; it has {dataset.column_names}.")
    ranks = np.asarray(dataset.with_format("numpy")["label_fraction_rank"][:])
    num_rows = max(1, math.ceil(fraction * len(dataset))) if len(dataset) else 0
    return dataset.select(np.sort(np.argsort(ranks, kind="stable")[:num_rows]))


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
    """
    output_dir = Path(args.output_dir)
    if output_dir.exists():
        shutil.rmtree(output_dir)  # check_output_dir() has already made sure this is an old SISTA output
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    cache_root = Path(args.cache_dir) if args.cache_dir else output_dir.parent
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
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

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
    (output_dir / METADATA_FILE).write_text(json.dumps(summary, indent=2) + "\n")
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
    metadata_path = path / METADATA_FILE
    if not metadata_path.exists():
        raise FileNotFoundError(f"{path} holds no {METADATA_FILE}; was it written by examples/prepare_datasets.py?")
    return load_from_disk(str(path)), json.loads(metadata_path.read_text())
