# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The pre-training dataset: decode, one warp to the model's size (augmentation composed with the processor's resize,
seeded per sample and epoch), 8-bit transport; and the normalisation that finishes the images on the device.
"""

import io
from typing import Any

import datasets
import numpy as np
import torch
from PIL import ExifTags, Image

from processing_sista import apply_exif_orientation

from .augmentation import XRayAugmentation
from ..data.report_fitting import SECTION_COLUMNS


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class PretrainingDataset(torch.utils.data.Dataset):
    r"""
    A `datasets.Dataset` of image-report pairs as model features: decodes each image (JPEGs directly at 1/2, 1/4
    or 1/8 scale when the warp shrinks them that much), brings it to 8-bit gray (the image processor's windowing for
    other bit depths), and warps it ONCE straight to the model's frame: the augmentation's random crop, rotation and
    translation composed with the processor's aspect-preserving resize and padding into one bilinear affine map (a
    whole-pixel box reduction first, so that downscaling does not alias). Brightness and contrast jitter follow on
    the 8-bit frame. Reports and `report_embeds` pass through.

    Images travel as `uint8` `(1, height, width)` tensors (a quarter of a float channel, one channel instead of
    `num_channels`): [`normalize_pixel_values`] rescales, replicates the channel and normalises on the device.

    Augmentation seeds are `(seed, epoch, sample index)`: the same sample gets new draws every epoch, and the draws
    do not depend on the number of processes or workers, on the loader's prefetching, or on a resume from a
    checkpoint (a global RNG would be restored one prefetched batch late). The epoch lives in shared memory, so
    loader workers, persistent ones included, see what `set_epoch` writes in the training process ([`SistaTrainer`]
    calls it at the start of every epoch: accelerate's sharded loaders only reach the sampler).

    Items are dicts with `pixel_values` (a `uint8` tensor), `report` and, when present, `report_embeds` and the
    report's `findings` and `impression` texts.
    """

    def __init__(
        self,
        dataset,
        image_processor,
        augmentation: XRayAugmentation | None = None,
        seed: int = 0,
        image_column: str = "image",
        report_column: str = "report",
        report_embeds_column: str | None = "report_embeds",
    ):
        if not image_processor.do_rescale or not image_processor.do_normalize:
            raise ValueError(
                "`image_processor` must rescale and normalise (`do_rescale=True`, `do_normalize=True`): the dataset "
                f"sends 8-bit images that are normalised on the device; got do_rescale={image_processor.do_rescale}, "
                f"do_normalize={image_processor.do_normalize}."
            )
        columns = [image_column, report_column]
        if report_embeds_column and report_embeds_column in dataset.column_names:
            columns.append(report_embeds_column)
        # a prepared dataset's report sections as text let the collator truncate the findings, not the impression
        self.section_columns = [
            name
            for name in SECTION_COLUMNS
            if getattr(dataset.features.get(name), "dtype", None) in ("string", "large_string")
        ]
        if len(self.section_columns) < len(SECTION_COLUMNS):
            self.section_columns = []
        # only these columns are read: masks and metadata stay out of the loader
        dataset = dataset.select_columns(columns + self.section_columns)
        image_feature = dataset.features[image_column]
        if isinstance(image_feature, datasets.Image) and image_feature.decode:
            # decoded here, where the target size is known (JPEG draft decoding)
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self.dataset = dataset
        self.image_processor = image_processor
        self.augmentation = augmentation
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.image_column, self.report_column = image_column, report_column
        self.report_embeds_column = columns[2] if len(columns) > 2 else None

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        batch = self.dataset[list(indices)]
        epoch = self.epoch
        features = []
        for position, index in enumerate(indices):
            rng = np.random.default_rng([self.seed, epoch, int(index)])
            try:
                frame = self.model_frame(batch[self.image_column][position], rng)
            except (OSError, ValueError) as error:  # PIL's undecodable images are OSErrors
                message = f"Sample {index} of the dataset: its `{self.image_column}` is unusable: {error}"
                raise ValueError(message) from error
            feature = {"pixel_values": torch.from_numpy(frame[None]), "report": batch[self.report_column][position]}
            if self.report_embeds_column is not None:
                feature["report_embeds"] = batch[self.report_embeds_column][position]
            for name in self.section_columns:
                feature[name] = batch[name][position]
            features.append(feature)
        return features

    def model_frame(self, image, rng: np.random.Generator) -> np.ndarray:
        """One image as the model's `(height, width)` 8-bit frame: augmented (when set) and placed as the image
        processor places it (resize, padding or crop)."""
        if isinstance(image, dict):
            image = open_encoded_image(image)
        width, height = _image_size(image)
        geometry = self.image_processor.frame_geometry(height, width)
        augmentation_map = IDENTITY if self.augmentation is None else self.augmentation.affine_coefficients(
            width, height, rng
        )
        coefficients = compose_with_frame(augmentation_map, geometry)
        image, coefficients = decode_at_reduced_scale(image, coefficients)
        image = to_gray_uint8(image, self.image_processor)
        image, coefficients = reduce_for_downscaling(image, coefficients)
        frame_size = (int(geometry["frame_width"]), int(geometry["frame_height"]))
        warped = image.transform(frame_size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)
        frame = np.array(warped, dtype=np.uint8)
        blacken_outside_image(frame, geometry, height, width)
        if self.augmentation is not None:
            frame = self.augmentation.photometric_uint8(frame, rng)
        return frame


def open_encoded_image(encoded: dict) -> Image.Image:
    """A `datasets.Image` cell stored undecoded (`{"bytes", "path"}`) opened lazily: only its header is read. An
    image whose EXIF orientation turns it is decoded and turned (`apply_exif_orientation`, the processor's reading
    rule, as `datasets` decodes it)."""
    if encoded.get("bytes") is not None:
        image = Image.open(io.BytesIO(encoded["bytes"]))
    elif encoded.get("path"):
        image = Image.open(encoded["path"])
    else:
        raise ValueError(
            f"`image` must hold `bytes` or a `path`, got {sorted(key for key, v in encoded.items() if v)}."
        )
    if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        image = apply_exif_orientation(image)
    return image


def _image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or an array (height, width[, channels])."""
    if isinstance(image, Image.Image):
        return image.size
    array = np.asarray(image)
    return array.shape[1], array.shape[0]


def shrink_factor(coefficients: tuple[float, ...]) -> float:
    """Source pixels per output pixel of an affine warp, along its less shrunk axis."""
    a, b, _, d, e, _ = coefficients
    return float(min(np.hypot(a, d), np.hypot(b, e)))


def decode_at_reduced_scale(image, coefficients: tuple[float, ...]) -> tuple[Any, tuple[float, ...]]:
    """
    A JPEG not decoded yet is decoded by its DCT at the smallest of 1/2, 1/4 or 1/8 scale that keeps at least one
    source pixel per output pixel (PIL's `draft`); the coefficients follow. Other images are left as they are.
    """
    if not isinstance(image, Image.Image) or image.format != "JPEG" or shrink_factor(coefficients) < 2:
        return image, coefficients
    width, height = image.size
    factor = shrink_factor(coefficients)
    image.draft("L", (int(np.ceil(width / factor)), int(np.ceil(height / factor))))
    scale = round(width / image.size[0])
    return image, tuple(value / scale for value in coefficients)


def to_gray_uint8(image, image_processor) -> Image.Image:
    """An 8-bit gray PIL image as is; any other image through the processor's intensity rescaling (windowing of
    high bit depths, luma of colour) to [0, 1], then to 8 bits."""
    if isinstance(image, Image.Image) and image.mode == "L":
        return image
    intensities = image_processor.process_image(
        image, do_rescale=True, rescale_factor=image_processor.rescale_factor, window=image_processor.window
    )[0]
    return Image.fromarray(np.rint(np.clip(intensities, 0, 1) * 255).astype(np.uint8))


def compose_with_frame(coefficients: tuple[float, ...], geometry: dict[str, float]) -> tuple[float, ...]:
    """
    PIL affine coefficients from the processor's frame to the source image: the frame pixel `(U, V)` shows the point
    `((U - offset_x) / scale_x, (V - offset_y) / scale_y)` of the (augmented) image, which `coefficients` map to the
    source.
    """
    a, b, c, d, e, f = coefficients
    scale_x, scale_y = geometry["scale_x"], geometry["scale_y"]
    offset_x, offset_y = geometry["offset_x"], geometry["offset_y"]
    return (
        a / scale_x,
        b / scale_y,
        c - a * offset_x / scale_x - b * offset_y / scale_y,
        d / scale_x,
        e / scale_y,
        f - d * offset_x / scale_x - e * offset_y / scale_y,
    )


def reduce_for_downscaling(image: Image.Image, coefficients: tuple[float, ...]) -> tuple[Image.Image, tuple]:
    """
    A bilinear warp samples 2x2 source pixels per output pixel, so a warp that shrinks by k >= 2 aliases: the image
    is first box-reduced by the whole factor `floor(k)` (cheap, and it averages every source pixel), and the
    coefficients follow.
    """
    factor = int(shrink_factor(coefficients))
    if factor < 2:
        return image, coefficients
    return image.reduce(factor), tuple(value / factor for value in coefficients)


def blacken_outside_image(frame: np.ndarray, geometry: dict[str, float], height: int, width: int) -> None:
    """Zeroes the frame outside the image's place in it (the processor's black padding), in place."""
    top = max(0, round(geometry["offset_y"]))
    bottom = min(frame.shape[0], round(geometry["offset_y"] + height * geometry["scale_y"]))
    left = max(0, round(geometry["offset_x"]))
    right = min(frame.shape[1], round(geometry["offset_x"] + width * geometry["scale_x"]))
    frame[:top] = 0
    frame[bottom:] = 0
    frame[:, :left] = 0
    frame[:, right:] = 0


def normalize_pixel_values(
    pixel_values: torch.Tensor,
    image_mean: list[float],
    image_std: list[float],
    num_channels: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """
    `uint8` images `(batch_size, 1, height, width)` from [`PretrainingDataset`] as the model's input, where they are
    (the device): scaled to [0, 1], replicated to `num_channels` and normalised with the processor's `image_mean` and
    `image_std`, in `dtype`. Floating-point input is returned unchanged (already processed).
    """
    if pixel_values.is_floating_point():
        return pixel_values
    if pixel_values.dtype != torch.uint8 or pixel_values.dim() != 4 or pixel_values.shape[1] != 1:
        raise ValueError(
            "`pixel_values` from PretrainingDataset must be uint8 of shape (batch_size, 1, height, width), got "
            f"{pixel_values.dtype} of shape {tuple(pixel_values.shape)}."
        )
    mean = torch.as_tensor(image_mean, dtype=torch.float32, device=pixel_values.device).reshape(-1, 1, 1)
    std = torch.as_tensor(image_std, dtype=torch.float32, device=pixel_values.device).reshape(-1, 1, 1)
    intensities = pixel_values.float().div_(255).expand(-1, num_channels, -1, -1)
    return ((intensities - mean) / std).to(dtype)
