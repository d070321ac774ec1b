"""The walks of one :func:`~napari_mobilesam.stacks.propagation.propagate_mask` call.

The annotated slices are segmented first; the gaps between them are filled from both ends;
then two walks go outwards, each slice prompted by the projection of its neighbour's mask,
until the stopping rule (see :mod:`napari_mobilesam.stacks.propagation`) ends them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segany.prompts import PromptSet, predict_object
from napari_mobilesam.stacks.projection import mask_iou, project_prompt
from napari_mobilesam.stacks.slices import SliceEmbeddings, StackSlices

__all__ = ["PropagationWalks"]


class PropagationWalks:
    """The walks of one :func:`propagate_mask` call."""

    def __init__(
        self,
        predictor: Any,
        slices: StackSlices,
        encoder: SliceEmbeddings,
        *,
        projection: str,
        iou_threshold: float,
        min_score: float | None,
        box_extension: float,
        n_points: int,
        progress: ProgressCallback | None,
        total: int,
    ) -> None:
        self.predictor = predictor
        self.slices = slices
        self.encoder = encoder
        self.projection = projection
        self.iou_threshold = iou_threshold
        self.min_score = min_score
        self.box_extension = box_extension
        self.n_points = n_points
        self.progress = progress
        self.total = total
        self.masks = np.zeros((slices.n, *slices.shape_yx), bool)
        self.logits: dict[int, np.ndarray | None] = {}
        self.visited: list[int] = []
        self.scores: dict[int, float] = {}
        self.ious: dict[int, float] = {}
        self.stops: dict[str, str] = {}
        self.decode_seconds = 0.0
        self.done = 0

    def run(self, seeds: dict[int, Mapping[str, Any]], lo: int, hi: int) -> None:
        annotated = sorted(seeds)
        self.encoder.request(annotated)  # no-op without prefetch
        for z in annotated:
            self._segment_seed(z, seeds[z])
        # Between annotated slices: from both ends, meeting in the middle.
        for a, b in itertools.pairwise(annotated):
            self._fill_between(a, b)
        self._walk(annotated[0], -1, lo, "lower")
        self._walk(annotated[-1], +1, hi, "upper")

    def _tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def _segment_seed(self, z: int, prompt: Mapping[str, Any]) -> None:
        if "mask" in prompt:
            self.masks[z] = prompt["mask"]
            self.logits[z] = None
            self._tick()
            return
        if not self.encoder.activate(z):
            raise InvalidValueError(f"slice {z} is blank (no contrast): it cannot be segmented")
        start = time.perf_counter()
        masks, scores, low_res = predict_object(self.predictor, PromptSet.from_prompt(prompt))
        self.decode_seconds += time.perf_counter() - start
        best = int(np.argmax(scores))
        if not masks[best].any():
            raise InvalidValueError(
                f"the prompts on slice {z} gave an empty mask: nothing to propagate; "
                "add or move prompts on that slice"
            )
        self.masks[z] = masks[best]
        self.logits[z] = low_res[best : best + 1]
        self.scores[z] = float(scores[best])
        self._tick()

    def _predict_from(self, z: int, source: np.ndarray, logits: np.ndarray | None):
        """Decode slice ``z`` prompted by ``source`` (a mask of a neighbouring slice)."""
        self.visited.append(z)
        if not self.encoder.activate(z):
            return np.zeros(self.slices.shape_yx, bool), None, float("nan")
        kwargs = project_prompt(
            source,
            logits,
            self.projection,
            input_size=self.predictor.input_size,
            box_extension=self.box_extension,
            n_points=self.n_points,
        )
        start = time.perf_counter()
        masks, scores, low_res = self.predictor.predict(**kwargs)
        self.decode_seconds += time.perf_counter() - start
        best = int(np.argmax(scores))
        self.scores[z] = float(scores[best])
        return masks[best], low_res[best : best + 1], float(scores[best])

    def _fill_between(self, a: int, b: int) -> None:
        gap = b - a - 1
        if gap <= 0:
            return
        half = gap // 2
        order: list[tuple[int, int]] = []  # (slice, the neighbour it is prompted from)
        for k in range(1, half + 1):
            order += [(a + k, a + k - 1), (b - k, b - k + 1)]
        self.encoder.request([z for z, _ in order] + ([a + half + 1] if gap % 2 else []))
        source = {a: a, b: b}  # the last non-empty slice of each walk
        for z, prev in order:
            walk = a if prev < z else b
            src = source[walk]
            mask, logits, _ = self._predict_from(z, self.masks[src], self.logits[src])
            self.ious[z] = mask_iou(mask, self.masks[src])
            self.masks[z], self.logits[z] = mask, logits
            if mask.any():
                source[walk] = z
            self._tick()
        if gap % 2:
            z = a + half + 1
            union = self.masks[source[a]] | self.masks[source[b]]
            mask, logits, _ = self._predict_from(z, union, None)
            self.ious[z] = mask_iou(mask, union)
            self.masks[z], self.logits[z] = mask, logits
            self._tick()

    def _walk(self, start: int, step: int, bound: int, name: str) -> None:
        prev = start
        z = start + step
        if not self.masks[start].any():
            self.stops[name] = f"empty mask at annotated slice {start}"
            return
        while (z >= bound) if step < 0 else (z <= bound):
            ahead = [z + step * k for k in range(self.encoder.prefetch + 1)]
            self.encoder.request([y for y in ahead if (y >= bound if step < 0 else y <= bound)])
            mask, logits, score = self._predict_from(z, self.masks[prev], self.logits[prev])
            iou = mask_iou(mask, self.masks[prev])
            self.ious[z] = iou
            reason = None
            if not mask.any():
                reason = f"empty mask at slice {z}"
            elif iou < self.iou_threshold:
                reason = f"IoU {iou:.2f} < {self.iou_threshold:g} at slice {z}"
            elif self.min_score is not None and score < self.min_score:
                reason = f"predicted IoU {score:.2f} < {self.min_score:g} at slice {z}"
            self._tick()
            if reason is not None:
                self.stops[name] = reason
                return
            self.masks[z], self.logits[z] = mask, logits
            prev = z
            z += step
        end = 0 if step < 0 else self.slices.n - 1
        self.stops[name] = f"reached slice {end}" if bound == end else f"bound {bound}"
