"""Params validation: every bad value stops with the key path and what is allowed, before any heavy work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from qlora_diff.core.config import Config, load_config, parse_config
from qlora_diff.core.errors import ConfigError


def test_committed_params_are_valid():
    cfg = load_config(REPO / "params.yaml")
    assert isinstance(cfg, Config)
    assert cfg.data.labels == ["entailment", "neutral", "contradiction"]


def test_defaults_fill_missing_sections():
    cfg = parse_config({"lora": {"r": 8}})
    assert cfg.lora.r == 8 and cfg.lora.alpha == 32.0 and cfg.quant.quant_type == "nf4"


BAD_PARAMS = [
    ({"lora": {"rank": 8}}, ["'lora.rank'", "Did you mean 'r'"]),
    ({"trian": {}}, ["'trian'", "Did you mean 'train'"]),
    ({"lora": {"r": 0}}, ["'lora.r'", ">= 1"]),
    ({"lora": {"r": "eight"}}, ["'lora.r'", "an integer"]),
    ({"lora": {"r": 2.5}}, ["'lora.r'", "an integer"]),
    ({"lora": {"dropout": 1.5}}, ["'lora.dropout'", "<= 0.99"]),
    ({"lora": {"bias": "some"}}, ["'lora.bias'", "'none'", "'lora_only'"]),
    ({"lora": {"target_modules": []}}, ["'lora.target_modules'"]),
    ({"train": {"learning_rate": 0}}, ["'train.learning_rate'", "> 0"]),
    ({"train": {"learning_rate": -1e-4}}, ["'train.learning_rate'", "> 0"]),
    ({"train": {"batch_size": 0}}, ["'train.batch_size'", ">= 1"]),
    ({"train": {"max_steps": 0}}, ["'train.max_steps'", "-1"]),
    ({"train": {"gradient_checkpointing": "yes"}}, ["'train.gradient_checkpointing'", "true or false"]),
    ({"data": {"train_size": -5}}, ["'data.train_size'", ">= 1"]),
    ({"eval_sets": {"snli": {"size": "most"}}}, ["'eval_sets.snli.size'", "'all'"]),
    ({"eval_sets": {}}, ["'eval_sets'", "non-empty mapping"]),
    ({"eval_sets": {"a b": {}}}, ["'eval_sets.a b'", "letters, digits"]),
    ({"eval_sets": {"x": {"source": "local", "path": "elsewhere/x.jsonl"}}}, ["'eval_sets.x.path'", "data/eval_sets/"]),
    ({"eval_sets": {"x": {"source": "hub", "hub_name": "org/set"}}}, ["'eval_sets.x.hub_revision'", "pinned"]),
    ({"eval_sets": {"x": {"label_map": {"yes": "entailment", "no": ["neutral", "contradicts"]}}}},
     ["'eval_sets.x.label_map.no'", "'contradicts'", "data.labels"]),
    ({"eval_sets": {"x": {"label_map": {"yes": "entailment", "no": "neutral"}}}},
     ["'eval_sets.x.label_map'", "not mapped: ['contradiction']"]),
    ({"eval_sets": {"x": {"label_map": {"yes": ["entailment", "neutral"], "no": ["neutral", "contradiction"]}}}},
     ["'eval_sets.x.label_map'", "mapped twice: ['neutral']"]),
    ({"data": {"on_bad_row": "ignore"}}, ["'data.on_bad_row'", "'error'", "'skip'"]),
    ({"data": {"source": "s3"}}, ["'data.source'", "'bundled'"]),
    ({"quant": {"quant_type": "int3"}}, ["'quant.quant_type'", "'nf4'", "'fp4'"]),
    ({"quant": {"compute_dtype": "float16"}}, ["'quant.compute_dtype'", "'bfloat16'"]),
    ({"quant": {"dequantize": "always"}}, ["'quant.dequantize'", "'every_forward'"]),
    ({"train": {"attention": "flash"}}, ["'train.attention'", "'eager'", "'sdpa'"]),
    ({"eval": {"method": "vibes"}}, ["'eval.method'", "'loglik'", "'generate'"]),
    ({"runtime": {"device": "tpu"}}, ["'runtime.device'", "'cuda'"]),
    ({"model": {"source": "gguf"}}, ["'model.path'", ".gguf"]),
    ({"model": {"source": "gguf", "path": "weights.bin"}}, ["'model.path'", ".gguf"]),
    ({"model": {"source": "hub", "path": "HuggingFaceTB/SmolLM2-135M-Instruct"}}, ["'model.revision'"]),
    ({"model": {"source": "ollama"}}, ["'model.source'", "'embedded'"]),
    ({"prompt": {"template": "Premise: {premise}"}}, ["'prompt.template'", "'hypothesis'", "task: text"]),
    ({"prompt": {"template": "{premise} {hypothesis} {extra}"}}, ["'prompt.template'", "exactly"]),
    ({"task": "sentiment"}, ["'task'", "'nli'", "'text'"]),
    ({"task": "text", "prompt": {"template": "{label}"}}, ["'prompt.template'", "other than", "label"]),
    ({"task": "text", "prompt": {"template": "{0}"}}, ["'prompt.template'", "['0']"]),
    ({"task": "text", "prompt": {"template": "no fields"}}, ["'prompt.template'", "one or more"]),
    ({"prompt": {"template": "{premise} {hypothesis"}}, ["'prompt.template'", "cannot be parsed", "{{ and }}"]),
    ({"prompt": {"template": "{premise} {hypothesis!z}"}}, ["'prompt.template'", "cannot be filled", "{{ and }}"]),
    ({"task": "text", "prompt": {"template": "{text}"}}, ["'slices.length_bins'", "['text']", "text: [10, 20]"]),
    ({"task": "text", "prompt": {"template": "{text}"}, "slices": {"length_bins": {"text": [10]}}},
     ["'eval_sets.challenge.source'", "['text']"]),
    ({"data": {"text_columns": {"sentence": "text"}}}, ["'data.text_columns'", "['sentence']"]),
    ({"eval_sets": {"x": {"source": "bundled", "text_columns": {"question": "q"}}}},
     ["'eval_sets.x.text_columns'", "['question']"]),
    ({"prompt": {"label_words": {"entailment": "yes", "neutral": "maybe"}}}, ["'prompt.label_words'", "data.labels"]),
    ({"prompt": {"label_words": {"entailment": "yes", "neutral": "yes", "contradiction": "no"}}},
     ["'prompt.label_words'", "distinct"]),
    ({"report": {"bootstrap_samples": 10}}, ["'report.bootstrap_samples'", ">= 100"]),
    ({"lora": "big"}, ["'lora'", "mapping"]),
    ({"train": {"extra_seeds": [1, 2, 1]}}, ["'train.extra_seeds' repeats 1", "distinct seeds"]),
    ({"train": {"seed": 5, "extra_seeds": [5]}}, ["'train.extra_seeds' repeats 5", "train.seed is 5"]),
    ({"train": {"extra_seeds": [-1]}}, ["'train.extra_seeds' has -1", "from 0 to 4294967295"]),
    ({"train": {"extra_seeds": 3}}, ["'train.extra_seeds'", "a list of an integer"]),
]


@pytest.mark.parametrize("raw, fragments", BAD_PARAMS, ids=[str(i) for i in range(len(BAD_PARAMS))])
def test_bad_params_name_key_and_allowed_values(raw, fragments):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "allowed" in message.lower() or "did you mean" in message.lower()


def test_cuda_requested_without_gpu_is_a_config_error(monkeypatch):
    import torch

    from qlora_diff.core.config import check_device_available

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'runtime.device' is 'cuda'.*allowed here: 'auto' or 'cpu'"):
        check_device_available(parse_config({"runtime": {"device": "cuda"}}))


def test_invalid_yaml_is_reported(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("lora: {r: 8\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# Runs a stage script as __main__ and, at exit, says whether torch was ever imported.
RUN_AND_REPORT_TORCH = """
import atexit, runpy, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules, file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

