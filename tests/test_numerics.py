"""The near-tie noise floor follows the dtype: fp32's clears every rounding gap the benchmarks measured, bf16's is the
committed percentile of its gaps to fp32, and the comparison takes the floor each model's metrics record."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from qlora_diff.analysis.compare import near_tie_margin
from qlora_diff.core.config import parse_config
from qlora_diff.core.numerics import NOISE_FLOOR_NATS, noise_floor

RESULTS = REPO / "benchmarks" / "results"


def runs(name: str) -> list[dict]:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))["runs"]


def test_the_bf16_floor_is_the_committed_percentile_of_bf16_gaps_to_fp32():
    measured = [run["summary"]["bfloat16_noise_floor_nats"] for run in runs("eval_numerics")]
    assert measured and noise_floor("bfloat16") == max(measured)


@pytest.mark.parametrize("benchmark", ["batch_invariance", "threads"])
def test_the_fp32_floor_clears_every_fp32_gap_the_benchmarks_measured(benchmark):
    gaps = [row["max |logprob gap|"] for run in runs(benchmark) for row in run["results"]
            if row.get("compute dtype", "float32") == "float32"]
    assert gaps and max(gaps) < noise_floor("float32") == 1e-4


def test_the_fp32_floor_clears_the_gap_between_torch_cpu_builds():
    """Across x86 CPU classes fp32 log-probs move with torch's AVX-512 or AVX2 kernels (benchmarks/kernel_dispatch.py):
    a near tie is one the floor would call a tie on any of them, and no measured prediction flipped."""
    measured = [run["summary"] for run in runs("kernel_dispatch")]
    assert measured and max(s["max_logprob_gap"] for s in measured) < noise_floor("float32")
    assert sum(s["predictions_differing"] for s in measured) == 0


def test_an_unmeasured_dtype_has_no_floor():
    with pytest.raises(ValueError, match=r"no measured noise floor for compute dtype 'float16'; known: float32, "
                                         r"bfloat16"):
        noise_floor("float16")
    assert set(NOISE_FLOOR_NATS) == {"float32", "bfloat16"}


def test_auto_takes_the_larger_floor_the_two_models_record_and_a_number_overrides_it():
    auto = parse_config({})
    assert auto.report.near_tie_margin == "auto"
    fp32, bf16 = {"compute_dtype": "float32", "near_tie_margin": 1e-4}, {"compute_dtype": "bfloat16",
                                                                          "near_tie_margin": 0.7}
    assert near_tie_margin(auto, fp32, fp32) == 1e-4
    assert near_tie_margin(auto, fp32, bf16) == 0.7
    assert near_tie_margin(auto, {"compute_dtype": "bfloat16"}, {}) == noise_floor("bfloat16")  # older metrics
    assert near_tie_margin(parse_config({"report": {"near_tie_margin": 0.01}}), fp32, bf16) == 0.01
