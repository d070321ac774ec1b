"""Thread workers that stop when napari closes.

When its window closes, napari calls ``quit()`` on every worker it knows of (those made by
``create_worker`` while a viewer exists) and then no longer delivers their results. A
:class:`StoppableWorker` also calls its ``on_quit``: the widgets cancel the run there, so
that the thread ends at its next step instead of running on behind a closed window, and
finish the run quietly on the worker's ``finished`` signal.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker


class _Stoppable:
    """``quit()`` also calls :attr:`on_quit` (napari calls it on the GUI thread)."""

    on_quit: Callable[[], Any] | None = None

    def quit(self) -> None:
        super().quit()  # type: ignore[misc]
        if self.on_quit is not None:
            self.on_quit()


class StoppableWorker(_Stoppable, FunctionWorker):
    """A FunctionWorker that calls ``on_quit`` when napari quits it."""


class StoppableGeneratorWorker(_Stoppable, GeneratorWorker):
    """A GeneratorWorker that calls ``on_quit`` when napari quits it."""


def stoppable_worker(
    func: Callable, *args: Any, on_quit: Callable[[], Any], **kwargs: Any
) -> StoppableWorker | StoppableGeneratorWorker:
    """``create_worker(func, *args, **kwargs)`` as a :class:`StoppableWorker` that calls
    ``on_quit`` when napari quits it.

    Examples
    --------
    >>> worker = stoppable_worker(run, on_quit=job.cancel, _ignore_errors=True)  # doctest: +SKIP
    """
    kind = StoppableGeneratorWorker if inspect.isgeneratorfunction(func) else StoppableWorker
    worker = create_worker(func, *args, _worker_class=kind, **kwargs)
    worker.on_quit = on_quit
    return worker
