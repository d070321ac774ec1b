"""MobileSAM and MobileSAMv2 for microscopy images, as a library and a napari plugin.

The public API is importable from the top-level package::

    from napari_mobilesam import build_mobile_sam, SegAnyPredictor, segment_everything

Importing the package is cheap: torch, ultralytics, napari and Qt are imported only when
the object that needs them is first used. The subpackages are the stages of the pipeline:
``model``, ``weights``, ``imaging``, ``segany``, ``segevery``, ``stacks``, ``evaluation``,
``training``, ``batch``, and ``_widgets`` (napari and Qt).
"""

from __future__ import annotations

from typing import Any

import lazy_loader as lazy

from napari_mobilesam._moved_modules import install_moved_module_finder

__version__ = "0.1.0"

_lazy_getattr, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "model": ["MobileSAM"],
        "segany": ["SegAnyPredictor"],
        "segevery": ["SegEveryOptions", "SegEveryResult", "segment_everything"],
        "imaging": ["to_rgb_uint8"],
        "weights": ["WeightsError", "build_mobile_sam"],
        # The napari widgets, for scripts that drive a viewer (these import napari and Qt).
        "_widgets": ["SegAnyWidget", "SegEveryWidget"],
    },
)
__all__ = [*__all__, "__version__"]

install_moved_module_finder()


def __getattr__(name: str) -> Any:
    from napari_mobilesam._torch_guard import prepare_torch_import

    prepare_torch_import()
    return _lazy_getattr(name)
