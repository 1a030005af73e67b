"""The numbers in the README and the docs pages come from the files: generated blocks are current, quoted
transcripts match metrics/, and the README stays short with every docs page in its index."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO, seed_study_block

from qlora_diff.analysis.runs import SEED_STUDY
from qlora_diff.core import paths
from qlora_diff.tools.readme import BLOCK, RENDERERS, ROW_KEYS, moved_since_study, pages, render_readme, seed_study

README = (REPO / "README.md").read_text(encoding="utf-8")
EXPERIMENTS = (REPO / "docs" / "experiments.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", [str(p.relative_to(REPO)) for p in pages(REPO)])
def test_every_generated_block_is_current(page):
    text = (REPO / page).read_text(encoding="utf-8")
    assert render_readme(text, REPO) == text, "run `python -m qlora_diff.tools.readme` and commit the pages"


def test_every_renderer_has_its_block_somewhere():
    """A renderer with no block is dead code; a block in two places would be two copies of one table."""
    names = [m["name"] for page in pages(REPO) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]
    assert sorted(names) == sorted(RENDERERS)
    assert "results" in [m["name"] for m in BLOCK.finditer(README)]


def test_the_readme_and_the_benchmarks_page_are_short_and_the_readme_indexes_every_docs_page():
    assert len(README.splitlines()) <= 250
    assert len((REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8").splitlines()) <= 250
    hardware = README.split("\n## Hardware\n", 1)[1].split("\n## ", 1)[0]
    assert 0 < len([line for line in hardware.splitlines() if line.strip()]) <= 5
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", README))
    assert linked == {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}


def test_every_relative_link_in_the_pages_resolves():
    for page in pages(REPO):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path) if path else page
            assert resolved.exists(), f"{page.name}: link to {target}"
            if anchor and resolved.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", resolved.read_text(encoding="utf-8"), re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
                assert anchor in slugs, f"{page.name}: no heading for #{anchor} in {resolved.name}"


def test_a_stale_number_is_caught(tmp_path):
    stale = README.replace("<!-- generated:results -->\n", "<!-- generated:results -->\n| accuracy | 99.9% |\n", 1)
    assert render_readme(stale, REPO) != stale


def study_of_the_committed_run(tmp_path) -> dict:
    """The committed seed study in ``tmp_path``, beside the committed metrics, its train.seed replicate made equal to
    them (as after `seed_study.py run` on this commit)."""
    study = json.loads((REPO / SEED_STUDY).read_text(encoding="utf-8"))
    for name, s in study["configs"]["default"]["sets"].items():
        for model in ("base", "adapter"):
            target = tmp_path / paths.eval_metrics(name, model)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((REPO / paths.eval_metrics(name, model)).read_text(encoding="utf-8"), encoding="utf-8")
        s["base_accuracy"] = json.loads((REPO / paths.eval_metrics(name, "base")).read_text())["accuracy"]
        s["adapter_accuracy_by_seed"][str(s["seeds"][0])] = json.loads(
            (REPO / paths.eval_metrics(name, "adapter")).read_text())["accuracy"]
    return study


def test_the_seed_study_block_ranks_the_committed_run_among_its_seeds(tmp_path):
    """The committed run's headline is one seed's: the block says where it falls among the study's seeds."""
    study = study_of_the_committed_run(tmp_path)
    snli = study["configs"]["default"]["sets"]["snli"]
    primary = snli["adapter_accuracy_by_seed"][str(snli["seeds"][0])]
    for rank, seed in enumerate(snli["seeds"][1:]):
        snli["adapter_accuracy_by_seed"][str(seed)] = primary + 0.01 * (rank + 1)
    block = seed_study_block(tmp_path, study)
    assert f"`snli`: the committed run (train.seed {snli['seeds'][0]}, {100 * primary:.1f}%) ranks 5 of 5 seeds" in block
    assert "`challenge`: the committed run" in block and "`r8`" in block and "Stale" not in block


