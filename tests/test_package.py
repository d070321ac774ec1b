"""Importing the package is cheap and headless; the public API is where the README says."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_neither_torch_nor_napari_nor_qt():
    code = (
        "import sys, napari_mobilesam\n"
        "heavy = {'torch', 'napari', 'qtpy', 'PyQt6', 'ultralytics'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_names():
    import napari_mobilesam

    for name in ("build_mobile_sam", "SegAnyPredictor", "segment_everything", "to_rgb_uint8"):
        assert callable(getattr(napari_mobilesam, name))
    assert "SegEveryResult" in dir(napari_mobilesam)
