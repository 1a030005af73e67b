"""Load the base model the same way for fine-tuning and for both evaluations.

The only difference between ``evaluate_base`` and ``evaluate_adapter`` must be the adapter, so
quantization, dtype, device and the bitsandbytes CPU fix all live here.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from qlora_diff.core.config import Config
from qlora_diff.core.errors import ConfigError, ModelFileError
from qlora_diff.core.runtime import dequantizes_once, resolve_compute_dtype

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def check_model_dir(model_dir: str | Path) -> None:
    """Cheap checks before loading: config, safetensors weights and a tokenizer with a chat template."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelFileError(f"{model_dir}: no config.json; expected a Hugging Face model directory (run the base_model stage).")
    if not list(model_dir.glob("*.safetensors")):
        raise ModelFileError(f"{model_dir}: no *.safetensors weights; only safetensors checkpoints are loaded.")
    if not (model_dir / "tokenizer_config.json").is_file():
        raise ModelFileError(f"{model_dir}: no tokenizer (tokenizer_config.json missing); save the tokenizer beside the weights.")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    if not any(arch.endswith("ForCausalLM") for arch in (config.architectures or [])):
        raise ModelFileError(
            f"{model_dir}: architectures {config.architectures} is not a causal language model; allowed: *ForCausalLM."
        )


def weight_matrix_modules(model_dir: str | Path) -> list[str]:
    """Full names of the modules with a 2-D weight (the layers LoRA can adapt), read from safetensors headers only."""
    from safetensors import safe_open

    names = set()
    for weights in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(weights, framework="numpy") as handle:
            for key in handle.keys():
                if key.endswith(".weight") and len(handle.get_slice(key).get_shape()) == 2:
                    names.add(key.removesuffix(".weight"))
    return sorted(names)


def check_target_modules(target_modules: list[str], model_dir: str | Path) -> None:
    """Every ``lora.target_modules`` entry must name a layer, as peft matches it (whole name or dotted suffix).

    peft raises only when *no* entry matches, so a typo next to a valid name would silently train fewer layers.
    """
    modules = weight_matrix_modules(model_dir)
    unmatched = [t for t in target_modules if not any(m == t or m.endswith("." + t) for m in modules)]
    if unmatched:
        leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
        raise ConfigError(f"params: 'lora.target_modules' names {unmatched}, which match no layer of {model_dir}; "
                          f"allowed: {', '.join(leaves)} (or a full module name).")


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if not tokenizer.chat_template:
        raise ModelFileError(f"{model_dir}: tokenizer has no chat template; the prompt needs one.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def bnb_config(cfg: Config, compute_dtype: str) -> BitsAndBytesConfig | None:
    if not cfg.quant.load_in_4bit:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant.quant_type,
        bnb_4bit_use_double_quant=cfg.quant.double_quant,
        bnb_4bit_compute_dtype=DTYPES[compute_dtype],
    )


def disable_cpu_inference_repack(model: torch.nn.Module) -> int:
    """Keep bitsandbytes 4-bit layers on the dequantize-and-matmul path on CPU.

    bitsandbytes 0.50 repacks a ``Linear4bit`` weight into an AVX512-BF16 inference layout the
    first time it runs an eval-mode forward on an input without grad.  That layout gives logits
    off by up to ~3.7 and wrong LoRA gradients (cosine 0.23 vs a dequantized reference), so both
    fine-tuning and evaluation turn it off here, and undo any repack that already happened.
    Returns the number of 4-bit layers touched.
    """
    import bitsandbytes as bnb
    from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

    touched = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = module.weight.quant_state
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state
                )
            touched += 1
    return touched


def _linear_on_dequantized(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``Linear4bit.forward`` on the kept dequantized weight: the input in the compute dtype, the output back in
    the input's dtype, as bitsandbytes does."""
    weight = module.dequantized_weight
    bias = None if module.bias is None else module.bias.to(weight.dtype)
    return torch.nn.functional.linear(x.to(weight.dtype), weight, bias).to(x.dtype)


def dequantize_once(model: torch.nn.Module) -> int:
    """Dequantize every 4-bit weight once and run its layer on that copy (``quant.dequantize``).

    bitsandbytes dequantizes a ``Linear4bit`` weight in every forward and again in every backward; the base
    weights are frozen, so on CPU that is repeated work, a tenth of a bf16 training step here
    (benchmarks/train_throughput.py). The copy is what bitsandbytes computes each time, so outputs and LoRA
    gradients are bitwise the same (tests/test_finetune.py), at 2 (bf16) or 4 (fp32) bytes per parameter
    instead of 0.5. A plain attribute, not a buffer: DDP would broadcast a buffer every step. Returns the number
    of layers changed.
    """
    import bitsandbytes as bnb

    touched = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            module.dequantized_weight = bnb.functional.dequantize_4bit(module.weight.data, state).to(
                module.compute_dtype or state.dtype)
            module.forward = partial(_linear_on_dequantized, module)
            touched += 1
    return touched


def flatten_output_projection(model: torch.nn.Module) -> None:
    """Run the LM head as one 2-D matmul over all positions.

    With a frozen (requires_grad=False) tied head and a 3-D input, PyTorch 2.13 on CPU takes a
    batched-matmul path that first copies the 49k x 576 weight per row: profiling showed evaluation
    2x slower and LoRA training 15% slower.  Flattening gives bit-identical logits.
    """
    head = model.get_output_embeddings()

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        flat = torch.nn.functional.linear(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias)
        return flat.view(*hidden.shape[:-1], flat.shape[-1])

    head.forward = forward


def load_causal_lm(model_dir: str | Path, cfg: Config, device: torch.device, compute_dtype: str | None = None
                   ) -> torch.nn.Module:
    """Load ``model_dir`` with the params' quantization on ``device`` (safetensors only, no remote code).

    ``compute_dtype`` (``float32`` or ``bfloat16``) defaults to the fine-tune's ``quant.compute_dtype``, resolved
    for ``device``; evaluation passes its own (``eval.compute_dtype``).
    """
    compute_dtype = compute_dtype or resolve_compute_dtype(cfg.quant.compute_dtype, device)
    check_model_dir(model_dir)
    quantization = bnb_config(cfg, compute_dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            quantization_config=quantization,
            dtype=DTYPES[compute_dtype],
            device_map={"": device},
            use_safetensors=True,
            trust_remote_code=False,
        )
    except Exception as exc:  # a corrupt or truncated checkpoint fails in many library-specific ways
        if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
            raise
        weights = ", ".join(p.name for p in Path(model_dir).glob("*.safetensors"))
        raise ModelFileError(f"{model_dir}/{weights}: weights cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc)[:300]}); the file may be truncated or corrupted, rerun `dvc repro -f base_model`.") from exc
    if quantization is not None:
        disable_cpu_inference_repack(model)
        if dequantizes_once(cfg.quant.dequantize, device):
            dequantize_once(model)
    flatten_output_projection(model)
    return model


class ParameterCounts(NamedTuple):
    total: int
    trainable: int  # requires_grad now: the LoRA weights while fine-tuning, 0 in evaluation
    adapter: int    # LoRA weights, trainable or frozen: what the fine-tune trained


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """Parameter counts, counting 4-bit packed weights at their logical (unpacked) size."""
    total = trainable = adapter = 0
    for name, param in model.named_parameters():
        state = getattr(param, "quant_state", None)
        count = int(torch.Size(state.shape).numel()) if state is not None else param.numel()
        total += count
        trainable += count if param.requires_grad else 0
        adapter += count if "lora_" in name else 0
    return ParameterCounts(total, trainable, adapter)
