"""The evaluate stages: one implementation scores the base model and the adapter identically."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from qlora_diff.analysis.calibration import calibration_metrics, label_probs, margins, rule_scores
from qlora_diff.analysis.metrics import UNPARSEABLE, classification_metrics
from qlora_diff.core import atomic
from qlora_diff.core.config import Config
from qlora_diff.core.numerics import noise_floor
from qlora_diff.core.runtime import (
    Stopwatch,
    configure_threads,
    machine_fingerprint,
    matmul_rows_invariant,
    peak_gpu_memory_gb,
    peak_process_memory_gb,
    resolve_compute_dtype,
    select_device,
)
from qlora_diff.data.prompts import answer_token_ids, content_free_row, format_prompt
from qlora_diff.model.modeling import count_parameters, load_causal_lm, load_tokenizer
from qlora_diff.model.scoring import encode_prompts, generate_answers, label_logprobs, parse_label

log = logging.getLogger(__name__)


def load_for_eval(cfg: Config, model_dir: Path, adapter_dir: Path | None) -> tuple[torch.nn.Module, dict]:
    """The quantized base model in ``eval.compute_dtype``, with the adapter attached when given, in eval mode, and
    what its numbers depend on (for the metrics): the dtype as resolved for the device, its near-tie noise floor,
    whether matmul rows are batch-invariant in this process (a warning when not) and the machine's fingerprint."""
    device = select_device(cfg)
    compute_dtype = resolve_compute_dtype(cfg.eval.compute_dtype, device)
    model = load_causal_lm(model_dir, cfg, device, compute_dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    numerics = {"compute_dtype": compute_dtype, "near_tie_margin": noise_floor(compute_dtype),
                "row_invariant_matmuls": matmul_rows_invariant(model, compute_dtype),
                "machine": machine_fingerprint(device)}
    if not numerics["row_invariant_matmuls"]:
        log.warning("%s matmuls on %s give a prompt different bits in different batch sizes: predictions may depend "
                    "on eval.batch_size (float32, the default on CPUs, does not)", compute_dtype, device)
    return model.requires_grad_(False).eval(), numerics


def content_free_probs(cfg: Config, model: torch.nn.Module, tokenizer, answers: list[list[int]]) -> np.ndarray:
    """Label probabilities for content-free inputs (each of ``eval.content_free_inputs`` as every text field),
    averaged: the model's label prior, for contextual calibration (Zhao et al. 2021)."""
    prompts = [format_prompt(cfg, tokenizer, content_free_row(cfg, text)) for text in cfg.eval.content_free_inputs]
    scores = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts), answers, len(prompts))
    return label_probs(np.array(scores)).mean(axis=0)


def _prediction_rows(cfg: Config, set_name: str, rows: list[dict], logprobs: list[list[float]] | None,
                     generations: list[str] | None, prior: np.ndarray | None) -> list[dict]:
    """One record per row: the model's own answer (``model_prediction``, by the ``eval.calibration`` rule) and,
    collapsed through the set's label map, its ``prediction`` in the set's label space, which ``gold`` and
    ``correct`` refer to. Log-likelihood rows also carry their margin and every decision rule's prediction."""
    labels = cfg.data.labels
    collapse = cfg.eval_sets[set_name].collapse(labels)
    if logprobs is not None:
        answer_bytes = np.array([len(cfg.prompt.label_words[label].encode()) for label in labels])
        by_rule = {rule: scores.argmax(axis=1) for rule, scores in rule_scores(np.array(logprobs), prior,
                                                                               answer_bytes).items()}
        row_margins = margins(np.array(logprobs))
        probs = label_probs(np.array(logprobs))
    out = []
    for index, row in enumerate(rows):
        record = {key: row[key] for key in ("id", *cfg.fields, "phenomenon") if key in row}
        record["gold"] = row["label"]
        if logprobs is not None:
            record["logprobs"] = {label: round(s, 5) for label, s in zip(labels, logprobs[index])}
            record["probs"] = {label: round(float(p), 5) for label, p in zip(labels, probs[index])}
            record["margin"] = round(float(row_margins[index]), 6)
            record["predictions_by_rule"] = {rule: collapse[labels[chosen[index]]] for rule, chosen in by_rule.items()}
            answer = labels[by_rule["raw" if cfg.eval.calibration == "none" else cfg.eval.calibration][index]]
        else:
            record["generation"] = generations[index]
            answer = parse_label(generations[index], cfg.prompt.label_words)
        record["model_prediction"] = answer
        record["prediction"] = collapse[answer] if answer is not None else None
        record["correct"] = record["prediction"] == row["label"]
        out.append(record)
    return out


