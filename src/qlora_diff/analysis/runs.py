"""Is run B's adapter better than run A's? A paired comparison of two runs (git revisions, branches or DVC
experiment names) on the rows both scored, read through DVC's API without checking anything out.

Per evaluation set, adapter B against adapter A (each run's train.seed fine-tune): both accuracies, the difference
with a paired-bootstrap CI, the rows B fixed and broke relative to A, the exact McNemar p, and the slices
over-represented among those rows (Fisher exact, Benjamini-Hochberg, as in the explanations).

A run with seed replicates (train.extra_seeds) carries every seed's predictions. When either side has several, the
difference of the mean accuracies gets a CI over seeds and rows (``seeds.SeedRowNoise``); when both sides have
several, that CI and the margin (``report.equivalence_margin``) give one verdict (``margin.decide``): better, worse,
equivalent, not worse, not better, or inconclusive. With one seed per side, the verdict says plainly that seed noise
was not measured: a significant test then shows that these two adapters differ on these rows, not that one config
beats the other, and no comparison is ever called equivalent. ``--plan`` adds, per set, the smallest difference the
study could detect and the seeds per side that would settle the margin, with the time on this machine.

Each run is read with its own params (train seed, extra seeds, eval sets); the report settings (confidence, margin,
slices) are the reference run A's, or the command line's, and the output says which.

Run: python -m qlora_diff.analysis.runs A B [--plan] [--margin POINTS] [--out runs.md]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tabulate import tabulate

from qlora_diff.analysis.compare import category, correctness, index_predictions
from qlora_diff.analysis.explain import attach_features, findings, over_representation, slice_members
from qlora_diff.analysis.margin import INCONCLUSIVE, MAX_SEEDS, Plan, decide, plan, sentence
from qlora_diff.analysis.seeds import SeedRowNoise, correctness_matrix, prediction_matrix, seed_row_ci, seed_row_noise
from qlora_diff.analysis.stats import group_table, significant
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import Config, ReportConfig, parse_config
from qlora_diff.core.errors import ConfigError, InputError
from qlora_diff.core.nli_legacy import upgrade

SEED_STUDY = Path("benchmarks/results/seed_study.json")   # benchmarks/seed_study.py: the default config's seed noise
FINE_TUNE = "fine-tune"   # the key of Run.dtypes for the training dtype (eval sets use their names)
DEFAULTS = parse_config({})   # this version's defaults, for the keys a run's params leave out
RUN_WORDS = {"corrected": "Rows B fixed", "regressed": "Rows B broke", "still_wrong": "Rows both got wrong"}


def _relation(delta: float) -> str:
    """B's accuracy against A's in words: "1.4 points above", "0.3 points below", or "level with"."""
    points = round(100 * delta, 1)
    return "level with" if points == 0 else f"{abs(points):.1f} points {'above' if points > 0 else 'below'}"


@dataclass(frozen=True)
class Run:
    """One run's files: per evaluation set, each training seed's adapter predictions (train.seed first), and the
    slice features of the rows where the run has them."""

    replicates: dict[str, dict[int, list[dict]]]
    slices: dict[str, list[dict]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)   # FINE_TUNE and each set's name -> the resolved dtype


@dataclass(frozen=True)
class SeedDifference:
    """The difference of the mean accuracies across seeds, with its CI over seeds and rows."""

    seeds_a: int
    seeds_b: int
    mean_a: float
    mean_b: float
    ci_low: float
    ci_high: float
    noise: SeedRowNoise | None = None

    @property
    def delta(self) -> float:
        return self.mean_b - self.mean_a

    @property
    def beyond_noise(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


@dataclass(frozen=True)
class RunDifference:
    """Adapter B against adapter A on one evaluation set's rows (paired by id)."""

    set_name: str
    rows: int
    accuracy_a: float
    accuracy_b: float
    ci_low: float         # paired-bootstrap CI of accuracy_b - accuracy_a
    ci_high: float
    fixed: int            # rows B gets right and A wrong
    broken: int           # rows A gets right and B wrong
    mcnemar_p: float
    confidence: float
    seeds: SeedDifference | None = None   # when either run has replicates
    findings: list[str] | None = None     # slices over-represented among fixed/broken rows; None: no slice features
    dtype_caveat: str | None = None       # the runs trained or evaluated in different compute dtypes
    margin: float = 0.03                  # report.equivalence_margin, as a fraction
    plan: Plan | None = None              # what the study could detect, and the seeds that would settle the margin

    @property
    def delta(self) -> float:
        return self.accuracy_b - self.accuracy_a

    @property
    def significant(self) -> bool:
        """The exact McNemar test at the report's level (1 - confidence)."""
        return significant(self.mcnemar_p, self.confidence)

    @property
    def margin_verdict(self) -> str | None:
        """``margin.decide`` on the seeds-and-rows CI; None unless both runs measured their seed noise."""
        if not self.seeds or min(self.seeds.seeds_a, self.seeds.seeds_b) < 2:
            return None
        return decide(self.seeds.ci_low, self.seeds.ci_high, self.margin)

    @property
    def real(self) -> bool:
        """What the verdict calls a real difference: beyond the seed noise when replicates were measured, else
        (two single fine-tunes) McNemar-significant between these two adapters."""
        return self.seeds.beyond_noise if self.seeds else self.significant

    def verdict(self, name_a: str, name_b: str) -> str:
        """One sentence that claims no more than the test supports."""
        if self.seeds:
            return self._seed_verdict(name_a, name_b)
        numbers = (f"`{name_b}` is {_relation(self.delta)} `{name_a}` on `{self.set_name}` "
                   f"({100 * self.accuracy_b:.1f}% vs {100 * self.accuracy_a:.1f}%, paired {self.confidence:.0%} CI "
                   f"[{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}], fixed {self.fixed} / broken "
                   f"{self.broken}, McNemar p = {self.mcnemar_p:.2g})")
        unmeasured = ("each run has one training seed, so seed noise was not measured: this shows neither that one "
                      "config is better nor that the two are equivalent")
        if not self.significant:
            return f"{numbers}: not significant between these two adapters; {unmeasured}."
        return f"{numbers}: the two adapters differ on these rows beyond row sampling, but {unmeasured}."

    def _seed_verdict(self, name_a: str, name_b: str) -> str:
        seeds = self.seeds
        numbers = (f"Averaged over training seeds, `{name_b}` ({seeds.seeds_b} seed{'s' * (seeds.seeds_b > 1)}, "
                   f"{100 * seeds.mean_b:.1f}%) is {_relation(seeds.delta)} `{name_a}` "
                   f"({seeds.seeds_a} seed{'s' * (seeds.seeds_a > 1)}, {100 * seeds.mean_a:.1f}%) on "
                   f"`{self.set_name}` ({self.confidence:.0%} CI over seeds and rows "
                   f"[{100 * seeds.ci_low:+.1f}, {100 * seeds.ci_high:+.1f}])")
        verdict = self.margin_verdict
        if verdict is not None:
            return f"{numbers}: {sentence(verdict, seeds.ci_low, seeds.ci_high, self.margin, name_a, name_b)}."
        lone = next(name for name, count in ((name_a, seeds.seeds_a), (name_b, seeds.seeds_b)) if count == 1)
        caveat = f"`{lone}` has one seed, so its own seed noise is not in this CI"
        if not seeds.beyond_noise:
            return (f"{numbers}: within the noise measured, and no margin verdict: {caveat} (add its "
                    "train.extra_seeds).")
        better = name_b if seeds.delta > 0 else name_a
        return f"{numbers}: the difference exceeds the seed noise, so `{better}` is better here; {caveat}."


