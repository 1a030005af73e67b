"""Progress bars on a terminal, none in CI logs or under DVC's captured output (torch-free, so the CLI can use it)."""

from __future__ import annotations

import os
import sys


def show_progress() -> bool:
    return sys.stderr.isatty()


def quiet_library_progress_bars() -> None:
    """Without a terminal, also silence the bars that libraries draw themselves: transformers' "Loading weights"
    (through huggingface_hub's switch) and any plain tqdm bar, such as the GGUF conversion's. Both variables are
    read when those modules are first imported, so call this before importing them. Our own bars pass
    ``disable=not show_progress()`` explicitly, which wins over the variable."""
    if not show_progress():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
