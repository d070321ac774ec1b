"""The model computes the same function as the original MobileSAM (reference outputs on
random weights in ../shared/fixtures/parity), within the tolerances stated there."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PARITY_IMAGES

LOGIT_TOL = 1e-3
SCORE_TOL = 1e-3
EMBEDDING_TOL = 1e-3
MASK_AGREEMENT = 0.995
CASES = ("point", "points3", "box", "box_points", "refine")


def _predict_kwargs(cases: dict[str, np.ndarray], prefix: str) -> dict:
    kwargs = {
        key[len(prefix) + 3 :]: cases[key] for key in cases if key.startswith(prefix + "in_")
    }
    kwargs["multimask_output"] = bool(kwargs["multimask_output"])
    return kwargs


@pytest.fixture(scope="module")
def predictors(mobile_sam, parity_cases):
    """One predictor per parity image, each with its embedding computed once."""
    from napari_mobilesam import SegAnyPredictor

    out = {}
    for name in PARITY_IMAGES:
        predictor = SegAnyPredictor(mobile_sam, device="cpu")
        predictor.set_image(parity_cases[f"{name}/image"])
        out[name] = predictor
    return out


def test_checkpoint_loads_strictly(mobile_sam, parity_checkpoint):
    import torch

    state = torch.load(parity_checkpoint, weights_only=True)
    assert len(state) == 439
    own = mobile_sam.state_dict()
    assert set(own) == set(state)
    assert all(own[k].shape == state[k].shape for k in state)


@pytest.mark.parametrize("name", PARITY_IMAGES)
def test_image_embedding_matches_reference(predictors, parity_cases, name):
    embedding = predictors[name].get_image_embedding().cpu().numpy()
    reference = parity_cases[f"{name}/embedding"]
    assert embedding.shape == (1, 256, 64, 64)
    assert np.abs(embedding - reference).max() <= EMBEDDING_TOL


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", PARITY_IMAGES)
def test_predict_matches_reference(predictors, parity_cases, name, case):
    prefix = f"{name}/{case}/"
    masks, scores, low_res = predictors[name].predict(**_predict_kwargs(parity_cases, prefix))
    ref_masks = parity_cases[prefix + "out_masks"]
    assert masks.dtype == bool
    assert masks.shape == ref_masks.shape
    assert scores.shape == parity_cases[prefix + "out_scores"].shape
    assert np.abs(low_res - parity_cases[prefix + "out_low_res_logits"]).max() <= LOGIT_TOL
    assert np.abs(scores - parity_cases[prefix + "out_scores"]).max() <= SCORE_TOL
    assert (masks == ref_masks).mean() >= MASK_AGREEMENT


@pytest.mark.parametrize("name", PARITY_IMAGES)
def test_predict_boxes_matches_reference(predictors, parity_cases, name):
    prefix = f"{name}/boxes_batch/"
    masks, scores, low_res = predictors[name].predict_boxes(
        parity_cases[prefix + "in_boxes"], batch_size=16
    )
    ref_masks = parity_cases[prefix + "out_masks"]
    assert masks.shape == ref_masks.shape == (40, *parity_cases[f"{name}/image"].shape[:2])
    assert np.abs(low_res - parity_cases[prefix + "out_low_res_logits"]).max() <= LOGIT_TOL
    assert np.abs(scores - parity_cases[prefix + "out_scores"]).max() <= SCORE_TOL
    assert (masks == ref_masks).mean() >= MASK_AGREEMENT


def test_return_logits_thresholds_to_masks(predictors, parity_cases):
    kwargs = _predict_kwargs(parity_cases, "coins/point/")
    masks, _, _ = predictors["coins"].predict(**kwargs)
    logits, _, _ = predictors["coins"].predict(**kwargs, return_logits=True)
    assert logits.dtype == np.float32
    # Masks come from the cropped upsampler; logits near 0 may round the other way.
    assert ((logits > 0) == masks).mean() >= 0.9999


def test_reference_decoder_path_agrees_with_batched_decoder(mobile_sam, parity_cases):
    """The straightforward MaskDecoder.forward (embedding repeated per prompt) and the
    batched decoder are the same function."""
    import torch

    from napari_mobilesam.imaging.model_frame import scale_boxes
    from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder

    embedding = torch.as_tensor(parity_cases["cell/embedding"])
    boxes = scale_boxes(parity_cases["cell/boxes_batch/in_boxes"][:8], (660, 550))
    pe = mobile_sam.prompt_encoder
    with torch.inference_mode():
        sparse, dense = pe(None, torch.as_tensor(boxes, dtype=torch.float32), None)
        for multimask in (False, True):
            ref_logits, ref_iou = mobile_sam.mask_decoder(
                embedding, pe.get_dense_pe(), sparse, dense, multimask
            )
            batched = BatchedMaskDecoder(
                mobile_sam.mask_decoder, embedding, pe.get_dense_pe(), pe.no_mask_embed.weight
            )
            logits, iou = batched.decode(sparse, None, multimask)
            assert logits.shape == ref_logits.shape
            assert (logits - ref_logits).abs().max() <= 1e-4
            assert (iou - ref_iou).abs().max() <= 1e-5
