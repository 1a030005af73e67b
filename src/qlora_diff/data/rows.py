"""Read task rows from files or the hub, validate each one, and draw the stratified train/eval splits."""

from __future__ import annotations

import csv
import json
from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.model_selection import train_test_split

from qlora_diff.core.config import BUNDLED_SPLITS, Config
from qlora_diff.core.errors import ConfigError, InputError
from qlora_diff.core.tasks import row_text

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
        raise InputError(f"{path}: data file not found; check data.train_file, data.holdout_file or eval_sets.<name>.path.")
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


@dataclass(frozen=True)
class RowSource:
    """Where one split's rows come from and how its columns and labels are read."""

    origin: str                  # names the rows in messages: a file path, or hub_name[split]
    labels: list[str]            # the label names allowed in this split
    label_names: list[str]       # integer label ids map to these names, in order
    label_hint: str              # the params key that defines ``labels``, for error messages
    columns: dict[str, str]      # text field -> the column it is read from
    label_column: str = "label"
    hub: tuple[str, str, str, str] | None = None  # (name, config, split, revision) for a hub dataset

    @classmethod
    def training(cls, cfg: Config) -> RowSource:
        data = cfg.data
        hub = (data.hub_name, data.hub_config, data.train_split, data.hub_revision) if data.source == "hub" else None
        return cls(origin=f"{data.hub_name}[{data.train_split}]" if hub else data.train_file, labels=data.labels,
                   label_names=data.labels, label_hint="data.labels", columns=text_columns(cfg, data.text_columns),
                   label_column=data.label_column, hub=hub)

    @classmethod
    def holdout(cls, cfg: Config) -> RowSource:
        """``data.holdout_file``: a local file read with the train split's columns and labels."""
        return dataclasses.replace(cls.training(cfg), origin=cfg.data.holdout_file, hub=None)

    @classmethod
    def eval_set(cls, cfg: Config, name: str) -> RowSource:
        spec = cfg.eval_sets[name]
        labels = spec.labels(cfg.data.labels)
        hint = f"the keys of eval_sets.{name}.label_map" if spec.label_map else "data.labels"
        common = dict(labels=labels, label_names=spec.label_names or labels, label_hint=hint)
        if spec.source == "bundled":
            return cls(origin=BUNDLED_SPLITS[spec.split], columns=text_columns(cfg, {}), **common)
        hub = (spec.hub_name, spec.hub_config, spec.hub_split, spec.hub_revision) if spec.source == "hub" else None
        return cls(origin=f"{spec.hub_name}[{spec.hub_split}]" if hub else spec.path,
                   columns=text_columns(cfg, spec.text_columns), label_column=spec.label_column, hub=hub, **common)

    def raw_rows(self) -> list[tuple[int, dict | None, str | None]]:
        if self.hub is None:
            return _raw_rows_from_file(Path(self.origin))
        from datasets import load_dataset

        name, config, split, revision = self.hub
        dataset = load_dataset(name, config or None, split=split, revision=revision or None)
        return [(i + 1, row, None) for i, row in enumerate(dataset)]

    def label_name(self, value: object) -> str | None:
        """A raw label (name or class index) as a label name; None when it is not a known label."""
        if isinstance(value, str) and value.strip() in self.labels:
            return value.strip()
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.label_names):
            return self.label_names[value]
        return None


def text_columns(cfg: Config, renamed: dict[str, str]) -> dict[str, str]:
    """Each text field of the template -> its column: ``renamed``'s where given, else the field's own name."""
    return {name: renamed.get(name, name) for name in cfg.fields}


def _missing_columns(source: RowSource, row: dict) -> str | None:
    missing = [col for col in [*source.columns.values(), source.label_column] if col not in row]
    return f"missing column(s) {missing}; found {sorted(row)}" if missing else None


def _row_error(source: RowSource, row: dict, label: str | None) -> str | None:
    """Why a row with every column cannot be used (an unknown label, an empty text field), or None; ``label`` is
    the row's label as ``RowSource.label_name`` reads it."""
    if label is None:
        return (f"unknown label {row[source.label_column]!r}; allowed: {source.labels} ({source.label_hint}) "
                "or their indices")
    empty = [name for name, col in source.columns.items() if not isinstance(row[col], str) or not row[col].strip()]
    return f"empty {empty[0]}" if empty else None


def read_rows(source: RowSource, id_prefix: str, on_bad_row: str) -> tuple[list[dict], ReadStats]:
    """Validated rows ``{id, <text fields>, label}`` in source order; ids are ``<id_prefix>-<line>``."""
    stats = ReadStats()
    rows = []
    for number, row, error in source.raw_rows():
        stats.rows_read += 1
        if error is None:
            error = _missing_columns(source, row)
        if error is None and row[source.label_column] in NO_GOLD:
            stats.no_gold_label += 1
            continue
        label = None
        if error is None:
            label = source.label_name(row[source.label_column])
            error = _row_error(source, row, label)
        if error is not None:
            if on_bad_row == "error":
                raise InputError(f"{source.origin}:{number}: {error}. Fix the row or set data.on_bad_row: skip.")
            stats.bad_rows += 1
            stats.bad_row_reasons.append(f"{source.origin}:{number}: {error}")
            continue
        rows.append({"id": f"{id_prefix}-{number:06d}",
                     **{name: row[col].strip() for name, col in source.columns.items()},
                     "label": label})
    return rows, stats


def stratified_sample(rows: list[dict], size: int | str, seed: int, key: str) -> list[dict]:
    """A label-stratified, seeded sample of ``size`` rows (all rows for ``'all'``), kept in source order."""
    if size == "all" or size == len(rows):
        return list(rows)
    if size > len(rows):
        raise ConfigError(f"params: '{key}' is {size} but the split has only {len(rows)} usable rows; "
                          f"allowed: 1..{len(rows)} or 'all'.")
    labels = [row["label"] for row in rows]
    if min(Counter(labels).values()) < 2 or size < len(set(labels)):
        chosen, _ = train_test_split(rows, train_size=size, random_state=seed)
    else:
        chosen, _ = train_test_split(rows, train_size=size, random_state=seed, stratify=labels)
    order = {row["id"]: i for i, row in enumerate(rows)}
    return sorted(chosen, key=lambda row: order[row["id"]])


def remove_overlap(train_rows: list[dict], eval_rows: list[dict], fields: list[str]) -> tuple[list[dict], int]:
    """Drop train rows whose text fields all equal an eval row's (eval wins, so it stays comparable)."""
    eval_texts = {row_text(row, fields) for row in eval_rows}
    kept = [row for row in train_rows if row_text(row, fields) not in eval_texts]
    return kept, len(train_rows) - len(kept)


def training_pool(cfg: Config) -> tuple[list[dict], ReadStats, int]:
    """Every usable train row minus pairs of ``data.holdout_file``, the read stats, and how many were removed."""
    pool, stats = read_rows(RowSource.training(cfg), "train", cfg.data.on_bad_row)
    overlap = 0
    if cfg.data.holdout_file:
        pool, overlap = remove_overlap(pool, read_rows(RowSource.holdout(cfg), "holdout", "skip")[0], cfg.fields)
    return pool, stats, overlap


def label_counts(rows: list[dict], labels: list[str]) -> dict[str, int]:
    counts = Counter(row["label"] for row in rows)
    return {label: counts.get(label, 0) for label in labels}
