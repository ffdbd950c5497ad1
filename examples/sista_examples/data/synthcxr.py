# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""SynthCXR: a deterministic synthetic chest-radiograph dataset with reports and full ground truth.

SynthCXR exists so that every SISTA capability (pre-training, classification, segmentation,
detection, zero-shot, retrieval, grounding) can be run and measured on a 2-core CPU in
minutes, and so that the two structures SISTA exploits are present by construction:

* **many studies share near-identical reports** (normal studies draw from a small pool of
  templates; studies with the same finding get the same few phrasings) -- the false negatives
  that SIA removes from the contrastive denominator;
* **location words name where the image shows the finding** ("small left apical
  pneumothorax" is drawn at the apex of the patient's left lung) -- what STA aligns.

Radiological convention: images are shown as if facing the patient, so the **patient's left
is on the image's right** (column > width / 2) and "left"/"right" in reports, class names and
the ``findings`` metadata always mean the patient's side.

Usage:

    python examples/generate_synthcxr.py --output_dir data/synthcxr --image_size 128 --num_pretrain 8000 \
        --num_train 1000 --num_validation 250 --num_test 500 --num_proc 2 \
        --plot_examples docs/images/synthcxr_grid.png

    >>> from datasets import load_from_disk
    >>> dataset = load_from_disk("data/synthcxr")  # DatasetDict: pretrain / train / validation / test
"""

import contextlib
import functools
import hashlib
import json
import logging
import math
import shutil
import tempfile
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.ndimage import gaussian_filter

from .metadata import read_dataset_metadata, write_dataset_metadata


logger = logging.getLogger(__name__)

# Multi-label classes. Every lateralised finding has one class per side, so a model that
# ignores *where* a finding is cannot solve the labels; a bilateral finding sets both sides.
# Cardiomegaly (heart width) is the only side-less class. A study with all zeros is normal.
CLASS_NAMES = (
    "cardiomegaly",
    "right_consolidation",
    "left_consolidation",
    "right_nodule",
    "left_nodule",
    "right_effusion",
    "left_effusion",
    "right_pneumothorax",
    "left_pneumothorax",
    "right_atelectasis",
    "left_atelectasis",
)
FINDING_NAMES = ("consolidation", "nodule", "effusion", "pneumothorax", "atelectasis", "cardiomegaly")
SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")
SIZES = ("small", "moderate", "large")

# Words by which a report names each finding, shared with tests and zero-shot prompts. No word
# names two findings (e.g. atelectasis is never called an "opacity"), so label <-> text checks
# are exact.
FINDING_SYNONYMS = {
    "consolidation": ("consolidation", "opacity", "opacities", "airspace disease", "pneumonia"),
    "nodule": ("nodule", "mass"),
    "effusion": ("effusion", "effusions"),
    "pneumothorax": ("pneumothorax",),
    "atelectasis": ("atelectasis",),
    "cardiomegaly": ("cardiomegaly", "enlarged"),
}
SIDE_WORDS = {"right": ("right",), "left": ("left",), "bilateral": ("bilateral", "bibasilar")}
ZONE_WORDS = {
    "upper": ("upper", "apical", "apex"),
    "middle": ("mid", "middle"),
    "lower": ("lower", "base", "bases", "basilar", "bibasilar", "basal"),
}
# A negative sentence of a report contains one of these; positive sentences never do.
NEGATION_WORDS = ("no", "without")

SPLITS = ("pretrain", "train", "validation", "test")
_SPLIT_IDS = {name: split_id for split_id, name in enumerate(SPLITS)}

# Canonical anatomy, in units of the image side (x to the image's right, y down). Per-study
# pose jitter maps pixels into this frame, so every finding is placed and measured in it.
_LUNG_CENTER_DX, _LUNG_CENTER_Y = 0.21, 0.47
_LUNG_LATERAL, _LUNG_MEDIAL, _LUNG_HALF_HEIGHT = 0.17, 0.12, 0.34
_CM_PER_UNIT = 38.0  # the image side spans ~38 cm, so nodule sizes in reports are plausible


def _soft_step(x):
    """0 below -2, 1 above 2, linear in between: an anti-aliased edge at 0 (a cheap sigmoid)."""
    return np.clip(0.5 + 0.25 * x, 0.0, 1.0)


@dataclass
class _Pose:
    """Per-study positioning, scale, contrast and anatomy jitter."""

    shift_x: float
    shift_y: float
    scale: float
    angle: float
    dome_y: float
    lung_scale: float
    gamma: float
    window_low: float
    window_high: float
    noise: float


def _sample_pose(rng: np.random.Generator) -> _Pose:
    return _Pose(
        shift_x=rng.normal(0.0, 0.015),
        shift_y=rng.normal(0.0, 0.015),
        scale=rng.uniform(0.93, 1.04),
        angle=math.radians(rng.normal(0.0, 1.5)),
        dome_y=rng.uniform(0.71, 0.75),
        lung_scale=rng.uniform(0.95, 1.05),
        gamma=rng.uniform(0.8, 1.2),
        window_low=rng.uniform(-0.04, 0.04),
        window_high=rng.uniform(0.92, 1.05),
        noise=rng.uniform(0.01, 0.03),
    )


class _Anatomy:
    """Canonical coordinate grids and the implicit shapes of one study's thorax."""

    def __init__(self, image_size: int, pose: _Pose):
        self.image_size = image_size
        self.pose = pose
        pixel_centers = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
        u, v = np.meshgrid(pixel_centers - pose.shift_x, pixel_centers - pose.shift_y)
        cos, sin = math.cos(pose.angle), math.sin(pose.angle)
        self.x = 0.5 + (cos * u + sin * v) / pose.scale
        self.y = 0.5 + (-sin * u + cos * v) / pose.scale
        # Soft edges about one pixel wide at any resolution.
        self.edge = 0.8 / (image_size * pose.scale)
        self.lung_half_height = _LUNG_HALF_HEIGHT * pose.lung_scale
        self.lung_top = _LUNG_CENTER_Y - self.lung_half_height
        self._lung_radius = {side: self.lung_radius(side, self.x, self.y) for side in SIDES}
        self._lung_mask = {
            side: (self._lung_radius[side] < 1.0) & (self.y < self.dome(side, self.x)) for side in SIDES
        }
        self._lung_soft = {
            side: _soft_step((1.0 - self._lung_radius[side]) * _LUNG_LATERAL / self.edge)
            * _soft_step((self.dome(side, self.x) - self.y) / self.edge)
            for side in SIDES
        }
        self._lung_base = {side: self._find_lung_base(side) for side in SIDES}
        self.effusion_height = {side: 0.0 for side in SIDES}

    @staticmethod
    def side_sign(side: str) -> float:
        # Patient's left is on the image's right.
        return 1.0 if side == "left" else -1.0

    def lung_center_x(self, side: str) -> float:
        return 0.5 + self.side_sign(side) * _LUNG_CENTER_DX

    def dome(self, side: str, x):
        """Height of the hemidiaphragm under ``x`` (the right dome sits a little higher: liver)."""
        top = self.pose.dome_y - (0.015 if side == "right" else 0.0)
        return top + 0.3 * ((x - self.lung_center_x(side) + self.side_sign(side) * 0.01) / 0.2) ** 2

    def lung_radius(self, side: str, x, y):
        """Ellipse radius (1 on the pleural border) of an egg-shaped lung, wider at the base."""
        lateral = self.side_sign(side) * (x - self.lung_center_x(side))
        # float32 constants: np.where would otherwise turn every lung computation into float64.
        half_width = np.where(lateral > 0, np.float32(_LUNG_LATERAL), np.float32(_LUNG_MEDIAL)) * self.pose.lung_scale
        half_width = half_width * (0.85 + 0.25 * (y - self.lung_top) / (2 * self.lung_half_height))
        return np.sqrt((lateral / half_width) ** 2 + ((y - _LUNG_CENTER_Y) / self.lung_half_height) ** 2)

    def lung_field(self, side: str, soft: bool = True) -> np.ndarray:
        """The lung on the pixel grid: soft (edges anti-aliased) or as a boolean mask."""
        return self._lung_soft[side] if soft else self._lung_mask[side]

    def lung_radius_map(self, side: str) -> np.ndarray:
        return self._lung_radius[side]

    def _find_lung_base(self, side: str) -> float:
        # On a fixed grid, not the pixel grid: findings are placed identically at every image size.
        x, y = np.meshgrid(
            self.lung_center_x(side) + np.linspace(-0.2, 0.2, 161), np.linspace(0.5, 1.0, 201), sparse=True
        )
        lung = (self.lung_radius(side, x, y) < 1.0) & (y < self.dome(side, x))
        return float(np.broadcast_to(y, lung.shape)[lung].max())

    def lung_base(self, side: str) -> float:
        """Lowest point of the lung field (the lateral costophrenic angle)."""
        return self._lung_base[side]

    def fluid_level(self, side: str, x):
        """Height of the meniscus of this side's pleural fluid (below the image if none):
        the fluid rises along the lateral chest wall."""
        if self.effusion_height[side] == 0:
            return 2.0
        lateral = self.side_sign(side) * (x - self.lung_center_x(side)) / _LUNG_LATERAL
        return self.lung_base(side) - self.effusion_height[side] - 0.06 * np.clip(lateral + 0.3, 0.0, None) ** 2

    def zone_bounds(self, side: str, zone: str):
        third = (self.lung_base(side) - self.lung_top) / 3
        start = self.lung_top + ZONES.index(zone) * third
        return start, start + third

    def inside_lung(self, side: str, x: float, y: float, margin: float) -> bool:
        radius = float(self.lung_radius(side, np.float32(x), np.float32(y)))
        return radius < 1.0 - margin / _LUNG_MEDIAL and y < float(self.dome(side, np.float32(x))) - margin


# ---------------------------------------------------------------------------------------------
# Findings: what a study has (sampled first, independent of the image size) and how it is drawn
# ---------------------------------------------------------------------------------------------

NORMAL_FRACTION = 0.4
_FINDING_WEIGHTS = {
    "consolidation": 0.25,
    "nodule": 0.15,
    "effusion": 0.2,
    "pneumothorax": 0.1,
    "atelectasis": 0.15,
    "cardiomegaly": 0.15,
}
_CAN_BE_BILATERAL = ("consolidation", "effusion", "atelectasis")
_NODULE_RADIUS = {"small": (0.022, 0.03), "moderate": (0.03, 0.04), "large": (0.05, 0.07)}


def _sample_findings(rng: np.random.Generator) -> list:
    """The findings of one study: name, side, zone and size of each (an empty list is normal)."""
    if rng.random() < NORMAL_FRACTION:
        return []
    num_findings = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])
    weights = np.array(list(_FINDING_WEIGHTS.values()))
    names = rng.choice(list(_FINDING_WEIGHTS), size=num_findings, replace=False, p=weights / weights.sum())
    findings = []
    for name in sorted(names, key=FINDING_NAMES.index):
        finding = {
            "name": str(name),
            "side": "none",
            "zone": "none",
            "size": SIZES[rng.choice(3, p=[0.45, 0.35, 0.2])],
        }
        if name != "cardiomegaly":
            if name in _CAN_BE_BILATERAL and rng.random() < 0.2:
                finding["side"] = "bilateral"
            else:
                finding["side"] = SIDES[rng.integers(2)]
            if name in ("consolidation", "nodule"):
                finding["zone"] = ZONES[rng.integers(3)]
            elif name == "pneumothorax":
                finding["zone"] = "upper"
            elif name == "atelectasis":  # basal, sometimes mid-lung
                finding["zone"] = "lower" if finding["side"] == "bilateral" or rng.random() < 0.7 else "middle"
            else:
                finding["zone"] = "lower"
        if name == "nodule":
            # Sampled here, not when drawing, because the report quotes it.
            radius = rng.uniform(*_NODULE_RADIUS[finding["size"]])
            finding["size_cm"] = round(2 * radius * _CM_PER_UNIT, 1)
        findings.append(finding)
    # A moderate or large effusion fills the lower zone: a lesion there would hide behind the fluid.
    flooded = {f["side"] for f in findings if f["name"] == "effusion" and f["size"] != "small"}
    flooded = set(SIDES) if "bilateral" in flooded else flooded
    for finding in findings:
        hidden = finding["side"] in flooded or (finding["side"] == "bilateral" and flooded)
        if finding["name"] in ("consolidation", "nodule", "atelectasis") and finding["zone"] == "lower" and hidden:
            finding["zone"] = "middle"
    return findings


