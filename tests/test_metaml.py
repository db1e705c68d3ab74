"""The meta-learner: scikit-learn contract, protocols that cannot leak, metrics, and a small real evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from collector.ingest import ingest_path
from collector.store import KnowledgeBase
from metaml import (
    BASELINES,
    CostEstimator,
    FailureEstimator,
    MetaModel,
    OutcomeEstimator,
    RunFeaturizer,
    evaluate,
    folds,
    groups_for,
    learning_frame,
    load_runs,
    task_metrics,
)
from metaml._evaluate import default_predictors


@parametrize_with_checks([OutcomeEstimator(n_estimators=20, min_child_samples=3),
                          CostEstimator(n_estimators=20, min_child_samples=3),
                          FailureEstimator(n_estimators=20, min_child_samples=3)])
def test_sklearn_contract(estimator, check) -> None:
    """The estimators pass scikit-learn's own estimator checks."""
    check(estimator)


@pytest.fixture(scope="module")
def runs(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Real runs: TransferGraph text + image, OPDA and TaskWeb, from their shipped files."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("metaml") / "kb.duckdb")
    root = public_data / "metadatasets"
    for folder in ("transfergraph", "opda_deberta", "taskweb"):
        ingest_path(kb, root / folder)
    from collector.enrich import enrich_models

    enrich_models(kb)
    return load_runs(kb)


@pytest.mark.parametrize("protocol", ["lodo", "lomo", "lofo", "loso", "gkfold"])
def test_protocols_never_put_a_held_out_unit_in_training(runs: pd.DataFrame, protocol: str) -> None:
    """For every fold, the held-out units (datasets, models with their derived checkpoints, families, sources) are
    absent from the training rows, and every test row belongs to a held-out unit."""
    frame = learning_frame(runs)
    groups = groups_for(frame, protocol).to_numpy()
    n = 0
    for held_out, train, test in folds(frame, protocol, max_folds=6):
        assert not set(groups[train]) & set(groups[test]), held_out
        assert len(test) and len(train)
        assert set(train).isdisjoint(test)
        if protocol != "gkfold":
            assert set(groups[test]) == {held_out}
        n += 1
    assert n >= 2


def test_lodo_holds_out_every_task_of_a_dataset(runs: pd.DataFrame) -> None:
    """Leave-one-dataset-out never splits the runs of one task (or one dataset) across training and test."""
    frame = learning_frame(runs)
    for _, train, test in folds(frame, "lodo", max_folds=5):
        assert not set(frame["task_key"].iloc[train]) & set(frame["task_key"].iloc[test])


def test_featurizer_encodings_leave_out_the_rows_own_dataset(runs: pd.DataFrame) -> None:
    """A training row's experience features never use its own dataset's scores: shuffling the scores of one
    TaskWeb dataset's runs leaves that dataset's standings and lookup unchanged, and changes other datasets'."""
    frame = learning_frame(runs).dropna(subset=["points"]).reset_index(drop=True)
    a = RunFeaturizer(model_dropout=0).fit_transform(frame, frame["points"])
    target = "imdb"
    shuffled = frame["points"].copy()
    mask = frame["dataset_name"] == target
    shuffled[mask] = np.random.default_rng(0).permutation(shuffled[mask].to_numpy())
    b = RunFeaturizer(model_dropout=0).fit_transform(frame, shuffled)
    pd.testing.assert_series_equal(a.loc[mask, "a_ckpt_method"], b.loc[mask, "a_ckpt_method"])
    pd.testing.assert_series_equal(a.loc[mask, "lookup"], b.loc[mask, "lookup"])
    assert not a.loc[~mask, "a_ckpt_method"].equals(b.loc[~mask, "a_ckpt_method"])


def test_featurizer_handles_missing_features_without_dropping_runs(runs: pd.DataFrame) -> None:
    """Runs lacking meta-features or model features are kept (NaN features), and unseen categories become NaN."""
    frame = learning_frame(runs).dropna(subset=["points"]).reset_index(drop=True)
    fz = RunFeaturizer().fit(frame, frame["points"])
    odd = frame.head(5).copy()
    odd["model_family"] = "never-seen-family"
    odd[[c for c in odd.columns if c.startswith("dataset_meta_")]] = None
    out = fz.transform(odd)
    assert len(out) == 5 and out["m_family"].isna().all()
    assert list(out.columns) == list(fz.get_feature_names_out())


def test_task_metrics_on_known_cases() -> None:
    """A perfect ranking has Spearman 1 and regret 0; a reversed one has Spearman -1 and the full range as regret."""
    actual = np.array([70.0, 80.0, 90.0, 60.0])
    perfect = task_metrics(actual, actual)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["regret@1"] == 0 and perfect["ndcg@5"] == 1.0
    reverse = task_metrics(actual, -actual)
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["regret@1"] == pytest.approx(30.0)
    covered = task_metrics(actual, actual, lo=actual - 1, hi=actual + 1)
    assert covered["coverage"] == 1.0


def test_meta_model_predicts_scores_intervals_cost_and_failure(runs: pd.DataFrame) -> None:
    """Fitted on real runs, the meta-model answers every output for new rows with sane ranges."""
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=60)).fit(runs)
    pred = model.predict(runs.head(200))
    assert set(pred.columns) == {"points", "lo", "hi", "rank_score", "runtime_s", "p_fail"}
    assert (pred["lo"] <= pred["points"]).all() and (pred["points"] <= pred["hi"]).all()
    assert pred["p_fail"].between(0, 1).all() and (pred["runtime_s"].dropna() >= 0).all()


