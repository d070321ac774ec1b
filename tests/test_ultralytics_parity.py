"""Parity with ultralytics' own MobileSAM, an implementation independent of ours, on the
same random weights: the image encoder and the prompt decoder compute the same function."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def ultralytics_sam(parity_checkpoint, tmp_path_factory):
    from ultralytics.models.sam.build import build_mobile_sam

    # ultralytics recognises MobileSAM by the file name.
    path = tmp_path_factory.mktemp("ultralytics") / "mobile_sam.pt"
    shutil.copyfile(parity_checkpoint, path)
    return build_mobile_sam(str(path)).eval()


def test_image_encoder_matches_ultralytics(mobile_sam, ultralytics_sam, parity_cases):
    from napari_mobilesam.imaging.model_frame import resize_longest_side

    image = resize_longest_side(parity_cases["coins/image"])
    x = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        x = mobile_sam.preprocess(x)
        ours = mobile_sam.image_encoder(x)
        theirs = ultralytics_sam.image_encoder(x)
    assert ours.shape == theirs.shape == (1, 256, 64, 64)
    assert (ours - theirs).abs().max() <= 1e-3


@pytest.mark.parametrize("multimask", [True, False])
def test_prompt_decoding_matches_ultralytics(predictor, ultralytics_sam, parity_cases, multimask):
    image = parity_cases["cell/image"]
    predictor.set_image(image)
    points = np.array([[220.0, 363.0], [300.0, 200.0]])
    labels = np.array([1, 0])
    box = np.array([55.0, 132.0, 385.0, 594.0])
    _, scores, low_res = predictor.predict(
        point_coords=points, point_labels=labels, box=box, multimask_output=multimask
    )

    from napari_mobilesam.imaging.model_frame import scale_boxes, scale_coords

    with torch.inference_mode():
        coords = torch.as_tensor(scale_coords(points, image.shape[:2]), dtype=torch.float32)
        box_t = torch.as_tensor(scale_boxes(box, image.shape[:2]), dtype=torch.float32)[None]
        sparse, dense = ultralytics_sam.prompt_encoder(
            points=(coords[None], torch.as_tensor(labels)[None]), boxes=box_t, masks=None
        )
        ref_low_res, ref_scores = ultralytics_sam.mask_decoder(
            image_embeddings=predictor.get_image_embedding(),
            image_pe=ultralytics_sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    assert low_res.shape == tuple(ref_low_res.shape[1:])
    assert np.abs(low_res - ref_low_res[0].numpy()).max() <= 1e-3
    assert np.abs(scores - ref_scores[0].numpy()).max() <= 1e-3
