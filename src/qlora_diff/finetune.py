"""The finetune stage: QLoRA with Hugging Face Trainer, answer-only loss, resumable checkpoints, dvclive curves."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from qlora_diff import atomic
from qlora_diff.config import Config
from qlora_diff.modeling import check_target_modules, count_parameters, load_causal_lm, load_tokenizer
from qlora_diff.padding import attention_mask, left_pad, position_ids
from qlora_diff.prompts import answer_token_ids
from qlora_diff.progress import show_progress
from qlora_diff.runtime import (
    Stopwatch,
    configure_threads,
    peak_gpu_memory_gb,
    peak_process_memory_gb,
    select_device,
)

IGNORE_INDEX = -100
FINGERPRINT_FILE = "fingerprint.json"


def build_examples(cfg: Config, tokenizer, rows: list[dict]) -> tuple[list[dict], int]:
    """Tokenized examples whose labels cover only the answer tokens; returns (examples, rows too long)."""
    answers = answer_token_ids(cfg, tokenizer)
    examples, too_long = [], 0
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False).input_ids
        answer = answers[row["label"]]
        if len(prompt) + len(answer) > cfg.train.max_seq_length:
            too_long += 1
            continue
        examples.append({
            "input_ids": prompt + answer,
            "attention_mask": [1] * (len(prompt) + len(answer)),
            "labels": [IGNORE_INDEX] * len(prompt) + answer,
        })
    return examples, too_long


def attach_lora(cfg: Config, model: torch.nn.Module) -> torch.nn.Module:
    """Prepare the 4-bit model for training and add LoRA; seeded first so the init repeats."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.quant.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    set_seed(cfg.train.seed)
    lora = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules), bias=cfg.lora.bias, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def run_fingerprint(cfg: Config, train_path: Path, model_dir: Path) -> str:
    """What a checkpoint must match to be resumed: every param and input the training depends on."""
    digest = hashlib.sha256()
    payload = {k: cfg.to_dict()[k] for k in ("model", "data", "prompt", "quant", "lora", "train")}
    digest.update(json.dumps(payload, sort_keys=True).encode())
    digest.update(train_path.read_bytes())
    digest.update((model_dir / "config.json").read_bytes())
    return digest.hexdigest()


def _complete(checkpoint: Path) -> bool:
    """Trainer writes trainer_state.json last, so a checkpoint killed mid-save lacks a readable one."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def resumable_checkpoint(checkpoint_dir: Path, fingerprint: str, is_main_process: bool = True) -> Path | None:
    """The latest complete checkpoint of this exact run, if any.

    The main process deletes checkpoints of other params and ones cut off mid-save by a kill.
    """
    marker = checkpoint_dir / FINGERPRINT_FILE
    if marker.is_file() and json.loads(marker.read_text())["fingerprint"] == fingerprint:
        checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        complete = [c for c in checkpoints if _complete(c)]
        if is_main_process:
            for partial in set(checkpoints) - set(complete):
                shutil.rmtree(partial)
        return complete[-1] if complete else None
    if not is_main_process:
        return None
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))
    return None


class LeftPadCollator:
    """Left-pads a batch so every answer ends in the last column, with position ids that ignore padding.

    Left padding lets the loss ask the model for logits of the last few positions only
    (``logits_to_keep``); on a 49k vocabulary that is most of the cost of a full-sequence head.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        mask = attention_mask(ids)
        return {"input_ids": left_pad(ids, self.pad_token_id), "attention_mask": mask,
                "labels": left_pad([f["labels"] for f in features], IGNORE_INDEX), "position_ids": position_ids(mask)}


