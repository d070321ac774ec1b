"""Training data of decoder fine-tuning: every image (or tile) encoded once into an
:class:`~napari_mobilesam.segany.embedding_store.EmbeddingStore`, its objects, and their
masks in the decoder's low-resolution frame.

Images larger than the model's input are tiled as SegEvery tiles them
(:func:`~napari_mobilesam.segany.embedding_store.tiled_model_inputs`); an object cut by a
tile's edge inside the image is left out of that tile (it is whole in a neighbouring one).
Only the content keys and label images are kept in memory; embeddings are read from the
store when a sample is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE, MODEL_SIDE, preprocess_shape
from napari_mobilesam.imaging.tiling import Tile
from napari_mobilesam.segany.embedding_store import EmbeddingStore, tiled_model_inputs
from napari_mobilesam.training.annotations import AnnotatedImage

__all__ = ["DecoderSample", "encode_samples", "low_res_targets"]


@dataclass(frozen=True)
class DecoderSample:
    """One model input (an image, or a tile of a large one) and its objects.

    Attributes
    ----------
    name : str
        The image's name, with the tile's grid index for a tile.
    key : str
        Content key of the model input: where its (1, 256, 64, 64) embedding is stored.
    labels : (h, w) int array
        The label image of the model input.
    ids : (N,) int array
        The objects trained and validated on.
    boxes : (N, 4) float array
        Their boxes, x0, y0, x1, y1 in pixels of the model input (end exclusive).
    """

    name: str
    key: str
    labels: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the model input."""
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the model input resized into the 1024 frame."""
        return preprocess_shape(*self.shape, MODEL_SIDE)

    def true_masks(self, ids: np.ndarray) -> np.ndarray:
        """(N, h, w) bool masks of objects ``ids``."""
        return self.labels[None] == np.asarray(ids)[:, None, None]


def encode_samples(
    items: Sequence[AnnotatedImage],
    predictor: object,
    store: EmbeddingStore,
    role: str,
    progress: Callable[[str], None] | None = None,
) -> list[DecoderSample]:
    """Encode what the store lacks of ``items`` and list their samples with objects.

    Parameters
    ----------
    items : sequence of AnnotatedImage
    predictor : SegAnyPredictor
        Its model's image encoder makes the embeddings (called once per missing input).
    store : EmbeddingStore
    role : str
        ``"training"`` or ``"validation"``, for messages.
    progress : callable, optional
        Called with a line per image.

    Raises
    ------
    InvalidValueError
        None of ``items`` has an object.
    """
    samples: list[DecoderSample] = []
    for number, item in enumerate(items, 1):
        full_shape = item.labels.shape[:2]
        for tile, prepared in tiled_model_inputs(item.image, item.contrast_limits):
            labels = item.labels if tile is None else item.labels[tile.slices]
            if prepared.key not in store:
                store.add(predictor, prepared)
            ids, boxes = _whole_objects(np.asarray(labels), tile, full_shape)
            if len(ids):
                name = item.name if tile is None else f"{item.name}[tile {tile.index}]"
                samples.append(DecoderSample(name, prepared.key, np.asarray(labels), ids, boxes))
        if progress is not None:
            progress(f"encoded {role} image {number}/{len(items)}: {item.name}")
    if items and not samples:
        names = ", ".join(item.name for item in items[:3])
        raise InvalidValueError(
            f"None of the {len(items)} {role} images has an object in its label image "
            f"(e.g. {names}): fine-tuning needs labelled objects (non-zero ids)."
        )
    return samples


def _whole_objects(
    labels: np.ndarray, tile: Tile | None, full_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and (x0, y0, x1, y1) boxes of the objects not cut by an inner tile edge."""
    h, w = labels.shape
    if labels.max(initial=0) <= 0:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    # Edges of the tile that lie inside the image: objects touching them are cut.
    cut_top = cut_left = cut_bottom = cut_right = False
    if tile is not None:
        y0, y1, x0, x1 = tile.outer
        cut_top, cut_left = y0 > 0, x0 > 0
        cut_bottom, cut_right = y1 < full_shape[0], x1 < full_shape[1]
    ids, boxes = [], []
    for index, found in enumerate(ndimage.find_objects(np.maximum(labels, 0)), 1):
        if found is None:
            continue
        rows, cols = found
        if (
            (cut_top and rows.start == 0)
            or (cut_bottom and rows.stop == h)
            or (cut_left and cols.start == 0)
            or (cut_right and cols.stop == w)
        ):
            continue
        ids.append(index)
        boxes.append((cols.start, rows.start, cols.stop, rows.stop))
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def low_res_targets(sample: DecoderSample, ids: np.ndarray) -> torch.Tensor:
    """Masks of objects ``ids`` in the decoder's low-resolution frame, unpadded part.

    The (256, 256) logits cover the padded 1024 frame; the model input fills its top-left
    ``input_size``, i.e. the top-left ``ceil(input_size / 4)`` low-res pixels. Labels are
    sampled there by nearest neighbour.

    Returns
    -------
    (N, hl, wl) float32 tensor of 0 and 1.
    """
    factor = MODEL_SIDE // LOW_RES_SIDE
    (h, w), (hi, wi) = sample.shape, sample.input_size
    hl, wl = -(-hi // factor), -(-wi // factor)
    rows = np.minimum(((np.arange(hl) + 0.5) * factor * h / hi).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(wl) + 0.5) * factor * w / wi).astype(np.int64), w - 1)
    small = sample.labels[np.ix_(rows, cols)]
    return torch.from_numpy(small[None] == np.asarray(ids)[:, None, None]).float()


def load_embedding(store: EmbeddingStore, sample: DecoderSample) -> torch.Tensor:
    """The (1, 256, 64, 64) embedding of ``sample``, read from the store."""
    entry = store.get(sample.key)
    if entry is None:
        raise InvalidValueError(
            f"The embedding store {store.path} lost the embedding of {sample.name}; "
            "delete the store and run again."
        )
    return torch.from_numpy(entry[0])
