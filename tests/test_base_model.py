"""The base_model stage: GGUF -> checkpoint conversion keeps the logits; local and hub-style sources; bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import ModelFileError
from qlora_diff.model.base_model import build_base_model, embedded_gguf_path, load_gguf
from qlora_diff.model.modeling import check_model_dir, load_causal_lm, load_tokenizer

PROMPT = "<|im_start|>user\nPremise: A man plays a guitar.\nHypothesis: A person makes music.<|im_end|>\n"


@pytest.mark.slow
def test_gguf_conversion_reloads_with_the_same_logits(tmp_path):
    gguf = embedded_gguf_path()
    cfg = parse_config({"model": {"source": "gguf", "path": str(gguf), "save_dtype": "float32"}})
    info = build_base_model(cfg, tmp_path / "base", tmp_path / "base.json")
    assert json.loads((tmp_path / "base.json").read_text()) == info
    assert info["parameters"] == 134_515_008 and info["source"] == "gguf" and len(info["sha256"]) == 64
    original, tokenizer = load_gguf(gguf)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "base", use_safetensors=True)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        want, got = original(ids).logits, reloaded(ids).logits
    assert torch.equal(want, got)
    saved_tokenizer = load_tokenizer(tmp_path / "base")
    assert saved_tokenizer(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    assert "<|im_start|>" in saved_tokenizer.chat_template


def test_local_directory_source_is_copied_with_its_digest(tiny_model_dir, tmp_path):
    cfg = parse_config({"model": {"source": "local", "path": str(tiny_model_dir), "save_dtype": "float32"}})
    info = build_base_model(cfg, tmp_path / "base", tmp_path / "base.json")
    assert info["source"] == "local" and len(info["sha256"]) == 64
    check_model_dir(tmp_path / "base")


def test_hub_source_code_path_works_offline_with_a_local_directory(tiny_model_dir, tmp_path):
    """The hub branch passes `revision` through from_pretrained; a local path stands in for a hub id."""
    cfg = parse_config({"model": {"source": "hub", "path": str(tiny_model_dir), "revision": "main",
                                  "save_dtype": "float32"}})
    info = build_base_model(cfg, tmp_path / "base", tmp_path / "base.json")
    assert info["source"] == "hub" and info["revision"] == "main"
    assert (tmp_path / "base" / "model.safetensors").is_file()


def test_truncated_gguf_is_a_clear_error_and_writes_nothing(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(embedded_gguf_path().read_bytes()[:4096])
    cfg = parse_config({"model": {"source": "gguf", "path": str(broken)}})
    with pytest.raises(ModelFileError, match="broken.gguf: cannot be read as a GGUF model"):
        build_base_model(cfg, tmp_path / "base", tmp_path / "base.json")
    assert not (tmp_path / "base").exists() and not (tmp_path / "base.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.gguf"]


def test_missing_gguf_is_a_clear_error(tmp_path):
    cfg = parse_config({"model": {"source": "gguf", "path": str(tmp_path / "nope.gguf")}})
    with pytest.raises(ModelFileError, match="nope.gguf: GGUF file not found"):
        build_base_model(cfg, tmp_path / "base", tmp_path / "base.json")


def test_directory_without_tokenizer_is_rejected(tiny_model_dir, tmp_path):
    target = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_model_dir, target)
    (target / "tokenizer_config.json").unlink()
    with pytest.raises(ModelFileError, match="no tokenizer"):
        check_model_dir(target)


def test_non_causal_checkpoint_is_rejected(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100)).save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelFileError, match=r"not a causal language model; allowed: \*ForCausalLM"):
        check_model_dir(tmp_path / "bert")


def test_corrupted_safetensors_is_a_clear_error(tiny_model_dir, tmp_path):
    target = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cfg = parse_config({"quant": {"load_in_4bit": False}})
    with pytest.raises(ModelFileError, match="model.safetensors.*cannot be loaded"):
        load_causal_lm(target, cfg, torch.device("cpu"))
