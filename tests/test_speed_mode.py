"""The documented CPU speed mode (bfloat16 autocast) keeps masks close to float32."""

from __future__ import annotations

import numpy as np
import pytest

SPEED_MODE_AGREEMENT = 0.98


@pytest.fixture(scope="module")
def bf16_predictor(mobile_sam, parity_cases):
    from napari_mobilesam import SegAnyPredictor

    predictor = SegAnyPredictor(mobile_sam, device="cpu", precision="bfloat16")
    predictor.set_image(parity_cases["cell/image"])
    return predictor


@pytest.mark.parametrize("case", ["point", "points3", "box", "box_points", "refine"])
def test_bfloat16_masks_agree_with_reference(bf16_predictor, parity_cases, case):
    prefix = f"cell/{case}/"
    kwargs = {
        k[len(prefix) + 3 :]: v for k, v in parity_cases.items() if k.startswith(prefix + "in_")
    }
    kwargs["multimask_output"] = bool(kwargs["multimask_output"])
    masks, scores, low_res = bf16_predictor.predict(**kwargs)
    assert masks.dtype == bool and scores.dtype == np.float32 and low_res.dtype == np.float32
    assert (masks == parity_cases[prefix + "out_masks"]).mean() >= SPEED_MODE_AGREEMENT


def test_bfloat16_box_batch_agrees_with_reference(bf16_predictor, parity_cases):
    masks, _, _ = bf16_predictor.predict_boxes(parity_cases["cell/boxes_batch/in_boxes"])
    assert (masks == parity_cases["cell/boxes_batch/out_masks"]).mean() >= SPEED_MODE_AGREEMENT


def test_float16_needs_cuda(mobile_sam):
    from napari_mobilesam import SegAnyPredictor

    with pytest.raises(ValueError, match="CUDA"):
        SegAnyPredictor(mobile_sam, device="cpu", precision="float16")


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (none on this machine)"
)
def test_cuda_float16_agrees_with_reference(parity_checkpoint, parity_cases):
    from napari_mobilesam import SegAnyPredictor, build_mobile_sam

    model = build_mobile_sam(parity_checkpoint)  # its own copy: the shared one stays on the CPU
    predictor = SegAnyPredictor(model, device="cuda", precision="float16")
    predictor.set_image(parity_cases["cell/image"])
    masks, _, _ = predictor.predict_boxes(parity_cases["cell/boxes_batch/in_boxes"])
    assert (masks == parity_cases["cell/boxes_batch/out_masks"]).mean() >= SPEED_MODE_AGREEMENT
