"""The mask decoders in OpenVINO, float32 or int8, converted once per decoder weights.

The network converted is :class:`~napari_mobilesam.model.decoder_network.DecoderNetwork`:
the mask decoder of ``mobile_sam.pt`` (SegAny's clicks) or of MobileSAMv2's prompt-guided
decoder (SegEvery's boxes), with the image embedding given once per call and shared by every
prompt (never repeated per prompt), and a dynamic number of prompts and prompt tokens. The
prompt encoder stays in torch (a few small matrix products per prompt). The int8 variant is
quantized with NNCF on decoder inputs from the calibration images: their embeddings (the
torch encoder's) with box and point prompts. Files, compilation and telemetry are handled
as for the encoder (:mod:`napari_mobilesam.engines.openvino_engine`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines import gates
from napari_mobilesam.engines.cache import engine_path, hash_weights, weights_fingerprint
from napari_mobilesam.engines.calibration import calibration_images, encoder_input
from napari_mobilesam.engines.openvino_engine import (
    OPENVINO_PRECISIONS,
    calibration_key,
    compiled_model,
    openvino_module,
    quantized_model,
    save_model,
)
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.model.decoder_network import DecoderNetwork

__all__ = ["OpenVINOBatchedDecoder", "OpenVINODecoder", "decoder_fingerprint", "openvino_decoder"]

#: Prompts per inference call: bounds the (B, 4096 * 16, 32) upscaling intermediates.
PROMPTS_PER_CALL = 16


def decoder_fingerprint(decoder: torch.nn.Module) -> str:
    """The fingerprint of a decoder's weights: its prompt encoder's (which gives the
    positional encoding) and its mask decoder's, for a MobileSAM or a PromptDecoder.
    Hashed anew on each call: decoders are fine-tuned in place (``train-decoder``)."""
    return hash_weights(decoder.prompt_encoder)[:8] + hash_weights(decoder.mask_decoder)[:8]


class OpenVINODecoder:
    """A compiled decoder network: ``(keys (1, 256, 64, 64), sparse (B, T, 256))`` ->
    ``(logits (B, 4, 256, 256), iou (B, 4))`` tensors; mask 0 is the single-mask output."""

    def __init__(self, path: Path, precision: str) -> None:
        self.path = Path(path)
        self.precision = precision
        self._compiled = compiled_model(str(self.path))

    def __call__(self, keys: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, ...]:
        request = self._compiled.create_infer_request()
        keys_np = np.ascontiguousarray(keys.detach().float().cpu().numpy())
        logits, iou = [], []
        for start in range(0, len(sparse), PROMPTS_PER_CALL):
            part = sparse[start : start + PROMPTS_PER_CALL].detach().float().cpu().numpy()
            out = request.infer([keys_np, np.ascontiguousarray(part)])
            low, scores = (np.array(value, dtype=np.float32) for value in out.values())
            logits.append(torch.from_numpy(low))
            iou.append(torch.from_numpy(scores))
        return torch.cat(logits), torch.cat(iou)

    def on_image(
        self, embedding: torch.Tensor, no_mask_embedding: torch.Tensor
    ) -> OpenVINOBatchedDecoder:
        """This network on one image, with :class:`BatchedMaskDecoder`'s ``decode``."""
        return OpenVINOBatchedDecoder(self, embedding, no_mask_embedding)

    def __repr__(self) -> str:
        return f"OpenVINODecoder({self.precision}, {self.path.name})"


