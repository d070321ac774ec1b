import dataclasses
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pooch
import pytest
import torch

from napari_mobilesam import weights
from napari_mobilesam.weights import (
    CACHE_ENV,
    CHECKPOINTS,
    WEIGHTS_ENV,
    WeightsError,
    cache_dir,
    fetch_checkpoint,
    load_state_dict,
    load_weights_into,
    resolve_checkpoint,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY_CHECKPOINT = SHARED / "fixtures" / "parity" / "mobile_sam_seed0.pt"
PAYLOAD = b"not really weights, but bytes to download\n" * 100


class FileServer:
    """A local HTTP server that answers every GET with ``body`` and counts the requests."""

    def __init__(self, body: bytes, *, status: int = 200, truncate: bool = False) -> None:
        self.body = body
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if status != 200:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                sent = server.body[: len(server.body) // 2] if truncate else server.body
                self.wfile.write(sent)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty cache in tmp_path and no weights variable, whatever the caller's environment."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return cache


def point_registry_at(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    monkeypatch.setitem(CHECKPOINTS, name, dataclasses.replace(CHECKPOINTS[name], url=url))


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer(PAYLOAD) as running:
        yield running


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mobile_sam.pt"


@pytest.fixture
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_registry_has_the_official_mobile_sam_and_the_object_aware_model():
    mobile_sam = CHECKPOINTS["mobile_sam"]
    assert mobile_sam.url == (
        "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    )
    assert mobile_sam.filename == "mobile_sam.pt"
    assert CHECKPOINTS["object_aware"].filename == "ObjectAwareModel.pt"
    assert "mirror" in CHECKPOINTS["object_aware"].description
    with pytest.raises(dataclasses.FrozenInstanceError):
        mobile_sam.url = "https://example.org"


def test_cache_dir_follows_the_environment_variable(isolated_env, monkeypatch):
    assert cache_dir() == isolated_env
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path(pooch.os_cache("napari-mobilesam"))


def test_download_lands_in_the_cache_once(monkeypatch, server, isolated_env):
    point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"))
    path = fetch_checkpoint("mobile_sam", progress=False)
    assert path == isolated_env / "mobile_sam.pt"
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/mobile_sam.pt"]

    assert fetch_checkpoint("mobile_sam", progress=False) == path
    assert resolve_checkpoint(None, progress=False) == path
    assert server.requests == ["/mobile_sam.pt"]


def test_download_with_a_progress_bar(monkeypatch, server, isolated_env):
    point_registry_at(monkeypatch, "object_aware", server.url("ObjectAwareModel.pt"))
    path = resolve_checkpoint("object_aware")
    assert path == isolated_env / "ObjectAwareModel.pt"
    assert path.read_bytes() == PAYLOAD


def test_offline_download_says_where_to_put_the_file(monkeypatch, closed_port_url, isolated_env):
    point_registry_at(monkeypatch, "mobile_sam", closed_port_url)
    with pytest.raises(WeightsError) as excinfo:
        fetch_checkpoint(progress=False)
    message = str(excinfo.value)
    assert closed_port_url in message
    assert str(isolated_env / "mobile_sam.pt") in message
    assert WEIGHTS_ENV in message
    assert excinfo.value.__cause__ is not None
    assert not isolated_env.exists() or not any(isolated_env.iterdir())


def test_http_error_is_a_weights_error(monkeypatch, isolated_env):
    with FileServer(b"", status=404) as server:
        point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"))
        with pytest.raises(WeightsError, match="404") as excinfo:
            fetch_checkpoint(progress=False)
    assert server.url("mobile_sam.pt") in str(excinfo.value)
    assert not (isolated_env / "mobile_sam.pt").exists()


def test_interrupted_download_leaves_nothing_in_the_cache(monkeypatch, isolated_env):
    with FileServer(PAYLOAD, truncate=True) as server:
        point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"))
        with pytest.raises(WeightsError, match="Could not download"):
            fetch_checkpoint(progress=False)
    assert not isolated_env.exists() or not any(isolated_env.iterdir())


def test_hash_mismatch_is_refused_and_not_cached(monkeypatch, server, isolated_env):
    wrong_hash = "sha256:" + "0" * 64
    monkeypatch.setitem(
        CHECKPOINTS,
        "mobile_sam",
        dataclasses.replace(
            CHECKPOINTS["mobile_sam"], url=server.url("mobile_sam.pt"), known_hash=wrong_hash
        ),
    )
    with pytest.raises(WeightsError, match="Could not download"):
        fetch_checkpoint(progress=False)
    assert not (isolated_env / "mobile_sam.pt").exists()


def test_env_variable_pointing_at_a_file(monkeypatch, tmp_path, closed_port_url):
    point_registry_at(monkeypatch, "mobile_sam", closed_port_url)
    local = tmp_path / "my_weights.pt"
    local.write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_ENV, str(local))
    assert fetch_checkpoint("mobile_sam", progress=False) == local
    assert resolve_checkpoint(None, progress=False) == local


def test_env_file_is_only_used_for_mobile_sam(monkeypatch, tmp_path, server, isolated_env):
    local = tmp_path / "my_weights.pt"
    local.write_bytes(b"mobile sam")
    monkeypatch.setenv(WEIGHTS_ENV, str(local))
    point_registry_at(monkeypatch, "object_aware", server.url("ObjectAwareModel.pt"))
    assert fetch_checkpoint("object_aware", progress=False) == isolated_env / "ObjectAwareModel.pt"


def test_env_variable_pointing_at_a_folder(monkeypatch, tmp_path, closed_port_url):
    point_registry_at(monkeypatch, "mobile_sam", closed_port_url)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "mobile_sam.pt").write_bytes(PAYLOAD)
    (folder / "ObjectAwareModel.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert fetch_checkpoint("mobile_sam", progress=False) == folder / "mobile_sam.pt"
    assert fetch_checkpoint("object_aware", progress=False) == folder / "ObjectAwareModel.pt"


def test_env_folder_without_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsError) as excinfo:
        fetch_checkpoint("object_aware", progress=False)
    message = str(excinfo.value)
    assert WEIGHTS_ENV in message
    assert str(tmp_path) in message
    assert "ObjectAwareModel.pt" in message
    assert CHECKPOINTS["object_aware"].url in message


def test_env_variable_pointing_at_nothing(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "mobile_sam.pt"
    monkeypatch.setenv(WEIGHTS_ENV, str(missing))
    with pytest.raises(WeightsError) as excinfo:
        fetch_checkpoint(progress=False)
    assert WEIGHTS_ENV in str(excinfo.value)
    assert str(missing) in str(excinfo.value)


def test_unknown_checkpoint_name():
    with pytest.raises(ValueError, match=r"'mobile_sam'.*received 'vit_h'"):
        fetch_checkpoint("vit_h")


def test_resolve_checkpoint_accepts_paths(tmp_path):
    local = tmp_path / "weights.pt"
    local.write_bytes(PAYLOAD)
    assert resolve_checkpoint(local) == local
    assert resolve_checkpoint(str(local)) == local


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_resolve_checkpoint_refuses_what_is_not_a_file(tmp_path, kind):
    path = tmp_path / "weights.pt"
    if kind == "folder":
        path.mkdir()
    with pytest.raises(WeightsError, match=r"Expected a checkpoint file.*'mobile_sam'") as excinfo:
        resolve_checkpoint(path)
    assert str(path) in str(excinfo.value)


def test_resolve_checkpoint_refuses_other_types():
    with pytest.raises(TypeError, match="received int"):
        resolve_checkpoint(3)


def test_load_state_dict_reads_a_saved_state_dict(tmp_path, small_model):
    path = tmp_path / "state.pt"
    torch.save(small_model.state_dict(), path)
    state = load_state_dict(path)
    assert list(state) == list(small_model.state_dict())
    assert all(value.device.type == "cpu" for value in state.values())
    torch.testing.assert_close(state["0.weight"], small_model[0].weight.detach())


@pytest.mark.parametrize("wrapper_key", ["state_dict", "model"])
def test_load_state_dict_unwraps_a_training_checkpoint(tmp_path, small_model, wrapper_key):
    path = tmp_path / "checkpoint.pt"
    torch.save({wrapper_key: small_model.state_dict(), "epoch": 3}, path)
    assert list(load_state_dict(path)) == list(small_model.state_dict())


def damaged_message_checks(message: str, path: Path) -> None:
    assert "damaged or incomplete" in message
    assert str(path) in message
    assert "PytorchStreamReader" not in message
    assert "pickle" not in message.lower()


def test_random_bytes_are_reported_as_damaged(tmp_path):
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError) as excinfo:
        load_state_dict(path)
    damaged_message_checks(str(excinfo.value), path)
    assert CHECKPOINTS["mobile_sam"].url in str(excinfo.value)


def test_truncated_file_is_reported_as_damaged(tmp_path, small_model):
    whole = tmp_path / "whole.pt"
    torch.save(small_model.state_dict(), whole)
    data = whole.read_bytes()
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as excinfo:
        load_state_dict(path)
    damaged_message_checks(str(excinfo.value), path)


def test_damaged_file_in_the_cache_says_to_delete_it(isolated_env):
    isolated_env.mkdir()
    path = isolated_env / "mobile_sam.pt"
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(WeightsError, match=r"Delete .* downloaded again") as excinfo:
        load_state_dict(fetch_checkpoint(progress=False))
    damaged_message_checks(str(excinfo.value), path)


def test_whole_pickled_model_is_not_a_state_dict(tmp_path, small_model):
    path = tmp_path / "model.pt"
    torch.save(small_model, path)
    with pytest.raises(WeightsError, match="not a plain state dict"):
        load_state_dict(path)


def test_a_list_of_tensors_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match=r"not a state dict.*found a list"):
        load_state_dict(path)


def test_load_state_dict_of_a_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        load_state_dict(tmp_path / "missing.pt")


def test_load_weights_into_copies_the_weights(tmp_path, small_model):
    path = tmp_path / "state.pt"
    torch.save(small_model.state_dict(), path)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    load_weights_into(fresh, path)
    for key, value in small_model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_wrong_keys_are_listed(tmp_path, small_model):
    state = small_model.state_dict()
    state["extra.weight"] = torch.zeros(1)
    state["another.bias"] = torch.zeros(1)
    del state["2.weight"]
    path = tmp_path / "state.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as excinfo:
        load_weights_into(small_model, path)
    message = str(excinfo.value)
    assert "1 of the model's 4 weights are missing" in message
    assert "'2.weight'" in message
    assert "2 weights in the file are not in the model" in message
    assert "'extra.weight'" in message
    assert "'another.bias'" in message
    assert "not a MobileSAM (vit_t) checkpoint" in message


def test_at_most_three_examples_of_each(tmp_path, small_model):
    path = tmp_path / "state.pt"
    torch.save({f"unrelated.{index}": torch.zeros(1) for index in range(10)}, path)
    with pytest.raises(WeightsError) as excinfo:
        load_weights_into(small_model, path)
    message = str(excinfo.value)
    assert "10 weights in the file are not in the model" in message
    assert "'unrelated.2'" in message
    assert "'unrelated.3'" not in message


def test_wrong_shapes_are_listed(tmp_path, small_model):
    state = small_model.state_dict()
    state["0.weight"] = torch.zeros(5, 4)
    path = tmp_path / "state.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as excinfo:
        load_weights_into(small_model, path)
    message = str(excinfo.value)
    assert "1 weights have the wrong shape" in message
    assert "0.weight: the model expects (3, 4), the file has (5, 4)" in message
    assert "size mismatch" not in message


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared fixtures folder {SHARED} is absent")
def test_parity_fixture_has_the_official_format():
    state = load_state_dict(PARITY_CHECKPOINT)
    assert len(state) == 439
    assert "image_encoder.patch_embed.seq.0.c.weight" in state
    assert all(isinstance(value, torch.Tensor) for value in state.values())


def test_importing_the_module_does_not_import_torch():
    code = f"import sys, {weights.__name__}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == 0
