"""How long work reports its progress and is cancelled, in the core and the widgets alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ProgressCallback = Callable[[int, int], Any]
"""Called as ``progress(done, total)``; an exception it raises stops the work (a GUI's
cancel) and propagates to the caller."""


class Cancelled(Exception):
    """Raised by a progress callback to stop the work it reports on."""
