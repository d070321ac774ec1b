"""Which mask decoder SegEvery decodes object boxes with.

MobileSAMv2 decodes every box of its object-aware detector with a *prompt-guided mask
decoder* (``Prompt_guided_Mask_Decoder.pt``), a prompt encoder and mask decoder fine-tuned
for box prompts, on MobileSAM's image embedding. SegAny's clicks keep ``mobile_sam.pt``'s
own decoder, as MobileSAM does. :func:`load_box_decoder` turns the ``decoder`` argument of
:func:`napari_mobilesam.segment_everything` into a decoder and a note for the user.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

if TYPE_CHECKING:
    from napari_mobilesam.model.prompt_decoder import PromptDecoder

__all__ = ["DECODER_NAMES", "BoxDecoder", "build_prompt_guided_decoder", "load_box_decoder"]

DECODER_NAMES = ("auto", "prompt_guided", "mobile_sam")


@dataclass(frozen=True)
class BoxDecoder:
    """The decoder chosen for SegEvery's boxes.

    Attributes
    ----------
    decoder : PromptDecoder or None
        The prompt encoder and mask decoder to use; None for the predictor's own
        (``mobile_sam.pt``'s).
    name : str
        ``"prompt_guided"``, ``"mobile_sam"`` or the path of the file used: the
        :attr:`~napari_mobilesam.model.prompt_decoder.PromptDecoder.source` of a loaded
        decoder (``"custom"`` for one that was not loaded from a file here).
    message : str
        A note for the user when ``"auto"`` fell back to ``mobile_sam.pt``'s decoder;
        empty otherwise.
    """

    decoder: PromptDecoder | None
    name: str
    message: str = ""


def load_box_decoder(decoder: str | os.PathLike[str] | PromptDecoder | None) -> BoxDecoder:
    """Resolve SegEvery's ``decoder`` argument; files are loaded once per process.

    Parameters
    ----------
    decoder : str, os.PathLike, PromptDecoder or None
        - ``"auto"``: MobileSAMv2's prompt-guided decoder when it is on this computer or
          can be downloaded (see :func:`napari_mobilesam.weights.fetch.fetch_checkpoint`), else
          ``mobile_sam.pt``'s own decoder, with a ``message`` that says so and why.
        - ``"prompt_guided"``: the prompt-guided decoder, or an error.
        - ``"mobile_sam"`` or None: the predictor's own decoder.
        - The path of a file in the prompt-guided decoder's format
          (``{"PromtEncoder": ..., "MaskDecoder": ...}``) or a ``PromptDecoder``.

    Returns
    -------
    BoxDecoder

    Raises
    ------
    napari_mobilesam.WeightsError
        ``"prompt_guided"`` or a path that cannot be found, downloaded, verified or
        loaded; the message names the URL and the path where to put the file.
    ValueError
        An unknown name.

    Examples
    --------
    >>> load_box_decoder("mobile_sam")
    BoxDecoder(decoder=None, name='mobile_sam', message='')
    """
    from napari_mobilesam.model.prompt_decoder import PromptDecoder
    from napari_mobilesam.weights.registry import WeightsError

    if decoder is None or (isinstance(decoder, str) and decoder == "mobile_sam"):
        return BoxDecoder(None, "mobile_sam")
    if isinstance(decoder, PromptDecoder):
        return BoxDecoder(decoder, decoder.source)
    if isinstance(decoder, str) and decoder in ("auto", "prompt_guided"):
        try:
            official = build_prompt_guided_decoder()
        except WeightsError as error:
            if decoder == "prompt_guided":
                raise
            message = (
                "SegEvery decoded the boxes with mobile_sam.pt's mask decoder, because "
                "MobileSAMv2's prompt-guided decoder (Prompt_guided_Mask_Decoder.pt), "
                f"which decodes boxes better, is not available: {error}"
            )
            return BoxDecoder(None, "mobile_sam", message)
        return BoxDecoder(official, official.source)
    if isinstance(decoder, str) and not _looks_like_path(decoder):
        names = ", ".join(repr(name) for name in DECODER_NAMES)
        raise InvalidValueError(
            f"Expected decoder to be one of {names}, the path of a "
            f"Prompt_guided_Mask_Decoder.pt-format file, or a PromptDecoder; "
            f"received {decoder!r}."
        )
    if not isinstance(decoder, str | os.PathLike):
        raise InvalidTypeError(
            "Expected decoder to be a name, a file path or a PromptDecoder; received "
            f"{type(decoder).__name__}."
        )
    loaded = build_prompt_guided_decoder(decoder)
    return BoxDecoder(loaded, loaded.source)


def build_prompt_guided_decoder(checkpoint: str | os.PathLike[str] | None = None) -> PromptDecoder:
    """MobileSAMv2's prompt-guided mask decoder, loaded once per file and file version.

    Parameters
    ----------
    checkpoint : str, os.PathLike or None
        A file in the ``Prompt_guided_Mask_Decoder.pt`` format; None for the official
        file, found or downloaded (and verified) by
        :func:`napari_mobilesam.weights.fetch.fetch_checkpoint`.

    Returns
    -------
    PromptDecoder
        On the CPU, in evaluation mode, its
        :attr:`~napari_mobilesam.model.prompt_decoder.PromptDecoder.source` set to
        ``"prompt_guided"`` for the official file, else to the path given. Shared: do not
        modify it.

    Raises
    ------
    napari_mobilesam.WeightsError
        If the file cannot be found, downloaded, verified or loaded strictly.
    """
    from napari_mobilesam.weights.fetch import fetch_checkpoint, resolve_checkpoint

    if checkpoint is None or checkpoint == "prompt_guided":
        path = fetch_checkpoint("prompt_guided", progress=False)
        source = "prompt_guided"
    else:
        path = resolve_checkpoint(checkpoint, "prompt_guided", progress=False)
        source = str(Path(checkpoint).expanduser())
    path = path.resolve()
    stat = path.stat()
    return _load_prompt_decoder(path, stat.st_mtime_ns, stat.st_size, source)


@functools.lru_cache(maxsize=4)
def _load_prompt_decoder(path: Path, mtime_ns: int, size: int, source: str) -> PromptDecoder:
    del mtime_ns, size  # cache keys: a rewritten file is loaded again
    from napari_mobilesam.model.prompt_decoder import PromptDecoder
    from napari_mobilesam.weights.checkpoints import load_weights_into

    decoder = PromptDecoder()
    load_weights_into(decoder, path)
    decoder.source = source
    return decoder.eval()


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".pt") or Path(text).exists()
