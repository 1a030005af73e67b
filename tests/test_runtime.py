"""Which compute dtype each stage runs in: ``auto`` follows the hardware, explicit values never change."""

from __future__ import annotations

import pytest
import torch
from conftest import XEON_WITHOUT_BF16, ZEN4, tiny_params

from qlora_diff.core import runtime
from qlora_diff.core.config import parse_config
from qlora_diff.core.runtime import dequantizes_once, resolve_attention, resolve_compute_dtype
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
    evaluated, resolved = load_for_eval(cfg, tiny_model_dir, None)
    assert trained.get_input_embeddings().weight.dtype == torch.bfloat16
    assert evaluated.get_input_embeddings().weight.dtype == torch.bfloat16 and resolved == "bfloat16"
    pinned, resolved = load_for_eval(parse_config(tiny_params(eval={"compute_dtype": "float32"})), tiny_model_dir, None)
    assert pinned.get_input_embeddings().weight.dtype == torch.float32 and resolved == "float32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: XEON_WITHOUT_BF16)
    assert load_causal_lm(tiny_model_dir, cfg, CPU).get_input_embeddings().weight.dtype == torch.float32
    assert load_for_eval(cfg, tiny_model_dir, None)[1] == "float32"


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
