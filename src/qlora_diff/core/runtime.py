"""Device choice, threads and resource measurement shared by every stage."""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from qlora_diff.core.config import Config, check_device_available

log = logging.getLogger(__name__)


def select_device(cfg: Config) -> torch.device:
    """``auto`` picks CUDA when visible, else CPU; ``cuda`` without a GPU is a config error."""
    check_device_available(cfg)
    if cfg.runtime.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun process


# The CPU feature flags that change speed or rounding of this project's kernels: recorded in every fingerprint.
FINGERPRINT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")

def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    return set(cpu_info().get("flags", "").split())


NATIVE_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}   # without one of these, torch emulates bf16 matmuls on a CPU


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls in hardware: a CUDA GPU from Ampere on, or a CPU with AVX512-BF16 or
    AMX. Elsewhere bf16 is emulated, several times slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(cpu_flags() & NATIVE_BF16_CPU_FLAGS)


def bf16_supported(device: torch.device) -> bool:
    """Whether ``auto`` chooses bf16 on ``device``: CUDA GPUs with native bf16 only. CPUs are never chosen for bf16
    by ``auto``: their bf16 kernels round differently per CPU family, so results would follow the machine."""
    return device.type == "cuda" and bf16_native(device)


def resolve_compute_dtype(requested: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` on a CUDA GPU with native bf16, ``float32`` everywhere else (every CPU: the
    reference numerics, the same predictions on any CPU); explicit values are honoured, with a warning where bf16
    is emulated."""
    if requested == "bfloat16" and not bf16_native(device):
        log.warning("compute dtype bfloat16 on %s, which has no native bf16 (%s): torch emulates it, several times "
                    "slower than float32", device, "a GPU before Ampere" if device.type == "cuda"
                    else f"no {' or '.join(sorted(NATIVE_BF16_CPU_FLAGS))}")
    if requested != "auto":
        return requested
    return "bfloat16" if bf16_supported(device) else "float32"


def machine_fingerprint(device: torch.device) -> dict:
    """What a run's numbers may depend on besides its inputs and params: CPU model and the ISA flags that change
    kernels, the GPU, the threads, and the versions of the numeric libraries. Recorded in every stage's metrics."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    flags = cpu_flags()
    return {
        "cpu": cpu_info().get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [flag for flag in FINGERPRINT_CPU_FLAGS if flag in flags],
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **{name: installed(name) for name in ("transformers", "peft", "bitsandbytes")},
    }


def matmul_rows_invariant(model: torch.nn.Module, compute_dtype: str, prompt_tokens: int = 48) -> bool:
    """Whether every linear-layer shape of ``model`` gives a prompt the same bits alone, in a batch of 7 and in one
    of 64 (random weights and ``prompt_tokens``-token prompts, on the model's device): the kernel property that
    batch-invariant evaluation rests on, measured in this process."""
    device = next(model.parameters()).device
    dtype = getattr(torch, compute_dtype)
    generator = torch.Generator().manual_seed(0)
    shapes = sorted({(layer.in_features, layer.out_features) for layer in model.modules()
                     if isinstance(layer, torch.nn.Linear)})
    with torch.no_grad():
        for in_features, out_features in shapes:
            weight = torch.randn(out_features, in_features, generator=generator).to(device, dtype)
            prompts = torch.randn(64, prompt_tokens, in_features, generator=generator).to(device, dtype)
            batched = torch.nn.functional.linear(prompts, weight)
            if not all(torch.equal(torch.nn.functional.linear(prompts[:size], weight), batched[:size])
                       for size in (1, 7)):
                return False
    return True


def dequantizes_once(requested: str, device: torch.device) -> bool:
    """``quant.dequantize``: ``once`` keeps every frozen 4-bit weight dequantized in memory, ``every_forward``
    leaves bitsandbytes to dequantize it in each matmul; ``auto`` -> once on CPU (where RAM is plentiful and
    dequantizing is a tenth of a training step), every forward on accelerators (where 4-bit memory is the point)."""
    return requested == "once" or (requested == "auto" and device.type == "cpu")


def resolve_attention(requested: str, device: torch.device) -> str:
    """``train.attention``: ``auto`` -> ``eager`` on CPU, where the training rows are short and eager attention is
    faster than SDPA's CPU kernel (1.25x a bf16 step with the frozen weights in bf16), ``sdpa`` elsewhere (fused
    GPU kernels); others unchanged."""
    if requested != "auto":
        return requested
    return "eager" if device.type == "cpu" else "sdpa"


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
