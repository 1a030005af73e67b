"""Token-wise layers of a padded training batch, run on its real tokens only.

In random batch order about a quarter of a training batch's positions are left padding. Attention needs the
(batch, width) layout, but the projections and the MLP treat every token on its own, so each can run on the real
tokens alone and put its output back in place, with zeros at the padding. Padding positions are masked out as
keys and no loss reads them, so no real token's value or gradient changes beyond float rounding
(tests/test_finetune.py and tests/test_families.py pin it); the MLP and projections, about 3/4 of a layer's matmuls,
skip the padding. Which modules are token-wise is a fact of the model family (``model/families.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

def tokenwise_modules(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.nn.Module]:
    """The modules with a leaf name in ``names`` (a family's ``tokenwise``): a LoRA wrapper keeps its layer's
    name, its base layer is ``base_layer``, so the wrapper is hooked."""
    return [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in names]


@contextmanager
def on_real_tokens(model: torch.nn.Module, keep: torch.Tensor, names: tuple[str, ...]) -> Iterator[None]:
    """While active, every token-wise module (``names``) of ``model`` that is called on a (batch, width, features)
    input of ``keep``'s (batch, width) shape runs on the ``keep`` positions only; other calls (the shared prefix)
    are untouched."""
    rows = keep.flatten().nonzero().squeeze(1)   # flat indices of the real tokens, found once per batch
    gathered: dict[torch.nn.Module, torch.Size] = {}   # module -> the (batch, width) its input had

    def gather(module, args):
        hidden = args[0]
        if hidden.shape[:2] != keep.shape:
            return None
        gathered[module] = hidden.shape[:2]
        return (hidden.flatten(0, 1).index_select(0, rows), *args[1:])

    def scatter(module, args, output):
        shape = gathered.pop(module, None)
        if shape is None:
            return None
        return output.new_zeros(shape.numel(), output.shape[-1]).index_copy(0, rows, output).view(*shape, -1)

    handles = []
    try:
        for module in tokenwise_modules(model, names):
            handles += [module.register_forward_pre_hook(gather), module.register_forward_hook(scatter)]
        yield
    finally:
        for handle in handles:
            handle.remove()