def _sample_site(rng, anatomy: _Anatomy, side: str, zone: str, margin: float):
    """A point inside the lung zone, clear of the heart *and its mirror image*, so that lesion
    positions have the same distribution on both sides. ``margin`` (distance to the pleura and
    to pleural fluid) is relaxed when a large lesion does not fit."""
    low, high = anatomy.zone_bounds(side, zone)
    sign = anatomy.side_sign(side)
    center_x = anatomy.lung_center_x(side)
    for relaxed_margin in (margin, 0.5 * margin, 0.0):
        for _ in range(100):
            y = rng.uniform(low + 0.3 * relaxed_margin, high - 0.3 * relaxed_margin)
            x = center_x + sign * rng.uniform(-_LUNG_MEDIAL, _LUNG_LATERAL)
            heart_radius = ((abs(x - 0.5) - 0.03) / 0.19) ** 2 + ((y - 0.64) / 0.14) ** 2
            above_fluid = y < anatomy.fluid_level(side, x) - relaxed_margin
            if heart_radius > 1.0 and above_fluid and anatomy.inside_lung(side, x, y, relaxed_margin):
                return x, y
    raise RuntimeError(f"No room for a lesion in the {side} {zone} zone.")


@functools.lru_cache(maxsize=16)
def _gaussian_basis(image_size: int, sigma: float) -> np.ndarray:
    """Gaussian bumps every sigma/2 pixels, ``(image_size, num_bumps)``."""
    centers = np.arange(-2 * sigma, image_size + 2 * sigma, sigma / 2)
    pixels = np.arange(image_size) + 0.5
    distance = (pixels[:, None] - centers[None, :]) / sigma
    # Truncated at 4 sigma: the far tails would be float32 denormals, which make matmul crawl.
    return np.where(np.abs(distance) < 4, np.exp(-0.5 * distance**2), 0.0).astype(np.float32)


def _smooth_noise(rng, image_size: int, sigma: float) -> np.ndarray:
    """Gaussian random field with correlation length ``sigma`` pixels, scaled to unit variance."""
    if sigma < 2.0:
        field = gaussian_filter(rng.standard_normal((image_size, image_size), dtype=np.float32), sigma)
    else:
        # Coarse white noise smoothed onto the pixel grid by one separable product (B Z B^T):
        # the same kind of field as a wide gaussian_filter, at a fraction of the cost.
        basis = _gaussian_basis(image_size, float(sigma))
        field = basis @ rng.standard_normal((basis.shape[1], basis.shape[1]), dtype=np.float32) @ basis.T
    return field / (field.std() + 1e-6)


