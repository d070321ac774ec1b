"""SegEvery over many images: in this process, or one task per image on a dask cluster.

:func:`segment_files` is what ``napari-mobilesam segment`` runs. Each image is one task
(:func:`segment_file`) that reads the image, segments every plane, and writes the label
image, the per-object CSV and (for ``--coco``) the image's COCO annotations itself; a
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.batch import outputs as outputs
from napari_mobilesam.batch.inputs import (
    InputItem,
    find_inputs,
    read_image,
    stack_layout,
    stack_view,
)

__all__ = [
    "BatchReport",
    "BatchSettings",
    "FileResult",
    "load_models",
    "segment_file",
    "segment_files",
]


#: Linking of stack planes: auto (tracks along a T axis, 3-D objects otherwise), off, z, t.
LINK_MODES = ("auto", "off", "z", "t")


@dataclass(frozen=True)
class BatchSettings:
    """The settings of :func:`napari_mobilesam.segment_everything` for a batch run.

    Small and picklable: sent to every task. ``link`` links the objects of a stack's
    planes into 3-D objects (``"z"``) or tracks (``"t"``) as the SegEvery widget does
    (:func:`napari_mobilesam.stacks.linking.link_slices`); ``"auto"`` picks tracks when the
    stack axis is a file's T axis. ``weights`` is a ``mobile_sam.pt``-format
    file (None: ``NAPARI_MOBILESAM_WEIGHTS`` or the default weights); ``threads`` sets
    torch's thread count in the process that runs a task (None leaves it).
    """

    detector: str = "auto"
    conf: float = 0.4
    iou: float = 0.9
    max_objects: int = 300
    min_area: int = 0
    decoder: str = "auto"
    tiling: bool = True
    tile_shape: int = 768
    halo: int = 128
    points_per_side: int = 32
    link: str = "auto"
    contrast_limits: tuple[float, float] | None = None
    weights: str | None = None
    device: str | None = None
    threads: int | None = None

    def check(self) -> None:
        """Raise ValueError with a clear message for a value out of range."""
        from napari_mobilesam.imaging.tiling import TileGrid

        for name in ("conf", "iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        for name in ("max_objects", "points_per_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be 0 or more pixels, got {self.min_area}")
        if self.link not in LINK_MODES:
            raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {self.link!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        TileGrid((1, 1), tile_shape=self.tile_shape, halo=self.halo)


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


# ------------------------------------------------------------------------- models
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
        settings.detector,
        settings.conf,
        settings.iou,
        settings.max_objects,
        settings.decoder,
        os.environ.get("NAPARI_MOBILESAM_WEIGHTS"),
    )
    with _LOCK:
        if key not in _MODELS:
            from napari_mobilesam.model import build_mobile_sam
            from napari_mobilesam.segany.predictor import SegAnyPredictor
            from napari_mobilesam.segevery.box_decoders import load_box_decoder
            from napari_mobilesam.segevery.discovery import load_detector

            predictor = SegAnyPredictor(build_mobile_sam(settings.weights), settings.device)
            detector: Any = settings.detector
            if detector != "grid":
                detector = load_detector(
                    detector,
                    conf=settings.conf,
                    iou=settings.iou,
                    device=settings.device,
                    max_det=max(300, settings.max_objects),
                )
            _MODELS[key] = (predictor, detector, load_box_decoder(settings.decoder))
            _LOADS[0] += 1
        return _MODELS[key]


def model_loads() -> int:
    """How many times this process has loaded models (for any settings)."""
    return _LOADS[0]


# -------------------------------------------------------------------------- tasks
def output_paths(outdir: Path, key: str) -> dict[str, Path]:
    """The outputs of input ``key``. The CSV is written last: it marks the input done."""
    return {
        "tiff": outdir / f"{key}_labels.tif",
        "zarr": outdir / f"{key}_labels.zarr",
        "csv": outdir / f"{key}_objects.csv",
        "coco": outdir / f"{key}_coco.json",
    }


def is_done(outdir: Path, key: str) -> bool:
    """Whether the outputs of ``key`` are complete (a label image and the CSV)."""
    paths = output_paths(outdir, key)
    return paths["csv"].is_file() and (paths["tiff"].is_file() or paths["zarr"].is_dir())


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
            result.n_objects, result.notes = _segment_and_write(
                item, settings, outdir, coco=coco, axis=axis, label_format=label_format
            )
            result.status = "done"
    except Exception as error:  # one bad file must not stop the run
        result.status, result.error = "failed", f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    result.model_loads = model_loads()
    return result


def _segment_and_write(
    item: InputItem,
    settings: BatchSettings,
    outdir: Path,
    *,
    coco: bool,
    axis: int | str | None,
    label_format: str,
) -> tuple[int, list[str]]:

    image, axes = read_image(item.source)
    order, rgb = stack_layout(image.shape, axes, axis)
    image = stack_view(image, order)
    n_stack = len(image.shape) - 2 - rgb
    stack_shape = tuple(image.shape[:n_stack])
    stack_letter = axes[order[0]].upper() if axes and n_stack else ""
    link = settings.link if settings.link != "auto" else ("t" if stack_letter == "T" else "z")
    shape = (*stack_shape, *image.shape[n_stack : n_stack + 2])
    paths = output_paths(outdir, item.key)
    fmt = outputs.label_format_for(shape, label_format)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        outputs.remove_stale_temporaries(outdir, path.name)
    predictor, detector, box_decoder = load_models(settings)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads or threads)
    try:
        return _segment_planes(
            image, item, settings, outdir, fmt, shape, stack_shape, coco,
            (predictor, detector, box_decoder), link,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _segment_planes(
    image: Any,
    item: InputItem,
    settings: BatchSettings,
    outdir: Path,
    fmt: str,
    shape: tuple[int, ...],
    stack_shape: tuple[int, ...],
    coco: bool,
    models: tuple[Any, Any, Any],
    link: str = "off",
) -> tuple[int, list[str]]:
    from napari_mobilesam.segevery.pipeline import segment_everything

    predictor, detector, box_decoder = models
    paths = output_paths(outdir, item.key)
    tables, scores, notes = [], {}, [box_decoder.message] if box_decoder.message else []
    with outputs.atomic_path(paths[fmt]) as tmp:
        labels = outputs.open_zarr_labels(tmp, shape) if fmt == "zarr" else np.zeros(shape, "i4")
        for index in np.ndindex(*stack_shape):
            plane = image[index] if stack_shape else image
            direct = fmt == "zarr" and not stack_shape  # large 2-D: written tile by tile
            if _is_constant(plane):
                plane_labels, plane_scores = np.zeros(shape[-2:], np.int32), np.zeros(0)
                notes.append(f"plane {index} is constant: no objects")
            else:
                result = segment_everything(
                    plane,
                    predictor=predictor,
                    detector=detector,
                    decoder=box_decoder.decoder,
                    conf=settings.conf,
                    iou=settings.iou,
                    max_objects=settings.max_objects,
                    min_area=settings.min_area,
                    contrast_limits=settings.contrast_limits,
                    points_per_side=settings.points_per_side,
                    tiling=settings.tiling,
                    tile_shape=settings.tile_shape,
                    halo=settings.halo,
                    out=labels if direct else None,
                )
                plane_labels, plane_scores = np.asarray(result.labels[...]), result.scores
                if result.message and result.message not in notes:
                    notes.append(result.message)
            offset = len(scores)
            if offset:
                plane_labels = np.where(plane_labels > 0, plane_labels + offset, 0)
            scores.update({offset + i + 1: float(s) for i, s in enumerate(plane_scores)})
            if not direct:
                labels[index] = plane_labels
            tables.append(outputs.object_table(plane_labels, scores, plane, index))
        if link != "off" and len(stack_shape) == 1 and fmt == "tiff" and stack_shape[0] > 1:
            labels, scores = _link_planes(labels, scores, link)
            tables = [
                outputs.object_table(labels[index], scores, image[index], index)
                for index in np.ndindex(*stack_shape)
            ]
            notes.append(f"objects linked across planes ({'tracks' if link == 't' else '3-D'})")
        elif link != "off" and len(stack_shape) > 1:
            notes.append("not linked: linking needs one stack axis (choose it with --axis)")
        if fmt == "tiff":
            outputs.write_labels(tmp, labels)
    if coco:
        all_labels = outputs.read_labels(paths[fmt]) if fmt == "zarr" else labels
        part = outputs.coco_part(all_labels, scores, item.source, stack_shape)
        with outputs.atomic_path(paths["coco"]) as tmp:
            tmp.write_text(json.dumps(part))
    import pandas as pd

    with outputs.atomic_path(paths["csv"]) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, index=False)
    return len(scores), notes


def _link_planes(
    labels: np.ndarray, scores: dict[int, float], mode: str
) -> tuple[np.ndarray, dict[int, float]]:
    """Link a (S, H, W) stack of per-plane labels (ids unique across planes); the score
    of a linked object is the mean of its planes' scores."""
    from napari_mobilesam.stacks.linking import link_slices

    linked = link_slices(labels, axis=0, mode=mode, scores=[scores] * len(labels))
    table = linked.table
    return linked.labels, dict(zip(table["label"], table["mean_score"].astype(float), strict=True))


