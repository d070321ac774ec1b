"""The package as users get it: the sdist and wheel built from this checkout, their metadata
and contents, and an environment with the core dependencies only (no napari, no Qt) that
runs ``napari-mobilesam info`` and ``segment_everything``.

The core environment is built in seconds without downloading anything: a fresh virtual
environment (no system site-packages) whose ``.pth`` file adds a folder of links to exactly
the installed distributions the wheel's core ``Requires-Dist`` pull in (resolved through
their own metadata), and the wheel installed with ``pip --no-deps``.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import napari_mobilesam
from conftest import RANDOM_WEIGHTS, build_yolo_checkpoint

ROOT = Path(__file__).resolve().parents[1]
#: What the core must run without: the napari extra and what only it brings.
GUI = {"napari", "magicgui", "npe2", "superqt", "qtpy", "pyqt5", "pyqt6", "pyside2", "pyside6"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it (as ``python -m build`` does)."""
    out, tree = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("tree") / "tree"
    # From a copy: the build's egg-info must not land in this checkout's src.
    skip = (".git", ".venv", "*.egg-info", "__pycache__", ".ruff_cache", "build", "dist")
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*skip))
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        check=True,
        capture_output=True,
    )
    return {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def _core_requirements(meta: email.message.Message) -> list[Requirement]:
    requirements = [Requirement(text) for text in meta.get_all("Requires-Dist")]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def test_wheel_metadata_has_the_urls_the_license_and_no_napari_in_the_core(dist):
    meta = _metadata(dist["wheel"])
    assert meta["Version"] == napari_mobilesam.__version__
    assert meta["License-Expression"] == "AGPL-3.0-or-later"
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL"))
    assert {"Source", "Issues", "Documentation"} <= urls.keys()
    assert all(url.startswith("https://") for url in urls.values())
    core = {canonicalize_name(r.name) for r in _core_requirements(meta)}
    assert core and not core & GUI
    widgets = [Requirement(t) for t in meta.get_all("Requires-Dist") if "napari" in t]
    assert any(r.name == "napari" and r.marker.evaluate({"extra": "napari"}) for r in widgets)


def test_wheel_holds_the_package_and_its_manifest_and_no_tests(dist):
    with zipfile.ZipFile(dist["wheel"]) as archive:
        names = archive.namelist()
    assert "napari_mobilesam/napari.yaml" in names
    assert "napari_mobilesam/batch/cli.py" in names
    assert all(n.startswith(("napari_mobilesam/", "napari_mobilesam-")) for n in names)
    assert not [n for n in names if "conftest" in n or n.split("/")[0] == "tests"]


def test_sdist_has_no_tests_without_their_fixtures(dist):
    with tarfile.open(dist["sdist"]) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert {"pyproject.toml", "README.md", "LICENSE", "src/napari_mobilesam/napari.yaml"} <= set(
        names
    )
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


def dependency_closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions that ``requirements`` pull in, transitively."""
    found: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        distribution = metadata.distribution(name)
        for text in distribution.requires or []:
            nested = Requirement(text)
            extras = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
            if nested.marker is None or any(nested.marker.evaluate(e) for e in extras):
                todo.append(nested)
    return found


def _linked_site_packages(names: set[str], folder: Path) -> Path:
    """A folder of links to the top-level files and folders of the distributions ``names``."""
    folder.mkdir()
    for name in names:
        distribution = metadata.distribution(name)
        for file in distribution.files or []:
            top = file.parts[0]
            source = Path(distribution.locate_file(top))
            if top not in ("..", "__pycache__") and source.exists():
                link = folder / top
                if not link.exists():
                    link.symlink_to(source)
    return folder


@pytest.fixture(scope="module")
def core_env(dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel and its core dependencies only."""
    root = tmp_path_factory.mktemp("core")
    names = dependency_closure(_core_requirements(_metadata(dist["wheel"])))
    assert not names & GUI, names & GUI  # no core dependency brings napari or Qt
    linked = _linked_site_packages(names, root / "site-packages")
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "core_dependencies.pth").write_text(
        f"import site; site.addsitedir({str(linked)!r})\n"
    )
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    installed = _run(env, *pip, "--no-index", str(dist["wheel"]))
    assert "Successfully installed napari-mobilesam" in installed.stdout, installed.stderr
    return env


def _run(env: Path, *command: str) -> subprocess.CompletedProcess:
    """Run in ``env``, as its user would: not with this checkout's ``src`` on the path."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
    variables["PATH"] = f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(command, capture_output=True, text=True, cwd=env, env=variables)


def test_the_core_environment_has_no_napari_and_runs_info(core_env: Path):
    probe = "import importlib.util as u; print(sorted(m for m in %r if u.find_spec(m)))"
    modules = ["napari", "magicgui", "npe2", "superqt", "qtpy", "PyQt5", "PyQt6", "PySide6"]
    found = _run(core_env, "python", "-c", probe % modules)
    assert found.stdout.strip() == "[]", found.stderr
    info = _run(core_env, "napari-mobilesam", "info")
    assert info.returncode == 0, info.stderr
    assert f"napari-mobilesam {napari_mobilesam.__version__}" in info.stdout
    assert str(core_env) in _run(core_env, "python", "-c", "import sys; print(sys.prefix)").stdout
    widgets = _run(core_env, "python", "-c", "import napari_mobilesam._widgets")
    assert widgets.returncode != 0 and 'install "napari-mobilesam[napari]"' in widgets.stderr


def test_the_core_environment_segments_everything(core_env: Path, tmp_path: Path):
    detector = build_yolo_checkpoint(tmp_path)
    code = f"""
import numpy as np
from skimage.draw import disk
from napari_mobilesam import SegAnyPredictor, build_mobile_sam, segment_everything

image = np.full((96, 128), 30, np.uint8)
for center in [(30, 30), (60, 90)]:
    image[disk(center, 14)] = 200
predictor = SegAnyPredictor(build_mobile_sam({str(RANDOM_WEIGHTS)!r}), "cpu")
result = segment_everything(
    image, predictor=predictor, detector={str(detector)!r}, decoder="mobile_sam", conf=0.01,
    max_objects=4,
)
import sys
print(result.labels.shape, result.labels.dtype, "napari" in sys.modules)
"""
    run = _run(core_env, "python", "-c", code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["(96,", "128)", "int32", "False"]


IMAGES = "https://raw.githubusercontent.com/napari-mobilesam/napari-mobilesam/main/docs/images/"


def test_readme_images_are_absolute_urls_of_files_in_docs_images():
    # The README is the page on PyPI and the napari hub, where relative links break.
    import re

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", readme)
    links += re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", readme)
    assert links
    for link in links:
        assert link.startswith(IMAGES), f"{link}: use {IMAGES}NAME (docs/images/NAME)"
        assert (ROOT / "docs" / "images" / link[len(IMAGES) :]).is_file(), link
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert IMAGES.startswith(urls["Source"].replace("github.com", "raw.githubusercontent.com"))
