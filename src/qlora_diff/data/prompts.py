"""Chat-formatted prompts and the exact answer tokens each label is scored and trained on."""

from __future__ import annotations

import os
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from qlora_diff.core.config import Config


def user_message(cfg: Config, row: dict[str, str]) -> str:
    """``prompt.template`` filled with the row's text fields."""
    return cfg.prompt.template.format(**{name: row[name] for name in cfg.fields})


def _messages(cfg: Config, row: dict[str, str]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": cfg.prompt.system}] if cfg.prompt.system else []
    return messages + [{"role": "user", "content": user_message(cfg, row)}]


def format_prompt(cfg: Config, tokenizer: PreTrainedTokenizerBase, row: dict[str, str]) -> str:
    """The prompt text of a row (its text fields by name) up to and including the assistant turn header."""
    return tokenizer.apply_chat_template(_messages(cfg, row), tokenize=False, add_generation_prompt=True)


def content_free_row(cfg: Config, text: str) -> dict[str, str]:
    """A row with ``text`` as every text field: contextual calibration's content-free input."""
    return dict.fromkeys(cfg.fields, text)


def answer_suffix(cfg: Config, tokenizer: PreTrainedTokenizerBase, label: str) -> str:
    """What the chat template appends after the prompt for an assistant reply of ``label``'s word.

    Deriving it from the template (rather than hard-coding ``<|im_end|>``) keeps multi-token
    labels and end-of-turn markers right for any chat model.
    """
    probe = _messages(cfg, content_free_row(cfg, "x"))
    prompt = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        probe + [{"role": "assistant", "content": cfg.prompt.label_words[label]}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the generation prompt with the assistant reply")
    return full[len(prompt):]


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """Every special token's text: the named ones and the added tokens marked special (Phi-3's ``<|end|>``)."""
    added = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    return added | set(tokenizer.all_special_tokens)


def answer_text(cfg: Config, tokenizer: PreTrainedTokenizerBase, label: str) -> str:
    """The reply the model is scored and trained on: the template's suffix up to the end of the first special token
    after the label word (the end-of-turn marker: ``<|im_end|>``, ``<|end|>``, ``<|eot_id|>``); what a template adds
    after it (a newline, Phi-3's end-of-text) is not part of the reply. Without a special token, the suffix less
    its trailing newlines."""
    suffix = answer_suffix(cfg, tokenizer, label)
    after_word = suffix.find(cfg.prompt.label_words[label]) + len(cfg.prompt.label_words[label])
    ends = [end + len(token) for token in special_tokens(tokenizer) if token
            for end in [suffix.find(token, after_word)] if end >= 0]
    return suffix[:min(ends)] if ends else suffix.rstrip("\n")


def answer_token_ids(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Token ids of each label's full answer (label word plus end-of-turn), in ``data.labels`` order."""
    return {label: tokenizer(answer_text(cfg, tokenizer, label), add_special_tokens=False).input_ids
            for label in cfg.data.labels}


def shared_prefix(encoded: Sequence[list[int]]) -> list[int]:
    """The token prefix common to every prompt (system prompt, template head), leaving each prompt >= 1 token.

    Found from the prompts themselves, so it follows any change of ``prompt.system`` or ``prompt.template``;
    scoring and fine-tuning run it once per batch instead of once per row.
    """
    prefix = os.path.commonprefix(list(encoded))
    return prefix[:min(len(ids) for ids in encoded) - 1]
