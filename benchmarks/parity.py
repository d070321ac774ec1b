"""Print how far napari-mobilesam is from the reference MobileSAM on the parity fixtures.

``tests/test_parity.py`` asserts the tolerances; this prints the figures themselves.

    python benchmarks/parity.py [--fixtures ../shared/fixtures/parity] [--precision float32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "parity"
IMAGES = ("ihc", "coins", "cell")
CASES = ("point", "points3", "box", "box_points", "refine")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    from napari_mobilesam import SegAnyPredictor, build_mobile_sam

    cases = np.load(args.fixtures / "cases_seed0.npz")
    model = build_mobile_sam(args.fixtures / "mobile_sam_seed0.pt")
    predictor = SegAnyPredictor(model, device="cpu", precision=args.precision)
    embedding, logits, scores, agreement = [], [], [], []
    for name in IMAGES:
        predictor.set_image(cases[f"{name}/image"])
        reference = cases[f"{name}/embedding"]
        embedding.append(np.abs(predictor.get_image_embedding().cpu().numpy() - reference).max())
        for case in (*CASES, "boxes_batch"):
            prefix = f"{name}/{case}/"
            if case == "boxes_batch":
                out = predictor.predict_boxes(cases[prefix + "in_boxes"])
            else:
                kwargs = {
                    key[len(prefix) + 3 :]: cases[key]
                    for key in cases.files
                    if key.startswith(prefix + "in_")
                }
                kwargs["multimask_output"] = bool(kwargs["multimask_output"])
                out = predictor.predict(**kwargs)
            masks, iou, low_res = out
            logits.append(np.abs(low_res - cases[prefix + "out_low_res_logits"]).max())
            scores.append(np.abs(iou - cases[prefix + "out_scores"]).max())
            agreement.append((masks == cases[prefix + "out_masks"]).mean())
    print(f"precision {args.precision}, {len(IMAGES)} images x {len(CASES) + 1} cases")
    print(f"  embedding       max |d| {max(embedding):.2e}   (tolerance 1e-3)")
    print(f"  low-res logits  max |d| {max(logits):.2e}   (tolerance 1e-3)")
    print(f"  IoU scores      max |d| {max(scores):.2e}   (tolerance 1e-3)")
    print(f"  masks           min agreement {100 * min(agreement):.4f} %   (at least 99.5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
