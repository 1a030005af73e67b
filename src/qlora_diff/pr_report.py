"""Build the pull-request comment: `dvc metrics diff <base> --md` followed by the generated comparison report.

Run: python -m qlora_diff.pr_report --base origin/main --out pr-comment.md
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from qlora_diff import atomic


def metrics_diff_markdown(base: str) -> str:
    done = subprocess.run(["dvc", "metrics", "diff", base, "--md", "--precision", "4"], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip() or "_No metric changed against the base branch._"


def build_comment(base: str, report: Path) -> str:
    parts = [f"## Metrics diff against `{base}`", "", metrics_diff_markdown(base), ""]
    if report.is_file():
        parts += ["<details><summary>Comparison report (reports/comparison.md)</summary>", "",
                  report.read_text(encoding="utf-8"), "</details>", ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="main", help="git revision to diff metrics against")
    parser.add_argument("--report", default="reports/comparison.md", type=Path)
    parser.add_argument("--out", default="pr-comment.md", type=Path)
    args = parser.parse_args()
    atomic.write_text(args.out, build_comment(args.base, args.report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