def test_small_lodo_evaluation_beats_random(runs: pd.DataFrame) -> None:
    """On a few held-out datasets the meta-learner ranks better than the random baseline, and every baseline runs."""
    result = evaluate(runs, "lodo", predictors=default_predictors(n_estimators=60), max_folds=4, seed=3)
    summary = result.summary()
    assert set(summary.index) == {"metaml", *BASELINES}
    assert summary.loc["metaml", "spearman"] > summary.loc["random", "spearman"]
    assert 0 <= summary.loc["metaml", "coverage"] <= 1


def test_transfer_evaluation_restricts_training_and_test_sources(runs: pd.DataFrame) -> None:
    """With train/test sources, only the test source's held-out runs are scored, and folds still never leak."""
    result = evaluate(runs, "lodo", predictors={"global_mean": BASELINES["global_mean"]}, max_folds=3, seed=1,
                      train_sources=["taskweb"], test_sources=["transfergraph"])
    assert len(result.folds) == 3
    assert set(result.predictions["provenance_source"]) == {"transfergraph"}


def test_configuration_keys_are_stable_across_dtypes_and_releases() -> None:
    """A configuration's key is the same whatever its columns' dtypes (8, "8" and 8.0 alike; 2e-05 however written),
    differs for -0.0 and 0.0 as it always has, and equals the keys earlier releases computed: trained models look
    configurations up by these keys, so a change here would silently blind a served model."""
    from metaml._data import config_keys

    df = pd.DataFrame({"model_id": ["roberta-base", "roberta-base", "bert-base-uncased", None],
                       "method_name": ["lora", "lora", "full", "full"],
                       "method_lora_r": pd.Series([8, "8", None, 16.0], dtype=object),
                       "hparams_learning_rate": [2e-5, 2e-05, 1e-4, float("nan")],
                       "hparams_batch_size": pd.Series([16, 16, None, 32], dtype="Int64"),
                       "hparams_lr_scheduler": ["linear", "linear", None, "cosine"],
                       "hparams_weight_decay": pd.Series([0.0, -0.0, 0.01, None], dtype=object)})
    assert config_keys(df).tolist() == ["2084311998328971755", "8268960301005892633", "17896340102622803480",
                                        "1492206213676398571"]
    many = pd.concat([df] * 20, ignore_index=True)  # past the few rows hashed in one call
    assert config_keys(many).tolist() == config_keys(df).tolist() * 20
    same = df.iloc[[0, 0]].copy()
    same["method_lora_r"] = pd.Series([8.0, "8"], dtype=object).to_numpy()
    assert config_keys(same).nunique() == 1


def test_text_and_position_lookups_agree_with_pandas_for_few_and_many_values() -> None:
    """The shortcuts of the serving path (texts spelled once per distinct value, positions looked up in a dict once
    per distinct value) give what pandas gives: missing values of every kind, numbers mixed with texts, absent
    values; an index holding a missing value finds every missing value there, for few values as for many."""
    from metaml._data import positions, text_values

    mixed = np.array(["lora", None, float("nan"), pd.NA, 1, 1.0, True, "1", "lora", -0.0], dtype=object)
    texts = np.array(["lora", None, "full", "full", None, "ia3"] * 10, dtype=object)
    for values in (mixed, np.tile(mixed, 10), texts):
        expected = [None if pd.isna(v) else str(v) for v in values.tolist()]
        assert text_values(values).tolist() == expected
    index = pd.Index(["full", "lora", "ia3", "1"])
    for values in (mixed, np.tile(mixed, 300), texts):
        assert positions(index, values).tolist() == index.get_indexer(values).tolist()
    holding = pd.Index(["full", None, "lora"])  # every missing value is found where the index holds one
    assert positions(holding, mixed).tolist() == [2, 1, 1, 1, -1, -1, -1, -1, 2, -1]
    assert positions(holding, np.tile(mixed, 10)).tolist() == positions(holding, mixed).tolist() * 10


