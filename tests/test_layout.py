"""The package's folders are the pipeline's stages: no import cycles, a napari-free core, and
the module paths of earlier releases still importable."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import napari_mobilesam
from napari_mobilesam._moved_modules import MOVED_MODULES

PACKAGE = Path(napari_mobilesam.__file__).parent
GUI_MODULES = (
    "napari_mobilesam._widgets",
    "napari_mobilesam._commands",
    "napari_mobilesam._sample_data",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Modules of this package that ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            prefix = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*prefix, node.module] if node.module else prefix)
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in known else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, known) for path in paths}


def test_no_module_imports_itself_back():
    graph = import_graph()
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            module, chain = stack.pop()
            for target in graph[module]:
                if target == start:
                    cycles.append(" -> ".join((*chain, start)))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, (*chain, target)))
    assert cycles == []


def test_the_core_never_imports_napari_or_qt():
    graph = import_graph()
    core = [m for m in graph if not m.startswith(GUI_MODULES)]
    offenders = []
    for module in core:
        path = PACKAGE.parent.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(
                n.split(".")[0]
                in (
                    "napari",
                    "qtpy",
                    "PyQt5",
                    "PyQt6",
                    "PySide2",
                    "PySide6",
                    "magicgui",
                    "superqt",
                )
                for n in names
            ):
                offenders.append(module)
        assert not any(m.startswith(GUI_MODULES) for m in graph[module]), module
    assert offenders == []


STAGES = (
    "model",
    "weights",
    "imaging",
    "engines",
    "segany",
    "segevery",
    "stacks",
    "curation",
    "evaluation",
    "training",
    "batch",
    "_widgets",
)


def test_each_stage_imports_only_the_stages_before_it():
    def stage(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in STAGES else None

    upward = set()
    for module, targets in import_graph().items():
        here = stage(module)
        for target in targets:
            there = stage(target)
            if here and there and STAGES.index(there) > STAGES.index(here):
                upward.add(f"{module} -> {target}")
    assert upward == set()


@pytest.mark.parametrize("old_path", sorted(MOVED_MODULES))
def test_earlier_module_paths_are_the_moved_modules(old_path):
    assert importlib.import_module(old_path) is importlib.import_module(MOVED_MODULES[old_path])


def test_readme_imports_work_headless():
    code = (
        "import sys\n"
        "from napari_mobilesam.batch import BatchSettings, segment_files\n"
        "from napari_mobilesam.embedding_store import EmbeddingStore\n"
        "from napari_mobilesam.propagation import propagate_mask\n"
        "from napari_mobilesam.segevery_stack import segment_everything_stack\n"
        "from napari_mobilesam.linking import link_slices\n"
        "from napari_mobilesam.stacks import propagate_mask as p2, link_slices as l2\n"
        "assert p2 is propagate_mask and l2 is link_slices\n"
        "print(sorted({'napari', 'qtpy', 'PyQt6'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_module_runs_under_its_earlier_path():
    out = subprocess.run(
        [sys.executable, "-m", "napari_mobilesam.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "segment" in out.stdout
