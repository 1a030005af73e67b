"""reports/comparison.html: every evaluated row of every set in one self-contained page.

Inline CSS, JavaScript, data and SVG charts; the page fetches nothing, so it opens from disk offline and can be
attached to a pull request. Python computes everything (categories, probabilities, slice tags, charts via
vl-convert); the page's script only filters, sorts and pages the rows it is given.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from qlora_diff.analysis.calibration import label_probability
from qlora_diff.analysis.compare import Pair, category, gold_probability, join_predictions, predicted_label
from qlora_diff.analysis.explain import attach_features
from qlora_diff.analysis.slices import tags
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import Config
from qlora_diff.core.tasks import Task
from qlora_diff.render import charts
from qlora_diff.render.report import cross_set_table, headline, seed_summary, summary_paragraph

TEMPLATES = Path(__file__).parent / "templates"
# One row of the page's data, in this column order (the page script reads columns by name); the task's text
# fields come after "id".
COLUMNS = ("set", "id", "gold", "base", "adapter", "base_p", "adapter_p", "gold_p_base", "gold_p_adapter",
           "gold_p_change", "base_margin", "adapter_margin", "category", "seeds_right", "stability", "tags", "slices")


def columns(fields: tuple[str, ...]) -> list[str]:
    """The page's columns for rows with these text fields."""
    return [*COLUMNS[:2], *fields, *COLUMNS[2:]]


@dataclass(frozen=True)
class SetPage:
    """One evaluation set's part of the page: its metrics (``base``, ``adapter``, ``compare``, ``seeds``), rows and
    charts."""

    name: str
    metrics: dict
    rows: list[dict]
    charts: list[tuple[str, str]]   # (title, SVG)


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def set_rows(name: str, pairs: list[Pair], features: dict[str, dict[str, str]], collapse: dict[str, str],
             stability: dict[str, dict], fields: tuple[str, ...]) -> list[dict]:
    """The page rows of one set, in the predictions file's order: both predictions with their probability, the
    gold label's probability before and after, both margins, the category, in how many training seeds the adapter
    is right and the row's stability label ('' with one seed: not measured), and the slice features."""
    rows = []
    for base, adapter in pairs:
        seeds = stability[base["id"]]
        gold_before, gold_after = gold_probability(base, collapse), gold_probability(adapter, collapse)
        rows.append({
            "set": name, "id": base["id"], **{field: base[field] for field in fields}, "gold": base["gold"],
            "base": predicted_label(base), "adapter": predicted_label(adapter),
            "base_p": _rounded(label_probability(base, base["prediction"], collapse)),
            "adapter_p": _rounded(label_probability(adapter, adapter["prediction"], collapse)),
            "gold_p_base": _rounded(gold_before), "gold_p_adapter": _rounded(gold_after),
            "gold_p_change": None if gold_before is None or gold_after is None else _rounded(gold_after - gold_before),
            "base_margin": base.get("margin"), "adapter_margin": adapter.get("margin"),
            "category": category(base["correct"], adapter["correct"]),
            "seeds_right": f"{seeds['right']}/{seeds['seeds']}", "stability": seeds["stability"] or "",
            "tags": tags(features[base["id"]]), "slices": features[base["id"]],
        })
    return rows


def set_charts(name: str, metrics: dict, slice_plot: list[dict], reliability_plot: list[dict],
               template_dir: Path = paths.PLOT_TEMPLATES) -> list[tuple[str, str]]:
    """Per-class recall and F1, accuracy per slice and the reliability diagram, drawn from the same DVC templates as
    `dvc plots show`, as SVG."""
    drawn = []
    for metric in ("recall", "f1"):
        rows = [{"class": label, "model": model, metric: values[metric]}
                for model in ("base", "adapter") for label, values in metrics[model]["per_class"].items()]
        drawn.append((f"{name}: per-class {metric}", charts.filled_spec(
            "grouped_bars", rows, metric, "class", f"{name}: per-class {metric}, base vs adapter", name, template_dir)))
    drawn.append((f"{name}: accuracy per slice", charts.filled_spec(
        "grouped_bars", slice_plot, "accuracy", "slice", f"{name}: accuracy per slice, base vs adapter", name,
        template_dir)))
    if reliability_plot:
        drawn.append((f"{name}: reliability", charts.filled_spec(
            "reliability", reliability_plot, "confidence", "accuracy", f"{name}: reliability", name, template_dir)))
    return [(title, charts.to_svg(spec)) for title, spec in drawn]


def page_inputs(name: str) -> list[Path]:
    """The files one set's part of the page is built from (besides its metrics), as the pipeline lays them out."""
    return [paths.predictions(name, "base"), paths.predictions(name, "adapter"), paths.slice_rows(name),
            paths.stability_rows(name), paths.compare_plot(name, "slices"), paths.compare_plot(name, "reliability")]


