"""MaskUpsampler gives the reference's full-resolution masks, computed on a crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_mobilesam.imaging.model_frame import preprocess_shape
from napari_mobilesam.imaging.upsampling import MaskUpsampler


def _reference_mask(logits: torch.Tensor, original: tuple[int, int]) -> np.ndarray:
    h, w = preprocess_shape(*original)
    up = F.interpolate(logits[None, None], (1024, 1024), mode="bilinear", align_corners=False)
    up = F.interpolate(up[..., :h, :w], original, mode="bilinear", align_corners=False)
    return (up[0, 0] > 0).numpy()


def _paste(shape, y0, x0, crop):
    full = np.zeros(shape, bool)
    full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return full


@pytest.mark.parametrize("large_crop", [0.0, 1.0])  # interpolate everything / gather crops
@pytest.mark.parametrize("shape", [(512, 512), (303, 384), (660, 550), (2048, 1536), (37, 100)])
def test_equals_reference_post_processing(shape, large_crop, monkeypatch):
    monkeypatch.setattr("napari_mobilesam.imaging.upsampling.LARGE_CROP", large_crop)
    upsample = MaskUpsampler(shape, preprocess_shape(*shape))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        logits = torch.randn((256, 256), generator=generator) - 2.0
        y0, x0, crop = upsample(logits)
        np.testing.assert_array_equal(_paste(shape, y0, x0, crop), _reference_mask(logits, shape))


def test_small_object_is_computed_on_a_small_crop():
    shape = (2048, 2048)
    logits = torch.full((256, 256), -5.0)
    logits[100:104, 40:43] = 3.0
    y0, x0, crop = MaskUpsampler(shape, (1024, 1024))(logits)
    assert crop.shape[0] < 64 and crop.shape[1] < 64  # not the 2048 x 2048 frame
    np.testing.assert_array_equal(_paste(shape, y0, x0, crop), _reference_mask(logits, shape))


def test_empty_mask():
    _, _, crop = MaskUpsampler((64, 64), (1024, 1024))(torch.full((256, 256), -1.0))
    assert crop.shape == (0, 0)


@pytest.mark.parametrize("small", [False, True])  # masks over most of the image / small ones
def test_masks_of_a_batch_equal_reference(small):
    shape = (660, 550)
    upsample = MaskUpsampler(shape, preprocess_shape(*shape))
    logits = torch.randn((3, 256, 256), generator=torch.Generator().manual_seed(1)) - 2.0
    if small:
        logits = torch.full((3, 256, 256), -4.0)
        logits[0, 10:20, 30:35] = 2.0
        logits[1, 100:130, 60:62] = 1.0  # logits[2] stays empty
    masks = upsample.masks(logits)
    assert masks.shape == (3, *shape) and masks.dtype == bool
    for mask, one in zip(masks, logits, strict=True):
        np.testing.assert_array_equal(mask, _reference_mask(one, shape))


@pytest.mark.parametrize("shape", [(400, 600), (600, 400)])
def test_logits_positive_only_in_the_padding_give_an_empty_mask(shape):
    # A 400 x 600 image fills 683 x 1024 of the model's frame: low-res rows from 171 on are
    # padding. A decoder (MobileSAMv2's trained one on a random embedding) can put its
    # only positive logits there.
    upsample = MaskUpsampler(shape, preprocess_shape(*shape))
    logits = torch.full((256, 256), -5.0)
    h, w = preprocess_shape(*shape)
    if h < w:
        logits[h // 4 + 2 :, :] = 5.0
    else:
        logits[:, w // 4 + 2 :] = 5.0

    _, _, crop = upsample(logits)
    masks = upsample.masks(logits[None])

    assert crop.size == 0
    assert not masks.any()
    np.testing.assert_array_equal(masks[0], _reference_mask(logits, shape))
