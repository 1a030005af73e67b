"""Model families as data: what the pipeline may assume about a model's modules, keyed by transformers'
``model_type`` (``config.json``).

Each family names
- ``tokenwise``: the modules that ``train.skip_padding`` runs on real tokens only (``model/unpadded.py``). Each
  must treat every position on its own, so it can run on the real tokens alone: the attention projections and the
  MLP block, never attention itself;
- ``lora_targets``: what ``lora.target_modules: auto`` adapts, the attention projections (the QLoRA reference
  adapted those).

Chat templates need no entry: the prompt, and the answer's end (the template's first special token after the
reply), are read from the tokenizer (``data/prompts.py``). A model of a family not listed here runs on the plain
paths, all padding computed, and ``metrics/finetune.json`` says so (``model_family``, ``skipped_padding``);
``lora.target_modules: auto`` then stops with the model's layer names to choose from. To add a family: its
``model_type``, the two lists, and a tiny random model in ``tests/conftest.py`` (``TINY_FAMILIES``), whose tests
check the names against the model and the skipped padding against the padded loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig

from qlora_diff.core.errors import ConfigError

AUTO = "auto"


@dataclass(frozen=True)
class Family:
    name: str
    tokenwise: tuple[str, ...]      # module leaf names; the outermost module of each name is hooked
    lora_targets: tuple[str, ...]   # module leaf names, as peft matches them

    @property
    def known(self) -> bool:
        return bool(self.tokenwise)


_LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
FAMILIES = {
    family.name: family for family in (
        Family("llama", (*_LLAMA_ATTENTION, "mlp"), _LLAMA_ATTENTION),   # SmolLM2, Llama 2/3
        Family("qwen2", (*_LLAMA_ATTENTION, "mlp"), _LLAMA_ATTENTION),   # Qwen2, Qwen2.5 (q/k/v carry a bias)
        Family("phi3", ("qkv_proj", "o_proj", "mlp"), ("qkv_proj", "o_proj")),   # Phi-3, Phi-3.5: fused projections
    )
}


def family_of(model_type: str) -> Family:
    """The registry's entry, or an unknown family (no token-wise modules, no default targets) named by its type."""
    return FAMILIES.get(model_type) or Family(model_type, (), ())


def model_family(model_dir: str | Path) -> Family:
    """The family of a saved model, from its ``config.json``."""
    return family_of(AutoConfig.from_pretrained(model_dir, trust_remote_code=False).model_type)


def lora_targets(requested: list[str] | str, family: Family) -> list[str]:
    """``lora.target_modules`` as peft gets it: the list as given, or with ``auto`` the family's targets."""
    if requested != AUTO:
        return list(requested)
    if not family.lora_targets:
        raise ConfigError(f"params: 'lora.target_modules' is 'auto', but model family {family.name!r} is not in "
                          f"model/families.py ({', '.join(FAMILIES)}); allowed: a list of its module names.")
    return list(family.lora_targets)
