import dataclasses
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pooch
import pytest
import torch

from napari_mobilesam.model.prompt_decoder import PromptDecoder
from napari_mobilesam.weights import fetch as weights
from napari_mobilesam.weights import registry, verify
from napari_mobilesam.weights.checkpoints import load_state_dict, load_weights_into
from napari_mobilesam.weights.fetch import (
    CACHE_ENV,
    WEIGHTS_ENV,
    cache_dir,
    fetch_checkpoint,
    resolve_checkpoint,
)
from napari_mobilesam.weights.registry import CHECKPOINTS, Checkpoint, WeightsError
from napari_mobilesam.weights.verify import file_id, verify_checkpoint_file

# These tests read the official URLs and serve downloads from their own local server.
pytestmark = pytest.mark.official_registry

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY_CHECKPOINT = SHARED / "fixtures" / "parity" / "mobile_sam_seed0.pt"
REAL_PROMPT_GUIDED = SHARED / "fixtures" / "real" / "Prompt_guided_Mask_Decoder.pt"
PAYLOAD = b"not really weights, but bytes to download\n" * 100
PAYLOAD_SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_GITBLOB = (
    "gitblob:"
    + hashlib.sha1(b"blob %d\0" % len(PAYLOAD) + PAYLOAD, usedforsecurity=False).hexdigest()
)
# The ids of the official files, from ../shared/fixtures/real/README.md.
MOBILE_SAM_GITBLOB = "gitblob:7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7"
PROMPT_GUIDED_SHA256 = "sha256:8771b38a57ad67750dbe18fff95e66c8d1789436096738cace37d58bfc06151e"
PROMPT_GUIDED_GITBLOB = "gitblob:c13b15a3a4496dbcba5f4f0d3e8453f41d818420"
PROMPT_GUIDED_URL = (
    "https://github.com/ChaoningZhang/MobileSAM/raw/master/MobileSAMv2/PromptGuidedDecoder/"
    "Prompt_guided_Mask_Decoder.pt"
)


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
    monkeypatch.setattr(verify, "_verified", {})
    return cache


def point_registry_at(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str, known_id: str | None = PAYLOAD_SHA256
) -> None:
    """Make checkpoint ``name`` download from ``url``, verified against ``known_id``.

    A checkpoint registered without an id (object_aware) stays unverified.
    """
    if CHECKPOINTS[name].known_id is None:
        known_id = None
    monkeypatch.setitem(
        CHECKPOINTS, name, dataclasses.replace(CHECKPOINTS[name], url=url, known_id=known_id)
    )


