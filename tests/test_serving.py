"""The serving library on a real DuckDB knowledge base: what counts as a described dataset, and the past runs that
support a prediction."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from factories import record, write_jsonl

from collector.ingest import ingest_path
from collector.schema import DatasetMeta
from collector.store import KnowledgeBase
from metaml.serving import load_snapshot


def test_only_datasets_with_meta_features_are_described(tmp_path: Path) -> None:
    """A dataset the knowledge base holds runs for but nothing describes is not described (like an unknown name);
    one whose runs carry a meta-feature is, with that value; both runs support predictions."""
    described = [record(i, dataset__name="my/described", dataset__meta={"n_classes": 3}) for i in range(3)]
    bare = [record(i, dataset__name="my/bare") for i in range(3)]
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    ingest_path(kb, write_jsonl(tmp_path / "runs.jsonl", described + bare))
    snapshot = load_snapshot(kb.path)
    assert snapshot.dataset_meta("my/bare") is None and snapshot.dataset_meta("no/such") is None
    assert snapshot.dataset_meta("my/described").n_classes == 3
    assert {"my/bare", "my/described"} <= set(snapshot.ds_names) and snapshot.n_runs == 6


def _support_by_hand(snapshot: Any, d_ds: np.ndarray, model: str, method: str, hp: np.ndarray, k: int,
                     cap: int) -> list[tuple[int, float]]:
    """The support rule (docs/api.md) run by run: (run, distance) of the ``k`` nearest."""
    r = snapshot.runs
    same = [i for i in range(snapshot.n_runs) if (r["model_id"][i], r["method_name"][i]) == (model, method)]
    d_data = {i: float(d_ds[snapshot.run_ds[i]]) for i in same}
    if len(same) > cap:
        same = sorted(same, key=lambda i: (d_data[i], i))[:cap]
    ranked = []
    for i in same:
        diffs = [abs(a - b) for a, b in zip(hp.tolist(), snapshot.run_hp[i].tolist(), strict=True)
                 if not (math.isnan(a) or math.isnan(b))]
        d_hp = sum(diffs) / len(diffs) if diffs else 0.5
        ranked.append((d_data[i] + 0.5 * d_hp, -float(r["outcome_score"][i]), i))
    return [(i, round(d, 6)) for d, _, i in sorted(ranked)[:k]]


def test_support_follows_the_rule_with_ties_and_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each candidate's supporting runs are those the rule names, computed here run by run: same model and method,
    nearest by d_data + 0.5 * d_hparams over the hyperparameters both have (0.5 when none), ties to the higher score
    then the earlier run id; past the cap of runs per pair, those on the nearest datasets (ties: the earlier runs).
    The JSON the answer writes is those runs' descriptions with their distances; a pair without runs has none."""
    from metaml.serving import _knowledge
    from metaml.serving._knowledge import _hp_terms, _numbers

    grid = itertools.product(["glue/sst2", "my/a", "my/b"], [1e-4, 3e-4, None], [16, 32], [3, None], ["lora", "full"])
    records = []
    for i, (ds, lr, batch, epochs, method) in enumerate(grid):
        hparams = {"learning_rate": lr, "batch_size": batch, "epochs": epochs, "seed": i}
        records.append(record(i, dataset__name=ds, dataset__meta={"n_classes": 2 + len(ds), "n_samples": 100 * i + 50},
                              method={"name": method}, hparams={k: v for k, v in hparams.items() if v is not None},
                              outcome__score=[0.7, 0.8, 0.8][i % 3]))  # equal scores: ties go on to the run id
    records.append(record(999, outcome__status="failed", outcome__error_kind="oom", outcome__score=None))
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    ingest_path(kb, write_jsonl(tmp_path / "runs.jsonl", records))
    snapshot = load_snapshot(kb.path)
    assert snapshot.n_runs == 72 and len(snapshot.pairs[("roberta-base", "lora")]) == 36  # past the caps below
    rng = np.random.default_rng(0)
    n = 200
    rows = {"model_id": np.array(["roberta-base"] * (n - 2) + ["bert-base-uncased", "roberta-base"], dtype=object),
            "method_name": np.array([*rng.choice(["lora", "full"], n - 1).tolist(), "ia3"], dtype=object),
            "hparams_learning_rate": np.array(rng.choice([1e-4, 3e-4, 2e-4, None], n), dtype=object),
            "hparams_batch_size": np.array(rng.choice([16, 32, 8, None], n), dtype=object),
            "hparams_epochs": np.array(rng.choice([3, 5, None], n), dtype=object)}
    hp = _hp_terms(*(_numbers(rows[c]) for c in ("hparams_learning_rate", "hparams_batch_size", "hparams_epochs")))
    meta = DatasetMeta(n_classes=3, n_samples=2000)
    d_ds = snapshot.dataset_distances(meta, None)
    for k, cap in ((3, 512), (5, 7), (1, 1)):
        monkeypatch.setattr(_knowledge, "MAX_PAIR_RUNS", cap)
        found = snapshot.support(meta, None, rows, k)
        assert found.runs.shape == found.distance.shape == (n, k)
        for c in range(n):
            expected = _support_by_hand(snapshot, d_ds, rows["model_id"][c], rows["method_name"][c], hp[c], k, cap)
            got = [(j, d) for j, d in zip(found.runs[c].tolist(), found.distance[c].tolist(), strict=True) if j >= 0]
            assert got == expected, (k, cap, c)
        assert (found.runs[-2:] == -1).all()  # no run of the pair
        answer = [json.loads(orjson.dumps(f)) for f in snapshot.support_json(found)]
        assert answer[-2:] == [[], []]
        assert answer[:-2] == [[{**snapshot.describe(j), "distance": d} for j, d in
                                zip(found.runs[c].tolist(), found.distance[c].tolist(), strict=True) if j >= 0]
                               for c in range(n - 2)]


