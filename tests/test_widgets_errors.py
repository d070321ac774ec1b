"""A bug in a worker reaches the user as napari's error notification with its traceback; bad
input stays a short line in the widget."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import skimage.data
from napari.utils.notifications import NotificationSeverity

from napari_mobilesam._widgets import SegAnyWidget, _segany_decoding
from napari_mobilesam.errors import InvalidValueError

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 120_000


@pytest.fixture
def cell() -> np.ndarray:
    return skimage.data.cell()[:128, :128]


def click_once(make_napari_viewer, qtbot, image):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="cell")
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    widget.controller.points.add([60, 60])
    qtbot.waitUntil(lambda: not widget.controller.busy, timeout=TIMEOUT_MS)
    return widget.controller


def test_a_bug_in_the_decoder_is_an_error_notification_with_its_traceback(
    make_napari_viewer, qtbot, cell, monkeypatch, notifications, caplog
):
    def broken(predictor, prompts):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(_segany_decoding, "decode_plane", broken)
    with caplog.at_level(logging.ERROR, logger="napari_mobilesam"):
        controller = click_once(make_napari_viewer, qtbot, cell)
        qtbot.waitUntil(lambda: "internal error" in controller.status, timeout=TIMEOUT_MS)

    assert "broadcast" not in controller.status
    errors = [m for severity, m in notifications if severity == NotificationSeverity.ERROR]
    assert any("operands could not be broadcast together" in m for m in errors)
    logged = [r for r in caplog.records if r.exc_info and "broadcast" in str(r.exc_info[1])]
    assert logged and logged[0].exc_info[2] is not None, "the log holds the traceback"


def test_bad_input_is_a_line_in_the_widget(make_napari_viewer, qtbot, cell, monkeypatch):
    def refuses(predictor, prompts):
        raise InvalidValueError("Expected a point inside the image.")

    monkeypatch.setattr(_segany_decoding, "decode_plane", refuses)
    controller = click_once(make_napari_viewer, qtbot, cell)
    qtbot.waitUntil(lambda: "Expected a point" in controller.status, timeout=TIMEOUT_MS)
    assert "internal error" not in controller.status
