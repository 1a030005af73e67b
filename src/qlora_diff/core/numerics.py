"""Facts about a run's numbers that the stages and the analysis share, without torch (``runtime`` detects hardware).

The near-tie noise floor: how far rounding alone moves a label log-probability, per compute dtype. A flip whose
label margin (top label's log-probability minus the runner-up's) is below the floor of the dtype that scored it may
be rounding, not the fine-tune. And the metric fields that differ between two runs of the same params and inputs.
"""

from __future__ import annotations

# float32: batch and kernel changes move a label log-probability by < 1e-4 nats (benchmarks/batch_invariance.py).
# bfloat16: the 99th percentile of |bf16 - fp32| label log-probability gaps over both models
# (benchmarks/eval_numerics.py; tests/test_numerics.py checks this copy against the committed result).
NOISE_FLOOR_NATS = {"float32": 1e-4, "bfloat16": 0.7}


def noise_floor(compute_dtype: str) -> float:
    """The near-tie margin, in nats, of an evaluation computed in ``compute_dtype``."""
    try:
        return NOISE_FLOOR_NATS[compute_dtype]
    except KeyError:
        raise ValueError(f"no measured noise floor for compute dtype {compute_dtype!r}; "
                         f"known: {', '.join(NOISE_FLOOR_NATS)}") from None


# Metric fields that describe how a run went on its machine, not what it computed: left out of the adapter's model
# card (its hash would follow the machine) and of the reproduction check's comparison of statistics.
RUN_DEPENDENT_METRICS = ("seconds", "examples_per_second", "prompt_tokens_per_second", "tokens_per_second",
                         "peak_memory_gb", "peak_gpu_memory_gb", "device", "resumed_from_checkpoint", "machine")
