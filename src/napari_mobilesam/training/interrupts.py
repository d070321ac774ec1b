"""Ctrl+C during training: the first stops after the current batch and keeps the best
weights so far; a second one stops at once. Used by both train commands."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from napari_mobilesam.training.reports import StopCheck

__all__ = ["stop_on_ctrl_c"]


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[StopCheck]:
    """Within the block, Ctrl+C asks training to stop; yields the ``should_stop`` check.

    Outside the main thread (where no signal handler can be set) Ctrl+C keeps Python's
    default behaviour and the check is always False.
    """
    asked = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print(
            "stopping after this batch; the best weights so far are kept "
            "(Ctrl+C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    if threading.current_thread() is not threading.main_thread():
        yield asked.is_set
        return
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
