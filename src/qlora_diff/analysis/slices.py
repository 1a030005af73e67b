"""Slice features of one row: the properties (word lists and length per text field, gold label, artifact-easy/hard,
and the overlap of two fields where the task relates them) that the explanations test against corrected and
regressed rows. Definitions come from ``params.yaml: slices``; the fields and the task's additions from
``core/tasks.py``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from qlora_diff.core.config import Config, SlicesConfig

WORD = re.compile(r"[a-z0-9]+(?=n't)|n't|[a-z0-9]+")  # "isn't" -> "is", "n't"
YES, NO = "yes", "no"
ARTIFACT_EASY, ARTIFACT_HARD = "easy", "hard"


def words(text: str) -> list[str]:
    """Lowercase word tokens; the clitic ``n't`` is its own token, so a word list can name it."""
    return WORD.findall(text.lower().replace("\u2019", "'"))


def bin_label(value: float, edges: list[float], show: Callable[[float], str]) -> str:
    """The bin of ``value`` given lower ``edges``: ``<e0``, ``e0 to <e1``, ..., ``>=eN``."""
    position = bisect_right(edges, value)
    if position == 0:
        return f"<{show(edges[0])}"
    if position == len(edges):
        return f">={show(edges[-1])}"
    return f"{show(edges[position - 1])} to <{show(edges[position])}"


def stopwords(cfg: SlicesConfig) -> frozenset[str]:
    return ENGLISH_STOP_WORDS if cfg.overlap_stopwords == "english" else frozenset(cfg.overlap_stopwords)


def overlap_share(context_words: list[str], claim_words: list[str], ignored: frozenset[str]) -> float:
    """Share of the claim's content words that occur in the context; 1.0 when it has none (vacuously full)."""
    content = [word for word in claim_words if word not in ignored]
    if not content:
        return 1.0
    present = set(context_words)
    return sum(word in present for word in content) / len(content)


def slice_fields(cfg: Config) -> list[str]:
    """The text fields in slice-feature order: the task's where it fixes one, else the template's."""
    return list(cfg.task_spec.slice_order) or cfg.fields


def row_features(cfg: Config, row: dict, artifact: str, ignored: frozenset[str] | None = None) -> dict[str, str]:
    """Every slice feature of one row (its text fields, ``label`` and optional ``phenomenon``), as feature -> value
    strings, in a fixed order: gold, artifact, word lists per field, overlap, length per field, phenomenon."""
    slices = cfg.slices
    ignored = stopwords(slices) if ignored is None else ignored
    tokens = {name: words(row[name]) for name in slice_fields(cfg)}
    features = {"gold": row["label"], "artifact": artifact}
    for name, listed in slices.word_lists.items():
        vocabulary = set(listed)
        for field in tokens:
            features[f"{name}_in_{field}"] = YES if vocabulary.intersection(tokens[field]) else NO
    if cfg.task_spec.overlap:
        context, claim = cfg.task_spec.overlap
        share = overlap_share(tokens[context], tokens[claim], ignored)
        features["overlap"] = bin_label(share, slices.overlap_bins, lambda edge: f"{100 * edge:g}%")
        features["full_overlap"] = YES if share == 1.0 else NO
    for field in tokens:
        features[f"{field}_length"] = bin_label(len(tokens[field]), slices.length_bins[field], lambda e: f"{e:g}") + " words"
    if "phenomenon" in row:
        features["phenomenon"] = row["phenomenon"]
    return features


def describe(feature: str, value: str, cfg: Config) -> str:
    """A slice as words, for generated sentences: ``negation_in_hypothesis=yes`` -> 'a negation word in the
    hypothesis'."""
    for field in cfg.fields:
        suffix = f"_in_{field}"
        if feature.endswith(suffix) and feature[: -len(suffix)] in cfg.slices.word_lists:
            name, part = feature[: -len(suffix)].replace("_", " "), field.replace("_", " ")
            return f"a {name} word in the {part}" if value == YES else f"no {name} word in the {part}"
        if feature == f"{field}_length":
            return f"a {field.replace('_', ' ')} of {value}"
    task = cfg.task_spec
    baseline = f"the {task.baseline_name} baseline"
    fixed = {
        ("artifact", ARTIFACT_EASY): f"an artifact-easy {task.row_noun} ({baseline} gets it right)",
        ("artifact", ARTIFACT_HARD): f"a hard {task.row_noun} ({baseline} gets it wrong)",
    }
    readable = {"gold": "gold label", "phenomenon": "phenomenon"}
    if task.overlap:
        context, claim = task.overlap
        fixed[("full_overlap", YES)] = f"every {claim} content word in the {context}"
        fixed[("full_overlap", NO)] = f"a {claim} content word missing from the {context}"
        readable["overlap"] = f"{claim} content-word overlap"
    if (feature, value) in fixed:
        return fixed[(feature, value)]
    return f"{readable.get(feature, feature.replace('_', ' '))} {value}"


def tags(features: dict[str, str]) -> str:
    """The short tags shown beside an example: the names of its yes-features, then artifact-easy/hard."""
    shown = [name for name, value in features.items() if value == YES]
    shown.append(f"artifact-{features['artifact']}")
    return ", ".join(shown)
