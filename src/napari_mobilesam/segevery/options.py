"""Every setting of a SegEvery run, in one object checked once: :class:`SegEveryOptions`.

:func:`napari_mobilesam.segment_everything`, the per-plane stack loop
(:mod:`napari_mobilesam.stacks.planes`), the SegEvery widget and the batch run all take
their settings from a :class:`SegEveryOptions`. :class:`LazyDetector` loads the detector the
options name once, on first use, for every plane and tile of a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.engines.names import ENGINES
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.tiling import DEFAULT_HALO, DEFAULT_TILE_SHAPE, TileGrid
from napari_mobilesam.segevery.boxes import MAX_DETECTIONS, check_fraction, check_positive_int
from napari_mobilesam.segevery.detectors.base import CheckedDetector

__all__ = ["InvalidOptionError", "LazyDetector", "SegEveryOptions"]


class InvalidOptionError(InvalidValueError, TypeError):
    """A SegEvery setting of the wrong type or out of range; the message names it."""


@dataclass(frozen=True)
class SegEveryOptions:
    """What SegEvery is asked to do; checked when made (:class:`InvalidOptionError`).

    Parameters
    ----------
    detector : str, path or callable
        How objects are discovered: "auto" (MobileSAMv2's ObjectAwareModel if available,
        else FastSAM-x), a registry name ("object_aware", "fastsam"), the path of an
        ultralytics YOLO ``.pt`` or ``.onnx`` file, "grid" (SAM's automatic mask generation
        on a ``points_per_side`` grid), a callable ``image -> (boxes, scores)`` or a
        :class:`LazyDetector`. See :func:`napari_mobilesam.segevery.discovery.load_detector`.
    decoder : str, path, PromptDecoder, BoxDecoder or None
        What decodes the boxes: "auto", "prompt_guided", "mobile_sam", a decoder file, or an
        already resolved ``BoxDecoder``; see
        :func:`napari_mobilesam.segevery.box_decoders.load_box_decoder`.
    conf, iou : float
        Detector confidence threshold and class-agnostic NMS IoU, in [0, 1].
    max_objects : int
        Most objects decoded (per tile when tiled), the most confident first.
    min_area : int
        Objects smaller than this many pixels are dropped.
    points_per_side : int
        Grid side for ``detector="grid"``.
    tiling : bool
        Cut a plane larger than the model's 1024-pixel input into tiles (True) or resize it
        into that input (False).
    tile_shape, halo : int or (rows, columns)
        Tile size and the margin read on each side of a tile.
    level : int, optional
        The level of a multiscale image to segment (None or 0: full resolution).
    engine : {"torch", "auto", "openvino", "openvino-int8"}, optional
        What runs a YOLO ``.pt`` detector (see
        :func:`napari_mobilesam.segevery.discovery.load_detector`). None (default):
        the predictor's ``engine``, so one setting chooses for every network ("auto"
        then chooses per network).
    """

    detector: str | os.PathLike[str] | Callable[[np.ndarray], Any] = "auto"
    decoder: Any = "auto"
    conf: float = 0.4
    iou: float = 0.9
    max_objects: int = MAX_DETECTIONS
    min_area: int = 0
    points_per_side: int = 32
    tiling: bool = True
    tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE
    halo: int | Sequence[int] = DEFAULT_HALO
    level: int | None = None
    engine: str | None = None

    def __post_init__(self) -> None:
        with _as_option_error():
            check_fraction(self.conf, "conf")
            check_fraction(self.iou, "iou")
            check_positive_int(self.max_objects, "max_objects")
            check_positive_int(self.points_per_side, "points_per_side")
        if isinstance(self.min_area, bool) or not _is_finite(self.min_area) or self.min_area < 0:
            raise InvalidOptionError(f"min_area must be 0 or more pixels, got {self.min_area!r}")
        if not isinstance(self.tiling, bool | np.bool_):
            raise InvalidOptionError(f"tiling must be True or False, got {self.tiling!r}")
        if self.level is not None and (
            isinstance(self.level, bool) or not isinstance(self.level, int | np.integer)
        ):
            raise InvalidOptionError(f"level must be an integer or None, got {self.level!r}")
        if not isinstance(self.detector, str | os.PathLike) and not callable(self.detector):
            raise InvalidOptionError(
                "detector must be a name, a file path or a callable image -> (boxes, "
                f"scores); got {type(self.detector).__name__}"
            )
        with _as_option_error():
            TileGrid((1, 1), tile_shape=self.tile_shape, halo=self.halo)
        if self.engine is not None and self.engine not in ENGINES:
            raise InvalidOptionError(f"engine must be one of {ENGINES}, got {self.engine!r}")

    @property
    def grid(self) -> bool:
        """Whether objects are prompted by SAM's grid of points instead of a detector."""
        return isinstance(self.detector, str) and self.detector == "grid"

    def detector_engine(self, predictor: Any = None) -> str:
        """The engine of the detector: ``engine``, else the predictor's (torch without)."""
        if self.engine is not None:
            return self.engine
        return str(getattr(predictor, "engine", "torch"))

    @property
    def max_det(self) -> int:
        """The most boxes the detector is asked for (never fewer than its default)."""
        return max(MAX_DETECTIONS, int(self.max_objects))


class LazyDetector(CheckedDetector):
    """The detector of ``options``, loaded on first use and kept for the rest of a run.

    One object serves every plane and tile: ``detector="auto"`` offline tries its
    download once, not once per plane. A load that fails fails again, with the same
    error, without a new attempt. :func:`~napari_mobilesam.segevery.discovery.load_detector`
    returns it as it is, and it reports the loaded detector's ``applies_nms``, so that
    discovery treats its boxes exactly as the loaded detector's.

    Parameters
    ----------
    options : SegEveryOptions
        Its ``detector``, ``conf``, ``iou`` and ``max_objects``.
    device : str, optional
        Torch device of a YOLO detector (None: the best available).
    engine : str, optional
        What runs a YOLO detector (None: ``options.detector_engine()``).
    """

    def __init__(
        self, options: SegEveryOptions, device: str | None = None, engine: str | None = None
    ) -> None:
        super().__init__(options.detector)
        self.options = options
        self.device = device
        self.engine = options.detector_engine() if engine is None else engine
        self._detector: Callable[[np.ndarray], Any] | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"LazyDetector({self.options.detector!r})"

    def __str__(self) -> str:
        return str(self.options.detector)

    def load(self) -> Callable[[np.ndarray], Any]:
        """The loaded detector (see :func:`napari_mobilesam.segevery.discovery.load_detector`)."""
        if self._error is not None:
            raise self._error
        if self._detector is None:
            from napari_mobilesam.segevery.discovery import load_detector

            o = self.options
            try:
                self._detector = load_detector(
                    o.detector,
                    conf=o.conf,
                    iou=o.iou,
                    device=self.device,
                    max_det=o.max_det,
                    engine=self.engine,
                )
            except Exception as error:
                self._error = error
                raise
        return self._detector

    @property
    def applies_nms(self) -> bool:
        """Whether the loaded detector has suppressed overlapping boxes itself."""
        return bool(getattr(self.load(), "applies_nms", False))

    def __call__(self, image: np.ndarray, /) -> Any:
        return self.load()(image)


@contextmanager
def _as_option_error() -> Iterator[None]:
    """Re-raise the TypeError or ValueError of a shared check as an InvalidOptionError."""
    try:
        yield
    except InvalidOptionError:
        raise
    except (TypeError, ValueError) as error:
        raise InvalidOptionError(str(error)) from None


def _is_finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False
