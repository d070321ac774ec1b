"""The one prompt rule of SegAny (napari_mobilesam.segany.prompts), without napari or a model.

Several boxes are separate objects (one mask each); one point alone gives three candidates;
points and one box make one object. A fake predictor records the decoder calls.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.imaging.tiling import TileGrid
from napari_mobilesam.segany.prompts import (
    PromptSet,
    decode_prompts,
    decode_prompts_tiled,
    prompt_tiles,
)
from napari_mobilesam.segany.tiled import TiledSegAnyPredictor, route_prompts


class RecordingPredictor:
    """Returns masks of the right shape and records how it was called."""

    def __init__(self, shape=(64, 64)) -> None:
        self.shape = shape
        self.calls: list[tuple[str, dict]] = []
        self.images: list = []

    def set_image(self, image, contrast_limits=None) -> None:
        self.images.append(image)
        self.shape = tuple(np.shape(getattr(image, "rgb", image)))[:2]

    def has_embedding(self, key) -> bool:
        return False

    current_key = None

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        self.calls.append(
            (
                "predict",
                dict(
                    point_coords=point_coords,
                    point_labels=point_labels,
                    box=box,
                    multimask_output=multimask_output,
                ),
            )
        )
        count = 3 if multimask_output else 1
        masks = np.zeros((count, *self.shape), bool)
        return masks, np.linspace(0.9, 0.5, count, dtype=np.float32), np.zeros((count, 4, 4))

    def predict_boxes(self, boxes):
        self.calls.append(("predict_boxes", dict(boxes=np.asarray(boxes))))
        count = len(boxes)
        masks = np.zeros((count, *self.shape), bool)
        return masks, np.full(count, 0.8, np.float32), np.zeros((count, 4, 4))


def test_one_point_alone_gives_three_candidates_of_one_object():
    predictor = RecordingPredictor()
    decoded = decode_prompts(predictor, PromptSet(point_coords=[[10, 20]], point_labels=[1]))
    ((name, call),) = predictor.calls
    assert name == "predict" and call["multimask_output"] is True
    assert call["box"] is None
    np.testing.assert_array_equal(call["point_coords"], [[10, 20]])
    assert decoded.masks.shape == (3, 64, 64) and not decoded.separate_objects


def test_several_points_or_points_with_a_box_give_one_mask_of_one_object():
    predictor = RecordingPredictor()
    decode_prompts(predictor, PromptSet([[10, 20], [30, 40]], [1, 0]))
    decoded = decode_prompts(predictor, PromptSet([[10, 20]], [1], boxes=[[0, 0, 32, 32]]))
    (_, two_points), (_, point_and_box) = predictor.calls
    assert two_points["multimask_output"] is False
    np.testing.assert_array_equal(two_points["point_labels"], [1, 0])
    assert point_and_box["multimask_output"] is False
    np.testing.assert_array_equal(point_and_box["box"], [0, 0, 32, 32])
    assert decoded.masks.shape == (1, 64, 64) and not decoded.separate_objects


def test_one_box_alone_is_one_object():
    predictor = RecordingPredictor()
    decode_prompts(predictor, PromptSet(boxes=[0, 0, 32, 32]))
    ((name, call),) = predictor.calls
    assert name == "predict" and call["multimask_output"] is False
    assert call["point_coords"] is None and call["point_labels"] is None


def test_several_boxes_are_separate_objects_and_points_are_not_used():
    predictor = RecordingPredictor()
    prompts = PromptSet([[5, 5]], [1], boxes=[[0, 0, 10, 10], [20, 20, 40, 40]])
    assert prompts.separate_objects and prompts.points_ignored
    decoded = decode_prompts(predictor, prompts)
    ((name, call),) = predictor.calls
    assert name == "predict_boxes"
    np.testing.assert_array_equal(call["boxes"], [[0, 0, 10, 10], [20, 20, 40, 40]])
    assert decoded.separate_objects and decoded.masks.shape == (2, 64, 64)
    with pytest.raises(ValueError, match="2 boxes are 2 objects"):
        prompts.one_object()


def test_prompt_set_normalises_and_checks_its_arrays():
    prompts = PromptSet(point_coords=[[1, 2], [3, 4]])
    assert prompts.point_labels.tolist() == [1, 1], "points are foreground by default"
    assert prompts.boxes.shape == (0, 4) and not prompts.empty
    assert PromptSet().empty
    assert PromptSet.from_prompt({"box": [0, 0, 5, 5]}).boxes.shape == (1, 4)
    with pytest.raises(ValueError, match="one label per point"):
        PromptSet([[1, 2]], [1, 0])
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        PromptSet(boxes=[[0, 0, 1]])


def test_prompt_tiles_are_the_tiles_the_tiled_predictor_decodes_on():
    image = np.random.default_rng(0).integers(0, 4000, (2048, 2048)).astype(np.uint16)
    one_point = PromptSet([[1000, 300]], [1])
    boxes = PromptSet(boxes=[[10, 10, 60, 60], [1500, 1500, 1600, 1600], [10, 20, 50, 50]])
    huge_box = PromptSet(boxes=[[100, 100, 1900, 1900]])
    grid = TileGrid(image.shape)
    for prompts in (one_point, boxes, huge_box):
        tiled = TiledSegAnyPredictor(RecordingPredictor(), tile_shape=768, halo=128)
        tiled.set_image(image, contrast_limits=(0, 4000))
        predictions, separate = decode_prompts_tiled(tiled, prompts)
        assert separate == prompts.separate_objects
        decoded_on = tuple(dict.fromkeys(p.tile for p in predictions))
        assert prompt_tiles(grid, prompts) == decoded_on
    assert prompt_tiles(grid, one_point) == (route_prompts(grid, [[1000, 300]])[0],)
    assert len(prompt_tiles(grid, boxes)) == 2, "two boxes share a tile, which is read once"


def test_each_tile_is_converted_and_hashed_once():
    image = np.random.default_rng(1).integers(0, 4000, (2048, 2048)).astype(np.uint16)
    predictor = RecordingPredictor()
    tiled = TiledSegAnyPredictor(predictor, tile_shape=768, halo=128)
    tiled.set_image(image, contrast_limits=(0, 4000))
    tiled.predict([[100, 100]], [1])
    (handed,) = predictor.images
    assert hasattr(handed, "key") and handed.rgb.dtype == np.uint8, "a ModelInput, not pixels"
