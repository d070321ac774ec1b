"""SegAny: MobileSAM prompted segmentation of one image, with an embedding cache.

:class:`SegAnyPredictor` follows segment_anything's ``SamPredictor``: set an image once
(the expensive image encoder, see :mod:`~napari_mobilesam.segany.image_encoding`), then
ask for masks from points, boxes and earlier masks (the cheap prompt decoder) as often as
you like.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines.decoder_choice import DecoderFactory, mask_decoder_engine
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE, scale_boxes, scale_coords
from napari_mobilesam.imaging.upsampling import MaskUpsampler
from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder
from napari_mobilesam.model.prompt_decoder import PromptDecoder
from napari_mobilesam.model.sam import MobileSAM
from napari_mobilesam.segany.embedding_cache import ImageEmbedding as _ImageState
from napari_mobilesam.segany.image_encoding import PRECISIONS, ImageEncoding
from napari_mobilesam.segany.prompt_checks import (
    MAX_COORDINATE,
    check_box,
    check_boxes,
    check_mask_input,
    check_points,
)

if TYPE_CHECKING:
    from napari_mobilesam.segany.embedding_cache import EmbeddingCache
    from napari_mobilesam.segany.embedding_store import EmbeddingStore


class SegAnyPredictor(ImageEncoding):
    """Segment objects in one image from point, box and mask prompts.

    Parameters
    ----------
    model : MobileSAM
        From :func:`napari_mobilesam.build_mobile_sam`.
    device : str, torch.device or None
        Where the model runs; None picks CUDA, then MPS, then the CPU. The model is moved
        there.
    cache_size : int
        How many image embeddings to keep (least recently used dropped first). Each is
        4 MiB. ``set_image`` on an image whose content is cached skips the encoder.
    batch_size : int
        Prompts decoded together by :meth:`predict_boxes`; bounds memory
        (about 12 MiB per prompt in flight).
    precision : {"float32", "bfloat16", "float16"}
        "float32" (default) matches the reference implementation. "bfloat16" runs the
        model under autocast (faster on CPUs with AVX512-BF16 or AMX, and on GPUs);
        "float16" is for CUDA. Masks agree with float32 on about 98-99 % of pixels.
    embedding_store : EmbeddingStore, optional
        Precomputed embeddings (``napari-mobilesam embed``): an image found there is not
        encoded. Settable later as the ``embedding_store`` attribute.
    embedding_cache : EmbeddingCache, optional
        The in-memory cache to use instead of a new one of ``cache_size``: predictors
        of one model, device and precision that share it never encode an image (or tile)
        that another has encoded (the napari widgets share one).
    engine : {"torch", "auto", "openvino", "openvino-int8"}
        What runs the image encoder and the mask decoders (the model's own, and any
        other given to :meth:`decode_boxes`) on a CPU. "torch" (default) is the reference.
        "openvino" (float32, embeddings within 1e-4 of torch) and "openvino-int8" need
        ``pip install "napari-mobilesam[cpu]"``; they are converted once per weights file
        (on the first image, or by :meth:`prepare_engine`) and kept in the cache folder.
        "auto" takes, per network, the fastest of them that passed its checks against
        torch on this machine (measured once, remembered), else torch. See
        :mod:`napari_mobilesam.engines`.
    calibration : sequence of images, optional
        Images to calibrate int8 on (default: a documented set of scikit-image samples,
        see :mod:`napari_mobilesam.engines.calibration`).

    Examples
    --------
    >>> from napari_mobilesam import build_mobile_sam, SegAnyPredictor
    >>> predictor = SegAnyPredictor(build_mobile_sam())  # doctest: +SKIP
    >>> predictor.set_image(image)  # doctest: +SKIP
    >>> masks, scores, logits = predictor.predict(
    ...     point_coords=[[120, 80]], point_labels=[1])  # doctest: +SKIP
    >>> best = masks[scores.argmax()]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: MobileSAM,
        device: str | torch.device | None = None,
        *,
        cache_size: int = 32,
        batch_size: int = 32,
        precision: str = "float32",
        embedding_store: EmbeddingStore | None = None,
        embedding_cache: EmbeddingCache | None = None,
        engine: str = "torch",
        calibration: Sequence[np.ndarray] | None = None,
    ) -> None:
        super().__init__(
            model,
            device,
            cache_size=cache_size,
            precision=precision,
            embedding_store=embedding_store,
            embedding_cache=embedding_cache,
            engine=engine,
            calibration=calibration,
        )
        if batch_size < 1:
            raise InvalidValueError("cache_size and batch_size must be at least 1")
        self.batch_size = batch_size
        self._decoder: BatchedMaskDecoder | None = None
        # Other prompt decoders (MobileSAMv2's box decoder) on the current embedding.
        self._other_decoders: dict[int, tuple[PromptDecoder, BatchedMaskDecoder]] = {}
        # The engine of each decoder (the model's, or a PromptDecoder), resolved once.
        self._decoder_engines: dict[int, tuple[torch.nn.Module, str, DecoderFactory]] = {}
        self._upsampler: MaskUpsampler | None = None

    def _activate(self, state: _ImageState) -> None:
        super()._activate(state)
        self._upsampler = MaskUpsampler(
            state.original_size,
            state.input_size,
            model_side=self.model.image_size,
            low_res=LOW_RES_SIDE,
            threshold=self.model.mask_threshold,
        )
        self._decoder = None  # built on first use: SegEvery may decode with another one
        self._other_decoders = {}

    def _model_decoder(self, state: _ImageState) -> BatchedMaskDecoder:
        """The model's own batched mask decoder on the current image, built once."""
        if self._decoder is None:
            self._decoder = self._batched_decoder(self.model, state)
        return self._decoder

    def _batched_decoder(
        self, decoder: MobileSAM | PromptDecoder, state: _ImageState
    ) -> BatchedMaskDecoder:
        """``decoder`` on the current embedding, in the engine chosen for it."""
        make = self._decoder_engine(decoder, None)[1]
        with self._inference():
            return make(state.embedding)

    def _decoder_engine(
        self, decoder: MobileSAM | PromptDecoder, progress: ProgressCallback | None
    ) -> tuple[str, DecoderFactory]:
        entry = self._decoder_engines.get(id(decoder))
        if entry is None:
            name, make = mask_decoder_engine(
                decoder, self.model, self.engine, calibration=self._calibration, progress=progress
            )
            entry = self._decoder_engines[id(decoder)] = (decoder, name, make)
        return entry[1], entry[2]

    def prepare_engine(self, progress: ProgressCallback | None = None) -> str:
        """Load (converting once per weights file) the engines of the image encoder and of
        the model's own mask decoder; return the encoder's name (see :attr:`engines`)."""
        name = super().prepare_engine(progress)
        self._decoder_engine(self.model, progress)
        return name

    @property
    def engines(self) -> dict[str, str]:
        """The engine of each network resolved so far: ``"image_encoder"`` and
        ``"mask_decoder"`` (the model's own), and ``"decoder:<source>"`` for another
        decoder used (e.g. ``"decoder:prompt_guided"``)."""
        names = {"image_encoder": self._encoder[0]} if self._encoder is not None else {}
        for decoder, name, _ in self._decoder_engines.values():
            key = "mask_decoder" if decoder is self.model else f"decoder:{decoder.source}"
            names[key] = name
        return names

    def reset_image(self) -> None:
        """Forget the current image (the cache keeps its embedding)."""
        super().reset_image()
        self._decoder = None
        self._other_decoders = {}
        self._upsampler = None

    def predict(
        self,
        point_coords: np.ndarray | Sequence | None = None,
        point_labels: np.ndarray | Sequence | None = None,
        box: np.ndarray | Sequence | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks of one object from points, a box and/or an earlier mask.

        Parameters
        ----------
        point_coords : (N, 2) array, optional
            (x, y) pixel coordinates in the image given to :meth:`set_image`.
        point_labels : (N,) array, optional
            1 for a foreground point, 0 for a background point.
        box : (4,) array, optional
            x0, y0, x1, y1 in pixels.
        mask_input : (1, 256, 256) array, optional
            Low-resolution logits of an earlier call, to refine that mask.
        multimask_output : bool
            Return three candidate masks (whole, part, sub-part), best for a single
            point; else one mask.
        return_logits : bool
            Return float logits instead of boolean masks.

        Returns
        -------
        masks : (C, H, W) bool (float32 logits with ``return_logits``), C = 3 or 1
        scores : (C,) float32 predicted IoU of each mask
        low_res_logits : (C, 256, 256) float32, for ``mask_input`` of a later call
        """
        state = self._require_image()
        coords, labels = check_points(point_coords, point_labels)
        box_arr = check_box(box)
        mask_arr = check_mask_input(mask_input)

        points = None
        if coords is not None:
            scaled = scale_coords(coords, state.original_size, self.model.image_size)
            points = (
                torch.as_tensor(scaled, dtype=torch.float32, device=self.device)[None],
                torch.as_tensor(labels, dtype=torch.int64, device=self.device)[None],
            )
        boxes = None
        if box_arr is not None:
            scaled = scale_boxes(box_arr, state.original_size, self.model.image_size)
            boxes = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
        masks_t = None
        if mask_arr is not None:
            masks_t = torch.as_tensor(mask_arr, dtype=torch.float32, device=self.device)[None]

        with self._inference():
            sparse, dense = self.model.prompt_encoder(points, boxes, masks_t)
            low_res, scores = self._model_decoder(state).decode(
                sparse, dense if masks_t is not None else None, multimask_output
            )
            low_res, scores = low_res.float(), scores.float()
            if return_logits:
                masks = self.upscale_logits(low_res)[0].cpu().numpy()
            else:
                masks = self.masks_from_logits(low_res[0])
        return masks, scores[0].cpu().numpy(), low_res[0].cpu().numpy()

    def decode_boxes(
        self,
        boxes: np.ndarray,
        batch_size: int | None = None,
        decoder: PromptDecoder | None = None,
    ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """Decode box prompts in batches, single-mask output, at low resolution.

        Yields ``(rows, low_res_logits (b, 1, 256, 256), scores (b, 1))`` tensors per batch,
        where ``rows`` is the slice of ``boxes`` decoded. This is the building block of
        :meth:`predict_boxes` and of SegEvery, which never hold all full-size masks.

        ``decoder`` decodes with another prompt encoder and mask decoder on the same image
        embedding, such as MobileSAMv2's prompt-guided decoder; None uses the model's own.
        """
        state = self._require_image()
        boxes = check_boxes(boxes)
        prompt_encoder, batched = self._decoder_parts(decoder, state)
        scaled = scale_boxes(boxes, state.original_size, self.model.image_size)
        boxes_t = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
        step = batch_size or self.batch_size
        for start in range(0, len(boxes_t), step):
            rows = slice(start, min(start + step, len(boxes_t)))
            with self._inference():
                sparse, _ = prompt_encoder(None, boxes_t[rows], None)
                low_res, scores = batched.decode(sparse, None, multimask_output=False)
            yield rows, low_res.float(), scores.float()

    def _decoder_parts(
        self, decoder: PromptDecoder | None, state: _ImageState
    ) -> tuple[torch.nn.Module, BatchedMaskDecoder]:
        """The prompt encoder and batched mask decoder of ``decoder`` on this image."""
        if decoder is None:
            return self.model.prompt_encoder, self._model_decoder(state)
        if not isinstance(decoder, PromptDecoder):
            raise InvalidTypeError(
                "decoder must be None or a PromptDecoder (see "
                "napari_mobilesam.segevery.box_decoders.load_box_decoder), got "
                f"{type(decoder).__name__}"
            )
        entry = self._other_decoders.get(id(decoder))
        if entry is None:
            decoder.to(self.device).eval()
            entry = (decoder, self._batched_decoder(decoder, state))
            self._other_decoders[id(decoder)] = entry
        return decoder.prompt_encoder, entry[1]

    def decode_points(
        self, points: np.ndarray, multimask_output: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode each of N foreground points as its own prompt, at low resolution.

        Parameters
        ----------
        points : (N, 2) array of (x, y) pixels.

        Returns
        -------
        low_res_logits : (N, C, 256, 256) tensor, C = 3 or 1
        iou_pred : (N, C) tensor
        """
        state = self._require_image()
        coords, _ = check_points(points, np.ones(len(points), dtype=np.int64))
        scaled = scale_coords(coords, state.original_size, self.model.image_size)
        with self._inference():
            coords_t = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)[:, None]
            labels_t = torch.ones((len(coords), 1), dtype=torch.int64, device=self.device)
            sparse, _ = self.model.prompt_encoder((coords_t, labels_t), None, None)
            low_res, iou = self._model_decoder(state).decode(sparse, None, multimask_output)
        return low_res.float(), iou.float()

    def predict_boxes(
        self,
        boxes: np.ndarray,
        return_logits: bool = False,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One mask per box: N objects decoded in batches against the one embedding.

        Parameters
        ----------
        boxes : (N, 4) array
            x0, y0, x1, y1 in pixels of the image given to :meth:`set_image`.
        return_logits : bool
            Return float logits instead of boolean masks.
        batch_size : int, optional
            Prompts per batch (default: the predictor's ``batch_size``).

        Returns
        -------
        masks : (N, H, W) bool (float32 logits with ``return_logits``)
        scores : (N,) float32 predicted IoU
        low_res_logits : (N, 256, 256) float32
        """
        state = self._require_image()
        boxes = check_boxes(boxes)
        n = len(boxes)
        h, w = state.original_size
        masks = np.zeros((n, h, w), dtype=np.float32 if return_logits else bool)
        scores = np.zeros(n, dtype=np.float32)
        low_res_all = np.zeros((n, LOW_RES_SIDE, LOW_RES_SIDE), dtype=np.float32)
        for rows, low_res, batch_scores in self.decode_boxes(boxes, batch_size):
            if return_logits:
                with self._inference():
                    masks[rows] = self.upscale_logits(low_res)[:, 0].cpu().numpy()
            else:
                masks[rows] = self.masks_from_logits(low_res[:, 0])
            scores[rows] = batch_scores[:, 0].cpu().numpy()
            low_res_all[rows] = low_res[:, 0].cpu().numpy()
        return masks, scores, low_res_all

    def masks_from_logits(self, low_res: torch.Tensor) -> np.ndarray:
        """Low-resolution logits (N, 256, 256) -> (N, H, W) bool masks of the image.

        The same masks as thresholding :meth:`upscale_logits`, but each is computed only
        on the crop where it can be positive (see :mod:`napari_mobilesam.imaging.upsampling`).
        """
        self._require_image()
        return self._upsampler.masks(low_res.cpu())

    @property
    def mask_upsampler(self) -> MaskUpsampler:
        """Turns one (256, 256) logit map of the current image into a cropped full-size
        mask; see :class:`napari_mobilesam.imaging.upsampling.MaskUpsampler`."""
        self._require_image()
        return self._upsampler

    def upscale_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits (B, C, 256, 256) -> (B, C, H, W) logits of the image.

        The reference's two bilinear resizes (to the padded 1024 frame, then, after
        cropping the padding, to the image size).
        """
        self._require_image()
        return self._upsampler.full(low_res)


__all__ = ["MAX_COORDINATE", "PRECISIONS", "SegAnyPredictor"]