def _draw_consolidation(layout_rng, texture_rng, anatomy, finding, side):
    """Ill-defined airspace opacity: a cluster of gaussian puffs with a mottled texture."""
    radius = {"small": 0.05, "moderate": 0.07, "large": 0.095}[finding["size"]] * layout_rng.uniform(0.85, 1.15)
    center_x, center_y = _sample_site(layout_rng, anatomy, side, finding["zone"], margin=0.5 * radius)
    density = np.zeros_like(anatomy.x)
    for _ in range(layout_rng.integers(5, 9)):
        puff_x, puff_y = layout_rng.normal([center_x, center_y], 0.6 * radius)
        sigma = radius * layout_rng.uniform(0.35, 0.6)
        density += np.exp(-((anatomy.x - puff_x) ** 2 + (anatomy.y - puff_y) ** 2) / (2 * sigma**2))
    density /= density.max()
    texture = np.clip(0.85 + 0.2 * _smooth_noise(texture_rng, anatomy.image_size, anatomy.image_size / 60), 0.4, 1.2)
    region = _soft_step((density - 0.3) / 0.12) * texture * anatomy.lung_field(side)
    mask = (density > 0.3) & anatomy.lung_field(side, soft=False)
    return region * layout_rng.uniform(0.26, 0.34), mask


def _draw_nodule(layout_rng, texture_rng, anatomy, finding, side):
    """Round, well-defined, slightly lobulated density; "large" is a mass (> 3 cm)."""
    radius = finding["size_cm"] / (2 * _CM_PER_UNIT)
    center_x, center_y = _sample_site(layout_rng, anatomy, side, finding["zone"], margin=radius)
    radius = max(radius, 1.2 / anatomy.image_size)  # at least a pixel in tiny images
    angle = np.arctan2(anatomy.y - center_y, anatomy.x - center_x)
    outline = radius * (1.0 + 0.08 * np.sin(3 * angle + layout_rng.uniform(0, 2 * np.pi)))
    distance = np.sqrt((anatomy.x - center_x) ** 2 + (anatomy.y - center_y) ** 2)
    region = _soft_step((outline - distance) / anatomy.edge)
    mask = (distance < outline) & anatomy.lung_field(side, soft=False)
    return region * layout_rng.uniform(0.3, 0.4), mask


def _draw_effusion(layout_rng, texture_rng, anatomy, finding, side):
    """Dependent fluid filling the costophrenic angle, meniscus rising laterally. Returns the
    fluid fraction: it replaces lung air, so the hemidiaphragm disappears under it."""
    height = layout_rng.uniform(
        *{"small": (0.05, 0.08), "moderate": (0.11, 0.16), "large": (0.2, 0.28)}[finding["size"]]
    )
    anatomy.effusion_height[side] = height
    meniscus = anatomy.fluid_level(side, anatomy.x)
    fluid = _soft_step((anatomy.y - meniscus) / (2 * anatomy.edge)) * (anatomy.lung_radius_map(side) < 1.05)
    mask = (anatomy.y > meniscus) & anatomy.lung_field(side, soft=False)
    return fluid, mask


def _draw_pneumothorax(layout_rng, texture_rng, anatomy, finding, side):
    """Apicolateral air rim without lung markings. Returns the rim and the visceral pleural line."""
    size = finding["size"]
    thickness = layout_rng.uniform(*{"small": (0.1, 0.14), "moderate": (0.16, 0.22), "large": (0.25, 0.32)}[size])
    extent = {"small": 0.3, "moderate": 0.45, "large": 0.65}[size] * 2 * anatomy.lung_half_height
    radius = anatomy.lung_radius_map(side)
    lung = anatomy.lung_field(side, soft=False)
    lateral = anatomy.side_sign(side) * (anatomy.x - anatomy.lung_center_x(side))
    # Air collects at the apex and along the lateral wall, not medially below the apex.
    allowed = (anatomy.y < anatomy.lung_top + extent) & ((lateral > -0.02) | (anatomy.y < anatomy.lung_top + 0.08))
    inner = 1.0 - thickness
    mask = lung & allowed & (radius > inner)
    pleural_line = np.exp(-(((radius - inner) * _LUNG_MEDIAL / (1.2 * anatomy.edge)) ** 2)) * lung * allowed
    rim = gaussian_filter(mask.astype(np.float32), 0.5)
    return (rim, pleural_line), mask


def _draw_atelectasis(layout_rng, texture_rng, anatomy, finding, side):
    """Linear / plate-like band, nearly horizontal, slightly curved."""
    size = finding["size"]
    length = {"small": 0.09, "moderate": 0.13, "large": 0.18}[size] * layout_rng.uniform(0.85, 1.15)
    thickness = {"small": 0.016, "moderate": 0.022, "large": 0.03}[size] * layout_rng.uniform(0.9, 1.1)
    center_x, center_y = _sample_site(layout_rng, anatomy, side, finding["zone"], margin=0.25 * length)
    angle = layout_rng.normal(0.0, 0.2) * anatomy.side_sign(side)
    thickness = max(thickness, 1.5 / anatomy.image_size)  # at least a pixel in tiny images
    along = (anatomy.x - center_x) * math.cos(angle) + (anatomy.y - center_y) * math.sin(angle)
    across = -(anatomy.x - center_x) * math.sin(angle) + (anatomy.y - center_y) * math.cos(angle)
    across = across - layout_rng.uniform(-1.5, 1.5) * along**2
    band = _soft_step((0.5 * thickness - np.abs(across)) / anatomy.edge)
    band *= _soft_step((0.5 * length - np.abs(along)) / (3 * anatomy.edge))
    mask = (np.abs(across) < 0.5 * thickness) & (np.abs(along) < 0.5 * length) & anatomy.lung_field(side, soft=False)
    return band * layout_rng.uniform(0.28, 0.38) * anatomy.lung_field(side), mask


_DRAWERS = {
    "consolidation": _draw_consolidation,
    "nodule": _draw_nodule,
    "effusion": _draw_effusion,
    "pneumothorax": _draw_pneumothorax,
    "atelectasis": _draw_atelectasis,
}
_HEART_HALF_WIDTH = {None: (0.14, 0.165), "small": (0.195, 0.21), "moderate": (0.21, 0.23), "large": (0.23, 0.25)}


