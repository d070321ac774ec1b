"""Linked tracks where the user sees them: a napari Tracks layer next to the Labels layer
(SegEvery widget, T axis) and CSV + Cell Tracking Challenge files next to the label images
(batch CLI). The models have random weights: the tests check where tracks go and that
they agree with the labels, not what the masks look like."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import RANDOM_WEIGHTS
from napari_mobilesam._widgets import SegEveryWidget
from napari_mobilesam.batch.cli import main as cli_main
from napari_mobilesam.evaluation.synthetic_stacks import moving_cells

pytestmark = pytest.mark.usefixtures("random_weights")
TIMEOUT_MS = 300_000


@pytest.fixture
def movie() -> np.ndarray:
    """A 4-frame time-lapse of bright moving cells on noise."""
    labels = moving_cells(4, shape=(96, 96), n_cells=4, radius=10, speed=0.3, seed=5).labels
    rng = np.random.default_rng(0)
    return (30 + 150 * (labels > 0) + rng.normal(0, 5, labels.shape)).astype(np.float32)


def test_segevery_tracks_appear_as_a_tracks_layer(make_napari_viewer, qtbot, movie, yolo_file):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(movie, name="movie", axis_labels=("time", "y", "x"), scale=(1, 0.5, 0.5))
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    qtbot.waitUntil(lambda: widget.visible)
    widget._detector.value = "file"
    widget._detector_file.value = yolo_file
    widget._conf.value = 0.0
    widget._max_objects.value = 4
    widget._scope.value = "all slices"
    assert widget._link.value == "t" and widget._search_radius.visible
    widget._max_gap.value = 2
    assert widget.settings().link_options.max_gap == 2

    job = widget.run()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    assert job.outcome.state == "done", job.outcome.message
    labels, features, tracks = job.result_layer, job.result_layer.features, job.tracks_layer
    assert tracks is not None and tracks in viewer.layers
    assert {"index", "first_slice", "last_slice", "parent"} <= set(features.columns)
    assert "label" not in features  # one id column: napari's "index"
    assert sorted(np.unique(tracks.data[:, 0]).astype(int)) == sorted(features["index"])
    for track_id, t in tracks.data[:, :2].astype(int):
        assert (labels.data[t] == track_id).any(), "a track point on a frame without its label"
    parents = features.set_index("index")["parent"]
    assert {k: v for k, v in tracks.graph.items()} == {
        int(k): [int(v)] for k, v in parents.items() if v > 0
    }
    np.testing.assert_allclose(tracks.scale, labels.scale)


def test_cli_writes_tracks_next_to_the_labels(tmp_path, movie, yolo_file):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(
        folder / "cells.tif",
        movie.astype(np.uint16),
        photometric="minisblack",
        metadata={"axes": "TYX"},
    )
    out = tmp_path / "out"
    common = ["segment", str(folder), "-o", str(out), "--detector", str(yolo_file)]
    common += ["--weights", str(RANDOM_WEIGHTS), "--conf", "0.01", "--max-objects", "4", "-q"]
    assert cli_main([*common, "--search-radius", "30", "--max-gap", "1"]) == 0

    labels = tifffile.imread(out / "cells_labels.tif")
    table = pd.read_csv(out / "cells_tracks.csv")
    ids = np.unique(labels[labels > 0])
    assert sorted(table["label"]) == ids.tolist()
    for line in (out / "cells_man_track.txt").read_text().splitlines():
        track, first, last, parent = map(int, line.split())
        frames = np.flatnonzero((labels == track).any(axis=(1, 2)))
        assert (first, last) == (frames[0], frames[-1])
        assert parent == 0 or parent in ids

    with pytest.raises(SystemExit):  # a bad parameter: argparse's clear error, exit 2
        cli_main([*common, "--neck-ratio", "1.5"])
