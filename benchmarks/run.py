"""Speed and memory of napari-mobilesam against its peers, on the same weights and images.

Peers: ultralytics' own MobileSAM (an independent implementation, loaded from the same
weights file) and the "reference-style" path through this project's model, which follows
the original implementation: ``MaskDecoder.forward`` (the image embedding repeated per
prompt) and :func:`reference_postprocess_masks` of every mask to full size.

Run from the repository root::

    python benchmarks/run.py --quick                 # 512² only, a few minutes
    python benchmarks/run.py --markdown results.md   # 512², 1024², 2048²: 15-25 minutes

Rows (see benchmarks/README.md for what each one includes):

1. encoder: ``set_image`` on an image not in the cache, float32 and bfloat16 ("speed mode")
2. click: one point on a cached embedding, three full-resolution masks
3. refine: one point plus the previous best low-res mask, one full-resolution mask
4. 320 boxes decoded into a label image, embedding cached
5. SegEvery end to end with a random-weight YOLOv8x detector (MobileSAMv2's kind)
6. mask decoding of SAM's 32×32 (and 64×64) point grid against the 320 boxes of row 4
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from skimage.draw import disk
from skimage.filters import gaussian

from _measure import Measurement, measure
from _report import RowResult, markdown_table, text_table
from napari_mobilesam import SegAnyPredictor, SegEveryResult, build_mobile_sam, segment_everything
from napari_mobilesam.imaging.model_frame import preprocess_shape, scale_boxes, scale_coords
from napari_mobilesam.model import MobileSAM
from napari_mobilesam.segevery.discovery import discover_objects, load_detector

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/fixtures/parity/mobile_sam_seed0.pt"
)
DEFAULT_SIZES = (512, 1024, 2048)
REFERENCE_NAME = "reference-style decoder"
REFERENCE_BOXES = "reference_boxes_to_labels"
N_BOXES = 320
REFERENCE_BATCH = 64
WARMUP_PROMPTS = 8
DETECTOR_YAML = "yolov8x-seg.yaml"
DETECTOR_IMGSZ = 1024
GRID_SIDE = 32
DENSE_GRID_SIDE = 64
DENSE_GRID_IMAGE = 1024
# Memory per box prompt of ultralytics' single-batch decode before its masks are upsampled
# (the (256, 64, 64) embedding repeated per prompt and activations of that size); measured:
# about 9 GiB for 320 prompts. Used to skip runs the machine cannot hold.
PEER_DECODER_BYTES_PER_PROMPT = 28 * 2**20


# ----------------------------------------------------------------------------- inputs
def synthetic_image(side: int) -> np.ndarray:
    """A deterministic fluorescence-like ``(side, side, 3)`` uint8 RGB image.

    Round cells (green) with brighter nuclei (blue) on a noisy background, drawn from a
    fixed seed; cell sizes and density scale with ``side``, so every size looks alike.

    Examples
    --------
    >>> synthetic_image(64).shape
    (64, 64, 3)
    """
    rng = np.random.default_rng(0)
    scale = side / 1024
    cells = np.zeros((side, side), np.float32)
    nuclei = np.zeros_like(cells)
    for _ in range(max(1, round(300 * scale**2))):
        centre = rng.uniform(0, side, 2)
        radius = rng.uniform(12, 40) * scale
        brightness = rng.uniform(0.3, 0.8)
        cells[disk(centre, radius, shape=cells.shape)] = brightness
        nuclei[disk(centre, 0.45 * radius, shape=cells.shape)] = brightness + 0.2
    cells = gaussian(cells, sigma=2 * scale)
    nuclei = gaussian(nuclei, sigma=1.5 * scale)
    noise = rng.normal(0.0, 0.04, (side, side, 3))
    rgb = np.stack([0.15 * cells, cells, nuclei], axis=-1) + 0.05 + noise
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def random_boxes(side: int, n: int = N_BOXES) -> np.ndarray:
    """``n`` distinct x0, y0, x1, y1 boxes with integer corners inside a side² image.

    Box sides are 20-150 px for a 1024² image, scaled with ``side``; drawn from
    ``np.random.default_rng(0)``.
    """
    rng = np.random.default_rng(0)
    extent = rng.uniform(20, 150, (n, 2)) * side / 1024
    corner = rng.uniform(0, 1, (n, 2)) * (side - extent)
    boxes = np.round(np.hstack([corner, corner + extent]))
    if len(np.unique(boxes, axis=0)) != n:
        raise RuntimeError(f"random_boxes drew repeated boxes for a {side}² image")
    return boxes


def centre_click(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One foreground point at the image centre: (1, 2) (x, y) coordinates, (1,) label."""
    height, width = image.shape[:2]
    return np.array([[width / 2, height / 2]]), np.array([1])


