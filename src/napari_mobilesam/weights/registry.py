"""The official checkpoint files: where each comes from and the id that identifies it.

Every failure a user can meet with weights (offline, a damaged download, the wrong file) is
raised as :class:`WeightsError`, defined here because every stage of ``weights`` raises it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from napari_mobilesam.errors import InvalidValueError

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_CHECKPOINT",
    "ID_KINDS",
    "SHA256_OF_GITBLOB",
    "Checkpoint",
    "WeightsError",
    "lookup_checkpoint",
]

DEFAULT_CHECKPOINT = "mobile_sam"

#: The kinds of file id understood by :func:`~napari_mobilesam.weights.verify.file_id` and
#: :attr:`Checkpoint.known_id`.
ID_KINDS = ("sha256", "gitblob")
ID_PATTERN = re.compile(r"(sha256:[0-9a-f]{64}|gitblob:[0-9a-f]{40})")

_MOBILE_SAM_GITBLOB = "gitblob:7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7"
#: The SHA-256 of official files known by their git blob id: the same file named both ways
#: (``weights/mobile_sam.pt`` of the MobileSAM repository, 40,728,226 bytes, as published by
#: several projects that pin it). Downloads are checked against both.
SHA256_OF_GITBLOB = {
    _MOBILE_SAM_GITBLOB: (
        "sha256:6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    ),
}


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
        ``"gitblob:<40 hex digits>"`` (see
        :func:`~napari_mobilesam.weights.verify.file_id`). Downloaded and cached copies are
        checked against it. None when no id is known: the file is then used without
        verification.

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
        if self.known_id is not None and not ID_PATTERN.fullmatch(self.known_id):
            raise InvalidValueError(
                f"Expected the known_id of checkpoint {self.name!r} to be None, "
                "'sha256:' followed by 64 lowercase hex digits or 'gitblob:' followed by 40; "
                f"received {self.known_id!r}."
            )

    @property
    def sha256(self) -> str | None:
        """``"sha256:<hex>"`` of the official file, when known: :attr:`known_id` itself, or
        the SHA-256 recorded in :data:`SHA256_OF_GITBLOB` for a git blob id; else None."""
        if self.known_id is None or self.known_id.startswith("sha256:"):
            return self.known_id
        return SHA256_OF_GITBLOB.get(self.known_id)


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
            known_id=_MOBILE_SAM_GITBLOB,
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


def lookup_checkpoint(name: str) -> Checkpoint:
    """Return the checkpoint registered as ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`CHECKPOINTS`.

    Returns
    -------
    Checkpoint
        The registered checkpoint.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`CHECKPOINTS`; the message lists the known names.
    """
    try:
        return CHECKPOINTS[name]
    except (KeyError, TypeError):
        names = ", ".join(repr(known) for known in CHECKPOINTS)
        raise InvalidValueError(
            f"Expected a checkpoint name among {names}; received {name!r}."
        ) from None