def align(set_name: str, rows_a: list[dict], rows_b: list[dict], name_a: str = "A", name_b: str = "B"
          ) -> list[tuple[dict, dict]]:
    """Rows of both runs paired by id, in A's order; the runs must have scored exactly the same rows."""
    by_id_a = index_predictions(rows_a, f"eval set '{set_name}' of {name_a}")  # ids present and unique
    by_id_b = index_predictions(rows_b, f"eval set '{set_name}' of {name_b}")
    only_a = next((row["id"] for row in rows_a if row["id"] not in by_id_b), None)
    only_b = next((row["id"] for row in rows_b if row["id"] not in by_id_a), None)
    if only_a is not None or only_b is not None:
        first = f"id {only_a!r} only in {name_a}" if only_a is not None else f"id {only_b!r} only in {name_b}"
        raise InputError(f"eval set '{set_name}': {name_a} and {name_b} scored different rows ({len(rows_a)} vs "
                         f"{len(rows_b)}); first mismatch: {first}. Compare runs with the same eval_sets.{set_name}.")
    pairs = [(row, by_id_b[row["id"]]) for row in rows_a]
    for a, b in pairs:
        if a["gold"] != b["gold"]:
            raise InputError(f"eval set '{set_name}': id {a['id']!r} has gold {a['gold']!r} in {name_a} but "
                             f"{b['gold']!r} in {name_b}.")
    return pairs


