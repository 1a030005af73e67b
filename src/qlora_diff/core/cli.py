"""The shared entry point of every stage: load params once, turn known errors into one clear message."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from qlora_diff.core.config import Config, load_config
from qlora_diff.core.errors import ConfigError, PipelineError
from qlora_diff.core.progress import quiet_library_progress_bars

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


def decide_hub_access(downloads: bool) -> None:
    """``HF_HUB_OFFLINE`` for this stage: online only for a stage that downloads (``downloads``), offline for every
    other; a value the user set is never overridden. huggingface_hub reads the variable once, when imported, so the
    decision must come first."""
    if "huggingface_hub" in sys.modules:
        raise RuntimeError("huggingface_hub was imported before the stage decided its hub access")
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if downloads else "1")


def run_stage(main: Callable[..., None], description: str, *positionals: tuple[str, tuple[str, ...] | None],
              downloads: Callable[..., bool] = lambda cfg, *values: False) -> None:
    """Parse ``--params`` and the stage's positional arguments, validate params before any heavy import, run
    ``main(cfg, *values)`` and exit non-zero on bad input.

    Each positional is ``(name, choices)``; ``choices=None`` with name ``eval_set`` means a key of ``eval_sets``,
    with name ``seed`` one of ``train.extra_seeds`` (passed on as an int).
    ``downloads(cfg, *values)`` says whether this stage, with these params, fetches from the hub.
    """
    parser = argparse.ArgumentParser(description=description)
    for name, choices in positionals:
        parser.add_argument(name, choices=choices)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_progress_bars()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_unactionable_warnings()
    try:
        cfg = load_config(args.params)  # before torch/transformers are imported: bad params fail in ~1 s
    except PipelineError as exc:
        _fail(exc)
    if "eval_set" in vars(args) and args.eval_set not in cfg.eval_sets:
        _fail(ConfigError(f"params: evaluation set {args.eval_set!r} is not in 'eval_sets'; allowed: "
                          f"{', '.join(cfg.eval_sets)}."))
    if "seed" in vars(args):
        if args.seed not in [str(seed) for seed in cfg.train.extra_seeds]:
            _fail(ConfigError(f"params: seed {args.seed!r} is not in 'train.extra_seeds'; allowed: "
                              f"{', '.join(map(str, cfg.train.extra_seeds)) or 'none (the list is empty)'}."))
        args.seed = int(args.seed)
    values = [getattr(args, name) for name, _ in positionals]
    decide_hub_access(downloads(cfg, *values))
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
