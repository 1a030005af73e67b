"""Keep the README's numbers equal to the files they come from.

Blocks between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` are rendered from ``metrics/`` and
``benchmarks/results/``; nothing in them is typed by hand. Run after ``dvc repro`` or a benchmark:

    python -m qlora_diff.readme            # rewrite the blocks
    python -m qlora_diff.readme --check    # exit 1 when a block is stale (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def _load(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text(encoding="utf-8"))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ci(m: dict) -> str:
    return f"[{100 * m['accuracy_ci_low']:.1f}, {100 * m['accuracy_ci_high']:.1f}]"


def results(root: Path) -> str:
    base, adapter = _load(root, "metrics/base.json"), _load(root, "metrics/adapter.json")
    tune, diff = _load(root, "metrics/finetune.json"), _load(root, "metrics/compare.json")
    table = [
        ["accuracy [95% Wilson CI]", f"{_pct(base['accuracy'])} {_ci(base)}", f"**{_pct(adapter['accuracy'])}** {_ci(adapter)}"],
        ["macro-F1", f"{base['macro_f1']:.3f}", f"{adapter['macro_f1']:.3f}"],
        ["chance / majority-class baseline", f"{_pct(base['chance_accuracy'])} / {_pct(base['majority_class_accuracy'])}", ""],
        ["trainable parameters", "", f"{tune['parameters_trainable']:,} of {tune['parameters_total']:,} "
                                     f"({tune['trainable_percent']:.2f}%), adapter {tune['adapter_size_mb']:.1f} MB"],
        ["seconds (2 CPU cores)", f"{base['seconds']:.0f} (eval)", f"{adapter['seconds']:.0f} (eval), fine-tune {tune['seconds']:.0f}"],
        ["peak process memory", f"{base['peak_memory_gb']:.1f} GB (eval)",
         f"{adapter['peak_memory_gb']:.1f} GB (eval), fine-tune {tune['peak_memory_gb']:.1f} GB"],
    ]
    bias = diff["label_bias"]
    counts = [[who] + [bias[who][label] for label in bias["gold"]] for who in ("gold", "base", "adapter")]
    return "\n".join([
        tabulate(table, headers=["", "base (zero-shot)", "adapter (QLoRA)"], tablefmt="github"), "",
        f"On {diff['examples']:,} rows, accuracy difference **{100 * diff['accuracy_delta']:+.1f} points** "
        f"({int(100 * diff['ci_confidence'])}% paired bootstrap CI {100 * diff['accuracy_delta_ci_low']:+.1f} to "
        f"{100 * diff['accuracy_delta_ci_high']:+.1f}); the adapter corrected {diff['corrected']} rows and regressed "
        f"{diff['regressed']} (exact McNemar p = {diff['mcnemar_p_value']:.2g}); {diff['still_wrong']} stay wrong. "
        f"Fine-tuning: {tune['steps']} steps, final loss {tune['final_loss']}.", "",
        "How often each label is the gold label and how often each model predicts it:", "",
        tabulate(counts, headers=["", *bias["gold"]], tablefmt="github"),
    ])


def benchmark(name: str) -> Callable[[Path], str]:
    def render(root: Path) -> str:
        data = _load(root, f"benchmarks/results/{name}.json")
        table = tabulate([list(r.values()) for r in data["results"]], headers=list(data["results"][0]),
                         tablefmt="github")
        machine = ", ".join(f"{k} {v}" for k, v in data["machine"].items())
        return "\n".join([table, "", f"Machine: {machine}.", "", *(f"- {note}" for note in data["notes"])])

    return render


RENDERERS: dict[str, Callable[[Path], str]] = {
    "results": results,
    **{name: benchmark(name) for name in ("eval_throughput", "train_throughput", "eval_numerics", "repro_fresh_clone")},
}


def render_readme(text: str, root: Path) -> str:
    """``text`` with every generated block re-rendered; an unknown block name is an error."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise KeyError(f"README block 'generated:{name}' has no renderer; known: {', '.join(RENDERERS)}")
        return f"{match.group(1)}{RENDERERS[name](root).rstrip()}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1)")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args()
    readme = args.root / "README.md"
    text = readme.read_text(encoding="utf-8")
    fresh = render_readme(text, args.root)
    if args.check:
        if fresh != text:
            sys.exit("README.md: generated blocks are stale; run `python -m qlora_diff.readme`.")
        print("README.md: generated blocks are current.")
    elif fresh != text:
        readme.write_text(fresh, encoding="utf-8")
        print("README.md: generated blocks rewritten.")


if __name__ == "__main__":
    main()