def bgr(rgb: np.ndarray) -> np.ndarray:
    """ultralytics reads numpy images as OpenCV BGR."""
    return np.ascontiguousarray(rgb[..., ::-1])


# ----------------------------------------------------------------------------- peers
def reference_postprocess_masks(
    masks: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    model_side: int,
) -> torch.Tensor:
    """Low-resolution logits (B, C, 256, 256) to logits (B, C, H, W) of the image, as the
    original SAM does it: upsampled bilinearly to the padded ``model_side`` square, cropped
    to the resized image ``input_size`` (h, w) and resized bilinearly to ``original_size``.
    """
    masks = F.interpolate(masks, (model_side, model_side), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def reference_predict(
    model: MobileSAM,
    embedding: torch.Tensor,
    image_shape: tuple[int, int],
    point_coords: np.ndarray,
    point_labels: np.ndarray,
    mask_input: np.ndarray | None = None,
    multimask_output: bool = True,
) -> np.ndarray:
    """Masks of one prompt the straightforward way of the original ``SamPredictor.predict``.

    Prompt encoder, ``MaskDecoder.forward``, :func:`reference_postprocess_masks`, threshold.
    Returns (C, H, W) bool.
    """
    device = embedding.device
    coords = scale_coords(point_coords, image_shape, model.image_size)
    points = (
        torch.as_tensor(coords, dtype=torch.float32, device=device)[None],
        torch.as_tensor(point_labels, dtype=torch.int64, device=device)[None],
    )
    masks = None
    if mask_input is not None:
        masks = torch.as_tensor(mask_input, dtype=torch.float32, device=device)[None]
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points, None, masks)
        image_pe = model.prompt_encoder.get_dense_pe()
        low_res, _ = model.mask_decoder(embedding, image_pe, sparse, dense, multimask_output)
        input_size = preprocess_shape(*image_shape, model.image_size)
        full = reference_postprocess_masks(low_res, input_size, image_shape, model.image_size)
    return (full[0] > model.mask_threshold).cpu().numpy()


def reference_boxes_to_labels(
    model: MobileSAM,
    embedding: torch.Tensor,
    boxes: np.ndarray,
    image_shape: tuple[int, int],
    batch_size: int = REFERENCE_BATCH,
) -> np.ndarray:
    """Box prompts to a label image the straightforward way (MobileSAMv2's reference code).

    Batches of ``batch_size`` boxes go through ``MaskDecoder.forward``, which repeats the
    image embedding for every prompt; every mask is upsampled to full size with
    :func:`reference_postprocess_masks` and kept. The masks are then pasted largest first, so
    that each pixel ends with the smallest mask covering it (the earlier box among equal
    areas), the rule ``segment_everything`` documents.

    Returns
    -------
    (H, W) int32: 0 background, ``i + 1`` where box ``i`` won the pixel.
    """
    device = embedding.device
    scaled = scale_boxes(boxes, image_shape, model.image_size)
    boxes_t = torch.as_tensor(scaled, dtype=torch.float32, device=device)
    input_size = preprocess_shape(*image_shape, model.image_size)
    masks = []
    with torch.inference_mode():
        image_pe = model.prompt_encoder.get_dense_pe()
        for start in range(0, len(boxes_t), batch_size):
            sparse, dense = model.prompt_encoder(None, boxes_t[start : start + batch_size], None)
            low_res, _ = model.mask_decoder(embedding, image_pe, sparse, dense, False)
            full = reference_postprocess_masks(low_res, input_size, image_shape, model.image_size)
            masks.append((full[:, 0] > model.mask_threshold).cpu())
    all_masks = torch.cat(masks).numpy()
    areas = all_masks.sum(axis=(1, 2))
    labels = np.zeros(image_shape, dtype=np.int32)
    # Primary key: area, largest first; then later boxes first, so earlier ones end on top.
    for i in np.lexsort((-np.arange(len(areas)), -areas)):
        labels[all_masks[i]] = i + 1
    return labels


