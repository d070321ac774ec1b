"""Print how closely SegEvery reproduces MobileSAMv2's official pipeline on its fixtures.

The figures the README and the tests (``tests/test_mobilesamv2.py``) rely on, from
``../shared/fixtures/v2`` and ``../shared/fixtures/real``:

- the official boxes of both images: counts, and the worst one-to-one IoU;
- the label images (seed-0 decoder written in the prompt-guided file format): pixels equal;
- the real, trained prompt-guided decoder on ``real_decoder_coffee.npz``: max |Δ| of the
  low-resolution logits and of the scores.

Run: ``python benchmarks/parity_v2.py``
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def prompt_guided_file(state_dict: Path, target: Path) -> Path:
    """The decoder of a mobile_sam.pt-format file in the Prompt_guided_Mask_Decoder format."""
    state = torch.load(state_dict, map_location="cpu", weights_only=True)
    parts = {"PromtEncoder": "prompt_encoder.", "MaskDecoder": "mask_decoder."}
    torch.save(
        {
            key: {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            for key, prefix in parts.items()
        },
        target,
    )
    return target


def main() -> None:
    from napari_mobilesam import SegAnyPredictor, build_mobile_sam, segment_everything
    from napari_mobilesam.segevery.box_decoders import build_prompt_guided_decoder
    from napari_mobilesam.segevery.discovery import discover_objects, load_detector

    official = np.load(FIXTURES / "v2" / "official_seed0.npz")
    confs = json.loads((FIXTURES / "v2" / "confs.json").read_text())
    seed0 = FIXTURES / "parity" / "mobile_sam_seed0.pt"
    predictor = SegAnyPredictor(build_mobile_sam(seed0), device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        decoder = prompt_guided_file(seed0, Path(folder) / "seed0_prompt_guided.pt")
        for name in ("coffee", "cell"):
            image, expected = official[f"{name}/image"], official[f"{name}/boxes"]
            detector = load_detector(
                FIXTURES / "v2" / "ObjectAwareModel_seed0.pt", conf=confs[name], iou=0.9
            )
            boxes, _ = discover_objects(image, detector, iou=0.9)
            ious = box_iou(torch.as_tensor(boxes), torch.as_tensor(expected)).numpy()
            rows, cols = linear_sum_assignment(-ious)
            result = segment_everything(
                image, predictor=predictor, detector=detector, decoder=decoder, iou=0.9
            )
            owner = box_iou(torch.as_tensor(result.boxes), torch.as_tensor(expected)).numpy()
            lut = np.zeros(result.n_objects + 1, np.int64)
            lut[1:] = owner.argmax(axis=1) + 1
            equal = (lut[result.labels] == official[f"{name}/labels"]).mean()
            print(
                f"{name}: {len(boxes)} boxes found, {len(expected)} official; worst matched "
                f"IoU {ious[rows, cols].min():.7f}; label pixels equal {100 * equal:.4f} %"
            )

    case = np.load(FIXTURES / "v2" / "real_decoder_coffee.npz")
    real = build_prompt_guided_decoder(FIXTURES / "real" / "Prompt_guided_Mask_Decoder.pt")
    predictor.set_embedding(case["embedding"], (400, 600))
    batches = list(predictor.decode_boxes(case["in_boxes"], decoder=real))
    logits = torch.cat([low_res for _, low_res, _ in batches])[:, 0].numpy()
    scores = torch.cat([score for _, _, score in batches])[:, 0].numpy()
    print(
        "real prompt-guided decoder: low-res logits max |Δ| "
        f"{np.abs(logits - case['out_low_res_logits']).max():.2e}, scores max |Δ| "
        f"{np.abs(scores - case['out_scores']).max():.2e}"
    )


if __name__ == "__main__":
    main()
