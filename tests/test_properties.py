"""Property-based tests of the public functions (hypothesis, with a fixed budget).

Each generated case either gives a correct result (checked against invariants) or raises
the documented exception with a clear message: never a crash, a hang or a silent wrong
shape. Budgets are fixed and the generation is derandomized, so a run is repeatable and
takes well under a minute on two cores. ``EXAMPLES`` counts the cases actually executed;
set ``NAPARI_MOBILESAM_COUNTS`` to a file name to have the counts written there (the README
figures come from it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.imaging.label_canvas import Candidate, LabelCanvas
from napari_mobilesam.imaging.tiling import TileGrid
from napari_mobilesam.segany.predictor import MAX_COORDINATE
from napari_mobilesam.segevery.boxes import clean_boxes
from napari_mobilesam.stacks.linking import link_slices

EXAMPLES: Counter[str] = Counter()


def budget(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    target = os.environ.get("NAPARI_MOBILESAM_COUNTS")
    if target:
        with open(target, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"module": __name__, "examples": dict(EXAMPLES)}) + "\n")


def clear(message: str) -> bool:
    """A clear message: a sentence of some length, not an internal numpy/torch error."""
    return len(message) >= 20 and not re.search(
        r"index \d+ is out of bounds|object of type", message
    )


# ------------------------------------------------------------------------ to_rgb_uint8
DTYPES = [
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.bool_,
]


@st.composite
def images(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.sampled_from([1, 2, 2, 3, 3, 4]))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=8 * min(dtype.itemsize, 8))
    else:
        elements = None  # the whole range of the dtype, extremes included
    fill = draw(st.sampled_from(["any", "constant"]))
    if fill == "constant":
        value = draw(hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True))
        return np.full(shape, value, dtype=dtype)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@budget(400)
@given(image=images(), limits=st.none() | st.tuples(st.floats(), st.floats()))
def test_to_rgb_uint8_gives_rgb_or_a_documented_error(image, limits):
    EXAMPLES["to_rgb_uint8"] += 1
    before = image.copy()
    try:
        rgb = to_rgb_uint8(image, limits)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("Expected"), str(error)
        assert clear(str(error))
        return
    finally:
        np.testing.assert_array_equal(image, before)  # never modified
    assert rgb.dtype == np.uint8
    assert rgb.shape == (*image.shape[:2], 3)
    assert rgb.flags.c_contiguous
    assert image.ndim in (2, 3) and min(image.shape[:2]) >= 2
    if image.ndim == 3 and image.shape[2] == 2:
        assert not rgb[..., 2].any()
    if image.ndim == 2 or image.shape[2] == 1:
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    if limits is None and image.dtype.kind in "iuf":
        values = image[..., :3].astype(np.float64)
        finite = values[np.isfinite(values)]
        span = float(finite.max()) - float(finite.min())
        if np.isfinite(span) and span > 0:
            # The largest finite value is bright, the smallest dark: contrast is kept.
            channels = rgb[..., : min(image.shape[2], 3)] if image.ndim == 3 else rgb[..., :1]
            assert channels.max() > channels.min()


# ------------------------------------------------------------------------------ boxes
coordinate = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from(
    [np.nan, np.inf, -np.inf, 0.0, 1e300, -1e300]
)
box_rows = st.lists(st.tuples(coordinate, coordinate, coordinate, coordinate), max_size=12)
image_shapes = st.tuples(st.integers(1, 300), st.integers(1, 300))


@budget(400)
@given(rows=box_rows, shape=image_shapes)
def test_clean_boxes_keeps_ordered_boxes_inside_the_image(rows, shape):
    EXAMPLES["clean_boxes"] += 1
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    kept, valid = clean_boxes(boxes, shape)
    height, width = shape
    assert kept.dtype == np.float32 and kept.shape == (int(valid.sum()), 4)
    assert valid.shape == (len(boxes),)
    assert np.isfinite(kept).all()
    assert (kept[:, 0] < kept[:, 2]).all() and (kept[:, 1] < kept[:, 3]).all()
    assert (kept[:, 0::2] >= 0).all() and (kept[:, 0::2] <= width).all()
    assert (kept[:, 1::2] >= 0).all() and (kept[:, 1::2] <= height).all()
    assert not valid[~np.isfinite(boxes).all(axis=1)].any(), "a NaN/inf box is dropped"


@budget(100)
@given(
    boxes=st.one_of(
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
        st.lists(st.text(max_size=3), max_size=3),
    ),
    shape=st.one_of(
        image_shapes,
        st.tuples(st.integers(-5, 5)),
        st.tuples(st.integers(-5, 0), st.integers(-5, 5)),
    ),
)
def test_clean_boxes_refuses_malformed_input_clearly(boxes, shape):
    EXAMPLES["clean_boxes_malformed"] += 1
    try:
        kept, valid = clean_boxes(boxes, shape)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("Expected"), str(error)
        return
    assert kept.shape[1] == 4 and len(valid) == len(np.asarray(boxes).reshape(-1, 4))


# -------------------------------------------------------------------------- predictor
IMAGE_SHAPE = (48, 64)


@pytest.fixture(scope="module")
def ready(mobile_sam):
    """A predictor with a small image set (encoded once for the module)."""
    from napari_mobilesam import SegAnyPredictor

    predictor = SegAnyPredictor(mobile_sam, device="cpu")
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8))
    return predictor


points = st.lists(st.tuples(coordinate, coordinate), max_size=6)


@budget(40)
@given(
    coords=st.none() | points,
    labels=st.none() | st.lists(st.sampled_from([0, 1, 1, 2, -1]), max_size=6),
    multimask=st.booleans(),
)
def test_predict_gives_masks_of_the_image_or_a_clear_error(ready, coords, labels, multimask):
    EXAMPLES["SegAnyPredictor.predict"] += 1
    if coords is None and labels is None:
        return  # no prompt: covered by the next test's box
    try:
        masks, scores, low_res = ready.predict(coords, labels, multimask_output=multimask)
    except ValueError as error:
        assert "point_coords" in str(error) or "point_labels" in str(error), str(error)
        return
    n = 3 if multimask else 1
    assert masks.shape == (n, *IMAGE_SHAPE) and masks.dtype == bool
    assert scores.shape == (n,) and np.isfinite(scores).all()
    assert low_res.shape == (n, 256, 256)
    coords_array = np.asarray(coords, dtype=float).reshape(-1, 2)
    assert (np.abs(coords_array) <= MAX_COORDINATE).all() and len(coords_array) == len(labels)
    assert set(labels) <= {0, 1}


def test_predict_with_huge_prompt_counts(ready):
    EXAMPLES["SegAnyPredictor.predict"] += 2
    rng = np.random.default_rng(1)
    coords = rng.uniform(-100, 200, (2000, 2))
    masks, scores, _ = ready.predict(coords, rng.integers(0, 2, 2000), multimask_output=False)
    assert masks.shape == (1, *IMAGE_SHAPE)
    masks, scores, _ = ready.predict_boxes(rng.uniform(-50, 120, (300, 4)))
    assert masks.shape == (300, *IMAGE_SHAPE) and scores.shape == (300,)


@budget(30)
@given(rows=box_rows)
def test_predict_boxes_one_mask_per_box_or_a_clear_error(ready, rows):
    EXAMPLES["SegAnyPredictor.predict_boxes"] += 1
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    try:
        masks, scores, low_res = ready.predict_boxes(boxes)
    except ValueError as error:
        assert "boxes must be finite numbers of at most" in str(error)
        assert not (np.abs(boxes) <= MAX_COORDINATE).all()
        return
    assert masks.shape == (len(boxes), *IMAGE_SHAPE)
    assert scores.shape == (len(boxes),) and low_res.shape == (len(boxes), 256, 256)
    if len(boxes):  # the single-box entry point agrees on shapes
        single, _, _ = ready.predict(box=boxes[0], multimask_output=False)
        assert single.shape == (1, *IMAGE_SHAPE)


def check_labels(result, shape):
    """The invariants of a label image and its per-object features."""
    labels = np.asarray(result.labels)
    assert labels.shape == shape
    n = result.n_objects
    ids = np.unique(labels)
    assert set(ids[ids > 0].tolist()) == set(range(1, n + 1)), "ids are exactly 1..N"
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    np.testing.assert_array_equal(result.areas, counts)
    assert result.boxes.shape == (n, 4) and result.scores.shape == (n,)


@budget(15)
@given(rows=box_rows)
def test_segment_everything_with_any_boxes(ready, rows):
    from napari_mobilesam import segment_everything

    EXAMPLES["segment_everything(boxes=...)"] += 1
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    image = ready_image()
    result = segment_everything(image, predictor=ready, boxes=boxes, decoder="mobile_sam")
    check_labels(result, IMAGE_SHAPE)
    assert result.n_objects <= len(clean_boxes(boxes, IMAGE_SHAPE)[0])


def ready_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8)


number = st.one_of(
    st.integers(-3, 400),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.5, True]),
)


@budget(40)
@given(
    conf=number,
    iou=number,
    max_objects=number,
    min_area=number,
    points_per_side=number,
)
def test_segment_everything_parameters(ready, conf, iou, max_objects, min_area, points_per_side):
    from napari_mobilesam import segment_everything

    EXAMPLES["segment_everything parameters"] += 1
    try:
        result = segment_everything(
            ready_image(),
            predictor=ready,
            boxes=[[4, 4, 30, 30], [10, 20, 60, 40]],
            decoder="mobile_sam",
            conf=conf,
            iou=iou,
            max_objects=max_objects,
            min_area=min_area,
            points_per_side=points_per_side,
        )
    except ValueError as error:
        names = ("conf", "iou", "max_objects", "min_area", "points_per_side")
        assert any(name in str(error) for name in names), str(error)
        return
    assert 0 <= conf <= 1 and 0 <= iou <= 1
    assert max_objects >= 1 and min_area >= 0
    check_labels(result, IMAGE_SHAPE)


# ------------------------------------------------------------------------ LabelCanvas
@st.composite
def candidates(draw):
    height, width = draw(st.integers(2, 24)), draw(st.integers(2, 24))
    count = draw(st.integers(0, 10))
    found = []
    for index in range(count):
        h, w = draw(st.integers(1, height)), draw(st.integers(1, width))
        y0, x0 = draw(st.integers(0, height - h)), draw(st.integers(0, width - w))
        mask = draw(hnp.arrays(np.bool_, (h, w)))
        box = np.array([index, y0, x0, 0], np.float32)  # identifies the candidate
        found.append(Candidate(index, y0, x0, mask, draw(st.floats(0, 1)), box))
    return (height, width), found, draw(st.integers(0, 6))


@budget(300)
@given(case=candidates(), zarr_like=st.booleans())
def test_label_canvas_invariants(case, zarr_like):
    EXAMPLES["LabelCanvas"] += 1
    shape, found, min_area = case
    out = _NotNumpy(np.zeros(shape, np.int32)) if zarr_like else None
    canvas = LabelCanvas(shape, min_area, out)
    for candidate in found:
        canvas.paste(candidate)
    boxes, scores, areas = canvas.finish()
    labels = np.asarray(canvas.labels if out is None else out.data)
    n = len(scores)
    assert labels.shape == shape
    present = np.unique(labels[labels > 0])
    assert present.tolist() == list(range(1, n + 1)), "ids are exactly 1..N"
    np.testing.assert_array_equal(areas, np.bincount(labels.ravel(), minlength=n + 1)[1:])
    assert (areas >= max(min_area, 1)).all()
    assert boxes.shape == (n, 4) and scores.shape == (n,)
    # Each labelled pixel lies in the mask of the candidate its features (box) came from.
    for label in range(1, n + 1):
        c = found[int(boxes[label - 1][0])]
        inside = np.zeros(shape, bool)
        inside[c.y0 : c.y0 + c.mask.shape[0], c.x0 : c.x0 + c.mask.shape[1]] = c.mask
        assert not (labels == label)[~inside].any()
    # Pixels covered by no pasted mask stay background.
    covered = np.zeros(shape, bool)
    for c in found:
        covered[c.y0 : c.y0 + c.mask.shape[0], c.x0 : c.x0 + c.mask.shape[1]] |= c.mask
    assert not labels[~covered].any()


class _NotNumpy:
    """An array that is not numpy (as zarr is), written by slices."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype

    def __getitem__(self, item):
        return self.data[item].copy()

    def __setitem__(self, item, value):
        self.data[item] = value


