"""The finetune stage: QLoRA with Hugging Face Trainer, answer-only loss, resumable checkpoints, dvclive curves."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from qlora_diff.core import atomic
from qlora_diff.core.config import Config
from qlora_diff.core.numerics import RUN_DEPENDENT_METRICS
from qlora_diff.core.progress import show_progress
from qlora_diff.core.runtime import (
    Stopwatch,
    configure_threads,
    machine_fingerprint,
    peak_gpu_memory_gb,
    peak_process_memory_gb,
    resolve_attention,
    resolve_compute_dtype,
    select_device,
)
from qlora_diff.data.prompts import answer_token_ids, shared_prefix
from qlora_diff.model.families import Family, family_of, lora_targets, model_family
from qlora_diff.model.modeling import check_target_modules, count_parameters, load_causal_lm, load_tokenizer
from qlora_diff.model.padding import attention_mask, left_pad, position_ids
from qlora_diff.model.unpadded import on_real_tokens

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


def split_shared_prefix(examples: list[dict]) -> tuple[list[int], list[dict]]:
    """The prompt prefix every example shares, and the examples without it (labels there are all ignored).

    The prefix is found in the prompts (``prompts.shared_prefix``), so a new system prompt or template moves it.
    """
    prompts = [ex["input_ids"][:ex["labels"].count(IGNORE_INDEX)] for ex in examples]
    prefix = shared_prefix(prompts) if examples else []
    cut = len(prefix)
    return prefix, [{key: values[cut:] for key, values in ex.items()} for ex in examples]


def shares_prefix(cfg: Config) -> bool:
    """Shared-prefix training needs one process (DDP allows one forward per backward) and a KV cache
    (gradient checkpointing turns caching off)."""
    return cfg.train.share_prefix and cfg.train.num_processes == 1 and not cfg.train.gradient_checkpointing


def skips_padding(cfg: Config, family: Family) -> bool:
    """Only a known family's token-wise modules can skip the padding (``model/families.py``); gradient
    checkpointing recomputes the forward in backward, outside the hooks that skip it."""
    return cfg.train.skip_padding and family.known and not cfg.train.gradient_checkpointing


def attach_lora(cfg: Config, model: torch.nn.Module) -> torch.nn.Module:
    """Prepare the 4-bit model for training and add LoRA; seeded first so the init repeats.

    peft's ``prepare_model_for_kbit_training`` upcasts every frozen weight that is not 4-bit (embeddings, tied LM
    head, norms) to float32, so a bf16 fine-tune runs its residual stream, attention and norms in float32 and casts
    around every 4-bit matmul. ``train.upcast_frozen: false`` returns those weights to the dtype they were loaded
    in (the compute dtype, as evaluation runs them); the LoRA weights stay float32 either way. Together with eager
    attention (``train.attention``) that makes a bf16 CPU step 1.2-1.3x faster (benchmarks/train_throughput.py).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model.set_attn_implementation(resolve_attention(cfg.train.attention, next(model.parameters()).device))
    if cfg.quant.load_in_4bit:
        loaded = {name: param.dtype for name, param in model.named_parameters()}
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if not cfg.train.upcast_frozen:
            for name, param in model.named_parameters():
                if param.dtype != loaded[name]:
                    param.data = param.data.to(loaded[name])   # bf16 -> fp32 -> bf16 is exact
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    set_seed(cfg.train.seed)
    lora = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=lora_targets(cfg.lora.target_modules, family_of(model.config.model_type)), bias=cfg.lora.bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def frozen_weights_dtype(model: torch.nn.Module) -> str:
    """The dtype the frozen non-4-bit weights train in (``train.upcast_frozen``), read from the input embeddings."""
    return str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")