class UltralyticsSAM:
    """ultralytics' MobileSAM predictor on the same weights, with its features cached.

    ultralytics builds MobileSAM when the weights file is named ``mobile_sam.pt``, so the
    file is copied under that name into ``folder``. ``Predictor.set_image`` runs the encoder
    and keeps the features; ``Predictor.inference_features`` decodes prompts against them
    into full-resolution boolean masks (all of them: no confidence filter).
    """

    def __init__(self, weights: Path, folder: Path, device: torch.device) -> None:
        from ultralytics.models.sam import Predictor

        path = folder / "mobile_sam.pt"
        shutil.copyfile(weights, path)
        self.device = ultralytics_device(device)
        overrides = {"model": str(path), "imgsz": 1024, "device": self.device}
        self.predictor = Predictor(overrides={**overrides, "verbose": False, "save": False})
        self.predictor.setup_model(verbose=False)
        self._current: np.ndarray | None = None

    def set_image(self, rgb: np.ndarray) -> None:
        """Run the encoder on ``rgb``."""
        self.predictor.set_image(bgr(rgb))
        self._current = rgb

    def use_image(self, rgb: np.ndarray) -> None:
        """Make ``rgb`` the current image, running the encoder only if it is not already."""
        if self._current is not rgb:
            self.set_image(rgb)

    def decode(self, image_shape: tuple[int, int], **prompts: Any) -> torch.Tensor:
        """(N, H, W) bool masks of the prompts (``points``/``labels``/``bboxes``)."""
        masks, _ = self.predictor.inference_features(
            self.predictor.features, image_shape, **prompts
        )
        return masks


def ultralytics_pipeline(
    yolo: Any, sam: UltralyticsSAM, rgb: np.ndarray, sam_boxes: np.ndarray
) -> int:
    """ultralytics' own detect-then-segment pipeline, as its ``auto_annotate`` runs it.

    ``YOLO.predict`` with the settings SegEvery uses, then the SAM encoder and one batch of
    box prompts. The SAM stage decodes ``sam_boxes`` (the boxes our discovery proposed)
    rather than YOLO's own: ultralytics' segmentation predictor keeps only detections whose
    YOLO mask is non-empty, which with random weights can be none, and both pipelines
    should decode the same prompts. Returns how many boxes ultralytics' YOLO kept.
    """
    detections = yolo.predict(
        bgr(rgb),
        imgsz=DETECTOR_IMGSZ,
        conf=0.0,
        iou=0.9,
        agnostic_nms=True,
        max_det=len(sam_boxes),
        device=sam.device,
        verbose=False,
    )
    sam.set_image(rgb)
    sam.decode(rgb.shape[:2], bboxes=sam_boxes)
    return len(detections[0].boxes)


def ultralytics_device(device: torch.device) -> str:
    """A device string both ultralytics and napari-mobilesam's detector loader accept."""
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