def _render(layout_rng, texture_rng, image_size: int, findings: list):
    """Draw one radiograph. Returns the uint8 image and, per finding, a list of (side, mask)."""
    anatomy = _Anatomy(image_size, _sample_pose(layout_rng))
    x, y, edge = anatomy.x, anatomy.y, anatomy.edge
    midline = np.abs(x - 0.5)

    # Soft tissue of the trunk (superellipse) and neck.
    trunk = ((x - 0.5) / 0.47) ** 2
    trunk = trunk * trunk + (((y - 0.62) / 0.6) ** 2) ** 2
    body = np.maximum(_soft_step((1.0 - trunk) / (8 * edge)), _soft_step((0.1 - midline) / edge) * (y < 0.3))
    density = 0.5 * body

    # Cardiothoracic ratio ~0.38-0.44 when normal, ~0.52-0.66 with cardiomegaly.
    cardiomegaly = next((finding["size"] for finding in findings if finding["name"] == "cardiomegaly"), None)
    heart_half_width = layout_rng.uniform(*_HEART_HALF_WIDTH[cardiomegaly])
    heart_x = 0.525 + 0.5 * (heart_half_width - 0.15)
    heart_radius = np.sqrt(((x - heart_x) / heart_half_width) ** 2 + ((y - 0.64) / 0.125) ** 2)
    heart = _soft_step((1.0 - heart_radius) * 0.13 / edge)

    drawn = [None] * len(findings)
    fluid = {side: 0.0 for side in SIDES}
    pneumothorax_rim = 0.0
    # Effusions first, so that other lesions are placed above the fluid.
    for index in sorted(range(len(findings)), key=lambda index: findings[index]["name"] != "effusion"):
        finding = findings[index]
        if finding["name"] == "cardiomegaly":
            drawn[index] = [("none", (heart_radius < 1.0) & (y < anatomy.pose.dome_y + 0.03))]
            continue
        regions = []
        for side in SIDES if finding["side"] == "bilateral" else (finding["side"],):
            region, mask = _DRAWERS[finding["name"]](layout_rng, texture_rng, anatomy, finding, side)
            if finding["name"] == "effusion":
                fluid[side] = np.maximum(fluid[side], region)
            elif finding["name"] == "pneumothorax":
                rim, pleural_line = region
                pneumothorax_rim = np.maximum(pneumothorax_rim, rim)
                density = density + 0.15 * pleural_line
            else:
                density = density + region
            regions.append((side, mask))
        drawn[index] = regions

    # Lung air, displaced by the heart and by pleural fluid; a pneumothorax is extra lucent.
    air = sum(anatomy.lung_field(side) * (1.0 - fluid[side]) for side in SIDES) * (1.0 - 0.85 * heart)
    # Vessel markings radiate from each hilum and fade towards the periphery; none in a pneumothorax.
    hilum_x, hilum_y = midline - 0.1, y - 0.47
    hilum_distance = np.sqrt(hilum_x**2 + hilum_y**2)
    warp = 3.0 * _smooth_noise(texture_rng, image_size, image_size / 40)
    streaks = (0.5 + 0.5 * np.cos(18 * np.arctan2(hilum_y, hilum_x) + warp + 25 * hilum_distance)) ** 2
    streaks *= streaks
    mottle = np.clip(_smooth_noise(texture_rng, image_size, image_size / 150), -2, 2)
    markings = (0.7 * streaks + 0.3 * mottle) * np.exp(-hilum_distance / 0.22) * (1.0 - pneumothorax_rim)
    density += air * (-0.36 + 0.09 * markings - 0.12 * pneumothorax_rim)
    density += 0.08 * np.exp(-((hilum_distance / 0.05) ** 2))  # hilar vessels
    density += 0.08 * heart

    # Mediastinum: aortic knob, spine (with vertebrae), trachea.
    density += 0.06 * _soft_step((0.035 - np.sqrt((x - 0.555) ** 2 + (y - 0.28) ** 2)) / edge)
    vertebrae = 0.7 + 0.3 * np.cos(2 * np.pi * y / 0.055)
    density += 0.1 * vertebrae * _soft_step((0.04 - midline) / edge) * body
    trachea_width = 0.017 * (1.0 - 0.3 * y)
    density -= 0.16 * _soft_step((trachea_width - midline) / edge) * _soft_step((0.33 - y) / (3 * edge)) * body

    # Posterior ribs run horizontally from the spine and curve down laterally; the fainter
    # anterior ribs slope down medially. Ribs stand out against aerated lung. Clavicles cross
    # the apices.
    lateral = midline - 0.04
    in_thorax = (lateral > 0.0) * _soft_step((0.42 - lateral) / (3 * edge)) * _soft_step((0.8 - y) / 0.03) * body
    posterior = np.cos(2 * np.pi * (y - 1.1 * lateral**2) / (0.06 + 0.035 * y))
    anterior = np.cos(2 * np.pi * (y + 0.45 * lateral) / 0.075)
    ribs = 0.07 * np.clip(posterior, 0.0, None) ** 2 + 0.015 * np.clip(anterior, 0.0, None) ** 2
    density += ribs * in_thorax * (y > 0.1) * (0.35 + 0.65 * air)
    clavicle_y = 0.185 - 0.33 * (midline - 0.06) + 0.5 * (midline - 0.2) ** 2
    clavicle = (
        _soft_step((0.014 - np.abs(y - clavicle_y)) / edge) * (midline > 0.04) * _soft_step((0.36 - midline) / edge)
    )
    density += 0.18 * clavicle

    # Gastric bubble under the left hemidiaphragm in most studies.
    if layout_rng.random() < 0.6:
        bubble_x = 0.5 + layout_rng.uniform(0.12, 0.18)
        bubble_y = float(anatomy.dome("left", bubble_x)) + layout_rng.uniform(0.04, 0.06)
        bubble = ((x - bubble_x) / 0.04) ** 2 + ((y - bubble_y) / 0.025) ** 2
        density -= 0.15 * _soft_step((1.0 - bubble) / 0.15)

    # Exposure window, detector blur, quantum noise (fewer, larger pixels average more photons),
    # then the detector's gamma as a lookup table on 4096 levels (a float power costs more than
    # the rest of this block).
    pose = anatomy.pose
    image = (density - pose.window_low) / (pose.window_high - pose.window_low)
    image = gaussian_filter(image, 0.35 * image_size / 224)
    image += pose.noise * math.sqrt(image_size / 224) * texture_rng.standard_normal(image.shape, dtype=np.float32)
    levels = np.clip(image * 4095.0 + 0.5, 0, 4095).astype(np.int16)
    gamma_table = (255.0 * np.linspace(0.0, 1.0, 4096) ** pose.gamma + 0.5).astype(np.uint8)
    return gamma_table[levels], drawn


# ---------------------------------------------------------------------------------------------
# Reports (MIMIC-CXR style). Every sentence is either positive (it describes exactly one
# finding, or no finding at all) or negative (it contains "no"/"without" and names only absent
# findings or the healthy side), so a grounding evaluation can trust the `findings` spans.
# ---------------------------------------------------------------------------------------------

# Normal studies draw from a small, skewed pool: many different studies get the same text.
_NORMAL_FINDINGS = (
    ("The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.", 0.3),
    (
        "Heart size is normal. "
        "The lungs are clear. There is no focal consolidation, pleural effusion, or pneumothorax.",
        0.2,
    ),
    (
        "The cardiomediastinal silhouette is within normal limits. The lungs are clear without focal consolidation. "
        "No pleural effusion or pneumothorax is seen.",
        0.15,
    ),
    (
        "The lungs are well expanded and clear. "
        "Cardiac and mediastinal contours are normal. No pleural effusion or pneumothorax.",
        0.15,
    ),
    ("Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax. No acute osseous abnormality.", 0.1),
    (
        "There is no focal consolidation, pleural effusion, or pneumothorax. "
        "The cardiomediastinal and hilar contours are unremarkable.",
        0.1,
    ),
)
_NORMAL_IMPRESSIONS = (
    ("No acute cardiopulmonary process.", 0.5),
    ("No acute cardiopulmonary abnormality.", 0.25),
    ("No acute intrathoracic process.", 0.15),
    ("Normal chest radiograph.", 0.1),
)
_HEART_NORMAL = (
    "Heart size is normal.",
    "The heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Cardiac and mediastinal contours are normal.",
    "Normal heart size.",
)
_LUNGS_CLEAR = ("The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear.")
_NEGATION_TEMPLATES = ("No {}.", "There is no {}.", "No {} is seen.", "No evidence of {}.")
_NEGATED_PHRASE = {
    "consolidation": "focal consolidation",
    "effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
}

