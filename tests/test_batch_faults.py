"""Faults of the batch command line (issue 21): two runs on one output folder, a COCO file
that cannot be written, a bad PNG after the detector has loaded, leftovers of dead runs,
a resumed run against an uninterrupted one, unwritable output folders, offline weights."""
# ruff: noqa: F811  (``settings``, the fixture of test_batch, is an argument of the tests)

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_mobilesam._atomic_files import TEMPORARY_MARK
from napari_mobilesam.batch import outputs, runner
from napari_mobilesam.batch.cli import main
from napari_mobilesam.batch.runner import BatchSettings, segment_files
from napari_mobilesam.segany.embedding_store import EmbeddingStore
from napari_mobilesam.weights import fetch
from test_batch import SHAPE, _image, settings  # noqa: F401  (settings: the module's fixture)


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        tifffile.imwrite(folder / f"img{i}.tif", _image(20 + i))
    return folder


def _arguments(settings: BatchSettings, *inputs: object, out: Path) -> list[str]:
    return [
        "segment", *map(str, inputs), "-o", str(out), "--detector", settings.detector,
        "--decoder", "mobile_sam", "--conf", "0.01", "--max-objects", "4",
        "--weights", settings.weights, "-q",
    ]  # fmt: skip


def _command(settings: BatchSettings, *inputs: object, out: Path) -> list[str]:
    cli = [sys.executable, "-m", "napari_mobilesam.batch.cli"]
    return cli + _arguments(settings, *inputs, out=out)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _plant(path: Path, folder: bool = False) -> Path:
    if folder:
        path.mkdir()
        (path / "zarr.json.partial").write_text("{")
    else:
        path.write_text("half")
    return path


@pytest.mark.parametrize("label_format", ["tiff", "zarr"])
def test_two_runs_on_one_folder_share_its_inputs(settings, tmp_path: Path, label_format: str):
    images, out = _images(tmp_path / "images", 6), tmp_path / "out"
    command = [*_command(settings, images, out=out), "--format", label_format]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    stdouts = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], stdouts
    segmented = [int(re.search(r"(\d+) segmented", text).group(1)) for text in stdouts]
    assert sum(segmented) == 6, stdouts  # each input segmented by one run, not by both
    suffix = ".tif" if label_format == "tiff" else ".zarr"
    for i in range(6):
        assert outputs.read_labels(out / f"img{i}_labels{suffix}").shape == SHAPE
        assert (out / f"img{i}_objects.csv").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_live_runs_temporaries_are_kept_and_a_dead_runs_removed(tmp_path: Path):
    # What a second run did to a first one's zarr being written (issue 21, fault 1).
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        name = "img_labels.zarr"
        writing = _plant(tmp_path / f".{name}{TEMPORARY_MARK}{live.pid}-0a1b2c3d", folder=True)
        stale = _plant(tmp_path / f".{name}{TEMPORARY_MARK}{_dead_pid()}-0a1b2c3d", folder=True)
        other = _plant(tmp_path / f".other.tif{TEMPORARY_MARK}{_dead_pid()}-0a1b2c3d")
        assert outputs.remove_stale_temporaries(tmp_path, name) == [stale]
        assert writing.is_dir() and not stale.exists() and other.exists()
    finally:
        live.kill()
        live.wait()


def test_leftovers_of_dead_runs_are_removed_when_their_input_is_done(settings, tmp_path: Path):
    images, out = _images(tmp_path / "images", 1), tmp_path / "out"
    coco = tmp_path / "coco.json"
    assert segment_files([images], out, settings, coco=coco, progress=False).ok
    done = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    dead = _dead_pid()
    planted = [
        _plant(out / f".img0_objects.csv{TEMPORARY_MARK}{dead}-12345678"),
        _plant(out / f".img0_labels.tif{TEMPORARY_MARK}{dead}-12345678"),
        _plant(out / f".img0_coco.json{TEMPORARY_MARK}{dead}-12345678"),
        _plant(tmp_path / f".coco.json{TEMPORARY_MARK}{dead}-12345678"),
    ]
    report = segment_files([images], out, settings, coco=coco, progress=False)
    assert [r.status for r in report.results] == ["skipped"]
    assert not [path.name for path in planted if path.exists()]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == done


def test_embed_removes_its_stores_stale_temporaries(tmp_path: Path):
    store = EmbeddingStore(tmp_path / "store.zarr")
    store.path.mkdir()
    stale = _plant(store.path / f".abc{TEMPORARY_MARK}{_dead_pid()}-12345678", folder=True)
    mine = _plant(store.path / f".def{TEMPORARY_MARK}{os.getpid()}-12345678", folder=True)
    assert store.remove_stale_temporaries() == 1
    assert not stale.exists() and mine.is_dir()


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_coco_file_that_cannot_be_written_is_one_more_failure(
    settings, tmp_path: Path, monkeypatch, capsys, code: int
):
    # Simulated (root writes into read-only folders): the COCO temporary cannot be written.
    write_text = Path.write_text

    def refuse_coco(path: Path, *args, **kwargs):
        if path.name.startswith(f".coco.json{TEMPORARY_MARK}"):
            raise OSError(code, os.strerror(code), str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse_coco)
    images, out, coco = _images(tmp_path / "images", 2), tmp_path / "out", tmp_path / "coco.json"
    status = main([*_arguments(settings, images, out=out), "--coco", str(coco)])
    captured = capsys.readouterr()
    assert status == 1
    assert "2 segmented" in captured.out and "1 failed" in captured.out  # the report is whole
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and str(coco) in failed[0] and os.strerror(code) in failed[0]
    assert TEMPORARY_MARK not in captured.err
    assert not coco.exists() and not list(tmp_path.glob(f".coco.json{TEMPORARY_MARK}*"))
    assert len(list(out.glob("*_labels.tif"))) == 2


