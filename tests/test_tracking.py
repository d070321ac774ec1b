"""3-D objects and tracks through laptrack, scored on synthetic stacks with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_mobilesam.evaluation import match_objects
from napari_mobilesam.evaluation.synthetic_stacks import (
    moving_cells,
    per_slice_labels,
    stacked_nuclei,
)
from napari_mobilesam.evaluation.tracking import stitch_by_iou, track_scores
from napari_mobilesam.stacks.linking import link_slices
from napari_mobilesam.stacks.track_files import ctc_lines, tracks_layer_data, write_track_files
from napari_mobilesam.stacks.z_necks import neck_cuts


@pytest.mark.parametrize("seed", [0, 1])
def test_nuclei_stacked_in_z_stay_apart_with_exact_labels(seed):
    _, truth = stacked_nuclei((32, 96, 96), seed=seed)
    stacked = per_slice_labels(truth, seed=seed)
    ours = match_objects(link_slices(stacked).labels, truth).ap50
    assert ours >= 0.95
    # Overlap alone joins the stacked pairs: the neck rule is what separates them.
    assert match_objects(link_slices(stacked, neck_ratio=None).labels, truth).ap50 < 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_per_slice_labels_beat_the_stitching_baseline(seed):
    image, truth = stacked_nuclei((32, 96, 96), seed=seed)
    noisy = per_slice_labels(truth, boundary_noise=True, missed=0.04, seed=seed)
    ours = match_objects(link_slices(noisy, spacing=(2.0, 1.0, 1.0)).labels, truth).ap50
    with_image = match_objects(link_slices(noisy, image=image).labels, truth).ap50
    baseline = match_objects(stitch_by_iou(noisy), truth).ap50
    assert ours >= 0.9 and with_image >= 0.9
    assert ours >= baseline and with_image >= baseline


@pytest.mark.parametrize("speed", [0.3, 0.6, 1.0, 1.5])
def test_tracks_kept_and_divisions_found_up_to_fast_motion(speed):
    movie = moving_cells(12, n_cells=16, speed=speed, divisions=2, seed=0)
    result = link_slices(per_slice_labels(movie.labels, seed=1), mode="t")
    scores = track_scores(result.labels, movie.labels, movie.tracks, result.table)
    assert scores.n_tracks == len(movie.tracks)
    assert scores.kept >= 0.95
    assert scores.divisions_found >= 0.75
    # Without velocities (frame-to-frame overlap only, as in Z) fast cells are lost.
    if speed >= 1.0:
        z_like = link_slices(per_slice_labels(movie.labels, seed=1), mode="z")
        assert track_scores(z_like.labels, movie.labels, movie.tracks, z_like.table).kept < 0.5


def test_division_is_recorded_as_two_daughters_of_the_mother():
    movie = moving_cells(10, n_cells=1, speed=0.5, divisions=1, seed=3)
    result = link_slices(per_slice_labels(movie.labels), mode="t")
    table = result.table.set_index("label")
    assert len(table) == 3
    mother = int(table.index[table["parent"] == 0][0])
    daughters = table.index[table["parent"] == mother]
    assert len(daughters) == 2
    assert (table.loc[daughters, "first_slice"] == table.loc[mother, "last_slice"] + 1).all()


def test_track_files_for_napari_and_the_cell_tracking_challenge(tmp_path):
    movie = moving_cells(8, n_cells=3, speed=0.5, divisions=1, seed=4)
    result = link_slices(per_slice_labels(movie.labels), mode="t")
    data, graph = tracks_layer_data(result.labels, result.table)
    n_points = sum(len(np.unique(frame[frame > 0])) for frame in result.labels)
    assert data.shape == (n_points, 4)
    assert sorted(np.unique(data[:, 0]).astype(int)) == sorted(result.table["label"])
    assert len(graph) == 2 and all(len(v) == 1 for v in graph.values())
    lines = ctc_lines(result.table)
    assert len(lines) == len(result.table)
    _, first, last, parent = map(int, lines[-1].split())
    assert (first, last) == (4, 7) and parent > 0
    csv_path, ctc_path = write_track_files(result.table, tmp_path, "movie")
    assert pd.read_csv(csv_path)["label"].tolist() == result.table["label"].tolist()
    assert ctc_path.read_text().splitlines() == lines
    with pytest.raises(ValueError, match="link_slices' table"):
        ctc_lines(pd.DataFrame({"label": [1]}))


def test_neck_rule():
    assert neck_cuts(np.array([50, 120, 200, 120, 40, 50, 130, 200, 130, 60]), 0.5) == [5]
    assert neck_cuts(np.array([50, 120, 200, 120, 110, 130, 200, 130, 60]), 0.5) == []
    three = [40, 150, 200, 150, 30, 150, 200, 150, 30, 160, 210, 140]
    assert neck_cuts(np.array(three), 0.5) == [5, 8]  # a neck goes with its larger neighbour
    assert neck_cuts(np.array([200, 150, 20, 150]), 0.5) == []  # a part needs two sections


def test_bad_tracking_parameters_are_refused_clearly():
    stack = np.zeros((3, 10, 10), np.int32)
    with pytest.raises(ValueError, match="search_radius"):
        link_slices(stack, mode="t", search_radius=0)
    with pytest.raises(ValueError, match="neck_ratio"):
        link_slices(stack, neck_ratio=1.5)
    with pytest.raises(ValueError, match="spacing"):
        link_slices(stack, spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="image"):
        link_slices(stack, image=np.zeros((3, 9, 9)))
    assert link_slices(stack, mode="t").n_objects == 0  # empty stacks are fine
