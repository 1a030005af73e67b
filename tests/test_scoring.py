"""Label log-likelihood scoring and the generation parser, checked against an independent computation."""

from __future__ import annotations

import pytest
import torch
from conftest import snli_rows

from qlora_diff.core.config import parse_config
from qlora_diff.data.prompts import answer_token_ids, format_prompt, shared_prefix
from qlora_diff.model.modeling import load_causal_lm, load_tokenizer
from qlora_diff.model.scoring import (
    encode_prompts,
    generate_answers,
    label_logprobs,
    parse_label,
    same_length_batches,
)

# Two-word label words make every answer several tokens long.
LABEL_WORDS = {"entailment": "it follows", "neutral": "cannot tell", "contradiction": "it contradicts"}


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    cfg = parse_config({"prompt": {"label_words": LABEL_WORDS}, "quant": {"load_in_4bit": False,
                                                                        "compute_dtype": "float32"}})
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, cfg, torch.device("cpu")).eval()
    rows = snli_rows("test", 7)
    prompts = [format_prompt(cfg, tokenizer, r) for r in rows]
    return cfg, tokenizer, model, prompts


def reference_logprob(model, tokenizer, prompt: str, answer: list[int]) -> float:
    """Unbatched, uncached: run prompt+answer once and sum the answer tokens' log-probabilities."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(logp[len(prompt_ids) - 1 + j, token].item() for j, token in enumerate(answer))


def test_answers_are_multi_token_and_end_the_turn(setup):
    cfg, tokenizer, _, _ = setup
    answers = answer_token_ids(cfg, tokenizer)
    assert all(len(ids) >= 3 for ids in answers.values())
    assert all(ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") for ids in answers.values())


def test_logprobs_match_independent_full_sequence_computation(setup):
    cfg, tokenizer, model, prompts = setup
    answers = answer_token_ids(cfg, tokenizer)
    scores = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts), answers, batch_size=3)
    for prompt, row in zip(prompts, scores):
        expected = [reference_logprob(model, tokenizer, prompt, ids) for ids in answers.values()]
        assert row == pytest.approx(expected, abs=1e-3)
        assert row.index(max(row)) == expected.index(max(expected))


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("answers", [
    {"one": [40], "two": [41, 42], "four": [43, 44, 45, 46]},  # packed block of 4 tokens, labels of 1-4 tokens
    {"a": [40], "b": [41], "c": [42]},                          # single-token labels: nothing packed
])
def test_answers_of_different_lengths_match_reference(setup, share_prefix, answers):
    """Answers packed in one block after the prompt: each label sees only its own earlier tokens."""
    _, tokenizer, model, prompts = setup
    scores = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts), answers, batch_size=4, share_prefix=share_prefix)
    for prompt, row in zip(prompts, scores):
        assert row == pytest.approx([reference_logprob(model, tokenizer, prompt, ids) for ids in answers.values()],
                                    abs=1e-3)


def test_adapter_model_scores_like_reference(setup):
    """Through a PeftModel with non-zero LoRA weights: the cache and the packed mask reach every layer."""
    from peft import LoraConfig, get_peft_model

    cfg, tokenizer, model, prompts = setup
    torch.manual_seed(1)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    try:
        answers = answer_token_ids(cfg, tokenizer)
        scores = label_logprobs(adapted, tokenizer, encode_prompts(tokenizer, prompts[:3]), answers, batch_size=3)
        for prompt, row in zip(prompts, scores):
            expected = [reference_logprob(adapted, tokenizer, prompt, ids) for ids in answers.values()]
            with adapted.disable_adapter():
                plain = [reference_logprob(adapted, tokenizer, prompt, ids) for ids in answers.values()]
            assert row == pytest.approx(expected, abs=1e-3)
            assert row != pytest.approx(plain, abs=1e-3), "the adapter must change the scores"
    finally:
        adapted.unload()


def test_shared_prefix_leaves_every_prompt_a_token():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == [1, 2, 3]
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]
    assert shared_prefix([[7, 8], [9, 8]]) == []
    assert shared_prefix([[1, 2, 3]]) == [1, 2]


def test_multi_token_labels_are_scored_in_full(setup):
    cfg, tokenizer, model, prompts = setup
    answers = answer_token_ids(cfg, tokenizer)
    first_only = {label: ids[:1] for label, ids in answers.items()}
    full = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts[:2]), answers, batch_size=2)
    partial = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts[:2]), first_only, batch_size=2)
    for full_row, partial_row in zip(full, partial):
        assert all(f < p - 1e-3 for f, p in zip(full_row, partial_row))


def test_batches_hold_one_length_each_and_cover_every_row_once():
    encoded = [[1] * 3, [1] * 5, [1] * 3, [1] * 3, [1] * 5, [1] * 4, [1] * 3]
    batches = list(same_length_batches(encoded, 2))
    assert batches == [[0, 2], [3, 6], [5], [1, 4]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_log_probabilities_are_bitwise_independent_of_the_batch_size(tiny_model_dir, dtype):
    """24 SNLI prompts (groups of one length among others) scored at batch sizes 1, 2, 5 and 24 give bitwise
    equal log-probabilities in fp32 and bf16: no row is padded, and CPU matmuls do not depend on the rows beside
    it. Padding prompts to the batch's longest one broke this (real model, bf16: up to 1 nat)."""
    cfg = parse_config({"prompt": {"label_words": LABEL_WORDS}, "quant": {"load_in_4bit": False}})
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, cfg, torch.device("cpu"), dtype).eval()
    encoded = encode_prompts(tokenizer, [format_prompt(cfg, tokenizer, r)
                                         for r in snli_rows("test", 60)])
    sizes = [len(ids) for ids in encoded]
    assert max(sizes.count(size) for size in sizes) >= 3, "some batch must hold several rows"
    answers = answer_token_ids(cfg, tokenizer)
    runs = [label_logprobs(model, tokenizer, encoded, answers, batch_size=size) for size in (1, 2, 5, 60)]
    assert all(run == runs[0] for run in runs[1:])
    assert model.get_input_embeddings().weight.dtype == getattr(torch, dtype)


