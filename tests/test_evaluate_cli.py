"""``napari-mobilesam evaluate``: label images or folders against ground truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from napari_mobilesam.batch.cli import main
from napari_mobilesam.evaluation import match_objects, synthetic_nuclei
from napari_mobilesam.imaging.label_files import write_labels


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Predictions for img_0 and img_1 (shifted truth), truth for img_0..img_2, and a
    prediction without truth."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    truths = {}
    for index in range(3):
        _, true = synthetic_nuclei((96, 96), seed=index)
        truths[f"img_{index}"] = true
        write_labels(gt / f"img_{index}_masks.tif", true)
        if index < 2:
            write_labels(pred / f"img_{index}.tif", np.roll(true, index + 1, axis=0))
    write_labels(pred / "extra.tif", true)
    return pred, gt, truths


def test_folders_are_paired_by_name_and_unpaired_files_reported(folders, tmp_path, capsys):
    pred, gt, truths = folders
    report = tmp_path / "report.csv"
    assert main(["evaluate", str(pred), str(gt), "-o", str(report), "-q"]) == 1
    out, err = capsys.readouterr()
    assert "extra.tif" in err and "img_2_masks.tif" in err and "no partner" in err
    assert "img_0" in out and "img_1" in out and "mSA" in out
    rows = read_rows(report)
    assert list(rows[0]) == ["image", "prediction", "ground_truth", "plane", "threshold",
                             "tp", "fp", "fn", "precision", "recall", "f1", "ap",
                             "n_true", "n_pred", "msa"]  # fmt: skip
    assert [row["image"] for row in rows] == ["img_0"] * 10 + ["img_1"] * 10 + ["(pooled)"] * 10
    expected = match_objects(np.roll(truths["img_1"], 2, axis=0), truths["img_1"])
    img_1 = [row for row in rows if row["image"] == "img_1"]
    assert [int(row["tp"]) for row in img_1] == expected.tp.tolist()
    assert float(img_1[0]["msa"]) == pytest.approx(expected.msa)
    assert img_1[0]["ground_truth"].endswith("img_1_masks.tif")
    pooled = [row for row in rows if row["image"] == "(pooled)"]
    n_true = len(np.unique(truths["img_0"])) - 1 + len(np.unique(truths["img_1"])) - 1
    assert int(pooled[0]["n_true"]) == n_true


def test_two_files_of_any_name_and_chosen_thresholds(tmp_path, capsys):
    _, true = synthetic_nuclei((64, 64), seed=3)
    write_labels(tmp_path / "truth.tif", true)
    write_labels(tmp_path / "segmented.tif", true)
    report = tmp_path / "r.csv"
    arguments = ["evaluate", str(tmp_path / "segmented.tif"), str(tmp_path / "truth.tif"),
                 "-o", str(report), "--thresholds", "0.5", "0.9"]  # fmt: skip
    assert main(arguments) == 0
    rows = read_rows(report)
    assert [row["threshold"] for row in rows] == ["0.5", "0.9"] * 2
    assert all(row["ap"] == "1.0" for row in rows)


def test_a_stack_per_plane(tmp_path):
    true = np.zeros((4, 32, 32), np.int32)
    true[:, 8:20, 8:20] = 1
    predicted = true.copy()
    predicted[2:] = 0
    write_labels(tmp_path / "p.tif", predicted)
    write_labels(tmp_path / "t.tif", true)
    report = tmp_path / "r.csv"
    arguments = ["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "-o",
                 str(report), "--per-plane", "0", "--thresholds", "0.5"]  # fmt: skip
    assert main(arguments) == 0
    rows = read_rows(report)
    assert [(row["plane"], row["tp"], row["fn"]) for row in rows] == [
        ("0", "1", "0"), ("1", "1", "0"), ("2", "0", "1"), ("3", "0", "1"),
        ("all", "2", "2"), ("all", "2", "2")
    ]  # fmt: skip
    assert rows[-1]["image"] == "(pooled)"


def test_empty_truth_and_prediction_give_empty_cells_not_nan(tmp_path):
    empty = np.zeros((32, 32), np.int32)
    write_labels(tmp_path / "p.tif", empty)
    write_labels(tmp_path / "t.tif", empty)
    report = tmp_path / "r.csv"
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "-o",
                 str(report)]) == 0  # fmt: skip
    row = read_rows(report)[0]
    assert row["ap"] == "" and row["tp"] == "0" and row["msa"] == ""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: (write_labels(d / "p.tif", np.zeros((8, 9), np.int32)), "p.tif"),
            "same shape",
        ),
        (lambda d: (np.save(d / "x.npy", 0), "missing.tif"), "no such file or folder"),
    ],
)
def test_bad_input_gives_a_clear_message_and_status_2(tmp_path, capsys, make, message):
    write_labels(tmp_path / "t.tif", np.zeros((8, 8), np.int32))
    _, name = make(tmp_path)
    assert main(["evaluate", str(tmp_path / name), str(tmp_path / "t.tif")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_non_integer_image_is_refused(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "p.tif", np.zeros((8, 8), np.float32))
    write_labels(tmp_path / "t.tif", np.zeros((8, 8), np.int32))
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif")]) == 2
    assert "integers" in capsys.readouterr().err


def test_a_bad_threshold_is_an_option_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "p", "t", "--thresholds", "0"])
    assert exit_info.value.code == 2
    assert "must be in (0, 1]" in capsys.readouterr().err


def test_evaluate_is_a_command_with_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("PRED", "GT", "--output", "--thresholds", "--per-plane"):
        assert option in text