CLI_CASES = [
    ("prepare", ("lora", "rnak", 4), ["'lora.rnak'", "Did you mean 'r'"]),
    ("finetune", ("lora", "r", 0), ["'lora.r'", ">= 1"]),
    ("evaluate.py base snli", ("eval", "method", "vibes"), ["'eval.method'", "'loglik'"]),
    ("evaluate.py adapter nope", ("eval", "method", "loglik"), ["evaluation set 'nope'", "allowed: challenge, snli"]),
    ("prepare_eval.py snli", ("eval_sets", "snli", {"size": 0}), ["'eval_sets.snli.size'", ">= 1"]),
    ("base_model", ("model", "source", "gguf"), ["'model.path'", ".gguf"]),
    ("compare snli", ("report", "confidence", 2), ["'report.confidence'", "<= 0.999"]),
    ("report", ("report", "confidence", 2), ["'report.confidence'", "<= 0.999"]),
    ("finetune", ("train", "learning_rate", -1), ["'train.learning_rate'", "> 0"]),
    ("prepare", ("data", "train_size", 0), ["'data.train_size'", ">= 1"]),
    ("finetune_seed.py 3", ("train", "extra_seeds", [1, 2]), ["seed '3' is not in 'train.extra_seeds'", "allowed: 1, 2"]),
    ("evaluate_seed.py 1 snli", ("train", "extra_seeds", []), ["seed '1'", "none (the list is empty)"]),
]


