"""What the OpenVINO engines change in the masks: the parity fixtures, engine against engine.

For each parity image (``../shared/fixtures/parity``, random seed-0 weights): the
embedding's max |Δ| to torch, and the per-object mask IoU of float32 against torch and of
int8 against float32, over the fixture's prompts (point, points3, box, box_points: every
candidate mask) and its 40 boxes. The default calibration set is used, as a user gets it.

Usage::

    python benchmarks/engines_parity.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mobilesam import SegAnyPredictor, build_mobile_sam

PARITY = Path(__file__).resolve().parents[2] / "shared/fixtures/parity"
CASES = ("point", "points3", "box", "box_points")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def masks(predictor, cases, image: str) -> list[np.ndarray]:
    """Every mask of the image's prompts and boxes, in a fixed order."""
    out = []
    for case in CASES:
        prefix = f"{image}/{case}/in_"
        kwargs = {k[len(prefix) :]: cases[k] for k in cases.files if k.startswith(prefix)}
        if "multimask_output" in kwargs:
            kwargs["multimask_output"] = bool(kwargs["multimask_output"])
        out += list(predictor.predict(**kwargs)[0])
    return out + list(predictor.predict_boxes(cases[f"{image}/boxes_batch/in_boxes"])[0])


def main() -> None:
    model = build_mobile_sam(PARITY / "mobile_sam_seed0.pt")
    names = ("torch", "openvino", "openvino-int8")
    predictors = {name: SegAnyPredictor(model, "cpu", engine=name) for name in names}
    cases = np.load(PARITY / "cases_seed0.npz")
    print("| image | fp32 max abs diff | fp32 vs torch IoU min | int8 vs fp32 IoU min / median "
          "| int8 objects below 0.98 |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for image in ("ihc", "coins", "cell"):
        for predictor in predictors.values():
            predictor.set_image(cases[f"{image}/image"])
        gap = (
            predictors["openvino"].get_image_embedding()
            - predictors["torch"].get_image_embedding()
        )
        m = {name: masks(p, cases, image) for name, p in predictors.items()}
        fp32 = [iou(a, b) for a, b in zip(m["torch"], m["openvino"], strict=True)]
        int8 = [iou(a, b) for a, b in zip(m["openvino"], m["openvino-int8"], strict=True)]
        below = sum(value < 0.98 for value in int8)
        print(f"| {image} | {float(gap.abs().max()):.1e} | {min(fp32):.4f} | {min(int8):.3f} / "
              f"{np.median(int8):.3f} | {below}/{len(int8)} |")  # fmt: skip


if __name__ == "__main__":
    main()
