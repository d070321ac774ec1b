"""Correct and curate without napari: merge, delete, split, refine, and feature filters.

The model has random weights (the parity fixture), so SAM's masks are noise-like: the SAM
tests check what is kept (ids, neighbours, every pixel of a split object), not the shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk, ellipse, rectangle

import test_batch
from napari_mobilesam import SegAnyPredictor
from napari_mobilesam.curation import (
    delete_objects,
    filter_objects,
    merge_objects,
    object_at,
    object_features,
    objects_within,
    refine_object,
    split_object,
)
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
from napari_mobilesam.segany.tiled import TiledSegAnyPredictor
from test_batch import _image

settings = test_batch.settings  # the batch settings fixture: random weights, tiny detector


@pytest.fixture
def shapes() -> tuple[np.ndarray, np.ndarray]:
    """Four objects of known features: a big disk, a small disk, a long ellipse, a square,
    on an image where each is as bright as ten times its id."""
    labels = np.zeros((120, 120), np.int32)
    labels[disk((30, 30), 20, shape=labels.shape)] = 1  # area ~1257, round
    labels[disk((30, 90), 5, shape=labels.shape)] = 2  # area ~81
    labels[ellipse(90, 30, 6, 25, shape=labels.shape)] = 3  # long: eccentricity ~0.97
    labels[rectangle((75, 75), extent=(30, 30), shape=labels.shape)] = 4  # area 900
    return labels, labels * 10.0


def test_merge_makes_one_object_under_the_first_id_and_leaves_the_input(shapes):
    labels, _ = shapes
    before = labels.copy()
    merged = merge_objects(labels, [3, 1, 2])
    np.testing.assert_array_equal(labels, before)
    np.testing.assert_array_equal(merged == 3, np.isin(before, [1, 2, 3]))
    np.testing.assert_array_equal(merged == 4, before == 4)
    assert set(np.unique(merge_objects(labels, [1, 2], into=2)).tolist()) == {0, 2, 3, 4}


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1], "at least 2"),
        ([1, 1], "at least 2"),
        ([1, 9], "no object with id"),
        ([0, 1], "background"),
    ],
)
def test_merge_that_cannot_apply_says_why(shapes, ids, message):
    with pytest.raises(InvalidValueError, match=message):
        merge_objects(shapes[0], ids)


def test_delete_and_object_at(shapes):
    labels, _ = shapes
    assert object_at(labels, (30.4, 29.6)) == 1
    with pytest.raises(InvalidValueError, match="background"):
        object_at(labels, (0, 0))
    with pytest.raises(InvalidValueError, match="outside"):
        object_at(labels, (500, 0))
    out = delete_objects(labels, [2, 4])
    assert set(np.unique(out).tolist()) == {0, 1, 3}
    np.testing.assert_array_equal(out == 1, labels == 1)
    with pytest.raises(InvalidValueError, match="no object"):
        delete_objects(labels, [7])
    with pytest.raises(InvalidTypeError, match="integer"):
        delete_objects(labels > 0, [1])


def test_stack_ops_act_through_the_3d_object_or_on_the_slice_given():
    stack = np.zeros((3, 10, 10), np.int32)
    stack[:, 2:5, 2:5] = 1
    stack[:, 6:9, 6:9] = 2
    through = delete_objects(stack, [1])
    assert not (through == 1).any()
    one_slice = stack.copy()
    one_slice[1] = merge_objects(stack[1], [1, 2])
    np.testing.assert_array_equal(one_slice[[0, 2]], stack[[0, 2]])
    assert set(np.unique(one_slice[1]).tolist()) == {0, 1}


def test_features_of_known_objects(shapes):
    labels, image = shapes
    table = object_features(labels, image, scores={1: 0.9, 2: 0.4, 4: 0.8})
    assert table["label"].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(table["area"], [np.sum(labels == i) for i in range(1, 5)])
    np.testing.assert_allclose(table["mean_intensity"], [10, 20, 30, 40])
    np.testing.assert_allclose(table["score"], [0.9, 0.4, np.nan, 0.8])
    assert table["eccentricity"][2] > 0.9 > table["eccentricity"][0]
    assert table["solidity"][3] == 1.0
    volume = object_features(np.stack([labels, labels]))
    np.testing.assert_array_equal(volume["area"], 2 * table["area"])
    assert np.isnan(volume["eccentricity"]).all()


def test_filters_keep_exactly_the_objects_within_the_ranges(shapes):
    labels, image = shapes
    table = object_features(labels, image, scores={1: 0.9, 2: 0.4, 4: 0.8})
    cases = {
        (("area", (100, None)),): [1, 3, 4],
        (("area", (None, 1000)), ("eccentricity", (None, 0.5))): [2, 4],
        (("mean_intensity", (15, 35)),): [2, 3],
        (("score", (0.5, None)),): [1, 3, 4],  # 3 has no score: unknown is kept
        (("solidity", (0.97, 0.99)),): [1],
    }
    for ranges, kept in cases.items():
        assert objects_within(table, dict(ranges)).tolist() == kept, ranges
        out = filter_objects(labels, table, dict(ranges))
        assert sorted(set(np.unique(out).tolist()) - {0}) == kept
        for i in kept:
            np.testing.assert_array_equal(out == i, labels == i)


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"size": (1, 2)}, "unknown feature"),
        ({"area": (5, 1)}, "empty"),
        ({"area": ("a", 1)}, "numbers"),
        ({"area": (np.inf, None)}, "finite"),
        ({"score": (0.5, None)}, "scores"),
    ],
)
def test_bad_filter_ranges_say_why(shapes, ranges, message):
    with pytest.raises(InvalidValueError, match=message):
        filter_objects(shapes[0], object_features(shapes[0]), ranges)


@pytest.fixture
def nuclei(predictor: SegAnyPredictor):
    image, labels = synthetic_nuclei((192, 192), seed=3)
    predictor.set_image(image)
    return image, labels, predictor


def biggest(labels: np.ndarray) -> int:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return int(ids[counts.argmax()])


def test_refine_keeps_the_id_and_never_writes_over_neighbours(nuclei):
    _, labels, predictor = nuclei
    target = biggest(labels)
    ys, xs = np.nonzero(labels == target)
    out = refine_object(labels, target, predictor, [[xs.mean(), ys.mean()]], [1])
    others = (labels != 0) & (labels != target)
    np.testing.assert_array_equal(out[others], labels[others])
    assert (out == target).any()
    assert set(np.unique(out).tolist()) <= set(np.unique(labels).tolist())
    changed = out != labels
    assert np.isin(out[changed], [0, target]).all()
    with pytest.raises(InvalidValueError, match="no object"):
        refine_object(labels, 999, predictor)
    with pytest.raises(InvalidValueError, match="differ in shape"):
        refine_object(np.pad(labels, ((0, 8), (0, 0))), target, predictor)


def test_split_puts_every_pixel_in_one_of_two_parts(nuclei):
    _, labels, predictor = nuclei
    target = biggest(labels)
    ys, xs = np.nonzero(labels == target)
    first, second = np.argmin(xs), np.argmax(xs)
    points = [[xs[first], ys[first]], [xs[second], ys[second]]]
    out = split_object(labels, target, points, predictor)
    new = int(labels.max()) + 1
    np.testing.assert_array_equal(np.isin(out, [target, new]), labels == target)
    assert out[ys[first], xs[first]] == target and out[ys[second], xs[second]] == new
    np.testing.assert_array_equal(out[labels != target], labels[labels != target])
    with pytest.raises(InvalidValueError, match="not on object"):
        split_object(labels, target, [points[0], [0, 0]], predictor)
    with pytest.raises(InvalidValueError, match="different pixels"):
        split_object(labels, target, [points[0], points[0]], predictor)


def test_refine_on_a_tiled_large_image_reads_one_tile(predictor, encodes):
    image, labels = synthetic_nuclei((1500, 1400), radius=(10, 20), seed=5)
    tiled = TiledSegAnyPredictor(predictor)
    tiled.set_image(image)
    target = int(labels[labels > 0][0])
    ys, xs = np.nonzero(labels == target)
    out = refine_object(labels, target, tiled, [[xs.mean(), ys.mean()]], [1])
    assert len(encodes) == 1 and max(encodes[0]) <= 1024  # one tile, not the image
    others = (labels != 0) & (labels != target)
    np.testing.assert_array_equal(out[others], labels[others])
    assert np.isin(out[out != labels], [0, target]).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--min-solidity", "1.5"], "argument --min-solidity: must be between 0 and 1"),
        (["--max-intensity", "nan"], "argument --max-intensity: must be a finite number"),
        (["--min-score", "0.9", "--max-score", "0.2"], "the range of score is empty"),
        (["--max-area", "-3"], "argument --max-area: must be a whole number of 0 or more"),
    ],
)
def test_batch_filter_options_are_checked(options, message, capsys):
    from napari_mobilesam.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "x.tif", "-o", "out", *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_batch_filters_remove_exactly_the_objects_out_of_range(tmp_path, settings):
    from dataclasses import replace

    import pandas as pd
    import tifffile

    from napari_mobilesam.batch.runner import segment_files

    tifffile.imwrite(tmp_path / "a.tif", _image(0))
    plain = segment_files([tmp_path / "a.tif"], tmp_path / "plain", settings, progress=False)
    assert plain.ok, plain.failures
    labels = tifffile.imread(tmp_path / "plain" / "a_labels.tif")
    table = object_features(labels)
    assert len(table["label"]) >= 2, "the test needs objects of several sizes"
    limit = float(np.median(table["area"]))
    ranges = (("area", None, limit), ("solidity", 0.2, None))
    kept = objects_within(table, {"area": (None, limit), "solidity": (0.2, None)})
    filtered = replace(settings, object_ranges=ranges)
    report = segment_files([tmp_path / "a.tif"], tmp_path / "kept", filtered, progress=False)
    assert report.ok, report.failures
    out = tifffile.imread(tmp_path / "kept" / "a_labels.tif")
    np.testing.assert_array_equal(out, np.where(np.isin(labels, kept), labels, 0))
    rows = pd.read_csv(tmp_path / "kept" / "a_objects.csv")
    assert sorted(rows["label"].tolist()) == sorted(kept.tolist())