# Location as a modifier ("right lower lobe opacity") and as a place ("in the right lung base").
_LOCATION_MODIFIERS = {
    ("upper", False): ("{side} upper lobe", "{side} upper lung", "{side} apical"),
    ("middle", False): ("{side} mid lung", "{side} mid lung zone"),
    ("lower", False): ("{side} lower lobe", "{side} basilar", "{side} lower lung", "{side} basal"),
    ("upper", True): ("bilateral upper lobe", "bilateral apical", "bilateral upper lung"),
    ("middle", True): ("bilateral mid lung",),
    ("lower", True): ("bibasilar", "bilateral lower lobe", "bilateral basilar"),
}
_LOCATION_PLACES = {
    ("upper", False): ("the {side} upper lobe", "the {side} upper lung zone", "the {side} lung apex"),
    ("middle", False): ("the {side} mid lung", "the {side} mid lung zone", "the {side} middle lung zone"),
    ("lower", False): ("the {side} lower lobe", "the {side} lung base", "the {side} lower lung zone"),
    ("upper", True): ("the bilateral upper lobes", "the bilateral upper lung zones"),
    ("middle", True): ("the bilateral mid lung zones",),
    ("lower", True): ("the bilateral lung bases", "the bilateral lower lobes"),
}


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _location(rng, finding, as_place: bool) -> str:
    table = _LOCATION_PLACES if as_place else _LOCATION_MODIFIERS
    options = table[(finding["zone"], finding["side"] == "bilateral")]
    if finding["side"] == "right" and finding["zone"] == "middle":
        options = options + (("the right middle lobe",) if as_place else ("right middle lobe",))
    return _pick(rng, options).format(side=finding["side"])


def _describe(rng, finding) -> tuple:
    """One FINDINGS sentence and one IMPRESSION sentence for a present finding."""
    name, side, size = finding["name"], finding["side"], finding["size"]
    bilateral = side == "bilateral"
    if finding["zone"] != "none":
        modifier, place = _location(rng, finding, as_place=False), _location(rng, finding, as_place=True)
    if name == "consolidation":
        noun = _pick(
            rng,
            ("opacities", "consolidation", "airspace opacities", "airspace disease")
            if bilateral
            else ("opacity", "consolidation", "airspace opacity", "airspace disease"),
        )
        verb = "are" if noun.endswith("ies") else "is"
        adjective = _pick(
            rng,
            {
                "small": ("patchy ", "subtle ", "mild "),
                "moderate": ("focal ", ""),
                "large": ("extensive ", "dense ", "confluent "),
            }[size],
        )
        finding_text = _pick(
            rng,
            (
                f"There {verb} {adjective}{noun} in {place}.",
                f"{adjective}{modifier} {noun}.",
                f"{adjective}{noun} {verb} seen in {place}.",
                f"{modifier} {noun}, concerning for pneumonia.",
            ),
        )
        impression = _pick(
            rng, (f"{modifier} pneumonia.", f"{modifier} {noun}, concerning for pneumonia.", f"{modifier} {noun}.")
        )
    elif name == "nodule":
        noun, centimetres = ("mass" if size == "large" else "nodule"), f"{finding['size_cm']:.1f}"
        finding_text = _pick(
            rng,
            (
                f"There is a {centimetres} cm {noun} in {place}.",
                f"A {centimetres} cm {modifier} {noun} is noted.",
                f"{modifier} {noun} measuring {centimetres} cm.",
                f"A {'small ' if size == 'small' else ''}{noun} is seen in {place}.",
            ),
        )
        impression = _pick(
            rng, (f"{modifier} {noun}; CT is recommended for further evaluation.", f"{modifier} {noun}.")
        )
    elif name == "effusion":
        amount = _pick(
            rng,
            {"small": ("small", "trace", "tiny"), "moderate": ("moderate", "moderate-sized"), "large": ("large",)}[
                size
            ],
        )
        effusion = "bilateral pleural effusions" if bilateral else f"{side} pleural effusion"
        options = [
            f"There {'are' if bilateral else 'is a'} {amount} {effusion}.",
            f"{amount} {effusion}.",
            f"{'' if bilateral else 'A '}{amount} {effusion} {'are' if bilateral else 'is'} present.",
        ]
        if size == "small":
            angle = "the bilateral costophrenic angles" if bilateral else f"the {side} costophrenic angle"
            options.append(
                f"Blunting of {angle} is compatible with "
                f"{'small bilateral pleural effusions' if bilateral else 'a small pleural effusion'}."
            )
        finding_text = _pick(rng, options)
        impression = f"{amount} {effusion}."
    elif name == "pneumothorax":
        amount = _pick(rng, {"small": ("small", "tiny"), "moderate": ("moderate",), "large": ("large",)}[size])
        apical = "" if size == "large" else _pick(rng, ("apical ", ""))
        finding_text = _pick(
            rng,
            (
                f"There is a {amount} {side} {apical}pneumothorax.",
                f"{amount} {side} {apical}pneumothorax is noted.",
                f"A {amount} {side} {apical}pneumothorax is present.",
            ),
        )
        impression = f"{amount} {side} pneumothorax."
    elif name == "atelectasis":
        adjective = _pick(
            rng,
            {
                "small": ("minimal ", "mild ", "subsegmental "),
                "moderate": ("linear ", ""),
                "large": ("plate-like ", "moderate "),
            }[size],
        )
        finding_text = _pick(
            rng,
            (
                f"{adjective}{modifier} atelectasis.",
                f"There is {adjective}atelectasis in {place}.",
                f"{adjective}atelectasis at {place}.",
            ),
        )
        impression = f"{modifier} atelectasis."
    else:  # cardiomegaly
        degree = {
            "small": ("mild", "mildly"),
            "moderate": ("moderate", "moderately"),
            "large": ("severe", "markedly"),
        }[size]
        finding_text = _pick(
            rng,
            (
                f"{degree[0]} cardiomegaly.",
                f"The cardiac silhouette is {degree[1]} enlarged.",
                f"The heart is {degree[1]} enlarged.",
            ),
        )
        impression = _pick(rng, ("Cardiomegaly.", f"{degree[0]} cardiomegaly."))
    return _sentence(finding_text), _sentence(impression)


def _join_list(rng, items) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} or {items[1]}"
    return ", ".join(items[:-1]) + _pick(rng, (", or ", " or ")) + items[-1]


def _write_report(rng: np.random.Generator, findings: list) -> tuple:
    """Write the report. Returns the text and, per finding, the (start, end) character span of
    its FINDINGS sentence."""
    if not findings:
        weights = np.array([weight for _, weight in _NORMAL_FINDINGS])
        findings_text = _NORMAL_FINDINGS[rng.choice(len(weights), p=weights / weights.sum())][0]
        weights = np.array([weight for _, weight in _NORMAL_IMPRESSIONS])
        impression = _NORMAL_IMPRESSIONS[rng.choice(len(weights), p=weights / weights.sum())][0]
        return f"FINDINGS: {findings_text} IMPRESSION: {impression}", []

    present = {finding["name"] for finding in findings}
    sentences, impressions = [], []  # sentences: (text, index of the finding it describes or None)
    for index, finding in enumerate(findings):
        finding_sentence, impression = _describe(rng, finding)
        sentences.append((finding_sentence, index))
        impressions.append(impression)
        if finding["side"] in SIDES and rng.random() < 0.3:
            # Naming the healthy side: the same words with sides swapped, only order tells them apart.
            other = SIDES[1 - SIDES.index(finding["side"])]
            if finding["name"] in ("effusion", "pneumothorax"):
                sentences.append((_sentence(f"No {other} {_NEGATED_PHRASE[finding['name']]}."), None))
            elif finding["name"] == "consolidation":
                sentences.append((_sentence(f"The {other} lung is clear."), None))
    absent = [_NEGATED_PHRASE[name] for name in ("consolidation", "effusion", "pneumothorax") if name not in present]
    if absent:
        sentences.append((_sentence(_pick(rng, _NEGATION_TEMPLATES).format(_join_list(rng, absent))), None))
    if not present & {"consolidation", "nodule", "atelectasis", "pneumothorax"} and rng.random() < 0.6:
        sentences.append((_pick(rng, _LUNGS_CLEAR), None))
    if "cardiomegaly" not in present and rng.random() < 0.85:
        sentences.append((_pick(rng, _HEART_NORMAL), None))
    if rng.random() < 0.3:
        sentences.append(("The mediastinal and hilar contours are unremarkable.", None))
    if rng.random() < 0.25:
        sentences.append(("No acute osseous abnormality.", None))
    sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    impressions = [impressions[i] for i in rng.permutation(len(impressions))]
    if rng.random() < 0.25:
        impressions.append("No other acute cardiopulmonary process.")

    report, spans = "FINDINGS:", [None] * len(findings)
    for text, index in sentences:
        report += " "
        if index is not None:
            spans[index] = (len(report), len(report) + len(text))
        report += text
    return report + " IMPRESSION: " + " ".join(impressions), spans


