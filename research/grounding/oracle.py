# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The pointing game's ceiling at a model's patch grid: an oracle whose word map is the finding's own mask pooled to
the grid. It is scored by the same rule as a model's map (bilinear upsampling to the mask's frame, first peak within
a relative tolerance of the maximum, a flat map is a miss), so a model can at best match it; lesions smaller than a
patch, or lying between patch centres, are missed by the oracle too.
"""

import numpy as np
import torch
import torch.nn.functional as F


PEAK_RELATIVE_TOLERANCE = 1e-5


def pool_mask_to_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The fraction of each grid cell that `mask` covers, `(rows, columns)` (area pooling)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be a 2-D (height, width) array, got shape {mask.shape}.")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"`grid` must be (rows, columns) with both >= 1, got {grid}.")
    return F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], tuple(grid))[0, 0].numpy()


def upsample_grid_map(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A `(rows, columns)` map brought to `size` pixels, bilinear with `align_corners=False` (patch centres)."""
    tensor = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def peak_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the first pixel within `PEAK_RELATIVE_TOLERANCE` of the heatmap's maximum lies in `mask`; a flat
    heatmap points nowhere and misses."""
    heatmap, mask = np.asarray(heatmap), np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"`heatmap` {heatmap.shape} and `mask` {mask.shape} must have one shape.")
    maximum = float(heatmap.max())
    near_maximum = heatmap >= maximum - PEAK_RELATIVE_TOLERANCE * abs(maximum)
    if near_maximum.all():
        return False
    return bool(mask.flat[int(np.argmax(near_maximum))])


def oracle_pointing_hit(mask: np.ndarray, grid: tuple[int, int]) -> bool:
    """The oracle's hit on one finding: its mask pooled to `grid`, upsampled back, peak inside the mask."""
    mask = np.asarray(mask, dtype=bool)
    return peak_in_mask(upsample_grid_map(pool_mask_to_grid(mask, grid), mask.shape), mask)
