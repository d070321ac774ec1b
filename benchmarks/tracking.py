"""Linking label stacks: 3-D objects (Z) and tracks (T), against two baselines.

No model: the inputs are per-slice labels of synthetic stacks with known truth
(:mod:`napari_mobilesam.evaluation.synthetic_stacks`), scored with the project's
evaluation (Cellpose's AP at IoU 0.5 and micro-sam's mSA over the 3-D objects; for tracks
also the fraction of true tracks kept under one id and of divisions found).

Methods, all on the same input:

- ``ours``: :func:`napari_mobilesam.stacks.linking.link_slices` with its defaults
  (``+ image``: with the intensity image; ``+ spacing``: with the voxel size).
- ``stitch3D rule``: Cellpose's ``stitch3D`` rule (IoU >= 0.25 with the previous slice's
  best match, else a new id), re-implemented from its documentation in
  :func:`napari_mobilesam.evaluation.tracking.stitch_by_iou` -- not Cellpose itself.
- ``laptrack defaults``: ``laptrack.LapTrack()`` as shipped (squared centroid distance,
  cutoff 15² px², gap closing over 2 frames, no splitting or merging).

Z inputs: ``stacked_nuclei`` volumes (32 x 96 x 96, nuclei of radius 8 px, voxel 2:1:1,
60 % of the columns two nuclei high) as exact per-slice labels and with one-pixel
boundary noise and 4 % of the sections missed; and the crowded ellipsoids of
``benchmarks/stacks.py``. T inputs: ``moving_cells`` time-lapses (12 frames, 160², 16 cells
of radius 6 px, 2 divisions; and 40 cells of radius 8 px on 256² as in issue 18) at 0.3 to
1.5 radii per frame. Time per slice: wall time of the linking divided by the slices.

Run: ``python benchmarks/tracking.py [--seeds 3]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def laptrack_defaults(stack: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Link with ``LapTrack()`` on the objects' centroids; labels and {id: parent}."""
    import pandas as pd
    from laptrack import LapTrack
    from skimage.measure import regionprops_table

    rows = []
    for s, labels in enumerate(stack):
        props = regionprops_table(labels, properties=("label", "centroid"))
        y, x = props["centroid-0"], props["centroid-1"]
        rows.append(pd.DataFrame({"frame": s, "label": props["label"], "y": y, "x": x}))
    df = pd.concat(rows, ignore_index=True)
    track_df, split_df, _ = LapTrack().predict_dataframe(
        df, ["y", "x"], only_coordinate_cols=False
    )
    out = np.zeros(stack.shape, np.int32)
    for frame, label, track in track_df[["frame", "label", "track_id"]].to_numpy(np.int64):
        out[frame][stack[frame] == label] = track + 1
    parents = {}
    if not split_df.empty:
        for p, c in split_df[["parent_track_id", "child_track_id"]].to_numpy(np.int64):
            parents[int(c) + 1] = int(p) + 1
    return out, parents


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def z_rows(seeds: int) -> list[dict]:
    from napari_mobilesam.evaluation import match_objects
    from napari_mobilesam.evaluation.synthetic_stacks import per_slice_labels, stacked_nuclei
    from napari_mobilesam.evaluation.tracking import stitch_by_iou
    from napari_mobilesam.stacks.linking import link_slices
    from stacks import ellipsoids

    cases = []
    for seed in range(seeds):
        image, truth = stacked_nuclei((32, 96, 96), seed=seed)
        cases.append(("stacked nuclei, exact", image, truth, per_slice_labels(truth, seed=seed)))
        noisy = per_slice_labels(truth, boundary_noise=True, missed=0.04, seed=seed)
        cases.append(("stacked nuclei, noisy", image, truth, noisy))
        image, truth = ellipsoids(24, 256, 40, seed=seed)
        cases.append(("crowded ellipsoids", image, truth, per_slice_labels(truth, seed=seed)))
    methods = {
        "ours": lambda stack, image: link_slices(stack).labels,
        "ours + image": lambda stack, image: link_slices(stack, image=image).labels,
        "ours + spacing": lambda stack, image: link_slices(stack, spacing=(2, 1, 1)).labels,
        "ours, no neck rule": lambda stack, image: link_slices(stack, neck_ratio=None).labels,
        "stitch3D rule": lambda stack, image: stitch_by_iou(stack),
        "laptrack defaults": lambda stack, image: laptrack_defaults(stack)[0],
    }
    rows = []
    for name, image, truth, stack in cases:
        for method, fn in methods.items():
            linked, seconds = _timed(fn, stack, image)
            match = match_objects(linked, truth)
            rows.append({"input": name, "method": method, "AP50": match.ap50, "mSA": match.msa,
                         "ms/slice": 1000 * seconds / len(stack)})  # fmt: skip
    return rows


def t_rows(seeds: int) -> list[dict]:
    from napari_mobilesam.evaluation import match_objects
    from napari_mobilesam.evaluation.synthetic_stacks import moving_cells, per_slice_labels
    from napari_mobilesam.evaluation.tracking import stitch_by_iou, track_scores
    from napari_mobilesam.stacks.linking import link_slices

    def ours(stack):
        result = link_slices(stack, mode="t")
        return result.labels, result.table

    methods = {
        "ours": ours,
        "stitch3D rule": lambda stack: (stitch_by_iou(stack), {}),
        "laptrack defaults": laptrack_defaults,
    }
    scenes = {
        "16 cells r=6, 160²": dict(shape=(160, 160), n_cells=16, radius=6.0, divisions=2),
        "40 cells r=8, 256²": dict(shape=(256, 256), n_cells=40, radius=8.0, divisions=3),
    }
    rows = []
    for scene, kwargs in scenes.items():
        for speed in (0.3, 0.6, 1.0, 1.5):
            for seed in range(seeds):
                movie = moving_cells(12, speed=speed, seed=seed, **kwargs)
                stack = per_slice_labels(movie.labels, seed=seed)
                for method, fn in methods.items():
                    (linked, parents), seconds = _timed(fn, stack)
                    scores = track_scores(linked, movie.labels, movie.tracks, parents)
                    rows.append({"input": f"{scene}, {speed} radii/frame", "method": method,
                                 "AP50": match_objects(linked, movie.labels).ap50,
                                 "tracks kept": scores.kept,
                                 "divisions found": scores.divisions_found,
                                 "ms/slice": 1000 * seconds / len(stack)})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows).groupby(["input", "method"], sort=False).mean().reset_index()
    header = "| " + " | ".join(frame.columns) + " |"
    lines = [header, "|" + " --- |" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) and "ms" not in c else
                 f"{v:.1f}" if isinstance(v, float) else str(v)
                 for c, v in zip(frame.columns, row, strict=True)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="synthetic stacks per row (mean)")
    parser.add_argument("--only", choices=("z", "t"))
    args = parser.parse_args()
    if args.only != "t":
        print("3-D objects (mean over seeds)\n")
        print(table(z_rows(args.seeds)), "\n")
    if args.only != "z":
        print("Tracks (mean over seeds)\n")
        print(table(t_rows(args.seeds)))


if __name__ == "__main__":
    main()