@pytest.mark.parametrize("stage, change, fragments", CLI_CASES, ids=[c[0].replace(" ", "-") + "-" + c[1][1] for c in CLI_CASES])
def test_stage_cli_rejects_bad_params_before_importing_torch_and_leaves_outputs(tmp_path, stage, change, fragments):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section, key, value = change
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    existing = tmp_path / "metrics" / "data.json"
    existing.parent.mkdir()
    existing.write_text('{"kept": true}')
    script, *args = stage.split()
    script = script if script.endswith(".py") else f"{script}.py"
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT_TORCH, str(REPO / "stages" / script), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert all(fragment in done.stderr for fragment in fragments), done.stderr
    assert done.stderr.startswith("error: params: ") and "Traceback" not in done.stderr
    assert done.stderr.rstrip().endswith("torch imported: False"), "params must be checked before torch is loaded"
    assert existing.read_text() == '{"kept": true}'
    assert sorted(p.name for p in Path(tmp_path).rglob("*")) == ["data.json", "metrics", "params.yaml"]


def test_a_replicate_config_has_one_seed_and_no_replicates():
    cfg = parse_config({"train": {"seed": 42, "extra_seeds": [1, 2]}})
    replicate = cfg.with_train_seed(2)
    assert (replicate.train.seed, replicate.train.extra_seeds) == (2, [])
    assert (cfg.train.seed, cfg.train.extra_seeds) == (42, [1, 2]), "the run's own config is left as it was"
    assert replicate.lora == cfg.lora and replicate.train.learning_rate == cfg.train.learning_rate


def test_params_as_dvc_rewrites_them_still_load(tmp_path):
    """`dvc exp run -S` rewrites params.yaml in YAML 1.2, where a bare `no` is a string (YAML 1.1: false). The
    negation word list must survive that round trip."""
    from dvc.utils.serialize import modify_yaml

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    with modify_yaml(params) as data:
        data["lora"]["r"] = 8
    assert "\n    negation: [no, not," in params.read_text() or "- no\n" in params.read_text()
    cfg = load_config(params)
    assert cfg.lora.r == 8 and "no" in cfg.slices.word_lists["negation"]
    assert cfg.slices == load_config(REPO / "params.yaml").slices


