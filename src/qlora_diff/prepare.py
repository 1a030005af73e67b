"""The prepare stage: validated, stratified, overlap-free train/eval rows with their chat prompts."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from qlora_diff import atomic
from qlora_diff.config import Config
from qlora_diff.data import ReadStats, label_counts, read_split, remove_overlap, stratified_sample
from qlora_diff.metrics import chance_rate, majority_class_rate
from qlora_diff.prompts import format_prompt


def _split_stats(rows: list[dict], stats: ReadStats, labels: list[str], lengths: list[int]) -> dict:
    return {
        "rows": len(rows),
        "label_counts": label_counts(rows, labels),
        "rows_read": stats.rows_read,
        "dropped_no_gold_label": stats.no_gold_label,
        "skipped_bad_rows": stats.bad_rows,
        "prompt_tokens_mean": round(mean(lengths), 2) if lengths else 0,
        "prompt_tokens_max": max(lengths, default=0),
    }


def prepare(cfg: Config, model_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """Write ``train.jsonl``/``eval.jsonl`` under ``out_dir`` and the data metrics; returns the metrics."""
    eval_pool, eval_stats = read_split(cfg, "eval")
    train_pool, train_stats = read_split(cfg, "train")
    eval_rows = stratified_sample(eval_pool, cfg.data.eval_size, cfg.data.seed, "eval_size")
    train_pool, overlap = remove_overlap(train_pool, eval_rows)
    train_rows = stratified_sample(train_pool, cfg.data.train_size, cfg.data.seed, "train_size")

    from qlora_diff.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    metrics: dict = {"labels": cfg.data.labels, "train_rows_removed_for_eval_overlap": overlap}
    for name, rows, stats in (("train", train_rows, train_stats), ("eval", eval_rows, eval_stats)):
        lengths = []
        for row in rows:
            row["prompt"] = format_prompt(cfg, tokenizer, row["premise"], row["hypothesis"])
            lengths.append(len(tokenizer(row["prompt"], add_special_tokens=False).input_ids))
        metrics[name] = _split_stats(rows, stats, cfg.data.labels, lengths)
        if stats.bad_row_reasons:
            metrics[name]["first_skipped_rows"] = stats.bad_row_reasons[:10]
    metrics["majority_class_rate_eval"] = majority_class_rate([row["label"] for row in eval_rows])
    metrics["chance_rate"] = chance_rate(cfg.data.labels)
    atomic.write_jsonl(out_dir / "train.jsonl", train_rows)
    atomic.write_jsonl(out_dir / "eval.jsonl", eval_rows)
    atomic.write_json(metrics_path, metrics)
    return metrics
