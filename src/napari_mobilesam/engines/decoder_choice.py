"""Which engine runs a mask decoder (SegAny's clicks, SegEvery's boxes), and its "auto".

The same rules as the image encoder's (:mod:`napari_mobilesam.engines.choice`), per
network: "auto" converts both OpenVINO variants of the decoder once per decoder weights
file, gates them against torch on the embeddings of the two gate images (float32: low-res
logits within :data:`~napari_mobilesam.engines.gates.FLOAT32_TOLERANCE`, relative where
``|logit| > 1``, see :func:`~napari_mobilesam.engines.gates.logit_gap`; int8: every box
and point mask at IoU >= :data:`~napari_mobilesam.engines.gates.INT8_MIN_IOU` against
float32, prompt by prompt; boxes with one mask, points with three), times torch and each
variant that passed on 16 box prompts and keeps the fastest, torch unless one is faster.
The record is kept as ``choice-mask_decoder-*.json`` beside the decoder's converted files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines import gates
from napari_mobilesam.engines.cache import engine_dir, weights_fingerprint
from napari_mobilesam.engines.calibration import calibration_images, encoder_input
from napari_mobilesam.engines.choice import (
    choice_record_name,
    remember_choice,
    remembered_choice,
    time_encoders,
)
from napari_mobilesam.engines.openvino_decoder import decoder_fingerprint, openvino_decoder
from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder

__all__ = ["mask_decoder_engine", "measure_decoder_engines"]

_PRECISIONS = {"openvino": "float32", "openvino-int8": "int8"}
#: A decoder on one image embedding: ``make(embedding)`` has ``decode(sparse, dense, multi)``.
DecoderFactory = Callable[[torch.Tensor], object]
TIMED_PROMPTS = 16


def mask_decoder_engine(
    decoder: torch.nn.Module,
    model: torch.nn.Module,
    engine: str,
    *,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[str, DecoderFactory]:
    """``(name, make)``: the engine ``engine`` resolves to for ``decoder`` and a function
    that puts it on one image embedding (``make(embedding).decode(...)``, as
    :meth:`~napari_mobilesam.model.batched_decoder.BatchedMaskDecoder.decode`).

    Parameters
    ----------
    decoder : MobileSAM or PromptDecoder
        Whose ``prompt_encoder`` and ``mask_decoder`` decode.
    model : MobileSAM
        Its image encoder makes the embeddings of the gates and of int8 calibration.
    engine : str
        A name checked by :func:`~napari_mobilesam.engines.choice.check_engine`; "auto"
        reads the remembered choice or measures it (:func:`measure_decoder_engines`).
    """
    if engine == "auto":
        record = measure_decoder_engines(decoder, model, calibration=calibration)
        engine = record["choice"]
    pe = decoder.prompt_encoder
    if engine == "torch":
        return engine, lambda embedding: BatchedMaskDecoder(
            decoder.mask_decoder, embedding, pe.get_dense_pe(), pe.no_mask_embed.weight
        )
    network = openvino_decoder(
        decoder, model, _PRECISIONS[engine], calibration=calibration, progress=progress
    )
    return engine, lambda embedding: network.on_image(embedding, pe.no_mask_embed.weight)


def _choice_path(decoder: torch.nn.Module, model: torch.nn.Module, calibrated: bool):
    encoder = weights_fingerprint(model.image_encoder)[:8]
    name = choice_record_name("mask_decoder", calibrated, encoder)
    return engine_dir(decoder_fingerprint(decoder)) / name


def measure_decoder_engines(
    decoder: torch.nn.Module,
    model: torch.nn.Module,
    *,
    calibration: Sequence[np.ndarray] | None = None,
    rounds: int = 3,
) -> dict:
    """Convert, gate and time every engine of ``decoder`` on this machine once.

    Returns
    -------
    dict
        ``choice``, ``seconds`` (median per engine, :data:`TIMED_PROMPTS` boxes),
        ``passed`` (per OpenVINO variant), ``float32_max_abs_diff`` (of low-res logits,
        relative above 1, see :func:`~napari_mobilesam.engines.gates.logit_gap`, and of
        IoU predictions), ``int8_min_iou``, ``threads``; read from its JSON file when it
        was measured before with the same thread count.
    """
    path = _choice_path(decoder, model, calibration is not None)
    remembered = remembered_choice(path)
    if remembered is not None:
        return remembered
    networks = {
        name: openvino_decoder(decoder, model, precision, calibration=calibration)
        for name, precision in _PRECISIONS.items()
    }
    images = calibration_images() if calibration is None else map(to_rgb_uint8, calibration)
    embeddings = []
    with torch.inference_mode():
        for image in gates.gate_images(list(images)):
            embeddings.append(model.image_encoder(encoder_input(model, image)[0]).float())
    record = _gate_record(decoder, networks, embeddings)
    pe = decoder.prompt_encoder
    with torch.inference_mode():
        on_image = {"torch": mask_decoder_engine(decoder, model, "torch")[1](embeddings[0])}
        for name, network in networks.items():
            on_image[name] = network.on_image(embeddings[0], pe.no_mask_embed.weight)
        sparse = _prompt_sets(decoder)[0][:TIMED_PROMPTS]
    calls = {name: (lambda s, d=d: d.decode(s)) for name, d in on_image.items()}
    return remember_choice(path, record, time_encoders(calls, sparse, rounds))


def _prompt_sets(decoder: torch.nn.Module) -> list[torch.Tensor]:
    """Sparse embeddings of the gate's prompts: 25 boxes, and one point in each box."""
    pe = decoder.prompt_encoder
    device = pe.no_mask_embed.weight.device
    boxes = torch.as_tensor(gates.box_prompts(), device=device)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    labels = torch.ones((len(boxes), 1), dtype=torch.int64, device=device)
    with torch.inference_mode():
        return [pe(None, boxes, None)[0], pe((centres, labels), None, None)[0]]


def _gate_record(decoder, networks: dict, embeddings: list[torch.Tensor]) -> dict:
    """Low-res logits of float32 against torch, int8's masks against float32's."""
    gap, min_iou = 0.0, 1.0
    pe = decoder.prompt_encoder
    make_torch = mask_decoder_engine(decoder, decoder, "torch")[1]
    with torch.inference_mode():
        for embedding in embeddings:
            reference = make_torch(embedding)
            fp32, int8 = (
                networks[name].on_image(embedding, pe.no_mask_embed.weight) for name in _PRECISIONS
            )
            # Boxes as SegEvery decodes them (one mask), points as a click (three).
            for sparse, multimask in zip(_prompt_sets(decoder), (False, True), strict=True):
                logits, iou = reference.decode(sparse, None, multimask)
                fp32_logits, fp32_iou = fp32.decode(sparse, None, multimask)
                gap = max(gap, gates.logit_gap(logits.cpu(), fp32_logits))
                gap = max(gap, gates.embedding_gap(iou.cpu(), fp32_iou))
                int8_logits = int8.decode(sparse, None, multimask)[0]
                ious = gates.logit_mask_ious(fp32_logits.flatten(0, 1), int8_logits.flatten(0, 1))
                min_iou = min(min_iou, float(ious.min()))
    passed = gap <= gates.FLOAT32_TOLERANCE
    return {
        "float32_max_abs_diff": gap,
        "int8_min_iou": min_iou,
        "passed": {"openvino": passed, "openvino-int8": passed and min_iou >= gates.INT8_MIN_IOU},
    }
