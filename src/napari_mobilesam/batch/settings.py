"""The settings of a batch run: SegEvery's options, and how files are read and models run."""

from __future__ import annotations

from dataclasses import dataclass

from napari_mobilesam.engines.names import ENGINES
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.stacks.planes import LINK_MODES, check_link_mode

__all__ = ["BatchSettings"]


@dataclass(frozen=True)
class BatchSettings(SegEveryOptions):
    """The SegEvery options of a batch run, and how its files are read and its models run.

    Small and picklable: sent to every task. Every field of
    :class:`~napari_mobilesam.segevery.options.SegEveryOptions` (``detector``, ``conf``,
    ``iou``, ``max_objects``, ``min_area``, ``decoder``, ``tiling``, ``tile_shape``,
    ``halo``, ``points_per_side``), checked when made, and:

    Parameters
    ----------
    link : {"auto", "off", "z", "t"}
        Link the objects of a stack's planes into 3-D objects ("z") or tracks ("t") as the
        SegEvery widget does (:func:`napari_mobilesam.stacks.linking.link_slices`); "auto"
        picks tracks when the stack axis is a file's T axis.
    contrast_limits : (lo, hi), optional
        Display range of every image (None: each plane's own).
    weights : str, optional
        A ``mobile_sam.pt``-format file (None: ``NAPARI_MOBILESAM_WEIGHTS`` or the default
        weights).
    device : str, optional
        Torch device of the models (None: the best available).
    threads : int, optional
        Torch's thread count in the process that runs a task (None leaves it).
    engine : {"torch", "auto", "openvino", "openvino-int8"}
        What runs the image encoder on a CPU (see
        :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`).
    """

    link: str = "auto"
    contrast_limits: tuple[float, float] | None = None
    weights: str | None = None
    device: str | None = None
    threads: int | None = None
    engine: str = "torch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.engine not in ENGINES:
            raise InvalidValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        check_link_mode(self.link, ("auto", *LINK_MODES))
        if self.threads is not None and self.threads < 1:
            raise InvalidValueError(f"threads must be at least 1, got {self.threads}")
