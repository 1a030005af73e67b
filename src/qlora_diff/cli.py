"""The shared entry point of every stage: load params once, turn known errors into one clear message."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from qlora_diff.config import Config, load_config
from qlora_diff.errors import ConfigError, PipelineError
from qlora_diff.progress import quiet_library_progress_bars

# bitsandbytes looks for an optional hub-downloaded kernel package on every CPU import; offline it cannot
# be fetched, and the dequantize path it falls back to is the one we want anyway (see modeling.py).
UNACTIONABLE_LOG_MESSAGES = {"bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",)}


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_unactionable_warnings() -> None:
    """Filter known, harmless library messages at the logger that emits them (a filter on a parent logger
    would not see them); every other warning still shows."""
    for logger_name, fragments in UNACTIONABLE_LOG_MESSAGES.items():
        logging.getLogger(logger_name).addFilter(_DropMessages(fragments))


def uses_the_hub(cfg: Config) -> bool:
    """Whether any configured source downloads from the hub; only then may the stages go online."""
    sources = [cfg.model.source, cfg.data.source, *(s.source for s in cfg.eval_sets.values())]
    return "hub" in sources


def run_stage(main: Callable[..., None], description: str, *positionals: tuple[str, tuple[str, ...] | None]) -> None:
    """Parse ``--params`` and the stage's positional arguments, validate params before any heavy import, run
    ``main(cfg, *values)`` and exit non-zero on bad input.

    Each positional is ``(name, choices)``; ``choices=None`` with name ``eval_set`` means a key of ``eval_sets``.
    """
    parser = argparse.ArgumentParser(description=description)
    for name, choices in positionals:
        parser.add_argument(name, choices=choices)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_progress_bars()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_unactionable_warnings()
    try:
        cfg = load_config(args.params)  # before torch/transformers are imported: bad params fail in ~1 s
    except PipelineError as exc:
        _fail(exc)
    if uses_the_hub(cfg):
        os.environ["HF_HUB_OFFLINE"] = "0"
    values = [getattr(args, name) for name, _ in positionals]
    if "eval_set" in vars(args) and args.eval_set not in cfg.eval_sets:
        _fail(ConfigError(f"params: evaluation set {args.eval_set!r} is not in 'eval_sets'; allowed: "
                          f"{', '.join(cfg.eval_sets)}."))
    try:
        main(cfg, *values)
    except PipelineError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        print("interrupted: no output was written; rerun `dvc repro` to continue.", file=sys.stderr)
        sys.exit(130)


def _fail(exc: Exception) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