def read_set_page(cfg: Config, name: str, metrics: dict) -> SetPage:
    """One set's rows and charts from its predictions, slice features and plot data (see ``page_inputs``)."""
    base_path, adapter_path, slices_path, stability_path, slice_plot, reliability_plot = page_inputs(name)
    pairs = join_predictions(atomic.read_jsonl(base_path), atomic.read_jsonl(adapter_path), str(base_path),
                             str(adapter_path))
    features = attach_features(pairs, atomic.read_jsonl(slices_path), str(slices_path))
    return SetPage(name=name, metrics=metrics,
                   rows=set_rows(name, pairs, features, cfg.eval_sets[name].collapse(cfg.data.labels),
                                 {row["id"]: row for row in atomic.read_jsonl(stability_path)}, tuple(cfg.fields)),
                   charts=set_charts(name, metrics, json.loads(slice_plot.read_text()),
                                     json.loads(reliability_plot.read_text())))


def _code_spans(escaped: str) -> str:
    """Markdown code spans in already-escaped HTML as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _inline(text: str) -> str:
    """Escaped text with Markdown code spans as <code>."""
    return _code_spans(html.escape(text))


def _transition_matrix(page: SetPage) -> str:
    """Base prediction (rows) x adapter prediction (columns); each count is a button that filters the rows."""
    compare = page.metrics["compare"]
    labels = list(compare["label_bias"]["gold"])
    largest = max(compare["transitions"].values(), default=0) or 1

    def cell(before: str, after: str) -> str:
        count = compare["transitions"][f"{before}->{after}"]
        return (f'<td><button class="cell" data-set="{html.escape(page.name)}" data-base="{html.escape(before)}" '
                f'data-adapter="{html.escape(after)}" style="background: rgba(43, 108, 176, '
                f'{0.08 + 0.5 * count / largest:.2f})">{count}</button></td>')

    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = [f"<tr><th>{html.escape(before)}</th>{''.join(cell(before, after) for after in labels)}</tr>"
            for before in labels]
    return (f'<table class="matrix" id="matrix-{html.escape(page.name)}"><caption>base (rows) &rarr; adapter '
            f'(columns); click a count to see its rows</caption><tr><th></th>{head}</tr>{"".join(body)}</table>')


def _summary_html(sets: dict[str, dict], finetune: dict, pages: list[SetPage], task: Task) -> str:
    rows, headers = cross_set_table(sets, task)
    parts = [f"<p>{_inline(headline(sets))}</p>",
             _code_spans(tabulate(rows, headers=headers, tablefmt="html"))]   # tabulate escapes the cells
    if finetune:
        parts.append(f"<p>Fine-tune: {finetune.get('steps', 'n/a')} steps on {finetune.get('train_examples', 'n/a')} "
                     f"rows, final loss {finetune.get('final_loss', 'n/a')}.</p>")
    parts.append('<div id="sets">')
    for page in pages:
        parts.append(f'<section class="set"><h3>Evaluation set <code>{html.escape(page.name)}</code></h3>'
                     f"<p>{_inline(summary_paragraph(page.metrics['compare']))}</p>"
                     f"<p>{_inline(seed_summary(page.metrics['seeds']))}</p>{_transition_matrix(page)}</section>")
    parts.append("</div>")
    return "\n".join(parts)


def _charts_html(pages: list[SetPage]) -> str:
    return "\n".join(f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>{svg}</figure>'
                     for page in pages for title, svg in page.charts)


def page_data(pages: list[SetPage], fields: tuple[str, ...]) -> dict:
    """The rows as compact columns (names once, values per row); slice features as one list of names, each row
    holding its values in that order ('' where a set lacks the feature; ``gold`` is a column already)."""
    names = columns(fields)
    features: list[str] = []
    for page in pages:
        for row in page.rows:
            features += [name for name in row["slices"] if name not in features and name not in names]
    rows = [[row[column] for column in names[:-1]] + [[row["slices"].get(name, "") for name in features]]
            for page in pages for row in page.rows]
    return {"columns": names, "fields": list(fields), "features": features, "rows": rows}


def _script_json(payload: dict) -> str:
    """JSON safe inside <script>: no '</' can close the element early."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def render_page(sets: dict[str, dict], finetune: dict, pages: list[SetPage], cfg: Config) -> str:
    """The whole page: template with the CSS, script, summary, charts, the task's field headers and row data filled
    in."""
    template = (TEMPLATES / "comparison.html").read_text(encoding="utf-8")
    fields = tuple(cfg.fields)
    filled = {
        "<!--FIELD_HEADERS-->": "".join(f"<th>{html.escape(field)}</th>" for field in fields),
        "<!--SEARCH_HINT-->": html.escape(", ".join(fields) + " or id", quote=True),
        "<!--STYLE-->": (TEMPLATES / "comparison.css").read_text(encoding="utf-8"),
        "<!--SCRIPT-->": (TEMPLATES / "comparison.js").read_text(encoding="utf-8"),
        "<!--SUMMARY-->": _summary_html(sets, finetune, pages, cfg.task_spec),
        "<!--CHARTS-->": _charts_html(pages),
        "<!--DATA-->": _script_json(page_data(pages, fields)),
    }
    for marker, value in filled.items():
        template = template.replace(marker, value, 1)
    return template
