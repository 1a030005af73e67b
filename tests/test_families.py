"""Model families as data (model/families.py): every registered family, and one that is not, on tiny random models
built from transformers configs (tests/conftest.py TINY_FAMILIES); nothing is downloaded.

- the registry's names are the model's own modules;
- every speed knob on (shared prefix, padding skipped, weights dequantized once, eager attention) against every
  knob off gives the same loss and LoRA gradients, in 4-bit and float32;
- the whole pipeline, stage by stage, from a local model directory to the comparison; Qwen2's run mirrors the
  reference's setup in miniature (its chat template and default system prompt, LoRA r=16 on the attention
  projections, answer-only loss);
- a family not in the registry trains on the plain paths and its metrics say so.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, SNLI, TINY_FAMILIES, build_tiny_model, loss_and_lora_grads, snli_rows, tiny_params
from synthetic import run_stage

from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import ConfigError
from qlora_diff.data.prompts import answer_token_ids, format_prompt
from qlora_diff.model.families import FAMILIES, family_of, lora_targets, model_family
from qlora_diff.model.finetune import (
    IGNORE_INDEX,
    LeftPadCollator,
    attach_lora,
    build_examples,
    split_shared_prefix,
)
from qlora_diff.model.modeling import check_target_modules, load_causal_lm, load_tokenizer
from qlora_diff.model.unpadded import tokenwise_modules

CPU = torch.device("cpu")
UNKNOWN = "gpt_neox"   # built by transformers, quantized by bitsandbytes, and not in the registry
UNKNOWN_TARGETS = ["query_key_value", "dense"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_model(root / family, family) for family in TINY_FAMILIES}


def test_every_registered_family_has_a_tiny_model_and_one_family_is_left_out():
    assert set(FAMILIES) == set(TINY_FAMILIES) - {UNKNOWN}
    assert not family_of(UNKNOWN).known and family_of(UNKNOWN).name == UNKNOWN


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_registry_names_the_models_own_modules(family_dirs, family):
    """Each token-wise name is hooked once per layer (2 layers), and the LoRA targets pass the same check a user's
    list does; a registry typo would hook nothing and skip no padding, silently."""
    entry = model_family(family_dirs[family])
    assert entry == FAMILIES[family]
    model = load_causal_lm(family_dirs[family], parse_config(tiny_params()), CPU)
    assert len(tokenwise_modules(model, entry.tokenwise)) == 2 * len(entry.tokenwise)
    check_target_modules(lora_targets("auto", entry), family_dirs[family])


def test_auto_targets_of_an_unknown_family_stop_with_the_choices(family_dirs):
    with pytest.raises(ConfigError, match=r"'lora.target_modules' is 'auto', but model family 'gpt_neox' is not in "
                                          r"model/families.py \(llama, qwen2, phi3\); allowed: a list"):
        lora_targets("auto", model_family(family_dirs[UNKNOWN]))
    assert lora_targets(["q_proj"], FAMILIES["phi3"]) == ["q_proj"], "an explicit list is taken as given"


def _loss_and_grads(family_dir: Path, family: str, fast: bool) -> tuple[float, torch.Tensor, list[int]]:
    """One batch of 6 SNLI rows: the loss and every LoRA gradient, with every speed knob on (``fast``) or off; and
    the batch shapes the first MLP saw."""
    cfg = parse_config(tiny_params(quant={"dequantize": "once" if fast else "every_forward"},
                                   train={"attention": "eager" if fast else "sdpa"}))
    model = attach_lora(cfg, load_causal_lm(family_dir, cfg, CPU))
    tokenizer = load_tokenizer(family_dir)
    rows = [{**r, "prompt": format_prompt(cfg, tokenizer, r)}
            for r in snli_rows("validation", 6)]
    examples, _ = build_examples(cfg, tokenizer, rows)
    prefix, examples = split_shared_prefix(examples) if fast else ([], examples)
    batch = LeftPadCollator(tokenizer.pad_token_id, len(prefix))(examples)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)   # LoRA B starts at zero: give the A gradients something to flow through
    seen = []   # positions the first layer's MLP projections ran on (inside the MLP, after any gathering)
    inner = [m for m in tokenwise_modules(model, ("mlp",))[0].modules() if isinstance(m, torch.nn.Linear)][-1]
    probe = inner.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[:-1].numel()))
    window = max(len(ids) for ids in answer_token_ids(cfg, tokenizer).values())
    loss, grads = loss_and_lora_grads(model, batch, window, prefix, FAMILIES[family].tokenwise if fast else ())
    probe.remove()
    real = int(batch["attention_mask"][:, len(prefix):].sum())
    return loss, grads, [seen[-1], real, batch["input_ids"].numel()]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_speed_knob_on_gives_the_loss_and_lora_gradients_of_every_knob_off(family_dirs, family):
    """float32 throughout, so the two differ by the order of float sums only: bounds 1e-5 relative (the same as
    tests/test_finetune.py's one knob at a time on the Llama model)."""
    slow_loss, slow_grads, (slow_seen, _, slow_positions) = _loss_and_grads(family_dirs[family], family, fast=False)
    fast_loss, fast_grads, (fast_seen, real, _) = _loss_and_grads(family_dirs[family], family, fast=True)
    assert slow_seen == slow_positions and fast_seen == real < slow_positions, "the MLP must skip the padding"
    assert fast_loss == pytest.approx(slow_loss, rel=1e-5)
    assert slow_grads.abs().max() > 0
    assert (fast_grads - slow_grads).abs().max() <= 1e-5 * slow_grads.abs().max()


def test_qwen2_prompts_carry_its_default_system_prompt_and_train_on_the_answer_only(family_dirs):
    cfg = parse_config(tiny_params(prompt={"system": ""}))
    tokenizer = load_tokenizer(family_dirs["qwen2"])
    prompt = format_prompt(cfg, tokenizer, {"premise": "A man sleeps.", "hypothesis": "A person rests."})
    assert prompt.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert prompt.endswith("<|im_start|>assistant\n")
    (example,), _ = build_examples(cfg, tokenizer, [{"prompt": prompt, "label": "neutral"}])
    answer = [token for token in example["labels"] if token != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "neutral<|im_end|>" and example["input_ids"][-len(answer):] == answer


def test_phi3_answers_end_at_its_end_of_turn_not_its_end_of_text(family_dirs):
    """Phi-3's template writes <|end|>, a newline and <|endoftext|> after a reply; the reply ends at <|end|>."""
    cfg = parse_config(tiny_params())
    tokenizer = load_tokenizer(family_dirs["phi3"])
    answers = answer_token_ids(cfg, tokenizer)
    assert [tokenizer.decode(ids) for ids in answers.values()] == [f"{label}<|end|>" for label in cfg.data.labels]


# family -> params beyond tiny_params for its end-to-end run
END_TO_END = {
    "llama": {},
    "qwen2": {"lora": {"r": 16, "alpha": 32, "target_modules": "auto"}, "prompt": {"system": ""}},
    "phi3": {},
    UNKNOWN: {"lora": {"target_modules": UNKNOWN_TARGETS}},
}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM",
                 UNKNOWN: "GPTNeoXForCausalLM"}
STAGES = [("base_model.py",), ("prepare.py",), ("prepare_eval.py", "snli"), ("hypothesis_baseline.py",),
          ("slices.py", "snli"), ("evaluate.py", "base", "snli"), ("finetune.py",), ("evaluate.py", "adapter", "snli"),
          ("seeds.py", "snli"), ("compare.py", "snli")]


def local_model(directory: Path) -> dict:
    return {"source": "local", "path": str(directory), "save_dtype": "float32"}


def run_pipeline(project: Path, params: dict) -> None:
    """Every stage from base_model to compare@snli, as DVC runs them, in ``project`` with ``params``."""
    shutil.copytree(SNLI, project / "data" / "snli")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in STAGES:
        run_stage(project, *stage)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(END_TO_END))
