"""Data reading and sampling: bad rows name file:line, sampling is stratified, seeded and overlap-free."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from conftest import prepare_all, snli_rows, tiny_params

from qlora_diff.core.config import load_config, parse_config
from qlora_diff.core.errors import ConfigError, InputError
from qlora_diff.data.rows import RowSource, read_rows, remove_overlap, stratified_sample

GOOD = {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": "entailment"}


def write_lines(path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))


def config_for(path, **data):
    return parse_config({"data": {"source": "local", "train_file": str(path), **data}})


def read_split(cfg, split: str):
    """The training rows as the prepare stage reads them (ids ``<split>-<line>``)."""
    return read_rows(RowSource.training(cfg), split, cfg.data.on_bad_row)


@pytest.mark.parametrize("bad_line, reason", [
    ('{"premise": "A dog runs.", "hypothesis": "An an', "bad JSON"),
    (json.dumps({"premise": "A dog runs.", "label": "neutral"}), "missing column(s) ['hypothesis']"),
    (json.dumps({**GOOD, "premise": "   "}), "empty premise"),
    (json.dumps({**GOOD, "hypothesis": ""}), "empty hypothesis"),
    (json.dumps({**GOOD, "label": "maybe"}), "unknown label 'maybe'"),
    (b'{"premise": "caf\xe9", "hypothesis": "x", "label": "neutral"}', "not valid UTF-8"),
    ("[1, 2, 3]", "not a JSON object"),
])
def test_bad_row_stops_with_file_and_line(tmp_path, bad_line, reason):
    path = tmp_path / "rows.jsonl"
    write_lines(path, [json.dumps(GOOD), json.dumps(GOOD), bad_line, json.dumps(GOOD)])
    with pytest.raises(InputError) as info:
        read_split(config_for(path), "train")
    assert f"{path}:3: {reason}" in str(info.value)
    assert "data.on_bad_row: skip" in str(info.value)


def test_skip_mode_counts_bad_rows_and_drops_no_gold(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_lines(path, [json.dumps(GOOD), "not json", json.dumps({**GOOD, "label": "-"}),
                       json.dumps({**GOOD, "label": 2}), json.dumps({**GOOD, "label": "wat"})])
    rows, stats = read_split(config_for(path, on_bad_row="skip"), "train")
    assert [r["label"] for r in rows] == ["entailment", "contradiction"]
    assert [r["id"] for r in rows] == ["train-000001", "train-000004"]
    assert (stats.rows_read, stats.no_gold_label, stats.bad_rows) == (5, 1, 2)
    assert stats.bad_row_reasons[0].startswith(f"{path}:2: bad JSON")


def test_csv_rows_report_their_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("premise,hypothesis,label\nA dog runs.,An animal moves.,entailment\nA cat.,,neutral\n")
    with pytest.raises(InputError, match=r"rows.csv:3: empty hypothesis"):
        read_split(config_for(path), "eval")


def test_missing_file_and_unknown_type_are_clear(tmp_path):
    with pytest.raises(InputError, match=r"nope.jsonl: data file not found; check data.train_file, data.holdout_file or eval_sets.<name>.path"):
        read_split(config_for(tmp_path / "nope.jsonl"), "train")
    other = tmp_path / "rows.txt"
    other.write_text("x")
    with pytest.raises(InputError, match=r"unsupported data file type '.txt'"):
        read_split(config_for(other), "train")


def _pool(n: int) -> list[dict]:
    labels = ["entailment", "neutral", "contradiction"]
    return [{"id": f"r{i:04d}", "premise": f"p{i}", "hypothesis": f"h{i}", "label": labels[i % 7 % 3]}
            for i in range(n)]


def test_stratified_sample_is_deterministic_and_keeps_proportions():
    pool = _pool(900)
    first = stratified_sample(pool, 90, 7, "train_size")
    again = stratified_sample(pool, 90, 7, "train_size")
    other = stratified_sample(pool, 90, 8, "train_size")
    assert first == again and first != other
    assert [r["id"] for r in first] == sorted(r["id"] for r in first)
    full, part = Counter(r["label"] for r in pool), Counter(r["label"] for r in first)
    for label in full:
        assert abs(part[label] / 90 - full[label] / 900) <= 1 / 90 + 1e-9


def test_sample_larger_than_split_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'eval_sets.snli.size' is 1000 but the split has only 900 usable rows"):
        stratified_sample(_pool(900), 1000, 0, "eval_sets.snli.size")
    assert len(stratified_sample(_pool(30), "all", 0, "eval_sets.snli.size")) == 30


def test_overlapping_pairs_are_removed_from_train():
    pool = _pool(50)
    eval_rows = pool[:10]
    train = pool[5:] + [{**pool[0], "id": "dup"}]
    kept, removed = remove_overlap(train, eval_rows, ["premise", "hypothesis"])
    assert removed == 6
    assert not {(r["premise"], r["hypothesis"]) for r in kept} & {(r["premise"], r["hypothesis"]) for r in eval_rows}


def test_prepare_writes_splits_prompts_and_metrics(project):
    prepare_all(project)
    train = [json.loads(l) for l in (project / "data/prepared/train.jsonl").read_text().splitlines()]
    evals = [json.loads(l) for l in (project / "data/prepared/eval/snli.jsonl").read_text().splitlines()]
    assert (len(train), len(evals)) == (48, 24)
    eval_metrics = json.loads((project / "metrics/eval/snli/data.json").read_text())
    assert eval_metrics["eval"]["label_counts"] == {"entailment": 8, "neutral": 8, "contradiction": 8}
    assert eval_metrics["chance_rate"] == 0.3333 and eval_metrics["pairs_also_in_train"] == 0
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") and r["premise"] in r["prompt"] for r in evals)
    assert evals[0]["id"].startswith("snli-")
    saved = json.loads((project / "metrics/data.json").read_text())
    assert saved["train"]["prompt_tokens_max"] >= saved["train"]["prompt_tokens_mean"] > 0


def test_train_rows_in_the_holdout_file_are_dropped(project):
    holdout = project / "data" / "holdout.jsonl"
    train_rows = snli_rows("train", 6)
    holdout.write_text("".join(json.dumps(r) + "\n" for r in train_rows[:4]))
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(data={"train_size": "all",
                                                                          "holdout_file": str(holdout)})))
    from qlora_diff.data.prepare import prepare_train

    metrics = prepare_train(load_config("params.yaml"), project / "models/base", project / "train.jsonl",
                            project / "data.json")
    assert metrics["train_rows_removed_for_holdout_overlap"] == 4
    assert metrics["train"]["rows"] == 20000 - 4


def test_hub_source_code_path_works_offline_with_a_local_dataset_directory(tmp_path):
    """data.source: hub goes through datasets.load_dataset; a local folder stands in for a hub dataset."""
    folder = tmp_path / "snli_like"
    folder.mkdir()
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(12)]
    rows[4]["label"] = -1  # the hub's "no gold label"
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({"data": {"source": "hub", "hub_name": str(folder), "hub_revision": "main"},
                        "eval_sets": {"other": {"source": "hub", "hub_name": str(folder), "hub_split": "test",
                                                "hub_revision": "main"}}})
    for source, prefix in ((RowSource.training(cfg), "train"), (RowSource.eval_set(cfg, "other"), "other")):
        rows, stats = read_rows(source, prefix, "error")
        assert stats.no_gold_label == 1 and len(rows) == 11
        assert [r["label"] for r in rows[:3]] == ["entailment", "neutral", "contradiction"]
        assert rows[0]["id"] == f"{prefix}-000001"