# ---------------------------------------------------------------------------- tiling
@budget(300)
@given(
    shape=st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
    tile=st.tuples(st.integers(16, 1100), st.integers(16, 1100)),
    halo=st.tuples(st.integers(0, 600), st.integers(0, 600)),
)
def test_tile_grid_inner_regions_cover_the_image_once(shape, tile, halo):
    EXAMPLES["TileGrid"] += 1
    try:
        grid = TileGrid(shape, tile, halo)
    except ValueError as error:
        assert "halo" in str(error)
        assert any(2 * h > t for h, t in zip(halo, tile, strict=True))
        return
    for axis in (0, 1):  # the grid is separable: check the row and column partitions
        spans = sorted({(t.inner[2 * axis], t.inner[2 * axis + 1]) for t in grid.tiles})
        assert spans[0][0] == 0 and spans[-1][1] == shape[axis]
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            assert a1 == b0, "no gap, no overlap"
        assert all(a0 < a1 for a0, a1 in spans)
    assert len(grid) == len({t.inner for t in grid.tiles})
    area = sum((t.inner[1] - t.inner[0]) * (t.inner[3] - t.inner[2]) for t in grid.tiles)
    assert area == shape[0] * shape[1]
    for t in grid.tiles:
        y0, y1, x0, x1 = t.outer
        assert 0 <= y0 <= t.inner[0] < t.inner[1] <= y1 <= shape[0]
        assert 0 <= x0 <= t.inner[2] < t.inner[3] <= x1 <= shape[1]
        assert grid.tile_at((t.inner[0] + t.inner[1] - 1) // 2, t.inner[2]) == t


# --------------------------------------------------------------------------- linking
@budget(120)
@given(
    stack=hnp.arrays(
        np.int32,
        st.tuples(st.integers(1, 4), st.integers(1, 10), st.integers(1, 10)),
        elements=st.integers(0, 4),
    ),
    axis=st.integers(0, 2),
    mode=st.sampled_from(["z", "t"]),
    iou=st.floats(0.05, 1.0),
    contained=st.none() | st.floats(0.05, 1.0),
    gap=st.integers(0, 2),
)
def test_link_slices_invariants(stack, axis, mode, iou, contained, gap):
    EXAMPLES["link_slices"] += 1
    result = link_slices(
        stack, axis=axis, mode=mode, iou_threshold=iou, min_contained=contained, max_gap=gap
    )
    labels = result.labels
    assert labels.shape == stack.shape and labels.dtype == np.int32
    np.testing.assert_array_equal(labels == 0, stack == 0)  # background stays background
    n = result.n_objects
    assert np.unique(labels[labels > 0]).tolist() == list(range(1, n + 1))
    moved_in, moved_out = np.moveaxis(stack, axis, 0), np.moveaxis(labels, axis, 0)
    for s in range(moved_in.shape[0]):
        for old, new in result.id_maps[s].items():
            assert (moved_out[s][moved_in[s] == old] == new).all(), "one id per object"
        assert set(result.id_maps[s]) == set(np.unique(moved_in[s][moved_in[s] > 0]).tolist())
        np.testing.assert_array_equal(
            result.area_per_slice[:, s], np.bincount(moved_out[s].ravel(), minlength=n + 1)[1:]
        )
    assert len(result.table) == n
    np.testing.assert_array_equal(result.table["volume"], result.area_per_slice.sum(axis=1))


@budget(60)
@given(
    stack=hnp.arrays(
        st.sampled_from([np.int8, np.int64, np.uint16, np.float32, np.bool_]),
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=4),
    ),
    axis=st.integers(-4, 4),
)
def test_link_slices_refuses_bad_stacks_clearly(stack, axis):
    EXAMPLES["link_slices malformed"] += 1
    try:
        result = link_slices(stack, axis=axis)
    except (TypeError, ValueError) as error:
        assert clear(str(error)), str(error)
        return
    assert result.labels.shape == stack.shape
