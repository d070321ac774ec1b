"""The features table of a Labels layer follows the curate widget's edits, undo included.

After an edit, rows of objects that left the layer are dropped, and the features the table
holds (area, solidity, eccentricity, mean intensity) are measured again for the objects the
edit changed or made. napari's undo restores pixels only: :class:`FeatureHistory` watches
the layer's ``set_data`` event and, when the pixels of an edit are back to their earlier
values (Ctrl+Z) or forward again (Ctrl+Shift+Z), puts back the table that went with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Labels

from napari_mobilesam.curation.features import object_features

_MEASURED = ("area", "solidity", "eccentricity", "mean_intensity")
_PROBE = 64  # pixels of an edit read to tell whether it is undone


def _id_column(table: pd.DataFrame) -> str | None:
    return next((c for c in ("label", "index") if c in table.columns), None)


def followed_table(
    layer: Labels, changed: list[int], image: np.ndarray | None = None
) -> pd.DataFrame:
    """``layer.features`` after an edit that touched objects ``changed``: rows of objects no
    longer in the layer dropped, measured columns of ``changed`` objects measured again
    (2-D layers), rows added for new objects."""
    table = layer.features
    column = _id_column(table)
    if column is None or (table.empty and not changed):
        return table
    ids = np.asarray(table[column]).astype(np.int64)
    candidates = sorted(set(ids.tolist()) | set(changed))
    present = np.unique(np.asarray(layer.data)[np.isin(layer.data, candidates)]).tolist()
    table = table[np.isin(ids, present)].copy()
    for label in changed:
        if label in present and label not in set(table[column].astype(int)):
            row = {c: np.nan for c in table.columns} | {"label": label, "index": label}
            table = pd.concat([table, pd.DataFrame([row])[table.columns]], ignore_index=True)
    measured = [c for c in _MEASURED if c in table.columns]
    if measured and layer.ndim == 2 and changed:
        data = np.asarray(layer.data)
        only = np.where(np.isin(data, changed), data, 0)
        values = object_features(only, image if "mean_intensity" in measured else None)
        rows = {int(i): k for k, i in enumerate(values["label"])}
        for where, label in enumerate(table[column].astype(int).tolist()):
            if label in rows:
                for c in measured:
                    if c in values:
                        table.iloc[where, table.columns.get_loc(c)] = values[c][rows[label]]
    return table.sort_values(column).reset_index(drop=True)


@dataclass
class _Edit:
    indices: tuple[np.ndarray, ...]
    before: np.ndarray
    after: np.ndarray
    table_before: pd.DataFrame
    table_after: pd.DataFrame
    undone: bool = False


class FeatureHistory:
    """Keeps a layer's features table with its pixels through undo and redo of our edits."""

    def __init__(self) -> None:
        self._edits: dict[int, list[_Edit]] = {}
        self._layers: dict[int, Labels] = {}

    def record(self, layer: Labels, indices: tuple, before: Any, after: Any, table: Any) -> None:
        """Remember an edit just written (``table``: the features before it)."""
        probe = tuple(np.asarray(axis)[:_PROBE] for axis in indices)
        edits = self._edits.setdefault(id(layer), [])
        edits[:] = [edit for edit in edits if not edit.undone]  # a new edit ends redo
        edits.append(
            _Edit(
                probe,
                np.asarray(before)[:_PROBE],
                np.asarray(after)[:_PROBE],
                table,
                layer.features,
            )
        )
        if id(layer) not in self._layers:
            self._layers[id(layer)] = layer
            layer.events.set_data.connect(self._on_set_data)

    def _on_set_data(self, event: Any) -> None:
        layer = event.source
        edits = self._edits.get(id(layer), [])
        done = [edit for edit in edits if not edit.undone]
        undone = [edit for edit in edits if edit.undone]
        if done and np.array_equal(layer.data[done[-1].indices], done[-1].before):
            done[-1].undone = True
            layer.features = done[-1].table_before
        elif undone and np.array_equal(layer.data[undone[0].indices], undone[0].after):
            undone[0].undone = False
            layer.features = undone[0].table_after
