"""Installed size of a headless install and of a napari install (issue 21).

Measured from the distributions installed in the running environment: the core
dependencies of ``pyproject.toml`` and everything they pull in (resolved through the
installed packages' own metadata, as pip would), then what the ``napari`` extra and a Qt
binding add. torch is split into its CUDA parts (``nvidia-*`` and ``triton``) and the rest.

    python benchmarks/install_size.py
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_packaging import dependency_closure  # noqa: E402  (one resolver for test and figure)

MB = 1e6


def installed_bytes(name: str) -> int:
    """Bytes of the files a distribution installed (its RECORD)."""
    distribution = metadata.distribution(name)
    total = 0
    for file in distribution.files or []:
        path = Path(distribution.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def torch_cuda_bytes() -> int:
    """Bytes of torch's own CUDA libraries (``torch/lib/*cuda*``, ``*nvshmem*``), which the
    CPU build of torch does not have."""
    distribution = metadata.distribution("torch")
    total = 0
    for file in distribution.files or []:
        name = Path(str(file)).name
        if str(file).startswith("torch/lib/") and ("cuda" in name or "nvshmem" in name):
            total += Path(distribution.locate_file(file)).stat().st_size
    return total


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = dependency_closure([Requirement(t) for t in project["dependencies"]])
    widgets = project["optional-dependencies"]["napari"] + ["pyqt6"]
    napari = dependency_closure([Requirement(t) for t in widgets]) - core
    sizes = {name: installed_bytes(name) for name in core | napari}
    cuda = {n for n in core if n.startswith("nvidia-") or n in ("triton", "cuda-bindings")}
    cuda |= {n for n in core if n.startswith(("cuda-", "nvidia"))}

    def total(names: set[str]) -> float:
        return sum(sizes[n] for n in names) / MB

    print(f"core (headless) install: {len(core)} distributions, {total(core):,.0f} MB")
    print(f"  of which CUDA libraries (nvidia-*, triton, cuda-*): {total(cuda):,.0f} MB")
    print(f"  torch itself: {sizes['torch'] / MB:,.0f} MB")
    print(f"  core without the CUDA libraries: {total(core - cuda):,.0f} MB")
    own = torch_cuda_bytes() / MB
    print(f"  torch's own CUDA libraries (torch/lib/*cuda*, *nvshmem*): {own:,.0f} MB")
    print(
        f"  estimate of a CPU-only core install (without both): {total(core - cuda) - own:,.0f}"
        " MB (the CPU wheels' own sizes cannot be measured offline)"
    )
    print(f"napari extra + PyQt6 adds: {len(napari)} distributions, {total(napari):,.0f} MB")
    print(f"napari install (core + napari extra + PyQt6): {total(core | napari):,.0f} MB")
    largest = sorted(napari, key=sizes.get, reverse=True)[:6]
    print("  largest added: " + ", ".join(f"{n} {sizes[n] / MB:.0f} MB" for n in largest))


if __name__ == "__main__":
    main()
