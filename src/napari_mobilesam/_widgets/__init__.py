"""The napari dock widgets: SegAny (MobileSAM), SegEvery (MobileSAMv2), Compare labels,
Correct and curate, and Train."""

try:
    import napari  # noqa: F401
except ModuleNotFoundError as error:  # a headless install: the core runs without napari
    raise ModuleNotFoundError(
        "The napari widgets need napari, which this environment lacks: install "
        '"napari-mobilesam[napari]" (or "napari-mobilesam[all]" for napari with a Qt binding). '
        "The library and the napari-mobilesam command work without it.",
        name=error.name,
    ) from error

from napari_mobilesam._widgets._compare import CompareLabelsWidget
from napari_mobilesam._widgets._curate_widget import CurateWidget
from napari_mobilesam._widgets._segany import SegAnyController
from napari_mobilesam._widgets._segany_widget import SegAnyWidget
from napari_mobilesam._widgets._segevery import SegEveryJob
from napari_mobilesam._widgets._segevery_settings import SegEverySettings
from napari_mobilesam._widgets._segevery_widget import SegEveryWidget
from napari_mobilesam._widgets._train_widget import TrainWidget

__all__ = [
    "CompareLabelsWidget",
    "CurateWidget",
    "SegAnyController",
    "SegAnyWidget",
    "SegEveryJob",
    "SegEverySettings",
    "SegEveryWidget",
    "TrainWidget",
]
