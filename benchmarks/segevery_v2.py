"""SegEvery as MobileSAMv2 ships it: end-to-end time with each box decoder, in one run.

MobileSAMv2's pipeline on its fixture images (``../shared/fixtures/v2``): the detector in
the real ObjectAwareModel.pt format (YOLOv8n-sized, random weights), the seed-0 MobileSAM
encoder, and the boxes decoded either by the real, trained prompt-guided decoder or by
``mobile_sam.pt``'s own decoder. Both decoders have the same architecture, so their times
should agree; the table says what the prompt-guided decoder costs end to end.

Run: ``python benchmarks/segevery_v2.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from napari_mobilesam import SegAnyPredictor, build_mobile_sam, segment_everything
    from napari_mobilesam.segevery.box_decoders import build_prompt_guided_decoder
    from napari_mobilesam.segevery.discovery import load_detector

    official = np.load(SHARED / "v2" / "official_seed0.npz")
    confs = json.loads((SHARED / "v2" / "confs.json").read_text())
    predictor = SegAnyPredictor(build_mobile_sam(SHARED / "parity" / "mobile_sam_seed0.pt"))
    decoders = {
        "prompt-guided (real)": build_prompt_guided_decoder(
            SHARED / "real" / "Prompt_guided_Mask_Decoder.pt"
        ),
        "mobile_sam.pt's own": "mobile_sam",
    }
    print("| image | boxes | decoder | wall s | discovery s | embedding s | decoding s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for name in ("coffee", "cell"):
        image = official[f"{name}/image"]
        detector_file = SHARED / "v2" / "ObjectAwareModel_seed0.pt"
        detector = load_detector(detector_file, conf=confs[name], iou=0.9)
        for label, decoder in decoders.items():
            walls, timings = [], []
            for _ in range(args.repeats):
                predictor.clear_cache()  # every run encodes, as a new image would
                start = time.perf_counter()
                result = segment_everything(
                    image, predictor=predictor, detector=detector, decoder=decoder, iou=0.9
                )
                walls.append(time.perf_counter() - start)
                timings.append(result.timings)
            median = statistics.median(walls)
            parts = [statistics.median(t[key] for t in timings) for key in result.timings]
            print(
                f"| {name} {image.shape[1]}x{image.shape[0]} | {len(official[f'{name}/boxes'])} "
                f"| {label} | {median:.2f} | " + " | ".join(f"{p:.2f}" for p in parts) + " |"
            )


if __name__ == "__main__":
    main()
