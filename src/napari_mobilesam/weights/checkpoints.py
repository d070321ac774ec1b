"""Reading checkpoint files: state dicts, MobileSAMv2's prompt-guided format, strict loading.

Every failure (a damaged file, a whole pickled model, weights that do not fit the model) is
raised as :class:`~napari_mobilesam.weights.registry.WeightsError` with a message that says what to
do. Files are read with ``torch.load(weights_only=True)``; torch is imported by the
functions that need it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_mobilesam.weights.fetch import cache_dir
from napari_mobilesam.weights.registry import CHECKPOINTS, DEFAULT_CHECKPOINT, WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["load_state_dict", "load_weights_into"]

_EXAMPLES_SHOWN = 3
# Errors of opening or reading a file at all, as opposed to reading a damaged one.
_UNREADABLE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOENT", "EACCES", "EPERM", "EISDIR", "EIO")
    if hasattr(errno, name)
)
# MobileSAMv2's Prompt_guided_Mask_Decoder.pt: part name in the file (upstream's spelling)
# -> prefix of the same parameters in mobile_sam.pt and in PromptDecoder.
_PROMPT_GUIDED_PARTS = {"PromtEncoder": "prompt_encoder.", "MaskDecoder": "mask_decoder."}


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (parameter name -> tensor) from a checkpoint file, on the CPU.

    The file is read with ``torch.load(..., weights_only=True)``, which refuses to run
    code stored in the file. A state dict wrapped in a dict under ``"state_dict"`` or
    ``"model"`` (as some training scripts save it) is unwrapped. MobileSAMv2's
    ``Prompt_guided_Mask_Decoder.pt``, a dict ``{"PromtEncoder": state_dict,
    "MaskDecoder": state_dict}`` (upstream's spelling), is flattened into one state dict
    whose names start with ``prompt_encoder.`` and ``mask_decoder.``, as in
    ``mobile_sam.pt`` and in :class:`~napari_mobilesam.model.prompt_decoder.PromptDecoder`.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save(model.state_dict(), path)``, such as the official
        ``mobile_sam.pt``, or MobileSAMv2's ``Prompt_guided_Mask_Decoder.pt``.

    Returns
    -------
    dict of str to torch.Tensor
        The tensors, in the file's order (for the prompt-guided decoder: the prompt
        encoder's, then the mask decoder's).

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
    >>> len(load_state_dict(fetch_checkpoint("prompt_guided")))  # doctest: +SKIP
    137
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Expected a checkpoint file at {path}, but there is no such file.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    # A file that cannot be opened or read at all; other OSErrors (torch raises EINVAL for a
    # zip cut short, e.g. a file being rewritten) mean a damaged file, reported below.
    except OSError as exc:
        if exc.errno not in _UNREADABLE_ERRNOS:
            raise WeightsError(_unloadable_message(path, exc)) from exc
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
        The model to fill, e.g. a freshly built MobileSAM (vit_t), or a
        :class:`~napari_mobilesam.model.prompt_decoder.PromptDecoder` for MobileSAMv2's
        ``Prompt_guided_Mask_Decoder.pt``.
    path : str or os.PathLike
        The checkpoint file, see :func:`load_state_dict`.

    Raises
    ------
    WeightsError
        If the file cannot be read (see :func:`load_state_dict`) or does not fit the model:
        the message counts the missing and unexpected weights with a few examples of each,
        lists shape mismatches, and names the file the model expects (``mobile_sam.pt``,
        or ``Prompt_guided_Mask_Decoder.pt`` for a ``PromptDecoder``) and its URL.

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
    if not isinstance(loaded, Mapping):
        return None
    if all(is_state_dict(loaded.get(part)) for part in _PROMPT_GUIDED_PARTS):
        return {
            prefix + key: value
            for part, prefix in _PROMPT_GUIDED_PARTS.items()
            for key, value in loaded[part].items()
        }
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
    lines.append(_expected_file_hint(model))
    return "\n".join(lines)


def _expected_file_hint(model: torch.nn.Module) -> str:
    """Say which file ``model`` takes, for the end of a mismatch message."""
    from napari_mobilesam.model.prompt_decoder import PromptDecoder

    if isinstance(model, PromptDecoder):
        prompt_guided = CHECKPOINTS["prompt_guided"]
        parts = ", ".join(f"{part!r}: ..." for part in _PROMPT_GUIDED_PARTS)
        return (
            "This file is not MobileSAMv2's prompt-guided mask decoder: expected "
            f"{prompt_guided.filename}, a dict {{{parts}}} of the prompt encoder's and mask "
            "decoder's weights (mobile_sam.pt's own decoder is a different file). Use "
            f"{prompt_guided.filename} from {prompt_guided.url}."
        )
    return (
        "This file is not a MobileSAM (vit_t) checkpoint; checkpoints of the original SAM "
        f"(vit_b, vit_l, vit_h) do not fit either. {_use_mobile_sam_hint()}"
    )


def _examples(keys: list[str]) -> str:
    return ", ".join(repr(key) for key in keys[:_EXAMPLES_SHOWN])
