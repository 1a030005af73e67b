"""The bag-of-words baseline: TF-IDF + logistic regression on the words of one text field (the task's
``baseline_field``) or of all of them. For NLI it reads the hypothesis alone, the hypothesis-only baseline of
Gururangan et al. (2018) and Poliak et al. (2018). What it gets right is answerable from surface words alone, so it
splits every evaluation set into *artifact-easy* and *hard* rows, and its accuracy is the bar a model that learned
the task must clear on its own.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from qlora_diff.analysis.slices import ARTIFACT_EASY, ARTIFACT_HARD, row_features, stopwords
from qlora_diff.core import atomic
from qlora_diff.core.config import Config
from qlora_diff.core.errors import InputError
from qlora_diff.data.rows import training_pool


def training_rows(cfg: Config, finetune_rows_path: Path) -> list[dict]:
    """The rows named by ``hypothesis_baseline.train_rows``: the fine-tune's, or every usable train row."""
    if cfg.hypothesis_baseline.train_rows == "finetune":
        return atomic.read_jsonl(finetune_rows_path)
    return training_pool(cfg)[0]


def baseline_texts(cfg: Config, rows: list[dict]) -> list[str]:
    """What the baseline reads of each row: the task's ``baseline_field``, or every text field, one per line."""
    field = cfg.task_spec.baseline_field
    return [row[field] if field else "\n".join(row[name] for name in cfg.fields) for row in rows]


def fit(cfg: Config, rows: list[dict]) -> Pipeline:
    """Word n-gram TF-IDF + logistic regression on ``baseline_texts``; deterministic (lbfgs, sorted vocabulary)."""
    spec = cfg.hypothesis_baseline
    model = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, spec.ngram_max), min_df=spec.min_df, sublinear_tf=True)),
        ("classifier", LogisticRegression(C=spec.C, max_iter=spec.max_iter)),
    ])
    model.fit(baseline_texts(cfg, rows), [row["label"] for row in rows])
    # Two attributes make the pickle differ between runs: the pruned terms (a set, pickled in hash-seed order;
    # documented as safe to drop) and a cached id() of the stop-word list (read with a default). Without them the
    # pickle is byte-identical across processes, so DVC sees an unchanged output.
    vectorizer = model.named_steps["tfidf"]
    vectorizer.stop_words_ = None
    vars(vectorizer).pop("_stop_words_id", None)
    return model


def save(model: Pipeline, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(model, protocol=5))


def load(path: Path) -> Pipeline:
    if not path.is_file():
        raise InputError(f"{path} not found; run `dvc repro hypothesis_baseline` first.")
    return pickle.loads(path.read_bytes())


def slice_rows(cfg: Config, set_name: str, model: Pipeline, rows: list[dict]) -> list[dict]:
    """Per eval row: the baseline's prediction in the set's label space, and every slice feature."""
    collapse = cfg.eval_sets[set_name].collapse(cfg.data.labels)
    predicted = model.predict(baseline_texts(cfg, rows)) if rows else []
    ignored = stopwords(cfg.slices)
    out = []
    for row, label in zip(rows, predicted):
        prediction = collapse[str(label)]
        artifact = ARTIFACT_EASY if prediction == row["label"] else ARTIFACT_HARD
        out.append({"id": row["id"], "hypothesis_only_prediction": prediction,
                    "features": row_features(cfg, row, artifact, ignored)})
    return out
