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
import torch.nn.functional as F

from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE, MODEL_SIDE

#: Above this fraction of the image, a mask's crop is computed with PyTorch's interpolation
#: of the whole logit map instead of the per-crop gather.
LARGE_CROP = 0.1


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
    model_side : side of the model's padded square frame (:data:`MODEL_SIDE`).
    low_res : side of the low-resolution logits (:data:`LOW_RES_SIDE`).
    threshold : logit above which a pixel is in the mask (0).
    """

    def __init__(
        self,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        model_side: int = MODEL_SIDE,
        low_res: int = LOW_RES_SIDE,
        threshold: float = 0.0,
    ) -> None:
        self.threshold = threshold
        self.original_size = original_size
        self.input_size = input_size
        self.model_side = model_side
        self.low_res = low_res
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

    def full(self, logits: torch.Tensor) -> torch.Tensor:
        """The reference post-processing: (B, C, 256, 256) -> (B, C, H, W) logits.

        Bilinear to the padded model frame, crop to ``input_size``, bilinear to
        ``original_size``; only the low-res rows and columns that reach the unpadded area
        are interpolated, and the second resize is skipped when it is the identity.
        """
        h, w = self.input_size
        factor = self.model_side // self.low_res
        rows = min(self.low_res, -(-h // factor) + 1)
        cols = min(self.low_res, -(-w // factor) + 1)
        up = F.interpolate(
            logits[..., :rows, :cols], scale_factor=factor, mode="bilinear", align_corners=False
        )[..., :h, :w]
        if (h, w) != self.original_size:
            up = F.interpolate(up, self.original_size, mode="bilinear", align_corners=False)
        return up

    def masks(self, logits: torch.Tensor) -> np.ndarray:
        """(N, 256, 256) logits -> (N, H, W) bool masks, each computed on its crop, or all
        in one interpolation when every one of them covers most of the image."""
        h, w = self.original_size
        crops = [self._crop_of(one) for one in logits]
        if crops and all(c is not None and self._is_large(*c) for c in crops):
            return (self.full(logits[None])[0] > self.threshold).numpy()
        masks = np.zeros((len(logits), h, w), dtype=bool)
        for mask, one in zip(masks, logits, strict=True):
            y0, x0, crop = self(one)
            mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return masks

    def _crop_of(self, logits: torch.Tensor) -> tuple[slice, slice] | None:
        """Output rows and columns where the mask can be positive; None if it is empty."""
        positive = logits > self.threshold
        rows = torch.nonzero(positive.any(dim=1)).flatten()
        if len(rows) == 0:
            return None
        cols = torch.nonzero(positive.any(dim=0)).flatten()
        y_out = self._reach(self.rows, int(rows[0]), int(rows[-1]))
        x_out = self._reach(self.cols, int(cols[0]), int(cols[-1]))
        if y_out.stop <= y_out.start or x_out.stop <= x_out.start:
            return None  # positive only in the padding of the model's frame
        return y_out, x_out

    def _is_large(self, y_out: slice, x_out: slice) -> bool:
        crop_pixels = (y_out.stop - y_out.start) * (x_out.stop - x_out.start)
        return crop_pixels > LARGE_CROP * self.original_size[0] * self.original_size[1]

    def __call__(self, logits: torch.Tensor) -> tuple[int, int, np.ndarray]:
        """(256, 256) logits -> (y0, x0, mask): ``mask`` is the (h, w) bool crop at full
        resolution, starting at row y0 and column x0, outside which the mask is empty (its
        bounding box, give or take the reach of one low-res pixel); an empty mask is
        ``(0, 0, (0, 0) array)``."""
        crop = self._crop_of(logits)
        if crop is None:
            return 0, 0, np.zeros((0, 0), dtype=bool)
        y_out, x_out = crop
        if self._is_large(y_out, x_out):
            # PyTorch's interpolation kernel beats the gather on most of the image.
            values = self.full(logits[None, None])[0, 0, y_out, x_out]
        else:
            values = self._resample(logits, y_out, x_out)
        return y_out.start, x_out.start, (values > self.threshold).numpy()

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
