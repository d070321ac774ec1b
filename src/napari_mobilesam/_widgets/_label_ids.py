"""The next free id of an output labels layer, without scanning the layer on every write."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.layers import Labels


class NextLabelId:
    """Hands out new ids for one labels layer at a time.

    The layer is scanned for its largest id once, and again only after it was painted or
    its data replaced by something else than :meth:`writing` (its ``paint`` and ``data``
    events). Ids written inside :meth:`writing` are recorded with :meth:`used`, so a
    thousand accepts on a large layer scan it once.

    Examples
    --------
    >>> ids = NextLabelId()  # doctest: +SKIP
    >>> label = ids.next_id(layer)  # doctest: +SKIP
    >>> with ids.writing(layer):  # doctest: +SKIP
    ...     layer.data_setitem(indices, label)
    >>> ids.used(layer, label)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._layer: Labels | None = None
        self._next: int | None = None
        self._own_write = False

    def next_id(self, layer: Labels, region: Any = None) -> int:
        """The smallest id above every id of ``layer``.

        ``region`` (values of the layer about to be written) is checked too, so an id
        restored there by an undo is never reused.
        """
        self._track(layer)
        if self._next is None:
            self._next = int(layer.data.max()) + 1
        if region is not None and np.size(region):
            self._next = max(self._next, int(np.max(region)) + 1)
        return self._next

    def used(self, layer: Labels, last: int) -> None:
        """Record that ids up to ``last`` were written into ``layer``."""
        if layer is self._layer and self._next is not None:
            self._next = max(self._next, int(last) + 1)

    @contextmanager
    def writing(self, layer: Labels) -> Iterator[None]:
        """Writes into ``layer`` inside this block do not call for a new scan."""
        self._track(layer)
        self._own_write = True
        try:
            yield
        finally:
            self._own_write = False

    def _track(self, layer: Labels) -> None:
        if layer is self._layer:
            return
        if self._layer is not None:
            self._layer.events.paint.disconnect(self._on_changed)
            self._layer.events.data.disconnect(self._on_changed)
        self._layer, self._next = layer, None
        layer.events.paint.connect(self._on_changed)
        layer.events.data.connect(self._on_changed)

    def _on_changed(self, _event: Any = None) -> None:
        if not self._own_write:
            self._next = None
