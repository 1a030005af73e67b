"""Training speed on this machine: the finetune stage's own Trainer loop in fp32 and bf16 compute, with and without
the shared prompt prefix and with length-grouped batches, against the forward+backward ceiling of each dtype, all in
one run so the ratios compare like with like.  Each measurement runs in its own process so peak memory is its own.

- ceiling: a bare forward+backward (answer-window loss, LoRA gradients, no optimizer, no Trainer) of the full rows,
  padded, best of STEPS batches after a warm-up: what the matmuls of one row cost at that dtype. Skipping the
  padding (`train.skip_padding`) computes fewer positions than the ceiling does, so it may pass 100%. It loads
  the model as the stages do, so with `quant.dequantize: auto` on CPU its 4-bit weights are dequantized once; the
  last variant shows what bitsandbytes' dequantizing in every forward and backward costs the stage.
- finetune: `finetune()` itself (Trainer, optimizer, logging, checkpoints) on the real model and rows, run twice,
  for WARMUP_STEPS and for WARMUP_STEPS + one mega-batch of steps: the difference is the steady-state rate without
  the Trainer's start-up and first steps, which a 188-step stage amortises and a short run does not. The window is
  one mega-batch of transformers' length-grouped sampler (``train.group_by_length``), which runs each mega-batch
  long to short, so a shorter window would time only its longest batches. tokens/s counts every non-padding token
  of a row, shared prefix included, as metrics/finetune.json does; computed tokens/s counts the shared prefix once
  per batch, as it is computed, and is the rate to hold against the ceiling.
- forward+backward alone of the default stage's own batches (its Trainer's dataloader, `finetune.build_trainer`),
  over the same steps, as the stage computes them and with the same rows whole and padded: the first shows what
  the Trainer loop adds, the second a ceiling of the very rows the stage trains on (an average, not a best-of).
  Where small per-op costs dominate a step, removing the prefix and the padding saves fewer seconds than
  positions, so the computed-token share of a ceiling falls even as the stage gets faster; these rows say which.

Run: python benchmarks/train_throughput.py [--dtypes float32,bfloat16] [--default-only]
(after `dvc repro prepare`; quiet machine: nothing else running; --default-only: the ceiling, the default variant
and its bare rows only, the reference numerics' target)
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import REPO, write_results

from qlora_diff.core.config import TrainConfig

STEPS = 4
WARMUP_STEPS = 4
DTYPES = ("float32", "bfloat16")
DEFAULT_TRAIN = {"share_prefix": True, "group_by_length": False, "skip_padding": True}
DEFAULT_VARIANT = "finetune stage, shared prefix, padding skipped (default)"
UNSHARED_VARIANT = "finetune stage, unshared prefix"
VARIANTS = {   # measurement -> params overrides, by section
    UNSHARED_VARIANT: {"train": {"share_prefix": False, "group_by_length": False, "skip_padding": False}},
    "finetune stage, shared prefix": {"train": {"share_prefix": True, "group_by_length": False,
                                                "skip_padding": False}},
    DEFAULT_VARIANT: {"train": DEFAULT_TRAIN},
    "finetune stage, shared prefix, grouped by length": {"train": {"share_prefix": True, "group_by_length": True,
                                                                   "skip_padding": False}},
    "finetune stage, default but dequantized every forward": {"train": DEFAULT_TRAIN,
                                                              "quant": {"dequantize": "every_forward"}},
    "finetune stage, default but float32 frozen weights and SDPA": {"train": {**DEFAULT_TRAIN, "upcast_frozen": True,
                                                                              "attention": "sdpa"}},
}


def ceiling(dtype: str) -> dict:
    """Forward+backward tokens/s of full (unshared) batches in ``dtype``."""
    import time

    import torch
    from common import MODEL_DIR, config

    from qlora_diff.core import atomic
    from qlora_diff.core.runtime import peak_process_memory_gb
    from qlora_diff.data.prompts import answer_token_ids
    from qlora_diff.model.finetune import (
        LeftPadCollator,
        answer_window_forward,
        answer_window_loss,
        attach_lora,
        build_examples,
    )
    from qlora_diff.model.modeling import load_causal_lm, load_tokenizer

    cfg = config(quant={"compute_dtype": dtype}, runtime={"device": "cpu"})
    tokenizer = load_tokenizer(MODEL_DIR)
    examples, _ = build_examples(cfg, tokenizer, atomic.read_jsonl(REPO / "data/prepared/train.jsonl"))
    size = cfg.train.batch_size
    collate = LeftPadCollator(tokenizer.pad_token_id)
    batches = [collate(examples[i * size:(i + 1) * size]) for i in range(STEPS + 1)]
    model = attach_lora(cfg, load_causal_lm(MODEL_DIR, cfg, torch.device("cpu"))).train()
    window = max(len(a) for a in answer_token_ids(cfg, tokenizer).values())
    rates = []
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        answer_window_loss(answer_window_forward(model, inputs, window, []).logits[:, :-1], batch["labels"]).backward()
        model.zero_grad()
        if index:  # the first batch warms up
            rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - start))
    return {"tokens/s": round(max(rates), 1), "peak memory GB": peak_process_memory_gb()}


def bare_stage_batches(dtype: str, window: int, variant: str) -> dict:
    """Forward+backward alone (no optimizer, scheduler, logging or checkpoints) of the finetune stage's own batches
    with ``variant``'s train params: its Trainer's dataloader and collator, timed over the same steps as
    :func:`steady_state`. For the default the stage's rate over this one is what the Trainer loop costs; with full
    padded rows it is a ceiling of the same rows in the same order (an average, where the ceiling is a best-of)."""
    import tempfile
    import time
    from pathlib import Path

    from common import MODEL_DIR, config

    from qlora_diff.core.runtime import peak_process_memory_gb
    from qlora_diff.model.finetune import build_trainer

    cfg = config(quant={"compute_dtype": dtype}, runtime={"device": "cpu"},
                 train={"max_steps": WARMUP_STEPS + window, **VARIANTS[variant]["train"]})
    with tempfile.TemporaryDirectory() as tmp:
        setup = build_trainer(cfg, MODEL_DIR, REPO / "data/prepared/train.jsonl", Path(tmp))
    trainer, model = setup.trainer, setup.trainer.model.train()
    skipped, batches = WARMUP_STEPS * cfg.train.grad_accum, window * cfg.train.grad_accum
    tokens, seconds = 0, 0.0
    for index, batch in enumerate(trainer.get_train_dataloader()):
        if index == skipped + batches:
            break
        start = time.perf_counter()
        trainer.compute_loss(model, dict(batch)).backward()
        model.zero_grad()
        if index >= skipped:
            tokens, seconds = tokens + int(batch["attention_mask"].sum()), seconds + time.perf_counter() - start
    computed = tokens - setup.shared_prefix_tokens * (batches * cfg.train.batch_size - batches)
    return {"tokens/s": round(tokens / seconds, 1), "computed tokens/s": round(computed / seconds, 1),
            "tokens": tokens, "shared prefix tokens": setup.shared_prefix_tokens,
            "peak memory GB": peak_process_memory_gb()}


def train_examples() -> list[dict]:
    """The finetune stage's examples with the shared prefix stripped, from the prepared train rows."""
    from common import MODEL_DIR, config

    from qlora_diff.core import atomic
    from qlora_diff.model.finetune import build_examples, split_shared_prefix
    from qlora_diff.model.modeling import load_tokenizer

    examples, _ = build_examples(config(), load_tokenizer(MODEL_DIR), atomic.read_jsonl(REPO / "data/prepared/train.jsonl"))
    return split_shared_prefix(examples)[1]


