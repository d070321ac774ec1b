"""Named checkpoints: where they come from, where they are cached, and how they are loaded.

Every failure a user can meet here (offline, a damaged download, the wrong file) is raised as
:class:`WeightsError` with a message that says what to do. torch is imported only by the
functions that load weights, so importing this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pooch

if TYPE_CHECKING:
    import torch

__all__ = [
    "CACHE_ENV",
    "CHECKPOINTS",
    "DEFAULT_CHECKPOINT",
    "WEIGHTS_ENV",
    "Checkpoint",
    "WeightsError",
    "cache_dir",
    "fetch_checkpoint",
    "load_state_dict",
    "load_weights_into",
    "resolve_checkpoint",
]

WEIGHTS_ENV = "NAPARI_MOBILESAM_WEIGHTS"
CACHE_ENV = "NAPARI_MOBILESAM_CACHE"
DEFAULT_CHECKPOINT = "mobile_sam"

_EXAMPLES_SHOWN = 3


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
    known_hash : str, optional
        ``"sha256:..."`` checked by pooch after download; None to skip the check.
    """

    name: str
    url: str
    filename: str
    description: str
    known_hash: str | None = None


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
                "Hugging Face"
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
       ignored for other checkpoints.
    2. The file in :func:`cache_dir`.
    3. A download from the checkpoint's URL into :func:`cache_dir`. pooch downloads into a
       temporary file and moves it into place only once complete, so an interrupted
       download never leaves a truncated file behind.

    Parameters
    ----------
    name : str
        A key of :data:`CHECKPOINTS`, e.g. ``"mobile_sam"`` or ``"object_aware"``.
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
        and the environment variable to use instead.

    Examples
    --------
    >>> path = fetch_checkpoint("mobile_sam")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'mobile_sam.pt'
    """
    checkpoint = _lookup(name)
    from_env = _checkpoint_from_env(checkpoint)
    if from_env is not None:
        return from_env

    target = cache_dir() / checkpoint.filename
    try:
        downloaded = pooch.retrieve(
            checkpoint.url,
            known_hash=checkpoint.known_hash,
            fname=checkpoint.filename,
            path=target.parent,
            progressbar=progress,
        )
    # requests' errors are OSErrors; pooch raises ValueError when the hash does not match.
    except (OSError, ValueError) as exc:
        raise WeightsError(_download_failed_message(checkpoint, target, exc)) from exc
    return Path(downloaded)


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


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (parameter name -> tensor) from a checkpoint file, on the CPU.

    The file is read with ``torch.load(..., weights_only=True)``, which refuses to run
    code stored in the file. A state dict wrapped in a dict under ``"state_dict"`` or
    ``"model"`` (as some training scripts save it) is unwrapped.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save(model.state_dict(), path)``, such as the official
        ``mobile_sam.pt``.

    Returns
    -------
    dict of str to torch.Tensor
        The tensors, in the file's order.

    Raises
    ------
    WeightsError
        If the file is missing, damaged or incomplete (the message says to delete it or
        download it again), or holds something else than a plain state dict, such as a
        whole pickled model.

    Examples
    --------
    >>> state = load_state_dict(fetch_checkpoint("mobile_sam"))  # doctest: +SKIP
    >>> len(state)  # doctest: +SKIP
    439
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Expected a checkpoint file at {path}, but there is no such file.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise WeightsError(f"Could not read the checkpoint file {path}: {exc}") from exc
    # torch.load fails with many exception types (pickle, zip, EOF, runtime) on a bad file.
    except Exception as exc:
        raise WeightsError(_unloadable_message(path, exc)) from exc

    state = _as_state_dict(loaded)
    if state is None:
        raise WeightsError(
            f"{path} is a PyTorch file but not a state dict: expected a mapping of "
            f"parameter names to tensors, found a {type(loaded).__name__}. "
            f"{_use_mobile_sam_hint()}"
        )
    return state


def load_weights_into(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a checkpoint into ``model``, requiring every weight to match by name and shape.

    Parameters
    ----------
    model : torch.nn.Module
        The model to fill, e.g. a freshly built MobileSAM (vit_t).
    path : str or os.PathLike
        The checkpoint file, see :func:`load_state_dict`.

    Raises
    ------
    WeightsError
        If the file cannot be read (see :func:`load_state_dict`) or does not fit the model:
        the message counts the missing and unexpected weights with a few examples of each,
        lists shape mismatches, and says that the file is not a MobileSAM checkpoint.

    Examples
    --------
    >>> model = build_mobile_sam(checkpoint=None)  # doctest: +SKIP
    >>> load_weights_into(model, "/data/weights/mobile_sam.pt")  # doctest: +SKIP
    """
    state = load_state_dict(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes = [
        (key, tuple(expected[key].shape), tuple(state[key].shape))
        for key in expected
        if key in state and expected[key].shape != state[key].shape
    ]
    if missing or unexpected or wrong_shapes:
        raise WeightsError(
            _mismatch_message(Path(path), model, len(expected), missing, unexpected, wrong_shapes)
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise WeightsError(
            f"Could not load the weights in {path} into {type(model).__name__}: {first_line}"
        ) from exc


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


def _unloadable_message(path: Path, exc: Exception) -> str:
    stored_objects = _python_objects_in(path)
    if stored_objects:
        shown = ", ".join(stored_objects[:_EXAMPLES_SHOWN])
        return (
            f"{path} is not a plain state dict: besides tensors it stores Python objects "
            f"({shown}), as a whole pickled model or another program's training checkpoint "
            "does. Such files are not loaded because loading them can run code from the "
            f"file. {_use_mobile_sam_hint()}"
        )
    return (
        f"The checkpoint file {path} is damaged or incomplete, or is not a PyTorch file "
        f"(torch.load raised {type(exc).__name__}). {_redownload_hint(path)}"
    )


def _python_objects_in(path: Path) -> list[str]:
    """Names of the classes and functions pickled in a torch.save zip file, [] if unknown."""
    import torch

    # Available from torch 2.5 on.
    list_objects = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if list_objects is None:
        return []
    try:
        return list(list_objects(path))
    # Any failure here means the file cannot be parsed, which the caller reports.
    except Exception:
        return []


def _redownload_hint(path: Path) -> str:
    """Tell how to replace a damaged ``path`` by a good copy of the checkpoint it stands for."""
    checkpoint = next(
        (known for known in CHECKPOINTS.values() if known.filename == path.name),
        CHECKPOINTS[DEFAULT_CHECKPOINT],
    )
    cached = cache_dir() / checkpoint.filename
    if path.resolve() == cached.resolve():
        return f"Delete {path} and it will be downloaded again the next time it is needed."
    return f"Download {checkpoint.filename} again from {checkpoint.url} and replace {path}."


def _use_mobile_sam_hint() -> str:
    mobile_sam = CHECKPOINTS[DEFAULT_CHECKPOINT]
    return f"Use {mobile_sam.filename} from {mobile_sam.url}."


def _as_state_dict(loaded: Any) -> dict[str, torch.Tensor] | None:
    import torch

    def is_state_dict(candidate: Any) -> bool:
        return (
            isinstance(candidate, Mapping)
            and len(candidate) > 0
            and all(
                isinstance(key, str) and isinstance(value, torch.Tensor)
                for key, value in candidate.items()
            )
        )

    if is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if is_state_dict(loaded.get(key)):
                return dict(loaded[key])
    return None


def _mismatch_message(
    path: Path,
    model: torch.nn.Module,
    expected_count: int,
    missing: list[str],
    unexpected: list[str],
    wrong_shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    lines = [f"The weights in {path} do not fit the model ({type(model).__name__}):"]
    if missing:
        lines.append(
            f"  - {len(missing)} of the model's {expected_count} weights are missing from the "
            f"file, e.g. {_examples(missing)}"
        )
    if unexpected:
        lines.append(
            f"  - {len(unexpected)} weights in the file are not in the model, "
            f"e.g. {_examples(unexpected)}"
        )
    if wrong_shapes:
        lines.append(f"  - {len(wrong_shapes)} weights have the wrong shape:")
        lines.extend(
            f"      {key}: the model expects {model_shape}, the file has {file_shape}"
            for key, model_shape, file_shape in wrong_shapes[:_EXAMPLES_SHOWN]
        )
        if len(wrong_shapes) > _EXAMPLES_SHOWN:
            lines.append(f"      ... and {len(wrong_shapes) - _EXAMPLES_SHOWN} more")
    lines.append(
        "This file is not a MobileSAM (vit_t) checkpoint; checkpoints of the original SAM "
        f"(vit_b, vit_l, vit_h) do not fit either. {_use_mobile_sam_hint()}"
    )
    return "\n".join(lines)


def _examples(keys: list[str]) -> str:
    return ", ".join(repr(key) for key in keys[:_EXAMPLES_SHOWN])
