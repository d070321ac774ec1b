"""Stacks: propagation (SegAny in 3-D) and linked SegEvery, time split and prefetch gain.

Three measurements on synthetic volumes of bright ellipsoids on noise:

1. ``propagate``: one object propagated through ``--slices`` slices of ``--side``² pixels
   (default 50 x 512²; ``iou_threshold=0`` so every slice is visited whatever the weights),
   with and without a background thread that encodes the next slices (``prefetch``).
2. ``segevery``: linked SegEvery on ``--ev-slices`` x ``--ev-side``² (default 20 x 1024²),
   one box per ellipsoid section as the prompts (the load of a detector finding them),
   with and without prefetch; the linked labels measured against the truth (Cellpose's
   AP at IoU 0.5 and mSA, of the 3-D objects and plane by plane).
3. ``projection``: every projection mode ("mask", "box", "points") on every ellipsoid,
   seeded on its middle slice with its true mask: mean 3-D IoU with the truth and the
   slices covered. Only meaningful with real weights (``--weights mobile_sam.pt``); with
   the random-weight default the numbers say nothing about the modes.

"Hidden" is the share of the encoding time that prefetch removed from the wall time:
(wall without - wall with) / encoding time without.

Run: ``python benchmarks/stacks.py [--weights PATH] [--only propagate|segevery|projection]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def ellipsoids(n_slices: int, side: int, count: int, seed: int = 0):
    """(S, side, side) float32 image and its int32 truth labels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:n_slices, :side, :side]
    truth = np.zeros((n_slices, side, side), np.int32)
    for label in range(1, count + 1):
        cz = rng.uniform(0.2, 0.8) * n_slices
        rz = rng.uniform(0.2, 0.45) * n_slices
        cy, cx = rng.uniform(0.1, 0.9, 2) * side
        ry, rx = rng.uniform(0.03, 0.08, 2) * side
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        truth[inside & (truth == 0)] = label
    image = rng.normal(100, 10, truth.shape).astype(np.float32)
    image[truth > 0] += 80
    return image, truth


def slice_boxes(truth: np.ndarray) -> list[np.ndarray]:
    from scipy.ndimage import find_objects

    out = []
    for labels in truth:
        boxes = [
            [s[1].start, s[0].start, s[1].stop, s[0].stop]
            for s in find_objects(labels)
            if s is not None
        ]
        out.append(np.array(boxes, np.float64).reshape(-1, 4))
    return out


def bench_propagate(predictor, args) -> dict:
    from napari_mobilesam.stacks.propagation import propagate_mask

    image, truth = ellipsoids(args.slices, args.side, 12)
    label = np.bincount(truth.ravel())[1:].argmax() + 1
    z = int(np.bincount(np.nonzero(truth == label)[0]).argmax())
    rows = {}
    for prefetch in (0, 2):
        predictor.clear_cache()
        start = time.perf_counter()
        result = propagate_mask(
            predictor, image, {z: truth[z] == label}, iou_threshold=0.0, prefetch=prefetch
        )
        wall = time.perf_counter() - start
        rows[f"prefetch={prefetch}"] = {
            "wall_s": round(wall, 2),
            "slices_decoded": len(result.visited) + 1,
            **{k: round(v, 2) for k, v in result.timings.items()},
        }
    return rows


def bench_segevery(predictor, args) -> dict:
    from napari_mobilesam.evaluation import match_objects, match_planes
    from napari_mobilesam.stacks.segevery_stack import segment_everything_stack

    image, truth = ellipsoids(args.ev_slices, args.ev_side, 60, seed=1)
    boxes = slice_boxes(truth)
    rows = {}
    for prefetch in (False, True):
        predictor.clear_cache()
        start = time.perf_counter()
        result = segment_everything_stack(
            image, predictor=predictor, boxes=boxes, decoder="mobile_sam", prefetch=prefetch
        )
        wall = time.perf_counter() - start
        volumes = match_objects(result.labels, truth)
        planes = match_planes(result.labels, truth, axis=0).total
        rows[f"prefetch={prefetch}"] = {
            "wall_s": round(wall, 2),
            "boxes": int(sum(len(b) for b in boxes)),
            "objects": result.n_objects,
            "AP50_3d": round(volumes.ap50, 3),
            "mSA_3d": round(volumes.msa, 3),
            "AP50_per_plane": round(planes.ap50, 3),
            "mSA_per_plane": round(planes.msa, 3),
            **{k: round(v, 2) for k, v in result.timings.items()},
        }
    return rows


def bench_projection(predictor, args) -> dict:
    from napari_mobilesam.stacks.propagation import PROJECTIONS, propagate_mask

    image, truth = ellipsoids(args.slices, args.side, 8, seed=2)
    rows = {}
    for mode in PROJECTIONS:
        ious, covered = [], []
        for label in range(1, truth.max() + 1):
            obj = truth == label
            if not obj.any():
                continue
            z = int(np.bincount(np.nonzero(obj)[0]).argmax())
            result = propagate_mask(predictor, image, {z: obj[z]}, projection=mode)
            inter = np.count_nonzero(result.mask & obj)
            ious.append(inter / np.count_nonzero(result.mask | obj))
            true_slices = set(np.flatnonzero(obj.any(axis=(1, 2))))
            covered.append(len(set(result.slices) & true_slices) / len(true_slices))
        rows[mode] = {
            "mean_3d_iou": round(float(np.mean(ious)), 3),
            "mean_slices_covered": round(float(np.mean(covered)), 3),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=SHARED / "parity" / "mobile_sam_seed0.pt")
    parser.add_argument("--only", choices=("propagate", "segevery", "projection"))
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--ev-slices", type=int, default=20)
    parser.add_argument("--ev-side", type=int, default=1024)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch

    from napari_mobilesam import SegAnyPredictor, build_mobile_sam

    predictor = SegAnyPredictor(build_mobile_sam(args.weights), device=args.device)
    report = {
        "weights": str(args.weights),
        "device": str(predictor.device),
        "torch_threads": torch.get_num_threads(),
    }
    benches = {
        "propagate": bench_propagate,
        "segevery": bench_segevery,
        "projection": bench_projection,
    }
    for name, bench in benches.items():
        if args.only in (None, name):
            report[name] = bench(predictor, args)
            print(json.dumps({name: report[name]}), flush=True)
    for name in ("propagate", "segevery"):
        rows = report.get(name)
        if rows:
            without, with_ = rows[next(iter(rows))], rows[list(rows)[1]]
            hidden = (without["wall_s"] - with_["wall_s"]) / max(without["embedding"], 1e-9)
            print(f"{name}: prefetch hid {100 * hidden:.0f} % of the encoding time")


if __name__ == "__main__":
    main()
