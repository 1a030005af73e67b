"""Params written before tasks were data, in today's keys, so that a run committed then can still be read
(``analysis.reproduce --against`` an older commit, ``analysis.runs`` with an older revision).

Those versions knew one task, NLI, and named its fields in the keys: ``premise_column`` and ``hypothesis_column``
(now ``text_columns``), ``hypothesis_length_bins`` and ``premise_length_bins`` (now ``slices.length_bins``).
"""

from __future__ import annotations

import copy

from qlora_diff.core.nli import LENGTH_BINS

COLUMN_KEYS = {"premise_column": "premise", "hypothesis_column": "hypothesis"}
LENGTH_KEYS = {"premise_length_bins": "premise", "hypothesis_length_bins": "hypothesis"}


def upgrade(raw: dict) -> dict:
    """A copy of a params mapping with the pre-task keys renamed; params without them come back equal."""
    raw = copy.deepcopy(raw)
    for section in [raw.get("data"), *(raw.get("eval_sets") or {}).values()]:
        if not isinstance(section, dict):
            continue
        columns = {field: section.pop(key) for key, field in COLUMN_KEYS.items() if key in section}
        renamed = {field: column for field, column in columns.items() if column != field}
        if columns:
            section["text_columns"] = {**renamed, **(section.get("text_columns") or {})}
    slices = raw.get("slices")
    if isinstance(slices, dict) and LENGTH_KEYS.keys() & slices.keys():
        bins = {field: slices.pop(key) for key, field in LENGTH_KEYS.items() if key in slices}
        slices["length_bins"] = {**LENGTH_BINS, **bins}
    return raw
