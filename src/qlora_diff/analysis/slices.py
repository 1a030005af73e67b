"""Slice features of one NLI row: the properties (negation, overlap, length, gold label, artifact-easy/hard)
that the explanations test against corrected and regressed rows. Definitions come from ``params.yaml: slices``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from qlora_diff.core.config import SlicesConfig

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


def overlap_share(premise_words: list[str], hypothesis_words: list[str], ignored: frozenset[str]) -> float:
    """Share of the hypothesis's content words that occur in the premise; 1.0 when it has none (vacuously full)."""
    content = [word for word in hypothesis_words if word not in ignored]
    if not content:
        return 1.0
    present = set(premise_words)
    return sum(word in present for word in content) / len(content)


def row_features(cfg: SlicesConfig, row: dict, artifact: str, ignored: frozenset[str] | None = None) -> dict[str, str]:
    """Every slice feature of one row (``premise``, ``hypothesis``, ``label`` and optional ``phenomenon``), as
    feature -> value strings, in a fixed order."""
    ignored = stopwords(cfg) if ignored is None else ignored
    premise, hypothesis = words(row["premise"]), words(row["hypothesis"])
    features = {"gold": row["label"], "artifact": artifact}
    for name, listed in cfg.word_lists.items():
        vocabulary = set(listed)
        features[f"{name}_in_hypothesis"] = YES if vocabulary.intersection(hypothesis) else NO
        features[f"{name}_in_premise"] = YES if vocabulary.intersection(premise) else NO
    share = overlap_share(premise, hypothesis, ignored)
    features["overlap"] = bin_label(share, cfg.overlap_bins, lambda edge: f"{100 * edge:g}%")
    features["full_overlap"] = YES if share == 1.0 else NO
    features["hypothesis_length"] = bin_label(len(hypothesis), cfg.hypothesis_length_bins, lambda e: f"{e:g}") + " words"
    features["premise_length"] = bin_label(len(premise), cfg.premise_length_bins, lambda e: f"{e:g}") + " words"
    if "phenomenon" in row:
        features["phenomenon"] = row["phenomenon"]
    return features


def describe(feature: str, value: str) -> str:
    """A slice as words, for generated sentences: ``negation_in_hypothesis=yes`` -> 'a negation word in the
    hypothesis'."""
    for part in ("hypothesis", "premise"):
        suffix = f"_in_{part}"
        if feature.endswith(suffix):
            name = feature[: -len(suffix)].replace("_", " ")
            return f"a {name} word in the {part}" if value == YES else f"no {name} word in the {part}"
    fixed = {
        ("artifact", ARTIFACT_EASY): "an artifact-easy hypothesis (the hypothesis-only baseline gets it right)",
        ("artifact", ARTIFACT_HARD): "a hard hypothesis (the hypothesis-only baseline gets it wrong)",
        ("full_overlap", YES): "every hypothesis content word in the premise",
        ("full_overlap", NO): "a hypothesis content word missing from the premise",
    }
    if (feature, value) in fixed:
        return fixed[(feature, value)]
    readable = {"gold": "gold label", "overlap": "hypothesis content-word overlap", "phenomenon": "phenomenon",
                "hypothesis_length": "a hypothesis of", "premise_length": "a premise of"}
    return f"{readable.get(feature, feature.replace('_', ' '))} {value}"


def tags(features: dict[str, str]) -> str:
    """The short tags shown beside an example: the names of its yes-features, then artifact-easy/hard."""
    shown = [name for name, value in features.items() if value == YES]
    shown.append(f"artifact-{features['artifact']}")
    return ", ".join(shown)
