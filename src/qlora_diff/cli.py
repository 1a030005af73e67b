"""The shared entry point of every stage: load params once, turn known errors into one clear message."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from qlora_diff.config import Config, ConfigError, load_config


class InputError(ValueError):
    """Bad user input (data rows, files, predictions); the message says where and what is allowed."""


def run_stage(main: Callable[[Config], None], description: str) -> None:
    """Parse ``--params``, validate it before any heavy import, run ``main`` and exit non-zero on bad input."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.params)  # before torch/transformers are imported: bad params fail in ~1 s
    except ConfigError as exc:
        _fail(exc)
    if cfg.model.source == "hub" or cfg.data.source == "hub":
        os.environ["HF_HUB_OFFLINE"] = "0"
    from qlora_diff.modeling import ModelFileError

    try:
        main(cfg)
    except (ConfigError, InputError, ModelFileError) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        print("interrupted: no output was written; rerun `dvc repro` to continue.", file=sys.stderr)
        sys.exit(130)


def _fail(exc: Exception) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
