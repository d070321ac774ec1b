"""napari commands of the plugin (see napari.yaml); napari-only, unlike the core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.layers import Image
from napari.utils.notifications import show_info

from napari_mobilesam._widgets._plane import PlaneError
from napari_mobilesam._widgets._segevery import SegEveryJob
from napari_mobilesam._widgets._segevery_settings import SegEverySettings

if TYPE_CHECKING:
    import napari


def segment_everything_in_active_layer(viewer: napari.viewer.Viewer) -> SegEveryJob | None:
    """Run SegEvery with default settings on the selected image layer (Layers > Segment).

    The plane on screen is segmented in a thread worker, with progress and a cancel
    button in the activity dock; the Labels layer ``"<image> objects"`` is added when it
    ends. A plane with a side longer than 1024 pixels is segmented tile by tile (768-pixel
    tiles, 128-pixel halo; dask and zarr data are read one tile at a time) and a
    multiscale image at full resolution (level 0); the SegEvery widget offers the other
    levels and tile settings.

    Parameters
    ----------
    viewer : napari.Viewer
        napari passes the current viewer.

    Returns
    -------
    SegEveryJob or None
        The running job, or None (and a notification) if the selection is not an image.

    Examples
    --------
    >>> job = segment_everything_in_active_layer(viewer)  # doctest: +SKIP
    """
    layer = viewer.layers.selection.active
    if not isinstance(layer, Image):
        show_info("Select an image layer to segment everything in it.")
        return None
    try:
        job = SegEveryJob(viewer, layer, SegEverySettings())
    except PlaneError as exc:
        show_info(str(exc))
        return None
    job.start()
    return job
