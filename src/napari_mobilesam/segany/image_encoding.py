"""The image side of SegAny: an image -> its embedding, encoded once and kept by content.

:class:`ImageEncoding` runs MobileSAM's image encoder (the expensive part) and keeps the
embeddings in an :class:`~napari_mobilesam.segany.embedding_cache.EmbeddingCache` keyed
by the content of the model input, so an image is encoded once whatever array it came
from; an :class:`~napari_mobilesam.segany.embedding_store.EmbeddingStore` of precomputed
embeddings is asked first. :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`
adds the prompt decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_mobilesam._allocator import keep_large_allocations_in_heap
from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines.calibration import encoder_input
from napari_mobilesam.engines.choice import check_engine, image_encoder
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.imaging.model_frame import preprocess_shape
from napari_mobilesam.imaging.prepared_input import ModelInput, model_input
from napari_mobilesam.model.device import default_device
from napari_mobilesam.model.sam import MobileSAM
from napari_mobilesam.segany.embedding_cache import EmbeddingCache
from napari_mobilesam.segany.embedding_cache import ImageEmbedding as _ImageState

if TYPE_CHECKING:
    from napari_mobilesam.segany.embedding_store import EmbeddingStore

__all__ = ["PRECISIONS", "ImageEncoding"]

PRECISIONS = ("float32", "bfloat16", "float16")


class ImageEncoding:
    """Encodes images with a MobileSAM model and keeps their embeddings; one is current.

    Parameters are those of :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`
    (``model``, ``device``, ``cache_size``, ``precision``, ``embedding_store``,
    ``embedding_cache``, ``engine``, ``calibration``).
    """

    def __init__(
        self,
        model: MobileSAM,
        device: str | torch.device | None = None,
        *,
        cache_size: int = 32,
        precision: str = "float32",
        embedding_store: EmbeddingStore | None = None,
        embedding_cache: EmbeddingCache | None = None,
        engine: str = "torch",
        calibration: Sequence[np.ndarray] | None = None,
    ) -> None:
        if not isinstance(model, MobileSAM):
            raise InvalidTypeError(
                f"model must be a MobileSAM from build_mobile_sam(), got {type(model).__name__}"
            )
        if precision not in PRECISIONS:
            raise InvalidValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if cache_size < 1:
            raise InvalidValueError("cache_size and batch_size must be at least 1")
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cpu":
            keep_large_allocations_in_heap()
        if precision == "float16" and self.device.type != "cuda":
            raise InvalidValueError(
                "precision='float16' needs a CUDA device; use 'bfloat16' on a CPU"
            )
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.engine = check_engine(engine, self.device, precision)
        self._calibration = calibration
        self._encoder: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
        self._cache = EmbeddingCache(cache_size) if embedding_cache is None else embedding_cache
        self._current_key: str | None = None
        self.embedding_store = embedding_store
        self._state: _ImageState | None = None

    def _activate(self, state: _ImageState) -> None:
        """Make ``state`` the current image (subclasses set up their decoders on it)."""
        self._state = state

    def reset_image(self) -> None:
        """Forget the current image (the cache keeps its embedding)."""
        self._state = None

    @property
    def cache_size(self) -> int:
        """How many image embeddings are kept (least recently used dropped first)."""
        return self._cache.size

    @cache_size.setter
    def cache_size(self, size: int) -> None:
        if size < 1:
            raise InvalidValueError("cache_size must be at least 1")
        self._cache.size = int(size)

    def set_image(
        self,
        image: np.ndarray | ModelInput,
        contrast_limits: Sequence[float] | None = None,
    ) -> None:
        """Compute (or fetch from the cache) the embedding of ``image``.

        Parameters
        ----------
        image : array
            (H, W) or (H, W, C) with C in 1..4, any numeric dtype; see
            :func:`napari_mobilesam.to_rgb_uint8` for how it becomes the model's RGB input.
            An (H, W, 3) uint8 RGB image is used exactly as the reference does. A
            :class:`~napari_mobilesam.imaging.prepared_input.ModelInput` is used as it is (not
            converted or hashed again).
        contrast_limits : (lo, hi), optional
            Display range to map to 0..255; by default the 0.1st-99.9th percentiles
            (uint8 images are used as they are).
        """
        prepared = model_input(image, contrast_limits)
        rgb, key = prepared.rgb, prepared.key
        state = self._cache.get(key)
        if state is None:
            state = self._stored_state(key) or self._encode(rgb)
            self._store(key, state)
        self._activate(state)
        self._current_key = key

    def precompute(
        self, image: np.ndarray | ModelInput, contrast_limits: Sequence[float] | None = None
    ) -> str:
        """Encode ``image`` into the cache without making it the current image.

        Safe to call from a background thread (e.g. to encode the next slices of a stack
        while the user works on this one); a later :meth:`set_image` of the same image
        skips the encoder. Returns the image's content key.
        """
        prepared = model_input(image, contrast_limits)
        rgb, key = prepared.rgb, prepared.key
        if key in self._cache:
            return key
        self._store(key, self._stored_state(key) or self._encode(rgb))
        return key

    def _stored_state(self, key: str) -> _ImageState | None:
        """The embedding of ``key`` from :attr:`embedding_store`, if it holds it."""
        if self.embedding_store is None:
            return None
        entry = self.embedding_store.lookup(self, key)
        return None if entry is None else self._state_of(*entry)

    def has_embedding(self, key: str) -> bool:
        """Whether the cache holds the embedding of the image with this content key."""
        return key in self._cache

    @property
    def current_key(self) -> str | None:
        """Content key of the current image if it was set by :meth:`set_image`, else None."""
        return self._current_key if self._state is not None else None

    def is_cached(
        self, image: np.ndarray | ModelInput, contrast_limits: Sequence[float] | None = None
    ) -> bool:
        """Whether :meth:`set_image` of ``image`` would skip the encoder (reads no model)."""
        key = model_input(image, contrast_limits).key
        return key in self._cache

    def set_embedding(
        self, embedding: torch.Tensor | np.ndarray, image_shape: Sequence[int]
    ) -> None:
        """Use a precomputed image embedding instead of running the encoder.

        Parameters
        ----------
        embedding : (1, 256, 64, 64) tensor or array
            The image encoder's output, e.g. from :meth:`get_image_embedding` of an
            earlier session.
        image_shape : (H, W)
            Size of the image the embedding was computed from; prompts are given in its
            pixels.
        """
        self._activate(self._state_of(embedding, image_shape))
        self._current_key = None

    def cache_embedding(
        self, key: str, embedding: torch.Tensor | np.ndarray, image_shape: Sequence[int]
    ) -> None:
        """Put a precomputed embedding in the cache, so that :meth:`set_image` of the image
        it belongs to skips the encoder (see :class:`napari_mobilesam.segany.embedding_store.
        EmbeddingStore`). The current image is not changed; safe from another thread.

        Parameters
        ----------
        key : str
            Content key of the model input (``model_input(image, limits).key``).
        embedding : (1, 256, 64, 64) tensor or array
        image_shape : (H, W)
            Size of the image the embedding was computed from.
        """
        self._store(key, self._state_of(embedding, image_shape))

    def _state_of(
        self, embedding: torch.Tensor | np.ndarray, image_shape: Sequence[int]
    ) -> _ImageState:
        embedding = torch.as_tensor(
            np.asarray(embedding) if not torch.is_tensor(embedding) else embedding
        )
        side = self.model.image_size // 16
        if tuple(embedding.shape) != (1, 256, side, side):
            raise InvalidValueError(
                f"embedding must have shape (1, 256, {side}, {side}), got {tuple(embedding.shape)}"
            )
        height, width = (int(side_) for side_ in tuple(image_shape)[:2])
        if height < 1 or width < 1:
            raise InvalidValueError(
                f"image_shape must be (H, W) with H, W >= 1, got {image_shape!r}"
            )
        input_size = preprocess_shape(height, width, self.model.image_size)
        embedding = embedding.to(device=self.device, dtype=torch.float32)
        return _ImageState(embedding, (height, width), input_size)

    def _store(self, key: str, state: _ImageState) -> None:
        self._cache.put(key, state)

    def prepare_engine(self, progress: ProgressCallback | None = None) -> str:
        """Load (converting once per weights file) the engine that encodes images, and
        return its name; "auto" is resolved here, measured once per machine (see
        :mod:`napari_mobilesam.engines.choice`). The first :meth:`set_image` calls it;
        call it earlier (e.g. in a background thread) to take the conversion out of the
        first click. ``progress(done, total)`` follows the conversion steps.
        """
        if self._encoder is None:
            self._encoder = image_encoder(
                self.model, self.engine, calibration=self._calibration, progress=progress
            )
        return self._encoder[0]

    def _encode(self, rgb: np.ndarray) -> _ImageState:
        self.prepare_engine()
        with self._inference():
            x, input_size = encoder_input(self.model, rgb)
            embedding = self._encoder[1](x).float().to(self.device)
        return _ImageState(embedding, (rgb.shape[0], rgb.shape[1]), input_size)

    def clear_cache(self) -> None:
        """Drop every cached embedding."""
        self._cache.clear()

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        return self._require_image().original_size

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the current image resized into the model's 1024 frame."""
        return self._require_image().input_size

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, 256, 64, 64)."""
        return self._require_image().embedding

    def _require_image(self) -> _ImageState:
        if self._state is None:
            raise RuntimeError(
                "No image is set: call predictor.set_image(image) before predicting masks."
            )
        return self._state

    @contextmanager
    def _inference(self) -> Iterator[None]:
        if self.precision == "float32":
            autocast = nullcontext()
        else:
            dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float16
            autocast = torch.autocast(self.device.type, dtype=dtype)
        with torch.inference_mode(), autocast:
            yield
