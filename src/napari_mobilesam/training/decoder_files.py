"""The files of decoder fine-tuning: the base it starts from, the result, its sidecar, and
the checkpoint a stopped run resumes from.

Two kinds of base file are fine-tuned, and each result is written in the format of the file
it started from, so that it loads strictly through the package's existing routes:

- ``"prompt_guided"``: MobileSAMv2's box decoder (``Prompt_guided_Mask_Decoder.pt``, a dict
  ``{"PromtEncoder": state_dict, "MaskDecoder": state_dict}``), loaded by SegEvery's
  ``decoder=PATH`` (:func:`napari_mobilesam.segevery.box_decoders.load_box_decoder`).
- ``"mobile_sam"``: a whole ``mobile_sam.pt`` (SegAny's clicks), loaded by
  :func:`napari_mobilesam.build_mobile_sam`; its image encoder weights are copied unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from napari_mobilesam._atomic_files import atomic_path
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.model.prompt_decoder import PromptDecoder

__all__ = [
    "BOX_DECODER",
    "MOBILE_SAM",
    "BaseWeights",
    "load_base",
    "mobile_sam_with_box_decoder",
    "save_decoder",
    "sidecar_path",
    "write_json",
]

BOX_DECODER = "prompt_guided"
MOBILE_SAM = "mobile_sam"
#: Part name in MobileSAMv2's file (upstream's spelling) -> prefix in mobile_sam.pt.
_PARTS = {"PromtEncoder": "prompt_encoder.", "MaskDecoder": "mask_decoder."}
_DECODER_PREFIXES = tuple(_PARTS.values())


@dataclass
class BaseWeights:
    """A base file read once.

    Attributes
    ----------
    kind : {"prompt_guided", "mobile_sam"}
        Detected from the file's contents.
    path : pathlib.Path
    decoder : PromptDecoder
        Its prompt encoder and mask decoder, loaded strictly, on the CPU.
    encoder_state : dict of str to Tensor
        For ``"mobile_sam"``: every weight that is not the prompt encoder's or mask
        decoder's (the image encoder), written back unchanged. Empty otherwise.
    """

    kind: str
    path: Path
    decoder: PromptDecoder
    encoder_state: dict[str, torch.Tensor]


def load_base(path: str | os.PathLike[str]) -> BaseWeights:
    """Read a base file and detect its kind.

    Raises
    ------
    napari_mobilesam.WeightsError
        The file is missing or damaged, or its weights fit neither MobileSAM nor the
        prompt-guided decoder (the message says which file is expected).

    Examples
    --------
    >>> base = load_base("Prompt_guided_Mask_Decoder.pt")  # doctest: +SKIP
    >>> base.kind  # doctest: +SKIP
    'prompt_guided'
    """
    from napari_mobilesam.model.sam import MobileSAM
    from napari_mobilesam.weights.checkpoints import load_state_dict, load_weights_into

    path = Path(path).expanduser()
    state = load_state_dict(path)
    decoder = PromptDecoder()
    if any(key.startswith("image_encoder.") for key in state):
        load_weights_into(MobileSAM(), path)  # strict: a clear error for a wrong file
        kind = MOBILE_SAM
        decoder.load_state_dict(
            {k: v for k, v in state.items() if k.startswith(_DECODER_PREFIXES)}, strict=True
        )
        encoder_state = {k: v for k, v in state.items() if not k.startswith(_DECODER_PREFIXES)}
    else:
        load_weights_into(decoder, path)
        kind = BOX_DECODER
        encoder_state = {}
    decoder.source = str(path)
    return BaseWeights(kind, path, decoder.eval(), encoder_state)


def decoder_file_state(decoder: PromptDecoder, base: BaseWeights) -> dict[str, Any]:
    """What :func:`torch.save` writes for ``decoder`` in the format of ``base``."""
    state = {k: v.detach().cpu().clone() for k, v in decoder.state_dict().items()}
    if base.kind == BOX_DECODER:
        return {
            part: {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            for part, prefix in _PARTS.items()
        }
    merged = dict(base.encoder_state)
    merged.update(state)
    return merged


def save_decoder(decoder: PromptDecoder, base: BaseWeights, output: Path) -> None:
    """Write ``decoder`` to ``output`` in the format of ``base`` (complete or not at all)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        torch.save(decoder_file_state(decoder, base), tmp)


def mobile_sam_with_box_decoder(
    mobile_sam: str | os.PathLike[str],
    box_decoder: str | os.PathLike[str],
    output: str | os.PathLike[str],
) -> Path:
    """Write a ``mobile_sam.pt`` whose prompt encoder and mask decoder are those of a
    MobileSAMv2 box decoder file, its image encoder unchanged.

    The two decoders have one architecture (the box decoder's weights carry
    ``mobile_sam.pt``'s names without the ``prompt_encoder.`` / ``mask_decoder.``
    prefixes), so SegAny's decoder can start its fine-tuning from the box decoder's
    weights: what the tests and ``benchmarks/train_decoder.py`` do where only random
    ``mobile_sam.pt`` weights are at hand (a decoder with random weights has to learn from
    nothing how a prompt's position reaches the mask; README, "The mask decoders").

    Returns
    -------
    pathlib.Path
        ``output``, loadable with :func:`napari_mobilesam.build_mobile_sam`.

    Examples
    --------
    >>> mobile_sam_with_box_decoder(  # doctest: +SKIP
    ...     "mobile_sam.pt", "Prompt_guided_Mask_Decoder.pt", "start.pt"
    ... )
    PosixPath('start.pt')
    """
    whole, box = load_base(mobile_sam), load_base(box_decoder)
    if whole.kind != MOBILE_SAM or box.kind != BOX_DECODER:
        raise InvalidValueError(
            f"expected a mobile_sam.pt and a box decoder file, got a {whole.kind!r} file "
            f"({mobile_sam}) and a {box.kind!r} file ({box_decoder})"
        )
    output = Path(output)
    save_decoder(box.decoder, whole, output)
    return output


def sidecar_path(output: Path) -> Path:
    """The JSON that describes ``output``: the same name with ``.json``."""
    return output.with_suffix(".json")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def check_output(output: Path, base: BaseWeights) -> None:
    """Refuse to overwrite the base file with the result."""
    if output.exists() and output.resolve() == base.path.resolve():
        raise InvalidValueError(
            f"The output {output} is the base file itself; choose another output path so "
            "the starting weights are kept."
        )
