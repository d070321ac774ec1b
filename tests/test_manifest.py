"""The npe2 manifest: it validates, and napari shows its widgets, menu command and samples."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from npe2 import PluginManifest

from napari_mobilesam._widgets import CurateWidget, SegAnyWidget, SegEveryWidget, TrainWidget

PLUGIN = "napari-mobilesam"


def test_manifest_is_valid_and_every_python_name_imports():
    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()
    assert {widget.display_name for widget in manifest.contributions.widgets} == {
        "SegAny (MobileSAM)",
        "SegEvery (MobileSAMv2)",
        "Compare labels (evaluation)",
        "Correct and curate (labels)",
        "Train (detector / decoder)",
    }
    assert {sample.key for sample in manifest.contributions.sample_data} == {"cell", "coins"}


def test_widgets_are_in_the_plugins_menu_and_work_docked(
    make_napari_viewer, qtbot, random_weights
):
    viewer = make_napari_viewer()
    menu_bar = viewer.window._qt_window.menuBar()
    plugins = next(action.menu() for action in menu_bar.actions() if "Plugins" in action.text())
    ours = next(action.menu() for action in plugins.actions() if action.text() == PLUGIN)
    # napari appends the plugin name because the plugin also contributes to Layers > Segment
    assert [action.text() for action in ours.actions()] == [
        f"SegAny (MobileSAM) ({PLUGIN})",
        f"SegEvery (MobileSAMv2) ({PLUGIN})",
        f"Compare labels (evaluation) ({PLUGIN})",
        f"Correct and curate (labels) ({PLUGIN})",
        f"Train (detector / decoder) ({PLUGIN})",
    ]

    image = viewer.add_image(np.random.default_rng(0).random((64, 64)), name="noise")
    # napari hands plugin widgets a proxy of the viewer; they work on the viewer behind it
    _, segany = viewer.window.add_plugin_dock_widget(PLUGIN, "SegAny (MobileSAM)")
    _, segevery = viewer.window.add_plugin_dock_widget(PLUGIN, "SegEvery (MobileSAMv2)")
    assert isinstance(segany, SegAnyWidget) and segany.viewer is viewer
    assert isinstance(segevery, SegEveryWidget) and segevery.viewer is viewer
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train (detector / decoder)")
    assert isinstance(train, TrainWidget) and train.viewer is viewer
    _, curate = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct and curate (labels)")
    assert isinstance(curate, CurateWidget) and curate.viewer is viewer
    assert segany.controller.image is image

    segany.controller.points.add([32, 32])
    qtbot.waitUntil(lambda: segany.controller.preview is not None, timeout=120_000)
    assert segany.controller.preview_layer.data.any()


def test_segment_everything_is_in_the_layers_segment_menu(make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    app = get_app_model()
    command = f"{PLUGIN}.segment_everything"
    menu = app.menus.get_menu("napari/layers/segment")
    assert command in [getattr(item, "command", None) and item.command.id for item in menu]

    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    viewer.add_points(np.zeros((1, 2)))
    app.commands.execute_command(command).result()
    assert any("Select an image layer" in message for message in seen)


@pytest.mark.parametrize(("key", "shape"), [("cell", (660, 550)), ("coins", (303, 384))])
def test_sample_data_opens_without_network(make_napari_viewer, monkeypatch, key, shape):
    def no_network(*args, **kwargs):
        raise OSError("the sample data must not be downloaded")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    layer = viewer.layers[key]
    assert layer.data.shape == shape
    assert layer.data.dtype == np.uint8
