"""Pixel work of the two outpainting scripts: how far to extend each side, and Outpainting
mk2's "matched noise", the start picture for the new area.

Matched noise (after g-diffuser, as A1111's Outpainting mk2 makes it) is noise whose spectrum
follows the known part of the picture and whose colours follow its histogram, so the model
starts from something with the picture's texture and palette rather than from black. It is
deterministic (a fixed generator seed): only the job's seed varies the result.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and Pillow load when a picture is filled, not when the registry starts
    import numpy as np
    from PIL import Image

DIRECTIONS = ("left", "right", "up", "down")


def expansion(width: int, height: int, pixels: int, directions: Collection[str]) -> tuple[int, int, int, int]:
    """(left, right, up, down) pixels to add. As in A1111, the grown size is rounded up to a
    multiple of 64 and the rounding shared between the chosen sides (left and up take their
    proportional share, right and down the rest), so the picture stays a size the model takes."""
    left, right, up, down = (pixels if d in directions else 0 for d in DIRECTIONS)
    target_w = math.ceil((width + left + right) / 64) * 64
    target_h = math.ceil((height + up + down) / 64) * 64
    if left:
        left = left * (target_w - width) // (left + right)
    if right:
        right = target_w - width - left
    if up:
        up = up * (target_h - height) // (up + down)
    if down:
        down = target_h - height - up
    return left, right, up, down


def _fft(data: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D FFT of each channel with the zero frequency centred (shifted before
    and after, as the original routine does)."""
    import numpy as np

    return np.fft.ifftshift(np.fft.fft2(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _ifft(data: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.fft.ifftshift(np.fft.ifft2(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _falloff_window(rows: int, cols: int) -> np.ndarray:
    """1 / ((u^2 + 1)(v^2 + 1)) over frequencies u, v in [-1, 1) scaled to the aspect ratio:
    the low-pass shape the starting noise is given before it takes the picture's spectrum."""
    import numpy as np

    short = min(rows, cols)
    u = (np.arange(rows) / rows * 2.0 - 1.0) * (rows / short)
    v = (np.arange(cols) / cols * 2.0 - 1.0) * (cols / short)
    return 1.0 / np.outer(u**2 + 1.0, v**2 + 1.0)


def match_histograms(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map each column (channel) of `values` (N x C) so its distribution matches that column of
    `reference` (M x C): each distinct value goes to the reference value at the same quantile."""
    import numpy as np

    out = np.empty_like(values, dtype=np.float64)
    for c in range(values.shape[1]):
        levels, where, counts = np.unique(values[:, c], return_inverse=True, return_counts=True)
        ref_levels, ref_counts = np.unique(reference[:, c], return_counts=True)
        quantiles = np.cumsum(counts) / values.shape[0]
        ref_quantiles = np.cumsum(ref_counts) / reference.shape[0]
        out[:, c] = np.interp(quantiles, ref_quantiles, ref_levels)[where.reshape(-1)]
    return out


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float = 1.0, color_variation: float = 0.05) -> np.ndarray:
    """`image` (H x W x 3, values 0-1) with its masked part (`mask` H x W, 1 = new) replaced by
    matched noise; unmasked pixels are returned unchanged. `noise_q` is the fall-off exponent
    (lower keeps more of the picture's fine detail), `color_variation` how colourful the
    starting noise is (0 grey, 1 independent channels)."""
    import numpy as np

    image = image.astype(np.float64)
    weight = mask.astype(np.float64)[..., None]
    rows, cols, channels = image.shape

    # The known part, normalised, with the hole filled by the average colour: its spectrum is
    # what the noise is shaped to.
    known = image * (1.0 - weight)
    peak = known.max()
    if peak > 0:
        known = known / peak
    known = known + image.mean() * weight
    spectrum = _fft(known)
    magnitude = np.abs(spectrum)
    phase = np.divide(spectrum, magnitude, out=np.ones_like(spectrum), where=magnitude > 0)

    rng = np.random.default_rng(0)
    noise = rng.random((rows, cols, channels))
    grey = noise.mean(axis=2, keepdims=True)
    noise = noise * color_variation + (1.0 - color_variation) * grey
    noise = np.real(_ifft(_fft(noise) * _falloff_window(rows, cols)[..., None]))
    shaped = np.abs(_fft(noise)) ** 2 * magnitude**noise_q * phase
    result = np.real(_ifft(shaped))
    result -= result.min()
    top = result.max()
    if top > 0:
        result /= top

    new = mask > 1e-6
    reference = mask < 1e-3
    if new.any() and reference.any():
        result[new] = match_histograms(result[new], image[reference])
    return np.clip(image * (1.0 - weight) + result * weight, 0.0, 1.0)


def noised_picture(picture: "Image.Image", mask: "Image.Image", noise_q: float, color_variation: float) -> "Image.Image":
    """`picture` with the white part of `mask` filled with matched noise (8-bit, rounded, so the
    unmasked pixels come back exactly)."""
    import numpy as np
    from PIL import Image

    array = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    weight = np.asarray(mask.convert("L"), dtype=np.float64) / 255.0
    filled = matched_noise(array, weight, noise_q, color_variation)
    return Image.fromarray(np.rint(filled * 255.0).astype(np.uint8), "RGB")