def steps_per_megabatch(rows: int, train: TrainConfig) -> int:
    """Optimizer steps in one mega-batch of ``get_length_grouped_indices`` (its default: min(rows // (4 batches),
    50) batches)."""
    return max(1, min(rows // (train.batch_size * 4), 50) // train.grad_accum)


def padding_share(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Share of the computed suffix positions that are padding when rows go into batches in ``order``."""
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        real, padded = real + sum(batch), padded + max(batch) * len(batch)
    return 1 - real / padded


def padding_notes(examples: list[dict], train: TrainConfig) -> list[str]:
    """How much of an epoch's batches is padding in random and in length-grouped order (one seeded shuffle each)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = [len(ex["input_ids"]) for ex in examples]
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(train.seed)).tolist()
    grouped = get_length_grouped_indices(lengths, train.batch_size, generator=torch.Generator().manual_seed(train.seed))
    shares = [100 * padding_share(lengths, order, train.batch_size) for order in (shuffled, grouped)]
    return [f"padding, one epoch of the shared-prefix rows in batches of {train.batch_size}: {shares[0]:.1f}% of the "
            f"computed positions in random order, {shares[1]:.1f}% grouped by length (transformers' "
            "get_length_grouped_indices)"]


def stage(dtype: str, variant: str, steps: int) -> dict:
    """The finetune stage's tokens and seconds for ``steps`` steps (model loading excluded, as in its metrics)."""
    import tempfile
    from pathlib import Path

    from common import MODEL_DIR, config

    from qlora_diff.model.finetune import finetune

    overrides = VARIANTS[variant]
    cfg = config(quant={"compute_dtype": dtype, **overrides.get("quant", {})}, runtime={"device": "cpu"},
                 train={"max_steps": steps, **overrides["train"]})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        metrics = finetune(cfg, MODEL_DIR, REPO / "data/prepared/train.jsonl", out / "adapter", out / "m.json",
                           out / "checkpoints", out / "live")
    return {"tokens": metrics["tokens_seen"], "seconds": metrics["seconds"], "peak memory GB": metrics["peak_memory_gb"],
            "shared prefix tokens": metrics["shared_prefix_tokens"]}


def steady_state(dtype: str, variant: str, window: int) -> dict:
    """tokens/s (counted and computed) of the ``window`` steps after WARMUP_STEPS, from two runs of the stage."""
    from common import config

    train = config().train
    short, long = (child("stage", dtype, variant, str(steps)) for steps in (WARMUP_STEPS, WARMUP_STEPS + window))
    tokens, seconds = long["tokens"] - short["tokens"], long["seconds"] - short["seconds"]
    batches = window * train.grad_accum   # the prefix runs once per batch, each row's rest once per row
    computed = tokens - long["shared prefix tokens"] * (batches * train.batch_size - batches)
    return {"tokens/s": round(tokens / seconds, 1), "computed tokens/s": round(computed / seconds, 1),
            "peak memory GB": long["peak memory GB"], "shared prefix tokens": long["shared prefix tokens"],
            "tokens": tokens}


BARE_ROWS = {DEFAULT_VARIANT: "forward+backward alone, the default stage's batches",
             UNSHARED_VARIANT: "forward+backward alone, the same rows whole and padded"}


def loop_overhead_note(dtype: str, stage_run: dict, bare: dict, whole: dict, top: dict) -> str:
    """The default stage's rate against forward+backward alone of its own batches (what the Trainer loop costs) and
    of the same rows computed whole (what the shared prefix and skipped padding do per computed token)."""
    same = "the stage's rows" if bare["tokens"] == stage_run["tokens"] == whole["tokens"] else \
        f"NOT the stage's rows ({stage_run['tokens']}, {bare['tokens']}, {whole['tokens']} tokens)"
    return (f"{dtype}, forward+backward alone (no optimizer, scheduler, logging or checkpoints) of the timed "
            f"steps' batches in the stage's order ({same}), against the default stage: its computed tokens/s is "
            f"{100 * stage_run['computed tokens/s'] / bare['computed tokens/s']:.1f}% of the same batches' (what the "
            f"Trainer loop costs) and {100 * stage_run['computed tokens/s'] / whole['tokens/s']:.1f}% of the rows "
            f"computed whole and padded; its tokens/s (every row's tokens) is "
            f"{100 * stage_run['tokens/s'] / whole['tokens/s']:.1f}% of the rows computed whole and "
            f"{100 * stage_run['tokens/s'] / top['tokens/s']:.1f}% of the best-of-{STEPS} ceiling")


def table_row(dtype: str, measurement: str, run: dict, top: dict) -> dict:
    """One row of the results table: ``run``'s rates, computed tokens/s as a share of the ceiling ``top``."""
    return {"compute dtype": dtype, "measurement": measurement, "tokens/s": run["tokens/s"],
            "computed tokens/s": run["computed tokens/s"],
            "% of ceiling": round(100 * run["computed tokens/s"] / top["tokens/s"], 1),
            "shared prefix tokens": run["shared prefix tokens"], "peak memory GB": run["peak memory GB"]}


def child(kind: str, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], sys.argv[3:]
        result = {"ceiling": lambda: ceiling(args[0]), "bare": lambda: bare_stage_batches(args[0], int(args[1]), args[2]),
                  "stage": lambda: stage(args[0], args[1], int(args[2]))}[kind]()
        print(json.dumps(result))
        return
    dtypes = sys.argv[sys.argv.index("--dtypes") + 1].split(",") if "--dtypes" in sys.argv else DTYPES
    variants = [DEFAULT_VARIANT] if "--default-only" in sys.argv else list(VARIANTS)
    from common import config

    train, examples = config().train, train_examples()
    window = steps_per_megabatch(len(examples), train)
    results, loop_notes = [], []
    for dtype in dtypes:
        top = child("ceiling", dtype)
        results.append(table_row(dtype, "forward+backward ceiling",
                                  {**top, "computed tokens/s": top["tokens/s"], "shared prefix tokens": 0}, top))
        print(results[-1], flush=True)
        for variant in variants:
            run = steady_state(dtype, variant, window)
            results.append(table_row(dtype, variant, run, top))
            print(results[-1], flush=True)
            if variant == DEFAULT_VARIANT:
                bare = {kind: child("bare", dtype, str(window), kind) for kind in BARE_ROWS}
                loop_notes.append(loop_overhead_note(dtype, run, bare[DEFAULT_VARIANT], bare[UNSHARED_VARIANT], top))
                for kind, measurement in BARE_ROWS.items():
                    results.append(table_row(dtype, measurement, bare[kind], top))
                    print(results[-1], flush=True)
    rate = {(r["compute dtype"], r["measurement"]): r["tokens/s"] for r in results}
    unshared, shared, skipped, grouped, every_forward, upcast_sdpa = VARIANTS
    ratios = len(variants) == len(VARIANTS)   # the variant ratios need every variant
    notes = [f"ceiling: best of {STEPS} bare forward+backward passes of train.batch_size full rows after a warm-up; "
             f"finetune stage: finetune() (Trainer, AdamW, logging) for {WARMUP_STEPS} and for "
             f"{WARMUP_STEPS + window} optimizer steps, the rate of the {window} steps in between (model "
             "loading, Trainer start-up and first steps excluded; one mega-batch of the length-grouped sampler, "
             "which runs long to short); tokens/s counts every non-padding token of a row, "
             "the shared prefix included; computed tokens/s counts the shared prefix once per batch; % of ceiling: "
             "computed tokens/s over the ceiling's",
             *(f"{dtype}, finetune stage, shared / unshared prefix: {rate[dtype, shared] / rate[dtype, unshared]:.2f}x; "
               f"padding skipped / padded (both shared): {rate[dtype, skipped] / rate[dtype, shared]:.2f}x; "
               f"grouped by length / random order (both shared, padded): {rate[dtype, grouped] / rate[dtype, shared]:.2f}x; "
               f"4-bit weights dequantized once / every forward (quant.dequantize, both default otherwise): "
               f"{rate[dtype, skipped] / rate[dtype, every_forward]:.2f}x; frozen weights in the compute dtype with "
               f"eager attention / float32 frozen weights with SDPA (train.upcast_frozen, train.attention, both "
               f"default otherwise): {rate[dtype, skipped] / rate[dtype, upcast_sdpa]:.2f}x"
               for dtype in dtypes if ratios),
             *loop_notes, *padding_notes(examples, train)]
    if len(dtypes) == 2 and ratios:
        notes += [f"bf16 / fp32, finetune stage with shared prefix: {rate['bfloat16', shared] / rate['float32', shared]:.2f}x",
                  f"bf16 / fp32, ceilings: {rate['bfloat16', 'forward+backward ceiling'] / rate['float32', 'forward+backward ceiling']:.2f}x"]
    notes += ["bf16 compute is fast only on CPUs with native bf16 matmuls; elsewhere it is emulated and fp32 is faster"]
    write_results("train_throughput", "Training throughput (QLoRA NF4, LoRA r from params.yaml)", results, notes)


if __name__ == "__main__":
    main()