def seed_difference(set_name: str, run_a: dict[int, list[dict]], run_b: dict[int, list[dict]], cfg: Config,
                    name_a: str, name_b: str) -> SeedDifference:
    """Every seed of both runs, rows in A's first seed's order (each replicate checked to hold the same rows)."""
    rows_a, rows_b = _aligned_seeds(set_name, run_a, run_b, name_a, name_b)
    a = correctness_matrix(rows_a, f"eval set '{set_name}' of {name_a}")
    b = correctness_matrix(rows_b, f"eval set '{set_name}' of {name_b}")
    low, high = seed_row_ci(a, b, cfg.report.confidence)
    return SeedDifference(seeds_a=len(a), seeds_b=len(b), mean_a=float(a.mean()), mean_b=float(b.mean()),
                          ci_low=low, ci_high=high, noise=seed_row_noise(a, b))


def _aligned_seeds(set_name: str, run_a: dict[int, list[dict]], run_b: dict[int, list[dict]], name_a: str,
                   name_b: str) -> tuple[list[list[dict]], list[list[dict]]]:
    """Every seed's rows of both runs in A's first seed's order, each replicate checked to hold the same rows."""
    order = next(iter(run_a.values()))
    aligned = lambda run, name: [[b for _, b in align(set_name, order, rows, name_a, f"{name} seed {seed}")]
                                 for seed, rows in run.items()]
    return aligned(run_a, name_a), aligned(run_b, name_b)


def label_shifts(run_a: Run, run_b: Run, cfg: Config, name_a: str = "A", name_b: str = "B") -> list[dict]:
    """Per evaluation set and label, the share of predictions with that label, mean over each run's seeds, and the
    seeds-and-rows CI of B - A: whether a knob moved the adapters' label prior beyond the seed noise, which
    accuracy alone can hide. The CIs are Bonferroni-widened over every set and label tested."""
    tests = len(run_a.replicates) * len(cfg.data.labels)
    confidence = 1 - (1 - cfg.report.confidence) / tests
    shifts = []
    for set_name, seeds_a in run_a.replicates.items():
        rows_a, rows_b = _aligned_seeds(set_name, seeds_a, run_b.replicates[set_name], name_a, name_b)
        for label in cfg.data.labels:
            a = prediction_matrix(rows_a, label, f"eval set '{set_name}' of {name_a}")
            b = prediction_matrix(rows_b, label, f"eval set '{set_name}' of {name_b}")
            low, high = seed_row_ci(a, b, confidence)
            shifts.append({"set": set_name, "label": label, "share_a": round(float(a.mean()), 4),
                           "share_b": round(float(b.mean()), 4), "ci": [low, high], "confidence": round(confidence, 4),
                           "beyond_noise": low > 0 or high < 0})
    return shifts


def run_findings(pairs: list[tuple[dict, dict]], slice_rows: list[dict], cfg: Config, origin: str) -> list[str]:
    """Slices over-represented among the rows B fixed, broke or both got wrong (the explanations' tests)."""
    members = slice_members(pairs, attach_features(pairs, slice_rows, origin))
    categories = [category(a["correct"], b["correct"]) for a, b in pairs]
    return findings(over_representation(categories, members, cfg.slices.min_rows), cfg, RUN_WORDS)


