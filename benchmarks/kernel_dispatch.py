"""Which kernels make float32 results differ between x86 CPU classes. torch builds its own vectorized kernels
(softmax, reductions, transcendental functions) once per instruction set and runs the widest the CPU has, AVX-512 or
AVX2; a sum over another vector width rounds in another order. `ATEN_CPU_CAPABILITY`, read when torch starts, caps
that choice. This benchmark starts one process per capability this CPU supports, from AVX2 (every x86-64 machine
the project targets has it) up, and in each runs the ops of the model's forward on fixed random inputs and the
base model on the first eval rows (float32, the reference numerics). It reports, against the AVX2 process, which
ops give other bits, how far the model's label log-probabilities move, how many predictions flip, and the scoring
time of each process, so the price of pinning AVX2 is measured beside what it buys.

Run: python benchmarks/kernel_dispatch.py [--rows 100] (after `dvc repro prepare_eval@snli`; quiet machine)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import rows, score, write_results

REFERENCE = "avx2"
CAPABILITIES = ("avx2", "avx512")   # ATEN_CPU_CAPABILITY values, narrowest first (torch's x86 builds above DEFAULT)


def forward_ops() -> dict[str, torch.Tensor]:
    """The elementwise and reduction ops of a Llama-style forward, and a matmul, on fixed inputs."""
    generator = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 576, generator=generator)
    w = torch.randn(576, 1536, generator=generator)
    return {"matmul": x @ w, "mean of squares (RMSNorm)": x.pow(2).mean(-1, keepdim=True),
            "rsqrt": torch.rsqrt(x.abs() + 1e-5), "sum": x.sum(-1), "softmax (attention)": torch.softmax(x, -1),
            "log_softmax (label log-probs)": torch.log_softmax(x, -1), "exp": torch.exp(x),
            "silu (MLP)": torch.nn.functional.silu(x), "cos and sin (rotary)": torch.cat([x.cos(), x.sin()]),
            "multiply-add": x * 1.7 + x}


def worker(out: Path, count: int) -> None:
    """In a process started under one ATEN_CPU_CAPABILITY: the ops, the model's log-probs and the scoring time."""
    scores, seconds = score(None, "float32", 64, count)
    torch.save({"capability": torch.backends.cpu.get_cpu_capability(), "ops": forward_ops(),
                "logprobs": torch.tensor(scores), "seconds": seconds}, out)


def supported() -> list[str]:
    """The capabilities this CPU runs: up to the one torch picked on its own."""
    widest = torch.backends.cpu.get_cpu_capability().lower()
    return list(CAPABILITIES[:CAPABILITIES.index(widest) + 1]) if widest in CAPABILITIES else []


def run(capability: str, count: int, directory: Path) -> dict:
    out = directory / f"{capability}.pt"
    subprocess.run([sys.executable, __file__, "--worker", str(out), "--rows", str(count)], check=True,
                   env={**os.environ, "ATEN_CPU_CAPABILITY": capability})
    result = torch.load(out)
    if result["capability"].lower() != capability:
        sys.exit(f"ATEN_CPU_CAPABILITY={capability} gave torch's {result['capability']} kernels")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100, help="eval rows the base model scores")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.rows)
    capabilities = supported()
    if REFERENCE not in capabilities:
        sys.exit(f"torch runs {torch.backends.cpu.get_cpu_capability()} kernels here; this benchmark compares x86 "
                 f"builds from {REFERENCE.upper()} up")
    count = len(rows(args.rows))
    with tempfile.TemporaryDirectory() as tmp:
        results = {capability: run(capability, count, Path(tmp)) for capability in capabilities}
    reference = results[REFERENCE]
    model_rows, op_rows, gaps, flips = [], [], [], []
    for capability, result in results.items():
        gap = (result["logprobs"] - reference["logprobs"]).abs()
        flipped = int((result["logprobs"].argmax(-1) != reference["logprobs"].argmax(-1)).sum())
        gaps.append(gap.max().item())
        flips.append(flipped)
        model_rows.append({"ATEN_CPU_CAPABILITY": capability, "computation": f"base model, {count} rows' label "
                           "log-probs", "values differing from avx2": f"{(gap > 0).float().mean().item():.1%}",
                           "max abs difference": f"{gap.max().item():.2e}", "predictions differing": flipped,
                           "scoring seconds": round(result["seconds"], 1)})
        for op, value in result["ops"].items():
            differs = value != reference["ops"][op]
            if differs.any():
                op_rows.append({"ATEN_CPU_CAPABILITY": capability, "computation": op,
                                "values differing from avx2": f"{differs.float().mean().item():.1%}",
                                "max abs difference": f"{(value - reference['ops'][op]).abs().max().item():.2e}",
                                "predictions differing": "", "scoring seconds": ""})
    differing = sorted({row["computation"] for row in op_rows})
    notes = [f"ops bit for bit equal in every process: {', '.join(op for op in reference['ops'] if op not in differing)}",
             f"capabilities this CPU runs: {', '.join(capabilities)} (torch picks the last on its own); float32, "
             "NF4 weights, eval.batch_size 64; fixed random inputs (64 x 576) for the ops"]
    write_results("kernel_dispatch", "float32 kernels per torch CPU capability", model_rows + op_rows, notes,
                  summary={"differing_ops": differing, "max_logprob_gap": max(gaps),
                           "predictions_differing": sum(flips)})


if __name__ == "__main__":
    main()
