"""Tests of the ``hf_cards`` and ``hub_samples`` importers on the real shipped files and on broken copies of them."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from collector.errors import FormatError
from collector.formats import RawRecord, Rejected, detect_format
from collector.importers.hf.card import parse_card
from collector.importers.hf.model_cards import CardContext, HubSamples, ModelCards, card_to_record
from collector.ingest import ingest_path
from collector.ingest._pipeline import validate
from collector.schema import RunRecord
from collector.store import KnowledgeBase

SOURCE = Path("metadatasets") / "hf_model_cards"


@pytest.fixture(scope="module")
def source_dir(public_data: Path) -> Path:
    """The shipped hf_model_cards folder (skips when the public data is absent)."""
    return public_data / SOURCE


@pytest.fixture(scope="module")
def cards_tar(source_dir: Path) -> Path:
    return source_dir / "cards.tar.gz"


@pytest.fixture(scope="module")
def hub_json(source_dir: Path) -> Path:
    return source_dir / "hub_samples_2023.json"


@pytest.fixture(scope="module")
def raw_cards(cards_tar: Path) -> dict[str, str]:
    """Every card of the archive as text, by ``author/model`` (read once, in place)."""
    out: dict[str, str] = {}
    with tarfile.open(cards_tar, "r:gz") as tar:
        for m in tar:
            if m.isfile():
                parts = [p for p in m.name.split("/") if p not in (".", "")]
                out["/".join(parts[:2])] = tar.extractfile(m).read().decode("utf-8")  # type: ignore[union-attr]
    return out


@pytest.fixture(scope="module")
def card_items(cards_tar: Path) -> dict[str, RawRecord | Rejected]:
    return {item.locator: item for item in ModelCards().read(cards_tar)}


@pytest.fixture(scope="module")
def hub_items(hub_json: Path) -> list[RawRecord | Rejected]:
    return list(HubSamples().read(hub_json))


@pytest.fixture(scope="module")
def ingested(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, list[Any]]:
    """The whole source folder ingested once into a fresh knowledge base (auto-detected formats)."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("hfcards") / "kb.duckdb")
    return kb, ingest_path(kb, source_dir)


def record(item: RawRecord | Rejected) -> RunRecord:
    """Validate a raw record the way the pipeline does; fails the test when it does not validate."""
    assert isinstance(item, RawRecord), item
    out = validate(item, source="hf_cards")
    assert isinstance(out, RunRecord), out
    return out


# --- the real files ----------------------------------------------------------------------------------------------


def test_counts_on_real_files(ingested: tuple[KnowledgeBase, list[Any]]) -> None:
    """All 800 cards and 758 Hub entries are accounted for; about half the cards and a third of the Hub entries
    with a Trainer block (167 per ORIGIN.txt) yield runs; nothing fails validation, no input errors."""
    _, reports = ingested
    by_format = {r.format: r for r in reports if not r.skipped}
    cards, hub = by_format["hf_cards"], by_format["hub_samples"]
    assert cards.read == 800 and cards.error is None
    assert 350 <= cards.ingested <= 420
    assert hub.read == 758 and hub.error is None
    assert 45 <= hub.ingested + hub.duplicates <= 70
    no_block = [r for r in hub.rejects if r.reason == "no Trainer hyperparameter block"]
    assert len(no_block) == 758 - 167
    for report in (cards, hub):
        assert not [r for r in report.rejects if "validation error" in r.reason.lower()]
    assert [r.uri for r in reports if r.skipped] and all(r.uri.endswith("ORIGIN.txt") for r in reports if r.skipped)


def test_every_card_accounted_once(card_items: dict[str, RawRecord | Rejected], raw_cards: dict[str, str]) -> None:
    """One item per card, located by the fine-tuned model's id, and every rejection carries a reason."""
    assert set(card_items) == set(raw_cards)
    assert all(i.reason for i in card_items.values() if isinstance(i, Rejected))


