"""Image embeddings kept in memory: the encoder's output of an image, keyed by its content.

:class:`EmbeddingCache` is the least-recently-used cache of
:class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`; it is safe to use from several
threads (a background thread may encode ahead while another decodes).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from napari_mobilesam.errors import InvalidValueError

__all__ = ["EmbeddingCache", "ImageEmbedding"]


@dataclass(frozen=True)
class ImageEmbedding:
    """The image encoder's output for one image, with the sizes prompts are scaled by.

    Attributes
    ----------
    embedding : (1, 256, 64, 64) tensor
    original_size : (H, W)
        Of the image given to ``set_image``.
    input_size : (h, w)
        After resizing the longest side to the model's 1024 pixels.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class EmbeddingCache:
    """At most ``size`` embeddings by content key; the least recently used is dropped first.

    Parameters
    ----------
    size : int
        At least 1.

    Examples
    --------
    >>> cache = EmbeddingCache(2)
    >>> cache.put("a", embedding_a)  # doctest: +SKIP
    >>> "a" in cache, cache.get("b")  # doctest: +SKIP
    (True, None)
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise InvalidValueError("cache_size must be at least 1")
        self.size = size
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: str) -> ImageEmbedding | None:
        """The embedding of ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: ImageEmbedding) -> None:
        """Keep ``entry`` under ``key`` as the most recently used, dropping the oldest."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every embedding."""
        with self._lock:
            self._entries.clear()