# ---------------------------------------------------------------------------------------------
# One study with its ground truth
# ---------------------------------------------------------------------------------------------

_MAX_OBJECTS_PER_STUDY = 8  # at most 3 findings, 2 sides each: object ids are unique in a split


def encode_mask(mask: np.ndarray) -> str:
    """COCO compressed RLE (the pycocotools ``counts`` string) of a boolean ``(height, width)`` mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def decode_mask(rle: str, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode_mask`: a boolean ``(height, width)`` mask."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        # pycocotools 2.0.x calls np.array(..., copy=False) the numpy-1 way; harmless.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": [height, width], "counts": rle.encode("ascii")}).astype(bool)


def object_masks(example: dict) -> np.ndarray:
    """Per-object masks of a decoded SynthCXR example, boolean ``(num_objects, height, width)``."""
    width, height = example["image"].size
    masks = [decode_mask(rle, height, width) for rle in example["objects"]["mask"]]
    return np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)


def _bounding_box(mask: np.ndarray) -> list:
    """COCO ``[x_min, y_min, width, height]`` in pixels, as pycocotools' ``toBbox`` computes it."""
    rows, columns = np.nonzero(mask)
    return [
        float(columns.min()),
        float(rows.min()),
        float(columns.max() - columns.min() + 1),
        float(rows.max() - rows.min() + 1),
    ]


def generate_study(rng: np.random.Generator, image_size: int = 224) -> dict:
    """Generate one study: image, report and ground truth.

    The findings, the report and the placement of everything are drawn from generators
    spawned from ``rng`` independently of ``image_size``, so one seed gives the same study
    (same report, same lesions at the same relative place) at every resolution.

    Args:
        rng (`np.random.Generator`): the study's own generator, e.g.
            ``np.random.default_rng([seed, split_id, index])``.
        image_size (`int`, *optional*, defaults to 224): height and width in pixels (>= 32).

    Returns:
        `dict` with ``image`` (uint8 ``(image_size, image_size)``), ``report`` (str), ``labels``
        (list of 0/1 over `CLASS_NAMES`), ``mask`` (uint8 0/255 union of the lesion masks,
        cardiomegaly excluded), ``objects`` (dict of lists: ``id``, ``bbox`` COCO
        ``[x_min, y_min, width, height]``, ``category`` index into `CLASS_NAMES`, ``area`` in
        pixels, ``mask`` COCO RLE string, ``finding`` index into ``findings``) and ``findings``
        (list of dicts: ``name``, ``side``, ``zone``, ``size``, ``mention`` -- the FINDINGS
        sentence describing it -- and its character span ``mention_start``/``mention_end``).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"`image_size` must be an integer >= 32, got {image_size!r}.")
    image_size = int(image_size)
    findings_rng, layout_rng, texture_rng = rng.spawn(3)
    findings = _sample_findings(findings_rng)
    report, spans = _write_report(findings_rng, findings)
    image, drawn = _render(layout_rng, texture_rng, image_size, findings)

    labels = [0] * len(CLASS_NAMES)
    lesion_mask = np.zeros((image_size, image_size), dtype=bool)
    objects = {"id": [], "bbox": [], "category": [], "area": [], "mask": [], "finding": []}
    for finding_index, (finding, regions) in enumerate(zip(findings, drawn)):
        for side, mask in regions:
            if not mask.any():
                raise RuntimeError(f"Empty mask for {side} {finding['name']} at image_size={image_size}.")
            category = CLASS_NAMES.index(finding["name"] if side == "none" else f"{side}_{finding['name']}")
            labels[category] = 1
            objects["id"].append(len(objects["id"]))
            objects["bbox"].append(_bounding_box(mask))
            objects["category"].append(category)
            objects["area"].append(float(mask.sum()))
            objects["mask"].append(encode_mask(mask))
            objects["finding"].append(finding_index)
            if finding["name"] != "cardiomegaly":
                lesion_mask |= mask
    findings_metadata = [
        {
            "name": finding["name"],
            "side": finding["side"],
            "zone": finding["zone"],
            "size": finding["size"],
            "mention": report[start:end],
            "mention_start": start,
            "mention_end": end,
        }
        for finding, (start, end) in zip(findings, spans)
    ]
    return {
        "image": image,
        "report": report,
        "labels": labels,
        "mask": lesion_mask.astype(np.uint8) * 255,
        "objects": objects,
        "findings": findings_metadata,
    }


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def synthcxr_features():
    """The `datasets.Features` of every SynthCXR split."""
    from datasets import ClassLabel, Features, Image, Sequence, Value

    return Features(
        {
            "study_id": Value("string"),
            "image": Image(mode="L"),
            "report": Value("string"),
            "labels": Sequence(Value("int64"), length=len(CLASS_NAMES)),
            "mask": Image(mode="L"),
            # Hugging Face object-detection convention (dict of lists), COCO boxes in pixels.
            "objects": {
                "id": Sequence(Value("int64")),
                "bbox": Sequence(Sequence(Value("float32"), length=4)),
                "category": Sequence(ClassLabel(names=list(CLASS_NAMES))),
                "area": Sequence(Value("float32")),
                "mask": Sequence(Value("string")),
                "finding": Sequence(Value("int64")),
            },
            "findings": [
                {
                    "name": Value("string"),
                    "side": Value("string"),
                    "zone": Value("string"),
                    "size": Value("string"),
                    "mention": Value("string"),
                    "mention_start": Value("int64"),
                    "mention_end": Value("int64"),
                }
            ],
        }
    )


@functools.lru_cache(maxsize=None)
def _threadpool_controller():
    # Finding the loaded BLAS libraries reads /proc maps (~3 ms); `datasets` calls the generator once per
    # shard of `indices`, i.e. once per study, so the controller is built once per process.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _generate_examples(indices, split: str, seed: int, image_size: int):
    # The small matrix products of the drawing gain nothing from BLAS threads, and threads of
    # parallel workers fight over the cores (4x slower on 2 cores).
    with _threadpool_controller().limit(limits=1, user_api="blas"):
        for index in indices:
            # One generator per study: the content depends on (seed, split, index) only, never
            # on the number of processes or on what was generated before.
            study = generate_study(np.random.default_rng([seed, _SPLIT_IDS[split], index]), image_size)
            study["objects"]["id"] = [index * _MAX_OBJECTS_PER_STUDY + number for number in study["objects"]["id"]]
            yield {"study_id": f"{split}-{seed}-{index:07d}", **study}


def _source_hash() -> str:
    # Part of the cache fingerprint: editing the generator invalidates cached splits.
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _check_count(name: str, value, minimum: int = 0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def generate_synthcxr(
    num_pretrain: int = 10000,
    num_train: int = 2000,
    num_validation: int = 500,
    num_test: int = 1000,
    image_size: int = 224,
    seed: int = 0,
    num_proc: Optional[int] = None,
    cache_dir: Optional[str] = None,
):
    """Generate SynthCXR as a `datasets.DatasetDict`.

    Splits ``pretrain`` (image-report pre-training), ``train``, ``validation`` and ``test``
    (downstream tasks) share one schema (see `synthcxr_features`); a split of size 0 is left out.
    Splits are disjoint: each study is drawn from ``np.random.default_rng([seed, split_id,
    index])`` and named ``"{split}-{seed}-{index:07d}"``. The output is byte-identical for any
    ``num_proc``.

    Args:
        num_pretrain, num_train, num_validation, num_test (`int`): number of studies per split.
        image_size (`int`, *optional*, defaults to 224): image height and width (>= 32).
        seed (`int`, *optional*, defaults to 0): dataset seed (>= 0).
        num_proc (`int`, *optional*): worker processes for generation.
        cache_dir (`str`, *optional*): `datasets` cache directory; a split generated before with
            the same arguments and generator source is loaded from it.

    Returns:
        `datasets.DatasetDict`

    Example:

    >>> dataset = generate_synthcxr(num_pretrain=64, num_train=32, num_validation=16, num_test=16, image_size=64)
    >>> dataset["train"][0]["report"]  # doctest: +SKIP
    'FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal. IMPRESSION: ...'
    """
    from datasets import Dataset, DatasetDict, NamedSplit

    sizes = {"pretrain": num_pretrain, "train": num_train, "validation": num_validation, "test": num_test}
    for split, size in sizes.items():
        _check_count(f"num_{split}", size)
    _check_count("image_size", image_size, minimum=32)
    _check_count("seed", seed)
    if num_proc is not None:
        _check_count("num_proc", num_proc, minimum=1)
    if not any(sizes.values()):
        raise ValueError(f"At least one split must be non-empty, got sizes {sizes}.")

    splits = {}
    for split, size in sizes.items():
        if size == 0:
            continue
        logger.info(f"Generating SynthCXR {split}: {size} studies at {image_size}x{image_size} px (seed {seed}).")
        splits[split] = Dataset.from_generator(
            _generate_examples,
            features=synthcxr_features(),
            gen_kwargs={
                "indices": list(range(size)),
                "split": split,
                "seed": int(seed),
                "image_size": int(image_size),
            },
            num_proc=num_proc if num_proc and num_proc > 1 and size > 1 else None,
            split=NamedSplit(split),
            cache_dir=cache_dir,
            fingerprint=f"synthcxr-{_source_hash()}-{split}-{seed}-{image_size}-{size}",
        )
    return DatasetDict(splits)


def save_synthcxr(dataset, output_dir: str, overwrite: bool = False, generation: Optional[dict] = None):
    """Write a SynthCXR `DatasetDict` with `save_to_disk` (readable with `datasets.load_from_disk`).

    An existing ``output_dir`` is replaced only with ``overwrite=True``; the new copy is
    written beside it first, so a failed write leaves the old one intact. ``generation`` (the
    `generate_synthcxr` keyword arguments) is written beside it as `sista_dataset.json`, so that a later run
    can tell which SynthCXR the folder holds (see `synthcxr_metadata`).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} already exists; "
            "pass overwrite=True (--overwrite_output_dir) to replace it."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        dataset.save_to_disk(str(staging))
        if generation is not None:
            write_dataset_metadata(staging, synthcxr_metadata(generation))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info(f"Saved SynthCXR to {output_dir}.")


