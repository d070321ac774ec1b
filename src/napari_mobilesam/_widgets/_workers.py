"""Thread workers that stop when napari closes.

When its window closes, napari calls ``quit()`` on every worker it knows of (those made by
``create_worker`` while a viewer exists) and then no longer delivers their results. A
:class:`StoppableWorker` also calls its ``on_quit``: the widgets cancel the run there, so
that the thread ends at its next step instead of running on behind a closed window, and
finish the run quietly on the worker's ``finished`` signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, create_worker


class StoppableWorker(FunctionWorker):
    """A FunctionWorker whose ``quit()`` also calls :attr:`on_quit` (on the GUI thread)."""

    on_quit: Callable[[], Any] | None = None

    def quit(self) -> None:
        super().quit()
        if self.on_quit is not None:
            self.on_quit()


def stoppable_worker(
    func: Callable, *args: Any, on_quit: Callable[[], Any], **kwargs: Any
) -> StoppableWorker:
    """``create_worker(func, *args, **kwargs)`` as a :class:`StoppableWorker` that calls
    ``on_quit`` when napari quits it.

    Examples
    --------
    >>> worker = stoppable_worker(run, on_quit=job.cancel, _ignore_errors=True)  # doctest: +SKIP
    """
    worker = create_worker(func, *args, _worker_class=StoppableWorker, **kwargs)
    worker.on_quit = on_quit
    return worker
