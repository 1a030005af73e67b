"""Which compute dtype each stage runs in: ``auto`` follows the hardware, explicit values never change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import XEON_WITHOUT_BF16, ZEN4, tiny_params

from qlora_diff.core import runtime
from qlora_diff.core.config import parse_config
from qlora_diff.core.runtime import dequantizes_once, resolve_attention, resolve_compute_dtype, resolve_eval_dtype
from qlora_diff.model.evaluate import load_for_eval
from qlora_diff.model.modeling import load_causal_lm

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("flags, expected", [(ZEN4, "bfloat16"), (SAPPHIRE_RAPIDS, "bfloat16"),
                                             (XEON_WITHOUT_BF16, "float32"), (set(), "float32")])
def test_auto_is_bf16_only_on_cpus_with_native_bf16_matmuls(monkeypatch, flags, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert resolve_compute_dtype("auto", CPU) == expected


@pytest.mark.parametrize("flags", [ZEN4, XEON_WITHOUT_BF16])
def test_explicit_dtypes_are_kept_on_any_cpu(monkeypatch, flags):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert resolve_compute_dtype("float32", CPU) == "float32"
    assert resolve_compute_dtype("bfloat16", CPU) == "bfloat16"


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_on_cuda_asks_for_native_bf16(monkeypatch, native, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or native)
    assert resolve_compute_dtype("auto", torch.device("cuda", 0)) == expected
    assert asked == [False], "emulated bf16 must not count as native"


@pytest.mark.parametrize("flags, expected", [(ZEN4, "bfloat16"), (SAPPHIRE_RAPIDS, "float32"),
                                             (XEON_WITHOUT_BF16, "float32"), (set(), "float32")])
def test_auto_evaluates_in_fp32_on_cpus_with_amx_and_as_the_fine_tune_elsewhere(monkeypatch, flags, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert resolve_eval_dtype("auto", CPU) == expected
    assert resolve_eval_dtype("bfloat16", CPU) == "bfloat16" and resolve_eval_dtype("float32", CPU) == "float32"


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_evaluation_on_cuda_follows_native_bf16_even_on_a_host_with_amx(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert resolve_eval_dtype("auto", torch.device("cuda", 0)) == expected


def test_cpu_flags_are_read_from_proc_cpuinfo():
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    first = next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split()
    assert set(first) <= runtime.cpu_flags() and "fpu" in runtime.cpu_flags()


def test_finetune_and_evaluation_follow_the_hardware_unless_pinned(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: ZEN4)
    cfg = parse_config(tiny_params(quant={"compute_dtype": "auto"}, eval={"compute_dtype": "auto"}))
    assert parse_config({}).eval.compute_dtype == "auto"
    trained = load_causal_lm(tiny_model_dir, cfg, CPU)
    evaluated, numerics = load_for_eval(cfg, tiny_model_dir, None)
    assert trained.get_input_embeddings().weight.dtype == torch.bfloat16
    assert evaluated.get_input_embeddings().weight.dtype == torch.bfloat16 and numerics["compute_dtype"] == "bfloat16"
    pinned, numerics = load_for_eval(parse_config(tiny_params(eval={"compute_dtype": "float32"})), tiny_model_dir, None)
    assert pinned.get_input_embeddings().weight.dtype == torch.float32 and numerics["compute_dtype"] == "float32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: XEON_WITHOUT_BF16)
    assert load_causal_lm(tiny_model_dir, cfg, CPU).get_input_embeddings().weight.dtype == torch.float32
    assert load_for_eval(cfg, tiny_model_dir, None)[1]["compute_dtype"] == "float32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: SAPPHIRE_RAPIDS)  # AMX: bf16 training, uncapped fp32 evaluation
    assert load_causal_lm(tiny_model_dir, cfg, CPU).get_input_embeddings().weight.dtype == torch.bfloat16
    evaluated, numerics = load_for_eval(cfg, tiny_model_dir, None)
    assert evaluated.get_input_embeddings().weight.dtype == torch.float32
    assert numerics["compute_dtype"] == "float32" and numerics["cpu_kernel_cap"] is None


@pytest.mark.parametrize("flags, device, dtype, cap", [
    (SAPPHIRE_RAPIDS, "cpu", "bfloat16", "AVX512_CORE_BF16"), (SAPPHIRE_RAPIDS, "cpu", "float32", None),
    (SAPPHIRE_RAPIDS, "cuda", "bfloat16", None), (ZEN4, "cpu", "bfloat16", None),
    (XEON_WITHOUT_BF16, "cpu", "bfloat16", None)])
def test_onednn_is_capped_below_amx_only_for_bf16_on_cpus_with_amx(monkeypatch, flags, device, dtype, cap):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert runtime.cap_cpu_kernels_for_row_invariance(torch.device(device), dtype) == cap
    assert os.environ.get("ONEDNN_MAX_CPU_ISA") == cap


def test_a_users_own_onednn_cap_is_kept(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    assert runtime.cap_cpu_kernels_for_row_invariance(CPU, "bfloat16") == "ALL"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "ALL"


# SmolLM2-135M's attention output (576 -> 576) and MLP down projection (1536 -> 576): the shapes whose AMX kernels
# give a prompt different bits in a batch of 1 or 7 than in one of 64.
PROBE = """
import sys, torch
from qlora_diff.core import runtime
runtime.cap_cpu_kernels_for_row_invariance(torch.device("cpu"), "bfloat16")
model = torch.nn.Sequential(torch.nn.Linear(576, 576), torch.nn.Linear(1536, 576))
print(runtime.matmul_rows_invariant(model, sys.argv[1]))
"""


@pytest.mark.skipif("amx_bf16" not in runtime.cpu_flags(), reason="needs a CPU with AMX")
@pytest.mark.parametrize("user_cap, dtype, invariant", [(None, "bfloat16", "True"), ("ALL", "bfloat16", "False"),
                                                        ("ALL", "float32", "True")])
def test_the_cap_makes_bf16_matmul_rows_batch_invariant_on_this_amx_cpu(user_cap, dtype, invariant):
    env = {key: value for key, value in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
    env["PYTHONPATH"] = str(Path(runtime.__file__).resolve().parents[2])
    if user_cap:
        env["ONEDNN_MAX_CPU_ISA"] = user_cap
    probe = subprocess.run([sys.executable, "-c", PROBE, dtype], env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == invariant


@pytest.mark.parametrize("requested, device, once", [
    ("auto", "cpu", True), ("auto", "cuda", False), ("once", "cuda", True), ("every_forward", "cpu", False)])
def test_frozen_4bit_weights_are_dequantized_once_on_cpu_by_default(requested, device, once):
    assert parse_config({}).quant.dequantize == "auto"
    assert dequantizes_once(requested, torch.device(device)) is once


@pytest.mark.parametrize("requested, device, resolved", [
    ("auto", "cpu", "eager"), ("auto", "cuda", "sdpa"), ("sdpa", "cpu", "sdpa"), ("eager", "cuda", "eager")])
def test_training_attention_is_eager_on_cpu_and_sdpa_on_gpus_by_default(requested, device, resolved):
    assert parse_config({}).train.attention == "auto"
    assert resolve_attention(requested, torch.device(device)) == resolved