def difference(set_name: str, pairs: list[tuple[dict, dict]], cfg: Config, seeds: SeedDifference | None = None,
               found: list[str] | None = None) -> RunDifference:
    """B against A on the paired rows: the whole set as one group of ``stats.group_table``, with its paired CI."""
    whole = group_table(*correctness(pairs), {set_name: range(len(pairs))}, cfg.report, paired_ci=True)[0]
    return RunDifference(set_name=set_name, rows=len(pairs), accuracy_a=whole["base_accuracy"],
                         accuracy_b=whole["adapter_accuracy"], ci_low=whole["delta_ci"][0], ci_high=whole["delta_ci"][1],
                         fixed=whole["corrected"], broken=whole["regressed"], mcnemar_p=whole["p_value"],
                         confidence=cfg.report.confidence, seeds=seeds, findings=found)


def dtype_caveat(run_a: Run, run_b: Run, set_name: str, name_a: str, name_b: str) -> str | None:
    """A sentence when the runs trained or evaluated ``set_name`` in different compute dtypes (``auto`` resolves
    per machine): the paired test then measures the dtype as well as the change under test. None when they agree
    or a run does not record its dtype."""
    differing = [f"{verb} in {run_a.dtypes[key]} (`{name_a}`) and {run_b.dtypes[key]} (`{name_b}`)"
                 for key, verb in ((FINE_TUNE, "trained"), (set_name, "evaluated"))
                 if run_a.dtypes.get(key) and run_b.dtypes.get(key) and run_a.dtypes[key] != run_b.dtypes[key]]
    if not differing:
        return None
    return (f"Caveat: the adapters were {' and '.join(differing)}, so this difference also measures the compute "
            "dtype, not only the change under test (`auto` resolves per machine; pin `quant.compute_dtype` and "
            "`eval.compute_dtype` to compare the change alone).")


def compare_runs(run_a: Run, run_b: Run, cfg: Config, name_a: str = "A", name_b: str = "B",
                 seed_sd: dict[str, float] | None = None) -> list[RunDifference]:
    """Per evaluation set (A's order), B's adapter against A's; every set must exist in both runs. The slice
    features are B's (the rows are the same). ``seed_sd`` (per set, the seed study's, ``seed_study_sd``) plans a
    comparison in which neither run measured its seed noise."""
    for missing_in, present, other in ((name_b, run_a, run_b), (name_a, run_b, run_a)):
        lone = [name for name in present.replicates if name not in other.replicates]
        if lone:
            raise InputError(f"eval set '{lone[0]}' exists only in one run (not in {missing_in}); compare runs "
                             "with the same eval_sets.")
    out = []
    for name, seeds_a in run_a.replicates.items():
        seeds_b = run_b.replicates[name]
        pairs = align(name, next(iter(seeds_a.values())), next(iter(seeds_b.values())), name_a, name_b)
        seeds = seed_difference(name, seeds_a, seeds_b, cfg, name_a, name_b) \
            if len(seeds_a) > 1 or len(seeds_b) > 1 else None
        found = run_findings(pairs, run_b.slices[name], cfg, f"{name_b}: slices of {name}") \
            if name in run_b.slices else None
        noise = seeds.noise if seeds else seed_row_noise(*correctness(pairs))
        fallback = (seed_sd or {}).get(name)
        margin = cfg.report.equivalence_margin / 100
        out.append(replace(difference(name, pairs, cfg, seeds, found), margin=margin,
                           plan=plan(noise, margin, cfg.report.confidence,
                                     None if fallback is None else fallback**2),
                           dtype_caveat=dtype_caveat(run_a, run_b, name, name_a, name_b)))
    return out


