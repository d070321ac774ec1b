"""MobileSAM and MobileSAMv2 for microscopy images, as a library and a napari plugin.

The public API is importable from the top-level package::

    from napari_mobilesam import build_mobile_sam, SegAnyPredictor, segment_everything

Importing the package is cheap: torch, ultralytics, napari and Qt are imported only when
the object that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "build_mobile_sam": "napari_mobilesam.model",
    "MobileSAM": "napari_mobilesam.model",
    "SegAnyPredictor": "napari_mobilesam.segany",
    "segment_everything": "napari_mobilesam.segevery",
    "SegEveryResult": "napari_mobilesam.segevery",
    "to_rgb_uint8": "napari_mobilesam.imaging",
    "WeightsError": "napari_mobilesam.weights",
    # The napari widgets, for scripts that drive a viewer (these import napari and Qt).
    "SegAnyWidget": "napari_mobilesam._widgets",
    "SegEveryWidget": "napari_mobilesam._widgets",
}

__all__ = [
    "MobileSAM",
    "SegAnyPredictor",
    "SegAnyWidget",
    "SegEveryResult",
    "SegEveryWidget",
    "WeightsError",
    "__version__",
    "build_mobile_sam",
    "segment_everything",
    "to_rgb_uint8",
]

if TYPE_CHECKING:
    from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget
    from napari_mobilesam.imaging import to_rgb_uint8
    from napari_mobilesam.model import MobileSAM, build_mobile_sam
    from napari_mobilesam.segany import SegAnyPredictor
    from napari_mobilesam.segevery import SegEveryResult, segment_everything
    from napari_mobilesam.weights import WeightsError


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_mobilesam' has no attribute {name!r}")
    from napari_mobilesam._torch_guard import prepare_torch_import

    prepare_torch_import()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
