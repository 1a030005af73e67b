"""Score prompts: label log-likelihood (default) or greedy generation plus a tolerant parser."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from qlora_diff.core.errors import OutOfMemory
from qlora_diff.core.progress import show_progress
from qlora_diff.data.prompts import shared_prefix
from qlora_diff.model.padding import attention_mask, left_pad

T = TypeVar("T")


def batches(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def padded_batch(sequences: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of left-padded ``sequences`` on ``device``."""
    return left_pad(sequences, pad_id).to(device), attention_mask(sequences).to(device)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt; the chat template already holds every special token."""
    return [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]


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


@dataclass(frozen=True)
class _AnswerTree:
    """Every label's answer, packed as one block that follows the prompt (a tree of continuations).

    Block token ``c`` is step ``step[c]`` of label ``label[c]``'s answer and predicts ``target[c]``;
    it may attend only to the prompt and to earlier tokens of its own label. Scoring then takes a
    single forward pass per batch instead of a prompt pass plus a pass over a repeated KV cache.
    """

    first: torch.Tensor   # (labels,) the first answer token of each label, predicted from the prompt
    ids: torch.Tensor     # (C,) each label's answer tokens but the last, label after label
    label: torch.Tensor   # (C,)
    step: torch.Tensor    # (C,)
    target: torch.Tensor  # (C,) the next answer token

    @classmethod
    def build(cls, answers: dict[str, list[int]], device: torch.device) -> _AnswerTree:
        fed = [(row, step, ids[step], ids[step + 1]) for row, ids in enumerate(answers.values())
               for step in range(len(ids) - 1)]
        columns = list(zip(*fed)) if fed else [(), (), (), ()]
        label, step, ids, target = (torch.tensor(col, dtype=torch.long, device=device) for col in columns)
        first = torch.tensor([answer[0] for answer in answers.values()], dtype=torch.long, device=device)
        return cls(first=first, ids=ids, label=label, step=step, target=target)

    def visible(self) -> torch.Tensor:
        """(C, C) which block tokens each block token attends to: its own label's, up to itself."""
        return (self.label[:, None] == self.label[None, :]) & (self.step[None, :] <= self.step[:, None])


def _attention_bias(batch: int, width: int, prefix_len: int, tree: _AnswerTree, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, W + C, prefix + W + C) additive mask of unpadded prompts of width W: every token sees the prefix,
    prompt tokens are causal, answer-block tokens see the whole prompt and their own label's earlier tokens."""
    device = tree.ids.device
    blocks = len(tree.ids)
    allowed = torch.cat([
        torch.ones(width + blocks, prefix_len, dtype=torch.bool, device=device),
        torch.cat([torch.ones(width, width, dtype=torch.bool, device=device).tril(),
                   torch.ones(blocks, width, dtype=torch.bool, device=device)]),
        torch.cat([torch.zeros(width, blocks, dtype=torch.bool, device=device), tree.visible()]),
    ], 1)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return bias.expand(batch, 1, -1, -1)


def same_length_batches(encoded: Sequence[list[int]], size: int) -> Iterator[list[int]]:
    """Indices of ``encoded`` in batches of at most ``size`` sequences of one length, shortest first, then in
    input order.

    No batch is padded, so a row runs the same computation whatever shares its batch: its log-probabilities do
    not depend on ``eval.batch_size`` at all (bitwise on CPU in fp32 and bf16, tests/test_scoring.py and
    benchmarks/batch_invariance.py), where padding to the batch's longest row moved bf16 log-probs by up to 1 nat.
    """
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    for _, same_length in itertools.groupby(order, key=lambda i: len(encoded[i])):
        yield from batches(list(same_length), size)


@_guard_memory
@torch.inference_mode()
def label_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    encoded: Sequence[list[int]],
    answers: dict[str, list[int]],
    batch_size: int,
    share_prefix: bool = True,
) -> list[list[float]]:
    """Summed log-probability of every label's full answer after each encoded prompt, in input order.

    One forward pass per batch scores all labels (see ``_AnswerTree``). The prefix that every
    prompt shares (``shared_prefix``) runs once and is reused from a KV cache. A batch holds prompts of
    one length only (``same_length_batches``), so no row is padded and none depends on the batch size.
    """
    device = next(model.parameters()).device
    dtype = model.get_input_embeddings().weight.dtype
    prefix = shared_prefix(encoded) if share_prefix and encoded else []
    prefix_cache = None
    if prefix:
        prefix_cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1).cache
    tree = _AnswerTree.build(answers, device)
    results: list[list[float]] = [[] for _ in encoded]
    for batch in tqdm(list(same_length_batches(encoded, batch_size)), desc="scoring", disable=not show_progress()):
        ids = torch.tensor([encoded[i][len(prefix):] for i in batch], device=device)
        width = ids.shape[1]
        positions = torch.cat([torch.arange(width, device=device), width + tree.step]) + len(prefix)
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(batch))
        out = model(input_ids=torch.cat([ids, tree.ids.expand(len(batch), -1)], 1),
                    attention_mask=_attention_bias(len(batch), width, len(prefix), tree, dtype),
                    position_ids=positions.expand(len(batch), -1), cache=cache, use_cache=cache is not None,
                    logits_to_keep=torch.arange(width - 1, width + len(tree.ids), device=device))
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)                  # (batch, 1 + C, vocab)
        totals = logprobs[:, 0, tree.first]
        steps = logprobs[:, 1:].gather(-1, tree.target.expand(len(batch), -1).unsqueeze(-1)).squeeze(-1)
        totals = totals.index_add(1, tree.label, steps)
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
    encoded: Sequence[list[int]],
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy completions of each encoded prompt (special tokens stripped), in input order."""
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    results = [""] * len(encoded)
    for batch in tqdm(list(batches(order, batch_size)), desc="generating", disable=not show_progress()):
        ids, mask = padded_batch([encoded[i] for i in batch], tokenizer.pad_token_id, device)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row, index in enumerate(batch):
            results[index] = tokenizer.decode(out[row, ids.shape[1]:], skip_special_tokens=True).strip()
    return results
