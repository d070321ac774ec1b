"""The settings of a batch run: SegEvery's options, and how files are read and models run."""

from __future__ import annotations

from dataclasses import dataclass

from napari_mobilesam.curation.features import check_ranges
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.stacks.link_options import LinkOptions
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
    search_radius, max_gap, neck_ratio
        How objects are linked, see :class:`~napari_mobilesam.stacks.link_options.LinkOptions`.
    contrast_limits : (lo, hi), optional
        Display range of every image (None: each plane's own).
    weights : str, optional
        A ``mobile_sam.pt``-format file (None: ``NAPARI_MOBILESAM_WEIGHTS`` or the default
        weights).
    device : str, optional
        Torch device of the models (None: the best available).
    threads : int, optional
        Torch's thread count in the process that runs a task (None leaves it).
    object_ranges : tuple of (feature, low, high)
        Keep only the objects whose features lie in these ranges (ends included, None
        open), as the curate widget's filters do
        (:func:`napari_mobilesam.curation.filter_objects`): features ``area``,
        ``solidity``, ``eccentricity``, ``mean_intensity``, ``score``. Applied to each
        plane before it is written and tabled.
    engine : {"torch", "auto", "openvino", "openvino-int8"}
        What runs the image encoder and the YOLO detector on a CPU (see
        :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor` and
        :func:`~napari_mobilesam.segevery.discovery.load_detector`); "auto" chooses per
        network.
    """

    link: str = "auto"
    search_radius: float | None = None
    max_gap: int = 1
    neck_ratio: float | None = 0.5
    contrast_limits: tuple[float, float] | None = None
    weights: str | None = None
    device: str | None = None
    threads: int | None = None
    object_ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    engine: str = "torch"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self.ranges)
        check_link_mode(self.link, ("auto", *LINK_MODES))
        self.link_options()  # checked when made

    def link_options(self) -> LinkOptions:
        """The linking settings."""
        return LinkOptions(self.search_radius, self.max_gap, self.neck_ratio)
        if self.threads is not None and self.threads < 1:
            raise InvalidValueError(f"threads must be at least 1, got {self.threads}")

    @property
    def ranges(self) -> dict[str, tuple[float | None, float | None]]:
        """``object_ranges`` as {feature: (low, high)}; a malformed entry raises."""
        try:
            return {name: (low, high) for name, low, high in self.object_ranges}
        except (TypeError, ValueError):
            raise InvalidValueError(
                f"object_ranges must hold (feature, low, high) triples, got {self.object_ranges!r}"
            ) from None
