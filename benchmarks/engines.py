"""Benchmark: torch against the OpenVINO engines (float32, int8, "auto") of the image
encoder and the mask decoder, each network alone and SegEvery end to end.

In one process, engines alternated round by round (so a change of load hits all alike);
an engine runs both networks ("auto": per network, the choice it measured and remembered):

* the image encoder at 1024² (``set_image`` with an empty cache), median of ``--rounds``;
* the box decoder: the boxes of the image (about 300) decoded to low-res logits on one
  embedding (``decode_boxes``, no upsampling);
* SegEvery end to end at 1024² on a synthetic image with known truth
  (:func:`napari_mobilesam.evaluation.synthetic_nuclei`, about 300 nuclei): boxes from the
  *perfect detector* of ``large_images.py`` by default (``--detector`` takes any detector
  ``segment_everything`` does), the decoder of ``--decoder`` (MobileSAM's own by default),
  one new embedding per run; Cellpose's AP at IoU 0.5 and the mean over 0.5..0.95 against
  the truth, and how many of torch's objects each engine gives at IoU >= 0.98.

Ratios are torch's median / the engine's median. Peak memory is the growth of resident
memory during a run. Each engine is converted first (once per weights file, kept in the
cache). The default weights are random (``../shared/fixtures/parity/mobile_sam_seed0.pt``):
timings are those of the real model; AP is near 0 on random weights.

Usage::

    python benchmarks/engines.py                 # 5 rounds
    python benchmarks/engines.py --rounds 3 --markdown out.md
    python benchmarks/engines.py --decoder ../shared/fixtures/real/Prompt_guided_Mask_Decoder.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_WEIGHTS = HERE.parents[1] / "shared/fixtures/parity/mobile_sam_seed0.pt"
ENGINES = ("torch", "openvino", "openvino-int8", "auto")
SIDE = 1024


def synthetic_field(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 1024² uint16 image of about 300 nuclei and its true labels."""
    from napari_mobilesam.evaluation import synthetic_nuclei

    return synthetic_nuclei(
        (SIDE, SIDE), n_objects=320, radius=(8.0, 14.0), touching=0.0, seed=seed
    )


def one_run(predictor, image: np.ndarray, options: dict) -> tuple:
    """Encoder seconds and peak MiB, box decoder seconds, SegEvery seconds and peak MiB,
    SegEvery's result."""
    from _measure import PeakRSS
    from napari_mobilesam import segment_everything
    from napari_mobilesam.segevery.box_decoders import load_box_decoder

    predictor.clear_cache()
    start = time.perf_counter()
    with PeakRSS() as peak:
        predictor.set_image(image)
    encoder, encoder_mib = time.perf_counter() - start, peak.growth_mib
    start = time.perf_counter()
    decoder = load_box_decoder(options["decoder"]).decoder
    for _ in predictor.decode_boxes(options["boxes"], decoder=decoder):
        pass
    decoding = time.perf_counter() - start
    predictor.clear_cache()
    start = time.perf_counter()
    with PeakRSS() as peak:
        result = segment_everything(
            image, predictor=predictor, detector=options["detector"],
            decoder=options["decoder"], conf=0.0, max_objects=400,
        )  # fmt: skip
    segevery = time.perf_counter() - start
    return encoder, encoder_mib, decoding, segevery, peak.growth_mib, result


def measure(predictors: dict, rounds: int, detector, decoder) -> dict[str, dict]:
    """Encoder, decoder and SegEvery timings, memory and quality per engine, alternating."""
    from large_images import perfect_detector
    from napari_mobilesam import to_rgb_uint8
    from napari_mobilesam.evaluation import match_objects

    image, truth = synthetic_field()
    options = {
        "detector": perfect_detector if detector == "perfect" else detector,
        "decoder": decoder,
        "boxes": perfect_detector(to_rgb_uint8(image))[0],  # SegEvery's boxes
    }
    rng = np.random.default_rng(0)
    keys = ("encoder", "enc_mib", "decoder", "segevery", "se_mib")
    stats = {name: {key: [] for key in keys} for name in predictors}
    labels = {}
    names = list(predictors)
    for round_ in range(rounds + 1):  # round 0 warms up
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            # A new image each round (the embedding cache would skip the encoder).
            noisy = image + rng.integers(0, 3, image.shape).astype(image.dtype)
            *figures, result = one_run(predictors[name], noisy, options)
            if round_:
                for key, value in zip(keys, figures, strict=True):
                    stats[name][key].append(value)
            labels[name] = (result.labels, result.n_objects)
    for name in predictors:
        quality = match_objects(labels[name][0], truth)
        same = match_objects(labels[name][0], labels["torch"][0], thresholds=0.98)
        stats[name]["ap50"] = quality.ap50
        stats[name]["ap"] = float(np.mean(quality.ap))
        stats[name]["objects"] = labels[name][1]
        stats[name]["kept"] = f"{int(same.tp[0])}/{same.n_true}"
        stats[name]["boxes"] = len(options["boxes"])
        stats[name]["engines"] = predictors[name].engines
    return stats


def _ms_and_ratio(stats: dict[str, dict], name: str, key: str) -> str:
    value = statistics.median(stats[name][key])
    return f"{value * 1000:,.0f} | {statistics.median(stats['torch'][key]) / value:.2f}"


def table(stats: dict[str, dict], header: str) -> str:
    boxes = next(iter(stats.values()))["boxes"]
    lines = [
        header,
        "",
        f"| engine (encoder / decoder) | encoder ms | × | {boxes} boxes, decoder ms | × "
        "| SegEvery ms | × | peak MiB enc / SegEvery | objects "
        "| torch's objects kept (IoU ≥ 0.98) | AP50 | AP 0.5..0.95 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in stats.items():
        decoders = [k for k in s["engines"] if k.startswith("decoder:")] or ["mask_decoder"]
        engines = " / ".join(s["engines"].get(k, "?") for k in ("image_encoder", decoders[0]))
        lines.append(
            f"| {name} ({engines}) | {_ms_and_ratio(stats, name, 'encoder')} | "
            f"{_ms_and_ratio(stats, name, 'decoder')} | "
            f"{_ms_and_ratio(stats, name, 'segevery')} | "
            f"{max(s['enc_mib']):,.0f} / {max(s['se_mib']):,.0f} | "
            f"{s['objects']} | {s['kept']} | {s['ap50']:.3f} | {s['ap']:.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument(
        "--detector",
        default="perfect",
        help="'perfect' (boxes of the true objects, default) or any detector "
        "segment_everything takes (a name or a file)",
    )
    parser.add_argument(
        "--decoder",
        default="mobile_sam",
        help="SegEvery's box decoder: 'mobile_sam' (default), 'prompt_guided' or a file",
    )
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from napari_mobilesam import SegAnyPredictor, build_mobile_sam

    torch.set_num_threads(args.threads)
    model = build_mobile_sam(args.weights)
    predictors = {}
    for name in dict.fromkeys(["torch", *args.engines]):  # torch: the ratios' reference
        start = time.perf_counter()
        predictors[name] = SegAnyPredictor(model, "cpu", engine=name, cache_size=1)
        predictors[name].prepare_engine()
        print(f"{name}: ready in {time.perf_counter() - start:.1f} s", flush=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    stats = measure(predictors, args.rounds, args.detector, args.decoder)
    after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    header = (
        f"1024², {args.rounds} rounds, {args.threads} threads, medians, detector "
        f"{args.detector}, decoder {args.decoder}; load before: "
        f"{load.split('load average:')[-1].strip()}, after: "
        f"{after.split('load average:')[-1].strip()}"
    )
    text = table(stats, header)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
