"""Named checkpoints: where they come from, where they are cached, and how they are verified.

Every failure a user can meet here (offline, a damaged download, the wrong file) is raised as
:class:`WeightsError` with a message that says what to do (reading the files is
:mod:`napari_mobilesam.weights.checkpoints`). torch is imported only by the
functions that load weights, so importing this module is cheap.

Checkpoints with a known id (:attr:`Checkpoint.known_id`) are verified before
:func:`fetch_checkpoint` returns them from the cache: a download that does not match is
discarded, and a cached file that does not match is moved aside, so that a wrong file is never
used silently. Files named through ``NAPARI_MOBILESAM_WEIGHTS`` are the user's choice (they may
be fine-tuned weights) and are not checked.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pooch

if TYPE_CHECKING:
    pass

__all__ = [
    "CACHE_ENV",
    "CHECKPOINTS",
    "DEFAULT_CHECKPOINT",
    "ID_KINDS",
    "WEIGHTS_ENV",
    "Checkpoint",
    "WeightsError",
    "cache_dir",
    "fetch_checkpoint",
    "file_id",
    "resolve_checkpoint",
    "verify_checkpoint_file",
]

WEIGHTS_ENV = "NAPARI_MOBILESAM_WEIGHTS"
CACHE_ENV = "NAPARI_MOBILESAM_CACHE"
DEFAULT_CHECKPOINT = "mobile_sam"


#: The kinds of file id understood by :func:`file_id` and :attr:`Checkpoint.known_id`.
ID_KINDS = ("sha256", "gitblob")
_ID_PATTERN = re.compile(r"(sha256:[0-9a-f]{64}|gitblob:[0-9a-f]{40})")
_HASH_CHUNK_BYTES = 1 << 20
_REJECTED_SUFFIX = ".rejected"
#: Seconds a download waits for another process downloading the same file.
_LOCK_TIMEOUT_S = 900.0
# Errors of writing into the cache folder (full, read-only, no permission, over quota).
_CACHE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
    if hasattr(errno, name)
)


# Files found to match their known id in this process: (resolved path, size, mtime_ns) -> id.
_verified: dict[tuple[str, int, int], str] = {}

_logger = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """A checkpoint could not be found, downloaded or loaded; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """A named checkpoint file that can be downloaded.

    Parameters
    ----------
    name : str
        Key in :data:`CHECKPOINTS`.
    url : str
        Where the file is downloaded from with a plain HTTP GET.
    filename : str
        File name in the cache folder, and the name looked for in a folder given by
        ``NAPARI_MOBILESAM_WEIGHTS``.
    description : str
        One line for people: what the file is and where it comes from.
    known_id : str, optional
        The id of the official file, ``"sha256:<64 hex digits>"`` or
        ``"gitblob:<40 hex digits>"`` (see :func:`file_id`). :func:`fetch_checkpoint`
        checks downloaded and cached copies against it. None when no id is known: the file
        is then used without verification.

    Raises
    ------
    ValueError
        If ``known_id`` is neither None nor a well-formed id.
    """

    name: str
    url: str
    filename: str
    description: str
    known_id: str | None = None

    def __post_init__(self) -> None:
        if self.known_id is not None and not _ID_PATTERN.fullmatch(self.known_id):
            raise ValueError(
                f"Expected the known_id of checkpoint {self.name!r} to be None, "
                "'sha256:' followed by 64 lowercase hex digits or 'gitblob:' followed by 40; "
                f"received {self.known_id!r}."
            )


