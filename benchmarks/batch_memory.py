"""Peak memory of ``napari-mobilesam segment`` over one large image (default 8192², uint16 TIFF).

The run is a child process: its peak resident set (``ru_maxrss`` of children) is reported,
next to the sizes of the image and of the int32 label image. Weights are random
(``../shared/fixtures/parity/mobile_sam_seed0.pt``) and the detector a random one-class
YOLOv8n, capped at ``--max-objects`` boxes per tile.

Run: ``python benchmarks/batch_memory.py [--side 8192] [--coco]`` (8192²: 5-8 minutes on
two cores). 8192² with ``--coco``, 968 objects: peak RSS 10,487 MiB before the batch run
was made plane by plane (issue 15), 2,541 MiB after.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "fixtures" / "parity" / "mobile_sam_seed0.pt"
MIB = 2**20
CLI = "import sys; from napari_mobilesam.cli import main; sys.exit(main(sys.argv[1:]))"


def write_image(path: Path, side: int) -> None:
    """A tiled uint16 TIFF: noise with a bright 16-pixel square every 128 pixels."""
    import tifffile

    rng = np.random.default_rng(0)
    image = np.empty((side, side), np.uint16)
    for y in range(0, side, 1024):
        band = rng.normal(1000, 100, (min(1024, side - y), side))
        image[y : y + len(band)] = np.clip(band, 0, 65535)
    yy, xx = np.mgrid[:side:128, :side:128]
    for cy, cx in zip(yy.ravel() + 64, xx.ravel() + 64, strict=True):
        image[cy - 8 : cy + 8, cx - 8 : cx + 8] += 20000
    tifffile.imwrite(path, image, tile=(512, 512))


def segment_command(image: Path, out: Path, detector: Path, args: argparse.Namespace) -> list:
    """The console script's ``segment`` command line, run by this Python."""
    command = [sys.executable, "-c", CLI, "segment", str(image), "-o", str(out)]
    command += ["--detector", str(detector), "--max-objects", str(args.max_objects)]
    command += ["--conf", str(args.conf), "--decoder", "mobile_sam", "-q"]
    if args.coco:
        command += ["--coco", str(out / "coco.json")]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=8192, help="image side (default 8192)")
    parser.add_argument("--max-objects", type=int, default=8, help="boxes per tile")
    parser.add_argument("--coco", action="store_true", help="write COCO annotations too")
    parser.add_argument("--conf", type=float, default=0.01, help="detector confidence")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from batch import random_detector

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = work / "mosaic.tif"
        write_image(image, args.side)
        detector = random_detector(work, "yolov8n.yaml")
        env = dict(os.environ, NAPARI_MOBILESAM_WEIGHTS=str(WEIGHTS))
        start = time.perf_counter()
        done = subprocess.run(segment_command(image, work / "out", detector, args), env=env)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        pixels = args.side**2
        print(
            f"exit {done.returncode}; {args.side}² uint16 image {2 * pixels / MIB:.0f} MiB, "
            f"int32 labels {4 * pixels / MIB:.0f} MiB; peak RSS {peak / MIB:.0f} MiB; "
            f"wall {wall:.0f} s"
        )
        print(sorted(os.listdir(work / "out")))


if __name__ == "__main__":
    main()