def test_every_family_runs_the_pipeline_from_a_local_model_to_the_comparison(family_dirs, family, tmp_path):
    """Every speed knob at its default (on), 4-bit, float32."""
    run_pipeline(tmp_path, tiny_params(model=local_model(family_dirs[family]), **END_TO_END[family]))
    base = json.loads((tmp_path / "models/base.json").read_text())
    finetune = json.loads((tmp_path / "metrics/finetune.json").read_text())
    adapter = json.loads((tmp_path / "models/adapter/adapter_config.json").read_text())
    compared = json.loads((tmp_path / "metrics/eval/snli/compare.json").read_text())
    predictions = (tmp_path / "reports/predictions/snli/adapter.jsonl").read_text().splitlines()
    assert base["source"] == "local" and base["architecture"] == ARCHITECTURES[family]
    assert finetune["steps"] == 6 and finetune["final_loss"] > 0 and len(predictions) == 24
    assert sum(compared[key] for key in ("corrected", "regressed", "still_wrong", "still_right")) == 24
    if family in FAMILIES:
        assert finetune["model_family"] == family and finetune["skipped_padding"] is True
        assert adapter["target_modules"] == sorted(FAMILIES[family].lora_targets)
    else:
        assert finetune["model_family"] == f"{UNKNOWN} (not in model/families.py: plain paths)"
        assert finetune["skipped_padding"] is False and adapter["target_modules"] == sorted(UNKNOWN_TARGETS)
    if family == "qwen2":
        assert adapter["r"] == 16 and finetune["shared_prefix_tokens"] > 20   # Qwen's own system prompt, shared