def import_ultralytics() -> None:
    """Import ultralytics offline, without letting it make torch single-threaded.

    ultralytics sets ``OMP_NUM_THREADS=1`` at import unless it is set; torch is imported
    first here, and the variable is removed again so child processes are not affected.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    omp_was_set = "OMP_NUM_THREADS" in os.environ
    import ultralytics  # noqa: F401

    if not omp_was_set:
        os.environ.pop("OMP_NUM_THREADS", None)


def build_random_yolo(folder: Path, base_yaml: str = DETECTOR_YAML, nc: int = 1) -> Path:
    """Save a random-weight YOLOv8 built from a yaml that ultralytics ships.

    MobileSAMv2's ObjectAwareModel is a one-class YOLOv8x segmentation model. ultralytics
    reads the model scale (n, s, ..., x) from the file name, so the copy keeps it.
    """
    import yaml
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    config = yaml_model_load(base_yaml)
    config["nc"] = nc
    name = f"{nc}-class-{Path(base_yaml).stem}"
    config_path = folder / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "yaml_file"}))
    torch.manual_seed(0)
    checkpoint = folder / f"{name}.pt"
    YOLO(str(config_path)).save(checkpoint)
    return checkpoint


# ----------------------------------------------------------------------------- rows
@dataclass
class Bench:
    """The models of one device and the run settings every row uses."""

    device: torch.device
    model: MobileSAM
    predictor: SegAnyPredictor
    fast_predictor: SegAnyPredictor
    peer: UltralyticsSAM
    detector_path: Path
    repeats: int
    heavy_repeats: int
    threads: int
    quick: bool
    peer_yolo: Any = None
    log: Callable[[str], None] = field(default=print)

    def measure(self, run: Callable[[], Any], *, heavy: bool = False, **options: Any):
        """:func:`_measure.measure` with this bench's device, threads and repeats (the
        ``heavy_repeats`` for rows 4-6)."""
        repeats = self.heavy_repeats if heavy else self.repeats
        return measure(run, device=self.device, repeats=repeats, threads=self.threads, **options)

    def fits_in_memory(self, nbytes: float) -> bool:
        """Whether ``nbytes`` leave a safe margin of the memory free now."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            free = psutil.virtual_memory().available
        return nbytes < 0.8 * free


def bench_encoder(b: Bench, image: np.ndarray) -> list[RowResult]:
    side = image.shape[0]
    b.log("encoder")
    ours, _ = b.measure(lambda: b.predictor.set_image(image), prepare=b.predictor.clear_cache)
    fast, _ = b.measure(
        lambda: b.fast_predictor.set_image(image), prepare=b.fast_predictor.clear_cache
    )
    peer, _ = b.measure(lambda: b.peer.set_image(image))
    name = "ultralytics set_image"
    return [
        RowResult("1. encoder (set_image, cold)", side, ours, peer, name, "float32"),
        RowResult(
            "1. encoder (set_image, cold), speed mode",
            side,
            fast,
            peer,
            name,
            "ours precision='bfloat16'; peer float32",
        ),
    ]


def bench_click(b: Bench, image: np.ndarray) -> list[RowResult]:
    side, shape = image.shape[0], image.shape[:2]
    point, label = centre_click(image)
    b.log("click")
    b.predictor.set_image(image)
    b.peer.use_image(image)
    embedding = b.predictor.get_image_embedding()
    ours, (masks, _, _) = b.measure(lambda: b.predictor.predict(point, label))
    reference, reference_masks = b.measure(
        lambda: reference_predict(b.model, embedding, shape, point, label)
    )
    peer, _ = b.measure(
        lambda: b.peer.decode(shape, points=point, labels=label, multimask_output=True)
    )
    row = "2. click (1 point → 3 masks, cached)"
    return [
        RowResult(row, side, ours, peer, "ultralytics inference_features", "features cached"),
        RowResult(
            row, side, ours, reference, REFERENCE_NAME, pixel_agreement(masks, reference_masks)
        ),
    ]


def bench_refine(b: Bench, image: np.ndarray) -> list[RowResult]:
    side, shape = image.shape[0], image.shape[:2]
    point, label = centre_click(image)
    b.log("refine")
    b.predictor.set_image(image)
    embedding = b.predictor.get_image_embedding()
    _, scores, low_res = b.predictor.predict(point, label)
    mask_input = low_res[np.argmax(scores)][None]
    ours, (masks, _, _) = b.measure(
        lambda: b.predictor.predict(point, label, mask_input=mask_input, multimask_output=False)
    )
    reference, reference_masks = b.measure(
        lambda: reference_predict(
            b.model, embedding, shape, point, label, mask_input, multimask_output=False
        )
    )
    row = "3. refine (point + mask → 1 mask)"
    note = pixel_agreement(masks, reference_masks)
    return [RowResult(row, side, ours, reference, REFERENCE_NAME, note)]


