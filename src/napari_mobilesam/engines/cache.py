"""Where converted models live: next to the weights cache, keyed by the weights' fingerprint.

``cache_dir()/engines/<fingerprint>/<network>-<precision>-<library><version>/``: a new
weights file, precision, calibration set or library version gets its own file; the same
ones reuse it. The engine chosen by ``engine="auto"`` is remembered beside them
(:mod:`napari_mobilesam.engines.choice`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from napari_mobilesam.weights.fetch import cache_dir

__all__ = ["engine_dir", "engine_path", "hash_weights", "library_tag", "weights_fingerprint"]

_FINGERPRINTS: dict[int, str] = {}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of ``module``'s weights (computed once per module object).

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    str
        16 hexadecimal digits; equal weights give equal fingerprints.

    Examples
    --------
    >>> from torch import nn
    >>> len(weights_fingerprint(nn.Linear(2, 2)))
    16
    """
    if id(module) not in _FINGERPRINTS:
        _FINGERPRINTS[id(module)] = hash_weights(module)
    return _FINGERPRINTS[id(module)]


def hash_weights(module: torch.nn.Module) -> str:
    """16 hexadecimal digits of ``module``'s current weights (computed on every call)."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def engine_dir(fingerprint: str) -> Path:
    """The folder of the converted models of the weights with this fingerprint."""
    return cache_dir() / "engines" / fingerprint


def library_tag(library: str, version: str) -> str:
    """``library`` and its ``version`` as a file name part (OpenVINO's versions hold "/")."""
    return library + "".join(c if c.isalnum() or c in ".-" else "_" for c in version)


def engine_path(fingerprint: str, name: str, library: str, version: str) -> Path:
    """The model file of network ``name`` converted for ``library`` ``version``, alone in
    its folder (written whole or not at all)."""
    return engine_dir(fingerprint) / f"{name}-{library_tag(library, version)}" / "model.xml"
