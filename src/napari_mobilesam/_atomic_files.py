"""Files that appear under their final name only when complete.

Used by the batch outputs and the embedding store: a run that is killed never leaves a
half-written file under a name that looks done.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_MARK = ".tmp-"
"""Part of every temporary name (``.NAME.tmp-PID-RANDOM``)."""


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    The temporary name starts with a dot and contains ``.tmp-``; it is removed if the block
    raises. An existing ``final`` (file or folder) is replaced.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        remove_path(tmp)


def remove_path(path: Path) -> None:
    """Delete a file, link or folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
