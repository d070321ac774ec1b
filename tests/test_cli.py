"""The napari-mobilesam console script: help, option errors, info, and the main command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from napari_mobilesam.batch.cli import main


@pytest.mark.parametrize("command", [[], ["segment"], ["embed"], ["info"]])
def test_help_of_every_command(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: napari-mobilesam")
    if command == ["segment"]:
        for option in ("--sample", "--coco", "--workers", "--scheduler", "--overwrite",
                       "--detector", "--conf", "--min-area", "--axis"):  # fmt: skip
            assert option in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["segment", "x.tif", "-o", "out", "--conf", "2"], "argument --conf: must be between"),
        (["segment", "x.tif", "-o", "out", "--iou", "high"], "argument --iou: must be a number"),
        (["segment", "x.tif", "-o", "out", "--workers", "0"], "argument --workers: must be"),
        (["segment", "x.tif", "-o", "out", "--max-objects", "2.5"], "must be a whole number"),
        (["segment", "x.tif", "-o", "out", "--format", "png"], "invalid choice: 'png'"),
        (
            ["segment", "x.tif", "-o", "o", "--workers", "2", "--scheduler", "tcp://h:1"],
            "not allowed with argument",
        ),
        (["segment", "-o", "out"], "give at least one INPUT, or --sample cell"),
        (["segment", "x.tif"], "the following arguments are required: -o/--outdir"),
        (["segment", "x.tif", "-o", "out", "--tile-shape", "8"], "tile_shape"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_a_bad_option_value_gives_a_clear_message(arguments, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error


def test_info_finds_the_weights(random_weights: Path, capsys) -> None:
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "torch" in text and "device:" in text and "threads:" in text
    assert f"{random_weights} (from NAPARI_MOBILESAM_WEIGHTS)" in text
    assert "prompt_guided" in text and "not found; downloads" in text


def test_console_script_is_declared() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "napari-mobilesam"]
    assert script.value == "napari_mobilesam.batch.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "napari_mobilesam.batch.cli", "segment", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "INPUT" in result.stdout


def test_segment_sample_cell_runs_out_of_the_box(
    random_weights: Path, yolo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    arguments = ["segment", "--sample", "cell", "-o", str(out), "--detector",
                 str(yolo_checkpoint), "--conf", "0.01", "--max-objects", "3", "-q"]  # fmt: skip
    assert main(arguments) == 0
    assert (out / "cell_labels.tif").is_file() and (out / "cell_objects.csv").is_file()
    text = capsys.readouterr().out
    assert "1 segmented" in text
    assert "note: SegEvery decoded the boxes with mobile_sam.pt's mask decoder" in text
    assert main(arguments) == 0  # the second run skips it
    assert "1 skipped" in capsys.readouterr().out


def test_a_missing_file_fails_with_its_reason_and_exit_status_1(
    random_weights: Path, tmp_path: Path, capsys
) -> None:
    assert main(["segment", str(tmp_path / "none.tif"), "-o", str(tmp_path / "o"), "-q"]) == 1
    error = capsys.readouterr().err
    assert "FAILED" in error and "none.tif" in error and "no such file" in error
    assert "Traceback" not in error
