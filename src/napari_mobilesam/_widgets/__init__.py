"""The napari dock widgets: SegAny (MobileSAM) and SegEvery (MobileSAMv2)."""

from napari_mobilesam._widgets._segany import SegAnyController, SegAnyWidget
from napari_mobilesam._widgets._segevery import (
    SegEveryJob,
    SegEverySettings,
    SegEveryWidget,
)

__all__ = [
    "SegAnyController",
    "SegAnyWidget",
    "SegEveryJob",
    "SegEverySettings",
    "SegEveryWidget",
]
