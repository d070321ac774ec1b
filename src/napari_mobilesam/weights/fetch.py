"""Named checkpoints on this computer: the user's files, the cache, and verified downloads.

Every failure (offline, a wrong file, a cache folder that cannot be written) is raised as
:class:`~napari_mobilesam.weights.registry.WeightsError` with a message that says what to do.
A wrong download is discarded and a wrong cached file moved aside, so that a wrong file is
never used silently; files named through ``NAPARI_MOBILESAM_WEIGHTS`` are the user's choice
(fine-tuned weights, say) and are not checked. torch is never imported here.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pooch

from napari_mobilesam.errors import InvalidTypeError
from napari_mobilesam.weights.registry import (
    CHECKPOINTS,
    DEFAULT_CHECKPOINT,
    Checkpoint,
    WeightsError,
    lookup_checkpoint,
)
from napari_mobilesam.weights.verify import find_mismatch, remember_verified

__all__ = [
    "CACHE_ENV",
    "WEIGHTS_ENV",
    "cache_dir",
    "fetch_checkpoint",
    "resolve_checkpoint",
]

WEIGHTS_ENV = "NAPARI_MOBILESAM_WEIGHTS"
CACHE_ENV = "NAPARI_MOBILESAM_CACHE"

_REJECTED_SUFFIX = ".rejected"
#: Seconds a download waits for another process downloading the same file.
_LOCK_TIMEOUT_S = 900.0
# Errors of writing into the cache folder (full, read-only, no permission, over quota).
_CACHE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
    if hasattr(errno, name)
)

_logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Return the folder where downloaded checkpoints are kept.

    Returns
    -------
    pathlib.Path
        ``$NAPARI_MOBILESAM_CACHE`` when that environment variable is set, else the
        operating system's cache folder for napari-mobilesam (``pooch.os_cache``). The
        folder may not exist yet.

    Examples
    --------
    >>> cache_dir()  # doctest: +SKIP
    PosixPath('/home/me/.cache/napari-mobilesam')
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(pooch.os_cache("napari-mobilesam"))


def fetch_checkpoint(name: str = DEFAULT_CHECKPOINT, *, progress: bool = True) -> Path:
    """Return the local path of a named checkpoint, downloading it once if needed.

    Looked for in this order:

    1. ``$NAPARI_MOBILESAM_WEIGHTS``: a folder is searched for the checkpoint's file
       name (for every checkpoint); a file is used as the ``"mobile_sam"`` weights and is
       ignored for other checkpoints. Such files are used as they are, without
       verification, so that fine-tuned weights can be given this way.
    2. The file in :func:`cache_dir`.
    3. A download from the checkpoint's URL with ``pooch.retrieve``, into a temporary
       file in :func:`cache_dir` that is moved into place only once complete and verified,
       so an interrupted or wrong download never leaves a file behind. A lock
       file (``.<file name>.lock``, removed afterwards) makes processes that need the same
       file at once download it once: the others wait, then use the downloaded file.

    A file returned from the cache is checked against the checkpoint's
    :attr:`~napari_mobilesam.weights.registry.Checkpoint.known_id`, when it has one, before
    it is returned. The check is remembered for the rest of the process as long as the file's
    size and modification time stay the same, so repeated calls do not read the file again.

    Parameters
    ----------
    name : str
        A key of :data:`~napari_mobilesam.weights.registry.CHECKPOINTS`, e.g.
        ``"mobile_sam"``, ``"prompt_guided"`` or ``"object_aware"``.
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    pathlib.Path
        Path of the checkpoint file.

    Raises
    ------
    ValueError
        If ``name`` is not a known checkpoint.
    WeightsError
        If ``$NAPARI_MOBILESAM_WEIGHTS`` points at nothing usable, or the download fails.
        The message names the URL, the path where a manually downloaded file can be put
        and the environment variable to use instead. Also if the downloaded or cached file
        does not match the known id: a download is then discarded, and a cached file is
        renamed to ``<file name>.rejected`` in the same folder (replacing an older one), so
        that the next call downloads it afresh.

    Examples
    --------
    >>> path = fetch_checkpoint("mobile_sam")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'mobile_sam.pt'
    """
    checkpoint = lookup_checkpoint(name)
    from_env = _checkpoint_from_env(checkpoint)
    if from_env is not None:
        _logger.debug(
            "Using %s as %s, named by %s; files named there are not verified.",
            from_env,
            checkpoint.filename,
            WEIGHTS_ENV,
        )
        return from_env

    target = cache_dir() / checkpoint.filename
    if target.is_file():
        _check_cached_file(target, checkpoint)
        return target
    with _download_lock(checkpoint, target):
        # Another process may have finished the same download while this one waited.
        if target.is_file():
            _check_cached_file(target, checkpoint)
            return target
        return _download(checkpoint, target, progress=progress)


def resolve_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    name: str = DEFAULT_CHECKPOINT,
    *,
    progress: bool = True,
) -> Path:
    """Turn what a user passed as ``checkpoint`` into the path of an existing file.

    Parameters
    ----------
    checkpoint : str, os.PathLike or None
        None for the checkpoint called ``name``; a key of :data:`CHECKPOINTS` (which
        wins over a file of the same name in the working folder); or the path of a
        checkpoint file.
    name : str
        The checkpoint used when ``checkpoint`` is None.
    progress : bool
        Show a progress bar if a download is needed.

    Returns
    -------
    pathlib.Path
        Path of the checkpoint file.

    Raises
    ------
    TypeError
        If ``checkpoint`` is neither None, a string nor a path.
    WeightsError
        If the path does not exist or is a folder, or fetching a named checkpoint fails
        (see :func:`fetch_checkpoint`).

    Examples
    --------
    >>> resolve_checkpoint("/data/weights/mobile_sam.pt")  # doctest: +SKIP
    PosixPath('/data/weights/mobile_sam.pt')
    >>> resolve_checkpoint(None)  # the default MobileSAM weights  # doctest: +SKIP
    PosixPath('/home/me/.cache/napari-mobilesam/mobile_sam.pt')
    """
    if checkpoint is None:
        return fetch_checkpoint(name, progress=progress)
    if isinstance(checkpoint, str) and checkpoint in CHECKPOINTS:
        return fetch_checkpoint(checkpoint, progress=progress)
    if not isinstance(checkpoint, str | os.PathLike):
        raise InvalidTypeError(
            "Expected checkpoint to be None, a checkpoint name or a file path; "
            f"received {type(checkpoint).__name__}."
        )
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    names = ", ".join(repr(known) for known in CHECKPOINTS)
    if path.is_dir():
        found = f"{path} is a folder"
    else:
        found = f"{path} does not exist"
    raise WeightsError(f"Expected a checkpoint file or one of the names {names}; {found}.")


def _checkpoint_from_env(checkpoint: Checkpoint) -> Path | None:
    value = os.environ.get(WEIGHTS_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        candidate = path / checkpoint.filename
        if candidate.is_file():
            return candidate
        raise WeightsError(
            f"{WEIGHTS_ENV} points at the folder {path}, which has no {checkpoint.filename} "
            f"({checkpoint.description}). Download it from {checkpoint.url} into that folder, "
            f"or unset {WEIGHTS_ENV} to have it downloaded automatically."
        )
    if path.is_file():
        return path if checkpoint.name == DEFAULT_CHECKPOINT else None
    raise WeightsError(
        f"{WEIGHTS_ENV} is set to {path}, which does not exist. Set it to the MobileSAM "
        f"weights file ({CHECKPOINTS[DEFAULT_CHECKPOINT].filename}) or to a folder holding "
        f"the checkpoint files, or unset it to have them downloaded automatically."
    )


def _check_cached_file(target: Path, checkpoint: Checkpoint) -> None:
    """Raise WeightsError, after moving the file aside, if a cached file is not the right one."""
    mismatch = find_mismatch(target, checkpoint.known_id)
    if mismatch is None:
        return
    found, size = mismatch
    what_was_done = _set_aside(target)
    env_target = _what_weights_env_names(checkpoint)
    raise WeightsError(
        f"The cached file {target} is not the official {checkpoint.filename} "
        f"({checkpoint.description}): expected {checkpoint.known_id}, found {found} "
        f"({size:,} bytes). {what_was_done}\n"
        "Try again to download it afresh from\n"
        f"    {checkpoint.url}\n"
        "or, without internet access, download that file on another computer and copy it to "
        f"{target}. To use other weights on purpose (e.g. fine-tuned ones), set the "
        f"environment variable {WEIGHTS_ENV} to {env_target}the folder holding them; files "
        "named there are not verified."
    )


def _set_aside(path: Path) -> str:
    """Move a rejected file out of the way of the next lookup; say what was done."""
    rejected = path.with_name(path.name + _REJECTED_SUFFIX)
    try:
        os.replace(path, rejected)
    except OSError as move_error:
        try:
            path.unlink()
        except OSError:
            return (
                f"It could not be moved aside ({move_error}); delete it, or it will be refused "
                "again."
            )
        return "It has been deleted."
    return f"It has been moved aside to {rejected} (delete that file when you no longer need it)."


@contextmanager
def _download_lock(checkpoint: Checkpoint, target: Path) -> Iterator[None]:
    """Hold ``.<file name>.lock`` in the cache folder, so that one process downloads a file
    at a time; the lock file is removed (while still held) when the download ends."""
    from filelock import FileLock, Timeout

    lock_path = target.with_name(f".{target.name}.lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path, timeout=_LOCK_TIMEOUT_S)
        lock.acquire()
    except Timeout as exc:
        raise WeightsError(
            f"Another process has been downloading {checkpoint.filename} into {target.parent} "
            f"for more than {_LOCK_TIMEOUT_S:g} s (it holds the lock file {lock_path}). Wait "
            "for it to finish and try again; if no other napari-mobilesam is running, delete "
            "that lock file."
        ) from exc
    except OSError as exc:
        raise WeightsError(_cache_unwritable_message(checkpoint, target, exc)) from exc
    try:
        yield
    finally:
        # Removed while held: a waiting process notices the unlinked file and retries.
        lock_path.unlink(missing_ok=True)
        lock.release()


def _cache_error_in(exc: BaseException) -> OSError | None:
    """The OSError of writing to the cache folder behind ``exc`` (itself, or the error pooch
    re-raises as a PermissionError without an errno), or None for a network error."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, OSError) and candidate.errno in _CACHE_ERRNOS:
            return candidate
    return None


