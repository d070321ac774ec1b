"""The features table of a SegEvery layer: one row per object of each plane, or per linked
3-D object or track; the message a finished run shows; and the phase a plane's progress
is in."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_mobilesam._widgets._plane import Plane
from napari_mobilesam.stacks.planes import SegmentedPlane, link_planes

FEATURE_COLUMNS = ("label", "score", "area", "box_x0", "box_y0", "box_x1", "box_y1")
LINKED_COLUMNS = ("label", "first_slice", "last_slice", "volume", "mean_score")
#: The id column of a layer's features: napari maps label values to rows through it.
ID_COLUMN = "index"


def layer_features(table: pd.DataFrame) -> pd.DataFrame:
    """The features of the result layer: one id column (``"index"``, the label value
    napari maps rows by; its features table adds the row number), then the others."""
    return table.drop(columns="label") if "label" in table else table


def plane_features(segmented: SegmentedPlane, plane: Plane) -> pd.DataFrame:
    """One row per object of a segmented plane, with the plane's position (``axis_k``)."""
    ids = segmented.ids
    boxes = np.asarray(segmented.boxes, dtype=float).reshape(-1, 4)
    table = pd.DataFrame(
        {
            # napari maps feature rows to label values through the "index" column.
            "index": ids,
            "label": ids,
            "score": np.asarray(segmented.scores, dtype=float),
            "area": np.asarray(segmented.areas, dtype=np.int64),
            "box_x0": boxes[:, 0],
            "box_y0": boxes[:, 1],
            "box_x1": boxes[:, 2],
            "box_y1": boxes[:, 3],
        }
    )
    for axis, index in enumerate(plane.fixed):
        if index is not None:
            table[f"axis_{axis}"] = index
    return table


def link_features(
    labels: np.ndarray,
    features: pd.DataFrame,
    plane: Plane,
    axis: int,
    mode: str,
    check_cancelled: Callable[[], None],
    rules: dict | None = None,
    scale: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Link the objects of neighbouring slices along ``axis``, separately at each position
    of the other stack axes of ``plane``, with ``rules`` (``link_slices``' keywords) and the
    layer's ``scale`` as voxel size; return the labels and per-object features."""
    others = [a for a, index in enumerate(plane.fixed) if index is not None and a != axis]
    score_of = dict(zip(features["label"].tolist(), features["score"].tolist(), strict=True))
    out = np.zeros_like(labels)
    tables = []
    offset = 0
    for position in itertools.product(*(range(labels.shape[a]) for a in others)):
        index: list = [slice(None)] * labels.ndim
        for a, i in zip(others, position, strict=True):
            index[a] = i
        kept = [a for a in range(labels.ndim) if a not in others]
        view = np.moveaxis(labels[tuple(index)], kept.index(axis), 0)
        spacing = None
        if scale is not None:
            spacing = [scale[axis]] + [scale[a] for a in kept if a != axis]
        result = link_planes(
            view,
            mode,
            score_of,
            progress=lambda done, total: check_cancelled(),
            spacing=spacing,
            **(rules or {}),
        )
        linked = result.labels
        np.add(linked, offset, out=linked, where=linked > 0)
        np.moveaxis(out[tuple(index)], kept.index(axis), 0)[...] = linked
        table = result.table.copy()
        for column in ("label", "parent", "merged_into"):
            if column in table:
                table[column] = np.where(table[column] > 0, table[column] + offset, 0)
        for a, i in zip(others, position, strict=True):
            table[f"axis_{a}"] = i
        tables.append(table)
        offset += len(result.table)
    table = pd.concat(tables, ignore_index=True)
    # napari maps feature rows to label values through the "index" column.
    table.insert(0, "index", table["label"].to_numpy())
    return out, table


def outcome_message(
    name: str,
    found: int,
    notes: Sequence[str],
    decoder_note: str,
    skipped: Sequence[str],
    linked: str = "",
) -> str:
    """What a finished run says: objects found (or why none), notes, skipped planes."""
    skipped_note = f" Skipped {len(skipped)} plane(s): {'; '.join(skipped)}" if skipped else ""
    if not found:
        reason = f" {notes[0]}" if len(notes) == 1 else ""
        reason += f" {decoder_note}" if decoder_note else ""
        return f"SegEvery found no objects in {name!r}.{reason}{skipped_note}"
    message = f"SegEvery found {found} objects in {name!r}{linked}.{skipped_note}"
    # Notes of planes with objects, e.g. which decoder was used.
    others = (note for note in notes if not note.startswith("No objects"))
    return " ".join([message, *others, *([decoder_note] if decoder_note else [])])


def plane_phase(tiles: int, grid: bool, done: int, total: int) -> tuple[str, str, int, int]:
    """A plane's step from the core's ``progress(done, total)``: the phase's name, a line
    with its count, and ``(done, total)`` within the phase, whose total never changes.

    A tiled plane (``tiles`` > 0) first finds objects (one step per tile), then decodes
    (one step per tile used; the core gives that total as decoding starts); with the
    ``grid`` detector it only decodes. An untiled plane finds objects, then decodes them.

    Examples
    --------
    >>> plane_phase(36, False, 36, 73)[1], plane_phase(36, False, 40, 73)[1]
    ('finding objects, tile 36 of 36', 'decoding, tile 4 of 37')
    """
    if not tiles and not total:
        return "finding objects", "finding objects", 0, 1
    if not tiles:
        return "decoding", f"decoding, {done} of {total} objects", done, total
    if not grid and done <= tiles:
        return "finding objects", f"finding objects, tile {done} of {tiles}", done, tiles
    start = 0 if grid else tiles
    done, total = done - start, max(total - start, done - start, 1)
    return "decoding", f"decoding, tile {done} of {total}", done, total


def decoder_note(box_decoder: Any, decoder: str, labels: dict[str, str]) -> str:
    """What a run says about its box decoder: the fallback's note, or which one "auto"
    chose (by its name in the widget, ``labels``)."""
    if box_decoder is None:
        return ""
    if box_decoder.message or decoder != "auto":
        return box_decoder.message
    return f"Decoder: {labels.get(box_decoder.name, box_decoder.name)}."


def add_tracks_layer(
    viewer: Any, labels: np.ndarray, features: pd.DataFrame, layer: Any, name: str
) -> Any:
    """A Tracks layer ``name`` of linked T, Y, X ``labels`` (centroids, divisions in its
    graph), aligned with the Labels ``layer``; None when there is nothing to track."""
    if labels.ndim != 3:
        return None
    from napari_mobilesam.stacks.track_files import tracks_layer_data

    data, graph = tracks_layer_data(labels, features)
    if not len(data):
        return None
    return viewer.add_tracks(
        data,
        graph=graph,
        name=name,
        scale=layer.scale,
        translate=layer.translate,
    )