def pixel_agreement(ours: np.ndarray, reference: np.ndarray) -> str:
    return f"{np.mean(ours == reference):.3%} of mask pixels as the reference-style path"


def bench_boxes(
    b: Bench, image: np.ndarray, boxes: np.ndarray
) -> tuple[list[RowResult], Measurement]:
    """Row 4; also returns our decoding time, which row 6 compares the grid with."""
    side, shape = image.shape[0], image.shape[:2]
    few = boxes[:WARMUP_PROMPTS]
    b.log(f"{len(boxes)} boxes")
    b.predictor.set_image(image)
    embedding = b.predictor.get_image_embedding()
    ours, result = b.measure(
        lambda: segment_everything(image, predictor=b.predictor, boxes=boxes),
        heavy=True,
        warmup=lambda: segment_everything(image, predictor=b.predictor, boxes=few),
        splits=lambda r: r.timings,
    )
    reference, reference_labels = b.measure(
        lambda: reference_boxes_to_labels(b.model, embedding, boxes, shape),
        heavy=True,
        warmup=lambda: reference_boxes_to_labels(b.model, embedding, few, shape),
    )
    foreground, objects = label_agreement(result, reference_labels, boxes)
    decoding = replace(ours, seconds=ours.splits["decoding"])
    row = f"4. {len(boxes)} boxes → labels (cached)"
    agreement = f"agreement: foreground {foreground:.3%}, object ids {objects:.3%}"
    rows = [RowResult(f"{row}: decoding", side, decoding, reference, REFERENCE_BOXES, agreement)]
    peer_name = "ultralytics inference_features"
    needed = len(boxes) * (5 * shape[0] * shape[1] + PEER_DECODER_BYTES_PER_PROMPT)
    if b.quick:
        peer, note = None, "peer skipped by --quick"
    elif not b.fits_in_memory(needed):
        peer, note = None, f"peer skipped: needs about {needed / 2**30:.1f} GiB"
    else:
        b.log(f"{len(boxes)} boxes, ultralytics")
        b.peer.use_image(image)
        peer, _ = b.measure(
            lambda: b.peer.decode(shape, bboxes=boxes),
            heavy=True,
            warmup=lambda: b.peer.decode(shape, bboxes=few),
        )
        note = "peer: one batch, full-size masks, no label image"
    rows.append(RowResult(f"{row}: wall", side, ours, peer, peer_name, note))
    return rows, decoding


def label_agreement(
    result: SegEveryResult, reference_labels: np.ndarray, boxes: np.ndarray
) -> tuple[float, float]:
    """Fractions of pixels on which our label image and the reference-style one agree:
    foreground against background, and which box's object the pixel belongs to."""
    box_index = {tuple(box): i for i, box in enumerate(boxes.astype(np.float32))}
    to_box = np.zeros(result.n_objects + 1, dtype=np.int32)
    for label, box in enumerate(result.boxes, start=1):
        to_box[label] = box_index[tuple(box)] + 1
    ours = to_box[result.labels]
    foreground = float(np.mean((ours > 0) == (reference_labels > 0)))
    return foreground, float(np.mean(ours == reference_labels))


