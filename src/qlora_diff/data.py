"""Read NLI rows from files or the hub, validate each one, and draw the stratified train/eval splits."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.model_selection import train_test_split

from qlora_diff.config import Config
from qlora_diff.errors import ConfigError, InputError

NO_GOLD = {"-", "", "-1", -1}
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class ReadStats:
    """What was dropped while reading one split; it goes into metrics/data.json."""

    rows_read: int = 0
    no_gold_label: int = 0
    bad_rows: int = 0
    bad_row_reasons: list[str] = field(default_factory=list)


def _raw_rows_from_file(path: Path) -> list[tuple[int, dict | None, str | None]]:
    """(line number, row or None, parse error or None) for each data line of ``path``."""
    if not path.is_file():
        raise InputError(f"{path}: data file not found (data.train_file / data.eval_file).")
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"{path}: unsupported data file type '{path.suffix}'; allowed: {', '.join(SUPPORTED_SUFFIXES)}.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(i + 1, row, None) for i, row in enumerate(pq.read_table(path).to_pylist())]
    rows: list[tuple[int, dict | None, str | None]] = []
    raw_lines = path.read_bytes().splitlines()
    if path.suffix == ".csv":
        try:
            text = [line.decode("utf-8-sig") for line in raw_lines]
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid UTF-8 ({exc}).") from exc
        reader = csv.DictReader(text)
        for row in reader:
            rows.append((reader.line_num, row, None))
        return rows
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            rows.append((number, None, "not valid UTF-8"))
            continue
        except json.JSONDecodeError as exc:
            rows.append((number, None, f"bad JSON ({exc.msg})"))
            continue
        rows.append((number, row, None) if isinstance(row, dict) else (number, None, "not a JSON object"))
    return rows


def _raw_rows_from_hub(cfg: Config, split: str) -> list[tuple[int, dict | None, str | None]]:
    from datasets import load_dataset

    dataset = load_dataset(
        cfg.data.hub_name, cfg.data.hub_config or None, split=split, revision=cfg.data.hub_revision or None
    )
    return [(i + 1, row, None) for i, row in enumerate(dataset)]


def _label_name(cfg: Config, value: object) -> str | None:
    """Map a raw label (name or class index) to a label name; None when it is not a known label."""
    labels = cfg.data.labels
    if isinstance(value, str) and value.strip() in labels:
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return labels[value]
    if isinstance(value, str) and value.strip().isdigit() and int(value) < len(labels):
        return labels[int(value)]
    return None


def read_split(cfg: Config, split: str) -> tuple[list[dict], ReadStats]:
    """Validated rows ``{id, premise, hypothesis, label}`` of the train or eval split, in file order."""
    data = cfg.data
    if data.source == "hub":
        origin = f"{data.hub_name}[{data.train_split if split == 'train' else data.eval_split}]"
        raw = _raw_rows_from_hub(cfg, data.train_split if split == "train" else data.eval_split)
    else:
        origin = data.train_file if split == "train" else data.eval_file
        raw = _raw_rows_from_file(Path(origin))
    stats = ReadStats()
    rows = []
    columns = {"premise": data.premise_column, "hypothesis": data.hypothesis_column, "label": data.label_column}
    for number, row, error in raw:
        stats.rows_read += 1
        if error is None:
            missing = [col for col in columns.values() if col not in row]
            if missing:
                error = f"missing column(s) {missing}; found {sorted(row)}"
        if error is None and row[columns["label"]] in NO_GOLD:
            stats.no_gold_label += 1
            continue
        if error is None:
            label = _label_name(cfg, row[columns["label"]])
            premise, hypothesis = row[columns["premise"]], row[columns["hypothesis"]]
            if label is None:
                error = f"unknown label {row[columns['label']]!r}; allowed: {data.labels} or their indices"
            elif not isinstance(premise, str) or not premise.strip():
                error = "empty premise"
            elif not isinstance(hypothesis, str) or not hypothesis.strip():
                error = "empty hypothesis"
        if error is not None:
            if data.on_bad_row == "error":
                raise InputError(f"{origin}:{number}: {error}. Fix the row or set data.on_bad_row: skip.")
            stats.bad_rows += 1
            stats.bad_row_reasons.append(f"{origin}:{number}: {error}")
            continue
        rows.append({"id": f"{split}-{number:06d}", "premise": premise.strip(), "hypothesis": hypothesis.strip(),
                     "label": label})
    return rows, stats


def stratified_sample(rows: list[dict], size: int | str, seed: int, key: str) -> list[dict]:
    """A label-stratified, seeded sample of ``size`` rows (all rows for ``'all'``), kept in source order."""
    if size == "all" or size == len(rows):
        return list(rows)
    if size > len(rows):
        raise ConfigError(f"params: 'data.{key}' is {size} but the split has only {len(rows)} usable rows; "
                          f"allowed: 1..{len(rows)} or 'all'.")
    labels = [row["label"] for row in rows]
    if min(Counter(labels).values()) < 2 or size < len(set(labels)):
        chosen, _ = train_test_split(rows, train_size=size, random_state=seed)
    else:
        chosen, _ = train_test_split(rows, train_size=size, random_state=seed, stratify=labels)
    order = {row["id"]: i for i, row in enumerate(rows)}
    return sorted(chosen, key=lambda row: order[row["id"]])


def pair_key(row: dict) -> tuple[str, str]:
    return row["premise"], row["hypothesis"]


def remove_overlap(train_rows: list[dict], eval_rows: list[dict]) -> tuple[list[dict], int]:
    """Drop train rows whose premise/hypothesis pair is also an eval row (eval wins, so it stays comparable)."""
    eval_pairs = {pair_key(row) for row in eval_rows}
    kept = [row for row in train_rows if pair_key(row) not in eval_pairs]
    return kept, len(train_rows) - len(kept)


def label_counts(rows: list[dict], labels: list[str]) -> dict[str, int]:
    counts = Counter(row["label"] for row in rows)
    return {label: counts.get(label, 0) for label in labels}
