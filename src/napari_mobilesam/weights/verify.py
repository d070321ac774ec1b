"""File ids: computing them, and checking a file against the id of an official checkpoint.

A successful check is remembered for the rest of the process as long as the file's size and
modification time stay the same, so repeated lookups of a cached file do not read it again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.weights.registry import (
    DEFAULT_CHECKPOINT,
    ID_KINDS,
    WeightsError,
    lookup_checkpoint,
)

__all__ = ["file_id", "find_mismatch", "remember_verified", "verify_checkpoint_file"]

_HASH_CHUNK_BYTES = 1 << 20

# Files found to match their known id in this process: (resolved path, size, mtime_ns) -> id.
_verified: dict[tuple[str, int, int], str] = {}


def file_id(path: str | os.PathLike[str], kind: str = "sha256") -> str:
    """Compute the id of a file's contents, in the form of
    :attr:`~napari_mobilesam.weights.registry.Checkpoint.known_id`.

    The file is read in chunks of 1 MiB, so large checkpoints are not held in memory.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    kind : {"sha256", "gitblob"}
        ``"sha256"``: the SHA-256 of the file's bytes. ``"gitblob"``: the id git gives the
        file (``git hash-object``, what GitHub shows for a file), the SHA-1 of
        ``b"blob <size in bytes>\\0"`` followed by the file's bytes.

    Returns
    -------
    str
        ``"sha256:"`` followed by 64 lowercase hex digits, or ``"gitblob:"`` followed by 40.

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`~napari_mobilesam.weights.registry.ID_KINDS`.
    WeightsError
        If the file cannot be read, or changed size while it was read.

    Examples
    --------
    >>> file_id("mobile_sam.pt", "gitblob")  # doctest: +SKIP
    'gitblob:7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7'
    """
    if kind not in ID_KINDS:
        kinds = ", ".join(repr(known) for known in ID_KINDS)
        raise InvalidValueError(f"Expected kind to be one of {kinds}; received {kind!r}.")
    path = Path(path)
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(usedforsecurity=False)
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if kind == "gitblob":
                digest.update(f"blob {size}\0".encode("ascii"))
            read = 0
            while chunk := stream.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
                read += len(chunk)
    except OSError as exc:
        raise WeightsError(f"Could not read {path} to compute its {kind} id: {exc}") from exc
    if read != size:
        raise WeightsError(
            f"{path} changed while its {kind} id was computed ({size} bytes at the start, "
            f"{read} read). Wait until whatever writes it has finished, then try again."
        )
    return f"{kind}:{digest.hexdigest()}"


def find_mismatch(
    path: Path, known_id: str | None, *, remember: bool = True
) -> tuple[str, int] | None:
    """Compare a file with the id it should have.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    known_id : str or None
        The id it should have; None (nothing known) always matches.
    remember : bool
        Record a match for the rest of the process (False for a file about to be moved).

    Returns
    -------
    tuple of (str, int) or None
        The file's id (of the kind of ``known_id``) and size when it differs, else None.

    Raises
    ------
    WeightsError
        If the file cannot be read.
    """
    if known_id is None:
        return None
    try:
        key = _verified_key(path)
    except OSError as exc:
        raise WeightsError(f"Could not read {path} to verify it: {exc}") from exc
    if _verified.get(key) == known_id:
        return None
    found = file_id(path, known_id.partition(":")[0])
    if found != known_id:
        return found, key[1]
    if remember:
        _verified[key] = known_id
    return None


def remember_verified(path: Path, known_id: str) -> None:
    """Record that ``path``, as it is now, was found to match ``known_id``."""
    _verified[_verified_key(path)] = known_id


def verify_checkpoint_file(path: str | os.PathLike[str], name: str = DEFAULT_CHECKPOINT) -> bool:
    """Check that a file is the official file of a named checkpoint, byte for byte.

    Nothing is moved or deleted. A successful check is remembered for the rest of the
    process as long as the file's size and modification time stay the same.

    Parameters
    ----------
    path : str or os.PathLike
        The file to check.
    name : str
        A key of :data:`~napari_mobilesam.weights.registry.CHECKPOINTS`.

    Returns
    -------
    bool
        True if the file matches the checkpoint's known id; False if no id is known for that
        checkpoint, so the file cannot be verified.

    Raises
    ------
    ValueError
        If ``name`` is not a known checkpoint.
    WeightsError
        If the file cannot be read, or does not match: the message gives the expected id,
        the file's id and size, and where to download the official file.

    Examples
    --------
    >>> verify_checkpoint_file("/data/weights/mobile_sam.pt", "mobile_sam")  # doctest: +SKIP
    True
    """
    checkpoint = lookup_checkpoint(name)
    if checkpoint.known_id is None:
        return False
    path = Path(path)
    mismatch = find_mismatch(path, checkpoint.known_id)
    if mismatch is not None:
        found, size = mismatch
        raise WeightsError(
            f"{path} is not the official {checkpoint.filename} ({checkpoint.description}): "
            f"expected {checkpoint.known_id}, found {found} ({size:,} bytes). Download the "
            f"official file again from {checkpoint.url} and replace {path}."
        )
    return True


def _verified_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
