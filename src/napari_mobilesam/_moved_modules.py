"""Module paths of earlier releases, kept importable after the move into stage folders.

``import napari_mobilesam.linking`` gives the module object of ``napari_mobilesam.stacks.linking``
itself (not a copy), so attributes set on either name are seen by both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import CodeType, ModuleType

MOVED_MODULES = {
    "napari_mobilesam.transforms": "napari_mobilesam.imaging.model_frame",
    "napari_mobilesam.tiling": "napari_mobilesam.imaging.tiling",
    "napari_mobilesam.label_canvas": "napari_mobilesam.imaging.label_canvas",
    "napari_mobilesam.upsampling": "napari_mobilesam.imaging.upsampling",
    "napari_mobilesam.checkpoint_loading": "napari_mobilesam.weights.checkpoints",
    "napari_mobilesam.segany_tiled": "napari_mobilesam.segany.tiled",
    "napari_mobilesam.embedding_store": "napari_mobilesam.segany.embedding_store",
    "napari_mobilesam.segevery_tiled": "napari_mobilesam.segevery.tiled",
    "napari_mobilesam.discovery": "napari_mobilesam.segevery.discovery",
    "napari_mobilesam.boxes": "napari_mobilesam.segevery.boxes",
    "napari_mobilesam.yolo": "napari_mobilesam.segevery.detectors.yolo",
    "napari_mobilesam.decoders": "napari_mobilesam.segevery.box_decoders",
    "napari_mobilesam.mask_candidates": "napari_mobilesam.segevery.candidates",
    "napari_mobilesam.stack_slices": "napari_mobilesam.stacks.slices",
    "napari_mobilesam.prompt_projection": "napari_mobilesam.stacks.projection",
    "napari_mobilesam.propagation": "napari_mobilesam.stacks.propagation",
    "napari_mobilesam.linking": "napari_mobilesam.stacks.linking",
    "napari_mobilesam.segevery_stack": "napari_mobilesam.stacks.segevery_stack",
    "napari_mobilesam.inputs": "napari_mobilesam.imaging.image_files",
    "napari_mobilesam.batch.inputs": "napari_mobilesam.imaging.image_files",
    "napari_mobilesam.outputs": "napari_mobilesam.batch.outputs",
    "napari_mobilesam.cli": "napari_mobilesam.batch.cli",
}
"""Old module path -> the module that now holds its code."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        from napari_mobilesam._torch_guard import prepare_torch_import

        prepare_torch_import()  # many moved modules import torch
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name."""

    def get_code(self, fullname: str) -> CodeType | None:
        """The new module's code, for ``python -m`` with an old path."""
        spec = importlib.util.find_spec(MOVED_MODULES[fullname])
        return spec.loader.get_code(spec.name)


def install_moved_module_finder() -> None:
    """Put the finder on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
