"""The NLI task (SNLI, the project's default): a premise and a hypothesis, and what only NLI has.

Its own analyses are data here: the hypothesis-only baseline (Gururangan et al. 2018; Poliak et al. 2018) and the
share of the hypothesis's content words found in the premise; the generated challenge set (data/nli_challenge.py)
has these two fields. Every other module reads a task's fields from ``core/tasks.py`` and names no field.
"""

from __future__ import annotations

from qlora_diff.core.tasks import Task

NLI = Task(
    name="nli",
    fields=("premise", "hypothesis"),
    slice_order=("hypothesis", "premise"),
    overlap=("premise", "hypothesis"),
    baseline_field="hypothesis",
    baseline_name="hypothesis-only",
    baseline_blurb="TF-IDF + logistic regression that never sees the premise; Gururangan et al. 2018",
    row_noun="hypothesis",
    card_title="natural language inference (SNLI)",
    card_tags=("snli", "nli"),
)

SYSTEM = "Classify the relation between the premise and the hypothesis."
TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer entailment, neutral or contradiction."
LABELS = ("entailment", "neutral", "contradiction")
LENGTH_BINS = {"hypothesis": [6, 10], "premise": [10, 20]}   # lower edges in words: <6, 6 to <10, >=10
