"""A linked stack's tracks as napari Tracks data, Cell Tracking Challenge text and CSV.

napari-free: :func:`tracks_layer_data` gives the ``data`` and ``graph`` a napari ``Tracks``
layer takes; :func:`ctc_lines` the ``man_track.txt`` format of the Cell Tracking Challenge
(``id first last parent`` per line); :func:`write_track_files` writes both next to the
label images (``<stem>_tracks.csv`` and ``<stem>_man_track.txt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["ctc_lines", "tracks_layer_data", "write_track_files"]

_COLUMNS = ("label", "first_slice", "last_slice", "parent")


def _checked_table(table: Any):
    missing = [c for c in _COLUMNS if c not in getattr(table, "columns", ())]
    if missing:
        raise InvalidValueError(
            f"Expected link_slices' table (a DataFrame with columns {', '.join(_COLUMNS)}); "
            f"missing: {', '.join(missing)}"
        )
    return table


def tracks_layer_data(labels: np.ndarray, table: Any) -> tuple[np.ndarray, dict[int, list[int]]]:
    """The ``data`` (N, 4: track id, t, y, x; the objects' centroids) and ``graph``
    (daughter id -> [mother id]) of a napari Tracks layer for linked (T, Y, X) labels.

    Examples
    --------
    >>> labels = np.zeros((2, 5, 5), np.int32)
    >>> labels[0, 1:3, 1:3] = 1
    >>> labels[1, 2:4, 2:4] = 1
    >>> import pandas as pd
    >>> table = pd.DataFrame({"label": [1], "first_slice": [0], "last_slice": [1], "parent": [0]})
    >>> data, graph = tracks_layer_data(labels, table)
    >>> data.tolist(), graph
    ([[1.0, 0.0, 1.5, 1.5], [1.0, 1.0, 2.5, 2.5]], {})
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InvalidValueError(f"Expected (T, Y, X) labels; got shape {labels.shape}")
    table = _checked_table(table)
    rows = []
    for t, frame in enumerate(labels):
        ids = np.unique(frame)
        ids = ids[ids > 0]
        if len(ids):
            centres = np.asarray(ndimage.center_of_mass(frame > 0, frame, ids), np.float64)
            rows.append(np.column_stack([ids, np.full(len(ids), t), centres.reshape(-1, 2)]))
    data = np.concatenate(rows) if rows else np.zeros((0, 4))
    data = data[np.lexsort((data[:, 1], data[:, 0]))] if len(data) else data
    graph = {
        int(label): [int(parent)]
        for label, parent in zip(table["label"], table["parent"], strict=True)
        if parent > 0
    }
    return data.astype(np.float64), graph


def ctc_lines(table: Any) -> list[str]:
    """``man_track.txt`` lines: ``id first_frame last_frame parent`` (0: no parent).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame(
    ...     {"label": [1, 2], "first_slice": [0, 3], "last_slice": [2, 5], "parent": [0, 1]}
    ... )
    >>> ctc_lines(table)
    ['1 0 2 0', '2 3 5 1']
    """
    table = _checked_table(table)
    return [
        f"{int(r.label)} {int(r.first_slice)} {int(r.last_slice)} {int(r.parent)}"
        for r in table.itertuples()
        if r.first_slice >= 0
    ]


def write_track_files(table: Any, folder: str | Path, stem: str) -> list[Path]:
    """Write ``<stem>_tracks.csv`` (the whole table) and ``<stem>_man_track.txt`` (Cell
    Tracking Challenge) into ``folder``; returns the two paths."""
    table = _checked_table(table)
    folder = Path(folder)
    csv_path = folder / f"{stem}_tracks.csv"
    ctc_path = folder / f"{stem}_man_track.txt"
    table.to_csv(csv_path, index=False)
    lines = ctc_lines(table)
    ctc_path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return [csv_path, ctc_path]