def count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every file that weights hashes from now on."""
    hashed: list[str] = []
    real_file_id = verify.file_id

    def counting_file_id(path: str | os.PathLike[str], kind: str = "sha256") -> str:
        hashed.append(str(path))
        return real_file_id(path, kind)

    monkeypatch.setattr(verify, "file_id", counting_file_id)
    return hashed


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
    point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"), "sha256:" + "0" * 64)
    with pytest.raises(WeightsError, match="not the expected file"):
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


def test_damaged_file_in_the_cache_says_to_delete_it(monkeypatch, isolated_env):
    # Without a known id the file reaches torch.load, whose failure is explained.
    point_registry_at(monkeypatch, "mobile_sam", CHECKPOINTS["mobile_sam"].url, known_id=None)
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


def test_parity_fixture_has_the_official_format():
    state = load_state_dict(PARITY_CHECKPOINT)
    assert len(state) == 439
    assert "image_encoder.patch_embed.seq.0.c.weight" in state
    assert all(isinstance(value, torch.Tensor) for value in state.values())


def test_importing_the_module_does_not_import_torch():
    code = f"import sys, {weights.__name__}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == 0


# --- The prompt-guided decoder and verified downloads ---------------------------------------


def test_registry_has_the_official_prompt_guided_decoder():
    prompt_guided = CHECKPOINTS["prompt_guided"]
    assert prompt_guided.url == PROMPT_GUIDED_URL
    assert prompt_guided.filename == "Prompt_guided_Mask_Decoder.pt"
    assert prompt_guided.known_id == PROMPT_GUIDED_SHA256
    assert "prompt-guided" in prompt_guided.description
    assert CHECKPOINTS["mobile_sam"].known_id == MOBILE_SAM_GITBLOB
    assert CHECKPOINTS["object_aware"].known_id is None
    assert "without verification" in CHECKPOINTS["object_aware"].description


def test_every_known_id_is_well_formed():
    pattern = re.compile(r"sha256:[0-9a-f]{64}|gitblob:[0-9a-f]{40}")
    for name, checkpoint in CHECKPOINTS.items():
        assert checkpoint.name == name
        assert checkpoint.known_id is None or pattern.fullmatch(checkpoint.known_id), name


@pytest.mark.parametrize(
    "bad_id", ["sha256:abc", "md5:" + "0" * 32, "gitblob:" + "0" * 64, "SHA256:" + "a" * 64]
)
def test_malformed_known_id_is_refused(bad_id):
    with pytest.raises(ValueError, match=r"Expected the known_id of checkpoint 'x'.*received"):
        Checkpoint(
            name="x",
            url="https://example.org/x.pt",
            filename="x.pt",
            description="x",
            known_id=bad_id,
        )


def test_file_id_of_the_real_decoder_is_its_published_id():
    assert file_id(REAL_PROMPT_GUIDED) == PROMPT_GUIDED_SHA256
    assert file_id(REAL_PROMPT_GUIDED, "gitblob") == PROMPT_GUIDED_GITBLOB
    assert REAL_PROMPT_GUIDED.stat().st_size == 16_310_784
    assert verify_checkpoint_file(REAL_PROMPT_GUIDED, "prompt_guided") is True


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("content", [b"", b"hello\n", PAYLOAD])
def test_gitblob_id_is_what_git_hash_object_says(tmp_path, content):
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    result = subprocess.run(
        ["git", "hash-object", "--no-filters", str(path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert file_id(path, "gitblob") == "gitblob:" + result.stdout.strip()


def test_file_id_reads_in_chunks(monkeypatch, tmp_path):
    monkeypatch.setattr(verify, "_HASH_CHUNK_BYTES", 7)
    path = tmp_path / "payload.bin"
    path.write_bytes(PAYLOAD)
    assert file_id(path) == PAYLOAD_SHA256
    assert file_id(path, "gitblob") == PAYLOAD_GITBLOB


def test_file_id_refuses_an_unknown_kind_and_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"'sha256', 'gitblob'; received 'md5'"):
        file_id(tmp_path, "md5")
    with pytest.raises(WeightsError, match="Could not read"):
        file_id(tmp_path / "missing.pt")


def test_download_that_does_not_match_is_discarded(monkeypatch, server, isolated_env):
    point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"), MOBILE_SAM_GITBLOB)
    target = isolated_env / "mobile_sam.pt"
    for attempt in (1, 2):
        with pytest.raises(WeightsError) as excinfo:
            fetch_checkpoint(progress=False)
        assert len(server.requests) == attempt  # nothing was kept: each call downloads again
        assert not isolated_env.exists() or not any(isolated_env.iterdir())
    message = str(excinfo.value)
    assert "mobile_sam.pt" in message
    assert str(target) in message
    assert server.url("mobile_sam.pt") in message
    assert f"expected {MOBILE_SAM_GITBLOB}, found {PAYLOAD_GITBLOB} (4,200 bytes)" in message
    assert "discarded" in message
    assert "Try again later" in message
    assert WEIGHTS_ENV in message


@pytest.mark.parametrize("known_id", [PAYLOAD_SHA256, PAYLOAD_GITBLOB])
def test_download_that_matches_is_verified_once(monkeypatch, server, isolated_env, known_id):
    point_registry_at(monkeypatch, "prompt_guided", server.url("pg.pt"), known_id)
    hashed = count_hashing(monkeypatch)
    path = fetch_checkpoint("prompt_guided", progress=False)
    assert path == isolated_env / "Prompt_guided_Mask_Decoder.pt"
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    assert len(hashed) == 1
    assert sorted(entry.name for entry in isolated_env.iterdir()) == [path.name]

    assert fetch_checkpoint("prompt_guided", progress=False) == path
    assert resolve_checkpoint("prompt_guided", progress=False) == path
    assert len(server.requests) == 1
    assert len(hashed) == 1


def test_changed_cached_file_is_checked_again(monkeypatch, server, isolated_env):
    point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"))
    hashed = count_hashing(monkeypatch)
    path = fetch_checkpoint(progress=False)
    path.write_bytes(PAYLOAD[:-1] + b"?")
    with pytest.raises(WeightsError, match=r"is not the official mobile_sam\.pt"):
        fetch_checkpoint(progress=False)
    assert len(hashed) == 2


def test_user_copy_in_the_cache_with_other_bytes_is_moved_aside(monkeypatch, server, isolated_env):
    point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"))
    isolated_env.mkdir()
    target = isolated_env / "mobile_sam.pt"
    rejected = isolated_env / "mobile_sam.pt.rejected"
    target.write_bytes(b"a copy of something else")
    rejected.write_bytes(b"an older rejected file")

    with pytest.raises(WeightsError) as excinfo:
        fetch_checkpoint(progress=False)
    message = str(excinfo.value)
    assert f"The cached file {target} is not the official mobile_sam.pt" in message
    assert f"expected {PAYLOAD_SHA256}, found sha256:" in message
    assert "(24 bytes)" in message
    assert f"moved aside to {rejected}" in message
    assert server.url("mobile_sam.pt") in message
    assert WEIGHTS_ENV in message
    assert not target.exists()
    assert rejected.read_bytes() == b"a copy of something else"
    assert server.requests == []

    # The next call downloads the file afresh.
    assert fetch_checkpoint(progress=False) == target
    assert target.read_bytes() == PAYLOAD
    assert server.requests == ["/mobile_sam.pt"]


def test_wrong_prompt_guided_file_in_the_cache_is_refused(isolated_env):
    isolated_env.mkdir()
    target = isolated_env / "Prompt_guided_Mask_Decoder.pt"
    target.write_bytes(PAYLOAD)
    with pytest.raises(WeightsError, match=PROMPT_GUIDED_SHA256) as excinfo:
        fetch_checkpoint("prompt_guided", progress=False)
    assert PROMPT_GUIDED_URL in str(excinfo.value)
    assert not target.exists()
    assert (isolated_env / "Prompt_guided_Mask_Decoder.pt.rejected").read_bytes() == PAYLOAD


def test_files_named_by_the_user_are_not_verified(monkeypatch, tmp_path, isolated_env):
    hashed = count_hashing(monkeypatch)
    own_file = tmp_path / "fine_tuned.pt"
    own_file.write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_ENV, str(own_file))
    assert fetch_checkpoint("mobile_sam", progress=False) == own_file

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "Prompt_guided_Mask_Decoder.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert (
        fetch_checkpoint("prompt_guided", progress=False)
        == folder / "Prompt_guided_Mask_Decoder.pt"
    )
    assert own_file.read_bytes() == PAYLOAD
    assert (folder / "Prompt_guided_Mask_Decoder.pt").read_bytes() == PAYLOAD
    assert sorted(path.name for path in folder.iterdir()) == ["Prompt_guided_Mask_Decoder.pt"]
    assert hashed == []
    assert not isolated_env.exists()


def test_verify_checkpoint_file(tmp_path):
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(PAYLOAD)
    with pytest.raises(WeightsError) as excinfo:
        verify_checkpoint_file(path, "mobile_sam")
    message = str(excinfo.value)
    assert f"expected {MOBILE_SAM_GITBLOB}, found {PAYLOAD_GITBLOB} (4,200 bytes)" in message
    assert CHECKPOINTS["mobile_sam"].url in message
    assert path.read_bytes() == PAYLOAD  # nothing is moved
    assert verify_checkpoint_file(path, "object_aware") is False


def save_prompt_guided_format(state: dict[str, torch.Tensor], path: Path) -> None:
    """Save a PromptDecoder state dict the way MobileSAMv2 stores it."""
    parts: dict[str, dict[str, torch.Tensor]] = {"PromtEncoder": {}, "MaskDecoder": {}}
    for key, value in state.items():
        module, _, name = key.partition(".")
        parts["PromtEncoder" if module == "prompt_encoder" else "MaskDecoder"][name] = value
    torch.save(parts, path)


def test_prompt_guided_format_loads_into_a_prompt_decoder(tmp_path):
    torch.manual_seed(0)
    original = PromptDecoder()
    path = tmp_path / "Prompt_guided_Mask_Decoder.pt"
    save_prompt_guided_format(original.state_dict(), path)
    assert list(load_state_dict(path)) == list(original.state_dict())

    torch.manual_seed(1)
    fresh = PromptDecoder()
    load_weights_into(fresh, path)
    for key, value in original.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_real_prompt_guided_decoder_loads_strictly():
    raw = torch.load(REAL_PROMPT_GUIDED, map_location="cpu", weights_only=True)
    state = load_state_dict(REAL_PROMPT_GUIDED)
    assert len(state) == 17 + 120
    assert sum(key.startswith("prompt_encoder.") for key in state) == 17
    assert sum(key.startswith("mask_decoder.") for key in state) == 120

    model = PromptDecoder()
    load_weights_into(model, REAL_PROMPT_GUIDED)
    loaded = model.state_dict()
    for name, value in raw["MaskDecoder"].items():
        torch.testing.assert_close(loaded[f"mask_decoder.{name}"], value)
    for name, value in raw["PromtEncoder"].items():
        torch.testing.assert_close(loaded[f"prompt_encoder.{name}"], value)


def test_prompt_guided_file_with_a_wrong_key_names_the_expected_file(tmp_path):
    state = PromptDecoder().state_dict()
    renamed = "mask_decoder.iou_prediction_head.layers.0.weight"
    state["mask_decoder.iou_head.layers.0.weight"] = state.pop(renamed)
    path = tmp_path / "Prompt_guided_Mask_Decoder.pt"
    save_prompt_guided_format(state, path)
    with pytest.raises(WeightsError) as excinfo:
        load_weights_into(PromptDecoder(), path)
    message = str(excinfo.value)
    assert "(PromptDecoder)" in message
    assert "1 of the model's 137 weights are missing" in message
    assert repr(renamed) in message
    assert "'mask_decoder.iou_head.layers.0.weight'" in message
    assert "not MobileSAMv2's prompt-guided mask decoder" in message
    assert "Prompt_guided_Mask_Decoder.pt" in message
    assert PROMPT_GUIDED_URL in message
    assert "MobileSAM (vit_t)" not in message


def test_mobile_sam_sha256_is_recorded_beside_its_git_blob_id():
    mobile_sam = CHECKPOINTS["mobile_sam"]
    assert mobile_sam.known_id == MOBILE_SAM_GITBLOB
    assert mobile_sam.sha256 == (
        "sha256:6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    )
    assert CHECKPOINTS["prompt_guided"].sha256 == PROMPT_GUIDED_SHA256
    assert CHECKPOINTS["object_aware"].sha256 is None


QUIET_FETCH_SCRIPT = """
import dataclasses, sys
from napari_mobilesam.weights import registry
from napari_mobilesam.weights.fetch import fetch_checkpoint
registry.CHECKPOINTS["object_aware"] = dataclasses.replace(
    registry.CHECKPOINTS["object_aware"], url=sys.argv[1]
)
fetch_checkpoint("object_aware", progress=False)
"""


def test_download_prints_nothing(server, isolated_env):
    env = {**os.environ, CACHE_ENV: str(isolated_env)}
    result = subprocess.run(
        [sys.executable, "-c", QUIET_FETCH_SCRIPT, server.url("ObjectAwareModel.pt")],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert (isolated_env / "ObjectAwareModel.pt").read_bytes() == PAYLOAD
    assert result.stdout == ""
    assert result.stderr == ""


def test_download_is_also_checked_by_pooch_against_the_recorded_sha256(
    monkeypatch, server, isolated_env
):
    # The git blob id matches, but the SHA-256 recorded beside it does not: pooch refuses.
    point_registry_at(monkeypatch, "mobile_sam", server.url("mobile_sam.pt"), PAYLOAD_GITBLOB)
    monkeypatch.setitem(registry.SHA256_OF_GITBLOB, PAYLOAD_GITBLOB, "sha256:" + "0" * 64)
    with pytest.raises(WeightsError, match="does not match") as excinfo:
        fetch_checkpoint(progress=False)
    assert server.url("mobile_sam.pt") in str(excinfo.value)
    assert not isolated_env.exists() or not any(isolated_env.iterdir())

    monkeypatch.setitem(registry.SHA256_OF_GITBLOB, PAYLOAD_GITBLOB, PAYLOAD_SHA256)
    assert fetch_checkpoint(progress=False).read_bytes() == PAYLOAD
