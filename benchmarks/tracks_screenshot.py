"""The README's Tracks layer screenshot: a synthetic time-lapse linked into tracks.

16 cells (radius 6 px) moving at 1 radius per frame on 160² over 12 frames, two of them
dividing at frame 6; the per-frame labels (ids shuffled on every frame) linked with
``link_slices(mode="t")``, shown as napari shows a linked SegEvery result: the image, the
Labels layer (its features are the tracks table) and the Tracks layer with the lineage graph.
Prints the track figures of this movie.

Run: ``xvfb-run -a python benchmarks/tracks_screenshot.py [--out docs/images/tracks_layer.png]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import napari
    from PIL import Image

    from napari_mobilesam.evaluation.synthetic_stacks import moving_cells, per_slice_labels
    from napari_mobilesam.evaluation.tracking import track_scores
    from napari_mobilesam.stacks.linking import link_slices
    from napari_mobilesam.stacks.track_files import tracks_layer_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/tracks_layer.png"))
    args = parser.parse_args()

    movie = moving_cells(12, n_cells=16, speed=1.0, divisions=2, seed=0)
    rng = np.random.default_rng(0)
    image = 30 + 150 * (movie.labels > 0) + rng.normal(0, 8, movie.labels.shape)
    result = link_slices(per_slice_labels(movie.labels, seed=0), mode="t")
    scores = track_scores(result.labels, movie.labels, movie.tracks, result.table)
    print(f"{len(movie.tracks)} true tracks, {result.n_objects} linked; kept {scores.kept:.2f}, "
          f"divisions found {scores.divisions_found:.2f}")  # fmt: skip

    viewer = napari.Viewer(show=True)
    viewer.add_image(image.astype(np.float32), name="movie", axis_labels=("t", "y", "x"))
    labels = viewer.add_labels(result.labels, name="movie objects", opacity=0.5)
    labels.features = result.table
    data, graph = tracks_layer_data(result.labels, result.table)
    viewer.add_tracks(data, graph=graph, name="movie tracks", tail_length=12, tail_width=3)
    viewer.dims.set_point(0, 9)
    viewer.window.resize(900, 800)
    viewer.reset_view()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(viewer.screenshot(canvas_only=False)).save(args.out)
    viewer.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
