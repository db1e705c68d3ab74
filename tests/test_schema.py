"""The run record: derived schemas agree, validation normalizes, identity is content-derived."""

from __future__ import annotations

import duckdb
import jsonschema
import pyarrow as pa
import pytest
from factories import record
from pydantic import ValidationError

from collector.schema import (
    RunRecord,
    arrow_schema,
    columns,
    duckdb_ddl,
    from_row,
    json_schema,
    to_row,
)

DUCK_TO_ARROW = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}


def _json_leaves(schema: dict, node: dict, prefix: str = "") -> dict[str, dict]:
    """Flatten a JSON Schema into {flat_name: leaf schema}, following $refs into nested objects."""
    defs = schema.get("$defs", {})
    out: dict[str, dict] = {}
    for name, prop in node.get("properties", {}).items():
        target = prop
        if "$ref" in prop:
            target = defs[prop["$ref"].split("/")[-1]]
        elif "anyOf" in prop:
            refs = [p for p in prop["anyOf"] if "$ref" in p]
            if refs:
                target = defs[refs[0]["$ref"].split("/")[-1]]
        key = f"{prefix}{name}"
        if target.get("type") == "object" and "properties" in target:
            out.update(_json_leaves(schema, target, key + "_"))
        else:
            out[key] = prop
    return out


def test_ddl_arrow_and_json_schema_have_the_same_columns() -> None:
    """The DuckDB table, the Arrow schema and the JSON Schema list exactly the same leaf fields, in one order."""
    con = duckdb.connect()
    con.execute(duckdb_ddl())
    described = con.execute("DESCRIBE runs").fetchall()
    duck_names = [r[0] for r in described]
    assert duck_names == [c.name for c in columns()]
    assert arrow_schema().names == duck_names
    assert list(_json_leaves(json_schema(), json_schema())) == duck_names


