"""Keep torch from loading triton into a process where OpenGL already loaded LLVM.

On Linux, Mesa's OpenGL drivers (llvmpipe, radeonsi, ...) map ``libLLVM``. Loading triton's
own LLVM afterwards crashes the process (a symbol clash, not a Python error), and torch loads
triton as soon as torchvision or ultralytics import ``torch._dynamo``. napari creates its
OpenGL context before a plugin's widget runs, and a notebook may open a viewer before it
first uses this package, so in that case triton is made unimportable, which torch handles as
"triton is not installed" (it is only needed for ``torch.compile`` on GPUs).
"""

from __future__ import annotations

import sys
from pathlib import Path


def prepare_torch_import() -> None:
    """Call before torch, torchvision or ultralytics are imported (torch itself may already
    be); does nothing once triton is loaded, outside Linux, or when no LLVM is mapped."""
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        mapped = Path("/proc/self/maps").read_text()
    except OSError:
        return
    if "libLLVM" in mapped:
        sys.modules["triton"] = None  # type: ignore[assignment]