def bench_detector(b: Bench, image: np.ndarray) -> list[RowResult]:
    side = image.shape[0]
    b.log("SegEvery with YOLOv8x")
    detector = load_detector(
        b.detector_path,
        conf=0.0,
        iou=0.9,
        imgsz=DETECTOR_IMGSZ,
        device=ultralytics_device(b.device),
    )

    def segment(max_objects: int) -> SegEveryResult:
        return segment_everything(
            image, predictor=b.predictor, detector=detector, max_objects=max_objects
        )

    ours, result = b.measure(
        lambda: segment(N_BOXES),
        heavy=True,
        warmup=lambda: segment(WARMUP_PROMPTS),
        prepare=b.predictor.clear_cache,
        splits=lambda r: r.timings,
    )
    split = " / ".join(
        f"{ours.splits[k] * 1e3:,.0f}" for k in ("discovery", "embedding", "decoding")
    )
    prompts, _ = discover_objects(image, detector, iou=0.9, max_objects=N_BOXES)
    note = (
        f"{len(prompts)} boxes → {result.n_objects} objects; "
        f"discovery / embedding / decoding {split} ms"
    )
    row = "5. SegEvery, YOLOv8x detector"
    peer_name = "ultralytics YOLO + SAM"
    needed = len(prompts) * (5 * side**2 + 4 * DETECTOR_IMGSZ**2 + PEER_DECODER_BYTES_PER_PROMPT)
    if b.quick:
        return [RowResult(row, side, ours, None, peer_name, f"{note}; peer skipped by --quick")]
    if not b.fits_in_memory(needed):
        skipped = f"{note}; peer skipped: needs about {needed / 2**30:.1f} GiB"
        return [RowResult(row, side, ours, None, peer_name, skipped)]
    b.log("SegEvery with YOLOv8x, ultralytics")
    peer, yolo_kept = b.measure(
        lambda: ultralytics_pipeline(b.peer_yolo, b.peer, image, prompts),
        heavy=True,
        warmup=lambda: ultralytics_pipeline(b.peer_yolo, b.peer, image, prompts[:WARMUP_PROMPTS]),
    )
    note += f"; peer's SAM decodes the same boxes (its YOLO kept {yolo_kept})"
    return [RowResult(row, side, ours, peer, peer_name, note)]


def bench_grid(
    b: Bench,
    image: np.ndarray,
    boxes_decoding: Measurement,
    n_boxes: int,
    grid_sides: Sequence[int],
) -> list[RowResult]:
    """Row 6: the grid's mask decoding against the boxes' (both ours)."""
    side = image.shape[0]
    rows = []
    for grid_side in grid_sides:
        b.log(f"grid {grid_side}×{grid_side}")
        grid, result = b.measure(
            lambda n=grid_side: segment_everything(
                image, predictor=b.predictor, detector="grid", points_per_side=n
            ),
            heavy=True,
            warmup=lambda: segment_everything(
                image, predictor=b.predictor, detector="grid", points_per_side=4
            ),
            splits=lambda r: r.timings,
        )
        kept = f"{result.n_objects} grid masks passed SAM's IoU/stability filters"
        rows.append(
            RowResult(
                f"6. mask decoding: grid {grid_side}² / {n_boxes} boxes",
                side,
                boxes_decoding,
                replace(grid, seconds=grid.splits["decoding"]),
                f"ours, grid {grid_side}×{grid_side}",
                f"ours = row 4 decoding; speed-up = grid / boxes; {kept}",
            )
        )
    return rows


def bench_image(b: Bench, image: np.ndarray, boxes: np.ndarray) -> list[RowResult]:
    """Every row on one image."""
    rows = bench_encoder(b, image) + bench_click(b, image) + bench_refine(b, image)
    box_rows, boxes_decoding = bench_boxes(b, image, boxes)
    rows += box_rows + bench_detector(b, image)
    grid_sides = [GRID_SIDE]
    if image.shape[0] == DENSE_GRID_IMAGE and not b.quick:
        grid_sides.append(DENSE_GRID_SIDE)
    return rows + bench_grid(b, image, boxes_decoding, len(boxes), grid_sides)


# ----------------------------------------------------------------------------- driver
def make_bench(
    device: torch.device, args: argparse.Namespace, folder: Path, detector_path: Path
) -> Bench:
    model = build_mobile_sam(args.weights)
    peer_yolo = None
    if not args.quick:
        from ultralytics import YOLO

        peer_yolo = YOLO(str(detector_path))
    return Bench(
        device=device,
        model=model,
        predictor=SegAnyPredictor(model, device, cache_size=4),
        fast_predictor=SegAnyPredictor(model, device, cache_size=4, precision="bfloat16"),
        peer=UltralyticsSAM(args.weights, folder, device),
        detector_path=detector_path,
        repeats=args.repeats,
        heavy_repeats=args.heavy_repeats,
        threads=args.threads,
        quick=args.quick,
        peer_yolo=peer_yolo,
    )