def run_fingerprint(cfg: Config, train_path: Path, model_dir: Path, compute_dtype: str) -> str:
    """What a checkpoint must match to be resumed: every param and input the training depends on, and the
    compute dtype ``quant.compute_dtype: auto`` resolved to on this machine."""
    digest = hashlib.sha256()
    payload = {k: cfg.to_dict()[k] for k in ("model", "data", "prompt", "quant", "lora", "train")}
    payload["resolved_compute_dtype"] = compute_dtype
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
    With ``prefix_len`` (features stripped of a shared prefix, see :func:`split_shared_prefix`), the attention
    mask also covers the prefix, which the trainer supplies as a KV cache, and positions start after it.
    """

    def __init__(self, pad_token_id: int, prefix_len: int = 0):
        self.pad_token_id = pad_token_id
        self.prefix_len = prefix_len

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        mask = attention_mask(ids)
        prefix_mask = torch.ones(len(ids), self.prefix_len, dtype=mask.dtype)
        return {"input_ids": left_pad(ids, self.pad_token_id), "attention_mask": torch.cat([prefix_mask, mask], 1),
                "labels": left_pad([f["labels"] for f in features], IGNORE_INDEX),
                "position_ids": position_ids(mask) + self.prefix_len}


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


def prefix_kv_cache(model: torch.nn.Module, prefix: list[int], batch_size: int):
    """The shared prefix's KV cache, computed once (with gradients) and repeated to the batch.

    Autograd sums every row's gradient through the repeat, so loss and LoRA gradients equal the unshared
    computation up to float rounding (tests/test_finetune.py pins it). With lora.dropout > 0 the prefix
    positions of one batch share a dropout mask.
    """
    device = next(model.parameters()).device
    cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1).cache
    cache.batch_repeat_interleave(batch_size)
    return cache


def answer_window_forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], answer_window: int,
                          prefix: list[int], tokenwise: tuple[str, ...] = ()):
    """The model's output with logits for the last ``answer_window + 1`` positions of a :class:`LeftPadCollator`
    batch (no labels); with a ``prefix`` the batch holds the rows after it and the prefix runs once; the
    ``tokenwise`` modules (a family's, to skip the padding) run on real tokens only
    (:mod:`qlora_diff.model.unpadded`)."""
    if prefix:
        inputs = {**inputs, "cache": prefix_kv_cache(model, prefix, len(inputs["input_ids"])), "use_cache": True}
    real_tokens = inputs["attention_mask"][:, -inputs["input_ids"].shape[1]:]
    with on_real_tokens(model, real_tokens, tokenwise) if tokenwise else nullcontext():
        return model(**inputs, logits_to_keep=answer_window + 1)


class AnswerOnlyTrainer(Trainer):
    """Trainer whose loss reads logits only where answer tokens are predicted (see :func:`answer_window_loss`).

    It relies on three things Trainer does for models whose forward takes ``**kwargs`` (Llama and peft do):
    ``num_items_in_batch`` counts ``labels[..., 1:] != -100`` over all gradient-accumulation micro-batches
    (gathered over processes when ``average_tokens_across_devices``); ``training_step`` then does not divide
    the loss by the accumulation steps again; and DDP averages gradients over processes, which the
    ``num_processes`` factor below undoes, as ``Trainer.compute_loss`` does.
    """

    def __init__(self, *args, answer_window: int, prefix: list[int] | None = None, tokenwise: tuple[str, ...] = (),
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_window = answer_window
        self.prefix = prefix or []
        self.tokenwise = tokenwise

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = answer_window_forward(model, inputs, self.answer_window, self.prefix, self.tokenwise)
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


def training_arguments(cfg: Config, checkpoint_dir: Path, device: torch.device, compute_dtype: str
                       ) -> TrainingArguments:
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
        bf16=device.type == "cuda" and compute_dtype == "bfloat16",
        use_cpu=device.type == "cpu",
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=not show_progress(),
        ddp_find_unused_parameters=False,
    )


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
    task = cfg.task_spec
    header = ModelCardData(library_name="peft", tags=["qlora", "lora", *task.card_tags]).to_yaml()
    body = [
        f"# QLoRA adapter for {task.card_title}", "",
        f"Base model: `{base_info.get('path')}` ({base_info.get('source')}, sha256 `{base_info.get('sha256')}`).", "",
        "Produced by the `finetune` stage of this repository's DVC pipeline. Params:", "",
        "```json", json.dumps({k: cfg.to_dict()[k] for k in ("quant", "lora", "train")}, indent=2), "```", "",
        "Training metrics (timing and memory: `metrics/finetune.json`):", "", "```json",
        json.dumps(metrics, indent=2), "```", "",
    ]
    ModelCard(f"---\n{header}\n---\n\n" + "\n".join(body)).save(adapter_dir / "README.md")


@dataclasses.dataclass
class TrainingSetup:
    """What :func:`build_trainer` made: the Trainer, where and in which dtype it computes, and the facts about its
    rows that the metrics report."""

    trainer: AnswerOnlyTrainer
    device: torch.device
    compute_dtype: str
    train_examples: int
    too_long: int
    shared_prefix_tokens: int
    family: Family


def build_trainer(cfg: Config, model_dir: Path, train_path: Path, checkpoint_dir: Path) -> TrainingSetup:
    """The finetune stage's model, rows, collator and Trainer, ready to train (benchmarks time its batches too);
    ``cfg.lora.target_modules`` already checked against the model (:func:`finetune` does it first)."""
    configure_threads(cfg)
    device = select_device(cfg)
    tokenizer = load_tokenizer(model_dir)
    examples, too_long = build_examples(cfg, tokenizer, atomic.read_jsonl(train_path))
    compute_dtype = resolve_compute_dtype(cfg.quant.compute_dtype, device)
    prefix, examples = split_shared_prefix(examples) if shares_prefix(cfg) else ([], examples)
    set_seed(cfg.train.seed)
    model = attach_lora(cfg, load_causal_lm(model_dir, cfg, device, compute_dtype))
    family = family_of(model.config.model_type)
    trainer = AnswerOnlyTrainer(
        model=model,
        args=training_arguments(cfg, checkpoint_dir, device, compute_dtype),
        train_dataset=Dataset.from_list(examples),
        data_collator=LeftPadCollator(tokenizer.pad_token_id, len(prefix)),
        answer_window=max(len(ids) for ids in answer_token_ids(cfg, tokenizer).values()),
        prefix=prefix,
        tokenwise=family.tokenwise if skips_padding(cfg, family) else (),
    )
    return TrainingSetup(trainer, device, compute_dtype, len(examples), too_long, len(prefix), family)


def finetune(cfg: Config, model_dir: Path, train_path: Path, adapter_dir: Path, metrics_path: Path,
             checkpoint_dir: Path, live_dir: Path | None) -> dict:
    """Train the adapter (resuming a matching checkpoint), save it atomically and write its metrics. The training
    curves go to ``live_dir`` (none for a seed replicate: None)."""
    check_target_modules(lora_targets(cfg.lora.target_modules, model_family(model_dir)), model_dir)
    setup = build_trainer(cfg, model_dir, train_path, checkpoint_dir)
    trainer, model = setup.trainer, setup.trainer.model
    fingerprint = run_fingerprint(cfg, train_path, model_dir, setup.compute_dtype)
    is_main_process = int(os.environ.get("RANK", "0")) == 0
    checkpoint = resumable_checkpoint(checkpoint_dir, fingerprint, is_main_process)
    resume = checkpoint is not None
    if is_main_process and live_dir is not None:
        trainer.add_callback(DVCLiveCurves(live_dir, resume=resume))
    total, trainable, _ = count_parameters(model)
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
            "train_examples": setup.train_examples,
            "train_rows_skipped_too_long": setup.too_long,
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
            "device": str(setup.device),
            "compute_dtype": setup.compute_dtype,
            "frozen_weights_dtype": frozen_weights_dtype(model),
            "attention": model.config._attn_implementation,
            "shared_prefix_tokens": setup.shared_prefix_tokens,
            "model_family": setup.family.name if setup.family.known else f"{setup.family.name} (not in "
                            "model/families.py: plain paths)",
            "skipped_padding": bool(setup.trainer.tokenwise),
            "machine": machine_fingerprint(setup.device),
        }
        write_model_card(tmp, cfg, metrics, base_info)
    atomic.write_json(metrics_path, metrics)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics
