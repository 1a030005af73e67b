"""Which compute dtype each stage runs in (``auto``: float32 on every CPU, bf16 on CUDA GPUs with native bf16;
explicit values never change), and what a run records about its machine."""

from __future__ import annotations

import pytest
import torch
from conftest import AMX_FLAGS, BF16_FLAGS, NO_BF16_FLAGS, tiny_params

from qlora_diff.core import runtime
from qlora_diff.core.config import parse_config
from qlora_diff.core.runtime import dequantizes_once, resolve_attention, resolve_compute_dtype
from qlora_diff.model.evaluate import load_for_eval
from qlora_diff.model.modeling import load_causal_lm

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags", [BF16_FLAGS, AMX_FLAGS, NO_BF16_FLAGS, set()])
def test_auto_is_float32_on_every_cpu_whatever_its_bf16_support(monkeypatch, flags):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert resolve_compute_dtype("auto", CPU) == "float32"


@pytest.mark.parametrize("flags", [BF16_FLAGS, AMX_FLAGS, NO_BF16_FLAGS])
def test_explicit_dtypes_are_honoured_on_any_cpu(monkeypatch, flags):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert resolve_compute_dtype("float32", CPU) == "float32"
    assert resolve_compute_dtype("bfloat16", CPU) == "bfloat16"


@pytest.mark.parametrize("flags, emulated", [(BF16_FLAGS, False), (AMX_FLAGS, False), (NO_BF16_FLAGS, True)])
def test_explicit_bf16_warns_only_where_the_cpu_emulates_it(monkeypatch, caplog, flags, emulated):
    """An explicit bf16 request is honoured everywhere, and on a CPU without AVX512-BF16 or AMX it says that bf16
    runs emulated there (slower than float32); float32 never warns."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    with caplog.at_level("WARNING", logger="qlora_diff.core.runtime"):
        assert resolve_compute_dtype("bfloat16", CPU) == "bfloat16"
        assert resolve_compute_dtype("float32", CPU) == "float32"
    assert runtime.bf16_native(CPU) is not emulated
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == int(emulated)
    assert all("emulates" in w and "amx_bf16 or avx512_bf16" in w for w in warnings)


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_on_cuda_is_bf16_where_the_gpu_runs_it_natively(monkeypatch, native, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or native)
    assert resolve_compute_dtype("auto", torch.device("cuda", 0)) == expected
    assert asked == [False], "emulated bf16 must not count as native"
    assert resolve_compute_dtype("float32", torch.device("cuda", 0)) == "float32"


def test_cpu_flags_are_read_from_proc_cpuinfo():
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    first = next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split()
    assert set(first) == runtime.cpu_flags() and "fpu" in runtime.cpu_flags()


def test_the_machine_fingerprint_names_the_cpu_its_kernel_flags_threads_and_libraries(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AMX_FLAGS | {"fpu", "sse2"})
    monkeypatch.setattr(runtime, "cpu_info", lambda: {"model name": "Test CPU 9000"})
    machine = runtime.machine_fingerprint(CPU)
    assert machine["cpu"] == "Test CPU 9000" and machine["gpu"] is None
    assert machine["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]  # fixed order, no noise
    assert machine["threads"] == torch.get_num_threads() and machine["torch"] == torch.__version__
    import transformers

    assert machine["transformers"] == transformers.__version__ and "bitsandbytes" in machine and "peft" in machine


def test_finetune_and_evaluation_run_in_float32_on_any_cpu_unless_bf16_is_asked_for(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AMX_FLAGS)
    cfg = parse_config(tiny_params(quant={"compute_dtype": "auto"}, eval={"compute_dtype": "auto"}))
    assert parse_config({}).eval.compute_dtype == "auto" and parse_config({}).quant.compute_dtype == "auto"
    assert load_causal_lm(tiny_model_dir, cfg, CPU).get_input_embeddings().weight.dtype == torch.float32
    evaluated, numerics = load_for_eval(cfg, tiny_model_dir, None)
    assert evaluated.get_input_embeddings().weight.dtype == torch.float32
    assert numerics["compute_dtype"] == "float32" and numerics["near_tie_margin"] == 1e-4
    assert numerics["machine"]["cpu_flags"][-1] == "amx_bf16" and numerics["row_invariant_matmuls"] is True
    pinned = parse_config(tiny_params(quant={"compute_dtype": "bfloat16"}, eval={"compute_dtype": "bfloat16"}))
    assert load_causal_lm(tiny_model_dir, pinned, CPU).get_input_embeddings().weight.dtype == torch.bfloat16
    evaluated, numerics = load_for_eval(pinned, tiny_model_dir, None)
    assert evaluated.get_input_embeddings().weight.dtype == torch.bfloat16
    assert numerics["compute_dtype"] == "bfloat16" and numerics["near_tie_margin"] > 1e-3


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
