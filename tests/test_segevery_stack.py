"""Linked SegEvery over a stack: structure with the real model code (random weights), and
the linking of known per-slice labels through the stack API."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.segevery import pipeline as segevery
from napari_mobilesam.segevery.pipeline import SegEveryResult
from napari_mobilesam.stacks.segevery_stack import segment_everything_stack

BOXES = np.array([[4, 4, 30, 30], [34, 34, 60, 60]], np.float64)


def make_stack(n=3, side=64):
    rng = np.random.default_rng(1)
    stack = rng.uniform(0, 50, (n, side, side)).astype(np.float32)
    stack[:, 8:28, 8:28] += 100
    stack[:, 38:58, 38:58] += 150
    return stack


def test_structure_with_the_real_model(predictor):
    stack = make_stack()
    result = segment_everything_stack(
        stack, predictor=predictor, boxes=[BOXES] * 3, decoder="mobile_sam"
    )
    assert result.labels.shape == stack.shape and result.labels.dtype == np.int32
    assert result.slice_labels.shape == stack.shape
    ids = np.unique(result.labels)
    ids = ids[ids > 0]
    assert ids.tolist() == result.table["label"].tolist() == list(range(1, result.n_objects + 1))
    assert result.area_per_slice.shape == result.score_per_slice.shape == (result.n_objects, 3)
    # Every pixel labelled on a slice before linking is labelled after, and vice versa.
    assert ((result.labels > 0) == (result.slice_labels > 0)).all()
    assert {"discovery", "embedding", "decoding", "linking"} <= set(result.timings)
    prefetched = segment_everything_stack(
        stack, predictor=predictor, boxes=[BOXES] * 3, decoder="mobile_sam", prefetch=True
    )
    assert (prefetched.labels == result.labels).all()


def test_links_known_slice_labels(monkeypatch):
    """segment_everything replaced by known labels: one id per 3-D object, scores kept."""
    truth = np.zeros((4, 20, 20), np.int32)
    truth[:, 2:8, 2:8] = 1
    truth[1:3, 12:18, 12:18] = 2
    calls = []

    def fake(image, *, boxes=None, contrast_limits=None, progress=None, **kwargs):
        s = int(image[0, 0])
        calls.append((s, contrast_limits))
        labels = np.zeros((20, 20), np.int32)
        ids = [v for v in (2, 1) if (truth[s] == v).any()]  # reversed ids per slice
        for new, v in enumerate(ids, start=1):
            labels[truth[s] == v] = new
        scores = np.linspace(0.9, 0.8, len(ids)).astype(np.float32)
        return SegEveryResult(labels, np.zeros((len(ids), 4)), scores, np.zeros(len(ids)))

    monkeypatch.setattr(segevery, "segment_everything", fake)
    stack = np.random.default_rng(0).uniform(10, 20, (4, 20, 20))
    stack[:, 0, 0] = np.arange(4)
    result = segment_everything_stack(stack, predictor=object())
    assert len(np.unique(result.labels)) == 3
    assert (result.labels[truth == 1] == result.labels[0, 3, 3]).all()
    assert result.table["first_slice"].tolist() == [0, 1]
    assert result.table["last_slice"].tolist() == [3, 2]
    assert result.table["volume"].tolist() == [144, 72]
    assert np.isfinite(result.score_per_slice[1, 1:3]).all()
    # One contrast range for every slice.
    assert len({limits for _, limits in calls}) == 1


def test_cancel_returns_nothing(predictor):
    stack = make_stack()

    def cancel(done, total):
        if done >= 1:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        segment_everything_stack(
            stack, predictor=predictor, boxes=[BOXES] * 3, decoder="mobile_sam", progress=cancel
        )


def test_blank_slice_is_empty_not_an_error(monkeypatch):
    def fake(image, **kwargs):
        labels = np.zeros(image.shape[:2], np.int32)
        labels[2:6, 2:6] = 1
        return SegEveryResult(labels, np.zeros((1, 4)), np.ones(1), np.ones(1))

    monkeypatch.setattr(segevery, "segment_everything", fake)
    stack = np.random.default_rng(0).uniform(0, 1, (3, 10, 10))
    stack[1] = 0.5
    result = segment_everything_stack(stack, predictor=object())
    assert "blank" in result.messages[1] and not result.labels[1].any()
    assert result.n_objects == 1  # the one-slice gap is closed


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="no axis to walk along"):
        segment_everything_stack(np.ones((10, 10)), predictor=object())
    with pytest.raises(ValueError, match="not a stack axis"):
        segment_everything_stack(make_stack(), axis=2, predictor=object())
    with pytest.raises(ValueError, match="one \\(N, 4\\) array per slice"):
        segment_everything_stack(make_stack(), boxes=[BOXES], predictor=object())
    with pytest.raises(ValueError, match="mode"):
        segment_everything_stack(make_stack(), mode="xy", predictor=object())


def test_a_stack_loads_its_detector_once(monkeypatch, predictor):
    """One detector load per run, not one per slice (offline, "auto" would otherwise try
    its download again on every slice)."""
    from napari_mobilesam.segevery import discovery

    def one_box(image):
        return np.array([[4, 4, 30, 30]], np.float32), np.array([0.9], np.float32)

    loaded = []

    def load(detector, **kwargs):
        if isinstance(detector, str):
            loaded.append(detector)
            return one_box
        return detector  # a loaded detector is returned as it is

    monkeypatch.setattr(discovery, "load_detector", load)
    result = segment_everything_stack(
        make_stack(), predictor=predictor, detector="nuclei", decoder="mobile_sam"
    )
    assert loaded == ["nuclei"]
    assert result.labels.shape == (3, 64, 64)


def test_segment_planes_numbers_ids_through_the_planes_and_hands_each_over(monkeypatch):
    from napari_mobilesam.segevery.options import SegEveryOptions
    from napari_mobilesam.stacks.planes import PlaneSkipped, segment_planes

    def fake(image, *, out=None, **kwargs):
        labels = np.zeros((10, 10), np.int32)
        labels[1:3, 1:3], labels[5:8, 5:8] = 1, 2
        if out is not None:
            out[...] = labels
            labels = out
        return SegEveryResult(labels, np.zeros((2, 4)), np.array([0.9, 0.8]), np.array([4, 9]))

    def read_plane(number):
        if number == 1:
            raise PlaneSkipped("blank")
        return np.ones((10, 10)), None

    monkeypatch.setattr(segevery, "segment_everything", fake)
    stack = np.zeros((3, 10, 10), np.int32)
    handed = []
    summary = segment_planes(
        read_plane,
        3,
        SegEveryOptions(detector="grid"),
        sink=handed.append,
        predictor=object(),
        out=stack.__getitem__,
    )
    assert [plane.skipped for plane in handed] == [False, True, False]
    assert handed[2].ids.tolist() == [3, 4] and handed[1].message == "blank"
    assert np.unique(stack[2]).tolist() == [0, 3, 4] and not stack[1].any()
    assert summary.n_objects == 4
