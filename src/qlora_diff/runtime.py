"""Device choice, threads and resource measurement shared by every stage."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from qlora_diff.config import Config, check_device_available


def select_device(cfg: Config) -> torch.device:
    """``auto`` picks CUDA when visible, else CPU; ``cuda`` without a GPU is a config error."""
    check_device_available(cfg)
    if cfg.runtime.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun process


def configure_threads(cfg: Config) -> None:
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)


def peak_process_memory_gb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024**3 if sys.platform == "darwin" else 1024**2), 3)


def peak_gpu_memory_gb() -> float | None:
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 3)


@dataclass
class Stopwatch:
    """Wall-clock timer for the ``seconds`` fields in metrics."""

    start: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)
