"""Batch SegEvery (napari_mobilesam.batch.runner): outputs, COCO, dask workers, resume, failures,
and the embedding store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from conftest import RANDOM_WEIGHTS
from napari_mobilesam.batch import outputs as outputs
from napari_mobilesam.batch.runner import BatchSettings, segment_files
from napari_mobilesam.imaging.image_files import find_inputs, stack_layout

SHAPE = (96, 128)


def _image(seed: int, shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blobs = np.zeros(shape)
    for _ in range(4):
        cy, cx = rng.uniform(15, shape[0] - 15), rng.uniform(15, shape[1] - 15)
        blobs += ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(60, 150)).astype(float)
    image = blobs * 150 + rng.normal(0, 10, shape) + 40
    top = 60000 if dtype == np.uint16 else 255
    return np.clip(image * top / 255, 0, top).astype(dtype)


def make_folder(folder: Path) -> Path:
    """Small TIFF (uint16), PNG (RGB), zarr and a 2-plane TIFF stack."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "a.tif", _image(0, dtype=np.uint16))
    Image.fromarray(np.stack([_image(1)] * 3, axis=-1)).save(folder / "b.png")
    array = zarr.open_array(str(folder / "c.zarr"), mode="w", shape=SHAPE, dtype="u1")
    array[...] = _image(2)
    tifffile.imwrite(folder / "d.tif", np.stack([_image(3), _image(4)]), metadata={"axes": "ZYX"})
    return folder


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> BatchSettings:
    from conftest import build_yolo_checkpoint, require_shared

    require_shared(RANDOM_WEIGHTS)
    detector = build_yolo_checkpoint(tmp_path_factory.mktemp("yolo"))
    return BatchSettings(
        detector=str(detector),
        decoder="mobile_sam",
        conf=0.01,
        max_objects=4,
        weights=str(RANDOM_WEIGHTS),
        threads=1,  # as the workers (dask sets OMP_NUM_THREADS=1): bitwise equal scores
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images") / "images")


@pytest.fixture(scope="module")
def in_process(folder: Path, settings: BatchSettings, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("in_process")
    report = segment_files([folder], out, settings, coco=out / "coco.json", progress=False)
    return report, out


def _outputs(out: Path) -> dict[str, object]:
    found = {}
    for path in sorted(out.iterdir()):
        if path.name.endswith("_labels.tif"):
            found[path.name] = tifffile.imread(path)
        elif path.name.endswith(".csv"):
            found[path.name] = pd.read_csv(path)
    found["coco"] = json.loads((out / "coco.json").read_text())
    return found


def test_segment_folder_writes_labels_csv_and_coco(in_process, folder: Path) -> None:
    from pycocotools.coco import COCO

    report, out = in_process
    assert report.ok, report.failures
    assert [r.key for r in report.results] == ["a", "b", "c", "d"]
    assert {r.status for r in report.results} == {"done"}
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 5  # d.tif has two planes
    total = 0
    for key in "abcd":
        labels = tifffile.imread(out / f"{key}_labels.tif")
        table = pd.read_csv(out / f"{key}_objects.csv")
        assert labels.dtype == np.int32
        assert labels.shape == ((2, *SHAPE) if key == "d" else SHAPE)
        assert set(table["label"]) == set(np.unique(labels)) - {0}
        # One row per object and plane; a stack's objects are linked through its planes.
        assert not table.duplicated(["slice", "label"] if key == "d" else ["label"]).any()
        columns = ["label", "score", "area", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
        assert {*columns, "centroid_x", "centroid_y"} <= set(table.columns)
        assert any(c.startswith("mean_intensity") for c in table.columns)
        if key == "d":
            assert table.columns[0] == "slice"
        for row in table.itertuples():
            plane = labels[row.slice] if key == "d" else labels
            ys, xs = np.nonzero(plane == row.label)
            assert row.area == len(ys)
            assert (row.bbox_x0, row.bbox_y0) == (xs.min(), ys.min())
            assert (row.bbox_x1, row.bbox_y1) == (xs.max() + 1, ys.max() + 1)
        total += len(table)
    assert total > 0
    # The COCO file reads back with pycocotools into the same masks.
    assert len(coco.getAnnIds()) == total
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        key = Path(info["file_name"]).name.split(".")[0]
        labels = tifffile.imread(out / f"{key}_labels.tif")
        plane = labels[info["slice"][0]] if "slice" in info else labels
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(annotation).astype(bool)
            np.testing.assert_array_equal(mask, plane == annotation["label"])
            assert annotation["area"] == mask.sum()
            assert 0 <= annotation["score"] <= 1.5


def test_local_cluster_gives_identical_outputs_and_loads_the_model_once_per_worker(
    in_process, folder: Path, settings: BatchSettings, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(RANDOM_WEIGHTS))  # reaches the workers
    report = segment_files(
        [folder], tmp_path, settings, workers=2, coco=tmp_path / "coco.json", progress=False
    )
    assert report.ok, report.failures
    pids = {r.pid for r in report.results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    for pid in pids:  # a worker's load counter stays at 1 over all its tasks
        assert {r.model_loads for r in report.results if r.pid == pid} == {1}
    expected, found = _outputs(in_process[1]), _outputs(tmp_path)
    assert expected.keys() == found.keys()
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(found[name], value, err_msg=name)
        elif isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(found[name], value)
        else:
            assert found[name] == value


def test_existing_outputs_are_skipped_and_a_corrupt_file_fails_alone(
    in_process, folder: Path, settings: BatchSettings, tmp_path: Path
) -> None:
    _, out = in_process
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 this is not a TIFF")
    again = segment_files(
        [folder, tmp_path / "bad.tif", tmp_path / "missing.png"],
        out,
        settings,
        progress=False,
    )
    statuses = {r.source: r.status for r in again.results}
    assert [statuses[str(folder / n)] for n in ("a.tif", "b.png", "c.zarr", "d.tif")] == [
        "skipped"
    ] * 4
    assert {Path(f.source).name for f in again.failures} == {"bad.tif", "missing.png"}
    assert all(f.error for f in again.failures)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    assert not (out / "bad_labels.tif").exists()


def test_resume_after_a_killed_run(folder: Path, settings: BatchSettings, tmp_path: Path):
    images = tmp_path / "many"
    images.mkdir()
    for i in range(6):
        tifffile.imwrite(images / f"img{i}.tif", _image(10 + i))
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "napari_mobilesam.batch.cli", "segment", str(images), "-o", str(out),
        "--detector", settings.detector, "--decoder", "mobile_sam", "--conf", "0.01",
        "--max-objects", "4", "--weights", settings.weights, "-q",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("*_objects.csv")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended early: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_objects.csv")}
    assert 1 <= len(done_before) < 6
    for labels in out.glob("*_labels.tif"):  # never half-written under its final name
        assert tifffile.imread(labels).shape == SHAPE
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(done_before)} skipped" in result.stdout
    assert len(list(out.glob("*_objects.csv"))) == len(list(out.glob("*_labels.tif"))) == 6
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    for name, mtime in done_before.items():
        assert (out / name).stat().st_mtime_ns == mtime


def test_atomic_path_leaves_nothing_when_writing_fails(tmp_path: Path) -> None:
    final = tmp_path / "x_labels.tif"
    with pytest.raises(RuntimeError), outputs.atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_find_inputs_expands_folders_and_globs(folder: Path) -> None:
    items, missing = find_inputs([folder, str(folder / "*.tif"), folder / "nothing.tif"])
    assert [i.key for i in items] == ["a", "b", "c", "d"]
    assert len(missing) == 1 and "no such file" in missing[0][1]


@pytest.mark.parametrize(
    ("shape", "axes", "axis", "expected"),
    [
        ((96, 128), None, None, ((0, 1), False)),
        ((96, 128, 3), None, None, ((0, 1, 2), True)),
        ((5, 96, 128), "ZYX", None, ((0, 1, 2), False)),
        ((96, 128, 4), "YXZ", None, ((0, 1, 2), False)),  # the file says: no colour
        ((96, 128, 7), None, -1, ((2, 0, 1), False)),
        ((2, 5, 96, 128), "TZYX", "Z", ((1, 0, 2, 3), False)),
    ],
)
def test_stack_layout(shape, axes, axis, expected) -> None:
    assert stack_layout(shape, axes, axis) == expected


def test_stack_layout_refuses_an_unknown_axis() -> None:
    with pytest.raises(ValueError, match="not among the file's axes"):
        stack_layout((2, 96, 128), "ZYX", "T")


def test_embed_then_a_click_from_the_store_runs_no_encoder(
    random_weights, folder: Path, tmp_path: Path, predictor, monkeypatch
) -> None:
    from napari_mobilesam.batch.cli import main
    from napari_mobilesam.imaging.image_files import read_image
    from napari_mobilesam.segany.embedding_store import EmbeddingStore

    store_path = tmp_path / "store.zarr"
    assert main(["embed", str(folder / "a.tif"), str(folder / "b.png"), "-o", str(store_path),
                 "-q"]) == 0  # fmt: skip
    store = EmbeddingStore(store_path)
    assert len(store) == 2
    image, _ = read_image(str(folder / "a.tif"))
    predictor.set_image(image)
    expected = predictor.predict(point_coords=[[60, 40]], point_labels=[1])

    from napari_mobilesam import SegAnyPredictor

    fresh = SegAnyPredictor(predictor.model, device="cpu")
    calls = []
    monkeypatch.setattr(fresh.model.image_encoder, "forward", lambda *a: calls.append(a) or 1 / 0)
    assert store.load_into(fresh, image) is True
    fresh.set_image(image)  # served from the cache the store filled
    found = fresh.predict(point_coords=[[60, 40]], point_labels=[1])
    assert calls == []
    for a, b in zip(expected, found, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    other = _image(99)
    assert store.load_into(fresh, other) is False  # not in the store


def test_a_predictor_pointed_at_a_store_encodes_only_what_is_not_there(
    random_weights, folder: Path, tmp_path: Path, predictor, monkeypatch
) -> None:
    from napari_mobilesam._widgets._model import EMBEDDINGS_ENV, new_predictor
    from napari_mobilesam.batch.cli import main
    from napari_mobilesam.imaging.image_files import read_image

    store_path = tmp_path / "store.zarr"
    assert main(["embed", str(folder / "a.tif"), "-o", str(store_path), "-q"]) == 0
    image, _ = read_image(str(folder / "a.tif"))
    monkeypatch.setenv(EMBEDDINGS_ENV, str(store_path))
    widget_predictor = new_predictor()  # what the napari widgets use
    calls = []
    encode = widget_predictor._encode
    monkeypatch.setattr(
        widget_predictor, "_encode", lambda rgb: calls.append(rgb.shape) or encode(rgb)
    )

    widget_predictor.set_image(image)  # the first click on a precomputed image
    assert calls == []
    widget_predictor.set_image(_image(99))  # not in the store: encoded
    assert len(calls) == 1


@pytest.mark.parametrize("link", ["auto", "off"])
def test_stack_planes_are_linked_as_in_the_widget(settings, tmp_path: Path, link: str) -> None:
    import dataclasses

    folder = tmp_path / "stack"
    folder.mkdir()
    plane = _image(5)
    tifffile.imwrite(folder / "z.tif", np.stack([plane, plane]), metadata={"axes": "ZYX"})
    out = tmp_path / "out"

    report = segment_files([folder], out, dataclasses.replace(settings, link=link), progress=False)

    assert report.ok, report.failures
    labels = tifffile.imread(out / "z_labels.tif")
    table = pd.read_csv(out / "z_objects.csv")
    assert labels[0].max() > 0
    if link == "auto":  # ZYX: 3-D objects; two identical planes give the same ids
        np.testing.assert_array_equal(labels[0], labels[1])
        assert set(table[table.slice == 0].label) == set(table[table.slice == 1].label)
    else:
        assert not set(np.unique(labels[0])[1:]) & set(np.unique(labels[1])[1:])
