"""SegAny's decoding off the GUI thread: prompts of a plane -> masks, whole plane or tiled.

:func:`decode_plane` and :func:`decode_tiled` turn the prompts of a plane into a
:class:`Decoded` preview by the rule of :mod:`napari_mobilesam.segany.prompts`;
:class:`PreviewEngine` runs them in a thread worker, keeping one predictor (and one tiled
predictor per large image) between requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image

from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._errors import expected_errors
from napari_mobilesam._widgets._model import (
    ENGINE,
    new_predictor,
)
from napari_mobilesam._widgets._plane import Plane
from napari_mobilesam._widgets._prompt_layers import PlanePrompts
from napari_mobilesam.imaging.convert import non_finite_note
from napari_mobilesam.imaging.prepared_input import model_input
from napari_mobilesam.imaging.tiling import Tile
from napari_mobilesam.segany.prompts import PromptSet, decode_prompts, decode_prompts_tiled
from napari_mobilesam.segany.tiled import TiledSegAnyPredictor
from napari_mobilesam.segany.tiled_prediction import combine_predictions

if TYPE_CHECKING:
    from napari_mobilesam.segany.predictor import SegAnyPredictor


@dataclass(frozen=True)
class Decoded:
    """Decoder output: ``separate_objects`` False means candidate masks of one object.

    ``masks`` cover the ``window`` (y0, y1, x0, x1) of the plane: the whole plane for an
    image that is not tiled, the tile (or tiles) they were decoded on otherwise. ``note``
    says where they were decoded (for the status line), empty when not tiled.
    """

    masks: np.ndarray  # (C, h, w) bool over the window
    scores: np.ndarray  # (C,)
    separate_objects: bool
    window: tuple[int, int, int, int] | None = None
    note: str = ""
    #: What the plane's NaN or infinite pixels became, when it has some.
    warning: str = ""

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the masks in the plane."""
        if self.window is not None:
            return self.window
        return 0, self.masks.shape[1], 0, self.masks.shape[2]

    def object_masks(self, candidate: int) -> list[np.ndarray]:
        """The masks to write: every object, or the chosen candidate of the one object."""
        if self.separate_objects:
            return list(self.masks)
        return [self.masks[self.ranking[candidate]]]

    @property
    def ranking(self) -> np.ndarray:
        """Mask indices from the highest predicted IoU to the lowest."""
        return np.argsort(-self.scores, kind="stable")

    def label_image(self, candidate: int) -> np.ndarray:
        """(h, w) uint16 image of the window: object i as i + 1; where objects overlap, the
        first wins."""
        masks = self.object_masks(candidate)
        labels = np.zeros(masks[0].shape, dtype=np.uint16)
        for value, mask in enumerate(masks, start=1):
            labels[mask & (labels == 0)] = value
        return labels


def decode_plane(predictor: SegAnyPredictor, prompts: PromptSet) -> Decoded:
    """Decode ``prompts`` on the predictor's current image (the whole plane)."""
    decoded = decode_prompts(predictor, prompts)
    return Decoded(decoded.masks, decoded.scores, decoded.separate_objects)


def decode_tiled(
    tiled: TiledSegAnyPredictor, prompts: PromptSet, encoded_before: set | frozenset = frozenset()
) -> Decoded:
    """Decode ``prompts`` tile by tile on a large image.

    ``encoded_before`` holds the outer regions of tiles encoded for previews that were
    superseded: the status still says they were encoded now.
    """
    predictions, separate_objects = decode_prompts_tiled(tiled, prompts)
    masks, window = combine_predictions(predictions)
    scores = np.concatenate([p.scores for p in predictions])
    note = _tile_note(tiled, predictions, encoded_before)
    return Decoded(masks, scores, separate_objects, window, note)


def _tile_note(
    tiled: TiledSegAnyPredictor, predictions: list, encoded_before: set | frozenset
) -> str:
    """Where masks were decoded, e.g. "Tile (2, 3) of 6×6, cached.", one part per tile."""
    parts: dict[tuple, str] = {}
    for prediction in predictions:
        key = tuple(prediction.tile.outer)
        encoded_now = prediction.encoded_now or key in encoded_before
        if key not in parts or encoded_now:
            state = "encoded now" if encoded_now else "cached"
            parts[key] = f"{tiled.describe(prediction.tile)}, {state}"
    text = "; ".join(parts.values())
    return text[:1].upper() + text[1:] + "."