DEFAULT_SYNTHCXR_PATH = "data/synthcxr"
RUN_ARGUMENTS_FILE = "run_arguments.json"


@dataclass(kw_only=True)
class SynthCXRGenerationArguments:
    """
    The SynthCXR that the training and evaluation scripts generate when their dataset folder does not exist; one set
    of sizes for every script, so that the folder holds the same dataset whichever script created it. Keyword-only,
    so that the scripts' argument dataclasses can extend it with fields of their own.

    A missing dataset folder becomes SynthCXR only with `generate_synthcxr=True` or at `DEFAULT_SYNTHCXR_PATH` (see
    `should_generate_synthcxr`): a mistyped path is an error, never synthetic data.
    """

    generate_synthcxr: bool = field(
        default=False,
        metadata={"help": "Generate SynthCXR at the dataset path when that folder does not exist (without this flag "
                          f"only {DEFAULT_SYNTHCXR_PATH} is generated; any other missing path is an error)."},
    )
    synthcxr_num_pretrain: int = field(default=4000, metadata={"help": "SynthCXR pretrain studies, if generated."})
    synthcxr_num_train: int = field(default=1000, metadata={"help": "SynthCXR labelled train studies, if generated."})
    synthcxr_num_validation: int = field(default=500, metadata={"help": "SynthCXR validation studies, if generated."})
    synthcxr_num_test: int = field(default=500, metadata={"help": "SynthCXR test studies, if generated."})
    synthcxr_image_size: Optional[int] = field(
        default=None, metadata={"help": "Image side of a generated SynthCXR (default: the model's input size)."}
    )
    synthcxr_seed: int = field(default=0, metadata={"help": "Seed of a generated SynthCXR."})

    def generation_kwargs(self, image_size: int, splits=SPLITS) -> dict:
        """`generate_synthcxr` keyword arguments; `image_size` is the model's, used unless `synthcxr_image_size`."""
        sizes = {f"num_{split}": getattr(self, f"synthcxr_num_{split}") if split in splits else 0 for split in SPLITS}
        return {**sizes, "image_size": self.synthcxr_image_size or image_size, "seed": self.synthcxr_seed}


def synthcxr_metadata(generation: dict) -> dict:
    """The `sista_dataset.json` of a saved SynthCXR: its class names and the `generate_synthcxr` arguments."""
    return {"dataset": "synthcxr", "class_names": list(CLASS_NAMES), "generation": dict(generation)}


def is_default_synthcxr_path(path) -> bool:
    """Whether `path` is `DEFAULT_SYNTHCXR_PATH` (relative to the working directory, as the scripts' default is)."""
    return Path(path).resolve() == Path(DEFAULT_SYNTHCXR_PATH).resolve()


def holds_synthcxr(path) -> Optional[bool]:
    """`True`/`False` when the folder's `sista_dataset.json` names its dataset, `None` when it says nothing."""
    try:
        metadata = read_dataset_metadata(path)
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or "dataset" not in metadata:
        return None
    return metadata["dataset"] == "synthcxr"


def training_data_of(model_dir) -> Optional[dict]:
    """The `data` arguments that `examples/pretrain.py` recorded in `run_arguments.json` beside a model, if any."""
    path = Path(model_dir) / RUN_ARGUMENTS_FILE if model_dir else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return data if isinstance(data, dict) and "dataset_path" in data else None


def model_trained_on_synthcxr(model_dir) -> Optional[bool]:
    """
    Whether the model in `model_dir` was pre-trained on SynthCXR, from its `run_arguments.json`: `True` when it
    asked for generation or read the default SynthCXR folder or a folder whose metadata says SynthCXR, `False` for
    other data, `None` when the folder records no training data (a model from elsewhere).
    """
    data = training_data_of(model_dir)
    if data is None:
        return None
    dataset_path = data["dataset_path"]
    return bool(data.get("generate_synthcxr")) or is_default_synthcxr_path(dataset_path) or bool(
        holds_synthcxr(dataset_path)
    )


