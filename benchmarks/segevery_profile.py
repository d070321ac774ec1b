"""Where SegEvery's time goes at 1024² with about 300 boxes (torch, one process).

The setup of ``engines.py`` (synthetic nuclei, the perfect detector, MobileSAM's own
decoder): the run is split into the prompt encoder, the decoder network (two-way
transformer, upscaling, hypernetworks: ``BatchedMaskDecoder.decode``), the post-processing
(low-res logits to cropped full-size masks: ``MaskUpsampler``; pasting into the label
image: ``LabelCanvas.paste``) and the rest (detector, encoder, bookkeeping).

Usage::

    python benchmarks/segevery_profile.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def timed(owner: type, name: str, totals: dict[str, float], label: str) -> None:
    """Wrap ``owner.name`` so that its seconds add up in ``totals[label]``."""
    original: Callable = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from engines import DEFAULT_WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--engine", default="torch")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import numpy as np
    import torch

    from engines import synthetic_field
    from large_images import perfect_detector
    from napari_mobilesam import SegAnyPredictor, build_mobile_sam, segment_everything
    from napari_mobilesam.imaging.label_canvas import LabelCanvas
    from napari_mobilesam.imaging.upsampling import MaskUpsampler
    from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder
    from napari_mobilesam.model.prompt_encoder import PromptEncoder

    torch.set_num_threads(args.threads)
    totals: dict[str, float] = defaultdict(float)
    timed(BatchedMaskDecoder, "decode", totals, "decoder network")
    timed(PromptEncoder, "forward", totals, "prompt encoder")
    timed(MaskUpsampler, "__call__", totals, "upsampling (crops)")
    timed(LabelCanvas, "paste", totals, "pasting labels")
    predictor = SegAnyPredictor(build_mobile_sam(args.weights), "cpu", engine=args.engine)
    predictor.prepare_engine()
    image, _ = synthetic_field()
    rng = np.random.default_rng(0)
    rows: dict[str, list[float]] = defaultdict(list)
    for round_ in range(args.rounds + 1):
        predictor.clear_cache()
        totals.clear()
        noisy = image + rng.integers(0, 3, image.shape).astype(image.dtype)
        start = time.perf_counter()
        result = segment_everything(
            noisy, predictor=predictor, detector=perfect_detector,
            decoder="mobile_sam", conf=0.0, max_objects=400,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if round_ == 0:
            continue  # warm-up
        rows["wall"].append(wall)
        for key in ("discovery", "embedding"):
            rows[key].append(result.timings[key])
        for key, value in totals.items():
            rows[key].append(value)
        accounted = sum(totals.values()) + result.timings["discovery"]
        rows["rest"].append(wall - accounted - result.timings["embedding"])
    wall = statistics.median(rows["wall"])
    print(f"{len(result.boxes)} objects, {args.rounds} rounds, {args.threads} threads")
    for key, values in rows.items():
        value = statistics.median(values)
        print(f"{key:>20}: {value * 1000:8.0f} ms  {100 * value / wall:5.1f} %")


if __name__ == "__main__":
    main()
