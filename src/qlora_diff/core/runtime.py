"""Device choice, threads and resource measurement shared by every stage."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from qlora_diff.core.config import Config, check_device_available


def select_device(cfg: Config) -> torch.device:
    """``auto`` picks CUDA when visible, else CPU; ``cuda`` without a GPU is a config error."""
    check_device_available(cfg)
    if cfg.runtime.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun process


# /proc/cpuinfo flags of x86 CPUs that run bf16 matmuls natively (Zen 4+, Cooper Lake, Sapphire Rapids+).
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware on ``device``; elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_compute_dtype(requested: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` where bf16 matmuls are native on ``device``, else ``float32``; others unchanged."""
    if requested != "auto":
        return requested
    return "bfloat16" if native_bf16(device) else "float32"


def amx_cpu(device: torch.device) -> bool:
    """Whether ``device`` is a CPU with AMX, whose oneDNN bf16 kernels tile a matmul by its row count."""
    return device.type == "cpu" and "amx_bf16" in cpu_flags()


def resolve_eval_dtype(requested: str, device: torch.device) -> str:
    """``eval.compute_dtype``: ``auto`` -> the fastest dtype whose predictions do not move with the batch size.
    That is ``float32`` on a CPU with AMX: bf16 there is batch-invariant only with oneDNN capped below AMX, and
    capped bf16 evaluation is 1.3-1.5x slower than fp32 (docs/benchmarks.md#batch-invariance-on-the-intel-xeon-with-amx).
    Elsewhere as the fine-tune (``resolve_compute_dtype``); explicit values unchanged."""
    if requested == "auto" and amx_cpu(device):
        return "float32"
    return resolve_compute_dtype(requested, device)


# oneDNN's AMX bf16 kernels tile a matmul by its row count, so one row's result moves with the batch it is in (on
# 1,000 SNLI rows, batch 1/7/64 flipped 3-7% of the base model's predictions against batch 16). Its AVX512-BF16 kernels
# do not: capping oneDNN there keeps bf16 evaluation batch-invariant (docs/benchmarks.md#batch-invariance).
ROW_INVARIANT_CPU_ISA = "AVX512_CORE_BF16"


def cap_cpu_kernels_for_row_invariance(device: torch.device, compute_dtype: str) -> str | None:
    """Cap oneDNN below AMX (``ONEDNN_MAX_CPU_ISA``) for bf16 on a CPU with AMX; return the cap in force (None: not
    needed). oneDNN reads the cap once, at its first kernel, so this runs before the process's first matmul; a
    cap the user set (``ALL`` lifts it) is kept. ``matmul_rows_invariant`` checks that it took effect."""
    if compute_dtype != "bfloat16" or not amx_cpu(device):
        return None
    return os.environ.setdefault("ONEDNN_MAX_CPU_ISA", ROW_INVARIANT_CPU_ISA)


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