def test_code_defaults_equal_the_committed_params():
    """A key left out of params.yaml behaves exactly as the committed default run."""
    assert parse_config({}) == load_config(REPO / "params.yaml")


BNB_IMPORT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
if sys.argv[1] == "filtered":
    from qlora_diff.core.cli import quiet_unactionable_warnings
    quiet_unactionable_warnings()
import bitsandbytes
logging.getLogger("bitsandbytes.backends.cpu.ops").warning("another warning still shows")
"""


def test_the_offline_kernels_warning_is_filtered_and_nothing_else():
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("bitsandbytes only looks for the hub kernel on AVX512-BF16 CPUs")
    logs = {mode: subprocess.run([sys.executable, "-c", BNB_IMPORT, mode], capture_output=True, text=True,
                                 timeout=120).stderr for mode in ("plain", "filtered")}
    assert "Failed to load CPU gemm_4bit_forward from kernels-community" in logs["plain"]
    assert "kernels-community" not in logs["filtered"]
    assert "another warning still shows" in logs["filtered"]


HUB_SOURCES = {"model": {"model": {"source": "hub", "path": "org/model", "revision": "abc"}},
               "data": {"data": {"source": "hub", "hub_revision": "abc"}},
               "eval set": {"eval_sets": {"rte": {"source": "hub", "hub_name": "org/rte", "hub_revision": "abc"}}}}
# Which stage downloads for which hub source: no other stage may go online.
DOWNLOADERS = {"model": {"base_model"}, "data": {"prepare"}, "eval set": {"prepare_eval"}}


def stage_hub_decisions(monkeypatch, source: str) -> dict[str, bool]:
    """Run every stage script as __main__ with run_stage replaced: each stage's ``downloads`` answer for params with
    ``source`` on the hub."""
    import runpy

    from qlora_diff.core import cli

    cfg = parse_config(HUB_SOURCES[source])
    decided = {}
    for script in sorted((REPO / "stages").glob("*.py")):
        def fake_run_stage(main, description, *positionals, downloads=lambda cfg, *values: False):
            values = [{"which": "base", "seed": 7, "eval_set": "rte" if "rte" in cfg.eval_sets else "snli"}[name]
                      for name, _ in positionals]
            decided[script.stem] = downloads(cfg, *values)
        monkeypatch.setattr(cli, "run_stage", fake_run_stage)
        runpy.run_path(str(script), run_name="__main__")
    return decided


@pytest.mark.parametrize("source", sorted(HUB_SOURCES))
def test_only_the_stage_that_downloads_goes_online(monkeypatch, source):
    decided = stage_hub_decisions(monkeypatch, source)
    assert len(decided) == len(list((REPO / "stages").glob("*.py")))
    assert {stage for stage, online in decided.items() if online} == DOWNLOADERS[source]


def test_hub_access_never_overrides_the_user(monkeypatch):
    from qlora_diff.core.cli import decide_hub_access

    monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)
    for downloads, expected in ((True, "0"), (False, "1")):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        decide_hub_access(downloads)
        assert os.environ["HF_HUB_OFFLINE"] == expected
    for user in ("0", "1"):
        monkeypatch.setenv("HF_HUB_OFFLINE", user)
        decide_hub_access(user == "1")   # the opposite of what the stage would choose
        assert os.environ["HF_HUB_OFFLINE"] == user


def test_hub_access_must_be_decided_before_huggingface_hub_is_imported(monkeypatch):
    from qlora_diff.core.cli import decide_hub_access

    monkeypatch.setitem(sys.modules, "huggingface_hub", object())
    with pytest.raises(RuntimeError, match="before the stage decided"):
        decide_hub_access(False)


def test_a_hub_training_set_needs_a_pinned_revision():
    with pytest.raises(ConfigError, match="'data.hub_revision' is empty"):
        parse_config({"data": {"source": "hub"}})