"""Progress bars on a terminal, none in CI logs or under DVC's captured output (torch-free, so the CLI can use it)."""

from __future__ import annotations

import os
import sys


def show_progress() -> bool:
    return sys.stderr.isatty()


def quiet_library_progress_bars() -> None:
    """Without a terminal, also silence the bars that transformers and huggingface_hub draw themselves
    (e.g. "Loading weights"); they read this variable when first imported, so call it before importing them."""
    if not show_progress():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