def test_candidate_objects_read_in_one_pass_as_when_checked_one_by_one() -> None:
    """Candidate objects of known fields become the columns that checking each candidate's parts gives (parts left
    out, fields only some set, other methods); where a candidate needs its parts checked (not an object, an unknown
    field, a null model id, a null part), the error names the first such candidate and field."""
    from metaml.errors import InvalidCandidates
    from metaml.serving import object_candidates, task_row
    from metaml.serving._candidates import _object_columns, _plain_object_columns
    from service.testing import sample_candidates

    configs = sample_candidates(600, seed=7)
    del configs[3]["method"], configs[5]["hparams"]
    configs[8]["method"] = {"name": "lora", "lora_r": 16}
    configs[9]["hparams"]["weight_decay"] = 0.01
    plain = _plain_object_columns(configs)
    assert plain is not None and plain == _object_columns(configs, "candidates")
    assert plain["method.name"][3] == "full" and plain["hparams.learning_rate"][5] is None
    assert plain["method.lora_r"][8] == 16 and plain["method.lora_r"][7] is None
    row = task_row({"primary_metric": "accuracy"}, {"name": "glue/sst2"})
    built = object_candidates(row, configs)
    assert built.columns["hparams_weight_decay"][9] == 0.01 and len(built.pairs) == 600
    for place, change, loc in ((400, lambda c: c["model"].update(id=None), (400, "model", "id")),
                               (250, lambda c: c["hparams"].update(foo=1), (250, "hparams", "foo")),
                               (10, lambda c: c.update(hparams=None), (10, "hparams")),
                               (30, lambda c: c.update(extra={}), (30, "extra"))):
        bad = copy.deepcopy(configs)
        change(bad[place])
        assert _plain_object_columns(bad) is None
        with pytest.raises(InvalidCandidates) as e:
            object_candidates(row, bad)
        assert e.value.errors[0]["loc"][:len(loc) + 1] == ("candidates", *loc), e.value.errors
    with pytest.raises(InvalidCandidates) as e:
        object_candidates(row, [*configs[:5], ["not", "an", "object"]])
    assert e.value.errors[0]["loc"] == ("candidates", 5)