def run_device(
    device: torch.device, args: argparse.Namespace, folder: Path, detector_path: Path
) -> list[RowResult]:
    bench = make_bench(device, args, folder, detector_path)
    started = time.perf_counter()
    rows: list[RowResult] = []
    for size in args.sizes:
        image, boxes = synthetic_image(size), random_boxes(size)

        def log(message: str, size: int = size) -> None:
            elapsed = time.perf_counter() - started
            print(
                f"[{device.type} {size}² {elapsed:6.0f} s] {message}", file=sys.stderr, flush=True
            )

        bench.log = log
        rows += bench_image(bench, image, boxes)
    # Group the lines by row number, then image size; the lines of a row keep their order.
    return sorted(rows, key=lambda r: (int(r.row.split(".")[0]), r.size))


def environment(threads: int) -> list[tuple[str, str]]:
    import ultralytics

    import napari_mobilesam

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [
        ("date", time.strftime("%Y-%m-%d %H:%M")),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("ultralytics", ultralytics.__version__),
        ("napari-mobilesam", napari_mobilesam.__version__),
        ("CPU", f"{cpu_model()} ({os.cpu_count()} logical cores)"),
        ("torch threads", str(threads)),
        ("bfloat16 on the CPU", bf16_support()),
        ("GPU", gpu),
    ]


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def bf16_support() -> str:
    flags = set()
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    found = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    onednn = torch.backends.mkldnn.is_available() and bool(
        torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    return f"CPU flags: {', '.join(found) or 'no avx512_bf16/amx_bf16'}; oneDNN bf16: {onednn}"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


LEGEND = (
    "speed-up = peer time / our time (above 1: ours is faster). Times are medians of n runs "
    "after one warm-up. Peak MiB: growth of the process's resident memory during a run (CPU), "
    "or of torch's allocated CUDA memory; the largest over the runs."
)


def render_text(header: list[tuple[str, str]], tables: dict[str, list[RowResult]]) -> str:
    lines = [f"{key}: {value}" for key, value in header]
    for device, rows in tables.items():
        lines += ["", f"== {device} ==", text_table(rows)]
    return "\n".join([*lines, "", LEGEND])


def render_markdown(header: list[tuple[str, str]], tables: dict[str, list[RowResult]]) -> str:
    lines = ["# napari-mobilesam benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in header]
    for device, rows in tables.items():
        lines += ["", f"## {device}", "", markdown_table(rows)]
    return "\n".join([*lines, "", LEGEND, ""])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="512² only, fewer repeats, "
        "skip ultralytics' 320-box and YOLO+SAM runs and the 64×64 grid",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="all",
        help="'all': the CPU, and CUDA when available (default)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides (default 512 1024 2048)")
    parser.add_argument("--repeats", type=int, help="timed runs of rows 1-3 (default 5, quick 2)")
    parser.add_argument(
        "--heavy-repeats",
        type=int,
        default=1,
        help="timed runs of rows 4-6, which take seconds to minutes (default 1)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help="MobileSAM weights in the official mobile_sam.pt format",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([512] if args.quick else list(DEFAULT_SIZES))
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if min(args.sizes) < 64:
        parser.error(f"--sizes must be at least 64 pixels, got {args.sizes}")
    if args.repeats < 1 or args.heavy_repeats < 1:
        parser.error("--repeats and --heavy-repeats must be at least 1")
    if not args.weights.is_file():
        parser.error(f"weights file not found: {args.weights} (pass --weights FILE)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.threads = torch.get_num_threads()
    import_ultralytics()
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    header = environment(args.threads)
    tables: dict[str, list[RowResult]] = {}
    with tempfile.TemporaryDirectory(prefix="napari-mobilesam-bench-") as tmp:
        folder = Path(tmp)
        detector_path = build_random_yolo(folder)
        for device in devices:
            tables[device.type.upper()] = run_device(device, args, folder, detector_path)
    print(render_text(header, tables))
    if args.markdown:
        args.markdown.write_text(render_markdown(header, tables))
        print(f"\nMarkdown written to {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
