"""What SegEvery returns: :class:`SegEveryResult`, and the empty result with its reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SegEveryResult", "empty_result", "join_notes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegEveryResult:
    """The objects found in an image.

    Attributes
    ----------
    labels : (H, W) int32
        0 is background, objects are 1..N in the order of ``boxes``.
    boxes : (N, 4) float32
        x0, y0, x1, y1 of the box that prompted each object (grid mode: the bounding box
        of its mask).
    scores : (N,) float32
        Predicted IoU of each object's mask.
    areas : (N,) int64
        Pixels of each object in ``labels`` (after overlaps are resolved).
    message : str
        A note for the user: why nothing was found, or that the boxes were decoded with
        ``mobile_sam.pt``'s decoder because the prompt-guided one is not available;
        empty otherwise.
    timings : dict
        Seconds spent in each stage: "discovery", "embedding", "decoding".
    decoder : str
        The decoder of the boxes: "prompt_guided", "mobile_sam" or a file path.
    tiles_encoded : int
        Image embeddings computed (1 untiled; one per tile and coarse view when tiled).
    """

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    decoder: str = "mobile_sam"
    tiles_encoded: int = 1

    @property
    def n_objects(self) -> int:
        return len(self.scores)


def empty_result(
    shape: tuple[int, int], message: str, timings: dict, decoder: str = "mobile_sam"
) -> SegEveryResult:
    """A result without objects; ``message`` says why (and is logged)."""
    logger.info(message)
    return SegEveryResult(
        labels=np.zeros(shape, dtype=np.int32),
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        areas=np.zeros(0, np.int64),
        message=message,
        timings=timings,
        decoder=decoder,
    )


def join_notes(*notes: str) -> str:
    """The non-empty notes, joined by spaces."""
    return " ".join(note for note in notes if note)