def _is_constant(plane: Any) -> bool:
    if not isinstance(plane, np.ndarray):
        return False  # a lazy array: not read whole here
    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    return finite.size == 0 or finite.min() == finite.max()


def _coco_from_outputs(outdir: Path, item: InputItem) -> dict:
    """The COCO part of an input done by an earlier run without ``coco``."""
    import pandas as pd

    paths = output_paths(outdir, item.key)
    labels_path = paths["tiff"] if paths["tiff"].is_file() else paths["zarr"]
    labels = outputs.read_labels(labels_path)
    table = pd.read_csv(paths["csv"])
    scores = dict(zip(table["label"].astype(int), table["score"].astype(float), strict=True))
    part = outputs.coco_part(labels, scores, item.source, tuple(labels.shape[:-2]))
    with outputs.atomic_path(paths["coco"]) as tmp:
        tmp.write_text(json.dumps(part))
    return part


# ------------------------------------------------------------------------- runner
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
    settings.check()
    outputs.label_format_for((1, 1), label_format)
    if coco is not None:
        import pycocotools  # noqa: F401  (fail now, with the usual ImportError, not per file)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
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


def settings_dict(settings: BatchSettings) -> dict[str, Any]:
    """``settings`` as a plain dict (for logs and reports)."""
    return asdict(settings)
