"""A generated NLI challenge set: template sentences whose gold label holds by construction.

No download and no third-party text (so no licence burden): every sentence is built here from small
word lists, deterministically from a seed. Each row is tagged with the ``phenomenon`` it probes. The
templates follow published stress tests of NLI models:

- ``lexical_overlap``: subject/object swap, every hypothesis word is in the premise but the meaning is
  not entailed (HANS, McCoy et al. 2019, lexical-overlap heuristic).
- ``passive``: the same event in the passive voice (entailed), or the passive with the roles swapped
  (not entailed) (HANS, passive sub-cases).
- ``subsequence``: a contiguous subsequence of the premise that is not entailed ("The doctor near the
  artist danced." -> "The artist danced."), or a conjunct that is (HANS, subsequence heuristic).
- ``constituent``: a clause under "if" is not entailed, one under "clearly" is (HANS, constituent heuristic).
- ``negation_hypothesis`` / ``negation_premise``: "not" added to one side only (Naik et al. 2018 stress
  tests, negation; Ribeiro et al. 2020 CheckList, negation capability).
- ``quantifier``: all / some / no (CheckList, vocabulary and taxonomy; Naik et al. 2018, numerical
  reasoning family).
- ``irrelevant_hypothesis``: a hypothesis about other people and things (neutral; Naik et al. 2018,
  "word overlap" and irrelevance distractions, reversed).
- ``simplified_hypothesis``: the premise verbatim or with an adjunct dropped (entailment; CheckList,
  invariance of the basic case).
- ``hypernym``: a noun replaced by its hypernym (entailed) or a hypernym by a hyponym (not entailed)
  (CheckList, taxonomy; Naik et al. 2018).

``ROWS_PER_TEMPLATE`` rows come from each (phenomenon, label) template; ``TEMPLATES`` lists them, so
the counts per phenomenon and label are known in advance (see :func:`expected_counts`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

PEOPLE = ("doctor", "lawyer", "artist", "student", "senator", "manager", "tourist", "athlete", "banker",
          "secretary", "author", "judge")
# (past tense, past participle) of transitive verbs whose passive is regular English.
TRANSITIVE = (("saw", "seen"), ("called", "called"), ("helped", "helped"), ("thanked", "thanked"),
              ("admired", "admired"), ("followed", "followed"), ("paid", "paid"), ("visited", "visited"),
              ("recognized", "recognized"), ("avoided", "avoided"))
# (past tense, base form) of intransitive verbs.
INTRANSITIVE = (("danced", "dance"), ("slept", "sleep"), ("laughed", "laugh"), ("waited", "wait"),
                ("shouted", "shout"), ("smiled", "smile"), ("left", "leave"), ("sang", "sing"))
PLACES = ("in the park", "at the station", "near the river", "in the library", "at the market", "on the bridge")
# Verbs that take any concrete object, for the hypernym templates.
PERCEIVE = ("saw", "noticed", "photographed", "found", "drew")
# (hyponym, hypernym), each with its article.
HYPERNYMS = (("a dog", "an animal"), ("a rose", "a flower"), ("a guitar", "an instrument"), ("a truck", "a vehicle"),
             ("an oak", "a tree"), ("a salmon", "a fish"), ("a hammer", "a tool"), ("an apple", "a fruit"),
             ("a sparrow", "a bird"), ("a jacket", "a piece of clothing"))
GROUPS = ("students", "doctors", "tourists", "athletes", "judges", "artists")
UNRELATED = ("A chef cooked soup in a small kitchen.", "Two children built a sandcastle on the beach.",
             "A cat is sleeping on a warm windowsill.", "The train to the airport was late again.",
             "A woman is painting a fence blue.", "Several boats are sailing across the lake.",
             "A mechanic is repairing an old motorcycle.", "The orchestra rehearsed a new symphony.")

ROWS_PER_TEMPLATE = 40


def _the(noun: str) -> str:
    return f"the {noun}"


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _two_people(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(PEOPLE, 2)
    return _the(first), _the(second)


def lexical_overlap_swap(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    verb, _ = rng.choice(TRANSITIVE)
    return f"{_cap(a)} {verb} {b}.", f"{_cap(b)} {verb} {a}."


def lexical_overlap_same(rng: random.Random) -> tuple[str, str]:
    """Full overlap that *is* entailed (the premise with a place added), so overlap alone does not decide."""
    a, b = _two_people(rng)
    verb, _ = rng.choice(TRANSITIVE)
    return f"{_cap(a)} {verb} {b} {rng.choice(PLACES)}.", f"{_cap(a)} {verb} {b}."


def passive_same(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    verb, participle = rng.choice(TRANSITIVE)
    return f"{_cap(a)} {verb} {b}.", f"{_cap(b)} was {participle} by {a}."


def passive_swapped(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    verb, participle = rng.choice(TRANSITIVE)
    return f"{_cap(a)} {verb} {b}.", f"{_cap(a)} was {participle} by {b}."


def subsequence_not_entailed(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    verb, _ = rng.choice(INTRANSITIVE)
    return f"{_cap(a)} near {b} {verb}.", f"{_cap(b)} {verb}."


def subsequence_conjunct(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    (verb_a, _), (verb_b, _) = rng.sample(INTRANSITIVE, 2)
    return f"{_cap(a)} {verb_a} and {b} {verb_b}.", f"{_cap(b)} {verb_b}."


def constituent_conditional(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    (verb_a, _), (verb_b, _) = rng.sample(INTRANSITIVE, 2)
    return f"If {a} {verb_a}, {b} {verb_b}.", f"{_cap(a)} {verb_a}."


def constituent_clearly(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    (verb_a, _), (verb_b, _) = rng.sample(INTRANSITIVE, 2)
    return f"Clearly {a} {verb_a}, and {b} {verb_b}.", f"{_cap(a)} {verb_a}."


def negated_hypothesis_contradiction(rng: random.Random) -> tuple[str, str]:
    a = _the(rng.choice(PEOPLE))
    verb, base = rng.choice(INTRANSITIVE)
    place = rng.choice(PLACES)
    return f"{_cap(a)} {verb} {place}.", f"{_cap(a)} did not {base} {place}."


def negated_hypothesis_other_person(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    verb, base = rng.choice(INTRANSITIVE)
    return f"{_cap(a)} {verb}.", f"{_cap(b)} did not {base}."


def negated_premise_contradiction(rng: random.Random) -> tuple[str, str]:
    a = _the(rng.choice(PEOPLE))
    verb, base = rng.choice(INTRANSITIVE)
    return f"{_cap(a)} did not {base}.", f"{_cap(a)} {verb}."


def negated_premise_entailment(rng: random.Random) -> tuple[str, str]:
    """Not doing something at all entails not doing it in one place (downward monotone under negation)."""
    a = _the(rng.choice(PEOPLE))
    _, base = rng.choice(INTRANSITIVE)
    return f"{_cap(a)} did not {base}.", f"{_cap(a)} did not {base} {rng.choice(PLACES)}."


def quantifier_all_some(rng: random.Random) -> tuple[str, str]:
    group, (verb, _) = rng.choice(GROUPS), rng.choice(INTRANSITIVE)
    return f"All the {group} {verb}.", f"Some {group} {verb}."


def quantifier_no_some(rng: random.Random) -> tuple[str, str]:
    group, (verb, _) = rng.choice(GROUPS), rng.choice(INTRANSITIVE)
    first, second = rng.sample([f"No {group} {verb}.", f"Some {group} {verb}."], 2)
    return first, second


def quantifier_some_all(rng: random.Random) -> tuple[str, str]:
    group, (verb, _) = rng.choice(GROUPS), rng.choice(INTRANSITIVE)
    return f"Some {group} {verb}.", f"All the {group} {verb}."


def irrelevant(rng: random.Random) -> tuple[str, str]:
    a = _the(rng.choice(PEOPLE))
    verb, _ = rng.choice(INTRANSITIVE)
    return f"{_cap(a)} {verb} {rng.choice(PLACES)}.", rng.choice(UNRELATED)


def verbatim(rng: random.Random) -> tuple[str, str]:
    a, b = _two_people(rng)
    verb, _ = rng.choice(TRANSITIVE)
    sentence = f"{_cap(a)} {verb} {b} {rng.choice(PLACES)}."
    return sentence, sentence


def dropped_adjunct(rng: random.Random) -> tuple[str, str]:
    a = _the(rng.choice(PEOPLE))
    verb, _ = rng.choice(INTRANSITIVE)
    return f"{_cap(a)} {verb} {rng.choice(PLACES)}.", f"{_cap(a)} {verb}."


def hypernym_up(rng: random.Random) -> tuple[str, str]:
    a = _the(rng.choice(PEOPLE))
    verb = rng.choice(PERCEIVE)
    specific, general = rng.choice(HYPERNYMS)
    return f"{_cap(a)} {verb} {specific}.", f"{_cap(a)} {verb} {general}."


def hypernym_down(rng: random.Random) -> tuple[str, str]:
    a = _the(rng.choice(PEOPLE))
    verb = rng.choice(PERCEIVE)
    specific, general = rng.choice(HYPERNYMS)
    return f"{_cap(a)} {verb} {general}.", f"{_cap(a)} {verb} {specific}."


# (phenomenon, gold label, template). The label of every row a template writes is the one given here.
TEMPLATES: tuple[tuple[str, str, Callable[[random.Random], tuple[str, str]]], ...] = (
    ("lexical_overlap", "neutral", lexical_overlap_swap),
    ("lexical_overlap", "entailment", lexical_overlap_same),
    ("passive", "entailment", passive_same),
    ("passive", "neutral", passive_swapped),
    ("subsequence", "neutral", subsequence_not_entailed),
    ("subsequence", "entailment", subsequence_conjunct),
    ("constituent", "neutral", constituent_conditional),
    ("constituent", "entailment", constituent_clearly),
    ("negation_hypothesis", "contradiction", negated_hypothesis_contradiction),
    ("negation_hypothesis", "neutral", negated_hypothesis_other_person),
    ("negation_premise", "contradiction", negated_premise_contradiction),
    ("negation_premise", "entailment", negated_premise_entailment),
    ("quantifier", "entailment", quantifier_all_some),
    ("quantifier", "contradiction", quantifier_no_some),
    ("quantifier", "neutral", quantifier_some_all),
    ("irrelevant_hypothesis", "neutral", irrelevant),
    ("simplified_hypothesis", "entailment", verbatim),
    ("simplified_hypothesis", "entailment", dropped_adjunct),
    ("hypernym", "entailment", hypernym_up),
    ("hypernym", "neutral", hypernym_down),
)


def expected_counts(rows_per_template: int = ROWS_PER_TEMPLATE) -> dict[tuple[str, str], int]:
    """Rows per (phenomenon, label), known before generating."""
    counts: Counter = Counter()
    for phenomenon, label, _ in TEMPLATES:
        counts[(phenomenon, label)] += rows_per_template
    return dict(counts)


def generate(seed: int, rows_per_template: int = ROWS_PER_TEMPLATE) -> list[dict]:
    """Every template's rows, in template order, each ``{id, premise, hypothesis, label, phenomenon}``.

    Each template draws from its own seeded generator, so adding a template leaves the others' rows as they were.
    Duplicate (premise, hypothesis) pairs within a template are redrawn, up to a bounded number of tries.
    """
    rows = []
    for index, (phenomenon, label, template) in enumerate(TEMPLATES):
        rng = random.Random(f"{seed}-{template.__name__}")
        seen: set[tuple[str, str]] = set()
        for _ in range(50 * rows_per_template):
            if len(seen) == rows_per_template:
                break
            pair = template(rng)
            if pair in seen:
                continue
            seen.add(pair)
            rows.append({"id": f"challenge-{index:02d}-{len(seen):04d}", "premise": pair[0], "hypothesis": pair[1],
                         "label": label, "phenomenon": phenomenon})
        if len(seen) < rows_per_template:
            raise ValueError(f"template {template.__name__} has only {len(seen)} distinct rows; "
                             f"allowed: rows_per_template <= {len(seen)}")
    return rows
