"""The figures of a matching: counts per IoU threshold and what follows from them.

Definitions follow Cellpose (``cellpose.metrics.average_precision``): at threshold ``t`` a
true positive is a matched pair with IoU >= t, ``FP = n_pred - TP``, ``FN = n_true - TP``,
and ``AP = TP / (TP + FP + FN)``. micro-sam's mean segmentation accuracy (mSA) is the mean
of that AP over the thresholds 0.5, 0.55, ..., 0.95; SA50 and SA75 are AP at 0.5 and 0.75.
A ratio whose denominator is 0 is nan: with no true and no predicted object, AP, precision,
recall and F1 are nan, as in Cellpose; with truth but no prediction AP is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["IOU_THRESHOLDS", "MatchCounts", "ObjectMatching", "PlaneMatching"]

#: 0.5, 0.55, ..., 0.95: the thresholds of mSA (and of COCO's AP).
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
COLUMNS = ("threshold", "tp", "fp", "fn", "precision", "recall", "f1", "ap")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


@dataclass(frozen=True)
class MatchCounts:
    """True positives, false positives and false negatives per IoU threshold.

    Attributes
    ----------
    thresholds : numpy.ndarray
        ``(T,)`` IoU thresholds.
    tp, fp, fn : numpy.ndarray
        ``(T,)`` int64 counts of matched pairs with IoU >= threshold, of predicted objects
        left unmatched, and of true objects left unmatched.
    n_true, n_pred : int
        Objects in the ground truth and in the prediction.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_true: int
    n_pred: int

    @property
    def precision(self) -> np.ndarray:
        """TP / (TP + FP) per threshold (nan without predicted objects)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        """TP / (TP + FN) per threshold (nan without true objects)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> np.ndarray:
        """2 TP / (2 TP + FP + FN) per threshold."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def ap(self) -> np.ndarray:
        """Cellpose's average precision TP / (TP + FP + FN) per threshold."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def msa(self) -> float:
        """Mean of :attr:`ap` over the thresholds 0.5:0.95 that were evaluated (micro-sam's
        mean segmentation accuracy; nan if none of them was)."""
        wanted = np.isin(np.round(self.thresholds, 4), np.round(IOU_THRESHOLDS, 4))
        return float(np.mean(self.ap[wanted])) if wanted.any() else float("nan")

    @property
    def ap50(self) -> float:
        """AP at IoU 0.5 (SA50); nan if 0.5 was not evaluated."""
        return self.ap_at(0.5)

    @property
    def ap75(self) -> float:
        """AP at IoU 0.75 (SA75); nan if 0.75 was not evaluated."""
        return self.ap_at(0.75)

    def ap_at(self, threshold: float) -> float:
        """AP at ``threshold``; nan if it was not evaluated."""
        found = np.flatnonzero(np.isclose(self.thresholds, threshold))
        return float(self.ap[found[0]]) if found.size else float("nan")

    def as_rows(self) -> list[dict[str, Any]]:
        """One dict per threshold with the keys ``threshold, tp, fp, fn, precision, recall,
        f1, ap`` (plain Python numbers, ready for :class:`csv.DictWriter`)."""
        columns = [getattr(self, key if key != "threshold" else "thresholds") for key in COLUMNS]
        return [
            {key: value.item() for key, value in zip(COLUMNS, row, strict=True)}
            for row in zip(*columns, strict=True)
        ]

    def to_dataframe(self) -> Any:
        """The rows of :meth:`as_rows` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.as_rows(), columns=list(COLUMNS))

    def summary(self) -> str:
        """The table of figures per threshold, and mSA, as plain text."""
        lines = [
            f"{self.n_true} true objects, {self.n_pred} predicted",
            f"{'IoU':>5} {'TP':>6} {'FP':>6} {'FN':>6} {'prec':>6} {'recall':>6} "
            f"{'F1':>6} {'AP':>6}",
        ]
        for row in self.as_rows():
            lines.append(
                f"{row['threshold']:>5.2f} {row['tp']:>6} {row['fp']:>6} {row['fn']:>6} "
                + " ".join(f"{row[key]:>6.3f}" for key in ("precision", "recall", "f1", "ap"))
            )
        lines.append(f"mSA (mean AP 0.5:0.95) {self.msa:.3f}")
        return "\n".join(lines)

    @classmethod
    def pooled(cls, parts: Sequence[MatchCounts]) -> MatchCounts:
        """The counts of several images (or planes) summed: figures over all their objects.

        All parts must have been evaluated at the same thresholds.
        """
        if not parts:
            raise InvalidValueError("pooled needs at least one MatchCounts")
        thresholds = parts[0].thresholds
        if any(not np.allclose(part.thresholds, thresholds) for part in parts):
            raise InvalidValueError("pooled needs counts evaluated at the same thresholds")
        return MatchCounts(
            thresholds=thresholds,
            tp=np.sum([part.tp for part in parts], axis=0),
            fp=np.sum([part.fp for part in parts], axis=0),
            fn=np.sum([part.fn for part in parts], axis=0),
            n_true=sum(part.n_true for part in parts),
            n_pred=sum(part.n_pred for part in parts),
        )

    def counts(self) -> MatchCounts:
        """Just the counts (drops the per-object fields of a subclass)."""
        return MatchCounts(self.thresholds, self.tp, self.fp, self.fn, self.n_true, self.n_pred)


@dataclass(frozen=True, kw_only=True)
class ObjectMatching(MatchCounts):
    """The counts, and which object matched which.

    Attributes
    ----------
    true_ids, pred_ids : numpy.ndarray
        Ids of the true and of the predicted objects, ascending.
    true_best_pred, true_best_iou : numpy.ndarray
        For each true object, the predicted object it overlaps best (0 if none) and their
        IoU (0.0 if none).
    pred_best_true, pred_best_iou : numpy.ndarray
        The same for each predicted object.
    matches : tuple of numpy.ndarray
        Per threshold, a ``(TP, 2)`` array of the matched ``(true id, predicted id)``.
    """

    true_ids: np.ndarray
    true_best_pred: np.ndarray
    true_best_iou: np.ndarray
    pred_ids: np.ndarray
    pred_best_true: np.ndarray
    pred_best_iou: np.ndarray
    matches: tuple[np.ndarray, ...]

    def matches_at(self, threshold: float) -> np.ndarray:
        """The ``(TP, 2)`` matched ``(true id, predicted id)`` at an evaluated threshold."""
        found = np.flatnonzero(np.isclose(self.thresholds, threshold))
        if not found.size:
            raise InvalidValueError(
                f"threshold {threshold} was not evaluated; evaluated: "
                f"{', '.join(f'{t:g}' for t in self.thresholds)}"
            )
        return self.matches[found[0]]


@dataclass(frozen=True)
class PlaneMatching:
    """A stack evaluated plane by plane along ``axis``: each plane's matching, and the
    total (counts summed over the planes)."""

    axis: int
    planes: tuple[ObjectMatching, ...]
    total: MatchCounts

    def summary(self) -> str:
        """The total's table, then mSA of each plane."""
        lines = [f"{len(self.planes)} planes along axis {self.axis}, total:", self.total.summary()]
        lines.append("mSA per plane: " + " ".join(f"{p.msa:.3f}" for p in self.planes))
        return "\n".join(lines)
