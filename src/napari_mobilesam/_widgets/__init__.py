"""The napari dock widgets: SegAny (MobileSAM), SegEvery (MobileSAMv2) and Compare labels."""

from napari_mobilesam._widgets._compare import CompareLabelsWidget
from napari_mobilesam._widgets._segany import SegAnyController
from napari_mobilesam._widgets._segany_widget import SegAnyWidget
from napari_mobilesam._widgets._segevery import SegEveryJob
from napari_mobilesam._widgets._segevery_settings import SegEverySettings
from napari_mobilesam._widgets._segevery_widget import SegEveryWidget

__all__ = [
    "CompareLabelsWidget",
    "SegAnyController",
    "SegAnyWidget",
    "SegEveryJob",
    "SegEverySettings",
    "SegEveryWidget",
]
