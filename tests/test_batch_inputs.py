"""Batch inputs stay lazy: a large TIFF is read a plane at a time, also with ``--axis``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import tifffile.zarr

from napari_mobilesam.imaging import image_files as inputs
from napari_mobilesam.imaging.image_files import read_image, stack_layout, stack_view
from test_batch import (
    _image,
    settings,  # noqa: F401  (the fixture)
)


@pytest.fixture
def chunk_reads(monkeypatch) -> list[str]:
    """The keys of the TIFF chunks read through tifffile's zarr store."""
    keys: list[str] = []
    get = tifffile.zarr.ZarrTiffStore.get

    async def recording_get(self, key, *args, **kwargs):
        if not key.rsplit("/", 1)[-1].startswith((".", "zarr.json")):
            keys.append(key)
        return await get(self, key, *args, **kwargs)

    monkeypatch.setattr(tifffile.zarr.ZarrTiffStore, "get", recording_get)
    return keys


@pytest.fixture
def stack_tiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(5 * 96 * 128, dtype=np.uint16).reshape(5, 96, 128)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, metadata={"axes": "ZYX"})
    return path, data


def test_a_small_tiff_is_read_into_memory(stack_tiff) -> None:
    path, data = stack_tiff
    image, axes = read_image(str(path))
    assert isinstance(image, np.ndarray) and axes == "ZYX"
    np.testing.assert_array_equal(image, data)


def test_a_large_tiff_is_not_read_whole(monkeypatch, stack_tiff, chunk_reads) -> None:
    path, data = stack_tiff
    monkeypatch.setattr(inputs, "IN_MEMORY_BYTES", data.nbytes - 1)

    image, axes = read_image(str(path))

    assert not isinstance(image, np.ndarray) and axes == "ZYX"
    assert tuple(image.shape) == data.shape and image.dtype == data.dtype
    assert chunk_reads == []
    np.testing.assert_array_equal(image[3], data[3])
    assert len(chunk_reads) == 1  # one plane read: one chunk of the file
    np.testing.assert_array_equal(image[1, 10:20, 30:40], data[1, 10:20, 30:40])


def test_a_stack_axis_that_is_not_leading_is_moved_without_reading(
    monkeypatch, stack_tiff, chunk_reads
) -> None:
    path, data = stack_tiff
    monkeypatch.setattr(inputs, "IN_MEMORY_BYTES", 0)
    image, axes = read_image(str(path))
    order, rgb = stack_layout(image.shape, axes, "Y")

    view = stack_view(image, order)

    assert not rgb and view.shape == (96, 5, 128)
    assert chunk_reads == []
    np.testing.assert_array_equal(np.asarray(view[7]), data[:, 7])


def test_stack_view_of_a_numpy_array_is_a_view() -> None:
    data = np.zeros((4, 6, 3), np.uint8)
    assert stack_view(data, (0, 1, 2)) is data
    view = stack_view(data, (1, 0, 2))
    assert view.shape == (6, 4, 3) and np.shares_memory(view, data)


def test_a_lazy_stack_with_its_stack_axis_in_the_middle_is_segmented_plane_by_plane(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import zarr

    from napari_mobilesam.batch.runner import segment_files

    batch = request.getfixturevalue("settings")  # test_batch's random-weight models
    planes = np.stack([_image(5), _image(6)])  # (Z, Y, X)
    tifffile.imwrite(tmp_path / "leading.tif", planes, metadata={"axes": "ZYX"})
    middle = zarr.open_array(
        str(tmp_path / "middle.zarr"), mode="w", shape=(96, 2, 128), dtype="u1"
    )
    middle[...] = planes.transpose(1, 0, 2)  # (Y, Z, X)

    leading = segment_files([tmp_path / "leading.tif"], tmp_path / "a", batch, progress=False)
    moved = segment_files(
        [tmp_path / "middle.zarr"], tmp_path / "b", batch, axis=1, progress=False
    )

    assert leading.ok and moved.ok, (leading.failures, moved.failures)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "b" / "middle_labels.tif"),
        tifffile.imread(tmp_path / "a" / "leading_labels.tif"),
    )


def test_images_and_label_images_pair_by_name_and_the_unpaired_are_named(tmp_path):
    from napari_mobilesam.imaging.image_files import pair_by_name

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("cell_01.tif", "cell_02.png", "lonely.tif"):
        tifffile.imwrite(tmp_path / "images" / name, np.zeros((8, 8), np.uint8))
    for name in ("cell_01_masks.tif", "CELL_02_labels.tif", "orphan_labels.tif"):
        tifffile.imwrite(tmp_path / "labels" / name, np.zeros((8, 8), np.uint16))

    pairs, images_only, labels_only = pair_by_name([tmp_path / "images"], [tmp_path / "labels"])

    names = [(Path(a.source).name, Path(b.source).name) for a, b in pairs]
    assert names == [("cell_01.tif", "cell_01_masks.tif"), ("cell_02.png", "CELL_02_labels.tif")]
    assert [Path(p).name for p in images_only] == ["lonely.tif"]
    assert [Path(p).name for p in labels_only] == ["orphan_labels.tif"]
