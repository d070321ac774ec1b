"""Image files: files, folders, globs and samples, read as arrays with their axes.

TIFF and OME-TIFF (tifffile; large ones lazily), PNG and JPEG (Pillow), and zarr / OME-Zarr
(lazily) are found by :func:`find_inputs` and read by :func:`read_image`;
:func:`stack_layout` says which axes of an image are iterated as a stack (Z, T, ...) and
whether the last one is RGB, and :func:`stack_view` puts them first without reading.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = [
    "IMAGE_SUFFIXES",
    "IN_MEMORY_BYTES",
    "LABEL_NAME_SUFFIXES",
    "SAMPLES",
    "InputItem",
    "find_inputs",
    "pair_by_name",
    "read_image",
    "stack_layout",
    "stack_view",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zarr")
SAMPLES = ("cell", "coins")
#: Endings that mark a label image of the same name: ``cell_07_masks.tif`` is ``cell_07``'s.
LABEL_NAME_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_gt", "_seg")
#: TIFFs up to this size are read into memory; larger ones are read a region at a time.
IN_MEMORY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class InputItem:
    """One input: a file or zarr path, or ``sample:NAME``; ``key`` names its outputs."""

    source: str
    key: str


def find_inputs(
    inputs: Sequence[str | os.PathLike[str]], exclude: str | os.PathLike[str] | None = None
) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """Expand files, folders (their images, not recursive) and glob patterns.

    Returns the images, sorted and without repeats, each with a unique output key (the
    file name without its extension, or with it when two inputs share a name), and
    ``(input, reason)`` for each input that matches nothing.
    """
    paths: list[Path] = []
    missing: list[tuple[str, str]] = []
    excluded = Path(exclude).resolve() if exclude is not None else None
    for entry in map(str, inputs):
        if entry.startswith("sample:"):
            paths.append(Path(entry))
            continue
        if any(char in entry for char in "*?["):
            found = [Path(p) for p in sorted(glob.glob(entry, recursive=True))]
            found = [p for p in found if _is_image(p)]
        elif Path(entry).is_dir() and Path(entry).suffix.lower() != ".zarr":
            found = sorted(p for p in Path(entry).iterdir() if _is_image(p))
        else:
            found = [Path(entry)] if Path(entry).exists() else []
        if excluded is not None:
            found = [p for p in found if excluded not in (p.resolve(), *p.resolve().parents)]
        if not found:
            reason = "no such file or folder" if not Path(entry).exists() else "no image in it"
            missing.append((entry, f"{reason} ({', '.join(IMAGE_SUFFIXES)})"))
        paths.extend(found)
    unique = list(dict.fromkeys(paths))
    stems = [_stem(path) for path in unique]
    keys = [
        stem if stems.count(stem) == 1 else path.name.replace(".", "_")
        for stem, path in zip(stems, unique, strict=True)
    ]
    for key in keys:
        if keys.count(key) > 1:
            raise InvalidValueError(
                f"Two inputs would write the same outputs ({key}): run their folders separately."
            )
    return [InputItem(str(p), k) for p, k in zip(unique, keys, strict=True)], missing


def pair_by_name(
    first: Sequence[str | os.PathLike[str]], second: Sequence[str | os.PathLike[str]]
) -> tuple[list[tuple[InputItem, InputItem]], list[str], list[str]]:
    """Pair the images of two sets of inputs (files, folders, globs) by name.

    Names are compared without their extension and without one of
    :data:`LABEL_NAME_SUFFIXES` (case-insensitive), so ``img_01.tif`` pairs with
    ``img_01.png``, ``img_01_masks.tif`` or ``IMG_01_labels.tif``.

    Returns
    -------
    pairs : list of (InputItem, InputItem)
        Sorted by the first input's name.
    first_only, second_only : list of str
        The inputs of each side that have no partner (and the inputs that match no file).

    Examples
    --------
    >>> pair_by_name(["missing/"], ["also_missing/"])[0]
    []
    """
    items_first, missing_first = find_inputs(first)
    items_second, missing_second = find_inputs(second)
    by_name = {_pairing_name(item): item for item in items_second}
    pairs = []
    first_only = [entry for entry, _ in missing_first]
    for item in items_first:
        partner = by_name.pop(_pairing_name(item), None)
        if partner is None:
            first_only.append(item.source)
        else:
            pairs.append((item, partner))
    second_only = [entry for entry, _ in missing_second] + [i.source for i in by_name.values()]
    return pairs, first_only, second_only


def _pairing_name(item: InputItem) -> str:
    name = _stem(Path(item.source)).lower()
    for suffix in LABEL_NAME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _stem(path: Path) -> str:
    if str(path).startswith("sample:"):
        return str(path)[len("sample:") :]
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_image(source: str) -> tuple[Any, str | None]:
    """Read an input: ``(array, axes)``, axes being a string like ``"ZYX"`` when known.

    TIFF and OME-TIFF with tifffile (the first series; over :data:`IN_MEMORY_BYTES` as a
    lazy zarr array of its full-resolution level, read a plane or region at a time), PNG
    and JPEG with Pillow, zarr and OME-Zarr lazily (the array of the full-resolution
    level), ``sample:cell`` / ``sample:coins`` from scikit-image.
    """
    if source.startswith("sample:"):
        import skimage.data

        name = source[len("sample:") :]
        if name not in SAMPLES:
            raise InvalidValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
        return getattr(skimage.data, name)(), "YX"
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    if suffix in (".png", ".jpg", ".jpeg"):
        return _read_png_or_jpeg(path), None
    if suffix == ".zarr":
        return _read_zarr(path)
    raise InvalidValueError(f"unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")


def _read_png_or_jpeg(path: Path) -> np.ndarray:
    """A PNG or JPEG file, read with Pillow's PNG and JPEG readers themselves.

    Not through ``PIL.Image.open``, which ultralytics replaces when it is imported (trying
    to install a HEIF reader for files Pillow cannot identify): the reason a file cannot be
    read is the same before and after the detector is loaded.
    """
    from PIL import Image

    Image.init()
    with path.open("rb") as file:
        prefix = file.read(16)
        for name in ("PNG", "JPEG"):
            factory, accept = Image.OPEN[name]
            if accept is None or accept(prefix):
                file.seek(0)
                try:
                    image = factory(file, str(path))
                    if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                        image = image.convert("RGBA" if "A" in image.mode else "RGB")
                    return np.asarray(image)
                except (OSError, SyntaxError, ValueError) as error:
                    raise OSError(f"{path} is a damaged {name} file ({error})") from error
    raise OSError(f"{path} is not a PNG or JPEG file (its first bytes are {prefix[:8]!r})")


def _read_tiff(path: Path) -> tuple[Any, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if series.nbytes <= IN_MEMORY_BYTES:
            return series.asarray(), series.axes
        axes = series.axes
    import zarr

    return zarr.open(tifffile.imread(path, aszarr=True, series=0, level=0), mode="r"), axes


def _read_zarr(path: Path) -> tuple[Any, str | None]:
    import zarr

    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return node, None
    attributes = dict(node.attrs)
    multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
    if multiscales:
        first = multiscales[0]
        axes = first.get("axes")
        names = None
        if axes:
            names = "".join(
                (axis["name"] if isinstance(axis, dict) else str(axis))[0].upper() for axis in axes
            )
        return node[first["datasets"][0]["path"]], names
    arrays = [name for name, _ in node.arrays()]
    if len(arrays) != 1:
        raise InvalidValueError(
            f"zarr group with {len(arrays)} arrays and no OME-Zarr multiscales metadata: "
            "give the path of one array"
        )
    return node[arrays[0]], None


def stack_layout(
    shape: Sequence[int], axes: str | None = None, axis: int | str | None = None
) -> tuple[tuple[int, ...], bool]:
    """``(order, rgb)``: axis order putting stack axes first, and whether the last is RGB(A).

    Like napari, a last axis of size 3 or 4 is RGB(A) colour (unless the file's axes
    say otherwise) and every other leading axis is iterated plane by plane. ``axis`` (an
    index, or a letter of ``axes`` such as ``"Z"``) is moved to the front first: use it
    for a stack axis that is not leading, such as Y, X, Z.
    """
    order = list(range(len(shape)))
    if axis is not None:
        if isinstance(axis, str) and not axis.lstrip("-").isdigit():
            if axes is None or axis.upper() not in axes.upper():
                raise InvalidValueError(
                    f"axis {axis!r} is not among the file's axes ({axes or 'unknown'})"
                )
            index = axes.upper().index(axis.upper())
        else:
            index = int(axis)
        if not -len(shape) <= index < len(shape):
            raise InvalidValueError(f"axis {axis} does not exist: the image has {len(shape)} axes")
        order.insert(0, order.pop(index % len(shape)))
    if axes is not None:
        axes = "".join(axes[i] for i in order)
    rgb = len(shape) >= 3 and shape[order[-1]] in (3, 4) and (axes is None or axes[-1] in "SC")
    if len(shape) - rgb < 2:
        raise InvalidValueError(
            f"an image needs two spatial axes; this one has shape {tuple(shape)}"
        )
    return tuple(order), bool(rgb)


def stack_view(image: Any, order: Sequence[int]) -> Any:
    """``image`` with its axes in ``order`` (from :func:`stack_layout`), not read.

    A numpy array gives a transposed view; a lazy array (zarr, a large TIFF) a dask array
    that reads only the planes indexed from it.
    """
    order = tuple(int(axis) for axis in order)
    if order == tuple(range(len(order))):
        return image
    if isinstance(image, np.ndarray):
        return np.transpose(image, order)
    import dask.array as da

    return da.from_array(image, chunks=getattr(image, "chunks", "auto")).transpose(order)
