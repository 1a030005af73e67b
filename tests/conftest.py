"""Shared fixtures: tiny random models (Llama, and the other families) with a real byte-level tokenizer and chat
template, built in seconds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SNLI = REPO / "data" / "snli"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# /proc/cpuinfo flag sets, for tests that pick the CPU's features by monkeypatching runtime.cpu_flags
BF16_FLAGS = {"avx2", "avx512f", "avx512_bf16"}
AMX_FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
NO_BF16_FLAGS = {"avx2", "avx512f", "avx512_vnni"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def snli_rows(split: str, count: int) -> list[dict]:
    with open(SNLI / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(count)]


QWEN2_CHAT_TEMPLATE = (   # Qwen2.5-Instruct's, without tools: a default system prompt when the messages have none
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
PHI3_CHAT_TEMPLATE = (   # Phi-3-mini-instruct's: role tags, <|end|> ends a turn, end-of-text after the last one
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PHI3_SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def _llama(vocab: int, tokenizer):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _qwen2(vocab: int, tokenizer):
    from transformers import Qwen2Config
    return Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def _phi3(vocab: int, tokenizer):
    from transformers import Phi3Config
    return Phi3Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      original_max_position_embeddings=512, tie_word_embeddings=False,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)


def _gpt_neox(vocab: int, tokenizer):
    from transformers import GPTNeoXConfig
    return GPTNeoXConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=512, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)


# family -> (config builder, special tokens, chat template, bos, eos, pad). gpt_neox is the family model/families.py
# does not list: the plain paths.
TINY_FAMILIES = {
    "llama": (_llama, CHATML_SPECIALS, CHAT_TEMPLATE, "<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "qwen2": (_qwen2, CHATML_SPECIALS, QWEN2_CHAT_TEMPLATE, None, "<|im_end|>", "<|endoftext|>"),
    "phi3": (_phi3, PHI3_SPECIALS, PHI3_CHAT_TEMPLATE, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
    "gpt_neox": (_gpt_neox, CHATML_SPECIALS, CHAT_TEMPLATE, "<|im_start|>", "<|im_end|>", "<|im_end|>"),
}


def build_tiny_model(directory: Path, family: str = "llama") -> Path:
    """Save a 2-layer random model of ``family`` (``TINY_FAMILIES``) + a byte-level BPE tokenizer trained on SNLI
    text, with the family's chat template, to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    build, specials, template, bos, eos, pad = TINY_FAMILIES[family]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = [r["premise"] + " " + r["hypothesis"] for r in snli_rows("train", 300)]
    bpe.train_from_iterator(text, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=pad,
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = template
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build(len(tokenizer), tokenizer))
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def loss_and_lora_grads(model, batch, window: int, prefix: list[int], tokenwise: tuple[str, ...] = ()
                        ) -> tuple[float, torch.Tensor]:
    """The training loss of one collated batch and the LoRA gradients it gives, all flattened into one vector."""
    from qlora_diff.model.finetune import answer_window_forward, answer_window_loss

    model.train()
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    outputs = answer_window_forward(model, inputs, window, prefix, tokenwise)
    loss = answer_window_loss(outputs.logits[:, :-1], batch["labels"])
    loss.backward()
    grads = [p.grad.detach().float().flatten() for n, p in model.named_parameters() if "lora_" in n]
    return loss.item(), torch.cat(grads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


def tiny_params(**overrides) -> dict:
    """Small, fast params for tests; nested dicts in ``overrides`` update the matching section."""
    params = {
        "data": {"train_size": 48},
        "eval_sets": {"snli": {"source": "bundled", "size": 24}},
        "quant": {"compute_dtype": "float32"},     # both pinned: tests pin numbers on every machine class
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "save_steps": 2, "learning_rate": 0.005,
                  "warmup_ratio": 0.0},
        "eval": {"batch_size": 8, "compute_dtype": "float32"},
        "report": {"bootstrap_samples": 200},
        "runtime": {"device": "cpu"},
    }
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    return params


def seed_study_block(root: Path, study: dict) -> str:
    """The README's seed-study block for ``study``, written as ``root``'s committed study file."""
    from qlora_diff.analysis.runs import SEED_STUDY
    from qlora_diff.tools.readme import seed_study

    (root / SEED_STUDY).parent.mkdir(parents=True, exist_ok=True)
    (root / SEED_STUDY).write_text(json.dumps(study), encoding="utf-8")
    return seed_study(root)


def prepare_all(project: Path) -> None:
    """The prepare stage and every eval set's prepare_eval stage, in process, for ``project/params.yaml``."""
    from qlora_diff.core.config import load_config
    from qlora_diff.data.prepare import prepare_train
    from qlora_diff.data.prepare_eval import prepare_eval_set

    cfg = load_config(project / "params.yaml")
    prepare_train(cfg, project / "models/base", project / "data/prepared/train.jsonl", project / "metrics/data.json")
    for name in cfg.eval_sets:
        prepare_eval_set(cfg, name, project / "models/base", project / "data/prepared/train.jsonl",
                         project / f"data/prepared/eval/{name}.jsonl", project / f"metrics/eval/{name}/data.json")


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A working directory laid out like the repo (data, tiny models/base, params.yaml), chdir'ed into."""
    shutil.copytree(SNLI, tmp_path / "data" / "snli")
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_addoption(parser) -> None:
    parser.addoption("--screenshots", type=Path, default=None,
                     help="save the page tests' screenshots here (the README's pictures: docs/images)")
    parser.addoption("--plots-revs", default="",
                     help="the offline plots test renders `dvc plots diff REVS` instead of `dvc plots show`, "
                          "e.g. 'HEAD exp-name' (space-separated)")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session's page tests (installed when missing)."""
    from browser import launched_chromium

    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def screenshot_dir(request, tmp_path) -> Path:
    """Where a page test saves its screenshots: ``--screenshots DIR``, else the test's temporary directory."""
    return request.config.getoption("--screenshots") or tmp_path
