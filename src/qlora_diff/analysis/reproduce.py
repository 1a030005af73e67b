"""Did this workspace reproduce the committed run? One verdict, after `make repro` or on its own.

Compares the workspace's outputs with a committed revision's (HEAD by default), both read through DVC's API, for
the base model and the adapter on every evaluation set:
- **identical predictions**: every row has the same predicted label; it then names each statistic in `metrics/`
  that differs beyond the precision it is recorded with (timings and the machine are not statistics);
- otherwise, per set and model: the rows whose prediction changed, the accuracy difference with its paired CI and
  McNemar p (the run comparison's own test, `runs.difference`), whether the adapter's difference exceeds the
  training-seed noise the committed seed study measured, and the likely cause: the compute dtypes and machine
  fingerprints of both runs, side by side.

The verdict goes to stdout and to `reproduction.md` (not a DVC output; git ignores it).

Run: python -m qlora_diff.analysis.reproduce [--against REV] [--out reproduction.md] [--strict]
(--strict: exit 1 unless the predictions are identical)
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from qlora_diff.analysis.runs import (
    SEED_STUDY,
    RunDifference,
    align,
    difference,
    params_at,
    read_jsonl_at,
    read_text_at,
)
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import Config, parse_config
from qlora_diff.core.errors import InputError
from qlora_diff.core.numerics import RUN_DEPENDENT_METRICS

VERDICT_FILE = Path("reproduction.md")
WORKSPACE = "workspace"
IDENTICAL = "identical predictions"
# Two seeds of one config differ by more than this many seed sds about 5% of the time (1.96 * sqrt(2)).
SEED_NOISE_SDS = 1.96 * math.sqrt(2)


@dataclass(frozen=True)
class Snapshot:
    """One run's files: per set and model its predictions, and every metrics file by path."""

    predictions: dict[tuple[str, str], list[dict]]
    metrics: dict[str, dict]


@dataclass(frozen=True)
class ModelDrift:
    """One model on one set, committed (A) against the workspace (B)."""

    set_name: str
    model: str
    changed: int                 # rows whose predicted label differs
    difference: RunDifference
    seed_sd: float | None = None  # the seed study's adapter accuracy sd on this set (adapter only)

    @property
    def beyond_seed_noise(self) -> bool | None:
        if self.seed_sd is None:
            return None
        return abs(self.difference.delta) > SEED_NOISE_SDS * self.seed_sd


@dataclass(frozen=True)
class Verdict:
    against: str
    drifts: list[ModelDrift]
    differing_statistics: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(drift.changed == 0 for drift in self.drifts)


def metrics_files(cfg: Config) -> list[Path]:
    """Every metrics file of the pipeline's stages for ``cfg``'s evaluation sets, named once in ``paths``."""
    per_set = [path for name in cfg.eval_sets
               for path in (paths.eval_data_metrics(name), paths.slice_metrics(name),
                            *(paths.eval_metrics(name, model) for model in paths.MODELS),
                            paths.compare_metrics(name), paths.seed_metrics(name))]
    return [paths.BASE_MODEL_INFO, paths.TRAIN_DATA_METRICS, paths.HYPOTHESIS_METRICS, paths.FINETUNE_METRICS,
            *per_set]


def read_snapshot(cfg: Config, rev: str | None, repo: str = ".") -> Snapshot:
    """The predictions and metrics of run ``rev`` (None: the workspace)."""
    predictions = {(name, model): read_jsonl_at(paths.predictions(name, model), repo, rev)
                   for name in cfg.eval_sets for model in paths.MODELS}
    metrics = {}
    for path in metrics_files(cfg):
        text = read_text_at(path, repo, rev)
        if text is not None:
            metrics[str(path)] = json.loads(text)
    return Snapshot(predictions, metrics)


def statistics(content, prefix: str = "") -> dict[str, object]:
    """Every leaf of a metrics file by its dotted key, without the run-dependent fields (timings, machine)."""
    if isinstance(content, dict):
        return {key: value for name, item in content.items() if name not in RUN_DEPENDENT_METRICS
                for key, value in statistics(item, f"{prefix}.{name}" if prefix else name).items()}
    if isinstance(content, list):
        return {key: value for index, item in enumerate(content)
                for key, value in statistics(item, f"{prefix}[{index}]").items()}
    return {prefix: content}


