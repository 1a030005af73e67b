"""Score NLI prompts: label log-likelihood (default) or greedy generation plus a tolerant parser."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from qlora_diff.cli import InputError
from qlora_diff.runtime import show_progress


class OutOfMemory(InputError):
    """A batch did not fit; the message says which knob to lower."""


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _left_pad(sequences: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _guard_memory(fn):
    """Turn an allocation failure into advice instead of a stack trace."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise OutOfMemory(f"evaluation ran out of memory ({exc.__class__.__name__}); lower eval.batch_size "
                              "in params.yaml (e.g. halve it) and rerun.") from exc
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
                raise
            raise OutOfMemory(f"evaluation ran out of memory; lower eval.batch_size in params.yaml and rerun. ({exc})") from exc

    return wrapper


@_guard_memory
@torch.inference_mode()
def label_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: dict[str, list[int]],
    batch_size: int,
) -> list[list[float]]:
    """Summed log-probability of every label's full answer after each prompt, in input order.

    Each prompt runs once; its KV cache is repeated for the labels, which are scored in one
    more forward pass, so multi-token answers cost a few tokens rather than a whole prompt each.
    Prompts are batched by length (left-padded, explicit position ids) to cut padding.
    """
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    n_labels = len(answers)
    width = max(len(ids) for ids in answers.values())
    answer_ids = torch.full((n_labels, width), tokenizer.pad_token_id, dtype=torch.long)
    answer_mask = torch.zeros((n_labels, width), dtype=torch.long)
    for row, ids in enumerate(answers.values()):
        answer_ids[row, :len(ids)] = torch.tensor(ids)
        answer_mask[row, :len(ids)] = 1
    answer_ids, answer_mask = answer_ids.to(device), answer_mask.to(device)
    results: list[list[float]] = [[] for _ in prompts]
    for batch in tqdm(list(_batches(order, batch_size)), desc="scoring", disable=not show_progress()):
        ids, mask = _left_pad([encoded[i] for i in batch], tokenizer.pad_token_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=width > 1, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[:, answer_ids[:, 0]]  # (batch, labels)
        totals = first
        if width > 1:
            cache = out.cache
            cache.batch_repeat_interleave(n_labels)
            cont_ids = answer_ids[:, :-1].repeat(len(batch), 1)
            cont_mask = torch.cat([mask.repeat_interleave(n_labels, 0), answer_mask[:, :-1].repeat(len(batch), 1)], 1)
            cont_pos = mask.sum(-1).repeat_interleave(n_labels).unsqueeze(1) + torch.arange(width - 1, device=device)
            logits = model(input_ids=cont_ids, attention_mask=cont_mask, position_ids=cont_pos,
                           cache=cache).logits.float()
            targets = answer_ids[:, 1:].repeat(len(batch), 1)
            token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            token_lp = token_lp * answer_mask[:, 1:].repeat(len(batch), 1)
            totals = totals + token_lp.sum(-1).view(len(batch), n_labels)
        for row, index in enumerate(batch):
            results[index] = totals[row].tolist()
    return results


def parse_label(text: str, label_words: dict[str, str]) -> str | None:
    """The label whose word appears first in ``text`` (any case, punctuation ignored); None if none does."""
    normalized = " " + re.sub(r"[^a-z0-9]+", " ", text.lower()) + " "
    best: tuple[int, str] | None = None
    for label, word in label_words.items():
        key = " " + re.sub(r"[^a-z0-9]+", " ", word.lower()).strip() + " "
        position = normalized.find(key)
        if position >= 0 and (best is None or position < best[0]):
            best = (position, label)
    return best[1] if best else None


@_guard_memory
@torch.inference_mode()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy completions of each prompt (special tokens stripped), in input order."""
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    results = [""] * len(prompts)
    for batch in tqdm(list(_batches(order, batch_size)), desc="generating", disable=not show_progress()):
        ids, mask = _left_pad([encoded[i] for i in batch], tokenizer.pad_token_id, device)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row, index in enumerate(batch):
            results[index] = tokenizer.decode(out[row, ids.shape[1]:], skip_special_tokens=True).strip()
    return results
