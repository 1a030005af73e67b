"""The generated challenge set: deterministic, counts as documented, and every template's gold label checked by
parsing its sentences back and applying the label rule of that template's phenomenon."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from qlora_diff.data import nli_challenge as challenge
from qlora_diff.data.nli_challenge import HYPERNYMS, INTRANSITIVE, PLACES, TEMPLATES, TRANSITIVE, UNRELATED, generate

PAST_TO_BASE = dict(INTRANSITIVE)
PARTICIPLE = dict(TRANSITIVE)
PLACE = "(?P<place>" + "|".join(map(re.escape, PLACES)) + ")"


def parse(pattern: str, text: str) -> dict:
    match = re.fullmatch(pattern, text)
    assert match, f"{text!r} does not match {pattern!r}"
    return match.groupdict()


def clause(text: str) -> tuple[str, str, str | None]:
    """'The a V the b.' -> (a, V, b); 'The a V.' -> (a, V, None)."""
    found = parse(r"The (?P<a>\w+) (?P<v>\w+)(?: the (?P<b>\w+))?\.", text)
    return found["a"], found["v"], found["b"]


# One rule per template: parse both sentences and check that the label follows from what they say.
def check_swap(p, h):  # b V a is neither stated nor excluded by a V b
    (a, v, b), (a2, v2, b2) = clause(p), clause(h)
    return v == v2 and (a, b) == (b2, a2) and a != b and sorted(p.lower()[:-1].split()) == sorted(h.lower()[:-1].split())


def check_overlap_same(p, h):  # dropping a place adjunct keeps the event
    found = parse(r"The (?P<a>\w+) (?P<v>\w+) the (?P<b>\w+) " + PLACE + r"\.", p)
    return clause(h) == (found["a"], found["v"], found["b"])


def check_passive(same_roles: bool):
    def check(p, h):
        a, v, b = clause(p)
        found = parse(r"The (?P<patient>\w+) was (?P<pp>\w+) by the (?P<agent>\w+)\.", h)
        roles = (found["agent"], found["patient"]) == ((a, b) if same_roles else (b, a))
        return found["pp"] == PARTICIPLE[v] and roles and a != b
    return check


def check_near(p, h):  # "a near b V" says a did it, not b
    found = parse(r"The (?P<a>\w+) near the (?P<b>\w+) (?P<v>\w+)\.", p)
    return clause(h) == (found["b"], found["v"], None) and found["a"] != found["b"]


def check_conjunct(p, h):
    found = parse(r"The (?P<a>\w+) (?P<va>\w+) and the (?P<b>\w+) (?P<vb>\w+)\.", p)
    return clause(h) == (found["b"], found["vb"], None)


def check_if(p, h):  # the antecedent of a conditional is not asserted
    found = parse(r"If the (?P<a>\w+) (?P<va>\w+), the (?P<b>\w+) (?P<vb>\w+)\.", p)
    return clause(h) == (found["a"], found["va"], None)


def check_clearly(p, h):
    found = parse(r"Clearly the (?P<a>\w+) (?P<va>\w+), and the (?P<b>\w+) (?P<vb>\w+)\.", p)
    return clause(h) == (found["a"], found["va"], None)


def check_negated_hypothesis(p, h):  # "a V at X" vs "a did not V at X"
    found = parse(r"The (?P<a>\w+) (?P<v>\w+) " + PLACE + r"\.", p)
    return h == f"The {found['a']} did not {PAST_TO_BASE[found['v']]} {found['place']}."


def check_negated_other(p, h):  # a statement about someone else
    a, v, _ = clause(p)
    found = parse(r"The (?P<b>\w+) did not (?P<base>\w+)\.", h)
    return found["b"] != a and found["base"] == PAST_TO_BASE[v]


def check_negated_premise(p, h):
    found = parse(r"The (?P<a>\w+) did not (?P<base>\w+)\.", p)
    a, v, _ = clause(h)
    return a == found["a"] and PAST_TO_BASE[v] == found["base"]


def check_negation_monotone(p, h):  # not at all -> not in one place
    found = parse(r"The (?P<a>\w+) did not (?P<base>\w+)\.", p)
    return h.startswith(p[:-1] + " ") and re.fullmatch(re.escape(p[:-1]) + " " + PLACE + r"\.", h) is not None \
        and found["base"] in PAST_TO_BASE.values()


def quantified(text: str) -> tuple[str, str, str]:
    found = parse(r"(?P<q>All the|Some|No) (?P<g>\w+) (?P<v>\w+)\.", text)
    return found["q"], found["g"], found["v"]


def check_quantifiers(pairs: set[tuple[str, str]]):
    def check(p, h):
        (qp, gp, vp), (qh, gh, vh) = quantified(p), quantified(h)
        return (gp, vp) == (gh, vh) and (qp, qh) in pairs
    return check


def check_irrelevant(p, h):
    a, v, _ = clause(re.sub(" " + PLACE, "", p))
    return h in UNRELATED and a not in h.lower() and v not in h.lower()


def check_simplified(p, h):
    return h == p or re.fullmatch(re.escape(h[:-1]) + " " + PLACE + r"\.", p) is not None


def check_hypernym(up: bool):
    def check(p, h):
        pairs = {(s, g) if up else (g, s) for s, g in HYPERNYMS}
        found_p = parse(r"The (?P<a>\w+) (?P<v>\w+) (?P<n>an? .+)\.", p)
        found_h = parse(r"The (?P<a>\w+) (?P<v>\w+) (?P<n>an? .+)\.", h)
        return (found_p["a"], found_p["v"]) == (found_h["a"], found_h["v"]) and (found_p["n"], found_h["n"]) in pairs
    return check


RULES = {
    "lexical_overlap_swap": check_swap, "lexical_overlap_same": check_overlap_same,
    "passive_same": check_passive(True), "passive_swapped": check_passive(False),
    "subsequence_not_entailed": check_near, "subsequence_conjunct": check_conjunct,
    "constituent_conditional": check_if, "constituent_clearly": check_clearly,
    "negated_hypothesis_contradiction": check_negated_hypothesis,
    "negated_hypothesis_other_person": check_negated_other,
    "negated_premise_contradiction": check_negated_premise, "negated_premise_entailment": check_negation_monotone,
    "quantifier_all_some": check_quantifiers({("All the", "Some")}),
    "quantifier_no_some": check_quantifiers({("No", "Some"), ("Some", "No")}),
    "quantifier_some_all": check_quantifiers({("Some", "All the")}),
    "irrelevant": check_irrelevant, "verbatim": check_simplified, "dropped_adjunct": check_simplified,
    "hypernym_up": check_hypernym(True), "hypernym_down": check_hypernym(False),
}
# The label each rule above establishes, written independently of TEMPLATES.
RULE_LABELS = {
    "lexical_overlap_swap": "neutral", "lexical_overlap_same": "entailment", "passive_same": "entailment",
    "passive_swapped": "neutral", "subsequence_not_entailed": "neutral", "subsequence_conjunct": "entailment",
    "constituent_conditional": "neutral", "constituent_clearly": "entailment",
    "negated_hypothesis_contradiction": "contradiction", "negated_hypothesis_other_person": "neutral",
    "negated_premise_contradiction": "contradiction", "negated_premise_entailment": "entailment",
    "quantifier_all_some": "entailment", "quantifier_no_some": "contradiction", "quantifier_some_all": "neutral",
    "irrelevant": "neutral", "verbatim": "entailment", "dropped_adjunct": "entailment",
    "hypernym_up": "entailment", "hypernym_down": "neutral",
}
# Documented in the README ("The challenge set"): rows per phenomenon and label.
DOCUMENTED = {
    "lexical_overlap": {"entailment": 40, "neutral": 40}, "passive": {"entailment": 40, "neutral": 40},
    "subsequence": {"entailment": 40, "neutral": 40}, "constituent": {"entailment": 40, "neutral": 40},
    "negation_hypothesis": {"contradiction": 40, "neutral": 40},
    "negation_premise": {"contradiction": 40, "entailment": 40},
    "quantifier": {"entailment": 40, "contradiction": 40, "neutral": 40}, "irrelevant_hypothesis": {"neutral": 40},
    "simplified_hypothesis": {"entailment": 80}, "hypernym": {"entailment": 40, "neutral": 40},
}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate(seed=42)


def test_same_seed_gives_a_byte_identical_file_and_another_seed_another():
    dump = lambda seed: "".join(json.dumps(r) + "\n" for r in generate(seed)).encode()
    assert dump(42) == dump(42)
    assert dump(42) != dump(43)


def test_counts_per_phenomenon_and_label_are_as_documented(rows):
    counts = Counter((r["phenomenon"], r["label"]) for r in rows)
    assert counts == Counter({(p, l): n for p, labels in DOCUMENTED.items() for l, n in labels.items()})
    assert counts == Counter(challenge.expected_counts())
    assert len(rows) == 800 and len({r["id"] for r in rows}) == 800
    assert len({(r["premise"], r["hypothesis"]) for r in rows}) == 800


@pytest.mark.parametrize("template", [t for _, _, t in TEMPLATES], ids=lambda t: t.__name__)
def test_every_row_of_a_template_has_the_label_its_rule_gives(rows, template):
    index = [t for _, _, t in TEMPLATES].index(template)
    mine = [r for r in rows if r["id"].startswith(f"challenge-{index:02d}-")]
    assert len(mine) == challenge.ROWS_PER_TEMPLATE
    rule = RULES[template.__name__]
    for row in mine:
        assert row["label"] == RULE_LABELS[template.__name__], row
        assert accepts(rule, row), row


def accepts(rule, row: dict) -> bool:
    try:
        return bool(rule(row["premise"], row["hypothesis"]))
    except AssertionError:  # the sentences do not even parse as this rule's pattern
        return False


def test_the_rules_reject_rows_of_the_opposite_label(rows):
    """A rule is not a tautology: it refuses the rows of the template with the other label of its phenomenon."""
    first = {t.__name__: [r for r in rows if r["id"].startswith(f"challenge-{i:02d}-")] for i, (_, _, t) in
             enumerate(TEMPLATES)}
    for mine, other in (("passive_same", "passive_swapped"), ("hypernym_up", "hypernym_down"),
                        ("quantifier_all_some", "quantifier_some_all"), ("lexical_overlap_swap", "lexical_overlap_same"),
                        ("constituent_clearly", "constituent_conditional"), ("subsequence_conjunct", "subsequence_not_entailed"),
                        ("negated_premise_entailment", "negated_premise_contradiction"),
                        ("negated_hypothesis_contradiction", "negated_hypothesis_other_person")):
        assert not any(accepts(RULES[mine], row) for row in first[other]), (mine, other)
        assert not any(accepts(RULES[other], row) for row in first[mine]), (other, mine)
