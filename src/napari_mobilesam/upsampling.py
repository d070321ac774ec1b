"""Low-resolution mask logits to full-resolution masks, computed only where a mask can be.

The reference post-processing resizes every (256, 256) logit map bilinearly to the padded
1024 frame, crops the padding and resizes again to the image size, then thresholds at 0.
Bilinear interpolation is a convex combination, so an output pixel can be positive only if
one of the low-resolution pixels it mixes is positive. :class:`MaskUpsampler` composes the
two resizes into one 4-tap filter per axis (the same sample positions and weights as
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``) and evaluates it
on the bounding box of the positive low-resolution pixels only. For a small object in a
large image that is a few thousand pixels instead of millions.
"""

from __future__ import annotations

import numpy as np
import torch


def bilinear_taps(
    in_size: int, out_size: int, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (out_size, 2) and weights (out_size, 2) of a 1-D bilinear resize,
    as PyTorch computes them with ``align_corners=False``.

    ``scale`` is the source step per output pixel (default ``in_size / out_size``).
    """
    step = in_size / out_size if scale is None else scale
    src = np.maximum((np.arange(out_size) + 0.5) * step - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0
    return np.stack([i0, i1], axis=1), np.stack([1.0 - w1, w1], axis=1)


def composite_taps(
    low_res: int, model_side: int, cropped: int, out_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (out_size, 4) into the low-res axis of the reference's two
    resizes along one axis: ``low_res -> model_side``, crop to ``cropped``, ``-> out_size``."""
    idx1, w1 = bilinear_taps(low_res, model_side, scale=low_res / model_side)
    if cropped == out_size:
        idx2 = np.arange(out_size)[:, None]
        w2 = np.ones((out_size, 1))
    else:
        idx2, w2 = bilinear_taps(cropped, out_size)
    idx = idx1[idx2].reshape(out_size, -1)
    weights = (w2[:, :, None] * w1[idx2]).reshape(out_size, -1)
    if idx.shape[1] == 2:
        idx = np.concatenate([idx, idx], axis=1)
        weights = np.concatenate([weights, np.zeros_like(weights)], axis=1)
    return idx, weights


class MaskUpsampler:
    """Threshold low-resolution logits at full resolution, cropped to where the mask is.

    Parameters
    ----------
    original_size : (H, W) of the image.
    input_size : (h, w) of the image resized into the model's frame.
    model_side : side of the model's padded square frame (1024).
    low_res : side of the low-resolution logits (256).
    threshold : logit above which a pixel is in the mask (0).
    """

    def __init__(
        self,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        model_side: int = 1024,
        low_res: int = 256,
        threshold: float = 0.0,
    ) -> None:
        self.threshold = threshold
        self.rows = self._axis(low_res, model_side, input_size[0], original_size[0])
        self.cols = self._axis(low_res, model_side, input_size[1], original_size[1])

    @staticmethod
    def _axis(low_res: int, side: int, cropped: int, out: int) -> tuple:
        idx, weights = composite_taps(low_res, side, cropped, out)
        used = weights > 0
        lowest = np.where(used, idx, low_res).min(axis=1)
        highest = np.where(used, idx, -1).max(axis=1)
        return (
            torch.as_tensor(idx),
            torch.as_tensor(weights, dtype=torch.float32),
            lowest,
            highest,
        )

    def __call__(self, logits: torch.Tensor) -> tuple[int, int, np.ndarray]:
        """(256, 256) logits -> (y0, x0, mask) with ``mask`` the (h, w) bool mask inside its
        bounding box at full resolution; an empty mask is ``(0, 0, (0, 0) array)``."""
        positive = logits > self.threshold
        rows = torch.nonzero(positive.any(dim=1)).flatten()
        if len(rows) == 0:
            return 0, 0, np.zeros((0, 0), dtype=bool)
        cols = torch.nonzero(positive.any(dim=0)).flatten()
        y_out = self._reach(self.rows, int(rows[0]), int(rows[-1]))
        x_out = self._reach(self.cols, int(cols[0]), int(cols[-1]))
        values = self._resample(logits, y_out, x_out)
        mask = values > self.threshold
        inside_rows = torch.nonzero(mask.any(dim=1)).flatten()
        if len(inside_rows) == 0:
            return 0, 0, np.zeros((0, 0), dtype=bool)
        inside_cols = torch.nonzero(mask.any(dim=0)).flatten()
        r0, r1 = int(inside_rows[0]), int(inside_rows[-1]) + 1
        c0, c1 = int(inside_cols[0]), int(inside_cols[-1]) + 1
        return y_out.start + r0, x_out.start + c0, mask[r0:r1, c0:c1].numpy()

    @staticmethod
    def _reach(axis: tuple, first: int, last: int) -> slice:
        """Output pixels whose taps touch low-res indices first..last."""
        _, _, lowest, highest = axis
        start = int(np.searchsorted(highest, first, side="left"))
        stop = int(np.searchsorted(lowest, last, side="right"))
        return slice(start, stop)

    def _resample(self, logits: torch.Tensor, y_out: slice, x_out: slice) -> torch.Tensor:
        y_idx, y_w = self.rows[0][y_out], self.rows[1][y_out]
        x_idx, x_w = self.cols[0][x_out], self.cols[1][x_out]
        lr_cols = slice(int(x_idx.min()), int(x_idx.max()) + 1)
        band = logits[:, lr_cols]
        tmp = (band[y_idx] * y_w[:, :, None]).sum(dim=1)  # (h, low-res columns)
        x_local = x_idx - lr_cols.start
        return (tmp[:, x_local] * x_w[None]).sum(dim=2)
