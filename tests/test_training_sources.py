"""Training data sources: folders paired by name, COCO files, napari layer data, and the
shared command-line options; bad input gives clear errors and loses nothing."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import tifffile

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
from napari_mobilesam.training.data_arguments import add_data_arguments, annotations_from_args
from napari_mobilesam.training.sources import (
    annotations_from_arrays,
    annotations_from_coco,
    annotations_from_folders,
    load_annotations,
)


def _write_pairs(tmp_path, count=3, shape=(64, 64)):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    truth = {}
    for seed in range(count):
        image, label = synthetic_nuclei(shape, seed=seed)
        tifffile.imwrite(images / f"img_{seed}.tif", image)
        tifffile.imwrite(labels / f"img_{seed}_masks.tif", label)
        truth[f"img_{seed}"] = (image, label)
    return images, labels, truth


def test_folders_pair_by_name(tmp_path):
    images, labels, truth = _write_pairs(tmp_path)
    items = annotations_from_folders(images, labels)
    assert [item.name for item in items] == sorted(truth)
    for item in items:
        np.testing.assert_array_equal(item.image, truth[item.name][0])
        np.testing.assert_array_equal(item.labels, truth[item.name][1])


def test_folders_unpaired_files_are_left_out_with_a_warning(tmp_path):
    images, labels, _ = _write_pairs(tmp_path)
    tifffile.imwrite(images / "lonely.tif", np.zeros((64, 64), np.uint8))
    with pytest.warns(UserWarning, match="lonely"):
        items = annotations_from_folders(images, labels)
    assert len(items) == 3


def test_folders_without_any_pair_are_an_error(tmp_path):
    images, labels, _ = _write_pairs(tmp_path, count=1)
    (labels / "img_0_masks.tif").rename(labels / "other_masks.tif")
    with pytest.raises(InvalidValueError, match="no image"):
        annotations_from_folders(images, labels)


def test_folders_shape_mismatch_names_the_file(tmp_path):
    images, labels, _ = _write_pairs(tmp_path, count=1)
    tifffile.imwrite(labels / "img_0_masks.tif", np.ones((32, 64), np.int32))
    with pytest.raises(InvalidValueError, match="img_0"):
        annotations_from_folders(images, labels)


def test_folders_float_labels_are_refused(tmp_path):
    images, labels, _ = _write_pairs(tmp_path, count=1)
    tifffile.imwrite(labels / "img_0_masks.tif", np.ones((64, 64), np.float32) * 0.5)
    with pytest.raises(InvalidTypeError, match="integers"):
        annotations_from_folders(images, labels)


def test_folders_without_objects_are_an_error(tmp_path):
    images, labels, _ = _write_pairs(tmp_path, count=1)
    tifffile.imwrite(labels / "img_0_masks.tif", np.zeros((64, 64), np.int32))
    with pytest.raises(InvalidValueError, match="no object"):
        annotations_from_folders(images, labels)


def test_arrays_stack_keeps_planes_with_objects():
    image, label = synthetic_nuclei((64, 64), seed=0)
    stack = np.stack([image, image, image])
    labels = np.stack([label, np.zeros_like(label), label])
    items = annotations_from_arrays(stack, labels, "cells", contrast_limits=(0, 1000))
    assert [item.name for item in items] == ["cells[z=0]", "cells[z=2]"]
    assert items[0].contrast_limits == (0, 1000)


def test_arrays_stack_axis_not_leading():
    image, label = synthetic_nuclei((64, 64), seed=0)
    items = annotations_from_arrays(
        np.stack([image, image], axis=-1), np.stack([label, label], axis=-1), "a", axis=2
    )
    assert len(items) == 2
    np.testing.assert_array_equal(items[1].labels, label)


def test_arrays_rgb_image_and_2d_labels():
    rgb = np.zeros((32, 32, 3), np.uint8)
    labels = np.zeros((32, 32), np.int32)
    labels[4:10, 4:10] = 3
    (item,) = annotations_from_arrays(rgb, labels, "rgb")
    assert item.image.shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("labels", "match"),
    [(np.zeros((32, 32), np.int32), "no object"), (np.ones((16, 32), np.int32), "shape")],
)
def test_arrays_bad_input(labels, match):
    with pytest.raises(InvalidValueError, match=match):
        annotations_from_arrays(np.zeros((32, 32)), labels, "bad")


def _write_coco(tmp_path, shape=(64, 64)):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    image, label = synthetic_nuclei(shape, seed=3)
    Image.fromarray((image / image.max() * 255).astype(np.uint8)).save(folder / "a.png")
    annotations = []
    for object_id in np.unique(label)[1:]:
        rows, cols = np.nonzero(label == object_id)
        x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
        polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[float(v) for v in polygon]],
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float((x1 - x0) * (y1 - y0)),
                "iscrowd": 0,
            }
        )
    annotations.append({"id": 999, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]})
    content = {
        "images": [{"id": 1, "file_name": "a.png", "height": shape[0], "width": shape[1]}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(content))
    return path, folder, len(annotations)


def test_coco_objects_become_a_label_image(tmp_path):
    path, folder, count = _write_coco(tmp_path)
    (item,) = annotations_from_coco(path, folder)
    assert item.name == "a"
    assert item.image.shape[:2] == item.labels.shape == (64, 64)
    assert 0.8 * count <= item.n_objects <= count  # larger objects first, small ones on top


def test_coco_that_does_not_match_the_images(tmp_path):
    path, folder, _ = _write_coco(tmp_path)
    content = json.loads(path.read_text())
    content["images"][0]["height"] = 80
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidValueError, match="does not match"):
        annotations_from_coco(path, folder)
    content["images"][0]["file_name"] = "missing.png"
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidValueError, match=r"missing\.png"):
        annotations_from_coco(path, folder)


def test_coco_that_is_not_coco(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(InvalidValueError, match="not a COCO"):
        annotations_from_coco(path, tmp_path)


def test_load_annotations_dispatches_and_checks(tmp_path):
    images, labels, _ = _write_pairs(tmp_path, count=2)
    assert len(load_annotations(images, labels)) == 2
    with pytest.raises(InvalidValueError, match="label images"):
        load_annotations(images)
    with pytest.raises(InvalidValueError, match="not both"):
        load_annotations(images, labels, coco="x.json")


def test_command_line_options_split_by_image(tmp_path):
    images, labels, _ = _write_pairs(tmp_path, count=5)
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args([str(images), "--labels", str(labels)])
    train, validation = annotations_from_args(args)
    assert len(train) == 4
    assert len(validation) == 1
    with pytest.raises(SystemExit):
        parser.parse_args([str(images)])  # neither --labels nor --coco