def test_an_unwritable_output_folder_is_refused_before_the_first_image(
    settings, tmp_path: Path, monkeypatch, capsys
):
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    def no_models(settings):
        raise AssertionError("an image was segmented")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(runner, "load_models", no_models)
    out = tmp_path / "out"
    out.mkdir()
    assert main(_arguments(settings, _images(tmp_path / "images", 1), out=out)) == 2
    error = capsys.readouterr().err
    assert f"cannot write into the output folder {out}" in error
    assert os.strerror(errno.EROFS) in error


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_names_the_output_not_its_temporary(tmp_path: Path, code: int):
    final = tmp_path / "img_labels.tif"
    with pytest.raises(OSError) as error, outputs.atomic_path(final) as tmp:
        raise OSError(code, os.strerror(code), str(tmp))
    assert error.value.errno == code
    assert str(final) in str(error.value) and TEMPORARY_MARK not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_writes_nothing_leaves_no_output_folder(tmp_path: Path):
    report = segment_files([tmp_path / "missing.tif"], tmp_path / "out", progress=False)
    assert not report.ok
    assert not (tmp_path / "out").exists()


def test_offline_the_first_failure_lists_every_file_the_run_needs(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch.WEIGHTS_ENV, raising=False)
    images, out = _images(tmp_path / "images", 2), tmp_path / "out"
    report = segment_files([images], out, BatchSettings(), progress=False)
    assert [r.status for r in report.results] == ["failed", "failed"]
    first = report.failures[0].error
    for name in ("mobile_sam", "object_aware", "prompt_guided"):
        checkpoint = fetch.CHECKPOINTS[name]
        assert checkpoint.url in first
        assert str(fetch.cache_dir() / checkpoint.filename) in first
    assert not out.exists()


def test_a_bad_png_fails_for_the_same_reason_before_and_after_the_detector_loads(
    settings, tmp_path: Path
):
    folder = _images(tmp_path / "images", 1)
    bad = folder / "z_bad.png"
    bad.write_bytes(b"this is not a PNG file, whatever its name says" * 10)

    def reason(*inputs: Path) -> str:
        run = subprocess.run(
            _command(settings, *inputs, out=tmp_path / "out"), capture_output=True, text=True
        )
        assert run.returncode == 1, run.stderr
        return next(line for line in run.stderr.splitlines() if line.startswith("FAILED"))

    alone = reason(bad)
    after_the_detector = reason(folder / "img0.tif", bad)  # img0 loads the detector first
    assert alone == after_the_detector
    assert "is not a PNG or JPEG file" in alone


def test_a_resumed_run_writes_the_bytes_of_an_uninterrupted_one(settings, tmp_path: Path):
    images = _images(tmp_path / "images", 3)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    subprocess.run(_command(settings, images, out=whole), check=True)
    # img1 first in its process, then img0 and img2 in another (img1 skipped): each of
    # img1 and img2 is segmented at another position of its process than in `whole`.
    subprocess.run(_command(settings, images / "img1.tif", out=resumed), check=True)
    subprocess.run(_command(settings, images, out=resumed), check=True)
    names = sorted(p.name for p in whole.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir())
    for name in names:
        if name.endswith(".csv"):
            assert (whole / name).read_bytes() == (resumed / name).read_bytes(), name
        else:
            np.testing.assert_array_equal(
                tifffile.imread(whole / name), tifffile.imread(resumed / name), err_msg=name
            )


def test_the_first_detection_of_a_process_runs_with_the_callers_threads(tmp_path: Path):
    # The warm-up effect behind resumed runs that differed in the last bits: ultralytics set
    # its own thread count while setting up its predictor, in the first detection only.
    import torch
    from ultralytics.utils import torch_utils

    from conftest import build_yolo_checkpoint
    from napari_mobilesam.segevery.detectors.yolo import load_yolo_detector

    detector = load_yolo_detector(
        build_yolo_checkpoint(tmp_path), conf=0.01, iou=0.7, imgsz=None, max_det=10, device="cpu"
    )
    seen: list[int] = []
    detector.model.model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.get_num_threads())
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_utils.NUM_THREADS + 1)  # not ultralytics' own count
    try:
        image = np.stack([_image(30)] * 3, axis=-1)
        first, second = detector(image), detector(image)
        assert seen == [torch_utils.NUM_THREADS + 1] * 2
        assert torch.get_num_threads() == torch_utils.NUM_THREADS + 1
    finally:
        torch.set_num_threads(threads)
    for found, again in zip(first, second, strict=True):
        np.testing.assert_array_equal(found, again)
