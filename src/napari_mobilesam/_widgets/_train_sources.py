"""What the Train widget trains on: image / Labels layer pairs, or a folder pair.

:class:`TrainingData` is the widget's upper part: an image and a labels picker with
"Add pair", the list of pairs (select and "Remove"), or the two folders; and a note that
says how the annotated images will be split for validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, RadioButtons, Select
from napari.layers import Image, Labels

from napari_mobilesam._widgets._plane import layer_in_viewer, model_contrast_limits, unproxied
from napari_mobilesam._widgets._train_job import LayerPair, split_note

if TYPE_CHECKING:
    import napari

LAYERS = "layers"
FOLDERS = "folders"


def planes_with_objects(labels: Any) -> int:
    """How many 2-D planes of a label image (or stack) hold at least one object."""
    data = np.asarray(labels)
    if data.ndim <= 2:
        return int(data.any())
    return int(np.count_nonzero(data.reshape(-1, *data.shape[-2:]).any(axis=(1, 2))))


def level0(layer: Image | Labels) -> Any:
    """The full-resolution data of a layer (level 0 of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


def chosen_folder(field: FileEdit) -> Path | None:
    """The folder a FileEdit names, or None when it is empty or not a folder."""
    value = field.value
    if value is None or str(value).strip() in ("", "."):
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


class TrainingData(Container):
    """The annotations to train on, picked from the viewer's layers or from two folders."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = unproxied(viewer)
        self.pairs: list[tuple[Image, Labels]] = []
        self._source = RadioButtons(
            label="Train on",
            choices=[("layers", LAYERS), ("folders", FOLDERS)],
            value=LAYERS,
            orientation="horizontal",
        )
        self._image_pick = ComboBox(label="Image", nullable=True, choices=self._choices(Image))
        self._labels_pick = ComboBox(label="Labels", nullable=True, choices=self._choices(Labels))
        self._labels_pick.tooltip = "The objects painted over the image (0 = background)."
        self._add = PushButton(text="Add pair")
        self._remove = PushButton(text="Remove selected")
        self._pair_list = Select(label="Pairs", choices=self._pair_choices, allow_multiple=True)
        self._pair_list.tooltip = (
            "The image / labels pairs to train on; stacks are fine (every plane with objects "
            "is one training image). With no pair added, the pair chosen above is used."
        )
        self._pair_list.native.setMaximumHeight(90)
        self._images_folder = FileEdit(
            label="Images folder", mode="d", visible=False, nullable=True
        )
        self._labels_folder = FileEdit(
            label="Labels folder", mode="d", visible=False, nullable=True
        )
        self._labels_folder.tooltip = (
            "Label images named like the images (img_01.tif <-> img_01.tif, "
            "img_01_masks.tif or img_01_labels.tif)."
        )
        self._note = Label(value="")
        super().__init__(
            widgets=[
                self._source,
                self._image_pick,
                self._labels_pick,
                Container(widgets=[self._add, self._remove], layout="horizontal", labels=False),
                self._pair_list,
                self._images_folder,
                self._labels_folder,
                self._note,
            ]
        )
        self._note.native.setWordWrap(True)
        self._source.changed.connect(self._on_source)
        self._add.changed.connect(self.add_pair)
        self._remove.changed.connect(self.remove_selected)
        for widget in (
            self._image_pick,
            self._labels_pick,
            self._images_folder,
            self._labels_folder,
        ):
            widget.changed.connect(self.update_note)
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self._on_layers)
        self.reset_choices()
        self._pick_defaults()
        self.update_note()

    # ------------------------------------------------------------ choices
    def _choices(self, kind: type) -> Any:
        def choices(_widget: Any = None) -> list[tuple[str, Any]]:
            return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

        return choices

    def _pair_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        return [
            (f"{image.name}  +  {labels.name}", number)
            for number, (image, labels) in enumerate(getattr(self, "pairs", []))
        ]

    def _pick_defaults(self) -> None:
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)]
        if images and self._image_pick.value is None:
            self._image_pick.value = images[-1]
        if labels and self._labels_pick.value is None:
            self._labels_pick.value = labels[-1]

    def _on_layers(self, _event: Any = None) -> None:
        self.pairs = [
            pair for pair in self.pairs if all(layer_in_viewer(self.viewer, x) for x in pair)
        ]
        self.reset_choices()
        self._pick_defaults()
        self.update_note()

    def _on_source(self, source: str) -> None:
        layers = source == LAYERS
        for widget in (
            self._image_pick,
            self._labels_pick,
            self._add,
            self._remove,
            self._pair_list,
        ):
            widget.visible = layers
        self._images_folder.visible = self._labels_folder.visible = not layers
        self.update_note()

    # ------------------------------------------------------------ pairs
    def add_pair(self, image: Image | None = None, labels: Labels | None = None) -> str:
        """Add a pair (by default the one picked); returns what the note then says."""
        image = self._image_pick.value if not isinstance(image, Image) else unproxied(image)
        labels = self._labels_pick.value if not isinstance(labels, Labels) else unproxied(labels)
        if image is None or labels is None:
            return self._say("Choose an image layer and a Labels layer, then Add pair.")
        if any(image is pair[0] and labels is pair[1] for pair in self.pairs):
            return self._say(f"{image.name} + {labels.name} is already in the list.")
        self.pairs.append((image, labels))
        self._pair_list.reset_choices()
        return self.update_note()

    def remove_selected(self) -> None:
        chosen = set(self._pair_list.value)
        self.pairs = [pair for number, pair in enumerate(self.pairs) if number not in chosen]
        self._pair_list.reset_choices()
        self.update_note()

    def chosen_pairs(self) -> list[tuple[Image, Labels]]:
        """The pairs of the list, or the picked pair when the list is empty."""
        if self.pairs:
            return list(self.pairs)
        if self._image_pick.value is None or self._labels_pick.value is None:
            return []
        return [(self._image_pick.value, self._labels_pick.value)]

    # ------------------------------------------------------------ for the job
    @property
    def uses_folders(self) -> bool:
        return self._source.value == FOLDERS

    def folders(self) -> tuple[Path, Path]:
        """The folder pair; ValueError with what to choose when one is missing."""
        images, labels = chosen_folder(self._images_folder), chosen_folder(self._labels_folder)
        if images is None:
            raise ValueError("Choose the folder of images to train on.")
        if labels is None:
            raise ValueError("Choose the folder of label images (named like the images).")
        return images, labels

    def layer_pairs(self) -> tuple[LayerPair, ...]:
        """The chosen pairs, their label images copied (painting goes on meanwhile)."""
        pairs = self.chosen_pairs()
        if not pairs:
            raise ValueError("Choose an image layer and the Labels layer painted over it.")
        names = {}
        for image, labels in pairs:
            name = image.name if image.name not in names else f"{image.name} ({labels.name})"
            names[name] = LayerPair(
                name=name,
                image=level0(image),
                labels=np.array(level0(labels), copy=True),
                contrast_limits=model_contrast_limits(image),
            )
        return tuple(names.values())

    # ------------------------------------------------------------ the note
    def update_note(self, _value: Any = None) -> str:
        """Say how many images there are to train on and how they will be split."""
        try:
            if self.uses_folders:
                return self._say(self._folder_note())
            pairs = self.chosen_pairs()
            images = sum(planes_with_objects(level0(labels)) for _image, labels in pairs)
        except Exception as exc:  # a note must never break the widget
            return self._say(f"Cannot count the annotated images: {exc}")
        lead = "" if self.pairs or not pairs else "No pair added: the pair above is used. "
        return self._say(lead + split_note(images))

    def _folder_note(self) -> str:
        from napari_mobilesam.imaging.image_files import pair_by_name

        images, labels = chosen_folder(self._images_folder), chosen_folder(self._labels_folder)
        if images is None or labels is None:
            return "Choose a folder of images and a folder of label images named like them."
        pairs, image_only, labels_only = pair_by_name([str(images)], [str(labels)])
        unpaired = len(image_only) + len(labels_only)
        extra = f" ({unpaired} file(s) without a partner are left out)" if unpaired else ""
        if not pairs:
            return "No image has a label image of the same name in these folders."
        return f"{len(pairs)} image / label file pair(s){extra}. " + split_note(len(pairs))

    def _say(self, text: str) -> str:
        self._note.value = text
        return text
