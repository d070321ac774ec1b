"""TiledSegAnyPredictor: routing, lazy encoding, geometry and array types (no Qt).

The ``predictor`` fixture has random weights, so masks are noise-like: these tests check
where masks go, what is encoded and that equal inputs give equal outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from napari_mobilesam.imaging.tiling import Tile, TileGrid
from napari_mobilesam.segany.predictor import SegAnyPredictor
from napari_mobilesam.segany.tiled import (
    COARSE_INDEX,
    TiledPrediction,
    TiledSegAnyPredictor,
    coarse_window,
    combine_predictions,
    prompt_bounds,
    route_prompts,
)


@pytest.fixture(scope="module")
def large() -> np.ndarray:
    """A 2048 x 2560 uint16 image (3 x 4 tiles of 768): the cell sample, tiled and noisy."""
    cell = skimage.data.cell().astype(np.uint16) * 40
    rng = np.random.default_rng(0)
    image = np.tile(cell, (4, 5))[:2048, :2560]
    return image + rng.integers(0, 200, image.shape, dtype=np.uint16)


# ------------------------------------------------------------------- routing
def test_route_picks_the_tile_with_the_most_margin():
    grid = TileGrid((2048, 2560))
    # x 700 lies in the inner region of column 0 (0..768) but only 68 px from its edge;
    # tile column 1 (outer 640..1664) holds it with 60 px margin, column 0 (outer 0..896)
    # with 196 px: column 0 wins.
    tile, coarse = route_prompts(grid, point_coords=[[700, 100]])
    assert (tile.index, coarse) == ((0, 0), False)
    # x 880: column 0 holds it with 16 px, column 1 with 240 px.
    tile, _ = route_prompts(grid, point_coords=[[880, 1000]])
    assert tile.index == (1, 1)
    # Points and a box together: their common bounding box decides.
    tile, coarse = route_prompts(grid, point_coords=[[1700, 50]], box=[1600, 10, 1800, 90])
    assert tile.index == (0, 2) and not coarse
    assert tile.outer[2] <= 1600 and 1800 <= tile.outer[3]


def test_a_box_larger_than_a_tile_falls_back_to_a_coarse_view():
    grid = TileGrid((2048, 2560))
    box = [100, 200, 1500, 1300]  # 1400 x 1100 px: more than 768 + 2 * 128
    tile, coarse = route_prompts(grid, box=box)
    assert coarse and tile.index == COARSE_INDEX
    # grown by 10 % of the longer side (140 px), clipped to the image
    assert tile.outer == (60, 1440, 0, 1640)
    assert tile.inner == tile.outer
    # a small box near the border: at least 16 px of context
    assert coarse_window(grid, [10, 10, 20, 20]).outer == (0, 36, 0, 36)


def test_prompt_bounds_and_clear_errors():
    np.testing.assert_array_equal(prompt_bounds([[5, 6]], None), [5, 6, 5, 6])
    with pytest.raises(ValueError, match="at least one prompt"):
        prompt_bounds(None, None)
    with pytest.raises(ValueError, match="shape \\(N, 2\\)"):
        prompt_bounds([1, 2, 3], None)
    with pytest.raises(ValueError, match="halo"):
        TiledSegAnyPredictor(object.__new__(SegAnyPredictor), tile_shape=256, halo=200)
    with pytest.raises(TypeError, match="SegAnyPredictor"):
        TiledSegAnyPredictor(object())


# ------------------------------------------------------------ lazy encoding
def test_set_image_encodes_nothing_and_predict_encodes_only_the_routed_tile(
    predictor, encodes, large
):
    tiled = TiledSegAnyPredictor(predictor)
    tiled.set_image(large)
    assert encodes == [] and tiled.grid.grid_shape == (3, 4)
    assert tiled.contrast_limits is not None, "one display range for every tile"

    target = tiled.grid.tiles[6]  # row 1, column 2: a full 1024 x 1024 outer region
    assert not tiled.is_encoded(target)
    first = tiled.predict([[1900, 1150]], [1])
    assert first.tile == target and first.encoded_now and not first.coarse
    assert encodes == [(1024, 1024)], "one tile, encoded at the model's input size"
    assert tiled.is_encoded(target)
    assert not any(tiled.is_encoded(t) for t in tiled.grid.tiles if t != target)
    assert first.masks.shape == (3, 1024, 1024) and first.masks.dtype == bool
    assert first.scores.shape == (3,) and first.offset == (640, 1408)

    second = tiled.predict([[1900, 1150], [1950, 1200]], [1, 0])
    assert second.tile == target and not second.encoded_now
    assert second.masks.shape == (1, 1024, 1024) or second.masks.shape[0] == 3
    assert len(encodes) == 1, "a second prompt in the same region is decoded only"

    other = tiled.predict([[100, 100]], [1])
    assert other.tile.index == (0, 0) and other.encoded_now and other.tile.shape == (896, 896)
    back = tiled.predict([[1900, 1150]], [1])
    assert not back.encoded_now, "coming back to a tile uses the cached embedding"
    np.testing.assert_array_equal(back.masks, first.masks)
    assert encodes == [(1024, 1024), (896, 896)]


def test_tiled_masks_are_the_tile_crop_masks_at_the_tile_offset(predictor, large):
    tiled = TiledSegAnyPredictor(predictor)
    tiled.set_image(large)
    point, box = np.array([[1900.0, 1150.0]]), np.array([1850.0, 1100.0, 1990.0, 1260.0])
    result = tiled.predict(point, [1], box=box, multimask_output=False)
    y0, y1, x0, x1 = result.window
    assert (y0, x0) == result.offset

    # The same prompts, moved into the crop, on the crop itself.
    plain = SegAnyPredictor(predictor.model, device="cpu")
    plain.set_image(large[y0:y1, x0:x1], contrast_limits=tiled.contrast_limits)
    masks, scores, _ = plain.predict(
        point - [x0, y0], [1], box=box - [x0, y0, x0, y0], multimask_output=False
    )
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_allclose(result.scores, scores)

    # Pasted into full-image coordinates: the mask lands at the offset, nothing elsewhere.
    full = result.full_masks(large.shape)
    assert full.shape == (1, *large.shape)
    np.testing.assert_array_equal(full[0, y0:y1, x0:x1], masks[0])
    assert full[0].sum() == masks[0].sum()
    labels = np.zeros(large.shape, dtype=np.int32)
    assert result.paste_into(labels, 0, 5) == masks[0].sum()
    np.testing.assert_array_equal(labels == 5, full[0])


def test_paste_into_keeps_existing_labels_unless_overwrite():
    masks = np.zeros((2, 4, 6), dtype=bool)
    masks[0, 1:3, 1:5] = True
    tile = Tile((0, 0), (10, 14, 20, 26), (10, 14, 20, 26))
    result = TiledPrediction(masks, np.ones(2), np.zeros((2, 256, 256)), tile, False, True)
    labels = np.zeros((30, 40), dtype=np.uint16)
    labels[11, 21] = 9  # painted by hand
    assert result.paste_into(labels, 0, 3) == 7
    assert labels[11, 21] == 9 and (labels == 3).sum() == 7
    assert labels[11:13, 22:25].tolist() == [[3, 3, 3], [3, 3, 3]]
    assert result.paste_into(labels, 0, 4, overwrite=True) == 8
    assert labels[11, 21] == 4
    with pytest.raises(ValueError, match="outside"):
        result.paste_into(np.zeros((12, 40), np.uint16), 0, 1)


def test_combine_predictions_places_masks_in_one_window():
    def one(outer, value):
        y0, y1, x0, x1 = outer
        masks = np.full((1, y1 - y0, x1 - x0), value, dtype=bool)
        return TiledPrediction(
            masks, np.ones(1), np.zeros((1, 256, 256)), Tile((0, 0), outer, outer), False, False
        )

    masks, window = combine_predictions([one((10, 20, 30, 40), True), one((15, 18, 0, 5), True)])
    assert window == (10, 20, 0, 40) and masks.shape == (2, 10, 40)
    assert masks[0, :, 30:].all() and masks[0].sum() == 100
    assert masks[1, 5:8, :5].all() and masks[1].sum() == 15


def test_boxes_are_decoded_on_their_own_tiles(predictor, encodes, large):
    tiled = TiledSegAnyPredictor(predictor)
    tiled.set_image(large)
    boxes = np.array(
        [
            [100, 100, 200, 220],  # tile (0, 0)
            [150, 300, 260, 400],  # tile (0, 0) too: decoded in the same batch
            [1800, 1700, 1900, 1800],  # tile (2, 2)
            [50, 50, 2000, 1500],  # no tile holds it: coarse view
        ],
        dtype=float,
    )
    results = tiled.predict_boxes(boxes)
    assert [r.tile.index for r in results] == [(0, 0), (0, 0), (2, 2), COARSE_INDEX]
    assert [r.coarse for r in results] == [False, False, False, True]
    assert all(r.masks.shape[0] == 1 and r.scores.shape == (1,) for r in results)
    assert len(encodes) == 3, "each tile once, and the coarse view"
    assert max(encodes[-1]) > 1024, "the coarse window is resized into the model's input"

    # Each box alone on its tile gives the same mask.
    alone = tiled.predict(box=boxes[2], multimask_output=False)
    np.testing.assert_array_equal(alone.masks, results[2].masks)


# --------------------------------------------------------- small and types
def test_a_small_image_through_the_tiled_path_equals_the_untiled_result(predictor):
    image = skimage.data.cell()[:600, :500]  # uint8, one tile
    plain = SegAnyPredictor(predictor.model, device="cpu")
    plain.set_image(image)
    tiled = TiledSegAnyPredictor(predictor)
    tiled.set_image(image)
    assert tiled.grid.is_single
    for points, labels, box in (
        ([[300, 200]], [1], None),
        ([[300, 200], [320, 260]], [1, 0], None),
        (None, None, [100, 120, 400, 380]),
    ):
        multi = points is not None and len(points) == 1
        result = tiled.predict(points, labels, box=box, multimask_output=multi)
        masks, scores, low_res = plain.predict(points, labels, box=box, multimask_output=multi)
        assert result.offset == (0, 0) and result.window == (0, 600, 0, 500)
        np.testing.assert_array_equal(result.masks, masks)
        np.testing.assert_array_equal(result.scores, scores)
        np.testing.assert_array_equal(result.low_res_logits, low_res)

    float_image = image.astype(np.float32) * 3.5  # percentile contrast, also equal
    plain.set_image(float_image)
    tiled.set_image(float_image)
    result = tiled.predict([[300, 200]], [1])
    masks, scores, _ = plain.predict([[300, 200]], [1])
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_array_equal(result.scores, scores)


def test_dask_and_zarr_give_the_numpy_masks(predictor, encodes, large, tmp_path):
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    stored = zarr.open(
        str(tmp_path / "large.zarr"), mode="w", shape=large.shape, chunks=(512, 512),
        dtype=large.dtype,
    )  # fmt: skip
    stored[:] = large
    point = [[2400, 1900]]  # tile (2, 3): the bottom-right corner

    results = {}
    for name, image in (
        ("numpy", large),
        ("dask", da.from_array(large, chunks=(512, 512))),
        ("zarr", stored),
    ):
        tiled = TiledSegAnyPredictor(predictor)
        tiled.set_image(image)
        results[name] = tiled.predict(point, [1])
    reference = results["numpy"]
    assert reference.tile.index == (2, 3)
    for name in ("dask", "zarr"):
        assert results[name].tile == reference.tile
        np.testing.assert_array_equal(results[name].masks, reference.masks, err_msg=name)
        np.testing.assert_array_equal(results[name].scores, reference.scores, err_msg=name)
    assert len(encodes) == 1, "the same tile content is encoded once, then cached"


def test_predict_needs_an_image_and_a_prompt(predictor):
    tiled = TiledSegAnyPredictor(predictor)
    with pytest.raises(RuntimeError, match="set_image"):
        tiled.predict([[1, 1]], [1])
    tiled.set_image(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    with pytest.raises(ValueError, match="at least one prompt"):
        tiled.predict()
    with pytest.raises(ValueError, match="2-D image"):
        tiled.set_image(np.zeros((3, 4, 64, 64)))
