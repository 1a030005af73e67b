"""Stage compare: reports/comparison.md and metrics/compare.json from both prediction files."""

from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.compare import run_compare
    from qlora_diff.report import summary_paragraph

    result = run_compare(cfg, Path("reports/predictions/base.jsonl"), Path("reports/predictions/adapter.jsonl"),
                         Path("metrics"), Path("reports/comparison.md"), Path("metrics/compare.json"),
                         Path("reports/plots/transitions.json"))
    print(summary_paragraph(result))


if __name__ == "__main__":
    run_stage(main, __doc__)
