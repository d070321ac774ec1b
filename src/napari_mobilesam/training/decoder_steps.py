"""One training step of a mask decoder on one stored embedding, and its validation.

An epoch steps over every object of every training image, in batches of up to
``prompts_per_image`` objects of one image decoded at once against its embedding: jittered
boxes; for SegAny's decoder also point prompts and a correction round (see
:mod:`~napari_mobilesam.training.decoder_prompts`). The decoder is
:class:`~napari_mobilesam.model.batched_decoder.BatchedMaskDecoder`, the function the
predictor decodes with, here with gradients. What a step holds: the (1, 256, 64, 64)
embedding, the batch's activations and gradients and the decoder with its optimizer state
(about 16 MiB x 3): measured 644 MiB above the memory at the start of training for 8 box
prompts (``benchmarks/train_decoder.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_mobilesam.evaluation.overlap import mask_ious
from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE, scale_boxes, scale_coords
from napari_mobilesam.imaging.upsampling import MaskUpsampler
from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder
from napari_mobilesam.model.prompt_decoder import PromptDecoder
from napari_mobilesam.segany.embedding_store import EmbeddingStore
from napari_mobilesam.training.decoder_data import DecoderSample, load_embedding, low_res_targets
from napari_mobilesam.training.decoder_files import MOBILE_SAM
from napari_mobilesam.training.decoder_prompts import (
    correction_points,
    interior_points,
    jittered_boxes,
    loss_regions,
    sam_loss,
    sample_points,
)

__all__ = ["DecoderSteps"]

#: Objects decoded together in validation.
VALIDATION_BATCH = 16


class DecoderSteps:
    """Training steps and validation of one decoder.

    Parameters
    ----------
    decoder : PromptDecoder
        Trained in place.
    kind : {"prompt_guided", "mobile_sam"}
        The box decoder is trained on boxes (what SegEvery gives it); SegAny's decoder also
        on points and corrections.
    generator : torch.Generator
        All random choices (objects, jitter, points).
    prompts_per_image : int
        Objects decoded per step.
    """

    def __init__(
        self,
        decoder: PromptDecoder,
        kind: str,
        generator: torch.Generator,
        prompts_per_image: int = 16,
    ) -> None:
        self.decoder = decoder
        self.kind = kind
        self.generator = generator
        self.prompts_per_image = prompts_per_image

    @property
    def _device(self) -> torch.device:
        return self.decoder.prompt_encoder.no_mask_embed.weight.device

    def _batched(self, embedding: torch.Tensor) -> BatchedMaskDecoder:
        pe = self.decoder.prompt_encoder
        return BatchedMaskDecoder(
            self.decoder.mask_decoder, embedding, pe.get_dense_pe(), pe.no_mask_embed.weight
        )

    def batches(self, samples: list[DecoderSample]) -> list[tuple[int, np.ndarray]]:
        """One epoch: every object of every sample once, in batches of up to
        ``prompts_per_image`` objects of one sample, in random order.

        Returns
        -------
        list of (sample index, rows of that sample's objects)
        """
        batches = []
        for index, sample in enumerate(samples):
            order = torch.randperm(len(sample.ids), generator=self.generator).numpy()
            for start in range(0, len(order), self.prompts_per_image):
                batches.append((index, np.sort(order[start : start + self.prompts_per_image])))
        shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
        return [batches[i] for i in shuffled]

    def loss(
        self, sample: DecoderSample, embedding: torch.Tensor, rows: np.ndarray
    ) -> torch.Tensor | None:
        """The loss of one step on objects ``rows`` of ``sample`` (a scalar with
        gradients), or None when none of them shows in the low-resolution frame."""
        targets = low_res_targets(sample, sample.ids[rows])
        visible = targets.flatten(1).amax(1) > 0  # objects too small for the low-res frame
        rows, targets = rows[visible.numpy()], targets[visible]
        if not len(rows):
            return None
        boxes = torch.as_tensor(scale_boxes(sample.boxes[rows], sample.shape), dtype=torch.float32)
        regions = loss_regions(boxes, targets.shape[-2:])
        batched = self._batched(embedding)
        jittered = jittered_boxes(boxes, sample.input_size, self.generator)
        sparse, _ = self.decoder.prompt_encoder(None, jittered.to(self._device), None)
        low, iou = batched.decode(sparse, None, multimask_output=False)
        box_loss = self._loss(low, iou, targets, regions)[0]
        if self.kind != MOBILE_SAM:
            return box_loss
        return (box_loss + self._point_losses(batched, boxes, targets, regions)) / 3

    def _loss(
        self,
        low: torch.Tensor,
        iou: torch.Tensor,
        targets: torch.Tensor,
        regions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`sam_loss` of (N, C, 256, 256) logits on the unpadded part."""
        hl, wl = targets.shape[-2:]
        device = low.device
        return sam_loss(low[..., :hl, :wl], iou, targets.to(device), regions.to(device))

    def _point_losses(
        self,
        batched: BatchedMaskDecoder,
        boxes: torch.Tensor,
        targets: torch.Tensor,
        regions: torch.Tensor,
    ) -> torch.Tensor:
        """Point prompts, then one correction round: the sum of their two losses.

        Prompts are sampled on the CPU (``boxes``, ``targets``), decoded on the decoder's
        device."""
        hl, wl = targets.shape[-2:]
        pe = self.decoder.prompt_encoder
        device = self._device
        n_positive = int(torch.randint(1, 4, (1,), generator=self.generator))
        n_negative = int(torch.randint(0, 2, (1,), generator=self.generator))
        coords, labels = sample_points(targets, boxes, n_positive, n_negative, self.generator)
        multimask = n_positive + n_negative == 1  # an ambiguous single click
        sparse, _ = pe((coords.to(device), labels.to(device)), None, None)
        low, iou = batched.decode(sparse, None, multimask_output=multimask)
        point_loss, chosen = self._loss(low, iou, targets, regions)

        previous = low[torch.arange(len(chosen)), chosen].detach()  # (N, 256, 256)
        extra, extra_labels = correction_points(
            previous[:, :hl, :wl].cpu(), targets, self.generator
        )
        coords = torch.cat([coords, extra], dim=1).to(device)
        labels = torch.cat([labels, extra_labels], dim=1).to(device)
        sparse, dense = pe((coords, labels), None, previous[:, None])
        low, iou = batched.decode(sparse, dense, multimask_output=False)
        return point_loss + self._loss(low, iou, targets, regions)[0]

    @torch.no_grad()
    def validate(self, samples: list[DecoderSample], store: EmbeddingStore) -> dict[str, float]:
        """Mean IoU of box-prompted and of point-prompted masks over every object.

        A box prompt is the object's exact box, single-mask output; a point prompt is one
        click at the object's most interior pixel, multimask output, the mask with the
        highest predicted IoU kept (as SegAny does). Masks are compared at the image's
        resolution (upsampled as the predictor does) with
        :func:`napari_mobilesam.evaluation.overlap.mask_ious`.
        """
        box_ious, point_ious = [], []
        for sample in samples:
            batched = self._batched(load_embedding(store, sample).to(self._device))
            upsampler = MaskUpsampler(sample.shape, sample.input_size, low_res=LOW_RES_SIDE)
            for start in range(0, len(sample.ids), VALIDATION_BATCH):
                rows = np.arange(start, min(start + VALIDATION_BATCH, len(sample.ids)))
                box_masks, point_masks = self._predict(sample, rows, batched, upsampler)
                true = sample.true_masks(sample.ids[rows])
                box_ious.append(mask_ious(box_masks, true))
                point_ious.append(mask_ious(point_masks, true))
        return {
            "val/box_mIoU": float(np.mean(np.concatenate(box_ious))),
            "val/point_mIoU": float(np.mean(np.concatenate(point_ious))),
            "val/objects": float(sum(len(ious) for ious in box_ious)),
        }

    def _predict(
        self,
        sample: DecoderSample,
        rows: np.ndarray,
        batched: BatchedMaskDecoder,
        upsampler: MaskUpsampler,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, h, w) bool masks of objects ``rows`` from their boxes and from one click."""
        pe = self.decoder.prompt_encoder
        device = self._device
        boxes = scale_boxes(sample.boxes[rows], sample.shape)
        sparse, _ = pe(None, torch.as_tensor(boxes, dtype=torch.float32, device=device), None)
        low, _ = batched.decode(sparse, None, multimask_output=False)
        box_masks = upsampler.masks(low[:, 0].cpu())

        points = scale_coords(interior_points(sample.labels, sample.ids[rows]), sample.shape)
        coords = torch.as_tensor(points, dtype=torch.float32, device=device)[:, None]
        labels = torch.ones((len(rows), 1), dtype=torch.int64, device=device)
        sparse, _ = pe((coords, labels), None, None)
        low, iou = batched.decode(sparse, None, multimask_output=True)
        best = low[torch.arange(len(rows)), iou.argmax(1)]
        return box_masks, upsampler.masks(best.cpu())
