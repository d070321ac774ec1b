"""The SegAny widget on a large layer and on a multiscale layer, with real clicks.

Planes larger than 1024 px on a side are segmented tile by tile: a click encodes only the
tile that holds it, and the mask goes back to full-image coordinates. The model has random
weights (``random_weights``), so masks are noise-like: the tests check where masks go,
what is encoded and what is kept.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from qtpy.QtCore import Qt

from napari_mobilesam._widgets import SegAnyWidget
from test_widgets_segany import TIMEOUT_MS, canvas, click, wait_for_preview

pytestmark = pytest.mark.usefixtures("random_weights")


def mosaic(side: int) -> np.ndarray:
    """A side x side uint8 image: the cell sample repeated, with a little noise."""
    cell = skimage.data.cell()
    reps = (-(-side // cell.shape[0]), -(-side // cell.shape[1]))
    image = np.tile(cell, reps)[:side, :side]
    noise = np.random.default_rng(0).integers(0, 8, image.shape, dtype=np.uint8)
    return image // 2 + noise


def open_widget(make_napari_viewer, data, **image_kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(data, name="big", **image_kwargs)
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    return viewer, widget


def assert_inside(window, yx) -> None:
    y0, y1, x0, x1 = window
    assert y0 <= yx[0] < y1 and x0 <= yx[1] < x1, f"{yx} outside {window}"


def test_click_on_a_4096_layer_encodes_one_tile_and_accept_writes_in_place(
    make_napari_viewer, qtbot, encodes
):
    image = mosaic(4096)
    viewer, widget = open_widget(make_napari_viewer, image)
    controller = widget.controller
    assert (widget._tile_size.value, widget._halo.value) == (768, 128), "defaults shown"
    assert widget._level.native.isHidden(), "no level choice for a plain layer"

    click(qtbot, viewer, (1900, 1900))
    assert controller.status.startswith("Encoding tile (3, 3) of 6×6 of 'big'"), controller.status
    first = wait_for_preview(qtbot, controller)
    (yx,) = controller.points.data
    decoded = controller.preview.decoded
    window = decoded.region
    assert window == (1408, 2432, 1408, 2432), "tile (3, 3): 1536..2304 with its halo"
    assert_inside(window, yx)
    assert encodes == [(1024, 1024)], "only the clicked tile is encoded, at full resolution"
    assert "Tile (3, 3) of 6×6, encoded now." in controller.status
    assert decoded.masks.shape == (3, 1024, 1024)

    # The preview is the chosen mask at the tile's place in the 4096² layer.
    assert controller.preview_layer.data.shape == (4096, 4096)
    y0, y1, x0, x1 = window
    best = decoded.masks[decoded.ranking[0]]
    np.testing.assert_array_equal(first[y0:y1, x0:x1] > 0, best)
    assert (first > 0).sum() == best.sum(), "nothing outside the tile"

    # A second point in the same region: decoded on the cached tile.
    click(qtbot, viewer, (1950, 1960), Qt.KeyboardModifier.ShiftModifier)
    wait_for_preview(qtbot, controller)
    assert len(encodes) == 1
    assert "Tile (3, 3) of 6×6, cached." in controller.status
    mask = controller.preview.decoded.object_masks(0)[0]
    assert controller.preview.decoded.region == window

    # A label painted by hand inside the tile is kept.
    painted = np.zeros(image.shape, dtype=np.int32)
    painted[y0 : y0 + 512, x0:x1] = 7
    output = viewer.add_labels(painted.copy(), name="big labels")
    controller.set_output_layer(output)
    viewer.layers.selection.active = controller.points
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(output.data[painted == 7], 7)
    expected = np.zeros(image.shape, dtype=bool)
    expected[y0:y1, x0:x1] = mask
    np.testing.assert_array_equal(output.data == 8, expected & (painted == 0))
    assert len(controller.points.data) == 0 and not controller.preview_layer.data.any()

    # A click far away encodes that tile only.
    click(qtbot, viewer, (300, 3900))
    wait_for_preview(qtbot, controller)
    assert controller.preview.decoded.region == (0, 896, 3712, 4096)
    assert "Tile (1, 6) of 6×6, encoded now." in controller.status
    assert encodes[1:] == [(896, 384)], "the last tile, clipped at the image corner"


def test_a_box_larger_than_a_tile_uses_a_coarser_view(make_napari_viewer, qtbot, encodes):
    viewer, widget = open_widget(make_napari_viewer, mosaic(2048))
    controller = widget.controller
    controller.boxes.add_rectangles(
        np.array([[100, 100], [100, 1500], [1400, 1500], [1400, 100]], dtype=float)
    )
    assert controller.status.startswith("Encoding a coarser view"), controller.status
    wait_for_preview(qtbot, controller)
    decoded = controller.preview.decoded
    assert decoded.region == (0, 1540, 0, 1640)
    assert "coarser view" in controller.status
    assert encodes == [(1540, 1640)], "the window is resized into the model's input"
    assert controller.accept() == 1
    labels = viewer.layers["big labels"].data
    assert labels.shape == (2048, 2048) and not labels[1540:].any()


def test_multiscale_layer_level_0_tiled_and_level_1(make_napari_viewer, qtbot, encodes):
    full = mosaic(2048)
    pyramid = [full, full[::2, ::2].copy(), full[::4, ::4].copy()]
    viewer, widget = open_widget(make_napari_viewer, pyramid, multiscale=True)
    controller = widget.controller
    assert not widget._level.native.isHidden() and widget._level.value == 0
    assert [widget._level.native.itemText(i) for i in range(widget._level.native.count())] == [
        "0: 2048×2048 (full resolution)",
        "1: 1024×1024",
        "2: 512×512",
    ]

    # Level 0: full resolution, tile by tile (3 x 3 tiles).
    click(qtbot, viewer, (1000, 1100))
    assert controller.status.startswith("Encoding tile (2, 2) of 3×3"), controller.status
    wait_for_preview(qtbot, controller)
    (yx,) = controller.points.data
    assert encodes == [(1024, 1024)]
    window = controller.preview.decoded.region
    assert_inside(window, yx)
    mask = controller.preview.decoded.object_masks(0)[0]
    controller.accept()
    labels = viewer.layers["big labels"]
    assert labels.data.shape == (2048, 2048)
    np.testing.assert_array_equal(labels.scale, [1, 1])
    expected = np.zeros((2048, 2048), dtype=bool)
    expected[window[0] : window[1], window[2] : window[3]] = mask
    np.testing.assert_array_equal(labels.data == 1, expected)

    # Level 1: 1024² fits the model, encoded whole; prompts scaled to the level.
    widget._level.value = 1
    assert controller.level == 1
    click(qtbot, viewer, (600, 400))
    wait_for_preview(qtbot, controller)
    (yx,) = controller.points.data
    np.testing.assert_allclose(
        controller.preview.request.prompts.point_coords, [[yx[1] / 2, yx[0] / 2]]
    )
    assert encodes[1:] == [(1024, 1024)] and controller.preview.decoded.note == ""
    assert controller.preview_layer.data.shape == (1024, 1024)
    np.testing.assert_array_equal(controller.preview_layer.scale, [2, 2])
    level_mask = controller.preview.decoded.object_masks(0)[0]
    controller.accept()
    level_labels = viewer.layers["big labels level 1"]
    assert level_labels.data.shape == (1024, 1024)
    np.testing.assert_array_equal(level_labels.scale, [2, 2])
    np.testing.assert_array_equal(level_labels.data == 1, level_mask)
    np.testing.assert_array_equal(labels.data == 1, expected), "level 0 labels untouched"

    # Back to level 0: its output layer is found again, and the tile is still cached.
    widget._level.value = 0
    assert controller.output is labels
    click(qtbot, viewer, (1010, 1110))
    qtbot.waitUntil(lambda: controller.preview_ready, timeout=TIMEOUT_MS)
    assert len(encodes) == 2 and "cached" in controller.status