def should_generate_synthcxr(path, generation: SynthCXRGenerationArguments, argument: str, model_dir=None) -> bool:
    """
    Whether SynthCXR is to be generated for the dataset folder `path` given as `argument` (e.g. `"--dataset_path"`).

    `False` when the folder exists. When it does not: `True` with `generation.generate_synthcxr`, or at
    `DEFAULT_SYNTHCXR_PATH` unless `model_dir` holds a model trained on other (or unrecorded) data, which would then
    be scored or fine-tuned on synthetic data without anybody asking; otherwise a `FileNotFoundError` naming
    `argument`, so that a mistyped path never silently becomes synthetic data.
    """
    path = Path(path)
    if path.exists():
        return False
    if generation.generate_synthcxr:
        return True
    hint = (
        f"pass the folder of a dataset saved with save_to_disk (examples/prepare_datasets.py, "
        f"examples/generate_synthcxr.py), or add --generate_synthcxr to generate SynthCXR at {path}"
    )
    if not is_default_synthcxr_path(path):
        raise FileNotFoundError(f"{argument} {path} does not exist: {hint}.")
    trained_on_synthcxr = model_trained_on_synthcxr(model_dir) if model_dir is not None else True
    if not trained_on_synthcxr:
        trained_on = (training_data_of(model_dir) or {}).get("dataset_path")
        origin = (
            f"was pre-trained on {trained_on}" if trained_on else f"records no training data ({RUN_ARGUMENTS_FILE})"
        )
        raise FileNotFoundError(
            f"{argument} is the default {path}, which does not exist, and the model {model_dir} {origin}: SynthCXR is "
            f"not generated for it unless asked; {hint}."
        )
    return True


def _generation_differences(recorded: dict, requested: dict) -> dict:
    return {
        name: (recorded[name], value)
        for name, value in requested.items()
        if name in recorded and recorded[name] != value
    }


def check_saved_synthcxr(path, generation: SynthCXRGenerationArguments, generate_kwargs: dict, argument: str):
    """
    Compare a SynthCXR folder's recorded generation arguments (`sista_dataset.json`) with the requested ones: a
    `ValueError` when `--generate_synthcxr` asked for other ones (or the folder holds another dataset), a warning
    when the folder is merely read; a folder without a record (written before SynthCXR recorded them) is named in a
    warning when generation was asked for.
    """
    metadata = read_dataset_metadata(path) or {}
    if metadata.get("dataset") not in (None, "synthcxr"):
        if generation.generate_synthcxr:
            raise ValueError(
                f"--generate_synthcxr was given but {argument} {path} already holds the dataset "
                f"{metadata['dataset']!r}: give a new folder for SynthCXR, or drop --generate_synthcxr to use it."
            )
        return
    recorded = metadata.get("generation")
    if recorded is None:
        if generation.generate_synthcxr:
            logger.warning(
                f"{argument} {path} exists and records no SynthCXR generation arguments: it is used as it is, "
                f"whatever the --synthcxr_* arguments say."
            )
        return
    differences = _generation_differences(recorded, generate_kwargs)
    if not differences:
        return
    described = ", ".join(f"{name}={old} (asked: {new})" for name, (old, new) in differences.items())
    if generation.generate_synthcxr:
        raise ValueError(
            f"{argument} {path} holds SynthCXR generated with {described}: remove the folder to generate it again, "
            "give another path, or pass the --synthcxr_* arguments it was generated with."
        )
    logger.warning(f"{argument} {path} holds SynthCXR generated with {described}; it is used as it is.")


def load_or_generate_synthcxr(path, generation: SynthCXRGenerationArguments, image_size: int, training_args=None,
                              num_proc: Optional[int] = None, argument: str = "--dataset_path", model_dir=None):
    """
    `datasets.load_from_disk(path)`. When `path` does not exist and `should_generate_synthcxr` allows it (explicit
    `--generate_synthcxr`, or the default folder), SynthCXR is first generated with `generation`'s sizes and saved
    there with its generation arguments, by the main process while the others wait (`training_args` is the script's
    `TrainingArguments`; without it, one process is assumed). A missing path otherwise raises a `FileNotFoundError`
    naming `argument`; an existing SynthCXR generated with other arguments is named (see `check_saved_synthcxr`).
    """
    from datasets import load_from_disk

    path = Path(path)
    generate_kwargs = generation.generation_kwargs(image_size)
    # decided by every process before the main one writes anything, so that all of them agree
    generate = should_generate_synthcxr(path, generation, argument, model_dir)
    main_first = (training_args.main_process_first(desc="SynthCXR generation") if training_args is not None
                  else contextlib.nullcontext())
    with main_first:
        if generate and not path.exists() and (training_args is None or training_args.process_index == 0):
            sizes = ", ".join(f"{name}={value}" for name, value in generate_kwargs.items())
            logger.warning(f"{argument} {path} does not exist: generating SynthCXR there ({sizes}); later runs use it.")
            dataset = generate_synthcxr(**generate_kwargs, num_proc=num_proc)
            save_synthcxr(dataset, str(path), generation=generate_kwargs)
    if not generate:
        check_saved_synthcxr(path, generation, generate_kwargs, argument)
    return load_from_disk(str(path))


def load_or_generate_dataset(path, generation: SynthCXRGenerationArguments, image_size: int, training_args=None,
                             num_proc: Optional[int] = None, argument: str = "--dataset_path", model_dir=None,
                             single_split: Optional[str] = None):
    """
    The one loader of a script's dataset: `load_or_generate_synthcxr`, as a `DatasetDict`. A folder holding a single
    `Dataset` becomes the split `single_split`; without one it is a `ValueError` naming `argument`.
    """
    from datasets import DatasetDict

    dataset = load_or_generate_synthcxr(path, generation, image_size, training_args, num_proc, argument, model_dir)
    if isinstance(dataset, DatasetDict):
        return dataset
    if single_split is None:
        raise ValueError(
            f"{argument} {path} holds a single Dataset; this script needs a DatasetDict with named splits (save one "
            "with `DatasetDict({...}).save_to_disk`)."
        )
    return DatasetDict({single_split: dataset})


# ---------------------------------------------------------------------------------------------
# Visual check
# ---------------------------------------------------------------------------------------------


def plot_examples(dataset, output_path: str, num_examples: int = 8, num_columns: int = 4):
    """Save a PNG grid of studies with lesion outlines, labelled boxes and wrapped reports.

    The first study showing each finding is picked, then one normal study, then more abnormal
    ones, so every finding type appears in the grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches

    _check_count("num_examples", num_examples, minimum=1)
    _check_count("num_columns", num_columns, minimum=1)
    findings_column = dataset["findings"]
    chosen, seen = [], set()
    for index, findings in enumerate(findings_column):
        names = {finding["name"] for finding in findings} - seen
        if names and len(chosen) < num_examples - 1:
            chosen.append(index)
            seen |= names
    normal = [index for index, findings in enumerate(findings_column) if not findings][:1]
    others = [index for index, findings in enumerate(findings_column) if findings and index not in chosen]
    chosen = sorted((chosen + normal + others)[:num_examples])

    num_rows = math.ceil(len(chosen) / num_columns)
    figure, axes = plt.subplots(num_rows, num_columns, figsize=(4.2 * num_columns, 5.8 * num_rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, chosen):
        example = dataset[index]
        axis.imshow(np.asarray(example["image"]), cmap="gray", vmin=0, vmax=255)
        for mask, box, category in zip(
            object_masks(example), example["objects"]["bbox"], example["objects"]["category"]
        ):
            color = colors(category % 10)
            axis.contour(mask, levels=[0.5], colors=[color], linewidths=1.0)
            axis.add_patch(
                patches.Rectangle(box[:2], box[2], box[3], fill=False, edgecolor=color, linewidth=1.0, linestyle="--")
            )
            axis.text(box[0], box[1] - 1, CLASS_NAMES[category], color=color, fontsize=7, va="bottom")
        axis.set_title(example["study_id"], fontsize=8)
        report = "\n".join(textwrap.wrap(example["report"], 62))
        axis.text(0.0, -0.02, report, transform=axis.transAxes, fontsize=6.5, va="top", family="monospace")
    figure.tight_layout()
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    logger.info(f"Saved example grid to {output_path}.")
