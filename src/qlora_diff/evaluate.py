"""The evaluate stages: one implementation scores the base model and the adapter identically."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from qlora_diff import atomic
from qlora_diff.config import Config
from qlora_diff.metrics import classification_metrics
from qlora_diff.modeling import count_parameters, load_causal_lm, load_tokenizer
from qlora_diff.prompts import answer_token_ids
from qlora_diff.runtime import Stopwatch, configure_threads, peak_gpu_memory_gb, peak_process_memory_gb, select_device
from qlora_diff.scoring import generate_answers, label_logprobs, parse_label


def load_for_eval(cfg: Config, model_dir: Path, adapter_dir: Path | None) -> torch.nn.Module:
    """The quantized base model, with the adapter attached when given, in eval mode."""
    device = select_device(cfg)
    model = load_causal_lm(model_dir, cfg, device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.requires_grad_(False).eval()


def _prediction_rows(cfg: Config, rows: list[dict], logprobs: list[list[float]] | None,
                     generations: list[str] | None) -> list[dict]:
    labels = cfg.data.labels
    out = []
    for index, row in enumerate(rows):
        record = {key: row[key] for key in ("id", "premise", "hypothesis")} | {"gold": row["label"]}
        if logprobs is not None:
            scores = logprobs[index]
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            record["prediction"] = labels[scores.index(top)]
            record["logprobs"] = {label: round(s, 5) for label, s in zip(labels, scores)}
            record["probs"] = {label: round(w / sum(weights), 5) for label, w in zip(labels, weights)}
        else:
            record["generation"] = generations[index]
            record["prediction"] = parse_label(generations[index], cfg.prompt.label_words)
        record["correct"] = record["prediction"] == row["label"]
        out.append(record)
    return out


def evaluate(cfg: Config, model_dir: Path, adapter_dir: Path | None, eval_path: Path,
             predictions_path: Path, metrics_path: Path, confusion_path: Path) -> dict:
    """Score every eval row, then write predictions, metrics and confusion-matrix plot data."""
    configure_threads(cfg)
    rows = atomic.read_jsonl(eval_path)
    tokenizer = load_tokenizer(model_dir)
    model = load_for_eval(cfg, model_dir, adapter_dir)
    prompts = [row["prompt"] for row in rows]
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    clock = Stopwatch()
    if cfg.eval.method == "loglik":
        logprobs = label_logprobs(model, tokenizer, prompts, answer_token_ids(cfg, tokenizer), cfg.eval.batch_size)
        predictions = _prediction_rows(cfg, rows, logprobs, None)
    else:
        generations = generate_answers(model, tokenizer, prompts, cfg.eval.batch_size, cfg.eval.max_new_tokens)
        predictions = _prediction_rows(cfg, rows, None, generations)
    seconds = clock.seconds
    total, _ = count_parameters(model)
    trained = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    metrics = classification_metrics([r["gold"] for r in predictions], [r["prediction"] for r in predictions],
                                     cfg.data.labels, cfg.report.confidence)
    metrics.update({
        "method": cfg.eval.method,
        "unparseable": sum(r["prediction"] is None for r in predictions),
        "seconds": seconds,
        "examples_per_second": round(len(rows) / max(seconds, 1e-9), 3),
        "prompt_tokens_per_second": round(prompt_tokens / max(seconds, 1e-9), 1),
        "peak_memory_gb": peak_process_memory_gb(),
        "peak_gpu_memory_gb": peak_gpu_memory_gb(),
        "parameters_total": total,
        "parameters_trainable": trained,  # the adapter's parameters (trained in finetune); 0 for the base
        "chance_accuracy": round(1 / len(cfg.data.labels), 4),
        "majority_class_accuracy": round(max(metrics["per_class"][l]["support"] for l in cfg.data.labels) / len(rows), 4),
        "device": str(next(model.parameters()).device),
    })
    atomic.write_jsonl(predictions_path, predictions)
    atomic.write_json(confusion_path, [{"actual": r["gold"], "predicted": r["prediction"] or "unparseable"}
                                       for r in predictions])
    atomic.write_json(metrics_path, metrics)
    return metrics
