"""Build the pull-request comment. First the question a reviewer asks, is this branch better: the branch's adapter
against the base branch's on the same rows, per evaluation set, with a paired test (``qlora_diff.analysis.runs``).
Then `dvc metrics diff <base> --md`, every `dvc plots diff <base>` plot as a PNG, and the generated report.

The plots are DVC's own specs (base revision vs the workspace, or ``--head``) drawn by vl-convert: no browser, no
network. The workflow posts the comment with CML (`cml comment update --publish`), which uploads the images the
Markdown references; GitHub's API cannot attach images to a comment.

Run: python -m qlora_diff.tools.pr_report --base origin/main --out pr-comment.md
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

from qlora_diff.analysis.runs import (
    SEED_STUDY,
    compare_runs,
    params_at,
    read_run,
    render,
    report_settings,
    seed_reference,
    seed_seconds,
    seed_study_sd,
)
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import Config, load_config
from qlora_diff.core.errors import InputError
from qlora_diff.render import charts


def comparison_markdown(base: str, head: str | None, cfg: Config, repo: str = ".") -> str:
    """The comment's lead: the head's adapter (the workspace when ``head`` is None) against the base revision's,
    paired by row, with the base run's report settings (``cfg``'s otherwise); the plan of the sets the margin could not
settle follows. Runs that cannot be paired say why instead: the branch changed an evaluation set, or a run's
    predictions are in neither the DVC cache nor its remote (`dvc push` them from that branch)."""
    from dvc.exceptions import DvcException

    name_head = head or "workspace"
    try:
        cfg, settings = report_settings(params_at(repo, base), base, base=cfg)
        run_head = read_run(head, repo)
        differences = compare_runs(read_run(base, repo), run_head, cfg, base, name_head,
                                   seed_study_sd(Path(repo) / SEED_STUDY))
    except (InputError, DvcException, FileNotFoundError) as exc:
        return f"## `{name_head}` against `{base}`\n\nThe two runs cannot be compared row by row: {exc}\n"
    return render(differences, base, name_head, seed_reference(Path(repo) / SEED_STUDY), settings,
                  per_seed_seconds=seed_seconds(list(run_head.replicates), Path(repo)))


def metrics_diff_markdown(base: str, head: str | None = None) -> str:
    done = subprocess.run(["dvc", "metrics", "diff", base, *([head] if head else []), "--md", "--precision", "4"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip() or "_No metric changed against the base branch._"


def plot_specs(base: str, head: str | None = None) -> dict[str, dict]:
    """Every plot `dvc plots diff` declares, as a filled Vega-Lite spec with both revisions' data, in DVC's order."""
    done = subprocess.run(["dvc", "plots", "diff", base, *([head] if head else []), "--json"], capture_output=True,
                          text=True, check=True)
    return {name: items[0]["content"] for name, items in json.loads(done.stdout)["data"].items()
            if items and items[0].get("type") == "vega"}


def image_name(plot: str) -> str:
    """A file name for a plot: 'reports/plots/snli/slices.json' -> 'snli-slices.png', 'Training loss' ->
    'training-loss.png'."""
    stem = plot.removeprefix(f"{paths.PLOTS}/").removesuffix(".json")
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") + ".png"


def write_plot_images(specs: dict[str, dict], directory: Path) -> list[tuple[str, Path]]:
    """Draw each spec as a PNG in ``directory``; (title, path) per plot."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for plot, spec in specs.items():
        path = directory / image_name(plot)
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(charts.to_png(spec))
        title = spec.get("title")
        written.append((title.get("text", plot) if isinstance(title, dict) else title or plot, path))
    return written


def build_comment(base: str, report: Path, images: list[tuple[str, Path]], comment_dir: Path,
                  head: str | None = None, comparison: str = "") -> str:
    """The comment's Markdown, led by ``comparison`` (see ``comparison_markdown``); image links are relative to
    ``comment_dir``, where the comment file is written."""
    against = f"`{base}`" + (f" vs `{head}`" if head else "")
    parts = [comparison.rstrip(), ""] if comparison else []
    parts += [f"## Metrics diff against {against} (raw deltas, untested)", "", metrics_diff_markdown(base, head), ""]
    if images:
        parts += [f"## Plots: {against} (the branch's colour is its revision)", ""]
        parts += [f"![{title}]({path.resolve().relative_to(comment_dir.resolve()).as_posix()})" for title, path in images]
        parts += ["", "The full row-by-row page, `reports/comparison.html`, is attached to this run as an artifact.", ""]
    if report.is_file():
        parts += ["<details><summary>Comparison report (reports/comparison.md)</summary>", "",
                  report.read_text(encoding="utf-8"), "</details>", ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="git revision to diff metrics and plots against")
    parser.add_argument("--head", default=None, help="revision to compare with the base (default: the workspace)")
    parser.add_argument("--report", default=paths.REPORT_MARKDOWN, type=Path)
    parser.add_argument("--out", default="pr-comment.md", type=Path)
    parser.add_argument("--images", default=Path("pr-plots"), type=Path,
                        help="folder for the plot images (linked relative to the comment file)")
    args = parser.parse_args()
    images = write_plot_images(plot_specs(args.base, args.head), args.images)
    comparison = comparison_markdown(args.base, args.head, load_config())
    atomic.write_text(args.out, build_comment(args.base, args.report, images, args.out.parent, args.head, comparison))
    print(f"wrote {args.out} and {len(images)} images in {args.images}")


if __name__ == "__main__":
    main()
