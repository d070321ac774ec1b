"""Timing and peak-memory measurement for the benchmark rows."""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

MIB = 2**20


@dataclass(frozen=True)
class Measurement:
    """One workload timed ``repeats`` times.

    Attributes
    ----------
    seconds : float
        Median wall time of one run.
    peak_mib : float
        Largest growth of memory above what was in use just before a run: resident memory
        of the process on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
    repeats : int
        Timed runs (after one untimed warm-up).
    splits : dict
        Medians of named sub-timings the workload reported, in seconds (e.g. SegEvery's
        "discovery", "embedding" and "decoding").
    """

    seconds: float
    peak_mib: float
    repeats: int
    splits: dict[str, float] = field(default_factory=dict)


class PeakRSS:
    """Peak resident memory of this process above its level at ``__enter__``, sampled every
    ``interval`` seconds in a background thread.

    Examples
    --------
    >>> with PeakRSS() as peak:
    ...     block = bytearray(50 * 2**20)
    >>> peak.growth_mib > 40
    True
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._base = 0
        self._peak = 0

    def __enter__(self) -> PeakRSS:
        self._base = self._peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self._peak - self._base) / MIB


class PeakCUDA:
    """Peak CUDA memory allocated by torch above the amount allocated at ``__enter__``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._base = 0
        self._peak = 0

    def __enter__(self) -> PeakCUDA:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc_info: object) -> None:
        torch.cuda.synchronize(self.device)
        self._peak = torch.cuda.max_memory_allocated(self.device)

    @property
    def growth_mib(self) -> float:
        return (self._peak - self._base) / MIB


def measure(
    run: Callable[[], Any],
    *,
    device: torch.device,
    repeats: int,
    threads: int,
    warmup: Callable[[], Any] | None = None,
    prepare: Callable[[], Any] | None = None,
    splits: Callable[[Any], dict[str, float]] | None = None,
) -> tuple[Measurement, Any]:
    """Time ``run`` after one warm-up, and return the measurement and the last run's output.

    Parameters
    ----------
    run : callable
        The workload. Its output is kept only until the next run.
    device : torch.device
        Where the workload runs: CPU runs are measured with :class:`PeakRSS`, CUDA runs
        with :class:`PeakCUDA` and synchronised before the clock stops.
    repeats : int
        Timed runs; the median is reported.
    threads : int
        torch's CPU thread count, set again before every run (ultralytics lowers it when it
        sets up a model on the CPU).
    warmup : callable, optional
        Untimed first call; ``run`` itself when not given.
    prepare : callable, optional
        Called, untimed, before every run (e.g. to empty an embedding cache).
    splits : callable, optional
        Extracts named sub-timings (seconds) from a run's output.

    Returns
    -------
    Measurement, Any
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    torch.set_num_threads(threads)
    if prepare is not None:
        prepare()
    (warmup or run)()
    times: list[float] = []
    peaks: list[float] = []
    parts: dict[str, list[float]] = {}
    output = None
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        output = None
        gc.collect()
        torch.set_num_threads(threads)
        peak = PeakCUDA(device) if device.type == "cuda" else PeakRSS()
        with peak:
            start = time.perf_counter()
            output = run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        peaks.append(peak.growth_mib)
        for name, seconds in (splits(output) if splits else {}).items():
            parts.setdefault(name, []).append(seconds)
    measurement = Measurement(
        seconds=statistics.median(times),
        peak_mib=max(peaks),
        repeats=repeats,
        splits={name: statistics.median(values) for name, values in parts.items()},
    )
    return measurement, output