def test_featurizer_computes_what_a_pair_shares_once_with_the_same_matrix(runs: pd.DataFrame) -> None:
    """Candidates given with their (model, method) pair: the features that read no hyperparameter are computed once
    per pair and remembered for the next call, and the matrix is the one computed row by row (any labels for the
    pairs or their keys, one or many rows per pair, remembered or not, the rows as a frame or as the candidates'
    columns); configuration keys from remembered column hashes equal
    those hashed per row; a pickled featurizer leaves what it remembered behind; pairs of another length are
    refused."""
    import pickle

    from metaml._data import config_column_hashes, config_keys
    from metaml.serving import as_frame, candidate_columns, parse_candidates, task_row
    from service.testing import sample_candidates

    frame = learning_frame(runs).dropna(subset=["points"]).reset_index(drop=True)
    featurizer = RunFeaturizer().fit(frame, frame["points"])
    known = frame.loc[frame["dataset_meta_n_classes"].notna()].iloc[0:1]
    row = task_row({"primary_metric": "accuracy"}, {"name": known["dataset_name"].iloc[0]},
                   dataset_meta=_meta(known))
    for n in (1, 3, 40, 600):
        built = candidate_columns(row, parse_candidates(sample_candidates(n, seed=n)))
        rows, pairs = as_frame(built), built.pairs.codes
        assert n < 40 or len(np.unique(pairs)) < n / 3
        assert len(set(built.pairs.keys)) == len(built.pairs.keys) == len(np.unique(pairs))
        expected = featurizer._stack(featurizer._columns(rows, training=False), n)  # row by row
        for fresh_codes in (pairs, built.pairs):  # nothing remembered: by value, by the pairs' keys
            np.testing.assert_array_equal(RunFeaturizer().fit(frame, frame["points"]).transform_array(
                rows, pairs=fresh_codes), expected)
        np.testing.assert_array_equal(RunFeaturizer().fit(frame, frame["points"]).transform_array(
            built.columns, pairs=built.pairs), expected)  # the columns without a frame
        np.testing.assert_array_equal(featurizer.transform_array(rows), expected)
        np.testing.assert_array_equal(featurizer.transform_array(built.columns), expected)
        relabeled = np.random.default_rng(n).permutation(1000)[pairs]
        # computed, then remembered by value; then by key, computed and remembered (from a frame or the columns)
        for codes in (pairs, relabeled, pairs, built.pairs, built.pairs):
            np.testing.assert_array_equal(featurizer.transform_array(rows, pairs=codes), expected)
            np.testing.assert_array_equal(featurizer.transform_array(built.columns, pairs=codes), expected)
        cols = [c for c in rows if c in ("model_id", "method_name", "method_lora_r")]
        hashes = dict(zip(cols, config_column_hashes(rows, cols), strict=True))
        assert config_keys(rows, hashes=hashes).tolist() == config_keys(rows).tolist()
    assert len(featurizer._pair_cache) >= len(np.unique(pairs))
    from metaml._features import _content_keys

    signed = rows.iloc[[0, 0, 0]].copy()  # remembered by value: 0.0 and -0.0 apart (configuration keys differ)
    signed["method_lora_dropout"] = pd.Series([0.0, -0.0, 0.0], dtype=object).to_numpy()
    first, negative, again = _content_keys(signed)
    assert first == again and first != negative
    assert "_pair_cache" not in pickle.loads(pickle.dumps(featurizer)).__dict__
    with pytest.raises(ValueError, match="codes for"):
        featurizer.transform_array(rows, pairs=pairs[:-1])


def _meta(first: pd.DataFrame) -> Any:
    from collector.schema import DatasetMeta

    values = {c[len("dataset_meta_"):]: first[c].iloc[0] for c in first if c.startswith("dataset_meta_")}
    return DatasetMeta.model_validate({k: v for k, v in values.items() if pd.notna(v)})
