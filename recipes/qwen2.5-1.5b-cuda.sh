#!/usr/bin/env bash
# The reference's setup on one CUDA GPU: QLoRA (NF4, LoRA r=16 on the attention projections, answer-only loss) on
# Qwen2.5-1.5B-Instruct, pinned to a hub revision, trained and evaluated in bf16, on the default data and
# evaluation sets. Needs the hub once (base_model downloads the weights; every later stage runs offline). Extra
# arguments go to `dvc exp run` (say --queue, or -S overrides of your own).
# tests/test_families.py runs these overrides on CPU with a tiny random Qwen2 in place of the hub model.
set -euo pipefail
dvc exp run -n qwen2.5-1.5b-cuda "$@" \
  -S model.source=hub -S model.path=Qwen/Qwen2.5-1.5B-Instruct \
  -S model.revision=989aa7980e4cf806f80c7fef2b1adb7bc71aa306 \
  -S runtime.device=cuda -S quant.compute_dtype=bfloat16 -S eval.compute_dtype=bfloat16 \
  -S lora.r=16 -S lora.alpha=32 -S lora.target_modules=auto \
  -S train.learning_rate=0.0002 -S train.batch_size=16 -S eval.batch_size=32
