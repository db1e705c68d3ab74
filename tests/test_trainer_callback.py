"""The Trainer callback (`collector.trainer_callback`) with real `transformers.Trainer` runs on CPU: a tiny randomly
initialized BERT fine-tuned for a few steps on a few hundred real SST-2 sentences (read from the public data at test
time, tokenized by a word-level tokenizer trained on them), evaluated with accuracy on a slice of the dev split.
Records go to a local knowledge base, to a live server, or to the spool file when the server is unreachable."""

from __future__ import annotations

import csv
import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import numpy as np  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)

from collector.formats import RawRecord  # noqa: E402
from collector.ingest import ingest_path, validate  # noqa: E402
from collector.schema import from_row  # noqa: E402
from collector.store import KnowledgeBase  # noqa: E402
from collector.trainer_callback import MetamlCallback, MetamlCallbackWarning, StopRule, build_record  # noqa: E402
from metaml_client import Client  # noqa: E402

N_TRAIN, N_DEV, MAX_LEN, STEPS = 320, 64, 48, 8


# ------------------------------------------------------------------------------------------------------------ setup


def _read_tsv(path: Path, n: int) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{"sentence": r["sentence"].strip(), "label": int(r["label"])}
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    random.Random(0).shuffle(rows)
    return rows[:n]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the suite runs two workers on two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sst2(public_data: Path) -> dict[str, Any]:
    """SST-2 train/dev rows ({sentence, label}) and a word-level tokenizer trained on them (no Hub access)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    folder = public_data / "text" / "glue_sst2"
    train, dev = _read_tsv(folder / "train.tsv", N_TRAIN), _read_tsv(folder / "dev.tsv", N_DEV)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([r["sentence"] for r in train + dev],
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    return {"train": train, "dev": dev, "tokenizer": tokenizer}


def _model(vocab: int, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2))


def _accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}


def _train(sst2: dict[str, Any], out: Path, model: Any, callbacks: list[TrainerCallback], *, evaluate: bool = True,
           **overrides: Any) -> Trainer:
    """Train ``model`` for a few steps; the datasets are lists of raw rows, tokenized by the collator."""
    tokenizer = sst2["tokenizer"]

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = tokenizer([r["sentence"] for r in rows], padding=True, truncation=True, max_length=MAX_LEN,
                          return_tensors="pt")
        return {**batch, "labels": torch.tensor([r["label"] for r in rows])}

    settings: dict[str, Any] = {
        "output_dir": str(out), "max_steps": STEPS, "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 64, "learning_rate": 2e-3, "logging_steps": 2, "save_strategy": "no",
        "report_to": [], "use_cpu": True, "seed": 0, "disable_tqdm": True, "remove_unused_columns": False,
        "eval_strategy": "steps" if evaluate else "no", "eval_steps": STEPS // 2,
    }
    settings.update(overrides)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=list(sst2["train"]),
                      eval_dataset=list(sst2["dev"]) if evaluate else None, data_collator=collate,
                      compute_metrics=_accuracy if evaluate else None, callbacks=callbacks)
    trainer.train()
    return trainer


def _final_eval(trainer: Trainer) -> dict[str, float]:
    return next(e for e in reversed(trainer.state.log_history) if "eval_accuracy" in e)


class _Columns:
    """A ``datasets.Dataset``-like table: column names, column access by name, rows by index."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows
        self.column_names = list(rows[0])

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key: str | int) -> Any:
        return [r[key] for r in self._rows] if isinstance(key, str) else self._rows[key]


# ------------------------------------------------------------------------------------------------------------ tests


