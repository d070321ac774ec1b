"""Linking per-slice label images into 3-D objects and tracks (no model involved)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.stacks.linking import link_slices


def ellipsoid_volume(shape=(24, 96, 96)) -> np.ndarray:
    """Ground-truth 3-D labels: ellipsoids of known extent, two touching, some ending
    (shrinking to nothing) inside the volume."""
    z, y, x = np.indices(shape)
    truth = np.zeros(shape, np.int32)
    specs = [  # (centre z, y, x), (radius z, y, x)
        ((11, 25, 25), (10, 14, 14)),  # spans most of the stack
        ((5, 25, 44), (4, 12, 12)),  # overlaps object 1: cut, so they touch
        ((18, 70, 30), (5, 10, 16)),  # ends before the last slice
        ((3, 72, 72), (6, 9, 9)),  # cut by the first slice
        ((16, 40, 80), (2, 6, 6)),  # tiny: 5 slices
    ]
    for label, ((cz, cy, cx), (rz, ry, rx)) in enumerate(specs, start=1):
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        truth[inside & (truth == 0)] = label
    return truth


def per_slice_ids(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Relabel every slice independently with shuffled ids, as SegEvery would."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(truth)
    for s in range(truth.shape[0]):
        ids = np.unique(truth[s])
        ids = ids[ids > 0]
        new = rng.permutation(len(ids)) + 1
        for old, n in zip(ids, new, strict=True):
            out[s][truth[s] == old] = n
    return out


def assert_same_objects(linked: np.ndarray, truth: np.ndarray) -> None:
    """Equal up to a one-to-one renaming of the ids."""
    assert ((linked > 0) == (truth > 0)).all()
    pairs = np.unique(np.stack([linked[truth > 0], truth[truth > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_recovers_ellipsoids_exactly():
    truth = ellipsoid_volume()
    # objects 1 and 2 touch (adjacent pixels), object 4 and 5 shrink to a few pixels
    right_of_1 = np.zeros_like(truth, bool)
    right_of_1[:, :, 1:] = truth[:, :, :-1] == 1
    assert (right_of_1 & (truth == 2)).any()  # objects 1 and 2 touch
    result = link_slices(per_slice_ids(truth))
    assert_same_objects(result.labels, truth)
    assert result.labels.dtype == np.int32
    table = result.table
    assert list(table["label"]) == list(range(1, 6))
    for row in table.itertuples():
        gt = truth[result.labels == row.label][0]
        present = np.flatnonzero((truth == gt).any(axis=(1, 2)))
        assert (row.first_slice, row.last_slice) == (present[0], present[-1])
        assert row.volume == (truth == gt).sum()
        assert row.gaps == 0 and row.parent == 0 and row.merged_into == 0


def test_touching_objects_stay_apart():
    truth = np.zeros((6, 20, 30), np.int32)
    truth[:, 5:15, 2:15] = 1
    truth[:, 5:15, 15:28] = 2  # shares an edge with object 1 on every slice
    result = link_slices(per_slice_ids(truth))
    assert_same_objects(result.labels, truth)
    assert result.n_objects == 2


def test_tip_of_ellipsoid_is_linked_by_containment():
    truth = np.zeros((3, 40, 40), np.int32)
    truth[0, 5:35, 5:35] = 1
    truth[1, 5:15, 5:15] = 1  # IoU with slice 0 is 0.11, centroids 14 px apart
    truth[2, 9:11, 9:11] = 1  # the last 4 pixels, centred on slice 1
    result = link_slices(truth)
    assert result.n_objects == 1
    # Without containment slice 1 cannot link to slice 0 (low IoU, far centroid); slice 2
    # still links to slice 1 (same centroid).
    split = link_slices(truth, min_contained=None)
    assert split.n_objects == 2


def test_one_slice_gap_keeps_the_id():
    truth = np.zeros((7, 20, 20), np.int32)
    truth[:, 5:15, 5:15] = 1
    missed = truth.copy()
    missed[3] = 0  # SegEvery missed the object on slice 3
    result = link_slices(missed, max_gap=1)
    assert np.unique(result.labels).tolist() == [0, 1]
    row = result.table.iloc[0]
    assert (row.first_slice, row.last_slice, row.n_slices, row.gaps) == (0, 6, 6, 1)
    assert link_slices(missed, max_gap=0).n_objects == 2
    two = truth.copy()
    two[3:5] = 0  # a two-slice gap is more than max_gap=1
    assert link_slices(two, max_gap=1).n_objects == 2
    assert link_slices(two, max_gap=2).n_objects == 1


def test_split_larger_branch_keeps_the_id():
    stack = np.zeros((6, 30, 40), np.int32)
    stack[:3, 5:25, 5:35] = 1
    stack[3:, 5:25, 5:22] = 1  # left branch, larger
    stack[3:, 5:25, 24:35] = 2  # right branch, smaller
    result = link_slices(stack, min_contained=0.8)
    labels, table = result.labels, result.table
    assert labels[0, 10, 10] == labels[5, 10, 10] == 1
    assert labels[5, 10, 30] == 2
    row = table.set_index("label").loc[2]
    assert (row.first_slice, row.parent) == (3, 1)


def test_merge_larger_branch_keeps_the_id():
    stack = np.zeros((6, 30, 40), np.int32)
    stack[:3, 5:25, 5:22] = 1  # larger
    stack[:3, 5:25, 24:35] = 2
    stack[3:, 5:25, 5:35] = 1
    result = link_slices(stack)
    labels = result.labels
    assert labels[0, 10, 10] == labels[5, 10, 10] == labels[5, 10, 30]
    small = labels[0, 10, 30]
    row = result.table.set_index("label").loc[small]
    assert row.last_slice == 2 and row.merged_into == labels[0, 10, 10]


def moving_disc(frames, start, velocity, radius, shape=(80, 80), first=0, last=None):
    yy, xx = np.indices(shape)
    out = np.zeros((frames, *shape), bool)
    last = frames - 1 if last is None else last
    for t in range(first, last + 1):
        cy, cx = np.add(start, np.multiply(velocity, t - first))
        out[t] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return out


def test_time_lapse_tracks_moving_appearing_disappearing():
    frames = 10
    truth = np.zeros((frames, 80, 80), np.int32)
    truth[moving_disc(frames, (15, 10), (0, 3), 7)] = 1  # moves right all along
    truth[moving_disc(frames, (60, 60), (-2, -1), 6, first=3)] = 2  # appears at t=3
    truth[moving_disc(frames, (60, 15), (0, 0), 5, last=5)] = 3  # disappears after t=5
    # A cell that speeds up to 6 px per frame, its own radius: consecutive masks overlap
    # too little (IoU 0.24) unless the track's motion is followed.
    yy, xx = np.indices((80, 80))
    for t, x in enumerate([6, 8, 12, 18, 24, 30, 36, 42, 48]):
        truth[t][((yy - 40) ** 2 + (xx - x) ** 2 <= 36) & (truth[t] == 0)] = 4
    result = link_slices(per_slice_ids(truth, seed=3), mode="t")
    assert_same_objects(result.labels, truth)
    by_truth = {
        int(truth[result.labels == label][0]): row
        for label, row in zip(result.table["label"], result.table.itertuples(), strict=True)
    }
    assert (by_truth[2].first_slice, by_truth[2].last_slice) == (3, 9)
    assert (by_truth[3].first_slice, by_truth[3].last_slice) == (0, 5)
    # Without motion (mode="z") the fast cell is broken up.
    assert link_slices(per_slice_ids(truth, seed=3), mode="z").n_objects > 4


def test_scores_per_slice_and_features():
    stack = np.zeros((3, 10, 10), np.int32)
    stack[:, 2:5, 2:5] = 1
    stack[1:, 6:9, 6:9] = 2
    scores = [np.array([0.9]), np.array([0.8, 0.5]), {1: 0.7, 2: 0.6}]
    result = link_slices(stack, scores=scores)
    np.testing.assert_allclose(result.score_per_slice[0], [0.9, 0.8, 0.7], rtol=1e-6)
    assert np.isnan(result.score_per_slice[1, 0])
    np.testing.assert_allclose(result.table["mean_score"], [0.8, 0.55], rtol=1e-6)
    assert result.area_per_slice.tolist() == [[9, 9, 9], [0, 9, 9]]
    assert result.id_maps[1] == {1: 1, 2: 2}


def test_axis_other_than_first():
    truth = ellipsoid_volume((12, 40, 40))
    moved = np.moveaxis(per_slice_ids(truth), 0, 2)
    result = link_slices(moved, axis=2)
    assert result.labels.shape == moved.shape
    assert_same_objects(np.moveaxis(result.labels, 2, 0), truth)


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="shape \\(S, H, W\\)"):
        link_slices(np.zeros((10, 10), np.int32))
    with pytest.raises(TypeError, match="integer labels"):
        link_slices(np.zeros((2, 10, 10), np.float32))
    with pytest.raises(ValueError, match="mode"):
        link_slices(np.zeros((2, 10, 10), np.int32), mode="x")
    with pytest.raises(ValueError, match="axis"):
        link_slices(np.zeros((2, 10, 10), np.int32), axis=3)
    with pytest.raises(ValueError, match="max_gap"):
        link_slices(np.zeros((2, 10, 10), np.int32), max_gap=-1)
    with pytest.raises(ValueError, match="one entry per slice"):
        link_slices(np.zeros((2, 10, 10), np.int32), scores=[[]])


def test_progress_exception_aborts():
    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        link_slices(np.ones((3, 5, 5), np.int32), progress=cancel)
