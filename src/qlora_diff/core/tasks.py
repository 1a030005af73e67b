"""Tasks as data: which text fields a row has and which analyses the task adds (``params.yaml: task``).

A row is ``{id, <text fields>, label}``; ``prompt.template`` names the fields. The general analyses (length and
word-list slices, a bag-of-words baseline that marks artifact-easy rows, calibration, near-ties, seeds, run
comparisons) run for every task; a task adds to them with the facts below. ``text`` takes any fields; ``nli``
(core/nli.py) fixes its two and adds the overlap slices and the hypothesis-only baseline.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

# Keys a prepared row or a prediction record already uses: not allowed as text field names.
RESERVED_FIELDS = frozenset({"id", "label", "prompt", "phenomenon", "gold", "prediction", "correct", "margin"})


@dataclass(frozen=True)
class Task:
    """One task's facts. ``fields``: the fields the template must use (empty: any). ``slice_order``: the order of
    the per-field slice features (empty: the template's). ``overlap``: (context, claim) adds the share of the
    claim's content words found in the context. ``baseline_field``: the one field the bag-of-words baseline reads
    (empty: every field, one per line). ``row_noun``: what an artifact-easy row is called in sentences.
    ``card_title`` and ``card_tags``: the adapter's model card."""

    name: str
    fields: tuple[str, ...] = ()
    slice_order: tuple[str, ...] = ()
    overlap: tuple[str, str] | None = None
    baseline_field: str = ""
    baseline_name: str = "bag-of-words"
    baseline_blurb: str = "TF-IDF + logistic regression on the row's words alone"
    row_noun: str = "row"
    card_title: str = "text classification"
    card_tags: tuple[str, ...] = ("text-classification",)


TEXT = Task(name="text")


def template_fields(template: str) -> list[str]:
    """The fields a prompt template names, in order of first use (``{text}`` -> ``text``)."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    return list(dict.fromkeys(names))


def row_text(row: dict, fields: list[str]) -> tuple[str, ...]:
    """A row's text fields: the key that finds the same text in two files (train rows that repeat an eval row)."""
    return tuple(row[field] for field in fields)