def test_results_come_back_in_input_order(setup):
    cfg, tokenizer, model, prompts = setup
    answers = answer_token_ids(cfg, tokenizer)
    forward = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts), answers, batch_size=2)
    backward = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts[::-1]), answers, batch_size=2)
    for got, want in zip(forward, backward[::-1]):
        assert got == pytest.approx(want, abs=1e-4)


def test_generate_returns_one_string_per_prompt_in_order(setup):
    cfg, tokenizer, model, prompts = setup
    batched = generate_answers(model, tokenizer, encode_prompts(tokenizer, prompts[:3]), batch_size=3, max_new_tokens=4)
    alone = generate_answers(model, tokenizer, encode_prompts(tokenizer, prompts[1:2]), batch_size=1, max_new_tokens=4)
    assert len(batched) == 3 and all(isinstance(text, str) for text in batched)
    assert batched[1] == alone[0]


WORDS = {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"}


@pytest.mark.parametrize("text, expected", [
    ("entailment", "entailment"),
    ("Neutral.", "neutral"),
    ("The answer is: CONTRADICTION!", "contradiction"),
    ("contradiction, not entailment", "contradiction"),
    ("**neutral**", "neutral"),
    ("I think it's entailment\n", "entailment"),
    ("entailments", None),
    ("yes", None),
    ("", None),
])
def test_parser_cases(text, expected):
    assert parse_label(text, WORDS) == expected


def test_parser_handles_multi_word_label_words():
    assert parse_label("Well, it follows.", LABEL_WORDS) == "entailment"
    assert parse_label("I cannot tell", LABEL_WORDS) == "neutral"