def evaluate(cfg: Config, set_name: str, model_dir: Path, adapter_dir: Path | None, eval_path: Path,
             predictions_path: Path, metrics_path: Path, confusion_path: Path | None,
             extra_metrics: dict | None = None) -> dict:
    """Score every row of one evaluation set, then write predictions, metrics (with ``extra_metrics``) and
    confusion-matrix plot data (none for a seed replicate: ``confusion_path`` None)."""
    configure_threads(cfg)
    rows = atomic.read_jsonl(eval_path)
    tokenizer = load_tokenizer(model_dir)
    model, numerics = load_for_eval(cfg, model_dir, adapter_dir)
    encoded = encode_prompts(tokenizer, [row["prompt"] for row in rows])
    log.info("scoring %d rows of %s with %s", len(rows), set_name, cfg.eval.method)
    clock = Stopwatch()
    prior = None
    if cfg.eval.method == "loglik":
        answers = answer_token_ids(cfg, tokenizer)
        logprobs = label_logprobs(model, tokenizer, encoded, answers, cfg.eval.batch_size)
        prior = content_free_probs(cfg, model, tokenizer, answers)
        predictions = _prediction_rows(cfg, set_name, rows, logprobs, None, prior)
    else:
        generations = generate_answers(model, tokenizer, encoded, cfg.eval.batch_size, cfg.eval.max_new_tokens)
        predictions = _prediction_rows(cfg, set_name, rows, None, generations, None)
    seconds = clock.seconds
    counts = count_parameters(model)
    set_labels = cfg.eval_sets[set_name].labels(cfg.data.labels)
    metrics = classification_metrics([r["gold"] for r in predictions], [r["prediction"] for r in predictions],
                                     set_labels, cfg.report.confidence)
    metrics.update({
        "eval_set": set_name,
        "method": cfg.eval.method,
        "decision_rule": cfg.eval.calibration if cfg.eval.method == "loglik" else "generated answer",
        "unparseable": sum(r["prediction"] is None for r in predictions),
        "seconds": seconds,
        "examples_per_second": round(len(rows) / max(seconds, 1e-9), 3),
        "prompt_tokens_per_second": round(sum(map(len, encoded)) / max(seconds, 1e-9), 1),
        "peak_memory_gb": peak_process_memory_gb(),
        "peak_gpu_memory_gb": peak_gpu_memory_gb(),
        "parameters_total": counts.total,
        "parameters_trainable": counts.adapter,  # the adapter's parameters (trained in finetune); 0 for the base
        "device": str(next(model.parameters()).device),
        **numerics,
        **(extra_metrics or {}),
    })
    if prior is not None:
        metrics["calibration"] = {
            "content_free_probs": {label: round(float(p), 5) for label, p in zip(cfg.data.labels, prior)},
            **calibration_metrics(predictions, set_labels, cfg.eval_sets[set_name].collapse(cfg.data.labels),
                                  cfg.report)}
    atomic.write_jsonl(predictions_path, predictions)
    if confusion_path is not None:
        atomic.write_json(confusion_path, [{"actual": r["gold"], "predicted": r["prediction"] or UNPARSEABLE}
                                           for r in predictions])
    atomic.write_json(metrics_path, metrics)
    return metrics
