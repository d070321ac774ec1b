"""Which checkpoint files a command needs and which of them are not on this computer.

A command that fails offline names every file it needs at once (with each URL and the
path to put it at), not one file per failed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from napari_mobilesam.weights.registry import CHECKPOINTS, Checkpoint, WeightsError

__all__ = ["missing_checkpoints", "missing_files_message"]


def missing_checkpoints(names: Sequence[str]) -> list[tuple[Checkpoint, Path]]:
    """The checkpoints of ``names`` (keys of ``CHECKPOINTS``) not found on this computer.

    A checkpoint is found when ``$NAPARI_MOBILESAM_WEIGHTS`` names it or its file is in
    the cache; nothing is downloaded or verified.

    Returns
    -------
    list of (Checkpoint, Path)
        Each missing checkpoint with the path its download would be saved at.

    Examples
    --------
    >>> [checkpoint.name for checkpoint, _ in missing_checkpoints([])]
    []
    """
    from napari_mobilesam.weights import fetch

    missing = []
    for name in dict.fromkeys(names):
        checkpoint = CHECKPOINTS[name]
        try:
            found = fetch._checkpoint_from_env(checkpoint)
        except WeightsError:
            found = None
        target = fetch.cache_dir() / checkpoint.filename
        if found is None and not target.is_file():
            missing.append((checkpoint, target))
    return missing


def missing_files_message(
    missing: Sequence[tuple[Checkpoint, Path]], optional: Sequence[str] = ()
) -> str:
    """Lines that list the files of ``missing``, each with its URL and where it goes.

    ``optional`` names checkpoints the command can do without (said after their line).
    """
    from napari_mobilesam.weights.fetch import WEIGHTS_ENV

    lines = [f"This command needs {len(missing)} file(s) that are not on this computer:"]
    for checkpoint, target in missing:
        extra = " (optional)" if checkpoint.name in optional else ""
        lines.append(f"  - {checkpoint.filename}{extra}\n      from {checkpoint.url}\n"
                     f"      to   {target}")  # fmt: skip
    lines.append(
        f"Download them on a computer with internet access and copy them there, or into one "
        f"folder named by the environment variable {WEIGHTS_ENV}."
    )
    return "\n".join(lines)