def test_spot_check_cola_card(card_items: dict[str, RawRecord | Rejected], raw_cards: dict[str, str]) -> None:
    """A Trainer card maps field by field: base model, glue/cola from the model-index args, the results list, the
    hyperparameter block, the per-epoch table (3 metrics x 5 epochs) and the framework versions."""
    mid = "123abhiALFLKFO/distilbert-base-uncased-finetuned-cola"
    raw = raw_cards[mid]
    r = record(card_items[mid])
    assert r.model.id == "distilbert-base-uncased"
    assert r.dataset.name == "glue/cola"
    assert r.task.type.value == "text-classification" and r.task.primary_metric == "matthews_correlation"
    assert r.outcome.score == pytest.approx(float(re.search(r"- Matthews Correlation: ([\d.]+)", raw).group(1)))
    assert r.outcome.metrics["loss"] == pytest.approx(0.8628)
    assert r.outcome.split == "validation"
    hp = r.hparams
    assert (hp.learning_rate, hp.per_device_batch_size, hp.batch_size, hp.seed, hp.epochs) == (2e-05, 16, 16, 42, 5.0)
    assert hp.optimizer == "adamw" and hp.lr_scheduler == "linear"
    assert hp.extra["output_model"] == mid and hp.extra["eval_batch_size"] == 16
    assert hp.extra["adam_beta2"] == 0.999 and hp.extra["adam_epsilon"] == 1e-08
    assert len(r.outcome.curve) == 15
    last = [p for p in r.outcome.curve if p.step == 2675]
    assert {p.metric: p.value for p in last} == {"train_loss": 0.1262, "loss": 0.8628, "matthews_correlation": 0.5331}
    assert all(p.epoch == 5.0 for p in last)
    assert r.hardware.software == {"transformers": "4.9.1", "pytorch": "1.9.0+cu102", "datasets": "1.11.0",
                                   "tokenizers": "0.10.3"}
    assert r.method.name == "full"
    assert r.provenance.locator == mid and r.provenance.license == "apache-2.0"


def test_spot_check_speech_card(card_items: dict[str, RawRecord | Rejected]) -> None:
    """A hand-edited ASR card: the sentence's dataset (Common Voice 8, agreeing with the front matter) wins over the
    model-index's first result (Common Voice 7 with a language model); the score is the Trainer's own WER from the
    results list, not the model-index's 11.77 (a test-set WER with LM); accumulation and AMP are mapped."""
    r = record(card_items["vutankiet2901/wav2vec2-xls-r-1b-ja"])
    assert r.dataset.name == "mozilla-foundation/common_voice_8_0/ja"
    assert r.task.type.value == "automatic-speech-recognition" and r.task.primary_metric == "wer"
    assert r.outcome.score == pytest.approx(0.2564) and r.outcome.metrics["cer"] == pytest.approx(0.1218)
    assert r.model.id == "facebook/wav2vec2-xls-r-1b"
    hp = r.hparams
    assert (hp.per_device_batch_size, hp.gradient_accumulation_steps, hp.batch_size) == (16, 4, 64)
    assert hp.warmup_steps == 2000 and hp.precision == "fp16" and hp.epochs == 100.0
    assert len(r.outcome.curve) == 40


def test_model_index_arbitrated_by_declared_datasets(card_items: dict[str, RawRecord | Rejected]) -> None:
    """When the sentence (Common Voice 7, 'hu', a copy-paste slip) and the model-index (Common Voice 8, 'ckb')
    disagree, the front matter's datasets decide."""
    r = record(card_items["Akashpb13/Central_kurdish_xlsr"])
    assert r.dataset.name == "mozilla-foundation/common_voice_8_0/ckb"


def test_percent_bleu_is_normalized(card_items: dict[str, RawRecord | Rejected]) -> None:
    """sacrebleu reports BLEU in percent (28.1641): the record declares percent and stores 0.281641."""
    item = card_items["Edomonndo/opus-mt-en-ro-finetuned-en-to-ro"]
    assert isinstance(item, RawRecord) and item.data["task"]["metric_scale"] == "percent"
    r = record(item)
    assert r.task.type.value == "translation" and r.task.primary_metric == "bleu"
    assert r.outcome.score == pytest.approx(0.281641)
    assert r.task.metric_scale.value == "unit"
    assert r.hparams.extra["hf_task"] == "text2text-generation"
    assert r.dataset.name == "wmt16/ro-en"