def test_types_agree_between_duckdb_and_arrow() -> None:
    """A table created from the DDL, read back as Arrow, has the Arrow schema's types (timestamps aside: UTC)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(duckdb_ddl())
    read_back = con.sql("SELECT * FROM runs").to_arrow_table().schema
    for field in arrow_schema():
        got = read_back.field(field.name).type
        if pa.types.is_timestamp(field.type):
            assert pa.types.is_timestamp(got) and got.unit == "us"
        else:
            assert got == field.type, field.name
    for c in columns():
        if c.duckdb in DUCK_TO_ARROW:
            assert DUCK_TO_ARROW[c.duckdb] == c.arrow


def test_json_schema_types_agree_with_columns() -> None:
    """Every JSON Schema leaf accepts what its column holds: numbers for DOUBLE, integers for BIGINT, and so on."""
    leaves = _json_leaves(json_schema(), json_schema())
    for c in columns():
        leaf = leaves[c.name]
        kinds = {leaf.get("type")} | {p.get("type") for p in leaf.get("anyOf", [])}
        if c.duckdb == "BIGINT":
            assert "integer" in kinds, c.name
        elif c.duckdb == "DOUBLE":
            assert "number" in kinds, c.name
        elif c.duckdb == "BOOLEAN":
            assert "boolean" in kinds, c.name
        elif c.duckdb.startswith("MAP") or c.json:
            assert "object" in kinds, c.name
        elif c.duckdb.endswith("[]"):
            assert "array" in kinds, c.name


def test_json_schema_validates_what_the_model_accepts_and_refuses_what_it_refuses() -> None:
    """A valid record passes the JSON Schema; a negative learning rate fails both the schema and the model."""
    schema = json_schema()
    jsonschema.validate(record(1), schema)
    bad = record(1, hparams__learning_rate=-1.0)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ValidationError):
        RunRecord.model_validate(bad)


def test_normalization_of_scale_names_and_aliases() -> None:
    """Percent scores become fractions; method, model and dataset aliases resolve to canonical names."""
    r = RunRecord.model_validate(record(
        2,
        task__metric_scale="percent",
        task__primary_metric="eval_accuracy",
        outcome__score=91.5,
        outcome__metrics={"eval_accuracy": 91.5, "eval_loss": 0.3},
        method__name="Pfeiffer",
        model__id="FacebookAI/roberta-base",
        dataset__name="SST-2",
    ))
    assert r.task.primary_metric == "accuracy"
    assert r.task.metric_scale == "unit"
    assert r.outcome.score == pytest.approx(0.915)
    assert r.outcome.metrics == {"eval_accuracy": pytest.approx(0.915), "eval_loss": 0.3}
    assert r.method.name == "adapter" and r.method.kind == "additive"
    assert r.model.id == "roberta-base"
    assert r.dataset.name == "glue/sst2"
    assert RunRecord.model_validate(r.model_dump()) == r, "normalization must be idempotent"


def test_lower_is_better_metric_is_declared() -> None:
    """MAE is known as lower-is-better on an unbounded scale; an unknown metric must declare both."""
    r = RunRecord.model_validate(record(3, task__primary_metric="mean_absolute_error", outcome__score=75.2,
                                        outcome__metrics={}))
    assert r.task.primary_metric == "mae" and r.task.higher_is_better is False
    with pytest.raises(ValidationError, match=r"declare task\.metric_scale"):
        RunRecord.model_validate(record(3, task__primary_metric="bertscore"))
    ok = RunRecord.model_validate(record(3, task__primary_metric="bertscore", task__metric_scale="unit",
                                         task__higher_is_better=True))
    assert ok.task.higher_is_better is True


def test_run_id_depends_on_content_not_on_provenance_or_enrichment() -> None:
    """Same run from two files and with features attached has one id; a different seed is a different run."""
    a = RunRecord.model_validate(record(5))
    b = RunRecord.model_validate(record(5, provenance__uri="elsewhere.jsonl", provenance__uploader="bob",
                                        dataset__meta={"n_classes": 2}, model__n_params=124_645_632))
    c = RunRecord.model_validate(record(6))
    d = RunRecord.model_validate(record(5, task__metric_scale="percent", outcome__score=a.outcome.score * 100,
                                        outcome__metrics={"accuracy": 91.0, "loss": 0.25},
                                        outcome__curve=[{"epoch": 1, "metric": "accuracy", "value": 88.0},
                                                        {"epoch": 2, "metric": "accuracy", "value": 90.0}]))
    assert a.run_id == b.run_id
    assert a.run_id != c.run_id
    assert len(a.run_id) == 32
    e = RunRecord.model_validate(record(5, outcome__metrics={"accuracy": 0.91, "loss": 0.25}))
    assert d.run_id == e.run_id, "the same scores in percent and in fractions are the same run"


def test_supplied_run_id_must_match() -> None:
    """A record carrying a wrong run_id is refused; carrying the right one is accepted."""
    good = RunRecord.model_validate(record(7))
    assert RunRecord.model_validate({**record(7), "run_id": good.run_id}).run_id == good.run_id
    with pytest.raises(ValidationError, match="does not match"):
        RunRecord.model_validate({**record(7), "run_id": "0" * 32})


def test_status_rules() -> None:
    """An ok run needs a score; a failed run gets error kind 'error' unless it names one."""
    with pytest.raises(ValidationError, match="score is required"):
        RunRecord.model_validate(record(8, outcome__score=None))
    failed = RunRecord.model_validate(record(8, outcome__status="failed", outcome__score=None))
    assert failed.outcome.error_kind == "error"
    oom = RunRecord.model_validate(record(8, outcome__status="failed", outcome__error_kind="oom", outcome__score=None))
    assert oom.outcome.error_kind == "oom"


def test_flat_row_round_trip() -> None:
    """to_row then from_row rebuilds the same record, maps, lists, curves and JSON columns included."""
    r = RunRecord.model_validate(record(9, method__config={"adapter_type": "pfeiffer", "layers": [1, 2]},
                                        hparams__extra={"card_learning_rate": 1e-4}))
    row = to_row(r)
    assert row["method_config"] == '{"adapter_type": "pfeiffer", "layers": [1, 2]}'
    assert row["outcome_metrics"] == [("accuracy", 0.91), ("loss", 0.25)]
    table = pa.Table.from_pylist([row], schema=arrow_schema())
    back = RunRecord.model_validate(from_row(table.to_pylist()[0]))
    assert back == r


def test_newer_major_schema_version_is_refused() -> None:
    """A record written by an incompatible future schema is rejected with a message naming both versions."""
    with pytest.raises(ValidationError, match="not readable"):
        RunRecord.model_validate({**record(1), "schema_version": "2.0"})
