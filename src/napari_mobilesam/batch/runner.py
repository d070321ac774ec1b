"""SegEvery over many images: in this process, or one task per image on a dask cluster.

:func:`segment_files` is what ``napari-mobilesam segment`` runs. Each image is one task
(:func:`segment_file`) that reads the image, segments every plane, and writes the label
image, the per-object CSV and (for ``--coco``) the image's COCO annotations itself, plane
by plane (:func:`napari_mobilesam.batch.task.segment_and_write`); a
process loads the models once (:func:`load_models`) and reuses them for every task it
runs. Outputs that exist are skipped, so a stopped run resumes; a file that fails is
reported and the run goes on. napari-free.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.batch import outputs as outputs
from napari_mobilesam.batch.outputs import is_done, output_paths
from napari_mobilesam.batch.settings import BatchSettings
from napari_mobilesam.batch.task import segment_and_write
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.image_files import InputItem, find_inputs

__all__ = [
    "BatchReport",
    "BatchSettings",
    "FileResult",
    "load_models",
    "segment_file",
    "segment_files",
]


@dataclass
class FileResult:
    """What became of one input. ``status`` is "done", "skipped" or "failed"."""

    source: str
    key: str
    status: str
    error: str = ""
    n_objects: int = 0
    seconds: float = 0.0
    pid: int = 0
    model_loads: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchReport:
    """The results of :func:`segment_files`, in input order."""

    results: list[FileResult]
    outdir: Path
    coco: Path | None = None
    seconds: float = 0.0

    @property
    def failures(self) -> list[FileResult]:
        return [result for result in self.results if result.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)


_MODELS: dict[tuple, tuple[Any, Any, Any]] = {}
_LOADS = [0]
_LOCK = threading.Lock()


def load_models(settings: BatchSettings) -> tuple[Any, Any, Any]:
    """``(predictor, detector, box_decoder)`` for ``settings``, loaded once per process.

    Every task that a (worker) process runs reuses them; :func:`model_loads` counts loads.
    """
    key = (
        settings.weights,
        settings.device,
        settings.engine,
        settings.detector,
        settings.conf,
        settings.iou,
        settings.max_objects,
        settings.decoder,
        os.environ.get("NAPARI_MOBILESAM_WEIGHTS"),
    )
    with _LOCK:
        if key not in _MODELS:
            from napari_mobilesam.segany.predictor import SegAnyPredictor
            from napari_mobilesam.segevery.box_decoders import load_box_decoder
            from napari_mobilesam.segevery.options import LazyDetector
            from napari_mobilesam.weights.build import build_mobile_sam

            predictor = SegAnyPredictor(
                build_mobile_sam(settings.weights), settings.device, engine=settings.engine
            )
            detector: Any = settings.detector
            if not settings.grid:
                detector = LazyDetector(settings, settings.device).load()
            _MODELS[key] = (predictor, detector, load_box_decoder(settings.decoder))
            _LOADS[0] += 1
        return _MODELS[key]


def model_loads() -> int:
    """How many times this process has loaded models (for any settings)."""
    return _LOADS[0]


def segment_file(
    item: InputItem,
    settings: BatchSettings,
    outdir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    coco: bool = False,
    axis: int | str | None = None,
    label_format: str = "auto",
) -> FileResult:
    """Segment one input and write its outputs. Never raises: a failure is returned.

    Skipped (status "skipped") when its outputs exist, unless ``overwrite``.
    """
    start = time.perf_counter()
    outdir = Path(outdir)
    result = FileResult(item.source, item.key, "skipped", pid=os.getpid())
    try:
        if not overwrite and is_done(outdir, item.key):
            if coco and not output_paths(outdir, item.key)["coco"].is_file():
                _coco_from_outputs(outdir, item)
        else:
            result.n_objects, result.notes = segment_and_write(
                item,
                settings,
                outdir,
                load_models(settings),
                coco=coco,
                axis=axis,
                label_format=label_format,
            )
            result.status = "done"
    except Exception as error:  # one bad file must not stop the run
        result.status, result.error = "failed", f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    result.model_loads = model_loads()
    return result


def _coco_from_outputs(outdir: Path, item: InputItem) -> dict:
    """The COCO part of an input done by an earlier run without ``coco``, read from its
    label image one plane at a time."""
    import pandas as pd

    paths = output_paths(outdir, item.key)
    table = pd.read_csv(paths["csv"])
    scores = dict(zip(table["label"].astype(int), table["score"].astype(float), strict=True))
    labels = outputs.open_labels(paths["tiff"] if paths["tiff"].is_file() else paths["zarr"])
    stack_shape = tuple(labels.shape[:-2])
    images, annotations = [], []
    for number, index in enumerate(np.ndindex(*stack_shape)):
        position = index if stack_shape else None
        image, plane_annotations = outputs.coco_plane(
            np.asarray(labels[index]), scores, item.source, number, position
        )
        images.append(image)
        annotations.extend(plane_annotations)
    part = {"images": images, "annotations": annotations}
    with outputs.atomic_path(paths["coco"]) as tmp:
        tmp.write_text(json.dumps(part))
    return part


def segment_files(
    inputs: Sequence[str | os.PathLike[str]],
    outdir: str | os.PathLike[str],
    settings: BatchSettings | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    overwrite: bool = False,
    coco: str | os.PathLike[str] | None = None,
    axis: int | str | None = None,
    label_format: str = "auto",
    progress: bool = True,
) -> BatchReport:
    """SegEvery over files, folders and glob patterns; one task per image.

    Parameters
    ----------
    inputs : sequence of str or path
        Files (TIFF, OME-TIFF, PNG, JPEG, zarr, OME-Zarr), folders (their images) and
        glob patterns (``"data/**/*.tif"``); ``"sample:cell"`` is scikit-image's cell.
    outdir : str or path
        Where ``<name>_labels.tif`` (or ``.zarr``), ``<name>_objects.csv`` and, with
        ``coco``, ``<name>_coco.json`` are written, by whichever process segments the image.
    settings : BatchSettings, optional
        As in the SegEvery widget; defaults otherwise.
    workers : int, optional
        Start a dask ``LocalCluster`` with this many worker processes (one thread each).
    scheduler : str, optional
        Address of a running dask scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
    client : distributed.Client, optional
        Use this client (a notebook's); it is not closed.
    overwrite : bool
        Segment inputs whose outputs exist (default: skip them, so a run resumes).
    coco : str or path, optional
        Write one COCO instance-segmentation JSON file for the whole run.
    axis : int or str, optional
        The stack (Z or T) axis, moved to the front; see :func:`stack_layout`.
    label_format : {"auto", "tiff", "zarr"}
        "auto": zarr for label images over 2**26 pixels, else TIFF.
    progress : bool
        Show a progress bar that advances as images finish.

    Returns
    -------
    BatchReport
        A :class:`FileResult` per input, in input order; ``report.failures`` lists each
        file that failed, with its reason. Workers are never left running.

    Without ``workers``, ``scheduler`` or ``client``, images are segmented here, one
    after another; otherwise each image is a task, and each worker process loads the
    models once and reuses them.
    """
    from tqdm.auto import tqdm

    settings = settings if settings is not None else BatchSettings()
    outputs.label_format_for((1, 1), label_format)
    if coco is not None:
        import pycocotools  # noqa: F401  (fail now, with the usual ImportError, not per file)
    if workers is not None and workers < 1:
        raise InvalidValueError(f"workers must be at least 1, got {workers}")
    start = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    items, not_found = find_inputs(inputs, exclude=outdir)
    missing = [FileResult(entry, "", "failed", reason) for entry, reason in not_found]
    options = dict(
        overwrite=overwrite, coco=coco is not None, axis=axis, label_format=label_format
    )
    bar = tqdm(total=len(items), unit="image", disable=not progress, desc="segment")
    try:
        if workers is None and scheduler is None and client is None:
            results = []
            for item in items:
                results.append(segment_file(item, settings, outdir, **options))
                _advance(bar, results[-1])
        else:
            results = _run_on_dask(
                items, settings, outdir, options, bar, workers, scheduler, client
            )
    finally:
        bar.close()
    coco_path = None
    if coco is not None:
        parts = []
        for item, result in zip(items, results, strict=True):
            if result.status != "failed":
                part_path = output_paths(outdir, item.key)["coco"]
                parts.append(json.loads(part_path.read_text()))
        coco_path = Path(coco)
        outputs.merge_coco(parts, coco_path)
    return BatchReport(missing + results, outdir, coco_path, time.perf_counter() - start)


def _advance(bar: Any, result: FileResult) -> None:
    bar.update(1)
    bar.set_postfix_str(f"{result.key}: {result.status}", refresh=False)


def _run_on_dask(
    items: list[InputItem],
    settings: BatchSettings,
    outdir: Path,
    options: dict,
    bar: Any,
    workers: int | None,
    scheduler: str | None,
    client: Any,
) -> list[FileResult]:
    import logging

    from distributed import Client, LocalCluster, as_completed

    owned: list[Any] = []
    if client is None:
        if scheduler is not None:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            owned.append(cluster)
            client = Client(cluster)
        owned.insert(0, client)
    try:
        futures = {
            client.submit(
                segment_file, item, settings, str(outdir), pure=False, **options
            ): position
            for position, item in enumerate(items)
        }
        results: list[FileResult | None] = [None] * len(items)
        for future in as_completed(futures):
            position = futures[future]
            try:
                result = future.result()
            except Exception as error:  # the worker died (killed, out of memory)
                item = items[position]
                result = FileResult(item.source, item.key, "failed", f"task lost: {error}")
            results[position] = result
            _advance(bar, result)
        return [result for result in results if result is not None]
    finally:
        for resource in owned:
            resource.close()
