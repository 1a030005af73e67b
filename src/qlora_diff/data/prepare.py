"""The prepare stage: validated, sampled fine-tuning rows with their chat prompts (and helpers the eval sets share)."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from qlora_diff.core import atomic
from qlora_diff.core.config import Config
from qlora_diff.data.rows import ReadStats, label_counts, stratified_sample, training_pool


def with_prompts(cfg: Config, rows: list[dict], model_dir: Path) -> list[int]:
    """Add each row's chat prompt; returns the prompt lengths in tokens."""
    from qlora_diff.data.prompts import format_prompt
    from qlora_diff.model.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    lengths = []
    for row in rows:
        row["prompt"] = format_prompt(cfg, tokenizer, row)
        lengths.append(len(tokenizer(row["prompt"], add_special_tokens=False).input_ids))
    return lengths


def split_stats(rows: list[dict], stats: ReadStats, labels: list[str], lengths: list[int]) -> dict:
    metrics = {
        "rows": len(rows),
        "label_counts": label_counts(rows, labels),
        "rows_read": stats.rows_read,
        "dropped_no_gold_label": stats.no_gold_label,
        "skipped_bad_rows": stats.bad_rows,
        "prompt_tokens_mean": round(mean(lengths), 2) if lengths else 0,
        "prompt_tokens_max": max(lengths, default=0),
    }
    if stats.bad_row_reasons:
        metrics["first_skipped_rows"] = stats.bad_row_reasons[:10]
    return metrics


def prepare_train(cfg: Config, model_dir: Path, out_path: Path, metrics_path: Path) -> dict:
    """Write the fine-tuning rows (without pairs of ``data.holdout_file``) and their metrics; returns the metrics."""
    pool, stats, overlap = training_pool(cfg)
    rows = stratified_sample(pool, cfg.data.train_size, cfg.data.seed, "data.train_size")
    lengths = with_prompts(cfg, rows, model_dir)
    metrics = {"labels": cfg.data.labels, "train_rows_removed_for_holdout_overlap": overlap,
               "train": split_stats(rows, stats, cfg.data.labels, lengths)}
    atomic.write_jsonl(out_path, rows)
    atomic.write_json(metrics_path, metrics)
    return metrics
