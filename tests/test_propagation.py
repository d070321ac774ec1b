"""Propagation of one object's mask through a stack (SegAny in 3-D).

A stand-in predictor that returns known masks tests the walk, the stopping rule and the
fill between annotated slices exactly; the real model code (random weights, noise-like
masks) tests the same structure end to end.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.imaging.prepared_input import content_key as _content_key
from napari_mobilesam.stacks.projection import interior_points, mask_box, mask_to_logits
from napari_mobilesam.stacks.propagation import propagate_mask
from napari_mobilesam.stacks.slices import StackSlices

LIMITS = (0.0, 100.0)


def make_stack(n=12, shape=(32, 32)) -> np.ndarray:
    """Slices that differ (slice z holds the value z in a corner) so each has its own
    content, and therefore its own embedding."""
    rng = np.random.default_rng(0)
    stack = rng.uniform(10, 90, (n, *shape)).astype(np.float32)
    stack[:, 0, 0] = np.arange(n)
    return stack


class StandIn:
    """The predictor interface, returning ``truth[z]`` on slice z whatever the prompt."""

    def __init__(self, stack: np.ndarray, truth: np.ndarray, scores=None) -> None:
        self.truth = truth
        self.scores = np.full(len(truth), 0.9) if scores is None else scores
        self.by_key = {
            _content_key(to_rgb_uint8(image, LIMITS)): z for z, image in enumerate(stack)
        }
        self.z = None
        self.encoded: list[int] = []
        self.prompts: dict[int, dict] = {}
        self.input_size = (1024, 1024)

    def set_image(self, rgb, contrast_limits=None) -> None:
        self.z = self.by_key[_content_key(rgb)]
        self.encoded.append(self.z)

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output=True,
    ):
        self.prompts[self.z] = dict(
            point_coords=point_coords,
            box=box,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )
        c = 3 if multimask_output else 1
        masks = np.repeat(self.truth[self.z][None], c, axis=0)
        low_res = np.full((c, 256, 256), float(self.z), np.float32)
        return masks, np.full(c, self.scores[self.z], np.float32), low_res


def square(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def truth_spanning(n, first, last, shape=(32, 32)):
    truth = np.zeros((n, *shape), bool)
    for z in range(first, last + 1):
        truth[z] = square(shape, 8, 24, 8, 24)
    return truth


def test_walks_outwards_and_stops_on_empty_masks():
    stack = make_stack()
    truth = truth_spanning(12, 3, 8)
    model = StandIn(stack, truth)
    result = propagate_mask(model, stack, {5: {"box": [8, 8, 24, 24]}}, contrast_limits=LIMITS)
    assert result.slices.tolist() == [3, 4, 5, 6, 7, 8]
    assert result.visited.tolist() == [4, 3, 2, 6, 7, 8, 9]
    assert result.stops == {"lower": "empty mask at slice 2", "upper": "empty mask at slice 9"}
    assert (result.mask == truth).all()
    assert result.annotated.tolist() == [5]
    assert model.encoded == [5, 4, 3, 2, 6, 7, 8, 9]  # each slice encoded when needed


def test_stops_when_iou_with_previous_slice_drops():
    stack = make_stack()
    truth = truth_spanning(12, 0, 11)
    truth[9] = square((32, 32), 8, 24, 18, 30)  # IoU with slice 8: 96 / 352 = 0.27
    model = StandIn(stack, truth)
    result = propagate_mask(model, stack, {5: truth[5]}, contrast_limits=LIMITS)
    assert result.slices.tolist() == list(range(0, 9))
    assert result.stops["upper"] == "IoU 0.27 < 0.5 at slice 9"
    assert result.stops["lower"] == "reached slice 0"
    assert not result.mask[9:].any()
    # A lower threshold lets it through.
    assert propagate_mask(
        model, stack, {5: truth[5]}, iou_threshold=0.2, contrast_limits=LIMITS
    ).slices.tolist() == list(range(12))


def test_stops_on_predicted_iou_when_asked():
    stack = make_stack()
    truth = truth_spanning(12, 0, 11)
    scores = np.full(12, 0.9)
    scores[7] = 0.3
    model = StandIn(stack, truth, scores)
    result = propagate_mask(model, stack, {5: truth[5]}, min_score=0.5, contrast_limits=LIMITS)
    assert result.slices.max() == 6
    assert result.stops["upper"] == "predicted IoU 0.30 < 0.5 at slice 7"


def test_fills_between_annotated_slices_from_both_ends():
    stack = make_stack()
    truth = truth_spanning(12, 0, 11)
    truth[6] = square((32, 32), 0, 4, 0, 4)  # would stop an outward walk: not here
    model = StandIn(stack, truth)
    prompts = {2: truth[2], 9: {"box": [8, 8, 24, 24]}}
    result = propagate_mask(model, stack, prompts, bounds=(2, 9), contrast_limits=LIMITS)
    assert result.visited.tolist() == [3, 8, 4, 7, 5, 6]  # both ends, the middle last
    assert result.slices.tolist() == list(range(2, 10))
    assert result.stops == {"lower": "bound 2", "upper": "bound 9"}
    # Six slices between: three from each end, each prompted by its neighbour on its walk.
    np.testing.assert_allclose(model.prompts[3]["box"], mask_box(truth[2], 0.05))


def test_odd_gap_middle_slice_uses_the_union_of_both_neighbours():
    stack = make_stack()
    truth = truth_spanning(12, 0, 11)
    lower = square((32, 32), 2, 12, 2, 12)
    upper = square((32, 32), 20, 30, 20, 30)
    model = StandIn(stack, truth)
    propagate_mask(model, stack, {4: lower, 6: upper}, bounds=(4, 6), contrast_limits=LIMITS)
    np.testing.assert_allclose(model.prompts[5]["box"], mask_box(lower | upper, 0.05))
    np.testing.assert_allclose(
        model.prompts[5]["mask_input"], mask_to_logits(lower | upper, (1024, 1024))
    )


def test_projection_modes_prompt_as_documented():
    stack = make_stack()
    truth = truth_spanning(12, 0, 11)
    model = StandIn(stack, truth)
    propagate_mask(
        model, stack, {5: {"box": [8, 8, 24, 24]}}, bounds=(4, 6), contrast_limits=LIMITS
    )
    prompt = model.prompts[6]  # mask: box + the previous call's own logits
    assert prompt["box"] is not None and prompt["point_coords"] is None
    assert (prompt["mask_input"] == 5.0).all()
    propagate_mask(
        model, stack, {5: truth[5]}, projection="box", bounds=(4, 6), contrast_limits=LIMITS
    )
    assert model.prompts[6]["mask_input"] is None and model.prompts[6]["box"] is not None
    propagate_mask(
        model, stack, {5: truth[5]}, projection="points", bounds=(4, 6), contrast_limits=LIMITS
    )
    points = model.prompts[6]["point_coords"]
    assert model.prompts[6]["box"] is None and 1 <= len(points) <= 3
    assert truth[5][points[:, 1].astype(int), points[:, 0].astype(int)].all()


def test_geometry_helpers():
    mask = square((40, 50), 10, 20, 5, 25)
    assert mask_box(mask).tolist() == [5, 10, 25, 20]
    assert mask_box(mask, 0.1).tolist() == [3, 9, 27, 21]
    points = interior_points(mask, 3)
    assert mask[points[:, 1].astype(int), points[:, 0].astype(int)].all()
    logits = mask_to_logits(mask, (820, 1024))  # 40 x 50 resized into the 1024 frame
    assert logits.shape == (1, 256, 256)
    assert logits[0, 60, 60] > 6 and logits[0, 10, 10] < -6 and logits[0, 250, 250] < -6


def test_paint_into_writes_one_id_and_nothing_else():
    stack = make_stack()
    truth = truth_spanning(12, 3, 8)
    result = propagate_mask(StandIn(stack, truth), stack, {5: truth[5]}, contrast_limits=LIMITS)
    labels = np.zeros(stack.shape, np.int32)
    labels[0, 0:2, 0:2] = 3
    assert result.paint_into(labels, 7) == truth.sum()
    assert np.unique(labels).tolist() == [0, 3, 7]
    assert (labels == 7).sum() == truth.sum()


def test_cancel_returns_nothing_and_leaves_labels():
    stack = make_stack()
    truth = truth_spanning(12, 0, 11)
    labels = np.zeros(stack.shape, np.int32)

    def cancel(done, total):
        if done == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        propagate_mask(
            StandIn(stack, truth), stack, {5: truth[5]}, progress=cancel, contrast_limits=LIMITS
        )
    assert not labels.any()


def test_stack_layouts():
    stack = make_stack(4)
    one_time_point = stack[None]  # (T=1, Z, H, W): walk along Z, axis 1
    truth = truth_spanning(4, 0, 3)
    result = propagate_mask(
        StandIn(stack, truth), one_time_point, {1: truth[1]}, axis=1, contrast_limits=LIMITS
    )
    assert result.mask.shape == (1, 4, 32, 32) and result.slices.tolist() == [0, 1, 2, 3]
    rgb = StackSlices(np.zeros((3, 8, 8, 3), np.uint8) + np.arange(8, dtype=np.uint8)[:, None])
    assert rgb.rgb and rgb.mask_shape == (3, 8, 8) and rgb.contrast_limits is None


def test_bad_input_is_refused_clearly():
    stack = make_stack(4)
    model = StandIn(stack, truth_spanning(4, 0, 3))
    box = {"box": [1, 1, 9, 9]}
    with pytest.raises(ValueError, match="no axis to walk along"):
        propagate_mask(model, stack[0], {0: box})
    with pytest.raises(ValueError, match="not a stack axis"):
        propagate_mask(model, stack, {0: box}, axis=1)
    with pytest.raises(ValueError, match="not a stack axis"):
        propagate_mask(model, stack, {0: box}, axis=4)
    with pytest.raises(ValueError, match="more than one axis"):
        propagate_mask(model, np.stack([stack, stack]), {0: box}, axis=1)
    with pytest.raises(ValueError, match="on no slice"):
        propagate_mask(model, stack, {})
    with pytest.raises(ValueError, match=r"slices 0\.\.3"):
        propagate_mask(model, stack, {7: box})
    with pytest.raises(ValueError, match="empty"):
        propagate_mask(model, stack, {1: np.zeros((32, 32), bool)})
    with pytest.raises(ValueError, match="unknown prompt keys"):
        propagate_mask(model, stack, {1: {"points": [[1, 2]]}})
    with pytest.raises(ValueError, match="projection"):
        propagate_mask(model, stack, {1: box}, projection="lasso")


# ----------------------------------------------------------- the real model code
def seed_mask():
    return square((32, 32), 6, 26, 6, 26)


def test_real_model_visits_every_slice_without_a_threshold(predictor):
    stack = make_stack(5)
    result = propagate_mask(predictor, stack, {2: seed_mask()}, iou_threshold=0.0)
    assert result.mask.shape == (5, 32, 32) and result.mask.dtype == bool
    lower_end = result.stops["lower"]
    # The walk goes 1, 0 then 3, 4 unless a mask comes back empty (then it stops there).
    lower = (
        [1, 0] if lower_end == "reached slice 0" else result.visited[: 1 + (1 in result.slices)]
    )
    assert result.visited.tolist()[: len(lower)] == list(lower)
    assert set(result.slices) <= {0, 1, 2, 3, 4} and 2 in result.slices
    labels = np.zeros((5, 32, 32), np.int32)
    result.paint_into(labels, 4)
    assert np.unique(labels).tolist() in ([0, 4], [4])


def test_real_model_stops_by_its_rule(predictor):
    stack = make_stack(5)
    result = propagate_mask(predictor, stack, {2: seed_mask()}, iou_threshold=1.0)
    # A noise mask never equals the seed: each walk stops on its first slice.
    assert result.visited.tolist() == [1, 3]
    assert result.slices.tolist() == [2]
    for reason in result.stops.values():
        assert reason.startswith(("IoU", "empty mask"))


def test_real_model_fills_between_two_annotated_slices(predictor):
    stack = make_stack(5)
    result = propagate_mask(
        predictor, stack, {0: seed_mask(), 4: seed_mask()}, iou_threshold=0.0, prefetch=2
    )
    assert result.visited.tolist() == [1, 3, 2]
    assert result.stops == {"lower": "reached slice 0", "upper": "reached slice 4"}
    assert {0, 4} <= set(result.slices.tolist())
    again = propagate_mask(predictor, stack, {0: seed_mask(), 4: seed_mask()}, iou_threshold=0.0)
    assert (again.mask == result.mask).all()  # prefetched embeddings give the same masks
