"""MobileSAM with its weights loaded: the one way the package builds the model."""

from __future__ import annotations

import os

from napari_mobilesam.model.sam import MobileSAM

__all__ = ["build_mobile_sam"]


def build_mobile_sam(checkpoint: str | os.PathLike | None = None) -> MobileSAM:
    """Build MobileSAM and load its weights.

    Parameters
    ----------
    checkpoint : str, path or None
        A ``mobile_sam.pt``-format state dict file, a registered checkpoint name, or None
        for the default weights: the file named by ``NAPARI_MOBILESAM_WEIGHTS`` if set,
        else the official MobileSAM weights, downloaded once into the user's cache.

    Returns
    -------
    MobileSAM
        The model on the CPU, in evaluation mode.

    Raises
    ------
    napari_mobilesam.WeightsError
        When the weights cannot be found, downloaded or read, or do not fit the model.

    Examples
    --------
    >>> model = build_mobile_sam("mobile_sam.pt")  # doctest: +SKIP
    """
    from napari_mobilesam.weights.checkpoints import load_weights_into
    from napari_mobilesam.weights.fetch import resolve_checkpoint

    model = MobileSAM()
    load_weights_into(model, resolve_checkpoint(checkpoint))
    return model.eval()