CHECKPOINTS: dict[str, Checkpoint] = {
    checkpoint.name: checkpoint
    for checkpoint in (
        Checkpoint(
            name="mobile_sam",
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            filename="mobile_sam.pt",
            description=(
                "MobileSAM (vit_t) weights, the official file from the MobileSAM repository "
                "(Apache-2.0, about 40 MB)"
            ),
            known_id="gitblob:7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7",
        ),
        Checkpoint(
            name="prompt_guided",
            url=(
                "https://github.com/ChaoningZhang/MobileSAM/raw/master/MobileSAMv2/"
                "PromptGuidedDecoder/Prompt_guided_Mask_Decoder.pt"
            ),
            filename="Prompt_guided_Mask_Decoder.pt",
            description=(
                "MobileSAMv2 prompt-guided mask decoder (SAM's prompt encoder and mask decoder "
                "fine-tuned for box prompts), the official file from the MobileSAM repository "
                "(Apache-2.0, about 16 MB)"
            ),
            known_id="sha256:8771b38a57ad67750dbe18fff95e66c8d1789436096738cace37d58bfc06151e",
        ),
        Checkpoint(
            name="object_aware",
            url="https://huggingface.co/RogerQi/MobileSAMV2/resolve/main/ObjectAwareModel.pt",
            filename="ObjectAwareModel.pt",
            description=(
                "MobileSAMv2 object-aware prompt sampler (a YOLOv8 detector). The official "
                "distribution is a Google Drive zip "
                "(https://drive.google.com/file/d/1dE-YAG-1mFCBmao2rHDp0n-PP4eH7SjE/view) that "
                "cannot be downloaded automatically; this URL is a community mirror on "
                "Hugging Face. No id of the official file is known, so it is used without "
                "verification"
            ),
        ),
    )
}


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
    3. A download from the checkpoint's URL (with pooch's HTTP downloader) into a
       temporary file in :func:`cache_dir`, moved into place only once complete and
       verified, so an interrupted or wrong download never leaves a file behind. A lock
       file (``.<file name>.lock``, removed afterwards) makes processes that need the same
       file at once download it once: the others wait, then use the downloaded file.

    A file returned from the cache is checked against the checkpoint's
    :attr:`~Checkpoint.known_id`, when it has one, before it is returned. The check is
    remembered for the rest of the process as long as the file's size and modification time
    stay the same, so repeated calls do not read the file again.

    Parameters
    ----------
    name : str
        A key of :data:`CHECKPOINTS`, e.g. ``"mobile_sam"``, ``"prompt_guided"`` or
        ``"object_aware"``.
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    pathlib.Path
        Path of the checkpoint file.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`CHECKPOINTS`.
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
    checkpoint = _lookup(name)
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


def file_id(path: str | os.PathLike[str], kind: str = "sha256") -> str:
    """Compute the id of a file's contents, in the form used by :attr:`Checkpoint.known_id`.

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
        If ``kind`` is not one of :data:`ID_KINDS`.
    WeightsError
        If the file cannot be read, or changed size while it was read.

    Examples
    --------
    >>> file_id("mobile_sam.pt", "gitblob")  # doctest: +SKIP
    'gitblob:7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7'
    """
    if kind not in ID_KINDS:
        kinds = ", ".join(repr(known) for known in ID_KINDS)
        raise ValueError(f"Expected kind to be one of {kinds}; received {kind!r}.")
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