class OpenVINOBatchedDecoder:
    """An :class:`OpenVINODecoder` on one image embedding, called like
    :meth:`napari_mobilesam.model.batched_decoder.BatchedMaskDecoder.decode`."""

    def __init__(
        self, network: OpenVINODecoder, embedding: torch.Tensor, no_mask_embedding: torch.Tensor
    ) -> None:
        self.network = network
        self.embedding = embedding.detach().float().cpu()
        self.keys = self.embedding + no_mask_embedding.detach().float().cpu().view(1, -1, 1, 1)

    def decode(
        self,
        sparse: torch.Tensor,
        dense: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompt sets; ``dense`` (B, 256, 64, 64) are mask prompts' embeddings,
        each decoded with its own prompt set. Returns (B, C, 256, 256) logits and (B, C)
        IoU, C = 3 with ``multimask_output``, else 1."""
        if dense is None:
            logits, iou = self.network(self.keys, sparse)
        else:
            dense = dense.detach().float().cpu().expand(len(sparse), -1, -1, -1)
            parts = [
                self.network(self.embedding + dense[i : i + 1], sparse[i : i + 1])
                for i in range(len(sparse))
            ]
            logits = torch.cat([part[0] for part in parts])
            iou = torch.cat([part[1] for part in parts])
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return logits[:, chosen], iou[:, chosen]


def openvino_decoder(
    decoder: torch.nn.Module,
    model: torch.nn.Module,
    precision: str = "float32",
    *,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> OpenVINODecoder:
    """The OpenVINO version of ``decoder``'s mask decoder, converted once and then reused.

    Parameters
    ----------
    decoder : MobileSAM or PromptDecoder
        Its ``prompt_encoder`` and ``mask_decoder``; the converted file is kept under
        their weights' fingerprint (:func:`decoder_fingerprint`).
    model : MobileSAM
        Whose image encoder makes the embeddings int8 is calibrated on.
    precision : {"float32", "int8"}
    calibration : sequence of images, optional
        As for :func:`~napari_mobilesam.engines.openvino_engine.openvino_encoder`.
    progress : callable, optional
        ``progress(done, total)`` over the conversion steps.

    Returns
    -------
    OpenVINODecoder

    Examples
    --------
    >>> fast = openvino_decoder(model, model, "float32")  # doctest: +SKIP
    >>> logits, iou = fast.on_image(embedding, no_mask).decode(sparse)  # doctest: +SKIP
    """
    if precision not in OPENVINO_PRECISIONS:
        raise InvalidValueError(
            f"precision must be one of {OPENVINO_PRECISIONS}, got {precision!r}"
        )
    ov = openvino_module()
    key = ""
    if precision == "int8":
        encoder = weights_fingerprint(model.image_encoder)[:8]
        key = f"-{calibration_key(calibration)}-{encoder}"
    name = f"mask_decoder-{precision}{key}"
    path = engine_path(decoder_fingerprint(decoder), name, "openvino", ov.__version__)
    total = 2 if precision == "float32" else 3
    if not path.is_file():
        if precision == "float32":
            converted = _convert(decoder)
        else:
            fp32 = openvino_decoder(decoder, model, "float32")
            if progress is not None:
                progress(1, total)
            converted = quantized_model(fp32, decoder_inputs(decoder, model, calibration))
        save_model(converted, path)
    if progress is not None:
        progress(total - 1, total)
    network = OpenVINODecoder(path, precision)
    if progress is not None:
        progress(total, total)
    return network


def network_of(decoder: torch.nn.Module) -> DecoderNetwork:
    """The torch :class:`DecoderNetwork` of a MobileSAM's or PromptDecoder's parts."""
    with torch.no_grad():
        image_pe = decoder.prompt_encoder.get_dense_pe().cpu()
    return DecoderNetwork(decoder.mask_decoder, image_pe).cpu().eval()


def _convert(decoder: torch.nn.Module):
    """The float32 OpenVINO model of ``decoder``'s network, any number of prompts."""
    ov = openvino_module()
    network = network_of(decoder)
    keys = torch.zeros(1, 256, *network.image_pe.shape[-2:])
    sparse = torch.zeros(2, 2, 256)
    shapes = [list(keys.shape), [-1, -1, 256]]
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing notes shapes read as Python numbers; the graph is checked by the gates.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return ov.convert_model(network, example_input=(keys, sparse), input=shapes)


def decoder_inputs(
    decoder: torch.nn.Module,
    model: torch.nn.Module,
    images: Sequence[np.ndarray] | None = None,
) -> list[list[np.ndarray]]:
    """Decoder network inputs ``[keys, sparse]`` to calibrate int8 on: per image (default
    :func:`~napari_mobilesam.engines.calibration.calibration_images`), its torch embedding
    with 8 box prompts, and with 8 single-point prompts."""
    images = calibration_images() if images is None else [to_rgb_uint8(i) for i in images]
    pe = decoder.prompt_encoder
    boxes = torch.as_tensor(gates.box_prompts(model.image_size))
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    inputs = []
    with torch.inference_mode():
        no_mask = pe.no_mask_embed.weight.cpu().view(1, -1, 1, 1)
        for i, rgb in enumerate(images):
            embedding = model.image_encoder(encoder_input(model, rgb)[0]).float().cpu()
            keys = (embedding + no_mask).numpy()
            picks = [(i * 3 + k) % len(boxes) for k in range(8)]
            box_sparse, _ = pe(None, boxes[picks].to(model.device), None)
            labels = torch.ones((8, 1), dtype=torch.int64, device=model.device)
            point_sparse, _ = pe((centres[picks].to(model.device), labels), None, None)
            inputs += [[keys, s.float().cpu().numpy()] for s in (box_sparse, point_sparse)]
    return inputs
