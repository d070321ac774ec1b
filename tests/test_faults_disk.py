"""Faults on disk and in downloads, injected on purpose.

Each fault must end in a clear :class:`~napari_mobilesam.weights.fetch.WeightsError` (or
ValueError for memory) and leave no partial or corrupt file in the cache. Downloads come
from a local HTTP server in this module, never from the internet.

``FAULTS`` counts the faults injected by this module, for the figures in the README.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pooch
import pytest

from napari_mobilesam.weights import fetch as weights
from napari_mobilesam.weights import verify
from napari_mobilesam.weights.checkpoints import load_state_dict
from napari_mobilesam.weights.fetch import CACHE_ENV, WEIGHTS_ENV, fetch_checkpoint
from napari_mobilesam.weights.registry import CHECKPOINTS, WeightsError

pytestmark = pytest.mark.official_registry

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
PAYLOAD_ID = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Answers every GET with PAYLOAD; modes inject faults, ``gate`` holds answers back."""

    def __init__(self) -> None:
        self.requests = 0
        self.truncate_next = 0  # answer this many requests with half the body, then hang up
        self.gate = threading.Event()
        self.gate.set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                truncate = server.truncate_next > 0
                server.truncate_next -= truncate
                server.gate.wait(60)
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2] if truncate else PAYLOAD)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/mobile_sam.pt"


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    running.thread.start()
    yield running
    running.gate.set()
    running.httpd.shutdown()
    running.httpd.server_close()
    running.thread.join()


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: Server) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(verify, "_verified", {})
    monkeypatch.setitem(
        CHECKPOINTS,
        "mobile_sam",
        dataclasses.replace(CHECKPOINTS["mobile_sam"], url=server.url, known_id=PAYLOAD_ID),
    )
    return folder


def leftovers(folder: Path) -> list[str]:
    """Files in the cache other than a complete, correct mobile_sam.pt."""
    if not folder.exists():
        return []
    names = []
    for path in folder.iterdir():
        if path.name == "mobile_sam.pt" and path.read_bytes() == PAYLOAD:
            continue
        names.append(path.name)
    return sorted(names)


def test_interrupted_download_is_restarted_on_the_next_call(cache, server):
    server.truncate_next = 1
    with pytest.raises(WeightsError, match=r"Could not download mobile_sam\.pt"):
        fetch_checkpoint(progress=False)
    assert leftovers(cache) == [], "no partial file or lock file stays behind"
    path = fetch_checkpoint(progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == 2
    assert leftovers(cache) == []


def test_cache_folder_that_is_a_file(monkeypatch, tmp_path, cache, server):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(WeightsError, match=r"Could not save mobile_sam\.pt") as e:
        fetch_checkpoint(progress=False)
    message = str(e.value)
    assert CACHE_ENV in message and WEIGHTS_ENV in message
    assert blocker.read_text() == "a file where the cache folder should be"
    assert server.requests == 0


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_cache_folder(monkeypatch, cache, server, code):
    # Simulated (tests may run as root, for whom chmod does not make a folder read-only):
    # creating the temporary download file fails as on a read-only folder.
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(cache))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(WeightsError, match=r"Could not save mobile_sam\.pt") as e:
        fetch_checkpoint(progress=False)
    assert os.strerror(code) in str(e.value)
    assert CACHE_ENV in str(e.value)
    assert leftovers(cache) == []
    assert server.requests == 0


def test_full_cache_folder_mid_download(monkeypatch, cache, server):
    real = pooch.HTTPDownloader

    class FillsTheDisk(real):
        def __call__(self, url, output_file, pooch_):
            Path(output_file).write_bytes(PAYLOAD[:1000])  # part written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(output_file))

    monkeypatch.setattr(weights.pooch, "HTTPDownloader", FillsTheDisk)
    with pytest.raises(WeightsError, match="No space left on device") as e:
        fetch_checkpoint(progress=False)
    assert "Free some space" in str(e.value)
    assert leftovers(cache) == [], "the partial download is removed"
    monkeypatch.setattr(weights.pooch, "HTTPDownloader", real)
    assert fetch_checkpoint(progress=False).read_bytes() == PAYLOAD


def test_lock_held_too_long_is_a_clear_error(monkeypatch, cache, server):
    from filelock import FileLock

    monkeypatch.setattr(weights, "_LOCK_TIMEOUT_S", 0.2)
    cache.mkdir(parents=True)
    with FileLock(cache / ".mobile_sam.pt.lock"):
        with pytest.raises(WeightsError, match="Another process has been downloading"):
            fetch_checkpoint(progress=False)
    assert server.requests == 0
    assert fetch_checkpoint(progress=False).read_bytes() == PAYLOAD


