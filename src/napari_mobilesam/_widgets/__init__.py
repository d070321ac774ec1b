"""The napari dock widgets: SegAny (MobileSAM) and SegEvery (MobileSAMv2)."""

from napari_mobilesam._widgets._segany import SegAnyController
from napari_mobilesam._widgets._segany_widget import SegAnyWidget
from napari_mobilesam._widgets._segevery import SegEveryJob
from napari_mobilesam._widgets._segevery_settings import SegEverySettings
from napari_mobilesam._widgets._segevery_widget import SegEveryWidget

__all__ = [
    "SegAnyController",
    "SegAnyWidget",
    "SegEveryJob",
    "SegEverySettings",
    "SegEveryWidget",
]
