"""Left padding and padding-aware position ids, shared by fine-tuning batches and evaluation batches.

Left padding puts every sequence's last token in the last column, so both the training loss and the
scorer can ask the model for the logits of the last few positions only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_pad(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """A (len(sequences), longest) long tensor with each sequence right-aligned after ``value`` fill."""
    width = max(len(seq) for seq in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            out[row, width - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
    return out


def attention_mask(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """1 over each sequence's tokens, 0 over its left padding."""
    return left_pad([[1] * len(seq) for seq in sequences], 0)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so padding does not shift them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