def read_text_at(path: Path, repo: str, rev: str | None) -> str | None:
    """A file of run ``rev`` (a git revision or DVC experiment name; None: the workspace) from git, the DVC cache or
    a remote; None where the run has no such file. An unknown revision is an error that names it."""
    import dvc.api
    from dvc.exceptions import PathMissingError
    from dvc.scm import RevError
    from scmrepo.exceptions import RevError as GitRevError

    try:
        return dvc.api.read(str(path), repo=repo, rev=rev, encoding="utf-8")
    except (FileNotFoundError, PathMissingError):
        return None
    except (RevError, GitRevError):
        raise InputError(f"unknown revision {rev!r}: give a git commit, branch or tag, a DVC experiment name "
                         "(`dvc exp list`), or 'workspace'") from None


def read_jsonl_at(path: Path, repo: str, rev: str | None) -> list[dict]:
    """A JSONL output of run ``rev``; a clear error when neither git, the DVC cache nor a remote has it."""
    text = read_text_at(path, repo, rev)
    if text is None:
        raise InputError(f"run {rev or 'workspace'!r}: {path} is in neither git, its DVC cache nor a remote; fetch "
                         f"it (`dvc pull`, `dvc exp pull REMOTE EXP`) or reproduce that run (`dvc repro`)")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def params_at(repo: str, rev: str | None) -> dict:
    """Run ``rev``'s params.yaml, read as `dvc exp run -S` writes it (YAML 1.2), in this version's keys
    (``nli_legacy.upgrade``); an error when it has none with eval_sets."""
    from ruamel.yaml import YAML

    params = YAML(typ="safe", pure=True).load(read_text_at(Path("params.yaml"), repo, rev) or "")
    if not params or "eval_sets" not in params:
        raise InputError(f"run {rev or 'workspace'!r} has no params.yaml with eval_sets")
    return upgrade(params)


def _recorded_dtype(path: Path, repo: str, rev: str | None) -> str | None:
    """The ``compute_dtype`` a metrics file of run ``rev`` records; None for a run without the file or the field."""
    text = read_text_at(path, repo, rev)
    return json.loads(text).get("compute_dtype") if text is not None else None


def read_run(rev: str | None, repo: str = ".") -> Run:
    """Every evaluation set's adapter predictions at ``rev`` (a git revision or DVC experiment name; None: the
    workspace), each replicate's too, the slice features where the run has them and the compute dtypes its metrics
    record, read through ``dvc.api`` from git, the DVC cache or remote, without a checkout. The seeds and sets are
    the run's own params'; a key it leaves out takes this version's default."""
    params = params_at(repo, rev)
    train = params.get("train") or {}
    extra = train.get("extra_seeds") or []
    replicates, slices = {}, {}
    dtypes = {FINE_TUNE: _recorded_dtype(paths.FINETUNE_METRICS, repo, rev)}
    for set_name in params["eval_sets"]:
        replicates[set_name] = {train.get("seed", DEFAULTS.train.seed):
                                read_jsonl_at(paths.predictions(set_name, "adapter"), repo, rev)}
        for seed in extra:
            replicates[set_name][seed] = read_jsonl_at(paths.replicate_predictions(set_name, seed), repo, rev)
        try:
            slices[set_name] = read_jsonl_at(paths.slice_rows(set_name), repo, rev)
        except InputError:   # a run from before the slices stage
            pass
        dtypes[set_name] = _recorded_dtype(paths.eval_metrics(set_name, "adapter"), repo, rev)
    return Run(replicates=replicates, slices=slices, dtypes={key: dtype for key, dtype in dtypes.items() if dtype})


def report_settings(params_a: dict, name_a: str, confidence: float | None = None, margin: float | None = None,
                    base: Config = DEFAULTS) -> tuple[Config, str]:
    """``base`` with the report settings of the reference run's params (``params_a``), then the command line's; and
    a line saying where each came from. Keys this version does not know are left out (an older run's)."""
    known = {f.name for f in fields(ReportConfig)}
    raw = {key: value for key, value in (params_a.get("report") or {}).items() if key in known}
    overrides = {key: value for key, value in (("confidence", confidence), ("equivalence_margin", margin))
                 if value is not None}
    try:
        report = parse_config({"report": {**raw, **overrides}}).report
    except ConfigError as exc:
        raise InputError(f"run {name_a!r}: {exc} (override it with --confidence or --margin)") from None
    flags = " and ".join("--" + key.split("_")[-1] for key in overrides)
    source = f"`{name_a}`'s params.yaml" + (f", {flags} from the command line" if overrides else "")
    line = (f"Report settings: {report.confidence:.0%} confidence, equivalence margin ±{report.equivalence_margin:g} "
            f"points ({source}).")
    return replace(base, report=report), line