def answer_window_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
                       ) -> torch.Tensor:
    """Cross-entropy of the answer tokens from the logits of the last positions of left-padded rows.

    ``logits`` (batch, W, vocab) are the predictions made at the W positions before the last one, so they
    predict ``labels[:, -W:]``. The summed loss is divided by ``num_items_in_batch`` when given (the answer
    tokens of every micro-batch of one optimizer step), else by this batch's answer-token count: the same
    value as a full-sequence, answer-only cross-entropy.
    """
    targets = labels[:, -logits.shape[1]:].to(logits.device)
    total = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                              ignore_index=IGNORE_INDEX, reduction="sum")
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()
    return total / (num_items_in_batch.to(total.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch)


class AnswerOnlyTrainer(Trainer):
    """Trainer whose loss reads logits only where answer tokens are predicted (see :func:`answer_window_loss`).

    It relies on three things Trainer does for models whose forward takes ``**kwargs`` (Llama and peft do):
    ``num_items_in_batch`` counts ``labels[..., 1:] != -100`` over all gradient-accumulation micro-batches
    (gathered over processes when ``average_tokens_across_devices``); ``training_step`` then does not divide
    the loss by the accumulation steps again; and DDP averages gradients over processes, which the
    ``num_processes`` factor below undoes, as ``Trainer.compute_loss`` does.
    """

    def __init__(self, *args, answer_window: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_window = answer_window

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs, logits_to_keep=self.answer_window + 1)
        loss = answer_window_loss(outputs.logits[:, :-1], labels, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


class DVCLiveCurves(TrainerCallback):
    """Logs loss and learning rate to dvclive at the Trainer's global step.

    Written here instead of dvclive's own callback, which rewrites dvc.yaml and dumps every
    TrainingArguments field into params.
    """

    def __init__(self, live_dir: Path, resume: bool):
        from dvclive import Live

        self.live = Live(str(live_dir), dvcyaml=None, resume=resume, save_dvc_exp=False, report=None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        values = {key: float(logs[key]) for key in ("loss", "learning_rate", "grad_norm") if key in logs}
        if values:
            self.live.step = state.global_step
            for key, value in values.items():
                self.live.log_metric(f"train/{key}", value)
            self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.live.end()


def training_arguments(cfg: Config, checkpoint_dir: Path, device: torch.device) -> TrainingArguments:
    train = cfg.train
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        logging_steps=train.logging_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,
        seed=train.seed,
        data_seed=train.seed,
        # Shuffled either way; grouping by length puts similar lengths in a batch, so less padding.
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        bf16=device.type == "cuda" and cfg.quant.compute_dtype == "bfloat16",
        use_cpu=device.type == "cpu",
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=not show_progress(),
        ddp_find_unused_parameters=False,
    )


# Metrics that differ between two runs of the same params; kept out of the adapter directory so its hash
# (the dependency of evaluate_adapter in dvc.lock) only changes when the adapter does.
RUN_DEPENDENT_METRICS = ("seconds", "tokens_per_second", "peak_memory_gb", "peak_gpu_memory_gb", "device",
                         "resumed_from_checkpoint")


def save_adapter(model: torch.nn.Module, adapter_dir: Path) -> None:
    """``save_pretrained`` with set-valued config fields sorted: PEFT stores ``target_modules`` as a set, which
    JSON-serializes in hash-seed order and would make ``adapter_config.json`` differ between identical runs."""
    for config in model.peft_config.values():
        for field in dataclasses.fields(config):
            if isinstance(getattr(config, field.name), set):
                setattr(config, field.name, sorted(getattr(config, field.name)))
    model.save_pretrained(adapter_dir, safe_serialization=True)


def write_model_card(adapter_dir: Path, cfg: Config, metrics: dict, base_info: dict) -> None:
    """A Hugging Face model card holding only what the same params reproduce byte for byte."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics = {key: value for key, value in metrics.items() if key not in RUN_DEPENDENT_METRICS}
    header = ModelCardData(library_name="peft", tags=["qlora", "lora", "snli", "nli"]).to_yaml()
    body = [
        "# QLoRA adapter for natural language inference (SNLI)", "",
        f"Base model: `{base_info.get('path')}` ({base_info.get('source')}, sha256 `{base_info.get('sha256')}`).", "",
        "Produced by the `finetune` stage of this repository's DVC pipeline. Params:", "",
        "```json", json.dumps({k: cfg.to_dict()[k] for k in ("quant", "lora", "train")}, indent=2), "```", "",
        "Training metrics (timing and memory: `metrics/finetune.json`):", "", "```json",
        json.dumps(metrics, indent=2), "```", "",
    ]
    ModelCard(f"---\n{header}\n---\n\n" + "\n".join(body)).save(adapter_dir / "README.md")


def finetune(cfg: Config, model_dir: Path, train_path: Path, adapter_dir: Path, metrics_path: Path,
             checkpoint_dir: Path, live_dir: Path) -> dict:
    """Train the adapter (resuming a matching checkpoint), save it atomically and write its metrics."""
    check_target_modules(cfg.lora.target_modules, model_dir)
    configure_threads(cfg)
    device = select_device(cfg)
    rows = atomic.read_jsonl(train_path)
    tokenizer = load_tokenizer(model_dir)
    examples, too_long = build_examples(cfg, tokenizer, rows)
    fingerprint = run_fingerprint(cfg, train_path, model_dir)
    is_main_process = int(os.environ.get("RANK", "0")) == 0
    checkpoint = resumable_checkpoint(checkpoint_dir, fingerprint, is_main_process)
    resume = checkpoint is not None
    set_seed(cfg.train.seed)
    model = attach_lora(cfg, load_causal_lm(model_dir, cfg, device))
    total, trainable, _ = count_parameters(model)
    trainer = AnswerOnlyTrainer(
        model=model,
        args=training_arguments(cfg, checkpoint_dir, device),
        train_dataset=Dataset.from_list(examples),
        data_collator=LeftPadCollator(tokenizer.pad_token_id),
        callbacks=[DVCLiveCurves(live_dir, resume=resume)] if is_main_process else [],
        answer_window=max(len(ids) for ids in answer_token_ids(cfg, tokenizer).values()),
    )
    clock = Stopwatch()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = clock.seconds
    if not trainer.is_world_process_zero():
        return {}
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    tokens = int(trainer.state.num_input_tokens_seen)
    base_info = json.loads((model_dir.parent / f"{model_dir.name}.json").read_text()) \
        if (model_dir.parent / f"{model_dir.name}.json").is_file() else {}
    with atomic.atomic_path(adapter_dir, is_dir=True) as tmp:
        save_adapter(model, tmp)
        adapter_mb = sum(f.stat().st_size for f in tmp.glob("*.safetensors")) / 1024**2
        metrics = {
            "seconds": seconds,
            "resumed_from_checkpoint": resume,
            "train_examples": len(examples),
            "train_rows_skipped_too_long": too_long,
            "steps": trainer.state.global_step,
            "tokens_seen": tokens,
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "peak_memory_gb": peak_process_memory_gb(),
            "peak_gpu_memory_gb": peak_gpu_memory_gb(),
            "parameters_total": total,
            "parameters_trainable": trainable,
            "trainable_percent": round(100 * trainable / total, 4),
            "adapter_size_mb": round(adapter_mb, 3),
            "train_loss_mean": round(float(result.training_loss), 5),
            "final_loss": round(float(losses[-1]), 5) if losses else None,
            "device": str(device),
        }
        write_model_card(tmp, cfg, metrics, base_info)
    atomic.write_json(metrics_path, metrics)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics
