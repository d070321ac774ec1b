"""One input of a batch run, plane by plane: segment, then write what each plane gave.

The planes go through :func:`napari_mobilesam.stacks.planes.segment_planes`. Each finished
plane's labels go into the label image (a tile window at a time for a 2-D zarr output, a
plane at a time otherwise), and its rows of the objects table and its COCO annotations are
computed from that plane's labels and image while they are in memory. A stack that is
linked (TIFF output, one stack axis) is tabled after linking, from the linked labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mobilesam.batch import outputs
from napari_mobilesam.imaging.convert import has_contrast
from napari_mobilesam.imaging.image_files import InputItem, read_image, stack_layout
from napari_mobilesam.stacks.planes import PlaneSkipped, SegmentedPlane, link_planes

if TYPE_CHECKING:
    import pandas as pd

    from napari_mobilesam.batch.settings import BatchSettings

__all__ = ["segment_and_write"]


@dataclass(frozen=True)
class _Layout:
    """Which axes of an input are its stack, read one plane at a time."""

    order: tuple[int, ...]  # stack axes first, then Y, X (and channels)
    n_stack: int
    shape: tuple[int, ...]  # of the label image: stack shape, then (H, W)
    stack_letter: str

    @classmethod
    def of(cls, image: Any, axes: str | None, axis: int | str | None) -> _Layout:
        order, rgb = stack_layout(image.shape, axes, axis)
        n_stack = len(order) - 2 - rgb
        sides = tuple(int(image.shape[i]) for i in order)
        letter = axes[order[0]].upper() if axes and n_stack else ""
        return cls(order, n_stack, sides[: n_stack + 2], letter)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return self.shape[: self.n_stack]

    def plane(self, image: Any, index: tuple[int, ...]) -> Any:
        """The plane at stack position ``index``, Y, X (, C) in that order; a 2-D lazy
        image is returned as it is, to be read tile by tile."""
        if not self.n_stack and self.order == tuple(range(len(self.order))):
            return image
        where: list[Any] = [slice(None)] * len(self.order)
        for axis, position in zip(self.order[: self.n_stack], index, strict=True):
            where[axis] = position
        plane = np.asarray(image[tuple(where)])
        rest = sorted(self.order[self.n_stack :])
        return np.transpose(plane, [rest.index(a) for a in self.order[self.n_stack :]])


@dataclass
class _PlaneWriter:
    """The sink of :func:`segment_planes`: each plane into the outputs, then forgotten."""

    labels: Any  # the label image being written (numpy for TIFF, zarr)
    layout: _Layout
    source: str
    direct: bool  # planes are segmented straight into ``labels``
    tabled: bool  # tables and COCO are made per plane (not after linking)
    coco: bool
    ranges: dict = field(default_factory=dict)  # filters on object features
    images: dict[int, Any] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    tables: list[pd.DataFrame] = field(default_factory=list)
    coco_images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    positions: list[tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        self.positions = list(np.ndindex(*self.layout.stack_shape))

    def out(self, number: int) -> Any:
        """Where plane ``number`` is segmented into (None: into memory, copied after)."""
        if isinstance(self.labels, np.ndarray):
            return self.labels[self.positions[number]]
        return self.labels if self.direct else None

    def add(self, plane: SegmentedPlane) -> None:
        index = self.positions[plane.number]
        image = self.images.pop(plane.number, None)
        if plane.skipped:
            self.notes.append(plane.message)
            labels = np.zeros(self.layout.shape[-2:], np.int32)
        else:
            labels = plane.labels
            if not isinstance(labels, np.ndarray):  # segmented into a zarr array
                labels = np.asarray(labels[...])
            if plane.message and plane.message not in self.notes:
                self.notes.append(plane.message)
        scores = dict(zip(plane.ids.tolist(), plane.scores.tolist(), strict=True))
        if self.ranges and not plane.skipped:
            labels, scores = self.filtered(labels, image, scores, index)
        self.scores.update(scores)
        if not plane.skipped and not self.direct and not isinstance(self.labels, np.ndarray):
            self.labels[index] = labels
        if self.tabled:
            self.table(plane.number, labels, image)

    def filtered(
        self, labels: np.ndarray, image: Any, scores: dict[int, float], index: tuple
    ) -> tuple[np.ndarray, dict[int, float]]:
        """The plane's labels and scores without the objects outside :attr:`ranges`,
        written back where the plane was segmented into."""
        from napari_mobilesam.curation.features import filter_objects, object_features

        needs_image = "mean_intensity" in self.ranges and image is not None
        features = object_features(labels, np.asarray(image) if needs_image else None, scores)
        labels = filter_objects(labels, features, self.ranges)
        if isinstance(self.labels, np.ndarray):
            self.labels[index] = labels
        elif self.direct:
            self.labels[...] = labels
        kept = set(np.unique(labels).tolist())
        return labels, {i: s for i, s in scores.items() if i in kept}

    def table(self, number: int, labels: np.ndarray, image: Any) -> None:
        """The objects table rows and COCO annotations of one plane."""
        index = self.positions[number]
        self.tables.append(outputs.object_table(labels, self.scores, image, index))
        if self.coco:
            position = index if self.layout.n_stack else None
            image_entry, annotations = outputs.coco_plane(
                labels, self.scores, self.source, number, position
            )
            self.coco_images.append(image_entry)
            self.annotations.extend(annotations)


def segment_and_write(
    item: InputItem,
    settings: BatchSettings,
    outdir: Path,
    models: tuple[Any, Any, Any],
    *,
    coco: bool,
    axis: int | str | None,
    label_format: str,
) -> tuple[int, list[str]]:
    """Segment ``item`` with ``models`` (predictor, detector, box decoder) and write its
    label image, objects CSV and (``coco``) COCO part. Returns objects and notes."""
    image, axes = read_image(item.source)
    layout = _Layout.of(image, axes, axis)
    paths = outputs.output_paths(outdir, item.key)
    fmt = outputs.label_format_for(layout.shape, label_format)
    outdir.mkdir(parents=True, exist_ok=True)
    link = _link_mode(settings.link, layout, fmt)
    with outputs.atomic_path(paths[fmt]) as tmp:
        labels = (
            outputs.open_zarr_labels(tmp, layout.shape)
            if fmt == "zarr"
            else np.zeros(layout.shape, np.int32)
        )
        writer = _PlaneWriter(
            labels,
            layout,
            item.source,
            direct=fmt == "zarr" and not layout.n_stack,
            tabled=link == "off",
            coco=coco,
            ranges=settings.ranges,
        )
        _segment(image, writer, settings, models)
        if link != "off":
            _link_and_table(image, writer, link)
        elif settings.link != "off" and layout.n_stack > 1:
            writer.notes.append("not linked: linking needs one stack axis (choose it with --axis)")
        if fmt == "tiff":
            outputs.write_labels(tmp, labels)
    outputs.check_labels(paths[fmt], layout.shape)  # before the CSV marks the input done
    _write_tables(writer, paths, coco)
    return len(writer.scores), writer.notes


def _link_mode(link: str, layout: _Layout, fmt: str) -> str:
    """The link of this input: "off" unless it is a TIFF stack along one axis."""
    if link == "auto":
        link = "t" if layout.stack_letter == "T" else "z"
    one_axis = layout.n_stack == 1 and layout.shape[0] > 1
    return link if one_axis and fmt == "tiff" else "off"


def _segment(image: Any, writer: _PlaneWriter, settings: BatchSettings, models: tuple) -> None:
    import torch

    from napari_mobilesam.stacks.planes import segment_planes

    predictor, detector, box_decoder = models
    positions = writer.positions

    def read_plane(number: int) -> tuple[Any, Any]:
        plane = writer.layout.plane(image, positions[number])
        if _is_constant(plane):
            raise PlaneSkipped(f"plane {positions[number]} is constant: no objects")
        writer.images[number] = plane
        return plane, settings.contrast_limits

    if box_decoder.message:  # said once for the input, not in every plane's note
        writer.notes.append(box_decoder.message)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads or threads)
    try:
        segment_planes(
            read_plane,
            len(positions),
            settings,
            sink=writer.add,
            predictor=predictor,
            out=writer.out,
            detector=None if isinstance(detector, str) else detector,
            box_decoder=replace(box_decoder, message=""),
        )
    finally:
        torch.set_num_threads(threads)


def _link_and_table(image: Any, writer: _PlaneWriter, link: str) -> None:
    """Link the planes of a TIFF stack in place, then table each plane's linked objects."""
    linked = link_planes(writer.labels, link, writer.scores)
    writer.labels[...] = linked.labels
    table = linked.table
    writer.scores = dict(
        zip(table["label"].tolist(), table["mean_score"].astype(float).tolist(), strict=True)
    )
    for number, index in enumerate(writer.positions):
        writer.table(number, writer.labels[index], writer.layout.plane(image, index))
    kind = "tracks" if link == "t" else "3-D"
    writer.notes.append(f"objects linked across planes ({kind})")


def _write_tables(writer: _PlaneWriter, paths: dict[str, Path], coco: bool) -> None:
    import pandas as pd

    if coco:
        part = {"images": writer.coco_images, "annotations": writer.annotations}
        with outputs.atomic_path(paths["coco"]) as tmp:
            tmp.write_text(json.dumps(part))
    with outputs.atomic_path(paths["csv"]) as tmp:
        pd.concat(writer.tables, ignore_index=True).to_csv(tmp, index=False)


def _is_constant(plane: Any) -> bool:
    """True for an in-memory plane without contrast; a lazy plane is not read whole here
    (tiled SegEvery reads it tile by tile and reports a blank image itself)."""
    return isinstance(plane, np.ndarray) and not has_contrast(plane)
