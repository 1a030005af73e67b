"""The evaluate stages: one implementation scores the base model and the adapter identically."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from scipy.special import softmax

from qlora_diff import atomic
from qlora_diff.config import Config
from qlora_diff.metrics import UNPARSEABLE, classification_metrics
from qlora_diff.modeling import count_parameters, load_causal_lm, load_tokenizer
from qlora_diff.prompts import answer_token_ids
from qlora_diff.runtime import Stopwatch, configure_threads, peak_gpu_memory_gb, peak_process_memory_gb, select_device
from qlora_diff.scoring import encode_prompts, generate_answers, label_logprobs, parse_label

log = logging.getLogger(__name__)


def load_for_eval(cfg: Config, model_dir: Path, adapter_dir: Path | None) -> torch.nn.Module:
    """The quantized base model, with the adapter attached when given, in eval mode."""
    device = select_device(cfg)
    model = load_causal_lm(model_dir, cfg, device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.requires_grad_(False).eval()


def _prediction_rows(cfg: Config, set_name: str, rows: list[dict], logprobs: list[list[float]] | None,
                     generations: list[str] | None) -> list[dict]:
    """One record per row: the model's own answer (``model_prediction``) and, collapsed through the set's label
    map, its ``prediction`` in the set's label space, which ``gold`` and ``correct`` refer to."""
    labels = cfg.data.labels
    collapse = cfg.eval_sets[set_name].collapse(labels)
    out = []
    for index, row in enumerate(rows):
        record = {key: row[key] for key in ("id", "premise", "hypothesis", "phenomenon") if key in row}
        record["gold"] = row["label"]
        if logprobs is not None:
            scores = logprobs[index]
            answer = labels[scores.index(max(scores))]
            record["logprobs"] = {label: round(s, 5) for label, s in zip(labels, scores)}
            record["probs"] = {label: round(float(p), 5) for label, p in zip(labels, softmax(scores))}
        else:
            record["generation"] = generations[index]
            answer = parse_label(generations[index], cfg.prompt.label_words)
        record["model_prediction"] = answer
        record["prediction"] = collapse[answer] if answer is not None else None
        record["correct"] = record["prediction"] == row["label"]
        out.append(record)
    return out


def evaluate(cfg: Config, set_name: str, model_dir: Path, adapter_dir: Path | None, eval_path: Path,
             predictions_path: Path, metrics_path: Path, confusion_path: Path) -> dict:
    """Score every row of one evaluation set, then write predictions, metrics and confusion-matrix plot data."""
    configure_threads(cfg)
    rows = atomic.read_jsonl(eval_path)
    tokenizer = load_tokenizer(model_dir)
    model = load_for_eval(cfg, model_dir, adapter_dir)
    encoded = encode_prompts(tokenizer, [row["prompt"] for row in rows])
    log.info("scoring %d rows of %s with %s", len(rows), set_name, cfg.eval.method)
    clock = Stopwatch()
    if cfg.eval.method == "loglik":
        logprobs = label_logprobs(model, tokenizer, encoded, answer_token_ids(cfg, tokenizer), cfg.eval.batch_size)
        predictions = _prediction_rows(cfg, set_name, rows, logprobs, None)
    else:
        generations = generate_answers(model, tokenizer, encoded, cfg.eval.batch_size, cfg.eval.max_new_tokens)
        predictions = _prediction_rows(cfg, set_name, rows, None, generations)
    seconds = clock.seconds
    counts = count_parameters(model)
    metrics = classification_metrics([r["gold"] for r in predictions], [r["prediction"] for r in predictions],
                                     cfg.eval_sets[set_name].labels(cfg.data.labels), cfg.report.confidence)
    metrics.update({
        "eval_set": set_name,
        "method": cfg.eval.method,
        "unparseable": sum(r["prediction"] is None for r in predictions),
        "seconds": seconds,
        "examples_per_second": round(len(rows) / max(seconds, 1e-9), 3),
        "prompt_tokens_per_second": round(sum(map(len, encoded)) / max(seconds, 1e-9), 1),
        "peak_memory_gb": peak_process_memory_gb(),
        "peak_gpu_memory_gb": peak_gpu_memory_gb(),
        "parameters_total": counts.total,
        "parameters_trainable": counts.adapter,  # the adapter's parameters (trained in finetune); 0 for the base
        "device": str(next(model.parameters()).device),
    })
    atomic.write_jsonl(predictions_path, predictions)
    atomic.write_json(confusion_path, [{"actual": r["gold"], "predicted": r["prediction"] or UNPARSEABLE}
                                       for r in predictions])
    atomic.write_json(metrics_path, metrics)
    return metrics
