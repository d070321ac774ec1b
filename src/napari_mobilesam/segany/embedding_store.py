"""Precomputed image embeddings in a zarr store, keyed by image content.

``napari-mobilesam embed`` fills a store overnight; later, :meth:`EmbeddingStore.load_into`
puts an image's embeddings into a :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`'s
cache
so that the first click on that image is answered without running the encoder.

Layout: a zarr group (``STORE.zarr``) with one ``(1, 256, 64, 64)`` float32 array per model
input, named by the content key that the predictor's own cache uses (a hash of the RGB
uint8 image the encoder sees) and holding the image's ``(H, W)`` in its attributes. An image
that the model takes whole has one entry; a large image, tiled as ``segment_everything``
tiles it, has one per tile. The group's attributes record a fingerprint of the image
encoder's weights: a store is never used with other weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam._atomic_files import atomic_path, remove_stale_temporaries
from napari_mobilesam.engines.cache import weights_fingerprint
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.convert import display_range
from napari_mobilesam.imaging.prepared_input import ModelInput, model_input
from napari_mobilesam.imaging.tiling import (
    DEFAULT_HALO,
    DEFAULT_TILE_SHAPE,
    Tile,
    TileGrid,
    needs_tiling,
)

__all__ = ["EmbeddingStore", "encoder_fingerprint", "model_inputs", "tiled_model_inputs"]


def encoder_fingerprint(predictor: Any) -> str:
    """A short hash of the predictor's image encoder weights (computed once per model),
    with "-int8" when its engine quantises the encoder: int8 embeddings differ from
    float32 ones by more than a store may mix (float32 engines agree within 1e-5)."""
    fingerprint = weights_fingerprint(predictor.model.image_encoder)
    if getattr(predictor, "engine", "torch") == "torch":
        return fingerprint
    quantised = predictor.prepare_engine().endswith("int8")
    return f"{fingerprint}-int8" if quantised else fingerprint


def model_inputs(
    image: Any,
    contrast_limits: Sequence[float] | None = None,
    *,
    tiling: bool = True,
    tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
    halo: int | Sequence[int] = DEFAULT_HALO,
) -> Iterator[ModelInput]:
    """The inputs the encoder sees for ``image`` (the whole image, or its tiles), each
    converted and hashed once.

    Tiles are made as :func:`napari_mobilesam.segment_everything` makes them: only for an
    image larger than the model's input that one tile does not cover, with the whole
    image's display range (``contrast_limits`` when given).
    """
    for _, prepared in tiled_model_inputs(
        image, contrast_limits, tiling=tiling, tile_shape=tile_shape, halo=halo
    ):
        yield prepared


def tiled_model_inputs(
    image: Any,
    contrast_limits: Sequence[float] | None = None,
    *,
    tiling: bool = True,
    tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
    halo: int | Sequence[int] = DEFAULT_HALO,
) -> Iterator[tuple[Tile | None, ModelInput]]:
    """:func:`model_inputs` with the tile each input is of (None for the whole image).

    A :class:`ModelInput` is one input, taken as it is.
    """
    from napari_mobilesam.imaging.tiling import read_region

    if isinstance(image, ModelInput):
        yield None, image
        return
    shape = tuple(int(side) for side in np.shape(image))[:2]
    grid = TileGrid(shape, tile_shape, halo)
    if not tiling or not needs_tiling(shape) or grid.is_single:
        yield None, model_input(np.asarray(image), contrast_limits)
        return
    limits = contrast_limits if contrast_limits is not None else display_range(image)
    for tile in grid.tiles:
        yield tile, model_input(read_region(image, tile), limits)


class EmbeddingStore:
    """A folder of precomputed image embeddings (a zarr group), keyed by content.

    Parameters
    ----------
    path : str or path
        The store, e.g. ``"embeddings.zarr"``; created on the first :meth:`add`.

    Examples
    --------
    >>> store = EmbeddingStore("embeddings.zarr")  # doctest: +SKIP
    >>> store.add(predictor, image)  # encodes (or finds) the image  # doctest: +SKIP
    >>> store.load_into(other_predictor, image)  # no encoder call  # doctest: +SKIP
    True
    >>> other_predictor.set_image(image)  # served from the cache  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._matches: tuple[str, bool] | None = None

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, {len(self)} embeddings)"

    def keys(self) -> list[str]:
        """Content keys of the stored embeddings."""
        if not self.path.is_dir():
            return []
        return sorted(
            p.name for p in self.path.iterdir() if not p.name.startswith(".") and p.is_dir()
        )

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _has_array(self.path / key)

    @property
    def fingerprint(self) -> str | None:
        """The encoder fingerprint of the stored embeddings (None for an empty store)."""
        if not (self.path / "zarr.json").is_file() and not (self.path / ".zattrs").is_file():
            return None
        import zarr

        return zarr.open_group(str(self.path), mode="r").attrs.get("encoder_fingerprint")

    def remove_stale_temporaries(self) -> int:
        """Delete the half-written entries of runs that have ended; returns how many."""
        return len(remove_stale_temporaries(self.path)) if self.path.is_dir() else 0

    def get(self, key: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        """``(embedding, (H, W))`` stored under ``key``, or None."""
        if key not in self:
            return None
        import zarr

        array = zarr.open_array(str(self.path / key), mode="r")
        height, width = array.attrs["image_shape"]
        return np.asarray(array[...]), (int(height), int(width))

    def put(self, key: str, embedding: Any, image_shape: Sequence[int]) -> None:
        """Store one embedding (written under a temporary name, then renamed)."""
        import zarr

        data = np.asarray(embedding.cpu() if hasattr(embedding, "cpu") else embedding)
        with atomic_path(self.path / key) as tmp:
            array = zarr.open_array(
                str(tmp), mode="w", shape=data.shape, chunks=data.shape, dtype="f4"
            )
            array[...] = data
            array.attrs["image_shape"] = [int(side) for side in image_shape[:2]]

    def add(
        self,
        predictor: Any,
        image: Any,
        contrast_limits: Sequence[float] | None = None,
        *,
        tiling: bool = True,
        tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
        halo: int | Sequence[int] = DEFAULT_HALO,
    ) -> int:
        """Encode ``image`` (whole or tiled) with ``predictor`` and store what is missing.

        Returns
        -------
        int
            The number of embeddings computed (0 when all were stored already).
        """
        self._claim(predictor)
        computed = 0
        for prepared in model_inputs(
            image, contrast_limits, tiling=tiling, tile_shape=tile_shape, halo=halo
        ):
            if prepared.key in self:
                continue
            predictor.set_image(prepared)
            self.put(prepared.key, predictor.get_image_embedding(), prepared.shape)
            computed += 1
        return computed

    def load_into(
        self,
        predictor: Any,
        image: Any,
        contrast_limits: Sequence[float] | None = None,
        *,
        tiling: bool = True,
        tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
        halo: int | Sequence[int] = DEFAULT_HALO,
    ) -> bool:
        """Put the stored embeddings of ``image`` into ``predictor``'s cache.

        After it returns True, ``predictor.set_image(image, contrast_limits)`` (or a tiled
        predictor's tiles) costs no encoder call. ``contrast_limits`` must be those the
        image will be set with: the key is the content of the model's input.

        Returns
        -------
        bool
            True when every embedding of the image was found (found ones are loaded even
            when some are missing); False also when the store was made with other weights.
        """
        stored = self.fingerprint
        if stored is None or stored != encoder_fingerprint(predictor):
            return False
        found = True
        for prepared in model_inputs(
            image, contrast_limits, tiling=tiling, tile_shape=tile_shape, halo=halo
        ):
            entry = self.get(prepared.key)
            if entry is None:
                found = False
                continue
            predictor.cache_embedding(prepared.key, *entry)
        return found

    def lookup(self, predictor: Any, key: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        """``(embedding, (H, W))`` of the model input ``key`` if this store holds it for
        ``predictor``'s weights, else None (the fingerprint is checked once per store).

        This is what :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor` asks when it
        has an
        ``embedding_store``: a stored image is then not encoded.
        """
        fingerprint = encoder_fingerprint(predictor)
        if self._matches is None or self._matches[0] != fingerprint:
            self._matches = (fingerprint, self.fingerprint == fingerprint)
        return self.get(key) if self._matches[1] else None

    def _claim(self, predictor: Any) -> None:
        """Create the store, or check that it holds embeddings of ``predictor``'s weights."""
        import zarr

        fingerprint = encoder_fingerprint(predictor)
        stored = self.fingerprint
        if stored is None:
            group = zarr.open_group(str(self.path), mode="a")
            group.attrs["encoder_fingerprint"] = fingerprint
            group.attrs["format"] = "napari-mobilesam embeddings 1"
        elif stored != fingerprint:
            raise InvalidValueError(
                f"{self.path} holds embeddings of other model weights (encoder fingerprint "
                f"{stored}, this model {fingerprint}); use another store path."
            )


def _has_array(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zarray").is_file()