def verify_checkpoint_file(path: str | os.PathLike[str], name: str = DEFAULT_CHECKPOINT) -> bool:
    """Check that a file is the official file of a named checkpoint, byte for byte.

    Nothing is moved or deleted. A successful check is remembered for the rest of the
    process as long as the file's size and modification time stay the same.

    Parameters
    ----------
    path : str or os.PathLike
        The file to check.
    name : str
        A key of :data:`CHECKPOINTS`.

    Returns
    -------
    bool
        True if the file matches the checkpoint's :attr:`~Checkpoint.known_id`; False if
        no id is known for that checkpoint, so the file cannot be verified.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`CHECKPOINTS`.
    WeightsError
        If the file cannot be read, or does not match: the message gives the expected id,
        the file's id and size, and where to download the official file.

    Examples
    --------
    >>> verify_checkpoint_file("/data/weights/mobile_sam.pt", "mobile_sam")  # doctest: +SKIP
    True
    """
    checkpoint = _lookup(name)
    if checkpoint.known_id is None:
        return False
    path = Path(path)
    mismatch = _find_mismatch(path, checkpoint)
    if mismatch is not None:
        found, size = mismatch
        raise WeightsError(
            f"{path} is not the official {checkpoint.filename} ({checkpoint.description}): "
            f"expected {checkpoint.known_id}, found {found} ({size:,} bytes). Download the "
            f"official file again from {checkpoint.url} and replace {path}."
        )
    return True


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
        raise TypeError(
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


def _lookup(name: str) -> Checkpoint:
    try:
        return CHECKPOINTS[name]
    except (KeyError, TypeError):
        names = ", ".join(repr(known) for known in CHECKPOINTS)
        raise ValueError(f"Expected a checkpoint name among {names}; received {name!r}.") from None


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


def _verified_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _find_mismatch(
    path: Path, checkpoint: Checkpoint, *, remember: bool = True
) -> tuple[str, int] | None:
    """Return the file's id and size if it differs from the known id, else None.

    Uses the per-process record of verified files, and adds ``path`` to it when it matches
    and ``remember`` is true. Raises WeightsError when the file cannot be read.
    """
    expected = checkpoint.known_id
    if expected is None:
        return None
    try:
        key = _verified_key(path)
    except OSError as exc:
        raise WeightsError(f"Could not read {path} to verify it: {exc}") from exc
    if _verified.get(key) == expected:
        return None
    found = file_id(path, expected.partition(":")[0])
    if found != expected:
        return found, key[1]
    if remember:
        _verified[key] = expected
    return None


def _check_cached_file(target: Path, checkpoint: Checkpoint) -> None:
    """Raise WeightsError, after moving the file aside, if a cached file is not the right one."""
    mismatch = _find_mismatch(target, checkpoint)
    if mismatch is None:
        return
    found, size = mismatch
    what_was_done = _set_aside(target)
    env_target = "the file itself or " if checkpoint.name == DEFAULT_CHECKPOINT else ""
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


def _is_cache_error(exc: BaseException) -> bool:
    """True for an OSError raised by writing to the cache folder rather than by the network."""
    return isinstance(exc, OSError) and exc.errno in _CACHE_ERRNOS


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
    """Download into a temporary file beside ``target``; verify, then move into place."""
    _logger.info("Downloading %s from %s to %s", checkpoint.filename, checkpoint.url, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary_name = tempfile.mkstemp(
            prefix=f".{checkpoint.filename}.", suffix=".part", dir=target.parent
        )
        os.close(handle)
    except OSError as exc:
        raise WeightsError(_cache_unwritable_message(checkpoint, target, exc)) from exc
    temporary = Path(temporary_name)
    try:
        try:
            pooch.HTTPDownloader(progressbar=progress)(checkpoint.url, str(temporary), None)
        # requests' errors are OSErrors; pooch raises ValueError for a bad progress bar.
        except (OSError, ValueError) as exc:
            if _is_cache_error(exc):
                raise WeightsError(_cache_unwritable_message(checkpoint, target, exc)) from exc
            raise WeightsError(_download_failed_message(checkpoint, target, exc)) from exc
        mismatch = _find_mismatch(temporary, checkpoint, remember=False)
        if mismatch is not None:
            raise WeightsError(_wrong_download_message(checkpoint, target, *mismatch))
        os.replace(temporary, target)
        if checkpoint.known_id is not None:
            # Verified above as the temporary file; the move keeps its size and mtime.
            _verified[_verified_key(target)] = checkpoint.known_id
    except OSError as exc:
        if _is_cache_error(exc):
            raise WeightsError(_cache_unwritable_message(checkpoint, target, exc)) from exc
        raise WeightsError(_download_failed_message(checkpoint, target, exc)) from exc
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _wrong_download_message(checkpoint: Checkpoint, target: Path, found: str, size: int) -> str:
    env_target = "the file itself or " if checkpoint.name == DEFAULT_CHECKPOINT else ""
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
    env_target = "the file itself or " if checkpoint.name == DEFAULT_CHECKPOINT else ""
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