@dataclass(frozen=True)
class DecodeRequest:
    """Everything a preview needs, captured on the GUI thread when the prompts changed.

    ``tiling`` is (tile size, halo) when the plane is segmented tile by tile, and ``tiles``
    the tiles (or coarse windows) the prompts are routed to.
    """

    generation: int
    image: Image
    data: Any
    plane: Plane
    contrast_limits: tuple[float, float] | None
    image_key: tuple
    prompts: PlanePrompts
    level: int = 0
    tiling: tuple[int, int] | None = None
    tiles: tuple[Tile, ...] = ()


class PreviewEngine:
    """Runs requests in thread workers, one at a time, skipping superseded ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._predictor: SegAnyPredictor | None = None
        self._predictor_engine = ""
        self._image_key: tuple | None = None
        self._image_note = ""  # NaN pixels of the plane, said in the status line
        self._tiled: TiledSegAnyPredictor | None = None
        self._tiled_key: tuple | None = None
        # Tiles encoded by runs whose preview was superseded (not yet reported).
        self._unreported: set[tuple[int, int, int, int]] = set()

    def is_embedded(self, image_key: tuple) -> bool:
        return self._image_key == image_key

    def tiled_for(self, request: DecodeRequest) -> TiledSegAnyPredictor | None:
        """The tiled predictor of ``request``'s plane and tile settings, if set up."""
        if self._tiled_key == (request.image_key, request.tiling):
            return self._tiled
        return None

    def needs_encoding(self, request: DecodeRequest) -> list[Tile]:
        """The tiles of a tiled request that are not encoded yet (read nothing)."""
        tiled = self.tiled_for(request)
        return [tile for tile in request.tiles if tiled is None or not tiled.is_encoded(tile)]

    def run(self, request: DecodeRequest, is_current: Callable[[], bool]) -> Decoded | str | None:
        """Decode ``request``: the masks, an error message for the user, or None if a newer
        request replaced it before it ran."""
        with self._lock:
            if not is_current():
                return None
            prepare_torch_import()
            try:
                if self._predictor is None or self._predictor_engine != ENGINE.value:
                    self._predictor, self._predictor_engine = new_predictor(), ENGINE.value
                    self._image_key = self._tiled_key = None
                if request.tiling is not None:
                    return self._run_tiled(request, is_current)
                if self._image_key != request.image_key:
                    self._image_key = None
                    plane = request.plane.take(request.data)
                    self._predictor.set_image(model_input(plane, request.contrast_limits))
                    self._image_key, self._image_note = request.image_key, non_finite_note(plane)
                if not is_current():
                    return None
                decoded = decode_plane(self._predictor, request.prompts)
                return replace(decoded, warning=self._image_note) if self._image_note else decoded
            except expected_errors() as exc:
                return str(exc)

    def _run_tiled(self, request: DecodeRequest, is_current: Callable[[], bool]) -> Decoded | None:
        key = (request.image_key, request.tiling)
        if self._tiled_key != key:
            self._tiled_key = None
            self._unreported = set()
            tile, halo = request.tiling
            tiled = TiledSegAnyPredictor(self._predictor, tile_shape=tile, halo=halo)
            tiled.set_image(
                request.plane.lazy(request.data), contrast_limits=request.contrast_limits
            )
            self._tiled, self._tiled_key = tiled, key
        self._image_key = None  # the predictor's current image is now a tile
        before = set(self._tiled.encoded_tiles)
        decoded = decode_tiled(self._tiled, request.prompts, self._unreported)
        if not is_current():
            self._unreported |= set(self._tiled.encoded_tiles) - before
            return None
        self._unreported = set()
        return decoded


@dataclass
class Preview:
    request: DecodeRequest
    decoded: Decoded
    candidate: int = 0