def test_a_study_of_another_pipeline_is_labelled_stale_and_says_nothing_of_the_committed_run(tmp_path):
    """When the committed accuracy is not the study's train.seed replicate, the block must not call any seed "the
    committed run" and says the study is stale; the README's block is checked against the committed files."""
    study = study_of_the_committed_run(tmp_path)
    study["configs"]["default"]["sets"]["snli"]["adapter_accuracy_by_seed"]["42"] += 0.001
    block = seed_study_block(tmp_path, study)
    assert "**Stale: this study is of an earlier pipeline.** The committed run's accuracy on `snli` is not" in block
    assert "the committed run (train.seed" not in block
    committed = json.loads((REPO / SEED_STUDY).read_text(encoding="utf-8"))["configs"]["default"]
    assert ("Stale: this study" in seed_study(REPO)) == bool(moved_since_study(REPO, committed))


def test_unknown_block_is_an_error():
    with pytest.raises(KeyError, match="generated:nope"):
        render_readme("<!-- generated:nope -->\nx\n<!-- /generated:nope -->", REPO)
    assert "nope" not in RENDERERS


def _metric(path: str, dotted: str):
    value = json.loads((REPO / path).read_text())
    for key in dotted.split("."):
        value = value[key]
    return value


def test_metrics_diff_transcript_matches_the_committed_metrics():
    """`dvc metrics diff main <exp>` quoted in docs/experiments.md: its `main` column is today's committed metrics."""
    start = EXPERIMENTS.index("$ dvc metrics diff main ")
    block = EXPERIMENTS[start:EXPERIMENTS.index("```", start)]
    rows = re.findall(r"^(metrics/\S+\.json)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", block, re.M)
    assert len(rows) >= 10
    for path, key, main, _, _ in rows:
        assert float(main) == pytest.approx(_metric(path, key), abs=1e-4), f"{path} {key}"


def test_several_machines_share_one_benchmark_table_with_a_column_per_machine(tmp_path):
    """A new machine adds a column, not a second table; a row only one machine has keeps its place in that
    machine's order and leaves the other's cell blank; a note every run has is printed once."""
    def run(cpu: str, results: list[dict], notes: list[str]) -> dict:
        return {"machine": {"cpu": cpu, "cpu_flags": [], "gpu": None, "threads": 2}, "commit": cpu.lower(),
                "results": results, "notes": notes}

    step = lambda name, seconds: {"run": "dvc repro", "step": name, "seconds": seconds}   # noqa: E731
    runs = [run("A-CPU", [step("prepare", 8), step("finetune", 650), step("report", 4)], ["shared", "only A"]),
            run("B-CPU", [step("prepare", 7), step("evaluate", 90), step("finetune", 600), step("report", 3)],
                ["shared"])]
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "repro_fresh_clone.json").write_text(json.dumps({"runs": runs}))
    lines = RENDERERS["repro_fresh_clone"](tmp_path).splitlines()
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    assert table[0] == ["run", "step", "seconds (A)", "seconds (B)"]
    assert [row[1:] for row in table[2:]] == [["prepare", "8", "7"], ["evaluate", "", "90"],
                                              ["finetune", "650", "600"], ["report", "4", "3"]]
    assert lines[0].startswith("**A: A-CPU") and lines[1].startswith("**B: B-CPU")
    assert [line for line in lines if line.startswith("- ")] == ["- shared", "- A: only A"]


def test_the_row_keys_of_each_shared_benchmark_table_name_one_row_per_machine():
    """A pivoted table keys rows by ``ROW_KEYS``: a key column missing from the committed results, or keys that two
    rows of one run share, would merge rows of different meaning into one."""
    for name, keys in ROW_KEYS.items():
        runs = json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text(encoding="utf-8"))["runs"]
        for run in runs:
            named = [tuple(row[key] for key in keys) for row in run["results"]]
            assert len(set(named)) == len(named), f"{name}: rows of commit {run['commit']} share {keys}"
