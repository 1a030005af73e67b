"""Is run B's adapter better than run A's? A paired comparison of two runs (git revisions, branches or DVC
experiment names) on the rows both scored, read through DVC's API without checking anything out.

Per evaluation set: both accuracies, the difference with a paired-bootstrap CI, the rows B fixed and broke
relative to A, and the exact McNemar p. Each run holds one fine-tune (one training seed), so the verdict says
plainly that seed noise was not measured: a significant test shows that these two adapters differ on these rows,
not that one config beats the other.

Run: python -m qlora_diff.analysis.runs A B [--out runs.md]     (e.g. `python -m qlora_diff.analysis.runs main lora-r8`)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from tabulate import tabulate

from qlora_diff.analysis.compare import correctness, index_predictions
from qlora_diff.analysis.stats import group_table, significant
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import Config, load_config
from qlora_diff.core.errors import InputError


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

    @property
    def delta(self) -> float:
        return self.accuracy_b - self.accuracy_a

    @property
    def significant(self) -> bool:
        """The exact McNemar test at the report's level (1 - confidence)."""
        return significant(self.mcnemar_p, self.confidence)

    def verdict(self, name_a: str, name_b: str) -> str:
        """One sentence that claims no more than the test supports; seed noise is not measured with one seed."""
        direction = "above" if self.delta > 0 else "below" if self.delta < 0 else "level with"
        numbers = (f"`{name_b}` is {abs(100 * self.delta):.1f} points {direction} `{name_a}` on `{self.set_name}` "
                   f"({100 * self.accuracy_b:.1f}% vs {100 * self.accuracy_a:.1f}%, paired {self.confidence:.0%} CI "
                   f"[{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}], fixed {self.fixed} / broken "
                   f"{self.broken}, McNemar p = {self.mcnemar_p:.2g})")
        if not self.significant:
            return f"{numbers}: not significant; the two adapters are indistinguishable on these rows."
        return (f"{numbers}: the two adapters differ on these rows beyond row sampling, but each run has one training "
                "seed, so seed noise was not measured: this does not show that one config is better.")


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


def difference(set_name: str, pairs: list[tuple[dict, dict]], cfg: Config) -> RunDifference:
    """B against A on the paired rows: the whole set as one group of ``stats.group_table``, with its paired CI."""
    whole = group_table(*correctness(pairs), {set_name: range(len(pairs))}, cfg.report, paired_ci=True)[0]
    return RunDifference(set_name=set_name, rows=len(pairs), accuracy_a=whole["base_accuracy"],
                         accuracy_b=whole["adapter_accuracy"], ci_low=whole["delta_ci"][0], ci_high=whole["delta_ci"][1],
                         fixed=whole["corrected"], broken=whole["regressed"], mcnemar_p=whole["p_value"],
                         confidence=cfg.report.confidence)


def compare_runs(run_a: dict[str, list[dict]], run_b: dict[str, list[dict]], cfg: Config, name_a: str = "A",
                 name_b: str = "B") -> list[RunDifference]:
    """Per evaluation set (A's order), B's adapter against A's; every set must exist in both runs."""
    for missing_in, present, other in ((name_b, run_a, run_b), (name_a, run_b, run_a)):
        lone = [name for name in present if name not in other]
        if lone:
            raise InputError(f"eval set '{lone[0]}' exists only in one run (not in {missing_in}); compare runs "
                             "with the same eval_sets.")
    return [difference(name, align(name, run_a[name], run_b[name], name_a, name_b), cfg) for name in run_a]


def read_run(rev: str | None, repo: str = ".") -> dict[str, list[dict]]:
    """Every evaluation set's adapter predictions at ``rev`` (a git revision or DVC experiment name; None: the
    workspace), read through ``dvc.api`` from the DVC cache or remote, without a checkout."""
    import dvc.api
    from ruamel.yaml import YAML

    params = YAML(typ="safe", pure=True).load(dvc.api.read("params.yaml", repo=repo, rev=rev, encoding="utf-8"))
    runs = {}
    for set_name in params["eval_sets"]:
        text = dvc.api.read(str(paths.predictions(set_name, "adapter")), repo=repo, rev=rev, encoding="utf-8")
        runs[set_name] = [json.loads(line) for line in text.splitlines() if line.strip()]
    return runs


def render(differences: list[RunDifference], name_a: str, name_b: str) -> str:
    rows = [[f"`{d.set_name}`", d.rows, f"{100 * d.accuracy_a:.1f}%", f"{100 * d.accuracy_b:.1f}%",
             f"{100 * d.delta:+.1f} [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]", d.fixed, d.broken,
             f"{d.mcnemar_p:.2g}"] for d in differences]
    table = tabulate(rows, headers=["set", "rows", f"`{name_a}`", f"`{name_b}`", "B - A, points [paired CI]",
                                    "fixed by B", "broken by B", "McNemar p"], tablefmt="github")
    return "\n".join([f"## `{name_b}` against `{name_a}` (adapter vs adapter, same rows)", "", table, "",
                      *(f"- {d.verdict(name_a, name_b)}" for d in differences), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the reference run: a git revision, branch or DVC experiment name")
    parser.add_argument("b", help="the run to judge against it ('workspace' for the working tree)")
    parser.add_argument("--out", help="write the Markdown here as well as to stdout")
    args = parser.parse_args()
    cfg = load_config()
    markdown = render(compare_runs(read_run(args.a), read_run(None if args.b == "workspace" else args.b), cfg,
                                   args.a, args.b), args.a, args.b)
    if args.out:
        atomic.write_text(args.out, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