FETCH_SCRIPT = """
import dataclasses, sys
from napari_mobilesam.weights import fetch as weights
weights.CHECKPOINTS["mobile_sam"] = dataclasses.replace(
    weights.CHECKPOINTS["mobile_sam"], url=sys.argv[1], known_id=sys.argv[2]
)
print("starting", flush=True)
print(weights.fetch_checkpoint("mobile_sam", progress=False), flush=True)
"""


def test_two_processes_download_the_same_file_once(cache, server):
    server.gate.clear()  # the first download waits until both processes are running
    env = {**os.environ, CACHE_ENV: str(cache)}
    env.pop(WEIGHTS_ENV, None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FETCH_SCRIPT, server.url, PAYLOAD_ID],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "starting"
        # Both have called fetch_checkpoint; one holds the lock and is downloading.
        threading.Event().wait(0.5)
        server.gate.set()
        results = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
        assert Path(out.strip()) == cache / "mobile_sam.pt"
    assert server.requests == 1, "the second process waited and used the first's download"
    assert leftovers(cache) == []


def test_cached_file_replaced_after_verification_is_checked_again(cache, server):
    path = fetch_checkpoint(progress=False)
    assert fetch_checkpoint(progress=False) == path  # verified, remembered
    replacement = path.with_name("replacement")
    replacement.write_bytes(PAYLOAD[::-1])  # same size, other bytes
    os.replace(replacement, path)
    os.utime(path, ns=(1, 1))  # a different modification time, as any real replacement has
    with pytest.raises(WeightsError, match=r"is not the official mobile_sam\.pt"):
        fetch_checkpoint(progress=False)
    assert not path.exists(), "the wrong file is moved aside"
    assert path.with_name("mobile_sam.pt.rejected").exists()
    assert fetch_checkpoint(progress=False).read_bytes() == PAYLOAD, "downloaded afresh"
    assert server.requests == 2


def test_file_truncated_while_loaded_is_reported_as_damaged(tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save({"a": torch.arange(10_000, dtype=torch.float32)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # another program rewrote it half-way
    with pytest.raises(WeightsError, match="damaged or incomplete"):
        load_state_dict(path)


def test_file_truncated_while_hashed_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(PAYLOAD)
    real_fstat = os.fstat

    def fstat_then_truncate(fd):
        result = real_fstat(fd)
        os.truncate(path, 10)  # another program rewrites the file while it is hashed
        return result

    monkeypatch.setattr(verify.os, "fstat", fstat_then_truncate)
    with pytest.raises(WeightsError, match="changed while its sha256 id was computed"):
        verify.file_id(path)


# ------------------------------------------------------------------------- resources
class _LazyHuge:
    """A lazy (H, W) array that counts reads: any read means something was allocated."""

    def __init__(self, shape: tuple[int, ...], dtype: str = "uint16") -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)
        self.reads = 0

    def __getitem__(self, item):
        self.reads += 1
        raise AssertionError("the image was read")

    def __array__(self, *args, **kwargs):
        self.reads += 1
        raise AssertionError("the image was read")


def test_huge_lazy_image_untiled_is_refused_before_anything_is_read(predictor):
    da = pytest.importorskip("dask.array")
    import psutil

    from napari_mobilesam import segment_everything

    available = psutil.virtual_memory().available
    side = int(np.sqrt(available / 2)) + 1024  # uint16: at least the available memory
    huge = da.zeros((side, side), dtype=np.uint16, chunks=4096)
    with pytest.raises(ValueError, match="Not enough memory to segment") as e:
        segment_everything(huge, predictor=predictor, tiling=False, boxes=[[0, 0, 10, 10]])
    assert "tiling=True" in str(e.value)
    assert "Nothing was allocated" in str(e.value)

    lazy = _LazyHuge((side, side, 3))
    with pytest.raises(ValueError, match="Not enough memory"):
        segment_everything(lazy, predictor=predictor, tiling=False, boxes=[[0, 0, 10, 10]])
    assert lazy.reads == 0


def test_image_that_fits_is_not_refused(monkeypatch):
    from napari_mobilesam.segevery import pipeline as segevery

    image = np.zeros((64, 64), np.uint16)
    assert segevery.untiled_bytes(image, (64, 64)) == 64 * 64 * (3 + 4 + 4)
    segevery.check_memory_untiled(image, (64, 64))  # no error


FAULTS = {
    "test_interrupted_download_is_restarted_on_the_next_call": 1,
    "test_cache_folder_that_is_a_file": 1,
    "test_read_only_cache_folder": 2,
    "test_full_cache_folder_mid_download": 1,
    "test_lock_held_too_long_is_a_clear_error": 1,
    "test_two_processes_download_the_same_file_once": 1,
    "test_cached_file_replaced_after_verification_is_checked_again": 1,
    "test_file_truncated_while_loaded_is_reported_as_damaged": 1,
    "test_file_truncated_while_hashed_is_refused": 1,
    "test_huge_lazy_image_untiled_is_refused_before_anything_is_read": 2,
}