def seed_seconds(set_names: list[str], root: Path = Path(".")) -> float | None:
    """What one more training seed costs on this machine: the fine-tune's seconds plus each set's adapter
    evaluation, as the workspace's metrics record them; None where they are missing."""
    files = [paths.FINETUNE_METRICS, *(paths.eval_metrics(name, "adapter") for name in set_names)]
    if not all((root / path).is_file() for path in files):
        return None
    return sum(float(json.loads((root / path).read_text(encoding="utf-8")).get("seconds", 0)) for path in files)


def _default_study(study_path: Path) -> dict[str, dict]:
    """Per evaluation set, what the committed seed study measured for the default config (empty without it)."""
    if not study_path.is_file():
        return {}
    default = json.loads(study_path.read_text(encoding="utf-8"))["configs"].get("default")
    return (default or {}).get("sets", {})


def seed_study_sd(study_path: Path = SEED_STUDY) -> dict[str, float]:
    """Per evaluation set, the default config's accuracy sd across seeds in the committed study."""
    return {name: measured["adapter"]["accuracy_sd"] for name, measured in _default_study(study_path).items()}


def seed_reference(study_path: Path = SEED_STUDY) -> dict[str, str]:
    """Per evaluation set, what the committed seed study measured for the default config, as a sentence for
    single-seed comparisons (none without the study)."""
    sentences = {}
    for name, measured in _default_study(study_path).items():
        spread = measured["adapter"]
        sentences[name] = (f"For reference, measured for the default config and not for these runs: across "
                           f"{len(measured['seeds'])} training seeds the adapter's accuracy on `{name}` had sd "
                           f"{100 * spread['accuracy_sd']:.1f} points ({100 * spread['accuracy_min']:.1f}% to "
                           f"{100 * spread['accuracy_max']:.1f}%; {study_path}).")
    return sentences


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_table(differences: list[RunDifference], per_seed_seconds: float | None = None) -> str:
    """Per set: the seeds as run, the CI's half-width, the minimum detectable difference at the plan's power, and
    the seeds per side that would make "equivalent" that likely under no difference, with the fine-tunes to add and
    their time on this machine (``per_seed_seconds``: one fine-tune and its evaluations)."""
    rows = []
    for d in differences:
        p = d.plan
        if p is None:
            rows.append([f"`{d.set_name}`", "", "", "", "no seed noise measured or in the seed study", "", ""])
            continue
        needed, extra = p.seeds_per_side, p.extra_fine_tunes()
        borrowed = " (borrowed)" if min(p.noise.seeds) < 2 else ""
        rows.append([f"`{d.set_name}`", f"{p.noise.seeds[0]} / {p.noise.seeds[1]}{borrowed}",
                     f"±{100 * p.noise.half_width(p.confidence):.1f}", f"{100 * p.mdd:.1f}",
                     f"more than {MAX_SEEDS}" if needed is None else needed,
                     "" if extra is None else extra,
                     "" if extra is None or per_seed_seconds is None else _hours(extra * per_seed_seconds)])
    first = next((d.plan for d in differences if d.plan), None)
    power = f"{first.power:.0%}" if first else "80%"
    return tabulate(rows, headers=["set", "seeds A / B", "CI half-width, points",
                                   f"detectable at {power} power, points",
                                   f"seeds a side for ±{100 * differences[0].margin:g}", "fine-tunes to add",
                                   "time here"], tablefmt="github")