def test_scales_normalized_in_kb(ingested: tuple[KnowledgeBase, list[Any]]) -> None:
    """Every stored score of a unit-scale metric lies in [0, 1] and every WER in [0, 2] (fractions)."""
    kb, _ = ingested
    rows = kb.sql("SELECT task_primary_metric AS m, min(outcome_score) AS lo, max(outcome_score) AS hi "
                  "FROM runs GROUP BY 1")
    for row in rows.table.to_pylist():
        if row["m"] in ("accuracy", "f1", "bleu", "rouge1", "f1_micro"):
            assert 0 <= row["lo"] <= row["hi"] <= 1, row
        if row["m"] == "wer":
            assert 0 <= row["lo"] <= row["hi"] <= 2, row


def test_hub_whisper_percent_wer(hub_items: list[RawRecord | Rejected]) -> None:
    """A Whisper fine-tuning event card reports WER in percent (23.067); the importer converts it (WER is unbounded
    in the registry, so the schema would not) and takes the dataset id and base model from the Hub tags."""
    r = record(next(i for i in hub_items if i.locator == "CsanadT/whisper_small_sv"))
    assert r.outcome.score == pytest.approx(0.23067)
    assert r.model.id == "openai/whisper-small"
    assert r.dataset.name.startswith("mozilla-foundation/common_voice_11_0")
    assert r.hparams.max_steps == 12000 and r.provenance.license == "mit"


def test_hub_axolotl_qlora(hub_items: list[RawRecord | Rejected]) -> None:
    """An axolotl card ("adapter: qlora", lora_r 32) becomes a QLoRA run with its LoRA hyperparameters; its dataset
    comes from the axolotl config since the sentence says 'None'."""
    r = record(next(i for i in hub_items if i.locator == "zorooo/MathLlama-7b"))
    assert r.method.name == "qlora" and r.method.lora_r == 32 and r.method.lora_alpha == 16
    assert r.method.lora_dropout == pytest.approx(0.05)
    assert r.dataset.name == "zorooo/eval_math_derivatives"
    assert r.task.type.value == "text-generation" and r.task.primary_metric == "loss"
    assert r.hparams.max_seq_length == 2048 and r.hparams.precision == "bf16"


def test_precise_rejections(card_items: dict[str, RawRecord | Rejected]) -> None:
    """Unusable cards are rejected with the precise reason: None dataset, from scratch, local checkpoint path,
    malformed table (row and cell counts), shifted table columns, loss only."""
    expected = {
        "akshaychaudhary/distilbert-base-uncased-finetuned-cloud-ner": "no dataset: the card names it 'None'",
        "ZYW/squad-mbert-model": "no base model: the card says the model was trained from scratch",
        "MKaan/multilingual-cpv-sector-classifier": "row 27 has 4 cells, its header has 3",
        "milyiyo/electra-base-gen-finetuned-amazon-review": "columns are shifted",
    }
    for mid, reason in expected.items():
        item = card_items[mid]
        assert isinstance(item, Rejected) and reason in item.reason, (mid, item)
    local = [i for i in card_items.values() if isinstance(i, Rejected) and "checkpoint-" in i.reason]
    assert local and all("local path" in i.reason for i in local)
    loss_only = [i for i in card_items.values() if isinstance(i, Rejected) and i.reason.startswith("only a loss")]
    assert loss_only and all(i.field == "outcome.score" for i in loss_only)


def test_reingest_adds_nothing(ingested: tuple[KnowledgeBase, list[Any]], source_dir: Path) -> None:
    """Ingesting the same folder again stores no new run."""
    kb, _ = ingested
    again = ingest_path(kb, source_dir)
    assert sum(r.ingested for r in again) == 0
    assert sum(r.duplicates for r in again) == sum(r.ingested + r.duplicates for r in ingested[1])


