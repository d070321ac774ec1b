"""Fine-tuning of the mask decoders on annotated images: :func:`train_decoder`.

The image encoder is frozen: each training and validation image (each tile of a large
one) is encoded once into an embedding store, and every epoch streams the embeddings from
there. What a run holds in memory: the label images, one embedding and one batch of
prompts with their activations, and the decoder (about 4 M parameters) with its AdamW
state.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.segany.embedding_store import EmbeddingStore
from napari_mobilesam.training.annotations import AnnotatedImage
from napari_mobilesam.training.decoder_data import encode_samples, load_embedding
from napari_mobilesam.training.decoder_files import (
    MOBILE_SAM,
    check_output,
    load_base,
    save_decoder,
    sidecar_path,
)
from napari_mobilesam.training.decoder_prompts import MARGIN
from napari_mobilesam.training.decoder_run import RunRecord, encoder_predictor
from napari_mobilesam.training.decoder_steps import DecoderSteps
from napari_mobilesam.training.reports import (
    EpochCallback,
    EpochReport,
    StopCheck,
    TrainingResult,
)

__all__ = ["DEFAULT_EPOCHS", "DEFAULT_LEARNING_RATE", "WARMUP_STEPS", "train_decoder"]

DEFAULT_EPOCHS = 20
#: AdamW's learning rate after the warm-up (measured: README, "The mask decoders").
DEFAULT_LEARNING_RATE = 3e-4
#: Steps over which the learning rate rises linearly from ``lr / WARMUP_STEPS`` to ``lr``.
WARMUP_STEPS = 20
WEIGHT_DECAY = 0.01
#: Objects of one image decoded together in a step.
PROMPTS_PER_IMAGE = 8


def train_decoder(
    train: Sequence[AnnotatedImage],
    validation: Sequence[AnnotatedImage],
    output: str | os.PathLike,
    *,
    base: str | os.PathLike,
    image_encoder: str | os.PathLike | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
    device: str | None = None,
    resume: bool = False,
    seed: int = 0,
    store: str | os.PathLike | None = None,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TrainingResult:
    """Fine-tune a mask decoder (and its prompt encoder) on annotated images.

    Two decoders can be fine-tuned, each saved in the format of the file it started from:
    MobileSAMv2's prompt-guided box decoder (SegEvery's, ``Prompt_guided_Mask_Decoder.pt``
    format; load the result with ``decoder=PATH`` / ``--decoder PATH``), trained on box
    prompts; and the prompt encoder + mask decoder of a ``mobile_sam.pt`` (SegAny's
    clicks; load with ``build_mobile_sam(PATH)`` or ``NAPARI_MOBILESAM_WEIGHTS``), trained
    on boxes, points and corrections, its image encoder copied unchanged.

    Parameters
    ----------
    train, validation : sequence of AnnotatedImage
        Training and held-out images (see
        :func:`~napari_mobilesam.training.annotations.split_by_image`). Without validation
        images the figures are measured on the training images (the sidecar says so).
    output : str or path
        The trained weights; ``OUTPUT.json`` beside it describes them. Written whenever an
        epoch beats the best so far (before training: the base weights, converted).
    base : str or path
        A ``Prompt_guided_Mask_Decoder.pt``-format file or a ``mobile_sam.pt``-format
        file; the kind is detected from the file.
    image_encoder : str or path, optional
        The ``mobile_sam.pt`` whose image encoder makes the embeddings, for a box-decoder
        base (default: the package's usual weights lookup). A ``mobile_sam.pt`` base uses
        its own encoder.
    epochs : int, optional
        Passes over every object of the training images (default
        :data:`DEFAULT_EPOCHS`); with ``resume``, the total including the epochs already
        done.
    learning_rate : float, optional
        AdamW's learning rate (default :data:`DEFAULT_LEARNING_RATE`), reached after a
        linear warm-up of :data:`WARMUP_STEPS` steps.
    device : str, optional
        Where to train ("cpu", "cuda", ...); None picks as the predictor does.
    resume : bool
        Continue the stopped or finished run of ``output`` from its last finished epoch.
    seed : int
        Seeds every random choice (order, objects, jitter, points).
    store : str or path, optional
        The embedding store (default: ``embeddings.zarr`` in the work folder
        ``OUTPUT_STEM.work`` beside ``output``, which also keeps the resume checkpoint).
    on_epoch : callable, optional
        Called with the :class:`EpochReport` of epoch 0 (the base weights' figures) and
        of each finished epoch.
    should_stop : callable, optional
        Polled between batches; True stops the run, keeping the best weights so far.

    Returns
    -------
    TrainingResult
        ``history[0]`` is epoch 0 (before training). Metrics: ``"val/box_mIoU"``,
        ``"val/point_mIoU"``, ``"val/objects"`` and, after epoch 0, ``"loss"``. The score
        is the box mIoU for the box decoder, the mean of both for ``mobile_sam.pt``.

    Raises
    ------
    napari_mobilesam.WeightsError
        ``base`` or ``image_encoder`` cannot be read or is not of a supported kind.
    InvalidValueError
        No training images, no objects, bad settings, or nothing to resume.

    Examples
    --------
    >>> from napari_mobilesam.evaluation import synthetic_nuclei
    >>> from napari_mobilesam.training import annotated_image, split_by_image
    >>> items = [annotated_image(*synthetic_nuclei(seed=i), f"im{i}") for i in range(8)]
    >>> train, val = split_by_image(items)
    >>> result = train_decoder(train, val, "nuclei_decoder.pt",
    ...                        base="Prompt_guided_Mask_Decoder.pt")  # doctest: +SKIP
    >>> result.best.metrics["val/box_mIoU"]  # doctest: +SKIP
    0.83
    """
    train, validation = _checked_items(train, "train"), _checked_items(validation, "validation")
    epochs, learning_rate = _checked_settings(train, epochs, learning_rate)
    output = Path(output).expanduser()
    weights = load_base(base)
    check_output(output, weights)
    work = output.parent / f"{output.stem}.work"
    if resume and not (work / "checkpoint.pt").is_file():
        raise InvalidValueError(
            f"Nothing to resume for {output}: there is no checkpoint at "
            f"{work / 'checkpoint.pt'}. Run without resume to start."
        )
    work.mkdir(parents=True, exist_ok=True)
    embedding_store = EmbeddingStore(
        Path(store) if store is not None else work / "embeddings.zarr"
    )

    predictor, encoder_path = encoder_predictor(weights, image_encoder, device)
    train_samples = encode_samples(train, predictor, embedding_store, "training")
    val_samples = encode_samples(validation, predictor, embedding_store, "validation")
    run_device = predictor.device
    del predictor  # the encoder is not needed any more

    record = RunRecord(
        output=output,
        checkpoint=work / "checkpoint.pt",
        weights=weights,
        settings={
            "epochs": epochs,
            "learning_rate": learning_rate,
            "warmup_steps": WARMUP_STEPS,
            "weight_decay": WEIGHT_DECAY,
            "loss": "cross-entropy + dice inside each box grown by half its size + "
            f"{MARGIN:g} px, + MSE of the predicted IoU",
            "seed": seed,
            "prompts_per_image": PROMPTS_PER_IMAGE,
            "device": str(run_device),
            "image_encoder": encoder_path,
            "store": str(embedding_store.path),
        },
        train=train,
        validation=validation,
    )
    decoder = copy.deepcopy(weights.decoder).to(run_device)
    optimizer = torch.optim.AdamW(
        decoder.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY
    )
    generator = torch.Generator().manual_seed(seed)
    steps = DecoderSteps(decoder, weights.kind, generator, PROMPTS_PER_IMAGE)
    val_samples = val_samples or train_samples
    if resume:
        record.resume(decoder, optimizer, generator)
    else:
        _before_training(steps, optimizer, val_samples, embedding_store, record, on_epoch)
    return _epochs(
        steps,
        optimizer,
        train_samples,
        val_samples,
        embedding_store,
        record,
        epochs,
        on_epoch,
        should_stop,
    )


def _checked_settings(
    train: list[AnnotatedImage], epochs: int | None, learning_rate: float | None
) -> tuple[int, float]:
    """The epochs and learning rate to use, after checking them and the training images."""
    if not train:
        raise InvalidValueError("train_decoder needs at least one training image.")
    epochs = DEFAULT_EPOCHS if epochs is None else int(epochs)
    learning_rate = DEFAULT_LEARNING_RATE if learning_rate is None else float(learning_rate)
    if epochs < 1 or not learning_rate > 0:
        raise InvalidValueError(
            f"epochs must be at least 1 and learning_rate above 0, got {epochs} and "
            f"{learning_rate}"
        )
    if not any(item.n_objects for item in train):
        raise InvalidValueError(
            f"None of the {len(train)} training images has an object in its label image "
            f"(e.g. {train[0].name}): fine-tuning needs labelled objects (non-zero ids)."
        )
    return epochs, learning_rate


def _checked_items(items: Sequence[AnnotatedImage], role: str) -> list[AnnotatedImage]:
    items = list(items)
    for item in items:
        if not isinstance(item, AnnotatedImage):
            raise InvalidTypeError(
                f"{role} must hold AnnotatedImage objects (see "
                f"napari_mobilesam.training.annotated_image), got {type(item).__name__}"
            )
    return items


def _score(kind: str, metrics: dict[str, float]) -> float:
    if kind == MOBILE_SAM:
        return (metrics["val/box_mIoU"] + metrics["val/point_mIoU"]) / 2
    return metrics["val/box_mIoU"]


def _warm_up(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Set the learning rate of the next step: rising linearly over the first
    :data:`WARMUP_STEPS` steps (counted in the optimizer's state, so a resumed run goes on
    where it stopped), then ``learning_rate``."""
    state = next(iter(optimizer.state.values()), None)
    done = int(state["step"]) if state else 0
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * min(1.0, (done + 1) / WARMUP_STEPS)


def _before_training(
    steps: DecoderSteps,
    optimizer: torch.optim.Optimizer,
    val_samples: list,
    store: EmbeddingStore,
    record: RunRecord,
    on_epoch: EpochCallback | None,
) -> None:
    """Epoch 0: the base weights' figures; they are the best so far and are saved."""
    start = time.perf_counter()
    steps.decoder.eval()
    metrics = steps.validate(val_samples, store)
    epochs = record.settings["epochs"]
    score = _score(steps.kind, metrics)
    report = EpochReport(0, epochs, metrics, score, True, time.perf_counter() - start)
    save_decoder(steps.decoder, record.weights, record.output)
    record.add(report, steps.decoder, optimizer, steps.generator)
    if on_epoch is not None:
        on_epoch(report)


def _epochs(
    steps: DecoderSteps,
    optimizer: torch.optim.Optimizer,
    train_samples: list,
    val_samples: list,
    store: EmbeddingStore,
    record: RunRecord,
    epochs: int,
    on_epoch: EpochCallback | None,
    should_stop: StopCheck | None,
) -> TrainingResult:
    """Train from the epoch after the last recorded one to ``epochs``."""
    device = next(steps.decoder.parameters()).device
    stopped = False
    for epoch in range(record.last_epoch + 1, epochs + 1):
        start = time.perf_counter()
        steps.decoder.train()
        losses = []
        for index, rows in steps.batches(train_samples):
            if should_stop is not None and should_stop():
                stopped = True
                break
            sample = train_samples[index]
            loss = steps.loss(sample, load_embedding(store, sample).to(device), rows)
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _warm_up(optimizer, record.settings["learning_rate"])
            optimizer.step()
            losses.append(float(loss.detach()))
        if stopped:
            break
        steps.decoder.eval()
        metrics = {"loss": float(np.mean(losses)), **steps.validate(val_samples, store)}
        score = _score(steps.kind, metrics)
        best = score > record.best_score
        if best:
            save_decoder(steps.decoder, record.weights, record.output)
        report = EpochReport(epoch, epochs, metrics, score, best, time.perf_counter() - start)
        record.add(report, steps.decoder, optimizer, steps.generator)
        if on_epoch is not None:
            on_epoch(report)
    record.finish(stopped)
    return TrainingResult(record.output, sidecar_path(record.output), record.history, stopped)
