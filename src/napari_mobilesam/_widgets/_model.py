"""One MobileSAM model per checkpoint file, shared by every widget of the session.

Loading takes a few seconds and about 40 MB, so the SegAny and SegEvery widgets (and a
second viewer) reuse one model; each keeps its own predictor, which holds its own image.
Call these functions from a thread worker: they may download the weights.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import Signal

from napari_mobilesam._torch_guard import prepare_torch_import

if TYPE_CHECKING:
    from napari_mobilesam.model import MobileSAM
    from napari_mobilesam.segany.embedding_cache import EmbeddingCache
    from napari_mobilesam.segany.predictor import SegAnyPredictor

#: A store of precomputed embeddings (``napari-mobilesam embed``) for the widgets.
EMBEDDINGS_ENV = "NAPARI_MOBILESAM_EMBEDDINGS"
#: What runs the networks in the widgets ("torch", "auto", "openvino", "openvino-int8"):
#: the default of the widgets' Engine setting (:data:`ENGINE`).
ENGINE_ENV = "NAPARI_MOBILESAM_ENGINE"


class EngineSetting:
    """The engine the widgets run the networks with: one value for the session, shared
    by every widget (they share one model); ``NAPARI_MOBILESAM_ENGINE`` (else "torch")
    until a widget's Engine field sets it. ``changed`` is emitted with the new name."""

    changed = Signal(str)

    def __init__(self) -> None:
        self._value: str | None = None

    @property
    def value(self) -> str:
        if self._value is not None:
            return self._value
        return os.environ.get(ENGINE_ENV, "").strip() or "torch"

    def set(self, name: str) -> None:
        if name != self.value:
            self._value = name
            self.changed.emit(name)

    def reset(self) -> None:
        """Back to the environment's default (a new session; tests)."""
        self._value = None


#: The widgets' engine setting.
ENGINE = EngineSetting()

_models: dict[Path, MobileSAM] = {}
_models_lock = threading.Lock()
#: Embeddings shared by every widget's predictor, per model: a tile SegAny encoded is not
#: encoded again by SegEvery (1024² embeddings of 4 MiB: 256 MiB at most).
SHARED_CACHE_SIZE = 64
_caches: dict[int, EmbeddingCache] = {}


def leave_a_core_for_the_gui() -> int:
    """Set torch's CPU thread count so that inference does not starve napari's GUI thread.

    torch uses one thread per physical core by default. With four cores or more, one is
    left to the GUI (and to vispy's drawing); with fewer, inference keeps them all, as a
    2-core laptop would otherwise run at half speed for a GUI that is mostly idle while
    it waits. ``NAPARI_MOBILESAM_THREADS`` overrides the count. Returns the count set.
    """

    import torch

    override = os.environ.get("NAPARI_MOBILESAM_THREADS", "").strip()
    if override.isdigit() and int(override) > 0:
        threads = int(override)
    else:
        cores = torch.get_num_threads()
        threads = cores - 1 if cores >= 4 else cores
    torch.set_num_threads(threads)
    return threads


def shared_model() -> MobileSAM:
    """Return the MobileSAM model for the default weights, loading it on first use.

    The weights are those of :func:`napari_mobilesam.weights.fetch.fetch_checkpoint`:
    ``NAPARI_MOBILESAM_WEIGHTS`` if set, else the official file, downloaded once.

    Raises
    ------
    napari_mobilesam.WeightsError
        If the weights cannot be found, downloaded or loaded.
    """
    prepare_torch_import()
    from napari_mobilesam.weights.build import build_mobile_sam
    from napari_mobilesam.weights.fetch import fetch_checkpoint

    path = fetch_checkpoint(progress=False).resolve()
    with _models_lock:
        if path not in _models:
            if not _models:
                leave_a_core_for_the_gui()
            _models[path] = build_mobile_sam(path)
        return _models[path]


def new_predictor() -> SegAnyPredictor:
    """Return a new predictor on the shared model (see :func:`shared_model`) and its
    shared embedding cache: what one widget encoded, another does not encode again.

    With ``NAPARI_MOBILESAM_EMBEDDINGS`` set to a store made by ``napari-mobilesam embed``,
    images (and tiles) found there are not encoded: the first click on them is instant.
    The engine is the widgets' Engine setting (:data:`ENGINE`, default
    ``NAPARI_MOBILESAM_ENGINE``, else "torch"; see
    :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`); SegEvery's detector
    follows the predictor's. An OpenVINO engine is converted on first use, in a thread.
    """
    model = shared_model()
    from napari_mobilesam.segany.embedding_cache import EmbeddingCache
    from napari_mobilesam.segany.embedding_store import EmbeddingStore
    from napari_mobilesam.segany.predictor import SegAnyPredictor

    store_path = os.environ.get(EMBEDDINGS_ENV, "").strip()
    store = EmbeddingStore(Path(store_path).expanduser()) if store_path else None
    engine = ENGINE.value
    with _models_lock:
        cache = _caches.setdefault(id(model), EmbeddingCache(SHARED_CACHE_SIZE))
    return SegAnyPredictor(model, embedding_store=store, embedding_cache=cache, engine=engine)
