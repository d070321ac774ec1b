"""Tiles of large images: geometry, ownership, joining cut boxes, bounded-memory painting."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.imaging.convert import select_level
from napari_mobilesam.imaging.label_canvas import Candidate, LabelCanvas
from napari_mobilesam.imaging.tiling import TileGrid, needs_tiling, read_region
from napari_mobilesam.segevery.tiled import join_cut_boxes


@pytest.mark.parametrize("shape", [(3000, 4500), (769, 1537), (100, 2000)])
def test_inner_regions_cover_the_image_once_and_outer_regions_add_the_halo(shape):
    grid = TileGrid(shape, tile_shape=768, halo=128)
    count = np.zeros(shape, np.int32)
    for tile in grid.tiles:
        y0, y1, x0, x1 = tile.inner
        count[y0:y1, x0:x1] += 1
        oy0, oy1, ox0, ox1 = tile.outer
        assert (oy0, ox0) == (max(y0 - 128, 0), max(x0 - 128, 0))
        assert (oy1, ox1) == (min(y1 + 128, shape[0]), min(x1 + 128, shape[1]))
        assert tile.shape[0] <= 1024 and tile.shape[1] <= 1024
    assert (count == 1).all()


def test_a_box_belongs_to_the_tile_of_its_centre():
    grid = TileGrid((2000, 2000), tile_shape=768, halo=128)
    boxes = np.array([[700, 700, 760, 760], [740, 10, 800, 30], [1600, 1600, 1700, 1700]])
    owners = grid.owners(boxes)
    assert [grid.tiles[i].index for i in owners] == [(0, 0), (0, 1), (2, 2)]


def test_boxes_are_decoded_where_they_have_the_most_margin():
    grid = TileGrid((2000, 2000), tile_shape=768, halo=128)
    # Near the seam at x = 768: the tile on the right holds it with more margin.
    tiles, whole = grid.best_tiles(np.array([[760, 300, 800, 340], [10, 10, 1900, 1900]]))
    assert grid.tiles[tiles[0]].index == (0, 1) and whole[0]
    assert not whole[1]  # larger than any tile with its halo


def test_image_border_is_no_edge():
    grid = TileGrid((2000, 2000), tile_shape=768, halo=128)
    margins = grid.margins(grid.tiles[0], np.array([[0, 0, 10, 10]]))
    assert margins[0] == 896 - 10  # only the right and bottom edges count


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_shape": 8}, "tile_shape of at least 16"),
        ({"halo": -1}, "halo of at least 0"),
        ({"tile_shape": 256, "halo": 200}, "at most half the tile"),
        ({"tile_shape": (256, 256, 3)}, "one integer or two"),
        ({"tile_shape": "big"}, "one integer or two"),
    ],
)
def test_bad_tile_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TileGrid((1000, 1000), **kwargs)


def test_needs_tiling():
    assert not needs_tiling((1024, 1024))
    assert needs_tiling((1025, 10))


def test_read_region_reads_numpy_dask_and_zarr_alike():
    import dask.array as da
    import zarr

    image = np.random.default_rng(0).integers(0, 65535, (1500, 1700), dtype=np.uint16)
    tile = TileGrid(image.shape, 768, 128).tiles[3]
    stored = zarr.create_array(store={}, shape=image.shape, chunks=(256, 256), dtype=image.dtype)
    stored[:] = image
    for source in (image, da.from_array(image, chunks=300), stored):
        np.testing.assert_array_equal(read_region(source, tile), image[tile.slices])


def test_select_level_of_a_pyramid():
    pyramid = [np.zeros((64, 64)), np.zeros((32, 32))]
    assert select_level(pyramid, 1).shape == (32, 32)
    assert select_level(pyramid, None).shape == (64, 64)
    with pytest.raises(ValueError, match="level 2 does not exist"):
        select_level(pyramid, 2)
    with pytest.raises(ValueError, match="not multiscale"):
        select_level(np.zeros((8, 8)), 1)


def test_cut_boxes_of_one_object_are_joined_and_others_are_not():
    boxes = np.array(
        [
            [700, 100, 896, 200],  # tile 0's part of an object crossing x = 768
            [640, 105, 1000, 195],  # tile 1's part of the same object
            [700, 400, 896, 420],  # cut, but nothing on the other side overlaps it
            [10, 10, 50, 50],  # not cut
        ],
        float,
    )
    joined, scores = join_cut_boxes(
        boxes, np.array([0.5, 0.9, 0.8, 0.7]), np.array([1, 1, 1, 0], bool), np.array([0, 1, 0, 0])
    )
    np.testing.assert_array_equal(
        joined, [[640, 100, 1000, 200], [700, 400, 896, 420], [10, 10, 50, 50]]
    )
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7])


def test_canvas_on_a_zarr_array_equals_the_canvas_in_memory():
    import zarr

    rng = np.random.default_rng(1)
    candidates = []
    for index in range(60):
        h, w = rng.integers(3, 40, 2)
        y0, x0 = rng.integers(0, 200 - h), rng.integers(0, 300 - w)
        mask = rng.random((h, w)) > 0.3
        candidates.append(
            Candidate(index, int(y0), int(x0), mask, 1.0, np.array([x0, y0, x0 + w, y0 + h]))
        )
    in_memory = LabelCanvas((200, 300), min_area=5)
    on_disk = LabelCanvas(
        (200, 300),
        min_area=5,
        out=zarr.create_array(store={}, shape=(200, 300), chunks=(64, 64), dtype=np.int32),
    )
    for candidate in candidates:
        in_memory.paste(candidate)
    with on_disk.window(0, 100, 0, 300):
        for candidate in candidates:
            if candidate.y0 + candidate.mask.shape[0] <= 100:
                on_disk.paste(candidate)
    for candidate in candidates:
        if candidate.y0 + candidate.mask.shape[0] > 100:
            on_disk.paste(candidate)  # each pasted through a window of its own
    # Paste order differs, so compare the invariants, then equality in one order.
    expected = in_memory.finish()
    got = on_disk.finish()
    assert len(got[0]) == len(expected[0])
    labels = np.asarray(on_disk.labels)
    assert labels.max() == len(got[0])
    np.testing.assert_array_equal(np.bincount(labels.ravel())[1:], got[2])

    ordered = LabelCanvas(
        (200, 300),
        min_area=5,
        out=zarr.create_array(store={}, shape=(200, 300), chunks=(64, 64), dtype=np.int32),
    )
    for candidate in candidates:
        ordered.paste(candidate)
    ordered.finish()
    np.testing.assert_array_equal(np.asarray(ordered.labels), in_memory.labels)


def test_canvas_refuses_an_output_of_another_shape():
    with pytest.raises(ValueError, match="shape"):
        LabelCanvas((10, 10), 0, out=np.zeros((10, 11), np.int32))