def _cache_unwritable_message(checkpoint: Checkpoint, target: Path, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return (
        f"Could not save {checkpoint.filename} ({checkpoint.description}) in the cache folder "
        f"{target.parent}: {reason} ({type(exc).__name__}: {exc}). Nothing was left in that "
        "folder. Free some space there or make it writable, or set the environment variable "
        f"{CACHE_ENV} to a writable folder with enough space; or download the file from\n"
        f"    {checkpoint.url}\n"
        f"yourself and set {WEIGHTS_ENV} to the folder holding it."
    )


def _download(checkpoint: Checkpoint, target: Path, *, progress: bool) -> Path:
    """Download with pooch, which writes a temporary file beside ``target`` and moves it into
    place only once the download is complete and its hash matches; the file's known id is
    checked before pooch's own check, so that a wrong file gets a message that says why."""
    _logger.info("Downloading %s from %s to %s", checkpoint.filename, checkpoint.url, target)

    def download_and_verify(url: str, output_file: str, pooch_: object) -> None:
        pooch.HTTPDownloader(progressbar=progress)(url, output_file, pooch_)
        mismatch = find_mismatch(Path(output_file), checkpoint.known_id, remember=False)
        if mismatch is not None:
            raise WeightsError(_wrong_download_message(checkpoint, target, *mismatch))

    try:
        with _pooch_logs_quiet():
            pooch.retrieve(
                checkpoint.url,
                known_hash=checkpoint.sha256,
                fname=target.name,
                path=target.parent,
                downloader=download_and_verify,
            )
    # requests' errors are OSErrors; pooch raises ValueError for a bad progress bar or hash.
    except (OSError, ValueError) as exc:
        cache_error = _cache_error_in(exc)
        if cache_error is not None:
            raise WeightsError(_cache_unwritable_message(checkpoint, target, cache_error)) from exc
        raise WeightsError(_download_failed_message(checkpoint, target, exc)) from exc
    if checkpoint.known_id is not None:
        # Verified as the temporary file; the move within the folder keeps its size and mtime.
        remember_verified(target, checkpoint.known_id)
    return target


@contextmanager
def _pooch_logs_quiet() -> Iterator[None]:
    """Keep pooch's own info lines (it logs every download) off the user's terminal."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _wrong_download_message(checkpoint: Checkpoint, target: Path, found: str, size: int) -> str:
    env_target = _what_weights_env_names(checkpoint)
    return (
        f"Downloaded {checkpoint.filename} ({checkpoint.description}) from\n"
        f"    {checkpoint.url}\n"
        f"but it is not the expected file: expected {checkpoint.known_id}, found {found} "
        f"({size:,} bytes). The download was discarded and not saved to {target}.\n"
        "A proxy or login page may have answered instead of the server, or the file at that "
        "URL has changed. Try again later, or download that file yourself (on another "
        f"computer if need be) and copy it to {target}. To use a different file on purpose, "
        f"set the environment variable {WEIGHTS_ENV} to {env_target}the folder holding it; "
        "files named there are not verified."
    )


def _download_failed_message(checkpoint: Checkpoint, target: Path, exc: Exception) -> str:
    reason = f"{type(exc).__name__}: {exc}"
    if len(reason) > 300:
        reason = reason[:300] + "..."
    env_target = _what_weights_env_names(checkpoint)
    return (
        f"Could not download {checkpoint.filename} ({checkpoint.description}) from\n"
        f"    {checkpoint.url}\n"
        f"({reason}).\n"
        "If this computer has no internet access, download that file on another computer, "
        "then either\n"
        f"  - copy it to {target}\n"
        f"  - or set the environment variable {WEIGHTS_ENV} to {env_target}"
        f"the folder holding it."
    )


def _what_weights_env_names(checkpoint: Checkpoint) -> str:
    """What ``NAPARI_MOBILESAM_WEIGHTS`` may name for ``checkpoint`` (a file: mobile_sam only)."""
    return "the file itself or " if checkpoint.name == DEFAULT_CHECKPOINT else ""