RECIPE = REPO / "recipes" / "qwen2.5-1.5b-cuda.sh"
ON_THIS_MACHINE = {"model.source", "model.path", "model.revision", "runtime.device", "train.batch_size",
                   "eval.batch_size"}   # the hub model, the GPU and its batch sizes: replaced by tiny ones here


def recipe_overrides() -> dict[str, object]:
    """The recipe's ``-S key=value`` pairs, values read as YAML as ``dvc exp run -S`` reads them."""
    words = shlex.split(RECIPE.read_text(encoding="utf-8"), comments=True)
    return {word.split("=", 1)[0]: yaml.safe_load(word.split("=", 1)[1])
            for flag, word in zip(words, words[1:]) if flag == "-S"}


def test_the_reference_recipe_pins_the_hub_model_and_asks_for_the_gpu_in_bf16():
    overrides = recipe_overrides()
    assert overrides["model.path"] == "Qwen/Qwen2.5-1.5B-Instruct" and len(overrides["model.revision"]) == 40
    assert overrides["runtime.device"] == "cuda" and overrides["quant.compute_dtype"] == "bfloat16"
    assert (overrides["lora.r"], overrides["lora.target_modules"]) == (16, "auto")


@pytest.mark.slow
def test_the_reference_recipe_runs_on_cpu_with_a_tiny_qwen2_in_place_of_the_hub_model(family_dirs, tmp_path):
    """Every override of the recipe but the hub model, the device and the batch sizes, on the tiny Qwen2."""
    params = tiny_params(model=local_model(family_dirs["qwen2"]))
    for key, value in recipe_overrides().items():
        if key not in ON_THIS_MACHINE:
            section, name = key.split(".")
            params.setdefault(section, {})[name] = value
    parse_config(params)   # the recipe's values are valid params
    run_pipeline(tmp_path, params)
    finetune = json.loads((tmp_path / "metrics/finetune.json").read_text())
    evaluated = json.loads((tmp_path / "metrics/eval/snli/adapter.json").read_text())
    adapter = json.loads((tmp_path / "models/adapter/adapter_config.json").read_text())
    assert finetune["compute_dtype"] == "bfloat16" == evaluated["compute_dtype"]
    assert finetune["model_family"] == "qwen2" and adapter["r"] == 16
    assert adapter["target_modules"] == sorted(FAMILIES["qwen2"].lora_targets)
