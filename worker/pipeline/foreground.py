"""Cut the garment out of a customer's photo before the Fashion-MNIST conversion.

Fashion-MNIST's conversion (``worker.pipeline.preprocess``) assumes a product photo: one
item on a plain background, found by trimming what differs from the border.
A phone photo -- a shirt on a door, trousers on a bed -- has a textured
background that the trim keeps, so the item comes out small and buried in
clutter. Here the background is removed first with OpenCV's GrabCut: a
colour-model graph cut, initialised with "the item is inside this rectangle"
(the frame less a thin margin). No weights, nothing downloaded.

Only photos whose border is *not* plain are cut out (``needs_cutout``): product
photos on a plain background keep the conversion they always had. The border
test and its threshold were tuned on the development photos' validation split
and on shop-style photos made from Fashion-MNIST training images (every one of
those has ≥ 90 % of its border within the trim threshold of the border median;
2 % of the real photos do).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

# Workers run one process per core; GrabCut should not start threads of its own.
cv2.setNumThreads(1)

#: Share of border pixels within the trim threshold of the border median at or
#: above which the background counts as plain (no cut-out).
PLAIN_BORDER_SHARE = 0.85
#: GrabCut runs on a copy with this many pixels on its longer side.
CUTOUT_SIDE = 128
CUTOUT_ITERATIONS = 3
#: The initial rectangle leaves this fraction of each side as sure background.
CUTOUT_MARGIN = 0.04
#: A cut-out keeping less than this share of the frame failed: use the photo as is.
MIN_FOREGROUND_SHARE = 0.02


def border_ring(gray: np.ndarray, width_fraction: float) -> np.ndarray:
    """The pixels of a border ring ``width_fraction`` of the shorter side wide."""
    height, width = gray.shape
    border = max(1, int(round(min(height, width) * width_fraction)))
    return np.concatenate(
        [
            gray[:border].ravel(),
            gray[-border:].ravel(),
            gray[:, :border].ravel(),
            gray[:, -border:].ravel(),
        ]
    )


def needs_cutout(ring: np.ndarray, threshold: float) -> bool:
    """True when the border is not plain: too many pixels far from its median."""
    ring = ring.astype(np.float32)
    plain = np.abs(ring - np.median(ring)) <= threshold
    return float(plain.mean()) < PLAIN_BORDER_SHARE


def foreground_mask(image: Image.Image) -> np.ndarray | None:
    """Boolean mask (image size) of the item, or None when GrabCut finds none."""
    rgb = image.convert("RGB")
    scale = CUTOUT_SIDE / max(rgb.size)
    small_size = (max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale)))
    small = np.asarray(rgb.resize(small_size, Image.Resampling.BILINEAR))[:, :, ::-1].copy()
    height, width = small.shape[:2]
    margin_x, margin_y = max(1, int(width * CUTOUT_MARGIN)), max(1, int(height * CUTOUT_MARGIN))
    rectangle = (margin_x, margin_y, width - 2 * margin_x, height - 2 * margin_y)
    mask = np.zeros((height, width), np.uint8)
    background_model = np.zeros((1, 65), np.float64)
    foreground_model = np.zeros((1, 65), np.float64)
    # GrabCut's colour models are seeded at random; a fixed seed makes the same
    # photo give the same cut-out (and the same label) every time.
    cv2.setRNGSeed(0)
    cv2.grabCut(
        small,
        mask,
        rectangle,
        background_model,
        foreground_model,
        CUTOUT_ITERATIONS,
        cv2.GC_INIT_WITH_RECT,
    )
    foreground = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if foreground.mean() < MIN_FOREGROUND_SHARE:
        return None
    full = Image.fromarray(foreground.astype(np.uint8) * 255).resize(
        rgb.size, Image.Resampling.BILINEAR
    )
    return np.asarray(full) > 127


def cut_out(image: Image.Image, gray: np.ndarray) -> np.ndarray:
    """``gray`` with everything but the item set to white, as on a product photo;
    unchanged when no item is found."""
    mask = foreground_mask(image)
    if mask is None:
        return gray
    result = gray.copy()
    result[~mask] = 255
    return result