def render(differences: list[RunDifference], name_a: str, name_b: str, reference: dict[str, str] | None = None,
           settings: str | None = None, show_plan: bool = False, per_seed_seconds: float | None = None) -> str:
    """The comparison as Markdown; ``reference`` (``seed_reference``) is quoted under single-seed verdicts. The plan
    table comes with ``show_plan``, and otherwise for the sets the margin could not settle (inconclusive, or no
    margin verdict)."""
    rows = [[f"`{d.set_name}`", d.rows, f"{100 * d.accuracy_a:.1f}%", f"{100 * d.accuracy_b:.1f}%",
             f"{100 * d.delta:+.1f} [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]", d.fixed, d.broken,
             f"{d.mcnemar_p:.2g}",
             f"{d.seeds.seeds_a} / {d.seeds.seeds_b}: {100 * d.seeds.delta:+.1f} [{100 * d.seeds.ci_low:+.1f}, "
             f"{100 * d.seeds.ci_high:+.1f}]" if d.seeds else "not measured (one seed each)",
             d.margin_verdict or "none (seed noise not measured)"] for d in differences]
    table = tabulate(rows, headers=["set", "rows", f"`{name_a}`", f"`{name_b}`", "B - A, points [paired CI]",
                                    "fixed by B", "broken by B", "McNemar p",
                                    "seeds A / B: mean B - A [CI over seeds and rows]", "margin verdict"],
                     tablefmt="github")
    parts = [f"## `{name_b}` against `{name_a}` (adapter vs adapter, same rows)", "",
             *([settings, ""] if settings else []),
             "Accuracies, fixed/broken and McNemar: each run's train.seed fine-tune. The last two columns average "
             "every training seed of each run.", "", table, ""]
    for d in differences:
        parts.append(f"- {d.verdict(name_a, name_b)}")
        if d.seeds is None and d.set_name in (reference or {}):
            parts.append(f"  {reference[d.set_name]}")
        if d.dtype_caveat:
            parts.append(f"  {d.dtype_caveat}")
    parts.append("")
    unsettled = [d for d in differences if show_plan or d.margin_verdict in (None, INCONCLUSIVE)]
    if unsettled:
        parts += ["What the study could see, and what would settle the margin (docs/seeds.md#planning-seeds): the "
                  "smallest true difference its CI would exclude 0 for, 4 times in 5, and the seeds a side that "
                  "would make \"equivalent\" that likely if there were no difference.", "",
                  plan_table(unsettled, per_seed_seconds), ""]
    for d in differences:
        if d.findings:
            unmeasured = d.seeds is None or min(d.seeds.seeds_a, d.seeds.seeds_b) < 2
            parts += [f"Slices over-represented among the rows of `{d.set_name}` that B fixed or broke (Fisher exact, "
                      "Benjamini-Hochberg)"
                      + (": these compare two fine-tunes, not two configs. Seed noise was not measured on both "
                         "sides, and two seeds of one config produce such findings too." if unmeasured else ":"),
                      "", *(f"- {sentence}" for sentence in d.findings), ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the reference run: a git revision, branch or DVC experiment name")
    parser.add_argument("b", help="the run to judge against it ('workspace' for the working tree)")
    parser.add_argument("--plan", action="store_true",
                        help="per set, the smallest detectable difference and the seeds that would settle the margin")
    parser.add_argument("--margin", type=float, help="equivalence margin in accuracy points (default: A's "
                                                      "report.equivalence_margin)")
    parser.add_argument("--confidence", type=float, help="confidence level (default: A's report.confidence)")
    parser.add_argument("--out", help="write the Markdown here as well as to stdout")
    args = parser.parse_args()
    try:
        cfg, settings = report_settings(params_at(".", args.a), args.a, args.confidence, args.margin)
        run_b = read_run(None if args.b == "workspace" else args.b)
        differences = compare_runs(read_run(args.a), run_b, cfg, args.a, args.b, seed_study_sd())
        markdown = render(differences, args.a, args.b, seed_reference(), settings, args.plan,
                          seed_seconds(list(run_b.replicates)))
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.out:
        atomic.write_text(args.out, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
