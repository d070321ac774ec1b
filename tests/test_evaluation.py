"""Objects matched by IoU, and the figures a user compares segmentations by."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.evaluation import mask_ious


def test_mask_ious_of_pairs_including_two_empty_masks():
    predicted = np.zeros((4, 6, 6), bool)
    true = np.zeros((4, 6, 6), bool)
    predicted[0, :2, :2] = true[0, :2, :2] = True  # identical
    predicted[1, :2, :2] = True
    true[1, :2, :4] = True  # 4 of 8
    predicted[2, :3] = True  # disjoint
    true[2, 3:] = True
    ious = mask_ious(predicted, true)  # pair 3: both empty
    np.testing.assert_allclose(ious, [1.0, 0.5, 0.0, 1.0])
    assert ious.dtype == np.float64


@pytest.mark.parametrize(
    ("predicted", "true", "error", "message"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool), InvalidTypeError, "boolean"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), bool), InvalidTypeError, r"\(N, H, W\)"),
        (np.zeros((2, 4, 4), bool), np.zeros((3, 4, 4), bool), InvalidValueError, "same shape"),
    ],
)
def test_mask_ious_refuses_what_it_cannot_compare(predicted, true, error, message):
    with pytest.raises(error, match=message):
        mask_ious(predicted, true)