def test_detection(cards_tar: Path, hub_json: Path, source_dir: Path) -> None:
    """The archive is hf_cards, the JSON hub_samples, and neither format claims the other's file or ORIGIN.txt."""
    assert ModelCards.detect(cards_tar) and not ModelCards.detect(hub_json)
    assert HubSamples.detect(hub_json) and not HubSamples.detect(cards_tar)
    assert not ModelCards.detect(source_dir / "ORIGIN.txt") and not HubSamples.detect(source_dir / "ORIGIN.txt")
    assert detect_format(cards_tar) == "hf_cards" and detect_format(hub_json) == "hub_samples"
    assert not ModelCards.detect(source_dir)


def test_keras_card_mapped(raw_cards: dict[str, str]) -> None:
    """A Keras-callback card (every shipped one says 'an unknown dataset', so a dataset is named here) maps the
    optimizer dict (name, learning rate, betas), training_precision, the Train/Validation metric names and the
    epoch-only results table."""
    text = raw_cards["leetdavid/celera_relevance"].replace("on an unknown dataset", "on the imdb dataset")
    r = record(RawRecord(card_to_record(text, CardContext("leetdavid/celera_relevance")), "x"))
    assert (r.hparams.optimizer, r.hparams.learning_rate, r.hparams.precision) == ("adam", 5e-05, "fp32")
    assert r.hparams.extra["adam_beta2"] == 0.999
    assert r.task.primary_metric == "accuracy" and r.outcome.score == pytest.approx(0.8295)
    assert r.outcome.metrics["train_accuracy"] == pytest.approx(0.8813)
    assert r.outcome.metrics["train_loss"] == pytest.approx(0.3072) and "epoch" not in r.outcome.metrics
    assert {p.epoch for p in r.outcome.curve} >= {0.0, 1.0} and all(p.step is None for p in r.outcome.curve)


# --- broken copies -----------------------------------------------------------------------------------------------


def _tar_with(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_truncated_archive(cards_tar: Path, tmp_path: Path) -> None:
    """A truncated archive yields the cards before the cut, then raises a FormatError that says so; ingesting it
    stores those cards and reports the error."""
    broken = tmp_path / "cards.tar.gz"
    data = cards_tar.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    items: list[Any] = []
    with pytest.raises(FormatError, match="truncated or corrupt"):
        for item in ModelCards().read(broken):
            items.append(item)
    assert 100 < len(items) < 800
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, broken, "hf_cards")
    assert report.error and "truncated" in report.error
    assert report.ingested == sum(isinstance(i, RawRecord) for i in items) - report.duplicates > 0


def test_malformed_members(raw_cards: dict[str, str], tmp_path: Path) -> None:
    """Inside an archive: a file that is not <author>/<model>/README.md, a card that is not UTF-8 and a card whose
    results table lost a cell are each rejected with their location; the valid card beside them is ingested."""
    good_id = "123abhiALFLKFO/distilbert-base-uncased-finetuned-cola"
    good = raw_cards[good_id]
    bad_table = good.replace("| 0.3459        | 2.0   | 1070 |", "| 0.3459        | 2.0   |")
    assert bad_table != good
    path = _tar_with(tmp_path / "cards.tar.gz", {
        f"./{good_id}/README.md": good.encode(),
        "./stray/notes.txt": b"hello",
        "./a/binary/README.md": b"\xff\xfe" + good.encode("utf-16-le"),
        "./a/badtable/README.md": bad_table.encode(),
    })
    items = {i.locator: i for i in ModelCards().read(path)}
    assert isinstance(items[good_id], RawRecord)
    assert "not a card" in items["./stray/notes.txt"].reason
    assert "not UTF-8" in items["a/binary"].reason
    assert "row 2 has 4 cells, its header has 5" in items["a/badtable"].reason
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, path, "hf_cards")
    assert (report.ingested, report.rejected) == (1, 3)


