"""The image encoder of napari-mobilesam and of ultralytics, each in a process of its own.

``run.py`` measures everything in one process, where napari-mobilesam's allocator setting
(see ``src/napari_mobilesam/_allocator.py``) also speeds up the peers measured after it.
This script shows what each user gets: every side runs in a fresh Python process with its
library's own defaults, on the same weights and image.

    python benchmarks/encoder_processes.py [--size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "parity" / "mobile_sam_seed0.pt"
)

CHILD = r"""
import json, os, shutil, statistics, sys, tempfile, time
import numpy as np
side, repeats, weights, who = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
if who == "ultralytics":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    threads = torch.get_num_threads()
    from ultralytics.models.sam import Predictor
    folder = tempfile.mkdtemp()
    shutil.copyfile(weights, os.path.join(folder, "mobile_sam.pt"))  # picks MobileSAM by name
    predictor = Predictor(overrides={"model": os.path.join(folder, "mobile_sam.pt"),
                                     "imgsz": 1024, "verbose": False, "save": False,
                                     "device": "cpu"})
    predictor.setup_model(verbose=False)
    torch.set_num_threads(threads)  # ultralytics lowers it; give it the same cores as ours
    def encode():
        predictor.reset_image()
        predictor.set_image(image[..., ::-1].copy())
else:
    from napari_mobilesam import SegAnyPredictor, build_mobile_sam
    precision = "bfloat16" if who.endswith("bfloat16") else "float32"
    predictor = SegAnyPredictor(build_mobile_sam(weights), device="cpu", precision=precision)
    def encode():
        predictor.clear_cache()
        predictor.set_image(image)
encode()
times = []
for _ in range(repeats):
    start = time.perf_counter()
    encode()
    times.append(time.perf_counter() - start)
print(json.dumps({"who": who, "median_ms": 1000 * statistics.median(times)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    sides = ["ultralytics", "napari-mobilesam", "napari-mobilesam bfloat16"]
    results = {}
    for who in sides:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(args.size),
                str(args.repeats),
                str(args.weights),
                who,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[who] = json.loads(out.strip().splitlines()[-1])["median_ms"]
    base = results["ultralytics"]
    print(f"encoder, {args.size}² RGB image, median of {args.repeats}, one process each")
    for who, ms in results.items():
        print(f"  {who:<28} {ms:8.0f} ms   {ms / base:5.2f}× ultralytics' time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