def test_full_fine_tuning_is_appended_to_a_local_knowledge_base(sst2: dict[str, Any], tmp_path: Path) -> None:
    model = _model(len(sst2["tokenizer"]))
    backbone = sum(p.numel() for p in model.bert.parameters())
    everything = sum(p.numel() for p in model.parameters())
    callback = MetamlCallback("SST-2", kb=tmp_path / "kb.duckdb", max_seq_length=MAX_LEN)
    trainer = _train(sst2, tmp_path / "out", model, [callback])

    assert callback.error is None
    report = callback.ingest_report
    assert report is not None and (report.ingested, report.rejected) == (1, 0)
    stored = from_row(KnowledgeBase(tmp_path / "kb.duckdb").get(report.inserted_ids[0]))
    assert stored["run_id"] == callback.run_id

    meta = stored["dataset"]["meta"]  # the training rows the Trainer read (its dataset holds the raw sentences)
    labels = [r["label"] for r in sst2["train"]]
    assert stored["dataset"]["name"] == "glue/sst2" and stored["dataset"]["n_train_used"] == N_TRAIN
    assert (meta["n_samples"], meta["n_classes"], meta["n_text_fields"], meta["language"]) == (N_TRAIN, 2, 1, "en")
    assert meta["max_class_share"] == pytest.approx(max(labels.count(0), labels.count(1)) / N_TRAIN)
    assert 0 < meta["landmark_tfidf_lr"] <= 1 and meta["vocab_size"] > 500

    m = stored["model"]
    assert (m["id"], m["family"], m["arch_type"]) == ("bert", "bert", "encoder")
    assert m["n_params"] == backbone  # BERT is counted exactly: the backbone with its pooler, no classifier
    assert (m["n_layers"], m["hidden_size"], m["n_heads"], m["max_positions"]) == (2, 32, 2, 64)
    assert stored["method"]["name"] == "full" and stored["method"]["trainable_params"] == everything

    hp = stored["hparams"]
    assert hp["learning_rate"] == pytest.approx(2e-3) and hp["max_steps"] == STEPS
    assert (hp["batch_size"], hp["per_device_batch_size"], hp["seed"], hp["max_seq_length"]) == (16, 16, 0, MAX_LEN)
    assert (hp["optimizer"], hp["lr_scheduler"], hp["precision"]) == ("adamw", "linear", "fp32")
    assert hp["extra"]["total_steps"] == STEPS

    out = stored["outcome"]
    final = _final_eval(trainer)
    assert stored["task"] == {"type": "text-classification", "primary_metric": "accuracy", "metric_scale": "unit",
                              "higher_is_better": True}
    assert out["status"] == "ok" and out["split"] == "validation"
    assert out["score"] == pytest.approx(final["eval_accuracy"])
    assert out["metrics"]["loss"] == pytest.approx(final["eval_loss"]) and "train_loss" in out["metrics"]
    assert out["runtime_s"] > 0 and out["peak_memory_gb"] > 0
    losses = [p for p in out["curve"] if p["metric"] == "train_loss"]
    assert [p["step"] for p in losses] == list(range(2, STEPS + 1, 2))
    assert [p["step"] for p in out["curve"] if p["metric"] == "accuracy"] == [STEPS // 2, STEPS]
    assert stored["hardware"]["accelerator"] == "cpu"
    assert {"pytorch", "transformers"} <= set(stored["hardware"]["software"])
    assert stored["provenance"]["source"] == "trainer_callback"
    assert stored["provenance"]["locator"] == str((tmp_path / "out").resolve())

    written = json.loads((tmp_path / "out" / "metaml_run.json").read_text())
    assert written == callback.record and callback.record_path == tmp_path / "out" / "metaml_run.json"


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft on transformers 5
def test_lora_run_is_posted_to_a_live_server(sst2: dict[str, Any], tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from service.keys import create_key
    from service.testing import ServerProcess

    key = create_key(tmp_path / "keys.db", "trainer", ["write"])[1]
    model = peft.get_peft_model(_model(len(sst2["tokenizer"])), peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"]))
    total = sum(p.numel() for p in model.parameters())
    with ServerProcess(tmp_path / "kb.duckdb", settings={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}) \
            as server, Client(server.url, api_key=key, timeout=60) as client:
        # The raw split as a datasets-like table; its meta-features are computed by the service's describe endpoint.
        callback = MetamlCallback("glue/sst2", client=client, train_data=_Columns(sst2["train"]), features="server",
                                  model_id="prajjwal1/bert-tiny", landmark_sample=0)
        trainer = _train(sst2, tmp_path / "out", model, [callback])
        up = callback.upload_result
        assert up is not None and (up.accepted, up.rejected, up.uploader) == (1, 0, "trainer")
        stored = client.get_run(up.records[0].run_id)

    assert callback.error is None and callback.spooled_to is None
    method = stored["method"]
    assert (method["name"], method["kind"], method["lora_r"], method["lora_alpha"]) == ("lora", "reparameterization",
                                                                                        4, 8.0)
    assert method["lora_dropout"] == pytest.approx(0.1) and method["target_modules"] == ["query", "value"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert method["trainable_params"] == trainable < total / 10
    assert method["config"]["library"] == "peft" and method["config"]["task_type"] == "SEQ_CLS"
    assert stored["model"]["id"] == "prajjwal1/bert-tiny" and stored["model"]["n_layers"] == 2
    assert stored["dataset"]["meta"]["n_classes"] == 2 and stored["dataset"]["meta"]["n_samples"] == N_TRAIN
    assert "landmark_tfidf_lr" not in stored["dataset"]["meta"]
    assert stored["outcome"]["score"] == pytest.approx(_final_eval(trainer)["eval_accuracy"])
    assert stored["hardware"]["software"]["peft"] == peft.__version__
    assert stored["provenance"]["uploader"] == "trainer"


def test_bitfit_is_detected_from_requires_grad(sst2: dict[str, Any], tmp_path: Path) -> None:
    model = _model(len(sst2["tokenizer"]))
    for name, p in model.bert.named_parameters():
        p.requires_grad = name.endswith("bias")
    texts, labels = [r["sentence"] for r in sst2["train"]], [r["label"] for r in sst2["train"]]
    callback = MetamlCallback("glue/sst2", train_data=(texts, labels), features="none")
    _train(sst2, tmp_path / "out", model, [callback])

    record = callback.record
    assert callback.error is None and record is not None and record["method"]["name"] == "bitfit"
    biases = sum(p.numel() for n, p in model.bert.named_parameters() if n.endswith("bias"))
    head = sum(p.numel() for p in model.classifier.parameters())
    assert record["method"]["trainable_params"] == biases + head
    assert record["dataset"] == {"name": "glue/sst2", "n_train_used": N_TRAIN}  # features="none"


def test_partial_freezing_and_build_record_without_a_trainer(sst2: dict[str, Any], tmp_path: Path) -> None:
    """``build_record`` from arguments, a state and a model: leading layers frozen, a percent accuracy, a run without
    evaluation."""
    model = _model(len(sst2["tokenizer"]))
    for name, p in model.bert.named_parameters():
        p.requires_grad = not (name.startswith("embeddings.") or name.startswith("encoder.layer.0."))
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=8,
                             gradient_accumulation_steps=4, learning_rate=3e-5, warmup_steps=0.1, weight_decay=0.01,
                             report_to=[], use_cpu=True, seed=7)
    state = TrainerState(global_step=30, log_history=[
        {"loss": 0.69, "step": 10, "epoch": 1.0},
        {"eval_loss": 0.6, "eval_accuracy": 81.25, "eval_runtime": 0.5, "step": 10, "epoch": 1.0},
        {"loss": 0.41, "step": 30, "epoch": 3.0},
        {"eval_loss": 0.5, "eval_accuracy": 87.5, "eval_runtime": 0.5, "step": 30, "epoch": 3.0},
        {"train_runtime": 12.5, "train_loss": 0.5, "total_flos": 1e9, "step": 30, "epoch": 3.0},
    ])
    rows = {"sentence": [r["sentence"] for r in sst2["train"]], "label": [r["label"] for r in sst2["train"]]}
    record = build_record(args, state, model, dataset="sst2", train_data=rows, landmark_sample=0,
                          model_id="google-bert/bert-base-uncased")
    assert record["method"]["name"] == "partial_freeze" and record["method"]["n_frozen_layers"] == 1
    assert record["method"]["config"] == {"frozen_embeddings": True}
    hp = record["hparams"]
    assert (hp["batch_size"], hp["per_device_batch_size"], hp["gradient_accumulation_steps"]) == (32, 8, 4)
    assert (hp["epochs"], hp["warmup_ratio"], hp["weight_decay"], hp["seed"]) == (3.0, 0.1, 0.01, 7)
    assert record["dataset"]["meta"]["n_samples"] == N_TRAIN

    stored = validate(RawRecord(record, "test"), source="test")
    assert not hasattr(stored, "reason"), stored
    assert stored.task.metric_scale == "unit" and stored.outcome.score == pytest.approx(0.875)  # percent, normalized
    assert [p.value for p in stored.outcome.curve if p.metric == "accuracy"] == [0.8125, 0.875]
    assert stored.outcome.runtime_s == 12.5 and stored.model.id == "bert-base-uncased"

    custom = TrainerState(log_history=[{"eval_reward": 3.5, "step": 30, "epoch": 3.0}])
    task = build_record(args, custom, model, dataset="sst2", features="none", primary_metric="eval_reward")
    assert task["task"] == {"type": "text-classification", "primary_metric": "reward",
                            "metric_scale": "unbounded", "higher_is_better": True}
    assert task["outcome"]["score"] == 3.5

    unevaluated = TrainerState(global_step=30, log_history=[state.log_history[0], state.log_history[-1]])
    with pytest.warns(MetamlCallbackWarning, match="no evaluation"):
        bare = build_record(args, unevaluated, model, dataset="sst2", features="none")
    rejected = validate(RawRecord(bare, "test"), source="test")
    assert "outcome.score is required" in rejected.reason  # reported by validation, never stored silently


def test_unreachable_server_spools_the_record(sst2: dict[str, Any], tmp_path: Path) -> None:
    from service.testing import free_port

    client = Client(f"http://127.0.0.1:{free_port()}", api_key="mk_000000000000_unused-secret-0000000", retries=0)
    callback = MetamlCallback("glue/sst2", client=client, features="none")
    with pytest.warns(MetamlCallbackWarning, match="metaml_spool.jsonl"):
        _train(sst2, tmp_path / "out", _model(len(sst2["tokenizer"])), [callback])
    client.close()

    assert callback.upload_result is None and callback.spooled_to == tmp_path / "out" / "metaml_spool.jsonl"
    lines = callback.spooled_to.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == callback.record
    # The spool is canonical JSON Lines: it can be sent later as it is.
    reports = ingest_path(KnowledgeBase(tmp_path / "kb.duckdb"), callback.spooled_to)
    assert [(r.ingested, r.rejected) for r in reports] == [(1, 0)]


def test_nan_loss_is_recorded_as_diverged(sst2: dict[str, Any], tmp_path: Path) -> None:
    class PoisonWeights(TrainerCallback):
        """Sets the classifier's weights to NaN after the second step: every later loss is NaN."""

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step == 2:
                with torch.no_grad():
                    model.classifier.weight.fill_(float("nan"))

    callback = MetamlCallback("glue/sst2", kb=tmp_path / "kb.duckdb", features="none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(sst2, tmp_path / "out", _model(len(sst2["tokenizer"])), [PoisonWeights(), callback])

    assert callback.error is None and not [w for w in caught if w.category is MetamlCallbackWarning]
    report = callback.ingest_report
    assert report is not None and report.ingested == 1
    stored = from_row(KnowledgeBase(tmp_path / "kb.duckdb").get(report.inserted_ids[0]))
    out = stored["outcome"]
    assert (out["status"], out["error_kind"]) == ("failed", "diverged")
    assert "non-finite" in out["error_message"] and "loss" not in out["metrics"]
    assert 0 <= out["score"] <= 1  # the accuracy of NaN logits is still measured


def test_misuse_is_refused_early() -> None:
    with pytest.raises(ValueError, match="features"):
        MetamlCallback("glue/sst2", features="remote")
    with pytest.raises(ValueError, match="dataset"):
        MetamlCallback(" ")


def test_a_run_is_stopped_from_its_partial_curve(sst2: dict[str, Any], public_data: Path, tmp_path: Path) -> None:
    """Against a live server whose artifact holds a curve estimator (fit on the real OPDA and PEFT comparison
    curves): with the search's best at 0.99, the tiny model's accuracy at its first evaluation (half its steps) cannot
    get there, so training stops there and the run is stored as stopped (no score, its curve kept); with the best at
    0.0 it trains to the end and is stored with its score."""
    from factories import curve_knowledge_base, curve_model_artifact

    from service.keys import create_key
    from service.testing import ServerProcess

    kb = curve_knowledge_base(public_data, tmp_path)
    settings = {"model_path": curve_model_artifact(kb, tmp_path / "model"),
                "tracking_uri": f"sqlite:///{tmp_path / 'no-registry' / 'mlflow.db'}"}
    key = create_key(tmp_path / "keys.db", "trainer", ["read", "write"])[1]
    with ServerProcess(kb.path, settings=settings) as server, Client(server.url, api_key=key, timeout=60) as client:
        stopping = MetamlCallback("glue/sst2", client=client, train_data=sst2["train"], features="none",
                                  stop=StopRule(incumbent=0.99))
        stopped = _train(sst2, tmp_path / "stopped", _model(len(sst2["tokenizer"])), [stopping])
        running = MetamlCallback("glue/sst2", client=client, train_data=sst2["train"], features="none",
                                 stop=StopRule(incumbent=0.0))
        finished = _train(sst2, tmp_path / "finished", _model(len(sst2["tokenizer"])), [running])
        stored = client.get_run(stopping.upload_result.records[0].run_id)

    assert stopped.state.global_step == STEPS // 2 and len(stopping.decisions) == 1
    decision = stopping.stopped
    assert decision is not None and decision.stop and decision.p_above < decision.threshold
    assert decision.progress == pytest.approx(0.5) and decision.incumbent_points == pytest.approx(99.0)
    outcome = stopping.record["outcome"]
    assert outcome["status"] == "stopped" and "score" not in outcome and stopping.run_id is not None
    assert any(p["metric"] == "accuracy" and p["step"] == STEPS // 2 for p in outcome["curve"])
    assert stopping.upload_result.accepted == 1 and stored["outcome"]["status"] == "stopped"
    assert stored["outcome"].get("score") is None
    assert finished.state.global_step == STEPS and running.stopped is None
    assert [d.action for d in running.decisions] == ["continue", "continue"]
    assert running.record["outcome"]["status"] == "ok"
    assert running.record["outcome"]["score"] == pytest.approx(_final_eval(finished)["eval_accuracy"])


def test_stopping_needs_a_client_that_can_ask() -> None:
    """A stop rule without a client (or with one that has no decide_curve) is refused at construction."""
    with pytest.raises(ValueError, match="decide_curve"):
        MetamlCallback("glue/sst2", stop=StopRule(incumbent=0.9))
