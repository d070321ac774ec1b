"""The ``napari-mobilesam`` console script: ``segment``, ``embed`` and ``info``.

Run ``napari-mobilesam --help`` or ``napari-mobilesam segment --help``. napari-free; torch
is imported only when a command needs the model.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from napari_mobilesam._cli_arguments import non_negative, positive
from napari_mobilesam.batch.segment_options import (
    add_filter_options,
    add_segevery_options,
    object_ranges,
)
from napari_mobilesam.engines.names import ENGINES
from napari_mobilesam.imaging.tiling import DEFAULT_HALO, DEFAULT_TILE_SHAPE

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# Modules that add a command: each has ``add_command(commands)``, which adds its
# subparser and sets ``run=FUNCTION(args) -> int`` as its default.
COMMAND_MODULES: tuple[str, ...] = (
    "napari_mobilesam.evaluation.command",
    "napari_mobilesam.training.detector_command",
    "napari_mobilesam.training.decoder_command",
)

EXAMPLES = """\
examples:
  napari-mobilesam segment --sample cell -o out/            # try it on scikit-image's cell
  napari-mobilesam segment data/*.tif -o out/ --coco out/coco.json
  napari-mobilesam segment plates/ -o out/ --detector nuclei.pt --conf 0.25 --workers 4
  napari-mobilesam segment plates/ -o out/ --scheduler tcp://head-node:8786
  napari-mobilesam embed data/ -o embeddings.zarr
  napari-mobilesam info
"""


def _axis(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("images")
    group.add_argument(
        "--axis",
        type=_axis,
        metavar="AXIS",
        help="the Z or T axis of stacks, an index or a letter of the file's axes (e.g. Z); "
        "it is moved first. Default: every leading axis is a stack axis, as in napari, and "
        "a last axis of 3 or 4 is RGB(A)",
    )
    group.add_argument(
        "--contrast-limits",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="display range mapped to 0..255 (default: 0.1st-99.9th percentiles; uint8 as is)",
    )
    group.add_argument(
        "--no-tiling",
        dest="tiling",
        action="store_false",
        help="resize large images into the model's 1024 px instead of tiling them",
    )
    group.add_argument("--tile-shape", type=positive, default=DEFAULT_TILE_SHAPE[0], metavar="PX")
    group.add_argument("--halo", type=non_negative, default=DEFAULT_HALO[0], metavar="PX")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--weights",
        metavar="FILE",
        help="mobile_sam.pt-format file (default: $NAPARI_MOBILESAM_WEIGHTS or the cache)",
    )
    group.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: best)")
    group.add_argument("--threads", type=positive, help="torch threads per process")
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default="torch",
        help="what runs the image encoder and the YOLO detector on a CPU: torch (default), "
        "openvino (float32), openvino-int8, or auto (per network, the fastest that passed "
        "its checks on this machine); "
        'the OpenVINO ones need pip install "napari-mobilesam[cpu]"',
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the console script."""
    parser = argparse.ArgumentParser(
        prog="napari-mobilesam",
        description="MobileSAM (segment anything) and MobileSAMv2 (segment everything) "
        "over folders of microscopy images, without napari.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_segment_command(commands)
    _add_embed_command(commands)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(commands)
    commands.add_parser(
        "info",
        help="versions, device, threads, and where the weights are",
        description="Print versions, the device and threads torch uses, and which weights "
        "are found where (nothing is downloaded).",
    )
    return parser


def _add_segment_command(commands: Any) -> None:
    segment = commands.add_parser(
        "segment",
        help="SegEvery (MobileSAMv2) over files, folders and globs",
        description="Segment every object of each image into a label image "
        "(NAME_labels.tif, or .zarr when large) and a table NAME_objects.csv (label, "
        "score, area, bbox, centroid, mean intensity). Images whose outputs exist are "
        "skipped, so a stopped run resumes; a file that fails is reported at the end and "
        "the exit status is 1.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="TIFF/OME-TIFF, PNG, JPEG, zarr/OME-Zarr files, folders, or glob patterns",
    )
    segment.add_argument("-o", "--outdir", required=True, help="output folder")
    segment.add_argument(
        "--sample", choices=("cell", "coins"), help="also segment a scikit-image sample"
    )
    segment.add_argument(
        "--coco",
        metavar="FILE",
        help="write one COCO JSON for the run (each input's part is kept as NAME_coco.json "
        "in the output folder, so that a resumed run can merge it without segmenting again)",
    )
    segment.add_argument("--overwrite", action="store_true", help="redo existing outputs")
    segment.add_argument(
        "--format",
        choices=("auto", "tiff", "zarr"),
        default="auto",
        help="label image format (auto: zarr above 2**26 pixels)",
    )
    add_segevery_options(segment)
    add_filter_options(segment)
    _add_image_options(segment)
    _add_model_options(segment)
    scale = segment.add_argument_group("scale out (dask.distributed; default: in this process)")
    where = scale.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive, metavar="N", help="start a LocalCluster")
    where.add_argument("--scheduler", metavar="ADDRESS", help="use a running dask cluster")
    segment.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_embed_command(commands: Any) -> None:
    embed = commands.add_parser(
        "embed",
        help="precompute image embeddings into a zarr store",
        description="Encode each image (whole, or its tiles when large) into STORE.zarr, "
        "keyed by content. Point the SegAny widget or EmbeddingStore(STORE).load_into("
        "predictor, image) at it: the first click on a stored image is instant.",
    )
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    embed.add_argument("-o", "--output", required=True, metavar="STORE.zarr")
    _add_image_options(embed)
    _add_model_options(embed)
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _segment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from napari_mobilesam.batch.runner import BatchSettings, segment_files

    inputs = list(args.inputs) + ([f"sample:{args.sample}"] if args.sample else [])
    if not inputs:
        parser.error("give at least one INPUT, or --sample cell")
    try:
        settings = BatchSettings(
            detector=args.detector,
            conf=args.conf,
            iou=args.iou,
            max_objects=args.max_objects,
            min_area=args.min_area,
            decoder=args.decoder,
            tiling=args.tiling,
            tile_shape=args.tile_shape,
            halo=args.halo,
            points_per_side=args.points_per_side,
            link=args.link,
            search_radius=args.search_radius,
            max_gap=args.max_gap,
            neck_ratio=args.neck_ratio,
            contrast_limits=tuple(args.contrast_limits) if args.contrast_limits else None,
            weights=args.weights,
            device=args.device,
            threads=args.threads,
            object_ranges=object_ranges(args),
            engine=args.engine,
        )
    except ValueError as error:
        parser.error(str(error))
    report = segment_files(
        inputs,
        args.outdir,
        settings,
        workers=args.workers,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        coco=args.coco,
        axis=args.axis,
        label_format=args.format,
        progress=not args.quiet,
    )
    done, skipped = report.count("done"), report.count("skipped")
    objects = sum(result.n_objects for result in report.results)
    busy = f"{report.count('busy')} left to another run, " if report.count("busy") else ""
    print(
        f"{done} segmented ({objects} objects), {skipped} skipped (outputs exist), {busy}"
        f"{len(report.failures)} failed, in {report.seconds:.1f} s -> {report.outdir}"
    )
    notes = {note for result in report.results for note in result.notes}
    for note in sorted(notes):
        print(f"note: {note}")
    if report.coco is not None:
        print(f"COCO annotations: {report.coco}")
    return _report_failures(report.failures)


def _report_failures(failures: Sequence) -> int:
    for failure in failures:
        print(f"FAILED {failure.source}: {failure.error}", file=sys.stderr)
    return 1 if failures else 0


def _embed(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from napari_mobilesam.batch.runner import FileResult
    from napari_mobilesam.imaging.image_files import (
        find_inputs,
        read_image,
        stack_layout,
        stack_view,
    )
    from napari_mobilesam.segany.embedding_store import EmbeddingStore
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.weights.build import build_mobile_sam

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    items, not_found = find_inputs(args.inputs)
    failures = [FileResult(entry, "", "failed", reason) for entry, reason in not_found]
    predictor = SegAnyPredictor(
        build_mobile_sam(args.weights), args.device, cache_size=4, engine=args.engine
    )
    store = EmbeddingStore(args.output)
    store.remove_stale_temporaries()  # of an interrupted embed
    limits = tuple(args.contrast_limits) if args.contrast_limits else None
    computed = 0
    for item in tqdm(items, unit="image", disable=args.quiet, desc="embed"):
        try:
            image, axes = read_image(item.source)
            order, rgb = stack_layout(image.shape, axes, args.axis)
            image = stack_view(image, order)
            n_stack = len(image.shape) - 2 - rgb
            for index in np.ndindex(*image.shape[:n_stack]):
                plane = image[index] if n_stack else image
                computed += store.add(
                    predictor,
                    plane,
                    limits,
                    tiling=args.tiling,
                    tile_shape=args.tile_shape,
                    halo=args.halo,
                )
        except Exception as error:  # one bad file must not stop the run
            failures.append(FileResult(item.source, item.key, "failed", f"{error}"))
    print(f"{computed} embeddings computed; {len(store)} in {store.path}")
    return _report_failures(failures)


def _info() -> int:
    import platform

    from napari_mobilesam.weights import fetch as weights

    print(f"napari-mobilesam {_version('napari-mobilesam')}, Python {platform.python_version()}")
    for package in ("torch", "torchvision", "ultralytics", "numpy", "scikit-image", "tifffile",
                    "zarr", "dask", "distributed", "pycocotools"):  # fmt: skip
        print(f"  {package:<12} {_version(package)}")
    from napari_mobilesam._torch_guard import prepare_torch_import

    prepare_torch_import()
    import torch

    from napari_mobilesam.model.device import default_device

    print(f"device: {default_device()} (CUDA available: {torch.cuda.is_available()})")
    print(f"threads: torch {torch.get_num_threads()}, CPU cores {os.cpu_count()}")
    env = os.environ.get(weights.WEIGHTS_ENV, "")
    print(f"{weights.WEIGHTS_ENV}: {env or '(not set)'}")
    print(f"cache: {weights.cache_dir()}")
    for name, checkpoint in weights.CHECKPOINTS.items():
        try:
            found = weights._checkpoint_from_env(checkpoint)
            where = f"{found} (from {weights.WEIGHTS_ENV})" if found else None
        except weights.WeightsError as error:
            where = f"error: {error}"
        if where is None:
            cached = weights.cache_dir() / checkpoint.filename
            where = str(cached) if cached.is_file() else f"not found; downloads {checkpoint.url}"
        print(f"  {name:<14} {where}")
    return 0


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status (0 ok, 1 failures, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "run"):
            return args.run(args)
        if args.command == "segment":
            return _segment(args, parser)
        if args.command == "embed":
            return _embed(args)
        return _info()
    except ImportError as error:
        print(
            f"error: {error}. The batch commands need extras: "
            'pip install "napari-mobilesam[batch]"',
            file=sys.stderr,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # e.g. WeightsError: its message says what to do
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
