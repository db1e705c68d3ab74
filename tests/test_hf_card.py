"""One parser of the Trainer's model card for both inputs that carry it: the README.md of a Trainer output directory
(TaskWeb, read by ``hf_trainer``) and a card from the Hub (read by ``hf_cards`` / ``hub_samples``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.formats import archive_files
from collector.importers.hf.card import TrainerCard, parse_card, parse_trainer_card, table_curve
from collector.importers.hf.model_cards import CardContext, card_to_record
from collector.importers.hf.run_mapping import model_id

TASKWEB = Path("metadatasets") / "taskweb" / "runs.tar.gz"
CARDS = Path("metadatasets") / "hf_model_cards" / "cards.tar.gz"


@pytest.fixture(scope="module")
def trainer_dir_cards(public_data: Path) -> dict[str, str]:
    """Every README.md of TaskWeb's Trainer output directories, by run directory."""
    return {name.rpartition("/")[0]: data.decode("utf-8") for name, data in archive_files(public_data / TASKWEB)
            if name.endswith("/README.md")}


@pytest.fixture(scope="module")
def hub_cards(public_data: Path) -> dict[str, str]:
    """Every Hub card of the shipped archive, by ``author/model``."""
    return {"/".join(p for p in name.split("/")[:-1] if p not in (".", "")): data.decode("utf-8")
            for name, data in archive_files(public_data / CARDS)}


def test_trainer_sentences_read_once_for_both_inputs(trainer_dir_cards: dict[str, str],
                                                     hub_cards: dict[str, str]) -> None:
    """The Trainer's four sentences (base model and dataset, final results, hyperparameters, results table) are
    cut once; the Trainer-directory view and the Hub-card view are two readings of the same parts. A TaskWeb card
    and a Hub card go through the same parser: the base-model link keeps its text and its URL, "on an unknown
    dataset" is kept as written and means "no dataset" to the Trainer view, and a hyperparameter block with lines in
    another shape is read past them by both views (the directory importer used to see no block there)."""
    run = "imdb/hellaswag/roberta-e3-lr3e5-b8-s30"
    taskweb = parse_card(trainer_dir_cards[run])
    assert taskweb.base_link_text is not None and "/outputs/" in taskweb.base_link_text
    assert TrainerCard(taskweb).base_model == taskweb.base_link_text
    assert taskweb.base_model_text == taskweb.base_link_url  # a URL into the Hub: the Hub view prefers it
    assert taskweb.dataset_phrase == "unknown" and TrainerCard(taskweb).dataset_phrase is None
    assert taskweb.hyperparameters["learning_rate"] == 1e-05 and taskweb.hyperparameters["seed"] == 30
    assert dict(taskweb.results)["Accuracy"] == TrainerCard(taskweb).results["Accuracy"]
    assert TrainerCard(taskweb).metrics()["accuracy"] == pytest.approx(float(dict(taskweb.results)["Accuracy"]))

    cola = "123abhiALFLKFO/distilbert-base-uncased-finetuned-cola"
    hub = parse_card(hub_cards[cola])
    assert hub.base_model_text == "https://huggingface.co/distilbert-base-uncased"
    assert TrainerCard(hub).base_model == "distilbert-base-uncased"
    # both importers turn the same sentence into the same model id
    assert model_id([TrainerCard(hub).base_model]) == ("distilbert-base-uncased", None)
    assert card_to_record(hub_cards[cola], CardContext(cola))["model"]["id"] == "distilbert-base-uncased"
    assert TrainerCard(hub).dataset_phrase == hub.dataset_phrase == "glue"
    assert TrainerCard(hub).curve() == table_curve(hub.table) and len(TrainerCard(hub).curve()) > 0

    squad = parse_card(hub_cards["AyushPJ/ai-club-inductions-21-nlp-ELECTRA-base-squad"])
    assert squad.has_hparam_block and squad.hyperparameters["learning_rate"] == 2e-05
    assert squad.hyperparameters["seed"] == 42
    assert TrainerCard(squad).record_hparams()["per_device_batch_size"] == 16


def test_every_real_card_parses_to_one_set_of_parts(trainer_dir_cards: dict[str, str],
                                                    hub_cards: dict[str, str]) -> None:
    """Over all 3,197 real cards (2,397 TaskWeb directories, 800 Hub cards) the Trainer view agrees with the parts
    it views: same hyperparameters and results, the base model as the link's text (the Trainer writes its
    ``model_name_or_path`` there), "no dataset" exactly when the sentence says unknown or None."""
    assert (len(trainer_dir_cards), len(hub_cards)) == (2397, 800)
    unknown = 0
    for text in [*trainer_dir_cards.values(), *hub_cards.values()]:
        parts = parse_card(text)
        view = parse_trainer_card(text)
        assert view.hyperparameters == parts.hyperparameters
        assert view.results == dict(parts.results)
        assert view.base_model == (parts.base_link_text or parts.base_link_url or parts.base_word)
        said = (parts.dataset_phrase or "").lower()
        assert (view.dataset_phrase is None) == (said in ("", "unknown", "none", "an unknown", "a unknown"))
        unknown += said == "unknown"
    assert unknown >= 2119  # every TaskWeb card without a dataset name