def differing_statistics(committed: Snapshot, workspace: Snapshot) -> list[str]:
    """``file: key committed -> workspace`` for every recorded statistic whose value differs."""
    out = []
    for path in sorted(set(committed.metrics) | set(workspace.metrics)):
        a, b = statistics(committed.metrics.get(path, {})), statistics(workspace.metrics.get(path, {}))
        out += [f"{path}: {key} {a.get(key, 'absent')} -> {b.get(key, 'absent')}"
                for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    return out


def seed_sds(study_path: Path = SEED_STUDY) -> dict[str, float]:
    """Per evaluation set, the adapter accuracy sd across training seeds of the committed seed study's default."""
    if not study_path.is_file():
        return {}
    default = json.loads(study_path.read_text(encoding="utf-8"))["configs"].get("default") or {}
    return {name: measured["adapter"]["accuracy_sd"] for name, measured in default.get("sets", {}).items()}


def likely_causes(committed: Snapshot, workspace: Snapshot) -> list[str]:
    """What differs in how the two runs computed: each recorded dtype and machine field, per metrics file."""
    fields = ("compute_dtype", "device", "machine")
    out = []
    for path in sorted(set(committed.metrics) & set(workspace.metrics)):
        a, b = committed.metrics[path], workspace.metrics[path]
        out += [f"{path}: {name} {json.dumps(a.get(name))} -> {json.dumps(b.get(name))}"
                for name in fields if name in a and name in b and a[name] != b[name]]
    return out


def reproduction_verdict(cfg: Config, committed: Snapshot, workspace: Snapshot, against: str,
                         sds: dict[str, float] | None = None) -> Verdict:
    """The verdict of ``workspace`` against ``committed``: rows changed and the paired test per set and model."""
    drifts = []
    for (set_name, model), rows_a in committed.predictions.items():
        pairs = align(set_name, rows_a, workspace.predictions[(set_name, model)], f"{against} {model}",
                      f"{WORKSPACE} {model}")
        changed = sum(a["prediction"] != b["prediction"] for a, b in pairs)
        sd = (sds or {}).get(set_name) if model == "adapter" else None
        drifts.append(ModelDrift(set_name, model, changed, difference(set_name, pairs, cfg), sd))
    return Verdict(against, drifts, differing_statistics(committed, workspace), likely_causes(committed, workspace))


def render(verdict: Verdict) -> str:
    """The verdict as Markdown: its first line is the one-line answer."""
    if verdict.identical:
        lines = [f"Reproduction check against `{verdict.against}`: **{IDENTICAL}** "
                 f"({', '.join(f'`{d.set_name}` {d.model}' for d in verdict.drifts)}: every row's predicted label "
                 "is the committed one).", ""]
        if verdict.differing_statistics:
            lines += ["Statistics that differ beyond their recorded precision:", "",
                      *(f"- {line}" for line in verdict.differing_statistics)]
        else:
            lines.append("Every recorded statistic in `metrics/` is the committed value (timings and the machine "
                         "aside).")
        return "\n".join(lines) + "\n"
    moved = [d for d in verdict.drifts if d.changed]
    lines = [f"Reproduction check against `{verdict.against}`: **predictions differ** in "
             f"{', '.join(f'`{d.set_name}` {d.model} ({d.changed} of {d.difference.rows} rows)' for d in moved)}.",
             ""]
    for d in verdict.drifts:
        diff = d.difference
        sentence = (f"- `{d.set_name}` {d.model}: {d.changed} of {diff.rows} predictions changed; accuracy "
                    f"{100 * diff.accuracy_a:.1f}% committed, {100 * diff.accuracy_b:.1f}% here, difference "
                    f"{100 * diff.delta:+.1f} points (paired {diff.confidence:.0%} CI [{100 * diff.ci_low:+.1f}, "
                    f"{100 * diff.ci_high:+.1f}], {diff.fixed} fixed / {diff.broken} broken, McNemar p = "
                    f"{diff.mcnemar_p:.2g})")
        if d.beyond_seed_noise is not None:
            sentence += (f"; {'beyond' if d.beyond_seed_noise else 'within'} the training-seed noise "
                         f"(|difference| {'>' if d.beyond_seed_noise else '<='} {SEED_NOISE_SDS:.2f} x the seed "
                         f"study's sd of {100 * d.seed_sd:.1f} points, {SEED_STUDY})")
        lines.append(sentence + ".")
    lines += ["", "Likely cause, where the two runs computed differently:", "",
              *(f"- {cause}" for cause in verdict.causes or
                ["no recorded dtype, device or machine field differs: look at the code and params between the "
                 "two revisions (`git diff`, `dvc params diff`)"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD", help="the committed run: a git revision (default HEAD)")
    parser.add_argument("--out", type=Path, default=VERDICT_FILE, help="where the verdict is written as well")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless the predictions are identical")
    args = parser.parse_args()
    try:
        cfg = parse_config(params_at(".", args.against))
        verdict = reproduction_verdict(cfg, read_snapshot(cfg, args.against), read_snapshot(cfg, None), args.against,
                                       seed_sds())
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    markdown = render(verdict)
    atomic.write_text(args.out, markdown)
    print(markdown, end="")
    if args.strict and not verdict.identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
