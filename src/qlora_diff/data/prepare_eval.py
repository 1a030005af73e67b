"""The prepare_eval stage: one evaluation set's rows, sampled, in the set's own label space, with chat prompts."""

from __future__ import annotations

from pathlib import Path

from qlora_diff.analysis.metrics import chance_rate, majority_class_rate
from qlora_diff.core import atomic
from qlora_diff.core.config import Config
from qlora_diff.core.tasks import row_text
from qlora_diff.data.nli_challenge import generate
from qlora_diff.data.prepare import split_stats, with_prompts
from qlora_diff.data.rows import ReadStats, RowSource, read_rows, stratified_sample


def prepare_eval_set(cfg: Config, name: str, model_dir: Path, train_path: Path, out_path: Path,
                     metrics_path: Path) -> dict:
    """Write one evaluation set's rows (in its own label space) and its metrics; returns the metrics."""
    spec = cfg.eval_sets[name]
    labels = spec.labels(cfg.data.labels)
    if spec.source == "challenge":
        pool = [{"id": row["id"], **{name: row[name] for name in cfg.fields}, "label": row["label"],
                 "phenomenon": row["phenomenon"]} for row in generate(spec.seed)]   # only the template's fields
        stats = ReadStats()
        stats.rows_read = len(pool)
    else:
        pool, stats = read_rows(RowSource.eval_set(cfg, name), name, cfg.data.on_bad_row)
    rows = stratified_sample(pool, spec.size, spec.seed, f"eval_sets.{name}.size")
    lengths = with_prompts(cfg, rows, model_dir)
    train_texts = {row_text(row, cfg.fields) for row in atomic.read_jsonl(train_path)}
    gold = [row["label"] for row in rows]
    metrics = {
        "labels": labels,
        "label_map": spec.collapse(cfg.data.labels),
        "eval": split_stats(rows, stats, labels, lengths),
        "pairs_also_in_train": sum(row_text(row, cfg.fields) in train_texts for row in rows),
        "majority_class_rate": majority_class_rate(gold),
        "chance_rate": chance_rate(labels),
    }
    atomic.write_jsonl(out_path, rows)
    atomic.write_json(metrics_path, metrics)
    return metrics