def test_empty_archive_and_missing_file(tmp_path: Path) -> None:
    """An archive with no card, a non-archive and a missing path are whole-input errors."""
    empty = _tar_with(tmp_path / "empty.tar.gz", {"./x.txt": b"x"})
    with pytest.raises(FormatError, match=r"no <author>/<model>/README\.md"):
        list(ModelCards().read(empty))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")
    with pytest.raises(FormatError):
        list(ModelCards().read(junk))
    with pytest.raises(FormatError, match="no such file"):
        list(ModelCards().read(tmp_path / "missing.tar.gz"))


def test_directory_of_cards(raw_cards: dict[str, str], card_items: dict[str, RawRecord | Rejected],
                            tmp_path: Path) -> None:
    """A plain directory of <author>/<model>/README.md (what the harvester writes) is detected and read like the
    archive; a config.json beside a card adds architecture facts, and a broken one is a rejection."""
    ids = ["123abhiALFLKFO/distilbert-base-uncased-finetuned-cola", "vutankiet2901/wav2vec2-xls-r-1b-ja",
           "ZYW/squad-mbert-model"]
    for mid in ids:
        (tmp_path / "cards" / mid).mkdir(parents=True)
        (tmp_path / "cards" / mid / "README.md").write_text(raw_cards[mid], encoding="utf-8")
    config = {"model_type": "distilbert", "n_layers": 6, "dim": 768, "n_heads": 12, "vocab_size": 30522,
              "max_position_embeddings": 512, "id2label": {"0": "unacceptable", "1": "acceptable"}}
    (tmp_path / "cards" / ids[0] / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "cards" / ids[1] / "config.json").write_text("{truncated", encoding="utf-8")
    folder = tmp_path / "cards"
    assert ModelCards.detect(folder) and detect_format(folder) == "hf_cards"
    items = {i.locator: i for i in ModelCards().read(folder)}
    first = record(items[ids[0]])
    assert first.run_id == record(card_items[ids[0]]).run_id
    assert (first.model.family, first.model.n_layers, first.model.hidden_size) == ("distilbert", 6, 768)
    assert first.dataset.meta.n_classes == 2
    assert isinstance(items[ids[1]], Rejected) and "config.json is not valid JSON" in items[ids[1]].reason
    assert isinstance(items[ids[2]], Rejected)


def test_hub_samples_broken_copies(hub_json: Path, tmp_path: Path) -> None:
    """A truncated JSON is a whole-input error; an entry without card text or model id is rejected with its
    location while the others are read."""
    data = hub_json.read_bytes()
    cut = tmp_path / "hub_samples_cut.json"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(FormatError, match="not valid JSON"):
        list(HubSamples().read(cut))
    entries = json.loads(data)
    keys = list(entries)[:20]
    sample = {k: entries[k] for k in keys}
    del sample[keys[0]]["modelcard_text"]
    sample[keys[1]]["modelId"] = ""
    path = tmp_path / "hub_samples.json"
    path.write_text(json.dumps(sample), encoding="utf-8")
    items = list(HubSamples().read(path))
    assert len(items) == 20
    assert "no card text" in items[0].reason and items[0].locator == entries[keys[0]]["modelId"]
    assert items[1].reason == "entry has no modelId" and items[1].locator == f"entry {keys[1]}"


def test_parser_parts(raw_cards: dict[str, str]) -> None:
    """The text parser finds every part of a Trainer card and keeps 'None' / 'unknown' dataset phrases as written."""
    parts = parse_card(raw_cards["123abhiALFLKFO/distilbert-base-uncased-finetuned-cola"])
    assert parts.base_model_text == "https://huggingface.co/distilbert-base-uncased"
    assert parts.dataset_phrase == "glue" and parts.has_hparam_block
    assert parts.results[:2] == [("Loss", "0.8628"), ("Matthews Correlation", "0.5331")]
    assert parts.table is not None and len(parts.table.rows) == 5
    assert parts.frameworks["transformers"] == "4.9.1"
    none = parse_card(raw_cards["akshaychaudhary/distilbert-base-uncased-finetuned-cloud-ner"])
    assert none.dataset_phrase == "None"
