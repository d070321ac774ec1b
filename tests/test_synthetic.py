"""The synthetic nuclei that tests, benchmarks and the walkthrough measure against."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei


def test_nuclei_are_bright_numbered_without_gaps_and_reproducible():
    image, labels = synthetic_nuclei((192, 160), seed=3)

    assert image.shape == labels.shape == (192, 160)
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, ids[-1] + 1)) and ids[-1] > 10
    inside = image[labels > 0].mean()
    outside = image[labels == 0].mean()
    assert inside > 3 * outside
    again_image, again_labels = synthetic_nuclei((192, 160), seed=3)
    assert np.array_equal(again_image, image) and np.array_equal(again_labels, labels)
    assert not np.array_equal(synthetic_nuclei((192, 160), seed=4)[1], labels)


def test_some_nuclei_touch_and_none_is_mostly_hidden():
    _, labels = synthetic_nuclei((256, 256), touching=0.6, seed=0)

    inner = find_boundaries(labels, mode="inner")
    touching_ids = set()
    for axis in (0, 1):
        a = np.moveaxis(labels, axis, 0)[:-1]
        b = np.moveaxis(labels, axis, 0)[1:]
        contact = (a > 0) & (b > 0) & (a != b)
        touching_ids |= set(a[contact]) | set(b[contact])
    assert len(touching_ids) >= 4
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() >= 20 and inner.any()


@pytest.mark.parametrize(
    "kwargs",
    [{"shape": (16, 64)}, {"radius": (5.0, 2.0)}, {"touching": 1.5}, {"shape": (8, 8, 8)}],
)
def test_bad_settings_say_what_is_expected(kwargs):
    with pytest.raises(InvalidValueError, match="must be"):
        synthetic_nuclei(**kwargs)
