"""The SegEvery widget's settings (:class:`SegEverySettings`) and the choices it offers."""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_mobilesam.imaging.tiling import DEFAULT_HALO, DEFAULT_TILE_SHAPE
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.stacks.link_options import LinkOptions
from napari_mobilesam.stacks.planes import check_link_mode

#: Widget defaults of the tile settings (the core's, as single integers).
TILE_SIZE = int(DEFAULT_TILE_SHAPE[0])
HALO = int(DEFAULT_HALO[0])

DETECTORS = {
    "auto": "auto",
    "MobileSAMv2 ObjectAwareModel": "object_aware",
    "FastSAM": "fastsam",
    "custom YOLO file": "file",
    "grid of points": "grid",
}
DECODERS = {
    "auto (prompt-guided, else MobileSAM)": "auto",
    "MobileSAMv2 prompt-guided": "prompt_guided",
    "MobileSAM (mobile_sam.pt)": "mobile_sam",
}
#: The core tiles only planes with a side longer than 1024 px that one tile does not cover.
TILING = {"auto": True, "off": False}
THIS_PLANE = "this slice"
ALL_PLANES = "all slices"
#: Linking across slices ("all slices" only): the widget's names and the modes of
#: :func:`napari_mobilesam.stacks.linking.link_slices`.
LINKING = {"off": "off", "3-D objects (Z)": "z", "tracks (T)": "t"}


@dataclass(frozen=True)
class SegEverySettings(SegEveryOptions):
    """What the SegEvery widget asks for: the options of
    :func:`napari_mobilesam.segment_everything`, checked when made, and which planes.

    Parameters
    ----------
    detector, decoder, conf, iou, max_objects, min_area, points_per_side, tiling, tile_shape, halo
        See :class:`napari_mobilesam.segevery.options.SegEveryOptions`.
    level : int
        Resolution level of a multiscale image (0 = full resolution); must be 0 for
        other images.
    all_planes : bool
        Segment every plane of a stack, not only the one on screen.
    link : {"off", "z", "t"}
        With ``all_planes``: link the objects of neighbouring slices along ``link_axis``
        into 3-D objects ("z") or tracks ("t") with
        :func:`napari_mobilesam.stacks.linking.link_slices`; each then has one id through the
        stack, and the features are per object (first and last slice, volume, mean score).
    link_axis : int, optional
        The data axis to link along; None is the innermost axis that is not displayed.
    link_options : LinkOptions
        Search radius (tracks), gap and neck ratio (3-D objects) of the linking.
    """

    level: int = 0
    all_planes: bool = False
    link: str = "off"
    link_axis: int | None = None
    link_options: LinkOptions = field(default_factory=LinkOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_link_mode(self.link)
