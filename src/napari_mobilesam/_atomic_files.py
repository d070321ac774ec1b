"""Files that appear under their final name only when complete.

Used by the batch outputs and the embedding store: a run that is killed never leaves a
half-written file under a name that looks done. Temporary names carry the writer's process
id, so that a run removes the leftovers of dead runs (:func:`remove_stale_temporaries`)
and never the file a live run is still writing.
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

    The temporary name starts with a dot and contains ``.tmp-`` and this process's id; it
    is removed if the block raises. An existing ``final`` (file or folder) is replaced. An
    ``OSError`` of the temporary (full disk, no permission) is raised again naming
    ``final``, not the temporary path.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as error:
        if error.filename is not None and not str(error.filename).startswith(str(tmp)):
            raise  # about another file (e.g. the input): its own message says which
        raise _naming(error, final) from error
    finally:
        remove_path(tmp)


def _naming(error: OSError, final: Path) -> OSError:
    """``error`` as the same kind of error, its message naming ``final``."""
    reason = error.strerror or str(error)
    named = type(error)(error.errno, f"could not write {final}: {reason}")
    return named if isinstance(named, OSError) else OSError(error.errno, str(named))


def remove_path(path: Path) -> None:
    """Delete a file, link or folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def writer_pid(path: Path) -> int | None:
    """The process id in a temporary name made by :func:`atomic_path` (None if there is none)."""
    _, mark, rest = path.name.rpartition(TEMPORARY_MARK)
    pid = rest.split("-", 1)[0]
    return int(pid) if mark and pid.isdigit() else None


def remove_stale_temporaries(folder: Path, name: str = "") -> list[Path]:
    """Delete the temporaries in ``folder`` of runs that have ended.

    Only temporaries (of ``folder / name``, or of every name when ``name`` is empty) whose
    writer's process is no longer running are removed; a live run's are left alone.
    Returns the paths removed.
    """
    import psutil

    removed = []
    for stale in Path(folder).glob(f".{name}*{TEMPORARY_MARK}*"):
        pid = writer_pid(stale)
        if pid is None or (name and not stale.name.startswith(f".{name}{TEMPORARY_MARK}")):
            continue
        if pid != os.getpid() and not psutil.pid_exists(pid):
            remove_path(stale)
            removed.append(stale)
    return removed
