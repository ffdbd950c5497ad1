# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The one chest X-ray augmentation, `XRayAugmentation`, in PIL/torch (no torchvision; no flip by default: reports and
labels name the patient's side). Pre-training draws it per sample (`geometric` + `photometric`, seeded per sample and
epoch); the fine-tuning heads draw it per batch (`augment_batch`), where masks and boxes move with the images.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class XRayAugmentation:
    r"""
    Training augmentations for chest radiographs; every random draw comes from the `rng` passed in, so that
    [`PretrainingDataset`] can give each sample its own seed.

    Geometric part (`affine_coefficients`, warped by `geometric` on a decoded PIL image, or composed by
    [`PretrainingDataset`] with the processor's resize into one warp to the model's size): one affine map combining a
    random resized crop (area fraction in `crop_scale`, aspect ratio in `crop_ratio`), a rotation of at most
    `rotation_degrees` and a translation of at most `translate` of the image side; uncovered borders are black, as
    outside a collimated radiograph. Photometric part (`photometric` on the processor's normalised tensor,
    `photometric_uint8` on an 8-bit image): brightness shift up to `brightness` and contrast factor within
    `1 ± contrast`, in [0, 1] intensity units.

    Batch part (`augment_batch`, on a batch of processed tensors, for the fine-tuning heads): a zoom of at most
    `zoom` about the centre and a shift of at most `translate` of the side, applied to the images and to their masks
    and boxes alike (no rotation, so boxes stay exact), then contrast and brightness within `contrast` and
    `brightness`.

    No horizontal flip by default: reports name the patient's side, and a flip would make "left" wrong.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    rotation_degrees: float = 10.0
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    horizontal_flip: bool = False
    zoom: float = 0.05

    def __post_init__(self):
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"`crop_scale` must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"`crop_ratio` must satisfy 0 < low <= high, got {self.crop_ratio}.")
        for name in ("rotation_degrees", "translate", "brightness", "contrast", "zoom"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")

    def affine_coefficients(self, width: int, height: int, rng: np.random.Generator) -> tuple[float, ...]:
        """
        Draws one random resized crop + rotation + translation (+ optional flip) of a `width` x `height` image as
        PIL's affine coefficients `(a, b, c, d, e, f)`: the output pixel `(u, v)` of an image of the same size
        samples the input at `(a u + b v + c, d u + e v + f)` (pixel edges at integers).
        """
        area_fraction = rng.uniform(*self.crop_scale)
        ratio = math.exp(rng.uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])))
        crop_width = min(math.sqrt(area_fraction * ratio), 1.0) * width
        crop_height = min(math.sqrt(area_fraction / ratio), 1.0) * height
        # crop centre anywhere the crop fits, then the translation on top
        center_x = rng.uniform(crop_width / 2, width - crop_width / 2) + rng.uniform(-1, 1) * self.translate * width
        center_y = (
            rng.uniform(crop_height / 2, height - crop_height / 2) + rng.uniform(-1, 1) * self.translate * height
        )
        angle = math.radians(rng.uniform(-self.rotation_degrees, self.rotation_degrees))
        flip = -1.0 if self.horizontal_flip and rng.uniform() < 0.5 else 1.0

        scale_x, scale_y = flip * crop_width / width, crop_height / height
        cos, sin = math.cos(angle), math.sin(angle)
        a, b = cos * scale_x, -sin * scale_y
        d, e = sin * scale_x, cos * scale_y
        c = center_x - a * width / 2 - b * height / 2
        f = center_y - d * width / 2 - e * height / 2
        return a, b, c, d, e, f

    def geometric(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Random resized crop + rotation + translation (+ optional flip) as one bilinear affine warp, same size."""
        width, height = image.size
        coefficients = self.affine_coefficients(width, height, rng)
        # PIL warps 8-bit and 32-bit images; 16-bit ones are widened first (the processor windows them anyway)
        if image.mode not in ("L", "I", "F"):
            image = image.convert("I" if image.mode.startswith("I;16") else "L")
        return image.transform(
            (width, height), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR
        )

    def photometric(
        self, pixel_values: torch.Tensor, image_mean: list[float], image_std: list[float], rng: np.random.Generator
    ) -> torch.Tensor:
        """Brightness and contrast jitter of one normalised image `(channels, height, width)`, in [0, 1] units."""
        mean = torch.tensor(image_mean, dtype=pixel_values.dtype)[:, None, None]
        std = torch.tensor(image_std, dtype=pixel_values.dtype)[:, None, None]
        intensities = pixel_values * std + mean
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
        brightness = rng.uniform(-self.brightness, self.brightness)
        average = intensities.mean()
        intensities = ((intensities - average) * contrast + average + brightness).clamp(0, 1)
        return (intensities - mean) / std

    def photometric_uint8(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`photometric`'s brightness and contrast jitter of an 8-bit image (any shape), back to 8 bits."""
        intensities = image.astype(np.float32) / 255
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
        brightness = rng.uniform(-self.brightness, self.brightness)
        average = intensities.mean()
        intensities = np.clip((intensities - average) * contrast + average + brightness, 0, 1)
        return np.rint(intensities * 255).astype(np.uint8)

    def random_affine_parameters(self, batch_size: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: zoom `z` and shift `(t_x, t_y)` in fractions of the side. No rotation keeps boxes exact."""
        uniform = lambda low, high: low + (high - low) * torch.rand(batch_size, generator=generator)  # noqa: E731
        zoom = uniform(1 - self.zoom, 1 + self.zoom)
        shift = torch.stack([uniform(-self.translate, self.translate) for _ in range(2)], dim=1)
        return zoom, shift

    def augment_batch(self, pixel_values: torch.Tensor, masks=None, boxes=None, generator=None):
        """
        Zoom and shift (masks and boxes follow), then contrast and brightness jitter, of a batch `(batch, channels,
        height, width)`; `masks` are `(batch, height, width)` labels, `boxes` a list of normalised `(center_x,
        center_y, width, height)` tensors. Returns `(pixel_values, masks, boxes)`.
        """
        batch_size = pixel_values.shape[0]
        zoom, shift = self.random_affine_parameters(batch_size, generator)
        pixel_values = apply_affine(pixel_values, zoom, shift)
        contrast = 1 + (2 * torch.rand(batch_size, 1, 1, 1, generator=generator) - 1) * self.contrast
        brightness = (2 * torch.rand(batch_size, 1, 1, 1, generator=generator) - 1) * self.brightness
        pixel_values = pixel_values * contrast + brightness
        if masks is not None:
            masks = apply_affine(masks[:, None].float(), zoom, shift, mode="nearest")[:, 0].long()
        if boxes is not None:
            boxes = [move_boxes(image_boxes, image_zoom, image_shift) for image_boxes, image_zoom, image_shift in
                     zip(boxes, zoom, shift)]
        return pixel_values, masks, boxes


def apply_affine(images: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor, mode: str = "bilinear"):
    """Zoom about the centre then shift: a point at `u` (in [0, 1]) moves to `(u - 0.5) * zoom + 0.5 + shift`."""
    theta = torch.zeros(images.shape[0], 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = -2 * shift / zoom[:, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="border" if mode == "bilinear" else "zeros",
                         align_corners=False)


def move_boxes(boxes: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Normalised `(center_x, center_y, width, height)` boxes through `apply_affine`'s map, clipped to the image."""
    center = (boxes[:, :2] - 0.5) * zoom + 0.5 + shift
    size = boxes[:, 2:] * zoom
    corners = torch.cat([center - size / 2, center + size / 2], dim=1).clamp(0, 1)
    return torch.cat([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], dim=1)
