"""Benchmark: SegEvery on large images, tile by tile, and a click in an encoded tile.

Each size runs in a fresh Python process (so that its peak resident memory is its own):

* a synthetic uint16 image of ``side``² pixels with its true labels
  (:func:`napari_mobilesam.evaluation.synthetic_nuclei`): nuclei 12-20 pixels across, about
  one per 128-pixel cell (256 at 2048², 1024 at 4096², 4096 at 8192²), blurred, with noise;
* a *perfect detector*: a callable that returns the bounding boxes of the bright blobs in
  the tile it is shown (threshold + :func:`skimage.measure.regionprops`), which is what an
  ideal object-aware model would propose, so discovery time is the tiling's overhead and
  not a YOLO's;
* :func:`napari_mobilesam.segment_everything` with MobileSAM's own decoder
  (``decoder="mobile_sam"``), default tiles (768 + 128 halo), the labels written into a
  preallocated int32 array;
* for the largest size also a click: one point in a tile that is already encoded, timed
  through :class:`napari_mobilesam.segany.tiled.TiledSegAnyPredictor` (median of 5).

The labels are measured against the truth (Cellpose's AP at IoU 0.5 and micro-sam's mSA,
:func:`napari_mobilesam.evaluation.match_objects`). The default weights are random
(``../shared/fixtures/parity/mobile_sam_seed0.pt``): the timings and memory are those of
the real model, but its masks are not meaningful and AP is near 0; with ``--weights
mobile_sam.pt`` the same columns measure the real model.

Usage::

    python benchmarks/large_images.py                       # 2048, 4096 and 8192
    python benchmarks/large_images.py --sizes 2048 4096
    python benchmarks/large_images.py --quick               # 2048 only

See the "Large images" section of ``benchmarks/README.md`` for how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = HERE.parents[1] / "shared/fixtures/parity/mobile_sam_seed0.pt"
DEFAULT_SIZES = (2048, 4096, 8192)
CELL = 128  # one object per CELL x CELL pixels
CLICKS = 5
MIB = 2**20


# ----------------------------------------------------------------------------- inputs
def synthetic_image(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (side, side) uint16 image of nuclei and its true labels (``synthetic_nuclei``).

    About one nucleus (radii 6-10 pixels) per ``CELL``-pixel cell, placed at random, none
    deliberately touching: the perfect detector below separates them by thresholding.
    """
    from napari_mobilesam.evaluation import synthetic_nuclei

    count = (side // CELL) ** 2
    return synthetic_nuclei(
        (side, side), n_objects=count, radius=(6.0, 10.0), touching=0.0, seed=seed
    )


def perfect_detector(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (x0, y0, x1, y1) boxes of the bright blobs of a tile, all scored 1."""
    import skimage.measure

    regions = skimage.measure.regionprops(skimage.measure.label(rgb[..., 0] > 128))
    boxes = np.array([(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regions], float)
    return boxes.reshape(-1, 4), np.ones(len(regions))


# ------------------------------------------------------------------------------- child
def run_row(side: int, weights: Path, threads: int, click: bool) -> dict[str, float]:
    """Measure one size in this process; the keys are the table's columns."""
    import torch

    sys.path.insert(0, str(HERE))
    from _measure import PeakRSS
    from napari_mobilesam import SegAnyPredictor, build_mobile_sam, segment_everything

    torch.set_num_threads(threads)
    from napari_mobilesam.evaluation import match_objects

    image, truth = synthetic_image(side)
    limits = (0.0, 4000.0)
    predictor = SegAnyPredictor(build_mobile_sam(weights), "cpu", cache_size=4)
    # Warm-up (one tile-sized encode and decode), outside the measurement.
    segment_everything(
        image[:1024, :1024],
        predictor=predictor,
        detector=perfect_detector,
        decoder="mobile_sam",
        contrast_limits=limits,
    )
    labels = np.full(image.shape, 0, np.int32)  # written, so its pages are resident
    start = time.perf_counter()
    with PeakRSS() as peak:
        result = segment_everything(
            image,
            predictor=predictor,
            detector=perfect_detector,
            decoder="mobile_sam",
            conf=0.0,
            max_objects=1000,
            contrast_limits=limits,
            out=labels,
        )
    wall = time.perf_counter() - start
    quality = match_objects(labels, truth)
    row = {
        "side": side,
        "drawn": quality.n_true,
        "ap50": quality.ap50,
        "msa": quality.msa,
        "found": result.n_objects,
        "tiles": result.tiles_encoded,
        "embedding": result.timings.get("embedding", 0.0),
        "discovery": result.timings.get("discovery", 0.0),
        "decoding": result.timings.get("decoding", 0.0),
        "wall": wall,
        "peak_mib": peak.growth_mib,
        "labels_mib": labels.nbytes / MIB,
    }
    if click:
        row.update(time_click(image, predictor, limits))
    return row


def time_click(image: np.ndarray, predictor, limits: tuple[float, float]) -> dict[str, float]:
    """Median seconds of a one-point click in a tile that is already encoded."""
    try:
        from napari_mobilesam.segany.tiled import TiledSegAnyPredictor
    except ImportError:  # pragma: no cover - older checkouts: time the plain predictor
        TiledSegAnyPredictor = None

    side = image.shape[0]
    point = np.array([[side / 2 + 5, side / 2 + 5]], float)  # x, y, near the middle
    seconds = []
    if TiledSegAnyPredictor is not None:
        tiled = TiledSegAnyPredictor(predictor)
        tiled.set_image(image, contrast_limits=limits)
        tiled.predict(point, [1])  # encodes the tile under the point
        for _ in range(CLICKS):
            start = time.perf_counter()
            tiled.predict(point, [1])
            seconds.append(time.perf_counter() - start)
        how = "TiledSegAnyPredictor"
    else:
        from napari_mobilesam.imaging.convert import to_rgb_uint8

        y0, x0 = int(point[0, 1]) - 512, int(point[0, 0]) - 512
        crop = to_rgb_uint8(image[y0 : y0 + 1024, x0 : x0 + 1024], limits)
        predictor.set_image(crop)
        for _ in range(CLICKS):
            start = time.perf_counter()
            predictor.predict(point - [x0, y0], [1])
            seconds.append(time.perf_counter() - start)
        how = "SegAnyPredictor on the tile crop"
    return {"click": statistics.median(seconds), "click_how": how}


# ------------------------------------------------------------------------------ parent
def measure_in_subprocess(side: int, weights: Path, threads: int, click: bool) -> dict[str, float]:
    """Run :func:`run_row` in a fresh interpreter and return its row."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(side),
        "--weights",
        str(weights),
        "--threads",
        str(threads),
    ]
    if click:
        command.append("--click")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side}² failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: Sequence[dict[str, float]]) -> str:
    """The rows as a markdown table, and the click line under it."""
    header = (
        "| image | objects drawn / found | tiles encoded | encoding s | discovery s "
        "| decoding s | wall s | s per tile | peak RSS growth MiB | label image MiB "
        "| AP50 | mSA |"
    )
    lines = [header, "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"]
    for r in rows:
        lines.append(
            f"| {r['side']}² | {r['drawn']} / {r['found']} | {r['tiles']} "
            f"| {r['embedding']:.1f} | {r['discovery']:.1f} | {r['decoding']:.1f} "
            f"| {r['wall']:.1f} | {r['wall'] / max(r['tiles'], 1):.2f} "
            f"| {r['peak_mib']:,.0f} | {r['labels_mib']:,.0f} "
            f"| {r['ap50']:.2f} | {r['msa']:.2f} |"
        )
    clicks = [r for r in rows if "click" in r]
    for r in clicks:
        lines.append("")
        lines.append(
            f"Click in an encoded tile of the {r['side']}² image: "
            f"{r['click'] * 1000:.1f} ms (median of {CLICKS}, {r['click_how']})."
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--quick", action="store_true", help="2048² only")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--click", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_row(args.child, args.weights, args.threads, args.click)))
        return 0
    if not args.weights.is_file():
        print(f"weights not found: {args.weights}", file=sys.stderr)
        return 1
    sizes = [2048] if args.quick else sorted(args.sizes)
    rows = []
    for side in sizes:
        print(f"... {side}²", file=sys.stderr, flush=True)
        rows.append(measure_in_subprocess(side, args.weights, args.threads, side == sizes[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        f"CPU, {args.threads} torch threads, {platform.processor() or platform.machine()}, "
        "random weights, perfect detector, decoder mobile_sam, tiles 768 + 128 halo\n"
    )
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
