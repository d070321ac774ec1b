"""Objects matched by IoU, and the figures a user compares segmentations by."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.evaluation import (
    MATCHED,
    MISSED,
    SPURIOUS,
    MatchCounts,
    comparison_image,
    mask_ious,
    match_objects,
    match_planes,
    synthetic_nuclei,
)


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


def squares(shape, boxes) -> np.ndarray:
    """A label image with object ``i + 1`` filling ``boxes[i]`` (a tuple of slices)."""
    labels = np.zeros(shape, np.int32)
    for index, box in enumerate(boxes):
        labels[box] = index + 1
    return labels


def test_touching_objects_with_a_shifted_border():
    true = squares((4, 26), [np.s_[:, 0:13], np.s_[:, 13:26]])
    predicted = squares((4, 26), [np.s_[:, 0:15], np.s_[:, 15:26]])  # IoU 13/15, 11/13
    result = match_objects(predicted, true)
    np.testing.assert_array_equal(result.tp, [2] * 7 + [1, 0, 0])
    np.testing.assert_array_equal(result.fp, 2 - result.tp)
    np.testing.assert_array_equal(result.fn, 2 - result.tp)
    np.testing.assert_allclose(result.ap, [1.0] * 7 + [1 / 3, 0, 0])
    assert result.msa == pytest.approx((7 + 1 / 3) / 10)
    assert result.ap50 == 1.0 and result.ap75 == 1.0
    np.testing.assert_allclose(result.true_best_iou, [13 / 15, 11 / 13])
    np.testing.assert_array_equal(result.true_best_pred, [1, 2])
    np.testing.assert_array_equal(result.matches_at(0.85), [[1, 1]])


def test_a_true_object_split_in_two_predictions():
    true = squares((4, 8), [np.s_[:, 0:8]])
    predicted = squares((4, 8), [np.s_[:, 0:5], np.s_[:, 5:8]])  # IoU 20/32 and 12/32
    result = match_objects(predicted, true, thresholds=[0.3, 0.5, 0.6, 0.7])
    np.testing.assert_array_equal(result.tp, [1, 1, 1, 0])
    np.testing.assert_array_equal(result.fp, [1, 1, 1, 2])
    np.testing.assert_array_equal(result.fn, [0, 0, 0, 1])
    np.testing.assert_allclose(result.precision, [0.5, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(result.recall, [1, 1, 1, 0])
    np.testing.assert_allclose(result.f1, [2 / 3, 2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(result.ap, [0.5, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(result.matches_at(0.3), [[1, 1]])  # the better one
    np.testing.assert_array_equal(result.pred_best_true, [1, 1])
    np.testing.assert_allclose(result.pred_best_iou, [20 / 32, 12 / 32])
    assert result.msa == pytest.approx(1 / 3)  # the mean over 0.5, 0.6 and 0.7 only


def test_two_true_objects_merged_into_one_prediction():
    true = squares((4, 8), [np.s_[:, 0:5], np.s_[:, 5:8]])
    predicted = squares((4, 8), [np.s_[:, 0:8]])
    result = match_objects(predicted, true, thresholds=0.5)
    assert (result.tp[0], result.fp[0], result.fn[0]) == (1, 0, 1)
    assert result.ap50 == 0.5


def test_a_split_exactly_in_half_matches_only_one_half():
    true = squares((4, 8), [np.s_[:, 0:8]])
    predicted = squares((4, 8), [np.s_[:, 0:4], np.s_[:, 4:8]])  # both IoU exactly 0.5
    result = match_objects(predicted, true, thresholds=0.5)
    assert (result.tp[0], result.fp[0], result.fn[0]) == (1, 1, 0)


def test_empty_prediction_empty_truth_and_both_empty():
    true = squares((8, 8), [np.s_[0:2, 0:2], np.s_[4:6, 4:6], np.s_[6:8, 0:2]])
    empty = np.zeros_like(true)
    missed = match_objects(empty, true)
    assert missed.n_true == 3 and missed.n_pred == 0
    assert np.all(missed.fn == 3) and np.all(missed.tp == 0) and np.all(missed.fp == 0)
    assert missed.msa == 0.0 and np.all(missed.recall == 0) and np.all(np.isnan(missed.precision))
    spurious = match_objects(true, empty)
    assert np.all(spurious.fp == 3) and spurious.msa == 0.0
    assert np.all(spurious.precision == 0) and np.all(np.isnan(spurious.recall))
    neither = match_objects(empty, empty)  # Cellpose: 0 / 0, nan
    assert np.all(np.isnan(neither.ap)) and np.isnan(neither.msa) and np.isnan(neither.ap50)
    assert "0 true objects, 0 predicted" in neither.summary()


def test_volumes_match_3d_objects_and_stacks_match_plane_by_plane():
    true = np.zeros((6, 8, 8), np.int32)
    true[0:4, 2:6, 2:6] = 7
    predicted = np.zeros_like(true)
    predicted[1:5, 2:6, 2:6] = 3  # one plane lower: 3-D IoU 3/5
    volume = match_objects(predicted, true)
    np.testing.assert_array_equal(volume.tp, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(volume.matches_at(0.6), [[7, 3]])
    planes = match_planes(predicted, true, axis=0)
    assert len(planes.planes) == 6
    assert [int(p.tp[0]) for p in planes.planes] == [0, 1, 1, 1, 0, 0]
    assert [int(p.fn[0]) for p in planes.planes] == [1, 0, 0, 0, 0, 0]
    assert [int(p.fp[0]) for p in planes.planes] == [0, 0, 0, 0, 1, 0]
    assert (planes.total.tp[0], planes.total.fp[0], planes.total.fn[0]) == (3, 1, 1)
    assert planes.total.ap50 == pytest.approx(3 / 5)
    assert np.isnan(planes.planes[5].ap50)  # an empty plane: no figure, as in Cellpose
    along_x = match_planes(predicted, true, axis=-1)
    assert len(along_x.planes) == 8 and along_x.axis == 2


@pytest.mark.parametrize(
    ("predicted", "true", "kwargs", "error", "message"),
    [
        (
            np.zeros((4, 4), np.int32),
            np.zeros((4, 5), np.int32),
            {},
            InvalidValueError,
            "same shape",
        ),
        (np.zeros((4, 4)), np.zeros((4, 4), np.int32), {}, InvalidTypeError, "integers"),
        ([[1]], np.zeros((1, 1), np.int32), {}, InvalidTypeError, "label image"),
        (
            np.zeros((4, 4), np.int32),
            np.zeros((4, 4), np.int32),
            {"thresholds": [0.5, 1.5]},
            InvalidValueError,
            r"\(0, 1\]",
        ),
        (np.full((4, 4), -1), np.zeros((4, 4), np.int64), {}, InvalidValueError, "between 0"),
    ],
)
def test_match_objects_refuses_what_it_cannot_compare(predicted, true, kwargs, error, message):
    with pytest.raises(error, match=message):
        match_objects(predicted, true, **kwargs)


def test_match_planes_needs_a_stack():
    with pytest.raises(InvalidValueError, match="at least 3 dimensions"):
        match_planes(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32))


def random_labels(rng: np.random.Generator, n_objects: int) -> np.ndarray:
    labels = np.zeros((10, 10), np.int32)
    for index in range(n_objects):
        (r0, r1), (c0, c1) = np.sort(rng.integers(0, 11, (2, 2)), axis=1)
        labels[r0 : r1 + 1, c0 : c1 + 1] = index + 1
    return labels


def dense_ious(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    true_ids = np.unique(true[true > 0])
    pred_ids = np.unique(predicted[predicted > 0])
    ious = np.zeros((len(true_ids), len(pred_ids)))
    for i, t in enumerate(true_ids):
        for j, p in enumerate(pred_ids):
            union = np.count_nonzero((true == t) | (predicted == p))
            ious[i, j] = np.count_nonzero((true == t) & (predicted == p)) / union
    return ious


def brute_force_tp(ious: np.ndarray, threshold: float) -> int:
    """The most pairs with IoU >= threshold over every one-to-one assignment."""
    n_true, n_pred = ious.shape
    best = 0
    for chosen in itertools.permutations([*range(n_pred), *[-1] * n_true], n_true):
        pairs = [(i, j) for i, j in enumerate(chosen) if j >= 0]
        best = max(best, sum(ious[i, j] >= threshold for i, j in pairs))
    return best


def cellpose_tp(ious: np.ndarray, threshold: float) -> int:
    """``cellpose.metrics._true_positive``, as published."""
    from scipy.optimize import linear_sum_assignment

    n_min = min(ious.shape)
    costs = -(ious >= threshold).astype(float) - ious / (2 * n_min)
    true_ind, pred_ind = linear_sum_assignment(costs)
    return int((ious[true_ind, pred_ind] >= threshold).sum())


def test_true_positives_agree_with_cellpose_and_with_every_assignment():
    rng = np.random.default_rng(16)
    thresholds = [0.1, 0.3, 0.5, 0.7]
    for _ in range(150):
        true = random_labels(rng, int(rng.integers(0, 5)))
        predicted = random_labels(rng, int(rng.integers(0, 5)))
        result = match_objects(predicted, true, thresholds=thresholds)
        ious = dense_ious(predicted, true)
        for k, threshold in enumerate(thresholds):
            expected = brute_force_tp(ious, threshold) if ious.size else 0
            assert result.tp[k] == expected
            if ious.size:
                assert cellpose_tp(ious, threshold) == expected
            pairs = result.matches[k]
            assert len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1])) == len(pairs)
        assert result.n_true == len(np.unique(true[true > 0]))


def test_chunked_zarr_and_dask_give_the_in_memory_results(tmp_path):
    import dask.array as da
    import zarr

    _, true = synthetic_nuclei((256, 256), seed=5)
    predicted = np.roll(true, (3, 2), axis=(0, 1))
    predicted[predicted == 4] = 0
    expected = match_objects(predicted, true)
    stored = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=predicted.shape,
                             chunks=(50, 70), dtype="i4")  # fmt: skip
    stored[...] = predicted
    lazy_true = da.from_array(true, chunks=(64, 64))
    for result in (
        match_objects(stored, lazy_true, block_pixels=1000),
        match_objects(predicted, true, block_pixels=1),
    ):
        for field in ("tp", "fp", "fn", "true_ids", "true_best_pred", "true_best_iou",
                      "pred_ids", "pred_best_true", "pred_best_iou"):  # fmt: skip
            np.testing.assert_array_equal(getattr(result, field), getattr(expected, field))
        for pairs, wanted in zip(result.matches, expected.matches, strict=True):
            np.testing.assert_array_equal(pairs, wanted)


def test_many_objects_need_no_objects_by_objects_memory():
    import tracemalloc

    rows, cols = np.indices((2048, 2048))
    true = ((rows // 16) * 128 + cols // 16 + 1).astype(np.int32)  # 16384 objects
    predicted = np.roll(true, 3, axis=1)
    tracemalloc.start()
    result = match_objects(predicted, true, block_pixels=2**18)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.n_true == result.n_pred == 16384
    assert result.tp[0] == 16384 and result.tp[-1] == 0  # IoU 13/19
    assert peak < 64 * 2**20  # a dense IoU matrix alone would take 2 GiB


def test_result_rows_dataframe_and_summary():
    true = squares((4, 8), [np.s_[:, 0:8]])
    predicted = squares((4, 8), [np.s_[:, 0:5], np.s_[:, 5:8]])
    result = match_objects(predicted, true, thresholds=[0.5, 0.75])
    rows = result.as_rows()
    assert rows[0] == {"threshold": 0.5, "tp": 1, "fp": 1, "fn": 0, "precision": 0.5,
                       "recall": 1.0, "f1": pytest.approx(2 / 3), "ap": 0.5}  # fmt: skip
    frame = result.to_dataframe()
    assert list(frame.columns) == ["threshold", "tp", "fp", "fn", "precision", "recall", "f1",
                                   "ap"]  # fmt: skip
    assert frame["ap"].tolist() == [0.5, 0.0]
    text = result.summary()
    assert "1 true objects, 2 predicted" in text and "mSA" in text and " 0.75 " in text
    pooled = MatchCounts.pooled([result, result])
    assert pooled.tp.tolist() == [2, 0] and pooled.n_pred == 4


def test_comparison_image_marks_matched_spurious_and_missed_objects():
    true = squares((10, 20), [np.s_[1:5, 1:5], np.s_[1:9, 10:18]])
    predicted = squares((10, 20), [np.s_[1:5, 1:5], np.s_[1:9, 10:13], np.s_[1:9, 13:18],
                                   np.s_[8:10, 0:3]])  # fmt: skip
    image = comparison_image(predicted, true, threshold=0.7)
    assert image.dtype == np.uint8 and image.shape == true.shape
    assert np.all(image[1:5, 1:5] == MATCHED)
    assert image[9, 0] == SPURIOUS  # a prediction where nothing is
    # true object 2, split in two spurious pieces, shows as its outline around them
    assert np.all(image[1, 10:18] == MISSED) and np.all(image[1:9, 17] == MISSED)
    assert np.all(image[2:8, 11:13] == SPURIOUS) and np.all(image[2:8, 14:17] == SPURIOUS)
    assert np.all(image[2:8, 13] == 0)  # a line of background between touching pieces
    assert np.all(image[0] == 0) and np.all(image[5:8, 5:9] == 0)
    loose = comparison_image(predicted, true, threshold=0.6)  # piece 13:18 has IoU 40/64
    assert np.all(loose[2:8, 14:17] == MATCHED) and np.all(loose[2:8, 11:13] == SPURIOUS)
    assert not np.any(loose == MISSED)


def test_comparison_image_of_a_stack_plane_by_plane():
    true = np.zeros((3, 8, 8), np.int32)
    true[:, 2:6, 2:6] = 1
    predicted = true.copy()
    predicted[1] = 0
    as_planes = comparison_image(predicted, true, axis=0)
    assert np.all(as_planes[0][true[0] > 0] == MATCHED)
    assert np.all(as_planes[1][true[1] > 0] == MISSED)
    as_volume = comparison_image(predicted, true)  # one 3-D object, IoU 2/3: matched
    assert np.all(as_volume[predicted > 0] == MATCHED) and np.all(as_volume[1] == 0)
    matching = match_planes(predicted, true, axis=0)
    np.testing.assert_array_equal(
        comparison_image(predicted, true, axis=0, matching=matching), as_planes
    )
    with pytest.raises(InvalidValueError, match="PlaneMatching"):
        comparison_image(predicted, true, axis=0, matching=match_objects(predicted, true))
